"""The CPU linear head's column layout (softxent.torch._linear_columns) on the inputs that are hard for it.

Confident rows (p_y -> 1, gradients down to 1e-30) against an exact float64
head (the label's entry from expm1, log-sum-exp from log1p); NaN rows,
masked classes and infinite losses against the row kernel, whose rules the
column layout hands those blocks to. The other tests of the head
(``test_torch_linear.py``, ``test_torch_linear_dropin.py``) run it as their
``columns`` path.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import softxent.torch as sxt  # noqa: E402
from softxent.torch import _linear_blocks  # noqa: E402
from test_torch_linear import gen, grads, make  # noqa: E402


def _both_layouts(monkeypatch, fn):
    """fn() on the column layout (asserting that it ran, without falling back) and on the row layout."""
    calls = []
    block = _linear_blocks._ColumnBlocks.block
    monkeypatch.setattr(_linear_blocks._ColumnBlocks, "block", lambda *a: calls.append(block(*a)) or calls[-1])
    cols = fn()
    monkeypatch.setattr(_linear_blocks, "_COLUMN_LAYOUT", False)
    rows = fn()
    return cols, rows, calls


def exact_head(x, w, b, y, label_smoothing=0.0, z_loss=0.0, reduction="mean", sample_weight=None):
    """float64 loss and (G W, G^T x, sum G) with G's label entry from expm1(z_y - lse): no cancellation as p_y -> 1."""
    x, w, b = x.double(), w.double(), b.double()
    z = x @ w.T + b
    kept = y != -100
    yk = torch.where(kept, y, 0)
    m, top = z.max(1)
    others = torch.exp(z - m[:, None]).scatter(1, top[:, None], 0.0).sum(1)
    lse = m + torch.log1p(others)  # torch.logsumexp's log(1 + tiny) is off by 1e-16 absolute: all of z_y - lse
    eps, v = label_smoothing, z.shape[1]
    g = torch.exp(z - lse[:, None]) * (1.0 + 2.0 * z_loss * lse[:, None]) - eps / v
    z_y = z.gather(1, yk[:, None])[:, 0]
    g_y = torch.expm1(z_y - lse) + eps - eps / v + 2.0 * z_loss * lse * torch.exp(z_y - lse)
    g.scatter_(1, yk[:, None], g_y[:, None])
    loss = (1 - eps) * (lse - z_y) + eps * (lse - z.mean(1)) + z_loss * lse**2
    s = torch.ones_like(lse) if sample_weight is None else sample_weight.double()
    s = torch.where(kept, s, 0.0)
    loss = loss * s
    if reduction == "mean":
        loss, s = loss.sum() / s.sum(), s / s.sum()
    elif reduction == "sum":
        loss = loss.sum()
    v_rows = (torch.rand(loss.shape, generator=gen(9), dtype=torch.float64) + 0.5).to(torch.bfloat16).double()
    g = g * (s * v_rows)[:, None]  # the upstream gradient of grads(): sum(loss * v)
    return torch.where(kept, loss, 0.0) if reduction == "none" else loss, g @ w, g.T @ x, g.sum(0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", [dict(), dict(label_smoothing=0.1, z_loss=1e-3, reduction="none"),
                                  dict(reduction="sum", sample_weight=True)], ids=str)  # fmt: skip
