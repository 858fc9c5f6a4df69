"""Compile every default Triton kernel variant for sm_90a (no GPU needed) and write its resources.

Registers per thread, spill bytes and shared memory, from Triton's compiler
and its bundled ``ptxas -v`` (see :mod:`softxent.kernels.triton._aot`), as a
Markdown table in ``benchmarks/results/triton_compile_sm90a.md``.

    PYTHONPATH=src python benchmarks/triton_compile.py [--out DIR] [--label TEXT]

Run it without ``TRITON_INTERPRET`` (the interpreter compiles nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--label", default="", help="a note for the table's heading (the commit, the change)")
    p.add_argument("--capability", type=int, default=90)
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    import triton

    from softxent.kernels.triton import _aot

    rows = []
    for v in _aot.default_variants():
        t0 = time.perf_counter()
        r = _aot.compile_variant(v, args.capability)
        r["seconds"] = time.perf_counter() - t0
        rows.append(r)
        print(f"{r['name']}: {r['registers']} registers, spills {r['spill_stores']}/{r['spill_loads']} B, "
              f"shared {r['shared']} B", flush=True)  # fmt: skip
    head = (f"# Triton kernels compiled for sm_{args.capability}a\n\n"
            f"triton {triton.__version__}, ptxas bundled with it; {time.strftime('%Y-%m-%d %H:%M')}"
            + (f"; {args.label}" if args.label else "") + "\n\n"
            "| variant | tiles | warps | stages | registers | spill stores (B) | spill loads (B) | shared (B) "
            "| libdevice exps / fast exps in PTX |\n|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    body = "".join(
        f"| {r['name']} | {r['tiles']} | {r['num_warps']} | {r['num_stages']} | {r['registers']} | "
        f"{r['spill_stores']} | {r['spill_loads']} | {r['shared']} | {r['libdevice_exp']} / {r['fast_exp']} |\n"
        for r in rows
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"triton_compile_sm{args.capability}a.md")
    with open(path, "w") as f:
        f.write(head + body)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
