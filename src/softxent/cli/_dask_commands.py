"""``softxent fit|evaluate|predict --dask``: the cluster, the progress bar, the outputs.

``--dask local`` starts a ``LocalCluster`` on this machine; any other value
is a scheduler address (``tcp://host:8786``) that a ``distributed.Client``
connects to. Either way the client is the active one while the command
runs, so the estimators fit on it (:mod:`softxent.models._dask`), and it is
closed at the end. What the command says about the cluster and the progress
over iterations goes to stderr; stdout carries the same lines (or ``--json``)
as the in-memory command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import CLIError

__all__ = ["dask_client", "run_evaluate_dask", "run_fit_dask", "run_predict_dask"]


def _describe(client: Any) -> str:
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    return f"{len(workers)} worker{'s' if len(workers) != 1 else ''}, {threads} threads"


@contextlib.contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` on a new LocalCluster (``"local"``) or on the scheduler at ``address``."""
    try:
        import dask.array  # noqa: F401  (the fit needs it; say so before anything starts)
        import distributed
    except ImportError:
        raise CLIError("--dask needs Dask: pip install 'softxent[dask]'") from None
    if address == "local":
        print("softxent: starting a Dask LocalCluster on this machine (--dask local)", file=sys.stderr)
        cluster = distributed.LocalCluster()
        client = distributed.Client(cluster)
        print(f"softxent: LocalCluster at {client.scheduler.address}: {_describe(client)}", file=sys.stderr)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = distributed.Client(address, timeout="10s")
    except Exception as exc:  # OSError/TimeoutError when unreachable, ValueError for a malformed address
        raise CLIError(f"cannot connect to the Dask scheduler --dask {address!r}: {exc}") from None
    print(f"softxent: connected to the Dask scheduler at {address}: {_describe(client)}", file=sys.stderr)
    try:
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def stderr_progress(total: int, quiet: bool) -> Iterator[Any]:
    """A callback for the estimators' ``Progress`` records: a bar on stderr (a line per iteration off a terminal)."""
    if quiet:
        yield None
        return
    stream = sys.stderr
    if not getattr(stream, "isatty", lambda: False)():

        def line(progress: Any) -> bool:
            grad = "" if progress.grad_max is None else f", max|grad| {progress.grad_max:.2e}"
            print(f"iteration {progress.iteration}/{total}: objective {progress.loss:.8g}{grad}", file=stream,
                  flush=True)  # fmt: skip
            return False

        yield line
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]training on Dask"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  max|grad| {task.fields[grad]}"), TimeElapsedColumn(),
        console=Console(file=stream, highlight=False),
    )  # fmt: skip
    task = bar.add_task("training", total=total, loss="-", grad="-")

    def update(progress: Any) -> bool:
        grad = "-" if progress.grad_max is None else f"{progress.grad_max:.2e}"
        bar.update(task, completed=progress.iteration, loss=f"{progress.loss:.6f}", grad=grad)
        return False

    with bar:
        yield update


def default_model_path_dask(data: str) -> str:
    """``data/part-*.parquet`` or the folder ``data/`` → ``data.softxent.npz`` in the current directory."""
    folder = data if os.path.isdir(data) else os.path.dirname(data)
    stem = Path(os.path.abspath(folder or ".")).name
    return f"{stem or 'model'}.softxent.npz"


# ---------------------------------------------------------------------- fit


def run_fit_dask(args: argparse.Namespace, out: Any) -> int:
    from ._commands import _check_report_dir, _choice_printer, _fit_summary
    from ._dask_fit import check_args, score_dask, train_dask
    from ._dask_read import open_parts
    from ._files import check_output_file

    if args.solver != "lbfgs":
        raise CLIError(f"--dask fits with --solver lbfgs only, got --solver {args.solver}")
    table = open_parts(args.data)
    check_args(table, targets=args.target, features=args.features, label_sep=args.label_sep, impute=args.impute,
               decimal=args.decimal, test_size=args.test_size)  # fmt: skip
    model_path = args.out if args.out is not None else default_model_path_dask(args.data)
    inputs = {f"DATA part {i}": f for i, f in enumerate(table.files)}
    check_output_file(model_path, "--out" if args.out is not None else "the model file", inputs, what="the model")
    _check_report_dir(args.report, {**inputs, "--out": model_path})
    out.line(f"data: {args.data}: {table.describe()}, {len(table.columns)} columns (read on the workers)")

    on_choice = _choice_printer(out)
    with dask_client(args.dask) as client:
        with stderr_progress(args.max_iter, args.quiet) as callback:
            result = train_dask(
                table, client, targets=args.target, features=args.features, label_sep=args.label_sep,
                head=args.head, C=args.C, max_iter=args.max_iter, test_size=args.test_size, seed=args.seed,
                impute=args.impute, other_label=args.other_label, callback=callback, on_choice=on_choice,
                source=os.path.abspath(args.data), decimal=args.decimal,
            )  # fmt: skip
        pipeline = result.pipeline
        final = f", final objective {pipeline.loss_curve[-1]:.6g}" if pipeline.loss_curve else ""
        out.line(f"trained on {result.n_train} rows on Dask: {pipeline.n_iter} iterations (lbfgs){final}")
        pipeline.save(model_path)  # before scoring: nothing in the evaluation can lose a finished training
        score_dask(result, table, client)
    for text in result.warnings:
        out.line(f"  note: {text}")
    return _fit_summary(
        args, out, result, model_path, n_rows=result.n_rows, title=f"softxent fit --dask: {args.data}",
        how=", drawn per part, fitted on Dask",
    )  # fmt: skip


