r"""The two computations behind :func:`softxent.softmax_cross_entropy`: the fused kernel and the exact NumPy path.

Both take validated arguments from :func:`softxent._losses._softmax_xent` and
return per-row losses, the gradient of their (scaled) sum and the per-row
log-sum-exp; :mod:`softxent._xent_options` adds the z-loss and soft-capping
around either of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _contract, kernels
from ._softmax import normalise
from ._validation import format_index
from ._xent_common import Labels as _Labels


def _all_masked_error(row: int, batch: tuple[int, ...], ignore_index: int | None) -> _contract.MaskedRowError:
    skip = (
        f"give it ignore_index={ignore_index if ignore_index is not None else -100} or a zero sample_weight to skip it"
    )
    return _contract.MaskedRowError(_contract.masked_row_message(f"logits row {format_index(row, batch)}", skip), row)


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
        assert lab.probs is not None
        y = np.ascontiguousarray(lab.probs.reshape(n_rows, n_classes))  # strided labels: one layout to compile
    # Without a gradient the kernel never writes to its grad argument.
    total = run(z2, y, w, smoothing, sw, inv_t, grad_scale, grad2 if need_grad else z2, need_grad, loss, lse)
    # A row that counts but has every class masked: NaN loss, lse -inf. The
    # sum is NaN whenever one is, so most calls skip the elementwise test.
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
