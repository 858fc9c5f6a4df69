r"""The private fused entry point of softmax cross-entropy on the CPU: one call behind every front end.

:func:`softxent.softmax_cross_entropy` and its siblings, the CPU backend of
``softxent.torch`` and the estimators reach the loss through
:func:`softmax_xent_rows`, with arguments already checked:

* ``arr``: the logits as a NumPy array (float32/float64 run in the kernels),
* ``lab``: :class:`softxent._xent_common.Labels` (class indices with -1 for
  an ignored row and each row's class weight, or probabilities),
* ``opts``: the :class:`softxent._contract.XentOptions` of the call,
* class weights, per-row sample weights (and the z-loss's own row weights),
  and where the gradient goes (a new array, ``out``, or over the logits).

It picks the computation (the numba kernels when they can run the call at
its temperature and scale, else the exact float64 NumPy path; the z-loss and
the soft-cap around either, in :mod:`softxent._xent_options`), applies the
reduction of the contract, and returns loss, gradient and per-row
log-sum-exp. Nothing here validates: a front end that gets here has checked
its arguments and speaks to its user in its own words (a fully masked row
raises :class:`softxent._contract.MaskedRowError`, which carries the row).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _contract, kernels
from ._contract import Reduction, XentOptions
from ._softmax import kernel_inv_temperature
from ._softmax_paths import _kernel_gradient_fits, _kernel_softmax_xent, _reference_softmax_xent
from ._validation import compute_dtype
from ._xent_common import Labels, effective_target, scalar_or_array
from ._xent_options import softmax_xent_options

__all__ = ["plain_index_call", "softmax_xent_rows"]

# softmax_xent_rows looks the kernels up unless its caller passes them: the
# look-up reads the environment, which after a pause costs more than the
# kernel on a small input.
_LOOK_UP: Any = object()

_F32, _F64, _I64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)
_NONE = np.empty(0)  # "no class weights", "no sample weights": the kernels read only its length
_REDUCTIONS = ("mean", "sum", "none")


def plain_index_call(
    logits: Any, labels: Any, axis: Any, ignore_index: Any, reduction: Any, need_grad: bool, out: Any = None
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Loss and gradient of the commonest call in as few steps as the kernels allow.

    The call: (N, V) C-contiguous float32/float64 logits, classes last, int64
    class indices (N,) all in ``[0, V)``, ``ignore_index`` None or negative,
    and the caller has checked that every other option is at its default (no
    weights, smoothing, temperature, z-loss, cap, ``inplace``, lse). ``out``,
    when given, must be a writable C-contiguous array of the logits' shape
    and dtype that shares no memory with them: the gradient goes there and
    ``out`` itself is returned, as the general path does.
    Returns ``(loss, grad or None)``, exactly what :func:`softmax_xent_rows`
    returns for it (the same kernel with the same arguments), or None for
    any other call, and for one with a NaN loss (a NaN row, or a fully
    masked row that must raise): the general path then takes it and says
    what it says. Nothing but ``out`` is written before None is returned,
    and the general path writes all of ``out`` again (never the logits:
    ``inplace`` stays on the general path for that reason).

    Why a path of its own: a call after a pause (a training step's other
    work, the benchmark's garbage collection) pays for every line of Python
    it runs, its code and data fetched from memory again. The general
    path's checks and look-ups took about 0.24 ms so (64x3, the public call
    after ``gc.collect()``, median of 280), the call through this one 0.15-0.17.
    """
    if type(logits) is not np.ndarray or type(labels) is not np.ndarray:
        return None
    dt = logits.dtype
    if (dt is not _F32 and dt is not _F64) or labels.dtype is not _I64 or logits.ndim != 2 or labels.ndim != 1:
        return None
    n, v = logits.shape
    if labels.shape[0] != n or n == 0 or v == 0 or type(axis) is not int or (axis != -1 and axis != 1):
        return None
    if not (logits.flags.c_contiguous and labels.flags.c_contiguous):
        return None
    if out is not None and not (
        need_grad and type(out) is np.ndarray and out.dtype is dt and out.shape == logits.shape
        and out.flags.c_contiguous and out.flags.writeable and not np.may_share_memory(out, logits)
    ):  # fmt: skip
        return None
    if not (ignore_index is None or (type(ignore_index) is int and -(2**63) <= ignore_index < 0)):
        return None
    if type(reduction) is not str or reduction not in _REDUCTIONS:
        return None
    mode: Reduction = reduction  # type: ignore[assignment]  # one of _REDUCTIONS
    kern = kernels.compiled()
    if kern is None:
        return None
    has_ignore = ignore_index is not None
    bad, ignored = kern.class_check(labels, v, ignore_index if has_ignore else -1, has_ignore)
    if bad >= 0 or ignored:  # a label to name in an error, or rows out of the mean: the general path
        return None
    keep_rows = _contract.keeps_rows(mode)
    loss, lse = kernels.scratch(n, 2)
    if keep_rows:
        loss = np.empty(n)
    grad = (np.empty((n, v), dtype=dt) if out is None else out) if need_grad else None
    denominator = float(n)
    total = kern.softmax_xent_index(
        logits, labels, _NONE, 0.0, _NONE, 1.0, _contract.grad_scale(mode, denominator),
        logits if grad is None else grad, need_grad, loss, lse,
    )  # fmt: skip
    if math.isnan(total):
        return None
    return scalar_or_array(_contract.reduce_rows(loss, total, denominator, mode), dt), grad


