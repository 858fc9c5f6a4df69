r"""Softmax and sigmoid cross-entropy from logits, with their analytic gradients.

Design (per-row math -> reduction -> public wrappers)
-----------------------------------------------------
Every option of the softmax loss folds into one *effective target* per row,
a non-negative vector :math:`t` over the K classes:

* integer label :math:`y`, class weights :math:`w`, smoothing :math:`\varepsilon`:
  :math:`t = (1-\varepsilon)\, w_y\, e_y + \tfrac{\varepsilon}{K} w`
  (PyTorch's definition), :math:`t = 0` for a row labelled ``ignore_index``;
* probability labels :math:`Y`: :math:`t = w \odot ((1-\varepsilon) Y + \tfrac{\varepsilon}{K})`.

With :math:`a = \operatorname{softmax}(z / T)` the row loss is eq. (7)

.. math::

    \ell = -\sum_c t_c \log a_c = \sum_c t_c (\log s - d_c),
    \qquad d = (z - \max z)/T,\; s = \sum_c e^{d_c}

and its gradient is eq. (15), :math:`\partial \ell / \partial z = (a \sum_c t_c - t)/T`,
which is :math:`a - y` (eq. 16) for a one-hot label, weight 1, no smoothing and
:math:`T = 1`. So :func:`_softmax_xent` is the whole loss; the three public
functions only choose what to return. A sample weight multiplies the row;
``reduction="mean"`` divides by the summed weights of the rows that count.

Precision: the loss uses :math:`\log s` from ``log1p`` (see
:func:`softxent._softmax.normalise`), and the gradient of the top class is
:math:`\sum t \cdot \operatorname{expm1}(-\log s) + \sum_{c \ne m} t_c`, never
:math:`a_m - 1` after rounding :math:`a_m` to 1. So a confident, correct row
keeps a tiny but exact loss and gradient (for float32 output too).

The sigmoid loss (independent binary heads) is elementwise; see
:func:`sigmoid_cross_entropy`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import _contract, kernels
from ._contract import Reduction
from ._softmax import kernel_inv_temperature, log_sigmoid_exact, normalise, sigmoid_exact
from ._validation import (
    as_array,
    as_float_array,
    check_axis,
    check_bool,
    check_class_labels,
    check_class_weight,
    check_nonnegative_weights,
    check_probability_labels,
    check_sample_weight,
    compute_dtype,
    format_index,
)

__all__ = [
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_grad",
    "sigmoid_cross_entropy_with_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_with_grad",
]


def _scalar_or_array(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore"):  # a loss beyond float32's range (tiny T) is inf, as in the kernel
        out = np.asarray(value).astype(dtype, copy=False)
    return out if out.ndim else out[()]


def _reduce(
    loss_rows: np.ndarray, grad: np.ndarray | None, denominator: float, reduction: Reduction
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the reduction to per-row losses and the gradient of their sum."""
    if reduction == "none":
        return loss_rows, grad
    if grad is not None:
        grad = grad * _contract.grad_scale(reduction, denominator)
    return _contract.reduce_total(loss_rows.sum(), denominator, reduction), grad


# --------------------------------------------------------------------------- softmax


class _Labels(NamedTuple):
    """Validated labels, class axis last. Exactly one of ``index``/``probs`` is set."""

    index: np.ndarray | None  # int64, batch shape; -1 marks an ignored row
    probs: np.ndarray | None  # batch + (K,), float32/float64 as given (or float64)
    row_weight: np.ndarray | None  # each row's weight in the mean, w[y] (0 if ignored); None: all 1
    at_most_one: bool = True  # every label is <= 1 (known for class indices and kernel-checked probabilities)


def _kernel_probability_labels(lab: np.ndarray, kern: Any, upper: float | None) -> tuple[np.ndarray | None, bool]:
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


