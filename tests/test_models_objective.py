"""The training objective of softxent.models: value, gradient, blocks, threads, preconditioning.

Oracles: the objective written out in NumPy/SciPy from its definition
(``C * sum_i s_i l_i + ||W||^2 / 2``), 4th-order finite differences of the
library's own objective, and the invariances the row blocks must keep
(block size, thread count, dense vs sparse, float32 vs float64).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("sklearn")

from scipy import sparse  # noqa: E402
from scipy.special import log_expit, logsumexp  # noqa: E402

from softxent._gradcheck import finite_difference_grad  # noqa: E402
from softxent.kernels import _dense_head  # noqa: E402
from softxent.models import (
    _data_term,  # noqa: E402
    _objective,  # noqa: E402
    objective_value,  # noqa: E402
)
from softxent.models._objective import Objective, Problem, data_loss_grad  # noqa: E402


def _softmax_data(rng, n=37, d=5, k=4):
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10.0, d) + rng.uniform(-3, 3, d)  # unscaled features
    y = rng.integers(0, k, n)
    return X, y


def _multilabel_data(rng, n=41, d=6, k=3):
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10.0, d)
    Y = (rng.uniform(size=(n, k)) < 0.4).astype(np.float64)
    return X, Y


def _numpy_softmax_F(W, b, X, y, C, s, class_weight=None):
    """The definition, independently of softxent: C sum s_i w_{y_i} (lse(z_i) - z_{i, y_i}) + |W|^2 / 2."""
    Z = X @ W.T + (0 if b is None else b)
    rows = logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]
    w = s * (1.0 if class_weight is None else class_weight[y])
    return C * np.sum(w * rows) + 0.5 * np.sum(W * W)


def _numpy_sigmoid_F(W, b, X, Y, C, s, weight=None, pos_weight=None):
    Z = X @ W.T + (0 if b is None else b)
    pw = 1.0 if pos_weight is None else pos_weight
    elem = -(pw * Y * log_expit(Z) + (1 - Y) * log_expit(-Z))
    if weight is not None:
        elem = elem * weight
    return C * np.sum(s[:, None] * elem) + 0.5 * np.sum(W * W)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_objective_value_matches_its_definition(rng, fit_intercept, weighted):
    X, y = _softmax_data(rng)
    W, b = rng.standard_normal((4, 5)), (rng.standard_normal(4) if fit_intercept else None)
    s = rng.uniform(0, 3, len(y)) if weighted else np.ones(len(y))
    F = objective_value(W, b, X, y, C=0.7, sample_weight=s if weighted else None)
    assert F == pytest.approx(_numpy_softmax_F(W, b, X, y, 0.7, s), rel=1e-12)


def test_sigmoid_objective_value_matches_its_definition(rng):
    X, Y = _multilabel_data(rng)
    W, b = rng.standard_normal((3, 6)), rng.standard_normal(3)
    s = rng.uniform(0, 2, len(Y))
    assert objective_value(W, b, X, Y, C=2.5, sample_weight=s) == pytest.approx(
        _numpy_sigmoid_F(W, b, X, Y, 2.5, s), rel=1e-12
    )
    # One coefficient row and 1-D labels: the binary logistic regression.
    y = Y[:, 0]
    assert objective_value(W[:1], b[:1], X, y, C=2.5) == pytest.approx(
        _numpy_sigmoid_F(W[:1], b[:1], X, y[:, None], 2.5, np.ones(len(y))), rel=1e-12
    )


def _softmax_problem(rng, *, class_weight=False, sample_weight=True, n=37, d=5, k=4):
    X, y = _softmax_data(rng, n=n, d=d, k=k)
    return Problem(
        X=X, targets=y, head="softmax", n_outputs=k,
        sample_weight=rng.uniform(0.1, 3, len(y)) if sample_weight else None,
        class_weight=rng.uniform(0.25, 3.0, k) if class_weight else None,
    )  # fmt: skip


def _sigmoid_problem(rng, *, label_weights=False):
    X, Y = _multilabel_data(rng)
    return Problem(
        X=X, targets=Y, head="sigmoid", n_outputs=3, sample_weight=rng.uniform(0.1, 3, len(Y)),
        class_weight=np.array([1.0, 0.25, 4.0]) if label_weights else None,
        pos_weight=np.array([2.0, 1.0, 0.5]) if label_weights else None,
    )  # fmt: skip


PROBLEMS = {
    "softmax, sample weights": lambda rng: _softmax_problem(rng),
    "softmax, sample and class weights": lambda rng: _softmax_problem(rng, class_weight=True),
    "softmax, no weights": lambda rng: _softmax_problem(rng, sample_weight=False),
    # 40 features, 6 classes: the one-sweep dense kernel (kernels/_dense_head.py) computes the data term.
    "softmax, dense kernel": lambda rng: _softmax_problem(rng, class_weight=True, n=45, d=40, k=6),
    "sigmoid, sample weights": lambda rng: _sigmoid_problem(rng),
    "sigmoid, label and positive weights": lambda rng: _sigmoid_problem(rng, label_weights=True),
}


@pytest.mark.parametrize("make", PROBLEMS.values(), ids=PROBLEMS.keys())
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_gradient_of_W_and_b_matches_finite_differences(rng, make, fit_intercept):
    problem = make(rng)
    objective = Objective(problem, C=0.8, fit_intercept=fit_intercept, n_threads=1)
    k, d = problem.n_outputs, problem.n_features
    W = rng.standard_normal((k, d)) * 0.3
    b = rng.standard_normal(k) if fit_intercept else None

    def f_of(flat):
        return objective.loss_grad(flat[: k * d].reshape(k, d), flat[k * d :] if fit_intercept else None)[0]

    flat = np.concatenate([W.ravel()] + ([b] if fit_intercept else []))
    _, g_w, g_b = objective.loss_grad(W, b)
    numeric = finite_difference_grad(f_of, flat, h=1e-4)
    analytic = np.concatenate([g_w.ravel()] + ([g_b] if fit_intercept else []))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)
    # f is F / (C S): check the scale against the definition too.
    S = problem.row_weights().sum()
    if problem.head == "softmax":
        sw = np.ones(problem.n_rows) if problem.sample_weight is None else problem.sample_weight
        F = _numpy_softmax_F(W, b, problem.X, problem.targets, 0.8, sw, problem.class_weight)
    else:
        F = _numpy_sigmoid_F(W, b, problem.X, problem.targets, 0.8, problem.sample_weight,
                             problem.class_weight, problem.pos_weight)  # fmt: skip
    assert f_of(flat) == pytest.approx(F / (0.8 * S), rel=1e-12)


def _check_theta_coordinates(objective, theta, roundtrip_tol):
    """The solver's gradient in theta matches finite differences; pack and unpack are inverse, and
    the value is the same function of (W, b)."""
    f, grad = objective(theta)
    numeric = finite_difference_grad(lambda t: objective(t)[0], theta, h=1e-4)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-9)
    W, b = objective.unpack(theta)
    np.testing.assert_allclose(objective.pack(W, b), theta, rtol=roundtrip_tol, atol=roundtrip_tol)
    assert objective.loss_grad(W, b)[0] == pytest.approx(f, rel=1e-14)


@pytest.mark.parametrize("make", PROBLEMS.values(), ids=PROBLEMS.keys())
def test_gradient_in_preconditioned_coordinates_matches_finite_differences(rng, make):
    """The solver's function of theta: the chain rule through W = W' P, b = b' - W mu."""
    problem = make(rng)
    objective = Objective(problem, C=0.8, fit_intercept=True, n_threads=1)
    assert not np.allclose(objective.mean, 0) and not np.allclose(objective.scale, 1)
    theta = rng.standard_normal(problem.n_outputs * (problem.n_features + 1)) * 0.3
    _check_theta_coordinates(objective, theta, 1e-12)


