"""``softxent bench``: a quick timing of softxent's fused loss + gradient beside NumPy (and torch when installed).

In this process, on each ``--shapes`` N x V: float32 logits, integer labels,
the mean softmax cross-entropy *and* its gradient, timed as the median of
``--repeats`` calls after one untimed warm-up call (jit compilation), beside a
plain ``np.copyto`` of the logits (the memory traffic a fused kernel cannot
avoid). Every result is checked against a float64 NumPy computation before it
is timed. The full benchmark (every peer in its own subprocess, thread
control, a float64 oracle, tables in ``benchmarks/results/``) is
``python benchmarks/cross_entropy_cpu.py`` in softxent's source tree.
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from ._errors import CLIError

FULL_BENCHMARK = "python benchmarks/cross_entropy_cpu.py"
SEED = 20240601
LOGIT_SCALE = 3.0  # logits ~ N(0, 1) * 3: softmax neither uniform nor one-hot
# 2**28 logits are 1 GiB of float32 per buffer, and a run holds several
# (logits, gradients, the memcpy copy): a quick run stays within a few GiB,
# where a typo like 100000x100000 would otherwise fail deep in an allocation.
MAX_ELEMENTS = 2**28
# A float32 result against float64, in float32 ulps: the loss relative, the
# gradient's entries (p - onehot) / N absolute in units of 1/N.
_EPS32 = float(np.finfo(np.float32).eps)
LOSS_RTOL = 64 * _EPS32
GRAD_ATOL_TIMES_N = 64 * _EPS32
_BLOCK = 1 << 22  # values per block of rows in the float64 check


def parse_shapes(shapes: str) -> list[tuple[int, int]]:
    """``"8192x1000,512x10"`` → ``[(8192, 1000), (512, 10)]``; a CLIError for anything else or too large."""
    parsed = []
    for text in (s.strip() for s in shapes.split(",")):
        if not text:
            continue
        try:
            n, v = (int(p) for p in text.lower().split("x"))
        except ValueError:
            n = v = 0
        if n < 1 or v < 1:
            raise CLIError(f"--shapes: {text!r} is not NxV (rows x classes, e.g. 8192x1000)")
        if n * v > MAX_ELEMENTS:
            raise CLIError(
                f"--shapes: {text!r} has {n * v:,} logits; the quick benchmark takes at most "
                f"{MAX_ELEMENTS:,} (1 GiB of float32 per buffer); run {FULL_BENCHMARK} for larger shapes"
            )
        parsed.append((n, v))
    if not parsed:
        raise CLIError(f"--shapes: {shapes!r} names no shape; give NxV shapes separated by commas, e.g. 8192x1000")
    return parsed


def _implementations(logits: np.ndarray, labels: np.ndarray, with_torch: bool) -> dict[str, Any]:
    """name → ``(run, reset)``: ``run()`` returns ``(loss, gradient)`` (None for memcpy); ``reset`` is untimed."""
    import softxent

    n = logits.shape[0]
    rows = np.arange(n)
    dst = np.empty_like(logits)

    def numpy_naive() -> tuple[float, np.ndarray]:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))  # max-shift: no overflow
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[rows, labels]).mean()
        p[rows, labels] -= 1.0
        p /= n
        return float(loss), p

    impls: dict[str, Any] = {
        "memcpy": (lambda: np.copyto(dst, logits), None),
        "softxent": (lambda: softxent.softmax_cross_entropy_with_grad(logits, labels), None),
        "NumPy": (numpy_naive, None),
    }
    if with_torch:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(logits).requires_grad_()
        y = torch.from_numpy(labels)

        def torch_eager() -> tuple[float, Any]:
            loss = F.cross_entropy(x, y)
            loss.backward()
            return loss.detach(), x.grad

        impls["torch eager"] = (torch_eager, lambda: setattr(x, "grad", None))
    return impls


def _check(result: Any, logits: np.ndarray, labels: np.ndarray) -> str:
    """``ok`` when loss and gradient agree with float64 NumPy within 64 float32 ulps, else ``FAILED``."""
    if result is None:
        return "n/a"
    loss, grad = float(result[0]), np.asarray(result[1])
    n, v = logits.shape
    total, ok = 0.0, True
    step = max(1, _BLOCK // v)
    for i in range(0, n, step):
        z, y = logits[i : i + step].astype(np.float64), labels[i : i + step]
        rows = np.arange(len(y))
        shifted = z - z.max(axis=1, keepdims=True)
        sums = np.exp(shifted).sum(axis=1)
        total += float(np.sum(np.log(sums) - shifted[rows, y]))
        ref = np.exp(shifted) / sums[:, None]
        ref[rows, y] -= 1.0
        ok &= bool(np.abs(grad[i : i + step] - ref / n).max() * n <= GRAD_ATOL_TIMES_N)  # NaN fails
    ref_loss = total / n
    ok &= bool(abs(loss - ref_loss) <= LOSS_RTOL * abs(ref_loss))
    return "ok" if ok else "FAILED"


def _time(run: Callable[[], Any], reset: Callable[[], None] | None, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        if reset is not None:
            reset()
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
        del result  # free the gradient before the next call, like a training step
    return times


def _ms(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def _row(cells: list[str], stream: TextIO) -> None:
    widths = [14, 10, 10, 7, 12, 7, 10]
    print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip(), file=stream, flush=True)


def run_bench(*, shapes: str, repeats: int, out: TextIO | None = None) -> int:
    """``softxent bench``: time and check each implementation on each shape; print one table per shape."""
    parsed = parse_shapes(shapes)
    stream = out if out is not None else sys.stdout
    with_torch = importlib.util.find_spec("torch") is not None
    print("softxent bench: loss + gradient of the mean softmax cross-entropy, float32, in this process, "
          f"median of {repeats} calls after one warm-up call", file=stream)  # fmt: skip
    if not with_torch:
        print("(torch is not installed: skipped)", file=stream)
    rng = np.random.default_rng(SEED)
    for n, v in parsed:
        logits = rng.standard_normal((n, v), dtype=np.float32)
        logits *= LOGIT_SCALE
        labels = rng.integers(0, v, size=n, dtype=np.int64)
        print(f"\n## {n}x{v}", file=stream)
        _row(["implementation", "median ms", "min ms", "GB/s", "% of memcpy", "check", "softxent speed-up"], stream)
        medians: dict[str, float] = {}
        for name, (run, reset) in _implementations(logits, labels, with_torch).items():
            if reset is not None:
                reset()
            check = _check(run(), logits, labels)  # the warm-up call, checked
            times = _time(run, reset, repeats)
            median = medians[name] = statistics.median(times)
            gbps = 2 * n * v * 4 / median / 1e9  # read the logits + write the gradient
            speedup = f"{median / medians['softxent']:.2f}×" if name != "memcpy" else "—"
            _row([name, _ms(1e3 * median), _ms(1e3 * min(times)), f"{gbps:.1f}",
                  f"{100 * medians['memcpy'] / median:.0f}", check, speedup], stream)  # fmt: skip
    print(f"\nThe full benchmark (torch.compile, JAX, SciPy, each peer in its own process, thread control, "
          f"tables): {FULL_BENCHMARK}, in softxent's source tree.", file=stream)  # fmt: skip
    return 0
