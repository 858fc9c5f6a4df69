"""softxent.torch.distributed against the single-process losses, in real process groups.

Oracles: :func:`softxent.torch.cross_entropy` and
:func:`softxent.torch.linear_cross_entropy` on the full (concatenated) logits
or weight, computed by every rank in its own process (loss, its slice of the
gradient, the log-sum-exp; for the linear head dx and its rows of dW and db),
and 4th-order finite differences of the distributed loss itself.

Each world (gloo, 2 and 4 processes on this machine, a FileStore under
tmp_path) is started once per module, in subprocesses bounded in time: every
rank runs the whole list of checks below and writes one result per check;
each check is then one test here. A hang fails (the processes are killed at
the deadline, and collectives time out before that) instead of blocking CI.
Inside a check the ranks make the same collective calls in the same order;
comparisons are collected and reported at its end (a failed comparison does
not skip collectives and desynchronise the ranks).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = torch.distributed
if not dist.is_available():
    pytest.skip("torch.distributed is not available in this PyTorch build", allow_module_level=True)
if not dist.is_gloo_available():
    pytest.skip("torch.distributed has no gloo backend in this PyTorch build", allow_module_level=True)

import softxent  # noqa: E402
import softxent.torch as sxt  # noqa: E402
from softxent._gradcheck import finite_difference_grad  # noqa: E402
from softxent.torch import distributed as sxd  # noqa: E402

WORLDS = (2, 4)
# Uneven vocabulary slices of V = 13 classes (one rank holds a single class).
SIZES = {2: [5, 8], 4: [2, 3, 1, 7]}
WORLD_TIMEOUT_S = 180  # the whole world, started to finished (normally a few seconds)
COLLECTIVE_TIMEOUT_S = 60

TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-13),
    torch.float32: dict(rtol=32 * torch.finfo(torch.float32).eps, atol=32 * torch.finfo(torch.float32).eps),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}

# --------------------------------------------------------------------------- checks (run by every rank)

CHECKS: dict[str, tuple] = {}  # name -> (function, worlds)


def check(*worlds):
    def register(fn):
        CHECKS[fn.__name__] = (fn, worlds or WORLDS)
        return fn

    return register


class Ctx:
    """One rank's view: its slice of the vocabulary, and the comparisons that failed."""

    def __init__(self, rank, world, sizes=None, group=None):
        self.rank, self.world, self.group = rank, world, group
        self.sizes = sizes or SIZES[world]
        self.start, self.n = sum(self.sizes[:rank]), self.sizes[rank]
        self.failures = []

    def local(self, t, dim=-1):
        return t.narrow(dim, self.start, self.n)

    def close(self, label, actual, expected, tol):
        if actual.shape != expected.shape or actual.dtype != expected.dtype:
            self.failures.append(f"{label}: got {actual.dtype} {tuple(actual.shape)}, "
                                 f"expected {expected.dtype} {tuple(expected.shape)}")  # fmt: skip
        elif not torch.allclose(actual.double(), expected.double(), equal_nan=True, **tol):
            diff = (actual.double() - expected.double()).abs().max().item()
            self.failures.append(f"{label}: max abs difference {diff:.3g} ({tol})")

    def true(self, label, ok):
        if not ok:
            self.failures.append(label)

    def raises(self, label, exc, match, fn):
        try:
            fn()
        except exc as e:
            if not re.search(match, str(e)):
                self.failures.append(f"{label}: {type(e).__name__} {str(e)!r} does not match {match!r}")
        except Exception as e:  # noqa: BLE001
            self.failures.append(f"{label}: expected {exc.__name__}, got {type(e).__name__}: {e}")
        else:
            self.failures.append(f"{label}: did not raise {exc.__name__}")

    def done(self):
        if self.failures:
            raise AssertionError("\n".join(self.failures))


def gen(seed):
    return torch.Generator().manual_seed(seed)


def problem(dtype=torch.float64, seed=0, n=9, v=13, ignored=(1, 5)):
    """Full logits, targets (some ignored) and class weights (one of them 0), the same on every rank."""
    z = (torch.randn(n, v, generator=gen(seed), dtype=torch.float64) * 3).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen(seed + 1))
    y[list(ignored)] = -100
    w = torch.rand(v, generator=gen(seed + 2), dtype=torch.float64) + 0.2
    w[3] = 0.0
    return z, y, w.to(dtype)


