"""``softxent fit --dask``: the in-memory fit's table transform and training, as passes over partitions.

The data stay on the workers; the client gathers statistics, never rows of X:

1. **scan** (one pass): rows and missing cells per column, how each feature
   column reads (:func:`~softxent.cli._features._kind_of` on the partition's
   training rows), counts of the distinct cells of text columns (the
   categories and their most frequent value), sums of number columns (the
   ``--impute mean`` fill), and the distinct class labels with their counts;
2. **moments** (one pass): the one-hot, imputed columns of each partition's
   training rows (:meth:`TablePreprocessor._raw`, the in-memory code) reduced
   to count, mean, sum of squared deviations, min and max per column, merged
   on the client with Chan's pairwise update (no cancellation, unlike sums
   of squares); the result is a :class:`TablePreprocessor` equal to the one
   the in-memory fit learns from the same rows, saved in the same form;
3. **fit**: X is each partition's ``transform`` as a dask array; the
   estimators fit Dask collections themselves (:mod:`softxent.models._dask`);
4. **score**: each partition's held-out rows give their labels and predicted
   probabilities (n_test x outputs floats come to the client, not X), scored
   by :meth:`TablePipeline.metrics_from` as in memory.

The held-out split is drawn per partition from ``(seed, partition)``
(a row is held out with probability ``--test-size``): it is reproducible
and needs no pass, but unlike the in-memory split it is not stratified.
Class labels with empty cells, label sets and 0/1 label columns come to the
client as one label set per row (labels only); a plain class column stays a
dask array on the workers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..models import AutoClassifier, HeadChoice, SigmoidRegression
from ._cells import _missing_mask, _text
from ._dask_read import DaskTable
from ._errors import CLIError
from ._features import TablePreprocessor, _kind_of, _to_float
from ._pipeline import TablePipeline, _choose, _label_sets, unseen_note
from ._targets import TargetSpec, select_columns

__all__ = ["DaskTrainResult", "check_args", "evaluate_dask", "held_out", "score_dask", "train_dask"]


def held_out(n: int, index: int, seed: int, test_size: float) -> np.ndarray:
    """The held-out rows of partition ``index`` (a boolean mask): each row with probability ``test_size``."""
    if test_size == 0:
        return np.zeros(n, dtype=bool)
    return np.random.default_rng([seed % 2**63, index]).random(n) < test_size


@dataclass(frozen=True)
class Plan:
    """What every partition task needs to know (small: it travels with each task)."""

    columns: tuple[str, ...]
    target: TargetSpec
    seed: int
    test_size: float
    decimal_comma: bool
    count_numbers: bool  # --impute most_frequent: count the distinct values of number columns
    files: tuple[str, ...]


def _in_part(plan: Plan, index: int, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a CLIError says which part it came from (its row numbers count within that part)."""
    try:
        return fn()
    except CLIError as exc:
        raise CLIError(f"{exc} (in DATA part {plan.files[index]!r}, rows counted within the part)") from None


def _split(part: pd.DataFrame, index: int, plan: Plan, held: bool) -> pd.DataFrame:
    mask = held_out(len(part), index, plan.seed, plan.test_size)
    return part.iloc[np.flatnonzero(mask if held else ~mask)]


# ---------------------------------------------------------------------- pass 1: scan


def _scan(part: pd.DataFrame, index: int, plan: Plan) -> dict[str, Any]:
    return _in_part(plan, index, lambda: _scan_part(part, index, plan))


