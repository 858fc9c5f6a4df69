"""Second-order autograd through softxent.torch: Hessian-vector products, gradient penalties, torch.func.

The fused paths store their gradient in the forward, a constant to autograd;
with ``create_graph=True`` their backward must instead give a gradient that
autograd can differentiate again. Oracles: torch's ``F.cross_entropy`` (and
``F.linear`` + ``F.cross_entropy`` for the head), or the same formulas
written out in torch operations for softxent's extras (z-loss, soft-cap,
the log-sum-exp), all differentiated by torch itself, in float64.
(The vocabulary-parallel losses refuse second order with a clear error:
tests/test_torch_distributed.py checks that.)
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch front end is optional")

import torch.nn.functional as F  # noqa: E402

import softxent.torch as sxt  # noqa: E402
from softxent.torch import _functional, _linear_extras  # noqa: E402

TOL = dict(rtol=1e-6, atol=1e-9)  # float64; the answers agree to ~1e-15, the bug gave zeros
f64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed):
    return torch.randn(*shape, generator=gen(seed), dtype=f64)


def hvp(f, inputs, v):
    return torch.autograd.functional.hvp(f, inputs, v)[1]


def penalty_grads(f, inputs, lam=0.3):
    """Gradients of ``f + lam * |df/d(first input)|^2`` for every input: a gradient penalty."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    loss = f(*leaves)
    (g,) = torch.autograd.grad(loss, leaves[0], create_graph=True)
    (loss + lam * g.pow(2).sum()).backward()
    return [t.grad for t in leaves]


def naive_extras(z, y, weight=None, *, z_loss=0.0, softcap=None, return_lse=False, **options):
    """softxent's extras written out: cap the logits, torch's cross-entropy, + z_loss * lse^2 (rows kept)."""
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z, y, weight, **options)
    lse = torch.logsumexp(z, 1)
    if z_loss:
        kept = (y != options.get("ignore_index", -100)).to(z.dtype)
        zl = z_loss * lse.square() * kept
        reduction = options.get("reduction", "mean")
        loss = loss + (zl if reduction == "none" else zl.sum() / (kept.sum() if reduction == "mean" else 1))
    return (loss, lse) if return_lse else loss


# --------------------------------------------------------------------------- cross_entropy

N, C = 7, 5
Y = torch.tensor([0, 4, -100, 2, 1, 3, 3])
Y_ALT = torch.tensor([0, 4, 7, 2, 1, 3, 3])  # ignore_index=7
P = torch.softmax(randn(N, C, seed=3), 1)
W = torch.rand(C, generator=gen(4), dtype=f64) + 0.3

CE_CASES = {
    "plain mean": (Y, {}),
    "sum": (Y, dict(reduction="sum")),
    "none": (Y, dict(reduction="none")),
    "ignore_index": (Y_ALT, dict(ignore_index=7)),
    "label_smoothing": (Y, dict(label_smoothing=0.2)),
    "class weights": (Y, dict(weight=W)),
    "weights smoothing none": (Y, dict(weight=W, label_smoothing=0.1, reduction="none")),
    "probabilities": (P, dict(label_smoothing=0.1)),
    "probabilities weights sum": (P, dict(weight=W, reduction="sum")),
}


def upstream(out):
    """A scalar from the loss: per-row upstream weights for "none" (tests the per-row backward)."""
    return out if out.dim() == 0 else (out * torch.linspace(0.5, 1.5, out.numel(), dtype=f64)).sum()


@pytest.mark.parametrize("case", list(CE_CASES))
def test_cross_entropy_hvp_and_gradient_penalty_match_torch(case):
    y, options = CE_CASES[case]
    z, v = randn(N, C, seed=1) * 2, randn(N, C, seed=2)

    def ours(z):
        return upstream(sxt.cross_entropy(z, y, **options))

    def torchs(z):
        return upstream(F.cross_entropy(z, y, **options))

    torch.testing.assert_close(hvp(ours, z, v), hvp(torchs, z, v), **TOL)
    (got,) = penalty_grads(ours, [z])
    (want,) = penalty_grads(torchs, [z])
    torch.testing.assert_close(got, want, **TOL)
    assert want.abs().max() > 1e-3  # the penalty's term is there to be dropped


