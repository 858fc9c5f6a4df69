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
  (``Tensor.numpy()`` shares memory), through the private entry point that
  the NumPy API uses too (:func:`softxent._fused.softmax_xent_rows`: z-loss
  and soft-cap included). The labels are checked once, by the compiled pass
  that also prepares them for the kernel.
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

from .. import kernels
from .._contract import MaskedRowError, Reduction, XentOptions
from .._fused import softmax_xent_rows
from .._validation import check_probability_labels
from .._xent_common import Labels, compiled_index_labels, kernel_probability_labels
from ._memory import empty
from ._reference import work_dtype
from ._validation import (
    check_index_target_values,
    check_prob_target_values,
    check_weight_values,
    index_target_error,
    masked_row_error,
)

__all__ = ["FUSED_BACKENDS", "cpu_rows", "fused_backend", "has_fused_backend"]


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
    reduction: Reduction,
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
    if z.dtype != wd:
        z = empty(tuple(z.shape), wd).copy_(z)  # bf16/fp16: float32 copy, ours to overwrite
        z_writable = True
    arr = _numpy(z)
    kern = kernels.cpu(arr.dtype)
    check_weight_values(weight)  # (K,): free beside the logits' sweep
    w = None if weight is None else _numpy(weight.to(torch.float64))
    prob = target.is_floating_point()
    lab = _cpu_labels(target, wd, n_classes, w, ignore_index, kern)
    # Already checked by the front end (check_options): built, not re-validated.
    opts = XentOptions(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap,
    )  # fmt: skip
    sample_weight = z_weight = None
    if scale is not None:  # a block of a larger batch: its rows scaled by the whole batch's denominators
        ce_scale, zl_scale = scale
        sample_weight, z_weight = np.full(n_rows, ce_scale), np.full(n_rows, zl_scale)
    grad = None
    if need_grad:
        # Overwrite the logits only where the caller allows it (the linear head's own block).
        grad = z if z_writable else empty(tuple(z.shape), wd)
    try:
        loss, _, lse = softmax_xent_rows(
            arr, 1, lab, opts, weight=w, sample_weight=sample_weight, z_weight=z_weight, need_grad=need_grad,
            target=None if grad is None else _numpy(grad), inplace=grad is z, need_lse=need_lse,
        )  # fmt: skip
    except MaskedRowError as err:  # the NumPy layer's words (logits, labels, sample_weight) in torch's
        raise masked_row_error(err.row, ignore_index, prob=prob) from None
    return (
        torch.from_numpy(np.asarray(loss, dtype=np.float64)),
        grad,
        None if lse is None else torch.from_numpy(lse),
    )


def _cpu_labels(
    target: torch.Tensor, wd: torch.dtype, n_classes: int, w: np.ndarray | None, ignore_index: int, kern: Any
) -> Labels:
    """``target`` as the kernels' labels, its values checked once (in torch's words)."""
    if target.is_floating_point():
        y = _numpy(target.to(wd).contiguous())
        probs, at_most_one = kernel_probability_labels(y, kern, None, lambda: check_prob_target_values(target))
        if probs is None:  # no kernels: the check in torch, then the labels in float64
            check_prob_target_values(target)
            probs = check_probability_labels(y)
        return Labels(None, probs, None, at_most_one)
    y = _numpy(target.to(torch.int64).contiguous())
    lab = compiled_index_labels(y, kern, n_classes, w, ignore_index)
    if isinstance(lab, int):
        raise index_target_error(target, lab, n_classes, ignore_index)
    if lab is None:  # no kernels: the same rule in NumPy
        check_index_target_values(target, n_classes, ignore_index)
        kept = y != ignore_index
        idx = np.where(kept, y, -1)
        row_w = np.where(kept, (np.ones(n_classes) if w is None else w)[np.maximum(idx, 0)], 0.0) if n_classes else None
        lab = Labels(idx, None, np.zeros(y.shape) if row_w is None else row_w)
    return lab


#: Fused backends by device type: functions with :func:`cpu_rows`'s signature.
FUSED_BACKENDS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]] = {
    "cpu": cpu_rows,
}


def fused_backend(device: torch.device) -> Callable[..., Any] | None:
    """The fused backend for ``device``, or ``None`` (use the plain-torch formulas)."""
    return FUSED_BACKENDS.get(device.type)


def has_fused_backend(device: torch.device) -> bool:
    return device.type in FUSED_BACKENDS