def _scan_part(part: pd.DataFrame, index: int, plan: Plan) -> dict[str, Any]:
    test = held_out(len(part), index, plan.seed, plan.test_size)
    keep = np.flatnonzero(~test)
    out: dict[str, Any] = {"n": len(part), "n_test": int(test.sum()), "missing": {}, "missing_train": {},
                           "kinds": {}, "stats": {}}  # fmt: skip
    for c in plan.columns:
        series = part[c]
        mask = _missing_mask(series)
        out["missing"][c] = int(mask.sum())
        out["missing_train"][c] = int(mask[keep].sum())
        train, present = series.iloc[keep], ~mask[keep]
        # A part whose training rows hold no value of the column has no say in how it reads.
        out["kinds"][c] = _kind_of(train, c, plan.decimal_comma) if present.any() else None
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            values = _to_float(train)[0]
            TablePreprocessor._check_finite(c, values)
            values = values[~np.isnan(values)]
            counts = Counter(values.tolist()) if plan.count_numbers else None
            out["stats"][c] = ("numbers", len(values), float(values.sum()), counts)
        else:
            out["stats"][c] = ("cells", Counter(train[present].tolist()))
    y = plan.target.extract(part)
    if isinstance(y, np.ndarray):
        out["labels"] = Counter(y.tolist())
    else:
        out["labels"] = None  # label sets: gathered by their own pass
    return out


def _label_rows(part: pd.DataFrame, index: int, plan: Plan) -> list[set]:
    """Every row's label set (1-D classes as sets of one), for the targets the client needs as sets."""
    return _in_part(plan, index, lambda: _label_sets(plan.target.extract(part)))


# ---------------------------------------------------------------------- the transform from the scan


def _kind(column: str, opinions: list[tuple[str, str] | None]) -> tuple[str, str]:
    said = [o for o in opinions if o is not None]
    if not said:
        raise CLIError(f"column {column!r} has no value in the training rows; leave it out with --features")
    if any(kind == "categorical" for kind, _ in said):
        return "categorical", "."
    return "numeric", "," if any(mark == "," for _, mark in said) else "."


def _cell_numbers(column: str, counts: Counter, mark: str) -> Counter:
    """Distinct text cells of a number column as numbers (``"1.0"`` and ``"1"`` are one value)."""
    keys = list(counts)
    values = _to_float(pd.Series(keys, dtype=object), mark)[0]
    if np.isinf(values).any():
        raise CLIError(
            f"column {column!r} holds an infinite value ({keys[int(np.flatnonzero(np.isinf(values))[0])]!r})"
        )
    numbers: Counter = Counter()
    for key, value in zip(keys, values.tolist(), strict=True):
        numbers[value] += counts[key]
    return numbers


def _most_frequent_of(counts: Counter) -> Any:
    """:func:`_most_frequent` from counts: the most frequent value, ties to the smallest."""
    top = max(counts.values())
    return min(v for v, c in counts.items() if c == top)


def preprocessor_from_scan(scans: list[dict[str, Any]], plan: Plan, impute: str | None) -> TablePreprocessor:
    """A :class:`TablePreprocessor` with everything but the standardisation, from the partitions' scans."""
    pre = TablePreprocessor(impute=impute)
    n_train = sum(s["n"] - s["n_test"] for s in scans)
    pre.columns_ = list(plan.columns)
    pre.kinds_, pre.decimal_, pre._decimal, pre.categories_, pre.fill_ = {}, {}, None, {}, {}
    pre.missing_ = {}
    for c in plan.columns:
        kind, mark = _kind(c, [s["kinds"][c] for s in scans])
        pre.kinds_[c] = kind
        if mark != ".":
            pre.decimal_[c] = mark
        missing = sum(s["missing_train"][c] for s in scans)
        if missing:
            pre.missing_[c] = missing
        stats = [s["stats"][c] for s in scans]
        if kind == "categorical":
            if any(st[0] == "numbers" for st in stats):
                raise CLIError(f"column {c!r} holds numbers in some parts and text in others; make the parts agree")
            texts: Counter = Counter()
            for st in stats:
                for cell, count in st[1].items():
                    texts[_text(cell)] += count
            pre.categories_[c] = sorted(texts)
            if impute is not None:  # text columns: the most frequent value, whatever impute says
                pre.fill_[c] = _most_frequent_of(texts)
            continue
        count, total, numbers = 0, 0.0, Counter()
        for st in stats:
            if st[0] == "numbers":
                count, total = count + st[1], total + st[2]
                numbers.update(st[3] or {})
            else:
                cells = _cell_numbers(c, st[1], mark)
                count += sum(cells.values())
                total += sum(v * k for v, k in cells.items())
                numbers.update(cells)
        if impute == "mean":
            pre.fill_[c] = float(total / count)
        elif impute == "most_frequent":
            pre.fill_[c] = float(_most_frequent_of(numbers))
    pre.n_rows_ = n_train
    pre.unseen_ = {}
    return pre