def test_cross_entropy_extras_and_a_batch_axis_second_order():
    """z-loss, soft-cap and a differentiable log-sum-exp, on (N, C, d) input (the class axis moved)."""
    z, v = randn(3, C, 4, seed=5) * 3, randn(3, C, 4, seed=6)
    y = torch.randint(0, C, (3, 4), generator=gen(7))
    y[1, 2] = -100
    options = dict(z_loss=0.05, softcap=4.0, label_smoothing=0.1, reduction="none", return_lse=True)

    def total(loss_lse):
        loss, lse = loss_lse
        return (loss * 1.5).sum() + (lse * torch.linspace(-1, 1, lse.numel(), dtype=f64).reshape(lse.shape)).sum()

    def naive(z):  # the naive composition works on rows, class axis last
        rows = z.movedim(1, -1).reshape(-1, C)
        loss, lse = naive_extras(rows, y.reshape(-1), **options)
        return total((loss.reshape(3, 4), lse.reshape(3, 4)))

    def ours(z):
        return total(sxt.cross_entropy(z, y, **options))

    torch.testing.assert_close(hvp(ours, z, v), hvp(naive, z, v), **TOL)
    torch.testing.assert_close(penalty_grads(ours, [z])[0], penalty_grads(naive, [z])[0], **TOL)


def test_cross_entropy_hvp_float32_runs_the_fused_op_and_agrees():
    z, v = randn(N, C, seed=8).float(), randn(N, C, seed=9).float()
    got = hvp(lambda z: sxt.cross_entropy(z, Y), z, v)
    want = hvp(lambda z: F.cross_entropy(z.double(), Y), z.double(), v.double())
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_the_first_order_backward_still_only_scales_the_stored_gradient(monkeypatch):
    """Without create_graph the plain-torch formulas are never run (the fast path is unchanged)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the first-order backward must not recompute")

    monkeypatch.setattr(_functional, "cross_entropy_rows_reference", refuse)
    monkeypatch.setattr(_linear_extras, "cross_entropy_rows_reference", refuse)  # the linear head's recomputation
    z = randn(N, C, seed=10).requires_grad_(True)
    (sxt.cross_entropy(z, Y, label_smoothing=0.1) * 2.0).backward()
    x, w = randn(N, 3, seed=11).requires_grad_(True), randn(C, 3, seed=12).requires_grad_(True)
    sxt.linear_cross_entropy(x, w, Y).backward()
    sxt.linear_cross_entropy(x, w, Y, reduction="none").sum().backward()
    assert z.grad is not None and x.grad is not None and w.grad is not None
    with pytest.raises(AssertionError, match="must not recompute"):  # ... and the test can see it if it did
        torch.autograd.grad(sxt.cross_entropy(z, Y), z, create_graph=True)


def test_a_third_derivative_through_the_gradient():
    """d/dz of the hvp itself (the rebuilt gradient is torch's graph all the way down)."""
    z, v = randn(3, 4, seed=13).requires_grad_(True), randn(3, 4, seed=14)
    y = torch.tensor([0, 3, 1])
    results = []
    for fn in (sxt.cross_entropy, F.cross_entropy):
        zz = z.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(zz, y), zz, create_graph=True)
        (hv,) = torch.autograd.grad((g * v).sum(), zz, create_graph=True)
        (t,) = torch.autograd.grad(hv.pow(2).sum(), zz)
        results.append(t)
    torch.testing.assert_close(results[0], results[1], **TOL)


# --------------------------------------------------------------------------- linear_cross_entropy

D, V = 4, 9
YL = torch.tensor([0, 8, -100, 3, 5, 5, 1])

LINEAR_CASES = {
    "mean bias": dict(bias=True),
    "mean no bias": dict(bias=False),
    "sum": dict(bias=True, reduction="sum"),
    "none": dict(bias=True, reduction="none"),
    "ignore_index smoothing": dict(bias=True, ignore_index=5, label_smoothing=0.15),
    "chunked blocks": dict(bias=False, chunk_size=2, label_smoothing=0.1),
}


