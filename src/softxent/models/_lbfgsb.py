"""scipy's L-BFGS-B, driven without ``scipy.optimize.minimize``'s wrappers.

``minimize(method="L-BFGS-B")`` is a Python loop around one compiled
routine, ``setulb``, which asks for f and its gradient (task ``FG``) or
reports a new iterate (task ``NEW_X``) until it stops. The loop wraps the
objective in a ``ScalarFunction`` that copies, converts and compares ``x``
on every evaluation, and builds an ``OptimizeResult`` for every callback:
about 40 us an iteration, a sixth of a whole iteration on digits-sized fits
(1347 x 64, 10 classes), where the evaluation itself is about 0.25 ms.
:func:`minimize_lbfgsb` runs the same loop on the same routine with the
same arguments, so it takes the same steps (tested against ``minimize``),
without those wrappers.

``setulb`` is not public: its signature changed in scipy 1.15 (the
routine was rewritten in C, with integer task codes). The direct loop runs
only on the scipy releases whose routine it was checked against (1.15 to
1.17; the test suite compares it with ``minimize`` on the pinned one), and
where the first call still does not match (a scipy 1.14 raises a
TypeError) :func:`minimize_lbfgsb` falls back to ``minimize`` itself, with
identical results and the old speed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy
import scipy.optimize


def _checked_release() -> bool:
    """Whether the installed scipy is one whose setulb the direct loop was written for."""
    try:
        major, minor = (int(part) for part in scipy.__version__.split(".")[:2])
    except ValueError:  # pragma: no cover - an unusual version string: take the safe path
        return False
    return (1, 15) <= (major, minor) <= (1, 17)


try:  # the compiled routine, private to scipy (see the module docstring)
    from scipy.optimize import _lbfgsb as _compiled
except ImportError:  # pragma: no cover - scipy reorganised: minimize() it is
    _compiled = None
if not _checked_release():
    _compiled = None

__all__ = ["minimize_lbfgsb"]

# setulb's integer task codes (scipy >= 1.15): task[0] is what it asks for, task[1] why it stopped.
_FG, _NEW_X, _CONVERGENCE, _STOP = 3, 1, 4, 5
_HALT_BY_CALLBACK, _ITERATION_LIMIT, _EVALUATION_LIMIT = 505, 504, 502

# What the codes mean, for SolverResult.message (the ones an unbounded problem can end with).
_MESSAGES = {
    402: "the relative reduction of f is at most ftol",
    502: "the evaluation limit was reached",
    504: "the iteration limit was reached",
    505: "the callback asked to stop",
    601: "rounding errors prevent progress",
    602: "the line search reached its largest step",
    603: "the line search reached its smallest step",
    604: "the line search's interval became too small",
}

# Whether to try the direct loop; tests switch it off to compare with minimize().
DIRECT = True


class _Mismatch(Exception):
    """The installed scipy's setulb does not take this module's arguments."""


def minimize_lbfgsb(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    callback: Callable[[np.ndarray, float], bool],
    *,
    max_iter: int,
    memory: int,
    max_evaluations: int,
    max_line_search: int,
    ftol: float,
) -> tuple[np.ndarray, int, str]:
    """Minimise ``fun`` (returning f and its float64 gradient) from ``x0`` with L-BFGS-B, unbounded.

    ``callback(x, f)`` runs after every iteration; True stops the solver
    (``x`` is the solver's own buffer: copy what you keep). The settings
    are ``minimize``'s options ``maxiter``, ``maxcor``, ``maxfun``,
    ``maxls`` and ``ftol``, with ``gtol=0``. Returns ``(x, status,
    message)`` with ``minimize``'s ``status``: 0 converged (the relative
    reduction of f at most ``ftol``), 1 an iteration or evaluation limit,
    99 stopped by the callback, 2 anything else (a failed line search).
    """
    if DIRECT and _compiled is not None:
        try:
            return _direct(fun, x0, callback, max_iter, memory, max_evaluations, max_line_search, ftol)
        except _Mismatch:
            pass

    def halt(intermediate_result: scipy.optimize.OptimizeResult) -> None:
        if callback(intermediate_result.x, float(intermediate_result.fun)):
            raise StopIteration

    result = scipy.optimize.minimize(
        fun, x0, method="L-BFGS-B", jac=True, callback=halt,
        options={"maxiter": max_iter, "maxcor": memory, "maxfun": max_evaluations, "maxls": max_line_search,
                 "gtol": 0.0, "ftol": ftol},
    )  # fmt: skip
    return result.x, int(result.status), str(result.message)


def _direct(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    callback: Callable[[np.ndarray, float], bool],
    max_iter: int,
    m: int,
    max_evaluations: int,
    max_line_search: int,
    ftol: float,
) -> tuple[np.ndarray, int, str]:
    n = x0.shape[0]
    x = np.array(x0, dtype=np.float64)  # the routine updates x in place
    f: float | np.ndarray = np.array(0.0)
    g = np.zeros(n)
    bound = np.zeros(n)  # nbd = 0: no variable is bounded, the bounds are not read
    nbd = np.zeros(n, dtype=np.int32)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task, ln_task = np.zeros(2, dtype=np.int32), np.zeros(2, dtype=np.int32)
    lsave, isave, dsave = np.zeros(4, dtype=np.int32), np.zeros(44, dtype=np.int32), np.zeros(29)
    factr = ftol / np.finfo(float).eps
    n_iter = n_eval = 0
    first = True
    while True:
        try:
            _compiled.setulb(m, x, bound, bound, nbd, f, g, factr, 0.0, wa, iwa, task, lsave, isave, dsave,
                             max_line_search, ln_task)  # fmt: skip
        except (TypeError, ValueError) as error:
            if first:  # nothing has run yet: another scipy, another signature
                raise _Mismatch from error
            raise
        first = False
        if task[0] == _FG:
            f, g = fun(x)
            n_eval += 1
        elif task[0] == _NEW_X:
            n_iter += 1
            if callback(x, float(f)):
                task[0], task[1] = _STOP, _HALT_BY_CALLBACK
            if n_iter >= max_iter:
                task[0], task[1] = _STOP, _ITERATION_LIMIT
            elif n_eval > max_evaluations:
                task[0], task[1] = _STOP, _EVALUATION_LIMIT
        else:
            break
    if task[0] == _CONVERGENCE:
        status = 0
    elif task[1] == _HALT_BY_CALLBACK:
        status = 99
    elif n_eval > max_evaluations or n_iter >= max_iter:
        status = 1
    else:
        status = 2
    return x, status, _MESSAGES.get(int(task[1]), f"L-BFGS-B stopped (task {int(task[0])}, code {int(task[1])})")
