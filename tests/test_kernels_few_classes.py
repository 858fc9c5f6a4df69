"""The few-class CPU paths of softmax cross-entropy against the exact NumPy oracle.

Integer labels with few classes run on their own kernels (see
:mod:`softxent.kernels._short_rows`): V <= 64 through tiles of rows
transposed by 8x8 blocks in registers (float32, V >= 8) or by loops
specialised for each V < 8, and 64 < V <= 256 (without label smoothing) by
groups of rows. Each is compared here with the float64 NumPy path
(``SOFTXENT_REFERENCE=1`` on the logits cast to float64), for every class
count around the kernels' edges (V = 7, 8, 9, 63, 64, 65, 256, 257), row
counts around the tile and group sizes, every option, and extreme inputs
(+-1e30, -inf masks, NaN rows, ignored rows). Bounds are the documented
ones (``tests/test_kernels.py``), written as multiples of the dtype's eps:
float32 loss 8 eps relative (9.5e-7 <= 1e-6), gradient 8 eps absolute;
float64 loss and gradient 450 eps (1e-13).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import softxent as sx
from softxent import kernels

from conftest import DTYPES

numba = pytest.importorskip("numba", reason="numba is not installed: no kernels to test")
_cpu = pytest.importorskip("softxent.kernels._cpu")
_short = pytest.importorskip("softxent.kernels._short_rows")

DTYPE_IDS = [np.dtype(d).name for d in DTYPES]
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)

# The documented bounds as eps multiples: (loss relative, gradient absolute).
BOUND_EPS = {np.dtype(np.float32): (8, 8), np.dtype(np.float64): (450, 450)}

# Class counts at every edge: the specialised short rows (1-7), the 8x8
# blocks (8, 9: one overlapping block, 16, 17, ...), the tile limit (64),
# the row groups (65-256) and the row kernel beyond (257).
TILE_V = [1, 2, 3, 5, 7, 8, 9, 10, 15, 16, 17, 20, 33, 63, 64]
GROUP_V = [65, 100, 128, 256]
ALL_V = TILE_V + GROUP_V + [257]
# Rows around the tile (64), the 8-row blocks and the groups (16).
ROWS = [1, 7, 8, 9, 17, 63, 64, 65, 130]


@pytest.fixture(autouse=True)
def kernel_path(monkeypatch):
    monkeypatch.delenv("SOFTXENT_REFERENCE", raising=False)
    for dt in DTYPES:
        assert kernels.cpu(np.dtype(dt)) is not None, "numba is importable but the kernels are off"


@pytest.fixture
def oracle(monkeypatch):
    """``oracle(fn, logits, ...)``: ``fn`` on the exact NumPy path, logits in float64."""

    def call(fn, logits, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setenv("SOFTXENT_REFERENCE", "1")
            return fn(np.asarray(logits).astype(np.float64), *args, **kwargs)

    return call


@pytest.fixture
def rng():
    return np.random.default_rng(20261203)


def _within(actual, expected, bound, what):
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NaN at other places"
    assert np.array_equal(np.where(np.isinf(a), np.sign(a), 0), np.where(np.isinf(e), np.sign(e), 0)), (
        f"{what}: infinities differ"
    )
    fin = np.isfinite(e)
    err = np.where(fin, np.abs(np.where(fin, a, 0) - np.where(fin, e, 0)), 0.0)
    b = np.broadcast_to(bound, e.shape)
    bad = err > b
    assert not bad.any(), f"{what}: {int(bad.sum())} of {e.size} out of bounds, worst |error| {err.max():.3e}"


def assert_matches(got, want, dtype):
    """(loss, grad) against the oracle's, within the documented bounds."""
    eps = float(np.finfo(dtype).eps)
    k_loss, k_grad = BOUND_EPS[np.dtype(dtype)]
    loss, grad = got
    w_loss, w_grad = want
    w = np.asarray(w_loss, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scale = np.where(np.isfinite(w), np.abs(w), 0.0)
    _within(loss, w_loss, k_loss * eps * np.maximum(scale, 1.0), "loss")
    _within(grad, w_grad, k_grad * eps, "gradient")


def logits(rng, n, v, dtype, scale=3.0):
    return (rng.standard_normal((n, v)) * scale).astype(dtype)


def run_both(oracle, x, labels, **kw):
    got = sx.softmax_cross_entropy_with_grad(x, labels, reduction="none", **kw)
    want = oracle(sx.softmax_cross_entropy_with_grad, x, labels, reduction="none", **kw)
    return got, want


# --------------------------------------------------------------------------- the transposes


@pytest.mark.parametrize("v", [1, 3, 7, 8, 9, 10, 17, 24, 64, 100])
@pytest.mark.parametrize("nr", [1, 7, 8, 9, 15, 16, 63, 64])
@dtypes
def test_tile_copies_are_exact_transposes(v, nr, dtype):
    """_copy_in / _copy_out move every element of the tile's rows and touch
    nothing else: the rows around the tile and the buffer's other lanes keep
    their sentinels."""

    @numba.njit
    def roundtrip(z, buf, g, base, nr):
        _short._copy_in(z, buf, base, nr)
        _short._copy_out(buf, g, base, nr)

    n = 64 + 8
    z = np.arange(n * v, dtype=dtype).reshape(n, v)
    buf = np.full((v, 64), -1.0, dtype=dtype)
    g = np.full((n, v), -2.0, dtype=dtype)
    base = 3
    roundtrip(z, buf, g, base, nr)
    np.testing.assert_array_equal(buf[:, :nr], z[base : base + nr].T)
    assert (buf[:, nr:] == -1.0).all(), "lanes beyond the tile's rows were written"
    np.testing.assert_array_equal(g[base : base + nr], z[base : base + nr])
    assert (g[:base] == -2.0).all() and (g[base + nr :] == -2.0).all(), "rows outside the tile were written"


# --------------------------------------------------------------------------- against the oracle


@dtypes
@pytest.mark.parametrize("v", ALL_V)
@pytest.mark.parametrize("n", ROWS)
def test_plain_rows_match_oracle(n, v, dtype, rng, oracle):
    x = logits(rng, n, v, dtype)
    labels = rng.integers(0, v, n)
    assert_matches(*run_both(oracle, x, labels), dtype)


OPTIONS = {
    "weight": lambda rng, v, n: dict(weight=rng.uniform(0.0, 2.0, v)),
    "smoothing": lambda rng, v, n: dict(label_smoothing=0.1),
    "weight_smoothing": lambda rng, v, n: dict(weight=rng.uniform(0.1, 2.0, v), label_smoothing=0.2),
    "sample_weight": lambda rng, v, n: dict(sample_weight=rng.uniform(0.0, 3.0, n)),
    "temperature": lambda rng, v, n: dict(temperature=0.3),
    "hot": lambda rng, v, n: dict(temperature=4.0, sample_weight=rng.uniform(0.5, 1.5, n)),
}


@dtypes
@pytest.mark.parametrize("v", [3, 8, 10, 20, 64, 100, 256])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_options_match_oracle(option, v, dtype, rng, oracle):
    n = 203  # several tiles and groups, the last ones partial
    x = logits(rng, n, v, dtype)
    labels = rng.integers(0, v, n)
    labels[::7] = -100  # ignored rows among the others
    kw = OPTIONS[option](rng, v, n)
    assert_matches(*run_both(oracle, x, labels, **kw), dtype)


def _extreme(rng, n, v, dtype):
    """Rows of every kind: huge logits, -inf masks, NaN, fully masked and ignored."""
    x = logits(rng, n, v, dtype)
    labels = rng.integers(0, v, n)
    x[1, :] = 1e30
    x[2, 0] = 1e30
    x[3, :] = -1e30
    x[3, v // 2] = 1e30
    x[4, 1 % v :] = -np.inf  # all but class 0 masked
    labels[4] = 0
    x[5, v - 1] = np.nan  # NaN in, NaN out
    x[6, :] = -np.inf  # fully masked, ignored
    labels[6] = -100
    x[7, 0] = np.nan  # NaN, ignored: zeros
    labels[7] = -100
    x[8, :] = np.inf  # +inf: NaN row
    x[9, :] = 40.0  # ties at the top
    x[10, :] = -40.0
    x[10, labels[10]] = 40.0  # confident: a tiny loss that must keep its digits
    if v > 2:
        x[11, 2] = -np.inf  # one masked class
        labels[11] = (labels[11] + 1) % v if labels[11] == 2 else labels[11]
    x[12, :] = np.float32(-3.0e38) if dtype == np.float32 else -1.0e300
    return x, labels


@dtypes
@pytest.mark.parametrize("v", [2, 3, 8, 9, 10, 17, 64, 65, 100, 256])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1}, {"temperature": 0.5}], ids=["plain", "smooth", "t"])
def test_extreme_rows_match_oracle(kw, v, dtype, rng, oracle):
    n = 77  # the extreme rows sit in the first block of eight, the first tile and group
    x, labels = _extreme(rng, n, v, dtype)
    assert_matches(*run_both(oracle, x, labels, **kw), dtype)


