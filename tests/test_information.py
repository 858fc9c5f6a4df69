"""Entropy, KL divergence and cross-entropy of probability vectors: eq. (3)-(6).

Tests ``entropy``, ``kl_divergence`` and ``cross_entropy`` against independent
oracles:

* scipy.stats.entropy (with and without ``qk``, with ``base``) and
  scipy.special.rel_entr / xlogy, for float32 and float64 input (result dtype
  = input dtype, tolerance from ``TOL``), any axis;
* mpmath at 50 digits for nearly equal distributions and tiny probabilities;
* the conventions 0 log 0 = 0, p log(p / 0) = +inf, and NaN staying in its row;
* identities: D_KL(p||q) = H(p, q) - H(p) >= 0, D_KL(p||p) = 0, H(uniform) = log K,
  0 <= H(p) <= log K (the seed's eq. (3) lacks the minus sign), and
  H(onehot(y), softmax(z)) == softmax_cross_entropy(z, y), also as Hypothesis
  property tests.

Bad arguments (validation errors) are tested in ``test_validation.py``.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import scipy.special
import scipy.stats
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softxent as sx

from conftest import TOL, random_logits

SHAPE = (3, 4, 5)
AXES = [0, 1, 2, -1]
BASES = [None, 2, 10, math.e]


def f64(x):
    return np.asarray(x).astype(np.float64)


def assert_close(actual, expected, dtype):
    """``actual`` has ``dtype`` and matches the float64 ``expected`` within ``TOL[dtype]``."""
    actual = np.asarray(actual)
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {np.dtype(dtype)}"
    np.testing.assert_allclose(actual.astype(np.float64), expected, **TOL[dtype])


def random_distributions(rng, shape, axis=-1, dtype=np.float64, zeros=False):
    """Dirichlet(1) distributions along ``axis``; with ``zeros``, some entries are exactly 0."""
    k = shape[axis]
    batch = tuple(s for d, s in enumerate(shape) if d != axis % len(shape))
    p = rng.dirichlet(np.ones(k), size=batch)
    if zeros:
        p[rng.random(p.shape) < 0.4] = 0.0
        p[..., 0] += p.sum(axis=-1) == 0  # keep every row a distribution
        p /= p.sum(axis=-1, keepdims=True)
    return np.moveaxis(p, -1, axis).astype(dtype)


def log_base(base):
    return 1.0 if base is None else math.log(base)


def xent_oracle(p, q, axis=-1, base=None):
    """-sum p log q with xlogy's 0 log 0 = 0."""
    return -scipy.special.xlogy(f64(p), f64(q)).sum(axis=axis) / log_base(base)


def kl_oracle(p, q, axis=-1, base=None):
    return scipy.special.rel_entr(f64(p), f64(q)).sum(axis=axis) / log_base(base)


def entropy_oracle(p, axis=-1, base=None):
    return -scipy.special.xlogy(f64(p), f64(p)).sum(axis=axis) / log_base(base)


def mp_kl(p, q):
    """D_KL of the exact values of two float arrays (1-D), at the current mpmath precision."""
    return mpmath.fsum(mpmath.mpf(a) * mpmath.log(mpmath.mpf(a) / mpmath.mpf(b)) for a, b in zip(p, q) if a > 0)


def mp_xent(p, q):
    return -mpmath.fsum(mpmath.mpf(a) * mpmath.log(mpmath.mpf(b)) for a, b in zip(p, q) if a > 0)


def mp_entropy(p):
    return mp_xent(p, p)


# --------------------------------------------------------------------------------------
# scipy oracles, any axis, any base
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("axis", AXES)
def test_entropy_matches_scipy(axis, base, dtype, rng):
    p = random_distributions(rng, SHAPE, axis, dtype)
    out = sx.entropy(p, axis=axis, base=base)
    assert out.shape == scipy.stats.entropy(f64(p), axis=axis).shape
    assert_close(out, scipy.stats.entropy(f64(p), base=base, axis=axis), dtype)
    assert_close(out, entropy_oracle(p, axis, base), dtype)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("axis", AXES)