def softmax_xent_rows(
    arr: np.ndarray,
    ax: int,
    lab: Labels,
    opts: XentOptions,
    *,
    weight: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    z_weight: np.ndarray | None = None,
    need_grad: bool = True,
    target: np.ndarray | None = None,
    inplace: bool = False,
    need_lse: bool = False,
    kern: Any = _LOOK_UP,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Loss, gradient and (``need_lse``) log-sum-exp of validated arguments, in one sweep.

    Parameters
    ----------
    arr : ndarray of float, class axis ``ax``
    lab : Labels
        Class axis last.
    opts : XentOptions
    weight : ndarray (K,) float64 or None
        Class weights.
    sample_weight : ndarray (batch shape) float64 or None
        Multiplies each row's cross-entropy (and its z-loss unless ``z_weight``).
    z_weight : ndarray (batch shape) float64 or None
        Each row's weight in the z-loss term, when it differs from the sample
        weight (the linear head scales the two parts of a block by different
        global denominators). Ignored rows take no z-loss either way.
    need_grad : bool
    target : ndarray or None
        The caller's buffer for the gradient (``out=``, or ``arr`` itself with
        ``inplace``); None: a new array.
    inplace : bool
        ``target is arr``: the logits may be overwritten by the gradient.
    need_lse : bool
    kern : module or None, optional
        ``kernels.cpu(arr.dtype)`` when the caller has it already (None: the
        exact path); looked up here otherwise.

    Returns
    -------
    loss : ndarray
        Per-row (batch shape) for ``"none"``, else 0-d; in ``arr``'s dtype.
    grad : ndarray or None
        ``target`` when given, else a new array of ``arr``'s shape and dtype.
    lse : ndarray (batch shape) float64, or None
        Log-sum-exp of each row of :math:`z'/T`, ignored rows included.
    """
    n_classes = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    reduction, smoothing, temperature = opts.reduction, opts.label_smoothing, opts.temperature
    if kern is _LOOK_UP:
        kern = kernels.cpu(arr.dtype)

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
    if opts.z_loss or opts.softcap is not None:  # z-loss and cap around the same computations
        loss, grad, lse = softmax_xent_options(
            arr, ax, lab, weight, sample_weight, opts, denominator, grad_scale, kern, inv_t, need_grad,
            lambda lab: effective_target(lab, n_classes, weight, smoothing), z_weight,
        )  # fmt: skip
        if grad is not None and target is not None:
            np.copyto(target, grad)
            grad = target
        return scalar_or_array(loss, arr.dtype), grad, (lse if need_lse else None)
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
            grad2, opts.ignore_index, keep_rows=_contract.keeps_rows(reduction), keep_lse=need_lse,
        )  # fmt: skip
        if grad2 is not None:
            grad = kernels.from_rows(grad2, arr.shape, ax)
    else:
        t = effective_target(lab, n_classes, weight, smoothing)
        scale = np.ones(batch) if sample_weight is None else sample_weight
        z = np.moveaxis(arr.astype(compute_dtype(arr.dtype)), ax, -1)
        loss_rows, grad, lse = _reference_softmax_xent(
            z, t, scale, temperature, grad_scale, need_grad, opts.ignore_index
        )
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
    loss = _contract.reduce_rows(loss_rows, total, denominator, reduction)
    # lse stays float64: log-sum-exp of z / T can exceed float32's range.
    return scalar_or_array(loss, arr.dtype), grad, scalar_or_array(lse, np.dtype(np.float64)) if need_lse else None