def _rare_labels_problem(rng, n=400, d=5):
    """Labels of very different positive rates (2% to 50%), with sample and positive weights."""
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d) + rng.uniform(-1, 1, d)
    rates = np.array([0.02, 0.1, 0.5])
    Y = (rng.uniform(size=(n, 3)) < rates).astype(np.float64)
    return Problem(X, Y, "sigmoid", 3, sample_weight=rng.uniform(0.5, 2.0, n), pos_weight=np.array([2.0, 1.0, 0.5]))


def test_per_label_scaling_of_the_sigmoid_head(rng):
    """Rare labels get a larger per-label scale r_j = sqrt(a / (pi_j (1 - pi_j))); the chain rule through
    W = diag(r) W' P still matches finite differences, and the starting intercept is the
    intercept-only optimum (zero intercept gradient at W = 0)."""
    problem = _rare_labels_problem(rng)
    objective = Objective(problem, C=0.8, fit_intercept=True, n_threads=1)
    s, Y, pw = problem.sample_weight, problem.targets, problem.pos_weight
    pos = (s @ Y) * pw
    rates = pos / (pos + s.sum() - s @ Y)  # independently: weighted positives over weighted rows
    np.testing.assert_allclose(objective.label_rates, rates, rtol=1e-12)
    np.testing.assert_allclose(objective.row_scale, np.sqrt(0.25 / (rates * (1 - rates))), rtol=1e-12)
    assert objective.row_scale[0] > 2 * objective.row_scale[2]
    theta = rng.standard_normal(3 * (problem.n_features + 1)) * 0.3
    _check_theta_coordinates(objective, theta, 1e-12)
    b0 = objective.initial_intercept()
    _, g_w, g_b = objective.loss_grad(np.zeros((3, problem.n_features)), b0)
    np.testing.assert_allclose(g_b, 0, atol=1e-12)
    assert np.abs(g_w).max() > 1e-3, "the coefficients still have something to learn"


