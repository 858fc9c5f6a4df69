"""Softmax, log-softmax, log-sum-exp, sigmoid and the softmax Jacobian: eq. (1), (2), (8), (13), (14).

Tests ``softmax``, ``log_softmax``, ``logsumexp``, ``sigmoid``, ``log_sigmoid``,
``softmax_jacobian`` and ``softmax_vjp`` against independent oracles:

* scipy.special (softmax, log_softmax, logsumexp, expit, log_expit) and torch
  in float64, for float32 and float64 input (result dtype = input dtype,
  tolerance from ``TOL``), any leading shape and any axis;
* mpmath at 50 digits for hard cases where a naive formula loses everything;
* finite differences and torch autograd for the Jacobian and its products;
* the documented conventions: ``temperature``, the ``where=`` mask (mask ==
  slice), ``-inf`` entries, fully masked rows, NaN / ``+inf`` rows, empty arrays;
* invariances (shift, rows sum to 1, log_softmax == log softmax, sigmoid
  symmetry), also as Hypothesis property tests.

Bad arguments (validation errors) are tested in ``test_validation.py``.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import scipy.special
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softxent as sx

from conftest import TOL, finite_difference_grad, random_logits

# softmax, log_softmax and logsumexp run on the compiled kernel and on the
# exact NumPy path (conftest.backend); the other functions ignore the switch.
pytestmark = pytest.mark.usefixtures("backend")


# scipy oracles with softxent's default axis (scipy's softmax defaults to axis=None).
def sp_softmax(x, axis=-1):
    return scipy.special.softmax(x, axis=axis)


def sp_log_softmax(x, axis=-1):
    return scipy.special.log_softmax(x, axis=axis)


def sp_logsumexp(x, axis=-1, keepdims=False):
    return scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)


# (softxent function, scipy oracle): both take (x, axis=...).
ROW_FUNCS = [(sx.softmax, sp_softmax), (sx.log_softmax, sp_log_softmax), (sx.logsumexp, sp_logsumexp)]
ROW_IDS = ["softmax", "log_softmax", "logsumexp"]

# (softxent function, scipy oracle) applied elementwise.
ELEMENTWISE = [(sx.sigmoid, scipy.special.expit), (sx.log_sigmoid, scipy.special.log_expit)]
ELEMENTWISE_IDS = ["sigmoid", "log_sigmoid"]

# (softxent function, torch oracle taking (tensor, dim)).
TORCH_ROW_FUNCS = [
    (sx.softmax, torch.softmax),
    (sx.log_softmax, torch.log_softmax),
    (sx.logsumexp, torch.logsumexp),
]

SHAPE_4D = (2, 3, 4, 5)
AXES_4D = [0, 1, 2, -1]
# powers of two make x / T exact in the oracle too; 3.0 is a non-dyadic one
TEMPERATURES = [0.0625, 0.5, 1.0, 3.0, 128.0]


def f64(x):
    """The exact float64 value of an input (the oracle's argument)."""
    return np.asarray(x).astype(np.float64)


def assert_close(actual, expected, dtype):
    """``actual`` has ``dtype`` and matches the float64 ``expected`` within ``TOL[dtype]``."""
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    np.testing.assert_allclose(actual.astype(np.float64), expected, **TOL[dtype])


def jacobian_by_equations(a: np.ndarray) -> np.ndarray:
    """Eq. (13)/(14) written out element by element, from softmax rows ``a`` (..., K)."""
    k = a.shape[-1]
    jac = np.empty(a.shape + (k,))
    for i in range(k):
        for j in range(k):
            if i == j:
                jac[..., i, j] = a[..., i] * (1.0 - a[..., i])  # eq. (13)
            else:
                jac[..., i, j] = -a[..., i] * a[..., j]  # eq. (14)
    return jac


# --------------------------------------------------------------------------------------
# Independent oracles: scipy and torch
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("func", "oracle"), ROW_FUNCS, ids=ROW_IDS)
@pytest.mark.parametrize("axis", AXES_4D)
def test_row_functions_match_scipy_any_axis(func, oracle, axis, dtype, rng):
    x = random_logits(rng, SHAPE_4D, scale=5.0, dtype=dtype)
    assert_close(func(x, axis=axis), oracle(f64(x), axis=axis), dtype)


