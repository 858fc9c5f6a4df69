"""The Triton backend through softxent's custom ops, as a CUDA call goes: the op wrapper, autograd, the front end.

:mod:`softxent.torch._triton` registers its kernels as the ``"cuda"``
implementations of ``softxent::cross_entropy``, ``softxent::linear_cross_entropy``
and its backward op. torch's custom-op wrapper checks what a kernel returns
(outputs may not alias each other or the inputs), so calling the kernels
directly, past the wrapper, can pass where every CUDA call raises. Without a
GPU these tests register the same functions as the ops' CPU implementations
(restored afterwards) and run them in Triton's interpreter on CPU tensors, so
the front end reaches them exactly as it would on CUDA; with a GPU they run on
CUDA tensors through the real registration.

Oracles: torch autograd of the naive head (``F.linear`` + ``F.cross_entropy``)
in float64, and the CPU ops themselves.
"""

from __future__ import annotations

import os
import sys

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA:
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        # Another module imported triton first; fine only if our kernels were decorated in interpreter mode.
        from softxent.kernels.triton import _host as _early_host

        if not (_early_host.HAS_TRITON and _early_host.interpreted()):
            pytest.skip(
                "triton was imported before this module could set TRITON_INTERPRET=1 (its mode is fixed at "
                "import); run tests/test_triton_ops.py in a process of its own",
                allow_module_level=True,
            )
    _saved_interpret = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
try:
    triton = pytest.importorskip(
        "triton", reason="Triton is not installed (pip install softxent[triton]): the GPU kernels cannot be tested"
    )
    from softxent.kernels.triton import _host  # noqa: E402
    from softxent.torch import _triton as T  # noqa: E402

    _host.kernels()  # decorate the kernels while the mode is set
finally:
    if not CUDA:
        if _saved_interpret is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _saved_interpret

import softxent.torch as sxt  # noqa: E402
from softxent.torch import _functional, _linear  # noqa: E402


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel(a, b):
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture
def cuda_kernels():
    """The ops' "cuda" kernels as their CPU implementations (interpreter), restored afterwards; on a GPU, as is."""
    if CUDA:
        assert T.register()
        yield
        return
    os.environ["TRITON_INTERPRET"] = "1"
    ops = ((_functional._cross_entropy_op, T._ce_op_cuda), (_linear._linear_op, T._linear_op_cuda),
           (_linear._linear_backward_op, T._linear_backward_op_cuda))  # fmt: skip
    try:
        for op, kernel in ops:
            op.register_kernel("cpu")(kernel)
        yield
    finally:
        for op, _ in ops:
            op.register_kernel("cpu")(op._init_fn)
        if _saved_interpret is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _saved_interpret


def make_lin(n, d, v, dtype, seed):
    x = torch.randn(n, d, generator=gen(seed), dtype=torch.float64).to(dtype)
    w = (torch.randn(v, d, generator=gen(seed + 1), dtype=torch.float64) / d**0.5).to(dtype)
    b = (torch.randn(v, generator=gen(seed + 2), dtype=torch.float64) * 0.1).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen(seed + 3))
    y[2] = -100
    return x, w, b, y


# float32: float32 arithmetic; bf16: G rounded to bf16 for the matmuls (as torch's bf16 autograd).
# fp16: G held in fp16 scaled by a power of two (11 significant bits).
LIN_TOL = {torch.float32: 2e-5, torch.bfloat16: 8e-3, torch.float16: 2e-3, torch.float64: 1e-12}


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=["fp32", "bf16", "fp16", "fp64"]
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_front_end_through_the_op_wrapper(cuda_kernels, dtype, reduction):
    """linear_cross_entropy through the custom op: gradients of every reduction (float64 takes the op's own
    float64 branch), and calls that compute no gradient (no_grad, inputs that need none)."""
    x, w, b, y = make_lin(13, 24, 90, dtype, seed=3)
    up = torch.rand(13, generator=gen(9), dtype=torch.float64) + 0.5 if reduction == "none" else None
    leaves = [t.detach().clone().to(DEVICE).requires_grad_(True) for t in (x, w, b)]
    loss = sxt.linear_cross_entropy(leaves[0], leaves[1], y.to(DEVICE), leaves[2], reduction=reduction)
    (loss * (1.0 if up is None else up.to(DEVICE, loss.dtype))).sum().backward()

    ref_leaves = [t.detach().double().clone().requires_grad_(True) for t in (x, w, b)]
    ref = F.cross_entropy(F.linear(*ref_leaves), y, reduction=reduction)
    (ref * (1.0 if up is None else up)).sum().backward()
    tol = LIN_TOL[dtype]
    assert rel(loss, ref) <= tol
    for name, got, want in zip(("dx", "dW", "db"), leaves, ref_leaves):
        assert got.grad is not None and got.grad.dtype == dtype, name
        assert rel(got.grad, want.grad) <= tol, name

    # No gradient wanted: the op returns empty dx, dW and db (each its own tensor).
    with torch.no_grad():
        again = sxt.linear_cross_entropy(leaves[0], leaves[1], y.to(DEVICE), leaves[2], reduction=reduction)
    assert rel(again, ref) <= tol
    plain = [t.detach() for t in leaves]
    assert rel(sxt.linear_cross_entropy(*plain[:2], y.to(DEVICE), plain[2], reduction=reduction), ref) <= tol


