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

The scalar options of the losses (reduction, ignore_index, label_smoothing,
temperature, ...) and their texts live in :mod:`softxent._contract`; the
names re-exported here from it serve the array checks below and older callers.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np

from ._contract import REDUCTIONS, check_ignore_index, check_reduction, format_index, label_range_message
from ._contract import check_real as check_scalar
from ._contract import short_repr as _short

__all__ = [
    "REDUCTIONS",
    "as_array",
    "as_float_array",
    "check_axis",
    "check_base",
    "check_bool",
    "check_class_labels",
    "check_class_weight",
    "check_ignore_index",
    "check_nonnegative_weights",
    "check_probabilities",
    "check_probability_labels",
    "check_reduction",
    "check_result_size",
    "check_sample_weight",
    "check_scalar",
    "check_where",
    "compute_dtype",
    "format_index",
    "physical_memory",
]


def as_array(x: Any, name: str) -> np.ndarray:
    """``np.asarray(x)``, with NumPy's errors for ragged nested lists turned
    into a ``TypeError`` that names the argument."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None


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
    arr = as_array(x, name)
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
    if kind == "O" and arr.ndim:  # name the first entry that is not a number
        for i, v in enumerate(arr.ravel()):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise TypeError(
                    f"{name} must be an array of real numbers, got {_short(v)} at index {format_index(i, arr.shape)}"
                )
        raise TypeError(f"{name} must be an array of real numbers, got dtype object; convert it with .astype(float)")
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


def check_base(base: Any) -> float | None:
    """``None`` (natural log) or a positive base different from 1."""
    if base is None:
        return None
    base = check_scalar(base, "base", low=0.0, low_inclusive=False)
    if base == 1.0:
        raise ValueError("base must differ from 1 (log base 1 is undefined), got 1.0")
    return base


def check_bool(value: Any, name: str) -> bool:
    """``True`` or ``False`` (NumPy booleans too): a string such as ``"no"``
    is truthy, and ``inplace="no"`` would destroy the logits."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_short(value)}")


def physical_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


def _format_bytes(n: int) -> str:
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_result_size(what: str, dims: tuple[int, ...], dtype: np.dtype, hint: str) -> None:
    """Refuse, before allocating, a result of shape ``dims`` that cannot fit in memory.

    The limit is the machine's physical memory: a larger array either fails
    deep inside NumPy with a ``MemoryError`` or, with overcommit, drives the
    machine into swap. Where the OS does not report its memory, NumPy's own
    ``MemoryError`` stands.
    """
    dtype = np.dtype(dtype)
    n_bytes = math.prod(int(d) for d in dims) * dtype.itemsize  # Python ints: no overflow
    limit = physical_memory()
    if limit is not None and n_bytes > limit:
        shape = " x ".join(str(int(d)) for d in dims)
        raise ValueError(
            f"{what} needs {_format_bytes(n_bytes)} ({shape} {dtype.name}), more than this "
            f"machine's {_format_bytes(limit)} of memory; {hint}"
        )


