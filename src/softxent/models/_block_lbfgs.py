r"""L-BFGS for objectives that separate over blocks: the multi-label sigmoid head, one curvature model per label.

The multi-label objective is a sum of independent per-label objectives,
:math:`f(\theta) = \sum_j f_j(\theta_j)`, with :math:`\theta_j` label
:math:`j`'s coefficients and intercept. Its Hessian is block-diagonal, but
one L-BFGS run over all of :math:`\theta` keeps one memory of 10 curvature
pairs for the whole space, which mixes the labels' curvatures: on a
synthetic 20000 x 300 set of 50 labels it took 72 iterations where the
slowest label alone, fitted by itself, took 19 (Yeast: 37 against 26).

This solver keeps one L-BFGS memory per block (the two-loop recursion of
Nocedal & Wright, algorithm 7.4, vectorised across the blocks), so the
search direction is :math:`d_j = -H_j g_j` with each label's own
inverse-Hessian model and scaling :math:`\gamma_j`, while every iteration
still costs one evaluation of the whole objective: the one pair of matrix
products that serves all labels. The step length is common to all blocks
(a backtracking line search on :math:`f` with the Armijo condition and
cubic/quadratic interpolation); with per-block models the unit step is
almost always accepted. A block whose curvature pair fails
:math:`s_j^\top y_j > \epsilon\, y_j^\top y_j` (a flat stretch, rounding)
keeps its previous pairs, as L-BFGS-B skips such a pair.

The stopping rule is :class:`~softxent.models._solvers.StopRule`, the one
the softmax head's L-BFGS-B uses: scikit-learn's gradient test on
:math:`\max|\nabla f|` in the original coordinates, and the objective test
on the predicted decrease :math:`\tfrac12 g^\top H g = \sum_j \tfrac12
g_j^\top H_j g_j = -\tfrac12 g^\top d`. As scipy's L-BFGS-B, float64 also
stops when :math:`f` no longer changes (64 eps relative); float32 stops
when a step gains less than float32's eps relative (rounding noise, which
an Armijo search alone would accept for ever).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ._solvers import _MEMORY, Progress, Report, SolverResult, Status, StopRule, lbfgs

if TYPE_CHECKING:
    from ._objective import Objective

__all__ = ["BlockMemory", "block_lbfgs", "solver_for"]

# Armijo's constant (scipy's L-BFGS-B uses the same c1) and the line search's budget.
_C1 = 1e-4
_MAX_BACKTRACKS = 30


class BlockMemory:
    r"""The last ``m`` curvature pairs of each of ``k`` blocks of ``p`` coordinates: k L-BFGS models at once.

    ``direction(g)`` returns :math:`H g` block by block, ``g`` and the result of
    shape (k, p). Each block keeps its own ring of pairs: a pair that fails
    the curvature condition is not stored for that block (as L-BFGS-B skips
    it), so the blocks' rings fill at different rates.
    """

    def __init__(self, m: int, k: int, p: int, gamma0: float) -> None:
        self.m = m
        self.S = np.zeros((m, k, p))
        self.Y = np.zeros((m, k, p))
        self.rho = np.zeros((m, k))
        self.gamma = np.full(k, gamma0)
        self.count = np.zeros(k, dtype=np.int64)  # pairs stored per block; the newest at (count - 1) % m

    def update(self, s: np.ndarray, y: np.ndarray) -> None:
        sy = np.einsum("kp,kp->k", s, y)
        yy = np.einsum("kp,kp->k", y, y)
        ok = np.flatnonzero((sy > np.finfo(float).eps * yy) & (yy > 0))
        slot = self.count[ok] % self.m
        self.S[slot, ok], self.Y[slot, ok] = s[ok], y[ok]
        self.rho[slot, ok] = 1.0 / sy[ok]
        self.gamma[ok] = sy[ok] / yy[ok]
        self.count[ok] += 1

    def reset(self) -> None:
        self.count[:] = 0

    def direction(self, g: np.ndarray) -> np.ndarray:
        blocks = np.arange(len(self.count))
        pairs = []  # newest first: (s, y, rho) of every block, rho = 0 where a block has fewer pairs
        for j in range(int(min(self.count.max(initial=0), self.m))):
            slot = (self.count - 1 - j) % self.m
            rho = np.where(j < self.count, self.rho[slot, blocks], 0.0)
            pairs.append((self.S[slot, blocks], self.Y[slot, blocks], rho))
        q = g.copy()
        alphas = []
        for s, y, rho in pairs:
            a = rho * np.einsum("kp,kp->k", s, q)
            q -= a[:, None] * y
            alphas.append(a)
        r = self.gamma[:, None] * q
        for (s, y, rho), a in zip(reversed(pairs), reversed(alphas)):
            b = rho * np.einsum("kp,kp->k", y, r)
            r += (a - b)[:, None] * s
        return r


def _interpolate(alpha: float, f0: float, d0: float, fa: float) -> float:
    """The minimiser of the quadratic through f(0), f'(0) and f(alpha), kept in [0.1, 0.5] alpha."""
    denom = 2.0 * (fa - f0 - d0 * alpha)
    new = -d0 * alpha * alpha / denom if denom > 0 else 0.5 * alpha
    return float(min(max(new, 0.1 * alpha), 0.5 * alpha))