@pytest.mark.parametrize(("func", "oracle"), TORCH_ROW_FUNCS, ids=ROW_IDS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_row_functions_match_torch_float64(func, oracle, axis, dtype, rng):
    x = random_logits(rng, (3, 7, 4), scale=10.0, dtype=dtype)
    expected = oracle(torch.from_numpy(f64(x)), axis).numpy()
    assert_close(func(x, axis=axis), expected, dtype)


@pytest.mark.parametrize(("func", "oracle"), ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_elementwise_match_scipy(func, oracle, dtype, rng):
    x = random_logits(rng, (3, 4, 5), scale=20.0, dtype=dtype)
    assert_close(func(x), oracle(f64(x)), dtype)


@pytest.mark.parametrize(
    ("func", "oracle"),
    [(sx.sigmoid, torch.sigmoid), (sx.log_sigmoid, F.logsigmoid)],
    ids=ELEMENTWISE_IDS,
)
def test_elementwise_match_torch_float64(func, oracle, dtype, rng):
    x = random_logits(rng, (6, 7), scale=30.0, dtype=dtype)
    assert_close(func(x), oracle(torch.from_numpy(f64(x))).numpy(), dtype)


@pytest.mark.parametrize(("func", "oracle"), ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_elementwise_extremes_match_scipy(func, oracle, dtype):
    x = np.array([-np.inf, -1e30, -800.0, -40.0, -1e-30, 0.0, 1e-30, 40.0, 800.0, 1e30, np.inf, np.nan], dtype=dtype)
    assert_close(func(x), oracle(f64(x)), dtype)


@pytest.mark.parametrize(("func", "oracle"), ROW_FUNCS + ELEMENTWISE, ids=ROW_IDS + ELEMENTWISE_IDS)
def test_float32_is_the_float64_result_rounded_once(func, oracle, rng, backend):
    # Reference path: "the arithmetic runs in float64 and is rounded once", so
    # within 1 ulp of the float64 oracle rounded to float32 (float32 arithmetic
    # is several ulps off). The kernel computes x - max in float32 (as torch and
    # JAX do): its documented bound is a relative error of (|x - max| + 10) eps
    # on a probability, and 4 eps (1 + |value|) on a log-probability.
    x = random_logits(rng, (64, 1000), scale=6.0, dtype=np.float32)
    out = func(x)
    exact = oracle(f64(x))
    expected = exact.astype(np.float32)
    assert out.dtype == np.float32
    if backend == "reference" or func in (sx.sigmoid, sx.log_sigmoid, sx.logsumexp):
        assert np.all(np.abs(out - expected) <= np.spacing(np.abs(expected)))
        return
    eps = float(np.finfo(np.float32).eps)
    d = np.abs(f64(x) - f64(x).max(axis=-1, keepdims=True))
    if func is sx.softmax:
        bound = (d + 10) * eps * exact + 1e-37
    else:
        bound = 4 * eps * (1 + np.abs(exact))
    assert np.all(np.abs(out - exact) <= bound)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_logsumexp_keepdims(axis, keepdims, dtype, rng):
    x = random_logits(rng, SHAPE_4D, dtype=dtype)
    out = sx.logsumexp(x, axis=axis, keepdims=keepdims)
    expected = sp_logsumexp(f64(x), axis=axis, keepdims=keepdims)
    assert out.shape == expected.shape
    assert_close(out, expected, dtype)


@pytest.mark.parametrize(("func", "oracle"), ROW_FUNCS + ELEMENTWISE, ids=ROW_IDS + ELEMENTWISE_IDS)
def test_integer_input_is_promoted_to_float64(func, oracle):
    x = np.array([[3, -1, 0, 7], [2, 2, -5, 1]], dtype=np.int32)
    out = func(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, oracle(x.astype(np.float64)), **TOL[np.float64])
    # a nested list of Python ints too
    np.testing.assert_allclose(func(x.tolist()), out, **TOL[np.float64])


@pytest.mark.parametrize(("func", "oracle"), ROW_FUNCS + ELEMENTWISE, ids=ROW_IDS + ELEMENTWISE_IDS)
def test_float16_keeps_float16(func, oracle, rng):
    x = random_logits(rng, (4, 6), scale=2.0, dtype=np.float16)
    assert_close(func(x), oracle(f64(x)), np.float16)


# --------------------------------------------------------------------------------------
# mpmath golden values at 50 digits
# --------------------------------------------------------------------------------------


def mp_logsumexp(xs):
    return [mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in xs))]


def mp_log_softmax(xs):
    lse = mp_logsumexp(xs)[0]
    return [mpmath.mpf(v) - lse for v in xs]


def mp_softmax(xs):
    return [mpmath.exp(v) for v in mp_log_softmax(xs)]


def mp_sigmoid(xs):
    return [1 / (1 + mpmath.exp(-mpmath.mpf(v))) for v in xs]


def mp_log_sigmoid(xs):
    return [mpmath.log(s) for s in mp_sigmoid(xs)]


GOLDEN = [
    # (id, softxent function, input, dtype, mpmath function); each defeats a naive formula
    ("lse [1000, 1000]: exp overflows", sx.logsumexp, [1000.0, 1000.0], np.float64, mp_logsumexp),
    ("lse [-1000, -1000]: exp underflows", sx.logsumexp, [-1000.0, -1000.0], np.float64, mp_logsumexp),
    ("lse [0, -40]: needs log1p", sx.logsumexp, [0.0, -40.0], np.float64, mp_logsumexp),
    ("lse [0, -20] float32", sx.logsumexp, [0.0, -20.0], np.float32, mp_logsumexp),
    ("lse [3e38, 3e38] float32", sx.logsumexp, [3e38, 3e38], np.float32, mp_logsumexp),
    ("lse [1e30, -1e30, 0]", sx.logsumexp, [1e30, -1e30, 0.0], np.float64, mp_logsumexp),
    ("log_softmax [0, -800]: log(softmax) is -inf", sx.log_softmax, [0.0, -800.0], np.float64, mp_log_softmax),
    ("log_softmax [0, -800] float32", sx.log_softmax, [0.0, -800.0], np.float32, mp_log_softmax),
    ("log_softmax [0, -30]: needs log1p", sx.log_softmax, [0.0, -30.0], np.float64, mp_log_softmax),
    ("log_softmax [1000, 0, -1000]", sx.log_softmax, [1000.0, 0.0, -1000.0], np.float64, mp_log_softmax),
    ("softmax [0, -40]", sx.softmax, [0.0, -40.0], np.float64, mp_softmax),
    ("softmax [1000, 999, 998]", sx.softmax, [1000.0, 999.0, 998.0], np.float64, mp_softmax),
    ("softmax [-1000, -1001]", sx.softmax, [-1000.0, -1001.0], np.float64, mp_softmax),
    ("sigmoid 40 rounds to 1", sx.sigmoid, [40.0], np.float64, mp_sigmoid),
    ("sigmoid -40: 1 - sigmoid(40) is 0", sx.sigmoid, [-40.0], np.float64, mp_sigmoid),
    ("sigmoid -700", sx.sigmoid, [-700.0], np.float64, mp_sigmoid),
    ("sigmoid -80 float32", sx.sigmoid, [-80.0], np.float32, mp_sigmoid),
    ("log_sigmoid -800: log(sigmoid) is -inf", sx.log_sigmoid, [-800.0], np.float64, mp_log_sigmoid),
    ("log_sigmoid 40: log(sigmoid) is 0", sx.log_sigmoid, [40.0], np.float64, mp_log_sigmoid),
    ("log_sigmoid -30", sx.log_sigmoid, [-30.0], np.float64, mp_log_sigmoid),
    ("log_sigmoid -200 float32", sx.log_sigmoid, [-200.0], np.float32, mp_log_sigmoid),
    ("log_sigmoid 20 float32", sx.log_sigmoid, [20.0], np.float32, mp_log_sigmoid),
]


@pytest.mark.parametrize(("func", "x", "dtype", "mp_func"), [g[1:] for g in GOLDEN], ids=[g[0] for g in GOLDEN])
def test_golden_values_mpmath(func, x, dtype, mp_func):
    x = np.array(x, dtype=dtype)
    with mpmath.workdps(50):
        expected = np.array([float(v) for v in mp_func(x.astype(np.float64).tolist())])
    out = np.atleast_1d(func(x))
    assert out.dtype == dtype
    assert np.all(np.isfinite(out))
    # correctly rounded up to a couple of ulps (the result is rounded once to dtype)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(out.astype(np.float64), expected.astype(dtype), rtol=2 * eps, atol=0)


# --------------------------------------------------------------------------------------
# temperature
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize(("func", "oracle"), ROW_FUNCS[:2], ids=ROW_IDS[:2])
def test_temperature_divides_the_logits(func, oracle, temperature, dtype, rng):
    x = random_logits(rng, (4, 3, 6), dtype=dtype)
    for axis in (1, -1):
        expected = oracle(f64(x) / temperature, axis=axis)
        assert_close(func(x, axis=axis, temperature=temperature), expected, dtype)


def test_temperature_with_float32_max_stays_finite():
    x = np.array([[3e38, -3e38, 0.0, 1e38], [3e38, 3e38, -3e38, 2.9e38]], dtype=np.float32)
    out = sx.softmax(x, temperature=0.5)  # x / 0.5 overflows float32
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    y = np.array([3e38, 2.9e38, 3e38], dtype=np.float32)
    logp = sx.log_softmax(y, temperature=0.5)
    assert np.all(np.isfinite(logp))
    assert_close(logp, sp_log_softmax(f64(y) / 0.5), np.float32)


# Temperatures from a subnormal one (1/T overflows float64) to a huge one (1/T
# is 0 in float32): the kernels multiply by 1/T, the exact path divides by T.
EXTREME_TEMPERATURES = [1e-310, 1e-300, 1e-30, 1e-8, 1.0, 1e30, 1e300]


def shifted_oracle(x, temperature, log):
    """(Log-)softmax of ``(x - max) / T`` in float64, the shift taken first so
    that no temperature overflows the division (scipy on ``x / T`` would)."""
    z = f64(x)
    with np.errstate(over="ignore"):  # (x - max) / T = -inf is the intended limit
        d = (z - z.max(axis=-1, keepdims=True)) / temperature
    return sp_log_softmax(d) if log else sp_softmax(d)


@pytest.mark.parametrize("temperature", EXTREME_TEMPERATURES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_extreme_temperatures_match_the_shifted_oracle(temperature, log, dtype, rng):
    x = random_logits(rng, (5, 7), dtype=dtype)
    x[1, 2] = x[1].max() + 1  # a tie for the max: at T -> 0 the two share the mass
    x[1, 4] = x[1, 2]
    x[2, :3] = -np.inf  # masked classes: -inf * (1/T = 0) would be NaN
    func = sx.log_softmax if log else sx.softmax
    out = func(x, temperature=temperature)
    with np.errstate(over="ignore"):  # log-probabilities below float32's range are -inf there
        expected = shifted_oracle(x, temperature, log).astype(dtype).astype(np.float64)
    assert not np.isnan(out).any()
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 3e-39])
def test_subnormal_temperature_gives_the_one_hot_limit(temperature, dtype):
    """Issue 15: sx.softmax([1., 2.], temperature=1e-310) was [nan, nan] on the kernels."""
    x = np.array([[1.0, 2.0], [2.0, 1.0]], dtype=dtype)
    np.testing.assert_array_equal(sx.softmax(x, temperature=temperature), [[0.0, 1.0], [1.0, 0.0]])
    with np.errstate(over="ignore"):  # -1/T: -inf where it leaves the dtype's range
        expected = (np.array([[-1.0, 0.0], [0.0, -1.0]]) / temperature).astype(dtype)
    np.testing.assert_array_equal(sx.log_softmax(x, temperature=temperature), expected)


