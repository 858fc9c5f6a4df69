"""The ``softxent`` command line: parse arguments, call one command, turn problems into messages.

Commands (``softxent COMMAND --help`` for each):

* ``fit DATA --target COL``: choose softmax or sigmoid from the labels, train,
  report held-out metrics, save the model with its table transform;
* ``evaluate MODEL DATA``: metrics on labelled data, optionally a report folder;
* ``predict MODEL DATA``: predictions (and probabilities) as CSV;
* ``demo``: the main job, offline: digits (softmax), a multi-label set
  (sigmoid), and what goes wrong with the wrong head;
* ``gradcheck``: the softmax Jacobian and dL/dz beside finite differences;
* ``bench``: a quick timing of the fused loss + gradient beside NumPy and torch
  (the full CPU benchmark is ``python benchmarks/cross_entropy_cpu.py``).

The commands live in their own modules; this one only wires them. A problem
the user can fix prints one line on stderr and exits with code 2
(``--debug`` adds the traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ._errors import EXIT_USAGE, CLIError

__all__ = ["main"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = argparse.ArgumentParser(
        prog="softxent",
        description="Softmax, sigmoid and cross-entropy done right: train, evaluate and explain classifiers.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"softxent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    fit = sub.add_parser(
        "fit", parents=[common], help="train a softmax or sigmoid classifier on a table",
        description=(
            "Train a classifier on DATA (CSV/TSV, Parquet or .npz). The head follows the labels: "
            "one class per row -> softmax; several labels per row -> one sigmoid per label; "
            "some rows without a label -> softmax with an added 'other' class."
        ),
    )  # fmt: skip
    fit.add_argument("data", metavar="DATA", help="CSV/TSV (delimiter sniffed), Parquet or .npz file")
    fit.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="COL",
        help="target column; repeat for several 0/1 label columns (multi-label)",
    )
    fit.add_argument(
        "--label-sep", metavar="SEP", help="the target column holds label sets joined by SEP (e.g. 'vocal|pop')"
    )
    fit.add_argument("--features", nargs="+", metavar="COL", help="feature columns (default: every other column)")
    fit.add_argument(
        "--head",
        choices=["auto", "softmax", "sigmoid"],
        default="auto",
        help="output head (default: chosen from the labels)",
    )
    fit.add_argument(
        "--C", type=_positive_float, default=1.0, help="inverse regularisation strength, as in scikit-learn"
    )
    fit.add_argument("--solver", choices=["lbfgs", "adam"], default="lbfgs")
    fit.add_argument(
        "--max-iter", type=_positive_int, default=200, metavar="N", help="iterations (L-BFGS) or epochs (adam)"
    )
    fit.add_argument("--test-size", type=_fraction, default=0.2, help="held-out fraction for metrics (0: none)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split and of adam")
    fit.add_argument(
        "--impute",
        choices=["mean", "median", "most_frequent"],
        help="fill missing feature values (default: missing values are an error)",
    )
    fit.add_argument("--other-label", default="other", help="name of the added class for rows without a label")
    fit.add_argument(
        "--decimal",
        choices=[".", ","],
        default=None,
        help="decimal mark of numbers written as text: ',' reads 1,5 as 1.5; default: a decimal "
        "comma is recognised in files whose delimiter is not a comma (the model keeps the choice)",
    )
    fit.add_argument("--out", metavar="MODEL", help="model file (default: DATA's name + .softxent.npz, here)")
    fit.add_argument("--report", metavar="DIR", help="write metrics.json, plots and report.html to DIR")
    fit.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.add_argument(
        "--dask", nargs="?", const="local", metavar="local|ADDRESS",
        help="fit on Dask: DATA is a glob or a folder of Parquet/CSV parts, read on the workers (one partition "
        "per file); 'local' (the default value) starts a LocalCluster, else connect to the scheduler at ADDRESS. "
        "Same transform and model file; the held-out rows are drawn per part (not stratified) and only their "
        "labels and probabilities come to this machine for the metrics; progress on stderr. Put DATA before a "
        "bare --dask, which would otherwise take DATA as the address",
    )  # fmt: skip

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        help="metrics of a model on labelled data",
        description="Metrics of MODEL (from `softxent fit`) on labelled DATA.",
    )
    evaluate.add_argument("model", metavar="MODEL")
    evaluate.add_argument("data", metavar="DATA")
    evaluate.add_argument("--report", metavar="DIR", help="write metrics.json, plots and report.html to DIR")
    evaluate.add_argument(
        "--decimal",
        choices=[".", ","],
        default=None,
        help="decimal mark of DATA's numbers (default: each column as in training)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    evaluate.add_argument(
        "--dask", nargs="?", const="local", metavar="local|ADDRESS",
        help="score on Dask: DATA is a glob or a folder of parts; only labels and probabilities come to this "
        "machine for the metrics; 'local' starts a LocalCluster",
    )  # fmt: skip

    predict = sub.add_parser(
        "predict",
        parents=[common],
        help="predictions of a model, as CSV",
        description="Predict DATA's rows with MODEL; CSV to OUT or stdout.",
    )
    predict.add_argument("model", metavar="MODEL")
    predict.add_argument("data", metavar="DATA")
    predict.add_argument("-o", "--output", metavar="OUT", help="CSV file (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="add one probability column per class or label")
    predict.add_argument(
        "--label-sep", metavar="SEP", help="separator of predicted label sets (default: the model's, or '|')"
    )
    predict.add_argument(
        "--dask", nargs="?", const="local", metavar="local|ADDRESS",
        help="predict on Dask: DATA is a glob or a folder of parts, -o a new folder that receives one Parquet "
        "file per part (an existing one is never overwritten); 'local' starts a LocalCluster",
    )  # fmt: skip
    predict.add_argument(
        "--decimal",
        choices=[".", ","],
        default=None,
        help="decimal mark of DATA's numbers (default: each column as in training)",
    )

    demo = sub.add_parser(
        "demo", parents=[common], help="the main job: softmax vs sigmoid on real data, offline",
        description=(
            "Fit and report (a) digits, exclusive classes: softmax; (b) a multi-label set (Yeast): "
            "one sigmoid per label; (c) what goes wrong when a softmax is used on multi-label data."
        ),
    )  # fmt: skip
    demo.add_argument("--report-dir", default="softxent-demo", metavar="DIR", help="where the reports go")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    gradcheck = sub.add_parser(
        "gradcheck", parents=[common], help="the softmax Jacobian and dL/dz beside finite differences",
        description=(
            "For a random example, print the softmax Jacobian of eq. (13)/(14) and the gradient "
            "dL/dz of eq. (15)/(16) beside 4th-order finite differences. Exit code 0 when they agree."
        ),
    )  # fmt: skip
    gradcheck.add_argument("--classes", type=_positive_int, default=4, metavar="K", help="number of classes")
    gradcheck.add_argument(
        "--soft-labels", action="store_true", help="probability labels (not summing to 1: eq. 15, a*sum(y) - y)"
    )
    gradcheck.add_argument("--seed", type=int, default=0)

    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="a quick timing of the fused loss + gradient beside NumPy (and torch)",
        description="Time loss + gradient of softxent beside NumPy (and torch when installed), in this process. "
        "The full CPU benchmark is python benchmarks/cross_entropy_cpu.py in softxent's source tree.",
    )
    bench.add_argument("--shapes", default="65536x10,8192x1000,1024x32768", help="comma-separated NxV shapes")
    bench.add_argument("--repeats", type=_positive_int, default=5)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "fit":
        from ._commands import Output, run_fit

        return run_fit(args, Output(quiet=args.quiet, as_json=args.json))
    if args.command == "evaluate":
        from ._commands import Output, run_evaluate

        return run_evaluate(args, Output(as_json=args.json))
    if args.command == "predict":
        from ._commands import Output, run_predict

        return run_predict(args, Output(quiet=True))
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(report_dir=args.report_dir, seed=args.seed, quiet=args.quiet)
    if args.command == "gradcheck":
        from ._gradcheck import run_gradcheck

        return run_gradcheck(classes=args.classes, soft_labels=args.soft_labels, seed=args.seed, out=sys.stdout)
    if args.command == "bench":
        from ._bench import run_bench

        return run_bench(shapes=args.shapes, repeats=args.repeats, out=sys.stdout)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``softxent`` and ``python -m softxent``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _dispatch(args)
    except CLIError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"softxent {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"softxent {args.command}: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:  # an optional dependency is missing
        if args.debug:
            traceback.print_exc()
        print(f"softxent {args.command}: error: {exc} (pip install 'softxent[cli]')", file=sys.stderr)
        return EXIT_USAGE
