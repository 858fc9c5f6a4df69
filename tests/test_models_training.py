"""Training behaviour of the estimators: solvers, streaming, progress, warnings, and bad input.

adam and partial_fit against the L-BFGS optimum; early stopping; the
progress hook (verbose output, callback, stop on request); convergence
warnings; warm starts; sparse input; and every input error the issue lists,
each with a message that names the problem.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy import sparse  # noqa: E402
from sklearn.datasets import load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from softxent.models import (  # noqa: E402
    AutoClassifier,
    Progress,
    SigmoidRegression,
    SoftmaxRegression,
    objective_value,
)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def _F(model, X, y, C=1.0):
    return objective_value(model.coef_, model.intercept_, X, y, C=C)


# --------------------------------------------------------------------------- adam, partial_fit


def test_adam_approaches_the_lbfgs_optimum(digits):
    X, y = digits
    C = 0.01
    best = _F(SoftmaxRegression(C=C, tol=1e-8, max_iter=1000).fit(X, y), X, y, C)
    adam = SoftmaxRegression(C=C, solver="adam", learning_rate=0.01, max_iter=60, random_state=0, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 60 epochs: a budget, not convergence
        adam.fit(X, y)
    assert _F(adam, X, y, C) <= 1.01 * best
    assert len(adam.loss_curve_) == adam.n_iter_
    assert adam.loss_curve_[-1] < adam.loss_curve_[0]


def test_partial_fit_streams_to_the_same_model(digits):
    """Batches of a stream: the penalty is scaled by the weight seen so far, so E
    passes over the data minimise the objective of E copies of it: fit with C * E."""
    X, y = digits
    C, passes = 0.002, 10
    best = _F(SoftmaxRegression(C=C * passes, tol=1e-8, max_iter=1000).fit(X, y), X, y, C * passes)
    model = SoftmaxRegression(C=C, solver="adam", learning_rate=0.03, random_state=0)
    batches = np.array_split(np.arange(len(y)), 6)
    model.partial_fit(X[batches[0]], y[batches[0]], classes=np.arange(10))
    for epoch in range(passes):
        for rows in batches[(1 if epoch == 0 else 0) :]:
            model.partial_fit(X[rows], y[rows])
    assert model.n_iter_ == passes * 6
    assert model._optimizer.rows_seen == passes * len(y)
    assert _F(model, X, y, C * passes) <= 1.02 * best


def test_partial_fit_needs_classes_first_and_refuses_unseen_labels(iris):
    X, y = iris
    model = SoftmaxRegression(solver="adam")
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        model.partial_fit(X, y)
    model.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert model.coef_.shape == (3, 4)
    with pytest.raises(ValueError, match=r"not in classes_ \[0, 1, 2\]: \[7\].*first call"):
        model.partial_fit(X[:2], [0, 7])
    with pytest.raises(ValueError, match="X has 3 features"):
        model.partial_fit(X[:, :3], y)


def test_partial_fit_exists_only_for_adam(iris):
    assert not hasattr(SoftmaxRegression(), "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as info:
        SoftmaxRegression(solver="lbfgs").partial_fit(*iris)
    assert "only available with solver='adam'" in str(info.value.__cause__)
    assert hasattr(SoftmaxRegression(solver="adam"), "partial_fit")


def test_partial_fit_refuses_balanced_class_weight(iris):
    with pytest.raises(ValueError, match="class_weight='balanced' needs the class counts"):
        SoftmaxRegression(solver="adam", class_weight="balanced").partial_fit(*iris, classes=[0, 1, 2])


def test_sigmoid_partial_fit_with_label_sets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    sets = [{"a"} if x[0] > 0 else set() for x in X]
    for i, x in enumerate(X):
        if x[1] > 0:
            sets[i] = sets[i] | {"b"}
    model = SigmoidRegression(solver="adam", learning_rate=0.05, random_state=0)
    model.partial_fit(X[:100], sets[:100], classes=["a", "b", "c"])
    model.partial_fit(X[100:], [s | {"c"} if i % 7 == 0 else s for i, s in enumerate(sets[100:])])
    np.testing.assert_array_equal(model.classes_, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"not in classes_ \['a', 'b', 'c'\]: \['z'\]"):
        model.partial_fit(X[:1], [{"z"}])


def test_early_stopping_keeps_the_best_epoch(digits):
    X, y = digits
    model = SoftmaxRegression(
        C=1e4, solver="adam", learning_rate=0.05, early_stopping=True, n_iter_no_change=3,
        max_iter=300, random_state=0,
    ).fit(X, y)  # fmt: skip
    curve = model.validation_loss_curve_
    assert len(curve) == model.n_iter_ < 300  # stopped on the validation loss, before max_iter
    best = int(np.argmin(curve))
    assert best <= len(curve) - 1 - 3  # three or more epochs without improvement at the end
    assert model.n_iter_ - 1 - best >= 3


def test_early_stopping_needs_enough_rows():
    X = np.array([[0.0], [1.0]])
    with pytest.raises(ValueError, match="validation_fraction=0.99 of 2 rows leaves 0 for training"):
        SoftmaxRegression(solver="adam", early_stopping=True, validation_fraction=0.99).fit(X, [0, 1])


# --------------------------------------------------------------------------- progress


def test_callback_receives_progress_and_can_stop(iris):
    X, y = iris
    seen: list[Progress] = []

    def callback(progress: Progress) -> bool:
        seen.append(progress)
        return progress.iteration == 3  # stop after three iterations

    model = SoftmaxRegression(callback=callback, tol=0.0, max_iter=50).fit(X, y)
    assert [p.iteration for p in seen] == [1, 2, 3]
    assert model.n_iter_ == 3  # a requested stop is not a convergence failure: no warning
    assert all(p.solver == "lbfgs" and p.max_iter == 50 and p.estimator == "SoftmaxRegression" for p in seen)
    assert all(p.grad_max > 0 and p.elapsed >= 0 for p in seen)
    assert seen[0].loss > seen[-1].loss
    assert model.loss_curve_ == [p.loss for p in seen]


def test_verbose_prints_one_line_per_iteration(iris, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        SoftmaxRegression(verbose=1, max_iter=4, tol=0.0).fit(*iris)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("[SoftmaxRegression] lbfgs 1/4  loss ")
    assert "|grad|max" in lines[0] and lines[0].endswith(" s")


def test_adam_progress_reports_validation_loss(digits):
    X, y = digits
    seen: list[Progress] = []
    model = SoftmaxRegression(solver="adam", early_stopping=True, max_iter=2, callback=seen.append, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert [p.iteration for p in seen] == [1, 2]
    assert all(p.validation_loss is not None and p.grad_max is None for p in seen)
    assert "validation loss" in seen[0].format()


# --------------------------------------------------------------------------- convergence


def test_max_iter_reached_warns(iris):
    with pytest.warns(ConvergenceWarning, match=r"did not converge within max_iter=2 L-BFGS iterations \(largest"):
        model = SoftmaxRegression(max_iter=2).fit(*iris)
    assert model.n_iter_ == 2


def test_adam_max_iter_warns(iris):
    with pytest.warns(ConvergenceWarning, match="max_iter=1 adam epochs"):
        SoftmaxRegression(solver="adam", max_iter=1).fit(*iris)


def test_float32_warns_when_its_precision_ends_the_fit_before_tol():
    X, y = load_digits(return_X_y=True)
    with pytest.warns(ConvergenceWarning, match=r"flat to the working precision \(float32\); use dtype=np.float64"):
        SoftmaxRegression(dtype=np.float32, tol=1e-10, max_iter=10000).fit(X, y)


def test_converged_fit_is_silent_and_its_gradient_is_below_tol(digits):
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = SoftmaxRegression(tol=1e-5).fit(X, y)
    from softxent.models._objective import Objective, Problem

    objective = Objective(Problem(X, y, "softmax", 10), C=1.0, fit_intercept=True)
    _, g_w, g_b = objective.loss_grad(model.coef_, model.intercept_)
    assert max(np.abs(g_w).max(), np.abs(g_b).max()) <= 1e-5


def test_warm_start_starts_from_the_previous_solution(digits):
    X, y = digits
    model = SoftmaxRegression(tol=1e-6, warm_start=True).fit(X, y)
    assert model.fit(X, y).n_iter_ <= 1  # already at the optimum
    model.set_params(C=0.9).fit(X, y)
    cold = SoftmaxRegression(tol=1e-6, C=0.9).fit(X, y)
    assert model.n_iter_ < cold.n_iter_
    assert _F(model, X, y, 0.9) == pytest.approx(_F(cold, X, y, 0.9), rel=1e-6)


# --------------------------------------------------------------------------- inputs


def test_sparse_input_gives_the_dense_fit(digits):
    X, y = digits
    Xr = np.where(np.abs(X) < 0.8, 0.0, X)
    dense = SoftmaxRegression(C=0.1, tol=1e-8, max_iter=1000).fit(Xr, y)
    sp = SoftmaxRegression(C=0.1, tol=1e-8, max_iter=1000).fit(sparse.csr_matrix(Xr), y)
    np.testing.assert_allclose(sp.coef_, dense.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sp.predict_proba(sparse.csr_matrix(Xr)), dense.predict_proba(Xr), atol=1e-7)


def test_log_proba_comes_from_log_softmax_not_log_of_proba():
    X = np.array([[-1.0], [1.0], [-2.0], [2.0], [0.0], [3.0]])
    model = SoftmaxRegression(C=1.0).fit(X, [0, 1, 0, 1, 2, 2])
    far = np.array([[1e4]])
    logp = model.predict_log_proba(far)
    assert np.isfinite(logp).all()  # log(proba) would be log(0) = -inf for the losing classes
    assert (model.predict_proba(far) == 0).any()
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), model.predict_proba(X), rtol=1e-12)
    binary = SoftmaxRegression(C=1.0).fit(X[:4], [0, 1, 0, 1])
    assert np.isfinite(binary.predict_log_proba(far)).all()


@pytest.mark.parametrize("Estimator", [SoftmaxRegression, SigmoidRegression])
def test_input_errors_name_the_problem(iris, Estimator):
    X, y = iris
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match=r"X must be finite, got nan at X\[3, 2\]"):
        Estimator().fit(bad, y)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"X must be finite, got inf at X\[3, 2\]"):
        Estimator().fit(bad, y)
    with pytest.raises(ValueError, match=r"X must be finite, got nan at X\[1, 0\]"):
        Estimator().fit(X, y).predict(np.array([[1.0, 2, 3, 4], [np.nan, 0, 0, 0]]))
    with pytest.raises(ValueError, match="only one class: 0"):
        Estimator().fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="X and y must have the same number of rows, got 150 rows in X and 149 in y"):
        Estimator().fit(X, y[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        Estimator().fit(X, y + 0.5)
    model = Estimator().fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 4 features"):
        model.predict(X[:, :3])
    with pytest.raises(NotFittedError):
        Estimator().predict(X)


def test_multilabel_input_errors():
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"y\[1, 0\] is 5"):
        SigmoidRegression().fit(X, np.array([[0, 1], [5, 0], [1, 1]]))
    # A list of lists that is not 0/1 is a list of label sets, not an indicator.
    assert SigmoidRegression().fit(np.arange(6.0).reshape(3, 2), [[0, 1], [5, 0], [1]]).classes_.tolist() == [0, 1, 5]
    with pytest.raises(ValueError, match="got 3 rows in X and 2 in y"):
        SigmoidRegression().fit(X, [[0, 1], [1, 0]])
    model = SigmoidRegression().fit(np.arange(6.0).reshape(3, 2), [[0, 1], [1, 0], [1, 1]])
    assert model.target_type_ == "multilabel-indicator"


def test_one_class_left_by_the_weights_is_refused(iris):
    X, y = iris
    with pytest.raises(ValueError, match="at least 2 classes with a positive weight, but only class 2"):
        SoftmaxRegression().fit(X, y, sample_weight=(y == 2).astype(float))
    with pytest.raises(ValueError, match="zero for every row"):
        SoftmaxRegression().fit(X, y, sample_weight=np.zeros(len(y)))
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative, got -1.0 at index"):
        SoftmaxRegression().fit(X, y, sample_weight=-np.ones(len(y)))


def _named(name, value):
    """scikit-learn's InvalidParameterError text: the parameter's name, then the bad value."""
    return rf"The '{name}' parameter of \w+ must be .*Got {value} instead"


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"C": 0.0}, r"The 'C' parameter of SoftmaxRegression must be a float in the range \(0.0, inf\)\. Got 0.0"),
        ({"C": np.inf}, _named("C", "inf")),
        ({"C": "1"}, _named("C", "'1'")),
        ({"solver": "sgd"}, _named("solver", "'sgd'")),
        ({"max_iter": 0}, _named("max_iter", "0")),
        ({"tol": -1.0}, _named("tol", "-1.0")),
        ({"class_weight": "auto"}, _named("class_weight", "'auto'")),
        ({"batch_size": 0}, _named("batch_size", "0")),
        ({"learning_rate": 0}, _named("learning_rate", "0")),
        ({"validation_fraction": 1.0}, _named("validation_fraction", "1.0")),
        ({"n_iter_no_change": 0}, _named("n_iter_no_change", "0")),
        ({"dtype": np.float16}, "dtype must be np.float32 or np.float64"),
        ({"class_weight": {0: -1.0}}, r"class_weight\[0\] must be a finite number >= 0, got -1.0"),
        ({"fit_intercept": "yes"}, _named("fit_intercept", "'yes'")),
        ({"callback": 3}, _named("callback", "3")),
        ({"n_jobs": 0}, _named("n_jobs", "0")),
        ({"verbose": -1}, _named("verbose", "-1")),
    ],
)
@pytest.mark.parametrize("estimator", [SoftmaxRegression, SigmoidRegression, AutoClassifier])
def test_bad_parameters_are_named(iris, estimator, params, match):
    with pytest.raises(ValueError, match=match.replace("SoftmaxRegression", estimator.__name__)):
        estimator(**params).fit(*iris)


@pytest.mark.parametrize("estimator", [SigmoidRegression, AutoClassifier])
def test_bad_threshold_is_named(iris, estimator):
    with pytest.raises(ValueError, match=_named("threshold", "1.5")):
        estimator(threshold=1.5).fit(*iris)


def test_parameters_are_checked_by_sklearn_constraints():
    """The constraints are scikit-learn's own: its InvalidParameterError, and every parameter listed."""
    from sklearn.utils._param_validation import InvalidParameterError

    for estimator in (SoftmaxRegression, SigmoidRegression, AutoClassifier):
        assert set(estimator._parameter_constraints) == set(estimator().get_params()), estimator
    with pytest.raises(InvalidParameterError):
        SoftmaxRegression(max_iter=1.5).fit(np.eye(3), [0, 1, 2])
    with pytest.raises(InvalidParameterError):
        SoftmaxRegression(solver="adam", batch_size=-1).partial_fit(np.eye(3), [0, 1, 2], classes=[0, 1, 2])