def row_weights(shape, seed, dtype):
    """Upstream gradients that differ per row (test the per-row backward), exact in bfloat16."""
    return (torch.rand(shape, generator=gen(seed), dtype=torch.float64) + 0.5).to(torch.bfloat16).to(dtype)


OPTIONS = {
    "plain": {},
    "weight": dict(weight=True),
    "smoothing": dict(label_smoothing=0.2),
    "weight_smoothing": dict(weight=True, label_smoothing=0.1),
    "z_loss": dict(z_loss=1e-2),
    "softcap": dict(softcap=2.5),
    "all": dict(weight=True, label_smoothing=0.1, z_loss=1e-2, softcap=4.0, ignore_index=-1),
}


def compare_logits(ctx, label, z, y, w, tol, *, with_lse=True, **options):
    """Loss, local gradient slice and lse of the distributed loss vs cross_entropy on the full logits."""
    use_w = options.pop("weight", False)
    if options.get("ignore_index", -100) != -100:
        y = torch.where(y == -100, options["ignore_index"], y)
    zl = ctx.local(z).detach().clone().requires_grad_(True)
    out = sxd.vocab_parallel_cross_entropy(
        zl, y, ctx.group, weight=ctx.local(w) if use_w else None, return_lse=with_lse, **options
    )
    zf = z.detach().clone().requires_grad_(True)
    ref = sxt.cross_entropy(zf, y, w if use_w else None, return_lse=with_lse, **options)
    if with_lse:
        (loss, lse), (ref_loss, ref_lse) = out, ref
        v = row_weights(loss.shape, 3, loss.dtype)
        u = row_weights(lse.shape, 4, lse.dtype)
        ((loss * v).sum() + (lse * u).sum()).backward()
        ((ref_loss * v).sum() + (ref_lse * u).sum()).backward()
        ctx.close(f"{label}: lse", lse.detach(), ref_lse.detach(), tol)
    else:
        loss, ref_loss = out, ref
        loss.backward() if loss.dim() == 0 else loss.sum().backward()  # the unscaled stored gradient
        ref_loss.backward() if ref_loss.dim() == 0 else ref_loss.sum().backward()
    ctx.close(f"{label}: loss", loss.detach(), ref_loss.detach(), tol)
    ctx.close(f"{label}: gradient slice", zl.grad, ctx.local(zf.grad), tol)


def logits_matrix(ctx, dtype):
    z, y, w = problem(dtype)
    for reduction in ("mean", "sum", "none"):
        for name, options in OPTIONS.items():
            compare_logits(ctx, f"{dtype} {reduction} {name}", z, y, w, TOL[dtype], reduction=reduction,
                           with_lse=reduction != "mean", **options)  # fmt: skip
    z, y, w = problem(dtype, seed=5, ignored=())
    compare_logits(ctx, f"{dtype} no ignored rows", z, y, w, TOL[dtype], **OPTIONS["all"])


@check()
def logits_float64(rank, world):
    ctx = Ctx(rank, world)
    logits_matrix(ctx, torch.float64)
    ctx.done()


@check()
def logits_float32(rank, world):
    ctx = Ctx(rank, world)
    logits_matrix(ctx, torch.float32)
    ctx.done()


