"""Softmax cross-entropy on the CPU: softxent against its peers, loss + gradient.

The full benchmark: its tables go to ``benchmarks/results/`` (``--out`` for
elsewhere). This file is the parent process and the command line; what runs
inside each worker subprocess (the implementations, the data, the float64
oracle, the timing) is in ``_cpu_workers.py`` beside it. Peers:
``pip install -e ".[bench]" -c constraints.txt``. ``softxent bench`` is a
much smaller thing: a quick timing in one process, no isolation, no peers
beyond NumPy and torch.

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

    Two floor rows say what the machine's memory can do with the same data on
    the same threads, measured in the same run: "floor (in place)" reads and
    writes back every element of one buffer (numba ``prange``, ``a[i] *=
    -1``; the traffic of ``inplace=True``), "floor (copy)" reads one buffer
    and writes another (the traffic of ``out=``). Every row shows its
    percentage of both ("% of floor": the in-place floor's median / the
    row's).

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
    ``<out>/<name>.md`` and ``<out>/<name>.json`` (``--name``, default
    ``cross_entropy_cpu``; rewritten after every shape, so an interrupted run
    keeps what it measured). Each shape's table ends with every softxent row
    against the fastest peer, run by run.

Run ``python benchmarks/cross_entropy_cpu.py --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cpu_workers import (
    GRAD_ATOL_TIMES_N,
    LOGIT_SCALE,
    LOSS_RTOL,
    NOISY_CORES,
    REGISTRY,
    SEED,
    parse_shape,
    wait_until_idle,
    worker,
)

DEFAULT_SHAPES = "65536x10,65536x3,65536x20,8192x100,8192x1000,2048x32768,512x131072"
RESULTS = Path(__file__).resolve().parent / "results"
# Environment variables the parent controls; removed from a worker's environment
# unless its implementation asks for them.
CONTROLLED_ENV = ("THP_MEM_ALLOC_ENABLE", "SOFTXENT_REFERENCE")


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
        sys.executable, str(Path(__file__).resolve()), "--worker", impl, "--shape", shape,
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
    floor = next((r["median_ms"] for r in timed if r["impl"] == "floor (in place)"), None)
    floor_copy = next((r["median_ms"] for r in timed if r["impl"] == "floor (copy)"), None)
    best_sx = min(
        (r["median_ms"] for r in timed if r["impl"].startswith("softxent") and r["check"] == "ok"),
        default=None,
    )
    for r in timed:
        r["gb_per_s"] = nbytes / (r["median_ms"] * 1e-3) / 1e9
        r["pct_of_memcpy"] = 100 * memcpy / r["median_ms"] if memcpy else None
        r["pct_of_floor"] = 100 * floor / r["median_ms"] if floor else None
        r["pct_of_copy_floor"] = 100 * floor_copy / r["median_ms"] if floor_copy else None
        r["softxent_speedup"] = r["median_ms"] / best_sx if best_sx and r["impl"] != "memcpy" else None


def combine_runs(runs: list[list[dict[str, Any]]], n: int, v: int) -> list[dict[str, Any]]:
    """One row per implementation from ``--runs`` sweeps: the run whose median is the
    median of the runs' (the lower middle one for an even count), with every run's
    median (``run_medians_ms``) and every run's "% of floor", each against the floor
    rows of its own run; "% of floor" is then the median of those."""
    combined = []
    for i, first in enumerate(runs[0]):
        rows = [run[i] for run in runs if i < len(run)]
        ok = sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: r["median_ms"])
        if not ok:
            combined.append(first)
            continue
        row = dict(ok[(len(ok) - 1) // 2])
        row["run_medians_ms"] = [r["median_ms"] for r in rows if r.get("status") == "ok"]
        for key in ("pct_of_floor", "pct_of_copy_floor"):
            values = [r[key] for r in rows if r.get("status") == "ok" and r.get(key) is not None]
            row[key + "_runs"] = values
        combined.append(row)
    add_derived(combined, n, v)
    for row in combined:
        for key in ("pct_of_floor", "pct_of_copy_floor"):
            values = row.get(key + "_runs")
            if values:
                row[key] = statistics.median(values)
    return combined


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


COLUMNS = [
    "implementation", "median ms", "min ms", "GB/s", "% of floor", "% of copy floor", "% of memcpy",
    "% of paired memcpy", "loss rel. err",
    "grad max abs err", "check", "softxent speed-up vs this peer", "peak RSS MiB",
    "other procs' cores busy", "median ms of each run", "% of floor in each run",
]  # fmt: skip


def row_cells(r: dict[str, Any]) -> list[str]:
    if r.get("status") != "ok":
        return [r["impl"], *["—"] * 9, r.get("message", r.get("status", "?")), "—", "—", "—", "—", "—"]
    flag = " ⚠" if r["check"] == "FAILED" else ""
    return [
        r["impl"],
        fmt_ms(r["median_ms"]) + flag,
        fmt_ms(r["min_ms"]),
        fmt(r.get("gb_per_s"), ".1f"),
        fmt(r.get("pct_of_floor"), ".0f"),
        fmt(r.get("pct_of_copy_floor"), ".0f"),
        fmt(r.get("pct_of_memcpy"), ".0f"),
        fmt(r.get("pct_of_paired_memcpy"), ".0f"),
        fmt(r.get("loss_rel_err"), ".1e"),
        fmt(r.get("grad_max_abs_err"), ".1e"),
        r["check"] if r["check"] != "n/a" else "n/a",
        fmt(r.get("softxent_speedup"), ".2f") + ("×" if r.get("softxent_speedup") else ""),
        fmt(r.get("peak_rss_mib"), ".0f"),
        fmt(r.get("other_load_cores"), ".2f"),
        " / ".join(fmt_ms(x) for x in r.get("run_medians_ms", [r["median_ms"]])),
        " / ".join(f"{x:.0f}" for x in r.get("pct_of_floor_runs", [])) or "—",
    ]


def print_row(cells: list[str]) -> None:
    widths = [28, 9, 9, 6, 6, 6, 6, 6, 9, 9, 7, 8, 7, 6, 14, 10]
    print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip(), flush=True)


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")]
        flags = next((ln for ln in cpuinfo.splitlines() if ln.startswith("flags")), "").split()
        info["cpu_model"] = models[0] if models else platform.processor()
        info["avx512f"] = "avx512f" in flags
        info["isa"] = instruction_set(flags)
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


def instruction_set(flags: list[str]) -> str:
    """The widest vector instruction set in /proc/cpuinfo's flags, with its AVX-512 extensions."""
    if "avx512f" in flags:
        ext = [f.removeprefix("avx512").upper() for f in flags if f.startswith("avx512") and f != "avx512f"]
        return "AVX-512 (F" + "".join(", " + e for e in ext) + ")" + (", FMA" if "fma" in flags else "")
    for isa, name in (("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2")):
        if isa in flags:
            return name + (", FMA" if "fma" in flags else "")
    return "unknown"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "torch", "jax", "jaxlib", "optax", "numba", "softxent"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# Rows that are not peers: softxent's own, and the yardsticks.
