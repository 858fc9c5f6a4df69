"""What runs inside one worker subprocess of ``benchmarks/cross_entropy_cpu.py``.

The implementations (:data:`REGISTRY`: softxent, torch, JAX + optax, NumPy,
SciPy and the ``memcpy`` yardstick, each a :class:`Bench` built by a
registered setup function), the benchmark's data, the float64 oracle and the
check against it, and the timing of one implementation (:func:`worker`,
:func:`time_bench`). ``cross_entropy_cpu.py`` (the parent) starts one
subprocess per (shape, implementation) and runs :func:`worker` there; its
docstring says what is measured and how.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SEED = 20240601
LOGIT_SCALE = 3.0  # logits ~ N(0, 1) * 3: softmax neither uniform nor one-hot
BLOCK_ELEMENTS = 1 << 22  # rows per block in the oracle and the checks: 4 Mi values

# Accuracy of a float32 computation against the float64 oracle, in multiples of
# float32's machine epsilon (~1.19e-7). The loss is a mean of logsumexp(z) - z_y
# with |values| ~ 20, so a few hundred ulps of relative error is still a correct
# float32 result while a float32 running sum over 131072 classes (~1e-5) is not.
# Gradient entries are (p - onehot) / N with p in [0, 1]: the error is measured
# in units of 1/N, i.e. as an absolute error on the probabilities.
EPS32 = float(np.finfo(np.float32).eps)
LOSS_RTOL = 64 * EPS32
GRAD_ATOL_TIMES_N = 64 * EPS32

# Rows that measure the machine, not an implementation: nothing to check, no paired copy.
YARDSTICKS = ("memcpy", "floor (in place)", "floor (copy)")

NOISY_CORES = 0.2  # other processes' CPU use during timing above this is flagged


# --------------------------------------------------------------------------- implementations


class Unavailable(Exception):
    """The implementation cannot run in this environment (reported, not an error)."""


@dataclass
class Bench:
    """One implementation, ready to run on one data set.

    run:   the timed work; returns whatever must stay alive for ``fetch``.
    fetch: turns run's result into ``(loss as float, gradient as ndarray)``,
           or None when there is nothing to check (memcpy).
    reset: untimed preparation before every run (e.g. ``x.grad = None``).
    """

    run: Callable[[], Any]
    fetch: Callable[[Any], tuple[float, np.ndarray] | None]
    reset: Callable[[], None] | None = None
    note: str = ""


@dataclass(frozen=True)
class Impl:
    setup: Callable[[np.ndarray, np.ndarray, int], Bench]
    env: dict[str, str] = field(default_factory=dict)


REGISTRY: dict[str, Impl] = {}


def register(name: str, **env: str) -> Callable[[Callable[..., Bench]], Callable[..., Bench]]:
    def deco(setup: Callable[..., Bench]) -> Callable[..., Bench]:
        REGISTRY[name] = Impl(setup, dict(env))
        return setup

    return deco


@register("memcpy")
def bench_memcpy(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    dst = np.empty_like(logits)
    return Bench(run=lambda: np.copyto(dst, logits), fetch=lambda _: None)


# The floor rows: what the two cores' memory system does with the same
# buffer and nothing else, on the same threads and the same row blocks
# (2**16 elements, as softxent's drivers) as the kernels. "in place" reads
# and writes every element of one buffer (``a[i] *= s``: the traffic of
# ``inplace=True``, one read and one write-back of each cache line); "copy"
# reads one buffer and writes another (the traffic of ``out=``, plus the
# write-allocate read of the destination). s = -1 keeps the values exact.
FLOOR_BLOCK = 1 << 16


def _floor_kernels() -> tuple[Callable[..., None], Callable[..., None]]:
    import numba as nb

    @nb.njit(parallel=True, nogil=True)
    def scale_in_place(a: np.ndarray, s: np.float32) -> None:
        flat = a.reshape(-1)
        n = flat.shape[0]
        for b in nb.prange((n + FLOOR_BLOCK - 1) // FLOOR_BLOCK):
            for i in range(b * FLOOR_BLOCK, min(n, (b + 1) * FLOOR_BLOCK)):
                flat[i] *= s

    @nb.njit(parallel=True, nogil=True)
    def copy(dst: np.ndarray, src: np.ndarray) -> None:
        d = dst.reshape(-1)
        s = src.reshape(-1)
        n = d.shape[0]
        for b in nb.prange((n + FLOOR_BLOCK - 1) // FLOOR_BLOCK):
            for i in range(b * FLOOR_BLOCK, min(n, (b + 1) * FLOOR_BLOCK)):
                d[i] = s[i]

    return scale_in_place, copy


@register("floor (in place)")
def bench_floor_in_place(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    scale_in_place, _ = _floor_kernels()
    work = np.empty_like(logits)
    minus_one = np.float32(-1.0)
    return Bench(
        run=lambda: scale_in_place(work, minus_one),
        fetch=lambda _: None,
        reset=lambda: np.copyto(work, logits),  # as before softxent (inplace): same cache state
        note=f"numba prange over blocks of {FLOOR_BLOCK} elements, a[i] *= -1",
    )


@register("floor (copy)")
def bench_floor_copy(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    _, copy = _floor_kernels()
    dst = np.empty_like(logits)
    return Bench(
        run=lambda: copy(dst, logits),
        fetch=lambda _: None,
        note=f"numba prange over blocks of {FLOOR_BLOCK} elements, dst[i] = src[i]",
    )


def paired_memcpy(logits: np.ndarray) -> Bench:
    """The yardstick timed inside every other worker. Its untimed reset is the
    same copy, so that the timed copy, like the timed call after it, starts
    from caches another copy of the logits has just swept (and does not pay
    for writing back the gradient the previous call left dirty). At
    512x131072 on the machine of the committed results this made no
    difference above the noise (a copy after a copy 19.7 ms, after the
    in-place kernel and a copy 19.1); it keeps the two sides alike."""
    dst = np.empty_like(logits)
    copy = lambda: np.copyto(dst, logits)  # noqa: E731
    return Bench(run=copy, fetch=lambda _: None, reset=copy)


def _softxent_fn(keyword: str | None = None) -> Callable[..., Any]:
    import softxent

    fn = softxent.softmax_cross_entropy_with_grad
    if keyword is not None and keyword not in inspect.signature(fn).parameters:
        raise Unavailable(f"softmax_cross_entropy_with_grad has no {keyword}= keyword")
    return fn


def _as_loss_grad(result: Any) -> tuple[float, np.ndarray]:
    loss, grad = result
    return float(loss), np.asarray(grad)


@register("softxent")
def bench_softxent(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    fn = _softxent_fn()
    return Bench(run=lambda: fn(logits, labels), fetch=_as_loss_grad)


@register("softxent (out=)")
def bench_softxent_out(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    fn = _softxent_fn("out")
    buf = np.empty_like(logits)
    return Bench(run=lambda: fn(logits, labels, out=buf), fetch=_as_loss_grad)


@register("softxent (inplace)")
def bench_softxent_inplace(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    fn = _softxent_fn("inplace")
    work = np.empty_like(logits)
    return Bench(
        run=lambda: fn(work, labels, inplace=True),
        fetch=_as_loss_grad,
        reset=lambda: np.copyto(work, logits),  # the previous run overwrote them
    )


@register("softxent reference (NumPy)", SOFTXENT_REFERENCE="1")
def bench_softxent_reference(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    fn = _softxent_fn()
    return Bench(run=lambda: fn(logits, labels), fetch=_as_loss_grad)


def _torch_eager(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x = torch.from_numpy(logits).requires_grad_()
    y = torch.from_numpy(labels)

    def run() -> Any:
        loss = F.cross_entropy(x, y)
        loss.backward()
        return loss

    def reset() -> None:
        x.grad = None

    return Bench(run=run, reset=reset, fetch=lambda loss: (float(loss), x.grad.numpy()))


@register("torch eager")
def bench_torch_eager(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    return _torch_eager(logits, labels, threads)


@register("torch eager + THP", THP_MEM_ALLOC_ENABLE="1")
def bench_torch_eager_thp(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    return _torch_eager(logits, labels, threads)


@register("torch.compile + THP", THP_MEM_ALLOC_ENABLE="1")
def bench_torch_compile_thp(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    x = torch.from_numpy(logits).requires_grad_()
    y = torch.from_numpy(labels)
    # Forward compiled by Dynamo/Inductor; AOTAutograd compiles the backward graph.
    forward = torch.compile(lambda z, t: F.cross_entropy(z, t), dynamic=False)

    def run() -> Any:
        loss = forward(x, y)
        loss.backward()
        return loss

    def reset() -> None:
        x.grad = None

    return Bench(run=run, reset=reset, fetch=lambda loss: (float(loss), x.grad.numpy()))


@register("JAX + optax")
def bench_jax_optax(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    import jax
    import optax

    def mean_loss(z: Any, t: Any) -> Any:
        return optax.softmax_cross_entropy_with_integer_labels(z, t).mean()

    step = jax.jit(jax.value_and_grad(mean_loss))
    z = jax.device_put(logits)
    t = jax.device_put(labels.astype(np.int32))  # JAX's default integer width

    def run() -> Any:
        return jax.block_until_ready(step(z, t))

    return Bench(run=run, fetch=lambda r: (float(r[0]), np.asarray(r[1])))


@register("NumPy naive")
def bench_numpy_naive(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    n = logits.shape[0]
    rows = np.arange(n)

    def run() -> tuple[float, np.ndarray]:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))  # max-shift: no overflow
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, labels]).mean()
        p[rows, labels] -= 1.0
        p /= n
        return float(loss), p

    return Bench(run=run, fetch=lambda r: r, note="single-threaded (NumPy ufuncs)")


@register("scipy log_softmax")
def bench_scipy_log_softmax(logits: np.ndarray, labels: np.ndarray, threads: int) -> Bench:
    from scipy.special import log_softmax

    n = logits.shape[0]
    rows = np.arange(n)

    def run() -> tuple[float, np.ndarray]:
        lp = log_softmax(logits, axis=1)
        loss = -lp[rows, labels].mean()
        grad = np.exp(lp, out=lp)
        grad[rows, labels] -= 1.0
        grad /= n
        return float(loss), grad

    return Bench(run=run, fetch=lambda r: r, note="single-threaded (NumPy ufuncs)")


# --------------------------------------------------------------------------- worker side


def make_data(n: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's inputs; identical in every process for the same shape."""
    rng = np.random.default_rng(SEED)
    logits = rng.standard_normal((n, v), dtype=np.float32)
    logits *= LOGIT_SCALE
    labels = rng.integers(0, v, size=n, dtype=np.int64)
    return logits, labels