def test_kl_divergence_matches_scipy(axis, base, dtype, rng):
    p = random_distributions(rng, SHAPE, axis, dtype)
    q = random_distributions(rng, SHAPE, axis, dtype)
    out = sx.kl_divergence(p, q, axis=axis, base=base)
    assert_close(out, scipy.stats.entropy(f64(p), f64(q), base=base, axis=axis), dtype)
    assert_close(out, kl_oracle(p, q, axis, base), dtype)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("axis", AXES)
def test_cross_entropy_matches_scipy(axis, base, dtype, rng):
    p = random_distributions(rng, SHAPE, axis, dtype)
    q = random_distributions(rng, SHAPE, axis, dtype)
    out = sx.cross_entropy(p, q, axis=axis, base=base)
    assert_close(out, xent_oracle(p, q, axis, base), dtype)
    # H(p, q) = H(p) + D_KL(p || q), both terms from scipy.stats.entropy
    expected = scipy.stats.entropy(f64(p), base=base, axis=axis) + scipy.stats.entropy(
        f64(p), f64(q), base=base, axis=axis
    )
    assert_close(out, expected, dtype)


def test_one_dimensional_input_gives_a_scalar(dtype):
    p = np.array([0.2, 0.3, 0.5], dtype=dtype)
    q = np.array([0.6, 0.3, 0.1], dtype=dtype)
    for out, expected in [
        (sx.entropy(p), entropy_oracle(p)),
        (sx.kl_divergence(p, q), kl_oracle(p, q)),
        (sx.cross_entropy(p, q), xent_oracle(p, q)),
    ]:
        assert np.ndim(out) == 0
        assert_close(out, expected, dtype)


# --------------------------------------------------------------------------------------
# 0 log 0 = 0 and p log(p / 0) = +inf
# --------------------------------------------------------------------------------------


def test_one_hot_has_zero_entropy(dtype):
    h = sx.entropy(np.eye(5, dtype=dtype))
    assert h.dtype == dtype
    np.testing.assert_array_equal(h, 0.0)
    assert not np.any(np.signbit(h)), "entropy of a one-hot row is +0.0, not -0.0"
    np.testing.assert_array_equal(sx.entropy(np.eye(3, dtype=np.int64)), 0.0)  # integers: float64


def test_zeros_in_p_contribute_nothing(dtype, rng):
    p = random_distributions(rng, (6, 7), dtype=dtype, zeros=True)
    q = random_distributions(rng, (6, 7), dtype=dtype)
    assert (p == 0).any()
    assert_close(sx.entropy(p), scipy.stats.entropy(f64(p), axis=-1), dtype)
    assert_close(sx.kl_divergence(p, q), scipy.stats.entropy(f64(p), f64(q), axis=-1), dtype)
    assert_close(sx.cross_entropy(p, q), xent_oracle(p, q), dtype)
    # removing the zero classes changes nothing
    for i in range(p.shape[0]):
        keep = p[i] > 0
        assert_close(sx.entropy(p[i]), entropy_oracle(p[i, keep]), dtype)


def test_q_zero_where_p_positive_is_infinite(dtype):
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]], dtype=dtype)
    q = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], dtype=dtype)
    kl, xent = sx.kl_divergence(p, q), sx.cross_entropy(p, q)
    assert kl.dtype == xent.dtype == dtype
    np.testing.assert_array_equal(kl, [np.inf, 0.0, np.inf])
    np.testing.assert_array_equal(xent, [np.inf, 0.0, np.inf])


def test_p_zero_contributes_zero_even_where_q_is_zero(dtype):
    p = np.array([[0.5, 0.5, 0.0], [0.0, 0.3, 0.7], [0.0, 1.0, 0.0]], dtype=dtype)
    q = np.array([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0]], dtype=dtype)
    kl, xent = sx.kl_divergence(p, q), sx.cross_entropy(p, q)
    assert np.all(np.isfinite(kl)) and np.all(np.isfinite(xent))
    assert_close(kl, kl_oracle(p, q), dtype)
    assert_close(xent, xent_oracle(p, q), dtype)
    assert kl[2] == 0.0 and xent[2] == 0.0