# ---------------------------------------------------------------------- evaluate


def _check_columns(pipeline: Any, table: Any, *, with_target: bool) -> None:
    needed = list(pipeline.preprocessor.columns_) + (list(pipeline.target.columns) if with_target else [])
    lacking = [c for c in needed if c not in table.columns]
    if lacking:
        from ._cells import _listing

        raise CLIError(f"the data lacks columns the model was trained on: {_listing(lacking, limit=30)}")


def run_evaluate_dask(args: argparse.Namespace, out: Any) -> int:
    from ._commands import _check_report_dir, _columns_line, _report_notes, _write_report
    from ._dask_fit import evaluate_dask
    from ._dask_read import open_parts
    from ._pipeline import TablePipeline, unseen_note

    _check_report_dir(args.report, {"MODEL": args.model})
    pipeline = TablePipeline.load(args.model)
    pipeline.decimal = args.decimal
    table = open_parts(args.data)
    _check_columns(pipeline, table, with_target=True)
    with dask_client(args.dask) as client:
        metrics, truth, proba = evaluate_dask(pipeline, table, client)
    out.line(f"model: {args.model} ({pipeline.head} head, {len(pipeline.names)} outputs)")
    out.line(f"data: {args.data}: {table.describe()}, scored on Dask ({len(proba)} rows scored)")
    out.line(_columns_line(pipeline.preprocessor))
    note = unseen_note(metrics)
    if note:
        out.line(f"note: {note}")
    out.metrics(metrics)
    report = None
    if args.report:
        notes = _report_notes(pipeline, [f"evaluated on {args.data} ({table.describe()}) on Dask"])
        report = _write_report(args.report, pipeline, metrics, truth, proba, f"softxent evaluate --dask: {args.data}",
                               notes)  # fmt: skip
        out.line(f"report: {report['report']}")
    if out.as_json:
        out.json({"command": "evaluate", "model": args.model, "data": args.data, "head": pipeline.head,
                  "columns": pipeline.preprocessor.column_kinds(), "notes": [note] if note else [],
                  "metrics": metrics, "report": {k: str(v) for k, v in report.items()} if report else None})  # fmt: skip
    return 0


# ---------------------------------------------------------------------- predict


def _predict_part(part: Any, path: str, pipeline: Any, proba: bool, label_sep: str, target: str) -> int:
    from ._commands import predictions_frame

    if not len(part):  # an empty part has no predictions: no file (its columns could not be typed)
        return 0
    try:
        frame = predictions_frame(pipeline, part, proba=proba, label_sep=label_sep)
    except CLIError as exc:
        raise CLIError(f"{exc} (in DATA part {path!r}, rows counted within the part)") from None
    frame.to_parquet(target, index=False)
    return len(frame)


def _check_new_folder(path: str | None) -> str:
    if not path or path == "-":
        raise CLIError("predict --dask writes a folder of Parquet parts: name a new folder with -o DIR")
    if os.path.lexists(path):
        raise CLIError(
            f"-o {path!r} already exists; predict --dask writes a new folder and never overwrites one: "
            "choose another name or remove it"
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise CLIError(f"cannot write the predictions to -o {path!r}: the folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write the predictions to -o {path!r}: no permission to write in {parent!r}")
    return path


def run_predict_dask(args: argparse.Namespace) -> int:
    from dask import delayed

    from ._dask_read import open_parts
    from ._pipeline import TablePipeline

    output = _check_new_folder(args.output)
    pipeline = TablePipeline.load(args.model)
    pipeline.decimal = args.decimal
    table = open_parts(args.data)
    _check_columns(pipeline, table, with_target=False)
    parent = os.path.dirname(os.path.abspath(output))
    # Parts go to a hidden folder beside the output, renamed into place when all are written:
    # a failed run leaves no half-written folder under the output's name.
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(output))}.", suffix=".tmp")
    try:
        with dask_client(args.dask) as client:
            tasks = [
                delayed(_predict_part)(p, path, pipeline, args.proba, args.label_sep or "|",
                                       os.path.join(staging, f"part-{i:05d}.parquet"))
                for i, (p, path) in enumerate(zip(table.delayed_parts(), table.files, strict=True))
            ]  # fmt: skip
            rows = sum(client.compute(tasks, sync=True))
        os.chmod(staging, 0o777 & ~_umask())
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(f"predictions for {rows} rows: {output} ({len(table.files)} Parquet parts)", file=sys.stderr)
    return 0


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
