"""Compile every default Triton kernel variant for sm_90a (no GPU needed) and write its resources.

Registers per thread, spill bytes and shared memory, from Triton's compiler
and its bundled ``ptxas -v`` (see :mod:`softxent.kernels.triton._aot`), as a
Markdown table in ``benchmarks/results/triton_compile_sm90a.md``.

    PYTHONPATH=src python benchmarks/triton_compile.py [--out DIR] [--label TEXT] [--jobs N] [--only TEXT]

Run it without ``TRITON_INTERPRET`` (the interpreter compiles nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _compile_one(job: tuple[int, int]) -> dict:
    """Compile default variant number ``job[0]`` for sm_``job[1]``a (a worker process's task)."""
    from softxent.kernels.triton import _aot

    i, capability = job
    t0 = time.perf_counter()
    r = _aot.compile_variant(_aot.default_variants()[i], capability)
    r["seconds"] = time.perf_counter() - t0
    return r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    p.add_argument("--label", default="", help="a note for the table's heading (the commit, the change)")
    p.add_argument("--capability", type=int, default=90)
    p.add_argument("--jobs", type=int, default=1, help="variants compiled at once (processes; default 1)")
    p.add_argument("--only", action="append", metavar="TEXT",
                   help="only the variants whose name contains TEXT (repeatable)")  # fmt: skip
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    import triton

    from softxent.kernels.triton import _aot

    names = [v.name for v in _aot.default_variants()]
    picked = [i for i, n in enumerate(names) if not args.only or any(t in n for t in args.only)]
    if not picked:
        print(f"no variant matches {args.only}; the variants: {names}", file=sys.stderr)
        return 2
    work = [(i, args.capability) for i in picked]
    if args.jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(_compile_one, work))
    else:
        rows = [_compile_one(w) for w in work]
    for r in rows:
        print(f"{r['name']}: {r['registers']} registers, spills {r['spill_stores']}/{r['spill_loads']} B, "
              f"shared {r['shared']} B ({r['seconds']:.1f} s)", flush=True)  # fmt: skip
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
