"""Softmax cross-entropy on the CPU: softxent against its peers, loss + gradient.

The benchmark harness, in one place for its two front ends:
``python benchmarks/cross_entropy_cpu.py`` (the full run whose tables go to
``benchmarks/results/``) and ``softxent bench`` (:func:`run_bench`, a quick
run on smaller shapes with the peers that are installed, table printed).

What is measured
    For float32 logits of shape N x V and integer labels, every implementation
    computes the mean softmax cross-entropy *and* its gradient with respect to
    the logits (the work of one training step of an output head). A plain
    ``np.copyto`` of the logits (one read + one write of N*V*4 bytes, exactly
    the traffic a fused loss + gradient kernel cannot avoid) is timed as the
    bandwidth yardstick, twice: as a row of its own, and *paired* inside every
    other worker, one copy timed just before each timed call. The memory
    bandwidth of a shared cloud host drifts by 20% from one minute to the next
    (a single-threaded copy of 256 MiB took 18 to 28 ms within ten minutes on
    the machine of the committed results), so a percentage of a memcpy timed
    in another process, minutes earlier, measures the drift as much as the
    implementation; the paired one compares the two under the same
    conditions.

How each implementation is isolated
    The parent process imports no numerical library beyond NumPy. For every
    (shape, implementation) pair it starts a fresh ``python this_file.py
    --worker ...`` subprocess with its own environment: thread counts
    (OMP/MKL/OpenBLAS/NUMBA variables, ``torch.set_num_threads`` and XLA flags),
    ``THP_MEM_ALLOC_ENABLE=1`` only for the torch "+ THP" rows (it must be set
    before torch is imported), ``SOFTXENT_REFERENCE=1`` only for the softxent
    reference row. A crash, a missing package or a timeout in one worker is
    recorded in the table and the run goes on.

    Each worker regenerates the same data from a fixed seed, builds its
    implementation (imports, jit compilation), runs the warm-up calls, checks
    loss and gradient against a float64 oracle *before* timing, then times
    single calls with ``time.perf_counter``. Untimed per-call preparation
    (``x.grad = None`` for torch, restoring the logits for the in-place
    softxent variant) runs outside the timed region.

    The oracle is softxent's exact NumPy API on the float64 copy of the same
    float32 logits, with ``SOFTXENT_REFERENCE=1``. It is computed once per
    shape in its own subprocess, in row blocks (so 512 x 131072 never needs
    more than a few hundred MiB), and handed to the workers as a temporary
    ``.npy`` file that they memory-map. The peers (torch, JAX, SciPy) agreeing
    with it is an independent cross-check of the oracle itself.

Threads
    ``--threads N`` (default: all CPUs this process may use) sets
    OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS and NUMBA_NUM_THREADS,
    calls ``torch.set_num_threads(N)`` in the torch workers, and for JAX passes
    ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``
    when N == 1 (XLA has no flag for "N threads"; it sizes its pool from the
    CPUs it may run on). When N is below the number of usable CPUs every worker
    is additionally pinned to the first N of them with ``sched_setaffinity``,
    which is what bounds XLA's and any other library's thread pool.

Noisy machines
    Each worker measures, from /proc/stat, how many cores *other* processes
    kept busy while it was timing and the tables show it. ``--wait-idle S``
    makes the parent wait (up to S s) for idle CPUs before each worker and
    ``--retries K`` re-times (up to K times) after a noisy attempt, keeping the
    quietest one.

Outputs
    A table printed as the run goes (progress on stderr), and
    ``<out>/cross_entropy_cpu.md`` and ``<out>/cross_entropy_cpu.json``
    (rewritten after every shape, so an interrupted run keeps what it measured).

Run ``python benchmarks/cross_entropy_cpu.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata
import inspect
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SHAPES = "65536x10,8192x1000,2048x32768,512x131072"
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

# Environment variables the parent controls; removed from a worker's environment
# unless its implementation asks for them.
CONTROLLED_ENV = ("THP_MEM_ALLOC_ENABLE", "SOFTXENT_REFERENCE")
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
    yardstick = None if args.worker == "memcpy" else paired_memcpy(logits)

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


# --------------------------------------------------------------------------- parent side


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


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def worker_env(impl_env: dict[str, str], threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CONTROLLED_ENV}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    xla = [f for f in env.get("XLA_FLAGS", "").split() if "multi_thread_eigen" not in f]
    if threads == 1:
        xla += ["--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    env["XLA_FLAGS"] = " ".join(xla)
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # keep XLA's banner out of the captured stderr
    env.update(impl_env)
    return env


def run_worker(impl: str, shape: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    result_path = tmp / "result.json"
    result_path.unlink(missing_ok=True)
    cmd = [
        # -m, not the file's path: run as a script from inside the package,
        # softxent/torch would shadow the real torch on sys.path.
        sys.executable, "-m", "softxent.cli._bench", "--worker", impl, "--shape", shape,
        "--threads", str(args.threads), "--repeats", str(args.repeats),
        "--warmup", str(args.warmup), "--min-time", str(args.min_time),
        "--retries", str(args.retries), "--wait-idle", str(args.wait_idle),
        "--oracle-dir", str(tmp), "--result", str(result_path),
    ]  # fmt: skip
    impl_env = {} if impl == "oracle" else REGISTRY[impl].env
    if args.wait_idle > 0:
        waited = wait_until_idle(args.wait_idle)
        if waited > 1.5:
            print(f"  (waited {waited:.0f} s for other processes to quieten)", file=sys.stderr)
    cpus = usable_cpus()
    pin = cpus[: args.threads] if args.threads < len(cpus) else None
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            env=worker_env(impl_env, args.threads),
            capture_output=True,
            text=True,
            timeout=args.timeout,
            preexec_fn=(lambda: os.sched_setaffinity(0, pin)) if pin else None,
        )
    except subprocess.TimeoutExpired:
        return {"impl": impl, "status": "error", "message": f"error: timed out after {args.timeout} s"}
    wall = time.perf_counter() - t0
    if proc.returncode == 0 and result_path.exists():
        res = json.loads(result_path.read_text())
        res["wall_s"] = wall
        return res
    lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
    why = lines[-1] if lines else f"exit status {proc.returncode}"
    if proc.returncode < 0:
        why = f"killed by signal {-proc.returncode}; {why}"
    return {"impl": impl, "status": "error", "message": f"error: {why[:300]}", "wall_s": wall}


def add_derived(rows: list[dict[str, Any]], n: int, v: int) -> None:
    """GB/s, % of memcpy bandwidth and softxent's speed-up over each row."""
    nbytes = 2 * n * v * 4  # read the logits + write the gradient
    timed = [r for r in rows if r.get("status") == "ok"]
    memcpy = next((r["median_ms"] for r in timed if r["impl"] == "memcpy"), None)
    best_sx = min(
        (r["median_ms"] for r in timed if r["impl"].startswith("softxent") and r["check"] == "ok"),
        default=None,
    )
    for r in timed:
        r["gb_per_s"] = nbytes / (r["median_ms"] * 1e-3) / 1e9
        r["pct_of_memcpy"] = 100 * memcpy / r["median_ms"] if memcpy else None
        r["softxent_speedup"] = r["median_ms"] / best_sx if best_sx and r["impl"] != "memcpy" else None


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


