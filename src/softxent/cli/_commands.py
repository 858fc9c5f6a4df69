"""``softxent fit``, ``evaluate`` and ``predict``: read a table, call the pipeline, print.

Each command is a function of its parsed arguments that returns the exit
code. Output goes to stdout as plain lines (a rich table and a progress bar
when stdout is a terminal), or as one JSON object with ``--json``; problems
the user can fix are :class:`~softxent.cli._errors.CLIError`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._errors import CLIError
from ._files import check_output_dir, check_output_file, replacing
from ._metrics import format_metrics, jsonable, metrics_table
from ._pipeline import TablePipeline, TrainResult, train, unseen_note
from ._read import read_table
from ._report import REPORT_FILES, write_report

__all__ = ["run_evaluate", "run_fit", "run_predict"]


class Output:
    """Where a command writes: plain lines, a rich console on a terminal, or nothing (``--json``)."""

    def __init__(self, *, quiet: bool = False, as_json: bool = False, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.as_json = as_json
        self.quiet = quiet or as_json
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self._console = None
        if self.terminal and not self.as_json:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)

    def line(self, text: str = "") -> None:
        if not self.as_json:
            print(text, file=self.stream)

    def metrics(self, metrics: dict[str, Any]) -> None:
        if self.as_json:
            return
        if self._console is not None:
            self._console.print(metrics_table(metrics))
        else:
            for text in format_metrics(metrics):
                self.line("  " + text)

    def json(self, document: dict[str, Any]) -> None:
        print(json.dumps(jsonable(document), indent=2), file=self.stream)

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[Any]:
        """A callback for the estimators' ``Progress`` records: a bar on a terminal, else nothing."""
        if self.quiet or not self.terminal:
            yield None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  max|grad| {task.fields[grad]}"), TimeElapsedColumn(),
            console=self._console, transient=False,
        )  # fmt: skip
        task = bar.add_task(description, total=total, loss="-", grad="-")

        def callback(progress: Any) -> bool:
            grad = "-" if progress.grad_max is None else f"{progress.grad_max:.2e}"
            bar.update(task, completed=progress.iteration, loss=f"{progress.loss:.6f}", grad=grad)
            return False

        with bar:
            yield callback


def _report_notes(pipeline: TablePipeline, extra: list[str]) -> list[str]:
    return [f"head: {pipeline.choice.head}. {pipeline.choice.reason}", *pipeline.preprocessor.summary(), *extra]


def _write_report(directory: str, pipeline: TablePipeline, metrics: dict, truth: Any, proba: np.ndarray,
                  title: str, notes: list[str]) -> dict[str, Path]:  # fmt: skip
    try:
        return write_report(
            directory, metrics=metrics, y_true=truth, proba=proba, names=[str(n) for n in pipeline.names],
            loss_curve=pipeline.loss_curve or None, title=title, notes=notes,
        )  # fmt: skip
    except OSError as exc:
        raise CLIError(f"cannot write the report to --report {directory!r}: {exc.strerror or exc}") from None


def _check_report_dir(directory: str | None, inputs: dict[str, str | None]) -> None:
    if directory is not None:  # "" too: an empty --report is a mistake, not "no report"
        check_output_dir(directory, "--report", inputs, files=REPORT_FILES)


def _columns_line(preprocessor: Any) -> str:
    """``columns read as number: a, b; decimal-comma number: c; category: d`` (``--json`` has them all)."""
    groups: dict[str, list[str]] = {}
    for name, kind in preprocessor.column_kinds().items():
        groups.setdefault(kind, []).append(name)
    parts = []
    for kind in ("number", "decimal-comma number", "category"):
        names = groups.get(kind, [])
        if names:
            more = f", ... and {len(names) - 12} more" if len(names) > 12 else ""
            parts.append(f"{kind}: {', '.join(names[:12])}{more}")
    return "columns read as " + "; ".join(parts)