@dtypes
@pytest.mark.parametrize("v", [3, 10, 20, 100])
def test_confident_row_keeps_its_tiny_loss(v, dtype):
    """Logits [40, -40, ...] with label 0: loss ~ (V - 1) e^-80, all its digits."""
    x = np.full((9, v), -40.0, dtype=dtype)
    x[:, 0] = 40.0
    labels = np.zeros(9, dtype=np.int64)
    loss, grad = sx.softmax_cross_entropy_with_grad(x, labels, reduction="none")
    want = math.log1p((v - 1) * math.exp(-80.0))
    np.testing.assert_allclose(loss, want, rtol=8 * float(np.finfo(dtype).eps))
    np.testing.assert_allclose(grad[:, 0], -want, rtol=16 * float(np.finfo(dtype).eps))


# --------------------------------------------------------------------------- layouts and threads


@dtypes
@pytest.mark.parametrize("v", [3, 10, 20, 100])
def test_inplace_and_out_equal_the_plain_call(v, dtype, rng):
    n = 1000
    x = logits(rng, n, v, dtype)
    x[5, 1] = np.nan
    x[6, :] = -np.inf
    labels = rng.integers(0, v, n)
    labels[6] = -100
    loss, grad = sx.softmax_cross_entropy_with_grad(x, labels, reduction="none")
    out = np.empty_like(x)
    loss_o, grad_o = sx.softmax_cross_entropy_with_grad(x, labels, reduction="none", out=out)
    work = x.copy()
    loss_i, grad_i = sx.softmax_cross_entropy_with_grad(work, labels, reduction="none", inplace=True)
    assert grad_o is out and grad_i is work
    for a, b in ((loss_o, loss), (grad_o, grad), (loss_i, loss), (grad_i, grad)):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def restore_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads here")
    saved = numba.get_num_threads()
    yield
    numba.set_num_threads(saved)


