"""A classifier for tables: the table transform, the target's form and the model, in one file.

``softxent fit`` turns a table into features (:class:`TablePreprocessor`:
one-hot encoding, imputation, standardisation) and targets (:class:`TargetSpec`:
a class column, 0/1 label columns, or a column of label sets), lets
:func:`softxent.models.choose_head` pick softmax or sigmoid (or takes the
user's choice), and trains. :class:`TablePipeline` keeps all of it together
so that ``evaluate`` and ``predict`` apply exactly the same transform to new
tables, and saves it as a :mod:`softxent.models` file whose ``extra``
metadata holds the transform (still no pickle).

Predictions are answered in the target's own form: class names for a class
column (the added class ``"other"`` included), label sets for label sets and
0/1 label columns. Metrics compare like with like: the softmax head is scored
on one class per row (rows without a label count as ``"other"``), the sigmoid
head on the 0/1 matrix of labels.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..models import AutoClassifier, HeadChoice, ModelFileError, SigmoidRegression, choose_head
from ..models._persistence import load as load_model
from ..models._persistence import save as save_model
from ._errors import CLIError
from ._features import TablePreprocessor
from ._files import replacing
from ._metrics import sigmoid_metrics, softmax_metrics
from ._targets import TargetSpec, select_columns

__all__ = ["PIPELINE_VERSION", "TablePipeline", "TrainResult", "train"]

# Version of the ``extra["cli"]`` document; bump it when its meaning changes.
PIPELINE_VERSION = 1

Head = Literal["auto", "softmax", "sigmoid"]


def _label_sets(y: Any) -> list[set]:
    """Any target form as one label set per row (1-D classes: sets of one)."""
    if isinstance(y, np.ndarray) and y.ndim == 1:
        return [{v} for v in y.tolist()]
    return [set(s) for s in y]


@dataclass
class TablePipeline:
    """Table → features → model, as trained by ``softxent fit``.

    Attributes
    ----------
    model : AutoClassifier or SigmoidRegression
        The fitted model (``SigmoidRegression`` when ``--head sigmoid`` was
        forced on any labels).
    target : TargetSpec
        Which columns hold the target and in what form.
    preprocessor : TablePreprocessor
        The fitted feature transform.
    features : list of str
        The table columns the features come from.
    choice : HeadChoice
        The head used and why.
    info : dict
        What the command line reports: the training file, row counts, split.
    decimal : {".", ","} or None
        How numeric text of the tables given to :meth:`transform` is read
        (``--decimal`` of ``evaluate`` and ``predict``); None (the default):
        each column as in training. Not stored in the model file.
    """

    model: Any
    target: TargetSpec
    preprocessor: TablePreprocessor
    features: list[str]
    choice: HeadChoice
    info: dict[str, Any] = field(default_factory=dict)
    decimal: str | None = None

    # ------------------------------------------------------------------ outputs

    @property
    def head(self) -> str:
        return self.choice.head

    @property
    def names(self) -> list[Any]:
        """Names of the probability columns: classes (softmax) or labels (sigmoid)."""
        return list(self.model.classes_.tolist())

    @property
    def other_label(self) -> Any:
        return getattr(self.model, "other_label", "other")

    @property
    def loss_curve(self) -> list[float]:
        head = getattr(self.model, "head_", self.model)
        return [float(v) for v in getattr(head, "loss_curve_", [])]

    @property
    def n_iter(self) -> int:
        return int(self.model.n_iter_)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        return self.preprocessor.transform(table, decimal=self.decimal)

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """(n_rows, len(names)) probabilities: rows sum to 1 (softmax) or one per label (sigmoid)."""
        return self.model.predict_proba(self.transform(table))

    def decide(self, proba: np.ndarray) -> list[Any]:
        """Predictions from probabilities, in the target's form.

        Softmax on a class column: class names (``other`` for the added class).
        Otherwise label sets (the ``other`` class is the empty set).
        """
        names = self.names
        if self.head == "sigmoid":
            threshold = self.model.threshold
            return [{names[j] for j in np.flatnonzero(row > threshold)} for row in proba]
        best = [names[j] for j in np.argmax(proba, axis=1)]
        if self.target.kind == "classes":  # class names, the added "other" included
            return best
        other = self.other_label if self.choice.add_other_class else object()
        return [set() if b == other else {b} for b in best]

    # ------------------------------------------------------------------ truth and metrics

    def truth(self, table: pd.DataFrame) -> Any:
        """The table's labels in the form the head is scored on.

        Softmax: one class per row (``other`` for rows without a label).
        Sigmoid: one label set per row (:meth:`metrics` turns it into the
        0/1 matrix in the order of ``names``).
        """
        y = self.target.extract(table)
        if self.head == "sigmoid":
            return _label_sets(y)
        if isinstance(y, np.ndarray) and y.ndim == 1:
            return y
        classes = []
        for i, labels in enumerate(y):
            if len(labels) > 1:
                raise CLIError(
                    f"row {i} of the data carries {len(labels)} labels ({', '.join(map(str, sorted(labels, key=str)))}), "
                    "but this model is a softmax: one class per row"
                )
            classes.append(next(iter(labels)) if labels else self.other_label)
        out = np.empty(len(classes), dtype=object)
        out[:] = classes
        return out

    def metrics(self, table: pd.DataFrame) -> tuple[dict[str, Any], Any, np.ndarray]:
        """Metrics on a labelled table; returns ``(metrics, truth, proba)``.

        A class (softmax) or label (sigmoid) that the model was not trained
        on cannot be predicted, so it is left out of the scores and counted
        instead: softmax rows of such classes are dropped and counted in
        ``unseen_classes`` (class -> rows); sigmoid rows keep their known
        labels, and the others are counted in ``unseen_labels`` (label ->
        rows). ``truth`` and ``proba`` are those of the scored rows.

        Raises
        ------
        CLIError
            No row is left to score (every class is one the model never saw).
        """
        return self.metrics_from(self.truth(table), self.predict_proba(table))

    def metrics_from(self, truth: Any, proba: np.ndarray) -> tuple[dict[str, Any], Any, np.ndarray]:
        """:meth:`metrics` from the labels (as :meth:`truth` gives them) and the probabilities.

        ``softxent fit --dask`` computes both per partition on the workers
        and scores them here, with the same rules for unseen classes.
        """
        known = {str(n) for n in self.names}
        unseen: dict[str, int] = {}
        if self.head == "sigmoid":
            for labels in truth:
                for label in labels:
                    if str(label) not in known:
                        unseen[str(label)] = unseen.get(str(label), 0) + 1
            names = {str(n): n for n in self.names}
            truth = TargetSpec.indicator([{names[str(v)] for v in s if str(v) in known} for s in truth], self.names)
        else:
            keep = np.array([str(v) in known for v in truth.tolist()], dtype=bool)
            for v in truth[~keep].tolist():
                unseen[str(v)] = unseen.get(str(v), 0) + 1
            if not keep.any():
                raise CLIError(
                    f"none of the {len(truth)} rows has a class the model was trained on "
                    f"(the data's: {', '.join(sorted(unseen)[:10])}; the model's: {', '.join(sorted(known)[:10])})"
                )
            truth, proba = truth[keep], proba[keep]
        try:
            if self.head == "sigmoid":
                metrics = sigmoid_metrics(truth, proba, self.names, threshold=self.model.threshold)
            else:
                metrics = softmax_metrics(truth, proba, self.names)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        if unseen:
            metrics["unseen_labels" if self.head == "sigmoid" else "unseen_classes"] = dict(sorted(unseen.items()))
        return metrics, truth, proba

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike) -> None:
        extra = {
            "cli": {
                "version": PIPELINE_VERSION,
                "target": self.target.to_dict(),
                "features": list(self.features),
                "preprocessor": self.preprocessor.to_dict(),
                "choice": {"head": self.choice.head, "n_classes": self.choice.n_classes,
                           "add_other_class": self.choice.add_other_class, "reason": self.choice.reason},
                "info": self.info,
            }
        }  # fmt: skip
        # Through the command line's own atomic writer (cli._files): the
        # model lands whole under its name or not at all, and a failed
        # write leaves an older model of that name as it was.
        try:
            with replacing(path) as handle:
                save_model(self.model, handle, extra=extra)
        except OSError as exc:
            raise CLIError(f"cannot write the model to --out {os.fspath(path)!r}: {exc.strerror or exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> TablePipeline:
        """Read a model written by ``softxent fit``; every problem is a :class:`CLIError`."""
        name = os.fspath(path)
        if not os.path.exists(name):
            raise CLIError(f"cannot read MODEL {name!r}: no such file")
        if os.path.isdir(name):
            raise CLIError(f"cannot read MODEL {name!r}: it is a directory")
        try:
            with open(name, "rb") as handle:
                magic = handle.read(4)
        except OSError as exc:
            raise CLIError(f"cannot read MODEL {name!r}: {exc.strerror or exc}") from None
        # A model is an .npz (zip) archive. Anything else, a CSV most often, means
        # MODEL and DATA were swapped; a truncated archive is left to load_model to name.
        if magic != b"PK\x03\x04":
            raise CLIError(
                f"MODEL {name!r} is not a model file (not an .npz archive); the order is MODEL DATA, "
                "with MODEL written by `softxent fit`"
            )
        try:
            model, extra = load_model(name, with_extra=True)
        except ModelFileError as exc:
            raise CLIError(str(exc)) from None
        except OSError as exc:
            raise CLIError(f"cannot read MODEL {name!r}: {exc.strerror or exc}") from None
        cli = (extra or {}).get("cli")
        if not isinstance(cli, dict):
            raise CLIError(
                f"MODEL {name!r} holds a softxent model saved from Python, without the table transform "
                "that `softxent fit` stores; train it with `softxent fit` to use it here"
            )
        version = cli.get("version")
        if not isinstance(version, int) or version > PIPELINE_VERSION:
            raise CLIError(
                f"MODEL {name!r} was written by a newer softxent command line (table format {version!r}; "
                f"this one reads up to {PIPELINE_VERSION}); upgrade softxent"
            )
        try:
            choice = cli["choice"]
            return cls(
                model=model,
                target=TargetSpec.from_dict(cli["target"]),
                preprocessor=TablePreprocessor.from_dict(cli["preprocessor"]),
                features=[str(c) for c in cli["features"]],
                choice=HeadChoice(
                    str(choice["head"]),
                    int(choice["n_classes"]),
                    bool(choice["add_other_class"]),
                    str(choice["reason"]),
                ),  # fmt: skip
                info=dict(cli.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CLIError(f"cannot load MODEL {name!r}: its table transform is damaged ({exc})") from None


def unseen_note(metrics: dict[str, Any] | None) -> str | None:
    """One line on the classes or labels of the scored data that the model was not trained on (None if none)."""
    if not metrics:
        return None
    for key, singular, plural, effect in (
        ("unseen_classes", "class", "classes", "their rows are left out of the scores"),
        ("unseen_labels", "label", "labels", "they are left out of the scores"),
    ):
        unseen = metrics.get(key)
        if unseen:
            listed = ", ".join(f"{name!r} ({count} row{'s' if count != 1 else ''})"
                               for name, count in list(unseen.items())[:10])  # fmt: skip
            more = f" and {len(unseen) - 10} more" if len(unseen) > 10 else ""
            word = singular if len(unseen) == 1 else plural
            return f"{len(unseen)} {word} not seen in training: {listed}{more}; {effect}"
    return None


# ---------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` produced: the pipeline and the held-out evaluation (None without a split)."""

    pipeline: TablePipeline
    auto_choice: HeadChoice
    train_rows: np.ndarray
    test_rows: np.ndarray
    metrics: dict[str, Any] | None
    truth: Any
    proba: np.ndarray | None
    warnings: list[str]

    def score(self, table: pd.DataFrame) -> None:
        """Fill ``metrics``, ``truth`` and ``proba`` from the held-out rows of ``table`` (none: stay None).

        Never fatal for a finished training: if no held-out row can be
        scored (all of classes the model never saw), the metrics stay None
        and a warning says why.
        """
        if not len(self.test_rows):
            return
        try:
            self.metrics, self.truth, self.proba = self.pipeline.metrics(table.iloc[self.test_rows])
        except CLIError as exc:
            self.warnings.append(f"no held-out metrics: {exc}")
            return
        note = unseen_note(self.metrics)
        if note:
            self.warnings.append(note)

    @property
    def n_train(self) -> int:
        return len(self.train_rows)

    @property
    def n_test(self) -> int:
        return len(self.test_rows)


