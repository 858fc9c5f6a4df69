"""Softmax, log-softmax, log-sum-exp and sigmoid: eq. (1), (2), (8), (13), (14) of the seed.

Design
------
Every function here follows the same three steps:

1. validate and convert the input (:mod:`softxent._validation`);
2. run the exact math in float64 (longdouble stays longdouble) with the class
   axis moved last, through :func:`normalise`, the one place where logits are
   shifted and their normaliser is taken;
3. cast the result back to the input's floating dtype.

:func:`normalise` is shared with the losses in :mod:`softxent._losses`, so the
softmax of the loss is the softmax of :func:`softmax`, bit for bit.

Conventions for non-finite input (the same in every function):

* ``-inf`` logits, and entries switched off with ``where=False``, are masked
  classes: probability 0, log-probability ``-inf``. A row whose classes are
  all masked has softmax 0 everywhere and log-sum-exp ``-inf`` (the sum of no
  exponentials is 0).
* ``NaN`` or ``+inf`` anywhere in a row make that row's softmax NaN (the
  distribution is undefined); other rows are untouched. ``logsumexp`` of a row
  holding ``+inf`` (and no NaN) is ``+inf``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from . import kernels
from ._validation import (
    as_float_array,
    check_axis,
    check_bool,
    check_result_size,
    check_scalar,
    check_where,
    compute_dtype,
)

__all__ = [
    "log_sigmoid",
    "log_sigmoid_exact",
    "kernel_inv_temperature",
    "log_softmax",
    "logsumexp",
    "normalise",
    "sigmoid",
    "sigmoid_exact",
    "softmax",
    "softmax_jacobian",
    "softmax_vjp",
]


class Normalised(NamedTuple):
    """Shifted logits and their log-normaliser, class axis last.

    ``d = (z - m) / T`` with ``m`` the row max (0 when the max is not finite),
    ``log_s = log sum_c exp(d_c)``; so ``log softmax = d - log_s`` and
    ``logsumexp(z / T) = m / T + log_s``.
    """

    d: np.ndarray  # shifted, scaled logits (..., K); -inf where masked
    log_s: np.ndarray  # log of the normaliser (..., 1)
    m: np.ndarray  # row max of z (..., 1); NaN, +inf or -inf for special rows
    argmax: np.ndarray  # index of the row max (..., 1), where d == 0 exactly


def normalise(z: np.ndarray, *, temperature: float = 1.0, mask: np.ndarray | None = None) -> Normalised:
    """Shift by the row max and take the log of the softmax normaliser.

    ``z`` is a float64 (or longdouble) array with the class axis last;
    ``mask`` (same shape, ``True`` = class present) turns entries into ``-inf``.
    """
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    n_classes = z.shape[-1]
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(z, axis=-1, keepdims=True, initial=-np.inf)
        finite = np.isfinite(m)
        # Shift before exp so that no exp overflows; shift *before* dividing by
        # the temperature so that z / T cannot overflow either (3e38 / 0.5).
        d = (z - np.where(finite, m, 0.0)) / temperature
        e = np.exp(d)
        if n_classes == 0:
            argmax = np.zeros(m.shape, dtype=np.intp)
            log_s = np.full(m.shape, -np.inf, dtype=z.dtype)
        else:
            argmax = np.argmax(d, axis=-1, keepdims=True)
            # The row max contributes exactly exp(0) = 1 to the normaliser
            # s = 1 + r. Summing the other terms into r and taking log1p(r)
            # keeps log s exact when s is close to 1 (a confident row), which
            # is what makes p_max - 1 = expm1(-log s) free of cancellation.
            rest = e.copy()
            np.put_along_axis(rest, argmax, 0.0, axis=-1)
            r = rest.sum(axis=-1, keepdims=True)
            log_s = np.where(finite, np.log1p(r), np.log(e.sum(axis=-1, keepdims=True)))
    return Normalised(d=d, log_s=log_s, m=m, argmax=argmax)


def _log_softmax_rows(n: Normalised) -> np.ndarray:
    """``d - log_s`` with the row conventions of the module docstring."""
    with np.errstate(invalid="ignore"):
        out = n.d - n.log_s
    out = np.where(n.m == -np.inf, -np.inf, out)  # all masked: log 0 everywhere
    return np.where(np.isnan(n.m) | (n.m == np.inf), np.nan, out)  # undefined row


def _prepare(x: Any, axis: int, name: str = "x") -> tuple[np.ndarray, np.ndarray, int]:
    """(input array, float64 working copy with ``axis`` last, normalised axis)."""
    arr, ax = _checked(x, axis, name)
    return arr, _work(arr, ax), ax


def _checked(x: Any, axis: int, name: str = "x") -> tuple[np.ndarray, int]:
    arr = as_float_array(x, name, allow_int=True)
    return arr, check_axis(axis, arr.ndim)


def _work(arr: np.ndarray, ax: int) -> np.ndarray:
    return np.moveaxis(arr.astype(compute_dtype(arr.dtype), copy=False), ax, -1)


# The normal numbers of each kernel dtype, as Python floats (a comparison per call).
_NORMAL_RANGE = {np.dtype(t): (float(np.finfo(t).tiny), float(np.finfo(t).max)) for t in (np.float32, np.float64)}


def kernel_inv_temperature(temperature: float, dtype: np.dtype) -> float | None:
    """``1 / temperature`` for the compiled kernels, or None where they must not run.

    The kernels multiply by ``1/T`` (cast to the logits' dtype in their
    exponential pass) where the exact path divides by ``T``. That agrees
    while ``1/T`` is a normal number of the dtype. Outside that range it does
    not: ``1/T = inf`` (T below 5.6e-309 in float64, 2.9e-39 in float32) makes
    ``0 * inf = NaN`` at each row's max, and ``1/T = 0`` (float32, T above
    3.4e38; inexact already when subnormal, above 8.5e37) makes ``-inf * 0 =
    NaN`` at masked classes. Such temperatures take the exact path, which
    divides; they are rare enough that its speed does not matter.
    """
    inv_t = 1.0 / temperature  # a Python float: inf, not an error, when it overflows
    low, high = _NORMAL_RANGE[np.dtype(dtype)]
    return inv_t if low <= inv_t <= high else None


def _softmax_kernel(arr: np.ndarray, ax: int, temperature: float, log: bool) -> np.ndarray | None:
    """Softmax or log-softmax through the compiled kernel, or None for the reference path."""
    kern = kernels.cpu(arr.dtype)
    if kern is None:
        return None
    inv_t = kernel_inv_temperature(temperature, arr.dtype)
    if inv_t is None:
        return None
    z2 = kernels.as_rows(arr, ax)
    out = np.empty(z2.shape, dtype=arr.dtype)
    kern.softmax_rows(z2, out, inv_t, log)
    return kernels.from_rows(out, arr.shape, ax)


def _mask(where: Any, arr: np.ndarray, ax: int) -> np.ndarray | None:
    mask = check_where(where, arr.shape)
    return None if mask is None else np.moveaxis(mask, ax, -1)


def softmax(x: Any, axis: int = -1, *, temperature: float = 1.0, where: Any = None) -> np.ndarray:
    r"""Softmax along ``axis``: eq. (1) and (8) of the seed.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i / T}}{\sum_j e^{x_j / T}}

    computed as :math:`e^{(x_i - m)/T} / \sum_j e^{(x_j - m)/T}` with
    :math:`m = \max_j x_j`, so that no exponential overflows.

    Parameters
    ----------
    x : array_like, shape (..., K, ...)
        Logits. float16/32/64 keep their dtype; integers are promoted to float64.
    axis : int, default -1
        The class axis.
    temperature : float, default 1.0
        :math:`T > 0`; large values flatten the distribution, small ones sharpen it.
    where : array_like of bool, optional
        Broadcastable to ``x``; ``False`` entries are left out of the
        normalisation and get probability 0.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        Each slice along ``axis`` lies in [0, 1] and sums to 1.

    Notes
    -----
    ``-inf`` entries are masked classes (probability 0). A slice whose classes
    are all masked gives zeros; a slice holding NaN or ``+inf`` gives NaN.

    Backends: without ``where``, float32/float64 input runs on the fused CPU
    kernel, which computes :math:`x - m` in the input's precision (as torch
    and JAX do): a probability :math:`p` carries a relative error of at most
    :math:`(|x_i - m| / T + 10)\,\epsilon`, an absolute error below 3e-8 in
    float32. The exact path (float64 arithmetic, rounded once; also used with
    ``where``, for float16, with ``SOFTXENT_REFERENCE=1``, or for a
    temperature whose reciprocal is not a normal number of the dtype, such
    as 1e-310) is within 1 ulp. As :math:`T \to 0` the softmax tends to the
    one-hot vector of the row max (ties share it).

    Examples
    --------
    >>> import softxent as sx
    >>> sx.softmax([1.0, 2.0, 3.0])
    array([0.09003057, 0.24472847, 0.66524096])
    >>> sx.softmax([1.0, 2.0, 3.0], where=[True, True, False])
    array([0.26894142, 0.73105858, 0.        ])
    """
    arr, ax = _checked(x, axis)
    temperature = check_scalar(temperature, "temperature", low=0.0, low_inclusive=False)
    mask = _mask(where, arr, ax)
    if mask is None and (fast := _softmax_kernel(arr, ax, temperature, log=False)) is not None:
        return fast
    n = normalise(_work(arr, ax), temperature=temperature, mask=mask)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(_log_softmax_rows(n))
    return np.moveaxis(p, -1, ax).astype(arr.dtype, copy=False)


def log_softmax(x: Any, axis: int = -1, *, temperature: float = 1.0, where: Any = None) -> np.ndarray:
    r"""Logarithm of the softmax along ``axis``: the log of eq. (8).

    .. math::

        \log \operatorname{softmax}(x)_i = \frac{x_i - m}{T}
            - \log \sum_j e^{(x_j - m)/T}, \qquad m = \max_j x_j

    computed directly, never as ``log(softmax(x))``, so that tiny
    probabilities keep their full precision instead of rounding to ``log 0``.

    Parameters
    ----------
    x : array_like
        Logits (integers are promoted to float64).
    axis : int, default -1
        The class axis.
    temperature : float, default 1.0
        :math:`T > 0`.
    where : array_like of bool, optional
        ``False`` entries are left out and get ``-inf``.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        Masked entries and slices whose classes are all masked are ``-inf``;
        slices holding NaN or ``+inf`` are NaN.

    Notes
    -----
    The fused CPU kernel (float32/float64 without ``where``) is within
    :math:`4\epsilon (1 + |\text{value}|)` of the exact path, which rounds
    its float64 result once (see :func:`softmax` for the backends).

    Examples
    --------
    >>> import softxent as sx
    >>> sx.log_softmax([0.0, 1000.0])
    array([-1000.,     0.])
    """
    arr, ax = _checked(x, axis)
    temperature = check_scalar(temperature, "temperature", low=0.0, low_inclusive=False)
    mask = _mask(where, arr, ax)
    if mask is None and (fast := _softmax_kernel(arr, ax, temperature, log=True)) is not None:
        return fast
    n = normalise(_work(arr, ax), temperature=temperature, mask=mask)
    with np.errstate(over="ignore"):  # below float32's range (tiny T) rounds to -inf, as in the kernel
        return np.moveaxis(_log_softmax_rows(n), -1, ax).astype(arr.dtype, copy=False)


def logsumexp(x: Any, axis: int = -1, *, where: Any = None, keepdims: bool = False) -> np.ndarray:
    r"""Log of the sum of exponentials along ``axis``: the log of eq. (8)'s denominator.

    .. math::

        \operatorname{logsumexp}(x) = \log \sum_j e^{x_j}
            = m + \log \sum_j e^{x_j - m}, \qquad m = \max_j x_j

    Parameters
    ----------
    x : array_like
        Input (integers are promoted to float64).
    axis : int, default -1
        Axis to reduce.
    where : array_like of bool, optional
        ``False`` entries are left out of the sum.
    keepdims : bool, default False
        Keep the reduced axis with length 1.

    Returns
    -------
    ndarray or scalar of ``x``'s dtype
        ``-inf`` for an empty or fully masked slice (the sum of no terms is 0),
        ``+inf`` if the slice holds ``+inf``, NaN if it holds NaN.

    Notes
    -----
    The fused CPU kernel (float32/float64 without ``where``) is within 2 ulp
    of the exact path (see :func:`softmax` for the backends).

    Examples
    --------
    >>> import softxent as sx
    >>> print(sx.logsumexp([1000.0, 1000.0]))  # naive log(sum(exp)) overflows
    1000.6931471805599
    """
    arr, ax = _checked(x, axis)
    keepdims = check_bool(keepdims, "keepdims")
    mask = _mask(where, arr, ax)
    kern = kernels.cpu(arr.dtype) if mask is None else None
    if kern is not None:
        out = np.empty(int(np.prod(arr.shape[:ax] + arr.shape[ax + 1 :])))
        kern.logsumexp_rows(kernels.as_rows(arr, ax), out)
        lse = out.reshape(arr.shape[:ax] + arr.shape[ax + 1 :] + (1,))
    else:
        n = normalise(_work(arr, ax), mask=mask)
        with np.errstate(invalid="ignore"):
            lse = np.where(np.isfinite(n.m), n.m, 0.0) + n.log_s
        lse = np.where(np.isnan(n.m), np.nan, lse)
    lse = np.moveaxis(lse, -1, ax) if keepdims else lse[..., 0]
    out = lse.astype(arr.dtype, copy=False)
    return out if out.ndim else out[()]


def sigmoid(x: Any) -> np.ndarray:
    r"""Logistic sigmoid, elementwise: eq. (2) of the seed.

    .. math::

        \sigma(x) = \frac{1}{1 + e^{-x}}

    Each output lies in [0, 1] independently of the others (unlike the
    softmax, nothing makes them sum to 1), which is why one sigmoid per label
    suits labels that are *not* mutually exclusive.

    Evaluated as :math:`1/(1+e^{-|x|})` or :math:`e^{-|x|}/(1+e^{-|x|})` by
    the sign of :math:`x`, so no exponential overflows.

    Parameters
    ----------
    x : array_like
        Any shape (integers are promoted to float64).

    Returns
    -------
    ndarray, same shape and dtype as ``x``

    Examples
    --------
    >>> import softxent as sx
    >>> sx.sigmoid([-1000.0, 0.0, 1000.0])
    array([0. , 0.5, 1. ])
    """
    arr = as_float_array(x, "x", allow_int=True)
    out = sigmoid_exact(arr.astype(compute_dtype(arr.dtype), copy=False)).astype(arr.dtype, copy=False)
    return out if out.ndim else out[()]


def log_sigmoid(x: Any) -> np.ndarray:
    r"""Logarithm of the sigmoid, elementwise: the log of eq. (2).

    .. math::

        \log \sigma(x) = -\operatorname{softplus}(-x)
            = \min(x, 0) - \log\left(1 + e^{-|x|}\right)

    Never computed as ``log(sigmoid(x))``, which is ``log 0 = -inf`` for
    ``x < -745`` in float64. Note :math:`\log(1 - \sigma(x)) = \log \sigma(-x)`.

    Parameters
    ----------
    x : array_like
        Any shape (integers are promoted to float64).

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        Values in [-inf, 0].

    Examples
    --------
    >>> import softxent as sx
    >>> sx.log_sigmoid([-30.0, 0.0])  # log(sigmoid(-30)) is -30 to 13 digits
    array([-30.        ,  -0.69314718])
    """
    arr = as_float_array(x, "x", allow_int=True)
    out = log_sigmoid_exact(arr.astype(compute_dtype(arr.dtype), copy=False)).astype(arr.dtype, copy=False)
    return out if out.ndim else out[()]


def sigmoid_exact(z: np.ndarray) -> np.ndarray:
    """Sigmoid of a float64 array, without validation (shared with the losses)."""
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    with np.errstate(invalid="ignore"):
        return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_sigmoid_exact(z: np.ndarray) -> np.ndarray:
    """log(sigmoid(z)) = min(z, 0) - log1p(exp(-|z|)) of a float64 array, without validation."""
    # log1p(exp(-|z|)) keeps full precision where the term is tiny (large |z|).
    return np.minimum(z, 0.0) - np.log1p(np.exp(-np.abs(z)))


def softmax_jacobian(x: Any, axis: int = -1) -> np.ndarray:
    r"""Jacobian of the softmax: eq. (13) and (14) of the seed.

    With :math:`a = \operatorname{softmax}(x)`,

    .. math::

        J_{ij} = \frac{\partial a_i}{\partial x_j} = a_i (\delta_{ij} - a_j)
        = \begin{cases} a_i (1 - a_i) & i = j \quad (13) \\
                        -a_i a_j & i \ne j \quad (14) \end{cases}

    The matrix is symmetric and each row sums to 0 (the softmax does not
    change when a constant is added to every logit).

    Parameters
    ----------
    x : array_like, shape (..., K, ...)
        Logits.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray, shape ``batch + (K, K)``, dtype of ``x``
        ``batch`` is ``x.shape`` with ``axis`` removed. It holds K² numbers per
        row: use :func:`softmax_vjp` to multiply by a vector without it.

    Raises
    ------
    ValueError
        Before allocating anything, if the result is larger than the
        machine's physical memory (10^6 classes need 8 TB in float64).

    Examples
    --------
    >>> import softxent as sx
    >>> sx.softmax_jacobian([0.0, 0.0])
    array([[ 0.25, -0.25],
           [-0.25,  0.25]])
    """
    arr, ax = _checked(x, axis)
    n_classes = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    rows = f"{math.prod(batch)} rows of " if batch else ""
    check_result_size(
        f"softmax_jacobian of {rows}{n_classes} classes", batch + (n_classes, n_classes), arr.dtype,
        "use softmax_vjp to multiply by a vector without building the matrix",
    )  # fmt: skip
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.exp(_log_softmax_rows(normalise(_work(arr, ax))))
    # Written straight into the result's dtype: one K x K array per row, no
    # float64 temporaries of that size (eq. 14 everywhere, then eq. 13 on the diagonal).
    jac = np.empty(batch + (n_classes, n_classes), dtype=arr.dtype)
    np.multiply(-a[..., :, None], a[..., None, :], out=jac, casting="same_kind")
    diag = np.arange(n_classes)
    jac[..., diag, diag] = a * (1.0 - a)
    return jac


def softmax_vjp(x: Any, v: Any, axis: int = -1) -> np.ndarray:
    r"""Product of a vector with the softmax Jacobian, without building it.

    .. math::

        (v^\top J)_j = \sum_i v_i a_i (\delta_{ij} - a_j)
                     = a_j \left(v_j - \textstyle\sum_i v_i a_i\right)

    This is the backward rule of the softmax, eq. (11) with eq. (13) and (14): O(K)
    per row instead of O(K²). :math:`J` is symmetric, so this is also the
    Jacobian-vector product.

    Parameters
    ----------
    x : array_like, shape (..., K, ...)
        Logits.
    v : array_like, same shape as ``x``
        Cotangent, e.g. :math:`\partial L / \partial a`.
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray, same shape as ``x``, dtype of ``x``

    Examples
    --------
    >>> import softxent as sx
    >>> sx.softmax_vjp([0.0, 0.0], [1.0, 0.0])
    array([ 0.25, -0.25])
    """
    arr, work, ax = _prepare(x, axis)
    varr = as_float_array(v, "v", allow_int=True)
    if varr.shape != arr.shape:
        raise ValueError(f"v must have the shape of x {arr.shape}, got {varr.shape}")
    vw = np.moveaxis(varr.astype(work.dtype), ax, -1)
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.exp(_log_softmax_rows(normalise(work)))
        out = a * (vw - np.sum(vw * a, axis=-1, keepdims=True))
    return np.moveaxis(out, -1, ax).astype(arr.dtype, copy=False)
