"""The Triton kernels of softxent's GPU path (:mod:`softxent.kernels.triton`, plugged in by
:mod:`softxent.torch._triton`).

Without a GPU the kernels run in Triton's interpreter on CPU tensors: this
module sets ``TRITON_INTERPRET=1`` before it imports triton and while its
tests run (restored in between, so other test modules never see it), on tiny
shapes (a few rows, V <= 300, widths that are not powers of two, tiles smaller
than a row so that the online log-sum-exp spans several tiles). With a GPU the
same tests run the compiled kernels on CUDA tensors, and the ``cuda`` tests
below add real sizes and the front end.

Oracles: the NumPy API in float64 (``softxent.softmax_cross_entropy_with_grad``,
with the soft cap and z-loss applied around it by hand), the plain-torch
reference ``cross_entropy_rows_reference`` in float64 with torch autograd, and
for the linear head torch autograd of the naive ``F.linear`` + cross-entropy
in float64. Inputs in bf16 are compared with the oracle of the same (rounded)
values, so the tolerance is that of one bf16 rounding of the results.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip(
            "triton was imported before this module could set TRITON_INTERPRET=1 (its mode is fixed at "
            "import); run tests/test_triton.py in a process of its own",
            allow_module_level=True,
        )
    _saved_interpret = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
try:
    triton = pytest.importorskip(
        "triton", reason="Triton is not installed (pip install softxent[triton]): the GPU kernels cannot be tested"
    )
    from softxent.kernels.triton import _host  # noqa: E402
    from softxent.kernels.triton._cross_entropy import cross_entropy_rows  # noqa: E402
    from softxent.kernels.triton._kernels_common import _exp_split  # noqa: E402
    from softxent.kernels.triton._linear_head import linear_cross_entropy_triton  # noqa: E402
    from softxent.torch import _triton as T  # noqa: E402, F401 - registers the cuda kernels on import

    _host.kernels()  # decorate the kernels while the mode is set
finally:
    if not CUDA:
        if _saved_interpret is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _saved_interpret

import softxent as sx  # noqa: E402
from softxent.torch._reference import cross_entropy_rows_reference  # noqa: E402

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _interpreter_mode(monkeypatch):
    """TRITON_INTERPRET=1 while each test of this module runs (Triton reads it again at launch), never after."""
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")


# Tolerances of a result against a float64 oracle of the same input values:
# float32 arithmetic (and for bf16 one rounding of the result, 2**-8 relative).
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.bfloat16: dict(rtol=2**-8, atol=2e-5),
}


def gen(seed):
    return torch.Generator().manual_seed(seed)


def close(actual, expected, dtype, scale=1.0, what=""):
    tol = TOL[dtype]
    a = actual.detach().cpu().double()
    e = torch.as_tensor(expected).detach().cpu().double()
    torch.testing.assert_close(a, e, rtol=tol["rtol"], atol=tol["atol"] * scale, equal_nan=True, msg=what or None)


# --------------------------------------------------------------------------- oracles


def numpy_oracle(z, target, weight, *, ignore_index, label_smoothing, z_loss, softcap, reduction):
    """Loss and gradient from the NumPy API in float64, with the cap and the z-loss around it (eq. 7, 15)."""
    z = z.detach().cpu().double().numpy()
    y = target.detach().cpu()
    prob = y.is_floating_point()
    y = y.double().numpy() if prob else y.numpy()
    w = None if weight is None else weight.detach().cpu().double().numpy()
    zc = softcap * np.tanh(z / softcap) if softcap is not None else z
    loss, grad, lse = sx.softmax_cross_entropy_with_grad(
        zc, y, weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
        return_lse=True,
    )  # fmt: skip
    loss = np.asarray(loss, dtype=np.float64)
    if z_loss:
        kept = np.ones(len(z), bool) if prob else y != ignore_index
        rows = np.where(kept, z_loss * lse**2, 0.0)
        scale = (1.0 / max(int(kept.sum()), 1)) if reduction == "mean" else 1.0
        loss = loss + (rows if reduction == "none" else rows.sum() * scale)
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.exp(zc - lse[:, None])
        coef = np.where(kept, 2.0 * z_loss * lse * scale, 0.0)
        grad = grad + np.where(kept[:, None], coef[:, None] * np.nan_to_num(a), 0.0)
    if softcap is not None:
        grad = grad / np.cosh(z / softcap) ** 2
    return loss, grad, lse


def torch_oracle(z, target, weight, *, ignore_index, label_smoothing, z_loss, softcap, reduction):
    """Loss, gradient (torch autograd) and lse of the plain-torch reference, in float64."""
    zz = z.detach().cpu().double().requires_grad_(True)
    y = target.detach().cpu()
    y = y.double() if y.is_floating_point() else y
    w = None if weight is None else weight.detach().cpu().double()
    loss, lse = cross_entropy_rows_reference(
        zz, y, w, ignore_index, reduction, label_smoothing, z_loss, softcap, need_lse=True
    )
    (grad,) = torch.autograd.grad(loss.sum(), zz)
    return loss.detach(), grad, lse.detach()


def make_ce(n, c, dtype, seed, prob=False, ignore=True, scale=3.0):
    z = (torch.randn(n, c, generator=gen(seed), dtype=torch.float64) * scale).to(dtype)
    if prob:
        t = torch.rand(n, c, generator=gen(seed + 1), dtype=torch.float64)
        t = torch.where(torch.rand(n, c, generator=gen(seed + 2)) < 0.3, 0.0, t)
        target = (t / t.sum(1, keepdim=True)).float()
    else:
        target = torch.randint(0, c, (n,), generator=gen(seed + 1))
        if ignore:
            target[1] = -100
    return z, target


# Every option, and each reduction, at least once alone or in a pair, once all together.
OPTIONS = [
    dict(),
    dict(reduction="none"),
    dict(weight=True, label_smoothing=0.2),
    dict(label_smoothing=0.1, reduction="sum"),
    dict(z_loss=1e-2, softcap=4.0),
    dict(weight=True, label_smoothing=0.15, z_loss=1e-3, softcap=6.0, reduction="none"),
    dict(ignore_index=2, weight=True, reduction="mean"),
]


def opts(options, c, seed=5):
    o = dict(ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None, reduction="mean")
    o.update({k: v for k, v in options.items() if k != "weight"})
    weight = None
    if options.get("weight"):
        weight = torch.rand(c, generator=gen(seed), dtype=torch.float64) + 0.25
        weight[0] = 0.0  # a class of weight 0
    return o, weight


def run_ce(z, target, weight, o, **kw):
    dev = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return cross_entropy_rows(dev(z), dev(target), dev(None if weight is None else weight.float()), **o, **kw)


# --------------------------------------------------------------------------- cross-entropy on logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_ce_matches_numpy_and_torch_oracles(dtype, target_kind, options):
    prob = target_kind == "prob"
    n, c = (7, 37) if not options.get("weight") else (5, 300)
    z, target = make_ce(n, c, dtype, seed=len(str(options)), prob=prob)
    if options.get("ignore_index") == 2 and not prob:
        target[target == -100] = 2  # row 1 is ignored; class 2 elsewhere would be too
    o, weight = opts(options, c)
    block = 64  # V = 300 spans 5 tiles (the last partial), V = 37 one tile of 64 holding 16 rows
    loss, grad, lse = run_ce(z, target, weight, o, block=block)
    w64 = None if weight is None else weight.float().double()
    ref = dict(o)
    l_np, g_np, lse_np = numpy_oracle(z, target, w64, **ref)
    l_t, g_t, lse_t = torch_oracle(z, target, w64, **ref)
    gscale = float(np.abs(g_np).max())
    close(loss, l_np, dtype, what="loss vs numpy")
    close(loss, l_t, dtype, what="loss vs torch")
    close(grad, g_np, dtype, scale=gscale, what="grad vs numpy")
    close(grad, g_t, dtype, scale=gscale, what="grad vs torch")
    close(lse, lse_t, torch.float32, what="lse")
    assert grad.dtype == dtype and grad.shape == z.shape
    if not prob:
        assert torch.all(grad[1].cpu() == 0)  # the ignored row: exact zeros


@pytest.mark.parametrize(
    "options",
    [dict(), dict(weight=True, reduction="none"), dict(z_loss=0.25, softcap=4.0)],
    ids=["default", "weight-none", "zloss-softcap"],
)
def test_ce_float64_is_computed_in_float64(options):
    z, target = make_ce(5, 300, torch.float64, seed=7)
    o, weight = opts(options, 300)
    loss, grad, lse = cross_entropy_rows(z.to(DEVICE), target.to(DEVICE),
                                           None if weight is None else weight.to(DEVICE), **o, block=64)  # fmt: skip
    l_t, g_t, lse_t = torch_oracle(z, target, weight, **o)
    assert grad.dtype == torch.float64 and lse.dtype == torch.float64
    for got, ref in ((loss, l_t), (grad, g_t), (lse, lse_t)):
        torch.testing.assert_close(got.cpu(), ref, rtol=1e-12, atol=1e-14)


def test_ce_loss_only_and_inplace_agree():
    z, target = make_ce(6, 211, torch.float32, seed=3)
    o, weight = opts(dict(weight=True, label_smoothing=0.1, z_loss=1e-3), 211)
    loss, grad, lse = run_ce(z, target, weight, o, block=64)
    loss2, none, lse2 = run_ce(z, target, weight, o, block=64, need_grad=False)
    zz = z.clone().to(DEVICE)
    loss3, grad3, lse3 = cross_entropy_rows(zz, target.to(DEVICE), weight.float().to(DEVICE), **o, block=64,
                                              inplace=True)  # fmt: skip
    assert none is None and grad3.data_ptr() == zz.data_ptr()
    torch.testing.assert_close(loss2, loss, rtol=0, atol=0)
    torch.testing.assert_close(lse2, lse, rtol=0, atol=0)
    torch.testing.assert_close(grad3, grad, rtol=0, atol=0)
    torch.testing.assert_close(loss3, loss, rtol=0, atol=0)


def test_ce_default_tiles_and_row_blocks():
    # Default tile sizes: one tile per row, several rows per program (V = 37 < the tile);
    # and fewer programs than row blocks (the grid-stride loop).
    for n, c in ((9, 37), (3, 300)):
        z, target = make_ce(n, c, torch.float32, seed=c)
        o, _ = opts({}, c)
        l_t, g_t, _ = torch_oracle(z, target, None, **o)
        for programs in (None, 2):  # one program per row block, or 2 looping over them
            loss, grad, _ = run_ce(z, target, None, o, programs=programs)
            close(loss, l_t, torch.float32)
            close(grad, g_t, torch.float32)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_ce_l2_schedule_and_pipelining_knobs_agree(target_kind):
    """l2_hints (pass 2 backwards, cache hints), num_stages and num_warps change the schedule, not the result."""
    c = 300
    z, target = make_ce(6, c, torch.bfloat16, seed=21, prob=target_kind == "prob")
    o, weight = opts(dict(weight=True, label_smoothing=0.1, z_loss=1e-3), c)
    base = run_ce(z, target, weight, o, block=64)
    l_t, g_t, _ = torch_oracle(z, target, weight.float().double(), **o)
    close(base[0], l_t, torch.bfloat16, what="loss")
    close(base[1], g_t, torch.bfloat16, what="grad")
    for kw in (dict(l2_hints=True), dict(l2_hints=True, num_stages=1), dict(num_stages=3, num_warps=8)):
        loss, grad, lse = run_ce(z, target, weight, o, block=64, **kw)
        torch.testing.assert_close(loss, base[0], rtol=1e-6, atol=0)  # the smoothing sum's order differs
        torch.testing.assert_close(grad, base[1], rtol=0, atol=0)
        torch.testing.assert_close(lse, base[2], rtol=0, atol=0)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_ce_lane_and_tile_reductions_agree(target_kind, options):
    """Per-lane state reduced once per row (``lanes=True``, the default for rows of several tiles) and
    per-tile reductions (``lanes=False``) give the oracle's results on ordinary and extreme rows: ties
    of the max inside a lane, across lanes and across tiles, a later tile's larger max, masked classes,
    a fully masked ignored row, a NaN row, logits of +-1e4, a confident row; rows of one tile too."""
    prob = target_kind == "prob"
    c = 150  # tiles of 32: 5 per row, the last partial
    z = torch.randn(10, c, generator=gen(31), dtype=torch.float64) * 3
    z[0, [3, 35, 67, 130]] = 9.0  # the same lane (3 mod 32) holds the max in four tiles, and a tie
    z[1, [5, 6, 140]] = 9.0  # ties in two lanes of the first tile and in the last tile
    z[2, :] = 0.0  # every class ties
    z[3, 2] = 4.0
    z[3, 120] = 8.0  # a larger max in a later tile rescales the earlier lanes
    z[4, ::4] = -torch.inf  # masked classes, whole lanes masked
    z[5, :] = -torch.inf  # a fully masked row (ignored)
    z[6, 77] = torch.nan  # NaN in, NaN out (ignored: exact zeros)
    z[7] *= 3e3  # logits of about +-1e4
    z[8, :] = 0.0
    z[8, 99] = 25.0  # a confident row: a_y - 1 = -149 e^-25
    target = torch.tensor([35, 140, 17, 120, 1, -100, -100, 4, 99, 11])
    if options.get("ignore_index") == 2:
        target[target == -100] = 2
    if prob:
        t = torch.rand(10, c, generator=gen(32), dtype=torch.float64)
        t[4, ::4] = 0.0  # no mass on the masked classes
        target = (t / t.sum(1, keepdim=True)).float()
        z[5, :] = 0.0  # probability rows are never ignored: no fully masked or NaN rows
        z[6, 77] = 1.0
    o, weight = opts(options, c)
    w64 = None if weight is None else weight.float().double()
    l_t, g_t, lse_t = torch_oracle(z.float(), target, w64, **dict(o, reduction="none"))
    per_tile = run_ce(z.float(), target, weight, dict(o, reduction="none"), block=32, lanes=False)
    per_lane = run_ce(z.float(), target, weight, dict(o, reduction="none"), block=32, lanes=True)
    rows = [i for i in range(10) if i != 6]  # the ignored NaN row: the oracle's sech^2 gives NaN * 0 there
    for name, (loss, grad, lse) in (("per tile", per_tile), ("per lane", per_lane)):
        close(loss[rows], l_t[rows], torch.float32, scale=1e4, what=f"{name} loss")
        close(grad[rows], g_t[rows], torch.float32, what=f"{name} grad")
        close(lse[rows], lse_t[rows], torch.float32, scale=1e4, what=f"{name} lse")
    torch.testing.assert_close(per_lane[0], per_tile[0], rtol=1e-6, atol=1e-9, equal_nan=True)
    if not prob:
        assert float(per_lane[0][8]) > 0 and abs(float(per_lane[1][8, 99]) / float(g_t[8, 99]) - 1) < 1e-5
        assert torch.all(per_lane[1][5:7].cpu() == 0)
        assert options.get("softcap") or float(per_lane[2][5]) == -np.inf  # a cap maps -inf to -cap
    # Rows of one tile (V = 37 in tiles of 64, 16 rows a program) with the per-lane state forced on.
    z1, t1 = make_ce(9, 37, torch.float32, seed=33, prob=prob)
    if options.get("ignore_index") == 2 and not prob:
        t1[t1 == -100] = 2
    o1, w1 = opts(options, 37)
    ref1 = torch_oracle(z1, t1, None if w1 is None else w1.float().double(), **o1)
    got1 = run_ce(z1, t1, w1, o1, block=64, lanes=True)
    close(got1[0], ref1[0], torch.float32, what="one tile, per lane: loss")
    close(got1[1], ref1[1], torch.float32, what="one tile, per lane: grad")


@pytest.mark.parametrize("options", [dict(), dict(weight=True), dict(z_loss=1e-2)], ids=["plain", "weight", "z_loss"])
def test_ce_float64_mean_is_float64_throughout(options):
    """float64 logits: the mean's denominators (1/6 here, or 1/sum of weights) reach the kernel unrounded,
    so loss and gradient agree with the float64 oracle to float64 precision (a float32 1/6 is 3e-8 off)."""
    z, target = make_ce(7, 90, torch.float64, seed=41)  # row 1 ignored: 6 rows count
    o, weight = opts(options, 90)
    w = None if weight is None else weight.to(DEVICE)  # float64 weights, as the float64 front end passes
    loss, grad, _ = cross_entropy_rows(z.to(DEVICE), target.to(DEVICE), w, **o, block=32)
    l_np, g_np, _ = numpy_oracle(z, target, weight, **o)
    assert loss.dtype == torch.float64 and grad.dtype == torch.float64
    torch.testing.assert_close(loss.cpu(), torch.as_tensor(l_np), rtol=1e-13, atol=0)
    torch.testing.assert_close(grad.cpu(), torch.as_tensor(g_np), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("exp_mode", [1, 2], ids=["libdevice", "split-ex2"])
def test_ce_confident_row_keeps_its_tiny_gradient_in_bf16(exp_mode):
    # z_y = 30 above 299 zeros: a_y - 1 = -299 e^-30 / (1 + 299 e^-30) ~ -2.8e-11, and the loss the same.
    # On a GPU, exp_mode=0 (tl.exp: ex2.approx of the rounded product x log2(e)) misses the 1e-6 bound.
    c = 300
    z = torch.zeros(2, c, dtype=torch.bfloat16)
    z[0, 7] = 30.0
    z[1, 100] = 20.0
    target = torch.tensor([7, 100])
    loss, grad, _ = run_ce(z, target, None, dict(reduction="none"), block=64, exp_mode=exp_mode)
    for i, (y, top) in enumerate(((7, 30.0), (100, 20.0))):
        rest = (c - 1) * np.exp(-top)
        exact_loss = np.log1p(rest)
        exact_g = -rest / (1.0 + rest)
        assert abs(float(loss[i]) - exact_loss) <= 1e-6 * exact_loss
        assert abs(float(grad[i, y]) - exact_g) <= 2**-8 * abs(exact_g)  # one bf16 rounding
    # float32 torch gives 0 for both: the cancellation the kernel avoids.
    assert float(F.cross_entropy(z[:1].float(), target[:1])) == 0.0


def test_exp_split_puts_the_products_rounding_back():
    """exp_mode=2's exponential (``_kernels_common._exp_split``) against float64 exp on float32 x <= 0:
    on a GPU within 3e-7 relative down to -87 (ex2.approx's 2 ulp and the rest); dropping the
    correction r, as ``tl.exp`` does, is off by up to 1.8e-6 at x = -30 and fails that. The
    interpreter's ``tl.fma`` is not fused (NumPy rounds the product first), so there r is 0 and only
    the constants (3e-6), the clamp and the edge values are checked: -inf gives 0, NaN stays NaN,
    below -127 the result is 0."""
    import triton.language as tl

    @triton.jit
    def exp_kernel(x_ptr, o_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + i, mask=i < n, other=0.0)
        tl.store(o_ptr + i, _exp_split(x), mask=i < n)

    g = np.random.default_rng(5)
    x = np.concatenate([-g.uniform(0, 87, 4000), -g.uniform(0, 1e-3, 200), [0.0, -30.0, -87.0]]).astype(np.float32)
    xt = torch.as_tensor(x).to(DEVICE)
    out = torch.empty_like(xt)
    exp_kernel[(triton.cdiv(len(x), 256),)](xt, out, len(x), BLOCK=256)
    got = out.cpu().numpy().astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got / want - 1)) < (3e-7 if CUDA else 3e-6)
    edge = torch.tensor([-np.inf, np.nan, -128.0, -1e4], dtype=torch.float32).to(DEVICE)
    out = torch.empty_like(edge)
    exp_kernel[(1,)](edge, out, 4, BLOCK=4)
    e = out.cpu().numpy()
    assert e[0] == 0.0 and np.isnan(e[1]) and e[2] < 1e-38 and e[3] < 1e-38


def test_ce_extreme_logits_and_masked_classes():
    c = 131
    z = torch.randn(5, c, generator=gen(1), dtype=torch.float64)
    z[0] *= 1e4  # logits of +-1e4: shift by the max, no overflow
    z[1, ::3] = -torch.inf  # masked classes (the label is not masked)
    z[2] = 1e4
    z[3, :] = -torch.inf  # a fully masked row, ignored
    z[4, 5] = torch.nan  # a NaN row, ignored
    target = torch.tensor([4, 1, 9, -100, -100])
    for dtype in (torch.float32, torch.bfloat16):
        zd = z.to(dtype)
        for options in (dict(), dict(reduction="none"), dict(weight=True, label_smoothing=0.0, z_loss=1e-4)):
            o, weight = opts(options, c)
            loss, grad, lse = run_ce(zd, target, weight, o, block=32)
            l_t, g_t, lse_t = torch_oracle(zd, target, None if weight is None else weight.float().double(), **o)
            close(loss, l_t, dtype, scale=1e4, what=f"loss {options}")
            close(grad, g_t, dtype, what=f"grad {options}")
            assert torch.isfinite(grad).all()
            assert torch.all(grad[3:].cpu() == 0)
            assert float(lse[3]) == -np.inf


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_ce_tied_maxima_within_and_across_tiles(target_kind):
    """The online update finds a tile's maxima by equality (no arg-max): ties inside one tile, across tiles,
    and a later tile tying an earlier maximum all count each tied class once (exact 1s in s')."""
    c = 100
    z = torch.randn(4, c, generator=gen(11), dtype=torch.float64).clamp(-3, 3)
    z[0, [3, 9, 20]] = 5.0  # three maxima in the first tile of 32
    z[1, [3, 40, 99]] = 5.0  # one in each of three tiles (the last partial)
    z[2, :] = 0.0  # every class ties
    z[3, [70, 71]] = 5.0  # a tie in a later tile, after a smaller maximum in the first
    z[3, 5] = 4.0
    target = torch.tensor([9, 40, 17, 71])
    if target_kind == "prob":
        target = torch.softmax(torch.randn(4, c, generator=gen(12), dtype=torch.float64), 1).float()
    for dtype in (torch.float32, torch.bfloat16):
        zd = z.to(dtype)
        o, _ = opts(dict(reduction="none"), c)
        loss, grad, lse = run_ce(zd, target, None, o, block=32)
        l_t, g_t, lse_t = torch_oracle(zd, target, None, **o)
        close(loss, l_t, dtype, what="loss")
        close(grad, g_t, dtype, what="grad")
        close(lse, lse_t, torch.float32, what="lse")
    assert abs(float(lse[2]) - np.log(c)) < 1e-6  # c exact ties: lse = log(c)


def test_linear_tied_logits_and_tile_override():
    """The head's forward with tied logits (a zero weight row block: every class ties) and with tiles given
    by the caller (the benchmark's sweep) gives the same loss and gradients as the default tiles."""
    x, w, b, y = make_lin(9, 24, 100, torch.float32, ignore=())
    w[40:80] = 0.0  # 40 classes tie at logit b_c = 0 ...
    b = torch.zeros_like(b)
    x[0] = 0.0  # ... and row 0 ties across all 100 classes: loss log(100)
    dev = lambda t: t.to(DEVICE)  # noqa: E731
    ref = naive_head(x, w, b, y, reduction="none", upstream=torch.ones(9, dtype=torch.float64))
    for tiles in (None, (16, 64, 16, 4, 1), (32, 32, 32, 4, 1)):
        loss, dx, dw, db, _ = linear_cross_entropy_triton(dev(x), dev(w), dev(y), dev(b), reduction="none",
                                                          tiles=tiles, splits=3)  # fmt: skip
        close(loss, ref[0], torch.float32, what=f"loss {tiles}")
        for got, want in ((dx, ref[1]), (dw, ref[2]), (db, ref[3])):
            close(got, want, torch.float32, scale=float(want.abs().max()) * 10, what=f"grads {tiles}")
    assert abs(float(loss[0]) - np.log(100)) < 1e-6


def test_wave_sized_grids():
    """The forward's vocabulary splits and the backward's chunks fill whole waves of SMs (no GPU needed)."""
    from softxent.kernels.triton._host import cdiv
    from softxent.kernels.triton._linear_head import _wave_chunk, _wave_splits

    def use(row_blocks, vocab_blocks, s, n_sm):
        per = cdiv(vocab_blocks, s)
        return row_blocks * vocab_blocks / (cdiv(row_blocks * cdiv(vocab_blocks, per), n_sm) * n_sm * per)

    # (8192 rows, V = 256000) at 128 x 128 on 132 SMs: the 576-program grid used 64% of its last wave.
    assert _wave_splits(64, 2000, 132) == 33 and use(64, 2000, 9, 132) < 0.9 < 0.99 < use(64, 2000, 33, 132)
    for row_blocks, vocab_blocks, n_sm in ((64, 1002, 132), (1, 2000, 132), (8, 10, 132), (16, 4000, 114)):
        s = _wave_splits(row_blocks, vocab_blocks, n_sm)
        assert 1 <= s <= vocab_blocks
        best = max(use(row_blocks, vocab_blocks, t, n_sm) for t in range(1, vocab_blocks + 1))
        assert use(row_blocks, vocab_blocks, s, n_sm) >= best - 0.02, (row_blocks, vocab_blocks, s)
    c = _wave_chunk(64, 32, 2000, 132)  # 64 row blocks x 33 tiles = 16 waves of 132
    assert c == 33 and (64 * c) % 132 == 0
    assert _wave_chunk(64, 32, 20, 132) == 20  # the whole vocabulary in one chunk


def test_ce_nan_stays_in_its_row():
    z = torch.randn(4, 90, generator=gen(6))
    z[1, 50] = torch.nan  # not the label: the row's loss and gradient are NaN, the others untouched
    target = torch.tensor([3, 7, 11, -100])
    z[3, 0] = torch.nan  # ignored: exact zeros
    loss, grad, _ = run_ce(z, target, None, dict(reduction="none"), block=32)
    assert torch.isnan(loss[1]) and torch.isnan(grad[1]).all()
    assert torch.isfinite(loss[[0, 2, 3]]).all() and torch.isfinite(grad[[0, 2]]).all()
    assert float(loss[3]) == 0.0 and torch.all(grad[3].cpu() == 0)


def test_ce_probability_target_with_masked_class():
    z = torch.randn(3, 50, generator=gen(2))
    z[:, 10] = -torch.inf
    t = torch.rand(3, 50, generator=gen(3))
    t[:, 10] = 0.0  # no mass on the masked class: 0 * inf = 0, no NaN
    loss, grad, _ = run_ce(z, t, None, dict(), block=16)
    l_t, g_t, _ = torch_oracle(z, t, None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
                               reduction="mean")  # fmt: skip
    close(loss, l_t, torch.float32)
    close(grad, g_t, torch.float32)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_all_ignored_gives_zero(reduction):
    z = torch.randn(4, 45, generator=gen(4)).to(torch.bfloat16)
    z[0] = -torch.inf
    target = torch.full((4,), -100)
    for options in (
        dict(reduction=reduction),
        dict(reduction=reduction, weight=True, z_loss=1e-2, label_smoothing=0.1),
    ):
        o, weight = opts(options, 45)
        loss, grad, _ = run_ce(z, target, weight, o, block=16)
        assert torch.all(loss.cpu() == 0) and torch.all(grad.cpu() == 0)
    loss, grad, _ = run_ce(z[:0], target[:0], None, dict(reduction=reduction))  # an empty batch
    assert grad.shape == (0, 45) and torch.all(loss.cpu() == 0)


def test_ce_bad_class_index_gives_nan_without_a_host_sync():
    z = torch.randn(3, 20, generator=gen(5))
    loss, grad, _ = run_ce(z, torch.tensor([1, 20, 2]), None, dict(reduction="none"))
    assert torch.isnan(loss[1]) and not torch.isnan(loss[[0, 2]]).any()


def test_ce_errors_name_the_argument():
    z = torch.randn(3, 20, device=DEVICE)
    with pytest.raises(ValueError, match="z must have shape"):
        cross_entropy_rows(z[0], torch.tensor([1], device=DEVICE))
    with pytest.raises(ValueError, match="target must hold class indices of shape"):
        cross_entropy_rows(z, torch.tensor([1, 2], device=DEVICE))
    with pytest.raises(ValueError, match="weight must have shape"):
        cross_entropy_rows(z, torch.tensor([1, 2, 3], device=DEVICE), torch.ones(3, device=DEVICE))
    with pytest.raises(ValueError, match="reduction must be one of"):
        cross_entropy_rows(z, torch.tensor([1, 2, 3], device=DEVICE), reduction="avg")
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        cross_entropy_rows(np.zeros((3, 20)), torch.tensor([1, 2, 3]))


# --------------------------------------------------------------------------- linear cross-entropy


def make_lin(n, d, v, dtype, seed=0, scale=3.0, ignore=(3,)):
    x = torch.randn(n, d, generator=gen(seed), dtype=torch.float64).to(dtype)
    w = (torch.randn(v, d, generator=gen(seed + 1), dtype=torch.float64) / d**0.5 * scale).to(dtype)
    b = torch.randn(v, generator=gen(seed + 2), dtype=torch.float64).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen(seed + 3))
    for i in ignore:
        y[i] = -100
    return x, w, b, y


def naive_head(x, w, b, y, *, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
               upstream=None):  # fmt: skip
    """float64 torch autograd of F.linear + cross-entropy (+ z-loss): loss, dx, dW, db."""
    leaves = [t.detach().cpu().double().requires_grad_(True) for t in (x, w, b)]
    z = F.linear(*leaves)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, y.cpu(), ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    kept = y.cpu() != ignore_index
    if reduction == "mean" and not kept.any():
        loss = z.sum() * 0.0
    if z_loss:
        rows = torch.where(kept, z_loss * torch.logsumexp(z, 1) ** 2, 0.0)
        loss = loss + (
            rows if reduction == "none" else rows.sum() / (max(int(kept.sum()), 1) if reduction == "mean" else 1)
        )
    total = (loss * upstream.double()).sum() if upstream is not None else loss.sum()
    return (loss.detach(),) + torch.autograd.grad(total, leaves)


def naive_head_bf16(x, w, b, y, *, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
                    softcap=None, upstream=None):  # fmt: skip
    """torch's bf16 autograd of the same head (the peer to compare precision with): dx, dW, db."""
    leaves = [t.detach().cpu().bfloat16().requires_grad_(True) for t in (x, w, b)]
    z = F.linear(*leaves)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, y.cpu(), ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    if z_loss:
        kept = y.cpu() != ignore_index
        rows = torch.where(kept, z_loss * torch.logsumexp(z, 1) ** 2, 0.0)
        loss = loss + (
            rows if reduction == "none" else rows.sum() / (max(int(kept.sum()), 1) if reduction == "mean" else 1)
        )
    total = (loss * upstream.bfloat16()).sum() if upstream is not None else loss.sum()
    return torch.autograd.grad(total, leaves)


def _rel(got, ref):
    return float((got.detach().cpu().double() - ref.cpu()).norm() / ref.cpu().norm())


LIN_OPTIONS = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.1, z_loss=1e-2),
    dict(softcap=5.0, reduction="sum"),
    dict(label_smoothing=0.2, z_loss=1e-3, softcap=8.0, reduction="none"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("options", LIN_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_linear_matches_float64_naive_head(dtype, options):
    n, d, v = 19, 40, 150  # odd sizes: partial row, class and feature tiles
    x, w, b, y = make_lin(n, d, v, dtype, seed=len(str(options)))
    upstream = None
    if options.get("reduction") == "none":
        upstream = torch.rand(n, generator=gen(9), dtype=torch.float64).float() + 0.5
    dev = lambda t: t.to(DEVICE)  # noqa: E731
    loss, dx, dw, db, skipped = linear_cross_entropy_triton(
        dev(x), dev(w), dev(y), dev(b), **options, splits=2, dw_chunk=64,
        grad_output=1.0 if upstream is None else dev(upstream),
    )  # fmt: skip
    l_ref, dx_ref, dw_ref, db_ref = naive_head(x, w, b, y, **options, upstream=upstream)
    close(loss, l_ref, dtype if dtype == torch.bfloat16 else torch.float32, what="loss")
    if dtype == torch.bfloat16:
        # G is rounded to bf16 for the matmuls (as on the GPU, as torch's bf16 autograd does):
        # compare norms with torch's own bf16 head on the same inputs.
        peer = naive_head_bf16(x, w, b, y, **options, upstream=upstream)
    for i, (name, got, ref) in enumerate((("dx", dx, dx_ref), ("dW", dw, dw_ref), ("db", db, db_ref))):
        assert got.dtype == dtype
        if dtype == torch.bfloat16:
            assert _rel(got, ref) <= max(4e-3, 1.5 * _rel(peer[i], ref)), name
        else:
            close(got, ref, dtype, scale=float(ref.abs().max()) * 10, what=name)
    assert int(skipped) == 0
    assert torch.all(dx[3].cpu() == 0)  # the ignored row


def test_linear_nan_stays_in_its_row():
    x, w, b, y = make_lin(6, 24, 70, torch.float32, ignore=())
    x[2, 5] = torch.nan
    loss, dx, dw, db, _ = linear_cross_entropy_triton(x.to(DEVICE), w.to(DEVICE), y.to(DEVICE), b.to(DEVICE),
                                                        reduction="none", need_grad=False)  # fmt: skip
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3, 4, 5]]).all()