# --------------------------------------------------------------------------------------
# Identities
# --------------------------------------------------------------------------------------


def test_kl_of_a_distribution_with_itself_is_zero(dtype, rng):
    p = random_distributions(rng, (8, 9), dtype=dtype, zeros=True)
    kl = sx.kl_divergence(p, p)
    assert kl.dtype == dtype
    np.testing.assert_array_equal(kl, 0.0)


@pytest.mark.parametrize("k", [1, 2, 3, 7, 1000])
def test_uniform_distribution_has_entropy_log_k(k, dtype):
    u = np.full(k, 1.0 / k, dtype=dtype)
    assert_close(sx.entropy(u), math.log(k), dtype)
    assert_close(sx.entropy(u, base=2), math.log2(k), dtype)
    assert_close(sx.entropy(u, base=10), math.log10(k), dtype)


def test_entropy_is_non_negative_unlike_the_seed_eq_3(dtype, rng):
    # The seed prints eq. (3) as sum p log p, which is <= 0; H(p) = -sum p log p >= 0.
    p = random_distributions(rng, (20, 6), dtype=dtype)
    h = sx.entropy(p)
    seed_eq3 = scipy.special.xlogy(f64(p), f64(p)).sum(axis=-1)
    assert np.all(h > 0)
    assert np.all(seed_eq3 < 0)
    assert_close(h, -seed_eq3, dtype)
    assert sx.entropy([0.5, 0.5]) == pytest.approx(math.log(2), rel=1e-15)


def test_cross_entropy_of_one_hot_and_softmax_is_the_loss(dtype, rng):
    z = random_logits(rng, (10, 6), dtype=dtype)
    y = rng.integers(0, 6, size=10)
    onehot = np.eye(6, dtype=dtype)[y]
    out = sx.cross_entropy(onehot, sx.softmax(z))
    loss = sx.softmax_cross_entropy(z, y, reduction="none")
    assert out.dtype == loss.dtype == dtype
    np.testing.assert_allclose(f64(out), f64(loss), **TOL[dtype])


# --------------------------------------------------------------------------------------
# Precision: mpmath at 50 digits
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "perturbation"),
    [(np.float64, 1e-10), (np.float64, 1e-5), (np.float32, 1e-3)],
    ids=["float64-1e-10", "float64-1e-5", "float32-1e-3"],
)
@pytest.mark.parametrize("k", [3, 50])
def test_kl_of_nearly_equal_distributions_mpmath(k, dtype, perturbation, rng):
    p = rng.dirichlet(np.ones(k))
    q = p * (1.0 + perturbation * rng.uniform(-1, 1, k))
    p, q = (p / p.sum()).astype(dtype), (q / q.sum()).astype(dtype)
    with mpmath.workdps(50):
        exact = max(float(mp_kl(f64(p), f64(q))), 0.0)  # of the exact input values
    out = sx.kl_divergence(p, q)
    assert out.dtype == dtype
    # float64 arithmetic (a few eps absolute), rounded once to dtype
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(float(out), exact, rtol=2 * eps, atol=8 * float(np.finfo(np.float64).eps))


TINY_CASES = [
    # (id, p, q)
    ("q = 1e-300", [0.5, 0.5], [1.0, 1e-300]),
    ("q subnormal 1e-320", [0.5, 0.5], [1.0, 1e-320]),
    ("q = 5e-324", [0.25, 0.75], [1.0, 5e-324]),
    ("p = 1e-300", [1e-300, 1.0], [0.5, 0.5]),
    ("p, q tiny", [1e-300, 1.0], [1e-310, 1.0]),
    ("p tiny, q tinier", [1e-200, 1.0 - 1e-200, 0.0], [1e-300, 0.25, 0.75]),
]


