"""softxent._rowstats: the state of an online softmax over parts of a row, and its merge.

Oracle: the whole row in float64 (log-sum-exp, the label's loss lse - z_y and
the label-smoothing sum sum_c w_c (lse - z_c), written directly); the
merged states of any split of the classes must give the same numbers.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from softxent import _rowstats as rs

TOL = dict(rtol=1e-12, atol=1e-12)


def whole_row(z, y, w):
    """lse, lse - z_y and sum_c w_c (lse - z_c) of each row, directly (weights 0 left out)."""
    with np.errstate(all="ignore"):
        mx = z.max(axis=1)
        shift = np.where(np.isfinite(mx), mx, 0.0)
        lse = shift + np.log(np.exp(z - shift[:, None]).sum(axis=1))
        label = lse - z[np.arange(len(y)), y]
        smooth = np.where(w > 0, w * (lse[:, None] - z), 0.0).sum(axis=1)
    return lse, label, smooth


def merged(z, y, w, cuts, order=None):
    """The merged state of the parts [cuts[i], cuts[i+1]) of the columns (in ``order``, default left to right)."""
    bounds = [0, *cuts, z.shape[1]]
    with np.errstate(all="ignore"):  # -inf, 0 * -inf where masked: the values are what is checked
        parts = []
        for c0, c1 in zip(bounds[:-1], bounds[1:]):
            col = np.where((y >= c0) & (y < c1), y - c0, -1)
            parts.append(rs.of_part(z[:, c0:c1], col, np, w[c0:c1]))
        if order is not None:
            parts = [parts[i] for i in order]
        return functools.reduce(lambda a, b: rs.merge(a, b, np), parts)


def terms(st):
    with np.errstate(all="ignore"):
        return rs.lse(st, np), rs.label_loss(st, np), rs.smooth_loss(st, np)


def problem(seed=0, n=6, v=17, scale=4.0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, v)) * scale
    y = rng.integers(0, v, n)
    w = rng.random(v) + 0.2
    w[3] = 0.0
    return z, y, w


SPLITS = {
    "one part": [],
    "empty parts": [0, 0, 5, 5, 17],
    "single classes": list(range(1, 17)),
    "uneven": [2, 3, 9],
    "random": sorted(np.random.default_rng(1).integers(0, 18, 6).tolist()),
}


@pytest.mark.parametrize("split", list(SPLITS), ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_split_gives_the_whole_row(split, seed):
    z, y, w = problem(seed)
    expect = whole_row(z, y, w)
    for got, exp in zip(terms(merged(z, y, w, SPLITS[split])), expect):
        np.testing.assert_allclose(got, exp, **TOL)
    # and the same as the state of the whole row at once
    for got, exp in zip(terms(merged(z, y, w, SPLITS[split])), terms(merged(z, y, w, []))):
        np.testing.assert_allclose(got, exp, **TOL)


def test_parts_masked_everywhere():
    """A part that is -inf in a row (weight 0 there, so the smoothing sum stays finite), and a fully masked row."""
    z, y, w = problem(3)
    z[:, 5:9] = -np.inf
    w[5:9] = 0.0
    y = np.where((y >= 5) & (y < 9), 0, y)
    z[2] = -np.inf
    z[2, 12] = 1.5  # one class left in row 2
    y[2] = 12
    for cuts in ([5, 9], [4, 5, 9, 12], [9]):
        st = merged(z, y, w, cuts)
        for got, exp in zip(terms(st), whole_row(z, y, w)):
            np.testing.assert_allclose(got, exp, **TOL)
    z[4] = -np.inf
    st = merged(z, y, w, [5, 9])
    assert st.lead[4] + st.rest[4] == 0 and terms(st)[0][4] == -np.inf
    # A masked class of positive weight makes the smoothing sum infinite, as for the whole row.
    w2 = np.ones_like(w)
    assert np.isposinf(terms(merged(z, y, w2, [5, 9]))[2][0])


def test_nan_stays_in_its_row():
    z, y, w = problem(4)
    z[1, 7] = np.nan
    expect = whole_row(z, y, w)
    for cuts in ([], [7], [8], [3, 7, 8]):
        got = terms(merged(z, y, w, cuts))
        for g, e in zip(got, expect):
            assert np.isnan(g[1])
            np.testing.assert_allclose(np.delete(g, 1), np.delete(e, 1), **TOL)


def test_large_logits_use_shifted_differences():
    """Logits near 1e4: the terms equal those of the unshifted row (no lse - z of two large numbers)."""
    z, y, w = problem(5)
    base = terms(merged(z, y, w, [4, 11]))
    moved = terms(merged(z + 1e4, y, w, [4, 11]))
    np.testing.assert_allclose(moved[0], base[0] + 1e4, rtol=1e-15, atol=0)
    np.testing.assert_allclose(moved[1], base[1], **TOL)
    np.testing.assert_allclose(moved[2], base[2], rtol=1e-12, atol=1e-9)


def test_confident_row_keeps_its_small_terms():
    """z = 30 at the label, 0 elsewhere: lse - z_y = log1p(12 e^-30), about 1e-12, to full precision."""
    z = np.zeros((1, 13))
    z[0, 7] = 30.0
    y, w = np.array([7]), np.ones(13)
    exact = math.log1p(12.0 * math.exp(-30.0))
    for cuts in ([], [7], [8], [3, 7, 8, 10]):
        st = merged(z, y, w, cuts)
        nll = rs.label_loss(st, np)[0]
        assert nll == pytest.approx(exact, rel=1e-14)
        assert -np.expm1(-nll) == pytest.approx(-math.expm1(-exact), rel=1e-13)  # the label's gradient entry


def test_merge_is_commutative_and_associative():
    z, y, w = problem(6, n=8)
    cuts = [4, 9]
    ref = terms(merged(z, y, w, cuts))
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]):
        for got, exp in zip(terms(merged(z, y, w, cuts, order)), ref):
            np.testing.assert_allclose(got, exp, rtol=1e-14, atol=1e-14)
    bounds = [0, *cuts, 17]
    a, b, c = (
        rs.of_part(z[:, c0:c1], np.where((y >= c0) & (y < c1), y - c0, -1), np, w[c0:c1])
        for c0, c1 in zip(bounds[:-1], bounds[1:])
    )
    left = rs.merge(rs.merge(a, b, np), c, np)
    right = rs.merge(a, rs.merge(b, c, np), np)
    for f, g in zip(left, right):
        np.testing.assert_allclose(f, g, rtol=1e-14, atol=1e-14)


def test_empty_part_is_the_identity():
    z, y, w = problem(7)
    a = rs.of_part(z, y, np, w)
    e = rs.of_part(z[:, :0], np.full_like(y, -1), np, w[:0])
    for f, g in zip(rs.merge(a, e, np), a):
        np.testing.assert_array_equal(f, g)
    for f, g in zip(rs.merge(e, a, np), a):
        np.testing.assert_array_equal(f, g)


def test_torch_namespace_and_the_in_place_state():
    """The same algebra on tensors; softxent.torch.distributed's in-place state equals the reference."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torch.distributed")
    from softxent.torch.distributed import _local_state

    z, y, w = problem(8)
    z[0, 2] = -np.inf
    zt, yt, wt = torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(w)
    for c0, c1 in ((0, 6), (6, 17)):
        col = torch.where((yt >= c0) & (yt < c1), yt - c0, -1)
        ref = rs.of_part(z[:, c0:c1], col.numpy(), np, w[c0:c1])
        generic = rs.of_part(zt[:, c0:c1], col, torch, wt[c0:c1])
        part = zt[:, c0:c1].clone()
        in_place, _ = _local_state(part, part, col, wt[c0:c1], smooth=True)
        for st in (generic, in_place):
            for got, exp in zip(terms_torch(st, torch), terms(ref)):
                np.testing.assert_allclose(got.numpy(), exp, **TOL)
    st = rs.merge(
        _local_state(zt[:, :6].clone(), zt[:, :6].clone(), torch.where(yt < 6, yt, -1), wt[:6], smooth=True)[0],
        _local_state(zt[:, 6:].clone(), zt[:, 6:].clone(), torch.where(yt >= 6, yt - 6, -1), wt[6:], smooth=True)[0],
        torch,
    )
    for got, exp in zip(terms_torch(st, torch), whole_row(z, y, w)):
        np.testing.assert_allclose(got.numpy(), exp, **TOL)


def terms_torch(st, torch):
    return rs.lse(st, torch), rs.label_loss(st, torch), rs.smooth_loss(st, torch)