def test_linear_all_ignored_and_no_bias():
    x, w, b, y = make_lin(6, 24, 70, torch.float32, ignore=range(6))
    loss, dx, dw, db, _ = linear_cross_entropy_triton(x.to(DEVICE), w.to(DEVICE), y.to(DEVICE), None)
    assert float(loss) == 0.0 and db is None
    assert torch.all(dx.cpu() == 0) and torch.all(dw.cpu() == 0)
    x, w, b, y = make_lin(6, 24, 70, torch.float32, ignore=())
    loss, dx, dw, db, _ = linear_cross_entropy_triton(x.to(DEVICE), w.to(DEVICE), y.to(DEVICE), None, need_grad=False)
    l_ref = F.cross_entropy(x.double() @ w.double().T, y)
    close(loss, l_ref, torch.float32)
    assert dx is None and dw is None


def test_linear_gradient_filter_stays_within_its_bound():
    # The first 32 classes hold (nearly) all the probability (a bias of 30): every other
    # tile of G is below tau and is skipped; the labels' tile never is.
    n, d, v = 32, 32, 256
    x, w, b, y = make_lin(n, d, v, torch.float32, seed=11, scale=1.0, ignore=())
    b = torch.zeros(v)
    b[:32] = 30.0
    y = torch.randint(0, 32, (n,), generator=gen(12))
    tau = 2.0**-12
    args = [t.to(DEVICE) for t in (x, w, y, b)]
    _, dx0, dw0, db0, sk0 = linear_cross_entropy_triton(*args, reduction="sum")
    _, dx1, dw1, db1, sk1 = linear_cross_entropy_triton(*args, reduction="sum", grad_filter=tau)
    _, dx_ref, dw_ref, db_ref = naive_head(x, w, b, y, reduction="sum")
    assert int(sk0) == 0 and int(sk1) > 0
    # Off: exact (to float32 rounding). On: within the documented bound (gamma = 1 for "sum").
    close(dx0, dx_ref, torch.float32, scale=float(dx_ref.abs().max()))
    close(dw0, dw_ref, torch.float32, scale=float(dw_ref.abs().max()))
    bound_dx = tau * v * float(w.abs().max())
    bound_dw = tau * n * float(x.abs().max())
    assert float((dx1.cpu().double() - dx_ref).abs().max()) <= bound_dx + 1e-5
    assert float((dw1.cpu().double() - dw_ref).abs().max()) <= bound_dw + 1e-5
    assert float((db1.cpu().double() - db_ref).abs().max()) <= tau * n + 1e-5
    assert not torch.equal(dw1, dw0)  # it did change something