# ---------------------------------------------------------------------- pass 2: moments


def _moments(part: pd.DataFrame, index: int, plan: Plan, pre: TablePreprocessor) -> tuple[int, ...] | tuple:
    def run() -> tuple:
        raw = pre._raw(_split(part, index, plan, held=False), count_unseen=False)
        if not len(raw):
            return (0, None, None, None, None)
        mean = raw.mean(axis=0)
        return (len(raw), mean, ((raw - mean) ** 2).sum(axis=0), raw.min(axis=0), raw.max(axis=0))

    return _in_part(plan, index, run)


def standardise(pre: TablePreprocessor, moments: list[tuple]) -> None:
    """Merge the partitions' (n, mean, M2, min, max) into ``pre.mean_`` and ``pre.scale_`` (as ``fit``)."""
    n, mean, m2, low, high = 0, None, None, None, None
    for k, m, s, lo, hi in moments:
        if not k:
            continue
        if mean is None:
            n, mean, m2, low, high = k, m, s, lo, hi
            continue
        # Chan et al.'s pairwise update of the mean and the sum of squared deviations.
        delta = m - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + s + delta**2 * (n * k / total)
        low, high, n = np.minimum(low, lo), np.maximum(high, hi), total
    scale = np.sqrt(m2 / n)
    # A constant column (max == min) gets scale 1: its std may be a rounding residue, not 0.
    constant = (high == low) | (scale == 0)
    pre.mean_ = mean
    pre.scale_ = np.where(constant, 1.0, scale)


# ---------------------------------------------------------------------- pass 3 and 4: fit and score


def _features(part: pd.DataFrame, index: int, plan: Plan, pre: TablePreprocessor) -> np.ndarray:
    return _in_part(plan, index, lambda: pre.transform(_split(part, index, plan, held=False)))


def _classes(part: pd.DataFrame, index: int, plan: Plan, dtype: np.dtype) -> np.ndarray:
    y = plan.target.extract(_split(part, index, plan, held=False))
    return np.asarray(y).astype(str).astype(dtype) if dtype.kind == "U" else np.asarray(y).astype(dtype)


def _score(part: pd.DataFrame, index: int, plan: Plan, pipeline: TablePipeline,
           held: bool | None) -> tuple[Any, np.ndarray] | None:  # fmt: skip
    """The labels and probabilities of a part's held-out rows (``held=True``) or of all its rows (None)."""

    def run() -> tuple[Any, np.ndarray] | None:
        rows = part if held is None else _split(part, index, plan, held=held)
        return (pipeline.truth(rows), pipeline.predict_proba(rows)) if len(rows) else None

    return _in_part(plan, index, run)


def _label_dtype(labels: list[Any]) -> np.dtype:
    """The dtype :meth:`TargetSpec.extract` gives a class column of these labels (text when mixed)."""
    if all(isinstance(v, str) for v in labels):
        return np.array(labels, dtype=str).dtype
    values = np.asarray(labels)
    if values.dtype == object or values.ndim != 1:
        return np.array([str(v) for v in labels], dtype=str).dtype
    return values.dtype


@dataclass
class DaskTrainResult:
    """What :func:`train_dask` produced (the attributes ``softxent fit`` prints, as :class:`TrainResult`)."""

    pipeline: TablePipeline
    auto_choice: HeadChoice
    n_rows: int
    n_train: int
    n_test: int
    metrics: dict[str, Any] | None = None
    truth: Any = None
    proba: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)