def test_threshold_moves_the_multilabel_decision():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 4))
    Y = (X[:, :3] + 0.5 * rng.standard_normal((300, 3)) > 0).astype(int)
    low = SigmoidRegression(threshold=0.2).fit(X, Y)
    high = SigmoidRegression(threshold=0.8).fit(X, Y)
    assert low.predict(X).sum() > high.predict(X).sum()
    np.testing.assert_array_equal(low.predict(X), (low.predict_proba(X) > 0.2).astype(int))


def test_one_vs_rest_probabilities_sum_to_one(iris):
    X, y = iris
    model = SigmoidRegression().fit(X, y)
    assert model.target_type_ == "multiclass" and model.coef_.shape == (3, 4)
    P = model.predict_proba(X)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), P, rtol=1e-10)
    assert model.score(X, y) > 0.9


def test_non_finite_X_is_located_in_sparse_input_too(iris):
    X, y = iris
    bad = X.copy()
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match=r"X must be finite, got inf at X\[7, 1\]"):
        SoftmaxRegression().fit(sparse.csr_matrix(bad), y)


@pytest.mark.parametrize("Estimator", [SoftmaxRegression, SigmoidRegression])
def test_labels_are_classes_exactly_as_given(Estimator):
    """Integral labels of any size are classes; a list that mixes strings and numbers is refused, not stringified."""
    X = np.array([[0.0], [0.1], [1.0], [1.1], [2.0], [2.1]])
    for labels in ([2**64 + 1] * 2 + [3] * 2 + [-(2**63) - 1] * 2, [1e20] * 2 + [-1e20] * 2 + [0.0] * 2):
        model = Estimator(C=100.0).fit(X, labels)
        assert model.predict(X).tolist() == labels
    with pytest.raises(TypeError, match=r"y mixes strings and numbers \('a' at y\[0\], 1 at y\[2\]\)"):
        Estimator().fit(X, ["a", "a", 1, 1, "b", "b"])
