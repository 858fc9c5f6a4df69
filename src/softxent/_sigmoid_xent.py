r"""Sigmoid cross-entropy (independent binary heads) from logits, with its analytic gradient.

Elementwise: every (row, label) pair is its own two-class problem, eq. (2)
with eq. (7). The public names are re-exported by :mod:`softxent._losses`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _contract, kernels
from ._contract import Reduction, keeps_rows
from ._softmax import log_sigmoid_exact, sigmoid_exact
from ._validation import (
    as_array,
    as_float_array,
    check_nonnegative_weights,
    check_probability_labels,
    check_sample_weight,
    compute_dtype,
)
from ._xent_common import scalar_or_array as _scalar_or_array

__all__ = ["sigmoid_cross_entropy", "sigmoid_cross_entropy_grad", "sigmoid_cross_entropy_with_grad"]


def _reduce(
    loss_rows: np.ndarray, grad: np.ndarray | None, denominator: float, reduction: Reduction
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the reduction to per-row losses and the gradient of their sum."""
    if keeps_rows(reduction):
        return loss_rows, grad
    if grad is not None:
        grad = grad * _contract.grad_scale(reduction, denominator)
    return _contract.reduce_total(loss_rows.sum(), denominator, reduction), grad


def _label_weights(value: Any, name: str, n_labels: int) -> np.ndarray | None:
    """A scalar or one value per label (the last axis), non-negative."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must hold real numbers, got the string {value!r}")
    value = as_array(value, name)
    if value.ndim == 0:
        return check_nonnegative_weights(np.asarray(value), name, (), "a scalar")
    return check_nonnegative_weights(value, name, (n_labels,), f"one per label, {n_labels} labels")


def _sigmoid_xent(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any,
    weight: Any,
    sample_weight: Any,
    reduction: Any,
    need_grad: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    arr = as_float_array(logits, "logits", allow_int=False)
    lab = as_array(labels, "labels")
    if lab.shape != arr.shape:
        raise ValueError(
            f"labels must have the shape of logits {arr.shape} (one 0/1 or probability "
            f"target per logit), got shape {lab.shape}"
        )
    kern = kernels.cpu(arr.dtype)
    # float32/float64 labels on the kernel path are checked by the kernel, in
    # the sweep that reads them anyway (see _kernel_sigmoid_xent); any other
    # labels here, converted to float64.
    deferred = kern is not None and lab.dtype in kernels.KERNEL_DTYPES
    y = lab if deferred else check_probability_labels(lab, upper=1.0)
    try:
        reduction = _contract.check_reduction(reduction)
        # Rows and labels: (N, K) or (..., K); a 1-D array is N rows of one label.
        rows = arr.shape[:-1] if arr.ndim >= 2 else arr.shape
        n_labels = arr.shape[-1] if arr.ndim >= 2 else 1
        pos_weight = _label_weights(pos_weight, "pos_weight", n_labels)
        weight = _label_weights(weight, "weight", n_labels)
        if arr.ndim < 2:  # (1,)-shaped label weights broadcast as scalars
            pos_weight = None if pos_weight is None else pos_weight.reshape(())
            weight = None if weight is None else weight.reshape(())
        sample_weight = check_sample_weight(sample_weight, rows)
    except (TypeError, ValueError):
        if deferred:  # the order of the errors stays: a bad label is reported first
            check_probability_labels(lab, upper=1.0)
        raise

    n_rows_weight = float(math.prod(rows)) if sample_weight is None else float(sample_weight.sum())
    denominator = n_rows_weight * n_labels
    if kern is not None:
        return _kernel_sigmoid_xent(lab, arr, y, pos_weight, weight, sample_weight, reduction, denominator, need_grad)
    z = arr.astype(compute_dtype(arr.dtype))
    coef_pos = y if pos_weight is None else pos_weight * y  # multiplies -log sigma(z)
    coef_neg = 1.0 - y  # multiplies -log(1 - sigma(z)) = -log sigma(-z)
    scale = np.ones(()) if weight is None else weight
    if sample_weight is not None:
        scale = scale * (sample_weight[..., None] if arr.ndim >= 2 else sample_weight)

    with np.errstate(invalid="ignore"):
        # log(1 - sigma(z)) as log_sigmoid(-z), never log(1 - sigma(z)); 0 * inf = 0.
        loss = -(
            np.where(coef_pos > 0, coef_pos * log_sigmoid_exact(z), 0.0)
            + np.where(coef_neg > 0, coef_neg * log_sigmoid_exact(-z), 0.0)
        )
        loss = loss * scale
    grad = None
    if need_grad:
        # d/dz = (1 - y) sigma(z) - pos_weight * y * sigma(-z): with pos_weight = 1 this is
        # sigma(z) - y, written so that neither term cancels when sigma(z) -> 1.
        grad = (coef_neg * sigmoid_exact(z) - coef_pos * sigmoid_exact(-z)) * scale
    loss, grad = _reduce(loss, grad, denominator, reduction)
    return (
        _scalar_or_array(loss, arr.dtype),
        None if grad is None else grad.astype(arr.dtype, copy=False),
    )


def _kernel_sigmoid_xent(
    lab: np.ndarray, arr: np.ndarray, y: np.ndarray, pos_weight: np.ndarray | None,
    weight: np.ndarray | None, sample_weight: np.ndarray | None, reduction: Reduction,
    denominator: float, need_grad: bool,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """The fused sigmoid kernel on the (rows, labels) view of ``arr``; ``y`` (``lab`` or its
    float64 copy) is checked in the kernel's sweep, and a bad label raises as the NumPy check words it."""
    n_labels = arr.shape[-1] if arr.ndim >= 2 else 1
    n_rows = arr.size // n_labels if n_labels else math.prod(arr.shape[:-1])
    z2 = np.ascontiguousarray(arr).reshape(n_rows, n_labels)
    y2 = np.ascontiguousarray(y).reshape(n_rows, n_labels)
    grad2 = np.empty(z2.shape, dtype=arr.dtype) if need_grad else None
    loss_elem = np.empty(z2.shape, dtype=arr.dtype) if _contract.keeps_rows(reduction) else None
    total, bad = _run_total(
        z2, y2, _weight_arg(pos_weight, n_labels), _weight_arg(weight, n_labels),
        None if sample_weight is None else sample_weight.reshape(-1).astype(np.float64, copy=False),
        _contract.grad_scale(reduction, denominator), grad2, loss_elem,
    )  # fmt: skip
    if bad:
        check_probability_labels(lab, upper=1.0)  # raises, naming the first bad label
        raise AssertionError("the kernel's label check and check_probability_labels disagree")  # pragma: no cover
    grad = None if grad2 is None else grad2.reshape(arr.shape)
    loss = _contract.reduce_rows(
        None if loss_elem is None else loss_elem.reshape(arr.shape), total, denominator, reduction
    )  # the elements are of the logits' dtype already
    return (loss if loss_elem is not None else _loss_scalar(loss, arr.dtype)), grad


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _loss_scalar(value: float, dtype: np.dtype) -> np.ndarray:
    """The loss as a scalar of ``dtype``: :func:`_scalar_or_array`'s result without its
    ``errstate`` and array round trip (3.5 of a 1500 x 14 call's 45 us), which only values
    beyond float32's range (or NaN) need."""
    if dtype == np.float64 or abs(value) <= _FLOAT32_MAX:
        return dtype.type(value)
    return _scalar_or_array(value, dtype)