NOT_PEERS = ("softxent", "memcpy", "floor")


def peer_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Lines: each softxent row against the fastest peer, run by run (the
    fastest peer's median in that run / softxent's in that run), and the
    ratio of the combined medians; issue 21 asks for >= 1.5 at few classes
    in every run."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("run_medians_ms")]
    peers = [r for r in ok if not r["impl"].startswith(NOT_PEERS)]
    if not peers:
        return []
    lines = []
    for row in ok:
        if not row["impl"].startswith("softxent") or "reference" in row["impl"]:
            continue
        runs = row["run_medians_ms"]
        per_run = []
        for k, ms in enumerate(runs):
            best = min((p["run_medians_ms"][k], p["impl"]) for p in peers if k < len(p["run_medians_ms"]))
            per_run.append((best[0] / ms, best[1]))
        best_median = min((p["median_ms"], p["impl"]) for p in peers)
        text = ", ".join(f"{r:.2f}× ({name})" for r, name in per_run)
        lowest = min(r for r, _ in per_run)
        lines.append(
            f"- {row['impl']}: fastest peer's median / this median = {best_median[0] / row['median_ms']:.2f}× "
            f"({best_median[1]}); run by run: {text}; lowest {lowest:.2f}× "
            f"({'≥' if lowest >= 1.5 else '<'} 1.5 in every run)"
        )
    return lines


