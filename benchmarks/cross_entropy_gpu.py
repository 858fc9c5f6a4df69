"""softxent's Triton kernels on a GPU against torch, Liger-Kernel and Cut Cross-Entropy, with two sweeps.

Parts (``--only``, repeatable; default all, in this order)
    ``linear``: linear + cross-entropy, forward + backward (gradients for x and W), bf16, at
        (N tokens, D, V) = (8192, 2304, 256000) (Gemma 2) and (8192, 4096, 128256) (Llama 3):
        softxent (``softxent.torch.linear_cross_entropy``, and its core with gradient filtering),
        the naive head ``F.cross_entropy(x @ W.T, y)`` in bf16, in float32 (inputs upcast: the
        float32 reference's own error) and under ``torch.compile``, torch's chunked
        ``F.linear_cross_entropy(..., options=LinearCrossEntropyOptions())`` (where this torch has it),
        Liger-Kernel ``LigerFusedLinearCrossEntropyLoss`` (its default and ``accum_dtype=torch.float32``),
        Cut Cross-Entropy ``linear_cross_entropy`` (its default, gradient filter on, and ``filter_eps=None``).
    ``ce``: cross-entropy on given bf16 logits (N, V), same N and V: softxent, ``F.cross_entropy``
        (bf16, float32, ``torch.compile``), Liger ``LigerCrossEntropyLoss``, and a copy of the
        logits into a fresh tensor (the floor: one read, one write).
    ``ce-sweep``: softxent's cross-entropy kernel alone at the ``ce`` shapes over classes per tile,
        warps, software-pipelining stages and programs launched.
    ``linear-sweep``: softxent's linear head (forward + backward, no autograd) at the first shape
        over its tile configurations and vocabulary splits, the defaults beside the earlier ones.

Input sets (``--inputs``, default both), each row says which
    ``normal``: logits of std 2 (x ~ N(0, 1), W ~ N(0, 4/D)), uniform labels: no tile of the
        softmax is ever small enough for gradient filtering, which then measures only its overhead.
    ``zipf``: peaked logits, a Zipf log-prior over the classes plus noise, as a language model's
        are: z_ic = -s ln(c + 1) + N(0, 1) with s = ``ZIPF_S`` (classes in frequency order, as a
        BPE vocabulary roughly is), labels drawn from the same Zipf law. The linear head gets it
        through its first feature (x_i0 = 1, W_c0 = the prior), so D stays the same. About 98% of
        the (128, 128) tiles of G at V = 256000 then have every entry below 2**-12.
    1/16 of the labels are ``-100`` (ignored) in both.

How
    Timing: CUDA events around ``loss = f(...); loss.backward()`` (gradients set to None before
    each call, untimed), ``--warmup`` calls first (they include compilation), then the median
    and minimum of ``--reps`` calls. Memory: ``torch.cuda.max_memory_allocated`` over one call,
    after the peak statistics are reset, minus what was allocated before it (the inputs); the
    gradients the call leaves are part of it. Bandwidth (on logits): one read of the logits and
    one write of their gradient (2 x N x V x 2 bytes) over the median time, as a fraction of the
    copy row's (measured in the same run) and of the device's nominal peak (``PEAK_BANDWIDTH``).
    Errors, against float64 of the same bf16 inputs: the loss (relative), the first
    ``--check-rows`` rows of dL/dx (dL/dz) and the first ``--check-classes`` rows of dL/dW
    (relative Frobenius norm and largest absolute error). The float32 rows give the error a
    float32 computation of the same inputs makes (its gradient rounded to bf16 like every other).
    A peer that does not import shows its import error; one this torch lacks says so; one that
    fails (out of memory, an API change) shows "error: ..." and the run goes on.
    Every table is written (``.md`` and ``.json``) after each row, so a run stopped by a time
    limit keeps everything measured before.

Targets (issue 20; printed and written at the end of each table): the linear head at least
1.2x faster than the fastest of Liger, CCE and torch's chunked head, with peak memory at most
1.1x CCE's, and gradients within the larger of the best peer's and the float32 reference's
error; the cross-entropy on logits at least 1.2x Liger and at least 70% of the copy's bandwidth.

Run: ``python benchmarks/cross_entropy_gpu.py`` on a CUDA machine (``--help``; the peers:
``pip install liger-kernel cut-cross-entropy``); ``benchmarks/gpu_check.sh`` runs every part
with time limits. Writes ``benchmarks/results/cross_entropy_gpu.md`` and ``.json`` (``--out``).
Without a GPU it exits with status 2. ``--dry-run`` runs every part on the CPU on tiny shapes,
softxent's kernels in Triton's interpreter, the peers that import; the rest (``torch.compile``)
is listed as skipped with the reason; timings are meaningless; tables go to a temporary folder.

Beside it: ``_gpu_inputs.py`` (the input sets and the float64 references), ``_gpu_peers.py`` (the
implementations: softxent and its peers), ``_gpu_tables.py`` (the tables and the targets); this file
holds the timing, the parts and the command line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
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

# The parts of this benchmark beside it (they import neither torch nor triton); found when the script is
# loaded by path too (tests/test_gpu_bench.py).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _gpu_inputs import (  # noqa: E402
    INPUT_SETS,
    ce_reference,
    linear_reference,
    loss_err,
    make_ce_inputs,
    make_linear_inputs,
    rel_err,
)
from _gpu_peers import NotInstalled, Skipped, _status, _triton_functions, ce_impls, linear_impls  # noqa: E402
from _gpu_tables import PARTS, Reporter, peak_bandwidth, targets  # noqa: E402, F401 - targets: for the tests

LINEAR_SHAPES = [(8192, 2304, 256000), (8192, 4096, 128256)]
DRY_LINEAR_SHAPES = [(8, 16, 72)]

#: ce-sweep: (classes per tile, warps, stages, programs as a multiple of the SM count or None: one per row,
#: the L2 schedule ``l2_hints``, per-lane state ``lanes``, pass 1's exponential ``exp_mode``), the second
#: H200 run's rows. The default launch (2048 / 4 / 1, per lane, split ex2, no L2 schedule) was its fastest.
CE_SWEEP = [  # (block, warps, stages, programs per SM or None, l2_hints, lanes, exp_mode)
    (4096, 8, 1, None, True, False, 1),  # the first two runs' fastest per-tile row
    (4096, 8, 1, None, True, False, 0),  # tl.exp in pass 1: how much the exponentials cost
    (4096, 8, 1, None, True, False, 2),  # ex2.approx with the product's rounding put back
    (4096, 8, 1, None, False, False, 2),
    (4096, 16, 1, 8, True, False, 2),
    (16384, 32, 1, None, True, False, 2),
    (32768, 32, 1, None, True, False, 2),
    (8192, 16, 1, None, True, True, 1),  # the second run's fastest (per lane)
    (8192, 16, 1, None, True, True, 0),
    (8192, 16, 1, None, True, True, 2),
    (2048, 4, 1, None, False, True, 2),
    (4096, 8, 1, None, True, True, 2),
]
DRY_CE_SWEEP = [(32, 4, 1, None, False, False, 1), (32, 4, 2, None, True, True, 2), (32, 4, 2, 1, True, True, 0)]
#: linear-sweep: (BM, BN, BK, warps, stages) or None (the defaults), and the forward's splits rule.
LINEAR_SWEEP = [
    (None, "waves"),  # the defaults (128 x 128 x 32 for these plain inputs), splits in whole waves of SMs
    (None, "4 per SM"),  # the earlier splits rule (about 4 programs per SM)
    ((128, 64, 64, 8, 3), "waves"),  # 64-deep K steps, no spills at sm_90a
    ((128, 64, 64, 8, 4), "waves"),
    ((128, 128, 64, 8, 3), "waves"),  # spills at sm_90a (triton 3.7.1): the compile table
]
DRY_LINEAR_SWEEP = [(None, "waves"), ((16, 64, 16, 4, 1), "4 per SM")]

EXIT_NO_GPU = 2


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
        """Peak bytes allocated during fn beyond what was allocated before it (NaN on the CPU)."""
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

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()


def _wanted(args: argparse.Namespace, name: str) -> bool:
    return not args.impl or any(s.lower() in name.lower() for s in args.impl)


def _measure(clock: Clock, args: argparse.Namespace, step: Callable[[], Any], reset: Callable[[], Any]) -> dict:
    """Warm-up calls, the peak memory of one call, then the median and minimum of the timed calls."""
    for _ in range(args.warmup):
        reset()
        step()
    reset()
    clock.free()
    peak = clock.peak(step) if clock.cuda else math.nan  # the dry run: no memory figure, one call less
    times = []
    for _ in range(args.reps):
        reset()
        times.append(clock.time(step))
    med = statistics.median(times)
    return dict(status="ok", median_ms=1e3 * med, min_ms=1e3 * min(times), peak_bytes=peak)


def bench_linear(torch: Any, args: argparse.Namespace, clock: Clock, device: str, out: Reporter) -> None:
    for n, d, v in _shapes(args):
        for kind in args.inputs:
            x0, w0, y = make_linear_inputs(torch, n, d, v, device, kind)
            ref = linear_reference(torch, x0, w0, y, min(args.check_rows, n), min(args.check_classes, v))
            for name, factory in linear_impls(torch, args).items():
                if not _wanted(args, name):
                    continue
                row: dict[str, Any] = dict(shape=f"{n}x{d}x{v}", inputs=kind, impl=name)
                x = x0.clone().requires_grad_(True)
                w = w0.clone().requires_grad_(True)
                last: list[Any] = []
                try:
                    fn = factory()

                    def step(fn: Any = fn, x: Any = x, w: Any = w, y: Any = y, last: list[Any] = last) -> None:
                        loss = fn(x, w, y)
                        loss.backward()
                        last[:] = [loss]

                    def reset(x: Any = x, w: Any = w) -> None:
                        x.grad = w.grad = None

                    row.update(_measure(clock, args, step, reset))
                    row.update(loss=float(last[0].detach()), loss_rel_err=loss_err(last[0], ref["loss"]))
                    row["dx_rel_err"], row["dx_max_err"] = rel_err(torch, x.grad[: ref["dx"].shape[0]], ref["dx"])
                    row["dw_rel_err"], row["dw_max_err"] = rel_err(torch, w.grad[: ref["dw"].shape[0]], ref["dw"])
                    if "gradient filter" in name:
                        row["note"] = f"{int(_triton_functions(torch)[1].skipped[0].sum())} tiles of G skipped"
                except Exception as exc:  # a peer's failure is a result, not the end of the run
                    row.update(status=_status(exc))
                    if args.verbose and not isinstance(exc, (Skipped, NotInstalled)):
                        traceback.print_exc()
                out.add("linear", row)
                del x, w, last
                clock.free()
            del x0, w0, y, ref
            clock.free()


def bench_ce(torch: Any, args: argparse.Namespace, clock: Clock, device: str, out: Reporter) -> None:
    for n, _, v in _shapes(args):
        for kind in args.inputs:
            z0, y = make_ce_inputs(torch, n, v, device, kind)
            ref = ce_reference(torch, z0, y, min(args.check_rows, n))
            least = 2 * n * v * z0.element_size()  # read the logits, write the gradient
            base = dict(shape=f"{n}x{v}", inputs=kind)
            copy = _copy_row(torch, args, clock, z0, least)
            out.add("ce", dict(base, **copy))
            for name, factory in ce_impls(torch, args).items():
                if not _wanted(args, name):
                    continue
                row: dict[str, Any] = dict(base, impl=name)
                z = z0.clone().requires_grad_(True)
                last: list[Any] = []
                try:
                    fn = factory()

                    def step(fn: Any = fn, z: Any = z, y: Any = y, last: list[Any] = last) -> None:
                        loss = fn(z, y)
                        loss.backward()
                        last[:] = [loss]

                    def reset(z: Any = z, z0: Any = z0) -> None:
                        z.grad = None  # Liger writes the gradient over its input: every call gets the logits afresh
                        with torch.no_grad():
                            z.copy_(z0)

                    row.update(_measure(clock, args, step, reset))
                    row.update(loss=float(last[0].detach()), loss_rel_err=loss_err(last[0], ref["loss"]))
                    row["bandwidth"] = least / (row["median_ms"] / 1e3)
                    row["copy_fraction"] = row["bandwidth"] / copy["bandwidth"]
                    row["grad_rel_err"], row["grad_max_err"] = rel_err(torch, z.grad[: ref["dz"].shape[0]], ref["dz"])
                except Exception as exc:
                    row.update(status=_status(exc))
                    if args.verbose and not isinstance(exc, (Skipped, NotInstalled)):
                        traceback.print_exc()
                out.add("ce", row)
                del z, last
                clock.free()
            del z0, y, ref
            clock.free()


def _copy_row(torch: Any, args: argparse.Namespace, clock: Clock, z0: Any, least: int) -> dict[str, Any]:
    """The floor: one read and one write of the logits into a fresh tensor."""
    times = [clock.time(lambda: torch.empty_like(z0).copy_(z0)) for _ in range(args.warmup + args.reps)]
    med = statistics.median(times[args.warmup :])
    return dict(impl="floor: copy into a fresh tensor", status="ok", median_ms=1e3 * med,
                min_ms=1e3 * min(times[args.warmup :]), bandwidth=least / med, copy_fraction=1.0)  # fmt: skip


def _n_sm(torch: Any, device: str) -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else 2


def sweep_ce(torch: Any, args: argparse.Namespace, clock: Clock, device: str, out: Reporter) -> None:
    """softxent's cross-entropy kernel alone (loss + gradient, no autograd) over its launch settings."""
    from softxent.kernels.triton._cross_entropy import ce_launch_config, cross_entropy_rows

    n_sm = _n_sm(torch, device)
    for n, _, v in _shapes(args):
        z, y = make_ce_inputs(torch, n, v, device, "normal")
        ref = ce_reference(torch, z, y, min(args.check_rows, n))
        least = 2 * n * v * z.element_size()
        copy = _copy_row(torch, args, clock, z, least)
        out.add("ce-sweep", dict(shape=f"{n}x{v}", config="floor: copy into a fresh tensor", **copy))
        _, block0, warps0, stages0 = ce_launch_config(v)
        default = dict(
            shape=f"{n}x{v}",
            config=f"default: BLOCK={block0} warps={warps0} stages={stages0} programs=rows, per lane, exp=split ex2",
        )
        configs = [(None, None, None, None, None, None, None, default)] + [
            (*c, None) for c in (DRY_CE_SWEEP if args.dry_run else CE_SWEEP)
        ]
        for block, warps, stages, k, hints, lanes, exp_mode, named in configs:
            programs = None if k is None else k * n_sm
            row = named or dict(shape=f"{n}x{v}", config=f"BLOCK={block} warps={warps} stages={stages} "
                                f"programs={'rows' if k is None else f'{k} x {n_sm} SMs'}"
                                + (" l2_hints" if hints else "") + (" per lane" if lanes else "")
                                + {0: " exp=tl.exp", 1: "", 2: " exp=split ex2"}[exp_mode])  # fmt: skip
            last: list[Any] = []

            def step(block=block, warps=warps, stages=stages, programs=programs, hints=hints, lanes=lanes, last=last,
                     z=z, y=y, exp_mode=exp_mode):  # fmt: skip
                knobs = dict(block=block, num_warps=warps, num_stages=stages, programs=programs, l2_hints=hints,
                             lanes=lanes, exp_mode=exp_mode)  # fmt: skip
                last[:] = cross_entropy_rows(z, y, **{k: v for k, v in knobs.items() if v is not None})

            try:
                row.update(_measure(clock, args, step, lambda: None))
                row["bandwidth"] = least / (row["median_ms"] / 1e3)
                row["copy_fraction"] = row["bandwidth"] / copy["bandwidth"]
                row["loss_rel_err"] = loss_err(last[0], ref["loss"])
                row["grad_rel_err"], _ = rel_err(torch, last[1][: ref["dz"].shape[0]], ref["dz"])
            except Exception as exc:
                row.update(status=_status(exc))
            out.add("ce-sweep", row)
            del last
            clock.free()
        del z, y, ref
        clock.free()


