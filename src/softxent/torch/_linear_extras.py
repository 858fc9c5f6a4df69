r"""softxent's extras of the linear head: per-row sample weights and a differentiable log-sum-exp.

:func:`softxent.torch.linear_cross_entropy` takes ``sample_weight`` (one
non-negative weight per row, the meaning of the NumPy API's
``sample_weight``) and ``return_lse=True`` (each row's log-sum-exp of
:math:`z' = c \tanh(z / c)` with :math:`z = x W^\top + b`, as
:func:`softxent.torch.cross_entropy` returns it). This module holds what
they need beyond the blocked head of :mod:`._linear_blocks`:

* the static checks of ``sample_weight`` (:func:`check_sample_weight_arg`)
  and its data check, run inside the custom ops
  (:func:`check_sample_weight_values`);
* the log-sum-exp of rows that the loss skips (ignored rows, whose lse
  ``return_lse`` still reports), :func:`lse_rows`;
* the gradient of :math:`\sum_i g_i \operatorname{lse}_i`, recomputed block by
  block from the saved log-sum-exp: with :math:`a_i = \operatorname{softmax}(z'_i)`,

  .. math::

      \frac{\partial}{\partial z_i} \operatorname{lse}(z'_i) = a_i \odot \operatorname{sech}^2(z_i / c),
      \qquad G_i = g_i\, a_i \odot \operatorname{sech}^2(z_i / c), \qquad
      \frac{\partial}{\partial x} = G W,\;
      \frac{\partial}{\partial W} = G^\top x,\;
      \frac{\partial}{\partial b} = \textstyle\sum_i G_i

  (:func:`_lse_backward_op`: one matmul for the logits and two for the
  gradients, only when a gradient reaches the lse);
* the same loss in differentiable plain torch on materialised logits
  (:func:`weighted_loss_reference`), for the composed path (``torch.func``
  transforms, a ``sample_weight`` that requires grad) and for a backward
  that is differentiated again.

The rules of the weighted loss are the contract's (:mod:`softxent._contract`):
row :math:`i`'s cross-entropy and z-loss are multiplied by :math:`s_i`;
``"mean"`` divides the cross-entropy's sum by :math:`\sum_i s_i w_{y_i}` over
the rows not ignored (:math:`\sum_i s_i` for probability targets or without
class weights) and the z-loss's sum by :math:`\sum_i s_i` over the rows not
ignored; a mean over rows of total weight 0 is 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .._contract import Reduction, keeps_rows, reduce_total
from ._reference import _is_tracing, cross_entropy_rows_reference, work_dtype
from ._validation import check_float_tensor, check_same_device

__all__ = [
    "check_sample_weight_arg",
    "composed_loss",
    "differentiable_grads",
    "check_sample_weight_values",
    "lse_rows",
    "weighted_loss_reference",
]


def check_sample_weight_arg(sample_weight: Any, input: torch.Tensor, batch: tuple[int, ...]) -> None:
    """Static checks of ``sample_weight``: a floating tensor of shape ``batch`` (or flattened), on input's device."""
    if sample_weight is None:
        return
    check_float_tensor(sample_weight, "sample_weight")
    n_rows = math.prod(batch)
    if tuple(sample_weight.shape) not in (batch, (n_rows,)):
        raise ValueError(
            f"sample_weight must have shape {batch} (one weight per row of input, input's shape "
            f"{tuple(input.shape)} without its last axis) or ({n_rows},) (the rows flattened), "
            f"got {tuple(sample_weight.shape)}"
        )
    check_same_device(input, sample_weight, "sample_weight", "input")


def check_sample_weight_values(sample_weight: torch.Tensor | None) -> None:
    """The data rule of per-row weights (:data:`softxent._contract.WEIGHT_RULE`), naming the first bad row."""
    if sample_weight is None or sample_weight.numel() == 0:
        return
    bad = ~torch.isfinite(sample_weight) | (sample_weight < 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"sample_weight must be finite and non-negative, got {float(sample_weight[i])!r} at row {i} "
            "(the batch flattened)"
        )


def _capped_logits(xb, wc, bc, c0, c1, softcap):
    """(z', z) of the block's classes [c0, c1): the logits and, soft-capped, what the softmax sees."""
    pre = xb @ wc[c0:c1].t() if bc is None else torch.addmm(bc[c0:c1], xb, wc[c0:c1].t())
    return (softcap * torch.tanh(pre / softcap) if softcap is not None else pre), pre


