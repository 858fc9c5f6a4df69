"""Metrics, plots and a self-contained HTML report for a fitted classifier.

``softxent fit``, ``evaluate`` and ``demo`` hand this module the true labels and
the predicted probabilities of one of the two heads and get back

1. a JSON-able metrics dict (:func:`softmax_metrics`, :func:`sigmoid_metrics`),
2. the same metrics for a terminal (:func:`format_metrics` as plain lines,
   :func:`metrics_table` as a :class:`rich.table.Table`),
3. a report folder (:func:`write_report`): ``metrics.json``, PNG figures (the
   training objective, the confusion matrix or per-label bars, a reliability
   diagram) and ``report.html``, which embeds every figure as a ``data:`` URI
   so that the one file can be mailed or attached on its own.

The two heads are scored the way their losses read the labels:

* **softmax**: one class per row, the probabilities of a row share one unit of
  mass; the prediction is the arg-max. Accuracy, log loss
  :math:`-\\frac1n\\sum_i \\log p_{i, y_i}` (the seed's eq. (7)),
  macro-F1, per-class precision/recall/F1 and the confusion matrix.
* **sigmoid**: every label is its own yes/no question, a label is predicted
  when its probability exceeds ``threshold`` (strictly, as
  :class:`softxent.models.SigmoidRegression` does). Hamming loss, subset
  accuracy, micro/macro-F1 and, per label, ROC AUC and binary log loss.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas attached directly, never through ``pyplot``: nothing global changes, no
display is needed, and a figure is freed as soon as it is saved (no "too many
open figures" warning however many reports a process writes).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import write_atomically

if TYPE_CHECKING:  # rich is imported when a table is asked for
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = [
    "REPORT_FILES",
    "format_metrics",
    "jsonable",
    "metrics_table",
    "reliability_bins",
    "sigmoid_metrics",
    "softmax_metrics",
    "write_report",
]

#: Every name :func:`write_report` may write in its folder (commands check them before any work).
REPORT_FILES = ("loss_curve.png", "confusion_matrix.png", "per_label.png", "reliability.png",
                "metrics.json", "report.html")  # fmt: skip
_N_BINS = 10  # reliability diagram: 10 equal-width bins of predicted probability
_MAX_ANNOTATED = 30  # confusion-matrix cells carry their counts up to this many classes
_MAX_NAME = 24  # characters of a class name shown in a terminal column or on an axis
_DPI = 100

# Rows summing to 1 within this much count as probability rows (float32 rows
# are off by a few 1e-7; anything worse is not a softmax output).
_ROW_SUM_TOL = 1e-3

_FIGURE_CAPTIONS = {
    "loss_curve": "training objective per iteration",
    "confusion_matrix": "confusion matrix: rows are the true classes, columns the predictions; "
    "colour is the share of the true class's rows, numbers are counts",
    "per_label": "F1 and ROC AUC per label",
    "reliability": "reliability diagram: predicted probability against observed frequency",
}


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
        text), ``accuracy``, ``log_loss`` (natural log, mean over rows),
        ``macro_f1`` (mean F1 over the classes that occur in ``y_true`` or in
        the predictions, as :func:`sklearn.metrics.f1_score` does),
        ``per_class`` (name → ``precision``, ``recall``, ``f1``, ``support``;
        every class, 0 where undefined) and ``confusion_matrix`` (rows = true,
        columns = predicted, in the order of ``classes``).

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
    return {
        "head": "softmax",
        "n_rows": int(P.shape[0]),
        "classes": names,
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
            for j, name in enumerate(names)
        },  # fmt: skip
        "confusion_matrix": confusion_matrix(true, pred, labels=labels).astype(int).tolist(),
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
        Names of the labels.
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
    precision, recall, f1, support = precision_recall_fscore_support(
        Y, pred, labels=np.arange(k), average=None, zero_division=0
    )
    per_label: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
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
        "labels": names,
        "threshold": float(threshold),
        "hamming_loss": float(hamming_loss(Y, pred)),
        "subset_accuracy": float(np.mean(np.all(pred == Y, axis=1))),
        "micro_f1": float(f1_score(Y, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(Y, pred, average="macro", zero_division=0)),
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


# ---------------------------------------------------------------------- report


def write_report(
    directory: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any],
    y_true: Any,
    proba: Any,
    names: Sequence[str],
    loss_curve: Sequence[float] | None,
    title: str,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """Write a report folder: ``metrics.json``, PNG figures and a self-contained ``report.html``.

    Parameters
    ----------
    directory : path
        Created if missing (parents too); files of the same names are replaced,
        each one whole (written beside it, then renamed), so a failed run leaves the old one.
    metrics : dict
        From :func:`softmax_metrics` or :func:`sigmoid_metrics`; its ``head``
        decides the figures.
    y_true : array-like
        The labels the metrics were computed from: classes of shape (n,) for
        softmax, a 0/1 matrix of shape (n, k) for sigmoid.
    proba : array-like of shape (n, k)
        The predicted probabilities, columns in the order of ``names``.
    names : sequence of str
        Class or label names, in the column order of ``proba``.
    loss_curve : sequence of float or None
        Training objective per iteration; no ``loss_curve.png`` when None or
        empty.
    title : str
        Heading of the report.
    notes : sequence of str, default ()
        Lines shown under the title (HTML-escaped).

    Returns
    -------
    dict of str to pathlib.Path
        What was written: ``metrics``, ``report``, ``reliability``,
        ``confusion_matrix`` (softmax) or ``per_label`` (sigmoid), and
        ``loss_curve`` when there was one.

    Notes
    -----
    ``metrics.json`` is the metrics dict with ``title``, ``notes`` and the
    reliability bins (``reliability``, with the expected calibration error)
    added; NaN and infinities are written as ``null``. The figures:

    * ``loss_curve.png``: the objective per iteration, on a log scale when it
      spans more than two decades;
    * softmax: ``confusion_matrix.png``: counts (annotated up to 30 classes),
      colour normalised by true row; sigmoid: ``per_label.png``: F1 and ROC
      AUC per label;
    * ``reliability.png``: 10 equal bins of predicted probability against the
      observed frequency, with the diagonal and the bin counts; for softmax
      the top-class probability against accuracy, for sigmoid every (row,
      label) probability against the label's 0/1 value.
    """
    kind = metrics.get("head")
    if kind not in ("softmax", "sigmoid"):
        raise ValueError(f"metrics must come from softmax_metrics or sigmoid_metrics; got head={kind!r}")
    names = [str(name) for name in names]
    if kind == "softmax":
        P = _probability_matrix(proba, "proba", n_cols=len(names))
        true = _class_indices(y_true, names, names)
        if true.shape[0] != P.shape[0]:
            raise ValueError(f"y_true has {true.shape[0]} rows but proba has {P.shape[0]}")
        confidence = P.max(axis=1)
        outcome = (np.argmax(P, axis=1) == true).astype(np.float64)
    else:
        Y, P = _indicator_and_proba(y_true, proba, len(names))
        confidence, outcome = P.ravel(), Y.ravel().astype(np.float64)
    reliability = reliability_bins(confidence, outcome)

    # Everything is rendered in memory first and each file is then replaced
    # whole (cli._files): a failure while drawing leaves the old report as it was.
    out = Path(directory)
    rendered: list[tuple[str, Path, bytes]] = []
    curve = None if loss_curve is None else np.asarray(loss_curve, dtype=np.float64).ravel()
    if curve is not None and curve.size:
        rendered.append(("loss_curve", out / "loss_curve.png", _png(_loss_figure(curve))))
    if kind == "softmax":
        matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
        rendered.append(("confusion_matrix", out / "confusion_matrix.png", _png(_confusion_figure(matrix, names))))
    else:
        rendered.append(("per_label", out / "per_label.png", _png(_per_label_figure(metrics, names))))
    rendered.append(("reliability", out / "reliability.png", _png(_reliability_figure(reliability, kind))))

    figures = list(rendered)
    document = {"title": str(title), "notes": [str(note) for note in notes], **metrics, "reliability": reliability}
    # allow_nan=False: after jsonable nothing non-finite is left; if something
    # were, failing beats writing a NaN token that strict JSON parsers reject.
    text = json.dumps(jsonable(document), indent=2, allow_nan=False) + "\n"
    rendered.append(("metrics", out / "metrics.json", text.encode("utf-8")))
    page = _html(title, notes, metrics, reliability, figures)
    rendered.append(("report", out / "report.html", page.encode("utf-8")))

    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for key, path, data in rendered:  # report.html last: it links the others
        write_atomically(path, data)
        written[key] = path
    return written


# ---------------------------------------------------------------------- figures


def _figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas: no pyplot, no global state, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes; the figure is freed."""
    with warnings.catch_warnings():
        # A class name in a script the default font lacks (CJK, say) is drawn
        # as boxes; say nothing rather than warn once per missing glyph.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support", category=UserWarning)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=_DPI)
    fig.clear()  # the figure is referenced by nothing else; clear() drops its artists now
    return buffer.getvalue()


