"""Sigmoid (multi-label) cross-entropy on the CPU: loss + gradient, softxent against torch.

What is timed, per call: the loss (``reduction="mean"`` unless a row says
otherwise) and its gradient w.r.t. the logits, from logits and 0/1 labels
of shape N x K --

* ``softxent``: ``softxent.sigmoid_cross_entropy_with_grad`` on NumPy arrays
  (validation, the fused kernel, the reduction: the whole public call);
* ``softxent kernel``: the same sweep alone (``softxent._sigmoid_xent.sigmoid_xent_total``
  into a gradient buffer allocated once, the estimators' entry): the
  difference to ``softxent`` is the public call's Python side;
* ``torch``: ``F.binary_cross_entropy_with_logits`` forward and
  ``backward()`` (eager), on a fresh leaf each call, as a training step does;
* ``torch + THP``: the same with ``THP_MEM_ALLOC_ENABLE=1`` (transparent
  huge pages for torch's allocations; fresh large buffers page-fault without).

Each (implementation, thread count) runs in its own subprocess (numba's and
torch's threads), which takes the cases one after another: checks the
result against a float64 NumPy oracle, warms up, then times ``--calls``
calls one by one and reports their median; ``--runs`` sweeps everything
that many times, rotating the order of the implementations, and the table
shows each implementation's median run with every run's figure. "x torch" is the faster torch variant's median
over softxent's, per run. The host's other load is shown as the cores that
other processes kept busy while the row was timed (from ``/proc/stat``).

    python benchmarks/sigmoid_cpu.py [--runs 3] [--threads 1,2] [--quick | --plain | --weighted]
        [--wait-idle 60 --retries 2] [--out sigmoid_cpu]

On a shared host, ``--wait-idle`` and ``--retries`` wait for and retry
quiet moments (with 2 threads on 2 cores, torch's OpenMP threads are slowed
far more than numba's by a busy core: a busy row says nothing).

writes ``benchmarks/results/sigmoid_cpu.md`` and ``.json`` (``--out`` names another file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 20261203
THREADS = 2  # default; --threads 1,2 runs every row at each count
IMPLS = ("softxent", "softxent kernel", "torch", "torch + THP")
# (name, N, K, dtype, options): options are "plain", "pos_weight" (one per
# label) or "sample_weight" (one per row; torch gets it as weight=(N, 1)).
CASES = [
    ("65536x14 float32", 65536, 14, "float32", "plain"),
    ("1500x14 float32", 1500, 14, "float32", "plain"),
    ("65536x14 float64", 65536, 14, "float64", "plain"),
    ("1500x14 float64", 1500, 14, "float64", "plain"),
    ("65536x14 float32 pos_weight", 65536, 14, "float32", "pos_weight"),
    ("65536x14 float32 sample_weight", 65536, 14, "float32", "sample_weight"),
]
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


# --------------------------------------------------------------------------- worker (one subprocess)


def make_data(n: int, k: int, dtype: str, options: str):
    rng = np.random.default_rng(SEED)
    z = (rng.standard_normal((n, k)) * 3.0).astype(dtype)
    # labels of varied frequency per column, as in multi-label data
    y = (rng.random((n, k)) < np.linspace(0.05, 0.6, k)).astype(dtype)
    pos_weight = rng.uniform(0.5, 4.0, k) if options == "pos_weight" else None
    sample_weight = rng.uniform(0.0, 2.0, n) if options == "sample_weight" else None
    return z, y, pos_weight, sample_weight


def oracle(z, y, pos_weight, sample_weight, denominator):
    """float64 loss and gradient: -[p y log s(z) + (1 - y) log s(-z)] via logaddexp (softplus)."""
    z = z.astype(np.float64)
    y = y.astype(np.float64)
    p = 1.0 if pos_weight is None else pos_weight
    sw = 1.0 if sample_weight is None else sample_weight[:, None]
    elem = p * y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)
    sig = np.exp(-np.logaddexp(0.0, -z))
    grad = ((1.0 - y) * sig - p * y * (1.0 - sig)) * sw / denominator
    return float((elem * sw).sum() / denominator), grad


def setup(impl: str, z, y, pos_weight, sample_weight, threads: int):
    """A zero-argument callable returning (loss, grad as NumPy) and its mean's denominator."""
    n, k = z.shape
    if impl.startswith("softxent"):
        import softxent as sx
        from softxent._sigmoid_xent import sigmoid_xent_total

        # softxent's mean divides by K * sum(sample_weight)
        den = n * k if sample_weight is None else k * float(sample_weight.sum())
        if impl == "softxent kernel":
            grad = np.empty_like(z)

            def kernel():
                total = sigmoid_xent_total(
                    z, y, pos_weight=pos_weight, sample_weight=sample_weight, grad_scale=1.0 / den, grad_out=grad
                )
                return total / den, grad

            return kernel, den

        def run():
            return sx.sigmoid_cross_entropy_with_grad(z, y, pos_weight=pos_weight, sample_weight=sample_weight)

        return run, den
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    zt, yt = torch.from_numpy(z), torch.from_numpy(y)
    pw = None if pos_weight is None else torch.from_numpy(pos_weight.astype(z.dtype))
    w = None if sample_weight is None else torch.from_numpy(sample_weight.astype(z.dtype)[:, None])

    def run():
        leaf = zt.detach().requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(leaf, yt, weight=w, pos_weight=pw)
        loss.backward()
        return loss.detach(), leaf.grad

    return run, n * k  # torch's mean divides by the element count


