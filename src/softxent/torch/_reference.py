r"""Plain-torch cross-entropy with every option: the fallback for devices without a fused kernel.

This is the loss of :func:`softxent.torch.cross_entropy` written with ordinary,
differentiable torch operations, so that torch's autograd derives every
gradient (input, and probability targets when they require grad) and any
device, ``torch.func`` transform or double backward works. It is also the
independent oracle the tests compare the fused path with.

For a row with logits :math:`z` (after soft-capping,
:math:`z \leftarrow c \tanh(z / c)`), effective target :math:`t` (the class
weights and label smoothing folded in, as in :mod:`softxent._losses`) and
:math:`\operatorname{lse} = \log \sum_c e^{z_c}` (eq. 8):

.. math::

    \ell = \sum_c t_c (\operatorname{lse} - z_c) \quad (7)
         \;+\; \lambda_z \operatorname{lse}^2 \;[\text{row not ignored}]

Precision: the arithmetic runs in float32 for float16/bfloat16/float32 input
(float64 for float64), the loss is returned in the input's dtype and the
log-sum-exp in the arithmetic dtype.
"""

from __future__ import annotations

import torch

from .._contract import Reduction, keeps_rows, reduce_total
from ._validation import (
    check_index_target_values,
    check_prob_target_values,
    check_weight_values,
    masked_row_error,
)

__all__ = ["cross_entropy_rows_reference", "work_dtype"]


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The arithmetic dtype: float64 for float64, else float32 (bf16/fp16 are upcast)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _is_tracing() -> bool:
    """Compiling, or inside a torch.func transform: no reading of tensor values (no data checks)."""
    return torch.compiler.is_compiling() or torch._C._functorch.peek_interpreter_stack() is not None


def cross_entropy_rows_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    reduction: Reduction,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    need_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss and per-row log-sum-exp of (M, C) ``logits``, class axis last.

    ``target`` is (M,) class indices or (M, C) probabilities. Returns ``(loss,
    lse)``: ``loss`` is 0-d (``"mean"``, ``"sum"``) or (M,) (``"none"``) in
    ``logits.dtype``; ``lse`` is (M,) in :func:`work_dtype`, every row's
    log-sum-exp (ignored rows included), or ``None`` unless ``need_lse``.
    Differentiable with respect to ``logits`` (and to ``target`` and
    ``weight`` where the formula depends on them).
    """
    n_rows, n_classes = logits.shape
    wd = work_dtype(logits.dtype)
    z = logits.to(wd)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    w = None if weight is None else weight.to(wd)
    eps = label_smoothing
    if target.is_floating_point():
        if not _is_tracing():
            check_prob_target_values(target)
            check_weight_values(weight)
        t = target.to(wd)
        if eps:
            t = (1.0 - eps) * t + eps / n_classes
        if w is not None:
            t = t * w
        kept = torch.ones(n_rows, dtype=torch.bool, device=z.device)
        counts = t.sum(dim=1) > 0
        denominator = torch.tensor(float(n_rows), dtype=wd, device=z.device)
    else:
        if not _is_tracing():
            check_index_target_values(target, n_classes, ignore_index)
            check_weight_values(weight)
        kept = target != ignore_index
        safe = torch.where(kept, target, 0).long()
        w_y = torch.ones(n_rows, dtype=wd, device=z.device) if w is None else w[safe]
        w_y = torch.where(kept, w_y, 0.0)
        w_sum = float(n_classes) if w is None else w.sum()
        counts = kept & ((1.0 - eps) * w_y + (eps / n_classes) * w_sum > 0) if n_classes else kept & False
        denominator = w_y.sum()
    # Rows that take no part (ignored, or target mass 0) are replaced by zeros
    # before any arithmetic: their loss and gradient are then exactly 0, even if
    # they hold -inf or NaN (a where() after the fact would leak NaN gradients).
    live = counts | kept if z_loss else counts
    lse_out = torch.logsumexp(z, dim=1) if need_lse else None  # of every row, as the fused path
    z = torch.where(live[:, None], z, 0.0)
    lse = torch.logsumexp(z, dim=1)
    if not _is_tracing() and n_classes and bool((live & (lse == -torch.inf)).any()):
        i = int((live & (lse == -torch.inf)).nonzero()[0, 0])
        raise masked_row_error(i, ignore_index, prob=target.is_floating_point())
    # -log softmax as (lse - max) - (z - max): the shift before the subtraction keeps
    # |z| ~ 1e4 from cancelling (lse - z would lose 1e4 * eps); never log(softmax).
    neg_log_p = -torch.log_softmax(z, dim=1)
    if target.is_floating_point():
        # 0 * inf = 0: a class without target mass adds nothing, even if masked.
        rows = torch.where(t > 0, t * neg_log_p, 0.0).sum(dim=1)
    else:
        nll = neg_log_p.gather(1, safe[:, None])[:, 0]
        rows = torch.where(w_y > 0, (1.0 - eps) * w_y * nll, 0.0)
        if eps:
            wc = torch.ones(n_classes, dtype=wd, device=z.device) if w is None else w
            smooth = torch.where(wc > 0, wc * neg_log_p, 0.0).sum(dim=1)
            rows = rows + torch.where(kept, (eps / n_classes) * smooth, 0.0)
    rows = torch.where(counts, rows, 0.0)
    z_rows = torch.where(kept, z_loss * lse * lse, 0.0) if z_loss else None
    if keeps_rows(reduction):
        loss = rows if z_rows is None else rows + z_rows
    else:
        loss = reduce_total(rows.sum(), denominator, reduction)
        if z_rows is not None:  # the z-loss's mean is over the rows not ignored
            loss = loss + reduce_total(z_rows.sum(), kept.sum().to(wd), reduction)
    return loss.to(logits.dtype), lse_out