def test_no_per_label_scaling_without_intercept_or_for_softmax(rng):
    problem = _rare_labels_problem(rng)
    objective = Objective(problem, C=0.8, fit_intercept=False, n_threads=1)
    np.testing.assert_array_equal(objective.row_scale, 1.0)
    assert objective.initial_intercept() is None
    X, y = _softmax_data(rng)
    softmax = Objective(Problem(X, y, "softmax", 4), C=1.0, fit_intercept=True, n_threads=1)
    np.testing.assert_array_equal(softmax.row_scale, 1.0)
    assert softmax.initial_intercept() is None


def _correlated_problem(rng, head):
    """Features that are mixtures of three sources plus little noise: strongly correlated."""
    n, d, k = 200, 8, 3
    X = rng.standard_normal((n, 3)) @ rng.standard_normal((3, d)) * rng.uniform(0.5, 20, d)
    X += 0.01 * rng.standard_normal((n, d)) + rng.uniform(-5, 5, d)
    if head == "softmax":
        return Problem(X, rng.integers(0, k, n), "softmax", k, sample_weight=rng.uniform(0.2, 2, n))
    return Problem(X, (rng.uniform(size=(n, k)) < 0.4).astype(np.float64), "sigmoid", k)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_whitened_coordinates_for_correlated_features(rng, head, fit_intercept):
    """Correlated features get the dense preconditioner W = W' P; the solver's gradient in theta
    still matches finite differences, and pack/unpack are inverse."""
    problem = _correlated_problem(rng, head)
    objective = Objective(problem, C=0.8, fit_intercept=fit_intercept, n_threads=1)
    assert objective.P.shape == (8, 8), "correlated features must be whitened"
    np.testing.assert_allclose(objective.P @ objective.P_inv, np.eye(8), atol=1e-8)
    theta = rng.standard_normal(objective.pack(np.zeros((3, 8)), np.zeros(3)).size) * 0.3
    _check_theta_coordinates(objective, theta, 1e-10)