def check_args(table: DaskTable, *, targets: list[str], features: list[str] | None, label_sep: str | None,
               impute: str | None, decimal: str | None, test_size: float) -> tuple[list[str], TargetSpec]:  # fmt: skip
    """The checks that need only the column names: run before a cluster starts. Returns (features, target)."""
    if impute == "median":
        raise CLIError(
            "--impute median is not available with --dask (an exact median needs every value on one machine); "
            "use --impute mean or most_frequent"
        )
    if decimal not in (None, ".", ","):
        raise CLIError(f"--decimal must be '.' or ',', got {decimal!r}")
    if not 0 <= test_size < 1:
        raise CLIError(f"--test-size must be in [0, 1), got {test_size}")
    header = table.header
    return select_columns(header, targets, features), TargetSpec.infer(header, targets, label_sep)


def train_dask(
    table: DaskTable, client: Any, *, targets: list[str], features: list[str] | None, label_sep: str | None,
    head: str, C: float, max_iter: int, test_size: float, seed: int, impute: str | None, other_label: str,
    callback: Any, on_choice: Any, source: str, decimal: str | None,
) -> DaskTrainResult:  # fmt: skip
    """``train`` of :mod:`softxent.cli._pipeline` on a table in parts, on the cluster of ``client``."""
    import dask.array as da
    from dask import delayed

    columns, target = check_args(table, targets=targets, features=features, label_sep=label_sep, impute=impute,
                                 decimal=decimal, test_size=test_size)  # fmt: skip
    delimiter = table.delimiter
    decimal_comma = decimal == "," or (decimal is None and delimiter is not None and delimiter != ",")
    plan = Plan(tuple(columns), target, seed, test_size, decimal_comma, impute == "most_frequent",
                tuple(table.files))  # fmt: skip
    parts = table.delayed_parts()
    scans = client.compute([delayed(_scan)(p, i, plan) for i, p in enumerate(parts)], sync=True)
    n_rows = sum(s["n"] for s in scans)
    n_test = sum(s["n_test"] for s in scans)
    n_train = n_rows - n_test
    if n_rows == 0:
        raise CLIError(f"DATA {table.spec!r} has no rows")
    if n_train < 2:
        raise CLIError(f"--test-size {test_size} leaves {n_train} training and {n_test} held-out rows of {n_rows}")
    TablePreprocessor(impute=impute).check_missing_counts(
        {c: sum(s["missing"][c] for s in scans) for c in columns}, n_rows
    )
    n_per_part = [s["n"] - s["n_test"] for s in scans]

    as_sets = head == "sigmoid" or any(s["labels"] is None for s in scans)
    if as_sets:  # label sets (labels only) come to the client, as the estimators take them
        y_parts = client.compute([delayed(_label_rows)(p, i, plan) for i, p in enumerate(parts)], sync=True)
        y_all = [row for rows in y_parts for row in rows]
        target.check_learnable(y_all)
        choice, auto = _choose(y_all, head, target)
        y_train = [
            row for i, rows in enumerate(y_parts)
            for row, out in zip(rows, held_out(len(rows), i, seed, test_size), strict=True) if not out
        ]  # fmt: skip
        y_fit: Any = y_train
    else:
        counts: Counter = Counter()
        for s in scans:
            counts.update(s["labels"])
        labels = TargetSpec.labels_of(np.array(list(counts), dtype=object))
        if len(labels) < 2:
            raise CLIError(
                f"{target.name} has a single class {labels[0]!r} in {n_rows} rows; a classifier needs at least two"
            )
        dtype = _label_dtype(labels)
        choice, auto = _choose(np.array(labels, dtype=dtype), head, target)
        y_fit = da.concatenate([
            da.from_delayed(delayed(_classes)(p, i, plan, dtype), shape=(n,), dtype=dtype)
            for i, (p, n) in enumerate(zip(parts, n_per_part, strict=True)) if n
        ])  # fmt: skip

    pre = preprocessor_from_scan(scans, plan, impute)
    standardise(pre, client.compute([delayed(_moments)(p, i, plan, pre) for i, p in enumerate(parts)], sync=True))
    if on_choice is not None:
        on_choice(choice, auto, pre)
    d = len(pre.mean_)
    X = da.concatenate([
        da.from_delayed(delayed(_features)(p, i, plan, pre), shape=(n, d), dtype=np.float64)
        for i, (p, n) in enumerate(zip(parts, n_per_part, strict=True)) if n
    ])  # fmt: skip

    common = dict(C=C, solver="lbfgs", max_iter=max_iter, random_state=seed, callback=callback)
    if choice.head == "sigmoid" and auto.head != "sigmoid":
        model: Any = SigmoidRegression(**common)
        y_fit = _label_sets(y_fit)
    else:
        model = AutoClassifier(other_label=other_label, **common)
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            model.fit(X, y_fit)
        except ValueError as exc:
            raise CLIError(f"cannot fit: {exc}") from None
    for record in records:
        message = str(record.message).splitlines()[0]
        if message not in caught:
            caught.append(message)
    # The progress callback (it writes to this process's stderr) must not travel with the model to the
    # workers that score the held-out rows; nor is it part of the saved model.
    for fitted in (model, getattr(model, "head_", None)):
        if fitted is not None and getattr(fitted, "callback", None) is not None:
            fitted.callback = None
    info = {"trained_on": source, "n_rows": n_rows, "n_train": n_train, "n_test": n_test, "test_size": test_size,
            "seed": seed, "solver": "lbfgs", "C": C, "dask": {"parts": len(table.files), "split": "per part"}}  # fmt: skip
    if test_size and not n_test:
        caught.append("no held-out rows: the parts are too small for --test-size to draw one")
    pipeline = TablePipeline(model, target, pre, list(columns), choice, info)
    return DaskTrainResult(pipeline, auto, n_rows, n_train, n_test, warnings=caught)


