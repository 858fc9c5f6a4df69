r"""Fused backends of the PyTorch front end: where a device's fast kernel plugs in.

Contract
--------
A fused backend computes, for (M, C) row-major logits :math:`z` (class axis
last) and one sweep over them, the reduced loss, its gradient with respect to
:math:`z`, and the per-row log-sum-exp, with every option of
:func:`softxent.torch.cross_entropy` (class weights, ``ignore_index``, label
smoothing, z-loss, soft-capping) and the reduction applied, exactly as
:func:`softxent.torch._reference.cross_entropy_rows_reference` defines them:

.. math::

    \ell_i = \sum_c t_{ic} (\operatorname{lse}_i - z'_{ic})
             + \lambda_z \operatorname{lse}_i^2, \qquad
    z' = c \tanh(z / c), \qquad
    \frac{\partial \ell_i}{\partial z_i}
        = \left(a_i \textstyle\sum_c t_{ic} - t_i + 2 \lambda_z \operatorname{lse}_i a_i\right)
          \odot \operatorname{sech}^2(z_i / c)

with :math:`a = \operatorname{softmax}(z')` (eq. 1), the effective target
:math:`t` of :mod:`softxent._losses` and eq. (15) for the first two terms.
Backends never validate their arguments' types and shapes (the wrappers do);
they do check the data (class indices in range) when that is free.

Backends by device type
-----------------------
* ``"cpu"``: :func:`cpu_rows`, the fused numba kernels of
  :mod:`softxent.kernels` on zero-copy NumPy views of the tensors
  (``Tensor.numpy()`` shares memory), through the public NumPy API
  :func:`softxent.softmax_cross_entropy_with_grad` with ``out=``/``inplace=``
  and ``return_lse=True``.
* ``"cuda"`` (when Triton is installed, on a CUDA build of torch):
  :func:`softxent.torch._triton.cuda_rows`, one Triton kernel launch per
  call, no host synchronisation (data errors give NaN rows instead of
  ``ValueError``). :func:`softxent.torch._triton.register` adds it to
  :data:`FUSED_BACKENDS` and registers the ``"cuda"`` kernels of the
  ``softxent::cross_entropy`` and ``softxent::linear_cross_entropy`` custom
  ops (the latter with logits computed tile by tile on chip).
* anything else (MPS, XPU, meta, ...): none. The front end then uses the
  plain-torch formulas of :mod:`._reference` (torch's autograd for the
  gradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import softxent as sx

from .._contract import mean_scale
from ._memory import empty
from ._reference import work_dtype
from ._validation import check_index_target_values, check_prob_target_values, first_masked_row, masked_row_error

__all__ = ["FUSED_BACKENDS", "cpu_rows", "fused_backend", "has_fused_backend"]

# Rows per slice of the elementwise z-loss / soft-cap passes: about 4 MiB of
# float32 temporaries, so they stay in cache and never cost a second (M, C) buffer.
_SLICE_ELEMENTS = 1 << 20


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor (``detach`` shares the storage)."""
    return t.detach().numpy()


