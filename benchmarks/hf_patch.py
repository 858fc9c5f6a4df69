"""One training step of a tiny Llama-shaped Hugging Face model, patched by softxent.transformers vs unpatched.

What is measured
    A ``LlamaForCausalLM`` built from a config with random weights (no
    download): d=512, 2 layers, V=32000, batch x sequence = 4 x 512, float32,
    labels = the inputs (every position trained). One training step =
    ``model(input_ids, labels=labels).loss.backward()`` then ``AdamW.step()``
    and ``zero_grad()``.

How
    Time: both variants in one process, in alternating rounds (the same model,
    ``softxent.transformers.patch`` / ``unpatch`` between rounds, the
    optimiser state shared), after one warm-up step each; median and rounds.
    Peak extra memory: one step alone in a fresh process per variant: RSS
    sampled every millisecond (as ``cross_entropy_torch.py`` does) minus the
    RSS before the step (model, optimiser state and inputs allocated, a
    warm-up step done). ``THP_MEM_ALLOC_ENABLE=1`` in every process (``--no-thp``
    to leave it unset).

Run: ``python benchmarks/hf_patch.py`` (``--help``). Writes
``benchmarks/results/hf_patch.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cross_entropy_torch import PeakSampler, _rss_bytes, cpu_model  # noqa: E402

SHAPE = dict(d=512, layers=2, vocab=32000, batch=4, seq=512)
VARIANTS = ["unpatched (transformers' own loss)", "softxent.transformers.patch"]


def _setup(patched: bool) -> tuple[Any, Any]:
    """The model, its optimiser, and one step's callable (warmed up once)."""
    import torch
    import transformers

    import softxent.transformers as sxh

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=SHAPE["d"], intermediate_size=4 * SHAPE["d"], num_hidden_layers=SHAPE["layers"],
        num_attention_heads=8, num_key_value_heads=8, vocab_size=SHAPE["vocab"], max_position_embeddings=SHAPE["seq"],
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, SHAPE["vocab"], (SHAPE["batch"], SHAPE["seq"]), generator=g)
    if patched:
        sxh.patch(model)

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, float(loss.detach())

    step()
    return model, step


def worker_memory(variant: int) -> dict[str, Any]:
    _, step = _setup(variant == 1)
    base = _rss_bytes()
    with PeakSampler() as sampler:
        seconds, loss = step()
    return dict(peak_extra_mib=(sampler.peak - base) / 2**20, seconds=seconds, loss=loss)


def worker_time(reps: int) -> dict[str, Any]:
    import softxent.transformers as sxh

    model, step = _setup(False)
    sxh.patch(model)
    step()  # the patched warm-up
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(reps):
        for k in (r % 2, 1 - r % 2):
            (sxh.patch if k else sxh.unpatch)(model)
            times[VARIANTS[k]].append(step()[0])
    return dict(times_s=times)


def _run(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *args]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout:.0f} s")
    if proc.returncode != 0:
        return dict(error=(proc.stderr.strip().splitlines() or ["(no output)"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", choices=["memory", "time"], help=argparse.SUPPRESS)
    parser.add_argument("--variant", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=5, help="timed steps per variant (alternating)")
    parser.add_argument("--no-thp", action="store_true", help="leave THP_MEM_ALLOC_ENABLE unset")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    if args.worker == "memory":
        print(json.dumps(worker_memory(args.variant)))
        return 0
    if args.worker == "time":
        print(json.dumps(worker_time(args.reps)))
        return 0

    import torch
    import transformers

    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if not args.no_thp:
        env["THP_MEM_ALLOC_ENABLE"] = "1"
    t0 = time.perf_counter()
    memory = [_run(["--worker", "memory", "--variant", str(k)], env, args.timeout) for k in range(len(VARIANTS))]
    timing = _run(["--worker", "time", "--reps", str(args.reps)], env, args.timeout)
    report = dict(
        command="python benchmarks/hf_patch.py" + ("" if argv is None else " " + " ".join(argv)),
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        machine=f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.platform()}",
        versions=dict(torch=torch.__version__, transformers=transformers.__version__),
        shape=SHAPE, thp=not args.no_thp, memory=memory, time=timing, total_s=time.perf_counter() - t0,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hf_patch.json").write_text(json.dumps(report, indent=2) + "\n")
    n_logits = SHAPE["batch"] * SHAPE["seq"] * SHAPE["vocab"] * 4 / 2**20
    lines = [
        "# One training step of a tiny Llama (random weights), softxent.transformers.patch vs unpatched",
        "",
        f"Reproduce: `{report['command']}`",
        "",
        f"- date: {report['date']}; machine: {report['machine']} (shared, 2 cores: compare rows of one run only)",
        f"- versions: torch {torch.__version__}, transformers {transformers.__version__}",
        f"- model: LlamaForCausalLM, d={SHAPE['d']}, {SHAPE['layers']} layers, V={SHAPE['vocab']}; batch x sequence "
        f"= {SHAPE['batch']} x {SHAPE['seq']}; float32; one step = forward + backward + AdamW step; "
        f"THP_MEM_ALLOC_ENABLE={'1' if report['thp'] else 'unset'}",
        f"- the float32 logits alone are {n_logits:.0f} MiB",
        "",
        "| variant | median step s | rounds s | time vs unpatched | peak extra MiB | memory vs unpatched | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    times = timing.get("times_s", {})
    for k, name in enumerate(VARIANTS):
        t = times.get(name, [])
        m = memory[k]
        ratio = "—"
        if t and times.get(VARIANTS[0]):
            ratio = f"{statistics.median(a / b for a, b in zip(t, times[VARIANTS[0]], strict=True)):.2f}×"
        mem = f"{m['peak_extra_mib']:.0f}" if "error" not in m else f"failed: {m['error']}"
        mv = "—"
        if "error" not in m and "error" not in memory[0] and m["peak_extra_mib"] > 0:
            mv = f"1/{memory[0]['peak_extra_mib'] / m['peak_extra_mib']:.1f}"
        loss = f"{m['loss']:.6f}" if "error" not in m else "—"
        tm = f"{statistics.median(t):.2f} | {', '.join(f'{x:.2f}' for x in t)}" if t else "— | —"
        lines.append(f"| {name} | {tm} | {ratio} | {mem} | {mv} | {loss} |")
    if "error" in timing:
        lines.append(f"\nTiming run failed: {timing['error']}")
    (args.out / "hf_patch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
