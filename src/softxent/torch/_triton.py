r"""softxent's GPU path: Triton kernels for cross-entropy and the linear + cross-entropy head.

What this module is for
-----------------------
CUDA tensors given to :func:`softxent.torch.cross_entropy` and
:func:`softxent.torch.linear_cross_entropy` are computed here when Triton is
installed (``pip install softxent[triton]``); :func:`register` (called by
``import softxent.torch`` on a CUDA build of torch with Triton importable)
plugs the kernels into the front end:

* :func:`cuda_rows` joins :data:`softxent.torch._backends.FUSED_BACKENDS` as
  ``"cuda"`` (same contract as :func:`~softxent.torch._backends.cpu_rows`) and
  is the ``"cuda"`` kernel of the ``softxent::cross_entropy`` custom op;
* :func:`linear_forward` / :func:`linear_backward` are the ``"cuda"`` kernels of
  ``softxent::linear_cross_entropy`` and its backward op.

The kernels themselves live in :mod:`._triton_kernels` (with the derivations
beside them). The functions here validate, allocate and launch; they take
CPU tensors too when Triton runs in its interpreter (``TRITON_INTERPRET=1``
set before ``triton`` is first imported): that is how the tests check the
kernels on machines without a GPU.
The front end itself keeps using the numba kernels for CPU tensors.

Design
------
1. **Cross-entropy on logits** (:func:`cross_entropy_rows`): one program per
   row (or per block of rows when the class count is small), two sweeps over
   the row: an online max / sum in float32 (the arg-max term kept out of the
   sum, see the kernel module), then the loss terms that need the
   log-sum-exp and the gradient, written into a fresh buffer or over the
   logits (``inplace=True``). The mean's denominator (the summed class weights
   of the rows not ignored) is computed on the device by torch and read by
   the kernel from device memory: no host synchronisation inside the call.
2. **Linear cross-entropy** (:func:`linear_cross_entropy_triton`): the forward
   computes (BM, BN) tiles of :math:`z = x W^\top + b` on chip (float32
   accumulators) and keeps only per-row statistics of each vocabulary split
   (max, :math:`s'`, the smoothing sum), combined on the host side in float64
   into the log-sum-exp and the loss: memory O(N) beyond the inputs. The
   backward goes over the vocabulary in chunks: a Triton kernel recomputes a
   chunk's logit tiles and writes its block of :math:`G = \partial L/\partial z`
   (N x chunk, :data:`G_CHUNK_BYTES`), then cuBLAS adds :math:`G W_c` into a
   float32 ``dx`` and forms :math:`dW_c = G^\top x` in one GEMM over all rows
   (float32 accumulation, one rounding to ``weight.dtype``): deterministic,
   and no float32 (V, d) copy of the weight gradient. With gradient filtering
   (off by default) a fused kernel instead skips the matmuls of negligible
   tiles and adds the rest with float32 atomics (Cut Cross-Entropy's scheme).

Data errors (a class index out of range, a fully masked row that is not
ignored) are not raised on the GPU path, since finding them needs a host
sync: such rows give a NaN (or inf) loss. The CPU path raises ``ValueError``.
"""

from __future__ import annotations

import contextlib
import math
import types
import warnings

import numpy as np
import torch

try:
    import triton
except ImportError:  # pragma: no cover - the module is only imported when triton is
    triton = None

__all__ = [
    "DW_CHUNK_BYTES",
    "G_CHUNK_BYTES",
    "HAS_TRITON",
    "cross_entropy_rows",
    "cuda_rows",
    "interpreted",
    "kernels",
    "linear_backward",
    "linear_cross_entropy_triton",
    "linear_forward",
    "register",
]

HAS_TRITON = triton is not None

#: Bytes of the float32 weight-gradient accumulator of the filtered (fused) backward.
DW_CHUNK_BYTES = 256 * 2**20
#: Bytes of the (N, chunk) block of G that the default backward hands to cuBLAS.
G_CHUNK_BYTES = 64 * 2**20


def _need_triton() -> None:
    if triton is None:
        raise ImportError("softxent's GPU kernels need Triton, which is not installed: pip install softxent[triton]")


def kernels() -> types.ModuleType:
    """The kernel module, :mod:`._triton_kernels`, imported on first use.

    Triton chooses between its compiler and its interpreter once per process:
    its own ``triton.language`` helpers are decorated when ``triton`` is first
    imported, and they follow ``TRITON_INTERPRET`` as it was then. With
    ``TRITON_INTERPRET=1`` set before that import, the kernels run in the
    interpreter on CPU tensors (the tests); otherwise they compile for CUDA.
    """
    _need_triton()
    from . import _triton_kernels

    return _triton_kernels


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when triton was imported)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernels().ce_kernel, InterpretedFunction)


