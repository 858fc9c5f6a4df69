"""softxent.torch.linear_cross_entropy / LinearCrossEntropyLoss as drop-ins for torch 2.13's functions of those names.

Oracle: torch's own ``torch.nn.functional.linear_cross_entropy`` on its
reference path (``options=None``: ``F.linear`` then ``F.cross_entropy``),
differentiated by torch's autograd, in float64 (tight tolerances) and on the
float32 and bfloat16 inputs themselves. Every option torch has (class
weights, probability targets, ``ignore_index``, ``label_smoothing``,
``reduction``, ``linear_bias``, the (d,) input, the K-dimensional weight,
``options``) is compared, on the three ways the head is computed: the fused
CPU kernel in row blocks (``rows``), the vocabulary split into chunks
(``vocab``) and plain torch blocks (``plain``).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
if not hasattr(F, "linear_cross_entropy"):  # pragma: no cover - the project pins torch 2.13
    pytest.skip("torch.nn.functional.linear_cross_entropy needs torch >= 2.13", allow_module_level=True)

import softxent.torch as sxt  # noqa: E402
from softxent.torch import _backends, _linear_blocks  # noqa: E402

N, D, V = 13, 8, 300
TOL = {
    torch.float64: dict(rtol=1e-11, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=2**-6, atol=2**-6),  # bf16 inputs: the loss and gradients rounded to bf16 once
}


@pytest.fixture(params=["columns", "rows", "vocab", "plain"])
def path(request, monkeypatch):
    if request.param == "rows":
        monkeypatch.setattr(_linear_blocks, "_COLUMN_LAYOUT", False)
    if request.param == "vocab":
        monkeypatch.setattr(_linear_blocks, "BLOCK_BYTES", 2048)  # V = 300 split into 256-class chunks
    if request.param == "plain":
        monkeypatch.setattr(_backends, "FUSED_BACKENDS", {})
    return request.param


def gen(seed):
    return torch.Generator().manual_seed(seed)


def make(dtype, *, prob=False, bias=True, class_weight=False, shape=(N,), seed=0):
    x = torch.randn(*shape, D, generator=gen(seed), dtype=torch.float64)
    w = torch.randn(V, D, generator=gen(seed + 1), dtype=torch.float64) / D**0.5 * 3
    b = torch.randn(V, generator=gen(seed + 2), dtype=torch.float64) if bias else None
    if prob:
        y = torch.rand(*shape, V, generator=gen(seed + 3), dtype=torch.float64) ** 4
        y = (y / y.sum(-1, keepdim=True)).to(dtype)
    else:
        y = torch.randint(0, V, shape, generator=gen(seed + 3))
        y[..., 2] = -100
    cw = torch.rand(V, generator=gen(seed + 4), dtype=torch.float64) + 0.25 if class_weight else None
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(x), cast(w), cast(b), y, cast(cw)


def loss_and_grads(fn, x, w, b, y, **kwargs):
    """Loss and gradients of sum(loss * v) for input, linear_weight and linear_bias (random v for "none")."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, w) + ((b,) if b is not None else ())]
    loss = fn(leaves[0], leaves[1], y, linear_bias=leaves[2] if b is not None else None, **kwargs)
    v = torch.rand(loss.shape, generator=gen(9), dtype=torch.float64).add(0.5).to(torch.bfloat16).to(loss.dtype)
    return (loss.detach(),) + torch.autograd.grad((loss * v).sum(), leaves)


def assert_all_close(ours, theirs, tol):
    for name, got, want in zip(("loss", "d input", "d linear_weight", "d linear_bias"), ours, theirs):
        assert got.dtype == want.dtype, name
        torch.testing.assert_close(got.double(), want.double(), **tol, msg=lambda m, n=name: f"{n}: {m}")


CASES = [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(label_smoothing=0.2),
    dict(ignore_index=5, reduction="sum"),
    dict(class_weight=True),
    dict(class_weight=True, label_smoothing=0.1),
    dict(class_weight=True, reduction="none"),
    dict(prob=True),
    dict(prob=True, class_weight=True, label_smoothing=0.15),
    dict(prob=True, reduction="none"),
    dict(bias=False, reduction="sum", label_smoothing=0.05),
]


