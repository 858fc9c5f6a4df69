"""The stopping rule at default parameters: never less converged than scikit-learn's.

Issue 19, item 1. ``SoftmaxRegression(C=C)`` and ``SigmoidRegression(C=C)``
at their defaults must end at an objective no worse than scikit-learn's
``LogisticRegression(C=C)`` (resp. ``OneVsRestClassifier``) at its defaults,
within 1e-6 relative; float32 within the 1e-5 its docstring promises. Both
objectives are computed by one function, :func:`softxent.models.objective_value`,
in float64, at each library's solution.

scikit-learn runs with ``max_iter=5000`` (as the user who reported it did):
its L-BFGS run with ``max_iter=100`` is a prefix of that run and its
objective decreases monotonically, so beating the longer run is the harder
test. Where softxent itself runs out of its default ``max_iter=100`` (raw
digits: unscaled pixels; it then says so with a ``ConvergenceWarning``), the
reference is scikit-learn at its true defaults, ``max_iter=100``. Its thread pools are held to one thread (``threadpool_limits(1)``):
that changes its speed only.

The data sets: digits (raw pixels: the diagonal preconditioner; and
standardised, as the report had it), iris, wine, breast cancer (raw: its
correlated features make softxent use the whitened coordinates; checked
below), a synthetic set of 20 classes on 8 features, a nearly separable one
(10 classes, 40 features, where scikit-learn stops far from the optimum),
and for the sigmoid
head a multi-label set built from digits (raw and standardised) and Yeast
(``river``'s copy, when installed).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import (  # noqa: E402
    load_breast_cancer,
    load_digits,
    load_iris,
    load_wine,
    make_classification,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import softxent.models._solvers as solvers  # noqa: E402
from softxent.models import SigmoidRegression, SoftmaxRegression, objective_value  # noqa: E402
from softxent.models._objective import Objective, Problem  # noqa: E402
from softxent.models._solvers import _CurvatureMemory  # noqa: E402

RTOL = {np.float64: 1e-6, np.float32: 1e-5}  # the docstrings' promise, per working dtype
CS = [0.1, 1.0]


@functools.cache
def softmax_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "nearly-separable":
        # Where scikit-learn's gradient test passes far from the optimum (3e-4 and 3e-3 above it
        # at C = 0.1 and 1): the objective half of the rule follows that point (see _solvers).
        return make_classification(
            3000, 40, n_informative=20, n_classes=10, n_clusters_per_class=1, class_sep=3.0, random_state=0
        )
    if name == "many-classes":
        return make_classification(
            4000, 8, n_informative=6, n_redundant=0, n_classes=20, n_clusters_per_class=1, random_state=0
        )
    load = {"digits": load_digits, "iris": load_iris, "wine": load_wine, "breast-cancer": load_breast_cancer}
    X, y = load[name.removesuffix("-std")](return_X_y=True)
    return (StandardScaler().fit_transform(X) if name.endswith("-std") else X), y


def _digits_labels() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    Y = np.column_stack([y % 2 == 0, y > 4, np.isin(y, [0, 6, 8, 9]), np.isin(y, [2, 3, 5, 7]), y == 1])
    return X, Y.astype(np.int64)


@functools.cache
def multilabel_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "yeast":
        datasets = pytest.importorskip("river.datasets")
        rows = list(datasets.Yeast())
        features = list(rows[0][0])
        labels = sorted(rows[0][1], key=lambda s: int(s.replace("Class", "")))
        X = np.array([[x[f] for f in features] for x, _ in rows])
        Y = np.array([[int(t[c]) for c in labels] for _, t in rows])
        return X[:1500], Y[:1500]
    X, Y = _digits_labels()
    return (StandardScaler().fit_transform(X) if name.endswith("-std") else X), Y


@functools.cache
def sklearn_objective(name: str, C: float, max_iter: int) -> float:
    X, y = softmax_data(name)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = LogisticRegression(C=C, max_iter=max_iter).fit(X, y)
    return objective_value(ref.coef_, ref.intercept_, X, y, C=C)


@functools.cache
def one_vs_rest_objective(name: str, C: float, max_iter: int) -> float:
    X, Y = multilabel_data(name)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = OneVsRestClassifier(LogisticRegression(C=C, max_iter=max_iter)).fit(X, Y)
    coef = np.vstack([e.coef_ for e in ref.estimators_])
    intercept = np.concatenate([e.intercept_ for e in ref.estimators_])
    return objective_value(coef, intercept, X, Y, C=C)


def _fit_at_defaults(model, X, y):
    """The fitted model, and scikit-learn's max_iter to compare with (see the module docstring)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(X, y)
    ran_out = any(issubclass(w.category, ConvergenceWarning) and "max_iter" in str(w.message) for w in caught)
    return model, (100 if ran_out else 5000)


def _objective(model, X, y, C):
    return objective_value(model.coef_.astype(np.float64), model.intercept_.astype(np.float64), X, y, C=C)


