"""A report folder for a fitted classifier: ``metrics.json``, PNG figures and a self-contained ``report.html``.

:func:`write_report` takes the metrics of :mod:`softxent.cli._metrics`, the
true labels and the predicted probabilities, draws the figures of
:mod:`softxent.cli._figures` (the training objective, the confusion matrix or
per-label bars, a reliability diagram) and writes them with ``metrics.json``
and ``report.html``, which embeds every figure as a ``data:`` URI so that the
one file can be mailed or attached on its own. Every file is replaced whole
(:mod:`softxent.cli._files`): a failed run leaves the old report as it was.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._figures import _confusion_figure, _loss_figure, _per_label_figure, _png, _reliability_figure
from ._files import write_atomically
from ._metrics import (
    _class_indices,
    _indicator_and_proba,
    _num,
    _probability_matrix,
    _table_parts,
    jsonable,
    reliability_bins,
)

__all__ = ["REPORT_FILES", "write_report"]

#: Every name :func:`write_report` may write in its folder (commands check them before any work).
REPORT_FILES = ("loss_curve.png", "confusion_matrix.png", "per_label.png", "reliability.png",
                "metrics.json", "report.html")  # fmt: skip

_FIGURE_CAPTIONS = {
    "loss_curve": "training objective per iteration",
    "confusion_matrix": "confusion matrix: rows are the true classes, columns the predictions; "
    "colour is the share of the true class's rows, numbers are counts",
    "per_label": "F1 and ROC AUC per label",
    "reliability": "reliability diagram: predicted probability against observed frequency",
}


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
        rendered.append(
            ("confusion_matrix", out / "confusion_matrix.png", _png(_confusion_figure(matrix, metrics["classes"])))
        )
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