def _label(text: str, limit: int = 20) -> str:
    """Text for an axis: one line, short, and with ``$`` escaped (matplotlib reads ``$...$`` as math)."""
    return _short(text, limit).replace("$", r"\$")


def _loss_figure(curve: np.ndarray) -> Figure:
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    iterations = np.arange(1, curve.size + 1)
    ax.plot(iterations, curve, marker="o" if curve.size < 30 else None, color="tab:blue")
    finite = curve[np.isfinite(curve)]
    # A log scale when the objective falls by more than two decades; only
    # possible when every value is positive.
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training objective")
    last = f", final {finite[-1]:.6g}" if finite.size else ""
    ax.set_title(f"Training objective ({curve.size} iterations{last})")
    ax.grid(True, alpha=0.3)
    return fig


def _confusion_figure(matrix: np.ndarray, names: Sequence[str]) -> Figure:
    k = matrix.shape[0]
    size = float(np.clip(0.22 * k + 3.0, 5.0, 22.0))  # inches: ~0.16 in a cell at 100 classes
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    # Colour by the share of each true class's rows, so that a rare class's
    # row is as readable as a common one's; an empty row stays white.
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="equal")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's rows")
    if k <= _MAX_ANNOTATED:
        fontsize = 10 if k <= 10 else 8 if k <= 20 else 6
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=fontsize,
                            color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    fontsize = float(np.clip(0.5 * size * 72.0 / max(k, 1), 5.0, 10.0))  # half a cell's height, in points
    labels = [_label(name) for name in names]
    ax.set_xticks(np.arange(k), labels, fontsize=fontsize, rotation=90 if k > 10 else 45,
                  ha="center" if k > 10 else "right")  # fmt: skip
    ax.set_yticks(np.arange(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(int(matrix.sum()), 1)
    ax.set_title(f"Confusion matrix ({int(matrix.sum())} rows, accuracy {accuracy:.3f})")
    return fig


def _per_label_figure(metrics: Mapping[str, Any], names: Sequence[str]) -> Figure:
    per_label = metrics["per_label"]
    entries = list(per_label.values())
    k = len(entries)
    fig = _figure(8, float(np.clip(0.32 * k + 1.8, 3.0, 30.0)))
    ax = fig.add_subplot()
    y = np.arange(k)
    f1 = [entry["f1"] for entry in entries]
    auc = [entry["roc_auc"] for entry in entries]
    height = 0.38
    ax.barh(y - height / 2, f1, height=height, color="tab:blue", label="F1")
    ax.barh(y + height / 2, [0.0 if a is None else a for a in auc], height=height, color="tab:orange",
            label="ROC AUC")  # fmt: skip
    fontsize = float(np.clip(300.0 / max(k, 1), 5.0, 9.0))
    for i, a in enumerate(auc):
        if a is None:
            ax.text(0.01, i + height / 2, "AUC n/a (one value)", va="center", fontsize=fontsize, color="0.3")
    ax.axvline(0.5, color="0.5", linestyle=":", linewidth=1)  # ROC AUC of a guess
    ax.set_yticks(y, [_label(str(name)) for name in per_label], fontsize=fontsize)
    ax.invert_yaxis()  # first label on top, as in the table
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(f"score (F1 at threshold {metrics['threshold']:g})")
    ax.set_title(f"Per label: F1 and ROC AUC (micro-F1 {metrics['micro_f1']:.3f}, macro-F1 {metrics['macro_f1']:.3f})")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def _reliability_figure(reliability: Mapping[str, Any], kind: str) -> Figure:
    fig = _figure(6.5, 7)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.asarray(reliability["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    count = np.asarray(reliability["count"])
    observed = np.array([np.nan if v is None else v for v in reliability["observed"]])
    mean_p = np.array([np.nan if v is None else v for v in reliability["mean_predicted"]])
    top.plot([0, 1], [0, 1], linestyle="--", color="0.5", label="perfectly calibrated")
    top.bar(centres, np.nan_to_num(observed), width=width * 0.9, color="tab:blue", alpha=0.6,
            edgecolor="tab:blue", label="observed frequency per bin")  # fmt: skip
    top.plot(mean_p, observed, marker="o", color="tab:red", linestyle="-", label="(mean predicted, observed)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy of the top class" if kind == "softmax" else "observed frequency of 1")
    top.legend(loc="upper left", fontsize=8)
    ece = reliability["expected_calibration_error"]
    top.set_title(f"Reliability diagram, expected calibration error {_num(ece)}")
    bottom.bar(centres, count, width=width * 0.9, color="0.6")
    for x, c in zip(centres, count):
        bottom.annotate(str(int(c)), (x, c), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7)  # fmt: skip
    bottom.set_ylim(0, max(int(count.max()), 1) * 1.3)
    bottom.set_ylabel("rows" if kind == "softmax" else "(row, label) cells")
    bottom.set_xlabel("probability of the top class" if kind == "softmax" else "predicted probability")
    bottom.set_xticks(edges)
    return fig


# ---------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #bbb; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.na { color: #999; }
"""


def _html(title: str, notes: Sequence[str], metrics: Mapping[str, Any], reliability: Mapping[str, Any],
          figures: Sequence[tuple[str, Path, bytes]]) -> str:  # fmt: skip
    """The report page: every figure inline (base64 PNG), no external CSS, JS or fonts."""
    esc = html.escape  # quote=True: also safe inside attribute values
    kind = metrics["head"]
    head, headline, columns, _ = _table_parts(metrics)
    headline = [*headline, ("expected calibration error", _num(reliability["expected_calibration_error"]))]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(str(title))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(str(title))}</h1>",
        f'<p class="meta">softxent report: {esc(head)}</p>',
    ]
    if notes:
        parts.append('<ul class="notes">')
        parts += [f"<li>{esc(str(note))}</li>" for note in notes]
        parts.append("</ul>")
    parts += ["<h2>Headline metrics</h2>", '<table class="headline"><tbody>']
    parts += [f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in headline]
    if kind == "sigmoid":
        parts.append(f"<tr><th>threshold</th><td>{metrics['threshold']:g}</td></tr>")
    parts += ["</tbody></table>", "<h2>Figures</h2>"]
    for key, path, png in figures:
        data = base64.b64encode(png).decode("ascii")
        name = esc(path.name)
        parts.append(
            f'<figure id="{esc(key)}"><img src="data:image/png;base64,{data}" alt="{esc(_FIGURE_CAPTIONS[key])}">'
            f'<figcaption><a href="{name}">{name}</a>: {esc(_FIGURE_CAPTIONS[key])}</figcaption></figure>'
        )
    parts.append(f"<h2>{'Per class' if kind == 'softmax' else 'Per label'}</h2>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr></thead><tbody>")
    if kind == "softmax":
        for name, v in metrics["per_class"].items():
            cells = [name, _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), str(v["support"])]
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    else:
        for name, v in metrics["per_label"].items():
            auc = (f'<td class="na" title="{esc(v.get("roc_auc_note", ""))}">n/a</td>' if v["roc_auc"] is None
                   else f"<td>{_num(v['roc_auc'])}</td>")  # fmt: skip
            rest = [_num(v["log_loss"]), _num(v["precision"]), _num(v["recall"]), _num(v["f1"]),
                    str(v["support"]), _num(v["predicted_positive_rate"])]  # fmt: skip
            parts.append(f"<tr><td>{esc(name)}</td>{auc}" + "".join(f"<td>{esc(c)}</td>" for c in rest) + "</tr>")
    parts.append("</tbody></table>")
    undefined = [name for name, v in metrics.get("per_label", {}).items() if v["roc_auc"] is None]
    if undefined:
        parts.append(f"<p class=\"na\">ROC AUC n/a: the label has one value only in the data "
                     f"({esc(', '.join(undefined[:20]))}{', ...' if len(undefined) > 20 else ''}).</p>")  # fmt: skip
    parts += ['<p class="meta">All figures and numbers: <a href="metrics.json">metrics.json</a>.</p>',
              "</body>", "</html>", ""]  # fmt: skip
    return "\n".join(parts)


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
