"""Scale-out benchmark: SoftmaxRegression on Dask against in memory, Spark MLlib and dask-ml.

Synthetic multinomial data (float32 features, integer classes drawn from a
random linear model with Gumbel noise) is written as Parquet parts; then each
configuration runs in a fresh process (so that peak memory is its own):

* ``dask-N``: a ``LocalCluster`` of N worker processes (one thread each), the
  parts read lazily with ``dask.dataframe.read_parquet``, the fit on Dask;
* ``memory-1`` / ``memory``: softxent in memory on the first parts (a subset
  that fits), on one thread / both cores, for the per-iteration overhead of
  the Dask path (time per iteration per row, on as many cores);
* ``spark``: Spark MLlib's ``LogisticRegression(family="multinomial")`` in
  ``local[2]`` on the same Parquet parts, ``regParam = 1 / (C n)``,
  ``elasticNetParam = 0``, ``standardization=False`` (the same objective);
* ``binary-N`` and ``dask-ml-N``: class 0 versus the rest on the same parts,
  softxent ``SigmoidRegression`` on Dask against dask-ml's binary
  ``LogisticRegression(solver="lbfgs")``, mapped to the same objective (see
  ``_scale_out_peers.py``: dask-ml penalises its intercept, so both fit
  ``[X, 1]`` with a penalised constant column).

Every full-data row's solution is then scored with softxent's objective
(``objective_value``, float64, a part at a time), the best of each task
taken as the optimum, and each row's time to 1e-6 (relative) of it read off
the solver's own objective per iteration. A peer that is not installed
(``pyspark``, a Java runtime, ``dask-ml``) is skipped with the reason printed.

Reported per configuration: rows, fit time (from ``fit`` to the fitted model,
reading the Parquet parts included), time to 1e-6 of the optimum, L-BFGS
iterations, time per iteration (softxent: between the first and last
iteration callbacks, so without the set-up passes), evaluations of the
objective and seconds per evaluation per million rows (softxent: the time
inside ``Objective.loss_grad``, instrumented by this script: one data pass),
the final objective f = F / (C n), f at the solution and its distance to the
best, peak resident memory of the client process (which also runs the
scheduler) and of each worker (Spark: its JVM).

Usage::

    python benchmarks/scale_out.py --rows 8000000 --features 100 --classes 20   # the issue's size (3.2 GB)
    python benchmarks/scale_out.py --rows 1000000 --parts 16                     # all rows in ~10 min
    python benchmarks/scale_out.py --rows 20000 --parts 4 --configs memory,dask-1 --out /tmp/x.md  # a smoke run
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


def _timer_callback(times: list[float], losses: list[float]):
    def callback(progress) -> bool:
        times.append(time.perf_counter())
        losses.append(float(progress.loss))
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


def _fit_result(model, start: float, times: list[float], losses: list[float], rows: int) -> dict:
    fit_s = time.perf_counter() - start
    per_iter = (times[-1] - times[0]) / max(len(times) - 1, 1) if len(times) > 1 else float("nan")
    return {
        "rows": rows,
        "fit_s": fit_s,
        "iterations": int(model.n_iter_),
        "per_iter_s": per_iter,
        "objective": float(model.loss_curve_[-1]),
        "evaluations": _EVALUATIONS[0],
        "per_eval_s": _EVALUATIONS[1] / max(_EVALUATIONS[0], 1),
        "history": losses,
        "history_s": [t - start for t in times],
        "coef": np.asarray(model.coef_, dtype=np.float64).tolist(),
        "intercept": np.asarray(model.intercept_, dtype=np.float64).tolist(),
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
        losses: list[float] = []
        start = time.perf_counter()
        frame = dd.read_parquet([str(p) for p in paths])
        features = [c for c in frame.columns if c != "y"]
        model = SoftmaxRegression(
            C=C, tol=tol, max_iter=max_iter, dtype=np.float32, callback=_timer_callback(times, losses)
        )
        model.fit(frame[features], frame["y"])
        result = _fit_result(model, start, times, losses, _rows(paths))
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
    losses: list[float] = []
    start = time.perf_counter()
    model = SoftmaxRegression(
        C=C, tol=tol, max_iter=max_iter, dtype=np.float32, n_jobs=n_jobs, callback=_timer_callback(times, losses)
    )
    model.fit(X, y)
    result = _fit_result(model, start, times, losses, len(y))
    result["client_peak_mb"] = _peak_rss_mb()
    result["worker_peak_mb"] = []
    return result


def _warm_up(features: int) -> None:
    """A tiny fit of each head before any timing: the JIT kernels compile (or load from numba's cache)
    here and not inside the first timed evaluation (a compile took 45 s on the busy host), and their
    cache is then there for the Dask workers too."""
    from softxent.models import SigmoidRegression, SoftmaxRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, features), dtype=np.float32)
    y = np.arange(300) % 3
    SoftmaxRegression(max_iter=3, dtype=np.float32).fit(X, y)
    SigmoidRegression(max_iter=3, dtype=np.float32).fit(X, y == 0)


def _run_child(args: argparse.Namespace, config: str, paths: list[Path], subset: int) -> dict:
    """Run one configuration in this (child) process."""
    import _scale_out_peers as peers

    if config != "spark" and not config.startswith("dask-ml"):
        _warm_up(args.features)

    workers = int(config.rsplit("-", 1)[1]) if config[-1].isdigit() and not config.startswith("memory") else 0
    limit = args.memory_limit if workers > 1 else args.memory_limit_single
    if config.startswith("memory"):
        _count_evaluations()
        return run_memory(paths, subset, args.C, args.tol, args.max_iter, 1 if config == "memory-1" else None)
    if config.startswith("dask-ml"):
        return peers.run_dask_ml(paths, workers, limit, args.C, args.tol, args.max_iter)
    if config.startswith("dask"):
        _count_evaluations()
        return run_dask(paths, workers, limit, args.C, args.tol, args.max_iter)
    if config.startswith("binary"):
        _count_evaluations()
        return peers.run_softxent_binary(paths, workers, limit, args.C, args.tol, args.max_iter, _EVALUATIONS)
    if config == "spark":
        return peers.run_spark(paths, args.C, args.spark_tol, args.spark_max_iter, args.spark_memory)
    raise ValueError(f"--configs: unknown configuration {config!r}")


# The workers keep memory_limit (a worker above 95% of it is restarted) but neither spill nor pause:
# a fit's persisted blocks are read at every evaluation, so spilling them to disk would make each
# iteration a disk pass, and a paused worker would stall the fit.
CHILD_ENV = {
    "PYTHONWARNINGS": "ignore",
    "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False",
}


def _source_state() -> str:
    """The commit this run's softxent came from, and whether src/ had changes beside it (a shared
    checkout moves while a long benchmark runs: each row says what it measured)."""
    git = ["git", "-C", str(HERE.parent)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + (" + uncommitted src/ changes" if dirty else "")


def _child(args: argparse.Namespace, config: str) -> dict:
    """One configuration in a fresh Python process; its JSON result."""
    cmd = [sys.executable, __file__, "--child", config] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("child", "resume") and v is not None
    ]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
    if out.returncode != 0:
        raise RuntimeError(f"{config} failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["source"] = _source_state()
    result["load"] = os.getloadavg()
    return result


def _missing(config: str) -> str | None:
    """Why a peer's configuration cannot run on this machine (None: it can)."""
    import _scale_out_peers as peers

    if config == "spark":
        return peers.spark_missing()
    if config.startswith("dask-ml"):
        return peers.dask_ml_missing()
    return None


