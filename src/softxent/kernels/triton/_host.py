"""Host-side helpers of the Triton backend: the guarded ``triton`` import, the kernels on first use,
the interpreter or the compiler, and small checks shared by the launches."""

from __future__ import annotations

import contextlib
import types
import warnings

import numpy as np
import torch

from ..._contract import Reduction, check_reduction, grad_scale, keeps_rows

try:
    import triton
except ImportError:  # pragma: no cover - the module is only imported when triton is
    triton = None

HAS_TRITON = triton is not None


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for launch grids (Triton's own ``cdiv``)."""
    return triton.cdiv(a, b)


def _need_triton() -> None:
    if triton is None:
        raise ImportError("softxent's GPU kernels need Triton, which is not installed: pip install softxent[triton]")


def kernels() -> types.SimpleNamespace:
    """The kernels, imported on first use: ``ce_kernel`` (:mod:`._kernels_ce`), ``lce_forward_kernel`` and
    ``lce_backward_kernel`` (:mod:`._kernels_linear`).

    Triton chooses between its compiler and its interpreter once per process:
    its own ``triton.language`` helpers are decorated when ``triton`` is first
    imported, and they follow ``TRITON_INTERPRET`` as it was then. With
    ``TRITON_INTERPRET=1`` set before that import, the kernels run in the
    interpreter on CPU tensors (the tests); otherwise they compile for CUDA.
    """
    _need_triton()
    from . import _kernels_ce, _kernels_linear  # both families decorated at once, in the same mode

    return types.SimpleNamespace(
        ce_kernel=_kernels_ce.ce_kernel,
        lce_forward_kernel=_kernels_linear.lce_forward_kernel,
        lce_backward_kernel=_kernels_linear.lce_backward_kernel,
    )


def interpreted() -> bool:
    """Whether the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when triton was imported)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernels().ce_kernel, InterpretedFunction)


def _interpret(t: torch.Tensor) -> bool:
    interp = interpreted()
    if t.device.type == "cuda" or (interp and t.device.type == "cpu"):
        return interp
    if t.device.type == "cpu":
        raise ValueError(
            "CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 before triton is "
            "first imported (the front end uses its numba kernels for CPU tensors)"
        )
    raise ValueError(f"the Triton kernels take CUDA tensors (or CPU tensors in Triton's interpreter), got {t.device}")


@contextlib.contextmanager
def _launching(interpret: bool):
    # The interpreter runs the kernels in NumPy, which warns where the GPU
    # silently follows IEEE (exp(-inf - -inf) in a discarded branch, 0/0 in a
    # where() that is not taken, a max over a row of NaN): the kernels mean IEEE.
    if not interpret:
        yield
        return
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _check_rows(z: torch.Tensor, name: str) -> None:
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape (M, C), got {tuple(z.shape)}")


def device_mean_scale(denominator: torch.Tensor) -> torch.Tensor:
    """The contract's :func:`~softxent._contract.mean_scale` of a denominator that stays on the device.

    ``1 / d``, and 0 when no row counts (``d == 0``), as a ``torch.where``: the
    contract's helper takes a host number, and reading ``d`` back would
    synchronise the host with the GPU (and break CUDA-graph capture).
    """
    d = denominator.to(torch.float64)
    nonzero = d != 0
    return torch.where(nonzero, 1.0 / torch.where(nonzero, d, 1.0), 0.0)


def device_grad_scale(reduction: Reduction, denominator: torch.Tensor) -> torch.Tensor:
    """The contract's :func:`~softxent._contract.grad_scale` with the denominator on the device (no host sync)."""
    check_reduction(reduction)
    if grad_scale(reduction, 0.0):  # the contract: 1 for "sum" and "none", mean_scale for "mean"
        return torch.ones((), dtype=torch.float64, device=denominator.device)
    return device_mean_scale(denominator)


def reduce_rows(loss_rows: torch.Tensor, scale: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """The loss of ``reduction`` from already scaled rows: the rows for ``"none"``, else their sum."""
    return loss_rows if keeps_rows(reduction) else loss_rows.sum(dtype=loss_rows.dtype) * scale