def cpu_rows(
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
    """The CPU backend: loss, gradient and log-sum-exp of (M, C) logits ``z`` in one sweep.

    Parameters
    ----------
    z : Tensor (M, C), contiguous, on the CPU
        float32/float64 run as they are; float16/bfloat16 are copied to
        float32 first (the kernels' arithmetic then accumulates in float64).
    target : Tensor
        (M,) integer class indices, or (M, C) probabilities.
    weight : Tensor (C,) or None
        Class weights.
    reduction : {"mean", "sum", "none"}
        As :func:`softxent.torch.cross_entropy`.
    need_grad, need_lse : bool
        Without the gradient no (M, C) buffer is allocated (loss only).
    z_writable : bool
        ``z`` may be overwritten (with the gradient: no extra (M, C) buffer).
    scale : (ce_scale, zl_scale), optional
        With ``reduction="sum"`` or ``"none"``: multiply every row's
        cross-entropy by ``ce_scale`` and its z-loss by ``zl_scale`` (a mean
        over a larger batch that this call sees one block of, as
        :mod:`._linear` does).

    Returns
    -------
    loss : Tensor, float64, 0-d or (M,)
    grad : Tensor (M, C) in float32/float64 (``z``'s arithmetic dtype), or None
        The gradient of ``loss`` (each row's own for ``"none"``). It may be
        ``z`` itself when ``z_writable``.
    lse : Tensor (M,) float64, or None
        Log-sum-exp of each row of the (soft-capped) logits, ignored rows included.
    """
    n_rows, n_classes = z.shape
    wd = work_dtype(z.dtype)
    z_in, z_in_intact = z, not z_writable  # to name a fully masked row if the kernel finds one
    if z.dtype != wd:
        z = empty(tuple(z.shape), wd).copy_(z)  # bf16/fp16: float32 copy, ours to overwrite
        z_writable = True
    prob = target.is_floating_point()
    if prob:
        check_prob_target_values(target)
        y = _numpy(target.to(wd).contiguous())
        kept = None  # every row takes part in the z-loss
    else:
        check_index_target_values(target, n_classes, ignore_index)
        y = _numpy(target.to(torch.int64).contiguous())
        kept = y != ignore_index
    w = None if weight is None else _numpy(weight.to(torch.float64))
    sample_weight = None
    np_reduction = reduction
    ce_scale = zl_scale = 1.0
    if scale is not None:
        ce_scale, zl_scale = scale
        if ce_scale != 1.0:
            sample_weight = np.full(n_rows, ce_scale)
    elif reduction == "mean" and z_loss:
        n_kept = n_rows if kept is None else int(kept.sum())
        zl_scale = mean_scale(n_kept)

    if softcap is not None:
        # z' = c tanh(z / c), into a buffer of our own that then receives the gradient.
        src = torch.div(z, softcap, out=empty(tuple(z.shape), wd)).tanh_().mul_(softcap)
        src_writable = True
    else:
        src, src_writable = z, z_writable
    options = dict(
        weight=w, ignore_index=ignore_index, label_smoothing=label_smoothing,
        sample_weight=sample_weight, reduction=np_reduction,
    )  # fmt: skip
    grad = lse = None
    try:
        if need_grad:
            # The z-loss needs the logits after the kernel: overwrite them only if
            # they can be rebuilt (from z, when soft-capped) or are not needed.
            inplace = src_writable and (z_loss == 0.0 or softcap is not None)
            grad = src if inplace else empty(tuple(src.shape), wd)
            loss, _, lse_np = sx.softmax_cross_entropy_with_grad(
                _numpy(src), y, **options, return_lse=True,
                **(dict(inplace=True) if inplace else dict(out=_numpy(grad))),
            )  # fmt: skip
            lse = torch.from_numpy(lse_np)
        else:
            loss = sx.softmax_cross_entropy(_numpy(src), y, **options)
            if z_loss or need_lse:
                lse = torch.from_numpy(np.asarray(sx.logsumexp(_numpy(src), axis=-1), dtype=np.float64))
    except ValueError:
        # The NumPy layer names a fully masked row in its own words (logits, labels,
        # sample_weight); say it in torch's. Callers that let z be overwritten
        # (the linear head) rebuild their logits and say it themselves.
        row = first_masked_row(z_in, target, ignore_index) if z_in_intact and softcap is None else None
        if row is None:
            raise
        raise masked_row_error(row, ignore_index, prob=prob) from None
    loss = torch.from_numpy(np.asarray(loss, dtype=np.float64))

    if z_loss:
        assert lse is not None
        keep = torch.ones(n_rows, dtype=torch.bool) if kept is None else torch.from_numpy(kept)
        z_rows = torch.where(keep, z_loss * lse * lse, 0.0)  # float64
        loss = loss + (z_rows * zl_scale if reduction == "none" else z_rows.sum() * zl_scale)
    if grad is not None and (z_loss or softcap is not None):
        # d(z_loss lse^2)/dz' = 2 z_loss lse softmax(z')  (the per-row scale follows the reduction)
        coef = None
        if z_loss:
            coef = torch.where(keep, (2.0 * z_loss * zl_scale) * lse, 0.0).to(wd)
        _zloss_softcap_grad(grad, z if softcap is not None else src, lse.to(wd), coef, softcap)
    return loss, grad, (lse if (need_lse or z_loss) else None)


def _zloss_softcap_grad(
    grad: torch.Tensor, z: torch.Tensor, lse: torch.Tensor, coef: torch.Tensor | None, softcap: float | None
) -> None:
    """In place: ``grad += coef * softmax(z')``, then ``grad *= sech^2(z / c)`` (chain rule of the cap).

    ``z`` holds the logits before the cap when ``softcap`` is set (``z'`` is
    rebuilt from them slice by slice), else the logits themselves.
    """
    n_rows, n_classes = grad.shape
    step = max(1, _SLICE_ELEMENTS // max(n_classes, 1))
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        g = grad[r0:r1]
        u = z[r0:r1] / softcap if softcap is not None else z[r0:r1]
        if coef is not None:
            zc = torch.tanh(u).mul_(softcap) if softcap is not None else u
            a = torch.sub(zc, lse[r0:r1, None]).exp_().mul_(coef[r0:r1, None])
            # Ignored rows have coef 0 but may hold -inf/NaN logits: 0 * NaN must stay 0.
            g.add_(a.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0))
        if softcap is not None:
            # d tanh(u)/du = sech^2(u) = 1/cosh^2(u), not 1 - tanh^2(u): the
            # latter rounds to 0 once tanh(u) rounds to 1 (|u| > 9 in float32),
            # sech^2 keeps its tiny value; cosh overflow gives 1/inf = 0, right.
            g.mul_(u.cosh_().reciprocal_().square_().nan_to_num_(nan=0.0))


#: Fused backends by device type: functions with :func:`cpu_rows`'s signature.
FUSED_BACKENDS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]] = {
    "cpu": cpu_rows,
}


def fused_backend(device: torch.device) -> Callable[..., Any] | None:
    """The fused backend for ``device``, or ``None`` (use the plain-torch formulas)."""
    return FUSED_BACKENDS.get(device.type)


def has_fused_backend(device: torch.device) -> bool:
    return device.type in FUSED_BACKENDS