def _parse_labels(
    labels: Any,
    shape: tuple[int, ...],
    kern: Any,
    axis: int,
    weight: np.ndarray | None,
    ignore_index: int | None,
) -> _Labels:
    """Class indices if ``labels`` has the logits' shape without ``axis``,
    probabilities if it has the logits' shape (``kern``: the logits'
    :func:`kernels.cpu`, None for the NumPy checks)."""
    n_classes = shape[axis]
    batch = shape[:axis] + shape[axis + 1 :]
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be class indices or probabilities, got the string {labels!r}")
    lab = as_array(labels, "labels")
    if lab.shape == shape:  # probability labels (eq. 15 holds even if rows do not sum to 1)
        probs, at_most_one = _kernel_probability_labels(lab, kern, None)
        if probs is None:
            probs = check_probability_labels(lab)
        return _Labels(None, np.moveaxis(probs, axis, -1), None, at_most_one)
    if lab.shape == batch:
        fast = _kernel_class_labels(lab, kern, n_classes, weight, ignore_index)
        if fast is not None:
            return fast
        idx, kept = check_class_labels(lab, n_classes, ignore_index, original=labels)
        idx = np.where(kept, idx, -1)
        w = np.ones(n_classes) if weight is None else weight
        row_weight = np.where(kept, w[np.maximum(idx, 0)] if n_classes else 0.0, 0.0)
        return _Labels(idx, None, row_weight)
    raise ValueError(
        f"labels must be class indices of shape {batch} (the logits' shape {shape} without "
        f"axis {axis}) or probabilities of shape {shape}, got shape {lab.shape}"
    )


_INT_LABELS = (np.dtype(np.int64), np.dtype(np.int32))


def _kernel_class_labels(
    lab: np.ndarray, kern: Any, n_classes: int, weight: np.ndarray | None, ignore_index: int | None
) -> _Labels | None:
    """:func:`_parse_labels` for int32/int64 class labels in one compiled pass
    (None where the kernels are off or the dtype is another: the NumPy path)."""
    if kern is None or lab.dtype not in _INT_LABELS or lab.ndim == 0:
        return None
    flat = np.ascontiguousarray(lab).reshape(-1)
    has_ignore = ignore_index is not None
    ignore = ignore_index if has_ignore else 0
    bad, any_ignored = -1, True
    if weight is None and flat.dtype == np.int64:
        bad, any_ignored = kern.class_check(flat, n_classes, ignore, has_ignore)
        if bad < 0 and not any_ignored:  # the labels are the indices, and every row weighs 1
            return _Labels(flat.reshape(lab.shape), None, None)
    if bad < 0:
        idx = np.empty(flat.shape, dtype=np.int64)
        row_weight = np.empty(flat.shape)
        w = np.empty(0) if weight is None else weight
        bad = kern.class_rows(flat, n_classes, ignore, has_ignore, w, idx, row_weight)
    if bad >= 0:
        check_class_labels(lab, n_classes, ignore_index)  # raises, naming the first bad label
        raise AssertionError("the compiled label pass and check_class_labels disagree")  # pragma: no cover
    return _Labels(idx.reshape(lab.shape), None, row_weight.reshape(lab.shape))


def _effective_target(lab: _Labels, n_classes: int, weight: np.ndarray | None, smoothing: float) -> np.ndarray:
    """The dense effective target ``t`` of the module docstring, float64, class axis last."""
    w = np.ones(n_classes) if weight is None else weight
    uniform = smoothing / n_classes if n_classes else 0.0
    if lab.probs is not None:
        y = lab.probs.astype(np.float64)
        if smoothing:
            y = (1.0 - smoothing) * y + uniform
        return y if weight is None else y * weight
    kept = lab.index >= 0
    safe = np.maximum(lab.index, 0)[..., None]
    t = np.broadcast_to(uniform * w, lab.index.shape + (n_classes,)).copy()
    if n_classes:
        rw = 1.0 if lab.row_weight is None else lab.row_weight[..., None]
        on_label = np.take_along_axis(t, safe, axis=-1) + (1.0 - smoothing) * rw
        np.put_along_axis(t, safe, on_label, axis=-1)
    t[~kept] = 0.0
    return t


def _all_masked_error(row: int, batch: tuple[int, ...], ignore_index: int | None) -> ValueError:
    skip = (
        f"give it ignore_index={ignore_index if ignore_index is not None else -100} or a zero sample_weight to skip it"
    )
    return ValueError(_contract.masked_row_message(f"logits row {format_index(row, batch)}", skip))


