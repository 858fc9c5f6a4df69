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
from typing import Any

import torch
import torch.distributed as dist

from .. import _rowstats as rs
from .._contract import Reduction, XentOptions, keeps_rows
from ._agreement import Layout, agree, check_linear_arguments, check_logits_arguments
from ._functional import _functorch_active, _is_one, _scale_stored_grad
from ._linear import plan_blocks
from ._reference import work_dtype
from ._vocab_rows import (
    _grad_slice,
    _local_columns,
    _local_state,
    _loss_and_plan,
    _merge_ranks,
    _new,
    _Plan,
    _scaled,
    _softmax_factor,
)

__all__ = ["vocab_parallel_cross_entropy", "vocab_parallel_linear_cross_entropy"]

_F64 = torch.float64


def _no_second_order(name: str, what: str) -> RuntimeError:
    """Refuse what the stored gradient cannot give, instead of a silently wrong (zero) answer."""
    return RuntimeError(
        f"{name} has no {what}: its gradient is formed from per-row statistics exchanged between the ranks, "
        "which autograd cannot differentiate; gather the logits and use softxent.torch.cross_entropy "
        "(or torch's) for that"
    )


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
    if keeps_rows(opts.reduction):
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
    early = not keeps_rows(o.reduction) and any(needs)
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
        if keeps_rows(opts.reduction):
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
        if keeps_rows(ctx.opts.reduction):
            x, w, b, y_loc = ctx.saved_tensors
            plan = _scaled(ctx.plan, slice(None), grad_loss.to(_F64))
            dx, dw, db = _linear_grads(x, w, b, y_loc, ctx.blocks, plan, ctx.opts.softcap, ctx.needs)
        else:
            dx, dw, db = ctx.saved_tensors
            if not _is_one(grad_loss, sum(t.numel() for t in (dx, dw, db) if t is not None)):
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
    if keeps_rows(opts.reduction):
        loss = loss.reshape(batch)
        if shift:
            loss = loss[..., :-1]
    return loss
