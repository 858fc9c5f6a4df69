"""Shared test tools: dtype tolerances, a 4th-order finite-difference gradient, random logits.

Tolerances are tied to the dtype (multiples of its machine epsilon) and live in
``TOL`` so that every parametrised test uses the same table.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

# The library's own finite differences, itself checked in test_gradcheck.py.
from softxent._gradcheck import finite_difference_grad  # noqa: F401  (re-exported for tests)

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


@pytest.fixture(params=["kernel", "reference"])
def backend(request, monkeypatch):
    """Run a test on the compiled kernels and on the exact NumPy path.

    The public functions read ``SOFTXENT_REFERENCE`` at every call, so setting
    it here switches the backend for the whole test.
    """
    if request.param == "kernel":
        pytest.importorskip("numba", reason="numba is not installed: the kernel backend is unavailable")
        monkeypatch.delenv("SOFTXENT_REFERENCE", raising=False)
    else:
        monkeypatch.setenv("SOFTXENT_REFERENCE", "1")
    return request.param


def random_logits(rng: np.random.Generator, shape, scale: float = 3.0, dtype=np.float64) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)
