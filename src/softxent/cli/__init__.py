"""The ``softxent`` command line (thin: parse arguments, call the library, print).

Sub-commands live one per module in this package. Today: ``demo``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="softxent",
        description="Softmax, sigmoid and cross-entropy done right.",
    )
    parser.add_argument("--version", action="version", version=f"softxent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="show softmax, the cross-entropy and its gradient a - y, checked by finite differences",
        description=(
            "Walk through eq. (1)-(16) of the softmax + cross-entropy derivation on a small "
            "example and check the analytic gradient against finite differences. "
            "Exit code 0 when they agree."
        ),
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the random check (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``softxent`` and ``python -m softxent``; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command in (None, "demo"):
        from .demo import run_demo

        return run_demo(seed=getattr(args, "seed", 0), out=sys.stdout)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others
