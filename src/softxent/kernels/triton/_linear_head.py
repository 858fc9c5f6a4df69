r"""Launches of the linear + cross-entropy head: forward statistics, backward chunks, the functional core.

:func:`linear_forward` keeps only per-row statistics of each vocabulary
split of :math:`z = x W^\top + b` (combined here in float64),
:func:`linear_backward` recomputes the logit tiles chunk by chunk and hands
each block of :math:`G` to cuBLAS (or, with gradient filtering, to one fused
kernel with atomics), and :func:`linear_cross_entropy_triton` is the two
together without autograd.
"""

from __future__ import annotations

import functools
import math

import torch

from ... import _rowstats as rs
from ._host import _interpret, _launching, cdiv, device_grad_scale, kernels, reduce_rows

__all__ = ["DW_CHUNK_BYTES", "G_CHUNK_BYTES", "linear_backward", "linear_cross_entropy_triton", "linear_forward"]

#: Bytes of the float32 weight-gradient accumulator of the filtered (fused) backward.
DW_CHUNK_BYTES = 256 * 2**20
#: Bytes of the (N, chunk) block of G that the default backward hands to cuBLAS.
G_CHUNK_BYTES = 64 * 2**20


#: (BM, BN, BK, num_warps, num_stages) per (kernel, options on) for bf16/fp16 on the GPU: the largest
#: tiles of each variant that compile without register spills at sm_90a (triton 3.7.1, ptxas -v;
#: benchmarks/results/triton_compile_sm90a.md). "options" is any of bias, label smoothing, soft cap:
#: their epilogue holds more live values, and at 128 x 128 those variants spilled 144 to 528 bytes.
#: 128 x 128 x 64 spills in every variant (196 to 480 bytes). Not yet timed on a GPU: the benchmark's
#: linear-sweep compares these with the others.
LOW_PRECISION_TILES = {
    ("forward", False): (128, 128, 32, 8, 3),
    ("forward", True): (128, 64, 32, 8, 3),
    ("backward", False): (128, 128, 32, 8, 3),
    ("backward", True): (128, 64, 64, 8, 3),
    ("fused", False): (128, 128, 32, 8, 3),
    ("fused", True): (128, 64, 32, 8, 3),
}
#: float32 (IEEE dots on CUDA cores): 64 x 64 x 32 with 8 warps, every variant without spills
#: (with 4 warps all spilled, 52 to 552 bytes).
FLOAT32_TILES = (64, 64, 32, 8, 3)