COLUMNS = [
    "implementation", "median ms", "min ms", "GB/s", "% of memcpy", "% of paired memcpy", "loss rel. err",
    "grad max abs err", "check", "softxent speed-up vs this peer", "peak RSS MiB",
    "other procs' cores busy",
]  # fmt: skip


def row_cells(r: dict[str, Any]) -> list[str]:
    if r.get("status") != "ok":
        return [r["impl"], *["—"] * 7, r.get("message", r.get("status", "?")), "—", "—", "—"]
    flag = " ⚠" if r["check"] == "FAILED" else ""
    return [
        r["impl"],
        fmt_ms(r["median_ms"]) + flag,
        fmt_ms(r["min_ms"]),
        fmt(r.get("gb_per_s"), ".1f"),
        fmt(r.get("pct_of_memcpy"), ".0f"),
        fmt(r.get("pct_of_paired_memcpy"), ".0f"),
        fmt(r.get("loss_rel_err"), ".1e"),
        fmt(r.get("grad_max_abs_err"), ".1e"),
        r["check"] if r["check"] != "n/a" else "n/a",
        fmt(r.get("softxent_speedup"), ".2f") + ("×" if r.get("softxent_speedup") else ""),
        fmt(r.get("peak_rss_mib"), ".0f"),
        fmt(r.get("other_load_cores"), ".2f"),
    ]