# --------------------------------------------------------------------------------------
# where= mask
# --------------------------------------------------------------------------------------


def random_mask(rng, shape):
    """A random boolean mask with at least one kept entry per row (last axis)."""
    mask = rng.random(shape) < 0.6
    mask[..., 0] |= ~mask.any(axis=-1)
    return mask


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_where_equals_the_slice(temperature, dtype, rng):
    x = random_logits(rng, (6, 7), dtype=dtype)
    mask = random_mask(rng, x.shape)
    # what lies under a masked entry must not matter, even NaN or +inf
    junk = np.resize(np.array([np.nan, np.inf, -np.inf, 1e30], dtype=dtype), (~mask).sum())
    x[~mask] = junk
    p = sx.softmax(x, where=mask, temperature=temperature)
    logp = sx.log_softmax(x, where=mask, temperature=temperature)
    lse = sx.logsumexp(x, where=mask)
    assert p.dtype == logp.dtype == lse.dtype == dtype
    for i in range(x.shape[0]):
        kept = f64(x[i, mask[i]])
        assert_close(p[i, mask[i]], sp_softmax(kept / temperature), dtype)
        assert_close(logp[i, mask[i]], sp_log_softmax(kept / temperature), dtype)
        assert_close(lse[i], sp_logsumexp(kept), dtype)
        assert np.all(p[i, ~mask[i]] == 0.0)
        assert np.all(logp[i, ~mask[i]] == -np.inf)


