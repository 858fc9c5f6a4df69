"""softxent.cli._metrics, _figures and _report: metrics against hand-computed values and scikit-learn, terminal views, report folders."""

from __future__ import annotations

import gc
import json
import math
import re
import weakref

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("rich")

from sklearn import metrics as skm  # noqa: E402

from softxent.cli._figures import _confusion_figure, _loss_figure, _png  # noqa: E402
from softxent.cli._metrics import (  # noqa: E402
    format_metrics,
    metrics_table,
    reliability_bins,
    sigmoid_metrics,
    softmax_metrics,
)
from softxent.cli._report import write_report  # noqa: E402

# ---------------------------------------------------------------------- tiny hand-computed cases

# Softmax, 4 rows, 3 classes. Predictions (arg-max): a, b, b, b.
SOFT_Y = ["a", "b", "c", "a"]
SOFT_P = [
    [0.7, 0.2, 0.1],  # true a, predicted a
    [0.1, 0.6, 0.3],  # true b, predicted b
    [0.2, 0.5, 0.3],  # true c, predicted b
    [0.4, 0.5, 0.1],  # true a, predicted b
]

# Sigmoid, 4 rows, 2 labels. Predictions (> 0.5): [1,0], [0,1], [1,0], [0,1].
SIG_Y = [[1, 0], [0, 1], [1, 1], [0, 0]]
SIG_P = [[0.9, 0.2], [0.4, 0.6], [0.6, 0.3], [0.2, 0.7]]


def test_softmax_metrics_by_hand():
    m = softmax_metrics(SOFT_Y, SOFT_P, ["a", "b", "c"])
    assert m["head"] == "softmax"
    assert m["n_rows"] == 4
    assert m["classes"] == ["a", "b", "c"]
    assert m["accuracy"] == 0.5
    assert m["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.6) + math.log(0.3) + math.log(0.4)) / 4)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    # a: 1 of 1 predicted right, 1 of 2 found; b: 1 of 3 predicted right, 1 of 1 found; c: never predicted.
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["per_class"]["b"] == pytest.approx({"precision": 1 / 3, "recall": 1.0, "f1": 0.5, "support": 1})
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)
    json.dumps(m, allow_nan=False)  # JSON-able as it is


def test_softmax_metrics_match_sklearn(rng):
    k, n = 5, 300
    classes = np.array(["ant", "bee", "cat", "dog", "eel"])
    y = classes[rng.integers(0, k, n)]
    P = rng.dirichlet(np.full(k, 0.7), size=n)
    m = softmax_metrics(y, P, classes)
    pred = classes[P.argmax(axis=1)]
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, P, labels=classes), rel=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=classes).tolist()
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    for j, name in enumerate(classes):
        assert m["per_class"][name] == pytest.approx({"precision": p[j], "recall": r[j], "f1": f[j], "support": s[j]})


def test_softmax_perfect_classifier():
    y = np.array([2, 0, 1, 1, 0])
    P = np.eye(3)[y]
    m = softmax_metrics(y, P, [0, 1, 2])
    assert m["accuracy"] == 1.0
    assert m["log_loss"] == 0.0
    assert m["macro_f1"] == 1.0
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]
    assert all(v["precision"] == v["recall"] == v["f1"] == 1.0 for v in m["per_class"].values())


def test_softmax_log_loss_stays_finite_when_the_true_class_has_probability_zero():
    # Clipped only at the smallest normal float64: -log(tiny) ~ 708, not sklearn's eps cap of ~36.
    m = softmax_metrics([0, 0], [[0.0, 1.0], [1.0, 0.0]], [0, 1])
    assert m["log_loss"] == pytest.approx(-math.log(np.finfo(np.float64).tiny) / 2)
    assert m["accuracy"] == 0.5


