"""Softmax cross-entropy on the CPU, loss + gradient: softxent beside torch, JAX, NumPy and scipy.

The harness lives in :mod:`softxent.cli._bench` (``softxent bench`` runs it on
quick settings); this script is the full run, whose tables go to
``benchmarks/results/cross_entropy_cpu.{md,json}``. Peers:
``pip install -e ".[bench]" -c constraints.txt``.
Run ``python benchmarks/cross_entropy_cpu.py --help`` for the options.
"""

import sys
from pathlib import Path

from softxent.cli._bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_out=Path(__file__).resolve().parent / "results"))
