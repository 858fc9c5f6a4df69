"""``softxent demo``: the seed's practical question answered on real data, offline.

(a) Handwritten digits (scikit-learn's ``load_digits``): every image is exactly
    one digit, so the labels exclude each other and ``choose_head`` says
    softmax; fit, held-out metrics, report.
(b) A multi-label set: Yeast (2417 genes, 103 features, 14 functional
    classes; from ``river`` when installed), where a gene has about four
    classes at once, so ``choose_head`` says one sigmoid per label. Without
    river the demo says how to get it and uses tags of the digits instead
    (even, prime, has a closed loop, at least 5), which overlap in the same way.
(c) The wrong head on (b): a softmax trained on the same rows (each row's
    labels sharing its unit of probability, y/Σy), scored per label with the
    same 0.5 threshold. Its probabilities must sum to one, so a row with four
    labels cannot give four of them p > 0.5: per-label recall collapses. The
    figures are measured on the spot.

Every part runs through the same code as ``softxent fit`` (:func:`train`) and
writes its report folder; the demo ends by printing where they are.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._commands import Output
from ._files import check_output_dir
from ._pipeline import TrainResult, train
from ._report import write_report

__all__ = ["run_demo"]

_PARTS = ("digits", "multilabel", "wrong-head")  # the report folders, one per part


def _digits_table() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    table = pd.DataFrame(digits.data, columns=[f"pixel{i}" for i in range(digits.data.shape[1])])
    table["digit"] = digits.target
    return table


def _yeast_table() -> tuple[pd.DataFrame, list[str], str]:
    """Yeast from river, or the digits with overlapping tags; returns (table, label columns, description)."""
    try:
        from river.datasets import Yeast
    except ImportError:
        table = _digits_table()
        d = table.pop("digit").to_numpy()
        tags = {
            "even": d % 2 == 0,
            "prime": np.isin(d, [2, 3, 5, 7]),
            "closed_loop": np.isin(d, [0, 4, 6, 8, 9]),
            "at_least_5": d >= 5,
        }
        for name, values in tags.items():
            table[name] = values.astype(int)
        return (
            table,
            list(tags),
            (
                "river is not installed (pip install river, or 'softxent[data]'), so instead of Yeast: "
                "the digits with 4 overlapping tags (even, prime, closed loop, at least 5)"
            ),
        )
    rows, labels = [], []
    for x, y in Yeast():
        rows.append(x)
        labels.append(y)
    table = pd.DataFrame(rows)
    names = list(labels[0])
    table[names] = pd.DataFrame(labels, columns=names).astype(int).to_numpy()
    return table, names, "Yeast (river.datasets.Yeast): 2417 genes, 103 features, 14 functional classes"


def _section(out: Output, title: str) -> None:
    out.line()
    out.line(title)
    out.line("-" * len(title))


def _fit_and_report(out: Output, table: pd.DataFrame, targets: list[str], report: Path, title: str,
                    seed: int, quiet: bool) -> TrainResult:  # fmt: skip
    def on_choice(choice: Any, auto: Any, preprocessor: Any) -> None:
        out.line(f"choose_head says: {choice.head}")
        out.line(f"  because {choice.reason}")

    start = time.perf_counter()
    with out.progress(300, "training") as callback:
        result = train(table, targets=targets, max_iter=300, seed=seed, callback=callback,
                       on_choice=on_choice, source=title)  # fmt: skip
    pipeline = result.pipeline
    out.line(f"fit: {result.n_train} training rows, {pipeline.n_iter} L-BFGS iterations, "
             f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    for text in result.warnings:
        out.line(f"  note: {text}")
    out.line(f"held-out metrics ({result.n_test} rows):")
    out.metrics(result.metrics)
    notes = [f"head: {pipeline.choice.head}. {pipeline.choice.reason}", *pipeline.preprocessor.summary()]
    write_report(report, metrics=result.metrics, y_true=result.truth, proba=result.proba,
                 names=[str(n) for n in pipeline.names], loss_curve=pipeline.loss_curve, title=title, notes=notes)  # fmt: skip
    out.line(f"report: {report / 'report.html'}")
    return result


def _wrong_head(out: Output, table: pd.DataFrame, result: TrainResult, report: Path) -> dict:
    """Softmax on the multi-label rows of ``result`` (same split, same features), scored per label."""
    from ..models import SoftmaxRegression

    pipeline = result.pipeline
    # The sigmoid model's probability columns follow its classes_ (sorted
    # label names), not the table's column order: score both heads in that order.
    labels = [str(name) for name in pipeline.names]
    X = pipeline.transform(table)
    Y = table[labels].to_numpy(dtype=np.int8)
    train_rows, test_rows = result.train_rows, result.test_rows
    # Softmax cross-entropy against y/Σy is a weighted sum over the row's labels:
    # one copy of the row per label, weight 1/|labels|. Rows without a label
    # get a class of their own (index k), which is never a label.
    k = len(labels)
    rows, classes, weights = [], [], []
    for i in train_rows:
        on = np.flatnonzero(Y[i])
        for j in on if len(on) else [k]:
            rows.append(i)
            classes.append(j)
            weights.append(1.0 / max(len(on), 1))
    softmax = SoftmaxRegression(C=1.0, max_iter=300).fit(X[rows], np.array(classes), sample_weight=np.array(weights))
    proba = np.zeros((len(test_rows), k))
    p = softmax.predict_proba(X[test_rows])
    for col, c in enumerate(softmax.classes_):
        if c < k:
            proba[:, c] = p[:, col]
    sigmoid_proba = result.proba
    truth = Y[test_rows]

    def scores(P: np.ndarray) -> dict[str, Any]:
        pred = P > 0.5
        tp = (pred & (truth == 1)).sum(axis=0)
        recall = tp / np.maximum(truth.sum(axis=0), 1)
        micro = 2 * tp.sum() / max(pred.sum() + truth.sum(), 1)
        return {"recall": recall, "micro_f1": float(micro), "labels_per_row": float(pred.sum(axis=1).mean()),
                "mass_per_row": float(P.sum(axis=1).mean())}  # fmt: skip

    sig, soft = scores(sigmoid_proba), scores(proba)
    out.line(f"{'label':<14}{'share of rows':>14}{'recall sigmoid':>16}{'recall softmax':>16}")
    for j, name in enumerate(labels):
        out.line(f"{name:<14}{truth[:, j].mean():>14.2f}{sig['recall'][j]:>16.2f}{soft['recall'][j]:>16.2f}")
    out.line(f"{'mean':<14}{'':>14}{sig['recall'].mean():>16.2f}{soft['recall'].mean():>16.2f}")
    out.line(f"labels per row: true {truth.sum(axis=1).mean():.2f}, predicted by the sigmoid heads "
             f"{sig['labels_per_row']:.2f}, by the softmax {soft['labels_per_row']:.2f}")  # fmt: skip
    out.line(f"probability mass per row: sigmoid {sig['mass_per_row']:.2f} (free), softmax "
             f"{soft['mass_per_row']:.2f} (at most 1: the classes share it)")  # fmt: skip
    out.line(f"micro-F1 at threshold 0.5: sigmoid {sig['micro_f1']:.3f}, softmax {soft['micro_f1']:.3f}")
    out.line("A softmax says which ONE label a row has; with several true labels it spreads one unit of")
    out.line("probability over them, so few of them clear 0.5: the labels are not exclusive, use a sigmoid each.")
    figures = {
        "labels": labels,
        "recall_sigmoid": sig["recall"].tolist(),
        "recall_softmax": soft["recall"].tolist(),
        "micro_f1_sigmoid": sig["micro_f1"],
        "micro_f1_softmax": soft["micro_f1"],
        "labels_per_row_true": float(truth.sum(axis=1).mean()),
        "labels_per_row_sigmoid": sig["labels_per_row"],
        "labels_per_row_softmax": soft["labels_per_row"],
    }
    from ._metrics import sigmoid_metrics

    metrics = sigmoid_metrics(truth, proba, labels)
    write_report(report, metrics=metrics, y_true=truth, proba=proba, names=labels, loss_curve=softmax.loss_curve_,
                 title="The wrong head: a softmax on multi-label data",
                 notes=["softmax trained on y/sum(y) of the same training rows, scored per label at 0.5",
                        f"micro-F1: sigmoid heads {sig['micro_f1']:.3f}, softmax {soft['micro_f1']:.3f}"])  # fmt: skip
    out.line(f"report: {report / 'report.html'}")
    return figures


def run_demo(
    *, report_dir: str | Path = "softxent-demo", seed: int = 0, quiet: bool = False, stream: Any = None
) -> int:
    """Run parts (a)-(c), write their reports under ``report_dir``; return the exit code (0)."""
    # Before the first fit: a report folder that cannot be written fails now, not after the training.
    check_output_dir(str(report_dir), "--report-dir", subdirs=_PARTS)
    out = Output(quiet=quiet, stream=stream if stream is not None else sys.stdout)
    root = Path(report_dir)
    start = time.perf_counter()
    out.line("softxent demo: softmax or sigmoid? The labels decide.")

    _section(out, "(a) Handwritten digits: each image is exactly one digit")
    digits = _digits_table()
    out.line(f"data: scikit-learn load_digits, {len(digits)} images of 8x8 pixels, target column 'digit'")
    _fit_and_report(out, digits, ["digit"], root / "digits", "digits: softmax over 10 classes", seed, quiet)

    table, labels, description = _yeast_table()
    _section(out, "(b) Multi-label data: a row can carry several labels")
    out.line(f"data: {description}")
    result = _fit_and_report(out, table, labels, root / "multilabel", "multi-label: one sigmoid per label", seed, quiet)

    _section(out, "(c) The wrong head: a softmax on the same multi-label rows")
    _wrong_head(out, table, result, root / "wrong-head")

    out.line()
    out.line(f"done in {time.perf_counter() - start:.1f} s. Reports (open report.html in a browser):")
    for part in _PARTS:
        out.line(f"  {root / part / 'report.html'}")
    return 0
