"""Helpers shared by the softmax and sigmoid losses: result dtypes and kernel-checked probability labels."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import kernels
from ._validation import check_probability_labels


class Labels(NamedTuple):
    """Validated labels, class axis last. Exactly one of ``index``/``probs`` is set."""

    index: np.ndarray | None  # int64, batch shape; -1 marks an ignored row
    probs: np.ndarray | None  # batch + (K,), float32/float64 as given (or float64)
    row_weight: np.ndarray | None  # each row's weight in the mean, w[y] (0 if ignored); None: all 1
    at_most_one: bool = True  # every label is <= 1 (known for class indices and kernel-checked probabilities)


def scalar_or_array(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # a loss beyond float32's range (tiny T) is inf, as in the kernel
        out = np.asarray(value).astype(dtype, copy=False)
    return out if out.ndim else out[()]


def kernel_probability_labels(lab: np.ndarray, kern: Any, upper: float | None) -> tuple[np.ndarray | None, bool]:
    """float32 or float64 probability labels, checked finite and in [0,
    upper] by one compiled pass and handed to the kernels as they are (they
    read them as float64); None for other dtypes or without kernels
    (``kern``, the logits' :func:`kernels.cpu`):
    :func:`check_probability_labels` then converts them to float64.

    The second value says whether every label is known to be <= 1. Without
    an ``upper`` bound the compiled pass still checks against 1, at no cost:
    that bounds each row's target sum by K for :func:`_kernel_gradient_fits`;
    labels above 1 (allowed) fail it and go through the NumPy check instead.
    """
    if kern is None or lab.dtype not in kernels.KERNEL_DTYPES:
        return None, False
    bound = 1.0 if upper is None else upper
    if kern.bounded_check(np.ascontiguousarray(lab).reshape(-1), bound) >= 0:
        check_probability_labels(lab, upper=upper)  # raises, naming the first bad label
        if upper is not None:
            raise AssertionError("bounded_check and check_probability_labels disagree")  # pragma: no cover
        return lab, False  # valid, with some label above 1
    return lab, bound <= 1.0