def linear_inputs(seed=20):
    return randn(N, D, seed=seed), randn(V, D, seed=seed + 1), randn(V, seed=seed + 2)


@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_hvp_and_gradient_penalty_match_the_naive_head(case):
    options = dict(LINEAR_CASES[case])
    with_bias = options.pop("bias")
    chunk = options.pop("chunk_size", None)
    x, w, b = linear_inputs()
    inputs = (x, w, b) if with_bias else (x, w)
    v = tuple(randn(*t.shape, seed=30 + i) for i, t in enumerate(inputs))

    y = torch.where(YL == -100, options.get("ignore_index", -100), YL)

    def ours(x, w, b=None):
        return upstream(sxt.linear_cross_entropy(x, w, y, b, chunk_size=chunk, **options))

    def naive(x, w, b=None):
        return upstream(F.cross_entropy(F.linear(x, w, b), y, **options))

    for got, want in zip(hvp(ours, inputs, v), hvp(naive, inputs, v)):
        torch.testing.assert_close(got, want, **TOL)
    for got, want in zip(penalty_grads(ours, inputs), penalty_grads(naive, inputs)):
        torch.testing.assert_close(got, want, **TOL)


def test_linear_shift_extras_and_a_frozen_head_second_order():
    """shift=True on (B, T, d), z-loss and soft-cap; the head frozen (no dW asked for)."""
    x, v = randn(2, 5, D, seed=40), randn(2, 5, D, seed=41)
    w, b = randn(V, D, seed=42), randn(V, seed=43)
    y = torch.randint(0, V, (2, 5), generator=gen(44))
    y[0, 3] = -100

    def ours(x):
        return sxt.linear_cross_entropy(x, w, y, b, shift=True, z_loss=0.02, softcap=3.0)

    def naive(x):
        z = F.linear(x, w, b)[:, :-1].reshape(-1, V)
        return naive_extras(z, y[:, 1:].reshape(-1), z_loss=0.02, softcap=3.0)

    torch.testing.assert_close(hvp(ours, x, v), hvp(naive, x, v), **TOL)
    torch.testing.assert_close(penalty_grads(ours, [x])[0], penalty_grads(naive, [x])[0], **TOL)


# --------------------------------------------------------------------------- torch.func


# torch.func.hessian's forward-mode decompositions call the deprecated torch.jit.script (torch's warning).
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.* is deprecated:DeprecationWarning")
def test_torch_func_hessian_and_jacrev_of_jacrev_match_torch():
    z = randn(3, 4, seed=50)
    y = torch.tensor([1, -100, 3])
    ours = lambda z: sxt.cross_entropy(z, y, label_smoothing=0.1)  # noqa: E731
    theirs = lambda z: F.cross_entropy(z, y, label_smoothing=0.1)  # noqa: E731
    torch.testing.assert_close(torch.func.hessian(ours)(z), torch.func.hessian(theirs)(z), **TOL)
    jj = torch.func.jacrev(torch.func.jacrev(ours))(z)
    torch.testing.assert_close(jj, torch.func.jacrev(torch.func.jacrev(theirs))(z), **TOL)
    assert jj.abs().max() > 1e-3

    x, w, b = randn(3, D, seed=51), randn(V, D, seed=52), randn(V, seed=53)
    yl = torch.tensor([2, 8, -100])
    lin = lambda x, w: sxt.linear_cross_entropy(x, w, yl, b)  # noqa: E731
    naive = lambda x, w: F.cross_entropy(F.linear(x, w, b), yl)  # noqa: E731
    for argnums in (0, 1):
        got = torch.func.hessian(lin, argnums=argnums)(x, w)
        torch.testing.assert_close(got, torch.func.hessian(naive, argnums=argnums)(x, w), **TOL)
    got = torch.func.jacrev(torch.func.jacrev(lin, argnums=0), argnums=1)(x, w)
    torch.testing.assert_close(got, torch.func.jacrev(torch.func.jacrev(naive, argnums=0), argnums=1)(x, w), **TOL)
