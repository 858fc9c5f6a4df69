r"""Vocabulary-parallel softmax cross-entropy over ``torch.distributed`` (tensor parallelism).

With tensor parallelism each rank of a process group holds one contiguous
slice :math:`[s_r, s_r + V_r)` of the vocabulary: its rows of the output
head's weight, and so its columns of the logits. The full (N, V) logits never
exist on one rank. The loss needs from the others only the state of an
online softmax over their slices (:mod:`softxent._rowstats`: the row maximum,
the sum of exponentials, the target's logit and weight, the label-smoothing
sum), and states of disjoint slices merge into the state of the whole row.
So the ranks exchange (N, k) tensors, never (N, V_r) ones, and every option
of :func:`softxent.torch.cross_entropy` is kept (written from the formulas).

Design (the backward rule beside the forward)
---------------------------------------------
1. **Agreement** (:mod:`softxent.torch._agreement`, one ``all_gather`` of a
   few numbers per rank): every rank checks its arguments, and an error on
   one rank, options or targets that differ, or slices that do not tile
   :math:`[0, V)` raise on every rank instead of a hang in a collective.
2. **Local state** (:class:`softxent._rowstats.RowStats`) of each row over the
   rank's slice of the soft-capped logits :math:`z' = c \tanh(z / c)`: one
   sweep in place, no communication.
3. **Merge by two all-reduces**: ``MAX`` of the local maxima, then each rank
   rebases its state to it and one ``SUM`` of the packed (N, k) fields gives
   the state of the whole row, the same on every rank; from it the loss
   :math:`(1-\varepsilon) w_y (\operatorname{lse} - z'_y) + \tfrac{\varepsilon}{V}
   \sum_c w_c (\operatorname{lse} - z'_c) + \lambda_z \operatorname{lse}^2`
   from shifted values only, reduced by the rules of :mod:`softxent._contract`.
4. **The local gradient slice in the forward** (eq. 15 with the options):
   :math:`a_c (\sum_k t_k + 2 \lambda_z \operatorname{lse}) - t_c` with
   :math:`a_c = e^{z'_c - \operatorname{lse}}`, :math:`t = (1-\varepsilon) w_y
   e_y + \tfrac{\varepsilon}{V} w`, times :math:`\operatorname{sech}^2(z_c / c)`
   under soft-capping and the reduction's global normaliser; the target's
   entry from :math:`\operatorname{expm1}(z'_y - \operatorname{lse})`, so a
   confident row keeps its tiny gradient. The backward of
   :func:`vocab_parallel_cross_entropy` only scales this stored slice: **no
   communication in the backward**. Every rank gets the loss and the
   log-sum-exp of :func:`softxent.torch.cross_entropy` on the concatenated
   logits, and its slice of that function's gradient.

:func:`vocab_parallel_linear_cross_entropy` is the same loss of the logits
``x @ local_weight.T + local_bias``, in blocks of rows (and chunks of the
local vocabulary, whose states merge as the ranks' do, when a block would
not fit :data:`softxent.torch._linear.BLOCK_BYTES`): a first sweep of matmuls
gives the local states, the all-reduces every row's log-sum-exp, and a
second sweep recomputes each block's logits (reused instead when everything
fits one block: three matmuls instead of four) and accumulates
:math:`G W_r` (this rank's share of :math:`\partial L / \partial x`),
:math:`G^\top x` and :math:`\sum_i G_i` (its rows of :math:`\partial L /
\partial W`, :math:`\partial L / \partial b`). Peak memory beyond inputs and
gradients: one block of logits (two with soft-capping). The gradients are
formed in the forward for ``"mean"``/``"sum"`` and scaled in the backward;
``"none"`` recomputes them from the saved per-row statistics. The backward
all-reduces :math:`\partial L/\partial x` (``SUM``): **every rank of the group
must run the backward** (as in any tensor-parallel model).

Not supported: probability targets (each rank would need its slice of them
and the loss would need more exchanged sums; a clear ``TypeError`` says so),
gradients for the class weights, ``torch.func`` transforms and
double backward. Eager mode: ``torch.compile`` is not tested with these
functions. Tensors may be on any device the group's backend serves (gloo:
CPU; NCCL: CUDA): the local work is plain torch operations.

Example (one rank holding the whole vocabulary; with ``torchrun`` each rank
passes its own slice and gets the same loss):

>>> import os, shutil, tempfile, torch, torch.distributed as dist
>>> from softxent.torch.distributed import vocab_parallel_cross_entropy
>>> folder = tempfile.mkdtemp()
>>> store = dist.FileStore(os.path.join(folder, "store"), 1)
>>> dist.init_process_group("gloo", store=store, rank=0, world_size=1)
>>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
>>> loss = vocab_parallel_cross_entropy(logits, torch.tensor([0, 1]))
>>> print(f"{loss.item():.6f}")                  # as softxent.torch.cross_entropy
0.318540
>>> dist.destroy_process_group(); shutil.rmtree(folder)
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
import torch.distributed as dist

from .. import _rowstats as rs
from .._contract import XentOptions, grad_scale, reduce_total
from ._agreement import Layout, agree, check_linear_arguments, check_logits_arguments
from ._backends import _SLICE_ELEMENTS, _zloss_softcap_grad
from ._functional import _functorch_active, _is_one, _scale_stored_grad
from ._linear import plan_blocks
from ._memory import empty
from ._reference import work_dtype
from ._validation import masked_row_error

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

Reduction = Literal["mean", "sum", "none"]
_F64 = torch.float64


def _no_second_order(name: str, what: str) -> RuntimeError:
    """Refuse what the stored gradient cannot give, instead of a silently wrong (zero) answer."""
    return RuntimeError(
        f"{name} has no {what}: its gradient is formed from per-row statistics exchanged between the ranks, "
        "which autograd cannot differentiate; gather the logits and use softxent.torch.cross_entropy "
        "(or torch's) for that"
    )


# --------------------------------------------------------------------------- row states, loss, gradient


def _new(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # On the CPU from NumPy's allocator: huge pages for large buffers, freed blocks reused (see _memory).
    return empty(shape, dtype) if device.type == "cpu" else torch.empty(shape, dtype=dtype, device=device)


def _local_state(
    src: torch.Tensor, buf: torch.Tensor, y_loc: torch.Tensor, w: torch.Tensor | None, smooth: bool
) -> tuple[rs.RowStats, torch.Tensor]:
    """The state (float64) of the (R, Vc) soft-capped logits ``src``; ``buf`` receives ``exp(src - shift)``.

    In place: one (R, Vc) buffer, ``buf``, which may be ``src`` itself.
    ``y_loc`` (R,) is the target's column in this slice, or -1.
    """
    m, at = src.max(dim=1)  # one read: the maximum and where it is (its term is the lead)
    m, at = m.to(_F64), at[:, None]
    owned = y_loc >= 0
    col = y_loc.clamp(min=0)[:, None]
    label = torch.where(owned, src.gather(1, col)[:, 0].to(_F64), 0.0)
    label_w = owned.to(_F64) if w is None else torch.where(owned, w[col[:, 0]].to(_F64), 0.0)
    shift = rs.shift_of(m, torch).to(src.dtype)[:, None]
    buf = src.sub_(shift) if buf is src else torch.sub(src, shift, out=buf)
    dot = None
    if smooth:  # sum_c w_c (z'_c - shift), classes of weight 0 left out (a masked class adds 0, not NaN)
        positive = None if w is None or bool((w > 0).all()) else w > 0
        dot = buf.sum(dim=1) if w is None else buf @ w if positive is None else buf[:, positive] @ w[positive]
        dot = dot.to(_F64)
    buf.exp_()
    lead = buf.gather(1, at)
    buf.scatter_(1, at, 0.0)  # the maximum's 1 left out of the rest ...
    rest = buf.sum(dim=1).to(_F64)  # (torch's CPU sum is cascaded: no drift over 10^5 terms)
    buf.scatter_(1, at, lead)  # ... and put back
    total = torch.full_like(m, float(src.shape[1]) if w is None else float(w.to(_F64).sum()))
    return rs.RowStats(m, lead[:, 0].to(_F64), rest, label, label_w, dot, total), buf


def _merge_ranks(st: rs.RowStats, group: Any) -> rs.RowStats:
    """The state of the whole rows, on every rank: MAX of the maxima, then one SUM of the rebased fields."""
    m = st.m.clone()
    if m.numel():
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    st = rs.rebase(st, m, torch)
    packed = torch.stack([f for f in st[1:] if f is not None], dim=1)
    if packed.numel():
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    out = iter(packed.unbind(1))
    return rs.RowStats(m, *(None if f is None else next(out) for f in st[1:]))


class _Plan(NamedTuple):
    """Per-row factors of the gradient (float64, (N,)); the same on every rank."""

    lse: torch.Tensor
    coef: torch.Tensor  # multiplies a_c = exp(z'_c - lse): ce * sum(t) + zl * 2 lambda lse
    smooth_coef: torch.Tensor | None  # multiplies -w_c: ce * eps / V
    label: torch.Tensor  # the target's entry of the gradient
    live: torch.Tensor  # rows with a loss term (others get gradient 0)


def _loss_and_plan(g: rs.RowStats, kept: torch.Tensor, n_total: int, o: XentOptions, name: str):
    """The loss (0-d, or (N,) for ``"none"``, float64) and the gradient plan of the merged state ``g``."""
    eps, lam = o.label_smoothing, o.z_loss
    log_s = rs.log_sum(g, torch)
    lse = rs.shift_of(g.m, torch) + log_s
    w_y = g.label_weight
    t_sum = (1.0 - eps) * w_y + (eps / n_total) * g.total
    counts = kept & (t_sum > 0)
    live = kept if lam else counts
    masked = live & (g.lead + g.rest == 0)
    if bool(masked.any()):
        raise masked_row_error(int(masked.nonzero()[0, 0]), o.ignore_index, name=name)
    nll = rs.label_loss(g, torch)
    rows = torch.where(w_y > 0, (1.0 - eps) * w_y * nll, 0.0)
    if eps:
        rows = rows + torch.where(kept, (eps / n_total) * rs.smooth_loss(g, torch), 0.0)
    rows = torch.where(counts, rows, 0.0)
    z_rows = torch.where(kept, lam * lse * lse, 0.0) if lam else None
    den, n_kept = (float(w_y.sum()), float(kept.sum())) if o.reduction == "mean" else (1.0, 1.0)
    if o.reduction == "none":
        loss = rows if z_rows is None else rows + z_rows
    else:
        loss = reduce_total(rows.sum(), den, o.reduction)
        if z_rows is not None:
            loss = loss + reduce_total(z_rows.sum(), n_kept, o.reduction)
    ce = counts.to(_F64) * grad_scale(o.reduction, den)  # (torch.where of two numbers would be float32)
    zl = torch.where(kept, (2.0 * lam * grad_scale(o.reduction, n_kept)) * lse, 0.0) if lam else 0.0
    # The target's entry a_y (sum t) - t_y with a_y - 1 = expm1(z'_y - lse): no cancellation as a_y -> 1.
    a_y = torch.exp(-nll)
    label = ce * ((1.0 - eps) * w_y * torch.expm1(-nll) + (eps / n_total) * (g.total * a_y - w_y)) + zl * a_y
    smooth_coef = ce * (eps / n_total) if eps else None
    return loss, _Plan(lse, ce * t_sum + zl, smooth_coef, label, live)


def _scaled(plan: _Plan, rows: Any, scale: torch.Tensor | None = None) -> _Plan:
    """The plan of some rows, optionally times a per-row factor (the backward of ``"none"``)."""
    p = _Plan(*(None if t is None else t[rows] for t in plan))
    if scale is None:
        return p
    sc = None if p.smooth_coef is None else p.smooth_coef * scale
    return p._replace(coef=p.coef * scale, label=p.label * scale, smooth_coef=sc)


def _softmax_factor(plan: _Plan, st: rs.RowStats) -> torch.Tensor:
    """Turns exp(z' - shift) into coef * a: coef * exp(shift - lse); 0 for a row masked in the whole slice."""
    return torch.where(st.lead + st.rest == 0, 0.0, plan.coef * torch.exp(rs.shift_of(st.m, torch) - plan.lse))


def _grad_slice(e, factor, plan: _Plan, y_loc, c0: int, w, pre, softcap: float | None) -> torch.Tensor:
    """In place: ``e`` (R, Vc) = exp(z' - s) of classes [c0, c0 + Vc) becomes dL/dz of those entries.

    ``factor`` (R,) = coef * exp(s - lse); ``pre`` the logits before the
    soft-cap (for its chain rule; converted to ``e``'s dtype slice by slice).
    """
    e.mul_(factor.to(e.dtype)[:, None])  # coef * a_c
    if plan.smooth_coef is not None:
        sc = plan.smooth_coef.to(e.dtype)
        if w is None:
            e.sub_(sc[:, None])  # - ce eps/V
        else:
            e.addr_(sc, w[c0 : c0 + e.shape[1]], alpha=-1.0)  # - ce eps/V w_c
    rows = ((y_loc >= c0) & (y_loc < c0 + e.shape[1])).nonzero()[:, 0]
    e[rows, y_loc[rows] - c0] = plan.label[rows].to(e.dtype)
    if not bool(plan.live.all()):
        e.masked_fill_(~plan.live[:, None], 0.0)  # ignored rows: 0, even if they hold -inf or NaN
    if softcap is not None:  # chain rule of z' = c tanh(z / c): times sech^2(z / c), in slices
        step = max(1, _SLICE_ELEMENTS // max(e.shape[1], 1))
        for r0 in range(0, e.shape[0], step):
            r1 = min(e.shape[0], r0 + step)
            _zloss_softcap_grad(e[r0:r1], pre[r0:r1].to(e.dtype), plan.lse[r0:r1], None, softcap)
    return e


def _local_columns(target: torch.Tensor, kept: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """The target's column in this rank's slice, or -1 (another rank's class, or an ignored row)."""
    return torch.where(kept & (target >= start) & (target < start + width), target - start, -1)


# --------------------------------------------------------------------------- logits form


def _logits_forward(z, y, weight, lay: Layout, o: XentOptions, need_grad: bool):
    """Loss (in z's dtype), the local gradient slice (or None) and the per-row lse of (N, V_r) logits."""
    wd = work_dtype(z.dtype)
    kept = y != o.ignore_index
    y_loc = _local_columns(y, kept, lay.start, z.shape[1])
    w = None if weight is None else weight.to(wd)
    if o.softcap is not None or z.dtype != wd:
        # z' (or the float32 copy of bf16/fp16 logits) in a buffer of ours, which becomes the gradient.
        src = buf = _new(tuple(z.shape), wd, z.device).copy_(z)
        if o.softcap is not None:
            src.div_(o.softcap).tanh_().mul_(o.softcap)
    else:
        src, buf = z, _new(tuple(z.shape), wd, z.device)  # the input stays as it is
    st, e = _local_state(src, buf, y_loc, w, smooth=bool(o.label_smoothing))
    loss, plan = _loss_and_plan(_merge_ranks(st, lay.group), kept, lay.n_total, o, "local_logits")
    grad = None
    if need_grad:
        grad = _grad_slice(e, _softmax_factor(plan, st), plan, y_loc, 0, w, z, o.softcap)
        if grad.dtype != z.dtype:
            grad = grad.to(z.dtype)  # bf16/fp16: the float32 gradient rounded once
    return loss.to(z.dtype), grad, plan.lse.to(wd)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Forward: loss, lse and the stored local gradient; backward: scale it (no communication)."""

    @staticmethod
    def forward(ctx, logits, target, weight, lay, opts, need_grad, keep_logits):
        loss, grad, lse = _logits_forward(logits, target, weight, lay, opts, need_grad)
        ctx.set_materialize_grads(False)
        # The attributes and saved tensors of softxent::cross_entropy's backward, which does the scaling.
        ctx.reduction = opts.reduction
        ctx.softcap = opts.softcap or 0.0
        if need_grad:
            ctx.save_for_backward(*((grad, lse, logits) if keep_logits else (grad,)))
        if not keep_logits:
            ctx.mark_non_differentiable(lse)
        return loss, lse

    @staticmethod
    def backward(ctx, grad_loss, grad_lse):
        if torch.is_grad_enabled():  # create_graph=True: the stored slice is a constant to autograd
            raise _no_second_order("vocab_parallel_cross_entropy", "second-order gradient (create_graph=True)")
        # dL/dz = grad_output * (the stored slice) [+ grad_lse * softmax(z') sech^2(z / c)]: all
        # local, lse being global already.
        return _scale_stored_grad(ctx, grad_loss, grad_lse), None, None, None, None, None, None


def vocab_parallel_cross_entropy(
    local_logits: torch.Tensor,
    target: torch.Tensor,
    group: Any = None,
    *,
    vocab_start: int | None = None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Softmax cross-entropy of logits split over the vocabulary between the ranks of ``group``.

    Each rank passes its slice of the logits, classes :math:`[s_r, s_r + V_r)`;
    every rank gets the loss that :func:`softxent.torch.cross_entropy` gives
    for the concatenated logits (eq. 7 with eq. 8, all its options), and its
    backward gives each rank its slice of that function's gradient (eq.
    15/16). Two all-reduces of (N,)-sized tensors in the forward (after a small
    agreement step), none in the backward; see :mod:`softxent.torch.distributed`.

    Parameters
    ----------
    local_logits : Tensor of shape (..., V_r)
        This rank's logits, the class axis **last** (an LLM's ``(B, T, V_r)``,
        Megatron's layout; for 2-D input ``cross_entropy``'s ``(N, C)``).
        float16, bfloat16, float32 or float64 (low precision computed in
        float32). ``V_r`` may differ between ranks.
    target : Tensor of integers, shape ``local_logits.shape[:-1]``
        Global class indices in ``[0, V)`` or ``ignore_index``, the same on
        every rank. Probability targets are not supported (``TypeError``).
    group : ProcessGroup, optional
        The tensor-parallel group; ``None``: the default group (then
        ``torch.distributed.init_process_group`` must have been called).
    vocab_start : int, optional, keyword-only
        This rank's first class :math:`s_r`. ``None`` on every rank: the
        slices follow each other in rank order. Given on every rank: any
        order, but the slices must tile :math:`[0, V)`.
    weight : Tensor of shape (V_r,), optional
        This rank's slice of the class weights (non-negative; no gradient).
    ignore_index, reduction, label_smoothing, z_loss, softcap
        As in :func:`softxent.torch.cross_entropy`, the same on every rank:
        ``"mean"`` divides by the summed weights of the rows not ignored,
        ``label_smoothing`` spreads :math:`\varepsilon / V` over all V classes.
    return_lse : bool, default False, keyword-only
        Also return each row's log-sum-exp over the whole vocabulary (float32;
        float64 for float64 logits), differentiable (its gradient is local:
        the rank keeps its logits until the backward).

    Returns
    -------
    loss : Tensor
        0-d, or ``target.shape`` for ``reduction="none"``; the same on every rank.
    lse : Tensor
        Only with ``return_lse=True``; the same on every rank.

    Raises
    ------
    ValueError, TypeError
        Naming the argument and the value: a target outside ``[0, V)``, shapes
        or dtypes that do not fit, options or targets that differ between
        ranks, slices that do not tile the vocabulary, a row masked (``-inf``)
        everywhere but not ignored, ``group`` when torch.distributed is not
        initialised. An error in one rank's arguments is raised on every rank.

    Notes
    -----
    As :func:`softxent.torch.cross_entropy`, an all-ignored batch gives loss
    0 and gradient 0 (torch: NaN). All ranks must call the function together
    with the same rows; the gradient is formed in the forward (one (N, V_r)
    buffer held until the backward) and only scaled in the backward.

    Examples
    --------
    With ``torchrun --nproc-per-node 2``, rank ``r`` holding classes ``[5 r, 5 r + 5)``::

        dist.init_process_group("gloo")
        full = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
        target = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(1))
        local = full[:, 5 * rank : 5 * rank + 5].clone().requires_grad_()
        loss = vocab_parallel_cross_entropy(local, target, label_smoothing=0.1)
        loss.backward()          # local.grad: this rank's columns of the full gradient
    """
    if _functorch_active():
        raise _no_second_order("vocab_parallel_cross_entropy", "torch.func support (grad, vmap, jacrev, hessian)")

    options = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
                   z_loss=z_loss, softcap=softcap)  # fmt: skip
    opts, lay, target = agree(group, local_logits, lambda: check_logits_arguments(
        local_logits, target, weight, vocab_start, return_lse, **options
    ))  # fmt: skip
    if torch.is_autocast_enabled(local_logits.device.type) and local_logits.dtype in (torch.float16, torch.bfloat16):
        local_logits = local_logits.float()  # autocast runs torch's cross_entropy in float32: so do we
    batch = tuple(local_logits.shape[:-1])
    rows = local_logits.reshape(-1, local_logits.shape[-1]).contiguous()
    need_grad = torch.is_grad_enabled() and local_logits.requires_grad
    loss, lse = _VocabParallelCrossEntropy.apply(
        rows, target.reshape(-1).to(torch.int64), None if weight is None else weight.detach(), lay, opts,
        need_grad, need_grad and return_lse,
    )  # fmt: skip
    if opts.reduction == "none":
        loss = loss.reshape(batch)
    return (loss, lse.reshape(batch)) if return_lse else loss


# --------------------------------------------------------------------------- linear form


def _blocks(kept: torch.Tensor, n_local: int, block_rows: int, block_vocab: int):
    """Row blocks (slices, or indices of the rows not ignored), vocabulary chunks [c0, c1), rows per block."""
    idx = None if bool(kept.all()) else kept.nonzero()[:, 0]
    n_kept = kept.numel() if idx is None else idx.numel()
    rows = [slice(r0, min(n_kept, r0 + block_rows)) if idx is None else idx[r0 : r0 + block_rows]
            for r0 in range(0, n_kept, block_rows)]  # fmt: skip
    chunks = [(c0, min(n_local, c0 + block_vocab)) for c0 in range(0, n_local, block_vocab)]
    return rows, chunks, min(block_rows, max(n_kept, 1))


def _chunk_logits(xb, w, b, c0: int, c1: int, buf: torch.Tensor) -> torch.Tensor:
    """x_b @ W[c0:c1].T + b[c0:c1] into the front of the flat buffer ``buf`` (no allocation)."""
    out = buf[: xb.shape[0] * (c1 - c0)].view(xb.shape[0], c1 - c0)
    return torch.mm(xb, w[c0:c1].t(), out=out) if b is None else torch.addmm(b[c0:c1], xb, w[c0:c1].t(), out=out)


def _linear_grads(x, w, b, y_loc, blocks, plan: _Plan, softcap, needs, retained=None):
    """Second sweep: G block by block from the plan; this rank's dx part, its dW and db rows (arithmetic dtype).

    ``retained``: ``(e, pre, state)`` of the first sweep when it was a single
    block (its ``exp(z' - shift)``, reused instead of a fourth matmul).
    """
    (n_local, d), wd, (need_dx, need_dw, need_db) = w.shape, w.dtype, needs
    dx = _new(tuple(x.shape), wd, x.device).zero_() if need_dx else None
    dw = _new((n_local, d), wd, x.device).zero_() if need_dw else None
    db = _new((n_local,), wd, x.device).zero_() if need_db else None
    row_blocks, chunks, block_rows = blocks
    width = max(c1 - c0 for c0, c1 in chunks)
    bufs = None if retained else [_new((block_rows * width,), wd, x.device) for _ in range(1 + (softcap is not None))]
    for rows in row_blocks:
        xb, pb, yb = x[rows].to(wd), _scaled(plan, rows), y_loc[rows]
        dxb = torch.zeros((xb.shape[0], d), dtype=wd, device=x.device) if need_dx else None
        for c0, c1 in chunks:
            if retained is not None:
                e, pre, st = retained
                factor = _softmax_factor(pb, st)
            else:
                e = pre = _chunk_logits(xb, w, b, c0, c1, bufs[0])
                if softcap is not None:
                    e = torch.div(pre, softcap, out=bufs[1][: pre.numel()].view(pre.shape)).tanh_().mul_(softcap)
                e.sub_(pb.lse.to(wd)[:, None]).exp_()  # a_c = exp(z' - lse) <= 1
                factor = pb.coef
            g = _grad_slice(e, factor, pb, yb, c0, None, pre, softcap)
            if dxb is not None:
                dxb.addmm_(g, w[c0:c1])  # this rank's share of G W; the backward sums the shares
            if dw is not None:
                dw[c0:c1].addmm_(g.t(), xb)  # accumulated in float32 (float64) over the row blocks
            if db is not None:
                db[c0:c1] += g.sum(dim=0)
        if dx is not None:
            dx[rows] = dxb
    return dx, dw, db


def _linear_forward(x, w, b, y, lay: Layout, o: XentOptions, block_rows: int, block_vocab: int, needs):
    """Loss, the plan (for a backward that recomputes) and, for "mean"/"sum", the gradients."""
    kept = y != o.ignore_index
    y_loc = _local_columns(y, kept, lay.start, w.shape[0])
    blocks = _blocks(kept, w.shape[0], block_rows, block_vocab)
    row_blocks, chunks, rows_per_block = blocks
    early = o.reduction != "none" and any(needs)
    retain = early and len(row_blocks) == 1 and len(chunks) == 1
    eps = bool(o.label_smoothing)
    # First sweep: the local states of the rows not ignored (ignored rows: the state of an empty slice).
    cols = torch.zeros((7, x.shape[0]), dtype=_F64, device=x.device)
    cols[0], cols[6] = -math.inf, float(w.shape[0])
    st = rs.RowStats(*cols)._replace(dot=cols[5] if eps else None)
    width = max(c1 - c0 for c0, c1 in chunks)
    bufs = [_new((rows_per_block * width,), w.dtype, x.device) for _ in range(1 + (retain and o.softcap is not None))]
    retained = None
    for rows in row_blocks:
        xb, yb, st_b = x[rows].to(w.dtype), y_loc[rows], None
        for c0, c1 in chunks:
            pre = src = _chunk_logits(xb, w, b, c0, c1, bufs[0])
            if o.softcap is not None:  # keep the logits before the cap for the chain rule when retained
                src = (
                    torch.div(pre, o.softcap, out=bufs[1][: pre.numel()].view(pre.shape))
                    if retain
                    else pre.div_(o.softcap)
                )
                src.tanh_().mul_(o.softcap)
            y_c = torch.where((yb >= c0) & (yb < c1), yb - c0, -1)
            st_c, e = _local_state(src, src, y_c, None, smooth=eps)
            st_b = st_c if st_b is None else rs.merge(st_b, st_c, torch)
        for full, part in zip(st, st_b):
            if full is not None:
                full[rows] = part
        if retain:
            retained = (e, pre, st_b)
    loss, plan = _loss_and_plan(_merge_ranks(st, lay.group), kept, lay.n_total, o, "x @ local_weight.T + local_bias")
    grads = _linear_grads(x, w, b, y_loc, blocks, plan, o.softcap, needs, retained) if early else (None,) * 3
    return loss, plan, y_loc, blocks, grads


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """Forward: loss (and the gradients for "mean"/"sum"); backward: scale or recompute, all-reduce dx."""

    @staticmethod
    def forward(ctx, x, weight, bias, target, lay, opts, block_rows, block_vocab, needs):
        wd = work_dtype(x.dtype)
        w = weight if weight.dtype == wd else weight.to(wd)  # low precision: one float32 copy
        b = None if bias is None else bias.to(wd)
        loss, plan, y_loc, blocks, grads = _linear_forward(x, w, b, target, lay, opts, block_rows, block_vocab, needs)
        ctx.set_materialize_grads(False)
        ctx.lay, ctx.opts, ctx.needs = lay, opts, needs
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        if opts.reduction == "none":
            ctx.save_for_backward(x, w, b, y_loc)
            ctx.plan, ctx.blocks = plan, blocks
        else:
            ctx.save_for_backward(*grads)
        return loss.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_loss):
        if torch.is_grad_enabled():  # create_graph=True: the stored gradients are constants to autograd
            raise _no_second_order("vocab_parallel_linear_cross_entropy", "second-order gradient (create_graph=True)")
        if grad_loss is None:
            return (None,) * 9
        if ctx.opts.reduction == "none":
            x, w, b, y_loc = ctx.saved_tensors
            plan = _scaled(ctx.plan, slice(None), grad_loss.to(_F64))
            dx, dw, db = _linear_grads(x, w, b, y_loc, ctx.blocks, plan, ctx.opts.softcap, ctx.needs)
        else:
            dx, dw, db = ctx.saved_tensors
            if not _is_one(grad_loss):
                dx, dw, db = (None if t is None else t * grad_loss.to(t.dtype) for t in (dx, dw, db))
            elif dx is not None:
                dx = dx.clone()  # the all-reduce below is in place; a second backward needs the stored share
        if dx is not None:
            # Every rank holds G W_r, its classes' share of dL/dx: the sum over the group is the gradient.
            dist.all_reduce(dx, op=dist.ReduceOp.SUM, group=ctx.lay.group)
        grads = (dx, dw, db)
        return tuple(None if g is None else g.to(t) for g, t in zip(grads, ctx.dtypes)) + (None,) * 6


def vocab_parallel_linear_cross_entropy(
    x: torch.Tensor,
    local_weight: torch.Tensor,
    target: torch.Tensor,
    local_bias: torch.Tensor | None = None,
    group: Any = None,
    *,
    vocab_start: int | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
    shift: bool = False,
) -> torch.Tensor:
    r"""Cross-entropy of ``x @ W.T + b`` with the output head split over the vocabulary between ranks.

    Each rank holds the rows :math:`[s_r, s_r + V_r)` of the head's weight
    (and bias) and the same ``x`` and ``target``; every rank gets the loss
    that :func:`softxent.torch.linear_cross_entropy` gives with the full
    weight, and its backward gives every rank the full
    :math:`\partial L/\partial x` (all-reduced) and its own rows of
    :math:`\partial L/\partial W` and :math:`\partial L/\partial b`. The
    logits are computed in blocks (see :mod:`softxent.torch.distributed`):
    never more than one block of rows times a chunk of the local vocabulary
    at once (about :data:`softxent.torch._linear.BLOCK_BYTES`, twice that
    with ``softcap``).

    Parameters
    ----------
    x : Tensor of shape (..., d)
        Hidden states, the same on every rank.
    local_weight : Tensor of shape (V_r, d)
        This rank's rows of the head's weight; same dtype as ``x``.
    target : Tensor of integers, shape ``x.shape[:-1]``
        Global class indices in ``[0, V)`` or ``ignore_index``, the same on every rank.
    local_bias : Tensor of shape (V_r,), optional
    group, vocab_start
        As in :func:`vocab_parallel_cross_entropy`.
    ignore_index, reduction, label_smoothing, z_loss, softcap, chunk_size, shift
        As in :func:`softxent.torch.linear_cross_entropy` (no class weights),
        the same on every rank.

    Returns
    -------
    loss : Tensor
        0-d, or ``x.shape[:-1]`` (``(..., T - 1)`` with ``shift``) for
        ``reduction="none"``, in ``x``'s dtype; the same on every rank.

    Notes
    -----
    Communication: the agreement step and two all-reduces of (N,)-sized
    tensors in the forward; one all-reduce of :math:`\partial L/\partial x`
    (N, d) in the backward, so every rank must run the backward, and
    ``x.requires_grad`` must be the same on every rank. float16/bfloat16
    are computed in float32 (one float32 copy of ``local_weight``;
    :math:`\partial L/\partial W` accumulated and :math:`\partial
    L/\partial x` all-reduced in float32).

    Examples
    --------
    On each rank of a 2-rank group, rank ``r`` holding head rows ``[5 r, 5 r + 5)``::

        head = torch.randn(10, 16)                          # the same seed everywhere
        local_w = head[5 * rank : 5 * rank + 5].clone().requires_grad_()
        loss = vocab_parallel_linear_cross_entropy(x, local_w, target, shift=True)
        loss.backward()                                     # x.grad summed over the ranks
    """
    if _functorch_active():
        raise _no_second_order(
            "vocab_parallel_linear_cross_entropy", "torch.func support (grad, vmap, jacrev, hessian)"
        )
    need = torch.is_grad_enabled()
    need_dx = need and isinstance(x, torch.Tensor) and x.requires_grad
    options = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
                   z_loss=z_loss, softcap=softcap)  # fmt: skip
    opts, lay, target = agree(group, x, lambda: check_linear_arguments(
        x, local_weight, target, local_bias, vocab_start, chunk_size, shift, need_dx, **options
    ))  # fmt: skip
    if torch.is_autocast_enabled(x.device.type):
        # Autocast runs torch's cross_entropy in float32; this head runs its matmuls in float32 too.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x, local_weight = x.to(dtype), local_weight.to(dtype)
        local_bias = None if local_bias is None else local_bias.to(dtype)
    batch, x2 = tuple(x.shape[:-1]), x.reshape(-1, x.shape[-1])
    needs = (need_dx, need and local_weight.requires_grad, need and local_bias is not None and local_bias.requires_grad)
    elem = 8 if x.dtype == torch.float64 else 4
    block_rows, block_vocab = plan_blocks(x2.shape[0], local_weight.shape[0], elem, 1 + (opts.softcap is not None),
                                          chunk_size)  # fmt: skip
    loss = _VocabParallelLinearCrossEntropy.apply(
        x2, local_weight, local_bias, target.reshape(-1).to(torch.int64), lay, opts, block_rows, block_vocab, needs
    )
    if opts.reduction == "none":
        loss = loss.reshape(batch)
        if shift:
            loss = loss[..., :-1]
    return loss