def test_where_along_another_axis(dtype, rng):
    x = random_logits(rng, (7, 4), dtype=dtype)
    mask = random_mask(rng, (4, 7)).T  # at least one kept entry per column
    p = sx.softmax(x, axis=0, where=mask)
    lse = sx.logsumexp(x, axis=0, where=mask)
    for j in range(x.shape[1]):
        kept = f64(x[mask[:, j], j])
        assert_close(p[mask[:, j], j], sp_softmax(kept), dtype)
        assert np.all(p[~mask[:, j], j] == 0.0)
        assert_close(lse[j], sp_logsumexp(kept), dtype)


def test_where_broadcasts_from_the_class_axis(dtype, rng):
    x = random_logits(rng, (5, 6), dtype=dtype)
    mask = np.array([True, False, True, True, False, True])
    p = sx.softmax(x, where=mask)
    assert p.shape == x.shape
    assert_close(p[:, mask], sp_softmax(f64(x[:, mask])), dtype)
    assert np.all(p[:, ~mask] == 0.0)
    assert_close(sx.log_softmax(x, where=mask)[:, mask], sp_log_softmax(f64(x[:, mask])), dtype)
    assert_close(sx.logsumexp(x, where=mask), sp_logsumexp(f64(x[:, mask])), dtype)