_NO_WEIGHT = np.empty(0)
_NO_ELEM = {np.dtype(np.float32): np.empty((0, 0), np.float32), np.dtype(np.float64): np.empty((0, 0))}
_total_kernels: Any = None


def _weight_arg(value: np.ndarray | None, n_labels: int) -> np.ndarray:
    """A per-label weight for the kernel: (K,) float64, or size 0 where absent or all ones
    (the kernel's unweighted pass, which then gives the same bits as no weight at all)."""
    if value is None or (value.ndim == 0 and value == 1.0):
        return _NO_WEIGHT
    out = np.broadcast_to(value, (n_labels,)).astype(np.float64)
    return _NO_WEIGHT if (out == 1.0).all() else out


def _run_total(
    z: np.ndarray, y: np.ndarray, pos_w: np.ndarray, w: np.ndarray, sw: np.ndarray | None,
    grad_scale: float, grad: np.ndarray | None, loss_elem: np.ndarray | None,
) -> tuple[float, bool]:  # fmt: skip
    """:func:`softxent.kernels._sigmoid.sigmoid_xent_total` (one block of rows) or its parallel
    driver (more than one): which one depends on the shape only."""
    global _total_kernels
    if _total_kernels is None:  # numba is imported by the first call that needs it
        from .kernels import _sigmoid

        _total_kernels = _sigmoid
    ks = _total_kernels
    args = (
        z, y, pos_w, w, _NO_WEIGHT if sw is None else sw, grad_scale, z if grad is None else grad, grad is not None,
        _NO_ELEM[z.dtype] if loss_elem is None else loss_elem,
    )  # fmt: skip
    step = ks.total_block_rows(z.shape[0], z.shape[1])
    if z.shape[0] <= step:  # one block: no thread pool
        return ks.sigmoid_xent_total(*args)
    return ks.sigmoid_xent_total_blocks(*args, step)


