"""Shared test tools: dtype tolerances, a 4th-order finite-difference gradient, random logits.

Tolerances are tied to the dtype (multiples of its machine epsilon) and live in
``TOL`` so that every parametrised test uses the same table.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import settings

# Hypothesis: bounded work so that the whole suite stays well under 5 minutes.
settings.register_profile("softxent", max_examples=60, deadline=None, derandomize=True)
settings.load_profile("softxent")

DTYPES = [np.float32, np.float64]

# Relative/absolute tolerance for comparing a dtype's result with a float64
# oracle: the result is the float64 value rounded once, plus the input's own
# rounding, so a few eps are enough.
TOL = {
    np.float16: dict(rtol=4 * float(np.finfo(np.float16).eps), atol=4 * float(np.finfo(np.float16).eps)),
    np.float32: dict(rtol=16 * float(np.finfo(np.float32).eps), atol=16 * float(np.finfo(np.float32).eps)),
    np.float64: dict(rtol=64 * float(np.finfo(np.float64).eps), atol=64 * float(np.finfo(np.float64).eps)),
}


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261123)


def finite_difference_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """4th-order central differences of a scalar function, one coordinate at a time.

    Perturbing one class at a time matters: a common shift of all logits leaves
    the softmax unchanged, so only single-coordinate steps see the gradient.
    Error O(h^4) on smooth functions; with h = 1e-3 and float64 that is ~1e-12.
    """
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        vals = []
        for step in (2 * h, h, -h, -2 * h):
            flat[i] = orig + step
            vals.append(float(f(x)))
        flat[i] = orig
        f2, f1, fm1, fm2 = vals
        gflat[i] = (-f2 + 8 * f1 - 8 * fm1 + fm2) / (12 * h)
    return grad


def random_logits(rng: np.random.Generator, shape, scale: float = 3.0, dtype=np.float64) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)