def default_model_path(data: str) -> str:
    """``songs.csv`` → ``songs.softxent.npz`` in the current directory."""
    stem = Path(data).name
    for suffix in (".gz", ".csv", ".tsv", ".txt", ".parquet", ".pq", ".npz"):
        stem = stem.removesuffix(suffix)
    return f"{stem or 'model'}.softxent.npz"


# ---------------------------------------------------------------------- fit


def run_fit(args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "dask", None) is not None:
        from ._dask_commands import run_fit_dask

        return run_fit_dask(args, out)
    model_path = args.out if args.out is not None else default_model_path(args.data)
    # Every output is checked before the data is even read: a mistake costs no training.
    inputs = {"DATA": args.data}
    check_output_file(model_path, "--out" if args.out is not None else "the model file", inputs, what="the model")
    _check_report_dir(args.report, {**inputs, "--out": model_path})
    table = read_table(args.data)
    out.line(f"data: {args.data}: {len(table)} rows, {table.shape[1]} columns")

    on_choice = _choice_printer(out)
    with out.progress(args.max_iter, "training") as callback:
        result = train(
            table, targets=args.target, features=args.features, label_sep=args.label_sep, head=args.head,
            C=args.C, solver=args.solver, max_iter=args.max_iter, test_size=args.test_size, seed=args.seed,
            impute=args.impute, other_label=args.other_label, callback=callback, on_choice=on_choice,
            source=os.path.abspath(args.data), score=False, decimal=args.decimal,
        )  # fmt: skip
    pipeline = result.pipeline
    final = f", final objective {pipeline.loss_curve[-1]:.6g}" if pipeline.loss_curve else ""
    out.line(f"trained on {result.n_train} rows: {pipeline.n_iter} iterations ({args.solver}){final}")
    # The model is saved before the held-out rows are scored: nothing in the
    # evaluation can throw away a finished training.
    pipeline.save(model_path)
    result.score(table)
    for text in result.warnings:
        out.line(f"  note: {text}")

    return _fit_summary(args, out, result, model_path, n_rows=len(table), title=f"softxent fit: {Path(args.data).name}")


def _choice_printer(out: Any) -> Any:
    """The ``on_choice`` of a fit: the head, why, and how the features were read."""

    def on_choice(choice: Any, auto: Any, preprocessor: Any) -> None:
        out.line(f"head: {choice.head} ({choice.n_classes} outputs)")
        out.line(f"  why: {choice.reason}")  # a forced head's reason also says what choose_head advised
        out.line("features:")
        for text in preprocessor.summary():
            out.line(f"  {text}")
        out.line(f"  {_columns_line(preprocessor)}")

    return on_choice


def _fit_summary(
    args: argparse.Namespace, out: Any, result: Any, model_path: str, *, n_rows: int, title: str, how: str = ""
) -> int:
    """A fit's last lines (held-out metrics, the report, the model's path, the JSON document); ``how``
    adds to the held-out description (", drawn per part" on Dask)."""
    pipeline = result.pipeline
    report = None
    if result.metrics is not None:
        out.line(f"held-out metrics ({result.n_test} rows, --test-size {args.test_size}{how}):")
        out.metrics(result.metrics)
        if args.report:
            notes = _report_notes(pipeline, [f"held-out rows: {result.n_test} of {n_rows} (seed {args.seed}{how})"])
            report = _write_report(args.report, pipeline, result.metrics, result.truth, result.proba, title, notes)
    elif args.report:
        out.line("no held-out rows (--test-size 0): evaluate the model on other data for a report")
    out.line(f"model: {model_path}")
    if report:
        out.line(f"report: {report['report']}")
    if out.as_json:
        out.json(_fit_document(args, result, model_path, report))
    return 0