def _score(results: dict[str, dict], paths: list[Path], C: float) -> dict[str, float]:
    """Softxent's objective at every full-data row's solution; the best per task (multinomial, binary)."""
    import _scale_out_peers as peers

    models = {
        name: (r["coef"], r["intercept"], name.startswith(("binary", "dask-ml")))
        for name, r in results.items()
        if not name.startswith("memory")
    }
    scores = peers.objectives_on_parts(paths, models, C) if models else {}
    best = {}
    for name, value in scores.items():
        results[name]["f_eval"] = value
        task = "binary" if models[name][2] else "multinomial"
        best[task] = min(best.get(task, np.inf), value)
    for name, value in scores.items():
        r = results[name]
        task_best = best["binary" if models[name][2] else "multinomial"]
        r["f_rel"] = (value - task_best) / task_best
        r["reached"] = r["f_rel"] <= REL
        # The solver's own f per iteration (softxent: float32 data) shifted to the float64 score.
        shift = value - min(r["history"])
        r["to_target_s"] = peers.time_to(r, task_best * (1 + REL) - shift)
    return best


REL = 1e-6  # "the same objective": within this of the best (relative)


def _fmt(value, spec: str, empty: str = "—") -> str:
    return empty if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def _table(results: dict[str, dict], names: list[str], persisted: bool = False) -> str:
    """The rows ``names`` as a Markdown table; ``persisted``: two more columns, the fit and the time to
    the target counted from the end of the read (X and y persisted on the workers)."""
    extra = " fit on persisted X (s) | to target on persisted X (s) |" if persisted else ""
    lines = [
        f"| configuration | rows | fit (s) |{extra} to {REL:.0e} of best (s) | iterations | evaluations | "
        "s / iteration | s / evaluation / 1M rows | f (solver's own) | f at solution (float64) | f − best (rel.) | "
        "client peak RSS (MB) | worker peak RSS (MB) |",
        "|---|---|---|" + ("---|---|" if persisted else "") + "---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        r = results[name]
        fits = r.get("fit_s_all", [r["fit_s"]])
        fit = f"{r['fit_s']:.1f}" + (f" (median of {', '.join(f'{t:.1f}' for t in fits)})" if len(fits) > 1 else "")
        per_eval = r.get("per_eval_s")
        workers = ", ".join(f"{m:.0f}" for m in r["worker_peak_mb"]) or "—"
        subset = name.startswith("memory")
        to_target = "— (a subset)" if subset else _fmt(r.get("to_target_s"), ".1f", "not reached")
        own = r.get("objective", min(r["history"]) if r.get("history") else None)
        columns = ""
        if persisted:
            read = r.get("persist_s")
            after = None if read is None or r.get("to_target_s") is None else r["to_target_s"] - read
            columns = f" {_fmt(None if read is None else r['fit_s'] - read, '.1f')} | {_fmt(after, '.1f')} |"
        lines.append(
            f"| {name} | {r['rows']:,} | {fit} |{columns} {to_target} | {r['iterations']} | "
            f"{r.get('evaluations', '—')} | {_fmt(r['per_iter_s'], '.3f')} | "
            f"{_fmt(None if per_eval is None else per_eval / (r['rows'] / 1e6), '.3f')} | {_fmt(own, '.8f')} | "
            f"{'— (a subset)' if subset else _fmt(r.get('f_eval'), '.8f')} | "
            f"{'—' if subset else _fmt(r.get('f_rel'), '.1e')} | {r['client_peak_mb']:.0f} | {workers} |"
        )
    return "\n".join(lines)


def _ratio(results: dict[str, dict], slow: str, fast: str, key: str) -> str:
    a, b = results.get(slow, {}).get(key), results.get(fast, {}).get(key)
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def _persisted_ratio(results: dict[str, dict], slow: str | None, fast: str | None) -> str:
    """The ratio of the times to the target counted from the end of the read, and of the fits after it."""
    a, b = results.get(slow or "", {}), results.get(fast or "", {})
    if a.get("persist_s") is None or b.get("persist_s") is None:
        return "n/a"
    parts = []
    if a.get("to_target_s") and b.get("to_target_s"):
        parts.append(f"{(a['to_target_s'] - a['persist_s']) / (b['to_target_s'] - b['persist_s']):.2f}x to the target")
    parts.append(f"{(a['fit_s'] - a['persist_s']) / (b['fit_s'] - b['persist_s']):.2f}x whole fits")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=8_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--parts", type=int, default=64, help="Parquet files (and Dask partitions)")
    parser.add_argument("--subset-parts", type=int, default=None, help="parts fitted in memory (default: a quarter)")
    parser.add_argument("--workers", default="1,2", help="worker counts of the softxent Dask rows, e.g. 1,2")
    parser.add_argument(
        "--configs", default=None, help="comma-separated subset of memory-1,memory,dask-N,spark,binary-N,dask-ml-N"
    )
    parser.add_argument("--resume", action="store_true", help="keep the results of an earlier run on this data")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (the median fit is kept)")
    parser.add_argument(
        "--memory-limit", default="2.75GiB", help="memory_limit of each worker of a multi-worker cluster"
    )
    parser.add_argument("--memory-limit-single", default="8GiB", help="memory_limit of a one-worker cluster")
    parser.add_argument("--C", type=float, default=1.0)
    parser.add_argument("--tol", type=float, default=1e-5, help="softxent's tol (dask-ml: tol * rows, the same rule)")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--spark-tol", type=float, default=1e-9, help="Spark's tol (relative change of f)")
    parser.add_argument("--spark-max-iter", type=int, default=300)
    parser.add_argument("--spark-memory", default="8g", help="spark.driver.memory (local[2]: the one JVM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", default="/tmp/softxent_scale_out")
    parser.add_argument("--out", default=str(HERE / "results" / "scale_out.md"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.folder)
    subset = args.subset_parts or max(1, args.parts // 4)
    if args.child is not None:
        print(json.dumps(_run_child(args, args.child, sorted(folder.glob("part-*.parquet")), subset)))
        return
    load_start = os.getloadavg()
    start = time.perf_counter()
    paths = write_parts(folder, args.rows, args.features, args.classes, args.parts, args.seed)
    size_gb = sum(p.stat().st_size for p in paths) / 1e9
    print(f"data: {len(paths)} parts, {size_gb:.2f} GB on disk ({time.perf_counter() - start:.0f} s)", flush=True)
    counts = args.workers.split(",")
    top = max(counts, key=int)
    default = ["memory-1", "memory"] + [f"dask-{w}" for w in counts] + ["spark", f"binary-{top}", f"dask-ml-{top}"]
    configs = args.configs.split(",") if args.configs else default
    # Each configuration's result is kept beside the data as it finishes: --resume takes them up
    # again (a long run stopped half way, or the configurations run in several invocations).
    partial = folder / "results.partial.json"
    results: dict[str, dict] = json.loads(partial.read_text()) if args.resume and partial.exists() else {}
    skipped: dict[str, str] = {}
    for config in configs:
        if config in results:
            print(f"{config}: taken from {partial}", flush=True)
            continue
        reason = _missing(config)
        if reason:
            skipped[config] = reason
            print(f"{config}: skipped, {reason}", flush=True)
            continue
        runs = []
        for _ in range(args.repeats):
            runs.append(_child(args, config))
            brief = {k: v for k, v in runs[-1].items() if k not in ("coef", "intercept", "history", "history_s")}
            print(config, json.dumps(brief), flush=True)
        runs.sort(key=lambda r: r["fit_s"])
        results[config] = runs[len(runs) // 2]
        results[config]["fit_s_all"] = [r["fit_s"] for r in runs]
        partial.write_text(json.dumps(results))
    results = {name: results[name] for name in configs if name in results}  # the table in --configs order
    load_runs = os.getloadavg()
    best = _score(results, paths, args.C)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({"args": vars(args), "results": results, "skipped": skipped, "best": best}, indent=1)
    )
    report = _report(args, results, skipped, paths, size_gb, subset, (load_start, load_runs))
    Path(args.out).write_text(report)
    print(report)


def _report(args, results, skipped, paths, size_gb, subset, loads) -> str:
    multi = [n for n in results if not n.startswith(("binary", "dask-ml"))]
    binary = [n for n in results if n.startswith(("binary", "dask-ml"))]
    dask_names = [n for n in multi if n.startswith("dask")]

    def per_mrow(name: str, key: str) -> float | None:
        r = results.get(name, {})
        return None if r.get(key) is None else r[key] / (r["rows"] / 1e6)

    overhead = []
    for name in dask_names:
        ref = "memory-1" if name == "dask-1" else "memory"
        if ref in results:
            it = per_mrow(name, "per_iter_s") / per_mrow(ref, "per_iter_s")
            ev = per_mrow(name, "per_eval_s") / per_mrow(ref, "per_eval_s")
            overhead.append(f"{name} against {ref}: {it:.2f}x per iteration, {ev:.2f}x per evaluation")
    top = max(dask_names, key=lambda n: int(n.split("-")[1]), default=None)
    top_binary = next((n for n in binary if n.startswith("binary")), None)
    top_dask_ml = next((n for n in binary if n.startswith("dask-ml")), None)
    k, d, chunks = args.classes, args.features, len(paths)
    coef_kb = k * (d + 1) * 8 / 1e3
    # Compute per chunk: one evaluation's time on N workers, times N, over the chunks.
    ref = "dask-1" if "dask-1" in results else top
    chunk_s = results[ref]["per_eval_s"] * int(ref.split("-")[1]) / chunks if ref else None
    mb_chunk = args.rows // chunks * d * 4 / 1e6
    net_ms = 2 * coef_kb * 1e3 / 1.25e9 * 1e3  # broadcast + reduced gradient at 10 Gb/s
    cmd = " ".join(["python", "benchmarks/scale_out.py"] + sys.argv[1:])
    lines = [
        "# Scale-out: SoftmaxRegression on Dask against in memory, Spark MLlib and dask-ml (benchmarks/scale_out.py)",
        "",
        f"Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs shared with other agents; "
        f"niceness {os.nice(0)}; load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in loads[0])} at the start, "
        f"{', '.join(f'{v:.1f}' for v in loads[1])} after the fits).",
        "",
        f"Data: {args.rows:,} rows x {d} float32 features, {k} classes, {len(paths)} Parquet parts "
        f"({size_gb:.2f} GB on disk, {args.rows * d * 4 / 1e9:.2f} GB as float32 in memory). C={args.C}, "
        f"softxent tol={args.tol} (dtype=float32). `memory`: softxent in memory on the first {subset} parts "
        "(`memory-1`: n_jobs=1; `memory`: both cores); `dask-N`: a LocalCluster of N worker processes, one thread "
        f"each (memory_limit {args.memory_limit} per worker with 2 or more workers, {args.memory_limit_single} "
        "for one; no spilling or pausing, restart at 95%), all parts read with dask.dataframe.read_parquet. Fit times include reading the Parquet parts "
        '(Dask, Spark) but not loading them (memory). `spark`: `LogisticRegression(family="multinomial", '
        f"regParam=1/(C n), elasticNetParam=0, standardization=False, tol={args.spark_tol}, "
        f"maxIter={args.spark_max_iter})` in local[2], spark.driver.memory={args.spark_memory}; each of its L-BFGS evaluations is one Spark job, timed by "
        "polling the status tracker every 50 ms: its time per iteration is the median time between evaluations, "
        "its time to the target the end of the job that evaluated the first iterate within it. Best = the lowest softxent "
        "objective (float64, all rows) among the rows of a task; the time to the target is read off each "
        f"solver's own objective per iteration (evaluation, dask-ml), shifted to the float64 score.",
        "",
        "## Multinomial (20 classes)",
        "",
        _table(results, multi),
        "",
    ]
    if binary:
        lines += [
            "## Binary (class 0 versus the rest) on Dask: softxent SigmoidRegression against dask-ml",
            "",
            'dask-ml\'s `LogisticRegression(solver="lbfgs", C=C, fit_intercept=True, tol=tol * n)` penalises its '
            "intercept (a column of ones in X, all of beta under the L2 penalty), so `binary-N` is softxent's "
            "`SigmoidRegression(C=C, fit_intercept=False)` on `[X, 1]`: the same objective, and SciPy's `pgtol` "
            "on the sum is softxent's tol on the mean. Both rows read the same Parquet parts with one "
            "function (Arrow columns copied into C-ordered float32 rows) and persist X and y on the workers "
            "before the fit, inside the timed fit: `fit (s)` is the whole, `fit on persisted X (s)` the part "
            "after the read.",
            "",
            _table(results, binary, persisted=True),
            "",
        ]
    for name, reason in skipped.items():
        lines.append(f"Skipped {name}: {reason}.")
    sources = [
        f"{name} at {r['source']} (load {', '.join(f'{v:.1f}' for v in r['load'])} after it)"
        for name, r in results.items()
        if r.get("source")
    ]
    if sources:
        lines += ["", "Rows measured on: " + "; ".join(sources) + "."]
    lines += [
        "",
        "## Targets (issue 17)",
        "",
        "- Dask per-iteration overhead against in memory (per row, on as many cores; target <= 1.3x): "
        + ("; ".join(overhead) or "n/a")
        + ".",
        f"- softxent on Dask ({top}) against Spark to the same objective (target >= 3x): "
        + _ratio(results, "spark", top, "to_target_s")
        + f" (whole fits: {_ratio(results, 'spark', top, 'fit_s')}).",
        f"- softxent on Dask ({top_binary}) against dask-ml ({top_dask_ml}) to the same objective (target >= 3x): "
        + _ratio(results, top_dask_ml, top_binary, "to_target_s")
        + f" (whole fits: {_ratio(results, top_dask_ml, top_binary, 'fit_s')}; on persisted X: "
        + _persisted_ratio(results, top_dask_ml, top_binary)
        + ").",
        "- 1 worker against 2 (time on 1 / time on 2; above 1: two workers are faster): "
        + (
            f"fit {_ratio(results, 'dask-1', 'dask-2', 'fit_s')}, per evaluation "
            f"{_ratio(results, 'dask-1', 'dask-2', 'per_eval_s')}"
            if {"dask-1", "dask-2"} <= set(results)
            else "n/a"
        )
        + ".",
        "",
        "## What changes on a real cluster",
        "",
        f"Per evaluation the driver sends one task to each worker, the coefficients inside it ({k} x {d + 1} "
        f"float64 = {coef_kb:.0f} kB), and receives one partial gradient of the same size from each worker, summed "
        "over the chunks that worker holds (with more than 8 workers the partials are first summed in a tree of "
        f"fan-in 8 on the workers). On 10 Gb/s links, per worker, the coefficients and the partial take about "
        f"{net_ms:.2f} ms of transfer, plus one task round trip (about 1-5 ms), per evaluation; the driver's "
        "share grows with the workers (W tasks sent, W partials summed), about 1 ms a worker at the scheduler. "
        "The compute it pays for is one read "
        f"of each chunk: here {args.rows // chunks:,} rows x {d} float32 = {mb_chunk:.0f} MB per chunk, "
        + (f"{chunk_s:.3f} s on one core in this run" if chunk_s else "(no Dask row ran)")
        + (
            f", {results[top]['per_eval_s']:.2f} s per evaluation over all chunks on {top.split('-')[1]} workers"
            if top
            else ""
        )
        + (
            f"; a fixed 5-20 ms per evaluation is {5e-3 / results[ref]['per_eval_s']:.1%}-"
            f"{20e-3 / results[ref]['per_eval_s']:.1%} of this run's evaluation on {ref.split('-')[1]} worker(s)"
            if ref
            else ""
        )
        + ". With W workers an evaluation costs about (chunks / W) x the chunk time plus a fixed 5-20 ms of "
        "network and scheduling (one task per worker, however many chunks each holds), so the network stays a "
        "few percent of an iteration while each worker holds tens of megabytes or more. Spark's "
        "treeAggregate pays the same broadcast and reduction; dask-ml's L-BFGS scatters one coefficient vector "
        "(d + 1 floats) per evaluation and computes the loss and the gradient as two graphs in one compute call.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