def sigmoid_xent_total(
    z: np.ndarray,
    y: np.ndarray,
    *,
    pos_weight: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    grad_scale: float = 1.0,
    grad_out: np.ndarray | None = None,
    loss_out: np.ndarray | None = None,
) -> float:
    """The fused sigmoid loss's total and gradient, for callers that validated their arrays.

    ``z``: (N, K) float32 or float64 (the kernels must be on:
    :func:`softxent.kernels.cpu` of its dtype is not None); ``y``: (N, K)
    float32 or float64 labels in [0, 1] (both copied where not C-contiguous; checked in the
    kernel's sweep: ``ValueError`` otherwise); ``pos_weight``, ``weight``:
    (K,) or None; ``sample_weight``: (N,) or None. Returns the float64
    sum of the (weighted) losses; writes the gradient of that sum times
    ``grad_scale`` into ``grad_out`` (None: no gradient) and each element's
    loss into ``loss_out`` when given, both C-contiguous (N, K) of ``z``'s
    dtype (``ValueError`` otherwise). The same sweep as :func:`sigmoid_cross_entropy_with_grad`,
    without its validation, allocations and reductions (the estimators'
    objective calls it with its own gradient buffers).
    """
    z, y = np.ascontiguousarray(z), np.ascontiguousarray(y)
    for name, out in (("grad_out", grad_out), ("loss_out", loss_out)):
        if out is not None and (out.shape != z.shape or out.dtype != z.dtype or not out.flags.c_contiguous):
            raise ValueError(
                f"{name} must be a C-contiguous {z.dtype} array of shape {z.shape}, got {out.dtype} {out.shape}"
            )
    k = z.shape[1]
    total, bad = _run_total(
        z, y, _weight_arg(pos_weight, k), _weight_arg(weight, k),
        None if sample_weight is None else np.ascontiguousarray(sample_weight, dtype=np.float64),
        grad_scale, grad_out, loss_out,
    )  # fmt: skip
    if bad:
        check_probability_labels(y, upper=1.0)
        raise AssertionError("the kernel's label check and check_probability_labels disagree")  # pragma: no cover
    return float(total)


_SIGMOID_PARAMS = r"""
    Parameters
    ----------
    logits : array_like of float, shape (N, K) or (..., K)
        One logit per (row, label); a 1-D array is N rows of a single label.
    labels : array_like, same shape as ``logits``
        Targets in [0, 1]: 0/1 indicators (booleans are fine) or soft labels.
    pos_weight : float or array_like of shape (K,), optional
        Non-negative weight of the positive term, per label (PyTorch's
        ``pos_weight``): > 1 raises recall on rare labels.
    weight : float or array_like of shape (K,), optional
        Non-negative weight per label.
    sample_weight : array_like, optional
        Non-negative weight per row, shape ``logits.shape[:-1]`` (``(N,)`` for
        1-D logits).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"``: one loss per element. ``"mean"``: the sum divided by
        K times the total sample weight (the element count without sample
        weights, as PyTorch does); 0 for an empty batch.
"""