def test_where_fully_masked_row(dtype, rng):
    x = random_logits(rng, (3, 5), dtype=dtype)
    mask = np.ones(x.shape, dtype=bool)
    mask[1] = False
    p = sx.softmax(x, where=mask)
    logp = sx.log_softmax(x, where=mask)
    lse = sx.logsumexp(x, where=mask)
    np.testing.assert_array_equal(p[1], 0.0)
    np.testing.assert_array_equal(logp[1], -np.inf)
    assert lse[1] == -np.inf
    rows = [0, 2]
    assert_close(p[rows], sp_softmax(f64(x[rows])), dtype)
    assert_close(logp[rows], sp_log_softmax(f64(x[rows])), dtype)
    assert_close(lse[rows], sp_logsumexp(f64(x[rows])), dtype)


# --------------------------------------------------------------------------------------
# Invariances
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [-1024.0, 3.0, 2.0**20])
def test_shift_invariance(shift, dtype, rng):
    # multiples of 1/8 below 64: x + shift is exact in float32 and float64
    x = (rng.integers(-512, 512, size=(5, 8)) / 8).astype(dtype)
    y = x + dtype(shift)
    np.testing.assert_array_equal(y - dtype(shift), x)  # the shift itself is exact
    assert_close(sx.softmax(y), sx.softmax(x).astype(np.float64), dtype)
    assert_close(sx.log_softmax(y), sx.log_softmax(x).astype(np.float64), dtype)
    assert_close(sx.logsumexp(y), sx.logsumexp(x).astype(np.float64) + shift, dtype)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_rows_sum_to_one_and_lie_in_unit_interval(axis, dtype, rng):
    x = random_logits(rng, (9, 10, 11), scale=8.0, dtype=dtype)
    p = sx.softmax(x, axis=axis)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=axis, dtype=np.float64), 1.0, rtol=0, atol=4 * float(np.finfo(dtype).eps))


def test_log_softmax_is_log_of_softmax(dtype, rng):
    x = random_logits(rng, (8, 12), scale=15.0, dtype=dtype)
    p = sx.softmax(x).astype(np.float64)
    logp = sx.log_softmax(x)
    ok = p > 1e-30  # where log(p) has not lost its precision to underflow
    assert ok.sum() > x.size // 2
    assert_close(logp[ok], np.log(p[ok]), dtype)
    # and log_softmax = x - logsumexp, the definition
    assert_close(logp, f64(x) - f64(sx.logsumexp(x, keepdims=True)), dtype)


def test_sigmoid_symmetries(dtype, rng):
    x = random_logits(rng, (200,), scale=15.0, dtype=dtype)
    s, s_neg = f64(sx.sigmoid(x)), f64(sx.sigmoid(-x))
    np.testing.assert_allclose(s + s_neg, 1.0, rtol=0, atol=2 * float(np.finfo(dtype).eps))
    diff = f64(sx.log_sigmoid(x)) - f64(sx.log_sigmoid(-x))
    np.testing.assert_allclose(diff, f64(x), **TOL[dtype])
    assert np.all((s >= 0) & (s <= 1))


# --------------------------------------------------------------------------------------
# Extreme inputs
# --------------------------------------------------------------------------------------


