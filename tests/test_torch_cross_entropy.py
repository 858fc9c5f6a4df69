"""softxent.torch.cross_entropy against independent oracles.

Oracles: ``torch.nn.functional.cross_entropy`` in float64 (every shared
argument), torch autograd of the naive formula for the extras (z-loss,
soft-capping, log-sum-exp), ``torch.autograd.gradcheck`` (finite differences in
float64), and softxent's exact NumPy API. Every equivalence test runs on three
paths: the fused kernel (``kernel``), the same custom op on the exact NumPy
path (``numpy``, ``SOFTXENT_REFERENCE=1``) and the plain-torch fallback that
other devices use (``plain``).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import softxent as sx  # noqa: E402
import softxent.torch as sxt  # noqa: E402
from softxent.torch import _backends  # noqa: E402

# Tolerances against a float64 oracle, tied to the input dtype's epsilon: the
# float32/float64 results are the exact value rounded (plus the kernels' few
# ulps); bfloat16 is rounded once to 8 bits.
TOL = {
    torch.float64: dict(rtol=64 * torch.finfo(torch.float64).eps, atol=64 * torch.finfo(torch.float64).eps),
    torch.float32: dict(rtol=16 * torch.finfo(torch.float32).eps, atol=16 * torch.finfo(torch.float32).eps),
    torch.bfloat16: dict(rtol=2 * torch.finfo(torch.bfloat16).eps, atol=2 * torch.finfo(torch.bfloat16).eps),
    torch.float16: dict(rtol=2 * torch.finfo(torch.float16).eps, atol=2 * torch.finfo(torch.float16).eps),
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
PATHS = ["kernel", "numpy", "plain"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Run a test on the fused kernel, on the fused op's exact NumPy path, and on plain torch."""
    if request.param == "numpy":
        monkeypatch.setenv("SOFTXENT_REFERENCE", "1")
    else:
        monkeypatch.delenv("SOFTXENT_REFERENCE", raising=False)
    if request.param == "plain":
        monkeypatch.setattr(_backends, "FUSED_BACKENDS", {})
    return request.param


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def logits_of(shape, dtype=torch.float64, seed=0, scale=3.0):
    return (torch.randn(shape, generator=gen(seed), dtype=torch.float64) * scale).to(dtype)


def index_target(batch, n_classes, seed=1, ignore_frac=0.25, ignore_index=-100):
    y = torch.randint(0, n_classes, batch, generator=gen(seed))
    if ignore_frac:
        drop = torch.rand(batch, generator=gen(seed + 1)) < ignore_frac
        y = torch.where(drop, torch.full_like(y, ignore_index), y)
    return y


def prob_target(shape, class_axis, seed=2):
    p = torch.rand(shape, generator=gen(seed), dtype=torch.float64) ** 3
    return p / p.sum(dim=class_axis, keepdim=True)


def loss_and_grad(fn, z, *args, **kwargs):
    """Loss and d(sum of loss * random weights)/dz (the weights test the per-row backward)."""
    z = z.detach().clone().requires_grad_(True)
    out = fn(z, *args, **kwargs)
    loss = out[0] if isinstance(out, tuple) else out
    # Weights exact in every dtype (8 significant bits), so that oracles in float64 see the same ones.
    v = (torch.rand(loss.shape, generator=gen(7), dtype=torch.float64) + 0.5).to(torch.bfloat16).to(loss.dtype)
    (g,) = torch.autograd.grad((loss * v).sum(), z)
    return loss.detach(), g


def naive(z, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *, z_loss=0.0,
          softcap=None, return_lse=False):  # fmt: skip
    """The extras written with torch autograd on F.cross_entropy: the independent oracle."""
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    class_axis = 0 if z.dim() == 1 else 1
    loss = F.cross_entropy(z, target, weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)  # fmt: skip
    lse = torch.logsumexp(z, dim=class_axis)
    if z_loss:
        kept = torch.ones_like(lse, dtype=torch.bool) if target.is_floating_point() else target != ignore_index
        rows = torch.where(kept, z_loss * lse**2, 0.0)
        if reduction == "none":
            loss = loss + rows
        elif reduction == "sum":
            loss = loss + rows.sum()
        else:
            loss = loss + rows.sum() / kept.sum()
    return (loss, lse) if return_lse else loss