def test_whitening_only_where_it_pays(rng):
    """Independent features (and sparse X, and a single feature) keep the diagonal scaling."""
    X, y = _softmax_data(rng, n=300, d=6)
    assert Objective(Problem(X, y, "softmax", 4), C=1.0, fit_intercept=True).P.ndim == 1
    corr = _correlated_problem(rng, "softmax")
    assert Objective(corr, C=1.0, fit_intercept=True).P.ndim == 2
    sp = Problem(sparse.csr_matrix(corr.X), corr.targets, "softmax", 3)
    assert Objective(sp, C=1.0, fit_intercept=True).P.ndim == 1
    f32 = Objective(Problem(corr.X.astype(np.float32), corr.targets, "softmax", 3), C=1.0, fit_intercept=True)
    # float32: whitened, but amplifying no direction more than 1/sqrt(_WHITEN_FLOOR32) in standardised units.
    assert f32.P.ndim == 2
    amplification = np.linalg.norm(f32.P * f32.scale[None, :], 2)  # P = Q D^-1: the norm of Q
    assert amplification <= 1.0001 / np.sqrt(_objective._WHITEN_FLOOR32)
    one = Problem(corr.X[:, :1], corr.targets, "softmax", 3)
    assert Objective(one, C=1.0, fit_intercept=True).P.ndim == 1
    with_const = Problem(np.hstack([corr.X, np.ones((corr.n_rows, 1))]), corr.targets, "softmax", 3)
    assert Objective(with_const, C=1.0, fit_intercept=True).P.shape == (
        9,
        9,
    )  # a constant column is left out of the test


def test_whitening_estimates_the_covariance_on_a_row_sample(rng, monkeypatch):
    """Beyond _WHITEN_ROWS rows the covariance comes from evenly spaced rows: still a valid change of
    variables (the function is the same), only the conditioning differs."""
    problem = _correlated_problem(rng, "softmax")
    monkeypatch.setattr(_objective, "_WHITEN_ROWS", 50)
    objective = Objective(problem, C=0.8, fit_intercept=True, n_threads=1)
    assert objective.P.shape == (8, 8)
    _check_theta_coordinates(objective, rng.standard_normal(3 * 9) * 0.3, 1e-10)


def test_a_small_sample_rules_out_whitening_before_the_full_one(rng, monkeypatch):
    """Beyond 2 x _WHITEN_PRECHECK_ROWS rows a small sample's covariance decides first: independent
    features stop there (one covariance of the small sample only); correlated ones get the same P as
    without the look."""
    monkeypatch.setattr(_objective, "_WHITEN_PRECHECK_ROWS", 40)
    counts = []
    original = Objective._covariance

    def spy(self, weights, count=_objective._WHITEN_ROWS):
        counts.append(count)
        return original(self, weights, count)

    monkeypatch.setattr(Objective, "_covariance", spy)
    X, y = _softmax_data(rng, n=300, d=6)
    assert Objective(Problem(X, y, "softmax", 4), C=1.0, fit_intercept=True).P.ndim == 1
    assert counts == [40]
    counts.clear()
    corr = _correlated_problem(rng, "softmax")
    looked = Objective(corr, C=1.0, fit_intercept=True)
    assert counts == [40, _objective._WHITEN_ROWS]
    monkeypatch.setattr(Objective, "_precheck", False)
    np.testing.assert_array_equal(looked.P, Objective(corr, C=1.0, fit_intercept=True).P)


