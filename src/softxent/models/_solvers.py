r"""The optimisers: L-BFGS (scipy) on the whole objective, adam on minibatches.

Both report after every iteration (L-BFGS) or epoch (adam) through one
hook, :class:`Progress`, which the estimators turn into ``verbose`` output
and pass to the user's ``callback``; a command line drives a progress bar
from the same records, and a callback that returns ``True`` stops training.

* :func:`lbfgs` runs scipy's L-BFGS-B (``minimize(method="L-BFGS-B")``'s
  compiled routine, driven by :mod:`._lbfgsb`) with scikit-learn's settings
  (``maxls=50``, ``ftol=64 eps``) on the preconditioned coordinates of
  :class:`~softxent.models._objective.Objective`, and stops when
  :math:`\max|\nabla f| \le` ``tol`` in the *original* coordinates (the
  test scikit-learn's ``LogisticRegression`` makes, never looser) *and* L-BFGS's predicted remaining decrease
  :math:`\tfrac12 g^\top H g` is at most :func:`objective_rtol` times
  :math:`|f|` *or* a tenth of what it predicted at the first iterate that
  passed the gradient test. The gradient test alone leaves the objective
  anywhere from 1e-7 to 1e-1 above the optimum at ``tol=1e-4``
  (scikit-learn's own fits on digits and wine are 1e-2 and 1e-3 above it,
  on a nearly separable set 0.8); the second test ends about 1e-6 from the
  optimum where the problem is well conditioned, and otherwise about ten
  times closer to it than the point where the gradient test first passed,
  so that softxent at its defaults is never less converged than
  scikit-learn at its defaults without running hundreds of iterations past
  it where scikit-learn's own fit stops far from the optimum.
* :class:`Adam` is Kingma & Ba's method with bias correction. One epoch is
  one shuffled pass in minibatches; the minibatch gradient is an unbiased
  estimate of :math:`\nabla f` (the data term scaled by n / (batch rows x S),
  the penalty :math:`\lambda W` exact). Training stops when the epoch's
  mean objective (or, with early stopping, the validation log loss) has not
  improved by ``tol`` for ``n_iter_no_change`` epochs, as in scikit-learn's
  ``MLPClassifier``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ._lbfgsb import minimize_lbfgsb
from ._objective import Objective, Problem, data_loss_grad

__all__ = ["Adam", "Progress", "SolverResult", "lbfgs"]


@dataclass(frozen=True)
class Progress:
    """One line of training progress, given to ``callback`` after each iteration.

    Attributes
    ----------
    estimator : str
        Class name of the estimator being trained.
    solver : {"lbfgs", "adam"}
    iteration : int
        L-BFGS iteration or adam epoch, counted from 1 in this call of
        ``fit`` (``partial_fit``: the total number of epochs so far).
    max_iter : int
        The limit on ``iteration`` (``partial_fit``: the epoch itself).
    loss : float
        The objective :math:`f = F / (C S)` (mean log loss plus penalty) at
        the iterate (L-BFGS) or averaged over the epoch's minibatches (adam).
    grad_max : float or None
        :math:`\\max |\\nabla f|`, the quantity compared with ``tol`` (L-BFGS).
    validation_loss : float or None
        Mean log loss on the held-out rows (adam with ``early_stopping``).
    elapsed : float
        Seconds since training began.
    """

    estimator: str
    solver: str
    iteration: int
    max_iter: int
    loss: float
    grad_max: float | None
    validation_loss: float | None
    elapsed: float

    def format(self) -> str:
        """One line for ``verbose`` output."""
        width = len(str(self.max_iter))
        text = f"[{self.estimator}] {self.solver} {self.iteration:>{width}}/{self.max_iter}  loss {self.loss:.8e}"
        if self.grad_max is not None:
            text += f"  |grad|max {self.grad_max:.2e}"
        if self.validation_loss is not None:
            text += f"  validation loss {self.validation_loss:.6f}"
        return text + f"  {self.elapsed:.2f} s"


Report = Callable[[Progress], bool]
Status = Literal["converged", "max_iter", "stopped", "line_search"]  # line_search: flat to the precision


@dataclass
class SolverResult:
    """What a solver hands back to the estimator."""

    status: Status
    n_iter: int
    loss_curve: list[float] = field(default_factory=list)
    message: str = ""


# --------------------------------------------------------------------------- L-BFGS

_EPS = float(np.finfo(float).eps)

# Curvature pairs kept by L-BFGS-B (scipy's and scikit-learn's default, maxcor=10); the
# gap estimate below uses the same number.
_MEMORY = 10
# The objective part of the stopping rule: L-BFGS's predicted remaining decrease at most
# _GAP_PER_TOL * tol * |f| (1e-7 relative at the default tol=1e-4), ...
_GAP_PER_TOL = 1e-3
# ... and, in float32, at least this: the float32 objective carries rounding of about
# 1e-7 relative (eps32 = 1.2e-7 per element, summed in float64), below which its
# decrease is noise.
_GAP_FLOOR32 = 1e-6


# ... or, whichever is larger, this fraction of the decrease it predicted at the first iterate
# that passed the gradient test (the kind of point where scikit-learn stops). Where that test
# passes far from the optimum (nearly separable classes, C large) the bound above would demand
# hundreds of iterations more than scikit-learn makes; ten times less predicted decrease than
# at such a point ends, on every data set of tests/test_models_stopping.py, about ten times
# closer to the optimum than scikit-learn's own fit (measured: wine, digits, many classes).
_GAP_PER_FIRST_PASS = 0.1


def objective_rtol(tol: float, dtype: np.dtype) -> float:
    """The relative bound on L-BFGS's predicted remaining decrease that goes with ``tol``."""
    rtol = _GAP_PER_TOL * tol
    return max(rtol, _GAP_FLOOR32) if np.dtype(dtype) == np.float32 else rtol


