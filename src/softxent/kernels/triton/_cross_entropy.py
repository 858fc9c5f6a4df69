r"""Launch of the cross-entropy kernel on (M, C) logits: :func:`cross_entropy_rows`.

One program per row (or per block of rows when the class count is small),
two sweeps over the row (see :func:`._kernels_ce.ce_kernel`); the mean's
denominator is computed on the device and read by the kernel, so the call
never synchronises with the host.
"""

from __future__ import annotations

import torch

from ..._contract import check_reduction, grad_scale, keeps_rows, mean_scale
from ._host import _check_rows, _interpret, _launching, _pow2, cdiv, device_mean_scale, kernels

__all__ = ["cross_entropy_rows"]


def _ce_scales(target, weight, n_rows, n_classes, ignore_index, reduction, scale, device, prob):
    """(ce_scale, zl_scale) as a float64 device tensor: computed by torch on the device, never read back.

    float64, so that float64 logits get the mean's 1/n unrounded (the caller casts to the kernel's
    precision). Constants are written by fill kernels, not copied from the host (``torch.tensor(...,
    device="cuda")`` would wait for the copy: a host synchronisation).
    """
    if scale is not None:
        out = torch.empty(2, dtype=torch.float64, device=device)
        out[0].fill_(float(scale[0]))
        out[1].fill_(float(scale[1]))
        return out
    if grad_scale(reduction, 0.0):  # the contract: "sum" and "none" scale by 1
        return torch.ones(2, dtype=torch.float64, device=device)
    if prob:  # every row counts, with weight 1 (class weights are inside the target's mass)
        return torch.full((2,), mean_scale(n_rows), dtype=torch.float64, device=device)
    kept = target != ignore_index
    if weight is None:
        denom = kept.sum()
    else:
        w_y = weight.to(torch.float64)[target.clamp(0, n_classes - 1)]
        denom = torch.where(kept, w_y, 0.0).sum()
    # An all-ignored batch: loss 0 (the contract's mean_scale), not torch's 0/0 = NaN.
    return torch.stack([device_mean_scale(denom), device_mean_scale(kept.sum())])


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
    num_warps: int | None = None,
    num_stages: int | None = None,
    l2_hints: bool = False,
    lanes: bool | None = None,
    exp_mode: int = 2,
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
    num_warps, num_stages : int, optional
        Warps per program and the software-pipelining depth of the sweeps over
        a row (``tl.range(..., num_stages=)``; 1: none); the defaults are
        :func:`ce_launch_config`'s. Knobs for the benchmark's sweep.
    l2_hints : bool
        Schedule the second sweep for L2: the first sweep's loads marked
        evict-last, the second's evict-first and going over the row backwards
        (its last tiles are the likeliest still cached), the gradient written
        with streaming stores. Off: with the per-lane state and 2048-class
        tiles the second H200 sweep was as fast without (4.51 ms against 4.57
        at 8192 x 256000 bf16). A knob for the tests and the benchmark's sweep.
    lanes : bool, optional
        Keep the online log-sum-exp and the sums per lane across a row's tiles
        and reduce them once per row (:func:`._kernels_ce.ce_kernel`'s
        ``LANES``: no reduction inside the loops over a row), instead of
        reducing every tile as it comes. Default: on for rows of several tiles
        (the second H200 sweep, 8192 x 256000 bf16, 4096-class tiles on 8 warps with
        the L2 schedule: 4.57 ms against 4.94 per tile).
    exp_mode : int
        The first sweep's exponentials (:func:`._kernels_common._exp_sum_term`): 2 (default)
        ``ex2.approx`` with the rounding of ``x log2(e)`` put back (two fmas; float32 only),
        1 libdevice's ``expf``, 0 ``tl.exp``, whose rounded product costs a confident row's
        loss up to 1.8e-6 relative. float64 logits always take 1. In the second H200 sweep 2
        ran 1-12% faster than 1 (four pairs), and 0 4-6% faster than 2 in three of them.

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
    check_reduction(reduction)
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
        options = dict(HAS_WEIGHT=weight is not None, SMOOTH=bool(label_smoothing), ZLOSS=bool(z_loss),
                       SOFTCAP=softcap is not None)  # fmt: skip
        heavy = prob or any(options.values()) or acc == torch.float64
        rows_per, block, warps, stages = ce_launch_config(n_classes, block, heavy)
        if lanes is None:
            lanes = n_classes > block  # rows of several tiles; one tile has nothing to carry across
        warps = int(num_warps or warps)
        stages = int(num_stages or stages)
        n_blocks = cdiv(n_rows, rows_per)
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
                PROB=prob, **options, NEED_GRAD=need_grad,
                ROWS=rows_per, BLOCK=block, ACC=tl_acc,
                DOWNCAST=interp and need_grad and grad.dtype == torch.bfloat16, STAGES=stages, HINTS=bool(l2_hints),
                LANES=bool(lanes), EXP=1 if acc == torch.float64 else int(exp_mode),
                **({} if interp else dict(num_warps=warps)),
            )  # fmt: skip
    else:
        loss_rows.zero_()
    loss = loss_rows if keeps_rows(reduction) else loss_rows.sum(dtype=torch.float64).to(acc)
    return loss, grad, lse


def ce_launch_config(n_classes: int, block: int | None = None, heavy: bool = False) -> tuple[int, int, int, int]:
    """(rows per program, classes per tile, warps, pipelining stages) of :func:`cross_entropy_rows`.

    Also what :mod:`._aot` compiles. Rows of several tiles: 2048 classes per tile on 4 warps, one
    stage, with the per-lane state (``lanes``) and the split ``ex2`` exponential (``exp_mode=2``):
    the second H200 sweep's fastest at both shapes (2026-12-04, bf16, 8192 x 256000: 4.51 ms against
    the earlier default's 5.22; 8192 x 128256: 2.42 against 3.05;
    ``benchmarks/results/gpu_h200_second_run.md``). Two stages were slower in the first run at
    every tile size timed both ways. ``benchmarks/cross_entropy_gpu.py --only ce-sweep`` compares
    the alternatives. ``heavy`` (probability targets, any option: weights, smoothing, z-loss, a
    cap; or float64) doubles the warps of such rows: their per-lane sums at 16 elements a thread
    take 109-156 registers at sm_90a (3-4 programs an SM), at 8 elements 64-95 (not yet timed on a
    GPU).
    """
    if block is None:
        block = min(_pow2(n_classes), 2048)
    rows_per = max(1, min(16, 2048 // block)) if block >= n_classes else 1
    tile = rows_per * block  # elements per program and sweep step
    if rows_per == 1 and n_classes > block:
        warps = 8 if heavy else 4  # rows of several tiles: the sweep's 2048 x 4 warps (16 elements a thread)
    else:
        warps = 8 if tile >= 1024 else 4
    return rows_per, block, warps, 1


def _tl_dtype(dtype: torch.dtype):
    import triton.language as tl

    return tl.float64 if dtype == torch.float64 else tl.float32
