"""softxent's Triton kernels on a GPU against F.cross_entropy, Liger-Kernel and Cut Cross-Entropy.

What is measured (bf16, one process, one device, every implementation in the same run)
    1. Linear + cross-entropy, forward + backward, at (N tokens, D, V) =
       (8192, 2304, 256000) (Gemma 2) and (8192, 4096, 128256) (Llama 3):
       gradients for the hidden states x (N, D) and the head's weight W (V, D).
       - ``softxent.torch.linear_cross_entropy(x, W, y)``;
       - the same core without autograd and with gradient filtering
         (``softxent.kernels.triton._linear_head.linear_cross_entropy_triton(..., grad_filter=2**-12)``);
       - the naive head ``F.cross_entropy(x @ W.T, y)``, eager and ``torch.compile``;
       - Liger-Kernel ``LigerFusedLinearCrossEntropyLoss``;
       - Cut Cross-Entropy ``cut_cross_entropy.linear_cross_entropy`` (its
         default, with gradient filtering, and with ``filter_eps=None``).
    2. Cross-entropy on given bf16 logits (N, V) at N = 8192 and the same two V:
       ``softxent.torch.cross_entropy``, ``F.cross_entropy`` eager and
       ``torch.compile``, Liger-Kernel ``LigerCrossEntropyLoss``, and a copy of
       the logits into a fresh tensor (the floor: one read, one write).

How
    Timing: CUDA events around ``loss = f(...); loss.backward()`` (gradients
    set to None before each call, untimed), ``--warmup`` calls first (they
    include compilation), then the median and minimum of ``--reps`` calls.
    Memory: ``torch.cuda.max_memory_allocated`` over one forward + backward,
    after the peak statistics are reset, minus what was allocated before the
    call (the inputs); the gradients the call leaves are part of it.
    Achieved bandwidth (cross-entropy on logits): the least traffic of a loss
    + gradient, one read of the logits and one write of their gradient
    (2 x N x V x 2 bytes), over the median time; as a fraction of the
    device's nominal peak when its name is in ``PEAK_BANDWIDTH`` and of the
    measured copy rate.
    Gradient error: each implementation's gradients against a float64
    reference of the same bf16 inputs, on slices: the first ``--check-rows``
    rows of dL/dx (or dL/dz) and the first ``--check-classes`` rows of dL/dW
    (the latter needs every row's float64 log-sum-exp, computed once per
    shape in row chunks). Reported: relative Frobenius error and the largest
    absolute error.
    A peer that is not installed is listed as "not installed"; one that fails
    (out of memory, an API change) as "error: ..." and the run goes on.

Targets of issue 7 (printed at the end): linear cross-entropy at least 1.2x
faster than the faster of Liger and CCE, peak memory no more than CCE's, and a
weight-gradient error no larger than the best of them, at both shapes; the
cross-entropy on logits at least 1.2x faster than Liger and at 80% or more of
the GPU's memory bandwidth.

Run: ``python benchmarks/cross_entropy_gpu.py`` on a CUDA machine (``--help``
for options; ``pip install liger-kernel cut-cross-entropy`` for the peers).
Writes ``benchmarks/results/cross_entropy_gpu.md`` and ``.json``. Without a
GPU it exits with status 2. ``--dry-run`` runs every code path on the CPU on
tiny shapes, softxent's kernels in Triton's interpreter (timings meaningless),
and writes its tables to a temporary folder (or ``--out``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

if "--dry-run" in sys.argv[1:]:
    # Triton fixes interpreter or compiler when it is first imported: before torch/softxent import it.
    os.environ["TRITON_INTERPRET"] = "1"

LINEAR_SHAPES = [(8192, 2304, 256000), (8192, 4096, 128256)]
DRY_LINEAR_SHAPES = [(24, 40, 300), (20, 24, 130)]
SEED = 20240601
FILTER_EPS = 2.0**-12

#: Nominal peak memory bandwidth (bytes/s) by a substring of the device name.
PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 NVL": 3.9e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,  # SXM
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100": 1.935e12,  # PCIe 80GB
    "B200": 8.0e12,
}

EXIT_NO_GPU = 2


class NotInstalled(Exception):
    pass


# --------------------------------------------------------------------------- inputs and references


def make_linear_inputs(torch: Any, n: int, d: int, v: int, device: str) -> tuple[Any, Any, Any]:
    """x ~ N(0, 1), W ~ N(0, 1/d) * 2 (logits of std ~2, a realistic spread), uniform labels, 1/16 ignored."""
    g = torch.Generator(device="cpu").manual_seed(SEED)
    x = torch.randn(n, d, generator=g).to(device=device, dtype=torch.bfloat16)
    w = (torch.randn(v, d, generator=g) * (2.0 / math.sqrt(d))).to(device=device, dtype=torch.bfloat16)
    y = torch.randint(0, v, (n,), generator=g)
    y[::16] = -100
    return x, w, y.to(device)


def linear_reference(torch: Any, x: Any, w: Any, y: Any, rows: int, classes: int) -> dict[str, Any]:
    """float64 dL/dx[:rows] and dL/dW[:classes] of the mean cross-entropy, the logits in row chunks."""
    n = x.shape[0]
    kept = y != -100
    n_kept = int(kept.sum())
    wd = w.double()
    lse = torch.empty(n, dtype=torch.float64, device=x.device)
    step = max(1, (1 << 28) // (8 * w.shape[0]))
    for r0 in range(0, n, step):
        lse[r0 : r0 + step] = torch.logsumexp(x[r0 : r0 + step].double() @ wd.T, dim=1)

    def g_rows(r0: int, r1: int, c0: int, c1: int) -> Any:
        z = x[r0:r1].double() @ wd[c0:c1].T
        g = torch.exp(z - lse[r0:r1, None])
        yy = y[r0:r1]
        inside = kept[r0:r1] & (yy >= c0) & (yy < c1)
        idx = inside.nonzero()[:, 0]
        g[idx, yy[idx] - c0] -= 1.0
        g[~kept[r0:r1]] = 0.0
        return g / n_kept

    dx = g_rows(0, rows, 0, w.shape[0]) @ wd
    dw = torch.zeros(classes, x.shape[1], dtype=torch.float64, device=x.device)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        dw += g_rows(r0, r1, 0, classes).T @ x[r0:r1].double()
    return dict(dx=dx, dw=dw)


def ce_reference(torch: Any, z: Any, y: Any, rows: int) -> Any:
    """float64 dL/dz[:rows] of the mean cross-entropy."""
    kept = y != -100
    n_kept = int(kept.sum())
    g = torch.softmax(z[:rows].double(), dim=1)
    idx = kept[:rows].nonzero()[:, 0]
    g[idx, y[:rows][idx]] -= 1.0
    g[~kept[:rows]] = 0.0
    return g / n_kept


def rel_err(torch: Any, got: Any, ref: Any) -> tuple[float, float]:
    if got is None:
        return math.nan, math.nan
    diff = got.double() - ref
    return float(diff.norm() / ref.norm()), float(diff.abs().max())


# --------------------------------------------------------------------------- implementations


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
        @staticmethod
        def forward(ctx, x, w, y, grad_filter):
            loss, dx, dw, _, _ = linear_cross_entropy_triton(x, w, y, grad_filter=grad_filter)
            ctx.save_for_backward(dx, dw)
            return loss.to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            dx, dw = ctx.saved_tensors
            return dx * g.to(dx.dtype), dw * g.to(dw.dtype), None, None

    return TritonCE, TritonLinear


def linear_impls(torch: Any, dry: bool) -> dict[str, Callable[[], Callable[..., Any]]]:
    """name -> factory returning f(x, W, y) -> loss (raises NotInstalled when the peer is missing)."""
    F = torch.nn.functional

    def softxent():
        if dry:
            return lambda x, w, y: _triton_functions(torch)[1].apply(x, w, y, None)
        import softxent.torch as sxt

        return sxt.linear_cross_entropy

    def softxent_filter():
        return lambda x, w, y: _triton_functions(torch)[1].apply(x, w, y, FILTER_EPS)

    def naive():
        return lambda x, w, y: F.cross_entropy(x @ w.T, y)

    def naive_compile():
        return torch.compile(lambda x, w, y: F.cross_entropy(x @ w.T, y), dynamic=False)

    def liger():
        try:
            from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
        except ImportError as exc:
            raise NotInstalled from exc
        loss = LigerFusedLinearCrossEntropyLoss()
        return lambda x, w, y: loss(w, x, y)  # Liger's order: (lin_weight, _input, target)

    def cce(filter_eps: Any = "default"):
        def make():
            try:
                from cut_cross_entropy import linear_cross_entropy
            except ImportError as exc:
                raise NotInstalled from exc
            kw = {} if filter_eps == "default" else dict(filter_eps=filter_eps)
            return lambda x, w, y: linear_cross_entropy(x, w, y, **kw)

        return make

    impls = {
        "softxent linear_cross_entropy": softxent,
        f"softxent core, gradient filter {FILTER_EPS:g}": softxent_filter,
        "naive torch eager (x @ W.T, F.cross_entropy)": naive,
        "naive torch.compile": naive_compile,
        "Liger LigerFusedLinearCrossEntropyLoss": liger,
        "CCE linear_cross_entropy (default, filter on)": cce(),
        "CCE linear_cross_entropy (filter_eps=None)": cce(None),
    }
    return impls


def ce_impls(torch: Any, dry: bool) -> dict[str, Callable[[], Callable[..., Any]]]:
    F = torch.nn.functional

    def softxent():
        if dry:
            return _triton_functions(torch)[0].apply
        import softxent.torch as sxt

        return sxt.cross_entropy

    def liger():
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss
        except ImportError as exc:
            raise NotInstalled from exc
        return LigerCrossEntropyLoss()

    return {
        "softxent cross_entropy": softxent,
        "torch eager F.cross_entropy": lambda: F.cross_entropy,
        "torch.compile F.cross_entropy": lambda: torch.compile(F.cross_entropy, dynamic=False),
        "Liger LigerCrossEntropyLoss": liger,
    }


# --------------------------------------------------------------------------- timing


class Clock:
    """CUDA events on a GPU; perf_counter on the CPU (the dry run)."""

    def __init__(self, torch: Any, cuda: bool) -> None:
        self.torch, self.cuda = torch, cuda

    def time(self, fn: Callable[[], Any]) -> float:
        if self.cuda:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            self.torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def peak(self, fn: Callable[[], Any]) -> float:
        """Peak bytes allocated during fn beyond what was allocated before it."""
        if not self.cuda:
            fn()
            return math.nan
        torch = self.torch
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - base)


def _free(torch: Any, cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _error_row(name: str, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, NotInstalled):  # the import's own error: a missing module, or one that fails to import
        cause = exc.__cause__
        msg = "not installed" + (f" ({type(cause).__name__}: {str(cause)[:200]})" if cause else "")
    else:
        msg = f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return dict(impl=name, status=msg)


def _shapes(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    return args.shape or (DRY_LINEAR_SHAPES if args.dry_run else LINEAR_SHAPES)


def _parse_shape(text: str) -> tuple[int, int, int]:
    try:
        n, d, v = (int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is N,D,V (three positive integers), got {text!r}") from None
    if min(n, d, v) < 1:
        raise argparse.ArgumentTypeError(f"a shape is N,D,V (three positive integers), got {text!r}")
    return n, d, v


def bench_linear(torch: Any, args: argparse.Namespace, clock: Clock, device: str) -> list[dict[str, Any]]:
    rows_out = []
    for n, d, v in _shapes(args):
        x0, w0, y = make_linear_inputs(torch, n, d, v, device)
        ref = linear_reference(torch, x0, w0, y, min(args.check_rows, n), min(args.check_classes, v))
        for name, factory in linear_impls(torch, args.dry_run).items():
            if (args.impl and not any(s.lower() in name.lower() for s in args.impl)) or (
                getattr(args, "no_compile", False) and "torch.compile" in name
            ):
                continue
            row: dict[str, Any] = dict(shape=f"{n}x{d}x{v}", impl=name)
            x = x0.clone().requires_grad_(True)
            w = w0.clone().requires_grad_(True)
            try:
                fn = factory()

                last: list[Any] = []

                def step(fn: Any = fn, x: Any = x, w: Any = w, y: Any = y, last: list[Any] = last) -> None:
                    x.grad = w.grad = None
                    loss = fn(x, w, y)
                    loss.backward()
                    last[:] = [loss]

                for _ in range(args.warmup):
                    step()
                x.grad = w.grad = None
                _free(torch, clock.cuda)
                row["peak_bytes"] = clock.peak(step) if clock.cuda else math.nan
                times = []
                for _ in range(args.reps):
                    x.grad = w.grad = None
                    times.append(clock.time(step))
                loss = last[0]  # the gradients of the last timed call stay for the error check
                row.update(
                    status="ok", median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
                    loss=float(loss.detach()),
                )  # fmt: skip
                row["dx_rel_err"], row["dx_max_err"] = rel_err(torch, x.grad[: ref["dx"].shape[0]], ref["dx"])
                row["dw_rel_err"], row["dw_max_err"] = rel_err(torch, w.grad[: ref["dw"].shape[0]], ref["dw"])
            except Exception as exc:  # a peer's failure is a result, not the end of the run
                row.update(_error_row(name, exc))
                if args.verbose:
                    traceback.print_exc()
            print(_line(row), flush=True)
            rows_out.append(row)
            del x, w
            _free(torch, clock.cuda)
        del x0, w0, y, ref
        _free(torch, clock.cuda)
    return rows_out


def bench_ce(torch: Any, args: argparse.Namespace, clock: Clock, device: str) -> list[dict[str, Any]]:
    rows_out = []
    for n, _, v in _shapes(args):
        g = torch.Generator(device="cpu").manual_seed(SEED)
        z0 = (torch.randn(n, v, generator=g) * 2.0).to(device=device, dtype=torch.bfloat16)
        y = torch.randint(0, v, (n,), generator=g)
        y[::16] = -100
        y = y.to(device)
        ref = ce_reference(torch, z0, y, min(args.check_rows, n))
        min_bytes = 2 * n * v * z0.element_size()  # read the logits, write the gradient

        # The floor: one read and one write of N x V bf16 into a fresh tensor.
        copy_times = [clock.time(lambda z0=z0: torch.empty_like(z0).copy_(z0)) for _ in range(args.warmup + args.reps)]
        copy_s = statistics.median(copy_times[args.warmup :])
        floor = dict(shape=f"{n}x{v}", impl="floor: copy into a fresh tensor", status="ok",
                     median_ms=1e3 * copy_s, min_ms=1e3 * min(copy_times[args.warmup :]),
                     bandwidth=min_bytes / copy_s)  # fmt: skip
        print(_line(floor), flush=True)
        rows_out.append(floor)
        for name, factory in ce_impls(torch, args.dry_run).items():
            if (args.impl and not any(s.lower() in name.lower() for s in args.impl)) or (
                getattr(args, "no_compile", False) and "torch.compile" in name
            ):
                continue
            row: dict[str, Any] = dict(shape=f"{n}x{v}", impl=name)
            z = z0.clone().requires_grad_(True)
            try:
                fn = factory()

                last: list[Any] = []

                def step(fn: Any = fn, z: Any = z, y: Any = y, last: list[Any] = last) -> None:
                    z.grad = None
                    loss = fn(z, y)
                    loss.backward()
                    last[:] = [loss]

                def reset(z: Any = z, z0: Any = z0) -> None:
                    # Liger writes the gradient over its input: every call gets the logits afresh.
                    z.grad = None
                    with torch.no_grad():
                        z.copy_(z0)

                for _ in range(args.warmup):
                    reset()
                    step()
                reset()
                _free(torch, clock.cuda)
                row["peak_bytes"] = clock.peak(step) if clock.cuda else math.nan
                times = []
                for _ in range(args.reps):
                    reset()
                    times.append(clock.time(step))
                loss = last[0]
                med = statistics.median(times)
                row.update(status="ok", median_ms=1e3 * med, min_ms=1e3 * min(times), loss=float(loss.detach()),
                           bandwidth=min_bytes / med)  # fmt: skip
                row["grad_rel_err"], row["grad_max_err"] = rel_err(torch, z.grad[: ref.shape[0]], ref)
            except Exception as exc:
                row.update(_error_row(name, exc))
                if args.verbose:
                    traceback.print_exc()
            print(_line(row), flush=True)
            rows_out.append(row)
            del z
            _free(torch, clock.cuda)
        del z0, ref
        _free(torch, clock.cuda)
    return rows_out


# --------------------------------------------------------------------------- reports


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def _line(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return f"  {row['shape']:>20}  {row['impl']:<48} {row.get('status')}"
    mem = row.get("peak_bytes")
    return (f"  {row['shape']:>20}  {row['impl']:<48} {_fmt(row.get('median_ms'), '9.2f')} ms"
            f"  peak {_fmt(None if mem is None else mem / 2**30, '7.3f')} GiB")  # fmt: skip


def peak_bandwidth(name: str) -> float | None:
    for key, bw in PEAK_BANDWIDTH.items():
        if key in name:
            return bw
    return None


def targets(report: dict[str, Any]) -> list[str]:
    """The issue's targets, met or not, from the rows of this run."""
    out = []
    by = {}
    for r in report["linear"] + report["ce"]:
        if r.get("status") == "ok":
            by[(r["shape"], r["impl"])] = r
    for shape in sorted({r["shape"] for r in report["linear"]}):
        sx = by.get((shape, "softxent linear_cross_entropy"))
        peers = [by.get((shape, k)) for k in ("Liger LigerFusedLinearCrossEntropyLoss",
                                              "CCE linear_cross_entropy (default, filter on)",
                                              "CCE linear_cross_entropy (filter_eps=None)")]  # fmt: skip
        peers = [p for p in peers if p]
        if not sx or not peers:
            out.append(f"- linear {shape}: n/a (softxent or every peer missing)")
            continue
        fastest = min(peers, key=lambda p: p["median_ms"])
        speedup = fastest["median_ms"] / sx["median_ms"]
        cces = [p for p in peers if p["impl"].startswith("CCE")]
        mem_ok = all(sx["peak_bytes"] <= p["peak_bytes"] for p in cces) if cces else None
        best_dw = min(p["dw_rel_err"] for p in peers)
        out.append(
            f"- linear {shape}: {speedup:.2f}x the fastest peer ({fastest['impl']}) "
            f"[{'met' if speedup >= 1.2 else 'NOT met'}: >= 1.2x]; peak memory vs CCE "
            f"[{'n/a' if mem_ok is None else 'met' if mem_ok else 'NOT met'}]; dW error {sx['dw_rel_err']:.2e} vs "
            f"best peer {best_dw:.2e} [{'met' if sx['dw_rel_err'] <= best_dw else 'NOT met'}]"
        )
    peak = report.get("peak_bandwidth")
    for shape in sorted({r["shape"] for r in report["ce"]}):
        sx = by.get((shape, "softxent cross_entropy"))
        lg = by.get((shape, "Liger LigerCrossEntropyLoss"))
        parts = []
        if sx and lg:
            s = lg["median_ms"] / sx["median_ms"]
            parts.append(f"{s:.2f}x Liger [{'met' if s >= 1.2 else 'NOT met'}: >= 1.2x]")
        else:
            parts.append("vs Liger n/a")
        if sx and peak:
            frac = sx["bandwidth"] / peak
            parts.append(f"{100 * frac:.0f}% of nominal bandwidth [{'met' if frac >= 0.8 else 'NOT met'}: >= 80%]")
        out.append(f"- cross-entropy {shape}: " + "; ".join(parts))
    return out


