"""Label checks for the wrappers: one compiled pass over the labels instead
of several NumPy passes (:func:`class_rows`, :func:`class_check` for
integer labels, :func:`bounded_check` for probability labels). They return
positions; the callers raise the errors.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._jit import JIT, JIT_SUM

_CHECK_BLOCK = 4096


@nb.njit(**JIT)
def class_rows(labels, n_classes, ignore_index, has_ignore, weight, idx, row_weight):
    """One pass over 1-D integer class labels for the wrappers: ``idx`` = the
    label, or -1 for a row labelled ``ignore_index`` (when ``has_ignore``);
    ``row_weight`` = ``weight[label]`` (1 when ``weight`` has size 0), 0 for
    an ignored row. Returns the position of the first label outside
    ``[0, n_classes)`` (-1 if none); the caller raises the error. Replaces
    about ten NumPy passes over the labels, which cost more than the kernel
    itself on inputs with few classes."""
    has_w = weight.shape[0] > 0
    for i in range(labels.shape[0]):
        y = np.int64(labels[i])
        if has_ignore and y == ignore_index:
            idx[i] = -1
            row_weight[i] = 0.0
        elif y < 0 or y >= n_classes:
            return i
        else:
            idx[i] = y
            row_weight[i] = weight[y] if has_w else 1.0
    return -1


@nb.njit(**JIT)
def class_check(labels, n_classes, ignore_index, has_ignore):
    """:func:`class_rows` without its outputs, for int64 labels and no class
    weights: ``(first bad position or -1, whether any row is ignored)``.
    When none is, the labels are already the kernels' class indices and
    every row weighs 1: the wrappers then use them as they are, without two
    (N,) arrays to allocate and fill. Counts per block, without an exit in
    the loop, so that it vectorises (as :func:`bounded_check`): 65536 labels
    0.1 -> 0.03 ms."""
    n = labels.shape[0]
    ign = ignore_index if has_ignore else np.int64(-1)  # -1 is out of range anyway
    any_ignored = False
    for lo in range(0, n, _CHECK_BLOCK):
        yb = labels[lo : min(n, lo + _CHECK_BLOCK)]
        n_bad = 0
        n_ign = 0
        for i in range(yb.shape[0]):
            y = yb[i]
            skip = has_ignore & (y == ign)
            n_ign += 1 if skip else 0
            n_bad += 1 if ((y < 0) | (y >= n_classes)) & ~skip else 0
        any_ignored |= n_ign > 0
        if n_bad:
            for i in range(yb.shape[0]):
                y = yb[i]
                if not (has_ignore and y == ign) and (y < 0 or y >= n_classes):
                    return lo + i, any_ignored
    return -1, any_ignored


@nb.njit(**JIT_SUM)
def bounded_check(y, upper):
    """The position of the first entry of the flat ``y`` outside [0, upper]
    (NaN included; ``upper`` the dtype's largest float excludes +inf), -1 if
    none: the wrappers' check of probability labels in one pass, without the
    float64 copy and the four NumPy passes of the general check."""
    ub = y.dtype.type(upper)
    n = y.shape[0]
    for lo in range(0, n, _CHECK_BLOCK):
        # A count per block, with no exit in the loop, so that it vectorises;
        # the block that holds a bad entry is then scanned for its position.
        yb = y[lo : min(n, lo + _CHECK_BLOCK)]
        n_bad = 0
        for i in range(yb.shape[0]):
            v = yb[i]
            n_bad += 0 if (v >= 0.0) & (v <= ub) else 1
        if n_bad:
            for i in range(yb.shape[0]):
                v = yb[i]
                if not (v >= 0.0 and v <= ub):
                    return lo + i
    return -1
