"""The few-class tile's explicit-vector passes (float32, no class weights, no smoothing).

:func:`softxent.kernels._tile_vec._plain_tile_f32` is checked on its own, on
one transposed tile, against a float64 NumPy computation of the same
quantities (loss, log-sum-exp and gradient of each of the 64 rows), and
through the tile kernel against the numba passes it replaces, which still
run for float32 when class weights are given: all-ones weights are the
same math by another implementation. Up to 24 classes the tile kernel
first runs :mod:`softxent.kernels._narrow_vec` (eight rows in registers),
which the same comparison checks. Bounds are the documented ones (8 eps
of float32; see ``tests/test_kernels_few_classes.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="numba is not installed: no kernels to test")
_cpu = pytest.importorskip("softxent.kernels._cpu")
_tile_vec = pytest.importorskip("softxent.kernels._tile_vec")

EPS32 = float(np.finfo(np.float32).eps)
TILE = 64


@numba.njit(cache=False)
def _run_tile(buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special):
    """The vector passes on one tile; whether they ran (float32 only)."""
    _tile_vec.plain_tile(buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special)
    return _tile_vec.vec_tile(buf[0, 0])


def _in_batch(tile_values, base, size, fill):
    """``tile_values`` at rows ``base:base + 64`` of an array of ``size`` filled with ``fill``."""
    out = np.full(size, fill, dtype=np.asarray(tile_values).dtype)
    out[base : base + TILE] = tile_values
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(20261204)


def _tile_oracle(buf, yk, sws, inv_t, grad_scale):
    """Per row r (column r of the tile): loss, lse of z / T, and the gradient
    (softmax - one-hot) * sw / T * grad_scale, in float64; ignored rows (-1)
    give loss 0 and gradient 0."""
    z = buf.astype(np.float64).T * inv_t  # (64, V)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    lse = (m + np.log(s))[:, 0]
    kept = yk >= 0
    safe = np.where(kept, yk, 0)
    loss = np.where(kept, sws * (lse - z[np.arange(TILE), safe]), 0.0)
    grad = e / s
    grad[np.arange(TILE), safe] -= 1.0
    grad *= np.where(kept, sws * inv_t * grad_scale, 0.0)[:, None]
    return loss, lse, grad.T


def _check(got, want, scale_of, k=8):
    got = np.asarray(got, dtype=np.float64)
    bound = k * EPS32 * np.maximum(np.abs(scale_of), 1.0)
    err = np.abs(got - want)
    assert (err <= bound).all(), f"worst error {err.max():.3e} (bound {bound[err.argmax()]:.3e})"


@pytest.mark.parametrize("v", [1, 2, 3, 5, 8, 10, 17, 33, 64])
@pytest.mark.parametrize("inv_t", [1.0, 1 / 0.3, 0.25])
@pytest.mark.parametrize("base", [0, 128])
@pytest.mark.parametrize("has_sw", [True, False])
def test_vector_passes_match_numpy(v, inv_t, base, has_sw, rng):
    """Rows ``base:base + 64`` of the batch's arrays: labels and sample weights
    read there, losses and log-sum-exps written there and nowhere else."""
    buf = (rng.standard_normal((v, TILE)) * 3).astype(np.float32)
    labels = rng.integers(0, v, TILE)
    labels[::9] = -100  # ignored rows, whatever their negative value:
    labels[4] = -(2**40)  # its low 32 bits are 0, a class if truncated
    labels[13] = -1
    sws = rng.uniform(0.0, 2.0, TILE) if has_sw else np.ones(TILE)
    sws[5] = 0.0 if has_sw else 1.0  # weight 0: counts for nothing
    grad_scale = 1 / 203
    size = base + TILE + 64
    losses, lses = np.full(size, np.nan), np.full(size, np.nan)
    special = np.full(TILE, 7, dtype=np.int32)
    want_loss, want_lse, want_grad = _tile_oracle(buf, labels, sws, inv_t, grad_scale)
    sw_arg = _in_batch(sws, base, size, 5.0) if has_sw else np.empty(0)
    args = (_in_batch(labels, base, size, 3), sw_arg, has_sw, base, inv_t, grad_scale, True, losses, lses, special)
    assert _run_tile(buf, *args)
    assert (special == 0).all()
    _check(losses[base : base + TILE], want_loss, want_loss)
    _check(lses[base : base + TILE], want_lse, want_lse)
    outside = np.r_[0:base, base + TILE : size]
    assert np.isnan(losses[outside]).all() and np.isnan(lses[outside]).all()
    _check(buf, want_grad, 0.0)


def test_vector_passes_flag_rows_that_need_care(rng):
    """NaN, +inf and fully masked rows are flagged for the row kernel, and no
    other row is; a masked class and huge finite logits are not special."""
    v = 6
    buf = (rng.standard_normal((v, TILE)) * 3).astype(np.float32)
    buf[2, 3] = np.nan
    buf[:, 4] = np.inf
    buf[:, 7] = -np.inf
    buf[0, 9] = -np.inf  # one masked class: an ordinary row
    buf[:, 10] = np.float32(3e38)  # ties at the top of float32's range
    labels = np.arange(TILE) % v
    labels[9] = 1
    losses, lses, special = np.empty(TILE), np.empty(TILE), np.empty(TILE, dtype=np.int32)
    assert _run_tile(buf, labels, np.empty(0), False, 0, 1.0, 1.0, True, losses, lses, special)
    assert set(np.flatnonzero(special)) == {3, 4, 7}
    assert np.isclose(losses[10], np.log(v), rtol=8 * EPS32)


def test_float64_tiles_are_left_to_the_numba_passes():
    buf = np.zeros((3, TILE))
    losses, lses = np.full(TILE, np.nan), np.full(TILE, np.nan)
    special = np.zeros(TILE, dtype=np.int32)
    labels = np.zeros(TILE, dtype=np.int64)
    assert not _run_tile(buf, labels, np.ones(TILE), True, 0, 1.0, 1.0, True, losses, lses, special)
    assert np.isnan(losses).all() and np.isnan(lses).all() and (buf == 0).all()


@pytest.mark.parametrize("v", [2, 3, 7, 8, 10, 12, 16, 17, 20, 24, 25, 64])
@pytest.mark.parametrize("n", [1, 63, 64, 65, 203])
@pytest.mark.parametrize("with_sw", [True, False])
def test_vector_passes_agree_with_the_numba_passes(v, n, with_sw, rng):
    """Float32 without weights (vector passes: eight rows in registers up to
    24 classes, tiles above, the last rows in a tile) against all-ones class
    weights (the numba passes): the same loss, log-sum-exp and gradient
    within the bounds, extreme rows included (their group of eight goes to
    the tiles, and they to the row kernel, either way)."""
    x = (rng.standard_normal((n, v)) * 3).astype(np.float32)
    labels = rng.integers(0, v, n)
    labels[::7] = -1
    if n > 12:
        x[1, :] = 1e30
        x[2, v // 2] = np.nan
        x[3, :] = -np.inf
        labels[3] = -1
        x[4, :] = -40.0
        x[4, labels[4]] = 40.0  # confident
        x[5, 1 % v :] = -np.inf
        labels[5] = 0
    empty = np.empty(0)
    sw = rng.uniform(0.5, 1.5, n) if with_sw else empty
    out = []
    for weight in (empty, np.ones(v)):
        loss, lse, grad = np.empty(n), np.empty(n), np.empty_like(x)
        _cpu._xent_index_tiles(x, labels, weight, 0.0, sw, 1.0, 1 / n, grad, True, loss, lse, 0, n)
        out.append((loss, lse, grad))
    (loss, lse, grad), (loss_w, lse_w, grad_w) = out
    for a, b in ((loss, loss_w), (lse, lse_w), (grad, grad_w)):
        assert np.array_equal(np.isnan(a), np.isnan(b))
    fin = np.isfinite(loss_w)
    _check(loss[fin], loss_w[fin], loss_w[fin])
    fin = np.isfinite(lse_w)
    _check(lse[fin], lse_w[fin], lse_w[fin])
    fin = np.isfinite(grad_w)
    _check(grad[fin], grad_w[fin], 0.0)