# --------------------------------------------------------------------------- equivalence matrix

SHAPES = [(7, 5), (5, 6, 3), (3, 4, 2, 3), (6,)]  # (N, C), (N, C, d1), (N, C, d1, d2), unbatched (C,)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_matches_torch_cross_entropy(path, dtype, shape, target_kind):
    """Every combination of weight, label smoothing, ignored rows and reduction, forward and backward."""
    class_axis = 0 if len(shape) == 1 else 1
    n_classes = shape[class_axis]
    batch = shape[:class_axis] + shape[class_axis + 1 :]
    z = logits_of(shape, dtype)
    w = torch.rand(n_classes, generator=gen(3), dtype=torch.float64) + 0.1
    for weight, smoothing, reduction, ignore in itertools.product(
        [None, w], [0.0, 0.3], ["mean", "sum", "none"], [False, True]
    ):
        if target_kind == "index":
            y = index_target(batch, n_classes, ignore_frac=0.3 if ignore else 0.0)
            if ignore and batch and bool((y == -100).all()):
                y.view(-1)[0] = 1  # torch's mean would be NaN
            y_ours, y_ref = y, y
        else:
            if ignore:
                continue
            p = prob_target(shape, class_axis)
            y_ours, y_ref = p.to(dtype), p.to(dtype).double()
        kwargs = dict(reduction=reduction, label_smoothing=smoothing)
        loss, grad = loss_and_grad(sxt.cross_entropy, z, y_ours, None if weight is None else weight.to(dtype), **kwargs)
        ref_loss, ref_grad = loss_and_grad(F.cross_entropy, z.double(), y_ref, weight, **kwargs)
        assert loss.dtype == dtype and grad.dtype == dtype
        assert loss.shape == ref_loss.shape
        tol = TOL[dtype]
        case = f"weight={weight is not None}, smoothing={smoothing}, {reduction}, ignore={ignore}"
        torch.testing.assert_close(loss.double(), ref_loss, **tol, msg=lambda m, case=case: f"loss, {case}: {m}")
        torch.testing.assert_close(grad.double(), ref_grad, **tol, msg=lambda m, case=case: f"grad, {case}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("options", [
    dict(z_loss=1e-2), dict(softcap=2.0), dict(z_loss=0.1, softcap=1.5, label_smoothing=0.2),
    dict(z_loss=0.05, reduction="sum"), dict(softcap=3.0, reduction="none", label_smoothing=0.1),
], ids=str)  # fmt: skip
def test_extras_match_naive_autograd(path, dtype, options):
    """z-loss, soft-capping and the lse: torch autograd of the naive formula (class weights included)."""
    w = torch.rand(5, generator=gen(3), dtype=torch.float64) + 0.1
    for shape, target_kind in [((9, 5), "index"), ((4, 5, 3), "index"), ((6, 5), "prob")]:
        z = logits_of(shape, dtype)
        batch = shape[:1] + shape[2:]
        y = index_target(batch, 5) if target_kind == "index" else prob_target(shape, 1).to(dtype)
        loss, grad = loss_and_grad(sxt.cross_entropy, z, y, w.to(dtype), **options)
        ref_loss, ref_grad = loss_and_grad(naive, z.double(), y if target_kind == "index" else y.double(), w, **options)
        torch.testing.assert_close(loss.double(), ref_loss, **TOL[dtype])
        torch.testing.assert_close(grad.double(), ref_grad, **TOL[dtype])
        # The lse is differentiable too: gradient of sum(loss) + sum(lse * v).
        zz = z.detach().clone().requires_grad_(True)
        _, lse = sxt.cross_entropy(zz, y, w.to(dtype), **options, return_lse=True)
        z2 = z.double().requires_grad_(True)
        _, ref_lse = naive(z2, y if target_kind == "index" else y.double(), w, **options, return_lse=True)
        torch.testing.assert_close(lse.double(), ref_lse, **TOL[dtype])
        v = torch.linspace(-1, 2, lse.numel(), dtype=torch.float64).reshape(lse.shape)
        (g,) = torch.autograd.grad((lse * v.to(lse.dtype)).sum(), zz)
        (ref_g,) = torch.autograd.grad((ref_lse * v).sum(), z2)
        torch.testing.assert_close(g.double(), ref_g, **TOL[dtype])


