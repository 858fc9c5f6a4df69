"""The peers of ``benchmarks/scale_out.py``: Spark MLlib, dask-ml, and one objective to judge them all.

Each peer is fitted on the same Parquet parts as softxent, with its
regularisation mapped to softxent's objective (``softxent.models._objective``):

.. math::

    f = F / (C n) = \\frac1n \\sum_i \\ell_i + \\frac{1}{2 C n} \\lVert W \\rVert_F^2

(unit sample weights; the intercept not penalised).

* Spark MLlib ``LogisticRegression(family="multinomial")`` minimises
  ``mean loss + regParam * (elasticNetParam * |W|_1 + (1 - elasticNetParam) / 2 * |W|^2)``
  without penalising the intercept; with ``standardization=False`` the
  penalty is on the raw coefficients. So ``regParam = 1 / (C n)``,
  ``elasticNetParam = 0``, ``standardization=False`` is the same ``f``
  (its ``objectiveHistory`` equals softxent's ``f`` to all digits on a small
  set, checked again here by evaluating softxent's objective at its solution).
* dask-ml's ``LogisticRegression(solver="lbfgs")`` (binary) hands dask-glm the
  objective ``sum loss + (1 / C) * |beta|^2 / 2`` where ``beta`` includes the
  intercept: dask-ml appends a column of ones to X and penalises all of
  ``beta``. That is softxent's objective on ``[X, 1]`` with
  ``fit_intercept=False`` (times ``C``), which is what the softxent binary row
  fits. Its stopping rule is SciPy's ``pgtol`` on the gradient of that sum,
  ``n`` times the gradient of ``f``: ``tol = softxent's tol * n`` is the same
  rule.

:func:`objectives_on_parts` evaluates ``f`` for any fitted coefficients with
``softxent.models.objective_value``, one Parquet part at a time in float64.
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def spark_missing() -> str | None:
    """Why the Spark row cannot run here (None when it can)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install pyspark)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (java not on PATH, JAVA_HOME unset)"
    return None


def dask_ml_missing() -> str | None:
    """Why the dask-ml row cannot run here (None when it can)."""
    try:
        import dask_ml.linear_model  # noqa: F401
    except ImportError as error:
        return f"dask-ml is not importable ({error})"
    return None


def _features(paths: list[Path]) -> list[str]:
    import pyarrow.parquet as pq

    return [name for name in pq.ParquetFile(paths[0]).schema_arrow.names if name != "y"]


def objectives_on_parts(paths: list[Path], models: dict[str, tuple[Any, Any, bool]], C: float) -> dict[str, float]:
    """``f = F / (C n)`` of softxent's objective for each model ``name: (coef, intercept, binary)``.

    ``binary``: the class-0-versus-rest task on ``[X, 1]`` (``coef`` of shape
    (1, d + 1), ``intercept`` None). Each part is read once and scored with
    ``objective_value`` for every model (float64); a part's value is
    ``C L_p + |W|^2 / 2``, so the data terms are summed and the penalty added once.
    """
    import pandas as pd

    from softxent.models import objective_value

    weights = {name: np.atleast_2d(np.asarray(coef, dtype=np.float64)) for name, (coef, _, _) in models.items()}
    halves = {name: 0.5 * float(np.vdot(W, W)) for name, W in weights.items()}
    data_terms = dict.fromkeys(models, 0.0)
    rows = 0
    for path in paths:
        frame = pd.read_parquet(path)
        y = frame.pop("y").to_numpy()
        X = frame.to_numpy(dtype=np.float64)
        del frame
        X1 = y01 = None
        for name, (_, intercept, binary) in models.items():
            if binary:
                if X1 is None:
                    X1, y01 = np.hstack([X, np.ones((len(X), 1))]), (y == 0).astype(np.float64)
                value = objective_value(weights[name], intercept, X1, y01, C=C)
            else:
                value = objective_value(weights[name], intercept, X, y, C=C)
            data_terms[name] += value - halves[name]
        rows += len(y)
    return {name: (data_terms[name] + halves[name]) / (C * rows) for name in models}