def cpu_busy() -> tuple[float, float]:
    """(busy jiffies of the whole host, this process's CPU seconds)."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, time.process_time()


def worker(case: str, impl: str, calls: int, threads: int) -> dict:
    _, n, k, dtype, options = next(c for c in CASES if c[0] == case)
    z, y, pos_weight, sample_weight = make_data(n, k, dtype, options)
    run, den = setup(impl, z, y, pos_weight, sample_weight, threads)
    loss, grad = run()
    ref_loss, ref_grad = oracle(z, y, pos_weight, sample_weight, den)
    loss_err = abs(float(loss) - ref_loss) / abs(ref_loss) / EPS[dtype]
    # gradient entries are O(1/den): absolute error in units of eps/den
    grad_err = float(np.abs(np.asarray(grad, dtype=np.float64) - ref_grad).max()) * den / EPS[dtype]
    calls = calls or (60 if n * k > 100_000 else 500)
    for _ in range(max(3, calls // 10)):
        run()
    hz = os.sysconf("SC_CLK_TCK")
    busy0, own0 = cpu_busy()
    t_start = time.perf_counter()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - t_start
    busy1, own1 = cpu_busy()
    others = max(0.0, ((busy1 - busy0) / hz - (own1 - own0)) / wall)
    return dict(
        case=case, impl=impl, threads=threads, ms=1e3 * statistics.median(times), ms_min=1e3 * min(times), calls=calls,
        loss_err_eps=loss_err, grad_err_eps=grad_err, others_busy_cores=others,
    )  # fmt: skip


def worker_cases(cases: list[str], impl: str, calls: int, threads: int) -> list[dict]:
    """Every case in one process (imports and compilation once: a process per row took ~10 s on a busy host)."""
    return [worker(case, impl, calls, threads) for case in cases]


# --------------------------------------------------------------------------- parent


def host() -> dict:
    info = {"machine": platform.machine(), "cores": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line)
        flags = set(next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split())
        info["isa"] = " ".join(f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512vl") if f in flags)
    except (OSError, StopIteration):
        info["cpu"], info["isa"] = platform.processor() or "unknown", "unknown"
    import numba
    import torch

    info.update(numba=numba.__version__, torch=torch.__version__, numpy=np.__version__)
    return info


def host_busy(seconds: float = 1.0) -> float:
    """Cores the host kept busy over ``seconds`` (this process sleeps meanwhile)."""
    hz = os.sysconf("SC_CLK_TCK")
    b0, _ = cpu_busy()
    time.sleep(seconds)
    b1, _ = cpu_busy()
    return (b1 - b0) / hz / seconds


def wait_idle(limit_s: float) -> None:
    """Wait (up to ``limit_s``) until other processes keep less than 0.3 cores busy."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and host_busy() > 0.3:
        pass


