"""Argument checks of the PyTorch front end, in one place.

Two kinds of check, kept apart because ``torch.compile`` treats them differently:

* **static** checks (types, dtypes, shapes, devices, option values) run in the
  Python wrappers on every call; they read no tensor data, so Dynamo traces
  through them without a graph break;
* **data** checks (class indices in range, probability targets finite and
  non-negative, rows fully masked with ``-inf``) read tensor values. They run
  inside the fused custom ops at run time (so also under ``torch.compile``)
  and in the eager plain-torch path; a traced plain-torch graph and
  ``torch.func`` transforms (which cannot branch on values) skip them.

Every error names the argument and shows the bad value, as the NumPy layer's
:mod:`softxent._validation` does, but with PyTorch's argument names
(``input``, ``target``, ``weight``).
"""

from __future__ import annotations

import numbers
from typing import Any

import torch

from .._contract import REDUCTIONS, XentOptions, format_index, label_range_message, masked_row_message

__all__ = [
    "REDUCTIONS",
    "check_ce_args",
    "check_head_options",
    "check_index_target_values",
    "check_prob_target_values",
    "check_options",
    "first_masked_row",
    "index_target_error",
    "format_index",
    "masked_row_error",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _scalar(value: Any) -> Any:
    """A one-element tensor that needs no gradient, as a Python number (torch's
    functions accept those for scalar options); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        return value.item()
    return value


def check_options(
    *, ignore_index: Any, reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any
) -> tuple[int, str, float, float, float | None]:
    """The scalar options shared by :func:`cross_entropy` and :func:`linear_cross_entropy`,
    checked by the loss contract (:class:`softxent._contract.XentOptions`)."""
    opts = XentOptions.build(
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=_scalar(label_smoothing),
        z_loss=_scalar(z_loss),
        softcap=_scalar(softcap),
        allow_no_ignore=False,
    )
    return opts.ignore_index, opts.reduction, opts.label_smoothing, opts.z_loss, opts.softcap  # type: ignore[return-value]


def check_head_options(chunk_size: Any, shift: Any, x: torch.Tensor | None = None) -> None:
    """``chunk_size`` and ``shift`` of the linear heads (``x`` given: that ``shift`` fits its shape)."""
    bad_chunk = isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1
    if chunk_size is not None and bad_chunk:
        raise ValueError(f"chunk_size must be a positive integer (rows per block) or None, got {chunk_size!r}")
    if not isinstance(shift, bool):
        raise TypeError(f"shift must be True or False, got {shift!r}")
    if shift and x is not None:
        if x.dim() < 2:
            raise ValueError(f"shift=True needs a sequence axis: x of shape (..., T, d), got {tuple(x.shape)}")
        if x.shape[-2] == 1:
            # Every position would be scored against nothing: a loss of 0 that hides the mistake.
            raise ValueError(
                f"shift=True scores position t against target[..., t + 1], so it needs sequences of at least "
                f"2 positions (axis -2 of x), got x of shape {tuple(x.shape)}"
            )


def _check_tensor(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_float_tensor(value: Any, name: str) -> torch.Tensor:
    _check_tensor(value, name)
    if value.dtype not in FLOAT_DTYPES:
        hint = "; if these are class indices, pass them as `target`" if not value.is_floating_point() else ""
        raise TypeError(
            f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {value.dtype}{hint}"
        )
    return value


def check_same_device(reference: torch.Tensor, value: torch.Tensor | None, name: str, ref_name: str) -> None:
    if value is not None and value.device != reference.device:
        raise ValueError(
            f"{name} is on {value.device} but {ref_name} is on {reference.device}; move them to one device"
        )


def check_ce_args(input: Any, target: Any, weight: Any) -> tuple[bool, tuple[int, ...]]:
    """Static checks of :func:`softxent.torch.cross_entropy`'s tensors.

    Returns ``(probability_target, batch_shape)``: the batch shape is the
    input's shape without the class axis (axis 1, or axis 0 for an unbatched
    ``(C,)`` input), which is also the shape of class-index targets and of
    ``reduction="none"`` losses.
    """
    check_float_tensor(input, "input")
    _check_tensor(target, "target")
    if input.dim() == 0:
        raise ValueError("input must have a class axis: shape (C,), (N, C) or (N, C, d1, ...), got a 0-d tensor")
    class_axis = 0 if input.dim() == 1 else 1
    n_classes = input.shape[class_axis]
    batch = tuple(input.shape[:class_axis]) + tuple(input.shape[class_axis + 1 :])
    if n_classes == 0:
        raise ValueError(f"input must have at least one class along axis {class_axis}, got shape {tuple(input.shape)}")
    check_same_device(input, target, "target", "input")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(
            f"target must hold class indices (an integer dtype) or class probabilities "
            f"(a floating dtype), got {target.dtype}"
        )
    prob = target.is_floating_point()
    if prob:
        if tuple(target.shape) != tuple(input.shape):
            raise ValueError(
                f"target holds probabilities (dtype {target.dtype}), so it must have the input's shape "
                f"{tuple(input.shape)}, got {tuple(target.shape)}; class indices need an integer dtype"
            )
    elif tuple(target.shape) != batch:
        raise ValueError(
            f"target must hold class indices of shape {batch} (the input's shape {tuple(input.shape)} "
            f"without the class axis {class_axis}) or probabilities of shape {tuple(input.shape)}, "
            f"got shape {tuple(target.shape)}"
        )
    if weight is not None:
        check_float_tensor(weight, "weight")
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},) (one per class), got {tuple(weight.shape)}")
        check_same_device(input, weight, "weight", "input")
    return prob, batch


def check_index_target_values(target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """Class indices in ``[0, n_classes)`` or equal to ``ignore_index`` (reads the data)."""
    if target.numel() == 0:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0, 0])
        raise index_target_error(target, i, n_classes, ignore_index)


def index_target_error(target: torch.Tensor, flat_index: int, n_classes: int, ignore_index: int) -> ValueError:
    """The label-range error for ``target``'s entry at ``flat_index`` (in torch's argument names)."""
    given = str(int(target.reshape(-1)[flat_index]))
    where = format_index(flat_index, tuple(target.shape))
    return ValueError(label_range_message("target", n_classes, ignore_index, given, where))


def check_prob_target_values(target: torch.Tensor) -> None:
    """Probability targets finite and non-negative (reads the data)."""
    if target.numel() == 0:
        return
    bad = ~torch.isfinite(target) | (target < 0)
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0, 0])
        raise ValueError(
            f"target holds class probabilities, which must be finite and non-negative, "
            f"got {float(target.reshape(-1)[i])!r} at index {format_index(i, tuple(target.shape))}"
        )


def check_weight_values(weight: torch.Tensor | None) -> None:
    if weight is None or weight.numel() == 0:
        return
    bad = ~torch.isfinite(weight) | (weight < 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"weight must be finite and non-negative, got {float(weight[i])!r} at index ({i},)")


def masked_row_error(row: int, ignore_index: int, *, name: str = "input", prob: bool = False) -> ValueError:
    """A row of logits that is ``-inf`` for every class but must give a loss (in torch's argument names).

    ``name`` says what the logits are (``"input"``, ``"local_logits"``, or for the
    linear head ``"x @ weight.T + bias"``); ``prob``: probability targets, where
    ``ignore_index`` does not apply.
    """
    skip = "give its target row all zeros to skip it" if prob else f"give it ignore_index={ignore_index} to skip it"
    return ValueError(masked_row_message(f"row {row} of {name} (the batch flattened)", skip, label="target"))


def first_masked_row(z: torch.Tensor, target: torch.Tensor, ignore_index: int) -> int | None:
    """The first row of (M, C) logits ``z`` that is ``-inf`` everywhere and takes part in the loss, or None.

    Only called once a kernel has failed (it reads all of ``z``), to name the
    row in the front end's words instead of the NumPy layer's.
    """
    counts = (target != ignore_index) if not target.is_floating_point() else (target.sum(dim=1) > 0)
    bad = counts & (z == -torch.inf).all(dim=1)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None