def run_spark(paths: list[Path], C: float, tol: float, max_iter: int, driver_memory: str) -> dict:
    """Spark MLlib's multinomial logistic regression in ``local[2]`` on the Parquet parts."""
    import pyarrow.parquet as pq
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession

    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    features = _features(paths)
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.sql.files.maxPartitionBytes", str(64 << 20))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    jobs = _JobClock(spark.sparkContext.statusTracker())
    try:
        start = time.perf_counter()
        frame = spark.read.parquet(*[str(p) for p in paths])
        data = VectorAssembler(inputCols=features, outputCol="features").transform(frame)
        data = data.selectExpr("features", "cast(y as double) as label")
        model = LogisticRegression(
            family="multinomial", regParam=1.0 / (C * rows), elasticNetParam=0.0, standardization=False,
            fitIntercept=True, tol=tol, maxIter=max_iter,
        ).fit(data)  # fmt: skip
        fit_s = time.perf_counter() - start
        finished = jobs.stop()
        history = [float(v) for v in model.summary.objectiveHistory]
        coef = model.coefficientMatrix.toArray()
        intercept = model.interceptVector.toArray()
        iterations = int(model.summary.totalIterations)
        jvm_peak = _process_peak_mb(spark.sparkContext._gateway.proc.pid)
    finally:
        jobs.stop()
        spark.stop()
    # Each L-BFGS evaluation is one Spark job (a treeAggregate) and the last len(history) jobs are
    # the evaluations of the history's iterates (one per iteration: 36 jobs for 36 entries after 4
    # set-up jobs on a small set). Aligned from the end, the history gets its times.
    evaluations = [t - start for t in finished[-len(history) :]] if len(finished) >= len(history) else []
    steps = np.diff(evaluations)
    return {
        "rows": rows,
        "fit_s": fit_s,
        "iterations": iterations,
        "jobs": len(finished),
        "setup_s": evaluations[0] if evaluations else float("nan"),
        "per_iter_s": float(np.median(steps)) if len(steps) else fit_s / max(iterations, 1),
        "history": history,
        "history_s": evaluations or [fit_s * (k + 1) / len(history) for k in range(len(history))],
        "coef": coef.tolist(),
        "intercept": intercept.tolist(),
        "client_peak_mb": _peak_rss_mb(),
        "worker_peak_mb": [jvm_peak],
    }


class _JobClock:
    """The completion time of every Spark job, from a thread polling the status tracker (benchmark
    instrumentation: MLlib's L-BFGS reports no times)."""

    def __init__(self, tracker) -> None:
        import threading

        self._tracker = tracker
        self._done: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self._tracker.getJobIdsForGroup(None):
                    if job not in self._done:
                        info = self._tracker.getJobInfo(job)
                        if info is not None and info.status == "SUCCEEDED":
                            self._done[job] = time.perf_counter()
            except Exception:  # the gateway closing under the thread: the clock just stops
                return
            time.sleep(0.05)

    def stop(self) -> list[float]:
        """Stop polling (after one last poll); the completion times, in order."""
        if not self._stop.is_set():
            time.sleep(0.2)
            self._stop.set()
            self._thread.join()
        return sorted(self._done.values())


def _process_peak_mb(pid: int) -> float:
    """Peak resident memory of another process (the Spark JVM), from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _read_binary_part(path: str, ones: bool, order: str) -> tuple[np.ndarray, np.ndarray]:
    """One Parquet part as a float32 X (with a column of ones when ``ones``) and y = (class == 0).

    Arrow's columns are copied straight into the array in the layout its library computes on best:
    ``order="C"`` (softxent's row blocks) a few thousand rows at a time, so that the rows being
    filled stay in cache; ``order="F"`` (dask-ml, whose float32-by-float64 products cast each chunk:
    about 1.3x faster per evaluation on column-major chunks here) column after column. One copy,
    against three through pandas (``read_parquet``, ``to_numpy``, ``hstack``), whose column-major
    result softxent then copied once more into rows: 0.09 s against 0.14-0.22 s a part of 125,000 rows.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    y = (table.column("y").to_numpy() == 0).astype(np.int64)
    columns = [table.column(name).to_numpy() for name in table.column_names if name != "y"]
    X = np.empty((table.num_rows, len(columns) + int(ones)), dtype=np.float32, order=order)
    if order == "F":
        for j, column in enumerate(columns):
            X[:, j] = column
    else:
        step = 8192
        for start in range(0, table.num_rows, step):
            rows = X[start : start + step]
            for j, column in enumerate(columns):
                rows[:, j] = column[start : start + step]
    if ones:
        X[:, -1] = 1.0
    return X, y


def _binary_arrays(paths: list[Path], ones: bool, order: str):
    """X (with a column of ones when ``ones``) and y = (class == 0) as dask arrays, one chunk per part.

    Built from one delayed read per part (X and y share it), not from
    ``dask.dataframe``: its optimiser may merge the parts of a one-column
    selection, and then y's chunks would not line up with X's.
    """
    import dask
    import dask.array as da
    import pyarrow.parquet as pq

    width = len(_features(paths)) + int(ones)
    xs, ys = [], []
    for path in paths:
        rows = pq.ParquetFile(path).metadata.num_rows
        part = dask.delayed(_read_binary_part, nout=2)(str(path), ones, order)
        xs.append(da.from_delayed(part[0], shape=(rows, width), dtype=np.float32))
        ys.append(da.from_delayed(part[1], shape=(rows,), dtype=np.int64))
    return da.concatenate(xs), da.concatenate(ys)


def _cluster(workers: int, memory_limit: str):
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
        dashboard_address=None, silence_logs=40,
    )  # fmt: skip
    return cluster, distributed.Client(cluster)


def _worker_peaks(client) -> list[float]:
    return sorted(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values())


def _persisted(client, X, y):
    """X and y read into the workers' memory (and waited for): both binary rows start from there, so
    that a fit's time without the read can be given beside the whole one."""
    import distributed

    X, y = client.persist([X, y])
    distributed.wait([X, y])
    return X, y


