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
(R, V) = one matmul (on the CPU transposed, (V, R) = :math:`W x_b^\top`, for
class indices: MKL runs that shape as fast as the unblocked product; see
:mod:`._linear_blocks`), its loss and :math:`G` from one fused sweep (on the
CPU a numba kernel over the logits' own buffer: one buffer per block),
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

Class weights and probability targets (torch 2.13's ``weight`` and float
``target``) go through a second pair of ops, ``softxent::linear_cross_entropy_general``
and its backward, with the class weights as one more input: the same blocked
computation (the fused row kernels take both), on every device, while the
first pair keeps the schema its Triton kernels are registered for. The
arguments are parsed in torch's names in :mod:`._linear_args`. softxent's
extras ``sample_weight`` and ``return_lse`` (a differentiable per-row
log-sum-exp) take the second pair as well; :mod:`._linear_extras` has their rules.

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

from typing import Any

import torch
import torch.nn.functional as F

from .._contract import Reduction, keeps_rows
from ._backends import has_fused_backend
from ._functional import _functorch_active, _is_one, apply_temperature, check_temperature_arg, cross_entropy
from ._linear_args import check_head_tensors, chunk_rows_from_options, refuse_legacy_call
from ._linear_blocks import BLOCK_BYTES, _linear_xent, plan_blocks
from ._linear_extras import _lse_backward_op, check_sample_weight_arg, composed_loss, differentiable_grads
from ._reference import work_dtype
from ._validation import check_head_options, check_options

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
    early = not keeps_rows(reduction)
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


def _fake_outputs(x, weight, bias, reduction, need_dx, need_dw, need_db):
    """The shapes of the forward op's outputs (for tracing): the gradients only for "mean"/"sum"."""
    n_rows = x.shape[0]
    early = not keeps_rows(reduction)
    need_dx, need_dw, need_db = need_dx and early, need_dw and early, need_db and early
    return (
        x.new_empty((n_rows,) if keeps_rows(reduction) else ()),
        x.new_empty((n_rows,), dtype=work_dtype(x.dtype)),
        torch.empty_like(x) if need_dx else x.new_empty((0,)),
        torch.empty_like(weight) if need_dw else weight.new_empty((0,)),
        bias.new_empty(bias.shape) if (need_db and bias is not None) else weight.new_empty((0,)),
    )


@_linear_op.register_fake
def _(x, weight, target, bias, ignore_index, label_smoothing, z_loss, softcap, reduction,
      block_rows, block_vocab, need_dx, need_dw, need_db):  # fmt: skip
    return _fake_outputs(x, weight, bias, reduction, need_dx, need_dw, need_db)


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


# The same two ops with class weights and probability targets. They are separate ops so
# that the ops above keep the schema the Triton kernels are registered for ("cuda",
# :mod:`._triton`); these run the blocked head on every device (on CUDA its rows on the
# fused Triton row kernel, which takes class weights and probabilities).


@torch.library.custom_op("softxent::linear_cross_entropy_general", mutates_args=())
def _linear_general_op(
    x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None,
    class_weight: torch.Tensor | None, sample_weight: torch.Tensor | None, ignore_index: int, label_smoothing: float,
    z_loss: float, softcap: float, reduction: str, block_rows: int, block_vocab: int, need_dx: bool, need_dw: bool,
    need_db: bool, all_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """:func:`_linear_op` with class weights (V,), sample weights (N,), (N,) class indices or (N, V) probabilities.

    ``all_lse``: the log-sum-exp of every row, ignored ones included (``return_lse``).
    """
    early = not keeps_rows(reduction)
    need_dx, need_dw, need_db = need_dx and early, need_dw and early, need_db and early and bias is not None
    loss, lse, dx, dw, db = _linear_xent(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap or None, reduction=reduction, block_rows=block_rows,
        block_vocab=block_vocab, need_dx=need_dx, need_dw=need_dw, need_db=need_db, class_weight=class_weight,
        sample_weight=sample_weight, all_lse=all_lse,
    )  # fmt: skip
    return (
        loss, lse,
        _empty(x) if dx is None else dx,
        _empty(weight) if dw is None else dw,
        _empty(weight) if db is None else db,
    )  # fmt: skip


@_linear_general_op.register_fake
def _(x, weight, target, bias, class_weight, sample_weight, ignore_index, label_smoothing, z_loss, softcap, reduction,
      block_rows, block_vocab, need_dx, need_dw, need_db, all_lse):  # fmt: skip
    return _fake_outputs(x, weight, bias, reduction, need_dx, need_dw, need_db)


@torch.library.custom_op("softxent::linear_cross_entropy_general_backward", mutates_args=())
def _linear_general_backward_op(
    grad_rows: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor,
    bias: torch.Tensor | None, class_weight: torch.Tensor | None, sample_weight: torch.Tensor | None,
    lse: torch.Tensor, ignore_index: int, label_smoothing: float, z_loss: float, softcap: float, block_rows: int,
    block_vocab: int, need_dx: bool, need_dw: bool, need_db: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """:func:`_linear_backward_op` with class weights, sample weights and probability targets."""
    _, _, dx, dw, db = _linear_xent(
        x, weight, target, bias, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap or None, reduction="none", block_rows=block_rows,
        block_vocab=block_vocab, need_dx=need_dx, need_dw=need_dw, need_db=need_db,
        row_grad=grad_rows, saved_lse=lse, class_weight=class_weight, sample_weight=sample_weight,
    )  # fmt: skip
    return (
        _empty(x) if dx is None else dx,
        _empty(weight) if dw is None else dw,
        _empty(weight) if db is None else db,
    )


@_linear_general_backward_op.register_fake
def _(grad_rows, x, weight, target, bias, class_weight, sample_weight, lse, ignore_index, label_smoothing, z_loss,
      softcap, block_rows, block_vocab, need_dx, need_dw, need_db):  # fmt: skip
    return (
        torch.empty_like(x) if need_dx else x.new_empty((0,)),
        torch.empty_like(weight) if need_dw else weight.new_empty((0,)),
        bias.new_empty(bias.shape) if (need_db and bias is not None) else weight.new_empty((0,)),
    )


_N_GENERAL = 17  # the general op's inputs


def _split_inputs(inputs):
    """(x, weight, target, bias, class_weight, sample_weight), the ten options, all_lse, of either op.

    The plain op has no class or sample weights and no ``all_lse``.
    """
    if len(inputs) == _N_GENERAL:
        return inputs[:6], inputs[6:16], inputs[16]
    return (*inputs[:4], None, None), inputs[4:], False


def _setup_context(ctx, inputs, output):
    (x, weight, target, bias, class_weight, sample_weight), rest, all_lse = _split_inputs(inputs)
    (ignore_index, label_smoothing, z_loss, softcap, reduction, block_rows, block_vocab,
     need_dx, need_dw, need_db) = rest  # fmt: skip
    _, lse, dx, dw, db = output
    ctx.set_materialize_grads(False)
    # The lse is differentiable when it is returned (return_lse: every row's lse is computed).
    ctx.mark_non_differentiable(*((dx, dw, db) if all_lse else (lse, dx, dw, db)))
    ctx.general = len(inputs) == _N_GENERAL
    ctx.reduction = reduction
    ctx.options = (ignore_index, label_smoothing, z_loss, softcap, block_rows, block_vocab)
    ctx.needs = (need_dx, need_dw, need_db and bias is not None)
    # The inputs (references, no copies) serve the recomputing backward of "none" and a
    # backward that is differentiated again; the gradients of "mean"/"sum" are kept.
    ctx.save_for_backward(x, weight, target, bias, class_weight, sample_weight, lse, dx, dw, db)


def _loss_grads(ctx, grad_loss):
    """dL/dx, dL/dW, dL/db of the loss: the forward's, scaled by grad_output, or (``"none"``) recomputed."""
    need_dx, need_dw, need_db = ctx.needs
    if keeps_rows(ctx.reduction):
        x, weight, target, bias, class_weight, sample_weight, lse = ctx.saved_tensors[:7]
        if ctx.general:
            return _linear_general_backward_op(
                grad_loss, x, weight, target, bias, class_weight, sample_weight, lse, *ctx.options, need_dx,
                need_dw, need_db,
            )  # fmt: skip
        return _linear_backward_op(grad_loss, x, weight, target, bias, lse, *ctx.options, need_dx, need_dw, need_db)
    dx, dw, db = ctx.saved_tensors[7:]
    if not _is_one(grad_loss, dx.numel() + dw.numel() + db.numel()):
        dx, dw, db = (t * grad_loss.to(t.dtype) for t in (dx, dw, db))
    return dx, dw, db


def _backward(ctx, grad_loss, grad_lse, *_unused):
    """The loss's gradients (:func:`_loss_grads`) plus, with ``return_lse``, the lse's (recomputed).

    With ``create_graph=True`` (the engine then runs this with grad mode on)
    the gradients are rebuilt differentiably instead.
    """
    need_dx, need_dw, need_db = ctx.needs
    rest = (None,) * (_N_GENERAL - 4 if ctx.general else 10)
    if grad_loss is None and grad_lse is None:
        return (None, None, None, None) + rest
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        dx, dw, db = differentiable_grads(ctx, grad_loss, grad_lse)
    else:
        grads = [] if grad_loss is None else [_loss_grads(ctx, grad_loss)]
        if grad_lse is not None:
            x, weight, _, bias, _, _, lse = ctx.saved_tensors[:7]
            _, _, softcap, block_rows, block_vocab = ctx.options[1:]
            grads.append(_lse_backward_op(
                grad_lse, x, weight, bias, lse, softcap, block_rows, block_vocab, need_dx, need_dw, need_db
            ))  # fmt: skip
        dx, dw, db = grads[0] if len(grads) == 1 else (a + b if n else a for a, b, n in zip(*grads, ctx.needs))
    return (dx if need_dx else None, dw if need_dw else None, None, db if need_db else None) + rest


_linear_op.register_autograd(_backward, setup_context=_setup_context)
_linear_general_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public


def linear_cross_entropy(
    input: torch.Tensor = None,  # type: ignore[assignment]  # required; None only to name an old-style x=
    linear_weight: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    linear_bias: torch.Tensor | None = None,
    *,
    weight: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    shift: bool = False,
    sample_weight: torch.Tensor | None = None,
    return_lse: bool = False,
    **legacy: Any,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Cross-entropy of ``input @ linear_weight.T + linear_bias`` against ``target``, without the (N, V) logits.

    A drop-in for torch 2.13's :func:`torch.nn.functional.linear_cross_entropy`
    (same arguments, names, defaults and results): equal to
    ``cross_entropy(F.linear(input, linear_weight, linear_bias), target,
    weight=weight, ...)`` (eq. 9-10 then eq. 7), with the gradients for
    ``input``, ``linear_weight`` and ``linear_bias``:

    .. math::

        G = \frac{\partial L}{\partial z} = a \textstyle\sum_c t_c - t \;\; (15), \qquad
        \frac{\partial L}{\partial x} = G W, \quad
        \frac{\partial L}{\partial W} = G^\top x, \quad
        \frac{\partial L}{\partial b} = \textstyle\sum_i G_i,

    computed block by block (see :mod:`softxent.torch._linear`): peak extra
    memory one block of logits, about :data:`BLOCK_BYTES` (up to four times
    that for vocabularies so large that the budget holds fewer than 256
    rows), instead of three (N, V) tensors; with or without ``options``.

    Parameters
    ----------
    input : Tensor of shape (d,), (N, d), or (..., d)
        Hidden states. torch takes (d,) and (N, d); softxent also takes any
        batch shape (``(B, T, d)`` for sequences).
    linear_weight : Tensor of shape (V, d)
        The output head's matrix (``nn.Linear(d, V).weight``), same dtype as
        ``input``. torch's K-dimensional form ``(V, d1, ..., dK, d)`` (logits
        ``(N, V, d1, ..., dK)``) is accepted and computed from the
        materialised logits, as torch computes it.
    target : Tensor
        Class indices, shape ``input.shape[:-1]`` (integers in ``[0, V)`` or
        ``ignore_index``), or class probabilities, shape
        ``input.shape[:-1] + (V,)`` (a floating dtype), as in torch.
    linear_bias : Tensor of shape (V,), optional
        Keyword, as in torch (softxent also takes it as the fourth positional argument).
    weight : Tensor of shape (V,), optional
        Class weights, as in :func:`torch.nn.functional.cross_entropy`:
        ``"mean"`` divides by the summed weight of the labels.
    reduction : {"mean", "sum", "none"}
    ignore_index : int, optional
        Class-index targets equal to it are skipped. ``None`` (torch's
        default): -100 for class indices; with probability targets it must be
        ``None``.
    label_smoothing : float in [0, 1]
    options : torch.nn.LinearCrossEntropyOptions, optional
        Accepted for torch's sake: softxent computes in blocks whatever it is
        (``None`` too). Its ``batch_chunk_size`` sets the rows per block when
        ``chunk_size`` is not given; the other fields choose between torch's
        own chunked strategies and have no counterpart here (softxent
        accumulates in float32 and allows a second backward).
    z_loss, softcap, temperature
        softxent's extras, as in :func:`softxent.torch.cross_entropy`: the
        loss of :math:`\operatorname{softmax}(c \tanh(z / c) / T)` with
        :math:`z = x W^\top + b`, plus ``z_loss`` times each counted row's
        squared log-sum-exp. A temperature is applied as
        :math:`z / T = (x / T) W^\top + b / T` (the hidden states and the bias
        divided, in their dtype, never the (N, V) logits) and the cap as
        :math:`c / T`, so every path and device honours it.
    chunk_size : int, optional
        Rows per block. ``None``: as many as fit :data:`BLOCK_BYTES`, at
        least 256 where they fit in four times that (the vocabulary is split
        too when fewer than 32 rows would fit).
    shift : bool, default False
        Next-token prediction: position ``t`` of each sequence (axis ``-2``
        of ``input``, and of ``target``'s sequence axis) is scored against
        target position ``t + 1``, the last position against nothing; class
        indices are not copied, nor is ``input``. ``reduction="none"`` then
        returns shape ``(..., T - 1)``.
    sample_weight : Tensor of shape ``input.shape[:-1]`` or (N,), optional
        softxent's extra, as the NumPy API's ``sample_weight``: one
        non-negative weight :math:`s_i` per row (any floating dtype; the rows
        flattened when given as (N,)). It multiplies the row's loss (its
        cross-entropy and its z-loss); ``"mean"`` divides the cross-entropy's
        sum by :math:`\sum_i s_i w_{y_i}` over the rows not ignored
        (:math:`\sum_i s_i` without class weights or with probability
        targets) and the z-loss's sum by :math:`\sum_i s_i` over the rows
        not ignored; a total weight of 0 gives 0. With ``shift=True`` it is
        aligned with ``target`` (the weight of each label: row ``t`` takes
        ``sample_weight[..., t + 1]``). A ``sample_weight`` that requires
        grad gets its gradient on the composed path (logits materialised).
    return_lse : bool, default False
        softxent's extra, as in :func:`softxent.torch.cross_entropy`: also
        return each row's log-sum-exp of :math:`c \tanh(z / c) / T` (after
        the cap and the temperature), ignored rows included (their logits are
        computed once for it), shape of ``reduction="none"``'s loss, float32
        (float64 for float64 input). It is differentiable: a gradient that
        reaches it costs one more pass over the head (the logits recomputed
        block by block, three matmuls).

    Returns
    -------
    loss : Tensor
        0-d, or ``input.shape[:-1]`` (``(..., T - 1)`` with ``shift``) for
        ``reduction="none"``; in ``input``'s dtype (float32 under autocast).
    lse : Tensor
        Only with ``return_lse=True``.

    Raises
    ------
    TypeError
        For a call in softxent's earlier style (the head's matrix as
        ``weight=``, ``x=``, ``bias=``), with the call to write instead.

    Notes
    -----
    float16/bfloat16 inputs are computed in float32 on the CPU (one float32
    copy of ``linear_weight``; its gradient accumulated in float32, returned
    in its dtype). Under autocast the head computes in float32 (the precision
    torch's autocast gives ``cross_entropy``, extended to the matmul) and
    returns a float32 loss. Differences from torch, as in
    :func:`softxent.torch.cross_entropy`: an all-ignored batch gives 0
    (torch: NaN), bad targets raise ``ValueError`` naming the argument
    (torch: ``RuntimeError``). ``torch.compile`` sees one custom op (no
    graph break). Inside ``torch.func`` transforms (which custom ops refuse),
    and for probability targets that require grad, it is computed as
    ``cross_entropy(F.linear(...), target, ...)`` on the plain-torch path:
    correct, but the logits are materialised there. With
    ``create_graph=True`` (Hessian-vector products, gradient penalties) the
    backward is recomputed the same way, so that it can be differentiated
    again.

    ``sample_weight`` and ``return_lse`` run the blocked head on every device
    (on CUDA with the Triton row kernel, as class weights and probability
    targets do), not the tiled Triton head of :mod:`._triton`.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import linear_cross_entropy
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(6, 4, generator=g, requires_grad=True)
    >>> w = torch.randn(10, 4, generator=g, requires_grad=True)
    >>> y = torch.tensor([1, 2, 3, 4, 5, -100])
    >>> loss = linear_cross_entropy(x, w, y, chunk_size=4)
    >>> theirs = torch.nn.functional.linear_cross_entropy(x, w, y)
    >>> bool(torch.allclose(loss, theirs))
    True
    >>> loss.backward()
    >>> x.grad[-1]                                   # the ignored row
    tensor([0., 0., 0., 0.])
    >>> s = torch.tensor([1.0, 1.0, 2.0, 0.0, 1.0, 1.0])  # per-row weights
    >>> loss, lse = linear_cross_entropy(x, w, y, sample_weight=s, return_lse=True)
    >>> lse.shape                                    # every row's, the ignored one's too
    torch.Size([6])
    """
    refuse_legacy_call(input, linear_weight, target, weight, legacy)
    ii, reduction, label_smoothing, z_loss, softcap = check_options(
        ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction,
        label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    temperature = check_temperature_arg(temperature)
    chunk_size = chunk_rows_from_options(options, chunk_size)
    head = check_head_tensors(input, linear_weight, target, linear_bias, weight, ignore_index)
    check_head_options(chunk_size, shift, input)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be True or False, got {return_lse!r}")
    x, w, b, prob = input, linear_weight, linear_bias, head.prob
    d, n_classes = x.shape[-1], w.shape[0]
    opts = dict(z_loss=z_loss, softcap=softcap, temperature=temperature, return_lse=return_lse)

    if head.k_dim:
        # torch's K-dimensional loss: a softmax over the V classes at each of the d1 x ... x dK
        # positions, each with its own rows of linear_weight; computed as torch does.
        if shift:
            raise ValueError("shift=True needs a sequence axis of input; a K-dimensional linear_weight has none")
        if sample_weight is not None:
            raise ValueError(
                f"sample_weight is not supported with a K-dimensional linear_weight (shape {tuple(w.shape)}); "
                "weight the rows of reduction='none' instead"
            )
        logits = F.linear(x, w.reshape(-1, d), None if b is None else b.reshape(-1))
        logits = logits.reshape((x.shape[0], n_classes) + head.k_dim)
        return cross_entropy(logits, target, weight, ii, reduction, label_smoothing, **opts)
    check_sample_weight_arg(sample_weight, input, head.batch)
    sw = None if sample_weight is None else sample_weight.reshape(head.batch)

    if torch.is_autocast_enabled(x.device.type):
        # Autocast runs torch's cross_entropy in float32; this head runs its matmuls in float32 too.
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x, w = x.to(dtype), w.to(dtype)
        b = None if b is None else b.to(dtype)
    if w.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
        raise TypeError(
            f"input, linear_weight and linear_bias must have one dtype, got {x.dtype}, {w.dtype}"
            + ("" if b is None else f" and {b.dtype}")
        )

    if temperature != 1.0:
        # (x W^T + b) / T = (x / T) W^T + b / T: an (N, d) pass, not an (N, V) one;
        # autograd carries the 1/T into dx and db, and dW = G^T (x / T).
        x, softcap = apply_temperature(x, softcap, temperature)
        b = None if b is None else b / temperature

    if _functorch_active() or (prob and target.requires_grad) or (sw is not None and sw.requires_grad):
        # Custom ops refuse torch.func transforms, and the blocked head gives no gradient for
        # the target or the sample weights: compose the plain-torch loss with F.linear instead
        # (the logits exist).
        return composed_loss(x, w, b, target, weight, sw, prob, shift, ii, reduction, label_smoothing, z_loss,
                             softcap, return_lse)  # fmt: skip

    batch = head.batch
    if shift and prob:
        # Probabilities: score rows 0..T-2 against target rows 1..T-1 (a slice: the mean counts
        # T - 1 rows per sequence, as the naive head's does).
        x, target = x[..., :-1, :], target[..., 1:, :]
        sw = None if sw is None else sw[..., 1:]
        batch = tuple(x.shape[:-1])
    elif shift:
        # Row (.., t) is scored against target[.., t + 1]; the last position of each
        # sequence against ignore_index. Only the (N,) labels are rebuilt, not x.
        pad = torch.full_like(target[..., :1], ii)
        target = torch.cat([target[..., 1:], pad], dim=-1)
        if sw is not None:  # aligned with the labels: row t takes the weight of label t + 1
            sw = torch.cat([sw[..., 1:], torch.zeros_like(sw[..., :1])], dim=-1)
    x2 = x.reshape(-1, d)
    t2 = target.reshape(-1, n_classes) if prob else target.reshape(-1)
    n_rows = x2.shape[0]

    need = torch.is_grad_enabled()
    need_dx = need and x.requires_grad
    need_dw = need and w.requires_grad
    need_db = need and b is not None and b.requires_grad
    elem = 8 if x.dtype == torch.float64 else 4
    n_buffers = 2 if (z_loss or softcap is not None) else 1
    if not has_fused_backend(x.device):
        n_buffers = 3  # the plain-torch chunk path holds logits, probabilities and G
    block_rows, block_vocab = plan_blocks(n_rows, n_classes, elem, n_buffers, chunk_size)
    args = (ii, label_smoothing, z_loss, softcap or 0.0, reduction, block_rows, block_vocab)
    if weight is None and not prob and sw is None and not return_lse:
        loss, lse = _linear_op(x2, w, t2.detach(), b, *args, need_dx, need_dw, need_db)[:2]
    else:
        cw = None if weight is None else weight.detach()
        s2 = None if sw is None else sw.reshape(-1)
        loss, lse = _linear_general_op(
            x2, w, t2.detach(), b, cw, s2, *args, need_dx, need_dw, need_db, return_lse
        )[:2]  # fmt: skip
    if keeps_rows(reduction):
        loss = loss.reshape(batch)
        if shift and not prob:
            loss = loss[..., :-1]
    if not return_lse:
        return loss
    lse = lse.reshape(batch)
    return loss, (lse[..., :-1] if shift and not prob else lse)