def run_worker(cases: list[str], impl: str, calls: int, threads: int) -> list[dict]:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS="1")
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    env.pop("SOFTXENT_REFERENCE", None)
    if impl == "torch + THP":
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    cmd = [sys.executable, __file__, "--worker", json.dumps(cases), impl, str(calls), str(threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} ({threads} threads) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict], runs: int, info: dict, thread_counts: list[int]) -> str:
    lines = [
        "# Sigmoid cross-entropy on the CPU: loss + gradient (`benchmarks/sigmoid_cpu.py`)",
        "",
        f"Host: {info['cpu']} ({info['isa']}), {info['cores']} cores; threads per implementation: "
        f"{', '.join(map(str, thread_counts))} (numba's and torch's); "
        f"numba {info['numba']}, torch {info['torch']}, NumPy {info['numpy']}; {info['date']}.",
        f"Median ms of {results[0]['calls'] if results else 0}+ single calls per worker, median of {runs} runs "
        '(every run\'s median in brackets); `reduction="mean"`; 0/1 labels; logits N(0, 9). '
        "Errors against the float64 oracle: loss relative, gradient absolute times the mean's denominator, "
        'in eps of the dtype. "x torch": the faster torch variant over softxent, per run (median run). '
        '"softxent kernel": the compiled sweep alone (`sigmoid_xent_total` into a gradient allocated once); '
        "its difference to softxent is the public call's Python side (checks, allocation, reduction). "
        '"others busy": cores other processes kept busy while the row was timed (max over runs).',
        "",
        "| case | threads | implementation | median ms | runs | x torch | min ms | x torch (min) "
        "| loss err (eps) | grad err (eps) | others busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (case, *_), threads in ((c, t) for c in CASES for t in thread_counts):
        rows = [r for r in results if r["case"] == case and r["threads"] == threads]
        if not rows:
            continue
        per_run = {impl: [r["ms"] for r in rows if r["impl"] == impl] for impl in IMPLS}
        best = {impl: min(r["ms_min"] for r in rows if r["impl"] == impl) for impl in IMPLS}
        for impl in IMPLS:
            mine = [r for r in rows if r["impl"] == impl]
            ms = per_run[impl]
            ratio = ratio_min = ""
            ratios = [
                min(per_run["torch"][i], per_run["torch + THP"][i]) / per_run[impl][i]
                for i in range(min(len(v) for v in per_run.values()))
            ]
            if impl.startswith("softxent") and ratios:
                ratio = f"{statistics.median(ratios):.2f} ({', '.join(f'{x:.2f}' for x in ratios)})"
                ratio_min = f"{min(best['torch'], best['torch + THP']) / best[impl]:.2f}"
            lines.append(
                f"| {case} | {threads} | {impl} | {statistics.median(ms):.3f} | {', '.join(f'{x:.3f}' for x in ms)} | {ratio} "
                f"| {best[impl]:.3f} | {ratio_min} "
                f"| {max(r['loss_err_eps'] for r in mine):.2f} | {max(r['grad_err_eps'] for r in mine):.2f} "
                f"| {max(r['others_busy_cores'] for r in mine):.2f} |"
            )
    return "\n".join(lines) + "\n"


def write(results: list[dict], runs: int, info: dict, thread_counts: list[int], out: str = "sigmoid_cpu") -> str:
    RESULTS.mkdir(exist_ok=True)
    text = table(results, runs, info, thread_counts)
    (RESULTS / f"{out}.md").write_text(text)
    (RESULTS / f"{out}.json").write_text(json.dumps({"host": info, "results": results}, indent=1) + "\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="full sweeps (default 3)")
    parser.add_argument("--quick", action="store_true", help="the two float32 plain cases only")
    parser.add_argument("--plain", action="store_true", help="the four plain cases only (both shapes and dtypes)")
    parser.add_argument(
        "--weighted", action="store_true", help="the two weighted cases only (pos_weight, sample_weight)"
    )
    parser.add_argument(
        "--out", default="sigmoid_cpu", help="results file name, without .md/.json (default sigmoid_cpu)"
    )
    parser.add_argument("--calls", type=int, default=0, help="timed calls per case (default: by size)")
    parser.add_argument(
        "--wait-idle", type=float, default=0.0, help="before each worker, wait up to this many s for a quiet host"
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="rerun a worker this often while others kept > 0.3 cores busy"
    )
    parser.add_argument("--threads", default="2", help="comma-separated thread counts (default 2)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cases_json, impl, calls, threads = args.worker
        print(json.dumps(worker_cases(json.loads(cases_json), impl, int(calls), int(threads))))
        return
    cases = [
        c[0] for c in CASES
        if (not args.quick or (c[3] == "float32" and c[4] == "plain"))
        and (not args.plain or c[4] == "plain")
        and (not args.weighted or c[4] != "plain")
    ]  # fmt: skip
    thread_counts = [int(t) for t in args.threads.split(",")]
    info = host()
    info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: list[dict] = []
    for r in range(args.runs):
        order = IMPLS[r % len(IMPLS) :] + IMPLS[: r % len(IMPLS)]  # rotate who goes first
        for threads in thread_counts:
            for impl in order:
                for _attempt in range(args.retries + 1):
                    wait_idle(args.wait_idle)
                    rows = run_worker(cases, impl, args.calls, threads)
                    if max(res["others_busy_cores"] for res in rows) <= 0.3:
                        break
                for res in rows:
                    res["run"] = r
                    results.append(res)
                    print(f"run {r}: {res['case']:32s} {threads} {impl:16s} {res['ms']:8.3f} ms", file=sys.stderr)
        write(results, r + 1, info, thread_counts, args.out)  # after every run: a cut-short sweep keeps its runs
    print(write(results, r + 1, info, thread_counts, args.out))


if __name__ == "__main__":
    main()