def lbfgs_detail(grad_max: float, tol: float) -> str:
    """Which half of the L-BFGS stopping rule an unconverged fit had not passed, for its warning."""
    if grad_max > tol:
        return f"largest |gradient| {grad_max:.3g} > tol={tol:g}"
    return (
        f"largest |gradient| {grad_max:.3g} <= tol={tol:g}, but the objective was still decreasing "
        "more than the stopping rule allows (see tol)"
    )


class StopRule:
    """The L-BFGS stopping rule of the module docstring, for one run (it remembers the first pass).

    ``passes(grad_max, predicted, f)``: scikit-learn's gradient test
    ``grad_max <= tol`` and the objective test on ``predicted``, the
    decrease the quasi-Newton model predicts (1/2 g^T H g).
    """

    def __init__(self, tol: float, dtype: np.dtype) -> None:
        self.tol = tol
        self.rtol = objective_rtol(tol, dtype)
        self.first_pass: float | None = None

    def passes(self, grad_max: float, predicted: float, f: float) -> bool:
        if grad_max > self.tol:
            return False
        if self.first_pass is None:
            self.first_pass = predicted
        return predicted <= max(self.rtol * abs(f), _GAP_PER_FIRST_PASS * self.first_pass)

    def warm_start_passes(self, grad_max: float, predicted: float, f: float) -> bool:
        """The test at a warm start, before any step: the objective test at ``rtol`` alone."""
        return grad_max <= self.tol and predicted <= self.rtol * abs(f)


class _CurvatureMemory:
    r"""The last ``m`` curvature pairs :math:`(s_k, y_k)` of the accepted iterates.

    They define L-BFGS's inverse Hessian model :math:`H` (Nocedal & Wright,
    algorithm 7.4, the two-loop recursion, with :math:`H^0 = \gamma I`,
    :math:`\gamma = s^\top y / y^\top y` of the newest pair). The quantity
    :math:`\tfrac12 g^\top H g` is the decrease the quasi-Newton model
    predicts for a full step to its minimiser: for a quadratic with an
    exact model it is exactly :math:`f - f^*`, and it is what the stopping
    rule bounds. scipy's L-BFGS-B keeps the same pairs internally but does
    not expose them; keeping them here costs :math:`O(m n)` per iteration,
    negligible beside one gradient.
    """

    def __init__(self, m: int, gamma0: float) -> None:
        self.m = m
        self.gamma = gamma0
        self.pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.x: np.ndarray | None = None
        self.g: np.ndarray | None = None

    def update(self, x: np.ndarray, g: np.ndarray) -> None:
        """Record the accepted iterate ``x`` with its gradient ``g`` (both in the solver's coordinates)."""
        if self.x is not None and self.g is not None:
            s, y = x - self.x, g - self.g
            sy, yy = float(s @ y), float(y @ y)
            # The curvature condition, with L-BFGS-B's own threshold: pairs that do not satisfy it
            # (a flat or non-convex stretch, rounding) would make H indefinite; they are skipped.
            if sy > _EPS * yy and yy > 0:
                self.pairs.append((s, y, 1.0 / sy))
                if len(self.pairs) > self.m:
                    self.pairs.pop(0)
                self.gamma = sy / yy
        self.x, self.g = x.copy(), g.copy()

    def predicted_decrease(self, g: np.ndarray) -> float:
        r""":math:`\tfrac12 g^\top H g`, by the two-loop recursion."""
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        r = self.gamma * q
        for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
            r += (a - rho * float(y @ r)) * s
        return 0.5 * float(g @ r)


