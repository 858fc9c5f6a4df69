"""softxent.torch.linear_cross_entropy against the naive head ``F.cross_entropy(x @ W.T + b, y)``.

Oracles: torch autograd of the naive formula in float64 (loss and the three
gradients), ``torch.autograd.gradcheck`` (finite differences in float64).
Every test runs on the ways the head can be computed: transposed blocks on the
CPU column kernel (``columns``, the default for class indices), row blocks on
the fused CPU row kernel (``rows``; ``panels`` with its matmuls split), row
blocks with the vocabulary split in chunks and an online log-sum-exp
(``vocab``, forced by a tiny memory budget), and plain torch blocks as on
devices without a fused kernel (``plain``). ``test_torch_linear_columns.py``
holds the column kernel to exact float64 and to the row kernel on hard inputs.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import softxent.torch as sxt  # noqa: E402
from softxent.torch import _backends, _linear, _linear_blocks  # noqa: E402

TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-13),
    torch.float32: dict(rtol=32 * torch.finfo(torch.float32).eps, atol=32 * torch.finfo(torch.float32).eps),
}


@pytest.fixture(params=["columns", "rows", "panels", "vocab", "plain"])
def path(request, monkeypatch):
    if request.param in ("rows", "panels"):
        # The row layout (what class weights, probabilities and softcap take) for class indices too.
        monkeypatch.setattr(_linear_blocks, "_COLUMN_LAYOUT", False)
    if request.param == "panels":
        # The CPU matmuls in 128-class panels: V = 300 gives three, the last partial.
        monkeypatch.setattr(_linear_blocks, "_MM_PANEL", 128)
    if request.param == "vocab":
        # A 2 KiB budget: fewer than 32 rows of V classes fit, so the vocabulary is split
        # into 256-class chunks (V = 300 or 700 below: 2 or 3 chunks, the last partial).
        monkeypatch.setattr(_linear_blocks, "BLOCK_BYTES", 2048)
    if request.param == "plain":
        monkeypatch.setattr(_backends, "FUSED_BACKENDS", {})
    return request.param


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make(n_shape, d, v, dtype=torch.float64, seed=0, ignore_frac=0.2, bias=True):
    x = torch.randn(*n_shape, d, generator=gen(seed), dtype=torch.float64).to(dtype)
    w = (torch.randn(v, d, generator=gen(seed + 1), dtype=torch.float64) / d**0.5 * 3).to(dtype)
    b = torch.randn(v, generator=gen(seed + 2), dtype=torch.float64).to(dtype) if bias else None
    y = torch.randint(0, v, n_shape, generator=gen(seed + 3))
    if ignore_frac:
        y = torch.where(torch.rand(n_shape, generator=gen(seed + 4)) < ignore_frac, torch.full_like(y, -100), y)
    return x, w, b, y


def naive(x, w, y, b=None, *, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
          softcap=None, shift=False):  # fmt: skip
    """The head the docstring promises to equal, with torch autograd for every gradient."""
    z = F.linear(x, w, b)
    if shift:
        z, y = z[..., :-1, :], y[..., 1:]
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    zf, yf = z.reshape(-1, z.shape[-1]), y.reshape(-1)
    loss = F.cross_entropy(zf, yf, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    if z_loss:
        kept = yf != ignore_index
        rows = torch.where(kept, z_loss * torch.logsumexp(zf, 1) ** 2, 0.0)
        loss = loss + (rows if reduction == "none" else rows.sum() / (kept.sum() if reduction == "mean" else 1))
    return loss.reshape(y.shape) if reduction == "none" else loss


def grads(fn, x, w, b, y, **kwargs):
    """Loss and gradients for x, W, b of sum(loss * v) (random v tests the per-row backward)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w) + ((b,) if b is not None else ())]
    loss = fn(leaves[0], leaves[1], y, leaves[2] if b is not None else None, **kwargs)
    v = (torch.rand(loss.shape, generator=gen(9), dtype=torch.float64) + 0.5).to(torch.bfloat16).to(loss.dtype)
    return (loss.detach(),) + torch.autograd.grad((loss * v).sum(), leaves)


CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.2),
    dict(z_loss=0.01),
    dict(softcap=4.0),
    dict(z_loss=0.02, softcap=3.0, label_smoothing=0.1, reduction="none"),
    dict(shift=True),
    dict(shift=True, reduction="none", label_smoothing=0.1, z_loss=1e-3),
    dict(ignore_index=3, reduction="sum"),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("chunk_size", [None, 7], ids=lambda c: f"chunk={c}")
def test_matches_naive_head(path, dtype, case, chunk_size):
    """Loss and all three gradients equal the naive head's, (B, T, d) input with ignored rows."""
    v = 300 if path != "vocab" else 700
    x, w, b, y = make((3, 11), 16, v, dtype)
    if "ignore_index" in case:
        y = torch.where(y == -100, case["ignore_index"], y)
    out = grads(sxt.linear_cross_entropy, x, w, b, y, chunk_size=chunk_size, **case)
    ref = grads(naive, x.double(), w.double(), b.double(), y, **case)
    for name, got, want in zip(["loss", "dx", "dW", "db"], out, ref):
        assert got.dtype == dtype and got.shape == want.shape, name
        torch.testing.assert_close(got.double(), want, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


def test_without_bias_and_2d_input(path):
    x, w, _, y = make((40,), 8, 300, bias=False)
    out = grads(sxt.linear_cross_entropy, x, w, None, y, label_smoothing=0.1)
    ref = grads(naive, x, w, None, y, label_smoothing=0.1)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("case", [
    dict(), dict(reduction="none"), dict(reduction="sum", label_smoothing=0.3),
    dict(z_loss=0.2, softcap=2.0), dict(shift=True, z_loss=0.1, reduction="none"),
], ids=str)  # fmt: skip
def test_gradcheck(path, case):
    """Finite differences (float64) for x, W and b."""
    x, w, b, y = make((2, 5), 3, 260 if path == "vocab" else 9, seed=5, ignore_frac=0.2)  # vocab: 256 + 4
    args = [t.requires_grad_(True) for t in (x, w, b)]
    # The vocabulary path (260 classes) checks random projections of the Jacobian
    # (fast_mode) rather than all ~1000 columns: same finite differences, 50x fewer calls.
    assert torch.autograd.gradcheck(
        lambda xx, ww, bb: sxt.linear_cross_entropy(xx, ww, y, bb, chunk_size=3, **case),
        args,
        fast_mode=path == "vocab",
    )


def test_bfloat16_accumulates_in_float32():
    """bf16 inputs: the loss and gradients are the float32 values rounded once, dW summed in float32."""
    x, w, b, y = make((512,), 32, 1000, torch.bfloat16, seed=3)
    out = grads(sxt.linear_cross_entropy, x, w, b, y, chunk_size=8)
    ref = grads(naive, x.double(), w.double(), b.double(), y)
    eps = torch.finfo(torch.bfloat16).eps
    # (The naive head in bfloat16 misses this bound by a factor of ~1000 on dx and dW.)
    for name, got, want in zip(["loss", "dx", "dW", "db"], out, ref):
        assert got.dtype == torch.bfloat16
        # Two roundings at most (stored gradient, then grad_output times it), not one per block
        # of 8 rows (bfloat16 accumulation over 64 blocks would lose several bits).
        scale = want.abs().max()
        torch.testing.assert_close(
            got.double(), want, rtol=eps, atol=eps * 1e-2 * scale, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_frozen_weight_and_no_grad():
    x, w, b, y = make((20,), 8, 50)
    xr = x.clone().requires_grad_(True)
    loss = sxt.linear_cross_entropy(xr, w, y, b)  # w and b do not require grad: no dW matmul
    loss.backward()
    ref_x = x.clone().requires_grad_(True)
    naive(ref_x, w, y, b).backward()
    torch.testing.assert_close(xr.grad, ref_x.grad)
    with torch.no_grad():
        torch.testing.assert_close(sxt.linear_cross_entropy(x, w.requires_grad_(True), y, b), naive(x, w, y, b))


def test_autocast_computes_in_float32():
    """Under CPU autocast the head keeps float32 matmuls (the naive head would drop to bfloat16)."""
    x, w, b, y = make((16,), 8, 40, torch.float32)
    plain = sxt.linear_cross_entropy(x, w, y, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = sxt.linear_cross_entropy(x, w, y, b)
        naive_bf16 = naive(x, w, y, b)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)
    assert naive_bf16.dtype == torch.float32 and (naive_bf16 - plain).abs() > 1e-6


def test_all_ignored_gives_zero(path):
    x, w, b, y = make((6,), 4, 300, ignore_frac=0)
    y[:] = -100
    loss, dx, dw, db = grads(sxt.linear_cross_entropy, x, w, b, y, z_loss=0.1)
    assert loss.item() == 0.0 and not dx.any() and not dw.any() and not db.any()


def test_backward_scaling_and_retain_graph():
    x, w, b, y = make((9,), 5, 30)
    xr, wr = x.requires_grad_(True), w.requires_grad_(True)
    loss = sxt.linear_cross_entropy(xr, wr, y)
    loss.backward(retain_graph=True)
    gx, gw = xr.grad.clone(), wr.grad.clone()
    loss.backward(torch.tensor(-2.0, dtype=torch.float64))
    torch.testing.assert_close(xr.grad, -gx)
    torch.testing.assert_close(wr.grad, -gw)


def test_module_and_compile():
    """LinearCrossEntropyLoss in a small model under torch.compile(fullgraph=True): same loss and gradients."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 16)
    head = torch.nn.Linear(16, 50)
    loss_fn = sxt.LinearCrossEntropyLoss(shift=True, label_smoothing=0.1, chunk_size=8)
    assert repr(loss_fn) == "LinearCrossEntropyLoss(reduction='mean', label_smoothing=0.1, chunk_size=8, shift=True)"
    ids = torch.randint(0, 50, (3, 10), generator=gen(1))

    def step(ids):
        return loss_fn(torch.tanh(emb(ids)), head.weight, ids, head.bias)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    lc = compiled(ids)
    lc.backward()
    got = [p.grad.clone() for p in (emb.weight, head.weight, head.bias)]
    for p in (emb.weight, head.weight, head.bias):
        p.grad = None
    logits = head(torch.tanh(emb(ids)))[:, :-1].reshape(-1, 50)
    le = F.cross_entropy(logits, ids[:, 1:].reshape(-1), label_smoothing=0.1)
    le.backward()
    torch.testing.assert_close(lc, le)
    for g, p in zip(got, (emb.weight, head.weight, head.bias)):
        torch.testing.assert_close(g, p.grad)


def test_torch_func_runs_the_composed_head():
    """torch.func.grad and vmap work (through cross_entropy(F.linear(...)) on the plain path)."""
    x, w, b, y = make((2, 6), 4, 20)

    def ours(xx, ww):
        return sxt.linear_cross_entropy(xx, ww, y, b, shift=True, z_loss=0.01)

    def theirs(xx, ww):
        return naive(xx, ww, y, b, shift=True, z_loss=0.01)

    for got, want in zip(torch.func.grad(ours, argnums=(0, 1))(x, w), torch.func.grad(theirs, argnums=(0, 1))(x, w)):
        torch.testing.assert_close(got, want)
    xs = torch.stack([x, -x])
    torch.testing.assert_close(torch.func.vmap(ours, in_dims=(0, None))(xs, w),
                               torch.func.vmap(theirs, in_dims=(0, None))(xs, w))  # fmt: skip


def test_opcheck_custom_ops():
    x, w, b, y = make((12,), 6, 40, torch.float32)
    base = (-100, 0.1, 0.01, 0.0)
    for reduction, needs in [("mean", (True,) * 3), ("none", (True, False, True)), ("sum", (False,) * 3)]:
        torch.library.opcheck(torch.ops.softxent.linear_cross_entropy.default,
                              (x, w, y, b, *base, reduction, 5, 40, *needs))  # fmt: skip
    lse = torch.logsumexp(F.linear(x, w, b), 1)
    torch.library.opcheck(torch.ops.softxent.linear_cross_entropy_backward.default,
                          (torch.rand(12), x, w, y, b, lse, *base, 5, 40, True, True, True))  # fmt: skip


def test_plan_blocks():
    plan = _linear.plan_blocks
    budget = _linear.BLOCK_BYTES
    rows, vocab = plan(4096, 32768, 4, 1, None)
    assert vocab == 32768 and rows * 32768 * 4 <= budget and rows >= 32
    rows, vocab = plan(2048, 100277, 4, 1, None)  # large V: 256 rows, within four budgets
    assert vocab == 100277 and rows == 256 and budget < rows * 100277 * 4 <= 4 * budget
    rows, vocab = plan(4096, 10**6, 4, 2, None)
    assert rows == 32 and vocab < 10**6 and rows * vocab * 4 * 2 <= budget and vocab % 256 == 0
    assert plan(10, 100, 4, 1, None) == (10, 100)
    assert plan(4096, 32768, 4, 1, 1000) == (1000, 32768)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(linear_weight=torch.zeros(5, 3, dtype=torch.float64)), ValueError, r"linear_weight must have shape \(V, 4\)"),
    (dict(target=torch.zeros(6, dtype=torch.long)), ValueError, r"target must hold class indices of shape \(3,\)"),
    (dict(target=torch.tensor([0, 1, 9])), ValueError, r"class indices in \[0, 5\) .* got 9 at index \(2,\)"),
    (dict(target=torch.zeros(3)), ValueError, r"target holds probabilities .* must have the logits' shape \(3, 5\)"),
    (dict(target=torch.zeros(3, dtype=torch.bool)), TypeError, "target must hold class indices"),
    (dict(linear_bias=torch.zeros(4, dtype=torch.float64)), ValueError, r"linear_bias must have shape \(5,\)"),
    (dict(chunk_size=0), ValueError, "chunk_size must be a positive integer"),
    (dict(shift=True), None, None),
    (dict(input=torch.zeros(4, dtype=torch.float64), target=torch.tensor(0), shift=True), ValueError, "shift=True needs"),
    (dict(linear_weight=torch.zeros(5, 4)), TypeError, "input, linear_weight and linear_bias must have one dtype"),
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
], ids=lambda v: str(v)[:40])  # fmt: skip
def test_errors_name_the_argument(kwargs, error, match):
    args = dict(input=torch.zeros(3, 4, dtype=torch.float64), linear_weight=torch.zeros(5, 4, dtype=torch.float64),
                target=torch.tensor([0, 1, 2]))  # fmt: skip
    args.update(kwargs)
    if error is None:
        sxt.linear_cross_entropy(**args)
        return
    with pytest.raises(error, match=match):
        sxt.linear_cross_entropy(**args)


# --------------------------------------------------------------------------- sample_weight and return_lse


def naive_weighted(x, w, y, b=None, *, sample_weight=None, weight=None, ignore_index=-100, reduction="mean",
                   label_smoothing=0.0, z_loss=0.0, softcap=None, shift=False):  # fmt: skip
    """(loss, lse) of the naive head with the rows weighted by hand: torch's per-row losses times the weights,
    the mean over the summed weights (times the label's class weight); every gradient from torch autograd."""
    z = F.linear(x, w, b)
    s = torch.ones(y.shape, dtype=z.dtype) if sample_weight is None else sample_weight.reshape(y.shape).to(z.dtype)
    if shift:
        z, y, s = z[..., :-1, :], y[..., 1:], s[..., 1:]
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    zf, yf, sf = z.reshape(-1, z.shape[-1]), y.reshape(-1), s.reshape(-1)
    rows = F.cross_entropy(zf, yf, weight=weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)  # fmt: skip
    kept = yf != ignore_index
    w_y = torch.ones_like(sf) if weight is None else weight.to(z.dtype)[yf.clamp(min=0)]
    lse = torch.logsumexp(zf, 1)
    z_rows = torch.where(kept, z_loss * lse**2, 0.0)
    if reduction == "none":
        loss = (sf * (rows + z_rows)).reshape(y.shape)
    elif reduction == "sum":
        loss = (sf * (rows + z_rows)).sum()
    else:
        ce_den, zl_den = (sf * w_y * kept).sum(), (sf * kept).sum()
        loss = (sf * rows).sum() / ce_den + ((sf * z_rows).sum() / zl_den if z_loss else 0.0)
    return loss, lse.reshape(y.shape)


def grads_lse(fn, x, w, b, y, **kwargs):
    """Loss, lse and the gradients for x, W, b of sum(loss * v) + sum(lse * u) (random v, u)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w) + ((b,) if b is not None else ())]
    loss, lse = fn(leaves[0], leaves[1], y, leaves[2] if b is not None else None, **kwargs)
    v = (torch.rand(loss.shape, generator=gen(9), dtype=torch.float64) + 0.5).to(torch.bfloat16).to(loss.dtype)
    u = (torch.rand(lse.shape, generator=gen(10), dtype=torch.float64) - 0.5).to(torch.bfloat16).to(lse.dtype)
    return (loss.detach(), lse.detach()) + torch.autograd.grad((loss * v).sum() + (lse * u).sum(), leaves)


def ours_lse(x, w, y, b=None, **kwargs):
    return sxt.linear_cross_entropy(x, w, y, b, return_lse=True, **kwargs)


def sample_weights(shape, seed=11, zeros=True):
    s = torch.rand(shape, generator=gen(seed), dtype=torch.float64) * 2
    if zeros:
        s.view(-1)[::5] = 0.0  # rows of weight 0 count nowhere, also not in the mean's denominator
    return s


WEIGHTED_CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.2, class_weight=True),
    dict(z_loss=0.01, class_weight=True, reduction="sum"),
    dict(softcap=4.0, z_loss=0.02),
    dict(z_loss=0.02, softcap=3.0, label_smoothing=0.1, reduction="none", class_weight=True),
    dict(shift=True, z_loss=0.01),
    dict(shift=True, reduction="none", label_smoothing=0.1),
    dict(ignore_index=3, reduction="mean", class_weight=True),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", WEIGHTED_CASES, ids=str)
@pytest.mark.parametrize("weighted", [True, False], ids=["sample_weight", "lse_only"])
def test_sample_weight_and_lse_match_naive_head(path, dtype, case, weighted):
    """Loss, lse and the gradients through both equal the hand-weighted naive head's, ignored rows included."""
    case = dict(case)
    v = 300 if path != "vocab" else 700
    x, w, b, y = make((3, 11), 16, v, dtype)
    if "ignore_index" in case:
        y = torch.where(y == -100, case["ignore_index"], y)
    if case.pop("class_weight", False):
        case["weight"] = (torch.rand(v, generator=gen(12), dtype=torch.float64) * 2).to(dtype)
    if weighted:
        case["sample_weight"] = sample_weights(y.shape).to(dtype)
    out = grads_lse(ours_lse, x, w, b, y, chunk_size=7, **case)
    ref_case = {k: (t.double() if isinstance(t, torch.Tensor) else t) for k, t in case.items()}
    ref = grads_lse(naive_weighted, x.double(), w.double(), b.double(), y, **ref_case)
    for name, got, want in zip(["loss", "lse", "dx", "dW", "db"], out, ref):
        assert got.shape == want.shape, name
        assert got.dtype == dtype, name  # lse: float32 for float32 input, float64 for float64
        torch.testing.assert_close(got.double(), want, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


def test_sample_weight_flattened_and_lse_without_weights_equal_the_plain_call(path):
    """(N,) weights = batch-shaped weights; weights of 1 = no weights; the loss beside the lse = the plain loss."""
    x, w, b, y = make((4, 6), 8, 300)
    s = sample_weights(y.shape)
    a = sxt.linear_cross_entropy(x, w, y, b, sample_weight=s, reduction="none")
    torch.testing.assert_close(sxt.linear_cross_entropy(x, w, y, b, sample_weight=s.reshape(-1), reduction="none"), a)
    plain = sxt.linear_cross_entropy(x, w, y, b, z_loss=0.1)
    ones = sxt.linear_cross_entropy(x, w, y, b, z_loss=0.1, sample_weight=torch.ones(4, 6, dtype=torch.float64))
    loss, lse = sxt.linear_cross_entropy(x, w, y, b, z_loss=0.1, return_lse=True)
    torch.testing.assert_close(ones, plain, rtol=1e-14, atol=0)
    torch.testing.assert_close(loss, plain, rtol=1e-14, atol=0)
    # Scaling every weight leaves the mean unchanged and scales the sum.
    torch.testing.assert_close(sxt.linear_cross_entropy(x, w, y, b, sample_weight=3 * s),
                               sxt.linear_cross_entropy(x, w, y, b, sample_weight=s))  # fmt: skip
    torch.testing.assert_close(sxt.linear_cross_entropy(x, w, y, b, sample_weight=3 * s, reduction="sum"),
                               3 * sxt.linear_cross_entropy(x, w, y, b, sample_weight=s, reduction="sum"))  # fmt: skip


@pytest.mark.parametrize("case", [
    dict(), dict(reduction="none", z_loss=0.1), dict(reduction="sum", label_smoothing=0.3, softcap=2.0),
    dict(shift=True, reduction="none"),
], ids=str)  # fmt: skip
def test_gradcheck_with_sample_weight_and_lse(path, case):
    """Finite differences (float64) of (loss, lse) for x, W and b, sample weights and ignored rows."""
    x, w, b, y = make((2, 5), 3, 260 if path == "vocab" else 9, seed=5, ignore_frac=0.3)
    s = sample_weights(y.shape, zeros=False)
    args = [t.requires_grad_(True) for t in (x, w, b)]
    assert torch.autograd.gradcheck(
        lambda xx, ww, bb: sxt.linear_cross_entropy(xx, ww, y, bb, chunk_size=3, sample_weight=s, return_lse=True,
                                                    **case),
        args,
        fast_mode=path == "vocab",
    )  # fmt: skip


def test_gradgradcheck_with_sample_weight_and_lse():
    """A backward that is differentiated again (create_graph=True) carries the weights and the lse's term."""
    x, w, b, y = make((7,), 3, 6, seed=6, ignore_frac=0.3)
    s = sample_weights(y.shape, zeros=False)
    args = [t.requires_grad_(True) for t in (x, w, b)]
    for reduction in ("mean", "none"):
        assert torch.autograd.gradgradcheck(
            lambda xx, ww, bb, r=reduction: sxt.linear_cross_entropy(
                xx, ww, y, bb, sample_weight=s, return_lse=True, z_loss=0.1, softcap=3.0, reduction=r
            ),
            args,
        )


def test_bfloat16_with_sample_weight_and_lse():
    """bf16: loss and gradients rounded once from float32; the lse float32, near the float64 value."""
    x, w, b, y = make((256,), 32, 1000, torch.bfloat16, seed=3)
    s = sample_weights(y.shape).to(torch.bfloat16)
    out = grads_lse(ours_lse, x, w, b, y, chunk_size=8, sample_weight=s, z_loss=1e-3)
    ref = grads_lse(naive_weighted, x.double(), w.double(), b.double(), y, sample_weight=s.double(), z_loss=1e-3)
    eps = torch.finfo(torch.bfloat16).eps
    for name, got, want in zip(["loss", "lse", "dx", "dW", "db"], out, ref):
        assert got.dtype == (torch.float32 if name == "lse" else torch.bfloat16), name
        tol = 64 * torch.finfo(torch.float32).eps if name == "lse" else eps
        scale = want.abs().max()
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * 1e-2 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")  # fmt: skip


def test_ignore_index_and_zero_weights():
    """Ignored rows: loss 0, lse reported; all weight 0 or all rows ignored: mean 0, no NaN, lse finite."""
    x, w, b, y = make((8,), 4, 30, ignore_frac=0)
    y[2] = y[5] = -100
    s = sample_weights(y.shape, zeros=False)
    rows, lse = sxt.linear_cross_entropy(x, w, y, b, sample_weight=s, reduction="none", return_lse=True)
    assert rows[2] == 0 and rows[5] == 0 and (rows[[0, 1, 3]] > 0).all()
    torch.testing.assert_close(lse, torch.logsumexp(F.linear(x, w, b), 1))
    y_all = torch.full_like(y, -100)
    for s0, yy in ((torch.zeros_like(s), y), (s, y_all)):
        loss, dx, dw, db = grads(lambda *a, **k: sxt.linear_cross_entropy(*a, **k), x, w, b, yy, sample_weight=s0,
                                 z_loss=0.1)  # fmt: skip
        assert loss.item() == 0.0 and not dx.any() and not dw.any() and not db.any()
        _, lse = sxt.linear_cross_entropy(x, w, yy, b, sample_weight=s0, return_lse=True)
        assert torch.isfinite(lse).all()


def test_sample_weight_that_requires_grad_and_torch_func():
    """A sample_weight that requires grad gets its gradient (composed path); torch.func.grad through the extras."""
    x, w, b, y = make((3, 5), 4, 20)
    s = sample_weights(y.shape).requires_grad_(True)
    loss, lse = sxt.linear_cross_entropy(x, w, y, b, sample_weight=s, return_lse=True, shift=True, z_loss=0.1)
    (loss + lse.sum()).backward()
    s2 = s.detach().clone().requires_grad_(True)
    ref_loss, ref_lse = naive_weighted(x, w, y, b, sample_weight=s2, shift=True, z_loss=0.1)
    (ref_loss + ref_lse.sum()).backward()
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(s.grad, s2.grad)

    def ours(xx, ww):
        loss, lse = sxt.linear_cross_entropy(xx, ww, y, b, sample_weight=s.detach(), return_lse=True)
        return loss + lse.sum()

    def theirs(xx, ww):
        loss, lse = naive_weighted(xx, ww, y, b, sample_weight=s.detach())
        return loss + lse.sum()

    for got, want in zip(torch.func.grad(ours, argnums=(0, 1))(x, w), torch.func.grad(theirs, argnums=(0, 1))(x, w)):
        torch.testing.assert_close(got, want)


def test_module_return_lse_and_sample_weight():
    x, w, b, y = make((6,), 4, 30)
    s = sample_weights(y.shape)
    loss_fn = sxt.LinearCrossEntropyLoss(return_lse=True, reduction="sum")
    assert repr(loss_fn) == "LinearCrossEntropyLoss(reduction='sum', return_lse=True)"
    got = loss_fn(x, w, y, linear_bias=b, sample_weight=s)
    want = sxt.linear_cross_entropy(x, w, y, b, reduction="sum", sample_weight=s, return_lse=True)
    for g, wnt in zip(got, want):
        torch.testing.assert_close(g, wnt)
    owned = sxt.LinearCrossEntropyLoss(4, 30, bias=True, dtype=torch.float64)
    loss = owned(x, y, sample_weight=s)
    torch.testing.assert_close(loss, naive_weighted(x, owned.linear.weight, y, owned.linear.bias, sample_weight=s)[0])
    with pytest.raises(TypeError, match="return_lse must be True or False"):
        sxt.LinearCrossEntropyLoss(return_lse=1)


def test_compile_fullgraph_with_extras():
    """torch.compile(fullgraph=True) traces the general op with sample weights and the lse's backward op."""
    x, w, _, y = make((4, 6), 8, 50, torch.float32)
    s = sample_weights(y.shape).float()

    def f(xx, ww):
        loss, lse = sxt.linear_cross_entropy(xx, ww, y, sample_weight=s, return_lse=True, shift=True, z_loss=1e-3)
        return loss + 0.1 * lse.square().mean()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    leaves = [t.requires_grad_(True) for t in (x, w)]
    got = (compiled(*leaves),) + torch.autograd.grad(compiled(*leaves), leaves)
    want = (f(*leaves),) + torch.autograd.grad(f(*leaves), leaves)
    for g, wnt in zip(got, want):
        torch.testing.assert_close(g, wnt)


def test_opcheck_the_lse_backward_op():
    x, w, b, _ = make((12,), 6, 40, torch.float32)
    lse = torch.logsumexp(F.linear(x, w, b), 1)
    op = torch.ops.softxent.linear_logsumexp_backward.default
    for softcap, needs in ((0.0, (True,) * 3), (3.0, (True, False, True))):
        torch.library.opcheck(op, (torch.rand(12), x, w, b, lse, softcap, 5, 16, *needs))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sample_weight=torch.ones(4, dtype=torch.float64)), ValueError, r"sample_weight must have shape \(3,\)"),
    (dict(sample_weight=torch.ones(3, dtype=torch.long)), TypeError, "sample_weight"),
    (dict(sample_weight=[1.0, 1.0, 1.0]), TypeError, "sample_weight must be a torch.Tensor"),
    (dict(sample_weight=torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)), ValueError,
     r"sample_weight must be finite and non-negative, got -1.0 at row 1"),
    (dict(sample_weight=torch.tensor([1.0, 1.0, float("nan")], dtype=torch.float64)), ValueError,
     "sample_weight must be finite and non-negative, got nan at row 2"),
    (dict(return_lse=1), TypeError, "return_lse must be True or False, got 1"),
    (dict(linear_weight=torch.zeros(5, 2, 4, dtype=torch.float64), target=torch.zeros(3, 2, dtype=torch.long),
          sample_weight=torch.ones(3, dtype=torch.float64)), ValueError, "sample_weight is not supported with a K-dim"),
], ids=lambda v: str(v)[:40])  # fmt: skip
def test_extras_errors_name_the_argument(kwargs, error, match):
    args = dict(input=torch.zeros(3, 4, dtype=torch.float64), linear_weight=torch.zeros(5, 4, dtype=torch.float64),
                target=torch.tensor([0, 1, 2]))  # fmt: skip
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sxt.linear_cross_entropy(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the blocked head with Triton rows)")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cuda_sample_weight_and_lse_match_the_cpu(reduction):
    x, w, b, y = make((4, 64), 32, 1000, torch.float32)
    s = sample_weights(y.shape).float()
    kw = dict(reduction=reduction, sample_weight=s, z_loss=1e-3, label_smoothing=0.1)
    cpu = grads_lse(ours_lse, x, w, b, y, **kw)
    kw["sample_weight"] = s.cuda()
    gpu = grads_lse(ours_lse, x.cuda(), w.cuda(), b.cuda(), y.cuda(), **kw)
    for name, got, want in zip(["loss", "lse", "dx", "dW", "db"], gpu, cpu):
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
