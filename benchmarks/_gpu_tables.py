"""The GPU benchmark's tables (``benchmarks/cross_entropy_gpu.py``): rows printed and written as they come,
and the issue's targets judged from them.

:class:`Reporter` prints each row and rewrites the Markdown and JSON tables after it (a run stopped by a
time limit keeps what it measured); :func:`targets` says, per shape and input set, whether the linear
head and the cross-entropy on logits meet issue 20's targets; :func:`peak_bandwidth` is the device's
nominal bandwidth, for the "% of nominal" column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from _gpu_inputs import NORMAL_STD, ZIPF_NOISE, ZIPF_S

PARTS = ("linear", "ce", "ce-sweep", "linear-sweep")

#: Nominal peak memory bandwidth (bytes/s) by a substring of the device name.
PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 NVL": 3.9e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,  # SXM
    "A100-SXM4-80GB": 2.039e12,
    "A100-SXM4-40GB": 1.555e12,
    "A100": 1.935e12,  # PCIe 80GB
    "B200": 8.0e12,
}


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def _gib(v: Any) -> Any:
    return None if v is None else v / 2**30


#: part -> (heading, [(column, key, format)]); "bandwidth" in TB/s, "copy_fraction" in %.
COLUMNS = {
    "linear": ("Linear + cross-entropy, bf16, gradients for x and W", [
        ("N×D×V", "shape", ""), ("inputs", "inputs", ""), ("implementation", "impl", ""),
        ("median ms", "median_ms", ".2f"), ("min ms", "min_ms", ".2f"), ("peak GiB", "peak_bytes", "gib"),
        ("loss rel. err", "loss_rel_err", ".1e"), ("dx rel. err", "dx_rel_err", ".2e"),
        ("dW rel. err", "dw_rel_err", ".2e"), ("status", "status", ""), ("note", "note", "")]),
    "ce": ("Cross-entropy on bf16 logits, gradient for the logits", [
        ("N×V", "shape", ""), ("inputs", "inputs", ""), ("implementation", "impl", ""),
        ("median ms", "median_ms", ".2f"), ("min ms", "min_ms", ".2f"), ("peak GiB", "peak_bytes", "gib"),
        ("TB/s", "bandwidth", "tb"), ("% of copy", "copy_fraction", "pct"), ("% of nominal", "bandwidth", "nom"),
        ("loss rel. err", "loss_rel_err", ".1e"), ("grad rel. err", "grad_rel_err", ".2e"), ("status", "status", "")]),
    "ce-sweep": ("Sweep: softxent's cross-entropy kernel (loss + gradient, one launch), normal inputs", [
        ("N×V", "shape", ""), ("configuration", "config", ""), ("median ms", "median_ms", ".3f"),
        ("min ms", "min_ms", ".3f"), ("TB/s", "bandwidth", "tb"), ("% of copy", "copy_fraction", "pct"),
        ("loss rel. err", "loss_rel_err", ".1e"), ("grad rel. err", "grad_rel_err", ".2e"), ("status", "status", "")]),
    "linear-sweep": ("Sweep: softxent's linear head (forward + backward, no autograd), normal inputs", [
        ("N×D×V", "shape", ""), ("configuration", "config", ""), ("median ms", "median_ms", ".2f"),
        ("min ms", "min_ms", ".2f"), ("peak GiB", "peak_bytes", "gib"), ("loss rel. err", "loss_rel_err", ".1e"),
        ("dx rel. err", "dx_rel_err", ".2e"), ("dW rel. err", "dw_rel_err", ".2e"), ("status", "status", "")]),
}  # fmt: skip


def _cell(row: dict[str, Any], key: str, spec: str, peak: float | None) -> str:
    v = row.get(key)
    if spec == "":
        return "" if v is None else str(v)
    if spec == "gib":
        return _fmt(_gib(v), ".3f")
    if spec == "tb":
        return _fmt(None if v is None else v / 1e12, ".2f")
    if spec == "pct":
        return _fmt(None if v is None else 100 * v, ".0f")
    if spec == "nom":
        return _fmt(None if (v is None or not peak) else 100 * v / peak, ".0f")
    return _fmt(v, spec)


class Reporter:
    """The run's tables: every added row is printed, and the ``.md`` and ``.json`` are rewritten at once."""

    def __init__(self, out_dir: Path, stem: str, meta: dict[str, Any]) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.md, self.js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
        self.report: dict[str, Any] = dict(meta, **{p: [] for p in PARTS}, targets=[])
        self.write()

    def add(self, part: str, row: dict[str, Any]) -> None:
        self.report[part].append(row)
        print(_line(row), flush=True)
        self.write()

    def write(self) -> None:
        r = self.report
        r["targets"] = targets(r)
        self.js.write_text(json.dumps(r, indent=2, default=float) + "\n")
        a = r["args"]
        lines = [
            "# Cross-entropy on a GPU: softxent vs torch, Liger-Kernel, Cut Cross-Entropy",
            "",
            f"Device: **{r['device']}**"
            + (" (dry run: CPU, Triton interpreter; timings meaningless)" if r["dry_run"] else "")
            + f". {r['date']}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in r["versions"].items())
            + ".",
            "",
            f"bf16 inputs; forward + backward; median of {a['reps']} timings after {a['warmup']} warm-up calls; "
            "peak = `torch.cuda.max_memory_allocated` during one call minus what was allocated before it. "
            f"Errors against float64 of the same bf16 inputs: the loss, the first {a['check_rows']} rows of dx "
            f"(dz) and the first {a['check_classes']} rows of dW (relative Frobenius norm). Input sets: normal "
            f"(logits of std {NORMAL_STD:g}, uniform labels), zipf (prior -{ZIPF_S:g} ln(rank) plus N(0, "
            f"{ZIPF_NOISE:g}), Zipf labels).",
        ]
        for part in PARTS:
            if not r[part]:
                continue
            title, cols = COLUMNS[part]
            lines += ["", f"## {title}", "", "| " + " | ".join(c[0] for c in cols) + " |",
                      "|" + "|".join("---:" if c[2] not in ("",) else "---" for c in cols) + "|"]  # fmt: skip
            lines += ["| " + " | ".join(_cell(row, k, s, r["peak_bandwidth"]) for _, k, s in cols) + " |"
                      for row in r[part]]  # fmt: skip
        lines += ["", "## Targets (issue 20)", ""] + (r["targets"] or ["- none evaluated yet"]) + [""]
        self.md.write_text("\n".join(lines))