@pytest.mark.parametrize(("p", "q"), [c[1:] for c in TINY_CASES], ids=[c[0] for c in TINY_CASES])
def test_tiny_probabilities_mpmath(p, q):
    p, q = np.array(p), np.array(q)
    with mpmath.workdps(50):
        expected = {
            "kl": float(mp_kl(p, q)),
            "xent": float(mp_xent(p, q)),
            "entropy": float(mp_entropy(p)),
        }
    got = {"kl": sx.kl_divergence(p, q), "xent": sx.cross_entropy(p, q), "entropy": sx.entropy(p)}
    for name, value in got.items():
        assert np.isfinite(value), name
        np.testing.assert_allclose(value, expected[name], rtol=4 * np.finfo(np.float64).eps, atol=0, err_msg=name)


# --------------------------------------------------------------------------------------
# NaN stays in its row
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["p", "q"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_nan_propagates_to_its_row_only(where, axis, dtype, rng):
    shape = (4, 5) if axis == -1 else (5, 4)
    p = random_distributions(rng, shape, axis, dtype)
    q = random_distributions(rng, shape, axis, dtype)
    bad = (1, 2) if axis == -1 else (2, 1)  # row / column 1
    (p if where == "p" else q)[bad] = np.nan
    good = [0, 2, 3]
    outs = {
        "kl": (sx.kl_divergence(p, q, axis=axis), kl_oracle(p, q, axis)),
        "xent": (sx.cross_entropy(p, q, axis=axis), xent_oracle(p, q, axis)),
    }
    if where == "p":
        outs["entropy"] = (sx.entropy(p, axis=axis), entropy_oracle(p, axis))
    for name, (out, expected) in outs.items():
        assert np.isnan(out[1]), name
        assert not np.isnan(out[good]).any(), name
        assert_close(out[good], expected[good], dtype)


# --------------------------------------------------------------------------------------
# Hypothesis property tests
# --------------------------------------------------------------------------------------


@st.composite
def distribution_pairs(draw):
    """(p, q) of shape (N, K): p may hold zeros, q is strictly positive."""
    n = draw(st.integers(1, 4))
    k = draw(st.integers(1, 12))
    p = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(0.0, 10.0)))
    q = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(1e-3, 10.0)))
    assume(np.all(p.sum(axis=-1) > 1e-3))
    return p / p.sum(axis=-1, keepdims=True), q / q.sum(axis=-1, keepdims=True)


@given(distribution_pairs())
def test_property_kl_is_cross_entropy_minus_entropy(pq):
    p, q = pq
    kl = sx.kl_divergence(p, q)
    assert np.all(kl >= 0)
    np.testing.assert_allclose(kl, sx.cross_entropy(p, q) - sx.entropy(p), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(kl, kl_oracle(p, q), rtol=1e-12, atol=1e-13)


@given(distribution_pairs())
def test_property_entropy_between_zero_and_log_k(pq):
    p, _ = pq
    h = sx.entropy(p)
    k = p.shape[-1]
    assert np.all(h >= 0)
    assert np.all(h <= math.log(k) + 1e-13)
    np.testing.assert_allclose(sx.entropy(p, base=2), h / math.log(2), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(h, entropy_oracle(p), rtol=1e-12, atol=1e-14)


@given(distribution_pairs())
def test_property_gibbs_inequality_cross_entropy_at_least_entropy(pq):
    p, q = pq
    assert np.all(sx.cross_entropy(p, q) >= sx.entropy(p) - 1e-13)
    np.testing.assert_array_equal(sx.kl_divergence(p, p), 0.0)


@pytest.mark.parametrize(
    "func",
    [sx.entropy, lambda p: sx.kl_divergence(p, p), lambda p: sx.cross_entropy(p, p)],
    ids=["entropy", "kl_divergence", "cross_entropy"],
)
def test_empty_batch_is_empty_but_empty_distributions_are_refused(func):
    """No rows: an empty result. Rows of no entries sum to 0, so they are not distributions."""
    assert func(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match=r"no entries along that axis \(shape \(2, 0\)\)"):
        func(np.zeros((2, 0)))