def _lce_blocks(
    interp: bool, dtype: torch.dtype, kernel: str = "forward", options: bool = False
) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, num_warps, num_stages) of one kernel variant: small tiles for the interpreter.

    ``kernel``: ``"forward"``, ``"backward"`` (G to cuBLAS) or ``"fused"`` (the filtered
    backward); ``options``: bias, label smoothing or the soft cap on.
    """
    if interp:
        return 16, 32, 16, 4, 1
    if dtype == torch.float32:
        return FLOAT32_TILES
    return LOW_PRECISION_TILES[(kernel, bool(options))]


@functools.lru_cache(maxsize=256)
def _wave_splits(row_blocks: int, vocab_blocks: int, n_sm: int) -> int:
    """Vocabulary splits S of the forward grid (row blocks x S) that keep the SMs busy to the last wave.

    At 255 registers per thread one (BM, BN) program fits an SM, so the grid runs in
    waves of ``n_sm`` programs; each program sweeps ``ceil(vocab_blocks / S)`` tiles.
    The time is about waves x tiles per program, the useful work row blocks x vocabulary
    tiles: S maximises their ratio (within 0.5%: the fewest splits). At (8192, 256000) and 132
    SMs: S = 33, 16 full waves (the earlier rule, about 4 programs per SM, gave S = 9:
    576 programs, a last wave 36% full).
    """
    best, best_s = 0.0, 1
    for s in range(1, min(vocab_blocks, max(1, 64 * n_sm // row_blocks)) + 1):
        per = cdiv(vocab_blocks, s)
        s_real = cdiv(vocab_blocks, per)
        eff = row_blocks * vocab_blocks / (cdiv(row_blocks * s_real, n_sm) * n_sm * per)
        if eff > best + 0.005:  # half a per cent more use of the SMs is worth more splits
            best, best_s = eff, s_real
    return best_s


def _wave_chunk(row_blocks: int, budget_tiles: int, vocab_blocks: int, n_sm: int) -> int:
    """Vocabulary tiles per backward chunk near ``budget_tiles`` (0.5x to 1.1x) whose grid fills whole waves."""
    if budget_tiles >= vocab_blocks:
        return vocab_blocks
    best, best_c = 0.0, budget_tiles
    for c in range(max(1, budget_tiles // 2), min(vocab_blocks, budget_tiles + budget_tiles // 10) + 1):
        eff = row_blocks * c / (cdiv(row_blocks * c, n_sm) * n_sm)
        if eff >= best - 1e-9:  # ties: the larger chunk (fewer launches)
            best, best_c = eff, c
    return best_c


def _sm_count(x: torch.Tensor, interp: bool) -> int:
    return 1 if interp else torch.cuda.get_device_properties(x.device).multi_processor_count


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
    tiles: tuple[int, int, int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per-row loss terms of ``x @ weight.T + bias`` without the logits: ``(ce_rows, lse, nll)``.

    ``ce_rows`` (N,) float64: each row's unscaled cross-entropy (0 for ignored
    rows, NaN for a class index out of range), without the z-loss;
    ``lse`` (N,) float32; ``nll`` (N,) float32, :math:`\operatorname{lse} - z_y`
    computed without cancellation (the backward's true-class gradient
    :math:`a_y - 1 = \operatorname{expm1}(-\text{nll})` uses it).
    ``splits``: vocabulary splits (programs along V); the default fills whole waves of
    the GPU's SMs (:func:`_wave_splits`). ``tiles``: (BM, BN, BK, warps, stages) instead of
    the variant's own (:func:`_lce_blocks`), for the benchmark's sweep.
    """
    _check_linear(x, weight, target, bias)
    interp = _interpret(x)
    k = kernels()
    x = x if x.stride(1) == 1 else x.contiguous()
    weight = weight if weight.stride(1) == 1 else weight.contiguous()
    n_rows, n_dim = x.shape
    n_classes = weight.shape[0]
    options = bias is not None or bool(label_smoothing) or softcap is not None
    bm, bn, bk, warps, stages = tiles or _lce_blocks(interp, x.dtype, "forward", options)
    row_blocks = cdiv(max(n_rows, 1), bm)
    vocab_blocks = cdiv(n_classes, bn)
    if splits is None:
        if interp:
            splits = max(1, min(vocab_blocks, cdiv(4, row_blocks)))
        else:
            splits = _wave_splits(row_blocks, vocab_blocks, _sm_count(x, interp))
    split_size = cdiv(cdiv(n_classes, max(1, int(splits))), bn) * bn
    splits = cdiv(n_classes, split_size)
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
    # Combine the splits in float64 (O(S N) work) with the row-statistics merge
    # (softxent._rowstats): each split is the state of its part of the row, its
    # maximum's 1 as ``lead`` (0 for a split with nothing unmasked) and s' as
    # ``rest``, so the merged log S is log1p of the small terms (exact for a
    # confident row). The kernel's D_p = sum (m_p - z_c) is the state's -dot.
    eps = float(label_smoothing)
    kept = target != ignore_index
    md, spd = m.double(), sp.double()
    counts = torch.full((splits, 1), float(split_size), dtype=torch.float64, device=dev)
    counts[-1] = n_classes - split_size * (splits - 1)
    zero = torch.zeros_like(md)
    parts = rs.RowStats(
        md, (md > -math.inf).double(), spd, zero, zero, -dsum.double() if eps else None, counts.expand_as(md)
    )
    top = md.max(dim=0).values
    based = rs.rebase(parts, top[None], torch)
    whole = rs.RowStats(
        top, based.lead.sum(dim=0), based.rest.sum(dim=0), zy.double(), kept.double(),
        None if based.dot is None else based.dot.sum(dim=0), based.total.sum(dim=0),
    )  # fmt: skip
    lse = rs.lse(whole, torch)
    nll = rs.label_loss(whole, torch)
    ce = (1.0 - eps) * nll + (eps / n_classes) * rs.smooth_loss(whole, torch) if eps else nll
    ce = torch.where(kept, ce, 0.0)
    bad = kept & ((target < 0) | (target >= n_classes))
    ce = torch.where(bad, math.nan, ce)
    return ce, lse.float(), nll.float()


# cuBLAS' low-precision-in, float32-out GEMMs, as torch exposes them: torch.mm(a, b, out_dtype) (the
# aten overload mm.dtype, torch >= 2.8) and addmm with out_dtype into a float32 accumulator, which
# older torch refuses ("self and mat2 must have the same dtype"). Found once per process by the
# overloads' presence and one probe on 1 x 1 tensors; errors of the real calls always propagate.
_ADDMM_F32_INTO_SELF: dict[str, bool] = {}


