"""Input checking for every public entry point of softxent, in one place.

The public functions call these helpers before any arithmetic; the math and
the kernels below them trust their callers and never validate. Every error
names the argument and shows the offending value, so that a user can find the
mistake without reading softxent's source.

Conventions
-----------
* ``TypeError`` for a value of the wrong kind (integer logits, a string where
  a number belongs), ``ValueError`` for a value of the right kind that is out
  of range or of the wrong shape.
* Floating inputs keep their dtype for the result; the arithmetic runs in
  :func:`compute_dtype` (float64, or longdouble for longdouble input), which is
  what makes the NumPy layer an exact oracle.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = [
    "as_float_array",
    "check_axis",
    "check_base",
    "check_class_labels",
    "check_class_weight",
    "check_ignore_index",
    "check_nonnegative_weights",
    "check_probabilities",
    "check_probability_labels",
    "check_reduction",
    "check_sample_weight",
    "check_scalar",
    "check_where",
    "compute_dtype",
    "format_index",
]

REDUCTIONS = ("mean", "sum", "none")


def _short(value: Any) -> str:
    """A short ``repr`` for error messages (arrays are summarised)."""
    if isinstance(value, np.ndarray):
        return np.array2string(value, threshold=6, edgeitems=2, precision=6)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_index(flat_index: int, shape: tuple[int, ...]) -> str:
    """The position ``flat_index`` in an array of ``shape``, as ``(i, j, ...)``."""
    if not shape:
        return "()"
    idx = np.unravel_index(int(flat_index), shape)
    return "(" + ", ".join(str(int(i)) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the exact math runs in: float64, or longdouble for longdouble."""
    return np.result_type(dtype, np.float64)