def _case_kwargs(case, y, cw):
    kw = {k: v for k, v in case.items() if k not in ("class_weight", "prob", "bias")}
    if cw is not None:
        kw["weight"] = cw
    if kw.get("ignore_index") is not None:
        y = torch.where(y == -100, kw["ignore_index"], y)
    return kw, y


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_float64(path, case):
    x, w, b, y, cw = make(torch.float64, **{k: case[k] for k in ("prob", "bias", "class_weight") if k in case})
    kw, y = _case_kwargs(case, y, cw)
    ours = loss_and_grads(sxt.linear_cross_entropy, x, w, b, y, **kw)
    theirs = loss_and_grads(F.linear_cross_entropy, x, w, b, y, **kw)
    assert_all_close(ours, theirs, TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES[::2] + CASES[5:7], ids=str)
def test_matches_torch_in_low_precision(path, case, dtype):
    """float32 and bf16 inputs: the oracle is torch's head in float64 on the very same values, cast back."""
    x, w, b, y, cw = make(dtype, **{k: case[k] for k in ("prob", "bias", "class_weight") if k in case})
    kw, y = _case_kwargs(case, y, cw)
    ours = loss_and_grads(sxt.linear_cross_entropy, x, w, b, y, **kw)

    def exact(xx, ww, yy, linear_bias=None, **k):
        if k.get("weight") is not None:
            k["weight"] = k["weight"].double()
        yy = yy.double() if yy.is_floating_point() else yy
        bb = None if linear_bias is None else linear_bias.double()
        return F.linear_cross_entropy(xx.double(), ww.double(), yy, linear_bias=bb, **k).to(dtype)

    theirs = loss_and_grads(exact, x, w, b, y, **kw)
    assert_all_close(ours, theirs, TOL[dtype])
    if dtype == torch.bfloat16:
        # torch's own bf16 head (bf16 logits) agrees within the bf16 tolerance too.
        assert_all_close(
            ours[:1], loss_and_grads(F.linear_cross_entropy, x, w, b, y, **kw)[:1], dict(rtol=0.02, atol=0.02)
        )


def test_unbatched_input_and_k_dimensional_weight():
    x, w, b, y, cw = make(torch.float64, class_weight=True)
    for target in (y[0], torch.softmax(torch.randn(V, generator=gen(3), dtype=torch.float64), 0)):
        ours = loss_and_grads(sxt.linear_cross_entropy, x[0], w, b, target, weight=cw, reduction="none")
        theirs = loss_and_grads(F.linear_cross_entropy, x[0], w, b, target, weight=cw, reduction="none")
        assert ours[0].shape == ()
        assert_all_close(ours, theirs, TOL[torch.float64])
    # K-dimensional: linear_weight (C, d1, d), logits (N, C, d1), targets (N, d1)
    wk = torch.randn(7, 3, D, generator=gen(5), dtype=torch.float64)
    bk = torch.randn(7, 3, generator=gen(6), dtype=torch.float64)
    yk = torch.randint(0, 7, (N, 3), generator=gen(7))
    for kw in (dict(), dict(reduction="none", label_smoothing=0.1)):
        ours = loss_and_grads(sxt.linear_cross_entropy, x, wk, bk, yk, **kw)
        theirs = loss_and_grads(F.linear_cross_entropy, x, wk, bk, yk, **kw)
        assert_all_close(ours, theirs, TOL[torch.float64])


def test_options_are_accepted_and_batch_chunk_size_sets_the_blocks(monkeypatch):
    x, w, b, y, cw = make(torch.float64, class_weight=True)
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4, chunking_method=None)
    theirs = loss_and_grads(F.linear_cross_entropy, x, w, b, y, weight=cw)
    seen = []
    plan = _linear_blocks.plan_blocks

    def spy(*args, **kwargs):
        seen.append(args[4])
        return plan(*args, **kwargs)

    monkeypatch.setattr(sxt._linear, "plan_blocks", spy)
    for options in (None, torch.nn.LinearCrossEntropyOptions(), opts):
        ours = loss_and_grads(sxt.linear_cross_entropy, x, w, b, y, weight=cw, options=options)
        assert_all_close(ours, theirs, TOL[torch.float64])
    assert seen == [None, None, 4]
    with pytest.raises(TypeError, match="options must be a torch.nn.LinearCrossEntropyOptions or None, got dict"):
        sxt.linear_cross_entropy(x, w, y, options={"batch_chunk_size": 4})