def sweep_linear(torch: Any, args: argparse.Namespace, clock: Clock, device: str, out: Reporter) -> None:
    """softxent's linear head (forward + backward, no autograd) at the first shape over tiles and splits."""
    from softxent.kernels.triton import _linear_head as lh

    n, d, v = _shapes(args)[0]
    x, w, y = make_linear_inputs(torch, n, d, v, device, "normal")
    ref = linear_reference(torch, x, w, y, min(args.check_rows, n), min(args.check_classes, v))
    for tiles, rule in DRY_LINEAR_SWEEP if args.dry_run else LINEAR_SWEEP:
        bm = (tiles or lh._lce_blocks(args.dry_run, x.dtype))[0]
        splits = None if rule == "waves" else max(1, -(-4 * _n_sm(torch, device) // -(-n // bm)))
        what = (
            "default tiles (per variant)"
            if tiles is None
            else "BM, BN, BK, warps, stages = " + ", ".join(map(str, tiles))
        )
        row: dict[str, Any] = dict(shape=f"{n}x{d}x{v}", config=f"{what}; splits: {rule}")
        last: list[Any] = []

        def step(tiles=tiles, splits=splits, last=last) -> None:
            last[:] = lh.linear_cross_entropy_triton(x, w, y, splits=splits, tiles=tiles)

        try:
            row.update(_measure(clock, args, step, lambda: None))
            row["loss_rel_err"] = loss_err(last[0], ref["loss"])
            row["dx_rel_err"], _ = rel_err(torch, last[1][: ref["dx"].shape[0]], ref["dx"])
            row["dw_rel_err"], _ = rel_err(torch, last[2][: ref["dw"].shape[0]], ref["dw"])
        except Exception as exc:
            row.update(status=_status(exc))
        out.add("linear-sweep", row)
        del last
        clock.free()


def versions(torch: Any) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("softxent", "triton", "liger-kernel", "cut-cross-entropy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


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


def _parse_inputs(text: str) -> list[str]:
    kinds = [t.strip() for t in text.split(",") if t.strip()]
    bad = [k for k in kinds if k not in INPUT_SETS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"--inputs takes a comma list of {', '.join(INPUT_SETS)}, got {text!r}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run this part (repeatable; default all)")
    parser.add_argument("--impl", action="append", metavar="TEXT",
                        help="only implementations whose name contains TEXT (repeatable)")  # fmt: skip
    parser.add_argument("--shape", action="append", type=_parse_shape, metavar="N,D,V",
                        help="tokens, hidden size, vocabulary (repeatable; default the two of the issue; the "
                             "cross-entropy parts use N x V logits)")  # fmt: skip
    parser.add_argument("--inputs", type=_parse_inputs, default=list(INPUT_SETS), metavar="SETS",
                        help="input sets, a comma list of normal, zipf (default both)")  # fmt: skip
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
    meta = dict(
        device=device_name, dry_run=args.dry_run, date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        versions=versions(torch), args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        peak_bandwidth=None if args.dry_run else peak_bandwidth(device_name),
    )  # fmt: skip
    out = Reporter(out_dir, "cross_entropy_gpu", meta)
    print(f"tables: {out.md} and {out.js} (rewritten after every row)", flush=True)
    runs = {"linear": bench_linear, "ce": bench_ce, "ce-sweep": sweep_ce, "linear-sweep": sweep_linear}
    for part in PARTS:
        if args.only and part not in args.only:
            continue
        print(f"{part}:", flush=True)
        t0 = time.perf_counter()
        runs[part](torch, args, clock, device, out)
        print(f"{part}: {time.perf_counter() - t0:.1f} s", flush=True)
    print("\n".join(out.report["targets"]))
    print(f"wrote {out.md} and {out.js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
