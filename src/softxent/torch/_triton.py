"""The Triton backend (:mod:`softxent.kernels.triton`) plugged into the front end for CUDA tensors.

:func:`register` (called by ``import softxent.torch`` on a CUDA build of
torch with Triton importable) makes

* :func:`cuda_rows` the ``"cuda"`` entry of
  :data:`softxent.torch._backends.FUSED_BACKENDS` (same contract as
  :func:`~softxent.torch._backends.cpu_rows`) and, through
  :func:`_ce_op_cuda`, the ``"cuda"`` kernel of the ``softxent::cross_entropy``
  custom op;
* :func:`_linear_op_cuda` / :func:`_linear_backward_op_cuda` the ``"cuda"``
  kernels of ``softxent::linear_cross_entropy`` and its backward op.

The launches and the kernels live in :mod:`softxent.kernels.triton`; this
module only adapts them to the ops' contracts (float64 heads go to the
blocked torch head, :mod:`._linear`).
"""

from __future__ import annotations

import torch

from .._contract import keeps_rows
from ..kernels.triton import _host
from ..kernels.triton._cross_entropy import cross_entropy_rows
from ..kernels.triton._linear_head import _row_coefficients, linear_backward, linear_forward

__all__ = ["HAS_TRITON", "cuda_rows", "register"]

HAS_TRITON = _host.HAS_TRITON


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


# --------------------------------------------------------------------------- front-end registration


def _or_empty(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``t``, or a fresh empty tensor in its place: each call allocates its own, because torch's custom-op
    wrapper rejects outputs that alias each other (one shared empty for dx and dW raised there)."""
    return like.new_empty((0,)) if t is None else t


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
            need_dx=need_dx and not keeps_rows(reduction), need_dw=need_dw and not keeps_rows(reduction),
            need_db=need_db and not keeps_rows(reduction) and bias is not None,
        )  # fmt: skip
        return loss, lse, _or_empty(dx, x), _or_empty(dw, weight), _or_empty(db, weight)
    early = not keeps_rows(reduction)
    need_dx, need_dw, need_db = need_dx and early, need_dw and early, need_db and early and bias is not None
    ce_rows, lse, nll = linear_forward(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap or None,
    )  # fmt: skip
    kept = target != ignore_index
    loss_rows = ce_rows + (torch.where(kept, z_loss * lse.double() ** 2, 0.0) if z_loss else 0.0)
    ce, zl, _, scale = _row_coefficients(target, lse, ignore_index, reduction, z_loss, 1.0, x.shape[0])
    loss = _host.reduce_rows(loss_rows, scale, reduction)
    dx = dw = db = None
    if need_dx or need_dw or need_db:
        dx, dw, db, _ = linear_backward(
            x, weight, target, bias, lse, ce, zl, nll=nll, label_smoothing=label_smoothing,
            softcap=softcap or None, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
        )  # fmt: skip
    lse = torch.where(kept, lse, 0.0)  # as the CPU op: ignored rows are never computed there
    return loss.to(x.dtype), lse.to(work_dtype(x.dtype)), _or_empty(dx, x), _or_empty(dw, weight), _or_empty(db, weight)


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
    return _or_empty(dx, x), _or_empty(dw, weight), _or_empty(db, weight)


_REGISTERED = False


def register() -> bool:
    """Plug the kernels into the front end for CUDA tensors (idempotent). Returns whether they are."""
    global _REGISTERED
    if _REGISTERED:
        return True
    if not HAS_TRITON:
        return False
    from . import _backends, _functional, _linear

    _backends.FUSED_BACKENDS["cuda"] = cuda_rows
    _functional._cross_entropy_op.register_kernel("cuda")(_ce_op_cuda)
    _linear._linear_op.register_kernel("cuda")(_linear_op_cuda)
    _linear._linear_backward_op.register_kernel("cuda")(_linear_backward_op_cuda)
    _REGISTERED = True
    return True