def _fit_document(args: argparse.Namespace, result: TrainResult, model_path: str, report: Any) -> dict[str, Any]:
    p = result.pipeline
    return {
        "command": "fit",
        "data": args.data,
        "head": p.choice.head,
        "reason": p.choice.reason,
        "add_other_class": p.choice.add_other_class,
        "recommended_head": result.auto_choice.head,
        "outputs": [str(n) for n in p.names],
        "features": p.preprocessor.summary(),
        "columns": p.preprocessor.column_kinds(),
        "n_train": result.n_train,
        "n_test": result.n_test,
        "n_iter": p.n_iter,
        "loss_curve": p.loss_curve,
        "warnings": result.warnings,
        "metrics": result.metrics,
        "model": model_path,
        "report": {k: str(v) for k, v in report.items()} if report else None,
    }


# ---------------------------------------------------------------------- evaluate


def run_evaluate(args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "dask", None) is not None:
        from ._dask_commands import run_evaluate_dask

        return run_evaluate_dask(args, out)
    _check_report_dir(args.report, {"MODEL": args.model, "DATA": args.data})
    pipeline = TablePipeline.load(args.model)
    pipeline.decimal = args.decimal
    table = read_table(args.data)
    metrics, truth, proba = pipeline.metrics(table)
    out.line(f"model: {args.model} ({pipeline.head} head, {len(pipeline.names)} outputs)")
    out.line(f"data: {args.data}: {len(table)} rows")
    out.line(_columns_line(pipeline.preprocessor))
    note = unseen_note(metrics)
    if note:
        out.line(f"note: {note}")
    out.metrics(metrics)
    report = None
    if args.report:
        notes = _report_notes(pipeline, [f"evaluated on {args.data} ({len(table)} rows)"])
        report = _write_report(args.report, pipeline, metrics, truth, proba,
                               f"softxent evaluate: {Path(args.data).name}", notes)  # fmt: skip
        out.line(f"report: {report['report']}")
    if out.as_json:
        out.json({"command": "evaluate", "model": args.model, "data": args.data, "head": pipeline.head,
                  "columns": pipeline.preprocessor.column_kinds(), "notes": [note] if note else [],
                  "metrics": metrics, "report": {k: str(v) for k, v in report.items()} if report else None})  # fmt: skip
    return 0


# ---------------------------------------------------------------------- predict


def predictions_frame(pipeline: TablePipeline, table: pd.DataFrame, *, proba: bool, label_sep: str) -> pd.DataFrame:
    """One row per input row: the prediction in the target's form, then ``proba_<name>`` columns."""
    p = pipeline.predict_proba(table)
    decided = pipeline.decide(p)
    target = pipeline.target
    frame = pd.DataFrame(index=table.index)
    if target.kind == "classes" and pipeline.head == "softmax":
        frame[target.columns[0]] = decided
    elif target.kind == "indicator":
        for name in target.columns:
            frame[name] = [int(name in labels) for labels in decided]
    else:
        sep = target.label_sep or label_sep
        frame[target.columns[0]] = [sep.join(sorted(map(str, labels), key=str)) for labels in decided]
    if proba:
        for j, name in enumerate(pipeline.names):
            frame[f"proba_{name}"] = p[:, j]
    return frame


def run_predict(args: argparse.Namespace, out: Output) -> int:
    if getattr(args, "dask", None) is not None:
        from ._dask_commands import run_predict_dask

        return run_predict_dask(args)
    to_file = args.output not in (None, "-")
    if to_file:
        check_output_file(args.output, "-o", {"MODEL": args.model, "DATA": args.data}, what="the predictions")
    pipeline = TablePipeline.load(args.model)
    pipeline.decimal = args.decimal
    table = read_table(args.data)
    frame = predictions_frame(pipeline, table, proba=args.proba, label_sep=args.label_sep or "|")
    if not to_file:
        frame.to_csv(sys.stdout, index=False, lineterminator="\n")
        return 0
    try:
        with replacing(args.output) as handle:
            frame.to_csv(handle, index=False, lineterminator="\n", encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot write predictions to -o {args.output!r}: {exc.strerror or exc}") from None
    print(f"predictions for {len(frame)} rows: {args.output}", file=sys.stderr)
    return 0