def lse_rows(xb: torch.Tensor, wc: torch.Tensor, bc: torch.Tensor | None, softcap: float | None,
             block_vocab: int) -> torch.Tensor:  # fmt: skip
    """Log-sum-exp of the (soft-capped) logits of the rows ``xb``, the vocabulary in chunks (online)."""
    n_classes = wc.shape[0]
    lse = torch.full((xb.shape[0],), -math.inf, dtype=xb.dtype, device=xb.device)
    for c0 in range(0, n_classes, block_vocab):
        z, _ = _capped_logits(xb, wc, bc, c0, min(n_classes, c0 + block_vocab), softcap)
        lse = torch.logaddexp(lse, torch.logsumexp(z, dim=1))  # log(e^lse + sum_c e^z_c), no overflow
    return lse


def _lse_backward(grad_lse, x, weight, bias, lse, softcap, block_rows, block_vocab, need_dx, need_dw, need_db):
    """dx, dW, db of ``sum_i grad_lse[i] * lse[i]``, the logits recomputed block by block (see the module)."""
    wd = work_dtype(x.dtype)
    n_rows, n_classes = x.shape[0], weight.shape[0]
    wc = weight if weight.dtype == wd else weight.to(wd)
    bc = None if bias is None else bias.to(wd)
    dx = torch.zeros(tuple(x.shape), dtype=wd, device=x.device) if need_dx else None
    dw = torch.zeros(tuple(weight.shape), dtype=wd, device=x.device) if need_dw else None
    db = torch.zeros((n_classes,), dtype=wd, device=x.device) if need_db else None
    for r0 in range(0, n_rows, block_rows):
        r1 = min(n_rows, r0 + block_rows)
        xb, gl, lb = x[r0:r1].to(wd), grad_lse[r0:r1].to(wd), lse[r0:r1].to(wd)
        for c0 in range(0, n_classes, block_vocab):
            c1 = min(n_classes, c0 + block_vocab)
            z, pre = _capped_logits(xb, wc, bc, c0, c1, softcap)
            g = torch.exp(z - lb[:, None]) * gl[:, None]  # d lse / d z' = softmax(z')
            if softcap is not None:
                g = g / torch.cosh(pre / softcap).square()  # chain rule through c tanh(z / c)
            if dx is not None:
                dx[r0:r1].addmm_(g, wc[c0:c1])
            if dw is not None:
                dw[c0:c1].addmm_(g.t(), xb)
            if db is not None:
                db[c0:c1] += g.sum(dim=0)
    return (
        x.new_empty((0,)) if dx is None else dx.to(x.dtype),
        weight.new_empty((0,)) if dw is None else dw.to(weight.dtype),
        weight.new_empty((0,)) if db is None else db.to(bias.dtype),
    )