def test_matches_numpy_oracle():
    """The fused path equals softxent's exact NumPy API (float64) on the same data."""
    z = logits_of((6, 7, 4))  # (N, C, d1): class axis 1
    y = index_target((6, 4), 7)
    w = torch.rand(7, generator=gen(5), dtype=torch.float64)
    loss, grad = loss_and_grad(lambda t: sxt.cross_entropy(t, y, w, label_smoothing=0.1, reduction="sum"), z)
    ref_loss, ref_grad = sx.softmax_cross_entropy_with_grad(
        z.numpy(), y.numpy(), axis=1, weight=w.numpy(), label_smoothing=0.1, reduction="sum"
    )
    v = (torch.rand((), generator=gen(7), dtype=torch.float64) + 0.5).to(torch.bfloat16).double()  # loss_and_grad's
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=1e-13)
    np.testing.assert_allclose(grad.numpy(), ref_grad * v.item(), rtol=1e-12, atol=1e-15)


def test_large_sequence_shape():
    """(3, 423, 32000) float32 logits of a language model, as (N, C, d1) = (3, 32000, 423)."""
    z = torch.randn(3, 423, 32000, generator=gen(11)) * 2
    y = torch.randint(0, 32000, (3, 423), generator=gen(12))
    y[1, :50] = -100
    zt = z.transpose(1, 2)  # (N, C, d1) view: the rows are contiguous again after moving C last
    a = zt.detach().requires_grad_(True)
    loss = sxt.cross_entropy(a, y, label_smoothing=0.1)
    loss.backward()
    b = zt.detach().double().requires_grad_(True)
    ref = F.cross_entropy(b, y, label_smoothing=0.1)
    ref.backward()
    torch.testing.assert_close(loss.double(), ref, rtol=2e-6, atol=0)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=1e-6 / y.numel() * 32)


# --------------------------------------------------------------------------- finite differences


GRADCHECK_CASES = [
    dict(),
    dict(reduction="none"),
    dict(reduction="sum", label_smoothing=0.2),
    dict(weight=True, label_smoothing=0.1),
    dict(z_loss=0.3),
    dict(softcap=1.5),
    dict(z_loss=0.2, softcap=2.0, label_smoothing=0.3, weight=True, reduction="none"),
    dict(prob=True, weight=True, label_smoothing=0.2, z_loss=0.1, softcap=2.5),
    dict(return_lse=True, z_loss=0.1, softcap=2.0),
    dict(shape=(3, 4, 2), z_loss=0.1, reduction="none"),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=str)
def test_gradcheck(path, case):
    """torch.autograd.gradcheck (central finite differences, float64) on every backward rule."""
    case = dict(case)
    shape = case.pop("shape", (4, 5))
    z = logits_of(shape, seed=4).requires_grad_(True)
    batch = shape[:1] + shape[2:]
    y = prob_target(shape, 1) if case.pop("prob", False) else index_target(batch, shape[1], ignore_frac=0.3)
    w = torch.rand(shape[1], generator=gen(6), dtype=torch.float64) + 0.2 if case.pop("weight", False) else None
    assert torch.autograd.gradcheck(lambda t: sxt.cross_entropy(t, y, w, **case), (z,))


def test_gradcheck_probability_target_requires_grad():
    """A probability target that requires grad is differentiated too (plain-torch path), as in torch."""
    z = logits_of((4, 5)).requires_grad_(True)
    p = prob_target((4, 5), 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: sxt.cross_entropy(a, b, label_smoothing=0.1), (z, p))
    g_ours = torch.autograd.grad(sxt.cross_entropy(z, p), p)[0]
    g_torch = torch.autograd.grad(F.cross_entropy(z, p), p)[0]
    torch.testing.assert_close(g_ours, g_torch)


# --------------------------------------------------------------------------- edge cases


