"""SoftmaxRegression and SigmoidRegression against scikit-learn at equal objective.

The oracle is scikit-learn's ``LogisticRegression(solver="lbfgs")`` run to
``tol=1e-10`` (``max_iter=10000``), the same objective minimised by other
code. Targets from the issue: objective within 1e-6 relative, predicted
probabilities within 1e-4. scikit-learn runs with one BLAS/OpenMP thread here
(``threadpool_limits(1)``): that changes only its speed, and keeps this file
fast on a two-core machine where its thread pools would otherwise fight.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_breast_cancer, load_digits, load_iris, make_multilabel_classification  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from softxent.models import SigmoidRegression, SoftmaxRegression, objective_value  # noqa: E402

OBJECTIVE_RTOL = 1e-6
PROBA_ATOL = 1e-4


def _sklearn(X, y, **kw):
    with threadpool_limits(1):
        return LogisticRegression(solver="lbfgs", tol=1e-10, max_iter=10000, **kw).fit(X, y)


def _F(model, X, y, C, sample_weight=None):
    return objective_value(model.coef_, model.intercept_, X, y, C=C, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def digits():
    return load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.mark.parametrize("dataset", ["iris", "digits"])
@pytest.mark.parametrize("C", [1.0, 0.05])
def test_softmax_regression_reaches_logistic_regressions_objective(request, dataset, C):
    X, y = request.getfixturevalue(dataset)
    ref = _sklearn(X, y, C=C)
    model = SoftmaxRegression(C=C, tol=1e-8, max_iter=10000).fit(X, y)
    F_ref, F = _F(ref, X, y, C), _F(model, X, y, C)
    assert abs(F - F_ref) <= OBJECTIVE_RTOL * F_ref, (F, F_ref)
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)
    np.testing.assert_array_equal(model.classes_, ref.classes_)
    # Fewer iterations than scikit-learn: the preconditioning at work (unscaled pixels).
    if dataset == "digits":
        assert model.n_iter_ < ref.n_iter_[0] / 2


@pytest.mark.parametrize("C", [1.0, 0.05])
def test_correlated_unscaled_features_reach_the_objective_in_few_iterations(C):
    """Breast cancer: 30 unscaled, strongly correlated features (the whitened preconditioner).
    scikit-learn needs thousands of iterations here and still stops short in a flat direction
    (its objective is the higher one), so probabilities are compared where it converges (C=0.05)."""
    X, y = load_breast_cancer(return_X_y=True)
    ref = _sklearn(X, y, C=C)
    model = SoftmaxRegression(C=C, tol=1e-8, max_iter=10000).fit(X, y)
    F_ref, F = _F(ref, X, y, C), _F(model, X, y, C)
    assert F <= F_ref * (1 + OBJECTIVE_RTOL), (F, F_ref)
    assert abs(F - F_ref) <= OBJECTIVE_RTOL * F_ref
    assert model.n_iter_ < ref.n_iter_[0] / 5
    if C < 1:
        np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)


def test_softmax_regression_matches_with_weights_and_no_intercept(digits):
    X, y = digits
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.2, 3.0, len(y))
    cw = {c: 1.0 + 0.3 * c for c in range(10)}
    C = 0.1
    with threadpool_limits(1):
        ref = LogisticRegression(C=C, class_weight=cw, fit_intercept=False, tol=1e-10, max_iter=10000).fit(
            X, y, sample_weight=sw
        )
    model = SoftmaxRegression(C=C, class_weight=cw, fit_intercept=False, tol=1e-8, max_iter=10000).fit(
        X, y, sample_weight=sw
    )
    s = sw * np.array([cw[c] for c in y])
    F_ref, F = _F(ref, X, y, C, s), _F(model, X, y, C, s)
    assert abs(F - F_ref) <= OBJECTIVE_RTOL * F_ref
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)
    np.testing.assert_array_equal(model.intercept_, 0.0)


def test_balanced_class_weight_matches(iris):
    X, y = iris
    keep = np.r_[0:50, 50:70, 100:150]  # unbalanced classes
    X, y = X[keep], y[keep]
    ref = _sklearn(X, y, C=1.0, class_weight="balanced")
    model = SoftmaxRegression(class_weight="balanced", tol=1e-8, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)


def test_binary_problem_is_logistic_regressions_binary_model(digits):
    X, y = digits
    keep = (y == 3) | (y == 8)
    X, y = X[keep], np.where(y[keep] == 3, "three", "eight")
    ref = _sklearn(X, y, C=0.5)
    model = SoftmaxRegression(C=0.5, tol=1e-8, max_iter=10000).fit(X, y)
    assert model.coef_.shape == ref.coef_.shape == (1, 64)
    np.testing.assert_array_equal(model.classes_, ["eight", "three"])
    yi = (y == ref.classes_[1]).astype(int)
    F_ref, F = _F(ref, X, yi, 0.5), _F(model, X, yi, 0.5)
    assert abs(F - F_ref) <= OBJECTIVE_RTOL * F_ref
    np.testing.assert_allclose(model.predict_proba(X), ref.predict_proba(X), atol=PROBA_ATOL, rtol=0)
    np.testing.assert_allclose(model.decision_function(X), ref.decision_function(X), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(model.predict(X), ref.predict(X))


@pytest.fixture(scope="module")
def multilabel():
    X, Y = make_multilabel_classification(
        n_samples=400, n_features=12, n_classes=5, n_labels=2, allow_unlabeled=True, random_state=3
    )
    return X.astype(np.float64), Y


def test_sigmoid_regression_equals_one_logistic_regression_per_label(multilabel):
    X, Y = multilabel
    C = 0.3
    model = SigmoidRegression(C=C, tol=1e-8, max_iter=10000).fit(X, Y)
    assert model.coef_.shape == (5, 12)
    P = model.predict_proba(X)
    for j in range(Y.shape[1]):
        ref = _sklearn(X, Y[:, j], C=C)
        F_ref = objective_value(ref.coef_, ref.intercept_, X, Y[:, j], C=C)
        F = objective_value(model.coef_[j : j + 1], model.intercept_[j : j + 1], X, Y[:, j], C=C)
        assert abs(F - F_ref) <= OBJECTIVE_RTOL * F_ref, (j, F, F_ref)
        np.testing.assert_allclose(P[:, j], ref.predict_proba(X)[:, 1], atol=PROBA_ATOL, rtol=0)
    # The joint objective is the sum of the per-label ones.
    F_all = objective_value(model.coef_, model.intercept_, X, Y, C=C)
    F_sum = sum(objective_value(model.coef_[j : j + 1], model.intercept_[j : j + 1], X, Y[:, j], C=C) for j in range(5))
    assert F_all == pytest.approx(F_sum, rel=1e-12)


def test_sigmoid_regression_matches_one_vs_rest(multilabel):
    X, Y = multilabel
    with threadpool_limits(1):
        ovr = OneVsRestClassifier(LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)).fit(X, Y)
    model = SigmoidRegression(C=1.0, tol=1e-8, max_iter=10000).fit(X, Y)
    np.testing.assert_allclose(model.predict_proba(X), ovr.predict_proba(X), atol=PROBA_ATOL, rtol=0)
    np.testing.assert_array_equal(model.predict(X), ovr.predict(X))


def test_sigmoid_balanced_weights_match_per_label_logistic_regression(multilabel):
    X, Y = multilabel
    model = SigmoidRegression(class_weight="balanced", tol=1e-8, max_iter=10000).fit(X, Y)
    P = model.predict_proba(X)
    for j in range(Y.shape[1]):
        ref = _sklearn(X, Y[:, j], C=1.0, class_weight="balanced")
        np.testing.assert_allclose(P[:, j], ref.predict_proba(X)[:, 1], atol=PROBA_ATOL, rtol=0)


def test_float32_reaches_the_same_accuracy(digits):
    X, y = digits
    # float32 gradients carry ~1e-5 of rounding on these unscaled pixels: tol=1e-4 is within reach.
    m64 = SoftmaxRegression(C=0.05, tol=1e-6, max_iter=10000).fit(X, y)
    m32 = SoftmaxRegression(C=0.05, tol=1e-4, max_iter=10000, dtype=np.float32).fit(X, y)
    assert m32.coef_.dtype == np.float32 and m32.predict_proba(X).dtype == np.float32
    F64, F32 = _F(m64, X, y, 0.05), _F(m32, X, y, 0.05)
    assert abs(F32 - F64) <= 1e-4 * F64
    np.testing.assert_allclose(m32.predict_proba(X), m64.predict_proba(X), atol=5e-3)
    assert abs(m32.score(X, y) - m64.score(X, y)) <= 1 / len(y)  # equal accuracy, to one row


def test_thread_count_does_not_change_the_fit(digits, monkeypatch):
    from softxent.models import _data_term

    monkeypatch.setattr(_data_term, "rows_per_block", lambda *args: 100)  # 14 blocks
    X, y = digits
    one = SoftmaxRegression(C=0.05, n_jobs=1).fit(X, y)
    two = SoftmaxRegression(C=0.05, n_jobs=2).fit(X, y)
    np.testing.assert_allclose(one.coef_, two.coef_, rtol=1e-6, atol=1e-8)