def run_dask_ml(paths: list[Path], workers: int, memory_limit: str, C: float, tol: float, max_iter: int) -> dict:
    """dask-ml's binary ``LogisticRegression(solver="lbfgs")`` on class 0 versus the rest.

    X and y are persisted on the workers first (dask-ml's advice; its solver
    otherwise rereads the Parquet parts at every evaluation), inside the
    timed fit; ``persist_s`` is that read, so ``fit_s - persist_s`` is the
    fit on persisted data. SciPy's L-BFGS is wrapped to record each evaluation's time
    and value (dask-glm keeps neither), benchmark instrumentation only.
    """
    import dask_glm.algorithms as algorithms
    from dask_ml.linear_model import LogisticRegression

    evaluations: list[tuple[float, float]] = []
    info_out: dict = {}
    original = algorithms.fmin_l_bfgs_b

    def recorded(func, x0, *args, **kwargs):
        def wrapped(beta, *a):
            loss, grad = func(beta, *a)
            evaluations.append((time.perf_counter(), float(loss)))
            return loss, grad

        out = original(wrapped, x0, *args, **kwargs)
        info_out.update(out[2])
        return out

    algorithms.fmin_l_bfgs_b = recorded
    cluster, client = _cluster(workers, memory_limit)
    try:
        start = time.perf_counter()
        X, y = _persisted(client, *_binary_arrays(paths, ones=False, order="F"))
        persisted = time.perf_counter()
        rows = int(X.shape[0])
        model = LogisticRegression(C=C, solver="lbfgs", fit_intercept=True, tol=tol * rows, max_iter=max_iter)
        model.fit(X, y)
        fit_s = time.perf_counter() - start
        peaks = _worker_peaks(client)
    finally:
        client.close()
        cluster.close()
        algorithms.fmin_l_bfgs_b = original
    coef = np.append(np.asarray(model.coef_, dtype=np.float64).ravel(), float(model.intercept_))
    # dask-glm's objective is F / C = n f: f per evaluation.
    history = [value / rows for _, value in evaluations]
    iterations = int(info_out.get("nit", 0))
    loop_s = evaluations[-1][0] - evaluations[0][0] if len(evaluations) > 1 else float("nan")
    return {
        "rows": rows,
        "fit_s": fit_s,
        "persist_s": persisted - start,
        "iterations": iterations,
        "evaluations": len(evaluations),
        "per_iter_s": loop_s / max(iterations - 1, 1),
        "per_eval_s": loop_s / max(len(evaluations) - 1, 1),
        "history": history,
        "history_s": [t - start for t, _ in evaluations],
        "coef": [coef.tolist()],
        "intercept": None,
        "client_peak_mb": _peak_rss_mb(),
        "worker_peak_mb": peaks,
    }


def run_softxent_binary(
    paths: list[Path], workers: int, memory_limit: str, C: float, tol: float, max_iter: int, evaluations: list
) -> dict:
    """softxent ``SigmoidRegression`` on Dask, on the dask-ml row's task and objective: ``[X, 1]``,
    ``fit_intercept=False`` (dask-ml penalises its intercept). X and y are persisted first, as for
    dask-ml (inside the timed fit, ``persist_s``); softxent's blocks then share the persisted chunks."""
    from softxent.models import SigmoidRegression

    times: list[float] = []
    losses: list[float] = []

    def callback(progress) -> bool:
        times.append(time.perf_counter())
        losses.append(float(progress.loss))
        return False

    cluster, client = _cluster(workers, memory_limit)
    try:
        start = time.perf_counter()
        X, y = _persisted(client, *_binary_arrays(paths, ones=True, order="C"))
        persisted = time.perf_counter()
        rows = int(X.shape[0])
        model = SigmoidRegression(
            C=C, fit_intercept=False, tol=tol, max_iter=max_iter, dtype=np.float32, callback=callback
        ).fit(X, y)
        fit_s = time.perf_counter() - start
        peaks = _worker_peaks(client)
    finally:
        client.close()
        cluster.close()
    per_iter = (times[-1] - times[0]) / max(len(times) - 1, 1) if len(times) > 1 else float("nan")
    return {
        "rows": rows,
        "fit_s": fit_s,
        "persist_s": persisted - start,
        "iterations": int(model.n_iter_),
        "evaluations": evaluations[0],
        "per_eval_s": evaluations[1] / max(evaluations[0], 1),
        "per_iter_s": per_iter,
        "objective": float(model.loss_curve_[-1]),
        "history": losses,
        "history_s": [t - start for t in times],
        "coef": np.asarray(model.coef_, dtype=np.float64).tolist(),
        "intercept": None,
        "client_peak_mb": _peak_rss_mb(),
        "worker_peak_mb": peaks,
    }


def time_to(result: dict, target: float) -> float | None:
    """Seconds from the start of the fit to the first recorded value at or below ``target`` (None: never)."""
    for seconds, value in zip(result.get("history_s", []), result.get("history", [])):
        if value <= target:
            return seconds
    return None