def _choose(y: Any, head: Head, target: TargetSpec) -> tuple[HeadChoice, HeadChoice]:
    """The head to train and the one ``choose_head`` recommends (they differ only when forced)."""
    try:
        auto = choose_head(y)
    except ValueError as exc:
        raise CLIError(f"target {', '.join(target.columns)}: {exc}") from None
    if head == "auto" or head == auto.head:
        return auto, auto
    if head == "softmax":
        sets = _label_sets(y)
        several = next(i for i, s in enumerate(sets) if len(s) > 1)
        raise CLIError(
            f"--head softmax: row {several} carries {len(sets[several])} labels, and a softmax gives "
            "each row one class; use --head sigmoid (one sigmoid per label) or --head auto"
        )
    n_labels = len({v for s in _label_sets(y) for v in s})
    forced = HeadChoice(
        "sigmoid", n_labels, False,
        f"--head sigmoid asked for one independent sigmoid per label ({n_labels} labels); "
        f"choose_head would have said: {auto.reason}",
    )  # fmt: skip
    return forced, auto


def _split(n: int, test_size: float, seed: int, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and held-out parts.

    With ``strata`` (the class of each row, softmax heads), the split keeps
    every class in training: a class with a single row stays there (a model
    cannot learn a class it never saw, and one held-out row of it says
    nothing), every other class keeps at least one training row, and the
    held-out part is stratified (each class in proportion) whenever it is
    large enough to hold every class. Without ``strata``, a plain random split.
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(n)
    if test_size == 0:
        return rows, rows[:0]
    n_test = int(np.ceil(test_size * n))
    if n_test < 1 or n - n_test < 2:
        raise CLIError(f"--test-size {test_size} leaves {n - n_test} training and {n_test} held-out rows of {n}")
    if strata is None:
        train, test = train_test_split(rows, test_size=n_test, random_state=seed)
        return np.sort(train), np.sort(test)
    _, codes, counts = np.unique(strata.astype(str), return_inverse=True, return_counts=True)
    codes = codes.ravel()
    pool = rows[counts[codes] >= 2]  # singletons are not in the pool: they always train
    kept = rows[counts[codes] < 2]
    k = len(np.unique(codes[pool]))
    # Every pooled class keeps at least one training row, so at most len(pool) - k rows are held out.
    n_test = min(n_test, len(pool) - k)
    if n_test < 1:
        return rows, rows[:0]
    if n_test >= k:
        train, test = train_test_split(pool, test_size=n_test, random_state=seed, stratify=codes[pool])
    else:  # too few held-out rows to hold every class: one row of each class trains, the rest is random
        rng = np.random.default_rng(seed)
        first = np.array([rng.choice(pool[codes[pool] == c]) for c in np.unique(codes[pool])])
        rest = np.setdiff1d(pool, first)
        test = rng.choice(rest, size=n_test, replace=False)
        train = np.concatenate([first, np.setdiff1d(rest, test)])
    return np.sort(np.concatenate([train, kept])), np.sort(test)


def _take(y: Any, rows: np.ndarray) -> Any:
    if isinstance(y, np.ndarray):
        return y[rows]
    return [y[i] for i in rows]


def train(
    table: pd.DataFrame,
    *,
    targets: Sequence[str],
    features: Sequence[str] | None = None,
    label_sep: str | None = None,
    head: Head = "auto",
    C: float = 1.0,
    solver: str = "lbfgs",
    max_iter: int = 100,
    test_size: float = 0.2,
    seed: int = 0,
    impute: str | None = None,
    other_label: str = "other",
    callback: Callable[[Any], Any] | None = None,
    on_choice: Callable[[HeadChoice, HeadChoice, TablePreprocessor], None] | None = None,
    source: str = "",
    score: bool = True,
    decimal: str | None = None,
) -> TrainResult:
    """Fit a classifier on ``table`` (see ``softxent fit --help`` for the options).

    ``on_choice(choice, auto_choice, preprocessor)`` is called once the head
    is known, before training starts, so a front end can print it first.
    With ``score=False`` the held-out rows are not scored yet: the caller
    saves the model first and then calls :meth:`TrainResult.score`, so that
    nothing in the evaluation can lose a finished training.

    ``decimal`` (``--decimal``): ``","`` reads text columns of numbers
    written with a decimal comma (``1,5``) as numbers, ``"."`` never does;
    None (the default) does so when ``table.attrs["delimiter"]`` (set by
    :func:`~softxent.cli._read.read_table` for text files) is not a comma,
    since only then can a field hold ``1,5`` unquoted.
    """
    if not 0 <= test_size < 1:
        raise CLIError(f"--test-size must be in [0, 1), got {test_size}")
    columns = select_columns(table, targets, features)
    target = TargetSpec.infer(table, targets, label_sep)
    y = target.extract(table)
    target.check_learnable(y)
    choice, auto = _choose(y, head, target)

    strata = None
    if choice.head == "softmax":
        sets = None if isinstance(y, np.ndarray) else _label_sets(y)
        strata = y if sets is None else np.array([str(next(iter(s))) if s else other_label for s in sets])
    preprocessor = TablePreprocessor(impute=impute)
    preprocessor.check_missing(table, columns)  # counts of the whole file, not of the training part
    train_rows, test_rows = _split(len(table), test_size, seed, strata)
    part = table.iloc[train_rows]
    if decimal not in (None, ".", ","):
        raise CLIError(f"--decimal must be '.' or ',', got {decimal!r}")
    delimiter = table.attrs.get("delimiter")
    decimal_comma = decimal == "," or (decimal is None and delimiter is not None and delimiter != ",")
    X = preprocessor.fit_transform(part, columns, decimal_comma=decimal_comma)
    y_train = _take(y, train_rows)
    if on_choice is not None:
        on_choice(choice, auto, preprocessor)

    common = dict(C=C, solver=solver, max_iter=max_iter, random_state=seed, callback=callback)
    if choice.head == "sigmoid" and auto.head != "sigmoid":
        model: Any = SigmoidRegression(**common)
        y_fit: Any = _label_sets(y_train)
    else:
        model = AutoClassifier(other_label=other_label, **common)
        y_fit = y_train
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            model.fit(X, y_fit)
        except ValueError as exc:  # e.g. a single class left in the training part
            raise CLIError(f"cannot fit: {exc}") from None
    for record in records:
        message = str(record.message).splitlines()[0]
        if message not in caught:
            caught.append(message)

    info = {
        "trained_on": source,
        "n_rows": len(table),
        "n_train": len(train_rows),
        "n_test": len(test_rows),
        "test_size": test_size,
        "seed": seed,
        "solver": solver,
        "C": C,
    }
    if test_size and not len(test_rows):
        caught.append("no held-out rows: every class has too few rows to spare one (all rows are needed for training)")
    pipeline = TablePipeline(model, target, preprocessor, list(columns), choice, info)
    result = TrainResult(pipeline, auto, train_rows, test_rows, None, None, None, caught)
    if score:
        result.score(table)
    return result
