"""Scale-out benchmark: SoftmaxRegression on Dask against the same fit in memory.

Synthetic multinomial data (float32 features, integer classes drawn from a
random linear model with Gumbel noise) is written as Parquet parts; then each
configuration runs in a fresh process (so that peak memory is its own):

* ``dask-N``: a ``LocalCluster`` of N worker processes (one thread each), the
  parts read lazily with ``dask.dataframe.read_parquet``, the fit on Dask;
* ``memory-1`` / ``memory``: softxent in memory on the first parts (a subset
  that fits), on one thread / both cores, for the per-iteration overhead of
  the Dask path (time per iteration per row, on as many cores).

Reported per configuration: rows, fit time (from ``fit`` to the fitted model,
reading the Parquet parts included), L-BFGS iterations, time per iteration
(between the first and last iteration callbacks, so without the set-up passes),
evaluations of the objective and seconds per evaluation per million rows (the
time inside ``Objective.loss_grad``, instrumented by this script: one data pass),
seconds per iteration per million rows, the final objective f = F / (C S),
peak resident memory of the client process (which also runs the scheduler) and
of each worker.

Usage::

    python benchmarks/scale_out.py --rows 8000000 --features 100 --classes 20   # the issue's size (3.2 GB)
    python benchmarks/scale_out.py --rows 1000000 --parts 16                     # what ran here in ~10 min

TODO (not done yet): the peers of issue 17 --- Spark MLlib's
``LogisticRegression(family="multinomial")`` in ``local[2]`` on the same
Parquet files (``pip install pyspark`` into the venv for the benchmark only;
regParam = 1 / (C n), elasticNetParam = 0, standardization=False maps to the
same objective) and dask-ml's binary ``LogisticRegression`` on a binary
version of the task.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_parts(folder: Path, rows: int, features: int, classes: int, parts: int, seed: int) -> list[Path]:
    """Parquet parts of synthetic multinomial data, one part in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f"data-{rows}-{features}-{classes}-{parts}-{seed}.json"
    paths = [folder / f"part-{i:04d}.parquet" for i in range(parts)]
    if stamp.exists() and all(p.exists() for p in paths):
        return paths  # already written with these settings
    for p in folder.glob("*"):
        p.unlink()
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(classes, features)).astype(np.float32) / np.sqrt(features) * 2.0
    bounds = np.linspace(0, rows, parts + 1).astype(np.int64)
    for i, path in enumerate(paths):
        n = int(bounds[i + 1] - bounds[i])
        part_rng = np.random.default_rng([seed, i])
        X = part_rng.standard_normal((n, features), dtype=np.float32)
        y = np.argmax(X @ W.T + part_rng.gumbel(size=(n, classes)).astype(np.float32), axis=1)
        columns = {f"x{j:03d}": X[:, j] for j in range(features)}
        columns["y"] = y.astype(np.int32)
        pq.write_table(pa.table(columns), path)
    stamp.write_text(json.dumps({"rows": rows, "features": features, "classes": classes, "parts": parts}))
    return paths


def _rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _timer_callback(times: list[float]):
    def callback(progress) -> bool:
        times.append(time.perf_counter())
        return False

    return callback


_EVALUATIONS = [0, 0.0]  # count, seconds inside them


def _count_evaluations() -> None:
    """Count the objective's data passes (benchmark instrumentation: L-BFGS iterations differ in
    how many evaluations their line searches take, so time per evaluation is the fair unit)."""
    from softxent.models import _objective

    original = _objective.Objective.loss_grad

    def counted(self, W, b):
        start = time.perf_counter()
        out = original(self, W, b)
        _EVALUATIONS[0] += 1
        _EVALUATIONS[1] += time.perf_counter() - start
        return out

    _objective.Objective.loss_grad = counted


def _fit_result(model, start: float, times: list[float], rows: int) -> dict:
    fit_s = time.perf_counter() - start
    per_iter = (times[-1] - times[0]) / max(len(times) - 1, 1) if len(times) > 1 else float("nan")
    return {
        "rows": rows,
        "fit_s": fit_s,
        "iterations": int(model.n_iter_),
        "per_iter_s": per_iter,
        "per_iter_per_mrow_s": per_iter / (rows / 1e6),
        "objective": float(model.loss_curve_[-1]),
        "evaluations": _EVALUATIONS[0],
        "per_eval_per_mrow_s": _EVALUATIONS[1] / max(_EVALUATIONS[0], 1) / (rows / 1e6),
    }


