"""The multi-label head's L-BFGS with one curvature model per label (models/_block_lbfgs.py).

Oracles: the single-model memory of ``_solvers`` (the two-loop recursion
run block by block must give the block-diagonal one), scipy's L-BFGS-B on
the same objective (the same optimum), and the per-label objectives fitted
one label at a time (the iteration count the block solver is after).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import softxent.models._block_lbfgs as block
from softxent.models import SigmoidRegression, SoftmaxRegression, objective_value
from softxent.models._block_lbfgs import BlockMemory
from softxent.models._solvers import _CurvatureMemory


def _labels(n: int = 4000, d: int = 30, k: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Independent labels of positive rates 2%-50% and varied signal strength."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3.0, d)
    W = rng.standard_normal((k, d)) * rng.uniform(0.05, 1.0, (k, 1))
    Z = X @ W.T
    rates = np.geomspace(0.02, 0.5, k)
    b = np.array([-np.quantile(Z[:, j], 1 - rates[j]) for j in range(k)])
    return X, (Z + b + rng.logistic(size=Z.shape) > 0).astype(np.int64)


def test_block_memory_is_the_single_memory_run_block_by_block():
    rng = np.random.default_rng(1)
    k, p, m = 5, 7, 4
    blocks = BlockMemory(m, k, p, gamma0=3.0)
    single = [_CurvatureMemory(m, 3.0) for _ in range(k)]
    x = rng.standard_normal((k, p))
    H = [(lambda A: A @ A.T + 0.1 * np.eye(p))(rng.standard_normal((p, p))) for _ in range(k)]
    grad = lambda x: np.stack([H[j] @ x[j] for j in range(k)])  # noqa: E731
    for mem, xj, gj in zip(single, x, grad(x)):
        mem.update(xj, gj)
    for step in range(7):  # more steps than pairs kept: the ring buffer wraps
        x_new = x + rng.standard_normal((k, p))
        if step == 3:
            x_new[2] = x[2]  # block 2 does not move: its pair fails the curvature test, skipped in both
        blocks.update(x_new - x, grad(x_new) - grad(x))
        for mem, xj, gj in zip(single, x_new, grad(x_new)):
            mem.update(xj, gj)
        x = x_new
        g = rng.standard_normal((k, p))
        Hg = blocks.direction(g)
        for j in range(k):
            assert 0.5 * g[j] @ Hg[j] == pytest.approx(single[j].predicted_decrease(g[j]), rel=1e-10)


def _fit(flag: bool, X, Y, **kw):
    saved = block._PER_LABEL_MODELS
    block._PER_LABEL_MODELS = flag
    try:
        return SigmoidRegression(**kw).fit(X, Y)
    finally:
        block._PER_LABEL_MODELS = saved


def test_block_solver_reaches_the_optimum_of_scipys_lbfgs_in_fewer_iterations():
    X, Y = _labels()
    ref = _fit(False, X, Y, tol=1e-9, max_iter=10000)
    F_star = objective_value(ref.coef_, ref.intercept_, X, Y)
    tight = _fit(True, X, Y, tol=1e-9, max_iter=10000)
    assert objective_value(tight.coef_, tight.intercept_, X, Y) == pytest.approx(F_star, rel=1e-9)
    np.testing.assert_allclose(tight.coef_, ref.coef_, rtol=1e-3, atol=1e-4)
    blocks, joint = _fit(True, X, Y), _fit(False, X, Y)
    assert blocks.n_iter_ < joint.n_iter_
    # At the defaults, both end within the 1e-6 the stopping rule aims at.
    for model in (blocks, joint):
        assert objective_value(model.coef_, model.intercept_, X, Y) <= F_star * (1 + 1e-6)
    # ... and in about as many iterations as the slowest label fitted on its own.
    alone = max(SigmoidRegression().fit(X, Y[:, j]).n_iter_ for j in range(Y.shape[1]))
    assert blocks.n_iter_ <= 1.5 * alone + 2


def test_block_solver_takes_sample_weights_no_intercept_and_float32():
    X, Y = _labels(1500, 10, 4, seed=3)
    sw = np.random.default_rng(0).uniform(0.2, 3.0, len(X))
    for kw in ({"fit_intercept": False}, {"dtype": np.float32}, {}):
        with warnings.catch_warnings():
            # float32 at tol=1e-9: flat to its precision before the gradient test passes (it says so)
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = _fit(False, X, Y, tol=1e-9, max_iter=10000, **kw)
            ours = _fit(True, X, Y, tol=1e-9, max_iter=10000, **kw)
        F_ref = objective_value(ref.coef_, ref.intercept_, X, Y, sample_weight=None)
        F = objective_value(ours.coef_, ours.intercept_, X, Y, sample_weight=None)
        assert F == pytest.approx(F_ref, rel=1e-5 if kw.get("dtype") == np.float32 else 1e-9), kw
    fitted = _fit(True, X, Y, tol=1e-9, max_iter=10000)
    weighted = _fit(True, X, Y, tol=1e-9, max_iter=10000)
    weighted.fit(X, Y, sample_weight=sw)
    ref = _fit(False, X, Y, tol=1e-9, max_iter=10000)
    ref.fit(X, Y, sample_weight=sw)
    assert objective_value(weighted.coef_, weighted.intercept_, X, Y, sample_weight=sw) == pytest.approx(
        objective_value(ref.coef_, ref.intercept_, X, Y, sample_weight=sw), rel=1e-9
    )
    assert not np.allclose(weighted.coef_, fitted.coef_)  # the weights did something


def test_float32_flat_to_its_precision_stops_and_says_so():
    """float32 at a tol it cannot reach: the steps gain only rounding noise, which an Armijo search
    alone would accept for ever; the solver stops within a few steps of that, with the warning."""
    X, Y = _labels(1500, 10, 4, seed=3)
    with pytest.warns(ConvergenceWarning, match="flat to the working precision"):
        model = SigmoidRegression(dtype=np.float32, tol=1e-9, max_iter=10000).fit(X, Y)
    assert model.n_iter_ < 100


def test_warm_start_at_the_optimum_takes_no_step_and_max_iter_warns():
    X, Y = _labels(1000, 8, 3, seed=2)
    model = SigmoidRegression(warm_start=True).fit(X, Y)
    assert model.n_iter_ > 0
    model.fit(X, Y)
    assert model.n_iter_ == 0
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        SigmoidRegression(max_iter=2).fit(X, Y)


def test_callback_stops_the_block_solver_and_sees_every_iteration():
    X, Y = _labels(1000, 8, 3, seed=4)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = SigmoidRegression(callback=lambda p: seen.append(p) or p.iteration == 3).fit(X, Y)
    assert [p.iteration for p in seen] == [1, 2, 3] and model.n_iter_ == 3
    assert seen[0].loss > seen[-1].loss


def test_softmax_and_one_label_keep_scipys_lbfgs():
    X, Y = _labels(500, 5, 3, seed=5)
    softmax = SoftmaxRegression().fit(X, Y[:, 0] + 2 * Y[:, 1])
    one = SigmoidRegression().fit(X, Y[:, 0])
    assert softmax.n_iter_ > 0 and one.n_iter_ > 0
    problem_heads = []
    original = block.block_lbfgs

    def spy(objective, *args, **kwargs):
        problem_heads.append(objective.problem.head)
        return original(objective, *args, **kwargs)

    block.block_lbfgs = spy
    try:
        SoftmaxRegression().fit(X, Y[:, 0] + 2 * Y[:, 1])
        SigmoidRegression().fit(X, Y[:, 0])
        assert problem_heads == []
        SigmoidRegression().fit(X, Y)
        assert problem_heads == ["sigmoid"]
    finally:
        block.block_lbfgs = original