def _interpret(t: torch.Tensor) -> bool:
    interp = interpreted()
    if t.device.type == "cuda" or (interp and t.device.type == "cpu"):
        return interp
    if t.device.type == "cpu":
        raise ValueError(
            "CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 before triton is "
            "first imported (the front end uses its numba kernels for CPU tensors)"
        )
    raise ValueError(f"the Triton kernels take CUDA tensors (or CPU tensors in Triton's interpreter), got {t.device}")


@contextlib.contextmanager
def _launching(interpret: bool):
    # The interpreter runs the kernels in NumPy, which warns where the GPU
    # silently follows IEEE (exp(-inf - -inf) in a discarded branch, 0/0 in a
    # where() that is not taken, a max over a row of NaN): the kernels mean IEEE.
    if not interpret:
        yield
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _check_rows(z: torch.Tensor, name: str) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (M, C), got {tuple(z.shape)}")


# --------------------------------------------------------------------------- cross-entropy on logits


def _ce_scales(target, weight, n_rows, n_classes, ignore_index, reduction, scale, device, prob):
    """(ce_scale, zl_scale) as a float32 device tensor: computed by torch on the device, never read back.

    Constants are written by fill kernels, not copied from the host (``torch.tensor(...,
    device="cuda")`` would wait for the copy: a host synchronisation).
    """
    if scale is not None:
        out = torch.empty(2, dtype=torch.float32, device=device)
        out[0].fill_(float(scale[0]))
        out[1].fill_(float(scale[1]))
        return out
    if reduction != "mean":
        return torch.ones(2, dtype=torch.float32, device=device)
    if prob:
        return torch.full((2,), 1.0 / n_rows if n_rows else 1.0, dtype=torch.float32, device=device)
    kept = target != ignore_index
    if weight is None:
        denom = kept.sum().to(torch.float64)
    else:
        w_y = weight.to(torch.float64)[target.clamp(0, n_classes - 1)]
        denom = torch.where(kept, w_y, 0.0).sum()
    n_kept = kept.sum().to(torch.float64)
    # An all-ignored batch: 0 / 1 = 0 (torch's 0/0 = NaN), as the reference.
    ce = torch.where(denom > 0, 1.0 / torch.where(denom > 0, denom, 1.0), 1.0)
    zl = torch.where(n_kept > 0, 1.0 / torch.where(n_kept > 0, n_kept, 1.0), 1.0)
    return torch.stack([ce, zl]).to(torch.float32)


