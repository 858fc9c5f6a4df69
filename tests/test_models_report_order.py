"""Class names in reports, metric tables and figures: natural order (Class2 before Class10), classes_ sorted.

A model's ``classes_`` stays sorted as text (scikit-learn's rule, used by
binary search in ``predict``); what people read (the metrics JSON, the
terminal tables, the confusion matrix) lists the names in natural order, or
in the order the user's indicator columns had.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.metrics import confusion_matrix  # noqa: E402

from softxent.cli._metrics import display_order, format_metrics, sigmoid_metrics, softmax_metrics  # noqa: E402
from softxent.models import SigmoidRegression, SoftmaxRegression  # noqa: E402

NATURAL = [f"Class{k}" for k in range(1, 13)]


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((12, 6)) * 3
    codes = np.repeat(np.arange(12), 30)
    X = centres[codes] + rng.standard_normal((len(codes), 6))
    y = np.array(NATURAL)[codes]
    return SoftmaxRegression().fit(X, y), X, y


def test_display_order():
    sorted_names = sorted(NATURAL)
    assert [sorted_names[j] for j in display_order(sorted_names)] == NATURAL
    assert display_order(["zeta", "alpha", "Class10", "Class2"]) == [0, 1, 2, 3], "a user's order is kept"
    names = ["a1", "a01", "a2", "b"]
    assert [sorted(names)[j] for j in display_order(sorted(names))] == ["a01", "a1", "a2", "b"]
    assert display_order([]) == []


def test_classes_stay_sorted_and_the_metrics_read_naturally(fitted):
    model, X, y = fitted
    assert model.classes_.tolist() == sorted(NATURAL), "classes_ is sorted as text, as scikit-learn requires"
    assert model.classes_[1] == "Class10"
    metrics = softmax_metrics(y, model.predict_proba(X), model.classes_)
    assert metrics["classes"] == NATURAL
    assert list(metrics["per_class"]) == NATURAL
    # The matrix follows the listed names: rows true, columns predicted, both in natural order.
    expected = confusion_matrix(y, model.predict(X), labels=NATURAL)
    assert metrics["confusion_matrix"] == expected.tolist()
    assert expected.trace() < len(y), "some mistakes, so a wrong permutation would show"
    lines = format_metrics(metrics)
    rows = [line.split()[0] for line in lines if line.strip().startswith("Class")]
    assert rows == NATURAL


def test_sigmoid_metrics_keep_user_columns_and_sort_label_sets_naturally():
    rng = np.random.default_rng(1)
    Y = rng.integers(0, 2, (40, 3))
    P = rng.uniform(size=(40, 3))
    user = ["zeta", "alpha", "mid"]
    m = sigmoid_metrics(Y, P, user)
    assert m["labels"] == user and list(m["per_label"]) == user
    names = ["Label1", "Label10", "Label2"]  # as label sets leave classes_: sorted as text
    m = sigmoid_metrics(Y, P, names)
    assert m["labels"] == ["Label1", "Label2", "Label10"]
    # Each label keeps its own column's numbers.
    alone = sigmoid_metrics(Y[:, [2]], P[:, [2]], ["Label2"])
    assert m["per_label"]["Label2"] == alone["per_label"]["Label2"]


def test_sigmoid_model_on_label_sets():
    X = np.random.default_rng(2).standard_normal((60, 3))
    labels = ["tag1", "tag10", "tag2"]
    y = [{labels[k % 3], labels[(k + 1) % 3]} for k in range(60)]
    model = SigmoidRegression().fit(X, y)
    assert model.classes_.tolist() == ["tag1", "tag10", "tag2"]
    m = sigmoid_metrics(model.predict(X), model.predict_proba(X), model.classes_)
    assert m["labels"] == ["tag1", "tag2", "tag10"]


def test_report_json_and_figure_names(fitted, tmp_path):
    pytest.importorskip("matplotlib")
    from softxent.cli._report import write_report

    model, X, y = fitted
    proba = model.predict_proba(X)
    metrics = softmax_metrics(y, proba, model.classes_)
    paths = write_report(
        tmp_path, metrics=metrics, y_true=y, proba=proba, names=list(model.classes_), loss_curve=None, title="t"
    )
    written = json.loads(paths["metrics"].read_text())
    assert written["classes"] == NATURAL
    assert list(written["per_class"]) == NATURAL
    html = paths["report"].read_text()
    assert html.index(">Class2<") < html.index(">Class10<")