@torch.library.custom_op("softxent::linear_logsumexp_backward", mutates_args=())
def _lse_backward_op(
    grad_lse: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lse: torch.Tensor,
    softcap: float, block_rows: int, block_vocab: int, need_dx: bool, need_dw: bool, need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of ``sum_i grad_lse[i] * lse[i]`` for x, W, b (empty where not needed); ``softcap=0``: no cap."""
    return _lse_backward(grad_lse, x, weight, bias, lse, softcap or None, block_rows, block_vocab, need_dx,
                         need_dw, need_db and bias is not None)  # fmt: skip


@_lse_backward_op.register_fake
def _(grad_lse, x, weight, bias, lse, softcap, block_rows, block_vocab, need_dx, need_dw, need_db):
    return (
        torch.empty_like(x) if need_dx else x.new_empty((0,)),
        torch.empty_like(weight) if need_dw else weight.new_empty((0,)),
        bias.new_empty(bias.shape) if (need_db and bias is not None) else weight.new_empty((0,)),
    )


def composed_loss(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, target: torch.Tensor, weight: torch.Tensor | None,
    sw: torch.Tensor | None, prob: bool, shift: bool, ignore_index: int, reduction: Reduction,
    label_smoothing: float, z_loss: float, softcap: float | None, return_lse: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``linear_cross_entropy`` as ``F.linear`` + :func:`weighted_loss_reference`: the logits materialised.

    For what the blocked ops cannot do: ``torch.func`` transforms (custom ops
    refuse them), and gradients for probability targets or sample weights.
    ``sw`` has the batch shape of ``x``.
    """
    n_classes = w.shape[0]
    logits = F.linear(x, w, b)
    if shift:
        logits, target = logits[..., :-1, :], (target[..., 1:, :] if prob else target[..., 1:])
        sw = None if sw is None else sw[..., 1:]
    batch = tuple(logits.shape[:-1])
    loss, lse = weighted_loss_reference(
        logits.reshape(-1, n_classes), target.reshape(-1, n_classes) if prob else target.reshape(-1), weight,
        None if sw is None else sw.reshape(-1), ignore_index, reduction, label_smoothing, z_loss, softcap,
    )  # fmt: skip
    loss = loss.reshape(batch) if keeps_rows(reduction) else loss
    return (loss, lse.reshape(batch)) if return_lse else loss


def differentiable_grads(ctx: Any, grad_loss: torch.Tensor | None, grad_lse: torch.Tensor | None) -> tuple[Any, ...]:
    """dL/dx, dL/dW, dL/db as functions of the inputs that autograd can differentiate again.

    Taken only for ``create_graph=True``: the gradients of the blocked forward
    are constants to autograd, so the head is recomputed as
    ``F.linear`` + :func:`weighted_loss_reference` and differentiated by
    torch (``ctx`` is the context of :mod:`._linear`'s ops). That materialises
    the (N, V) logits and their graph: second order costs what it costs with
    the naive head.
    """
    x, weight, target, bias, class_weight, sample_weight = ctx.saved_tensors[:6]
    ignore_index, label_smoothing, z_loss, softcap, _, _ = ctx.options
    need = ctx.needs
    wd = work_dtype(x.dtype)
    with torch.enable_grad():
        logits = F.linear(x.to(wd), weight.to(wd), None if bias is None else bias.to(wd))
        loss, lse = weighted_loss_reference(
            logits, target, class_weight, sample_weight, ignore_index, ctx.reduction, label_smoothing, z_loss,
            softcap or None,
        )  # fmt: skip
        outputs, grads_out = [], []
        for out, g in ((loss.to(x.dtype), grad_loss), (lse, grad_lse)):
            if g is not None:
                outputs.append(out)
                grads_out.append(g.to(out.dtype))
        wanted = [t for t, n in zip((x, weight, bias), need) if n]
        grads = iter(torch.autograd.grad(outputs, wanted, grads_out, create_graph=True))
    return tuple(next(grads) if n else None for n in need)


def weighted_loss_reference(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None, ignore_index: int, reduction: Reduction, label_smoothing: float,
    z_loss: float, softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Loss (the module's rules) and every row's log-sum-exp of (M, V) ``logits``, in differentiable torch.

    The loss is in ``logits.dtype``, the log-sum-exp (of every row, ignored
    ones included) in :func:`._reference.work_dtype`.
    """
    if sample_weight is None:
        return cross_entropy_rows_reference(
            logits, target, class_weight, ignore_index, reduction, label_smoothing, z_loss, softcap, need_lse=True
        )  # type: ignore[return-value]
    wd = work_dtype(logits.dtype)
    ce_rows, lse = cross_entropy_rows_reference(
        logits, target, class_weight, ignore_index, "none", label_smoothing, 0.0, softcap, need_lse=True
    )
    if not _is_tracing():  # no reading of values under torch.compile or a torch.func transform
        check_sample_weight_values(sample_weight.detach())
    s = sample_weight.reshape(-1).to(wd)
    prob = target.is_floating_point()
    kept = torch.ones_like(s, dtype=torch.bool) if prob else target != ignore_index
    s_kept = torch.where(kept, s, 0.0)
    ce_den = s_kept
    if class_weight is not None and not prob:
        ce_den = s_kept * class_weight.to(wd)[torch.where(kept, target, 0).long()]
    rows = s * ce_rows.to(wd)
    z_rows = None
    if z_loss:
        z = logits.to(wd)
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        lse_kept = torch.logsumexp(torch.where(kept[:, None], z, 0.0), dim=1)  # ignored rows: no NaN leaks in
        z_rows = torch.where(kept, s * z_loss * lse_kept * lse_kept, 0.0)
    if keeps_rows(reduction):
        loss = rows if z_rows is None else rows + z_rows
    else:
        loss = reduce_total(rows.sum(), ce_den.sum(), reduction)
        if z_rows is not None:  # the z-loss's mean is over the (weighted) rows not ignored
            loss = loss + reduce_total(z_rows.sum(), s_kept.sum(), reduction)
    return loss.to(logits.dtype), lse  # type: ignore[return-value]