def test_softmax_int_classes_and_added_other_class():
    classes = np.array([3, 7, 11, "other"], dtype=object)
    y = np.array([3, 11, "other", 7, 3], dtype=object)
    P = np.eye(4)[[0, 2, 3, 1, 1]]
    m = softmax_metrics(y, P, classes)
    assert m["classes"] == ["3", "7", "11", "other"]
    assert m["per_class"]["3"]["support"] == 2
    assert m["per_class"]["other"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert m["confusion_matrix"][0] == [1, 1, 0, 0]  # one 3 taken for a 7
    # Class names as text (as a report passes them) find the same classes.
    assert softmax_metrics(y.astype(str), P, ["3", "7", "11", "other"])["confusion_matrix"] == m["confusion_matrix"]


def test_softmax_unknown_labels_are_named():
    with pytest.raises(ValueError, match=r"not among the 2 classes.*'x', 'zebra'"):
        softmax_metrics(["a", "zebra", "x", "b"], np.full((4, 2), 0.5), ["a", "b"])


@pytest.mark.parametrize(
    ("y", "proba", "match"),
    [
        (["a", "b"], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], r"proba must have shape \(n, 2\)"),
        (["a", "b"], [[0.5, 0.4], [0.5, 0.5]], "row 0 sums to 0.9"),
        (["a", "b"], [[np.nan, 1.0], [0.5, 0.5]], r"proba\[0, 0\] = nan"),
        (["a"], [[0.5, 0.5], [0.5, 0.5]], "y_true has 1 rows but proba has 2"),
        ([["a"], ["b"]], [[0.5, 0.5], [0.5, 0.5]], "one class per row"),
    ],
)
def test_softmax_bad_input_is_a_value_error(y, proba, match):
    with pytest.raises(ValueError, match=match):
        softmax_metrics(y, proba, ["a", "b"])


