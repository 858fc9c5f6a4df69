r"""``softxent.torch.cross_entropy``: a drop-in for ``torch.nn.functional.cross_entropy``.

Design (wrapper -> custom op -> backend; the backward rule beside the forward)
-----------------------------------------------------------------------------
* :func:`cross_entropy` checks its arguments (statically: no tensor data is
  read, so ``torch.compile`` traces it without a graph break), moves the class
  axis last and flattens the batch, giving (M, C) rows, and picks a path:

  - **fused** (devices in :data:`._backends.FUSED_BACKENDS`: the CPU, and
    CUDA when Triton is installed, :mod:`._triton`): the custom op ``softxent::cross_entropy``, with its autograd
    formula registered beside it. The op computes the loss, the gradient
    :math:`\partial L / \partial z` and the per-row log-sum-exp in one sweep
    over the logits (eq. 7 and eq. 15, :mod:`._backends`); the backward only
    scales that stored gradient by ``grad_output``:

    .. math::

        \frac{\partial \mathcal{L}}{\partial z}
            = \frac{\partial \mathcal{L}}{\partial L}\,
              \underbrace{\frac{\partial L}{\partial z}}_{\text{from the forward}}

    (a scalar factor for ``"mean"``/``"sum"``, one per row for ``"none"``; a
    factor of exactly 1, the usual ``loss.backward()``, returns the stored
    gradient without touching it: on the CPU always, on CUDA for large
    gradients, where checking the factor costs one host synchronisation,
    :func:`_is_one`).
  - **plain torch** (any other device, probability targets or class weights
    that require grad, and inside ``torch.func`` transforms):
    :func:`._reference.cross_entropy_rows_reference`, the same formulas in
    differentiable torch operations.

* The custom op (``torch.library.custom_op`` with ``register_fake`` and
  ``register_autograd``) is opaque to ``torch.compile``, so a compiled model
  keeps the fused kernel and its graph whole (``fullgraph=True`` works).
  Custom ops refuse ``torch.func`` transforms, so inside one the plain-torch
  path runs instead. (A ``torch.autograd.Function`` would allow
  ``torch.func`` but makes Dynamo 2.13 emit a ``DeprecationWarning`` from
  its own internals.)

Memory: the forward holds one (M, C) buffer, the gradient, until the backward
consumes it, and for the usual ``loss.backward()`` the backward allocates
nothing of that size (it hands that buffer on). It also keeps a reference to
the logits (no copy; they and the gradient are both alive during the sweep,
so the peak is unchanged) for the backward of ``return_lse`` and for a
backward that is differentiated again. torch's ``log_softmax`` +
``nll_loss`` keeps the (M, C) log-probabilities and allocates the gradient in
the backward: one (M, C) tensor more at the peak.

Second order: the stored gradient is a constant to autograd, so when a graph
of the gradient is asked for (``create_graph=True``: Hessian-vector
products, gradient penalties) the backward recomputes the loss from the
saved logits with the plain-torch formulas and lets torch differentiate it
(:func:`_differentiable_grad`); the first-order backward is unchanged.
"""

from __future__ import annotations

import torch

from .._contract import Reduction, check_temperature, keeps_rows
from ._backends import cpu_rows, has_fused_backend
from ._memory import empty
from ._reference import cross_entropy_rows_reference, work_dtype
from ._validation import _scalar, check_ce_args, check_options

__all__ = ["cross_entropy"]


# --------------------------------------------------------------------------- custom op