def test_torch_chunked_head_agrees_too():
    """torch's chunked head (options given) and softxent's give the same loss and gradients (float32)."""
    x, w, b, y, _ = make(torch.float32)
    ours = loss_and_grads(sxt.linear_cross_entropy, x, w, b, y)
    theirs = loss_and_grads(F.linear_cross_entropy, x, w, b, y, options=torch.nn.LinearCrossEntropyOptions())
    assert_all_close(ours, theirs, TOL[torch.float32])


def test_probability_targets_that_require_grad_get_torch_gradient():
    x, w, b, y, cw = make(torch.float64, prob=True, class_weight=True)
    outs = []
    for fn in (sxt.linear_cross_entropy, F.linear_cross_entropy):
        yy = y.clone().requires_grad_(True)
        xx = x.clone().requires_grad_(True)
        loss = fn(xx, w, yy, linear_bias=b, weight=cw, label_smoothing=0.1)
        outs.append((loss,) + torch.autograd.grad(loss, (xx, yy)))
    for got, want in zip(*outs):
        torch.testing.assert_close(got, want, **TOL[torch.float64])


def test_shift_with_probability_targets_matches_the_sliced_head(path):
    x, w, b, y, _ = make(torch.float64, prob=True, shape=(2, 7))
    for reduction in ("mean", "none"):
        ours = loss_and_grads(sxt.linear_cross_entropy, x, w, b, y, shift=True, reduction=reduction)

        def sliced(xx, ww, yy, linear_bias=None, reduction=reduction):
            z = F.linear(xx, ww, linear_bias)[:, :-1]
            return F.cross_entropy(z.movedim(-1, 1), yy[:, 1:].movedim(-1, 1), reduction=reduction)

        assert_all_close(ours, loss_and_grads(sliced, x, w, b, y), TOL[torch.float64])


def test_positional_bias_and_an_all_ignored_batch():
    x, w, b, y, _ = make(torch.float64)
    torch.testing.assert_close(sxt.linear_cross_entropy(x, w, y, b), F.linear_cross_entropy(x, w, y, linear_bias=b))
    ignored = torch.full_like(y, -100)
    assert sxt.linear_cross_entropy(x, w, ignored, weight=torch.ones(V, dtype=torch.float64)).item() == 0.0
    assert torch.isnan(F.linear_cross_entropy(x, w, ignored))  # torch: 0/0


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda x, w, y: sxt.linear_cross_entropy(x, weight=w, target=y), TypeError,
     r"weight is the class weights, shape \(V,\).* got a 2-D tensor of shape \(300, 8\): pass the head's matrix "
     r"as linear_weight"),
    (lambda x, w, y: sxt.linear_cross_entropy(x, w, y, weight=w), TypeError, "pass the head's matrix as linear_weight"),
    (lambda x, w, y: sxt.linear_cross_entropy(x=x, weight=w, target=y), TypeError, r"x= is now input="),
    (lambda x, w, y: sxt.linear_cross_entropy(x, w, y, bias=w[:, 0]), TypeError,
     r"bias= is now linear_bias=.*write linear_cross_entropy\(input, linear_weight, target, linear_bias=bias"),
    (lambda x, w, y: sxt.linear_cross_entropy(x, w, y, weight=w[:5, 0]), ValueError,
     r"weight \(class weights\) must have shape \(300,\), got \(5,\)"),
    (lambda x, w, y: sxt.linear_cross_entropy(x, w, y, weight=-w[:, 0].abs()), ValueError,
     "weight must be finite and non-negative"),
    (lambda x, w, y: sxt.linear_cross_entropy(x, w, torch.full((N, V), 1.0 / V, dtype=x.dtype), ignore_index=-100),
     ValueError, "ignore_index applies to class-index targets only"),
    (lambda x, w, y: sxt.linear_cross_entropy(x, w, torch.full((N, V), -1.0, dtype=x.dtype)), ValueError,
     "probabilities, which must be finite and non-negative"),
], ids=["weight=matrix", "weight=matrix-too", "x=", "bias=", "class-weight-shape", "negative-class-weight",
        "ignore_index-with-probabilities", "negative-probabilities"])  # fmt: skip
