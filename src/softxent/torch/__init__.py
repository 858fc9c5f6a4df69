"""PyTorch front end of softxent: softmax cross-entropy losses for ``torch`` models.

Two losses, each a function and a thin ``nn.Module``:

* :func:`cross_entropy` / :class:`CrossEntropyLoss`: a drop-in for
  ``torch.nn.functional.cross_entropy`` / ``torch.nn.CrossEntropyLoss`` (same
  arguments, defaults and results), computed on the CPU by softxent's fused
  kernel (loss and gradient from one sweep over the logits), with z-loss,
  logit soft-capping and the per-row log-sum-exp as extras;
* :func:`linear_cross_entropy` / :class:`LinearCrossEntropyLoss`: drop-ins for
  torch 2.13's functions of those names (``linear_weight``, ``linear_bias``,
  ``weight`` = class weights, probability targets, ``options``): the loss of
  ``input @ linear_weight.T + linear_bias`` against ``target`` and its
  gradients, computed in blocks so that the (N, V) logits of a
  large-vocabulary output head never exist in memory.

On CUDA tensors both run softxent's Triton kernels when Triton is installed
(``pip install softxent[triton]``; :mod:`softxent.torch._triton`), else the
same formulas in plain torch operations.

For tensor parallelism, :mod:`softxent.torch.distributed` (imported on its
own, ``from softxent.torch.distributed import ...``) gives both losses with
the vocabulary split between the ranks of a ``torch.distributed`` group:
``vocab_parallel_cross_entropy`` and ``vocab_parallel_linear_cross_entropy``,
equal to the single-process results.

On the CPU, large gradients go into memory that softxent reuses from step to
step once the tensors holding it are gone (a fresh 256 MiB buffer costs about
as much in page faults as the loss itself): :func:`cached_bytes` says how much
is held free, :func:`empty_cache` returns it to the system and
:func:`set_cache_limit` bounds it (default 1 GiB, or
``SOFTXENT_CPU_CACHE_BYTES``; 0 turns the cache off).

This is eq. (9)-(10) and (16) of the seed at scale: a linear layer, softmax
and cross-entropy, whose gradient with respect to the logits is ``a - y``.

PyTorch is an optional dependency (``pip install softxent[torch]``);
``import softxent`` never imports it, ``import softxent.torch`` does.

>>> import torch
>>> import softxent.torch as sxt
>>> logits, labels = torch.tensor([[2.0, 1.0, 0.1]]), torch.tensor([0])
>>> loss = sxt.cross_entropy(logits, labels)
>>> bool(torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels)))
True
"""

from __future__ import annotations

try:
    import torch  # noqa: F401  (the top-level torch package, not this one)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "softxent.torch needs PyTorch, which is not installed: pip install softxent[torch] "
        "(or install torch for your platform from https://pytorch.org first)"
    ) from exc

from ._functional import cross_entropy
from ._linear import linear_cross_entropy
from ._memory import cached_bytes, empty_cache, set_cache_limit
from ._modules import CrossEntropyLoss, LinearCrossEntropyLoss


def _register_gpu_kernels() -> None:
    """CUDA tensors on the Triton kernels (:mod:`._triton`), on CUDA builds of torch with triton installed.

    CPU builds never import triton (it is slow to import and unused there);
    ``SOFTXENT_DISABLE_TRITON=1`` keeps CUDA tensors on the plain-torch path.
    """
    import importlib.util
    import os

    if torch.version.cuda is None or os.environ.get("SOFTXENT_DISABLE_TRITON") == "1":
        return
    if importlib.util.find_spec("triton") is None:
        return
    try:
        from . import _triton

        _triton.register()
    except Exception as exc:  # pragma: no cover - a broken triton install: stay on the plain-torch path
        import warnings

        warnings.warn(
            f"softxent.torch: Triton is installed but could not be loaded ({type(exc).__name__}: {exc}); "
            "CUDA tensors use the plain-torch path (set SOFTXENT_DISABLE_TRITON=1 to silence this)",
            RuntimeWarning,
            stacklevel=2,
        )


_register_gpu_kernels()

__all__ = [
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "cached_bytes",
    "cross_entropy",
    "empty_cache",
    "linear_cross_entropy",
    "set_cache_limit",
]