def write_reports(report: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / f"{stem}.json"
    js.write_text(json.dumps(report, indent=2, default=float) + "\n")
    peak = report.get("peak_bandwidth")
    lines = [
        "# Cross-entropy on a GPU: softxent vs torch, Liger-Kernel, Cut Cross-Entropy",
        "",
        (
            f"Device: **{report['device']}**"
            f"{' (dry run: CPU, Triton interpreter; timings meaningless)' if report['dry_run'] else ''}. "
            f"{report['date']}. Versions: "
        )
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + ".",
        "",
        (
            f"bf16 inputs; forward + backward; median of {report['args']['reps']} CUDA-event timings after "
            f"{report['args']['warmup']} warm-up calls; peak = `torch.cuda.max_memory_allocated` during one call "
            "minus the memory allocated before it (inputs), gradients included. Errors: against float64 of the "
            f"same bf16 inputs, on the first {report['args']['check_rows']} rows of dx (dz) and the first "
            f"{report['args']['check_classes']} rows of dW; relative Frobenius norm."
        ),
        "",
        "## Linear + cross-entropy (gradients for x and W)",
        "",
        "| N×D×V | implementation | median ms | min ms | peak GiB | dx rel. err | dW rel. err | status |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["linear"]:
        mem = r.get("peak_bytes")
        lines.append(
            f"| {r['shape']} | {r['impl']} | {_fmt(r.get('median_ms'), '.2f')} | {_fmt(r.get('min_ms'), '.2f')} | "
            f"{_fmt(None if mem is None else mem / 2**30, '.3f')} | {_fmt(r.get('dx_rel_err'), '.2e')} | "
            f"{_fmt(r.get('dw_rel_err'), '.2e')} | {r.get('status')} |"
        )
    lines += [
        "",
        "## Cross-entropy on bf16 logits (gradient for the logits)",
        "",
        "Bandwidth: 2·N·V·2 bytes (read the logits, write the gradient) over the median time"
        + (
            f"; nominal peak of this device {peak / 1e12:.2f} TB/s."
            if peak
            else "; nominal peak unknown for this device."
        ),
        "",
        "| N×V | implementation | median ms | min ms | peak GiB | TB/s | % of peak | grad rel. err | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["ce"]:
        mem = r.get("peak_bytes")
        bw = r.get("bandwidth")
        lines.append(
            f"| {r['shape']} | {r['impl']} | {_fmt(r.get('median_ms'), '.2f')} | {_fmt(r.get('min_ms'), '.2f')} | "
            f"{_fmt(None if mem is None else mem / 2**30, '.3f')} | {_fmt(None if bw is None else bw / 1e12, '.2f')} | "
            f"{_fmt(None if (bw is None or not peak) else 100 * bw / peak, '.0f')} | "
            f"{_fmt(r.get('grad_rel_err'), '.2e')} | {r.get('status')} |"
        )
    lines += ["", "## Targets (issue 7)", ""] + (report["targets"] or ["- none evaluated"]) + [""]
    md = out_dir / f"{stem}.md"
    md.write_text("\n".join(lines))
    return md, js


def versions(torch: Any) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("softxent", "triton", "liger-kernel", "cut-cross-entropy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["ce", "linear"], help="run one of the two parts")
    parser.add_argument("--impl", action="append", metavar="TEXT",
                        help="only implementations whose name contains TEXT (repeatable)")  # fmt: skip
    parser.add_argument("--shape", action="append", type=_parse_shape, metavar="N,D,V",
                        help="tokens, hidden size, vocabulary (repeatable; default the two of the issue; the "
                             "cross-entropy part uses N x V logits)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=None, help="timed calls per implementation (default 10)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 3)")
    parser.add_argument("--check-rows", type=int, default=256, help="rows of dx / dz checked against float64")
    parser.add_argument("--check-classes", type=int, default=4096, help="rows of dW checked against float64")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder of the .md/.json tables (default benchmarks/results; a temporary folder "
                             "for --dry-run)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: tiny shapes on the CPU, softxent's kernels in Triton's interpreter")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="print the traceback of a failing implementation")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out the torch.compile rows (their compilation takes minutes)")  # fmt: skip
    args = parser.parse_args(argv)
    args.reps = args.reps if args.reps is not None else (1 if args.dry_run else 10)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.dry_run else 3)
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be >= 1 and --warmup >= 0")

    try:
        import torch
    except ImportError:
        print("cross_entropy_gpu.py: needs PyTorch (pip install softxent[torch])", file=sys.stderr)
        return EXIT_NO_GPU
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("cross_entropy_gpu.py: no CUDA GPU is available (torch.cuda.is_available() is False); "
              "run it on a machine with one, or try --dry-run", file=sys.stderr)  # fmt: skip
        return EXIT_NO_GPU
    try:
        import triton  # noqa: F401
    except ImportError:
        print("cross_entropy_gpu.py: softxent's GPU kernels need Triton: pip install softxent[triton]", file=sys.stderr)
        return EXIT_NO_GPU
    if args.dry_run and cuda:
        print("cross_entropy_gpu.py: --dry-run runs on the CPU even though a GPU is present", file=sys.stderr)
    device = "cpu" if args.dry_run else "cuda"
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or 'unknown'})"
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="softxent-gpu-bench-")) if args.dry_run
                           else Path(__file__).parent / "results")  # fmt: skip
    clock = Clock(torch, device == "cuda")
    print(f"device: {device_name}", flush=True)

    report: dict[str, Any] = dict(
        device=device_name, dry_run=args.dry_run, date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions=versions(torch), args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        peak_bandwidth=None if args.dry_run else peak_bandwidth(device_name), linear=[], ce=[],
    )  # fmt: skip
    if args.only in (None, "linear"):
        print("linear + cross-entropy:", flush=True)
        report["linear"] = bench_linear(torch, args, clock, device)
    if args.only in (None, "ce"):
        print("cross-entropy on logits:", flush=True)
        report["ce"] = bench_ce(torch, args, clock, device)
    report["targets"] = targets(report)
    print("\n".join(report["targets"]))
    md, js = write_reports(report, out_dir, "cross_entropy_gpu")
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
