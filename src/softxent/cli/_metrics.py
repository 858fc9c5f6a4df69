"""Metrics of a fitted classifier: numbers from true labels and predicted probabilities, and their terminal views.

``softxent fit``, ``evaluate`` and ``demo`` hand this module the true labels and
the predicted probabilities of one of the two heads and get back

1. a JSON-able metrics dict (:func:`softmax_metrics`, :func:`sigmoid_metrics`;
   :func:`reliability_bins` for the calibration; :func:`jsonable` for JSON),
2. the same metrics for a terminal (:func:`format_metrics` as plain lines,
   :func:`metrics_table` as a :class:`rich.table.Table`).

The figures are drawn by :mod:`softxent.cli._figures`, the report folder
(``metrics.json``, figures, ``report.html``) written by
:func:`softxent.cli._report.write_report`.

Class and label names are listed in the order people read them: a model's
``classes_`` are sorted as text (scikit-learn's rule, kept by the models), so
``Class10`` would come before ``Class2``; the tables, the JSON and the figures
list them in natural order instead (:func:`display_order`: runs of digits
compared as numbers). Names that are not in sorted order already (the columns
of a user's indicator matrix) keep the order they came in.

The two heads are scored the way their losses read the labels:

* **softmax**: one class per row, the probabilities of a row share one unit of
  mass; the prediction is the arg-max. Accuracy, log loss
  :math:`-\\frac1n\\sum_i \\log p_{i, y_i}` (the seed's eq. (7)),
  macro-F1, per-class precision/recall/F1 and the confusion matrix.
* **sigmoid**: every label is its own yes/no question, a label is predicted
  when its probability exceeds ``threshold`` (strictly, as
  :class:`softxent.models.SigmoidRegression` does). Hamming loss, subset
  accuracy, micro/macro-F1 and, per label, ROC AUC and binary log loss.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # rich is imported when a table is asked for
    from rich.table import Table

__all__ = [
    "display_order",
    "format_metrics",
    "jsonable",
    "metrics_table",
    "reliability_bins",
    "sigmoid_metrics",
    "softmax_metrics",
]

_N_BINS = 10  # reliability diagram: 10 equal-width bins of predicted probability
_MAX_NAME = 24  # characters of a class name shown in a terminal column or on an axis

# Rows summing to 1 within this much count as probability rows (float32 rows
# are off by a few 1e-7; anything worse is not a softmax output).
_ROW_SUM_TOL = 1e-3


# ---------------------------------------------------------------------- order


def _natural_key(name: str) -> tuple[list[Any], str]:
    # re.split with a capture group alternates text and digit runs, so equal positions hold equal
    # types and the lists compare; the name itself breaks ties ("a01" and "a1").
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p for i, p in enumerate(parts)], name


def display_order(names: Sequence[str]) -> list[int]:
    """Positions of ``names`` in the order a reader expects: natural order, unless given otherwise.

    Names in plain sorted order (as ``np.unique`` leaves a model's
    ``classes_``) are put in natural order, digit runs compared as numbers
    (``Class2`` before ``Class10``). Names in any other order (a user's
    indicator columns, integer classes sorted as numbers) are kept as given.

    Examples
    --------
    >>> names = ["Class1", "Class10", "Class2"]
    >>> [names[j] for j in display_order(names)]
    ['Class1', 'Class2', 'Class10']
    >>> display_order(["rock", "jazz"])
    [0, 1]
    """
    names = [str(n) for n in names]
    if names != sorted(names):
        return list(range(len(names)))
    return sorted(range(len(names)), key=lambda j: _natural_key(names[j]))


# ---------------------------------------------------------------------- metrics


def softmax_metrics(y_true: Any, proba: Any, classes: Sequence[Any]) -> dict[str, Any]:
    """Metrics of a softmax head: one class per row.

    Parameters
    ----------
    y_true : array-like of shape (n,)
        The true class of each row, as values of ``classes`` (a value that is
        not found as itself is looked up by its text, so ``"3"`` finds the
        class ``3``: report code passes class names as strings).
    proba : array-like of shape (n, k)
        Predicted probabilities, rows summing to 1, columns in the order of
        ``classes``.
    classes : sequence of length k
        The model's ``classes_`` (it may include an added class such as
        ``"other"``).

    Returns
    -------
    dict
        JSON-able: ``head`` (``"softmax"``), ``n_rows``, ``classes`` (as
        text, in :func:`display_order`), ``accuracy``, ``log_loss`` (natural log, mean over rows),
        ``macro_f1`` (mean F1 over the classes that occur in ``y_true`` or in
        the predictions, as :func:`sklearn.metrics.f1_score` does),
        ``per_class`` (name → ``precision``, ``recall``, ``f1``, ``support``;
        every class, 0 where undefined) and ``confusion_matrix`` (rows = true,
        columns = predicted, in the order of the returned ``classes``).

    Raises
    ------
    ValueError
        If the shapes disagree, ``proba`` is not a matrix of probability rows,
        or ``y_true`` holds labels that are not among ``classes`` (named).

    Examples
    --------
    >>> m = softmax_metrics(["a", "b", "b"], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], ["a", "b"])
    >>> m["accuracy"], m["confusion_matrix"]
    (0.6666666666666666, [[1, 0], [1, 1]])
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    names = _names(classes, "classes")
    P = _probability_matrix(proba, "proba", n_cols=len(names))
    if not np.allclose(P.sum(axis=1), 1.0, rtol=0, atol=_ROW_SUM_TOL):
        worst = int(np.argmax(np.abs(P.sum(axis=1) - 1.0)))
        raise ValueError(
            f"proba must have rows summing to 1 (softmax probabilities); row {worst} sums to {P[worst].sum():.6g}"
        )
    true = _class_indices(y_true, classes, names)
    if true.shape[0] != P.shape[0]:
        raise ValueError(f"y_true has {true.shape[0]} rows but proba has {P.shape[0]}")
    k = len(names)
    pred = np.argmax(P, axis=1)
    labels = np.arange(k)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0
    )
    # Log loss of eq. (7). Probabilities are clipped only at the smallest
    # positive normal float64 (-log of it is ~708): a true-class probability
    # that underflowed to 0 stays a huge but finite penalty instead of inf,
    # and nothing else changes (sklearn clips at eps = 2.2e-16, which would
    # cap every confident mistake at 36).
    p_true = P[np.arange(P.shape[0]), true]
    log_loss = float(-np.mean(np.log(np.maximum(p_true, np.finfo(np.float64).tiny))))
    order = display_order(names)
    matrix = confusion_matrix(true, pred, labels=labels)[np.ix_(order, order)]
    return {
        "head": "softmax",
        "n_rows": int(P.shape[0]),
        "classes": [names[j] for j in order],
        "accuracy": float(np.mean(pred == true)),
        "log_loss": log_loss,
        # average="macro" without labels=: classes absent from both the truth
        # and the predictions (a rare class missing from a held-out split, an
        # unused "other") would add a meaningless 0.
        "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
        "per_class": {
            name: {
                "precision": float(precision[j]),
                "recall": float(recall[j]),
                "f1": float(f1[j]),
                "support": int(support[j]),
            }
            for name, j in ((names[j], j) for j in order)
        },  # fmt: skip
        "confusion_matrix": matrix.astype(int).tolist(),
    }