def test_linear_errors_name_the_argument():
    x, w, b, y = (t.to(DEVICE) for t in make_lin(4, 8, 20, torch.float32))
    with pytest.raises(ValueError, match="weight must have shape"):
        linear_cross_entropy_triton(x, w[:, :4], y)
    with pytest.raises(ValueError, match="target must hold integer class indices"):
        linear_cross_entropy_triton(x, w, y.float())
    with pytest.raises(TypeError, match="one dtype"):
        linear_cross_entropy_triton(x, w.double(), y)
    with pytest.raises(ValueError, match="bias must have shape"):
        linear_cross_entropy_triton(x, w, y, b[:3])
    with pytest.raises(ValueError, match="reduction must be one of"):
        linear_cross_entropy_triton(x, w, y, reduction="avg")


# --------------------------------------------------------------------------- wiring


# test_custom_op_kernels_match_the_cpu_ops and the front end through the op wrapper: tests/test_triton_ops.py


SUBPROCESS_CHECKS = """
# 1. softxent.torch imports with triton hidden, and register() plugs the kernels in for "cuda".

import sys
sys.modules["triton"] = None          # as if triton were not installed
import softxent.torch as sxt, torch
from softxent.torch import _backends, _triton
assert not _triton.HAS_TRITON and _triton.register() is False
assert "cuda" not in _backends.FUSED_BACKENDS
assert float(sxt.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]))) > 0
del sys.modules["triton"]
import importlib
from softxent.kernels.triton import _host
importlib.reload(_host)
importlib.reload(_triton)
assert _triton.HAS_TRITON and _triton.register() and _triton.register()
assert _backends.FUSED_BACKENDS["cuda"] is _triton.cuda_rows

# 2. The compiled kernels (sm_90a, no spills): tests/test_triton_compile.py.

print("ok")
"""