@dtypes
@pytest.mark.parametrize("v", [3, 10, 20, 100])
@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "weight": "w"}], ids=["plain", "options"])
def test_thread_count_does_not_change_a_bit(kw, v, dtype, rng, restore_threads):
    n = 60011  # several blocks (the parallel path), a partial last tile
    assert math.ceil(n / _cpu._rows_per_block(n, v)) >= 4
    x = logits(rng, n, v, dtype)
    x[5, 0] = np.nan
    labels = rng.integers(0, v, n)
    labels[::11] = -100
    if "weight" in kw:
        kw = dict(kw, weight=rng.uniform(0.1, 2.0, v))
    results = []
    for threads in (1, 2, 1, 2):
        numba.set_num_threads(threads)
        results.append(sx.softmax_cross_entropy_with_grad(x, labels, reduction="none", **kw))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@dtypes
@pytest.mark.parametrize("v", [3, 10, 64, 100])
def test_tile_kernel_on_a_row_range(v, dtype, rng):
    """_xent_index_tiles (called directly by the estimators' dense head) on a
    sub-range of rows writes exactly those rows, for any V."""
    n = 150
    x = logits(rng, n, v, dtype)
    labels = rng.integers(0, v, n)
    empty = np.empty(0)
    loss = np.full(n, -7.0)
    lse = np.full(n, -7.0)
    grad = np.full_like(x, -7.0)
    lo, hi = 13, 140
    _cpu._xent_index_tiles(x, labels, empty, 0.0, empty, 1.0, 1.0, grad, True, loss, lse, lo, hi)
    loss_all, grad_all = sx.softmax_cross_entropy_with_grad(x, labels, reduction="none")
    np.testing.assert_allclose(loss[lo:hi], loss_all[lo:hi], rtol=8 * float(np.finfo(dtype).eps))
    np.testing.assert_allclose(grad[lo:hi], grad_all[lo:hi], atol=8 * float(np.finfo(dtype).eps))
    assert (loss[:lo] == -7.0).all() and (loss[hi:] == -7.0).all()
    assert (grad[:lo] == -7.0).all() and (grad[hi:] == -7.0).all()