def _has_mm_dtype() -> bool:
    return "dtype" in torch.ops.aten.mm.overloads()


def _addmm_into_f32(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch.addmm(acc, a, b, out_dtype=float32, out=acc)`` takes a float32 ``acc`` here."""
    key = f"{device.type}:{dtype}"
    if key not in _ADDMM_F32_INTO_SELF:
        ok = "dtype_out" in torch.ops.aten.addmm.overloads()
        if ok:
            acc = torch.zeros((1, 1), dtype=torch.float32, device=device)
            one = torch.ones((1, 1), dtype=dtype, device=device)
            try:
                torch.addmm(acc, one, one, out_dtype=torch.float32, out=acc)
            except RuntimeError as e:  # a dtype check of this torch (raised on the host, before any launch)
                if "dtype" not in str(e):
                    raise
                ok = False
        _ADDMM_F32_INTO_SELF[key] = ok
    return _ADDMM_F32_INTO_SELF[key]


def _low_precision_pair(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device.type == "cuda" and a.dtype in (torch.bfloat16, torch.float16) and a.dtype == b.dtype


def _mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b accumulated and returned in float32 (no reduced-precision split-K for bf16)."""
    if _low_precision_pair(a, b) and _has_mm_dtype():
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def _addmm_f32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b with a float32 accumulator and result (cuBLAS' bf16 -> fp32 GEMM on CUDA)."""
    if _low_precision_pair(a, b):
        if _addmm_into_f32(a.device, a.dtype):
            torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)  # beta = 1: accumulate in place
        else:
            acc.add_(_mm_f32(a, b))
    else:
        acc.addmm_(a.float(), b.float())


def _g_scale(ce_coef: torch.Tensor, zl_coef: torch.Tensor) -> torch.Tensor:
    r"""A power of two S with S max_i(|c_i| + |zeta_i|) <= 1, on the device (float32 0-d).

    fp16 holds G scaled by S: every entry of G is at most :math:`|c_i| + |\zeta_i|`
    in magnitude (:math:`|a - t| \le 1`, :math:`a \le 1`, the soft cap's factor
    :math:`\le 1`), so the scaled entries lie in [-1, 1], the largest within a
    factor 2 of 1: fp16's 11 significant bits for every entry above 2**-14 of the
    largest, no overflow, and the (1/N)-sized entries of a mean do not underflow
    as they would unscaled. The GEMMs then run on fp16 tensor cores; S (exact, a
    power of two) is divided out of their float32 results.
    """
    top = (ce_coef.abs() + zl_coef.abs()).max() if ce_coef.numel() else ce_coef.new_zeros(())
    top = torch.where(torch.isfinite(top) & (top > 0), top, 1.0)
    return torch.exp2(-torch.ceil(torch.log2(top))).to(torch.float32)


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
    tiles: tuple[int, int, int, int, int] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    r"""Gradients of the head from the forward's per-row statistics, recomputing the logits.

    With per-row coefficients ``ce_coef`` :math:`c_i` (the reduction's scale
    times the upstream gradient, 0 for ignored rows) and ``zl_coef``
    :math:`\zeta_i` (:math:`2\lambda_z \operatorname{lse}_i` times the z-loss
    scale and the upstream gradient), :math:`G_i = c_i (a_i - t_i) + \zeta_i a_i`
    (times the soft-cap's chain rule), and the results are :math:`G W`,
    :math:`G^\top x`, :math:`\sum_i G_i` in ``x``'s / ``weight``'s /
    ``bias``'s dtype, accumulated in float32. Returns ``(dx, dw, db, skipped)``.

    Two schedules, over chunks of ``dw_chunk`` classes (default: the chunk of
    G fits :data:`G_CHUNK_BYTES`):

    * default (deterministic): a Triton kernel recomputes the chunk's logit
      tiles and writes its (N, chunk) block of G in ``x.dtype`` (fp16 scaled
      by a power of two, :func:`_g_scale`); cuBLAS then adds :math:`G W_{\text{chunk}}` into a float32
      ``dx`` and forms :math:`dW_{\text{chunk}} = G^\top x` in one GEMM over
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
    fused = grad_filter is not None
    options = bias is not None or bool(label_smoothing) or softcap is not None
    bm, bn, bk, warps, stages = tiles or _lce_blocks(interp, x.dtype, "fused" if fused else "backward", options)
    need_db = need_db and bias is not None
    f32 = torch.float32
    # G in x's dtype for the tensor-core GEMMs; fp16 holds it scaled by a power of two (see _g_scale).
    g_dtype = x.dtype
    dx_acc = torch.zeros((n_rows, n_dim), dtype=f32, device=dev) if need_dx else None
    dw = torch.empty_like(weight) if need_dw else None
    db = torch.empty_like(bias) if need_db else None
    skipped = torch.zeros(1, dtype=torch.int32, device=dev)
    if dw_chunk is None:
        if fused:
            dw_chunk = n_classes if weight.dtype == f32 else DW_CHUNK_BYTES // (4 * max(n_dim, 1))
        else:
            dw_chunk = G_CHUNK_BYTES // (max(n_rows, 1) * torch.empty((), dtype=g_dtype).element_size())
            if not interp:  # whole waves of (BM, BN) programs per chunk (a few % of the G kernel)
                row_blocks = cdiv(max(n_rows, 1), bm)
                tiles_c = _wave_chunk(row_blocks, max(1, dw_chunk // bn), cdiv(n_classes, bn), _sm_count(x, interp))
                dw_chunk = tiles_c * bn
    dw_chunk = min(max(bn, cdiv(int(dw_chunk), bn) * bn), cdiv(n_classes, bn) * bn)
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
    inv_s = None  # 1/S, multiplied into the float32 results (fp16 only; exact: S is a power of two)
    if x.dtype == torch.float16:
        s = _g_scale(ce_coef, zl_coef)
        ce_coef, zl_coef, inv_s = ce_coef * s, zl_coef * s, 1.0 / s
    unscale = (lambda t: t) if inv_s is None else (lambda t: t * inv_s)  # noqa: E731
    dummy = lse
    for v0 in range(0, n_classes, dw_chunk) if n_rows else ():
        v1 = min(n_classes, v0 + dw_chunk)
        if fused and need_dw and not direct:
            dw_acc.zero_()
        dw_ptr = dw_acc[v0:v1] if (need_dw and direct) else dw_acc
        db_ptr = db_acc[v0:v1] if (fused and need_db) else dummy
        g_chunk = None if g_buf is None else g_buf[:, : v1 - v0]
        grid = (cdiv(n_rows, bm), cdiv(v1 - v0, bn))
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
                dw[v0:v1].copy_(unscale(dw_acc[: v1 - v0]))  # rounded to weight.dtype once per chunk
            continue
        if g_chunk is None:
            continue
        w_chunk = weight[v0:v1]
        if need_dx:
            _addmm_f32(dx_acc, g_chunk, w_chunk)
        if need_dw:
            dw[v0:v1].copy_(unscale(_mm_f32(g_chunk.t(), x)))
        if need_db:
            db[v0:v1].copy_(unscale(g_chunk.sum(dim=0, dtype=f32)))
    if need_dw and not n_rows:
        dw.zero_()
    if need_db and not n_rows:
        db.zero_()
    if fused and need_db:
        db.copy_(unscale(db_acc))
    dx = None if dx_acc is None else unscale(dx_acc).to(x.dtype)
    return dx, dw, db, skipped


def _row_coefficients(target, lse, ignore_index, reduction, z_loss, upstream, n_rows):
    """Per-row (ce_coef, zl_coef) on the device: the reduction's scale, the upstream gradient, 0 if ignored."""
    kept = target != ignore_index
    scale = device_grad_scale(reduction, kept.sum())
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
    tiles: tuple[int, int, int, int, int] | None = None,
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
        softcap=softcap, splits=splits, tiles=tiles,
    )  # fmt: skip
    n_rows = x.shape[0]
    kept = target != ignore_index
    loss_rows = ce_rows
    if z_loss:
        loss_rows = loss_rows + torch.where(kept, float(z_loss) * lse.double() ** 2, 0.0)
    loss = reduce_rows(loss_rows, device_grad_scale(reduction, kept.sum()), reduction).to(torch.float32)
    dx = dw = db = None
    skipped = torch.zeros(1, dtype=torch.int32, device=x.device)
    if need_grad:
        ce, zl, _, _ = _row_coefficients(target, lse, ignore_index, reduction, z_loss, grad_output, n_rows)
        dx, dw, db, skipped = linear_backward(
            x, weight, target, bias, lse, ce, zl, nll=nll, label_smoothing=label_smoothing, softcap=softcap,
            need_db=bias is not None, grad_filter=grad_filter, dw_chunk=dw_chunk, tiles=tiles,
        )  # fmt: skip
    return loss, dx, dw, db, skipped