def test_registration_and_sm90_compile_in_a_fresh_process():
    """Without TRITON_INTERPRET: the front end's import and registration."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", SUBPROCESS_CHECKS], capture_output=True, text=True, env=env,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


# The GPU benchmark script's dry run and its judgement of the targets: tests/test_gpu_bench.py.


# --------------------------------------------------------------------------- CUDA at real sizes


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("options", [dict(), dict(label_smoothing=0.1, z_loss=1e-4, softcap=30.0)])
def test_cuda_front_end_cross_entropy(dtype, options):
    import softxent.torch as sxt

    n, v = 4096, 50257
    z = (torch.randn(n, v, device="cuda") * 4).to(dtype).requires_grad_(True)
    y = torch.randint(0, v, (n,), device="cuda")
    y[::7] = -100
    loss = sxt.cross_entropy(z, y, **options)
    loss.backward()
    zz = z.detach().double().requires_grad_(True)
    ref, _ = cross_entropy_rows_reference(
        zz, y, None, -100, "mean", options.get("label_smoothing", 0.0), options.get("z_loss", 0.0),
        options.get("softcap"),
    )  # fmt: skip
    ref.backward()
    close(loss, ref, dtype)
    close(z.grad, zz.grad, dtype, scale=float(zz.grad.abs().max()))


@needs_cuda
def test_cuda_backward_hands_on_the_stored_gradient():
    """loss.backward() on a large CUDA gradient: grad_output (exactly 1) is read on the host and the stored
    gradient handed on, with no gradient-sized allocation in the backward; any other factor scales it; a
    small gradient or a CUDA graph being captured is never read (no host synchronisation)."""
    import softxent.torch as sxt
    from softxent.torch import _functional

    n, c = 4096, 4096  # 2**24 elements, SYNC_WORTH
    g = torch.Generator(device="cuda").manual_seed(7)
    z0 = (torch.randn(n, c, device="cuda", generator=g) * 3).to(torch.bfloat16)
    y = torch.randint(0, c, (n,), device="cuda", generator=g)
    zz = z0.double().requires_grad_(True)
    F.cross_entropy(zz, y).backward()
    for factor in (1.0, 2.0):
        z = z0.clone().requires_grad_(True)
        loss = sxt.cross_entropy(z, y)
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        (loss if factor == 1.0 else loss * factor).backward()
        torch.cuda.synchronize()
        grown = torch.cuda.max_memory_allocated() - before
        grad_bytes = z.numel() * z.element_size()
        if factor == 1.0:
            assert grown < grad_bytes // 2, f"the backward allocated {grown} bytes (a gradient is {grad_bytes})"
        close(z.grad, factor * zz.grad, torch.bfloat16, scale=float(zz.grad.abs().max()) * factor)
    one = torch.ones((), device="cuda")
    assert _functional._is_one(one, _functional.SYNC_WORTH)
    assert not _functional._is_one(one, _functional.SYNC_WORTH - 1)
    assert not _functional._is_one(one * 2, _functional.SYNC_WORTH)


@needs_cuda
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cuda_front_end_linear_cross_entropy(reduction):
    """Real size, bf16: within bf16's own error, and no worse than torch's bf16 autograd of the naive head."""
    import softxent.torch as sxt

    n, d, v = 2048, 1024, 32768
    x, w, b, y = make_lin(n, d, v, torch.bfloat16, ignore=range(0, n, 9))
    up = torch.rand(n, device="cuda") + 0.5 if reduction == "none" else None

    def run(fn, dtype):
        leaves = [t.cuda().to(dtype).requires_grad_(True) for t in (x, w, b)]
        loss = fn(*leaves)
        (loss * (1 if up is None else up.to(loss.dtype))).sum().backward()
        return loss.detach(), [t.grad for t in leaves]

    yc = y.cuda()
    loss, grads = run(lambda x, w, b: sxt.linear_cross_entropy(x, w, yc, b, reduction=reduction), torch.bfloat16)
    naive = lambda x, w, b: F.cross_entropy(F.linear(x, w, b), yc, reduction=reduction)  # noqa: E731
    ref_loss, refs = run(naive, torch.float64)
    _, torch_bf16 = run(naive, torch.bfloat16)
    close(loss, ref_loss, torch.bfloat16)
    for name, got, ref, peer in zip(("dx", "dW", "db"), grads, refs, torch_bf16):
        assert _rel(got, ref) <= max(4e-3, 1.5 * _rel(peer, ref)), name


@needs_cuda
# torch warns that its sync debug mode is a prototype; the suite turns warnings into errors (the second H200
# run failed here before any call was checked).
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype feature:UserWarning")
def test_cuda_no_host_sync_and_opcheck():
    from softxent.torch import _functional, _linear

    z = torch.randn(64, 1000, device="cuda", dtype=torch.bfloat16)
    y = torch.randint(0, 1000, (64,), device="cuda")
    x = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(1000, 128, device="cuda", dtype=torch.bfloat16) / 12
    calls = [
        lambda: cross_entropy_rows(z, y, label_smoothing=0.1, z_loss=1e-3),
        lambda: cross_entropy_rows(z, y, torch.rand(1000, device="cuda"), reduction="mean"),
        lambda: linear_cross_entropy_triton(x, w, y, z_loss=1e-3, label_smoothing=0.1),
    ]
    for call in calls:
        call()  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.library.opcheck(_functional._cross_entropy_op, (z, y, None, -100, 0.1, 1e-3, 0.0, "mean", True))
    torch.library.opcheck(_linear._linear_op, (x, w, y, None, -100, 0.0, 0.0, 0.0, "mean", 64, 1000, True, True,
                                               False))  # fmt: skip


@needs_cuda
# inductor's first import (torch 2.11, the device image's) defines a torch.jit.script_method, deprecated.
@pytest.mark.filterwarnings("ignore:.torch.jit.script_method. is deprecated:DeprecationWarning")
def test_cuda_compile_fullgraph():
    import softxent.torch as sxt

    z = torch.randn(512, 32000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, 32000, (512,), device="cuda")
    f = torch.compile(lambda z, y: sxt.cross_entropy(z, y, z_loss=1e-4), fullgraph=True)
    loss = f(z, y)
    loss.backward()
    g = z.grad.clone()
    z.grad = None
    sxt.cross_entropy(z, y, z_loss=1e-4).backward()
    torch.testing.assert_close(g, z.grad)