@check()
def logits_bfloat16_and_autocast(rank, world):
    ctx = Ctx(rank, world)
    z, y, w = problem(torch.bfloat16)
    compare_logits(ctx, "bfloat16", z, y, w, TOL[torch.bfloat16], label_smoothing=0.1, z_loss=1e-3, softcap=5.0)
    zl = ctx.local(z).detach().clone().requires_grad_(True)
    sxd.vocab_parallel_cross_entropy(zl, y).backward()
    ctx.true(f"the gradient of bfloat16 logits is bfloat16, got {zl.grad.dtype}", zl.grad.dtype == torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sxd.vocab_parallel_cross_entropy(ctx.local(z), y)
        ref = sxt.cross_entropy(z, y)
    ctx.close("autocast", loss, ref, TOL[torch.float32])
    ctx.done()


@check()
def extreme_logits(rank, world):
    """Logits near 1e4 in float32 (only differences of shifted values), and a confident row.

    The confident row is 30 at its target and 0 elsewhere: the target's
    gradient entry is -(1 - a_y) = -12 e^-30 / (1 + 12 e^-30), about -1e-12,
    which a_y - 1 rounds to 0 in float32 (and to 4 digits in float64);
    expm1(z_y - lse) with log1p of the small terms keeps it to a few eps.
    """
    ctx = Ctx(rank, world)
    z, y, w = problem()
    z32 = (z + 1e4).float()
    compare_logits(ctx, "float32 near 1e4", z32, y, w.float(), TOL[torch.float32], label_smoothing=0.1, z_loss=1e-6)
    row = torch.zeros(1, 13, dtype=torch.float64)
    row[0, 7] = 30.0
    den = 1.0 + 12.0 * math.exp(-30.0)
    exact = torch.full((1, 13), math.exp(-30.0) / den, dtype=torch.float64)
    exact[0, 7] = -12.0 * math.exp(-30.0) / den
    for dtype, rtol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        zl = ctx.local(row.to(dtype)).clone().requires_grad_(True)
        sxd.vocab_parallel_cross_entropy(zl, torch.tensor([7]), reduction="sum").backward()
        ctx.close(f"confident row {dtype}, relative", zl.grad.double(), ctx.local(exact), dict(rtol=rtol, atol=0.0))
    ctx.done()


@check()
def all_ignored(rank, world):
    """Loss 0 and gradient 0 (torch: NaN), with every reduction and option."""
    ctx = Ctx(rank, world)
    z, _, w = problem()
    y = torch.full((z.shape[0],), -100)
    z[0] = -torch.inf  # an ignored row may be masked everywhere
    for reduction in ("mean", "sum", "none"):
        for name, options in OPTIONS.items():
            options = dict(options)
            use_w = options.pop("weight", False)
            yy = torch.full_like(y, options.get("ignore_index", -100))
            zl = ctx.local(z).clone().requires_grad_(True)
            loss = sxd.vocab_parallel_cross_entropy(
                zl, yy, weight=ctx.local(w) if use_w else None, reduction=reduction, **options
            )
            loss.sum().backward()
            ctx.true(f"{reduction} {name}: loss {loss} is not 0", bool((loss == 0).all()))
            ctx.true(f"{reduction} {name}: gradient is not 0", bool((zl.grad == 0).all()))
    ctx.done()


@check()
def labels_of_weight_zero(rank, world):
    """A mean over labels that all have class weight 0 (denominator 0) is 0, as in cross_entropy."""
    ctx = Ctx(rank, world)
    z, y, w = problem()
    y = torch.where(y == -100, -100, 3)  # w[3] = 0
    for options in (dict(weight=True), dict(weight=True, label_smoothing=0.1, z_loss=1e-2)):
        compare_logits(ctx, f"{options}", z, y, w, TOL[torch.float64], with_lse=False, **options)
    ctx.done()


@check()
def masked_classes(rank, world):
    """-inf logits mask classes, also a rank's whole slice for a row; a masked ignored row."""
    ctx = Ctx(rank, world)
    z, y, w = problem()
    z[0, [0, 4, 12]] = -torch.inf
    z[2, :] = -torch.inf
    z[2, 6] = 0.5  # one class left: every rank but its owner holds only -inf in row 2
    y[2] = 6
    z[5, :] = -torch.inf  # ignored (y[5] = -100)
    y[0] = 7
    for reduction in ("mean", "none"):
        for name in ("plain", "weight", "z_loss", "softcap"):
            compare_logits(ctx, f"{reduction} {name}", z, y, w, TOL[torch.float64], reduction=reduction,
                           **OPTIONS[name])  # fmt: skip
    z[3, 4] = torch.nan  # NaN in, NaN out for that row; the other rows keep their values
    for reduction in ("sum", "none"):
        compare_logits(ctx, f"NaN {reduction}", z, y, w, TOL[torch.float64], reduction=reduction, **OPTIONS["all"])
    ctx.done()


@check()
def batch_shape_class_last(rank, world):
    """(B, T, V_r) logits, class axis last, as an LLM's; 'none' returns (B, T)."""
    ctx = Ctx(rank, world)
    z, y, w = problem(n=6)
    zb = ctx.local(z).reshape(2, 3, ctx.n).clone().requires_grad_(True)
    loss = sxd.vocab_parallel_cross_entropy(zb, y.reshape(2, 3), reduction="none", label_smoothing=0.1)
    zf = z.clone().requires_grad_(True)
    ref = sxt.cross_entropy(zf, y, reduction="none", label_smoothing=0.1)
    v = row_weights((6,), 3, torch.float64)
    (loss * v.reshape(2, 3)).sum().backward()
    (ref * v).sum().backward()
    ctx.close("loss (2, 3)", loss.detach(), ref.reshape(2, 3).detach(), TOL[torch.float64])
    ctx.close("gradient slice", zb.grad.reshape(6, ctx.n), ctx.local(zf.grad), TOL[torch.float64])
    ctx.done()


@check()
def explicit_vocab_start(rank, world):
    """vocab_start given: rank r holds the slice that rank (world - 1 - r) would hold by default."""
    ctx = Ctx(rank, world)
    sizes = SIZES[world][::-1]
    ctx.start, ctx.n = sum(sizes[:rank]), sizes[rank]
    z, y, w = problem(seed=7)
    zl = ctx.local(z).clone().requires_grad_(True)
    loss = sxd.vocab_parallel_cross_entropy(zl, y, vocab_start=ctx.start, weight=ctx.local(w), label_smoothing=0.2)
    loss.backward()
    zf = z.clone().requires_grad_(True)
    ref = sxt.cross_entropy(zf, y, w, label_smoothing=0.2)
    ref.backward()
    ctx.close("loss", loss.detach(), ref.detach(), TOL[torch.float64])
    ctx.close("gradient slice", zl.grad, ctx.local(zf.grad), TOL[torch.float64])
    ctx.done()


@check(2)  # the formulas; world 4 repeats the comparisons with the single-process loss
def finite_differences(rank, world):
    """The analytic local slice vs 4th-order finite differences of the distributed loss itself.

    Every rank perturbs the same entry of the full (tiny, float64) logits at
    each step and evaluates the distributed loss on its slice, so the
    collectives stay in step; it compares the columns of its own slice.
    """
    ctx = Ctx(rank, world)
    z, y, w = problem(n=3, ignored=(1,))
    y[0] = 3  # a class of weight 0
    cases = [
        dict(weight=True, label_smoothing=0.1, z_loss=0.05, softcap=2.0),
        dict(reduction="none", label_smoothing=0.2, z_loss=0.01),
    ]
    for options in cases:
        options = dict(options)
        weight = ctx.local(w) if options.pop("weight", False) else None
        v = row_weights((3,), 5, torch.float64)

        def f(full, options=options, weight=weight, v=v):
            loss = sxd.vocab_parallel_cross_entropy(ctx.local(torch.from_numpy(full)), y, weight=weight, **options)
            return float((loss * v).sum())

        numeric = torch.from_numpy(finite_difference_grad(f, z.numpy()))
        zl = ctx.local(z).clone().requires_grad_(True)
        (sxd.vocab_parallel_cross_entropy(zl, y, weight=weight, **options) * v).sum().backward()
        ctx.close(f"logits {options}", zl.grad, ctx.local(numeric), dict(rtol=1e-7, atol=1e-9))

    # The linear head: dx (all-reduced over the ranks), this rank's rows of dW and db.
    x = torch.randn(3, 2, generator=gen(11), dtype=torch.float64)
    W = torch.randn(13, 2, generator=gen(12), dtype=torch.float64)
    b = torch.randn(13, generator=gen(13), dtype=torch.float64)
    options = dict(label_smoothing=0.1, z_loss=0.05, softcap=3.0)

    def head(xx, WW, bb):
        return sxd.vocab_parallel_linear_cross_entropy(xx, ctx.local(WW, 0), y, ctx.local(bb), **options)

    num_x = finite_difference_grad(lambda a: float(head(torch.from_numpy(a), W, b)), x.numpy())
    num_w = finite_difference_grad(lambda a: float(head(x, torch.from_numpy(a), b)), W.numpy())
    num_b = finite_difference_grad(lambda a: float(head(x, W, torch.from_numpy(a))), b.numpy())
    xs = x.clone().requires_grad_(True)
    Wl = ctx.local(W, 0).clone().requires_grad_(True)
    bl = ctx.local(b).clone().requires_grad_(True)
    sxd.vocab_parallel_linear_cross_entropy(xs, Wl, y, bl, **options).backward()
    tol = dict(rtol=1e-7, atol=1e-9)
    ctx.close("linear dx", xs.grad, torch.from_numpy(num_x), tol)
    ctx.close("linear dW rows", Wl.grad, ctx.local(torch.from_numpy(num_w), 0), tol)
    ctx.close("linear db", bl.grad, ctx.local(torch.from_numpy(num_b)), tol)
    ctx.done()


LINEAR_OPTIONS = {
    "plain": {},
    "smoothing_z_loss": dict(label_smoothing=0.2, z_loss=1e-2),
    "softcap": dict(softcap=3.0),
    "all": dict(label_smoothing=0.1, z_loss=1e-2, softcap=4.0, ignore_index=-1),
}


def compare_linear(ctx, label, x, W, b, y, tol, *, shift=False, **options):
    if options.get("ignore_index", -100) != -100:
        y = torch.where(y == -100, options["ignore_index"], y)
    leaves = [x.clone(), ctx.local(W, 0).clone()] + ([ctx.local(b).clone()] if b is not None else [])
    leaves = [t.requires_grad_(True) for t in leaves]
    loss = sxd.vocab_parallel_linear_cross_entropy(
        leaves[0], leaves[1], y, leaves[2] if b is not None else None, shift=shift, **options
    )
    full = [t.clone().requires_grad_(True) for t in ((x, W) + ((b,) if b is not None else ()))]
    options.pop("chunk_size", None)
    ref = sxt.linear_cross_entropy(full[0], full[1], y, full[2] if b is not None else None, shift=shift, **options)
    v = row_weights(loss.shape, 6, loss.dtype)
    grads = torch.autograd.grad((loss * v).sum(), leaves)
    ref_grads = torch.autograd.grad((ref * v).sum(), full)
    ctx.close(f"{label}: loss", loss.detach(), ref.detach(), tol)
    ctx.close(f"{label}: dx", grads[0], ref_grads[0], tol)
    ctx.close(f"{label}: dW rows", grads[1], ctx.local(ref_grads[1], 0), tol)
    if b is not None:
        ctx.close(f"{label}: db", grads[2], ctx.local(ref_grads[2]), tol)


def linear_problem(dtype, n=10, d=6, seed=20, bias=True):
    z, y, _ = problem(n=n, seed=seed, ignored=(2, 7))
    x = torch.randn(n, d, generator=gen(seed + 5), dtype=torch.float64).to(dtype)
    W = (torch.randn(13, d, generator=gen(seed + 6), dtype=torch.float64) / d**0.5 * 3).to(dtype)
    b = torch.randn(13, generator=gen(seed + 7), dtype=torch.float64).to(dtype) if bias else None
    return x, W, b, y


def linear_matrix(ctx, dtype):
    x, W, b, y = linear_problem(dtype)
    for reduction in ("mean", "sum", "none"):
        for name, options in LINEAR_OPTIONS.items():
            for chunk_size in (None, 3):
                compare_linear(ctx, f"{dtype} {reduction} {name} chunk_size={chunk_size}", x, W, b, y, TOL[dtype],
                               reduction=reduction, chunk_size=chunk_size, **options)  # fmt: skip


@check()
def linear_float64(rank, world):
    ctx = Ctx(rank, world)
    linear_matrix(ctx, torch.float64)
    x, W, _, y = linear_problem(torch.float64, bias=False)
    compare_linear(ctx, "no bias", x, W, None, y, TOL[torch.float64], label_smoothing=0.1)
    ctx.done()


@check()
def linear_float32(rank, world):
    ctx = Ctx(rank, world)
    linear_matrix(ctx, torch.float32)
    ctx.done()


@check()
def linear_vocab_chunks(rank, world):
    """Blocks of 4 rows and chunks of 3 classes of the local slice (the online log-sum-exp)."""
    ctx = Ctx(rank, world)
    x, W, b, y = linear_problem(torch.float64, n=11)
    original = sxd.plan_blocks
    sxd.plan_blocks = lambda *args, **kwargs: (4, 3)
    try:
        for reduction in ("mean", "none"):
            for name, options in LINEAR_OPTIONS.items():
                compare_linear(ctx, f"{reduction} {name}", x, W, b, y, TOL[torch.float64], reduction=reduction,
                               **options)  # fmt: skip
    finally:
        sxd.plan_blocks = original
    ctx.done()


@check()
def linear_shift_bfloat16_retain_graph(rank, world):
    ctx = Ctx(rank, world)
    x, W, b, y = linear_problem(torch.float64, n=10)
    for reduction in ("mean", "none"):
        compare_linear(ctx, f"shift {reduction}", x.reshape(2, 5, -1), W, b, y.reshape(2, 5), TOL[torch.float64],
                       shift=True, reduction=reduction, label_smoothing=0.1)  # fmt: skip
    xb, Wb, bb, yb = (t.to(torch.bfloat16) if t.is_floating_point() else t for t in (x, W, b, y))
    compare_linear(ctx, "bfloat16", xb, Wb, bb, yb, TOL[torch.bfloat16], z_loss=1e-3)
    # Two backwards through one graph (retain_graph): the same gradients twice, not the all-reduce applied twice.
    xs = x.clone().requires_grad_(True)
    loss = sxd.vocab_parallel_linear_cross_entropy(xs, ctx.local(W, 0), y, ctx.local(b))
    first = torch.autograd.grad(loss, xs, retain_graph=True)[0]
    second = torch.autograd.grad(loss, xs)[0]
    ctx.close("second backward", second, first, dict(rtol=0, atol=0))
    with torch.no_grad():
        loss = sxd.vocab_parallel_linear_cross_entropy(xs, ctx.local(W, 0), y, ctx.local(b))
    ctx.close("under no_grad", loss, sxt.linear_cross_entropy(x, W, y, b), TOL[torch.float64])
    ctx.done()


@check(4)
def subgroups(rank, world):
    """Two groups of two ranks, each splitting its own vocabulary; and a rank outside the group."""
    groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]  # every rank creates every group
    mine, other = groups[rank // 2], groups[1 - rank // 2]
    ctx = Ctx(rank % 2, 2, sizes=[6, 7], group=mine)
    z, y, w = problem(seed=30 + rank // 2)
    compare_logits(ctx, "subgroup", z, y, w, TOL[torch.float64], **OPTIONS["all"])
    x, W, b, y = linear_problem(torch.float64, seed=40 + rank // 2)
    x2, W2, b2 = x.clone().requires_grad_(True), ctx.local(W, 0).clone().requires_grad_(True), ctx.local(b)
    loss = sxd.vocab_parallel_linear_cross_entropy(x2, W2, y, b2, mine)
    loss.backward()
    xf, Wf = x.clone().requires_grad_(True), W.clone().requires_grad_(True)
    ref = sxt.linear_cross_entropy(xf, Wf, y, b)
    ref.backward()
    ctx.close("subgroup linear loss", loss.detach(), ref.detach(), TOL[torch.float64])
    ctx.close("subgroup linear dx", x2.grad, xf.grad, TOL[torch.float64])
    ctx.close("subgroup linear dW", W2.grad, ctx.local(Wf.grad, 0), TOL[torch.float64])
    ctx.raises("not a member", ValueError, "not a member of the group",
               lambda: sxd.vocab_parallel_cross_entropy(ctx.local(z), y, other))  # fmt: skip
    ctx.done()


@check()
def errors_name_the_argument(rank, world):
    """Bad arguments raise ValueError/TypeError on every rank (no rank left waiting), then all is well."""
    ctx = Ctx(rank, world)
    last = world - 1
    z, y, w = problem()
    zl = ctx.local(z)
    vp = sxd.vocab_parallel_cross_entropy
    ctx.raises(
        "target >= V",
        ValueError,
        r"target must hold class indices in \[0, 13\).* got 13",
        lambda: vp(zl, torch.where(y == -100, 13, y)),
    )
    ctx.raises("negative target", ValueError, r"in \[0, 13\).* got -5", lambda: vp(zl, torch.where(y == -100, -5, y)))
    ctx.raises(
        "probabilities",
        TypeError,
        "class indices only.*probability targets are not supported",
        lambda: vp(zl, torch.softmax(z, 1)),
    )
    ctx.raises("int logits", TypeError, "local_logits must have a floating dtype", lambda: vp(zl.long(), y))
    ctx.raises(
        "option", ValueError, r"label_smoothing must lie in \[0, 1\], got 2", lambda: vp(zl, y, label_smoothing=2)
    )
    ctx.raises(
        "reduction differs",
        ValueError,
        "reduction must be the same on every rank of the group, got rank 0: 'mean', rank 1: 'sum'",
        lambda: vp(zl, y, reduction="mean" if rank == 0 else "sum"),
    )
    wrong_rank = f"rank {last} of the group rejected its arguments"
    ctx.raises(
        "one rank's target shape",
        ValueError,
        r"target must have shape \(9,\)" if rank == last else wrong_rank,
        lambda: vp(zl, y[:-1] if rank == last else y),
    )
    ctx.raises(
        "one rank's weight shape",
        ValueError,
        rf"weight must have shape \({ctx.n},\)" if rank == last else wrong_rank,
        lambda: vp(zl, y, weight=ctx.local(w)[:-1] if rank == last else ctx.local(w)),
    )
    y_other = y.clone()
    y_other[0] = (y[0] + 1) % 13
    ctx.raises(
        "targets differ",
        ValueError,
        r"target must be the same on every rank.*ranks \[1\] hold other",
        lambda: vp(zl, y_other if rank == 1 else y),
    )
    ctx.raises(
        "slices overlap",
        ValueError,
        r"must tile \[0, V\) without gaps or overlaps",
        lambda: vp(zl, y, vocab_start=max(0, ctx.start - 1)),
    )
    ctx.raises(
        "vocab_start on some ranks",
        ValueError,
        "vocab_start .given on every rank or on none. must be the same",
        lambda: vp(zl, y, vocab_start=ctx.start if rank == 0 else None),
    )
    ctx.raises(
        "vocab_start type",
        TypeError if rank == 0 else ValueError,
        "vocab_start must be an integer" if rank == 0 else "rank 0 of the group rejected",
        lambda: vp(zl, y, vocab_start=1.5 if rank == 0 else ctx.start),
    )
    ctx.raises(
        "weight requires grad",
        ValueError,
        "weight requires grad",
        lambda: vp(zl, y, weight=ctx.local(w).clone().requires_grad_(True)),
    )
    ctx.raises(
        "negative weight",
        ValueError,
        "weight must be finite and non-negative" if rank == 0 else "rank 0 of the group rejected",
        lambda: vp(zl, y, weight=-ctx.local(w) if rank == 0 else ctx.local(w)),
    )
    masked = z.clone()
    masked[0] = -torch.inf
    ctx.raises(
        "masked row",
        ValueError,
        r"^row 0 of local_logits .* is -inf for every class.*ignore_index=-100",
        lambda: vp(ctx.local(masked), y),
    )

    lin = sxd.vocab_parallel_linear_cross_entropy
    x, W, b, y = linear_problem(torch.float64)
    Wl = ctx.local(W, 0)
    ctx.raises(
        "linear dtypes", TypeError, "x, local_weight and local_bias must have one dtype", lambda: lin(x, Wl.float(), y)
    )
    ctx.raises(
        "linear x.requires_grad differs",
        ValueError,
        r"x.requires_grad .* must be the same on every rank",
        lambda: lin(x.clone().requires_grad_(rank == 0), Wl, y),
    )
    ctx.raises(
        "linear weight shape", ValueError, r"local_weight must have shape \(V_local, 6\)", lambda: lin(x, Wl[:, :-1], y)
    )
    ctx.raises("linear target", ValueError, r"in \[0, 13\).* got 13", lambda: lin(x, Wl, torch.where(y == -100, 13, y)))

    # The group is still in step: a correct call gives the right answer.
    z, y, w = problem()
    compare_logits(ctx, "after the errors", z, y, w, TOL[torch.float64], **OPTIONS["all"])
    ctx.done()


@check()
def second_order_is_refused(rank, world):
    """create_graph=True and torch.func raise a RuntimeError saying so (the stored gradient would give zeros)."""
    ctx = Ctx(rank, world)
    z, y, _ = problem()
    x, W, b, yl = linear_problem(torch.float64)

    def grad_of_grad(loss, leaf):
        (g,) = torch.autograd.grad(loss, leaf, create_graph=True)
        return g

    zl = ctx.local(z).clone().requires_grad_(True)
    ctx.raises(
        "logits, create_graph",
        RuntimeError,
        r"vocab_parallel_cross_entropy has no second-order gradient",
        lambda: grad_of_grad(sxd.vocab_parallel_cross_entropy(zl, y, ctx.group), zl),
    )
    xl = x.clone().requires_grad_(True)
    ctx.raises(
        "linear, create_graph",
        RuntimeError,
        r"vocab_parallel_linear_cross_entropy has no second-order gradient",
        lambda: grad_of_grad(sxd.vocab_parallel_linear_cross_entropy(xl, ctx.local(W, 0), yl), xl),
    )
    ctx.raises(
        "logits, torch.func",
        RuntimeError,
        r"vocab_parallel_cross_entropy has no torch.func support",
        lambda: torch.func.grad(lambda t: sxd.vocab_parallel_cross_entropy(t, y, ctx.group))(zl.detach()),
    )
    ctx.raises(
        "linear, torch.func",
        RuntimeError,
        r"vocab_parallel_linear_cross_entropy has no torch.func support",
        lambda: torch.func.grad(lambda t: sxd.vocab_parallel_linear_cross_entropy(t, ctx.local(W, 0), yl))(x),
    )
    # The first-order backward is unaffected, and the group still in step.
    compare_logits(ctx, "after the refusals", z, y, problem()[2], TOL[torch.float64], **OPTIONS["all"])
    ctx.done()


def _worker(rank: str, world: str, store: str, out: str) -> None:
    """Entry point of one rank (a subprocess): run every check for this world, write the results."""
    rank, world = int(rank), int(world)
    torch.set_num_threads(1)  # 2 to 4 processes share 2 cores
    dist.init_process_group(
        "gloo", store=dist.FileStore(store, world), rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )  # fmt: skip
    results = {}
    for name, (fn, worlds) in CHECKS.items():
        if world not in worlds:
            continue
        t0 = time.perf_counter()
        try:
            fn(rank, world)
            results[name] = {"ok": True}
        except Exception:  # noqa: BLE001
            results[name] = {"ok": False, "error": traceback.format_exc()}
        results[name]["seconds"] = round(time.perf_counter() - t0, 3)
        Path(out).write_text(json.dumps(results))  # what is done so far, should a later check hang
    dist.destroy_process_group()


# --------------------------------------------------------------------------- the pytest side

_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); import test_torch_distributed as t; t._worker(*sys.argv[2:])"


def _run_world(world: int, folder: Path) -> tuple[dict, dict]:
    """Start ``world`` ranks, wait for them (at most WORLD_TIMEOUT_S), return their results and output."""
    # Compile (or load) the fused CPU kernels once here, so that the ranks load them from numba's cache.
    sxt.cross_entropy(torch.zeros(2, 3, requires_grad=True), torch.tensor([0, 1])).backward()
    sxt.cross_entropy(torch.zeros(2, 3, dtype=torch.float64, requires_grad=True), torch.tensor([0, 1])).backward()
    src = str(Path(softxent.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([src, tests] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    procs, logs = [], []
    for rank in range(world):
        log = open(folder / f"rank{rank}.log", "w")  # noqa: SIM115  (closed below)
        logs.append(log)
        cmd = [sys.executable, "-c", _WORKER, tests, str(rank), str(world), str(folder / "store"),
               str(folder / f"rank{rank}.json")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder))
    deadline = time.monotonic() + WORLD_TIMEOUT_S
    hung = False
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = True
            break
    if hung:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for log in logs:
        log.close()
    results, output = {}, {}
    for rank in range(world):
        path = folder / f"rank{rank}.json"
        results[rank] = json.loads(path.read_text()) if path.exists() else {}
        text = (folder / f"rank{rank}.log").read_text()
        status = f"[killed after {WORLD_TIMEOUT_S} s] " if hung else ""
        output[rank] = f"{status}exit {procs[rank].returncode}\n{text}"
    return results, output


@pytest.fixture(scope="module")
def world_2(tmp_path_factory):
    return _run_world(2, tmp_path_factory.mktemp("world2"))


@pytest.fixture(scope="module")
def world_4(tmp_path_factory):
    return _run_world(4, tmp_path_factory.mktemp("world4"))


@pytest.mark.parametrize(
    "world,name", [(w, name) for name, (_, worlds) in CHECKS.items() for w in worlds], ids=lambda v: str(v)
)
def test_distributed(request, world, name):
    results, output = request.getfixturevalue(f"world_{world}")
    problems = []
    for rank in range(world):
        result = results[rank].get(name)
        if result is None:
            problems.append(f"rank {rank} did not finish this check; its output:\n{output[rank][-4000:]}")
        elif not result["ok"]:
            problems.append(f"rank {rank}:\n{result['error']}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_group_not_initialised():
    if dist.is_initialized():  # pragma: no cover - nothing in this process initialises one
        pytest.skip("a default process group exists in this process")
    cases = [
        (sxd.vocab_parallel_cross_entropy, (torch.zeros(2, 3), torch.tensor([0, 1]))),
        (sxd.vocab_parallel_linear_cross_entropy, (torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1]))),
    ]
    for fn, args in cases:
        with pytest.raises(ValueError, match=r"group=None .*call torch.distributed.init_process_group"):
            fn(*args)


def test_group_type():
    with pytest.raises(TypeError, match=r"group must be a torch.distributed ProcessGroup or None \(.*\), got str"):
        sxd.vocab_parallel_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), "tp")
