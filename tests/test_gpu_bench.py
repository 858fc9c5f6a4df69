"""The GPU benchmark script (benchmarks/cross_entropy_gpu.py) and the device check (benchmarks/gpu_check.sh)
without a GPU.

The device machine is lent for minutes: a script that breaks there wastes the
run. ``--dry-run`` takes every part of the benchmark through its code paths on
the CPU (tiny shapes, softxent's kernels in Triton's interpreter, the peers that
import); these tests run it in a subprocess and read its tables, so a broken
script, a part that raises, a wrong reference or a softxent row that errs fails
here. The targets are judged from hand-made rows; the input sets' shapes and
peakedness are checked in-process (no Triton needed).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "cross_entropy_gpu.py")
CHECK = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
CUDA = torch.cuda.is_available()


def _bench(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, env=env, timeout=timeout)


def _module():
    spec = importlib.util.spec_from_file_location("cross_entropy_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_help_and_no_gpu_exit_code():
    out = _bench("--help")
    assert out.returncode == 0 and "--dry-run" in out.stdout and "--inputs" in out.stdout
    if not CUDA:
        out = _bench()
        assert out.returncode == 2 and "no CUDA GPU" in out.stderr and "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    pytest.importorskip("triton", reason="Triton is not installed: the dry run runs softxent's kernels in it")
    out_dir = tmp_path_factory.mktemp("gpu-bench")
    out = _bench("--dry-run", "--out", str(out_dir))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    report = json.loads((out_dir / "cross_entropy_gpu.json").read_text())
    md = (out_dir / "cross_entropy_gpu.md").read_text()
    return report, md, out.stdout


def _rows(report, part, impl):
    return [r for r in report[part] if (r.get("impl") or r.get("config", "")).startswith(impl)]


def test_dry_run_softxent_rows_are_right_on_both_input_sets(dry_run):
    report, md, _ = dry_run
    assert report["dry_run"] and "dry run" in md
    for part, impl, grads in (("linear", "softxent linear_cross_entropy", ("dx", "dw")),
                              ("linear", "softxent core, gradient filter", ("dx", "dw")),
                              ("ce", "softxent cross_entropy", ("grad",))):  # fmt: skip
        rows = _rows(report, part, impl)
        assert {r["inputs"] for r in rows} == {"normal", "zipf"}, rows
        for r in rows:
            assert r["status"] == "ok", r
            # bf16 inputs against float64 of the same values: one bf16 rounding of the gradient.
            assert r["loss_rel_err"] < 1e-2, r
            for g in grads:
                assert r[f"{g}_rel_err"] < 1e-2, r
    for r in _rows(report, "linear", "softxent core, gradient filter"):
        assert r["note"].endswith("tiles of G skipped"), r


def test_dry_run_references_and_peers(dry_run):
    report, md, _ = dry_run
    # The float32 rows check the float64 reference itself: a float32 head of the same inputs agrees on the loss.
    for part, impl in (("linear", "naive float32"), ("ce", "torch eager float32")):
        for r in _rows(report, part, impl):
            assert r["status"] == "ok" and r["loss_rel_err"] < 1e-5, r
    for r in _rows(report, "linear", "naive torch.compile") + _rows(report, "ce", "torch.compile"):
        assert r["status"].startswith("skipped: --dry-run"), r
    for r in _rows(report, "linear", "torch chunked"):
        assert r["status"] == "ok" or r["status"].startswith("not in this torch"), r
        if r["status"] == "ok":
            assert r["loss_rel_err"] < 1e-2 and r["dw_rel_err"] < 1e-2, r
    for r in _rows(report, "linear", "Liger") + _rows(report, "linear", "CCE") + _rows(report, "ce", "Liger"):
        # a missing peer shows its import error; one that imports runs (or errs, which is a result)
        assert r["status"] == "ok" or "Error" in r["status"], r
    statuses = [r["status"] for p in ("linear", "ce", "ce-sweep", "linear-sweep") for r in report[p]]
    assert not [s for s in statuses if s.startswith("error") and "softxent" in s], statuses
    assert "## Targets (issue 20)" in md and "| 8x16x72 | zipf | softxent linear_cross_entropy |" in md


def test_dry_run_sweeps(dry_run):
    report, md, stdout = dry_run
    for part in ("ce-sweep", "linear-sweep"):
        rows = report[part]
        assert len(rows) >= 2 and all(r["status"] == "ok" for r in rows), rows
        assert rows[0 if part == "linear-sweep" else 1]["config"].startswith("default"), rows
        for r in rows:
            if "loss_rel_err" in r:  # every configuration computes the same loss and gradient
                assert r["loss_rel_err"] < 1e-5, r
                assert r.get("grad_rel_err", r.get("dw_rel_err")) < 1e-2, r
    assert "## Sweep: softxent's cross-entropy kernel" in md and "## Sweep: softxent's linear head" in md
    for part in ("linear:", "ce:", "ce-sweep:", "linear-sweep:"):
        assert part in stdout


def test_tables_are_written_after_every_row(tmp_path):
    bench = _module()
    meta = dict(device="test", dry_run=True, date="today", versions={}, peak_bandwidth=None,
                args=dict(reps=1, warmup=0, check_rows=4, check_classes=4))  # fmt: skip
    out = bench.Reporter(tmp_path, "t", meta)
    assert "## Targets" in (tmp_path / "t.md").read_text()  # the empty tables exist before any row
    out.add("ce", dict(shape="8x5", inputs="normal", impl="softxent cross_entropy", status="ok", median_ms=1.0,
                       bandwidth=1e9, copy_fraction=0.5, loss_rel_err=1e-4, grad_rel_err=1e-3))  # fmt: skip
    assert "| 8x5 | normal | softxent cross_entropy | 1.00 |" in (tmp_path / "t.md").read_text()
    assert json.loads((tmp_path / "t.json").read_text())["ce"][0]["impl"] == "softxent cross_entropy"
    out.add("ce-sweep", dict(shape="8x5", config="BLOCK=32", status="error: RuntimeError: boom"))
    assert "error: RuntimeError: boom" in (tmp_path / "t.md").read_text()


def test_targets_are_judged_from_the_rows():
    bench = _module()

    def lin(impl, ms, mem, dx, dw):
        return dict(shape="8x2x5", inputs="zipf", impl=impl, status="ok", median_ms=ms, peak_bytes=mem,
                    dx_rel_err=dx, dw_rel_err=dw)  # fmt: skip

    report = dict(
        peak_bandwidth=4.8e12,
        linear=[lin("softxent linear_cross_entropy", 10.0, 1.05, 3e-3, 1e-3),
                lin("Liger LigerFusedLinearCrossEntropyLoss", 13.0, 3.0, 4e-3, 2e-3),
                lin("torch chunked F.linear_cross_entropy", 12.5, 2.0, 5e-3, 5e-3),
                lin("CCE linear_cross_entropy (default, filter on)", 14.0, 1.0, 5e-3, 5e-3),
                lin("naive float32 (inputs upcast): the float32 reference", 50.0, 9.0, 2e-3, 5e-4),
                dict(shape="8x2x5", inputs="zipf", impl="CCE linear_cross_entropy (filter_eps=None)",
                     status="not installed (ModuleNotFoundError: x)")],
        ce=[dict(shape="8x5", impl="softxent cross_entropy", status="ok", median_ms=1.0, bandwidth=2.88e12,
                 copy_fraction=0.75),
            dict(shape="8x5", impl="Liger LigerCrossEntropyLoss", status="ok", median_ms=1.1, bandwidth=2.7e12)],
    )  # fmt: skip
    lines = bench.targets(report)
    assert lines[0].startswith("- linear 8x2x5 zipf: 1.25x the fastest peer (torch chunked"), lines[0]
    assert "[met: >= 1.2x]" in lines[0] and "peak memory vs CCE 1.05x [met: <= 1.1x]" in lines[0]
    # within the larger of the best peer's error and the float32 reference's
    assert "dx error 3.00e-03 vs best peer 4.00e-03, float32 2.00e-03 [met]" in lines[0]
    assert "dw error 1.00e-03 vs best peer 2.00e-03, float32 5.00e-04 [met]" in lines[0]
    assert "1.10x Liger [NOT met" in lines[1] and "75% of the copy's bandwidth [met" in lines[1]
    assert "60% of nominal" in lines[1]
    report["linear"][0]["peak_bytes"] = 1.2  # 1.2x CCE's
    report["linear"][0]["dw_rel_err"] = 3e-3  # above both the best peer and float32
    lines = bench.targets(report)
    assert "1.20x [NOT met: <= 1.1x]" in lines[0] and "dw error 3.00e-03 vs best peer 2.00e-03" in lines[0]
    assert lines[0].endswith("[NOT met]")
    assert bench.peak_bandwidth("NVIDIA H200") == 4.8e12 and bench.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12


def test_input_sets_are_what_they_say():
    """normal: logits of std 2, no small softmax tiles; zipf: peaked (most (128, 128) tiles of G negligible)."""
    bench = _module()
    n, d, v = 64, 48, 32768
    for kind in ("normal", "zipf"):
        x, w, y = bench.make_linear_inputs(torch, n, d, v, "cpu", kind)
        z, yz = bench.make_ce_inputs(torch, n, v, "cpu", kind)
        assert x.dtype == w.dtype == z.dtype == torch.bfloat16 and x.shape == (n, d) and w.shape == (v, d)
        assert (y == -100).sum() == n // 16 and (yz == -100).sum() == n // 16
        logits = x.double() @ w.double().T
        a = torch.softmax(logits, 1)
        small = (a.reshape(n, v // 128, 128).amax(dim=(0, 2)) < 2.0**-12).double().mean()
        if kind == "normal":
            assert 1.6 < float((logits - logits.mean(1, keepdim=True)).std()) < 2.4
            assert small == 0.0
        else:
            assert small > 0.5, small  # the filter has work to skip (about 98% at V = 256000)
            kept = y[y >= 0]
            assert float((kept < v // 100).double().mean()) > 0.5  # labels follow the Zipf law: mostly frequent classes
        assert math.isfinite(float(z.float().sum()))


def test_gpu_check_script_parses():
    out = subprocess.run(["bash", "-n", CHECK], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