def print_row(cells: list[str]) -> None:
    widths = [28, 9, 9, 6, 6, 6, 9, 9, 7, 8, 7, 6]
    print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip(), flush=True)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")]
        flags = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "").split()
        info["cpu_model"] = models[0] if models else platform.processor()
        info["avx512f"] = "avx512f" in flags
    except OSError:
        info["cpu_model"] = platform.processor()
    info["logical_cpus"] = os.cpu_count()
    info["loadavg_at_start"] = round(os.getloadavg()[0], 2)
    info["usable_cpus"] = len(usable_cpus())
    try:
        kb = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["memory_gib"] = round(int(kb.split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "torch", "jax", "jaxlib", "optax", "numba", "softxent"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_reports(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cross_entropy_cpu.json").write_text(json.dumps(report, indent=2) + "\n")
    m, s = report["machine"], report["settings"]
    vers = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines = [
        "# Softmax cross-entropy, loss + gradient, float32, CPU",
        "",
        f"Reproduce: `{report['command']}`",
        "",
        f"- date: {report['date']}",
        f"- machine: {m.get('cpu_model')}, {m.get('usable_cpus')} usable of {m.get('logical_cpus')} "
        f"logical CPUs, AVX-512: {'yes' if m.get('avx512f') else 'no'}, {m.get('memory_gib')} GiB RAM; "
        f"{m.get('platform')}",
        f"- versions: {vers}",
        f"- threads: {s['threads']}; timed calls: at least {s['repeats']} and at least "
        f"{s['min_time']} s, after {s['warmup']} warm-up call(s); one subprocess per implementation; "
        f"waited up to {s['wait_idle']} s for idle CPUs before each, re-timed up to {s['retries']} "
        "time(s) when other processes were busy",
        f"- data: logits ~ N(0, 1) × {LOGIT_SCALE:g} float32, labels uniform, seed {SEED}; reduction='mean'",
        "- GB/s counts the unavoidable traffic, 2·N·V·4 bytes (read logits + write gradient); "
        "% of memcpy = memcpy median / this median; % of paired memcpy = the median, over this row's "
        "timed calls, of (a memcpy of the logits timed in the same process just before the call) / "
        "(the call): the host's memory bandwidth drifts by tens of percent between workers, and "
        "the paired figure compares the two under the same conditions.",
        "- speed-up = this row's median / the best median among softxent rows that passed the check.",
        f"- check: against softxent's float64 NumPy reference (SOFTXENT_REFERENCE=1) on the same "
        f"data; passes when loss rel. err ≤ {LOSS_RTOL:.1e} and grad max abs err ≤ "
        f"{GRAD_ATOL_TIMES_N:.1e} / N (64 float32 ulps). ⚠ marks a timing whose check failed.",
        "- peak RSS: the worker's, read after its warm-up and checked calls and before the paired "
        "memcpy allocates its buffer.",
        "- other procs' cores busy: CPU time used by processes other than the worker during its "
        "timed calls (from /proc/stat), in cores; anything well above 0 means a noisy machine.",
        f"- load average (1 min) at start: {m.get('loadavg_at_start')}, at end: {m.get('loadavg_at_end', 'n/a')}",
        "",
    ]
    for shape, block in report["results"].items():
        lines += [f"## {shape}", ""]
        if block.get("oracle_error"):
            lines += [f"Oracle failed ({block['oracle_error']}); rows are unchecked.", ""]
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row_cells(r)) + " |" for r in block["rows"]]
        notes = [f"{r['impl']}: {r['note']}" for r in block["rows"] if r.get("note")]
        if notes:
            lines += ["", "Notes: " + "; ".join(notes) + "."]
        noisy = [r["impl"] for r in block["rows"] if r.get("other_load_cores", 0) > NOISY_CORES]
        if noisy:
            lines += [
                "",
                f"⚠ Other processes kept more than {NOISY_CORES} of a core busy while "
                f"these were timed, so their numbers are inflated: {', '.join(noisy)}.",
            ]
        lines.append("")
    (out_dir / "cross_entropy_cpu.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None, *, default_out: Path | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="implementations: " + ", ".join(REGISTRY),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated NxV shapes")
    p.add_argument("--threads", type=int, default=len(usable_cpus()), help="threads per implementation")
    p.add_argument("--repeats", type=int, default=7, help="minimum number of timed calls")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (at least 1)")
    p.add_argument("--min-time", type=float, default=0.25,
                   help="keep timing until this many seconds were measured (max 1000 calls)")  # fmt: skip
    p.add_argument("--impls", default=",".join(REGISTRY), help="comma-separated implementation names")
    p.add_argument("--out", default=str(default_out or Path("benchmark-results")),
                   help="directory for cross_entropy_cpu.md and .json")  # fmt: skip
    p.add_argument("--timeout", type=int, default=600, help="seconds per subprocess")
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="time again (after waiting for quiet, up to --wait-idle or 30 s) at most "
        "this many times when other processes were busy; the quietest attempt is kept",
    )
    p.add_argument("--wait-idle", type=float, default=0.0,
                   help="before each subprocess, wait up to this many seconds for other "
                   "processes to leave the CPUs idle (0: don't wait; the table reports the "
                   "load either way)")  # fmt: skip
    # Internal: the parent calls this script again as a worker.
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--oracle-dir", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.retries < 0:
        p.error("--threads and --repeats must be >= 1, --warmup and --retries >= 0")
    if args.worker is None:
        by_lower = {k.lower(): k for k in REGISTRY}
        wanted = [s.strip() for s in args.impls.split(",") if s.strip()]
        unknown = [s for s in wanted if s.lower() not in by_lower]
        if unknown:
            p.error(f"unknown implementation(s) {unknown}; choose from {list(REGISTRY)}")
        args.impl_list = [by_lower[s.lower()] for s in wanted]
        try:
            args.shape_list = [parse_shape(s) for s in args.shapes.split(",") if s.strip()]
        except argparse.ArgumentTypeError as exc:
            p.error(str(exc))
    return args