@torch.library.custom_op("softxent::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    reduction: str,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, gradient (an empty tensor unless ``need_grad``) and log-sum-exp of (M, C) contiguous logits.

    ``softcap=0`` means no cap. Loss and gradient are in ``logits.dtype``,
    the log-sum-exp in float32 (float64 for float64 logits).
    """
    loss, grad, lse = cpu_rows(
        logits, target, weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap or None, reduction=reduction, need_grad=need_grad,
        need_lse=True,
    )  # fmt: skip
    dtype = logits.dtype
    if grad is None:
        grad = logits.new_empty((0,))
    elif grad.dtype != dtype:  # bf16/fp16: round the float32 gradient once
        grad = empty(tuple(grad.shape), dtype).copy_(grad)
    return loss.to(dtype), grad, lse.to(work_dtype(dtype))


@_cross_entropy_op.register_fake
def _(logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, need_grad):
    n_rows = logits.shape[0]
    loss = logits.new_empty((n_rows,) if keeps_rows(reduction) else ())
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else logits.new_empty((0,))
    return loss, grad, logits.new_empty((n_rows,), dtype=work_dtype(logits.dtype))


# The CUDA (Triton) backend registers here, _cross_entropy_op.register_kernel("cuda")(fn),
# and adds itself to _backends.FUSED_BACKENDS (which routes CUDA tensors to this op):
# softxent.torch._triton.register().


#: Stored gradients of at least this many elements are worth one host read of a CUDA ``grad_output``
#: (a synchronisation, tens of microseconds) to skip the scaling pass when it is exactly 1: below
#: it that pass (read and write the gradient, 2**24 bf16 elements are 64 MiB) costs about as much.
SYNC_WORTH = 1 << 24


def _is_one(g: torch.Tensor, numel: int) -> bool:
    """``g`` is exactly 1, read on the host where that is cheap enough: then the stored gradient is the answer.

    A plain CPU tensor in eager mode is read. A CUDA one only for a stored gradient of
    :data:`SYNC_WORTH` elements or more, and never while a CUDA graph is being captured: the read
    synchronises the host with the GPU (as Liger-Kernel's backward does for every call), and for
    the usual ``loss.backward()`` it spares a pass over the whole gradient (at 8192 x 256000 in
    bf16, 8 GB of memory traffic and one gradient-sized allocation). Traced by ``torch.compile``
    or ``make_fx``, the stored gradient is always scaled.
    """
    if torch.compiler.is_compiling() or type(g) is not torch.Tensor or g.dim() != 0:
        return False
    if g.device.type == "cuda":
        if numel < SYNC_WORTH or torch.cuda.is_current_stream_capturing():
            return False
    elif g.device.type != "cpu":
        return False
    return bool(g == 1)


def _setup_context(ctx, inputs, output):
    logits, target, weight, ignore_index, label_smoothing, z_loss, softcap, reduction, need_grad = inputs
    _, grad, lse = output
    ctx.set_materialize_grads(False)  # unused outputs: None, not an (M, C) tensor of zeros
    ctx.mark_non_differentiable(grad)
    ctx.reduction = reduction
    ctx.softcap = softcap
    ctx.options = (ignore_index, label_smoothing, z_loss, softcap or None)
    # The logits (a reference, no copy) serve the log-sum-exp's backward and a
    # backward that is differentiated again. They are alive during the forward's
    # sweep anyway, beside the gradient, so the peak memory stays the same.
    if need_grad:
        ctx.save_for_backward(grad, lse, logits, target, weight)
    else:
        ctx.save_for_backward(grad)


def _scale_stored_grad(ctx, grad_loss, grad_lse):
    """dL/dz = grad_output * (the gradient stored by the forward) [+ grad_lse * dlse/dz]."""
    saved = ctx.saved_tensors
    grad = saved[0]
    out = None
    if grad_loss is not None:
        if keeps_rows(ctx.reduction):
            out = grad * grad_loss.to(grad.dtype)[:, None]
        elif _is_one(grad_loss, grad.numel()):
            out = grad  # loss.backward(): the stored gradient is already the answer
        else:
            out = grad * grad_loss.to(grad.dtype)
    if grad_lse is not None:
        # d lse / dz = softmax(z') * sech^2(z / c), rebuilt from the kept logits.
        lse, logits = saved[1], saved[2]
        z = logits.to(lse.dtype)
        if ctx.softcap:
            u = z / ctx.softcap
            z = ctx.softcap * torch.tanh(u)
        term = torch.exp(z - lse[:, None]) * grad_lse.to(lse.dtype)[:, None]
        if ctx.softcap:
            term = term / torch.cosh(u).square()
        term = term.to(grad.dtype)
        out = term if out is None else out + term
    return out


def _differentiable_grad(ctx, grad_loss, grad_lse):
    """dL/dz as a function of the logits that autograd can differentiate again (``create_graph=True``).

    The stored gradient is a constant to autograd (the fused kernel is opaque),
    so a Hessian-vector product or a gradient penalty through it would see
    zeros. Instead the loss is recomputed from the saved logits with the
    plain-torch formulas of :mod:`._reference` and differentiated by torch:
    slower, and it holds the (M, C) intermediates of that graph, but only
    taken when a graph of the gradient is asked for.
    """
    _, _, logits, target, weight = ctx.saved_tensors
    ignore_index, label_smoothing, z_loss, softcap = ctx.options
    outputs, grads = [], []
    with torch.enable_grad():
        z = logits if logits.requires_grad else logits.detach().requires_grad_()
        loss, lse = cross_entropy_rows_reference(
            z, target, weight, ignore_index, ctx.reduction, label_smoothing, z_loss, softcap,
            need_lse=grad_lse is not None,
        )  # fmt: skip
        for out, g in ((loss, grad_loss), (lse, grad_lse)):
            if g is not None:
                outputs.append(out)
                grads.append(g.to(out.dtype))
        (dz,) = torch.autograd.grad(outputs, z, grads, create_graph=True)
    return dz


def _backward(ctx, grad_loss, _grad_grad, grad_lse):
    """The fused path's backward: scale the stored gradient, or rebuild it differentiably.

    The autograd engine runs a backward with grad mode on exactly when the
    caller asked for ``create_graph=True``.
    """
    if grad_loss is None and grad_lse is None:
        return (None,) * 9
    if torch.is_grad_enabled() and not torch.compiler.is_compiling():
        out = _differentiable_grad(ctx, grad_loss, grad_lse)
    else:
        out = _scale_stored_grad(ctx, grad_loss, grad_lse)
    return out, None, None, None, None, None, None, None, None


_cross_entropy_op.register_autograd(_backward, setup_context=_setup_context)


def _functorch_active() -> bool:
    """Inside a torch.func transform (grad, vmap, jacrev, ...), which custom ops do not support."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None


def check_temperature_arg(temperature: object) -> float:
    """The ``temperature`` of the torch front ends, checked by the contract (1.0 itself skips the check)."""
    if type(temperature) is float and temperature == 1.0:
        return 1.0
    return check_temperature(_scalar(temperature))


def apply_temperature(z: torch.Tensor, softcap: float | None, temperature: float) -> tuple[torch.Tensor, float | None]:
    r"""``z / T`` and the cap ``c / T``: the loss of ``softmax(c tanh(z / c) / T)`` as the loss at T = 1.

    :math:`c \tanh(z/c) / T = (c/T) \tanh((z/T) / (c/T))`, so dividing the
    logits and the cap by :math:`T` gives the contract's order (cap, then
    temperature) on every device and backend; autograd multiplies the
    gradient by :math:`1/T` (the chain rule through the division).
    """
    return z / temperature, (None if softcap is None else softcap / temperature)


# --------------------------------------------------------------------------- public


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    temperature: float = 1.0,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Softmax cross-entropy of ``input`` logits against ``target``: eq. (7) with eq. (8).

    A drop-in for :func:`torch.nn.functional.cross_entropy` (same arguments,
    defaults and results), computed on the CPU by a fused kernel that gives
    the loss and its gradient in one sweep over the logits. For row :math:`i`
    with logits :math:`z_i`, soft-capped :math:`z'_i = c \tanh(z_i / c)` (:math:`z'_i = z_i`
    without ``softcap``) and divided by the temperature, :math:`u_i = z'_i / T`:

    .. math::

        \ell_i = \sum_c t_{ic}\,\bigl(\operatorname{lse}(u_i) - u_{ic}\bigr)
                 + \lambda_z \operatorname{lse}(u_i)^2,
        \qquad \operatorname{lse}(u) = \log \textstyle\sum_c e^{u_c},

    whose gradient with respect to :math:`u` is eq. (15), :math:`a \sum_c t_c - t` with
    :math:`a = \operatorname{softmax}(u)` (eq. 16: :math:`a - y` for a plain
    one-hot target), plus :math:`2 \lambda_z \operatorname{lse}\, a`; the
    chain rule multiplies it by :math:`\operatorname{sech}^2(z / c) / T` for
    the gradient with respect to :math:`z`. The
    effective target :math:`t` is PyTorch's: for a class index :math:`y`,
    :math:`t = (1-\varepsilon) w_y e_y + \tfrac{\varepsilon}{C} w`; for
    probabilities :math:`p`, :math:`t = w \odot ((1-\varepsilon) p + \tfrac{\varepsilon}{C})`.

    Parameters
    ----------
    input : Tensor of shape (C,), (N, C) or (N, C, d1, d2, ...)
        Unnormalised logits; the class axis is 1 (0 for an unbatched
        ``(C,)`` input). float16, bfloat16, float32 or float64; low-precision
        input is computed in float32 and the results cast back. ``-inf``
        masks a class.
    target : Tensor
        Class indices (an integer dtype) of the input's shape without the
        class axis, in ``[0, C)`` or equal to ``ignore_index``; or class
        probabilities (a floating dtype) of the input's shape, finite and
        non-negative (rows need not sum to 1: eq. 15 covers it).
    weight : Tensor of shape (C,), optional
        Non-negative class weights.
    ignore_index : int, default -100
        Class-index targets equal to it are skipped (loss 0, gradient 0, left
        out of the mean). Not used with probability targets.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"``: one loss per row, shape ``(N, d1, ...)``. ``"mean"``:
        divided by the summed weights :math:`\sum_i w_{y_i}` of the rows not
        ignored (class indices; the row count for probability targets), as
        torch does.
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution, as torch does.
    z_loss : float >= 0, default 0, keyword-only
        Adds :math:`\lambda_z \operatorname{lse}^2` for every row not ignored
        (PaLM's auxiliary loss that keeps the normaliser near 0),
        differentiable. It is not multiplied by class weights; ``"mean"``
        divides its sum by the number of rows not ignored (as Liger-Kernel).
    softcap : float > 0, optional, keyword-only
        Replaces the logits by :math:`c \tanh(z / c)` first (Gemma 2); the
        gradient carries the chain rule :math:`\operatorname{sech}^2(z / c)`.
        ``-inf`` becomes :math:`-c`: masking does not survive the cap.
    temperature : float > 0, default 1, keyword-only
        The loss of :math:`\operatorname{softmax}(z' / T)` (knowledge
        distillation's softened targets when :math:`T > 1`), with the
        gradient with respect to the raw logits :math:`z` (a factor
        :math:`1/T`), as :func:`softxent.softmax_cross_entropy`'s
        ``temperature``. Applied after the cap: the cap is the model's, the
        temperature softens the capped distribution. Computed by dividing the
        logits (float32 for float16/bfloat16 input) and the cap by :math:`T`,
        one elementwise pass; ``T = 1`` costs nothing. The z-loss and
        ``return_lse`` are those of :math:`z'/T`.
    return_lse : bool, default False, keyword-only
        Also return each row's log-sum-exp of :math:`z'/T` (the soft-capped logits over the temperature), shape
        ``(N, d1, ...)``, float32 (float64 for float64 input), ignored rows
        included. It is differentiable; the fused path then keeps the logits
        until the backward.

    Returns
    -------
    loss : Tensor
        0-d, or of shape ``(N, d1, ...)`` for ``reduction="none"``, in the
        input's dtype (float32 under CPU autocast, like torch).
    lse : Tensor
        Only with ``return_lse=True``.

    Notes
    -----
    Differences from torch, each deliberate:

    * a batch whose rows are all ignored (or an empty batch) gives loss 0 and
      gradient 0 with ``reduction="mean"``; torch gives NaN;
    * with probability targets, a masked class (``-inf`` logit) with target 0
      adds nothing (:math:`0 \cdot \infty = 0`); torch gives NaN;
    * bad input raises ``ValueError``/``TypeError`` naming the argument and
      the value (torch raises ``IndexError``/``RuntimeError`` or, for
      probabilities, does not check): a class index out of range, a negative
      probability, a row that is ``-inf`` everywhere but not ignored;
    * low-precision input is computed in float32 and rounded once, so it is
      usually closer to the exact value than torch's.

    Paths: on the CPU (float16/bfloat16/float32/float64) the fused kernel; on
    other devices, when a probability ``target`` or ``weight`` requires grad,
    and under ``torch.func`` transforms, plain torch operations with the same
    semantics (so ``torch.func.grad``, ``vmap``, ``jacrev``, ``hessian`` all
    work there). The fused path works under ``torch.compile`` (fullgraph) and
    autocast. With ``create_graph=True`` (Hessian-vector products, gradient
    penalties) its backward is recomputed in plain torch operations, so that
    it can be differentiated again.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import cross_entropy
    >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
    >>> loss = cross_entropy(logits, torch.tensor([0, 1]))
    >>> print(f"{loss.item():.6f}")
    0.318540
    >>> loss.backward()                              # eq. (16): (softmax - one-hot) / N
    >>> print(logits.grad.sum(dim=1).abs().max() < 1e-7)
    tensor(True)
    >>> loss, lse = cross_entropy(logits, torch.tensor([0, -100]), reduction="none", return_lse=True)
    >>> loss.detach(), lse.detach()                 # the ignored row: loss 0, its lse all the same
    (tensor([0.4170, 0.0000]), tensor([2.4170, 2.7200]))
    """
    ignore_index, reduction, label_smoothing, z_loss, softcap = check_options(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    temperature = check_temperature_arg(temperature)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be True or False, got {return_lse!r}")
    prob, batch = check_ce_args(input, target, weight)
    if torch.is_autocast_enabled(input.device.type) and input.dtype in (torch.float16, torch.bfloat16):
        input = input.float()  # autocast runs torch's cross_entropy in float32: so do we
    n_classes = input.shape[0 if input.dim() == 1 else 1]

    # (M, C) rows, class axis last (a copy only when the layout requires one).
    if input.dim() == 1:
        rows = input[None]
        rows_target = target[None]
    elif input.dim() == 2:
        rows, rows_target = input, target
    else:
        rows = input.movedim(1, -1).reshape(-1, n_classes)
        rows_target = target.movedim(1, -1).reshape(-1, n_classes) if prob else target.reshape(-1)
    rows = rows.contiguous()
    out_dtype = rows.dtype
    if temperature != 1.0:
        # In float32 for bf16/fp16: z / T rounded to 8 bits would lose more than the input holds.
        rows, softcap = apply_temperature(rows.to(work_dtype(rows.dtype)), softcap, temperature)

    target_grad = prob and target.requires_grad
    weight_grad = weight is not None and weight.requires_grad
    fused = has_fused_backend(input.device) and not (target_grad or weight_grad) and not _functorch_active()
    if fused:
        rows_target = rows_target.detach()
        w = None if weight is None else weight.detach()
        need_grad = torch.is_grad_enabled() and input.requires_grad
        loss, _, lse = _cross_entropy_op(
            rows, rows_target, w, ignore_index, label_smoothing, z_loss, softcap or 0.0, reduction, need_grad
        )  # fmt: skip
    else:
        loss, lse = cross_entropy_rows_reference(
            rows, rows_target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap,
            need_lse=return_lse,
        )  # fmt: skip
    if loss.dtype != out_dtype:  # computed in float32 at a temperature: the input's dtype back
        loss = loss.to(out_dtype)
    if keeps_rows(reduction):
        loss = loss.reshape(batch)
    if return_lse:
        return loss, lse.reshape(batch)
    return loss
