"""The estimators' L-BFGS-B driver (softxent.models._lbfgsb) against scipy.optimize.minimize.

The driver runs scipy's compiled routine without ``minimize``'s wrappers; it
must take the same steps, stop for the same reasons, and fall back to
``minimize`` where the installed scipy's routine takes other arguments.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
scipy_optimize = pytest.importorskip("scipy.optimize")

from softxent.models import SoftmaxRegression, _lbfgsb  # noqa: E402
from softxent.models._objective import Objective, Problem  # noqa: E402

SETTINGS = {"memory": 10, "max_evaluations": 15000, "max_line_search": 50, "ftol": 64 * np.finfo(float).eps}


def _rosenbrock(x):
    """The n-dimensional Rosenbrock function and its gradient (a curved valley: many line searches)."""
    a, b = x[:-1], x[1:]
    f = float(np.sum(100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2))
    g = np.zeros_like(x)
    g[:-1] = -400.0 * a * (b - a * a) - 2.0 * (1.0 - a)
    g[1:] += 200.0 * (b - a * a)
    return f, g


def _softmax_objective():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 12)) * rng.uniform(0.5, 4.0, 12)
    y = rng.integers(0, 5, 300)
    return Objective(Problem(X, y, "softmax", 5), C=1.0, fit_intercept=True, n_threads=1)


def _run(fun, x0, max_iter, stop_at=None, direct=True, monkeypatch=None):
    """The driver's iterates, f values, end point and status (direct loop or minimize())."""
    monkeypatch.setattr(_lbfgsb, "DIRECT", direct)
    seen: list[tuple[np.ndarray, float]] = []

    def callback(x, f):
        seen.append((x.copy(), f))
        return stop_at is not None and len(seen) >= stop_at

    x, status, message = _lbfgsb.minimize_lbfgsb(fun, x0, callback, max_iter=max_iter, **SETTINGS)
    return seen, x, status, message


