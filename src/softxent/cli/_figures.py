"""The figures of a report, drawn with matplotlib and returned as PNG bytes.

The training objective per iteration (:func:`_loss_figure`), the confusion
matrix of a softmax head (:func:`_confusion_figure`), F1 and ROC AUC per
label of a sigmoid head (:func:`_per_label_figure`) and the reliability
diagram (:func:`_reliability_figure`); :func:`_png` turns one into PNG bytes.
:func:`softxent.cli._report.write_report` puts them in a report folder.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg
canvas attached directly, never through ``pyplot``: nothing global changes, no
display is needed, and a figure is freed as soon as it is saved (no "too many
open figures" warning however many reports a process writes).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._metrics import _num, _short

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_MAX_ANNOTATED = 30  # confusion-matrix cells carry their counts up to this many classes
_DPI = 100


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