def test_old_style_and_bad_calls_say_what_to_write(call, error, match):
    x, w, _, y, _ = make(torch.float64)
    with pytest.raises(error, match=match):
        call(x, w, y)


# --------------------------------------------------------------------------- the module


def test_module_with_torch_constructor_matches_torch_module():
    cw = torch.rand(V, generator=gen(1)) + 0.5
    kwargs = dict(bias=True, weight=cw, label_smoothing=0.1, reduction="sum")
    torch.manual_seed(0)
    ours = sxt.LinearCrossEntropyLoss(D, V, **kwargs)
    theirs = torch.nn.LinearCrossEntropyLoss(D, V, **kwargs)
    theirs.load_state_dict(ours.state_dict())  # torch's keys: linear.weight, linear.bias, weight
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"linear.weight", "linear.bias", "weight"}
    x, _, _, y, _ = make(torch.float32)
    got, want = ours(x, y), theirs(x, y)
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    g_ours = torch.autograd.grad(got, list(ours.linear.parameters()))
    g_theirs = torch.autograd.grad(want, list(theirs.linear.parameters()))
    for a, c in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, c, **TOL[torch.float32])
    # the other way round, and the K-dimensional form
    k_ours = sxt.LinearCrossEntropyLoss(D, 5, out_features=(3,), dtype=torch.float64)
    k_theirs = torch.nn.LinearCrossEntropyLoss(D, 5, out_features=(3,), dtype=torch.float64)
    k_ours.load_state_dict(k_theirs.state_dict())
    xk, yk = torch.randn(4, D, dtype=torch.float64), torch.randint(0, 5, (4, 3))
    torch.testing.assert_close(k_ours(xk, yk), k_theirs(xk, yk), **TOL[torch.float64])
    assert "in_features=8, num_classes=300" in repr(ours)


def test_module_without_head_and_its_errors():
    x, w, b, y, cw = make(torch.float64, class_weight=True)
    loss_fn = sxt.LinearCrossEntropyLoss(weight=cw, z_loss=1e-3)
    want = sxt.linear_cross_entropy(x, w, y, linear_bias=b, weight=cw, z_loss=1e-3)
    torch.testing.assert_close(loss_fn(x, w, y, linear_bias=b), want, rtol=0, atol=0)
    torch.testing.assert_close(loss_fn(x, w, y, b), want, rtol=0, atol=0)
    with pytest.raises(TypeError, match=r"owns its head \(self.linear\): call it as loss_fn\(input, target\)"):
        sxt.LinearCrossEntropyLoss(D, V)(x.float(), w.float(), y)
    with pytest.raises(TypeError, match=r"call it as loss_fn\(input, linear_weight, target, linear_bias=None\)"):
        loss_fn(x, y)
    with pytest.raises(TypeError, match="in_features and num_classes together"):
        sxt.LinearCrossEntropyLoss(D)
    with pytest.raises(TypeError, match="weight must be class weights, a tensor of shape \\(num_classes,\\)"):
        sxt.LinearCrossEntropyLoss(weight=w)
    with pytest.raises(ValueError, match="in_features must be a positive integer, got 0"):
        sxt.LinearCrossEntropyLoss(0, V)


def test_opcheck_the_general_ops():
    x, w, b, y, cw = make(torch.float32, class_weight=True)
    p = make(torch.float32, prob=True)[3]
    base = (0.1, 0.01, 0.0)
    op = torch.ops.softxent.linear_cross_entropy_general.default
    for target, ii in ((y, -100), (p, -100)):
        for reduction, needs in [("mean", (True,) * 3), ("none", (True, False, True)), ("sum", (False,) * 3)]:
            for sw, all_lse in ((None, False), (torch.rand(N), True)):
                torch.library.opcheck(op, (x, w, target, b, cw, sw, ii, *base, reduction, 5, V, *needs, all_lse))
    lse = torch.logsumexp(F.linear(x, w, b), 1)
    for sw in (None, torch.rand(N)):
        torch.library.opcheck(torch.ops.softxent.linear_cross_entropy_general_backward.default,
                              (torch.rand(N), x, w, p, b, cw, sw, lse, -100, *base, 5, V, True, True, True))  # fmt: skip