def lbfgs(
    objective: Objective,
    theta0: np.ndarray,
    *,
    tol: float,
    max_iter: int,
    report: Report,
    make_progress: Callable[..., Progress],
) -> tuple[np.ndarray, SolverResult]:
    """Minimise ``objective`` from ``theta0`` with L-BFGS-B; see the module docstring."""
    curve: list[float] = []
    outcome: dict[str, Status] = {}

    def callback(x: np.ndarray, f: float) -> bool:
        if objective.last_x is None or not np.array_equal(objective.last_x, x):
            objective(x)  # L-BFGS-B accepts the last point it evaluated; this is a safety net
        curve.append(f)
        grad_max = objective.last_grad_max
        memory.update(x, objective.last_grad)
        stop = report(make_progress(len(curve), max_iter, f, grad_max, None))
        if grad_max <= tol and rule.passes(grad_max, memory.predicted_decrease(objective.last_grad), f):
            outcome["status"] = "converged"
            return True
        if stop:
            outcome["status"] = "stopped"
            return True
        return False

    rule = StopRule(tol, objective.problem.dtype)
    f0, _ = objective(theta0)
    # Before the first step there are no curvature pairs: the model's Hessian is a I, the
    # preconditioner's target (see _objective), a guess that only decides whether a warm start
    # is already converged.
    memory = _CurvatureMemory(_MEMORY, 1.0 / objective.curvature)
    memory.update(theta0, objective.last_grad)
    if rule.warm_start_passes(objective.last_grad_max, memory.predicted_decrease(objective.last_grad), f0):
        return theta0, SolverResult("converged", 0, curve)  # a warm start at the optimum: nothing to do
    # gtol = 0 in effect: the gradient test is ours, in the original coordinates.
    theta, code, message = minimize_lbfgsb(
        objective, theta0, callback,
        max_iter=max_iter, memory=_MEMORY, max_evaluations=max(15000, 100 * max_iter),
        max_line_search=50,  # scikit-learn's setting (scipy's default is 20)
        ftol=64 * np.finfo(float).eps,  # as scikit-learn: stop only on a flat objective
    )  # fmt: skip
    if objective.last_x is None or not np.array_equal(objective.last_x, theta):
        objective(theta)  # the tests below are about the point handed back
    if "status" in outcome:
        status = outcome["status"]
    elif code == 1:
        status = "max_iter"
    elif code == 0 and objective.problem.dtype == np.float64:
        # The objective stopped changing (relative change <= 64 eps): converged to float64
        # precision (scikit-learn counts this as converged).
        status = "converged"
    elif objective.last_grad_max <= tol:
        # Flat to the working precision (float32), or a line search that could not lower f,
        # after scikit-learn's gradient test passed: as converged as this precision allows.
        status = "converged"
    else:
        status = "line_search"
    return theta, SolverResult(status, len(curve), curve, message)


# --------------------------------------------------------------------------- adam