def run_dask(paths: list[Path], workers: int, memory_limit: str, C: float, tol: float, max_iter: int) -> dict:
    import dask.dataframe as dd
    import distributed

    from softxent.models import SoftmaxRegression

    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
        dashboard_address=None, silence_logs=40,
    )  # fmt: skip
    client = distributed.Client(cluster)
    try:
        times: list[float] = []
        start = time.perf_counter()
        frame = dd.read_parquet([str(p) for p in paths])
        features = [c for c in frame.columns if c != "y"]
        model = SoftmaxRegression(C=C, tol=tol, max_iter=max_iter, dtype=np.float32, callback=_timer_callback(times))
        model.fit(frame[features], frame["y"])
        rows = _rows(paths)
        result = _fit_result(model, start, times, rows)
        result["worker_peak_mb"] = sorted(
            client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values()
        )
    finally:
        client.close()
        cluster.close()
    result["client_peak_mb"] = _peak_rss_mb()
    return result


def run_memory(paths: list[Path], n_parts: int, C: float, tol: float, max_iter: int, n_jobs: int | None) -> dict:
    import pandas as pd

    from softxent.models import SoftmaxRegression

    frame = pd.concat([pd.read_parquet(p) for p in paths[:n_parts]], ignore_index=True)
    y = frame.pop("y").to_numpy()
    X = np.ascontiguousarray(frame.to_numpy(dtype=np.float32))
    del frame
    times: list[float] = []
    start = time.perf_counter()
    model = SoftmaxRegression(
        C=C, tol=tol, max_iter=max_iter, dtype=np.float32, n_jobs=n_jobs, callback=_timer_callback(times)
    )
    model.fit(X, y)
    result = _fit_result(model, start, times, len(y))
    result["client_peak_mb"] = _peak_rss_mb()
    result["worker_peak_mb"] = []
    return result