def block_rows(v: int) -> int:
    return max(1, BLOCK_ELEMENTS // v)


def oracle_paths(oracle_dir: Path, n: int, v: int) -> tuple[Path, Path]:
    return oracle_dir / f"oracle_{n}x{v}_grad.npy", oracle_dir / f"oracle_{n}x{v}.json"


def compute_oracle(n: int, v: int, oracle_dir: Path) -> dict[str, Any]:
    """float64 loss and gradient from softxent's NumPy reference, in row blocks.

    The mean over all rows is the sum of per-block sums divided by N, and the
    gradient of the mean is each block's gradient of the sum divided by N.
    """
    os.environ["SOFTXENT_REFERENCE"] = "1"  # before softxent is imported
    import softxent

    logits, labels = make_data(n, v)
    grad_path, meta_path = oracle_paths(oracle_dir, n, v)
    grad = np.lib.format.open_memmap(grad_path, mode="w+", dtype=np.float64, shape=(n, v))
    total = 0.0
    step = block_rows(v)
    for i in range(0, n, step):
        z = logits[i : i + step].astype(np.float64)
        loss, g = softxent.softmax_cross_entropy_with_grad(z, labels[i : i + step], reduction="sum")
        total += float(loss)
        grad[i : i + step] = g / n
    grad.flush()
    del grad
    meta = {"loss": total / n}
    meta_path.write_text(json.dumps(meta))
    return meta


def check_against_oracle(loss: float, grad: np.ndarray, n: int, v: int, oracle_dir: Path) -> dict[str, Any]:
    grad_path, meta_path = oracle_paths(oracle_dir, n, v)
    if not meta_path.exists():
        return {"check": "n/a", "check_message": "no oracle for this shape"}
    ref_loss = json.loads(meta_path.read_text())["loss"]
    if grad.shape != (n, v):
        return {"check": "FAILED", "check_message": f"gradient shape {grad.shape}"}
    # Read the oracle block by block with plain reads (not a memory map, whose
    # touched pages would count in this worker's peak RSS).
    data_offset = np.load(grad_path, mmap_mode="r").offset
    loss_err = abs(loss - ref_loss) / abs(ref_loss)
    grad_err = 0.0
    step = block_rows(v)
    for i in range(0, n, step):  # blockwise: never a full float64 copy
        rows = min(step, n - i)
        ref = np.fromfile(grad_path, dtype=np.float64, count=rows * v, offset=data_offset + 8 * i * v)
        diff = np.abs(grad[i : i + rows].astype(np.float64) - ref.reshape(rows, v))
        if np.isnan(diff).any():  # max() would hide a NaN
            grad_err = math.nan
            break
        grad_err = max(grad_err, float(diff.max()))
    ok = loss_err <= LOSS_RTOL and grad_err * n <= GRAD_ATOL_TIMES_N  # NaN fails
    return {
        "check": "ok" if ok else "FAILED",
        "loss": loss,
        "oracle_loss": ref_loss,
        "loss_rel_err": loss_err,
        "grad_max_abs_err": grad_err,
    }


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes, garbage collected before and off during it."""
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    result = fn()
    t1 = time.perf_counter()
    gc.enable()
    del result  # free the gradient before the next call, like a training step
    return t1 - t0


def time_bench(
    bench: Bench, repeats: int, min_time: float, yardstick: Bench | None = None
) -> tuple[list[float], list[float], float]:
    """Seconds per call (at least `repeats` calls and `min_time` seconds); the
    seconds of the `yardstick` call timed just before each of them (empty
    without one); and the average number of cores that *other* processes kept
    busy meanwhile: a noisy neighbour on a 2-core machine makes every number
    here meaningless, so say so."""
    times: list[float] = []
    paired: list[float] = []
    busy0, own0, wall0 = busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter()
    while len(times) < repeats or (sum(times) < min_time and len(times) < 1000):
        if yardstick is not None:
            yardstick.reset()  # also the first touch of its buffer's pages, never timed
            paired.append(_timed(yardstick.run))
        if bench.reset is not None:
            bench.reset()
        times.append(_timed(bench.run))
    busy, own = busy_cpu_seconds() - busy0, sum(os.times()[:2]) - own0
    others = max(0.0, busy - own) / (time.perf_counter() - wall0)
    return times, paired, others


def worker(args: argparse.Namespace) -> dict[str, Any]:
    n, v = parse_shape(args.shape)
    out: dict[str, Any] = {"impl": args.worker, "shape": args.shape}
    if args.worker == "oracle":
        t0 = time.perf_counter()
        out.update(compute_oracle(n, v, Path(args.oracle_dir)))
        out["status"] = "ok"
        out["seconds"] = time.perf_counter() - t0
        return out

    impl = REGISTRY[args.worker]
    logits, labels = make_data(n, v)
    t0 = time.perf_counter()
    try:
        bench = impl.setup(logits, labels, args.threads)
    except ModuleNotFoundError as exc:
        return out | {"status": "not installed", "message": f"not installed: {exc.name}"}
    except Unavailable as exc:
        return out | {"status": "unavailable", "message": str(exc)}
    if bench.note:
        out["note"] = bench.note
    for _ in range(max(args.warmup, 1)):  # >= 1: compilation is never timed
        if bench.reset is not None:
            bench.reset()
        bench.run()
    out["setup_and_warmup_s"] = time.perf_counter() - t0

    if bench.reset is not None:
        bench.reset()
    fetched = bench.fetch(bench.run())
    if fetched is None:
        out["check"] = "n/a"
    else:
        out.update(check_against_oracle(fetched[0], fetched[1], n, v, Path(args.oracle_dir)))
    del fetched
    # The peak so far covers the warm-up and checked calls; the timed ones
    # repeat them. Read it before the paired memcpy allocates its buffer.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    yardstick = None if args.worker in YARDSTICKS else paired_memcpy(logits)

    times, paired, others = time_bench(bench, args.repeats, args.min_time, yardstick)
    for _ in range(args.retries):  # a neighbour was busy: wait for quiet, time again
        if others <= NOISY_CORES:
            break
        wait_until_idle(args.wait_idle or 30.0)
        attempt = time_bench(bench, args.repeats, args.min_time, yardstick)
        out["timing_attempts"] = out.get("timing_attempts", 1) + 1
        if attempt[2] < others:
            times, paired, others = attempt
    out.update(
        status="ok",
        other_load_cores=others,
        runs=len(times),
        median_ms=1e3 * statistics.median(times),
        min_ms=1e3 * min(times),
        times_ms=[round(1e3 * t, 4) for t in times],
        peak_rss_mib=peak_rss_mib,
    )
    if paired:
        # Each call against the copy timed just before it, then the median:
        # drift slower than one call cancels out.
        out["paired_memcpy_ms"] = 1e3 * statistics.median(paired)
        out["pct_of_paired_memcpy"] = 100 * statistics.median(m / t for m, t in zip(paired, times))
        out["paired_memcpy_times_ms"] = [round(1e3 * t, 4) for t in paired]
    elif args.worker == "memcpy":
        out["pct_of_paired_memcpy"] = 100.0
    return out


def parse_shape(text: str) -> tuple[int, int]:
    try:
        n, v = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 2048x32768, got {text!r}") from None
    if n < 1 or v < 1:
        raise argparse.ArgumentTypeError(f"shape must be positive, got {text!r}")
    return n, v


def wait_until_idle(max_wait: float) -> float:
    """Wait (at most `max_wait` s) until other processes use < NOISY_CORES; return the wait.

    This process's own CPU time (e.g. a thread pool still spinning) is not counted.
    """
    t0 = time.perf_counter()
    while True:
        b0, own0 = busy_cpu_seconds(), sum(os.times()[:2])
        time.sleep(1.0)
        others = busy_cpu_seconds() - b0 - (sum(os.times()[:2]) - own0)
        if others < NOISY_CORES or time.perf_counter() - t0 >= max_wait:
            return time.perf_counter() - t0