def sigmoid_metrics(y_true: Any, proba: Any, labels: Sequence[Any], *, threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of a sigmoid head: every label a yes/no question of its own.

    A label is predicted when its probability exceeds ``threshold`` (strictly).

    Parameters
    ----------
    y_true : array-like of shape (n, k)
        0/1 (or boolean) indicator of the labels of each row.
    proba : array-like of shape (n, k)
        Predicted probability of each label, columns in the order of ``labels``.
    labels : sequence of length k
        Names of the labels (``labels`` and ``per_label`` of the result list
        them in :func:`display_order`).
    threshold : float, default 0.5
        Decision threshold in [0, 1].

    Returns
    -------
    dict
        JSON-able: ``head`` (``"sigmoid"``), ``n_rows``, ``labels`` (as text),
        ``threshold``, ``hamming_loss`` (share of wrong (row, label) cells),
        ``subset_accuracy`` (share of rows with every label right),
        ``micro_f1``, ``macro_f1`` (over all labels, 0 where undefined) and
        ``per_label`` (name → ``roc_auc``, ``log_loss``, ``precision``,
        ``recall``, ``f1``, ``support`` (rows with the label),
        ``predicted_positive_rate``). ``roc_auc`` is ``None`` when the label
        has one value only in ``y_true``; ``roc_auc_note`` then says why.

    Raises
    ------
    ValueError
        If the shapes disagree, ``y_true`` is not 0/1, ``proba`` is not in
        [0, 1] or ``threshold`` is not a probability.

    Examples
    --------
    >>> m = sigmoid_metrics([[1, 0], [1, 1]], [[0.9, 0.2], [0.7, 0.4]], ["rock", "jazz"])
    >>> m["hamming_loss"], m["per_label"]["rock"]["roc_auc"], m["per_label"]["rock"]["roc_auc_note"]
    (0.25, None, 'y_true has one value only for this label (all 1): ROC AUC is undefined')
    """
    from sklearn.metrics import f1_score, hamming_loss, precision_recall_fscore_support, roc_auc_score

    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not 0.0 <= float(threshold) <= 1.0:  # fmt: skip
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    names = _names(labels, "labels")
    Y, P = _indicator_and_proba(y_true, proba, len(names))
    n, k = P.shape
    pred = (P > threshold).astype(np.int8)
    # One column reads as 1-D binary labels to scikit-learn, whose "label 0" would then be the
    # negative class: score that column's positives, as every column of a wider matrix is scored.
    Ys, preds, scored = (Y[:, 0], pred[:, 0], [1]) if k == 1 else (Y, pred, np.arange(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        Ys, preds, labels=scored, average=None, zero_division=0
    )
    per_label: dict[str, dict[str, Any]] = {}
    order = display_order(names)
    for j in order:
        name = names[j]
        entry: dict[str, Any] = {}
        values = np.unique(Y[:, j])
        if values.size < 2:
            entry["roc_auc"] = None
            entry["roc_auc_note"] = (
                f"y_true has one value only for this label (all {int(values[0])}): ROC AUC is undefined"
            )
        else:
            entry["roc_auc"] = float(roc_auc_score(Y[:, j], P[:, j]))
        entry.update(
            log_loss=_binary_log_loss(Y[:, j], P[:, j]),
            precision=float(precision[j]),
            recall=float(recall[j]),
            f1=float(f1[j]),
            support=int(support[j]),
            predicted_positive_rate=float(pred[:, j].mean()),
        )
        per_label[name] = entry
    return {
        "head": "sigmoid",
        "n_rows": int(n),
        "labels": [names[j] for j in order],
        "threshold": float(threshold),
        "hamming_loss": float(hamming_loss(Y, pred)),
        "subset_accuracy": float(np.mean(np.all(pred == Y, axis=1))),
        "micro_f1": float(f1_score(Ys, preds, labels=scored, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(Ys, preds, labels=scored, average="macro", zero_division=0)),
        "per_label": per_label,
    }


def reliability_bins(confidence: Any, outcome: Any, *, n_bins: int = _N_BINS) -> dict[str, Any]:
    """Bin predicted probabilities and compare each bin with what happened.

    Bin ``b`` holds the probabilities in ``[b/n_bins, (b+1)/n_bins)`` (the last
    bin includes 1). The expected calibration error is

    .. math:: \\mathrm{ECE} = \\sum_b \\frac{n_b}{n} \\left| \\bar o_b - \\bar p_b \\right|

    with :math:`\\bar p_b` the mean probability and :math:`\\bar o_b` the
    observed frequency (mean 0/1 outcome) of bin ``b``.

    Parameters
    ----------
    confidence : array-like of shape (m,)
        Predicted probabilities in [0, 1].
    outcome : array-like of shape (m,)
        1 where the predicted event happened, else 0.
    n_bins : int, default 10

    Returns
    -------
    dict
        ``edges`` (n_bins + 1), ``count``, ``mean_predicted`` and
        ``observed`` per bin (``None`` for an empty bin) and
        ``expected_calibration_error`` (``None`` when there is nothing to bin).

    Examples
    --------
    >>> r = reliability_bins([0.95, 0.95, 0.15, 0.15], [1, 0, 0, 0])
    >>> r["count"][9], r["observed"][9], round(r["expected_calibration_error"], 3)
    (2, 0.5, 0.3)
    """
    p = np.asarray(confidence, dtype=np.float64).ravel()
    o = np.asarray(outcome, dtype=np.float64).ravel()
    if p.shape != o.shape:
        raise ValueError(f"confidence and outcome must have the same length, got {p.size} and {o.size}")
    # floor(p * n_bins) puts 0.3 in [0.3, 0.4) (0.3 * 10 rounds up to 3.0000000000000004,
    # never down); the clip closes the last bin at 1.
    index = np.clip(np.floor(p * n_bins).astype(np.intp), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_o = np.bincount(index, weights=o, minlength=n_bins)
    nonempty = count > 0
    mean_p = np.divide(sum_p, count, out=np.zeros(n_bins), where=nonempty)
    observed = np.divide(sum_o, count, out=np.zeros(n_bins), where=nonempty)
    ece = float(np.sum(count * np.abs(observed - mean_p)) / p.size) if p.size else None
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.astype(int).tolist(),
        "mean_predicted": [float(v) if c else None for v, c in zip(mean_p, count)],
        "observed": [float(v) if c else None for v, c in zip(observed, count)],
        "expected_calibration_error": ece,
    }


# ---------------------------------------------------------------------- terminal


def format_metrics(metrics: Mapping[str, Any], *, max_rows: int = 50) -> list[str]:
    """Plain text lines for a terminal: headline metrics, then the per-class or per-label table.

    Parameters
    ----------
    metrics : dict
        From :func:`softmax_metrics` or :func:`sigmoid_metrics` (or read back
        from ``metrics.json``).
    max_rows : int, default 50
        Table rows shown; the rest are counted in a last line.

    Returns
    -------
    list of str
        Lines without newlines, table columns aligned.

    Examples
    --------
    >>> m = softmax_metrics([0, 1, 1], [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1])
    >>> print("\\n".join(format_metrics(m)))
    softmax head: 3 rows, 2 classes
    accuracy 0.6667   log loss 0.4149   macro-F1 0.6667
    class  precision  recall      f1  support
    0         0.5000  1.0000  0.6667        1
    1         1.0000  0.5000  0.6667        2
    """
    head, headline, columns, rows = _table_parts(metrics)
    widths = [max([len(c)] + [len(r[i]) for r in rows[:max_rows]]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(w) for cell, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    lines = [head, "   ".join(f"{name} {value}" for name, value in headline), line(columns)]
    lines += [line(r) for r in rows[:max_rows]]
    if len(rows) > max_rows:
        lines.append(f"... and {len(rows) - max_rows} more (all of them in metrics.json)")
    return lines


def metrics_table(metrics: Mapping[str, Any], *, max_rows: int = 50) -> Table:
    """The metrics as a :class:`rich.table.Table`: headline metrics in the title, one row per class or label.

    Names are :class:`rich.text.Text`, so a class called ``[bold]`` is shown
    as it is rather than read as markup.

    Parameters
    ----------
    metrics : dict
        From :func:`softmax_metrics` or :func:`sigmoid_metrics`.
    max_rows : int, default 50
        Table rows shown; the rest are counted in the caption.

    Returns
    -------
    rich.table.Table
    """
    from rich.table import Table
    from rich.text import Text

    head, headline, columns, rows = _table_parts(metrics)
    title = Text(head + "\n", style="bold")
    title.append("   ".join(f"{name} {value}" for name, value in headline), style="none")
    caption = f"{len(rows) - max_rows} more in metrics.json" if len(rows) > max_rows else None
    table = Table(title=title, caption=caption, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows[:max_rows]:
        table.add_row(*(Text(cell) for cell in row))
    return table


def _table_parts(metrics: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]], list[str], list[list[str]]]:
    """``(head line, [(metric, value)], column names, rows of cells)`` shared by both terminal views."""
    kind = metrics.get("head")
    n = metrics.get("n_rows")
    if kind == "softmax":
        head = f"softmax head: {n} rows, {len(metrics['classes'])} classes"
        headline = [("accuracy", _num(metrics["accuracy"])), ("log loss", _num(metrics["log_loss"])),
                    ("macro-F1", _num(metrics["macro_f1"]))]  # fmt: skip
        columns = ["class", "precision", "recall", "f1", "support"]
        rows = [
            [_short(name), _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), str(v["support"])]
            for name, v in metrics["per_class"].items()
        ]
    elif kind == "sigmoid":
        head = f"sigmoid head: {n} rows, {len(metrics['labels'])} labels, threshold {metrics['threshold']:g}"
        headline = [("Hamming loss", _num(metrics["hamming_loss"])),
                    ("subset accuracy", _num(metrics["subset_accuracy"])),
                    ("micro-F1", _num(metrics["micro_f1"])), ("macro-F1", _num(metrics["macro_f1"]))]  # fmt: skip
        columns = ["label", "ROC AUC", "log loss", "precision", "recall", "f1", "support", "predicted+"]
        rows = [
            [_short(name), _num(v["roc_auc"]), _num(v["log_loss"]), _num(v["precision"]), _num(v["recall"]),
             _num(v["f1"]), str(v["support"]), _num(v["predicted_positive_rate"])]
            for name, v in metrics["per_label"].items()
        ]  # fmt: skip
    else:
        raise ValueError(f"metrics must come from softmax_metrics or sigmoid_metrics; got head={kind!r}")
    return head, headline, columns, rows


def _num(value: Any) -> str:
    """Four decimals; ``n/a`` for a metric that is undefined (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def _short(name: str, limit: int = _MAX_NAME) -> str:
    """One line, at most ``limit`` characters (a long name ends in an ellipsis)."""
    name = " ".join(str(name).split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


# ---------------------------------------------------------------------- validation and helpers


def _names(values: Sequence[Any], argname: str) -> list[str]:
    names = [str(v) for v in values]
    if not names:
        raise ValueError(f"{argname} must name at least one class, got none")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise ValueError(f"{argname} must have distinct names, {dup!r} occurs twice")
    return names


def _probability_matrix(proba: Any, argname: str, *, n_cols: int) -> np.ndarray:
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != n_cols:
        raise ValueError(f"{argname} must have shape (n, {n_cols}), got {P.shape}")
    if P.shape[0] == 0:
        raise ValueError(f"{argname} has no rows: nothing to score")
    if not np.all(np.isfinite(P)) or P.min() < 0.0 or P.max() > 1.0:
        bad = np.argwhere(~(np.isfinite(P) & (P >= 0.0) & (P <= 1.0)))[0]
        raise ValueError(f"{argname} must hold probabilities in [0, 1]; {argname}[{bad[0]}, {bad[1]}] = "
                         f"{float(P[bad[0], bad[1]])!r}")  # fmt: skip
    return P


def _class_indices(y_true: Any, classes: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    """Column index of every row's class; unknown labels are a ValueError that names them."""
    y = np.asarray(y_true, dtype=object)
    if y.ndim != 1:
        raise ValueError(f"y_true must be one class per row, shape (n,), got shape {y.shape}")
    by_value: dict[Any, int] = {}
    for j, c in enumerate(classes):
        try:
            by_value.setdefault(c, j)
        except TypeError:  # an unhashable class is found by its text
            pass
    by_name = {name: j for j, name in enumerate(names)}
    out = np.empty(y.shape[0], dtype=np.intp)
    missing: dict[str, None] = {}
    for i, value in enumerate(y.tolist()):
        try:
            j = by_value.get(value)
        except TypeError:
            j = None
        if j is None:
            j = by_name.get(str(value))
        if j is None:
            missing[str(value)] = None
            j = 0
        out[i] = j
    if missing:
        shown = sorted(missing)
        listed = ", ".join(repr(m) for m in shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")
        known = ", ".join(repr(n) for n in names[:10]) + (", ..." if len(names) > 10 else "")
        raise ValueError(f"y_true has labels that are not among the {len(names)} classes ({known}): {listed}")
    return out


def _indicator_and_proba(y_true: Any, proba: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Y, P)`` as (n, k) arrays: Y of 0/1 int8, P of probabilities in float64."""
    Y = np.asarray(y_true)
    P = np.asarray(proba, dtype=np.float64)
    if k == 1 and Y.ndim == 1:
        Y = Y[:, None]
    if k == 1 and P.ndim == 1:
        P = P[:, None]
    if Y.ndim != 2 or Y.shape[1] != k:
        raise ValueError(f"y_true must be a 0/1 matrix of shape (n, {k}), got shape {Y.shape}")
    P = _probability_matrix(P, "proba", n_cols=k)
    if Y.shape[0] != P.shape[0]:
        raise ValueError(f"y_true has {Y.shape[0]} rows but proba has {P.shape[0]}")
    try:
        ok = bool(np.all((Y == 0) | (Y == 1)))
    except TypeError:
        ok = False
    if not ok:
        values = sorted({str(v) for v in Y.ravel().tolist()} - {"0", "1", "0.0", "1.0", "True", "False"})
        raise ValueError(f"y_true must be 0/1 label indicators; it holds {', '.join(values[:5])}")
    return Y.astype(np.int8), P


def _binary_log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy of one label (natural log).

    Probabilities are clipped only at the smallest positive normal float64, so
    that a confident mistake is a large finite penalty (~708) instead of inf.
    ``1 - p`` is exact for p >= 0.5 (Sterbenz), where it matters.
    """
    tiny = np.finfo(np.float64).tiny
    losses = np.where(y == 1, -np.log(np.maximum(p, tiny)), -np.log(np.maximum(1.0 - p, tiny)))
    return float(np.mean(losses))


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, sets sorted into
    lists, NaN/inf as null, anything else (paths) as text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
