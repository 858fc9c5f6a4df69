"""choose_head (softmax or sigmoid from the labels) and AutoClassifier end to end.

Each case of the seed's rule: 1-D labels, exclusive indicator rows,
overlapping rows, exclusive rows with some unlabelled ("other"), in each
form ``y`` comes in (ndarray, list of lists, sparse, label sets).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy import sparse  # noqa: E402

from softxent.models import (  # noqa: E402
    AutoClassifier,
    HeadChoice,
    SigmoidRegression,
    SoftmaxRegression,
    choose_head,
)
from softxent.models._heads import parse_targets  # noqa: E402

GENRES = ["classical", "jazz", "pop", "rock"]


# --------------------------------------------------------------------------- choose_head


def test_one_dimensional_labels_choose_softmax():
    choice = choose_head(np.array(["rock", "jazz", "pop", "rock", "classical"]))
    assert choice == HeadChoice(
        "softmax", 4, False,
        "y holds one class label per row (4 classes): every row belongs to exactly one class, "
        "so one softmax over 4 classes",
    )  # fmt: skip


def test_exclusive_indicator_rows_choose_softmax():
    Y = np.eye(4, dtype=int)[[0, 2, 1, 3, 3]]
    choice = choose_head(Y)
    assert (choice.head, choice.n_classes, choice.add_other_class) == ("softmax", 4, False)
    assert choice.reason == (
        "every row has exactly one of the 4 labels: the labels are mutually exclusive, so one softmax over 4 classes"
    )


def test_any_row_with_two_labels_chooses_sigmoid():
    Y = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    choice = choose_head(Y)
    assert (choice.head, choice.n_classes, choice.add_other_class) == ("sigmoid", 4, False)
    assert "1 of 4 rows carry two or more of the 4 labels (row 1 has 2)" in choice.reason
    assert "one sigmoid per label" in choice.reason


def test_exclusive_rows_with_some_unlabelled_choose_softmax_with_other():
    Y = np.array([[1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    choice = choose_head(Y, other_label="none of them")
    assert (choice.head, choice.n_classes, choice.add_other_class) == ("softmax", 4, True)
    assert "2 of 5 rows carry none" in choice.reason
    assert "'none of them' class" in choice.reason


@pytest.mark.parametrize(
    "form",
    [
        lambda Y: Y,
        lambda Y: Y.tolist(),
        lambda Y: list(Y),
        lambda Y: sparse.csr_matrix(Y),
        lambda Y: Y.astype(bool),
        lambda Y: [{GENRES[j] for j in np.flatnonzero(row)} for row in Y],
        lambda Y: [tuple(GENRES[j] for j in np.flatnonzero(row)) for row in Y],
    ],
    ids=["ndarray", "list of lists", "list of arrays", "sparse", "bool", "label sets", "label tuples"],
)
def test_every_form_of_y_gives_the_same_choice(form):
    overlapping = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]])
    exclusive = np.eye(4, dtype=int)[[0, 1, 2, 3, 1]]
    unlabelled = np.vstack([exclusive, np.zeros((1, 4), dtype=int)])
    assert choose_head(form(overlapping)).head == "sigmoid"
    assert choose_head(form(exclusive)) == HeadChoice("softmax", 4, False, choose_head(exclusive).reason)
    assert choose_head(form(unlabelled)).add_other_class


def test_label_sets_are_read_in_sorted_label_order():
    parsed = parse_targets([{"rock", "pop"}, {"jazz"}, set()])
    np.testing.assert_array_equal(parsed.names, ["jazz", "pop", "rock"])
    np.testing.assert_array_equal(parsed.indicator, [[0, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_a_column_vector_is_read_as_class_labels():
    parsed = parse_targets(np.array([[0], [1], [2]]))
    assert parsed.kind == "labels" and parsed.column_vector
    assert choose_head(np.array([[0], [1], [1]])).head == "softmax"


def test_single_class_is_reported():
    choice = choose_head(np.array([3, 3, 3]))
    assert choice.n_classes == 1 and "only one class" in choice.reason


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([[0, 2], [1, 0]]), r"y\[0, 1\] is 2"),
        (np.zeros((2, 2, 2)), "shape \\(2, 2, 2\\)"),
        (np.array([]), "y is empty"),
        (np.zeros((0, 3)), "y is empty"),
        (None, "requires y to be passed"),
    ],
)
def test_bad_targets_are_refused_with_the_reason(y, match):
    with pytest.raises(ValueError, match=match):
        choose_head(y)


def test_mixed_label_types_in_label_sets_are_refused():
    with pytest.raises(TypeError, match="comparable"):
        choose_head([{1, "a"}, {2}])


# --------------------------------------------------------------------------- AutoClassifier


def _blobs(rng, n_per=40, k=4, d=3, spread=0.3):
    centres = rng.standard_normal((k, d)) * 3
    labels = np.repeat(np.arange(k), n_per)
    X = centres[labels] + spread * rng.standard_normal((len(labels), d))
    return X, labels


def test_auto_with_one_dimensional_labels_is_softmax_regression(rng):
    X, labels = _blobs(rng)
    y = np.array(GENRES)[labels]
    auto = AutoClassifier().fit(X, y)
    assert auto.head_choice_.head == "softmax" and isinstance(auto.head_, SoftmaxRegression)
    direct = SoftmaxRegression().fit(X, y)
    np.testing.assert_array_equal(auto.classes_, GENRES)
    np.testing.assert_array_equal(auto.predict(X), direct.predict(X))
    np.testing.assert_allclose(auto.predict_proba(X), direct.predict_proba(X))
    assert auto.score(X, y) > 0.95
    assert auto.n_iter_ == direct.n_iter_


def test_auto_with_exclusive_indicator_predicts_the_indicator(rng):
    X, labels = _blobs(rng)
    Y = np.eye(4, dtype=np.int32)[labels]
    auto = AutoClassifier().fit(X, Y)
    assert auto.head_choice_.head == "softmax" and not auto.head_choice_.add_other_class
    pred = auto.predict(X)
    assert pred.shape == Y.shape and pred.dtype == np.int32
    np.testing.assert_array_equal(pred.sum(axis=1), 1)
    assert (pred == Y).all(axis=1).mean() > 0.95
    assert auto.predict_proba(X).shape == (len(X), 4)


def test_auto_with_overlapping_labels_is_sigmoid_regression(rng):
    X, labels = _blobs(rng)
    sets = [{GENRES[c]} | ({"vocal"} if x[0] > 0 else set()) for c, x in zip(labels, X)]
    auto = AutoClassifier(C=10.0).fit(X, sets)
    assert auto.head_choice_.head == "sigmoid" and isinstance(auto.head_, SigmoidRegression)
    np.testing.assert_array_equal(auto.classes_, sorted(GENRES + ["vocal"]))
    pred = auto.predict(X)
    assert pred.shape == (len(X), 5) and pred.dtype == np.int64
    assert auto.score(X, sets) > 0.8  # subset accuracy, y given as label sets
    direct = SigmoidRegression(C=10.0).fit(X, sets)
    np.testing.assert_allclose(auto.predict_proba(X), direct.predict_proba(X))


@pytest.mark.parametrize("other_label", ["other", "none", -1])
def test_auto_adds_the_other_class_end_to_end(rng, other_label, tmp_path):
    X, labels = _blobs(rng, k=4)
    # Class 3 has no label of its own: its rows carry none of the three genres.
    sets = [set() if c == 3 else {GENRES[c]} for c in labels]
    auto = AutoClassifier(other_label=other_label).fit(X, sets)
    choice = auto.head_choice_
    assert (choice.head, choice.n_classes, choice.add_other_class) == ("softmax", 4, True)
    assert f"{other_label!r} class" in choice.reason
    assert auto.classes_.tolist() == GENRES[:3] + [other_label]
    np.testing.assert_array_equal(auto.labels_, GENRES[:3])
    P = auto.predict_proba(X)
    assert P.shape == (len(X), 4)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    assert P[labels == 3, 3].mean() > 0.9  # the unlabelled rows are "other"
    pred = auto.predict(X)
    np.testing.assert_array_equal(pred[labels == 3], 0)  # "other" sets no label
    assert auto.score(X, sets) > 0.95
    # And it survives saving.
    from softxent.models import load

    auto.save(tmp_path / "auto.npz")
    again = load(tmp_path / "auto.npz")
    assert again.classes_.tolist() == auto.classes_.tolist()
    np.testing.assert_array_equal(again.predict(X), pred)


def test_auto_other_class_with_integer_columns_gets_an_object_classes_array(rng):
    X, labels = _blobs(rng, k=3)
    Y = np.eye(3, dtype=int)[labels][:, :2]  # the third class has no column
    auto = AutoClassifier().fit(X, Y)
    assert auto.classes_.dtype == object and auto.classes_.tolist() == [0, 1, "other"]
    np.testing.assert_array_equal(auto.predict(X)[labels == 2], 0)


def test_other_label_must_not_clash_with_a_label(rng):
    X, labels = _blobs(rng, k=3)
    sets = [set() if c == 2 else {("other", "rock")[c]} for c in labels]
    with pytest.raises(ValueError, match="already one of the labels"):
        AutoClassifier().fit(X, sets)


def test_auto_passes_its_parameters_to_the_head(rng):
    X, labels = _blobs(rng)
    auto = AutoClassifier(C=0.01, tol=1e-3, dtype=np.float32).fit(X, labels)
    assert auto.head_.C == 0.01 and auto.head_.tol == 1e-3 and auto.head_.coef_.dtype == np.float32


def test_auto_warm_start_continues_the_same_head(rng):
    X, labels = _blobs(rng)
    auto = AutoClassifier(warm_start=True, tol=1e-8, max_iter=1000).fit(X, labels)
    first = auto.head_
    assert auto.fit(X, labels).head_ is first
    assert auto.n_iter_ <= 2  # already at the optimum


def test_auto_class_weight_is_keyed_by_label_names_for_label_sets(rng):
    X, labels = _blobs(rng, k=3)
    sets = [set() if c == 2 else {("jazz", "rock")[c]} for c in labels]
    weighted = AutoClassifier(class_weight={"jazz": 5.0, "other": 0.5}).fit(X, sets)
    assert weighted.head_.class_weight == {0: 5.0, 2: 0.5}
    plain = AutoClassifier().fit(X, sets)
    assert weighted.predict_proba(X)[:, 0].mean() > plain.predict_proba(X)[:, 0].mean()
    with pytest.raises(ValueError, match=r"class_weight names labels that are not in y: \['pop'\]"):
        AutoClassifier(class_weight={"pop": 2.0}).fit(X, sets)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        ([set(), set(), set()], "all 3 rows are empty label sets"),
        (np.zeros((4, 3), dtype=np.uint8), r"indicator matrix \(4 rows, 3 label columns\) holds no 1"),
        (np.zeros((2, 0)), r"indicator matrix \(2 rows, 0 label columns\) holds no 1"),
    ],
    ids=["empty label sets", "all-zero indicator", "no label columns"],
)
def test_rows_without_any_label_are_refused(y, match):
    """A softmax over "other" alone would learn nothing: the answer is an error, not "softmax over 1 classes"."""
    with pytest.raises(ValueError, match=f"y has no labels: .*{match}"):
        choose_head(y)
    from softxent.models import AutoClassifier

    with pytest.raises(ValueError, match=f"y has no labels: .*{match}"):
        AutoClassifier().fit(np.zeros((len(y), 2)), y)


def test_one_label_on_every_row_is_named_not_numbered():
    from softxent.models import AutoClassifier

    with pytest.raises(ValueError, match="every row of y carries the one label 'rock'"):
        AutoClassifier().fit(np.arange(6.0).reshape(3, 2), [{"rock"}, {"rock"}, {"rock"}])


def test_label_sets_keep_labels_beyond_int64_exactly():
    """sorted() then np.array would turn 2**63 + 1 into a float and lose the + 1."""
    parsed = parse_targets([{2**63 + 1}, {1}, {2**63}])
    assert parsed.names.tolist() == [1, 2**63, 2**63 + 1]
    np.testing.assert_array_equal(parsed.indicator, [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