def write_reports(report: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report["settings"].get("name", "cross_entropy_cpu")
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    m, s = report["machine"], report["settings"]
    vers = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines = [
        "# Softmax cross-entropy, loss + gradient, float32, CPU",
        "",
        f"Reproduce: `{report['command']}`",
        "",
        f"- date: {report['date']}",
        f"- machine: {m.get('cpu_model')}, {m.get('usable_cpus')} usable of {m.get('logical_cpus')} "
        f"logical CPUs, instruction set: {m.get('isa', 'AVX-512' if m.get('avx512f') else 'n/a')}, "
        f"{m.get('memory_gib')} GiB RAM; "
        f"{m.get('platform')}",
        f"- versions: {vers}",
        f"- runs: {s.get('runs', 1)} sweep(s) over the implementations per shape, each with its own floor "
        "rows; a row is the median run of its implementation (median ms of each run in the last columns), "
        "its % of floor the median of the runs' percentages, each against the floor of the same run",
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
        '- floor rows, timed in this run on the same threads: "floor (in place)" reads and writes '
        "back every element of one N×V float32 buffer (a numba prange over blocks of 2^16 elements, "
        '`a[i] *= -1`: the memory traffic of `inplace=True` and nothing else), "floor (copy)" reads '
        "one and writes another (the traffic of `out=`); % of floor = the in-place floor's median / "
        "this median (the target of issue 21 for softxent (inplace) at large shapes: ≥ 70), % of copy "
        "floor likewise with the copy's.",
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
        ratios = peer_ratios(block["rows"])
        if ratios:
            lines += ["", "Against the fastest peer:", "", *ratios]
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
    if report.get("host_note"):
        lines[3:3] = [f"**Host: {report['host_note']}**", ""]
    (out_dir / f"{name}.md").write_text("\n".join(lines))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="implementations: " + ", ".join(REGISTRY),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="comma-separated NxV shapes")
    p.add_argument("--threads", type=int, default=len(usable_cpus()), help="threads per implementation")
    p.add_argument("--repeats", type=int, default=7, help="minimum number of timed calls")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (at least 1)")
    p.add_argument("--runs", type=int, default=1,
                   help="sweeps over the implementations per shape (each with its own floor rows); "
                   "the tables show the median run of each implementation")  # fmt: skip
    p.add_argument("--min-time", type=float, default=0.25,
                   help="keep timing until this many seconds were measured (max 1000 calls)")  # fmt: skip
    p.add_argument("--impls", default=",".join(REGISTRY), help="comma-separated implementation names")
    p.add_argument("--out", default=str(RESULTS),
                   help="directory for the tables (<name>.md and .json)")  # fmt: skip
    p.add_argument("--name", default="cross_entropy_cpu",
                   help="file name (without suffix) of the tables, e.g. cross_entropy_cpu_few_classes")  # fmt: skip
    p.add_argument("--host-note", default="",
                   help="a line on the host's state (e.g. other agents' load) put at the top of the table")  # fmt: skip
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
    if args.threads < 1 or args.repeats < 1 or args.runs < 1 or args.warmup < 0 or args.retries < 0:
        p.error("--threads, --repeats and --runs must be >= 1, --warmup and --retries >= 0")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
            "runs": args.runs,
            "wait_idle": args.wait_idle,
            "seed": SEED,
            "logit_scale": LOGIT_SCALE,
            "shapes": [f"{n}x{v}" for n, v in args.shape_list],
            "impls": args.impl_list,
            "xla_flags": worker_env({}, args.threads)["XLA_FLAGS"],
            "name": args.name,
        },  # fmt: skip
        "tolerances": {"loss_rtol": LOSS_RTOL, "grad_atol_times_n": GRAD_ATOL_TIMES_N},
        "results": {},
        "host_note": args.host_note,
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
            print_row(["implementation", "median", "min ms", "GB/s", "%floor", "%copyf", "%mcpy", "%pair", "loss err",
                       "grad err", "check", "speed-up", "RSS MiB", "others", "runs ms", "runs %floor"])  # fmt: skip
            runs: list[list[dict[str, Any]]] = []
            for k in range(args.runs):
                if args.runs > 1:
                    print(f"# run {k + 1} of {args.runs}", flush=True)
                rows: list[dict[str, Any]] = []
                runs.append(rows)
                for impl in args.impl_list:
                    print(f"[{shape}] {impl} (run {k + 1}) ...", file=sys.stderr, flush=True)
                    row = run_worker(impl, shape, args, tmp)
                    rows.append(row)
                    add_derived(rows, n, v)  # against this run's floor rows
                    print(f"[{shape}] {impl}: {row.get('status')} in {row.get('wall_s', 0):.1f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    print_row(row_cells(row))
            block["rows"] = combine_runs(runs, n, v)
            if args.runs > 1:
                print(f"# median of {args.runs} runs", flush=True)
                for row in block["rows"]:
                    print_row(row_cells(row))
        write_reports(report, out_dir)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["loadavg_at_end"] = round(os.getloadavg()[0], 2)
    write_reports(report, out_dir)
    print(f"\nwrote {out_dir / (args.name + '.md')} and .json "
          f"({report['total_seconds']:.0f} s)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