def main(argv: list[str] | None = None, *, default_out: Path | None = None, announce: bool = True) -> int:
    args = parse_args(argv, default_out=default_out)
    if args.worker is not None:
        result = worker(args)
        Path(args.result).write_text(json.dumps(result))
        return 0

    report: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/cross_entropy_cpu.py", *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "versions": versions(),
        "settings": {
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "min_time": args.min_time,
            "retries": args.retries,
            "wait_idle": args.wait_idle,
            "seed": SEED,
            "logit_scale": LOGIT_SCALE,
            "shapes": [f"{n}x{v}" for n, v in args.shape_list],
            "impls": args.impl_list,
            "xla_flags": worker_env({}, args.threads)["XLA_FLAGS"],
        },  # fmt: skip
        "tolerances": {"loss_rtol": LOSS_RTOL, "grad_atol_times_n": GRAD_ATOL_TIMES_N},
        "results": {},
    }
    out_dir = Path(args.out)
    started = time.perf_counter()
    print(f"threads={args.threads} repeats>={args.repeats} warmup={args.warmup}", file=sys.stderr)
    for n, v in args.shape_list:
        shape = f"{n}x{v}"
        block: dict[str, Any] = {"rows": []}
        report["results"][shape] = block
        with tempfile.TemporaryDirectory(prefix="softxent-bench-") as tmpdir:
            tmp = Path(tmpdir)
            if any(i != "memcpy" for i in args.impl_list):
                print(f"[{shape}] oracle (float64 reference) ...", file=sys.stderr, flush=True)
                oracle = run_worker("oracle", shape, args, tmp)
                if oracle.get("status") != "ok":
                    block["oracle_error"] = oracle.get("message")
                    print(f"[{shape}] oracle failed: {oracle.get('message')}", file=sys.stderr)
            print(f"\n## {shape}", flush=True)
            print_row(["implementation", "median", "min ms", "GB/s", "%mcpy", "%pair", "loss err",
                       "grad err", "check", "speed-up", "RSS MiB", "others"])  # fmt: skip
            for impl in args.impl_list:
                print(f"[{shape}] {impl} ...", file=sys.stderr, flush=True)
                row = run_worker(impl, shape, args, tmp)
                block["rows"].append(row)
                add_derived(block["rows"], n, v)
                print(f"[{shape}] {impl}: {row.get('status')} in {row.get('wall_s', 0):.1f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
                print_row(row_cells(row))
        write_reports(report, out_dir)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    write_reports(report, out_dir)
    if announce:
        print(f"\nwrote {out_dir / 'cross_entropy_cpu.md'} and .json "
              f"({report['total_seconds']:.0f} s)", file=sys.stderr)  # fmt: skip
    return 0


# Peers for the quick run of `softxent bench`, with the module each needs.
QUICK_IMPLS = {
    "memcpy": None, "softxent": None, "softxent (out=)": None,
    "torch eager + THP": "torch", "JAX + optax": "optax", "NumPy naive": None,
}  # fmt: skip


def _check_quick_shapes(shapes: str) -> None:
    """``--shapes`` of ``softxent bench`` as a CLIError, not the harness's own usage message."""
    from ._errors import CLIError

    parsed = []
    for text in shapes.split(","):
        if not text.strip():
            continue
        try:
            parsed.append((text.strip(), *parse_shape(text.strip())))
        except argparse.ArgumentTypeError:
            raise CLIError(f"--shapes: {text.strip()!r} is not NxV (rows x classes, e.g. 8192x1000)") from None
    if not parsed:
        raise CLIError(f"--shapes: {shapes!r} names no shape; give NxV shapes separated by commas, e.g. 8192x1000")
    for text, n, v in parsed:
        if n * v > QUICK_MAX_ELEMENTS:
            raise CLIError(
                f"--shapes: {text!r} has {n * v:,} logits; the quick benchmark takes at most "
                f"{QUICK_MAX_ELEMENTS:,} (1 GiB of float32 per buffer); "
                "run python benchmarks/cross_entropy_cpu.py for larger shapes"
            )


# 2**28 logits are 1 GiB of float32 per buffer, and a worker holds several
# (logits, gradient, the memcpy pair): a quick run stays within a few GiB,
# where a typo like 100000x100000 would otherwise fail deep in a worker.
QUICK_MAX_ELEMENTS = 2**28


def run_bench(*, shapes: str, repeats: int, out: Any = None) -> int:
    """``softxent bench``: the same harness on quick settings, installed peers only; prints the table."""
    import importlib.util

    _check_quick_shapes(shapes)
    impls = [name for name, module in QUICK_IMPLS.items() if module is None or importlib.util.find_spec(module)]
    missing = [name for name, module in QUICK_IMPLS.items() if name not in impls]
    stream = out if out is not None else sys.stdout
    print("softxent bench: loss + gradient of the mean softmax cross-entropy, float32, one subprocess per "
          f"implementation, median of {repeats} calls", file=stream)  # fmt: skip
    if missing:
        print(f"(not installed, skipped: {', '.join(missing)}; the full run is "
              "python benchmarks/cross_entropy_cpu.py)", file=stream)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="softxent-bench-") as tmp:
        argv = ["--shapes", shapes, "--repeats", str(repeats), "--warmup", "1", "--min-time", "0",
                "--impls", ",".join(impls), "--out", tmp]  # fmt: skip
        return main(argv, announce=False)


if __name__ == "__main__":
    sys.exit(main())