def test_all_ignored_gives_zero_not_nan(path):
    """All rows ignored: loss 0 and gradient 0 (torch: NaN), for every reduction and with z-loss."""
    z = logits_of((4, 3)).requires_grad_(True)
    y = torch.full((4,), -100)
    for reduction in ["mean", "sum", "none"]:
        loss = sxt.cross_entropy(z, y, reduction=reduction, z_loss=0.1, label_smoothing=0.1)
        (g,) = torch.autograd.grad(loss.sum(), z)
        assert torch.equal(loss, torch.zeros_like(loss))
        assert torch.equal(g, torch.zeros_like(g))
    assert torch.isnan(F.cross_entropy(z, y))  # the documented difference
    empty = torch.zeros((0, 3), dtype=torch.float64, requires_grad=True)
    loss = sxt.cross_entropy(empty, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and empty.grad.shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_extreme_logits(path, dtype):
    """±1e4 logits (exp overflows without the max shift) and confident rows keep exact tiny gradients."""
    z = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 1.0], [40.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    y = torch.tensor([0, 2, 0, 1])
    loss, grad = loss_and_grad(sxt.cross_entropy, z, y, reduction="none")
    ref_loss, ref_grad = loss_and_grad(F.cross_entropy, z.double(), y, reduction="none")
    torch.testing.assert_close(loss.double(), ref_loss, **TOL[dtype])
    torch.testing.assert_close(grad.double(), ref_grad, **TOL[dtype])
    # Row 2 is confident and correct: a_y - 1 = -2 e^-40 (about -8.5e-18), not 0.
    v = float((torch.rand((4,), generator=gen(7), dtype=torch.float64)[2] + 0.5).to(torch.bfloat16))  # loss_and_grad's
    assert grad[2, 0].item() == pytest.approx(-2 * math.exp(-40) * v, rel=1e-5)


def test_masked_classes(path):
    """-inf logits mask classes: masked rows that are ignored give 0 (no NaN); others raise."""
    z = logits_of((4, 5))
    z[0, 3] = -math.inf
    z[1, :] = -math.inf  # fully masked row
    y = torch.tensor([1, -100, 4, 0])
    loss, grad = loss_and_grad(sxt.cross_entropy, z, y, reduction="none")
    zz = z.clone()
    zz[1] = 0.0
    ref_loss, ref_grad = loss_and_grad(F.cross_entropy, zz, y, reduction="none")
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)
    assert grad[0, 3] == 0 and torch.isfinite(grad).all()
    # In torch's words on every path (the NumPy layer's would say logits/label/sample_weight).
    for y_bad, requires_grad in ((torch.tensor([1, 2, 4, 0]), False), (torch.tensor([1, 2, 4, 0]), True)):
        with pytest.raises(ValueError, match=r"^row 1 of input .* -inf for every class.* its target asks for a "
                           r"loss; give it ignore_index=-100 to skip it$"):  # fmt: skip
            sxt.cross_entropy(z.clone().requires_grad_(requires_grad), y_bad)
    with pytest.raises(ValueError, match=r"row 1 of input .* give its target row all zeros"):
        sxt.cross_entropy(z, torch.softmax(torch.ones(4, 5), 1))
    # Probability targets: a masked class with target 0 adds nothing (torch gives NaN).
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 2.0, -math.inf, 0.0, 0.5]], dtype=torch.float64)
    expected = sx.softmax_cross_entropy(z1.numpy(), p.numpy())
    assert sxt.cross_entropy(z1, p).item() == pytest.approx(float(expected), rel=1e-14)


def test_nan_row_stays_in_its_row(path):
    z = logits_of((3, 4))
    z[1, 2] = math.nan
    loss = sxt.cross_entropy(z, torch.tensor([0, 1, 2]), reduction="none")
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision(dtype):
    """float16/bfloat16: float32 math inside, results in the input's dtype, rounded once."""
    z = logits_of((64, 33), dtype, scale=4.0)
    y = index_target((64,), 33)
    loss, grad = loss_and_grad(sxt.cross_entropy, z, y, label_smoothing=0.1, z_loss=1e-3)
    ref_loss, ref_grad = loss_and_grad(naive, z.double(), y, label_smoothing=0.1, z_loss=1e-3)
    assert loss.dtype == dtype and grad.dtype == dtype
    # The loss is rounded once (relative error <= eps/2, plus float32's tiny error); the
    # gradient twice: stored in the input's dtype, then scaled by grad_output in it.
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(loss.double(), ref_loss, rtol=0.5 * eps + 1e-6, atol=0)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1.0 * eps + 1e-6, atol=1e-7)