def test_linear_op_outputs_never_alias(cuda_kernels):
    """The wrapper's own check, called directly on the op for every combination of wanted gradients."""
    x, w, b, y = make_lin(9, 16, 40, torch.float32, seed=4)
    x, w, b, y = (t.to(DEVICE) for t in (x, w, b, y))
    for reduction in ("mean", "none"):
        for need in ((False, False, False), (True, False, False), (False, True, True)):
            out = _linear._linear_op(x, w, y, b, -100, 0.0, 0.0, 0.0, reduction, 8, 40, *need)  # checked by torch
            assert len({id(g) for g in out[2:]}) == 3
    lse = _linear._linear_op(x, w, y, b, -100, 0.0, 0.0, 0.0, "none", 8, 40, False, False, False)[1]
    out = _linear._linear_backward_op(torch.ones(9, device=DEVICE), x, w, y, b, lse, -100, 0.0, 0.0, 0.0, 8, 40,
                                      False, False, False)  # fmt: skip
    assert len({id(g) for g in out}) == 3 and all(g.numel() == 0 for g in out)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_front_end_through_the_op_wrapper(cuda_kernels, reduction):
    z = (torch.randn(6, 77, generator=gen(11), dtype=torch.float64) * 3).float()
    y = torch.randint(0, 77, (6,), generator=gen(12))
    y[1] = -100
    zz = z.clone().to(DEVICE).requires_grad_(True)
    loss = sxt.cross_entropy(zz, y.to(DEVICE), reduction=reduction, label_smoothing=0.1)
    loss.sum().backward()
    ref_z = z.double().requires_grad_(True)
    ref = F.cross_entropy(ref_z, y, reduction=reduction, label_smoothing=0.1)
    ref.sum().backward()
    assert rel(loss, ref) <= 2e-6 and rel(zz.grad, ref_z.grad) <= 2e-6
    with torch.no_grad():
        assert rel(sxt.cross_entropy(z.to(DEVICE), y.to(DEVICE), reduction=reduction), F.cross_entropy(
            z.double(), y, reduction=reduction)) <= 2e-6  # fmt: skip


def _to(args, device):
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _close_to(got, ref, dtype, what):
    assert got.dtype == ref.dtype and got.shape == ref.shape, what
    if not ref.numel():
        return
    if dtype == torch.bfloat16:  # G rounded to bf16 for the matmuls: a relative error in norm
        got, ref = got.detach().cpu().double(), ref.detach().cpu().double()
        assert float((got - ref).norm() / ref.norm().clamp_min(1e-30)) <= 4e-3, what
    else:
        assert rel(got, ref) <= 2e-5, what


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_custom_op_kernels_match_the_cpu_ops(dtype):
    """The "cuda" kernels, called on the device (CUDA, or CPU in the interpreter), against the CPU ops on CPU."""
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    z = (torch.randn(6, 77, generator=gen(21), dtype=torch.float64) * 3).to(dtype)
    y = torch.randint(0, 77, (6,), generator=gen(22))
    y[1] = -100
    w = torch.rand(77, generator=gen(22))
    args = (z, y, w, -100, 0.1, 1e-3, 5.0, "mean", True)
    for i, (got, ref) in enumerate(zip(T._ce_op_cuda(*_to(args, DEVICE)), _functional._cross_entropy_op(*args))):
        _close_to(got, ref, dtype, f"ce output {i}")

    x, wt, b, yl = make_lin(13, 24, 90, dtype, seed=23)
    for reduction in ("mean", "sum", "none"):
        args = (x, wt, yl, b, -100, 0.1, 1e-3, 6.0, reduction, 8, 90, True, True, True)
        for i, (got, ref) in enumerate(zip(T._linear_op_cuda(*_to(args, DEVICE)), _linear._linear_op(*args))):
            _close_to(got, ref, dtype, f"linear output {i}, {reduction}")
    lse = _linear._linear_op(*args)[1]
    up = torch.rand(13, generator=gen(24)).to(dtype)
    bargs = (up, x, wt, yl, b, lse, -100, 0.1, 1e-3, 6.0, 8, 90, True, True, True)
    for i, (got, ref) in enumerate(
        zip(T._linear_backward_op_cuda(*_to(bargs, DEVICE)), _linear._linear_backward_op(*bargs))
    ):
        _close_to(got, ref, dtype, f"linear backward output {i}")