def _reference_softmax_xent(
    z: np.ndarray, t: np.ndarray, scale: np.ndarray, temperature: float, grad_scale: float,
    need_grad: bool, ignore_index: int | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:  # fmt: skip
    """The exact NumPy path: float64 ``z`` and ``t``, class axis last.

    Returns per-row losses (times ``scale``), the gradient of their sum times
    ``grad_scale`` (or ``None``), and the per-row log-sum-exp of ``z / T``.
    """
    t_sum = t.sum(axis=-1)
    counts = scale * t_sum > 0  # rows that take part; the others give exactly 0
    n = normalise(z, temperature=temperature)
    m = n.m[..., 0]
    all_masked = counts & (m == -np.inf)
    if all_masked.any():
        raise _all_masked_error(int(np.flatnonzero(all_masked.ravel())[0]), counts.shape, ignore_index)
    undefined_rows = np.isnan(m) | (m == np.inf)
    undefined = counts & undefined_rows  # NaN in, NaN out for the row
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lse = np.where(undefined_rows, np.nan, np.where(np.isfinite(m), m, 0.0) / temperature + n.log_s[..., 0])
        neg_log_a = n.log_s - n.d  # -log softmax(z / T)
        # 0 * inf = 0: a class with no target mass adds nothing, even if masked.
        loss_rows = np.where(t > 0, t * neg_log_a, 0.0).sum(axis=-1)
    with np.errstate(over="ignore"):  # a loss beyond float64's range (tiny T) is inf, as in the kernel
        loss_rows = np.where(undefined, np.nan, np.where(counts, loss_rows, 0.0) * scale)
    if not need_grad:
        return loss_rows, None, lse
    with np.errstate(invalid="ignore", over="ignore"):
        grad = t_sum[..., None] * np.exp(-neg_log_a) - t  # eq. (15): a * sum(y) - y
        # Top class: sum(t) * (a_m - 1) + sum_{c != m} t_c, with a_m - 1 = expm1(-log s)
        # computed without rounding a_m first (true-class cancellation when a_m -> 1).
        if z.shape[-1]:
            t_rest = t.copy()
            np.put_along_axis(t_rest, n.argmax, 0.0, axis=-1)
            top = t_sum[..., None] * np.expm1(-n.log_s) + t_rest.sum(axis=-1, keepdims=True)
            np.put_along_axis(grad, n.argmax, top, axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in rows that do not count, replaced below
        factor = scale * (grad_scale / temperature)
        if np.isfinite(factor).all():
            grad = grad * factor[..., None]
        else:
            # 1/T or the row's factor overflows (T below 5.6e-309, huge sample
            # weights): multiplying by inf would turn the gradient's exact zeros
            # into NaN; dividing keeps them, and still overflows where it must.
            grad = grad * (scale * grad_scale)[..., None] / temperature
    grad = np.where(counts[..., None], grad, 0.0)
    grad = np.where(undefined[..., None], np.nan, grad)
    return loss_rows, grad, lse


def _kernel_softmax_xent(
    kern: Any, arr: np.ndarray, ax: int, lab: _Labels, weight: np.ndarray | None,
    smoothing: float, sample_weight: np.ndarray | None, inv_t: float, grad_scale: float,
    grad2: np.ndarray | None, ignore_index: int | None, keep_rows: bool, keep_lse: bool,
) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """The fused kernel on a 2-D C-contiguous view (or copy) of ``arr``.

    ``grad2`` is the (N, V) C-contiguous gradient buffer (``None``: loss only).
    Returns per-row losses and log-sum-exps (float64, batch shape) and the
    losses' sum. Without ``keep_rows`` / ``keep_lse`` those arrays are
    :func:`kernels.scratch` buffers, valid until the next call only.
    """
    n_classes = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    z2 = kernels.as_rows(arr, ax)
    n_rows = z2.shape[0]
    loss, lse = kernels.scratch(n_rows, 2)
    if keep_rows:
        loss = np.empty(n_rows)
    if keep_lse:
        lse = np.empty(n_rows)
    empty = np.empty(0)
    w = empty if weight is None else weight
    sw = empty if sample_weight is None else sample_weight.reshape(-1)
    need_grad = grad2 is not None
    if lab.index is not None:
        run = kern.softmax_xent_index
        y = np.ascontiguousarray(lab.index.reshape(-1))
    else:
        run = kern.softmax_xent_prob
        y = np.ascontiguousarray(lab.probs.reshape(n_rows, n_classes))  # strided labels: one layout to compile
    # Without a gradient the kernel never writes to its grad argument.
    run(z2, y, w, smoothing, sw, inv_t, grad_scale, grad2 if need_grad else z2, need_grad, loss, lse)
    # A row that counts but has every class masked: NaN loss, lse -inf. The
    # sum is NaN whenever one is, so most calls skip the elementwise test.
    total = float(loss.sum())
    if math.isnan(total) and (bad := np.isnan(loss) & (lse == -np.inf)).any():
        raise _all_masked_error(int(np.flatnonzero(bad)[0]), batch, ignore_index)
    return loss.reshape(batch), lse.reshape(batch), total


def _kernel_gradient_fits(
    inv_t: float, grad_scale: float, weight: np.ndarray | None, sample_weight: np.ndarray | None,
    lab: _Labels, dtype: np.dtype,
) -> bool:  # fmt: skip
    """Whether the kernels' per-row gradient factors stay finite in ``dtype``.

    The kernels scale a row's gradient by ``sw * (1/T) * grad_scale`` times
    at most ``sum(t)`` (in the logits' dtype for float32); if that overflows,
    the gradient's exact zeros become ``0 * inf = NaN``. The exact path
    divides by ``T`` instead and keeps them (tiny temperatures, huge sample
    weights). ``sum(t) <= max(1, max w)`` times the row's label sum: 1 for
    class indices, at most K for probabilities <= 1, else computed here.
    """
    limit = float(np.finfo(dtype).max) / 4  # room for the top class's t_sum (a - 1) + t_sum - k1
    # The kernels form (sw * (1/T)) * grad_scale: the product before grad_scale must fit too.
    factor = inv_t * max(grad_scale, 1.0)
    if sample_weight is not None and sample_weight.size:
        factor *= float(sample_weight.max())
    if weight is not None and weight.size:
        factor *= max(1.0, float(weight.max()))
    if lab.probs is None:
        return factor <= limit
    n_classes = lab.probs.shape[-1]
    if lab.at_most_one and factor * n_classes <= limit:
        return True
    if lab.probs.size == 0:
        return factor <= limit
    row_sum = float(lab.probs.sum(axis=-1, dtype=np.float64).max())
    return factor * max(1.0, row_sum) <= limit


def _grad_buffer(arr: np.ndarray, logits: Any, out: Any, inplace: bool) -> np.ndarray | None:
    """Check ``out`` / ``inplace``; return the array the gradient must end up in (or None)."""
    if inplace:
        if out is not None:
            raise ValueError("out and inplace=True are exclusive: inplace writes the gradient over logits")
        if not isinstance(logits, np.ndarray) or logits is not arr:
            raise TypeError(
                f"inplace=True needs logits to be a NumPy array of float32 or float64, got {type(logits).__name__}"
            )
        if not arr.flags.writeable:
            raise ValueError("inplace=True needs writable logits, got a read-only array")
        return arr
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != arr.shape or out.dtype != arr.dtype:
        raise ValueError(
            f"out must have the logits' shape {arr.shape} and dtype {arr.dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _softmax_xent(
    logits: Any,
    labels: Any,
    *,
    axis: int,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    sample_weight: Any,
    temperature: Any,
    reduction: Any,
    need_grad: bool,
    out: Any = None,
    inplace: bool = False,
    need_lse: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate, pick the backend, compute loss, gradient and (``need_lse``)
    log-sum-exp in one pass."""
    arr = as_float_array(logits, "logits", allow_int=False)
    if arr.ndim == 0:
        raise ValueError("logits must have a class axis, got a 0-d array")
    ax = check_axis(axis, arr.ndim)
    n_classes = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    opts = _contract.XentOptions.build(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing, temperature=temperature
    )
    reduction, smoothing, temperature = opts.reduction, opts.label_smoothing, opts.temperature
    ignore_index = opts.ignore_index
    inplace = check_bool(inplace, "inplace")
    weight = check_class_weight(weight, n_classes)
    sample_weight = check_sample_weight(sample_weight, batch)
    target = _grad_buffer(arr, logits, out, inplace) if need_grad else None
    kern = kernels.cpu(arr.dtype)
    lab = _parse_labels(labels, arr.shape, kern, ax, weight, ignore_index)

    if lab.row_weight is None:  # every row weighs 1: no sum of N ones
        denominator = float(math.prod(batch)) if sample_weight is None else float(sample_weight.sum())
    else:
        rows_in_mean = lab.row_weight if sample_weight is None else sample_weight * lab.row_weight
        denominator = float(rows_in_mean.sum())
    grad_scale = _contract.grad_scale(reduction, denominator)

    inv_t = None if kern is None else kernel_inv_temperature(temperature, arr.dtype)
    if (
        inv_t is not None
        and need_grad
        and not _kernel_gradient_fits(inv_t, grad_scale, weight, sample_weight, lab, arr.dtype)
    ):
        inv_t = None
    grad = None
    if inv_t is not None:  # the kernels, at a temperature and scale they handle
        grad2 = None
        if need_grad:
            dest = target if target is not None else np.empty(arr.shape, dtype=arr.dtype)
            grad2 = kernels.as_rows(dest, ax)
            # Write straight into the destination when its (N, V) view is not a copy.
            if inplace and not np.shares_memory(grad2, dest):
                grad2 = kernels.as_rows(arr, ax)  # a copy of the logits, overwritten, then put back
        loss_rows, lse, total = _kernel_softmax_xent(
            kern, arr, ax, lab, weight, smoothing, sample_weight, inv_t, grad_scale,
            grad2, ignore_index, keep_rows=reduction == "none", keep_lse=need_lse,
        )  # fmt: skip
        if need_grad:
            grad = kernels.from_rows(grad2, arr.shape, ax)
    else:
        t = _effective_target(lab, n_classes, weight, smoothing)
        scale = np.ones(batch) if sample_weight is None else sample_weight
        z = np.moveaxis(arr.astype(compute_dtype(arr.dtype)), ax, -1)
        loss_rows, grad, lse = _reference_softmax_xent(z, t, scale, temperature, grad_scale, need_grad, ignore_index)
        total = loss_rows.sum()
        if grad is not None:
            with np.errstate(over="ignore"):  # beyond float32's range (tiny T): +-inf, as in the kernel
                grad = np.moveaxis(grad, -1, ax).astype(arr.dtype, copy=False)
    if grad is not None and not grad_scale:
        grad = np.zeros_like(grad)  # a mean over no counted row: 0, not 0/0 (nor a NaN row's NaN)
    if grad is not None and target is not None:
        # The caller gets its own buffer back, not a view of it; a gradient
        # computed elsewhere (a copy for a strided layout) is put back first.
        if not np.shares_memory(grad, target):
            np.copyto(target, grad)
        grad = target
    loss = loss_rows if reduction == "none" else _contract.reduce_total(total, denominator, reduction)
    # lse stays float64: log-sum-exp of z / T can exceed float32's range.
    return _scalar_or_array(loss, arr.dtype), grad, _scalar_or_array(lse, np.dtype(np.float64)) if need_lse else None


_SOFTMAX_PARAMS = r"""
    Parameters
    ----------
    logits : array_like of float, shape (..., K, ...)
        Unnormalised scores :math:`z`; ``-inf`` masks a class. float16/32/64
        keep their dtype (the math runs in float64). Integer logits are refused.
    labels : array_like
        Either class indices, shape ``logits.shape`` without ``axis``, with
        values in ``[0, K)`` or ``ignore_index`` (integers, or floats with
        integral values); or probabilities, the same shape as ``logits``,
        non-negative (rows need not sum to 1: eq. 15 covers that).
    axis : int, default -1
        The class axis of ``logits``.
    weight : array_like, shape (K,), optional
        Non-negative per-class weights (PyTorch's ``weight``).
    ignore_index : int or None, default -100
        Class-index labels equal to it are skipped: loss 0, gradient 0, and
        left out of the mean. Not used with probability labels.
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution:
        :math:`(1-\varepsilon) y + \varepsilon / K`.
    sample_weight : array_like, optional
        Non-negative per-row weights, shape ``logits.shape`` without ``axis``.
    temperature : float > 0, default 1
        Loss of :math:`\operatorname{softmax}(z / T)`; the gradient is w.r.t. :math:`z`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"``: one loss per row. ``"sum"``: their sum. ``"mean"``: the
        sum divided by the total weight of the rows that count,
        :math:`\sum_i s_i w_{y_i}` over non-ignored rows for class indices
        (as PyTorch does), :math:`\sum_i s_i` for probability labels. A batch
        whose total weight is 0 (empty, or every row ignored) gives 0, not NaN.
"""

_GRAD_BUFFER_PARAMS = r"""    out : ndarray, optional
        Gradient buffer of the logits' shape and dtype; the gradient is written
        into it and it is returned. Reuse it across calls to avoid allocating.
    inplace : bool, default False
        Write the gradient over ``logits`` (a float32/float64 ndarray) and
        return it: no extra memory of the logits' size. **This destroys the
        logits.** Exclusive with ``out``.
"""

_SOFTMAX_NOTES = r"""
    Backends: float32 and float64 logits run on the fused CPU kernel (numba,
    one sweep per row, parallel over rows); float16, longdouble, or the
    environment variable ``SOFTXENT_REFERENCE=1`` take the exact NumPy path
    (float64 arithmetic). The kernel agrees with the exact path to 1e-6
    relative on the loss and 1e-6 absolute on the gradient for float32 input
    (in practice ~1e-8), and to 1e-13 for float64. Confident rows keep their
    tiny true-class gradients on both paths.

    Edge cases: a row with NaN or ``+inf`` logits gives NaN for that row only
    (the mean is then NaN too); a row whose logits are all ``-inf`` raises
    ``ValueError`` unless it is ignored; a row that is ignored or weighted 0
    gives loss 0 and gradient 0 whatever its logits hold; a label on a
    ``-inf`` (masked) class gives an infinite loss.
"""


def softmax_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> np.ndarray:
    r"""Cross-entropy of the softmax of ``logits`` against ``labels``: eq. (7) with eq. (8).

    .. math::

        \ell_i = -\sum_c y_{ic} \log \operatorname{softmax}(z_i / T)_c
               = \sum_c y_{ic} \left(\operatorname{logsumexp}(z_i / T) - z_{ic} / T\right)

    computed from the logits as log-sum-exp minus the label's logit, never as
    ``log(softmax)``. With integer labels it equals
    ``torch.nn.functional.cross_entropy`` for the arguments they share.
    {params}
    Returns
    -------
    loss : scalar, or ndarray of shape ``logits.shape`` without ``axis`` for ``reduction="none"``
        In the dtype of ``logits``.

    Notes
    -----{notes}
    Examples
    --------
    >>> import softxent as sx
    >>> logits = [[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]
    >>> print(round(float(sx.softmax_cross_entropy(logits, [0, 1])), 6))
    0.31854
    >>> sx.softmax_cross_entropy(logits, [0, -100], reduction="none")
    array([0.41703002, 0.        ])
    """
    loss, _, _ = _softmax_xent(
        logits, labels, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, need_grad=False,
    )  # fmt: skip
    return loss


def softmax_cross_entropy_grad(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    out: np.ndarray | None = None,
    inplace: bool = False,
) -> np.ndarray:
    r"""Gradient of :func:`softmax_cross_entropy` w.r.t. the logits: eq. (15) and (16).

    .. math::

        \frac{\partial \ell}{\partial z_i} = a_i \sum_j y_j - y_i \quad (15),
        \qquad a = \operatorname{softmax}(z)

    which is :math:`a_i - y_i` (eq. 16) when the labels sum to one, as a
    one-hot label does. Weights, smoothing and sample weights enter through
    the effective target :math:`y`; a temperature divides the result by
    :math:`T`; ``reduction="mean"`` divides it by the same total weight as the
    loss. For ``reduction="none"`` it is each row's own gradient (equal to
    the gradient of the sum).
    {params}{buffers}
    Returns
    -------
    ndarray, same shape and dtype as ``logits``

    Notes
    -----{notes}
    The top class's entry is computed as :math:`\sum y \cdot
    \operatorname{expm1}(-\log s) + \sum_{j \ne m} y_j` rather than from a
    rounded :math:`a_m`, so confident rows keep their tiny gradients.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.softmax_cross_entropy_grad([[0.0, 0.0]], [1], reduction="sum")
    array([[ 0.5, -0.5]])
    """
    _, grad, _ = _softmax_xent(
        logits, labels, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, need_grad=True, out=out, inplace=inplace,
    )  # fmt: skip
    return grad


def softmax_cross_entropy_with_grad(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
    out: np.ndarray | None = None,
    inplace: bool = False,
    return_lse: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Loss and gradient of the softmax cross-entropy from one pass over the logits.

    .. math::

        a = \operatorname{softmax}(z), \qquad
        \ell = -\sum_c y_c \log a_c \quad (7), \qquad
        \frac{\partial \ell}{\partial z} = a \sum_c y_c - y \quad (15)

    Returns exactly ``(softmax_cross_entropy(...), softmax_cross_entropy_grad(...))``
    with the same arguments, but normalises the logits once: the softmax
    :math:`a` of eq. (8) serves both the loss and the gradient. This is the
    contract the fused kernels implement.
    {params}{buffers}    return_lse : bool, default False
        Also return the per-row log-sum-exp of ``logits / T`` (float64, shape
        ``logits.shape`` without ``axis``), e.g. for a z-loss or to rebuild the
        softmax later as ``exp(z / T - lse)``.

    Returns
    -------
    loss : scalar or ndarray
        As :func:`softmax_cross_entropy`.
    grad : ndarray, same shape and dtype as ``logits``
        As :func:`softmax_cross_entropy_grad`; ``out`` or ``logits`` when given.
    lse : ndarray of float64
        Only with ``return_lse=True``.

    Notes
    -----{notes}
    Examples
    --------
    >>> import softxent as sx
    >>> loss, grad = sx.softmax_cross_entropy_with_grad([[0.0, 0.0]], [1])
    >>> print(round(float(loss), 6), grad)
    0.693147 [[ 0.5 -0.5]]
    """
    return_lse = check_bool(return_lse, "return_lse")
    loss, grad, lse = _softmax_xent(
        logits, labels, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, need_grad=True, out=out, inplace=inplace,
        need_lse=return_lse,
    )  # fmt: skip
    assert grad is not None
    return (loss, grad, lse) if return_lse else (loss, grad)


for _f in (softmax_cross_entropy, softmax_cross_entropy_grad, softmax_cross_entropy_with_grad):
    _f.__doc__ = (
        _f.__doc__.replace("{params}", _SOFTMAX_PARAMS)
        .replace("{notes}", _SOFTMAX_NOTES)
        .replace("{buffers}", _GRAD_BUFFER_PARAMS)
    )


# --------------------------------------------------------------------------- sigmoid


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
    y, _ = _kernel_probability_labels(lab, kern, 1.0)
    if y is None:
        y = check_probability_labels(lab, upper=1.0)
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

    n_rows_weight = float(np.prod(rows)) if sample_weight is None else float(sample_weight.sum())
    denominator = n_rows_weight * n_labels
    if kern is not None:
        return _kernel_sigmoid_xent(kern, arr, y, pos_weight, weight, sample_weight, reduction, denominator, need_grad)
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
    kern: Any, arr: np.ndarray, y: np.ndarray, pos_weight: np.ndarray | None,
    weight: np.ndarray | None, sample_weight: np.ndarray | None, reduction: str,
    denominator: float, need_grad: bool,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """The fused sigmoid kernel on the (rows, labels) view of ``arr``."""
    n_labels = arr.shape[-1] if arr.ndim >= 2 else 1
    n_rows = int(np.prod(arr.shape[:-1])) if arr.ndim >= 2 else arr.size
    z2 = np.ascontiguousarray(arr).reshape(n_rows, n_labels)
    y2 = np.ascontiguousarray(y).reshape(n_rows, n_labels)
    pos_w = np.broadcast_to(1.0 if pos_weight is None else pos_weight, (n_labels,)).astype(np.float64)
    w = np.broadcast_to(1.0 if weight is None else weight, (n_labels,)).astype(np.float64)
    sw = np.empty(0) if sample_weight is None else sample_weight.reshape(-1).astype(np.float64)
    grad_scale = _contract.grad_scale(reduction, denominator)
    grad2 = np.empty(z2.shape, dtype=arr.dtype) if need_grad else z2  # not written without grad
    loss_elem = np.empty(z2.shape) if reduction == "none" else np.empty((0, 0))
    (row_loss,) = kernels.scratch(n_rows)  # only summed here
    kern.sigmoid_xent(z2, y2, pos_w, w, sw, grad_scale, grad2, need_grad, loss_elem, row_loss)
    if reduction == "none":
        loss = loss_elem.reshape(arr.shape)
    else:
        loss = _contract.reduce_total(row_loss.sum(), denominator, reduction)
    grad = grad2.reshape(arr.shape) if need_grad else None
    return _scalar_or_array(loss, arr.dtype), grad


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
    _f.__doc__ = _f.__doc__.replace("{params}", _SIGMOID_PARAMS)
del _f
