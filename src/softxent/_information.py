"""Entropy, KL divergence and cross-entropy of probability vectors: eq. (3)-(6) of the seed.

These take probabilities, not logits (for logits use
:func:`softxent.softmax_cross_entropy`). Inputs are checked to be
distributions along ``axis``: non-negative, summing to 1 within
``sqrt(eps)`` of their dtype. The convention :math:`0 \\log 0 = 0` holds
everywhere; :math:`p \\log(p / 0) = +\\infty` for :math:`p > 0`.

The arithmetic runs in float64 (longdouble stays longdouble) and the result
takes the floating dtype of the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import (
    as_float_array,
    check_axis,
    check_base,
    check_probabilities,
    compute_dtype,
)

__all__ = ["cross_entropy", "entropy", "kl_divergence"]


def _distributions(arrays: dict[str, Any], axis: int) -> tuple[list[np.ndarray], np.dtype, int]:
    """Validate the named probability arrays; return float working copies, result dtype, axis."""
    converted = {name: as_float_array(a, name, allow_int=True) for name, a in arrays.items()}
    shapes = {name: a.shape for name, a in converted.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{name}.shape = {shape}" for name, shape in shapes.items())
        raise ValueError(f"{' and '.join(shapes)} must have the same shape, got {detail}")
    first = next(iter(converted.values()))
    ax = check_axis(axis, first.ndim)
    for name, a in converted.items():
        check_probabilities(a, name, ax)
    dtype = np.result_type(*converted.values())
    work = [np.moveaxis(a.astype(compute_dtype(dtype)), ax, -1) for a in converted.values()]
    return work, dtype, ax


def _finish(total: np.ndarray, dtype: np.dtype, base: float | None) -> np.ndarray:
    if base is not None:
        total = total / np.log(base)
    out = total.astype(dtype, copy=False)
    return out if out.ndim else out[()]


def entropy(p: Any, axis: int = -1, *, base: float | None = None) -> np.ndarray:
    r"""Shannon entropy of a distribution: eq. (3) of the seed, with its sign fixed.

    .. math::

        H(p) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0

    The seed prints eq. (3) as :math:`\sum_j p \log p`, without the minus
    sign; that quantity is :math:`\le 0`. The entropy is :math:`\ge 0`,
    0 for a one-hot vector and :math:`\log K` for the uniform distribution.

    Parameters
    ----------
    p : array_like, shape (..., K, ...)
        Probabilities along ``axis`` (non-negative, summing to 1).
    axis : int, default -1
        The axis of the distribution.
    base : float, optional
        Base of the logarithm: ``None`` gives nats (natural log), 2 gives bits.

    Returns
    -------
    ndarray or scalar, shape ``p.shape`` without ``axis``

    Raises
    ------
    ValueError
        If ``p`` has a negative entry or a slice not summing to 1.

    Examples
    --------
    >>> import softxent as sx
    >>> print(sx.entropy([0.5, 0.5], base=2))
    1.0
    >>> print(sx.entropy([1.0, 0.0]))
    0.0
    """
    base = check_base(base)
    (pw,), dtype, _ = _distributions({"p": p}, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pw > 0, pw * np.log(pw), np.where(np.isnan(pw), np.nan, 0.0))
    # -sum(p log p) can round to -0.0 for one-hot rows; report +0.0.
    return _finish(0.0 - terms.sum(axis=-1), dtype, base)


def _log_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """log(p / q) for p > 0: from the ratio when it is a normal number (accurate
    when p ~ q), else as log p - log q (the ratio under- or overflows)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        ratio = p / q
        ok = np.isfinite(ratio) & (ratio >= np.finfo(ratio.dtype).tiny)
        return np.where(ok, np.log(np.where(ok, ratio, 1.0)), np.log(p) - np.log(q))


def kl_divergence(p: Any, q: Any, axis: int = -1, *, base: float | None = None) -> np.ndarray:
    r"""Kullback-Leibler divergence (relative entropy) :math:`D_{KL}(p \| q)`: eq. (4).

    .. math::

        D_{KL}(p \| q) = \sum_i p_i \log \frac{p_i}{q_i}
                       = H(p, q) - H(p) \quad (5)

    with :math:`0 \log(0/q) = 0` for every :math:`q \ge 0` and
    :math:`p \log(p/0) = +\infty` for :math:`p > 0`. It is :math:`\ge 0`,
    0 exactly when :math:`p = q`, and not symmetric in :math:`p, q`.

    Parameters
    ----------
    p : array_like, shape (..., K, ...)
        The reference ("true") distribution along ``axis``.
    q : array_like, same shape as ``p``
        The approximating (predicted) distribution.
    axis : int, default -1
        The axis of the distributions.
    base : float, optional
        Base of the logarithm (``None``: nats).

    Returns
    -------
    ndarray or scalar, shape ``p.shape`` without ``axis``

    Raises
    ------
    ValueError
        If the shapes differ, or an input has a negative entry or a slice not
        summing to 1.

    Examples
    --------
    >>> import softxent as sx
    >>> print(round(float(sx.kl_divergence([1.0, 0.0, 0.0], [0.7, 0.2, 0.1])), 6))
    0.356675
    >>> print(sx.kl_divergence([0.5, 0.5], [1.0, 0.0]))
    inf
    """
    base = check_base(base)
    (pw, qw), dtype, _ = _distributions({"p": p, "q": q}, axis)
    with np.errstate(invalid="ignore"):
        terms = np.where(pw > 0, pw * _log_ratio(pw, qw), 0.0)
    terms = np.where(np.isnan(pw) | np.isnan(qw), np.nan, terms)
    # Each term p log(p/q) can be negative, the sum cannot: clip rounding noise.
    return _finish(np.maximum(terms.sum(axis=-1), 0.0), dtype, base)


def cross_entropy(p: Any, q: Any, axis: int = -1, *, base: float | None = None) -> np.ndarray:
    r"""Cross-entropy :math:`H(p, q)` of two distributions: eq. (6) of the seed.

    .. math::

        H(p, q) = -\sum_i p_i \log q_i = H(p) + D_{KL}(p \| q)

    with :math:`0 \log q = 0` for every :math:`q \ge 0` (even :math:`q = 0`)
    and :math:`-p \log 0 = +\infty` for :math:`p > 0`. With :math:`p` a
    one-hot label and :math:`q` a model's prediction this is the
    classification loss of eq. (7); to compute it from logits use
    :func:`softxent.softmax_cross_entropy`, which never takes ``log`` of a
    rounded probability.

    Parameters
    ----------
    p : array_like, shape (..., K, ...)
        The true distribution along ``axis``.
    q : array_like, same shape as ``p``
        The predicted distribution.
    axis : int, default -1
        The axis of the distributions.
    base : float, optional
        Base of the logarithm (``None``: nats).

    Returns
    -------
    ndarray or scalar, shape ``p.shape`` without ``axis``

    Examples
    --------
    >>> import softxent as sx
    >>> print(round(float(sx.cross_entropy([1.0, 0.0, 0.0], [0.7, 0.2, 0.1])), 6))
    0.356675
    """
    base = check_base(base)
    (pw, qw), dtype, _ = _distributions({"p": p, "q": q}, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pw > 0, -pw * np.log(qw), 0.0)
    terms = np.where(np.isnan(pw) | np.isnan(qw), np.nan, terms)
    return _finish(terms.sum(axis=-1), dtype, base)