def as_float_array(x: Any, name: str, *, allow_int: bool) -> np.ndarray:
    """Convert ``x`` to a floating ndarray, keeping float16/32/64 as they are.

    Integer and boolean input is promoted to float64 when ``allow_int`` (the
    generic math functions, as ``np.exp`` does) and refused otherwise (losses:
    integer logits are almost always labels passed in the wrong place).
    """
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got the string {_short(x)}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    kind = arr.dtype.kind
    if kind == "f":
        return arr
    if kind in "iub":
        if allow_int:
            return arr.astype(np.float64)
        raise TypeError(
            f"{name} must have a floating dtype (float16, float32 or float64), "
            f"got {arr.dtype}; if these are class labels, pass them as `labels`"
        )
    if kind == "c":
        raise TypeError(f"{name} must be real, got the complex dtype {arr.dtype}")
    raise TypeError(f"{name} must be an array of real numbers, got dtype {arr.dtype}: {_short(arr)}")


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """Normalise ``axis`` for an array of ``ndim`` dimensions."""
    if type(axis) is not int and (isinstance(axis, (bool, np.bool_)) or not isinstance(axis, numbers.Integral)):
        raise TypeError(f"{name} must be an integer, got {_short(axis)}")
    axis = int(axis)
    if ndim == 0:
        raise ValueError(f"{name}={axis} needs an array with at least one dimension, got a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimension(s)")
    return axis % ndim


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """A finite real number within the given bounds."""
    if type(value) is float or type(value) is int:  # the common case, without the ABC checks below
        pass
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {_short(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {bound} {low:g}, got {value!r}")
    if high is not None and (value > high or (not high_inclusive and value == high)):
        bound = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {bound} {high:g}, got {value!r}")
    return value


def check_base(base: Any) -> float | None:
    """``None`` (natural log) or a positive base different from 1."""
    if base is None:
        return None
    base = check_scalar(base, "base", low=0.0, low_inclusive=False)
    if base == 1.0:
        raise ValueError("base must differ from 1 (log base 1 is undefined), got 1.0")
    return base


def check_reduction(reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {_short(reduction)}")
    return reduction


def check_ignore_index(ignore_index: Any) -> int | None:
    if ignore_index is None:
        return None
    if type(ignore_index) is int:
        return ignore_index
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer or None, got {_short(ignore_index)}")
    return int(ignore_index)


def check_where(where: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """A boolean mask broadcast to ``shape`` (``True`` = class takes part)."""
    if where is None:
        return None
    mask = np.asarray(where)
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean mask, got dtype {mask.dtype}")
    try:
        return np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"where has shape {mask.shape}, which does not broadcast to the input's shape {shape}"
        ) from None


def _first_bad(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.ravel())[0])


def check_nonnegative_weights(
    values: Any, name: str, shape: tuple[int, ...], what: str
) -> np.ndarray:
    """Finite, non-negative real weights of exactly ``shape``, as float64."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} ({what}), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(
            f"{name} must be finite and non-negative, got {arr.ravel()[i].item()!r} "
            f"at index {format_index(i, arr.shape)}"
        )
    return arr


def check_class_weight(weight: Any, n_classes: int, name: str = "weight") -> np.ndarray | None:
    if weight is None:
        return None
    return check_nonnegative_weights(weight, name, (n_classes,), f"one per class, {n_classes} classes")


def check_sample_weight(sample_weight: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    if sample_weight is None:
        return None
    if np.ndim(sample_weight) == 0 and shape != ():
        raise ValueError(
            f"sample_weight must have shape {shape} (one per row), got the scalar "
            f"{_short(sample_weight)}; a common factor belongs outside the loss"
        )
    return check_nonnegative_weights(sample_weight, "sample_weight", shape, "one per row")


def check_class_labels(
    labels: np.ndarray, n_classes: int, ignore_index: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate integer class labels; return ``(labels as int64, kept mask)``.

    Labels may have an integer dtype, be boolean, or be floats with integral
    values (as read from a CSV column). ``ignore_index`` marks rows to skip.
    """
    kind = labels.dtype.kind
    if kind == "b":
        labels = labels.astype(np.int64)
    elif kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(
                f"labels must be integer class indices, got the non-integer value "
                f"{labels.ravel()[i].item()!r} at index {format_index(i, labels.shape)}"
            )
        labels = labels.astype(np.int64)
    elif kind in "iu":
        labels = labels.astype(np.int64, copy=False)
    else:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    kept = np.ones(labels.shape, dtype=bool) if ignore_index is None else labels != ignore_index
    bad = kept & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        i = _first_bad(bad)
        hint = "" if ignore_index is None else f" (or ignore_index={ignore_index} to skip the row)"
        raise ValueError(
            f"labels must lie in [0, {n_classes}) for {n_classes} classes{hint}, "
            f"got {int(labels.ravel()[i])} at index {format_index(i, labels.shape)}"
        )
    return labels, kept


def check_probability_labels(labels: np.ndarray, *, upper: float | None = None) -> np.ndarray:
    """Soft labels: real, finite, non-negative (and ``<= upper`` when given), as float64."""
    if labels.dtype.kind not in "biuf":
        raise TypeError(f"labels must hold real numbers, got dtype {labels.dtype}")
    arr = labels.astype(np.result_type(labels.dtype, np.float64))
    bad = ~np.isfinite(arr) | (arr < 0)
    if upper is not None:
        bad |= arr > upper
    if bad.any():
        i = _first_bad(bad)
        rng = "non-negative" if upper is None else f"in [0, {upper:g}]"
        raise ValueError(
            f"labels must be finite probabilities {rng}, got {arr.ravel()[i].item()!r} "
            f"at index {format_index(i, arr.shape)}"
        )
    return arr


def check_probabilities(p: np.ndarray, name: str, axis: int) -> None:
    """``p`` is non-negative and each slice along ``axis`` sums to one.

    NaN entries are let through (NaN in, NaN out for that slice). The sum is
    checked to ``sqrt(eps)`` of ``p``'s dtype, loose enough for float32 rows of
    a hundred thousand entries, tight enough to catch counts or logits.
    """
    if (p < 0).any():
        i = _first_bad(p < 0)
        raise ValueError(
            f"{name} must be a probability vector (non-negative entries), got "
            f"{p.ravel()[i].item()!r} at index {format_index(i, p.shape)}"
        )
    if p.size == 0 or p.shape[axis] == 0:
        return
    tol = float(np.sqrt(np.finfo(p.dtype).eps))
    with np.errstate(invalid="ignore"):
        total = p.sum(axis=axis, dtype=compute_dtype(p.dtype))
        bad = np.abs(total - 1.0) > tol
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(
            f"{name} must sum to 1 along axis {axis} (within {tol:.1e}), but the slice at "
            f"index {format_index(i, bad.shape)} sums to {float(total.ravel()[i])!r}"
        )
