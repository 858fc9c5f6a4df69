r"""``linear_cross_entropy``: a linear layer and softmax cross-entropy that never hold the (N, V) logits.

An output head computes :math:`z = x W^\top + b` (eq. 9-10 of the seed) and the
cross-entropy of :math:`\operatorname{softmax}(z)` (eq. 7). With N tokens and a
vocabulary of V = 10^5 classes the logits and their gradient are the largest
tensors of a training step (N·V·4 bytes each: 1.6 GB at N = 4096). Their
gradient is eq. (16), :math:`G = \partial L / \partial z = a - y` (with the
options of :func:`softxent.torch.cross_entropy` folded in), and everything the
layer needs follows from blocks of it:

.. math::

    \frac{\partial L}{\partial x} = G W, \qquad
    \frac{\partial L}{\partial W} = G^\top x, \qquad
    \frac{\partial L}{\partial b} = \textstyle\sum_i G_{i\cdot}

So the rows are processed in blocks of R rows: the block's logits
(R, V) = one matmul (on the CPU in panels of the vocabulary, see
``_MM_PANEL``), its loss and :math:`G` from one fused sweep (on the CPU
the numba kernel writes :math:`G` over the logits: one buffer per block),
then :math:`G W` into the block's rows of :math:`\partial L/\partial x` and
:math:`G^\top x` accumulated into :math:`\partial L/\partial W` (float32 for
float16/bfloat16/float32 weights, float64 for float64). Peak memory beyond
the inputs and their gradients is one (R, V) block (two with ``z_loss`` or
``softcap``), R chosen from a memory budget (:data:`BLOCK_BYTES`, grown up to
four times for at least 256 rows when V is large) when ``chunk_size=None``.

When even a few rows of V classes exceed the budget, the vocabulary is split
too (chunks of V_c classes) and the softmax is assembled online: a first
pass over the chunks accumulates each row's log-sum-exp
(:math:`\operatorname{lse} \leftarrow \log(e^{\operatorname{lse}} + \sum_{c \in
\text{chunk}} e^{z_c})`, ``torch.logaddexp``), the label's logit and the
row sum that label smoothing needs; a second pass recomputes each chunk's
logits and forms :math:`G = (e^{z - \operatorname{lse}} - t) \cdot s` from the
final log-sum-exp, the label's entry as :math:`\operatorname{expm1}(z_y -
\operatorname{lse})` so that a confident row keeps its tiny gradient. This
path is plain torch operations and also serves devices without a fused
kernel (there with a single chunk when V fits, so without recomputation).

On CUDA tensors with Triton installed the custom ops below run
:mod:`softxent.torch._triton` instead (registered as their ``"cuda"``
kernels): logit tiles computed on chip and never stored, per-row statistics
in the forward, the tiles recomputed vocabulary chunk by vocabulary chunk in
the backward.

Rows labelled ``ignore_index`` (padding, and the last position of each
sequence with ``shift=True``) are skipped before the matmul: they cost
nothing and get zero gradient.

Gradients in the forward, not recomputed in the backward
---------------------------------------------------------
Two designs keep the logits out of memory. Liger-Kernel computes the
gradients during the forward and keeps :math:`\partial L/\partial x`,
:math:`\partial L/\partial W` (which the backward then only scales by the
scalar ``grad_output``): three matmuls in all. Cut Cross-Entropy keeps only
the per-row log-sum-exp and recomputes the logits in the backward: four
matmuls, but nothing of size V·d held between forward and backward. On a CPU
the matmuls are nearly all of the time (at N = 4096, d = 1024, V = 32768
each is 275 GFLOP, ~95% of the step), so softxent computes the gradients in
the forward for ``reduction="mean"`` and ``"sum"``: the recomputing variant
(which is what ``reduction="none"`` runs) does four matmuls instead of three,
about a third more time; ``benchmarks/cross_entropy_torch.py`` times both against the
naive head. With ``reduction="none"`` the upstream gradient differs per row,
so the weight gradient cannot be formed in advance: that reduction
recomputes in the backward (the vocabulary-chunked path from the saved
log-sum-exp). Without gradients (evaluation, or inputs that do not require
grad) only the loss is computed: one matmul. Parameters that do not require
grad (a frozen head) skip their matmul.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .._contract import mean_scale
from ._backends import fused_backend, has_fused_backend
from ._functional import _functorch_active, apply_temperature, check_temperature_arg, cross_entropy
from ._memory import empty
from ._reference import cross_entropy_rows_reference, work_dtype
from ._validation import (
    check_head_options,
    check_index_target_values,
    check_linear_args,
    check_options,
    first_masked_row,
    masked_row_error,
)

__all__ = ["BLOCK_BYTES", "linear_cross_entropy"]

Reduction = Literal["mean", "sum", "none"]

#: Memory budget of one block of logits (and the buffers beside it), in bytes,
#: when ``chunk_size=None``.
BLOCK_BYTES = 32 * 2**20
_MIN_ROWS = 32  # fewer rows than this per block: split the vocabulary instead
# Rows per block that keep the block's matmuls efficient. Every block reads
# all of W twice and updates all of dW, so a block of few rows is bound by
# that traffic, not by arithmetic: at N=2048, d=768, V=100277 (float32, 2
# cores) 83 rows per block (what 32 MiB holds) took 10.2 s for forward +
# backward, 256 rows 7.7 s, the naive head 8.7 s. Blocks grow to this many
# rows when that fits in _GROW budgets.
_FAST_ROWS = 256
_GROW = 4
_VOCAB_ALIGN = 256
# On the CPU a block's logits and its dx are computed in vocabulary panels
# of this many classes (W[c0:c1] is 8 MiB at d = 1024): the (R, V) = (256,
# 32768) matmul against all of W ran about 12% slower than the same work
# split into panels that stay in cache while they are used (float32, 2
# cores, measured in one process; G W about 8% slower). dW is updated
# unsplit: its panels measured no faster.
_MM_PANEL = 2048


def plan_blocks(n_rows: int, n_classes: int, elem_bytes: int, n_buffers: int, chunk_size: int | None,
                budget: int | None = None) -> tuple[int, int]:  # fmt: skip
    """Rows per block and classes per vocabulary chunk.

    ``chunk_size`` given: that many rows, the whole vocabulary. Otherwise as
    many rows as fit ``budget`` bytes (default :data:`BLOCK_BYTES`) with
    ``n_buffers`` (rows, V) buffers alive at once, or up to 256 rows where
    those fit in four budgets (large vocabularies: see ``_FAST_ROWS``); when fewer than
    :data:`_MIN_ROWS` rows fit, blocks of that many rows and the vocabulary
    split into chunks that fit.
    """
    budget = BLOCK_BYTES if budget is None else budget
    if chunk_size is not None:
        return max(1, min(chunk_size, n_rows)), n_classes
    per_row = max(1, n_classes * elem_bytes * n_buffers)
    rows = max(budget // per_row, min(_FAST_ROWS, _GROW * budget // per_row))
    if rows >= min(_MIN_ROWS, n_rows):
        return max(1, min(rows, n_rows)), n_classes
    rows = min(_MIN_ROWS, n_rows)
    vocab = budget // (rows * elem_bytes * n_buffers) // _VOCAB_ALIGN * _VOCAB_ALIGN
    return rows, min(max(vocab, _VOCAB_ALIGN), n_classes)


# --------------------------------------------------------------------------- the blocked computation


def _torch_rows_block(
    xb: torch.Tensor, wc: torch.Tensor, bc: torch.Tensor | None, yb: torch.Tensor, *, vocab: int,
    label_smoothing: float, z_loss: float, softcap: float | None, ce_scale: float, zl_scale: float,
    need_loss: bool, need_grad: bool, lse: torch.Tensor | None, row_grad: torch.Tensor | None,
    on_grad_chunk,
) -> tuple[torch.Tensor | None, torch.Tensor]:  # fmt: skip
    """One row block in plain torch, the vocabulary in chunks (online log-sum-exp).

    ``yb`` holds class indices (no ignored rows). Returns ``(loss_rows or
    None, lse)``, the loss rows scaled by ``ce_scale`` (cross-entropy) and
    ``zl_scale`` (z-loss); calls ``on_grad_chunk(c0, c1, G)`` with each
    chunk's gradient block when ``need_grad``.
    """
    n_classes = wc.shape[0]
    eps = label_smoothing
    chunks = [(c0, min(n_classes, c0 + vocab)) for c0 in range(0, n_classes, vocab)]

    def logits(c0: int, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
        pre = xb @ wc[c0:c1].t() if bc is None else torch.addmm(bc[c0:c1], xb, wc[c0:c1].t())
        return (softcap * torch.tanh(pre / softcap) if softcap is not None else pre), pre

    kept_logits = None
    loss_rows = None
    if lse is None or need_loss:
        lse_acc = torch.full((xb.shape[0],), -math.inf, dtype=xb.dtype, device=xb.device)
        z_y = torch.zeros_like(lse_acc)
        z_sum = torch.zeros_like(lse_acc)
        for c0, c1 in chunks:
            z, pre = logits(c0, c1)
            lse_acc = torch.logaddexp(lse_acc, torch.logsumexp(z, dim=1))  # online log-sum-exp
            inside = (yb >= c0) & (yb < c1)
            local = (yb - c0).clamp(0, c1 - c0 - 1)
            z_y = z_y + torch.where(inside, z.gather(1, local[:, None])[:, 0], 0.0)
            if eps:
                z_sum = z_sum + z.sum(dim=1)
            if len(chunks) == 1:
                kept_logits = (z, pre)
        lse = lse_acc
        # eq. (7) with t = (1-eps) e_y + eps/V:  lse - (1-eps) z_y - (eps/V) sum_c z_c
        loss_rows = ce_scale * ((1.0 - eps) * (lse - z_y) + (eps * (lse - z_sum / n_classes) if eps else 0.0))
        if z_loss:
            loss_rows = loss_rows + zl_scale * z_loss * lse * lse
    if not need_grad:
        return loss_rows, lse
    a_coef = ce_scale + 2.0 * z_loss * zl_scale * lse  # multiplies softmax(z): CE and z-loss terms
    for c0, c1 in chunks:
        z, pre = kept_logits if kept_logits is not None else logits(c0, c1)
        p = torch.exp(z - lse[:, None])
        g = p * a_coef[:, None]
        if eps:
            g = g - ce_scale * eps / n_classes
        rows = ((yb >= c0) & (yb < c1)).nonzero()[:, 0]
        cols = yb[rows] - c0
        p_y = p[rows, cols]
        # The label's entry, a_y - (1-eps) - eps/V, with a_y - 1 = expm1(z_y - lse)
        # (no cancellation when a_y -> 1), plus the z-loss term.
        g[rows, cols] = (
            ce_scale * ((1.0 - eps) * torch.expm1(z[rows, cols] - lse[rows]) + eps * (p_y - 1.0 / n_classes))
            + (a_coef[rows] - ce_scale) * p_y
        )
        if softcap is not None:
            g = g / torch.cosh(pre / softcap).square()  # chain rule: d tanh(u)/du = sech^2(u)
        if row_grad is not None:
            g = g * row_grad[:, None]
        on_grad_chunk(c0, c1, g)
    return loss_rows, lse


def _raise_masked_row(logits: torch.Tensor, yb: torch.Tensor, ignore_index: int, r0: int, idx) -> None:
    """Raise the front end's error if a row of the block's ``logits`` is -inf everywhere (else return)."""
    row = first_masked_row(logits, yb, ignore_index)
    if row is not None:
        row = r0 + row if idx is None else int(idx[r0 + row])
        raise masked_row_error(row, ignore_index, name="x @ weight.T + bias") from None


def _zeros_cpu(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return empty(shape, dtype).zero_()  # NumPy's allocator: huge pages, freed blocks reused (see _memory)


def _linear_xent(
    x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None, *,
    ignore_index: int, label_smoothing: float, z_loss: float, softcap: float | None, reduction: str,
    block_rows: int, block_vocab: int, need_dx: bool, need_dw: bool, need_db: bool,
    row_grad: torch.Tensor | None = None, saved_lse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Loss, per-row lse and the requested gradients of the blocked head (see the module docstring).

    ``row_grad`` (N,): the backward of ``reduction="none"``: gradients of
    ``sum_i row_grad[i] * loss[i]``, the loss itself not computed again.
    """
    n_rows, _ = x.shape
    n_classes = weight.shape[0]
    wd = work_dtype(x.dtype)
    wc = weight if weight.dtype == wd else weight.to(wd)  # low precision: one float32 copy
    bc = None if bias is None else bias.to(wd)
    check_index_target_values(target, n_classes, ignore_index)
    kept = target != ignore_index
    all_kept = bool(kept.all())
    idx = None if all_kept else kept.nonzero()[:, 0]
    n_kept = n_rows if all_kept else int(idx.numel())
    need_grad = need_dx or need_dw or need_db
    need_loss = row_grad is None

    ce_scale = zl_scale = 1.0
    if reduction == "mean":
        ce_scale = zl_scale = mean_scale(n_kept)
    if x.device.type == "cpu":
        zeros = _zeros_cpu
    else:

        def zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=x.device)

    dx = zeros(tuple(x.shape), wd) if need_dx else None
    dw = zeros(tuple(weight.shape), wd) if need_dw else None
    db = zeros((n_classes,), wd) if need_db else None
    loss_rows = torch.zeros(n_rows, dtype=torch.float64, device=x.device)
    lse_all = torch.zeros(n_rows, dtype=wd, device=x.device)
    rows_fn = fused_backend(x.device) if block_vocab >= n_classes else None
    use_kernel = rows_fn is not None
    panel = _MM_PANEL if x.device.type == "cpu" else n_classes
    panels = [(c0, min(n_classes, c0 + panel)) for c0 in range(0, n_classes, panel)]
    buf = None
    if use_kernel:
        shape = (min(block_rows, max(n_kept, 1)), n_classes)
        buf = empty(shape, wd) if x.device.type == "cpu" else torch.empty(shape, dtype=wd, device=x.device)

    for r0 in range(0, n_kept, block_rows):
        r1 = min(n_kept, r0 + block_rows)
        rows = slice(r0, r1) if idx is None else idx[r0:r1]
        xb = x[rows].to(wd)
        yb = target[rows]
        gb_rows = None if row_grad is None else row_grad[rows].to(wd)
        if use_kernel:
            zb = buf[: r1 - r0]
            for c0, c1 in panels:
                if bc is None:
                    torch.mm(xb, wc[c0:c1].t(), out=zb[:, c0:c1])
                else:
                    torch.addmm(bc[c0:c1], xb, wc[c0:c1].t(), out=zb[:, c0:c1])
            # Loss rows and each row's own gradient, scaled for the mean over all blocks.
            try:
                loss_b, gb, lse_b = rows_fn(
                    zb, yb, None, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                    softcap=softcap, reduction="none", need_grad=need_grad, need_lse=True, z_writable=True,
                    scale=(ce_scale, zl_scale),
                )  # fmt: skip
            except ValueError:
                # zb may hold part of the gradient now: rebuild the block's logits to name the row.
                pre = xb @ wc.t() if bc is None else torch.addmm(bc, xb, wc.t())
                _raise_masked_row(pre, yb, ignore_index, r0, idx)
                raise
            lse_all[rows] = lse_b.to(wd)
            if need_loss:
                loss_rows[rows] = loss_b
            if need_grad:
                if gb_rows is not None:
                    gb.mul_(gb_rows[:, None])
                if dx is not None:
                    dxb = dx[rows] if idx is None else torch.zeros_like(xb)  # zeros: accumulated
                    for c0, c1 in panels:
                        dxb.addmm_(gb[:, c0:c1], wc[c0:c1])
                    if idx is not None:
                        dx[rows] = dxb
                if dw is not None:
                    dw.addmm_(gb.t(), xb)  # float32 (float64) accumulation over the blocks
                if db is not None:
                    db += gb.sum(dim=0)
        else:
            dxb = torch.zeros_like(xb) if need_dx else None

            def on_grad_chunk(c0, c1, g, xb=xb, dxb=dxb, db=db):
                if dxb is not None:
                    dxb.addmm_(g, wc[c0:c1])
                if dw is not None:
                    dw[c0:c1].addmm_(g.t(), xb)
                if db is not None:
                    db[c0:c1] += g.sum(dim=0)

            lb, lse_b = _torch_rows_block(
                xb, wc, bc, yb, vocab=block_vocab, label_smoothing=label_smoothing, z_loss=z_loss,
                softcap=softcap, ce_scale=ce_scale, zl_scale=zl_scale, need_loss=need_loss,
                need_grad=need_grad, lse=None if saved_lse is None else saved_lse[rows].to(wd),
                row_grad=gb_rows, on_grad_chunk=on_grad_chunk,
            )  # fmt: skip
            if x.device.type == "cpu" and softcap is None and bool((lse_b == -math.inf).any()):
                # Only possible with infinite x or weight; on other devices a NaN row (no host sync).
                _raise_masked_row(torch.where(lse_b == -math.inf, -math.inf, 0.0)[:, None], yb, ignore_index, r0, idx)
            lse_all[rows] = lse_b
            if need_loss:
                loss_rows[rows] = lb.to(torch.float64)
            if dx is not None:
                dx[rows] = dxb
    loss = loss_rows if reduction == "none" else loss_rows.sum()
    dtype = x.dtype
    return (
        loss.to(dtype),
        lse_all,
        None if dx is None else dx.to(dtype),
        None if dw is None else dw.to(weight.dtype),
        None if db is None else db.to(bias.dtype),
    )