CASES = {
    "rosenbrock to convergence": (lambda: (_rosenbrock, np.full(6, -1.2)), 500, None, 0),
    "rosenbrock, iteration limit": (lambda: (_rosenbrock, np.full(6, -1.2)), 7, None, 1),
    "rosenbrock, stopped by the callback": (lambda: (_rosenbrock, np.full(6, -1.2)), 500, 5, 99),
    "softmax objective, iteration limit": (lambda: (_softmax_objective(), np.zeros(65)), 6, None, 1),
    "softmax objective to convergence": (lambda: (_softmax_objective(), np.zeros(65)), 500, None, 0),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_direct_loop_takes_minimizes_steps(monkeypatch, case):
    make, max_iter, stop_at, expected_status = case
    fun, x0 = make()
    direct = _run(fun, x0, max_iter, stop_at, True, monkeypatch)
    fun, x0 = make()  # a fresh objective (no memory of the last point)
    reference = _run(fun, x0, max_iter, stop_at, False, monkeypatch)
    assert len(direct[0]) == len(reference[0]) > 0
    for (x_d, f_d), (x_r, f_r) in zip(direct[0], reference[0]):
        np.testing.assert_allclose(x_d, x_r, rtol=1e-12, atol=1e-14)
        assert f_d == pytest.approx(f_r, rel=1e-13)
    np.testing.assert_allclose(direct[1], reference[1], rtol=1e-12, atol=1e-14)
    assert direct[2] == reference[2] == expected_status
    assert direct[3], "a stop reason is reported"
    if expected_status == 0 and fun is _rosenbrock:
        np.testing.assert_allclose(direct[1], 1.0, atol=1e-4)  # Rosenbrock's minimum
    if stop_at is not None:
        assert len(direct[0]) == stop_at


def test_the_direct_loop_counts_evaluations_as_minimize(monkeypatch):
    """The evaluation limit ends the fit after the iteration that passes it, as in minimize()."""
    calls = {True: 0, False: 0}
    for direct in (True, False):

        def fun(x, direct=direct):
            calls[direct] += 1
            return _rosenbrock(x)

        monkeypatch.setattr(_lbfgsb, "DIRECT", direct)
        x, status, _ = _lbfgsb.minimize_lbfgsb(
            fun, np.full(4, -1.2), lambda x, f: False, max_iter=1000, memory=10, max_evaluations=9,
            max_line_search=50, ftol=64 * np.finfo(float).eps,
        )  # fmt: skip
        assert status == 1
    assert calls[True] == calls[False] > 9


class _OtherScipy:
    """A compiled module whose setulb takes other arguments (as scipy < 1.15's did)."""

    @staticmethod
    def setulb(*args):
        raise TypeError("setulb() takes 18 positional arguments")


def test_another_scipys_routine_falls_back_to_minimize(monkeypatch):
    monkeypatch.setattr(_lbfgsb, "_compiled", _OtherScipy)
    seen, x, status, message = _run(_rosenbrock, np.full(6, -1.2), 500, None, True, monkeypatch)
    assert status == 0 and len(seen) > 10
    np.testing.assert_allclose(x, 1.0, atol=1e-4)
    monkeypatch.setattr(_lbfgsb, "_compiled", None)  # no compiled module at all
    assert _run(_rosenbrock, np.full(6, -1.2), 500, None, True, monkeypatch)[2] == 0


def test_an_error_inside_the_objective_is_not_taken_for_another_scipy(monkeypatch):
    """A TypeError raised by the objective reaches the caller; it does not rerun the fit via minimize()."""
    calls = []

    def fun(x):
        calls.append(1)
        raise TypeError("the objective's own error")

    monkeypatch.setattr(_lbfgsb, "DIRECT", True)
    with pytest.raises(TypeError, match="the objective's own error"):
        _lbfgsb.minimize_lbfgsb(fun, np.zeros(3), lambda x, f: False, max_iter=10, **SETTINGS)
    assert len(calls) == 1


def test_a_fit_is_the_same_with_either_driver(rng, monkeypatch):
    X = rng.standard_normal((400, 8))
    y = rng.integers(0, 4, 400)
    fits = []
    for direct in (True, False):
        monkeypatch.setattr(_lbfgsb, "DIRECT", direct)
        fits.append(SoftmaxRegression(C=0.5).fit(X, y))
    assert fits[0].n_iter_ == fits[1].n_iter_
    np.testing.assert_allclose(fits[0].coef_, fits[1].coef_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fits[0].loss_curve_, fits[1].loss_curve_, rtol=1e-12)


def test_the_direct_loop_runs_on_the_pinned_scipy(monkeypatch):
    """The comparisons above test the direct loop only if it runs: on the scipy of constraints.txt it must."""
    import scipy

    if not (1, 15) <= tuple(int(p) for p in scipy.__version__.split(".")[:2]) <= (1, 17):
        pytest.skip(f"scipy {scipy.__version__} is outside the releases the direct loop was written for")
    assert _lbfgsb._compiled is not None
    calls = []
    real = _lbfgsb._compiled.setulb

    class Spy:
        @staticmethod
        def setulb(*args):
            calls.append(1)
            return real(*args)

    monkeypatch.setattr(_lbfgsb, "_compiled", Spy)
    seen, x, status, _ = _run(_rosenbrock, np.full(6, -1.2), 500, None, True, monkeypatch)
    assert status == 0 and len(calls) > len(seen) > 10


@pytest.mark.parametrize(("version", "direct"), [("1.14.1", False), ("1.15.0", True), ("1.17.1", True),
                                                  ("1.18.0", False), ("2.0.0rc1", False)])  # fmt: skip
def test_only_checked_scipy_releases_take_the_direct_loop(monkeypatch, version, direct):
    import scipy

    monkeypatch.setattr(scipy, "__version__", version)
    assert _lbfgsb._checked_release() is direct