class Adam:
    r"""Adam on (W, b) with the minibatch gradient of :math:`f`; keeps its state between calls.

    Parameters
    ----------
    W, b : ndarray
        Initial parameters (float64), updated in place. ``b`` is None without intercept.
    learning_rate : float
        The step size :math:`\alpha`.
    beta1, beta2, epsilon : float
        Kingma & Ba's constants.
    """

    def __init__(
        self,
        W: np.ndarray,
        b: np.ndarray | None,
        *,
        learning_rate: float,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        self.W = np.array(W, dtype=np.float64)
        self.b = None if b is None else np.array(b, dtype=np.float64)
        self.learning_rate = learning_rate
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.m = [np.zeros_like(p) for p in self._params()]
        self.v = [np.zeros_like(p) for p in self._params()]
        self.t = 0
        # Running totals over everything seen (partial_fit): rows and their weight.
        self.rows_seen = 0
        self.weight_seen = 0.0

    def _params(self) -> list[np.ndarray]:
        return [self.W] if self.b is None else [self.W, self.b]

    def step(self, grads: list[np.ndarray]) -> None:
        """One update: m, v moving averages; bias-corrected step."""
        self.t += 1
        lr = self.learning_rate * np.sqrt(1 - self.beta2**self.t) / (1 - self.beta1**self.t)
        for p, g, m, v in zip(self._params(), grads, self.m, self.v):
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            p -= lr * m / (np.sqrt(v) + self.epsilon)

    def epoch(
        self,
        problem: Problem,
        *,
        C: float,
        batch_size: int,
        rng: np.random.Generator,
        total_weight: float,
        total_rows: int,
    ) -> float:
        r"""One shuffled pass over ``problem`` in minibatches; returns the mean minibatch objective.

        ``total_weight`` and ``total_rows`` are :math:`S` and :math:`n` of the
        objective being estimated (the training set, or all rows seen by
        ``partial_fit``): the minibatch data term is scaled by
        :math:`n / (|B| S)`, the penalty is :math:`\lambda = 1 / (C S)`.
        """
        l2 = 1.0 / (C * total_weight)
        order = rng.permutation(problem.n_rows)
        weighted_sum, rows_done = 0.0, 0
        for start in range(0, problem.n_rows, batch_size):
            rows = np.sort(order[start : start + batch_size])  # sorted: X[rows] reads memory in order
            batch = problem.subset(rows)
            loss, g_w, g_b = data_loss_grad(batch, self.W, self.b)
            factor = total_rows / (len(rows) * total_weight)
            f = factor * loss + 0.5 * l2 * float(np.vdot(self.W, self.W))
            grads = [factor * g_w + l2 * self.W] + ([] if self.b is None else [factor * g_b])
            self.step(grads)
            weighted_sum += f * len(rows)
            rows_done += len(rows)
        return weighted_sum / max(rows_done, 1)


def mean_log_loss(problem: Problem, W: np.ndarray, b: np.ndarray | None) -> float:
    """Weighted mean of the per-row loss (no penalty): the validation score of early stopping."""
    loss, _, _ = data_loss_grad(problem, W, b)
    return loss / float(problem.row_weights().sum())


def run_adam(
    optimizer: Adam,
    train: Problem,
    validation: Problem | None,
    *,
    C: float,
    batch_size: int,
    max_iter: int,
    tol: float,
    n_iter_no_change: int,
    rng: np.random.Generator,
    report: Report,
    make_progress: Callable[..., Progress],
) -> tuple[SolverResult, list[float]]:
    """Epochs of :class:`Adam` until convergence, ``max_iter``, or a stop from ``report``.

    Returns the result and the validation losses (empty without validation).
    With validation, the parameters of the best epoch are restored at the end.
    """
    S = float(train.row_weights().sum())
    if not S > 0:
        raise ValueError(
            "the sample weights (times the class weights) of the training rows are zero for every "
            "row; at least one row needs a positive weight"
        )
    curve: list[float] = []
    val_curve: list[float] = []
    best, bad_epochs = np.inf, 0
    best_params: tuple[np.ndarray, np.ndarray | None] | None = None
    status: Status = "max_iter"
    for epoch in range(1, max_iter + 1):
        loss = optimizer.epoch(train, C=C, batch_size=batch_size, rng=rng, total_weight=S, total_rows=train.n_rows)
        curve.append(loss)
        val = None if validation is None else mean_log_loss(validation, optimizer.W, optimizer.b)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"adam diverged at epoch {epoch} (objective {loss!r}); lower learning_rate "
                f"(now {optimizer.learning_rate!r}) or scale the features"
            )
        stop = report(make_progress(epoch, max_iter, loss, None, val))
        watched = loss if val is None else val
        if watched > best - tol:
            bad_epochs += 1
        else:
            bad_epochs = 0
        if watched < best:
            best = watched
            if val is not None:
                best_params = (optimizer.W.copy(), None if optimizer.b is None else optimizer.b.copy())
        if val is not None:
            val_curve.append(val)
        if bad_epochs > n_iter_no_change:
            status = "converged"
            break
        if stop:
            status = "stopped"
            break
    if best_params is not None:
        optimizer.W[...] = best_params[0]
        if optimizer.b is not None:
            optimizer.b[...] = best_params[1]
    return SolverResult(status, len(curve), curve), val_curve


def progress_factory(estimator: str, solver: str, start: float) -> Callable[..., Progress]:
    """A constructor of :class:`Progress` records with the fixed fields filled in."""

    def make(iteration: int, max_iter: int, loss: float, grad_max: float | None, val: float | None) -> Progress:
        return Progress(estimator, solver, iteration, max_iter, loss, grad_max, val, time.perf_counter() - start)

    return make