def test_stopping_gradient_is_measured_in_the_original_coordinates(rng):
    problem = _softmax_problem(rng)
    objective = Objective(problem, C=1.0, fit_intercept=True)
    theta = rng.standard_normal(4 * 6)
    objective(theta)
    _, g_w, g_b = objective.loss_grad(*objective.unpack(theta))
    assert objective.last_grad_max == pytest.approx(max(np.abs(g_w).max(), np.abs(g_b).max()), rel=1e-14)


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_row_blocks_and_threads_do_not_change_the_result(rng, monkeypatch, head):
    """Many blocks of 7 rows on 3 threads equal one pass over all rows, to rounding."""
    problem = _softmax_problem(rng) if head == "softmax" else _sigmoid_problem(rng, label_weights=True)
    W = rng.standard_normal((problem.n_outputs, problem.n_features))
    b = rng.standard_normal(problem.n_outputs)
    whole = data_loss_grad(problem, W, b)
    monkeypatch.setattr(_data_term, "rows_per_block", lambda *args: 7)
    with Objective(problem, C=1.0, fit_intercept=True, n_threads=3) as objective:
        assert objective._executor is not None
        blocked = data_loss_grad(problem, W, b, executor=objective._executor, n_threads=3)
    assert blocked[0] == pytest.approx(whole[0], rel=1e-13)
    np.testing.assert_allclose(blocked[1], whole[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(blocked[2], whole[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("label_weights", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_blocks_call_the_kernel_directly_with_the_public_result(rng, monkeypatch, label_weights, dtype):
    """The objective calls the fused sigmoid kernel without re-validating each block; it must give
    what the public function gives (SOFTXENT_REFERENCE=1 sends the blocks through it) and what the
    definition gives."""
    problem = _sigmoid_problem(rng, label_weights=label_weights)
    problem.X = problem.X.astype(dtype)
    problem.targets = problem.targets.astype(dtype)
    W = rng.standard_normal((problem.n_outputs, problem.n_features)) * 0.3
    b = rng.standard_normal(problem.n_outputs)
    monkeypatch.setattr(_data_term, "rows_per_block", lambda *args: 8)  # several blocks, a short last one
    blocks = _data_term._SigmoidBlocks(problem, 8)
    assert blocks.kernel is not None, "the kernels are available here: the direct path must be the one tested"
    direct = data_loss_grad(problem, W, b)
    monkeypatch.setenv("SOFTXENT_REFERENCE", "1")
    assert _data_term._SigmoidBlocks(problem, 8).kernel is None
    public = data_loss_grad(problem, W, b)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert direct[0] == pytest.approx(public[0], rel=rtol)
    np.testing.assert_allclose(direct[1], public[1], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(direct[2], public[2], rtol=rtol, atol=rtol)
    F = _numpy_sigmoid_F(W, b, problem.X.astype(np.float64), problem.targets.astype(np.float64), 1.0,
                         problem.sample_weight, problem.class_weight, problem.pos_weight)  # fmt: skip
    assert direct[0] + 0.5 * np.sum(W * W) == pytest.approx(F, rel=rtol)


@pytest.mark.parametrize("class_weight", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_blocks_call_the_kernel_directly_with_the_public_result(rng, monkeypatch, class_weight, dtype):
    """The softmax head's blocks call the fused kernel directly too (no options, reductions or checks
    per block); the result must be the contract entry point's (SOFTXENT_REFERENCE=1 sends the blocks
    through it) and the definition's."""
    problem = _softmax_problem(rng, class_weight=class_weight)
    problem.X = problem.X.astype(dtype)
    W = rng.standard_normal((problem.n_outputs, problem.n_features)) * 0.3
    b = rng.standard_normal(problem.n_outputs)
    monkeypatch.setattr(_data_term, "rows_per_block", lambda *args: 8)  # several blocks, a short last one
    assert _data_term._SoftmaxBlocks(problem, 8).kernel is not None, "the direct path must be the one tested"
    direct = data_loss_grad(problem, W, b)
    monkeypatch.setenv("SOFTXENT_REFERENCE", "1")
    assert _data_term._SoftmaxBlocks(problem, 8).kernel is None
    public = data_loss_grad(problem, W, b)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    assert direct[0] == pytest.approx(public[0], rel=rtol)
    np.testing.assert_allclose(direct[1], public[1], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(direct[2], public[2], rtol=rtol, atol=rtol)
    F = _numpy_softmax_F(W, b, problem.X.astype(np.float64), problem.targets, 1.0, problem.sample_weight,
                         problem.class_weight)  # fmt: skip
    assert direct[0] + 0.5 * np.sum(W * W) == pytest.approx(F, rel=rtol)


DENSE_SHAPES = [(1, 64, 3), (2, 64, 2), (7, 65, 5), (131, 97, 10), (250, 80, 12), (67, 300, 7), (45, 64, 32)]


def _blas_loss_grad(monkeypatch, problem, W, b):
    """:func:`data_loss_grad` by the two BLAS products, on a copy of ``problem`` (whose choice of
    path is made once per problem)."""
    monkeypatch.setattr(_data_term, "_dense_head_for", lambda problem: None)
    return data_loss_grad(dataclasses.replace(problem), W, b)


def _dense_case(rng, monkeypatch, n, d, k, dtype, weights, chunked):
    """A softmax problem the one-sweep dense kernel takes, and that kernel's data term; ``chunked``
    forces chunks of 4 rows and float64 flushes every 12 rows (odd tails everywhere)."""
    problem = _softmax_problem(rng, class_weight=weights, sample_weight=weights, n=n, d=d, k=k)
    problem.X = np.ascontiguousarray(problem.X, dtype)
    assert _data_term._dense_head_for(problem) is not None, "the dense kernel must be the path tested"
    if chunked:
        monkeypatch.setattr(_dense_head, "chunk_rows", lambda *args: 4)
        monkeypatch.setattr(_data_term, "rows_per_block", lambda *args: 12)
    return problem


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("weights", [False, True])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=[f"{n}x{d}x{k}" for n, d, k in DENSE_SHAPES])
def test_dense_softmax_kernel_matches_the_blas_path_and_the_definition(
    rng, monkeypatch, shape, dtype, fit_intercept, weights, chunked
):
    """The softmax head's one-sweep kernel (z = X W^T + b, loss, G, G^T X over cached chunks) against
    the BLAS products with the fused row kernel, and against the objective's definition in float64."""
    n, d, k = shape
    problem = _dense_case(rng, monkeypatch, n, d, k, dtype, weights, chunked)
    W = rng.standard_normal((k, d)) * 0.3
    b = rng.standard_normal(k) if fit_intercept else None
    fast = data_loss_grad(problem, W, b)
    assert problem.dense_head is not None
    blas = _blas_loss_grad(monkeypatch, problem, W, b)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    assert fast[0] == pytest.approx(blas[0], rel=rtol)
    scale = max(np.abs(blas[1]).max(), 1.0)
    np.testing.assert_allclose(fast[1], blas[1], rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(fast[2], blas[2], rtol=rtol, atol=rtol * scale)
    sw = np.ones(n) if problem.sample_weight is None else problem.sample_weight
    F = _numpy_softmax_F(W, b, problem.X.astype(np.float64), problem.targets, 1.0, sw, problem.class_weight)
    assert fast[0] + 0.5 * np.sum(W * W) == pytest.approx(F, rel=rtol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dense_softmax_kernel_on_extreme_inputs(rng, monkeypatch, dtype):
    """Confident rows (logits in the thousands, of either sign), rows of zeros (all logits tied at b)
    and features of very different scales: finite, and equal to the definition and the BLAS path."""
    n, d, k = 97, 70, 9
    problem = _dense_case(rng, monkeypatch, n, d, k, dtype, True, True)
    X = problem.X.astype(np.float64)
    X[:, :5] *= 1e3
    X[10:14] = 0.0
    problem.X = np.ascontiguousarray(X, dtype)
    W = rng.standard_normal((k, d)) * 20.0
    b = rng.standard_normal(k) * 100.0
    fast = data_loss_grad(problem, W, b)
    assert np.isfinite(fast[0]) and np.isfinite(fast[1]).all() and np.isfinite(fast[2]).all()
    assert problem.dense_head is not None
    blas = _blas_loss_grad(monkeypatch, problem, W, b)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    # Loss sums of confident rows: the float32 logits themselves carry eps32 * |z| ~ 1e-3 of rounding.
    F = _numpy_softmax_F(W, b, problem.X.astype(np.float64), problem.targets, 1.0, problem.sample_weight,
                         problem.class_weight)  # fmt: skip
    assert fast[0] + 0.5 * np.sum(W * W) == pytest.approx(F, rel=rtol)
    assert fast[0] == pytest.approx(blas[0], rel=rtol)
    for a, c in zip(fast[1:], blas[1:]):
        np.testing.assert_allclose(a, c, rtol=rtol, atol=rtol * np.abs(c).max())


def test_dense_softmax_kernel_threads_give_the_one_thread_result(rng, monkeypatch):
    problem = _dense_case(rng, monkeypatch, 301, 64, 10, np.float64, True, True)
    W = rng.standard_normal((10, 64))
    b = rng.standard_normal(10)
    whole = data_loss_grad(problem, W, b)
    with Objective(problem, C=1.0, fit_intercept=True, n_threads=3) as objective:
        threaded = data_loss_grad(problem, W, b, executor=objective._executor, n_threads=3)
    assert threaded[0] == pytest.approx(whole[0], rel=1e-13)
    for a, c in zip(threaded[1:], whole[1:]):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


def test_dense_softmax_kernel_only_where_it_beats_blas():
    """The shapes the kernel takes (see kernels/_dense_head.py for the measurements behind them)."""
    assert _dense_head.suits(784, 10, 8) and _dense_head.suits(64, 10, 8) and _dense_head.suits(784, 10, 4)
    assert not _dense_head.suits(16, 50, 8)  # rows too short: BLAS
    assert not _dense_head.suits(32, 10, 4)  # float32 rows of 32: BLAS
    assert not _dense_head.suits(300, 64, 8)  # W beyond the cache budget
    assert not _dense_head.suits(3000, 8, 4)  # rows longer than the kernel's budget
    assert not _dense_head.suits(100, 1, 8)  # one output is the sigmoid head's


def test_sparse_X_gives_the_dense_result(rng):
    X, y = _softmax_data(rng)
    X[rng.uniform(size=X.shape) < 0.6] = 0.0
    W, b = rng.standard_normal((4, 5)), rng.standard_normal(4)
    dense = Objective(Problem(X, y, "softmax", 4), C=1.0, fit_intercept=True)
    sp = Objective(Problem(sparse.csr_matrix(X), y, "softmax", 4), C=1.0, fit_intercept=True)
    np.testing.assert_allclose(sp.mean, dense.mean, rtol=1e-13)
    np.testing.assert_allclose(sp.scale, dense.scale, rtol=1e-13)
    for a, c in zip(sp.loss_grad(W, b), dense.loss_grad(W, b)):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-14)


def test_float32_objective_agrees_with_float64_to_its_precision(rng):
    X, y = _softmax_data(rng, n=3000, d=20, k=7)
    W, b = rng.standard_normal((7, 20)) * 0.1, rng.standard_normal(7)
    f64 = Objective(Problem(X, y, "softmax", 7), C=1.0, fit_intercept=True).loss_grad(W, b)
    f32 = Objective(Problem(X.astype(np.float32), y, "softmax", 7), C=1.0, fit_intercept=True).loss_grad(W, b)
    assert f32[0] == pytest.approx(f64[0], rel=1e-6)
    np.testing.assert_allclose(f32[1], f64[1], rtol=1e-4, atol=1e-6)


def test_rows_per_block_bounds_the_logit_buffer():
    # 2**16 logits at most per block, and about 4 MiB of dense X.
    assert _objective.rows_per_block(784, 10, 8, False) * 10 <= 1 << 16
    assert _objective.rows_per_block(784, 10, 8, False) * 784 * 8 <= 4 << 20
    assert _objective.rows_per_block(10, 100_000, 4, False) == 1
    assert _objective.rows_per_block(10**6, 10, 8, True) == 4096  # sparse: by the logits only


def test_zero_total_weight_is_refused(rng):
    problem = _softmax_problem(rng)
    problem.sample_weight = np.zeros(problem.n_rows)
    with pytest.raises(ValueError, match="zero for every row"):
        Objective(problem, C=1.0, fit_intercept=True)


def test_effective_n_threads():
    import os

    n = len(os.sched_getaffinity(0))
    assert 1 <= _objective.effective_n_threads(None) <= n  # fewer under OMP_NUM_THREADS or threadpool_limits
    assert _objective.effective_n_threads(-1) == n
    assert _objective.effective_n_threads(1) == 1
    assert _objective.effective_n_threads(-(n + 5)) == 1


def test_objective_value_penalty_and_intercept(rng):
    """The intercept is not penalised; W enters as ||W||^2 / 2 whatever C is."""
    X, y = _softmax_data(rng)
    W = rng.standard_normal((4, 5))
    F0 = objective_value(W, np.zeros(4), X, y, C=0.0)
    assert F0 == pytest.approx(0.5 * np.sum(W * W), rel=1e-14)
    assert objective_value(W, 100 * np.ones(4), X, y, C=0.0) == F0  # a common shift: no penalty, no loss change
    expected = objective_value(W, None, X, y, C=1.0)
    assert expected == pytest.approx(_numpy_softmax_F(W, None, X, y, 1.0, np.ones(len(y))), rel=1e-12)
