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

import math
import numbers
from typing import Any

import torch

__all__ = [
    "REDUCTIONS",
    "check_ce_args",
    "check_index_target_values",
    "check_prob_target_values",
    "check_options",
    "format_index",
]

REDUCTIONS = ("mean", "sum", "none")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def format_index(flat_index: int, shape: tuple[int, ...]) -> str:
    """The position ``flat_index`` in a tensor of ``shape``, as ``(i, j, ...)``."""
    idx = []
    for n in reversed(shape):
        idx.append(flat_index % n if n else 0)
        flat_index = flat_index // n if n else 0
    idx.reverse()
    return "(" + ", ".join(str(i) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def _real(value: Any, name: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    # Comparisons, not math.isfinite: under torch.compile(dynamic=True) a float
    # argument may be symbolic, and Dynamo traces comparisons but not isfinite.
    if not -math.inf < value < math.inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_options(
    *, ignore_index: Any, reduction: Any, label_smoothing: Any, z_loss: Any, softcap: Any
) -> tuple[int, str, float, float, float | None]:
    """The scalar options shared by :func:`cross_entropy` and :func:`linear_cross_entropy`."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    label_smoothing = _real(label_smoothing, "label_smoothing")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    z_loss = _real(z_loss, "z_loss")
    if z_loss < 0.0:
        raise ValueError(f"z_loss must be >= 0 (the weight of z_loss * lse**2), got {z_loss!r}")
    if softcap is not None:
        softcap = _real(softcap, "softcap")
        if softcap <= 0.0:
            raise ValueError(
                f"softcap must be > 0 (logits become softcap * tanh(logits / softcap)) or None, got {softcap!r}"
            )
    return int(ignore_index), reduction, label_smoothing, z_loss, softcap


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


# ----------------------------------------------------------------- data checks


def check_index_target_values(target: torch.Tensor, n_classes: int, ignore_index: int) -> None:
    """Class indices in ``[0, n_classes)`` or equal to ``ignore_index`` (reads the data)."""
    if target.numel() == 0:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
    if bool(bad.any()):
        i = int(bad.reshape(-1).nonzero()[0, 0])
        raise ValueError(
            f"target must hold class indices in [0, {n_classes}) for {n_classes} classes "
            f"(or ignore_index={ignore_index} to skip the row), got {int(target.reshape(-1)[i])} "
            f"at index {format_index(i, tuple(target.shape))}"
        )


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


def masked_row_error(row: int, ignore_index: int) -> ValueError:
    return ValueError(
        f"input row {row} (of the batch, flattened) is -inf for every class (all classes masked), so it "
        f"has no softmax, but its target asks for a loss; give it ignore_index={ignore_index} to skip it"
    )