def _line(row: dict[str, Any]) -> str:
    what = f"{row.get('shape', ''):>18} {row.get('inputs', ''):>6}  {row.get('impl') or row.get('config', '')}"
    if row.get("status") != "ok":
        return f"  {what}: {row.get('status')}"
    errs = ", ".join(f"{k} {row[k]:.1e}" for k in ("loss_rel_err", "dx_rel_err", "dw_rel_err", "grad_rel_err")
                     if k in row)  # fmt: skip
    return (
        f"  {what}: {_fmt(row.get('median_ms'), '.3f')} ms, peak {_fmt(_gib(row.get('peak_bytes')), '.3f')} GiB; {errs}"
    )


def peak_bandwidth(name: str) -> float | None:
    for key, bw in PEAK_BANDWIDTH.items():
        if key in name:
            return bw
    return None


LINEAR_PEERS = ("Liger", "CCE", "torch chunked")


def targets(report: dict[str, Any]) -> list[str]:
    """The issue's targets, met or not, from the rows of this run (per shape and input set)."""
    out = []
    ok = [r for r in report.get("linear", []) + report.get("ce", []) if r.get("status") == "ok"]
    by = {(r["shape"], r.get("inputs", "normal"), r["impl"]): r for r in ok}
    keys = sorted({(r["shape"], r.get("inputs", "normal")) for r in report.get("linear", [])})
    for shape, kind in keys:
        sx = by.get((shape, kind, "softxent linear_cross_entropy"))
        rows = [r for (s, k, _), r in by.items() if (s, k) == (shape, kind)]
        peers = [r for r in rows if r["impl"].startswith(LINEAR_PEERS)]
        if not sx or not peers:
            out.append(f"- linear {shape} {kind}: n/a (softxent or every peer missing)")
            continue
        fastest = min(peers, key=lambda p: p["median_ms"])
        speedup = fastest["median_ms"] / sx["median_ms"]
        cce = by.get((shape, kind, "CCE linear_cross_entropy (default, filter on)"))
        mem = None if cce is None else sx["peak_bytes"] / cce["peak_bytes"]
        f32 = by.get((shape, kind, "naive float32 (inputs upcast): the float32 reference"))
        parts = [f"{speedup:.2f}x the fastest peer ({fastest['impl']}) [{'met' if speedup >= 1.2 else 'NOT met'}: "
                 f">= 1.2x]", "peak memory vs CCE " + ("n/a" if mem is None else
                 f"{mem:.2f}x [{'met' if mem <= 1.1 else 'NOT met'}: <= 1.1x]")]  # fmt: skip
        for g in ("dx", "dw"):
            best = min(p[f"{g}_rel_err"] for p in peers)
            bound = max(best, f32[f"{g}_rel_err"]) if f32 else best
            parts.append(f"{g} error {sx[f'{g}_rel_err']:.2e} vs best peer {best:.2e}"
                         + (f", float32 {f32[f'{g}_rel_err']:.2e}" if f32 else "")
                         + f" [{'met' if sx[f'{g}_rel_err'] <= bound else 'NOT met'}]")  # fmt: skip
        out.append(f"- linear {shape} {kind}: " + "; ".join(parts))
    peak = report.get("peak_bandwidth")
    for shape, kind in sorted({(r["shape"], r.get("inputs", "normal")) for r in report.get("ce", [])}):
        sx = by.get((shape, kind, "softxent cross_entropy"))
        lg = by.get((shape, kind, "Liger LigerCrossEntropyLoss"))
        parts = []
        if sx and lg:
            s = lg["median_ms"] / sx["median_ms"]
            parts.append(f"{s:.2f}x Liger [{'met' if s >= 1.2 else 'NOT met'}: >= 1.2x]")
        else:
            parts.append("vs Liger n/a")
        if sx and sx.get("copy_fraction"):
            frac = sx["copy_fraction"]
            parts.append(f"{100 * frac:.0f}% of the copy's bandwidth [{'met' if frac >= 0.7 else 'NOT met'}: >= 70%]")
        if sx and peak:
            parts.append(f"{100 * sx['bandwidth'] / peak:.0f}% of nominal")
        out.append(f"- cross-entropy {shape} {kind}: " + "; ".join(parts))
    return out