def test_huge_logits_1e30(dtype):
    x = np.array([[1e30, -1e30, 0.0], [1e30, 1e30, -1e30], [-1e30, -1e30, -1e30]], dtype=dtype)
    assert_close(sx.softmax(x), np.array([[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]), dtype)
    for func, oracle in ROW_FUNCS:
        out = func(x)
        assert np.all(np.isfinite(out))
        assert_close(out, oracle(f64(x)), dtype)


def test_float32_max_logits():
    x = np.array([[3e38, 3e38, -3e38], [3e38, 0.0, 1.0], [-3e38, -3e38, -3e38]], dtype=np.float32)
    assert_close(sx.softmax(x), np.array([[0.5, 0.5, 0], [1, 0, 0], [1 / 3, 1 / 3, 1 / 3]]), np.float32)
    lse = sx.logsumexp(x)
    assert lse.dtype == np.float32
    assert np.all(np.isfinite(lse))
    assert_close(lse, sp_logsumexp(f64(x)), np.float32)


def test_minus_inf_entries_are_masked_classes(dtype, rng):
    x = random_logits(rng, (4, 6), dtype=dtype)
    x[0, 2] = x[2, [0, 5]] = x[3, 1:] = -np.inf
    kept = np.isfinite(x)
    p, logp, lse = sx.softmax(x), sx.log_softmax(x), sx.logsumexp(x)
    np.testing.assert_array_equal(p[~kept], 0.0)
    np.testing.assert_array_equal(logp[~kept], -np.inf)
    for i in range(x.shape[0]):
        row = f64(x[i, kept[i]])
        assert_close(p[i, kept[i]], sp_softmax(row), dtype)
        assert_close(logp[i, kept[i]], sp_log_softmax(row), dtype)
        assert_close(lse[i], sp_logsumexp(row), dtype)
    # same as masking with where=
    assert_close(p, f64(sx.softmax(np.where(kept, x, 0), where=kept)), dtype)


def test_row_of_all_minus_inf(dtype, rng):
    x = random_logits(rng, (3, 4), dtype=dtype)
    x[1] = -np.inf
    p, logp, lse = sx.softmax(x), sx.log_softmax(x), sx.logsumexp(x)
    np.testing.assert_array_equal(p[1], 0.0)
    np.testing.assert_array_equal(logp[1], -np.inf)
    assert lse[1] == -np.inf
    rows = [0, 2]
    assert_close(p[rows], sp_softmax(f64(x[rows])), dtype)
    assert_close(lse[rows], sp_logsumexp(f64(x[rows])), dtype)


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "+inf"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_nan_or_plus_inf_poisons_only_its_row(bad, axis, dtype, rng):
    x = random_logits(rng, (4, 5), dtype=dtype)
    x = np.moveaxis(x, -1, axis).copy()  # the class axis is `axis`; "row" 1 is slice 1 of the other
    xl = np.moveaxis(x, axis, -1)  # view with classes last
    xl[1, 2] = bad
    p = np.moveaxis(sx.softmax(x, axis=axis), axis, -1)
    logp = np.moveaxis(sx.log_softmax(x, axis=axis), axis, -1)
    lse = sx.logsumexp(x, axis=axis)
    assert np.all(np.isnan(p[1])) and np.all(np.isnan(logp[1]))
    if np.isnan(bad):
        assert np.isnan(lse[1])
    else:
        assert lse[1] == np.inf
    good = [0, 2, 3]
    assert_close(p[good], sp_softmax(f64(xl[good])), dtype)
    assert_close(logp[good], sp_log_softmax(f64(xl[good])), dtype)
    assert_close(lse[good], sp_logsumexp(f64(xl[good])), dtype)


def test_logsumexp_of_nan_and_plus_inf_is_nan(dtype):
    x = np.array([[np.nan, np.inf, 0.0], [np.inf, 0.0, 1.0]], dtype=dtype)
    lse = sx.logsumexp(x)
    assert np.isnan(lse[0]) and lse[1] == np.inf


@pytest.mark.parametrize("shape", [(0, 5), (3, 0)])
def test_empty_arrays(shape, dtype):
    x = np.zeros(shape, dtype=dtype)
    for func in (sx.softmax, sx.log_softmax, sx.sigmoid, sx.log_sigmoid):
        out = func(x)
        assert out.shape == shape and out.dtype == dtype
    assert sx.softmax_vjp(x, x).shape == shape
    lse = sx.logsumexp(x)
    assert lse.shape == shape[:1] and lse.dtype == dtype
    np.testing.assert_array_equal(lse, -np.inf)  # the sum of no terms is 0: log 0
    k = shape[1]
    jac = sx.softmax_jacobian(x)
    assert jac.shape == (shape[0], k, k) and jac.dtype == dtype


# --------------------------------------------------------------------------------------
# Jacobian, eq. (13)/(14), and the vector-Jacobian product
# --------------------------------------------------------------------------------------


def test_jacobian_equals_equations_13_14(dtype, rng):
    x = random_logits(rng, (4, 6), dtype=dtype)
    jac = sx.softmax_jacobian(x)
    assert jac.shape == (4, 6, 6)
    assert_close(jac, jacobian_by_equations(sp_softmax(f64(x))), dtype)


def test_jacobian_matches_finite_differences(rng):
    x = random_logits(rng, (3, 5))
    jac = sx.softmax_jacobian(x)
    for n in range(x.shape[0]):
        for i in range(x.shape[1]):
            row = finite_difference_grad(lambda z, i=i: sx.softmax(z)[i], x[n])  # d a_i / d x_j
            np.testing.assert_allclose(jac[n, i], row, rtol=1e-8, atol=1e-10)


def test_jacobian_matches_torch_autograd(dtype, rng):
    x = random_logits(rng, (3, 7), dtype=dtype)
    jac = sx.softmax_jacobian(x)
    for n in range(x.shape[0]):
        expected = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), torch.from_numpy(f64(x[n])))
        assert_close(jac[n], expected.numpy(), dtype)


