"""Helpers shared by the softmax and sigmoid losses: result dtypes, kernel-checked labels, the effective target."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import kernels
from ._validation import check_probability_labels


class Labels(NamedTuple):
    """Validated labels, class axis last. Exactly one of ``index``/``probs`` is set."""

    # int64, batch shape; -1 marks an ignored row (the name shadows tuple.index, which no caller needs)
    index: np.ndarray | None  # type: ignore[assignment]
    probs: np.ndarray | None  # batch + (K,), float32/float64 as given (or float64)
    row_weight: np.ndarray | None  # each row's weight in the mean, w[y] (0 if ignored); None: all 1
    at_most_one: bool = True  # every label is <= 1 (known for class indices and kernel-checked probabilities)


_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_F32_MAX = float(np.finfo(np.float32).max)


def scalar_or_array(value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` in ``dtype``: a NumPy scalar for a 0-d value, else an array."""
    if type(value) is float and (dtype == _F64 or (dtype == _F32 and not abs(value) > _F32_MAX)):
        return dtype.type(value)  # the common case: a total that fits, no overflow to silence
    with np.errstate(over="ignore"):  # a loss beyond float32's range (tiny T) is inf, as in the kernel
        out = np.asarray(value).astype(dtype, copy=False)
    return out if out.ndim else out[()]


def kernel_probability_labels(
    lab: np.ndarray, kern: Any, upper: float | None, full_check: Callable[[], Any] | None = None
) -> tuple[np.ndarray | None, bool]:
    """float32 or float64 probability labels, checked finite and in [0,
    upper] by one compiled pass and handed to the kernels as they are (they
    read them as float64); None for other dtypes or without kernels
    (``kern``, the logits' :func:`kernels.cpu`):
    :func:`check_probability_labels` then converts them to float64.

    The second value says whether every label is known to be <= 1. Without
    an ``upper`` bound the compiled pass still checks against 1, at no cost:
    that bounds each row's target sum by K for :func:`_kernel_gradient_fits`;
    labels above 1 (allowed) fail it and go through the NumPy check instead.
    ``full_check`` replaces that check where a front end words its own errors.
    """
    if kern is None or lab.dtype not in kernels.KERNEL_DTYPES:
        return None, False
    bound = 1.0 if upper is None else upper
    if kern.bounded_check(np.ascontiguousarray(lab).reshape(-1), bound) >= 0:
        if full_check is None:
            check_probability_labels(lab, upper=upper)  # raises, naming the first bad label
        else:
            full_check()
        if upper is not None:
            raise AssertionError("bounded_check and check_probability_labels disagree")  # pragma: no cover
        return lab, False  # valid, with some label above 1
    return lab, bound <= 1.0


_INT_LABELS = (np.dtype(np.int64), np.dtype(np.int32))


def compiled_index_labels(
    lab: np.ndarray, kern: Any, n_classes: int, weight: np.ndarray | None, ignore_index: int | None
) -> Labels | int | None:
    """int32/int64 class indices checked and weighted in one compiled pass.

    Returns the :class:`Labels` (index -1 for an ignored row, the row's class
    weight), or the flat position of the first label outside ``[0, K)`` (the
    front end raises, in its own words), or None where the kernels are off or
    the dtype is another (the caller's NumPy path).
    """
    if kern is None or lab.dtype not in _INT_LABELS or lab.ndim == 0:
        return None
    flat = np.ascontiguousarray(lab).reshape(-1)
    has_ignore = ignore_index is not None
    ignore = ignore_index if has_ignore else 0
    bad, any_ignored = -1, True
    if weight is None and flat.dtype == np.int64:
        bad, any_ignored = kern.class_check(flat, n_classes, ignore, has_ignore)
        if bad < 0 and not any_ignored:  # the labels are the indices, and every row weighs 1
            return Labels(flat.reshape(lab.shape), None, None)
    if bad < 0:
        idx = np.empty(flat.shape, dtype=np.int64)
        row_weight = np.empty(flat.shape)
        w = np.empty(0) if weight is None else weight
        bad = kern.class_rows(flat, n_classes, ignore, has_ignore, w, idx, row_weight)
    if bad >= 0:
        return int(bad)
    return Labels(idx.reshape(lab.shape), None, row_weight.reshape(lab.shape))


def effective_target(lab: Labels, n_classes: int, weight: np.ndarray | None, smoothing: float) -> np.ndarray:
    """The dense effective target ``t`` (:mod:`softxent._losses`), float64, class axis last."""
    w = np.ones(n_classes) if weight is None else weight
    uniform = smoothing / n_classes if n_classes else 0.0
    if lab.probs is not None:
        y = lab.probs.astype(np.float64)
        if smoothing:
            y = (1.0 - smoothing) * y + uniform
        return y if weight is None else y * weight
    assert lab.index is not None
    kept = lab.index >= 0
    safe = np.maximum(lab.index, 0)[..., None]
    t = np.broadcast_to(uniform * w, lab.index.shape + (n_classes,)).copy()
    if n_classes:
        rw = 1.0 if lab.row_weight is None else lab.row_weight[..., None]
        on_label = np.take_along_axis(t, safe, axis=-1) + (1.0 - smoothing) * rw
        np.put_along_axis(t, safe, on_label, axis=-1)
    t[~kept] = 0.0
    return t