def block_lbfgs(
    objective: Objective,
    theta0: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    report: Report,
    make_progress: Callable[..., Progress],
) -> tuple[np.ndarray, SolverResult]:
    """Minimise ``objective`` from ``theta0`` with one L-BFGS model per output row; see the module docstring."""
    k, d = objective.shape
    p = d + int(objective.fit_intercept)

    def blocks(v: np.ndarray) -> np.ndarray:
        W = v[: k * d].reshape(k, d)
        return np.concatenate([W, v[k * d :, None]], axis=1) if objective.fit_intercept else W

    def flat(B: np.ndarray) -> np.ndarray:
        return np.concatenate([B[:, :d].ravel(), B[:, d]]) if objective.fit_intercept else B.ravel()

    rule = StopRule(tol, objective.problem.dtype)
    flat_rtol = 64 * np.finfo(np.float64).eps if objective.problem.dtype == np.float64 else np.finfo(np.float32).eps
    memory = BlockMemory(_MEMORY, k, p, 1.0 / objective.curvature)
    x = np.asarray(theta0, dtype=np.float64).copy()
    f, g = objective(x)
    direction = -flat(memory.direction(blocks(g)))
    if rule.warm_start_passes(objective.last_grad_max, -0.5 * float(g @ direction), f):
        return x, SolverResult("converged", 0, [])  # a warm start at the optimum: nothing to do
    curve: list[float] = []
    status: Status = "max_iter"
    message = ""
    for iteration in range(1, max_iter + 1):
        slope = float(g @ direction)
        if not slope < 0:  # rounding made the model indefinite: start it again
            memory.reset()
            direction = -flat(memory.direction(blocks(g)))
            slope = float(g @ direction)
        alpha, accepted = 1.0, False
        for _ in range(_MAX_BACKTRACKS):
            x_new = x + alpha * direction
            f_new, g_new = objective(x_new)
            if f_new <= f + _C1 * alpha * slope:
                accepted = True
                break
            alpha = _interpolate(alpha, f, slope, f_new)
        if not accepted:
            if objective.last_x is None or not np.array_equal(objective.last_x, x):
                objective(x)  # the tests below are about the point handed back
            # Flat to the working precision, or a model gone wrong: as scipy's line search
            # failure, converged if scikit-learn's gradient test passes.
            status = "converged" if objective.last_grad_max <= tol else "line_search"
            message = "the line search could not lower the objective"
            break
        memory.update(blocks(x_new - x), blocks(g_new - g))
        f_old, x, f, g = f, x_new, f_new, g_new
        curve.append(f)
        direction = -flat(memory.direction(blocks(g)))
        stop = report(make_progress(iteration, max_iter, f, objective.last_grad_max, None))
        if rule.passes(objective.last_grad_max, -0.5 * float(g @ direction), f):
            status = "converged"
            break
        if stop:
            status = "stopped"
            break
        if f_old - f <= flat_rtol * max(abs(f_old), abs(f), 1.0):
            # f no longer changes: in float64 scipy's ftol (64 eps), as scikit-learn counts it, converged;
            # in float32 a step that gains less than one rounding unit of f is noise, and Armijo alone
            # would accept such steps for ever: flat to the working precision (converged if the
            # gradient test passes, as the L-BFGS-B path says it).
            converged = objective.problem.dtype == np.float64 or objective.last_grad_max <= tol
            status = "converged" if converged else "line_search"
            message = "the objective stopped changing"
            break
    return x, SolverResult(status, len(curve), curve, message)


_PER_LABEL_MODELS = True  # False: one L-BFGS-B model for all labels (benchmarks compare the two)


def solver_for(objective: Objective) -> Callable[..., tuple[np.ndarray, SolverResult]]:
    """The L-BFGS of a fit: one model per label for a multi-label sigmoid head, scipy's L-BFGS-B otherwise."""
    if _PER_LABEL_MODELS and objective.problem.head == "sigmoid" and objective.shape[0] > 1:
        return block_lbfgs
    return lbfgs