def test_jacobian_is_symmetric_with_rows_summing_to_zero(dtype, rng):
    x = random_logits(rng, (5, 8), scale=4.0, dtype=dtype)
    jac = f64(sx.softmax_jacobian(x))
    np.testing.assert_array_equal(jac, np.swapaxes(jac, -1, -2))
    np.testing.assert_allclose(jac.sum(axis=-1), 0.0, atol=8 * float(np.finfo(dtype).eps))


def test_jacobian_of_masked_class_is_zero():
    x = np.array([0.5, -np.inf, 1.5, -0.2])
    jac = sx.softmax_jacobian(x)
    np.testing.assert_array_equal(jac[1], 0.0)
    np.testing.assert_array_equal(jac[:, 1], 0.0)
    kept = [0, 2, 3]
    np.testing.assert_allclose(jac[np.ix_(kept, kept)], jacobian_by_equations(sp_softmax(x[kept])), **TOL[np.float64])


@pytest.mark.parametrize(("shape", "axis"), [((2, 5, 3), 1), ((5, 2, 3), 0), ((2, 3, 5), -1)])
def test_jacobian_shape_is_batch_plus_k_k(shape, axis, rng):
    x = random_logits(rng, shape)
    jac = sx.softmax_jacobian(x, axis=axis)
    batch = tuple(s for d, s in enumerate(shape) if d != axis % len(shape))
    assert jac.shape == batch + (5, 5)
    a = np.moveaxis(sp_softmax(x, axis=axis), axis, -1)
    np.testing.assert_allclose(jac, jacobian_by_equations(a), **TOL[np.float64])


def test_jacobian_of_a_million_classes_is_refused_before_allocating():
    """Issue 15: 10^6 classes need 8 TB; the error names the size instead of a MemoryError from NumPy."""
    import tracemalloc

    x = np.zeros(10**6)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            sx.softmax_jacobian(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "softmax_jacobian of 1000000 classes needs 8.0 TB (1000000 x 1000000 float64)" in message
    assert "softmax_vjp" in message and "\n" not in message
    assert peak < 1 << 20  # nothing of the input's size (8 MB), let alone the result's


def test_jacobian_limit_is_physical_memory(monkeypatch, rng):
    from softxent import _validation

    x = random_logits(rng, (2, 100), dtype=np.float32)  # result: 2 x 100 x 100 float32 = 80000 bytes
    monkeypatch.setattr(_validation, "physical_memory", lambda: 79_999)
    with pytest.raises(ValueError, match=r"2 rows of 100 classes needs 80\.0 kB \(2 x 100 x 100 float32\)"):
        sx.softmax_jacobian(x)
    monkeypatch.setattr(_validation, "physical_memory", lambda: 80_000)
    assert sx.softmax_jacobian(x).shape == (2, 100, 100)
    monkeypatch.setattr(_validation, "physical_memory", lambda: None)  # unknown: NumPy decides
    assert sx.softmax_jacobian(x).dtype == np.float32


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_vjp_equals_v_times_jacobian(axis, dtype, rng):
    x = random_logits(rng, (3, 4, 5), dtype=dtype)
    v = random_logits(rng, x.shape, scale=1.0, dtype=dtype)
    out = sx.softmax_vjp(x, v, axis=axis)
    assert out.shape == x.shape
    jac = jacobian_by_equations(np.moveaxis(sp_softmax(f64(x), axis=axis), axis, -1))
    expected = np.einsum("...i,...ij->...j", np.moveaxis(f64(v), axis, -1), jac)
    assert_close(out, np.moveaxis(expected, -1, axis), dtype)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_vjp_matches_torch_autograd(axis, dtype, rng):
    x = random_logits(rng, (4, 3, 6), dtype=dtype)
    v = random_logits(rng, x.shape, scale=1.0, dtype=dtype)
    t = torch.from_numpy(f64(x)).requires_grad_(True)
    torch.softmax(t, dim=axis).backward(torch.from_numpy(f64(v)))
    assert_close(sx.softmax_vjp(x, v, axis=axis), t.grad.numpy(), dtype)


def test_vjp_rejects_v_of_another_shape(rng):
    x = random_logits(rng, (3, 4))
    with pytest.raises(ValueError, match=r"v must have the shape of x"):
        sx.softmax_vjp(x, np.ones((3, 5)))


# --------------------------------------------------------------------------------------
# Hypothesis property tests
# --------------------------------------------------------------------------------------

FLOAT_DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def logits_and_axis(draw, low=-100.0, high=100.0):
    dtype = draw(FLOAT_DTYPES)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7))
    width = np.dtype(dtype).itemsize * 8
    low, high = float(dtype(low)), float(dtype(high))  # bounds exactly representable in dtype
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, width=width)
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return x, axis