def test_sigmoid_metrics_by_hand():
    m = sigmoid_metrics(SIG_Y, SIG_P, ["x", "y"])
    assert m["head"] == "sigmoid"
    assert (m["n_rows"], m["labels"], m["threshold"]) == (4, ["x", "y"], 0.5)
    assert m["hamming_loss"] == 0.25  # rows 2 and 3 each get label y wrong: 2 of 8 cells
    assert m["subset_accuracy"] == 0.5
    assert m["micro_f1"] == pytest.approx(0.75)  # TP 3, FP 1, FN 1
    assert m["macro_f1"] == pytest.approx((1.0 + 0.5) / 2)
    x, y = m["per_label"]["x"], m["per_label"]["y"]
    assert x["roc_auc"] == 1.0  # positives 0.9, 0.6 above negatives 0.4, 0.2
    assert y["roc_auc"] == 0.5  # positives 0.6, 0.3 against negatives 0.2, 0.7: 2 of 4 pairs
    assert "roc_auc_note" not in x
    assert x["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.6) + math.log(0.6) + math.log(0.8)) / 4)
    assert y["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.6) + math.log(0.3) + math.log(0.3)) / 4)
    assert (x["precision"], x["recall"], x["f1"], x["support"]) == (1.0, 1.0, 1.0, 2)
    assert (y["precision"], y["recall"], y["f1"], y["support"]) == (0.5, 0.5, 0.5, 2)
    assert x["predicted_positive_rate"] == y["predicted_positive_rate"] == 0.5
    json.dumps(m, allow_nan=False)


def test_sigmoid_threshold_is_strict_and_moves_predictions():
    at_half = sigmoid_metrics([[1], [0]], [[0.5], [0.5]], ["t"])
    assert at_half["per_label"]["t"]["predicted_positive_rate"] == 0.0  # 0.5 does not exceed 0.5
    m = sigmoid_metrics(SIG_Y, SIG_P, ["x", "y"], threshold=0.65)
    assert m["threshold"] == 0.65
    assert m["per_label"]["x"]["predicted_positive_rate"] == 0.25  # only 0.9
    assert m["per_label"]["x"]["recall"] == 0.5


def test_sigmoid_metrics_match_sklearn(rng):
    n, k = 250, 6
    Y = (rng.random((n, k)) < np.linspace(0.1, 0.6, k)).astype(np.int8)
    P = np.clip(0.35 * Y + 0.65 * rng.random((n, k)), 0.01, 0.99)
    m = sigmoid_metrics(Y, P, [f"l{j}" for j in range(k)], threshold=0.4)
    pred = (P > 0.4).astype(int)
    assert m["hamming_loss"] == pytest.approx(skm.hamming_loss(Y, pred))
    assert m["subset_accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert m["micro_f1"] == pytest.approx(skm.f1_score(Y, pred, average="micro"))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(Y, pred, average="macro"))
    for j in range(k):
        entry = m["per_label"][f"l{j}"]
        assert entry["roc_auc"] == pytest.approx(skm.roc_auc_score(Y[:, j], P[:, j]))
        assert entry["log_loss"] == pytest.approx(skm.log_loss(Y[:, j], P[:, j], labels=[0, 1]), rel=1e-12)
        assert entry["f1"] == pytest.approx(skm.f1_score(Y[:, j], pred[:, j]))
        assert entry["support"] == Y[:, j].sum()


def test_sigmoid_label_with_one_value_has_no_auc_and_says_why():
    Y = np.array([[1, 0], [1, 1], [1, 0]], dtype=bool)  # label "always" is 1 in every row
    m = sigmoid_metrics(Y, [[0.9, 0.1], [0.8, 0.7], [0.4, 0.2]], ["always", "some"])
    always = m["per_label"]["always"]
    assert always["roc_auc"] is None
    assert "one value" in always["roc_auc_note"] and "all 1" in always["roc_auc_note"]
    assert always["recall"] == pytest.approx(2 / 3)
    assert m["per_label"]["some"]["roc_auc"] == 1.0


def test_sigmoid_without_predictions_or_positives_warns_nothing():
    # zero_division=0: no precision/recall warning may escape (the suite turns warnings into errors).
    m = sigmoid_metrics(np.zeros((3, 2), dtype=int), np.full((3, 2), 0.1), ["a", "b"])
    assert m["micro_f1"] == m["macro_f1"] == 0.0
    assert m["hamming_loss"] == 0.0 and m["subset_accuracy"] == 1.0
    assert m["per_label"]["a"]["roc_auc"] is None and "all 0" in m["per_label"]["a"]["roc_auc_note"]


@pytest.mark.parametrize(
    ("y", "proba", "kwargs", "match"),
    [
        ([[1, 2]], [[0.5, 0.5]], {}, "0/1 label indicators; it holds 2"),
        ([[1, 0]], [[0.5, 1.5]], {}, r"proba\[0, 1\] = 1.5"),
        ([[1, 0]], [[0.5]], {}, r"proba must have shape \(n, 2\)"),
        ([1, 0], [[0.5, 0.5]], {}, r"y_true must be a 0/1 matrix of shape \(n, 2\)"),
        ([[1, 0]], [[0.5, 0.5]], {"threshold": 1.5}, "threshold must be a probability"),
    ],
)
def test_sigmoid_bad_input_is_a_value_error(y, proba, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sigmoid_metrics(y, proba, ["a", "b"], **kwargs)


def test_reliability_bins_by_hand():
    r = reliability_bins([0.05, 0.3, 0.35, 0.95, 1.0], [0, 1, 0, 1, 1])
    assert r["count"] == [1, 0, 0, 2, 0, 0, 0, 0, 0, 2]  # 0.3 falls in [0.3, 0.4), 1.0 in the last bin
    assert r["mean_predicted"][3] == pytest.approx(0.325)
    assert r["observed"][3] == 0.5
    assert r["observed"][1] is None and r["mean_predicted"][1] is None
    expected = (1 * 0.05 + 2 * abs(0.5 - 0.325) + 2 * abs(1.0 - 0.975)) / 5
    assert r["expected_calibration_error"] == pytest.approx(expected)
    assert r["edges"] == pytest.approx(np.linspace(0, 1, 11))
    assert reliability_bins([], [])["expected_calibration_error"] is None


# ---------------------------------------------------------------------- terminal views


def test_format_metrics_softmax_lines_are_aligned():
    lines = format_metrics(softmax_metrics(SOFT_Y, SOFT_P, ["a", "b", "c"]))
    assert lines[0] == "softmax head: 4 rows, 3 classes"
    assert lines[1] == "accuracy 0.5000   log loss 0.7469   macro-F1 0.3889"
    table = lines[2:]
    assert table[0].split() == ["class", "precision", "recall", "f1", "support"]
    assert [row.split()[0] for row in table[1:]] == ["a", "b", "c"]
    assert len({len(row) for row in table}) == 1  # right-aligned numbers: every row ends in the same column
    assert table[1].split()[1:] == ["1.0000", "0.5000", "0.6667", "2"]


def test_format_metrics_sigmoid_and_row_limit():
    Y = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 0]])
    m = sigmoid_metrics(Y, np.full((3, 3), 0.6), ["p", "q", "a long label name " * 3])
    lines = format_metrics(m)
    assert lines[0] == "sigmoid head: 3 rows, 3 labels, threshold 0.5"
    assert lines[1].startswith("Hamming loss 0.3333   subset accuracy 0.0000")
    assert lines[3].split()[:2] == ["p", "n/a"]  # label p is 1 in every row: no ROC AUC
    assert "…" in lines[5] and len(lines[5].split("…")[0]) == 23  # long names shortened
    assert len({len(row) for row in lines[2:]}) == 1
    short = format_metrics(m, max_rows=1)
    assert len(short) == 5 and short[-1] == "... and 2 more (all of them in metrics.json)"


def test_metrics_table_shows_names_verbatim():
    from rich.console import Console

    m = softmax_metrics(["[bold]x", "y"], [[0.8, 0.2], [0.3, 0.7]], ["[bold]x", "y"])
    table = metrics_table(m)
    assert table.row_count == 2
    assert [c.header for c in table.columns] == ["class", "precision", "recall", "f1", "support"]
    console = Console(record=True, width=100, color_system=None)
    console.print(table)
    text = console.export_text()
    assert "[bold]x" in text and "accuracy 1.0000" in text
    with pytest.raises(ValueError, match="head"):
        metrics_table({"head": "tanh"})


# ---------------------------------------------------------------------- report folders


def _png_size(path):
    from matplotlib.image import imread

    image = imread(path)
    return image.shape[1], image.shape[0]


def _check_common(paths, expected_pngs, html_must_have=()):
    html = paths["report"].read_text(encoding="utf-8")
    for name in expected_pngs:
        path = paths[name]
        assert path.name == f"{name}.png" and path.is_file()
        width, height = _png_size(path)
        assert width > 200 and height > 200
        assert f'href="{path.name}"' in html
    assert html.count('src="data:image/png;base64,') == len(expected_pngs)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert "<link" not in html and "<script" not in html and "@import" not in html
    for text in html_must_have:
        assert text in html

    def no_constant(token):
        raise AssertionError(f"metrics.json holds {token}")

    document = json.loads(paths["metrics"].read_text(encoding="utf-8"), parse_constant=no_constant)
    return html, document


def test_write_report_softmax(tmp_path, rng):
    from matplotlib import _pylab_helpers

    classes = np.array(["<b>&co", 3, "$x$"], dtype=object)  # markup, an int, matplotlib math
    names = [str(c) for c in classes]
    index = np.array([0, 1, 2, 0, 1, 2, 0, 0])
    y = classes[index]
    P = rng.dirichlet(np.ones(3), size=8) * 0.4 + 0.6 * np.eye(3)[index]
    m = softmax_metrics(y, P, classes)
    notes = ["<script>alert('x')</script>", "a & b"]
    curve = np.geomspace(5.0, 0.01, 40)  # spans more than two decades
    paths = write_report(tmp_path / "deep" / "report", metrics=m, y_true=y, proba=P, names=names,
                         loss_curve=curve, title="digits <softmax>", notes=notes)  # fmt: skip
    assert set(paths) == {"metrics", "report", "loss_curve", "confusion_matrix", "reliability"}
    html, document = _check_common(
        paths,
        ["loss_curve", "confusion_matrix", "reliability"],
        [
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;",
            "a &amp; b",
            "digits &lt;softmax&gt;",
            "accuracy",
            "<td>&lt;b&gt;&amp;co</td>",
        ],
    )
    assert "<script>" not in html
    assert document["title"] == "digits <softmax>" and document["notes"] == notes
    assert document["confusion_matrix"] == m["confusion_matrix"] and document["accuracy"] == m["accuracy"]
    assert document["reliability"]["expected_calibration_error"] == pytest.approx(
        reliability_bins(P.max(axis=1), P.argmax(axis=1) == index)["expected_calibration_error"]
    )
    assert _pylab_helpers.Gcf.get_num_fig_managers() == 0  # nothing went through pyplot


def test_write_report_sigmoid_without_loss_curve(tmp_path, rng):
    Y = (rng.random((40, 4)) < 0.4).astype(int)
    Y[:, 2] = 1  # one value only: ROC AUC undefined
    P = np.clip(0.5 * Y + 0.5 * rng.random((40, 4)), 0.0, 1.0)
    labels = ["rock", "jazz & blues", "always", "猫"]  # a glyph the default font lacks must not warn
    m = sigmoid_metrics(Y, P, labels)
    for curve in (None, []):
        paths = write_report(tmp_path / "r", metrics=m, y_true=Y, proba=P, names=labels, loss_curve=curve,
                             title="tags", notes=())  # fmt: skip
        assert set(paths) == {"metrics", "report", "per_label", "reliability"}
        assert not (tmp_path / "r" / "loss_curve.png").exists()
    html, document = _check_common(paths, ["per_label", "reliability"], ["jazz &amp; blues", "Hamming loss", "n/a"])
    assert document["per_label"]["always"]["roc_auc"] is None
    assert "roc_auc_note" in document["per_label"]["always"]
    # Every (row, label) cell is one point of the reliability diagram.
    assert sum(document["reliability"]["count"]) == Y.size


def test_write_report_many_int_classes(tmp_path, rng):
    k, n = 100, 400
    y = rng.integers(0, k, n)
    P = rng.dirichlet(np.full(k, 0.3), size=n)
    m = softmax_metrics(y, P, list(range(k)))
    paths = write_report(tmp_path, metrics=m, y_true=y, proba=P, names=[str(c) for c in range(k)],
                         loss_curve=[1.0], title="100 classes")  # fmt: skip
    _check_common(paths, ["loss_curve", "confusion_matrix", "reliability"])
    width, height = _png_size(paths["confusion_matrix"])
    assert 1000 < width < 3000 and 1000 < height < 3000


def test_write_report_rejects_mismatched_inputs(tmp_path):
    m = softmax_metrics(["a", "b"], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"])
    with pytest.raises(ValueError, match="not among the 2 classes"):
        write_report(tmp_path, metrics=m, y_true=["a", "z"], proba=[[0.9, 0.1], [0.2, 0.8]], names=["a", "b"],
                     loss_curve=None, title="t")  # fmt: skip
    with pytest.raises(ValueError, match="head"):
        write_report(tmp_path, metrics={}, y_true=["a"], proba=[[1.0]], names=["a"], loss_curve=None, title="t")
    assert not (tmp_path / "metrics.json").exists()


# ---------------------------------------------------------------------- figures


def test_confusion_annotations_only_up_to_30_classes():
    small = _confusion_figure(np.array([[3, 1], [0, 2]]), ["a", "b"])
    assert sorted(t.get_text() for t in small.axes[0].texts) == ["1", "2", "3"]  # zero cells stay blank
    big = _confusion_figure(np.eye(31, dtype=int), [str(i) for i in range(31)])
    assert len(big.axes[0].texts) == 0
    small.clear()
    big.clear()


def test_loss_curve_scale_and_many_figures_without_warnings():
    assert _loss_figure(np.geomspace(10, 0.05, 20)).axes[0].get_yscale() == "log"  # 2.3 decades
    assert _loss_figure(np.linspace(1.0, 0.02, 20)).axes[0].get_yscale() == "linear"  # 1.7 decades
    assert _loss_figure(np.array([1.0, -0.5, 2.0])).axes[0].get_yscale() == "linear"
    # pyplot would warn past 20 open figures; these figures are freed when saved.
    pngs = [_png(_loss_figure(np.array([3.0, 2.0, 1.0]))) for _ in range(21)]
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    fig = _loss_figure(np.array([3.0, 2.0]))
    ref = weakref.ref(fig)
    _png(fig)
    del fig
    gc.collect()
    assert ref() is None  # nothing (no pyplot manager) keeps a saved figure alive