def check_where(where: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """A boolean mask broadcast to ``shape`` (``True`` = class takes part)."""
    if where is None:
        return None
    mask = as_array(where, "where")
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


def check_nonnegative_weights(values: Any, name: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Finite, non-negative real weights of exactly ``shape``, as float64."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must hold real numbers, got the string {_short(values)}")
    arr = as_array(values, name)
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
    if isinstance(sample_weight, (str, bytes)):
        raise TypeError(f"sample_weight must hold real numbers, got the string {_short(sample_weight)}")
    sample_weight = as_array(sample_weight, "sample_weight")
    if sample_weight.ndim == 0 and shape != ():
        raise ValueError(
            f"sample_weight must have shape {shape} (one per row), got the scalar "
            f"{_short(sample_weight.item())}; a common factor belongs outside the loss"
        )
    return check_nonnegative_weights(sample_weight, "sample_weight", shape, "one per row")


def _given(original: Any, flat_index: int, shape: tuple[int, ...], fallback: Any) -> Any:
    """The element at ``flat_index`` as the caller wrote it: from their nested
    list when they gave one (NumPy turns ``[2**63 + 1, 0]`` into float64 and
    rounds the label), else ``fallback``, the array's own element."""
    if original is None or isinstance(original, np.ndarray) or not shape:
        return fallback
    item = original
    try:
        for i in np.unravel_index(int(flat_index), shape):
            item = item[int(i)]
    except (TypeError, IndexError, KeyError):
        return fallback
    return item if isinstance(item, numbers.Number) else fallback


def _object_labels(labels: np.ndarray, original: Any) -> np.ndarray:
    """Class labels of an object array (Python ints beyond int64, mixed
    ints and floats) as exact Python ints in an object array."""
    flat = labels.ravel()
    out = np.empty(flat.shape, dtype=object)
    for i, v in enumerate(flat):
        if isinstance(v, (bool, np.bool_, numbers.Integral)):
            out[i] = int(v)
        elif isinstance(v, numbers.Real) and math.isfinite(float(v)) and float(v).is_integer():
            out[i] = int(float(v))  # exact: an integral float below 2**1024 converts without rounding
        else:
            shown = _short(_given(original, i, labels.shape, v))
            where = format_index(i, labels.shape)
            if isinstance(v, numbers.Real):
                raise ValueError(
                    f"labels must be integer class indices, got the non-integer value {shown} at index {where}"
                )
            raise TypeError(f"labels must be integer class indices, got {shown} at index {where}")
    return out.reshape(labels.shape)


def check_class_labels(
    labels: np.ndarray, n_classes: int, ignore_index: int | None, original: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate integer class labels; return ``(labels as int64, kept mask)``.

    Labels may have an integer dtype, be boolean, be floats with integral
    values (as read from a CSV column), or be Python ints of any size.
    ``ignore_index`` marks rows to skip. The range is checked before any
    conversion to int64, so a label such as ``1e20`` or ``2**63 + 1`` is
    reported as given (``original``: the caller's argument, when it was a
    list), never as the integer its conversion wrapped to.
    """
    kind = labels.dtype.kind
    values = labels
    if kind == "b":
        values = labels.astype(np.int64)
    elif kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = _first_bad(bad)
            raise ValueError(
                f"labels must be integer class indices, got the non-integer value "
                f"{labels.ravel()[i].item()!r} at index {format_index(i, labels.shape)}"
            )
    elif kind == "O":
        values = _object_labels(labels, original)
    elif kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    # Compared in their own dtype (NumPy compares uint64 and float with Python
    # ints exactly), so nothing out of range wraps around before it is seen.
    kept = np.ones(labels.shape, dtype=bool)
    if ignore_index is not None:
        kept = np.asarray(values != ignore_index, dtype=bool)
    bad = kept & np.asarray((values < 0) | (values >= n_classes), dtype=bool)
    if bad.any():
        i = _first_bad(bad)
        given = labels.ravel()[i]
        given = given.item() if isinstance(given, np.generic) else given
        if kind in "iub":  # show integers as integers (np.int64(7) as 7)
            given = int(given) if kind != "b" else bool(given)
        shown = _short(_given(original, i, labels.shape, given))
        raise ValueError(label_range_message("labels", n_classes, ignore_index, shown, format_index(i, labels.shape)))
    # Every label is now in [0, n_classes) or equal to ignore_index, which fits int64.
    return values.astype(np.int64, copy=False), kept


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
    n_slices = math.prod(n for i, n in enumerate(p.shape) if i != axis)
    if p.shape[axis] == 0 and n_slices:
        # Slices with no entries sum to 0: not distributions (an empty batch of them is fine).
        raise ValueError(
            f"{name} must sum to 1 along axis {axis}, but it has no entries along that axis (shape {p.shape})"
        )
    if p.size == 0:
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
