"""Finite-difference gradients: the independent check of every analytic gradient.

Used by the demonstration and command line (to show eq. 15/16 beside numbers
obtained without calculus) and by the test suite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["finite_difference_grad"]


def finite_difference_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    r"""Gradient of a scalar function by 4th-order central differences.

    .. math::

        \frac{\partial f}{\partial x_i} \approx
        \frac{-f(x + 2h e_i) + 8 f(x + h e_i) - 8 f(x - h e_i) + f(x - 2h e_i)}{12 h}

    One coordinate is perturbed at a time. That matters for the softmax: a
    common shift of all logits leaves it unchanged, so only single-coordinate
    steps see the gradient. The truncation error is :math:`O(h^4)`; with
    ``h = 1e-3`` in float64 the total error is about 1e-11 on smooth functions.

    Parameters
    ----------
    f : callable
        Takes a float64 array shaped like ``x`` and returns a scalar.
    x : array_like
        The point; evaluated in float64.
    h : float
        Step size.

    Returns
    -------
    ndarray of float64, shape of ``x``

    Examples
    --------
    >>> import numpy as np
    >>> finite_difference_grad(lambda v: float(np.sum(v ** 3)), np.array([1.0, 2.0]))
    array([ 3., 12.])
    """
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        values = []
        for step in (2 * h, h, -h, -2 * h):
            flat[i] = orig + step
            values.append(float(f(x)))
        flat[i] = orig
        f2, f1, fm1, fm2 = values
        gflat[i] = (-f2 + 8.0 * f1 - 8.0 * fm1 + fm2) / (12.0 * h)
    return grad