# --------------------------------------------------------------------------- custom ops


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty((0,))


@torch.library.custom_op("softxent::linear_cross_entropy", mutates_args=())
def _linear_op(
    x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None,
    ignore_index: int, label_smoothing: float, z_loss: float, softcap: float, reduction: str,
    block_rows: int, block_vocab: int, need_dx: bool, need_dw: bool, need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Loss, per-row lse, and dL/dx, dL/dW, dL/db of the (N, d) rows.

    The gradients are computed here only for ``"mean"``/``"sum"`` (else, and
    when not requested, they are empty tensors): ``"none"`` recomputes them in
    :func:`_linear_backward_op`.
    """
    early = reduction != "none"
    need_dx, need_dw, need_db = need_dx and early, need_dw and early, need_db and early and bias is not None
    loss, lse, dx, dw, db = _linear_xent(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap or None, reduction=reduction, block_rows=block_rows,
        block_vocab=block_vocab, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
    )  # fmt: skip
    return (
        loss, lse,
        _empty(x) if dx is None else dx,
        _empty(weight) if dw is None else dw,
        _empty(weight) if db is None else db,
    )  # fmt: skip


@_linear_op.register_fake
def _(x, weight, target, bias, ignore_index, label_smoothing, z_loss, softcap, reduction,
      block_rows, block_vocab, need_dx, need_dw, need_db):  # fmt: skip
    n_rows = x.shape[0]
    early = reduction != "none"
    need_dx, need_dw, need_db = need_dx and early, need_dw and early, need_db and early
    return (
        x.new_empty((n_rows,) if reduction == "none" else ()),
        x.new_empty((n_rows,), dtype=work_dtype(x.dtype)),
        torch.empty_like(x) if need_dx else x.new_empty((0,)),
        torch.empty_like(weight) if need_dw else weight.new_empty((0,)),
        bias.new_empty(bias.shape) if (need_db and bias is not None) else weight.new_empty((0,)),
    )


@torch.library.custom_op("softxent::linear_cross_entropy_backward", mutates_args=())
def _linear_backward_op(
    grad_rows: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
    bias: torch.Tensor | None, lse: torch.Tensor, ignore_index: int, label_smoothing: float,
    z_loss: float, softcap: float, block_rows: int, block_vocab: int, need_dx: bool, need_dw: bool,
    need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Gradients of ``sum_i grad_rows[i] * loss_i`` (the backward of ``reduction="none"``), recomputed."""
    _, _, dx, dw, db = _linear_xent(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap or None, reduction="none", block_rows=block_rows,
        block_vocab=block_vocab, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
        row_grad=grad_rows, saved_lse=lse,
    )  # fmt: skip
    return (
        _empty(x) if dx is None else dx,
        _empty(weight) if dw is None else dw,
        _empty(weight) if db is None else db,
    )


@_linear_backward_op.register_fake
def _(grad_rows, x, weight, target, bias, lse, ignore_index, label_smoothing, z_loss, softcap,
      block_rows, block_vocab, need_dx, need_dw, need_db):  # fmt: skip
    return (
        torch.empty_like(x) if need_dx else x.new_empty((0,)),
        torch.empty_like(weight) if need_dw else weight.new_empty((0,)),
        bias.new_empty(bias.shape) if (need_db and bias is not None) else weight.new_empty((0,)),
    )


def _is_one(g: torch.Tensor) -> bool:
    """``g`` is exactly 1 and may be read (plain eager, not traced): the stored gradients need no scaling."""
    if torch.compiler.is_compiling() or type(g) is not torch.Tensor or g.dim() != 0:
        return False
    return bool(g == 1)


def _setup_context(ctx, inputs, output):
    (x, weight, target, bias, ignore_index, label_smoothing, z_loss, softcap, reduction,
     block_rows, block_vocab, need_dx, need_dw, need_db) = inputs  # fmt: skip
    _, lse, dx, dw, db = output
    ctx.set_materialize_grads(False)
    ctx.mark_non_differentiable(lse, dx, dw, db)
    ctx.reduction = reduction
    ctx.options = (ignore_index, label_smoothing, z_loss, softcap, block_rows, block_vocab)
    ctx.needs = (need_dx, need_dw, need_db and bias is not None)
    # The inputs (references, no copies) serve the recomputing backward of "none" and a
    # backward that is differentiated again; the gradients of "mean"/"sum" are kept.
    ctx.save_for_backward(x, weight, target, bias, lse, dx, dw, db)


def _differentiable_grads(ctx, grad_loss):
    """dL/dx, dL/dW, dL/db as functions of the inputs that autograd can differentiate again.

    Taken only for ``create_graph=True``: the gradients of the blocked forward
    are constants to autograd, so the head is recomputed as
    ``F.linear`` + the plain-torch loss of :mod:`._reference` and
    differentiated by torch. That materialises the (N, V) logits and their
    graph: second order costs what it costs with the naive head.
    """
    x, weight, target, bias = ctx.saved_tensors[:4]
    ignore_index, label_smoothing, z_loss, softcap, _, _ = ctx.options
    need = ctx.needs
    wd = work_dtype(x.dtype)
    with torch.enable_grad():
        logits = torch.nn.functional.linear(x.to(wd), weight.to(wd), None if bias is None else bias.to(wd))
        loss, _ = cross_entropy_rows_reference(
            logits, target, None, ignore_index, ctx.reduction, label_smoothing, z_loss, softcap or None
        )
        wanted = [t for t, n in zip((x, weight, bias), need) if n]
        grads = iter(torch.autograd.grad(loss.to(x.dtype), wanted, grad_loss, create_graph=True))
    return tuple(next(grads) if n else None for n in need)


def _backward(ctx, grad_loss, *_unused):
    """Scale the gradients stored by the forward by grad_output, or (``"none"``) recompute them.

    With ``create_graph=True`` (the engine then runs this with grad mode on)
    the gradients are rebuilt differentiably instead.
    """
    need_dx, need_dw, need_db = ctx.needs
    rest = (None,) * 10
    if grad_loss is None:
        return (None, None, None, None) + rest
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        dx, dw, db = _differentiable_grads(ctx, grad_loss)
    elif ctx.reduction == "none":
        x, weight, target, bias, lse = ctx.saved_tensors[:5]
        dx, dw, db = _linear_backward_op(
            grad_loss, x, weight, target, bias, lse, *ctx.options, need_dx, need_dw, need_db
        )
    else:
        dx, dw, db = ctx.saved_tensors[5:]
        if not _is_one(grad_loss):
            dx, dw, db = (t * grad_loss.to(t.dtype) for t in (dx, dw, db))
    return (dx if need_dx else None, dw if need_dw else None, None, db if need_db else None) + rest


_linear_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    target: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    shift: bool = False,
) -> torch.Tensor:
    r"""Cross-entropy of ``x @ weight.T + bias`` against ``target``, without the (N, V) logits.

    Equal to ``softxent.torch.cross_entropy(torch.nn.functional.linear(x,
    weight, bias), target, ...)`` (eq. 9-10 then eq. 7), and so, without
    ``z_loss``/``softcap``, to torch's ``F.cross_entropy`` of the same logits,
    with the gradients for ``x``, ``weight`` and ``bias``:

    .. math::

        G = \frac{\partial L}{\partial z} = a - y \;\; (16), \qquad
        \frac{\partial L}{\partial x} = G W, \quad
        \frac{\partial L}{\partial W} = G^\top x, \quad
        \frac{\partial L}{\partial b} = \textstyle\sum_i G_i,

    computed block by block (see :mod:`softxent.torch._linear`): peak extra
    memory one block of logits, about :data:`BLOCK_BYTES` (up to four times
    that for vocabularies so large that the budget holds fewer than 256
    rows), instead of three (N, V) tensors.

    Parameters
    ----------
    x : Tensor of shape (..., d)
        Hidden states (a batch of any shape; ``(B, T, d)`` for sequences).
    weight : Tensor of shape (V, d)
        The output head's weight (``nn.Linear(d, V).weight``), same dtype as ``x``.
    target : Tensor of integers, shape ``x.shape[:-1]``
        Class indices in ``[0, V)`` or ``ignore_index``.
    bias : Tensor of shape (V,), optional
    ignore_index, reduction, label_smoothing, z_loss, softcap, temperature
        As in :func:`softxent.torch.cross_entropy` (no class weights here);
        ``"mean"`` divides by the number of rows not ignored. The loss is that
        of :math:`\operatorname{softmax}(c \tanh(z / c) / T)` with
        :math:`z = x W^\top + b`; a temperature is applied as
        :math:`z / T = (x / T) W^\top + b / T` (the hidden states and the bias
        divided, in their dtype, never the (N, V) logits) and the cap as
        :math:`c / T`, so every path and device honours it.
    chunk_size : int, optional
        Rows per block. ``None``: as many as fit :data:`BLOCK_BYTES`, at
        least 256 where they fit in four times that (the vocabulary is split
        too when fewer than 32 rows would fit).
    shift : bool, default False
        Next-token prediction: position ``t`` of each sequence (axis ``-2``
        of ``x``, ``-1`` of ``target``) is scored against ``target[..., t + 1]``
        and the last position against nothing; neither ``x`` nor ``target``
        is copied. ``reduction="none"`` then returns shape ``(..., T - 1)``.

    Returns
    -------
    loss : Tensor
        0-d, or ``x.shape[:-1]`` (``(..., T - 1)`` with ``shift``) for
        ``reduction="none"``; in ``x``'s dtype (float32 under autocast).

    Notes
    -----
    float16/bfloat16 inputs are computed in float32 on the CPU (one float32
    copy of ``weight``; ``dL/dW`` accumulated in float32, returned in
    ``weight``'s dtype). Under autocast the head computes in float32 (the
    precision torch's autocast gives ``cross_entropy``, extended to the
    matmul) and returns a float32 loss. All-ignored batches give 0 (torch's
    NaN, as :func:`softxent.torch.cross_entropy`). ``torch.compile`` sees one
    custom op (no graph break). Inside ``torch.func`` transforms (which
    custom ops refuse) it is computed as ``cross_entropy(F.linear(x, weight,
    bias), target, ...)`` on the plain-torch path: every transform works,
    but the logits are materialised there. With ``create_graph=True``
    (Hessian-vector products, gradient penalties) the backward is recomputed
    the same way, so that it can be differentiated again.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import linear_cross_entropy
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(6, 4, generator=g, requires_grad=True)
    >>> w = torch.randn(10, 4, generator=g, requires_grad=True)
    >>> y = torch.tensor([1, 2, 3, 4, 5, -100])
    >>> loss = linear_cross_entropy(x, w, y, chunk_size=4)
    >>> naive = torch.nn.functional.cross_entropy(x @ w.T, y)
    >>> bool(torch.allclose(loss, naive))
    True
    >>> loss.backward()
    >>> x.grad[-1]                                   # the ignored row
    tensor([0., 0., 0., 0.])
    """
    ignore_index, reduction, label_smoothing, z_loss, softcap = check_options(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    temperature = check_temperature_arg(temperature)
    check_linear_args(x, weight, target, bias)
    d, n_classes = x.shape[-1], weight.shape[0]
    check_head_options(chunk_size, shift, x)

    if torch.is_autocast_enabled(x.device.type):
        # Autocast runs torch's cross_entropy in float32; this head runs its matmuls in float32 too.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(
            f"x, weight and bias must have one dtype, got {x.dtype}, {weight.dtype}"
            + ("" if bias is None else f" and {bias.dtype}")
        )

    if temperature != 1.0:
        # (x W^T + b) / T = (x / T) W^T + b / T: an (N, d) pass, not an (N, V) one;
        # autograd carries the 1/T into dx and db, and dW = G^T (x / T).
        x, softcap = apply_temperature(x, softcap, temperature)
        bias = None if bias is None else bias / temperature

    if _functorch_active():
        # Custom ops refuse torch.func transforms: compose the plain-torch loss with
        # F.linear instead (correct for every transform, but the logits exist).
        logits = torch.nn.functional.linear(x, weight, bias)
        if shift:
            logits, target = logits[..., :-1, :], target[..., 1:]
        return cross_entropy(
            logits.movedim(-1, 1) if logits.dim() > 2 else logits, target, None, ignore_index, reduction,
            label_smoothing, z_loss=z_loss, softcap=softcap,
        )  # fmt: skip

    batch = tuple(x.shape[:-1])
    if shift:
        # Row (.., t) is scored against target[.., t + 1]; the last position of each
        # sequence against ignore_index. Only the (N,) labels are rebuilt, not x.
        pad = torch.full_like(target[..., :1], ignore_index)
        target = torch.cat([target[..., 1:], pad], dim=-1)
    x2 = x.reshape(-1, d)
    t2 = target.reshape(-1)
    n_rows = x2.shape[0]

    need = torch.is_grad_enabled()
    need_dx = need and x.requires_grad
    need_dw = need and weight.requires_grad
    need_db = need and bias is not None and bias.requires_grad
    elem = 8 if x.dtype == torch.float64 else 4
    n_buffers = 2 if (z_loss or softcap is not None) else 1
    if not has_fused_backend(x.device):
        n_buffers = 3  # the plain-torch chunk path holds logits, probabilities and G
    block_rows, block_vocab = plan_blocks(n_rows, n_classes, elem, n_buffers, chunk_size)
    args = (ignore_index, label_smoothing, z_loss, softcap or 0.0, reduction, block_rows, block_vocab)
    loss = _linear_op(x2, weight, t2.detach(), bias, *args, need_dx, need_dw, need_db)[0]
    if reduction == "none":
        loss = loss.reshape(batch)
        if shift:
            loss = loss[..., :-1]
    return loss