def sigmoid_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    weight: Any = None,
    sample_weight: Any = None,
    reduction: Reduction = "mean",
) -> np.ndarray:
    r"""Binary cross-entropy of independent sigmoid heads, from logits: eq. (2) with eq. (7).

    For labels that are *not* mutually exclusive, each label gets its own
    sigmoid :math:`\sigma(z)` and its own two-class cross-entropy:

    .. math::

        \ell_{ij} = -w_j \left[ p_j\, y_{ij} \log \sigma(z_{ij})
                    + (1 - y_{ij}) \log \sigma(-z_{ij}) \right]

    with :math:`p` the ``pos_weight`` and :math:`\log(1 - \sigma(z)) =
    \log \sigma(-z) = -\operatorname{softplus}(z)`, so that no ``log`` of a
    rounded probability is ever taken. Equals
    ``torch.nn.functional.binary_cross_entropy_with_logits`` for the
    arguments they share.
    {params}
    Returns
    -------
    loss : scalar, or ndarray of the logits' shape for ``reduction="none"``

    Examples
    --------
    >>> import softxent as sx
    >>> print(round(float(sx.sigmoid_cross_entropy([0.0, 2.0], [1, 1])), 6))
    0.410038
    """
    loss, _ = _sigmoid_xent(
        logits, labels, pos_weight=pos_weight, weight=weight,
        sample_weight=sample_weight, reduction=reduction, need_grad=False,
    )  # fmt: skip
    return loss


def sigmoid_cross_entropy_grad(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    weight: Any = None,
    sample_weight: Any = None,
    reduction: Reduction = "mean",
) -> np.ndarray:
    r"""Gradient of :func:`sigmoid_cross_entropy` w.r.t. the logits.

    .. math::

        \frac{\partial \ell_{ij}}{\partial z_{ij}}
            = w_j \left[(1 - y_{ij})\, \sigma(z_{ij}) - p_j\, y_{ij}\, \sigma(-z_{ij})\right]

    which is :math:`\sigma(z) - y` without weights: the sigmoid counterpart of
    eq. (16). Written as two products rather than a difference, so it stays
    exact when :math:`\sigma(z) \to 1`. Scaled like the loss by the reduction.
    {params}
    Returns
    -------
    ndarray, same shape and dtype as ``logits``

    Examples
    --------
    >>> import softxent as sx
    >>> sx.sigmoid_cross_entropy_grad([0.0, 0.0], [1, 0], reduction="sum")
    array([-0.5,  0.5])
    """
    _, grad = _sigmoid_xent(
        logits, labels, pos_weight=pos_weight, weight=weight,
        sample_weight=sample_weight, reduction=reduction, need_grad=True,
    )  # fmt: skip
    assert grad is not None
    return grad


def sigmoid_cross_entropy_with_grad(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    weight: Any = None,
    sample_weight: Any = None,
    reduction: Reduction = "mean",
) -> tuple[np.ndarray, np.ndarray]:
    r"""Loss and gradient of :func:`sigmoid_cross_entropy` in one call: eq. (2) with eq. (7).

    .. math::

        \ell = -w \left[p\, y \log \sigma(z) + (1 - y) \log \sigma(-z)\right],
        \qquad \frac{\partial \ell}{\partial z}
            = w \left[(1 - y)\, \sigma(z) - p\, y\, \sigma(-z)\right]

    Returns ``(sigmoid_cross_entropy(...), sigmoid_cross_entropy_grad(...))``,
    validating the arguments once.
    {params}
    Returns
    -------
    loss : scalar or ndarray
    grad : ndarray, same shape and dtype as ``logits``

    Examples
    --------
    >>> import softxent as sx
    >>> loss, grad = sx.sigmoid_cross_entropy_with_grad([0.0], [1])
    >>> print(round(float(loss), 6), grad)
    0.693147 [-0.5]
    """
    loss, grad = _sigmoid_xent(
        logits, labels, pos_weight=pos_weight, weight=weight,
        sample_weight=sample_weight, reduction=reduction, need_grad=True,
    )  # fmt: skip
    assert grad is not None
    return loss, grad


for _f in (sigmoid_cross_entropy, sigmoid_cross_entropy_grad, sigmoid_cross_entropy_with_grad):
    _f.__doc__ = (_f.__doc__ or "").replace("{params}", _SIGMOID_PARAMS)
del _f