@given(logits_and_axis())
def test_property_softmax_is_a_distribution_and_matches_scipy(case):
    x, axis = case
    dtype = x.dtype.type
    p = sx.softmax(x, axis=axis)
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=axis, dtype=np.float64), 1.0, atol=4 * float(np.finfo(dtype).eps))
    assert_close(p, sp_softmax(f64(x), axis=axis), dtype)
    assert_close(sx.log_softmax(x, axis=axis), sp_log_softmax(f64(x), axis=axis), dtype)


@given(logits_and_axis(), st.floats(-1000.0, 1000.0))
def test_property_shift_invariance(case, shift):
    x, axis = case
    x = f64(x)
    y = x + shift  # rounding of x + shift moves a logit by at most ulp(1100) / 2 ~ 1e-13
    tol = dict(rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(sx.softmax(y, axis=axis), sx.softmax(x, axis=axis), **tol)
    np.testing.assert_allclose(sx.log_softmax(y, axis=axis), sx.log_softmax(x, axis=axis), **tol)
    np.testing.assert_allclose(sx.logsumexp(y, axis=axis), sx.logsumexp(x, axis=axis) + shift, **tol)


@given(logits_and_axis())
def test_property_logsumexp_bounds_and_log_softmax(case):
    x, axis = case
    x64 = f64(x)
    lse = f64(sx.logsumexp(x, axis=axis, keepdims=True))
    m = x64.max(axis=axis, keepdims=True)
    k = x.shape[axis]
    slack = 4 * float(np.finfo(x.dtype).eps) * np.maximum(np.abs(m), 1.0)
    assert np.all(lse >= m - slack)
    assert np.all(lse <= m + np.log(k) + slack)
    p = f64(sx.softmax(x64, axis=axis))
    ok = p > 1e-300
    np.testing.assert_allclose(sx.log_softmax(x64, axis=axis)[ok], np.log(p[ok]), rtol=1e-12, atol=1e-12)


@given(logits_and_axis(low=-10.0, high=10.0), st.floats(0.5, 20.0))
def test_property_temperature(case, temperature):
    x, axis = case
    dtype = x.dtype.type
    expected = sp_softmax(f64(x) / temperature, axis=axis)
    assert_close(sx.softmax(x, axis=axis, temperature=temperature), expected, dtype)


@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=2, max_side=10),
        elements=st.floats(-700.0, 700.0, allow_nan=False),
    )
)
def test_property_sigmoid_symmetries(x):
    s = sx.sigmoid(x)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s + sx.sigmoid(-x), 1.0, rtol=0, atol=2 * np.finfo(np.float64).eps)
    ls = sx.log_sigmoid(x)
    assert np.all(ls <= 0)
    np.testing.assert_allclose(ls - sx.log_sigmoid(-x), x, rtol=4e-16, atol=4e-16)
    np.testing.assert_allclose(ls, scipy.special.log_expit(x), rtol=4e-16, atol=1e-300)


@given(logits_and_axis(low=-30.0, high=30.0))
def test_property_jacobian_and_vjp(case):
    x, axis = case
    x = f64(x)
    jac = sx.softmax_jacobian(x, axis=axis)
    np.testing.assert_array_equal(jac, np.swapaxes(jac, -1, -2))
    np.testing.assert_allclose(jac.sum(axis=-1), 0.0, atol=1e-15)
    v = np.cos(np.arange(x.size, dtype=np.float64)).reshape(x.shape)
    expected = np.einsum("...i,...ij->...j", np.moveaxis(v, axis, -1), jac)
    np.testing.assert_allclose(sx.softmax_vjp(x, v, axis=axis), np.moveaxis(expected, -1, axis), rtol=1e-13, atol=1e-15)
