"""Multi-label fits at the defaults: SigmoidRegression against OneVsRestClassifier(LogisticRegression()).

Issue 19, item 3. Each library at its defaults (C = 1, tol = 1e-4,
max_iter = 100), fitted ``--repeats`` times per configuration, the
configurations alternated within each round (this host is shared and noisy:
a slow minute then slows every configuration alike instead of one); the
table gives the median fit time, the spread (min-max), and the objective
:math:`F` of each fit relative to the lowest any fit reached (scikit-learn's
objective, summed over the labels: one-vs-rest minimises the same function
label by label).

Configurations: softxent ``SigmoidRegression()``; the same with one common
scaling for all labels (``_objective._PER_LABEL_SCALING = False``, the
solver before the per-label scaling and the intercept-only start);
``OneVsRestClassifier(LogisticRegression())`` with its default threads and
held to one thread (threadpoolctl), and with ``n_jobs=2`` (labels in two
worker processes).

Data: Yeast (``river.datasets.Yeast``, 2417 x 103, 14 labels) standardised,
and a synthetic set (``--rows`` x 300, 50 labels whose positive rates run
from 0.5% to 50%, logistic noise).

Usage: ``python benchmarks/classifiers_multilabel.py [--repeats 5] [--rows 100000] [--only yeast synthetic]``;
writes ``benchmarks/results/classifiers_multilabel_<sets>.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def load_yeast() -> tuple[np.ndarray, np.ndarray] | str:
    try:
        from river import datasets
    except ImportError:
        return "river is not installed: Yeast ships with it"
    rows = list(datasets.Yeast())
    names = list(rows[0][0])
    labels = sorted(rows[0][1])
    X = np.array([[x[n] for n in names] for x, _ in rows], dtype=np.float64)
    Y = np.array([[int(bool(y[k])) for k in labels] for _, y in rows], dtype=np.float64)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    return X, Y


def synthetic(n: int, d: int = 300, k: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((k, d)) * rng.uniform(0.02, 0.3, (k, 1))
    rates = np.geomspace(0.005, 0.5, k)
    Z = X @ W.T
    b = np.array([-np.quantile(Z[:, j], 1 - rates[j]) for j in range(k)])
    Y = (Z + b + rng.logistic(size=Z.shape) > 0).astype(np.float64)
    return X, Y


def configurations() -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from threadpoolctl import threadpool_limits

    import softxent.models._objective as objective
    from softxent.models import SigmoidRegression

    def ours(per_label: bool):
        def fit(X, Y):
            objective._PER_LABEL_SCALING = per_label
            try:
                m = SigmoidRegression().fit(X, Y)
            finally:
                objective._PER_LABEL_SCALING = True
            return m.coef_, m.intercept_, m.n_iter_

        return fit

    def ovr(threads: int | None, n_jobs: int | None = None):
        def fit(X, Y):
            if threads is None:
                m = OneVsRestClassifier(LogisticRegression(), n_jobs=n_jobs).fit(X, Y)
            else:
                with threadpool_limits(limits=threads):
                    m = OneVsRestClassifier(LogisticRegression(), n_jobs=n_jobs).fit(X, Y)
            coef = np.vstack([e.coef_ for e in m.estimators_])
            intercept = np.concatenate([e.intercept_ for e in m.estimators_])
            return coef, intercept, max(int(np.max(e.n_iter_)) for e in m.estimators_)

        return fit

    return {
        "softxent SigmoidRegression()": ours(True),
        "softxent SigmoidRegression(), one common scaling (before)": ours(False),
        "OneVsRestClassifier(LogisticRegression())": ovr(None),
        "OneVsRestClassifier(LogisticRegression()), 1 thread": ovr(1),
        "OneVsRestClassifier(LogisticRegression(), n_jobs=2)": ovr(None, 2),
    }


def run(X: np.ndarray, Y: np.ndarray, repeats: int, skip: list[str]) -> dict:
    import warnings

    from softxent.models import objective_value

    configs = {k: v for k, v in configurations().items() if not any(word in k for word in skip)}
    names = list(configs)
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no configuration always first
        for name in order:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                coef, intercept, n_iter = configs[name](X, Y)
                elapsed = time.perf_counter() - t
            F = objective_value(coef, intercept, X, Y)
            runs[name].append((elapsed, F, n_iter))
            print(f"  round {r}: {name}: {elapsed:.3f} s, F = {F:.10g}, iterations {n_iter}", flush=True)
    return runs


def table(title: str, runs: dict) -> list[str]:
    best_F = min(F for rows in runs.values() for _, F, _ in rows)
    ovr = min(statistics.median(t for t, _, _ in rows) for name, rows in runs.items() if name.startswith("OneVsRest"))
    lines = [
        f"## {title}",
        "",
        "| configuration | median fit, s | min-max, s | speed-up vs faster one-vs-rest | F / F_best - 1 (median) "
        "| iterations (median; one-vs-rest: its slowest label) |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in runs.items():
        times = [t for t, _, _ in rows]
        med = statistics.median(times)
        gap = statistics.median(F / best_F - 1 for _, F, _ in rows)
        iters = statistics.median(n for _, _, n in rows)
        lines.append(
            f"| {name} | {med:.3f} | {min(times):.3f}-{max(times):.3f} | {ovr / med:.2f}× | {gap:.1e} | {iters:g} |"
        )
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--only", nargs="*", default=["yeast", "synthetic"])
    parser.add_argument("--skip", nargs="*", default=[], help="leave out configurations whose name holds one of these")
    args = parser.parse_args()
    sections = []
    if "yeast" in args.only:
        data = load_yeast()
        if isinstance(data, str):
            sections.append(f"Yeast skipped: {data}\n")
        else:
            print("Yeast", data[0].shape, data[1].shape[1], "labels", flush=True)
            sections += table(
                f"Yeast ({data[0].shape[0]} × {data[0].shape[1]}, {data[1].shape[1]} labels)",
                run(*data, args.repeats, args.skip),
            )
    if "synthetic" in args.only:
        X, Y = synthetic(args.rows)
        print("synthetic", X.shape, Y.shape[1], "labels", flush=True)
        sections += table(
            f"Synthetic ({X.shape[0]} × {X.shape[1]}, {Y.shape[1]} labels, positive rates "
            f"{Y.mean(0).min():.3f}-{Y.mean(0).max():.3f})",
            run(X, Y, args.repeats, args.skip),
        )
    load = os.getloadavg()
    head = [
        "# Multi-label at the defaults: SigmoidRegression against one-vs-rest",
        "",
        f"Command: `python benchmarks/classifiers_multilabel.py --repeats {args.repeats} --rows {args.rows} "
        f"--only {' '.join(args.only)}" + (f" --skip {' '.join(args.skip)}" if args.skip else "") + "`; "
        f"{platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, load average at the end {load[0]:.1f} (a shared host: "
        "other jobs ran at the same time). Medians of the repeated fits, configurations alternated.",
        "",
    ]
    out = RESULTS / f"classifiers_multilabel_{'_'.join(args.only)}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(head + sections))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