def test_column_layout_keeps_confident_rows_exact(monkeypatch, dtype, case):
    """Rows with p_y -> 1 (gradients down to 1e-30): each row's dx to its own scale, against exact float64."""
    x, w, b, y = make((40,), 8, 300, dtype, seed=3, ignore_frac=0.1)
    w = w * 8  # logits ~ +-30: most rows confident
    y = torch.where(y == -100, y, (x.double() @ w.double().T + b.double()).argmax(1))
    if case.get("sample_weight"):
        case = dict(case, sample_weight=torch.rand(40, generator=gen(4), dtype=dtype) + 0.5)
    cols, _, calls = _both_layouts(monkeypatch, lambda: grads(sxt.linear_cross_entropy, x, w, b, y, **case))
    assert calls and all(c is not None for c in calls)
    ref = exact_head(x, w, b, y, **case)
    tol = 64 * torch.finfo(dtype).eps
    torch.testing.assert_close(cols[0].double(), ref[0], rtol=tol, atol=tol * 1e-3)
    scale = ref[1].abs().amax(dim=1, keepdim=True)
    checked = scale[:, 0] > 1e-25  # float32's exponentials of -60 and below are 0 (as the row kernel's)
    assert scale.min() < 1e-10 and checked.sum() > 30
    # dx relative to each row's own gradient; 512 eps: the sum over V of terms of both signs (the row layout:
    # up to 1.5, its label entry's e_y * a - t_y loses the tiny gradient of rows with a gap of 40-60)
    assert ((cols[1].double() - ref[1]).abs() / scale)[checked].max() < 512 * torch.finfo(dtype).eps
    for got, want in zip(cols[2:], ref[2:]):
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * want.abs().max().item())


def test_column_layout_hands_nan_and_masked_rows_to_the_row_kernel(monkeypatch):
    """NaN rows, -inf classes and infinite logits give what the row kernel gives (its rules, not the column kernel's)."""
    x, w, b, y = make((30,), 8, 300, torch.float32, seed=6, ignore_frac=0.0)
    x[4, 2] = float("nan")
    b[:7] = -float("inf")  # masked classes: no fallback needed, same results
    y = torch.where(y < 7, 7, y)

    def run():
        return grads(sxt.linear_cross_entropy, x, w, b, y, reduction="none", label_smoothing=0.0)

    cols, rows, calls = _both_layouts(monkeypatch, run)
    assert calls[0] is None  # the NaN row sent its block to the row kernel
    for got, want in zip(cols, rows):
        torch.testing.assert_close(got, want, equal_nan=True)
    assert cols[0][4].isnan() and cols[0].isfinite().sum() == 29
    monkeypatch.undo()
    x[4, 2] = 0.0
    cols, rows, calls = _both_layouts(monkeypatch, run)
    assert calls[0] is not None and all(c.isfinite().all() for c in cols)
    for got, want in zip(cols, rows):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    y[3] = 2  # a label on a masked class: infinite loss, the row kernel's answer
    cols, rows, _ = _both_layouts(monkeypatch, run)
    torch.testing.assert_close(cols[0], rows[0], equal_nan=True)


def test_column_sweeps_on_threads_match_one_thread():
    """The kernel's parts on 3 threads give the bits of 1 thread (each part swept once, combined in order)."""
    import numpy as np

    from softxent.torch._linear_columns import _run_parts, _xent_columns

    rng = np.random.default_rng(5)
    z = (rng.standard_normal((1000, 16)) * 4).astype(np.float32)
    labels = rng.integers(0, 1000, 16)
    outs = []
    for threads in (1, 3):
        zt = z.copy()
        loss, lse, k, sub = (np.zeros(16) for _ in range(4))
        bad = _xent_columns(zt, labels, 0.1, 1e-3, 0.5, 0.25, np.ones(16), 5, loss, lse, k, sub, threads)
        outs.append((bad, zt, loss, lse, k, sub))
    assert outs[0][0] == outs[1][0] == 0
    for a, b in zip(outs[0][1:], outs[1][1:]):
        np.testing.assert_array_equal(a, b)
    seen = []
    _run_parts(seen.append, 7, 3)
    assert sorted(seen) == list(range(7))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_column_sweeps_run_in_a_forked_child():
    """A child forked after the pool started gets its own helper threads (the parent's do not exist there)."""
    import os
    import time

    from softxent.torch._linear_columns import _run_parts

    _run_parts(lambda p: None, 4, 2)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if every part ran
        seen = []
        try:
            _run_parts(seen.append, 4, 2)
        finally:
            os._exit(0 if sorted(seen) == [0, 1, 2, 3] else 1)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in _run_parts")
    assert os.waitstatus_to_exitcode(status) == 0