SOFTMAX_SETS = ["digits", "digits-std", "iris", "wine", "breast-cancer", "many-classes", "nearly-separable"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("name", SOFTMAX_SETS)
def test_softmax_regression_at_defaults_is_no_worse_than_logistic_regression(name, C, dtype):
    X, y = softmax_data(name)
    model, max_iter = _fit_at_defaults(SoftmaxRegression(C=C, dtype=dtype), X, y)
    F, F_ref = _objective(model, X, y, C), sklearn_objective(name, C, max_iter)
    assert F <= F_ref * (1 + RTOL[dtype]), (F, F_ref, F / F_ref - 1)


MULTILABEL_SETS = ["digits", "digits-std", "yeast"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("name", MULTILABEL_SETS)
def test_sigmoid_regression_at_defaults_is_no_worse_than_one_vs_rest(name, C, dtype):
    X, Y = multilabel_data(name)
    model, max_iter = _fit_at_defaults(SigmoidRegression(C=C, dtype=dtype), X, Y)
    F, F_ref = _objective(model, X, Y, C), one_vs_rest_objective(name, C, max_iter)
    assert F <= F_ref * (1 + RTOL[dtype]), (F, F_ref, F / F_ref - 1)


@pytest.mark.parametrize(("name", "whitened"), [("breast-cancer", True), ("digits", False), ("many-classes", False)])
def test_the_data_sets_cover_both_preconditioners(name, whitened):
    """The sets above include one where L-BFGS runs in whitened coordinates and ones where it does not."""
    X, y = softmax_data(name)
    codes = np.searchsorted(np.unique(y), y)
    problem = Problem(np.ascontiguousarray(X, dtype=np.float64), codes, "softmax", len(np.unique(y)))
    with Objective(problem, C=1.0, fit_intercept=True) as objective:
        assert (objective.P.ndim == 2) is whitened
    X, Y = multilabel_data("yeast")
    sigmoid = Problem(np.ascontiguousarray(X, dtype=np.float64), Y.astype(np.float64), "sigmoid", Y.shape[1])
    with Objective(sigmoid, C=1.0, fit_intercept=True) as objective:
        assert objective.P.ndim == 2  # Yeast: the sigmoid head in whitened coordinates


def test_stops_only_where_scikit_learns_gradient_test_passes():
    """The gradient half of the rule: max |grad f| <= tol in the original coordinates, f = F / (C S)."""
    X, y = softmax_data("breast-cancer")  # whitened: the solver's own coordinates differ most
    seen = []
    model = SoftmaxRegression(C=1.0, tol=1e-4, callback=seen.append).fit(X, y)
    assert seen[-1].grad_max <= 1e-4
    # Recomputed here with NumPy from the fitted model (two classes: one sigmoid logit):
    # grad_W f = X^T (sigma(z) - y) / S + W / (C S), grad_b f = mean(sigma(z) - y).
    C, S = 1.0, len(y)
    yi = (y == model.classes_[1]).astype(float)
    r = 1.0 / (1.0 + np.exp(-(X @ model.coef_[0] + model.intercept_[0]))) - yi
    grad = np.r_[X.T @ r / S + model.coef_[0] / (C * S), r.mean()]
    assert np.max(np.abs(grad)) <= 1e-4
    assert seen[-1].iteration == model.n_iter_


def test_the_objective_test_follows_where_the_gradient_test_first_passed(monkeypatch):
    """Where scikit-learn's test passes far from the optimum, softxent stops once L-BFGS predicts a
    tenth of the decrease it predicted there, not at 1e-7 relative: fewer iterations, and still
    closer to the optimum than scikit-learn (the parametrized test above)."""
    X, y = softmax_data("nearly-separable")
    now = SoftmaxRegression(C=1.0).fit(X, y)
    monkeypatch.setattr(solvers, "_GAP_PER_FIRST_PASS", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        before = SoftmaxRegression(C=1.0).fit(X, y)
    assert now.n_iter_ < before.n_iter_
    assert _objective(now, X, y, 1.0) <= sklearn_objective("nearly-separable", 1.0, 5000)


def test_curvature_memory_predicts_the_exact_gap_of_a_quadratic():
    """With H-conjugate pairs spanning the space, L-BFGS's model is the exact inverse Hessian,
    and 1/2 g^T H^-1 g is the exact f - f* of a quadratic."""
    rng = np.random.default_rng(0)
    n = 6
    eigval = np.geomspace(1e-3, 1.0, n)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    H = (Q * eigval) @ Q.T
    memory = _CurvatureMemory(10, 1.0)
    x = np.zeros(n)
    memory.update(x, H @ x)
    for v in Q.T:  # eigenvectors: mutually H-conjugate steps
        x = x + v
        memory.update(x, H @ x)
    g = rng.standard_normal(n)
    assert memory.predicted_decrease(g) == pytest.approx(0.5 * g @ np.linalg.solve(H, g), rel=1e-10)


def test_the_warning_says_which_half_of_the_rule_was_not_passed():
    X, y = softmax_data("nearly-separable")
    with pytest.warns(ConvergenceWarning, match=r"\|gradient\| .* > tol=1e-08"):
        SoftmaxRegression(tol=1e-8, max_iter=3).fit(X, y)
    seen = []
    with pytest.warns(ConvergenceWarning, match=r"<= tol=0.1, but the objective was still decreasing"):
        # tol=0.1: the gradient test passes at once, the objective test (1e-4 relative) does not in 3 steps
        SoftmaxRegression(tol=0.1, max_iter=3, callback=seen.append).fit(X, y)
    assert seen[-1].grad_max <= 0.1
