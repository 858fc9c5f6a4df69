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

import torch

from .._contract import Reduction
from ._backends import has_fused_backend
from ._functional import _functorch_active, apply_temperature, check_temperature_arg, cross_entropy
from ._linear_blocks import BLOCK_BYTES, _linear_xent, plan_blocks
from ._reference import cross_entropy_rows_reference, work_dtype
from ._validation import (
    check_head_options,
    check_linear_args,
    check_options,
)

__all__ = ["BLOCK_BYTES", "linear_cross_entropy", "plan_blocks"]


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
