"""The implementations the GPU benchmark (``benchmarks/cross_entropy_gpu.py``) times: softxent and its peers.

Each table's rows come from a dict name -> factory; a factory returns ``f(x, W, y)`` (or ``f(z, y)``) -> loss,
or raises :class:`NotInstalled` (the peer does not import: its import error is the cause, shown in the
row) or :class:`Skipped` (not run, for a reason: a torch without the function, ``--dry-run``,
``--no-compile``); :func:`_status` turns any failure into the row's status. softxent's Triton core under
autograd (:func:`_triton_functions`) serves the dry run on CPU tensors and the gradient-filter row.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

from _gpu_inputs import IGNORE

FILTER_EPS = 2.0**-12


class NotInstalled(Exception):
    """The peer does not import; its import error is the cause."""


class Skipped(Exception):
    """Not run, for the reason given (a torch without the function, --dry-run, --no-compile)."""


@functools.cache
def _triton_functions(torch: Any) -> tuple[Any, Any]:
    """autograd Functions over softxent's Triton core, for the dry run (CPU tensors) and the filtered variant."""
    from softxent.kernels.triton._cross_entropy import cross_entropy_rows
    from softxent.kernels.triton._linear_head import linear_cross_entropy_triton

    class TritonCE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, y):
            loss, grad, _ = cross_entropy_rows(z, y, reduction="mean", need_grad=True)
            ctx.save_for_backward(grad)
            return loss.to(z.dtype)

        @staticmethod
        def backward(ctx, g):
            (grad,) = ctx.saved_tensors
            return grad * g.to(grad.dtype), None

    class TritonLinear(torch.autograd.Function):
        skipped: list[int] = [0]  # tiles the gradient filter dropped in the last call

        @staticmethod
        def forward(ctx, x, w, y, grad_filter):
            loss, dx, dw, _, skipped = linear_cross_entropy_triton(x, w, y, grad_filter=grad_filter)
            TritonLinear.skipped[0] = skipped
            ctx.save_for_backward(dx, dw)
            return loss.to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            dx, dw = ctx.saved_tensors
            return dx * g.to(dx.dtype), dw * g.to(dw.dtype), None, None

    return TritonCE, TritonLinear


def _no_compile(args: argparse.Namespace) -> None:
    if args.dry_run:
        raise Skipped("skipped: --dry-run (torch.compile takes minutes on a CPU)")
    if args.no_compile:
        raise Skipped("skipped: --no-compile")


def _liger(name: str) -> Any:
    try:
        import liger_kernel.transformers as lt
    except Exception as exc:  # the real reason: a missing module, or one that fails to import
        raise NotInstalled from exc
    return getattr(lt, name)


def _torch_chunked(torch: Any) -> Any:
    """torch's own chunked ``F.linear_cross_entropy`` (torch >= 2.13), or Skipped naming this torch."""
    F = torch.nn.functional
    opts = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if opts is None:
        try:
            from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions as opts
        except ImportError:
            opts = None
    if not hasattr(F, "linear_cross_entropy") or opts is None:
        raise Skipped(f"not in this torch ({torch.__version__}: no F.linear_cross_entropy with options)")
    options = opts()
    return lambda x, w, y: F.linear_cross_entropy(x, w, y, ignore_index=IGNORE, options=options)


def linear_impls(torch: Any, args: argparse.Namespace) -> dict[str, Callable[[], Callable[..., Any]]]:
    """name -> factory returning f(x, W, y) -> loss (raises NotInstalled / Skipped)."""
    F = torch.nn.functional
    dry = args.dry_run

    def softxent():
        if dry:  # the front end takes its numba kernels for CPU tensors: the Triton core under autograd
            return lambda x, w, y: _triton_functions(torch)[1].apply(x, w, y, None)
        import softxent.torch as sxt

        return sxt.linear_cross_entropy

    def naive_compile():
        _no_compile(args)
        return torch.compile(lambda x, w, y: F.cross_entropy(x @ w.T, y), dynamic=False)

    def liger(**kw: Any):
        def make():
            cls = _liger("LigerFusedLinearCrossEntropyLoss")
            try:
                loss = cls(**kw)
            except TypeError as exc:  # an older Liger without accum_dtype
                raise Skipped(f"not in this Liger: {exc}") from exc
            return lambda x, w, y: loss(w, x, y)  # Liger's order: (lin_weight, _input, target)

        return make

    def cce(filter_eps: Any = "default"):
        def make():
            try:
                from cut_cross_entropy import linear_cross_entropy
            except Exception as exc:
                raise NotInstalled from exc
            kw = {} if filter_eps == "default" else dict(filter_eps=filter_eps)
            return lambda x, w, y: linear_cross_entropy(x, w, y, **kw)

        return make

    return {
        "softxent linear_cross_entropy": softxent,
        f"softxent core, gradient filter {FILTER_EPS:g}": lambda: (
            lambda x, w, y: _triton_functions(torch)[1].apply(x, w, y, FILTER_EPS)
        ),
        "naive torch eager (x @ W.T, F.cross_entropy)": lambda: lambda x, w, y: F.cross_entropy(x @ w.T, y),
        "naive float32 (inputs upcast): the float32 reference": lambda: (
            lambda x, w, y: F.cross_entropy(x.float() @ w.float().T, y)
        ),
        "naive torch.compile": naive_compile,
        "torch chunked F.linear_cross_entropy": lambda: _torch_chunked(torch),
        "Liger LigerFusedLinearCrossEntropyLoss": liger(),
        "Liger LigerFusedLinearCrossEntropyLoss (accum_dtype=float32)": liger(accum_dtype=torch.float32),
        "CCE linear_cross_entropy (default, filter on)": cce(),
        "CCE linear_cross_entropy (filter_eps=None)": cce(None),
    }


def ce_impls(torch: Any, args: argparse.Namespace) -> dict[str, Callable[[], Callable[..., Any]]]:
    F = torch.nn.functional

    def softxent():
        if args.dry_run:
            return _triton_functions(torch)[0].apply
        import softxent.torch as sxt

        return sxt.cross_entropy

    def compiled():
        _no_compile(args)
        return torch.compile(F.cross_entropy, dynamic=False)

    return {
        "softxent cross_entropy": softxent,
        "torch eager F.cross_entropy": lambda: F.cross_entropy,
        "torch eager float32 (logits upcast): the float32 reference": lambda: (
            lambda z, y: F.cross_entropy(z.float(), y)
        ),
        "torch.compile F.cross_entropy": compiled,
        "Liger LigerCrossEntropyLoss": lambda: _liger("LigerCrossEntropyLoss")(),
    }


def _status(exc: BaseException) -> str:
    if isinstance(exc, Skipped):
        return str(exc)
    if isinstance(exc, NotInstalled):  # the import's own error: a missing module, or one that fails to import
        cause = exc.__cause__
        return "not installed" + (f" ({type(cause).__name__}: {str(cause)[:200]})" if cause else "")
    return f"error: {type(exc).__name__}: {str(exc)[:200]}"