def _gather_scores(pipeline: TablePipeline, table: DaskTable, client: Any, plan: Plan,
                   held: bool | None) -> tuple[Any, np.ndarray] | None:  # fmt: skip
    """Labels and probabilities of the chosen rows of every part, on the client (None: no row)."""
    from dask import delayed

    tasks = [delayed(_score)(p, i, plan, pipeline, held) for i, p in enumerate(table.delayed_parts())]
    scored = [s for s in client.compute(tasks, sync=True) if s is not None]
    if not scored:
        return None
    if isinstance(scored[0][0], np.ndarray):
        truth: Any = np.concatenate([t for t, _ in scored])
    else:
        truth = [row for t, _ in scored for row in t]
    return truth, np.concatenate([p for _, p in scored])


def _scoring_plan(pipeline: TablePipeline, table: DaskTable, seed: int, test_size: float) -> Plan:
    return Plan(tuple(pipeline.features), pipeline.target, seed, test_size, False, False, tuple(table.files))


def score_dask(result: DaskTrainResult, table: DaskTable, client: Any) -> None:
    """Fill ``result``'s held-out metrics from the parts (the model must be saved first: never fatal)."""
    if not result.n_test:
        return
    pipeline = result.pipeline
    plan = _scoring_plan(pipeline, table, pipeline.info["seed"], pipeline.info["test_size"])
    gathered = _gather_scores(pipeline, table, client, plan, held=True)
    if gathered is None:
        return
    try:
        result.metrics, result.truth, result.proba = pipeline.metrics_from(*gathered)
    except CLIError as exc:
        result.warnings.append(f"no held-out metrics: {exc}")
        return
    note = unseen_note(result.metrics)
    if note:
        result.warnings.append(note)


def evaluate_dask(pipeline: TablePipeline, table: DaskTable, client: Any) -> tuple[dict[str, Any], Any, np.ndarray]:
    """``TablePipeline.metrics`` of every row of the parts: labels and probabilities come to the client, not X."""
    gathered = _gather_scores(pipeline, table, client, _scoring_plan(pipeline, table, 0, 0.0), held=None)
    if gathered is None:
        raise CLIError(f"DATA {table.spec!r} has no rows")
    return pipeline.metrics_from(*gathered)
