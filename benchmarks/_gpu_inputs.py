"""Input sets and float64 references of the GPU benchmark (``benchmarks/cross_entropy_gpu.py``).

The two input sets (``normal``: logits of std 2, uniform labels; ``zipf``: a Zipf log-prior over the
classes plus noise, labels from the same law; 1/16 of the labels ignored in both), built on the CPU from
one seed and moved to the device; the float64 loss and gradients of the same bf16 values, the logits in
row chunks; and the error measures the tables report. ``torch`` is passed in: importing this module
imports neither torch nor triton (the benchmark fixes Triton's mode first).
"""

from __future__ import annotations

import math
from typing import Any

INPUT_SETS = ("normal", "zipf")
SEED = 20240601
NORMAL_STD = 2.0
ZIPF_S = 1.2
ZIPF_NOISE = 1.0
IGNORE = -100


def _zipf(torch: Any, g: Any, n: int, v: int) -> tuple[Any, Any]:
    """(the log-prior -s ln(rank), n labels drawn from the Zipf law), classes in frequency order."""
    prior = -ZIPF_S * torch.log(torch.arange(1, v + 1, dtype=torch.float64))
    labels = torch.multinomial(torch.softmax(prior, 0), n, replacement=True, generator=g)
    return prior, labels


def make_linear_inputs(torch: Any, n: int, d: int, v: int, device: str, kind: str = "normal") -> tuple[Any, Any, Any]:
    """bf16 (x, W) and labels (1/16 ignored) of the input set ``kind`` (see the module docstring)."""
    g = torch.Generator(device="cpu").manual_seed(SEED)
    x = torch.randn(n, d, generator=g)
    if kind == "zipf":
        prior, y = _zipf(torch, g, n, v)
        w = torch.randn(v, d, generator=g) * (ZIPF_NOISE / math.sqrt(max(d - 1, 1)))
        x[:, 0], w[:, 0] = 1.0, prior.float()  # z_ic = prior_c + noise (the first feature is the bias)
    else:
        w = torch.randn(v, d, generator=g) * (NORMAL_STD / math.sqrt(d))
        y = torch.randint(0, v, (n,), generator=g)
    y[::16] = IGNORE
    return x.to(device, torch.bfloat16), w.to(device, torch.bfloat16), y.to(device)


def make_ce_inputs(torch: Any, n: int, v: int, device: str, kind: str = "normal") -> tuple[Any, Any]:
    """bf16 logits (N, V) and labels of the input set ``kind``."""
    g = torch.Generator(device="cpu").manual_seed(SEED)
    if kind == "zipf":
        prior, y = _zipf(torch, g, n, v)
        z = prior.float()[None, :] + ZIPF_NOISE * torch.randn(n, v, generator=g)
    else:
        z = NORMAL_STD * torch.randn(n, v, generator=g)
        y = torch.randint(0, v, (n,), generator=g)
    y[::16] = IGNORE
    return z.to(device, torch.bfloat16), y.to(device)


def _row_step(n: int, v: int) -> int:
    return max(1, (1 << 27) // (8 * v))  # float64 rows of logits per chunk: 128 MiB


def linear_reference(torch: Any, x: Any, w: Any, y: Any, rows: int, classes: int) -> dict[str, Any]:
    """float64 mean loss, dL/dx[:rows] and dL/dW[:classes] of the bf16 inputs, the logits in row chunks."""
    n, v = x.shape[0], w.shape[0]
    kept = y != IGNORE
    n_kept = max(int(kept.sum()), 1)
    wd = w.double()
    lse = torch.empty(n, dtype=torch.float64, device=x.device)
    step = _row_step(n, v)
    for r0 in range(0, n, step):
        lse[r0 : r0 + step] = torch.logsumexp(x[r0 : r0 + step].double() @ wd.T, dim=1)
    z_y = (x.double() * wd[y.clamp(0, v - 1)]).sum(1)
    loss = torch.where(kept, lse - z_y, 0.0).sum() / n_kept

    def g_rows(r0: int, r1: int, c0: int, c1: int) -> Any:
        g = torch.exp(x[r0:r1].double() @ wd[c0:c1].T - lse[r0:r1, None])
        yy, kk = y[r0:r1], kept[r0:r1]
        idx = (kk & (yy >= c0) & (yy < c1)).nonzero()[:, 0]
        g[idx, yy[idx] - c0] -= 1.0
        g[~kk] = 0.0
        return g / n_kept

    dx = g_rows(0, rows, 0, v) @ wd
    dw = torch.zeros(classes, x.shape[1], dtype=torch.float64, device=x.device)
    for r0 in range(0, n, step):
        r1 = min(n, r0 + step)
        dw += g_rows(r0, r1, 0, classes).T @ x[r0:r1].double()
    return dict(loss=float(loss), dx=dx, dw=dw)


def ce_reference(torch: Any, z: Any, y: Any, rows: int) -> dict[str, Any]:
    """float64 mean loss and dL/dz[:rows] of the bf16 logits."""
    n, v = z.shape
    kept = y != IGNORE
    n_kept = max(int(kept.sum()), 1)
    total = 0.0
    for r0 in range(0, n, _row_step(n, v)):
        zz = z[r0 : r0 + _row_step(n, v)].double()
        yy = y[r0 : r0 + zz.shape[0]]
        nll = torch.logsumexp(zz, 1) - zz.gather(1, yy.clamp(0, v - 1)[:, None])[:, 0]
        total += float(torch.where(yy != IGNORE, nll, 0.0).sum())
    g = torch.softmax(z[:rows].double(), dim=1)
    idx = kept[:rows].nonzero()[:, 0]
    g[idx, y[:rows][idx]] -= 1.0
    g[~kept[:rows]] = 0.0
    return dict(loss=total / n_kept, dz=g / n_kept)


def rel_err(torch: Any, got: Any, ref: Any) -> tuple[float, float]:
    if got is None:
        return math.nan, math.nan
    diff = got.double() - ref
    return float(diff.norm() / ref.norm()), float(diff.abs().max())


def loss_err(loss: Any, ref: float) -> float:
    return abs(float(loss.detach().double()) - ref) / max(abs(ref), 1e-300)