def _child(args: argparse.Namespace, config: str) -> dict:
    """One configuration in a fresh Python process; its JSON result."""
    cmd = [sys.executable, __file__, "--child", config] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "configs") and v is not None
    ]
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(results: dict[str, dict], args: argparse.Namespace) -> str:
    best = min(r["objective"] for name, r in results.items() if name.startswith("dask"))  # the full data's fits
    lines = [
        "| configuration | rows | fit (s) | iterations | evaluations | s / iteration | s / iteration / 1M rows | "
        "s / evaluation / 1M rows | objective f | f − best (rel.) | client peak RSS (MB) | worker peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        workers = ", ".join(f"{m:.0f}" for m in r["worker_peak_mb"]) or "—"
        lines.append(
            f"| {name} | {r['rows']:,} | {r['fit_s']:.1f} | {r['iterations']} | {r['evaluations']} | "
            f"{r['per_iter_s']:.3f} | {r['per_iter_per_mrow_s']:.3f} | {r['per_eval_per_mrow_s']:.3f} | "
            f"{r['objective']:.8f} | "
            + ("— (a subset)" if name.startswith("memory") else f"{(r['objective'] - best) / best:.1e}")
            + " | "
            f"{r['client_peak_mb']:.0f} | {workers} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--parts", type=int, default=64, help="Parquet files (and Dask partitions)")
    parser.add_argument("--subset-parts", type=int, default=None, help="parts fitted in memory (default: a quarter)")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1,2")
    parser.add_argument("--memory-limit", default="6GiB", help="each worker's memory_limit")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", default="/tmp/softxent_scale_out")
    parser.add_argument("--out", default=str(HERE / "results" / "scale_out.md"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder)
    subset = args.subset_parts or max(1, args.parts // 4)
    if args.child is not None:
        _count_evaluations()
        paths = sorted(folder.glob("part-*.parquet"))
        if args.child.startswith("memory"):
            n_jobs = 1 if args.child == "memory-1" else None
            result = run_memory(paths, subset, args.C, args.tol, args.max_iter, n_jobs)
        else:
            result = run_dask(paths, int(args.child.split("-")[1]), args.memory_limit, args.C, args.tol, args.max_iter)
        print(json.dumps(result))
        return
    start = time.perf_counter()
    paths = write_parts(folder, args.rows, args.features, args.classes, args.parts, args.seed)
    size_gb = sum(p.stat().st_size for p in paths) / 1e9
    print(f"data: {len(paths)} parts, {size_gb:.2f} GB on disk ({time.perf_counter() - start:.0f} s)", flush=True)
    results: dict[str, dict] = {}
    configs = ["memory-1", "memory"] + [f"dask-{w}" for w in args.workers.split(",")]
    for config in configs:
        results[config] = _child(args, config)
        print(config, json.dumps(results[config]), flush=True)
    dask_names = [name for name in results if name.startswith("dask")]
    # Against the in-memory fit on as many cores: one thread for dask-1, two for dask-2.
    overhead = {
        name: results[name]["per_iter_per_mrow_s"]
        / results["memory-1" if name == "dask-1" else "memory"]["per_iter_per_mrow_s"]
        for name in dask_names
    }
    overhead_eval = {
        name: results[name]["per_eval_per_mrow_s"]
        / results["memory-1" if name == "dask-1" else "memory"]["per_eval_per_mrow_s"]
        for name in dask_names
    }
    k, d = args.classes, args.features
    coef_kb = k * (d + 1) * 8 / 1e3
    chunks = args.parts
    report = [
        "# Scale-out: SoftmaxRegression on Dask (benchmarks/scale_out.py)",
        "",
        f"Command: `python benchmarks/scale_out.py --rows {args.rows} --features {args.features} "
        f"--classes {args.classes} --parts {args.parts} --workers {args.workers}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, shared with other jobs).",
        "",
        f"Data: {args.rows:,} rows x {args.features} float32 features, {args.classes} classes, "
        f"{len(paths)} Parquet parts ({size_gb:.2f} GB on disk, "
        f"{args.rows * args.features * 4 / 1e9:.2f} GB as float32 in memory). C={args.C}, tol={args.tol}, "
        f"dtype=float32. `memory`: softxent in memory on the first {subset} parts (`memory-1`: n_jobs=1, one "
        "thread; `memory`: both cores); `dask-N`: a LocalCluster of N worker processes, one thread each, all "
        "parts read with dask.dataframe.read_parquet. Fit times include reading the Parquet parts (Dask) but not "
        "loading them (memory).",
        "",
        _table(results, args),
        "",
        "Per-iteration time of the Dask path per row, against the in-memory fit on as many cores (dask-1 against "
        "memory-1, dask-2 against memory): "
        + ", ".join(f"{name} {o:.2f}x" for name, o in overhead.items())
        + "; per evaluation of the objective (one pass over the data) per row: "
        + ", ".join(f"{name} {o:.2f}x" for name, o in overhead_eval.items())
        + " (target <= 1.3x). This machine's 2 cores were shared with other jobs during the run: compare "
        "rows of one run, and expect +-30% between runs.",
        "",
        "What changes on a real cluster: per evaluation the driver sends the coefficients once to each worker "
        f"({k} x {d + 1} float64 = {coef_kb:.0f} kB) and receives one reduced gradient of the same size; inside "
        f"the cluster {chunks} partial gradients ({chunks * coef_kb / 1e3:.2f} MB) move to the reduction tree "
        "(fan-in 8). On 10 Gb/s links that is well under 1 ms of transfer plus a few task round trips "
        "(about 1-5 ms each, two tree levels) per evaluation, against the compute of reading each chunk once "
        f"(here {args.rows // chunks:,} rows x {d} float32 = {args.rows // chunks * d * 4 / 1e6:.0f} MB per chunk, "
        "0.1-0.3 s on one core). The network is then a small fraction of an iteration as long as chunks hold "
        "megabytes; with many tiny chunks the per-task scheduling cost (about 1 ms a task at the scheduler) "
        "dominates, so chunks of 10^5 rows or more are the rule.",
        "",
        "TODO: Spark MLlib (multinomial, local[2]) and dask-ml (binary) peers; see the script's docstring.",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