def test_autocast():
    """Under CPU autocast a bf16 head feeds the loss; like torch, the loss is computed and returned in float32."""
    lin = torch.nn.Linear(16, 10)
    x = torch.randn(8, 16, generator=gen(1))
    y = torch.randint(0, 10, (8,), generator=gen(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(x)
        assert logits.dtype == torch.bfloat16
        ours = sxt.cross_entropy(logits, y)
        theirs = F.cross_entropy(logits, y)
    assert ours.dtype == theirs.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    ours.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_backward_scales_the_stored_gradient():
    """grad_output 1 reuses the stored gradient; other values scale it; retain_graph keeps it intact."""
    z = logits_of((5, 4)).requires_grad_(True)
    y = index_target((5,), 4, ignore_frac=0)
    loss = sxt.cross_entropy(z, y)
    loss.backward(retain_graph=True)
    g1 = z.grad.clone()
    loss.backward(torch.tensor(2.5, dtype=torch.float64), retain_graph=True)
    torch.testing.assert_close(z.grad, 3.5 * g1)
    loss.backward()
    torch.testing.assert_close(z.grad, 4.5 * g1)
    torch.testing.assert_close(g1, torch.autograd.grad(F.cross_entropy(z, y), z)[0])


def test_loss_backward_hands_on_the_stored_gradient(monkeypatch):
    """loss.backward() (grad_output exactly 1): the parameter's .grad is the very buffer the forward wrote
    (autograd takes it over once the node's saved tensors are freed), so the backward neither scales nor
    copies the (M, C) gradient. The CUDA path relies on the same hand-over (``_functional._is_one``)."""
    from softxent.torch import _functional

    seen = {}
    scale = _functional._scale_stored_grad

    def spy(ctx, grad_loss, grad_lse):
        seen["stored"] = ctx.saved_tensors[0].data_ptr()
        return scale(ctx, grad_loss, grad_lse)

    monkeypatch.setattr(_functional, "_scale_stored_grad", spy)
    z = logits_of((64, 300)).requires_grad_(True)
    y = index_target((64,), 300)
    sxt.cross_entropy(z, y).backward()
    assert z.grad.data_ptr() == seen["stored"]
    torch.testing.assert_close(z.grad, torch.autograd.grad(F.cross_entropy(z, y), z)[0])
    z.grad = None
    (2 * sxt.cross_entropy(z, y)).backward()  # any other factor: a new, scaled tensor
    assert z.grad.data_ptr() != seen["stored"]
    torch.testing.assert_close(z.grad, 2 * torch.autograd.grad(F.cross_entropy(z, y), z)[0])


def test_no_grad_computes_the_loss_only():
    z = logits_of((6, 5))
    y = index_target((6,), 5)
    with torch.no_grad():
        loss, lse = sxt.cross_entropy(z.requires_grad_(True), y, z_loss=0.1, return_lse=True)
    torch.testing.assert_close(loss, naive(z.detach(), y, z_loss=0.1))
    torch.testing.assert_close(lse, torch.logsumexp(z.detach(), 1))
    assert loss.grad_fn is None


def test_layouts_and_target_dtypes():
    """Non-contiguous input, int32 targets, a module with a weight buffer: same numbers as torch."""
    z = logits_of((5, 8)).t()  # (8, 5) view, not contiguous
    y = index_target((8,), 5).to(torch.int32)
    w = torch.rand(5, generator=gen(4), dtype=torch.float64)
    ours = sxt.CrossEntropyLoss(w, ignore_index=-100, label_smoothing=0.05)
    theirs = torch.nn.CrossEntropyLoss(w, ignore_index=-100, label_smoothing=0.05)
    torch.testing.assert_close(ours(z, y), theirs(z, y.long()))
    assert set(ours.state_dict()) == {"weight"}
    assert repr(ours) == "CrossEntropyLoss(reduction='mean', label_smoothing=0.05)"


# --------------------------------------------------------------------------- torch.compile, custom op, torch.func


def test_opcheck_custom_op():
    """torch.library.opcheck: schema, fake (meta) implementation and dispatch of softxent::cross_entropy."""
    z = logits_of((6, 5), torch.float32)
    y = index_target((6,), 5)
    w = torch.rand(5, generator=gen(3))
    for args in [
        (z, y, None, -100, 0.0, 0.0, 0.0, "mean", True),
        (z, y, w, -100, 0.1, 0.01, 2.0, "none", True),
        (z, prob_target((6, 5), 1).float(), w, -100, 0.0, 0.0, 0.0, "sum", False),
        (z.bfloat16(), y, None, -100, 0.0, 0.0, 0.0, "mean", True),
    ]:
        torch.library.opcheck(torch.ops.softxent.cross_entropy.default, args)


def test_compile_fullgraph():
    """torch.compile(fullgraph=True) keeps the fused op in the graph (no graph break) and gives the same numbers.

    aot_eager runs Dynamo and AOTAutograd (where graph breaks and fake-tensor
    errors happen) without inductor's C++ build, which takes ~10 s per graph
    on 2 cores; test_compile_model_inductor covers inductor once.
    """
    z = logits_of((6, 4, 3), torch.float32)
    y = index_target((6, 3), 4)

    def f(t):
        loss, lse = sxt.cross_entropy(t, y, z_loss=1e-2, softcap=5.0, label_smoothing=0.1, return_lse=True)
        return loss + 0.1 * lse.square().mean()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a = z.clone().requires_grad_(True)
    b = z.clone().requires_grad_(True)
    out_c, out_e = compiled(a), f(b)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(out_c, out_e)
    torch.testing.assert_close(a.grad, b.grad)


def test_compile_dynamic_shapes():
    """dynamic=True: symbolic batch sizes and symbolic float options trace without a graph break."""

    def f(t, y):
        return sxt.cross_entropy(t, y, z_loss=1e-3, label_smoothing=0.1)

    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (5, 9, 12):
        z = logits_of((n, 7), torch.float32, seed=n).requires_grad_(True)
        y = index_target((n,), 7, seed=n)
        loss = compiled(z, y)
        loss.backward()
        torch.testing.assert_close(loss, f(z, y))
        torch.testing.assert_close(z.grad, torch.autograd.grad(f(z, y), z)[0])


# torch's own modules (inductor's import of torch.utils.mkldnn, forward-AD decompositions)
# still call the deprecated torch.jit.script; that warning is torch's, not ours.
TORCH_INTERNAL_JIT_WARNING = "ignore:.*torch.jit.script.* is deprecated:DeprecationWarning"


@pytest.mark.filterwarnings(TORCH_INTERNAL_JIT_WARNING)
def test_compile_model_inductor():
    """A small model under the default torch.compile (inductor) with fullgraph=True trains identically."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 7))
    twin = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 7))
    twin.load_state_dict(model.state_dict())
    loss_fn = sxt.CrossEntropyLoss(label_smoothing=0.1)

    def step(m, x, y):
        return loss_fn(m(x), y)

    compiled = torch.compile(step, fullgraph=True)
    x = torch.randn(32, 12, generator=gen(1))
    y = torch.randint(0, 7, (32,), generator=gen(2))
    lc = compiled(model, x, y)
    le = step(twin, x, y)
    lc.backward()
    le.backward()
    torch.testing.assert_close(lc, le)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.filterwarnings(TORCH_INTERNAL_JIT_WARNING)
def test_torch_func():
    """torch.func transforms run on the plain-torch formulas: grad, vmap, jacrev and hessian all work."""
    z = logits_of((4, 5))
    y = index_target((4,), 5, ignore_frac=0)

    def ours(t, y=y):
        return sxt.cross_entropy(t, y, z_loss=0.1, softcap=3.0)

    def theirs(t, y=y):
        return naive(t, y, z_loss=0.1, softcap=3.0)

    torch.testing.assert_close(torch.func.grad(ours)(z), torch.func.grad(theirs)(z))
    torch.testing.assert_close(torch.func.jacrev(ours)(z), torch.func.jacrev(theirs)(z))
    torch.testing.assert_close(torch.func.hessian(ours)(z[:2], y[:2]), torch.func.hessian(theirs)(z[:2], y[:2]))
    zs = torch.stack([z, 2 * z, -z])
    torch.testing.assert_close(torch.func.vmap(ours)(zs), torch.func.vmap(theirs)(zs))


# --------------------------------------------------------------------------- errors and packaging


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(reduction="avg"), ValueError, r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing must lie in \\[0, 1\\], got 1.5"),
    (dict(z_loss=-1), ValueError, "z_loss must be >= 0"),
    (dict(softcap=0.0), ValueError, "softcap must be > 0"),
    (dict(ignore_index=None), TypeError, "ignore_index must be an integer, got None"),
    (dict(target=torch.tensor([0, 1, 5])), ValueError,
     r"target must hold class indices in \[0, 4\) .* got 5 at index \(2,\)"),
    (dict(target=torch.tensor([0, 1])), ValueError, r"target must hold class indices of shape \(3,\)"),
    (dict(target=torch.full((3, 4), -0.5, dtype=torch.float64)), ValueError,
     "finite and non-negative, got -0.5 at index \\(0, 0\\)"),
    (dict(input=torch.zeros(3, 4, dtype=torch.long)), TypeError, "input must have a floating dtype"),
    (dict(weight=torch.ones(3, dtype=torch.float64)), ValueError, r"weight must have shape \(4,\)"),
    (dict(target=torch.tensor([True, False, True])), TypeError, "target must hold class indices"),
], ids=lambda v: str(v)[:40])  # fmt: skip
def test_errors_name_the_argument(path, kwargs, error, match):
    args = dict(input=logits_of((3, 4)), target=torch.tensor([0, 1, 2]))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sxt.cross_entropy(**args)


def test_import_is_lazy_and_explains_missing_torch():
    code = "import sys, softxent; assert 'torch' not in sys.modules, 'import softxent imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
    code = "import sys; sys.modules['torch'] = None\ntry:\n import softxent.torch\nexcept ImportError as e:\n print(e)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "pip install softxent[torch]" in out


# --------------------------------------------------------------------------- properties

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(
    n=st.integers(0, 6), c=st.integers(1, 7), d1=st.sampled_from([None, 1, 3]), seed=st.integers(0, 2**16),
    reduction=st.sampled_from(["mean", "sum", "none"]), smoothing=st.sampled_from([0.0, 0.25, 1.0]),
    weighted=st.booleans(), z_loss=st.sampled_from([0.0, 0.1]), softcap=st.sampled_from([None, 2.0]),
    ignore_index=st.sampled_from([-100, 0]),
)  # fmt: skip
def test_property_fused_equals_plain(n, c, d1, seed, reduction, smoothing, weighted, z_loss, softcap, ignore_index):
    """Random shapes and options: the fused path equals the plain-torch path (loss, gradient, lse)."""
    shape = (n, c) if d1 is None else (n, c, d1)
    batch = (n,) if d1 is None else (n, d1)
    z = logits_of(shape, seed=seed)
    y = torch.randint(0, c, batch, generator=gen(seed + 1))
    w = torch.rand(c, generator=gen(seed + 2), dtype=torch.float64) if weighted else None
    kwargs = dict(weight=w, reduction=reduction, label_smoothing=smoothing, z_loss=z_loss, softcap=softcap,
                  ignore_index=ignore_index)  # fmt: skip
    a = z.clone().requires_grad_(True)
    loss, lse = sxt.cross_entropy(a, y, **kwargs, return_lse=True)
    (loss.sum() + lse.sum()).backward()
    saved = _backends.FUSED_BACKENDS
    _backends.FUSED_BACKENDS = {}
    try:
        b = z.clone().requires_grad_(True)
        loss_p, lse_p = sxt.cross_entropy(b, y, **kwargs, return_lse=True)
        (loss_p.sum() + lse_p.sum()).backward()
    finally:
        _backends.FUSED_BACKENDS = saved
    tol = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss, loss_p, **tol)
    torch.testing.assert_close(lse, lse_p, **tol)
    torch.testing.assert_close(a.grad, b.grad, **tol)
    if not z_loss and not softcap:
        ref = F.cross_entropy(z, y, w, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
        if reduction == "mean" and not torch.isfinite(ref):
            assert loss.item() == 0.0  # all ignored (or zero weights): 0 where torch gives NaN
        else:
            torch.testing.assert_close(loss, ref, **tol)