def cross_entropy_rows(
    z: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    need_grad: bool = True,
    inplace: bool = False,
    scale: tuple[float, float] | None = None,
    block: int | None = None,
    programs: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    r"""Loss, gradient and per-row log-sum-exp of (M, C) logits in one kernel launch.

    The semantics are those of
    :func:`softxent.torch._reference.cross_entropy_rows_reference` (every
    option of :func:`softxent.torch.cross_entropy`), the gradient that of the
    returned loss with respect to ``z``: eq. (15) with the options folded in,

    .. math::

        \frac{\partial \ell}{\partial z} = \bigl(a \textstyle\sum_c t_c - t
            + 2 \lambda_z \operatorname{lse}\, a\bigr) \odot \operatorname{sech}^2(z/\kappa).

    Parameters
    ----------
    z : Tensor (M, C)
        CUDA logits (or CPU, run in Triton's interpreter), float16, bfloat16,
        float32 or float64, class stride 1 (a copy is made otherwise).
    target : Tensor
        (M,) integer class indices or (M, C) probabilities, same device.
    weight : Tensor (C,), optional
    ignore_index, label_smoothing, z_loss, softcap, reduction
        As :func:`softxent.torch.cross_entropy`.
    need_grad : bool
        Without it only loss and log-sum-exp are computed (one sweep, no (M, C) buffer
        unless smoothing or probability targets need a second read).
    inplace : bool
        Write the gradient over ``z`` (no (M, C) allocation).
    scale : (ce_scale, zl_scale), optional
        Fixed multipliers of every row's cross-entropy and z-loss instead of
        the reduction's (``"mean"`` then is ignored: pass ``"sum"``/``"none"``).
    block : int, optional
        Classes per tile (a power of two); the default fits the GPU. The tests
        pass small blocks so that V <= 300 spans several tiles.
    programs : int, optional
        Programs launched (each loops over row blocks); default one per row
        block. Fewer bound the rows in flight, so that the second sweep finds
        its row in L2 (a tuning knob for the benchmark).

    Returns
    -------
    loss : Tensor, float32 (float64 for float64 logits), 0-d or (M,)
    grad : Tensor (M, C) in ``z.dtype`` or None
    lse : Tensor (M,) float32 (float64), every row's log-sum-exp (ignored rows too)

    Precision: float32 arithmetic for every input dtype but float64; the
    gradient is rounded to ``z.dtype`` once. The true-class entry
    :math:`a_y - 1` is formed as :math:`-s'/(1+s')` (no cancellation), so a
    confident bf16 row keeps its tiny gradient.
    """
    _check_rows(z, "z")
    interp = _interpret(z)
    k = kernels()
    n_rows, n_classes = z.shape
    if n_classes == 0:
        raise ValueError(f"z must have at least one class, got shape {tuple(z.shape)}")
    if z.stride(1) != 1:
        if inplace:
            raise ValueError("inplace=True needs z with class stride 1 (z.stride(1) == 1)")
        z = z.contiguous()
    prob = target.is_floating_point()
    if prob:
        if tuple(target.shape) != tuple(z.shape):
            raise ValueError(
                f"target holds probabilities, so it must have shape {tuple(z.shape)}, got {tuple(target.shape)}"
            )
        if target.stride(1) != 1:
            target = target.contiguous()
    else:
        if tuple(target.shape) != (n_rows,):
            raise ValueError(f"target must hold class indices of shape ({n_rows},), got {tuple(target.shape)}")
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},), got {tuple(weight.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of ('mean', 'sum', 'none'), got {reduction!r}")
    for name, t in (("target", target), ("weight", weight)):
        if t is not None and t.device != z.device:
            raise ValueError(f"{name} is on {t.device} but z is on {z.device}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be > 0 or None, got {softcap!r}")

    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    loss_rows = torch.empty(n_rows, dtype=acc, device=z.device)
    lse = torch.empty(n_rows, dtype=acc, device=z.device)
    grad = None
    if need_grad:
        grad = z if inplace else torch.empty_like(z, memory_format=torch.contiguous_format)
    if n_rows:
        scales = _ce_scales(target, weight, n_rows, n_classes, ignore_index, reduction, scale, z.device, prob)
        scales = scales.to(acc)
        if block is None:
            # 4096 classes per tile and 16 warps: no register spills at sm_90 with every
            # option on (ptxas -v), 8 elements (16 bytes of bf16) per thread and load.
            block = min(_pow2(n_classes), 4096 if acc == torch.float32 else 2048)
        rows_per = max(1, min(16, 2048 // block)) if block >= n_classes else 1
        n_blocks = triton.cdiv(n_rows, rows_per)
        tile = rows_per * block  # elements per program and sweep step: about 8 per thread
        warps = 16 if tile >= 4096 else 8 if tile >= 1024 else 4
        w = weight.contiguous() if weight is not None else z  # a dummy pointer when unused
        tl_acc = _tl_dtype(acc)
        grid = (max(1, min(n_blocks, int(programs))) if programs else n_blocks,)
        with _launching(interp):
            k.ce_kernel[grid](
                z, z.stride(0), target, target.stride(0), w,
                grad if grad is not None else z, grad.stride(0) if grad is not None else 0,
                loss_rows, lse, scales,
                n_rows, n_classes, int(ignore_index),
                float(label_smoothing), float(z_loss), float(softcap or 1.0),
                PROB=prob, HAS_WEIGHT=weight is not None, SMOOTH=bool(label_smoothing),
                ZLOSS=bool(z_loss), SOFTCAP=softcap is not None, NEED_GRAD=need_grad,
                ROWS=rows_per, BLOCK=block, ACC=tl_acc,
                DOWNCAST=interp and need_grad and grad.dtype == torch.bfloat16,
                **({} if interp else dict(num_warps=warps)),
            )  # fmt: skip
    else:
        loss_rows.zero_()
    loss = loss_rows if reduction == "none" else loss_rows.sum(dtype=torch.float64).to(acc)
    return loss, grad, lse


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32


def cuda_rows(
    z: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    need_grad: bool,
    need_lse: bool = True,
    z_writable: bool = False,
    scale: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The ``"cuda"`` fused backend: :func:`~softxent.torch._backends.cpu_rows`'s contract on the GPU.

    Differences from the CPU backend: the loss and log-sum-exp are float32
    (float64 for float64 logits), the gradient is in ``z.dtype`` (bf16 rounded
    once from float32), and data errors are not raised (no host sync). float64
    logits are computed in float64, but the scalar options
    (``label_smoothing``, ``z_loss``, ``softcap``) reach the kernel rounded to
    float32.
    """
    loss, grad, lse = cross_entropy_rows(
        z, target, weight, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap, reduction=reduction, need_grad=need_grad, inplace=z_writable, scale=scale,
    )  # fmt: skip
    return loss, grad, lse


def _ce_op_cuda(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, need_grad):
    """The ``"cuda"`` kernel of ``softxent::cross_entropy`` (see :mod:`._functional`)."""
    from ._reference import work_dtype

    loss, grad, lse = cross_entropy_rows(
        logits, target, weight, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap or None, reduction=reduction, need_grad=need_grad,
    )  # fmt: skip
    dtype = logits.dtype
    return loss.to(dtype), (grad if grad is not None else logits.new_empty((0,))), lse.to(work_dtype(dtype))


# --------------------------------------------------------------------------- linear cross-entropy


def _lce_blocks(interp: bool, dtype: torch.dtype) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, num_warps, num_stages): small tiles for the interpreter, tensor-core tiles on the GPU."""
    if interp:
        return 16, 32, 16, 4, 1
    if dtype == torch.float32:
        return 64, 64, 32, 4, 3
    # 128 x 128 tiles with K steps of 32: no register spills at sm_90 in either
    # kernel (ptxas -v; K steps of 64 spill 172 / 1472 bytes).
    return 128, 128, 32, 8, 3


def _check_linear(x, weight, target, bias):
    for name, t in (("x", x), ("weight", weight), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, d), got {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must have shape (V, {x.shape[1]}), got {tuple(weight.shape)}")
    if weight.shape[0] == 0:
        raise ValueError("weight must have at least one row (class), got shape (0, d)")
    if target.is_floating_point() or tuple(target.shape) != (x.shape[0],):
        raise ValueError(f"target must hold integer class indices of shape ({x.shape[0]},), "
                         f"got {target.dtype} of shape {tuple(target.shape)}")  # fmt: skip
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"x, weight and bias must have one dtype, got {x.dtype}, {weight.dtype}"
                        + ("" if bias is None else f" and {bias.dtype}"))  # fmt: skip
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"x must be float16, bfloat16 or float32 for the Triton kernels, got {x.dtype}")
    for name, t in (("weight", weight), ("target", target), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-row loss terms of ``x @ weight.T + bias`` without the logits: ``(ce_rows, lse, nll)``.

    ``ce_rows`` (N,) float64: each row's unscaled cross-entropy (0 for ignored
    rows, NaN for a class index out of range), without the z-loss;
    ``lse`` (N,) float32; ``nll`` (N,) float32, :math:`\operatorname{lse} - z_y`
    computed without cancellation (the backward's true-class gradient
    :math:`a_y - 1 = \operatorname{expm1}(-\text{nll})` uses it).
    ``splits``: vocabulary splits (programs along V); the default fills the GPU.
    """
    _check_linear(x, weight, target, bias)
    interp = _interpret(x)
    k = kernels()
    x = x if x.stride(1) == 1 else x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    n_rows, n_dim = x.shape
    n_classes = weight.shape[0]
    bm, bn, bk, warps, stages = _lce_blocks(interp, x.dtype)
    row_blocks = triton.cdiv(max(n_rows, 1), bm)
    vocab_blocks = triton.cdiv(n_classes, bn)
    if splits is None:
        n_sm = 1 if interp else torch.cuda.get_device_properties(x.device).multi_processor_count
        splits = max(1, min(vocab_blocks, triton.cdiv(4 * n_sm, row_blocks)))
    split_size = triton.cdiv(triton.cdiv(n_classes, max(1, int(splits))), bn) * bn
    splits = triton.cdiv(n_classes, split_size)
    dev = x.device
    m = torch.empty((splits, n_rows), dtype=torch.float32, device=dev)
    sp = torch.empty_like(m)
    dsum = torch.empty_like(m) if label_smoothing else m
    zy = torch.zeros(n_rows, dtype=torch.float32, device=dev)
    if n_rows:
        with _launching(interp):
            k.lce_forward_kernel[(row_blocks, splits)](
                x, x.stride(0), weight, weight.stride(0), bias if bias is not None else x,
                m, sp, dsum, zy, target,
                n_rows, n_classes, n_dim, split_size, float(softcap or 1.0),
                HAS_BIAS=bias is not None, SMOOTH=bool(label_smoothing), SOFTCAP=softcap is not None,
                BM=bm, BN=bn, BK=bk, UPCAST=interp and x.dtype != torch.float32,
                IEEE=x.dtype == torch.float32,
                **({} if interp else dict(num_warps=warps, num_stages=stages)),
            )  # fmt: skip
    # Combine the splits in float64 (O(S N) work): M = max_p m_p, and s' without
    # adding and subtracting the arg-max's 1 (see lce_forward_kernel).
    md, spd = m.double(), sp.double()
    big = md.max(dim=0)
    top = big.values
    contrib = (spd + 1.0) * torch.exp(md - top)
    contrib.scatter_(0, big.indices[None], spd.gather(0, big.indices[None]))
    spg = contrib.sum(dim=0)
    l1p = torch.log1p(spg)
    lse = top + l1p
    nll = (top - zy.double()) + l1p
    eps = float(label_smoothing)
    kept = target != ignore_index
    if eps:
        counts = torch.full((splits, 1), float(split_size), dtype=torch.float64, device=dev)
        counts[-1] = n_classes - split_size * (splits - 1)
        total = (dsum.double() + counts * (lse - md)).sum(dim=0)  # sum_c (lse - z_c), no cancellation
        ce = (1.0 - eps) * nll + (eps / n_classes) * total
    else:
        ce = nll
    ce = torch.where(kept, ce, 0.0)
    bad = kept & ((target < 0) | (target >= n_classes))
    ce = torch.where(bad, math.nan, ce)
    return ce, lse.float(), nll.float()


# Which forms of cuBLAS' low-precision-in, float32-out GEMM this torch has (torch.mm(a, b,
# out_dtype) came with torch 2.8; addmm into its own input may be refused): found on first use.
_GEMM_FORMS = {"addmm_out": True, "mm_dtype": True}


def _low_precision_pair(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device.type == "cuda" and a.dtype in (torch.bfloat16, torch.float16) and a.dtype == b.dtype


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b accumulated and returned in float32 (no reduced-precision split-K for bf16)."""
    if _low_precision_pair(a, b) and _GEMM_FORMS["mm_dtype"]:
        try:
            return torch.mm(a, b, torch.float32)
        except (TypeError, RuntimeError):
            _GEMM_FORMS["mm_dtype"] = False
    return a.float() @ b.float()


def _addmm_f32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with a float32 accumulator and result (cuBLAS' bf16 -> fp32 GEMM on CUDA)."""
    if _low_precision_pair(a, b) and _GEMM_FORMS["addmm_out"]:
        try:
            torch.addmm(acc, a, b, torch.float32, out=acc)  # beta = 1: accumulate in place
            return
        except (TypeError, RuntimeError):
            _GEMM_FORMS["addmm_out"] = False
    if _low_precision_pair(a, b):
        acc.add_(_mm_f32(a, b))
    else:
        acc.addmm_(a.float(), b.float())


def linear_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None,
    lse: torch.Tensor,
    ce_coef: torch.Tensor,
    zl_coef: torch.Tensor,
    *,
    nll: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    softcap: float | None = None,
    need_dx: bool = True,
    need_dw: bool = True,
    need_db: bool = True,
    grad_filter: float | None = None,
    dw_chunk: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    r"""Gradients of the head from the forward's per-row statistics, recomputing the logits.

    With per-row coefficients ``ce_coef`` :math:`c_i` (the reduction's scale
    times the upstream gradient, 0 for ignored rows) and ``zl_coef``
    :math:`\zeta_i` (:math:`2\lambda_z \operatorname{lse}_i` times the z-loss
    scale and the upstream gradient), :math:`G_i = c_i (a_i - t_i) + \zeta_i a_i`
    (times the soft-cap's chain rule), and the results are :math:`G W`,
    :math:`G^	op x`, :math:`\sum_i G_i` in ``x``'s / ``weight``'s /
    ``bias``'s dtype, accumulated in float32. Returns ``(dx, dw, db, skipped)``.

    Two schedules, over chunks of ``dw_chunk`` classes (default: the chunk of
    G fits :data:`G_CHUNK_BYTES`):

    * default (deterministic): a Triton kernel recomputes the chunk's logit
      tiles and writes its (N, chunk) block of G (bf16 for bf16 inputs, else
      float32); cuBLAS then adds :math:`G W_{	ext{chunk}}` into a float32
      ``dx`` and forms :math:`dW_{	ext{chunk}} = G^	op x` in one GEMM over
      all N rows (float32 accumulation, rounded to ``weight.dtype`` once):
      no atomics, and no float32 (V, d) buffer;
    * ``grad_filter`` set: one fused kernel per chunk that skips the tiles the
      filter drops and adds the others' products into float32 accumulators
      with atomic adds (the dW accumulator covers one chunk,
      :data:`DW_CHUNK_BYTES`); ``skipped`` (a 1-element int32 tensor) counts
      the dropped (BM, BN) tiles (0 in the default schedule).
    """
    interp = _interpret(x)
    k = kernels()
    x = x if x.stride(1) == 1 else x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    n_rows, n_dim = x.shape
    n_classes = weight.shape[0]
    dev = x.device
    bm, bn, bk, warps, stages = _lce_blocks(interp, x.dtype)
    need_db = need_db and bias is not None
    f32 = torch.float32
    fused = grad_filter is not None
    g_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else f32  # fp16 would underflow G / N
    dx_acc = torch.zeros((n_rows, n_dim), dtype=f32, device=dev) if need_dx else None
    dw = torch.empty_like(weight) if need_dw else None
    db = torch.empty_like(bias) if need_db else None
    skipped = torch.zeros(1, dtype=torch.int32, device=dev)
    if dw_chunk is None:
        if fused:
            dw_chunk = n_classes if weight.dtype == f32 else DW_CHUNK_BYTES // (4 * max(n_dim, 1))
        else:
            dw_chunk = G_CHUNK_BYTES // (max(n_rows, 1) * torch.empty((), dtype=g_dtype).element_size())
    dw_chunk = min(max(bn, triton.cdiv(int(dw_chunk), bn) * bn), triton.cdiv(n_classes, bn) * bn)
    direct = fused and weight.dtype == f32  # dW accumulates straight into the result
    dw_acc = db_acc = g_buf = None
    if fused and need_dw:
        dw_acc = dw.zero_() if direct else torch.empty((min(dw_chunk, n_classes), n_dim), dtype=f32, device=dev)
    if fused and need_db:
        db_acc = torch.zeros(n_classes, dtype=f32, device=dev)
    if not fused and n_rows and (need_dx or need_dw or need_db):
        g_buf = torch.empty((n_rows, min(dw_chunk, n_classes)), dtype=g_dtype, device=dev)
    lse = lse.to(f32).contiguous()
    ce_coef = ce_coef.to(f32).contiguous()
    zl_coef = zl_coef.to(f32).contiguous()
    dummy = lse
    for v0 in range(0, n_classes, dw_chunk) if n_rows else ():
        v1 = min(n_classes, v0 + dw_chunk)
        if fused and need_dw and not direct:
            dw_acc.zero_()
        dw_ptr = dw_acc[v0:v1] if (need_dw and direct) else dw_acc
        db_ptr = db_acc[v0:v1] if (fused and need_db) else dummy
        g_chunk = None if g_buf is None else g_buf[:, : v1 - v0]
        grid = (triton.cdiv(n_rows, bm), triton.cdiv(v1 - v0, bn))
        with _launching(interp):
            k.lce_backward_kernel[grid](
                x, x.stride(0), weight, weight.stride(0), bias if bias is not None else x, target,
                lse, nll.to(f32).contiguous() if nll is not None else dummy, ce_coef, zl_coef,
                dx_acc if (fused and need_dx) else dummy, dw_ptr if (fused and need_dw) else dummy, db_ptr,
                skipped, g_chunk if g_chunk is not None else dummy, g_buf.stride(0) if g_buf is not None else 0,
                n_rows, n_classes, n_dim, v0, v1, float(label_smoothing), float(softcap or 1.0),
                float(grad_filter or 0.0),
                HAS_BIAS=bias is not None, SMOOTH=bool(label_smoothing), SOFTCAP=softcap is not None,
                HAS_NLL=nll is not None, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db,
                FILTER=fused, STORE_G=g_chunk is not None,
                DOWNCAST=interp and g_chunk is not None and g_dtype == torch.bfloat16,
                BM=bm, BN=bn, BK=bk, UPCAST=interp and x.dtype != f32, IEEE=x.dtype == f32,
                **({} if interp else dict(num_warps=warps, num_stages=stages)),
            )  # fmt: skip
        if fused:
            if need_dw and not direct:
                dw[v0:v1].copy_(dw_acc[: v1 - v0])  # rounded to weight.dtype once per chunk
            continue
        if g_chunk is None:
            continue
        w_chunk = weight[v0:v1]
        if need_dx:
            _addmm_f32(dx_acc, g_chunk, w_chunk if w_chunk.dtype == g_dtype else w_chunk.to(g_dtype))
        if need_dw:
            dw[v0:v1].copy_(_mm_f32(g_chunk.t(), x if x.dtype == g_dtype else x.to(g_dtype)))
        if need_db:
            db[v0:v1].copy_(g_chunk.sum(dim=0, dtype=f32))
    if need_dw and not n_rows:
        dw.zero_()
    if need_db and not n_rows:
        db.zero_()
    if fused and need_db:
        db.copy_(db_acc)
    dx = None if dx_acc is None else dx_acc.to(x.dtype)
    return dx, dw, db, skipped


def _row_coefficients(target, lse, ignore_index, reduction, z_loss, upstream, n_rows):
    """Per-row (ce_coef, zl_coef) on the device: the reduction's scale, the upstream gradient, 0 if ignored."""
    kept = target != ignore_index
    if reduction == "mean":
        n_kept = kept.sum().to(torch.float64)
        scale = torch.where(n_kept > 0, 1.0 / torch.where(n_kept > 0, n_kept, 1.0), 0.0)
    else:
        scale = torch.ones((), dtype=torch.float64, device=lse.device)
    up = upstream.to(torch.float64) if isinstance(upstream, torch.Tensor) else float(upstream)
    ce = torch.where(kept, scale * up, 0.0) * torch.ones(n_rows, dtype=torch.float64, device=lse.device)
    zl = torch.where(kept, 2.0 * float(z_loss) * lse.double() * ce, 0.0) if z_loss else torch.zeros_like(ce)
    return ce, zl, kept, scale


def linear_cross_entropy_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    need_grad: bool = True,
    grad_output: torch.Tensor | float = 1.0,
    grad_filter: float | None = None,
    splits: int | None = None,
    dw_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    r"""Loss of ``x @ weight.T + bias`` against ``target`` and its gradients, the logits never stored.

    The functional core of the GPU head (no autograd): forward (one sweep of
    logit tiles) then, with ``need_grad``, the backward (a second sweep that
    recomputes the tiles). Returns ``(loss, dx, dw, db, skipped)``; the loss
    is 0-d (``"mean"``, ``"sum"``) or (N,) float32; the gradients are those of
    ``sum(grad_output * loss)`` (``grad_output`` a scalar, or (N,) for
    ``"none"``), ``None`` when not asked for.

    Gradient filtering
    ------------------
    ``grad_filter=tau`` (off by default: it changes results) skips the
    matmuls of every (BM, BN) tile of :math:`G` in which every unscaled entry
    satisfies :math:`|a_{ic} - t_{ic}| < \tau` and :math:`a_{ic} < \tau`
    (tiles holding a row's label never qualify unless that row is ignored).
    The dropped part :math:`\Delta G` has entries :math:`|\Delta G_{ic}| <
    \tau\,(|c_i| + |\zeta_i|)\,\sigma_{ic}` (:math:`c_i, \zeta_i` the row's
    coefficients, see :func:`linear_backward`; :math:`\sigma_{ic} \le 1` the
    soft-cap factor), so with :math:`\gamma = \max_i (|c_i| + |\zeta_i|)`:

    .. math::

        \lVert \Delta\, dx_i \rVert_\infty \le \tau \gamma \sum_{c\ \mathrm{skipped}} |W_{c\cdot}|_\infty
            \le \tau \gamma V \max|W|, \qquad
        \lVert \Delta\, dW_c \rVert_\infty \le \tau \gamma \sum_{i\ \mathrm{skipped}} |x_{i\cdot}|_\infty
            \le \tau \gamma N \max|x|,

    and :math:`|\Delta\, db_c| \le \tau \gamma N`. For ``"mean"``
    :math:`\gamma = (1 + 2\lambda_z \max|\operatorname{lse}|)/N_{\text{kept}}`,
    so the dW bound is :math:`\tau (1 + 2\lambda_z \max|\operatorname{lse}|) \max|x|`.
    With :math:`\tau = 2^{-12}` (below bf16's half-ulp of 1 relative to the
    true-class entries) this is at most the rounding bf16 already applies to
    :math:`G`. The softmax being peaked, most tiles of a large vocabulary
    qualify; the returned ``skipped`` counts them. The bound holds for any
    row sort; the vocabulary is not reordered here.
    """
    ignore_index = int(ignore_index)
    ce_rows, lse, nll = linear_forward(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap, splits=splits,
    )  # fmt: skip
    n_rows = x.shape[0]
    kept = target != ignore_index
    loss_rows = ce_rows
    if z_loss:
        loss_rows = loss_rows + torch.where(kept, float(z_loss) * lse.double() ** 2, 0.0)
    if reduction == "mean":
        n_kept = kept.sum().to(torch.float64)
        loss = loss_rows.sum() * torch.where(n_kept > 0, 1.0 / torch.where(n_kept > 0, n_kept, 1.0), 0.0)
    elif reduction == "sum":
        loss = loss_rows.sum()
    elif reduction == "none":
        loss = loss_rows
    else:
        raise ValueError(f"reduction must be one of ('mean', 'sum', 'none'), got {reduction!r}")
    loss = loss.to(torch.float32)
    dx = dw = db = None
    skipped = torch.zeros(1, dtype=torch.int32, device=x.device)
    if need_grad:
        ce, zl, _, _ = _row_coefficients(target, lse, ignore_index, reduction, z_loss, grad_output, n_rows)
        dx, dw, db, skipped = linear_backward(
            x, weight, target, bias, lse, ce, zl, nll=nll, label_smoothing=label_smoothing, softcap=softcap,
            need_db=bias is not None, grad_filter=grad_filter, dw_chunk=dw_chunk,
        )  # fmt: skip
    return loss, dx, dw, db, skipped


# --------------------------------------------------------------------------- front-end registration


def _linear_op_cuda(x, weight, target, bias, ignore_index, label_smoothing, z_loss, softcap, reduction,
                    block_rows, block_vocab, need_dx, need_dw, need_db):  # fmt: skip
    """The ``"cuda"`` kernel of ``softxent::linear_cross_entropy``: gradients formed in the forward
    for ``"mean"``/``"sum"`` (as the op's contract says), recomputed in the backward op for ``"none"``."""
    from . import _linear
    from ._reference import work_dtype

    if x.dtype == torch.float64:  # no float64 tensor-core path: the blocked torch head (its rows on Triton)
        loss, lse, dx, dw, db = _linear._linear_xent(
            x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
            softcap=softcap or None, reduction=reduction, block_rows=block_rows, block_vocab=block_vocab,
            need_dx=need_dx and reduction != "none", need_dw=need_dw and reduction != "none",
            need_db=need_db and reduction != "none" and bias is not None,
        )  # fmt: skip
        e = x.new_empty((0,))
        return loss, lse, e if dx is None else dx, e if dw is None else dw, e if db is None else db
    early = reduction != "none"
    need_dx, need_dw, need_db = need_dx and early, need_dw and early, need_db and early and bias is not None
    ce_rows, lse, nll = linear_forward(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap or None,
    )  # fmt: skip
    kept = target != ignore_index
    loss_rows = ce_rows + (torch.where(kept, z_loss * lse.double() ** 2, 0.0) if z_loss else 0.0)
    ce, zl, _, scale = _row_coefficients(target, lse, ignore_index, reduction, z_loss, 1.0, x.shape[0])
    loss = loss_rows if reduction == "none" else loss_rows.sum() * scale
    e = x.new_empty((0,))
    dx = dw = db = None
    if need_dx or need_dw or need_db:
        dx, dw, db, _ = linear_backward(
            x, weight, target, bias, lse, ce, zl, nll=nll, label_smoothing=label_smoothing,
            softcap=softcap or None, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
        )  # fmt: skip
    lse = torch.where(kept, lse, 0.0)  # as the CPU op: ignored rows are never computed there
    return (loss.to(x.dtype), lse.to(work_dtype(x.dtype)), e if dx is None else dx, e if dw is None else dw,
            weight.new_empty((0,)) if db is None else db)  # fmt: skip


def _linear_backward_op_cuda(grad_rows, x, weight, target, bias, lse, ignore_index, label_smoothing, z_loss,
                             softcap, block_rows, block_vocab, need_dx, need_dw, need_db):  # fmt: skip
    """The ``"cuda"`` kernel of ``softxent::linear_cross_entropy_backward`` (``reduction="none"``)."""
    from . import _linear

    if x.dtype == torch.float64:
        _, _, dx, dw, db = _linear._linear_xent(
            x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
            softcap=softcap or None, reduction="none", block_rows=block_rows, block_vocab=block_vocab,
            need_dx=need_dx, need_dw=need_dw, need_db=need_db, row_grad=grad_rows, saved_lse=lse,
        )  # fmt: skip
    else:
        ce, zl, _, _ = _row_coefficients(target, lse, ignore_index, "none", z_loss, grad_rows, x.shape[0])
        dx, dw, db, _ = linear_backward(
            x, weight, target, bias, lse, ce, zl, label_smoothing=label_smoothing, softcap=softcap or None,
            need_dx=need_dx, need_dw=need_dw, need_db=need_db and bias is not None,
        )  # fmt: skip
    return (x.new_empty((0,)) if dx is None else dx, weight.new_empty((0,)) if dw is None else dw,
            weight.new_empty((0,)) if db is None else db)  # fmt: skip


_REGISTERED = False


def register() -> bool:
    """Plug the kernels into the front end for CUDA tensors (idempotent). Returns whether they are."""
    global _REGISTERED
    if _REGISTERED:
        return True
    if triton is None:
        return False
    from . import _backends, _functional, _linear

    _backends.FUSED_BACKENDS["cuda"] = cuda_rows
    _functional._cross_entropy_op.register_kernel("cuda")(_ce_op_cuda)
    _linear._linear_op.register_kernel("cuda")(_linear_op_cuda)
    _linear._linear_backward_op.register_kernel("cuda")(_linear_backward_op_cuda)
    _REGISTERED = True
    return True
