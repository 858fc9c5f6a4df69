"""The determinism promise (README, "Determinism"), tested directly.

Within one process, a row's loss, gradient and log-sum-exp are the same bits

* whatever the number of threads (numba's pool at 1 and at 2 threads),
* whichever rows it is batched with (alone, in a slice that runs serially,
  at any offset of a few-class tile, in a batch that runs in parallel blocks),
* before and after any other calls (other shapes, dtypes, options),

on the compiled kernels and on the NumPy path. What is *not* promised, and
not tested here: the same bits from separately compiled code (another CPU,
a kernel compiled in this process versus one loaded from numba's cache, another
label dtype); those agree within the documented bounds (tests/test_kernels.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import softxent as sx

from conftest import random_logits

numba = pytest.importorskip("numba", reason="numba is not installed: thread counts are numba's")

# (rows, classes): the few-class tile kernel in several parallel blocks, the
# row kernel, wide rows, and rows long enough to run by chunks (> 64 KiB).
SHAPES = [(20000, 10), (1500, 100), (64, 4096), (6, 20000)]
SHAPE_IDS = [f"{n}x{v}" for n, v in SHAPES]
# Row ranges of each batch: a single row, slices inside and across 64-row
# tiles and blocks, and the tail.
SLICES = [(0, 1), (3, 4), (5, 70), (63, 130), (1, None), (-7, None)]


@pytest.fixture(params=["kernel", "reference"])
def path(request, monkeypatch):
    if request.param == "reference":
        monkeypatch.setenv("SOFTXENT_REFERENCE", "1")
    else:
        monkeypatch.delenv("SOFTXENT_REFERENCE", raising=False)
    return request.param


@pytest.fixture
def threads():
    """Sets numba's thread count for the test; restores it afterwards."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads on this machine: nothing to compare")
    saved = numba.get_num_threads()
    yield numba.set_num_threads
    numba.set_num_threads(saved)


def _softmax_xent_case(rng, shape, dtype, kind):
    n, v = shape
    x = random_logits(rng, shape, dtype=dtype)
    x[2, 1] = np.nan  # a NaN row stays NaN and leaves the others alone
    if kind == "index":
        labels = rng.integers(0, v, n)
        labels[::11] = -100
        kw = dict(weight=rng.uniform(0.5, 2.0, v), label_smoothing=0.1)
    else:
        labels = rng.uniform(0, 1, shape).astype(dtype)
        kw = dict(temperature=0.7)
    return x, labels, kw


def _rows(fn, x, labels, kw):
    """Per-row outputs of one call: loss, gradient, log-sum-exp."""
    return fn(x, labels, reduction="none", return_lse=True, **kw)


def _assert_same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, what
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{what}: rows differ at {np.argwhere(~same)[:5].tolist()}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["index", "prob"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_softmax_xent_rows_do_not_depend_on_threads_batches_or_history(shape, kind, dtype, path, threads):
    rng = np.random.default_rng(hash((shape, kind)) % 2**32)
    x, labels, kw = _softmax_xent_case(rng, shape, dtype, kind)
    fn = sx.softmax_cross_entropy_with_grad
    threads(2)
    whole = _rows(fn, x, labels, kw)
    threads(1)
    for got, want, what in zip(_rows(fn, x, labels, kw), whole, ["loss", "gradient", "lse"]):
        _assert_same_bits(got, want, f"{what}: 1 thread vs 2")
    threads(2)
    for lo, hi in SLICES:
        part = _rows(fn, x[lo:hi], labels[lo:hi], kw)
        for got, want, what in zip(part, whole, ["loss", "gradient", "lse"]):
            _assert_same_bits(got, want[lo:hi], f"{what}: rows {lo}:{hi} alone vs in the whole batch")
    # Other work in between (other shapes, dtypes, options, scratch buffers).
    for other in [(5, 3), (3000, 7), (2, 50000)]:
        y = random_logits(rng, other, dtype=np.float64 if dtype == np.float32 else np.float32)
        sx.softmax_cross_entropy_with_grad(y, rng.integers(0, other[1], other[0]), label_smoothing=0.3)
        sx.sigmoid_cross_entropy(y, (y > 0).astype(y.dtype))
        sx.softmax(y, temperature=2.0)
    for got, want, what in zip(_rows(fn, x, labels, kw), whole, ["loss", "gradient", "lse"]):
        _assert_same_bits(got, want, f"{what}: after other calls")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_reduced_losses_do_not_depend_on_threads(shape, reduction, path, threads):
    """The total is summed from the per-row losses in one fixed order."""
    rng = np.random.default_rng(7)
    x, labels, kw = _softmax_xent_case(rng, shape, np.float32, "index")
    x[2, 1] = 0.0
    results = []
    for n_threads in (1, 2, 1):
        threads(n_threads)
        results.append(sx.softmax_cross_entropy_with_grad(x, labels, reduction=reduction, **kw))
    for loss, grad in results[1:]:
        _assert_same_bits(loss, results[0][0], f"{reduction} loss")
        _assert_same_bits(grad, results[0][1], f"{reduction} gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(20000, 14), (300, 500)], ids=["20000x14", "300x500"])
def test_sigmoid_rows_do_not_depend_on_threads_or_batches(shape, dtype, path, threads):
    rng = np.random.default_rng(3)
    x = random_logits(rng, shape, scale=6.0, dtype=dtype)
    y = rng.uniform(0, 1, shape).round(1).astype(dtype)
    kw = dict(pos_weight=rng.uniform(0.5, 2, shape[1]), reduction="none")
    threads(2)
    whole = sx.sigmoid_cross_entropy_with_grad(x, y, **kw)
    threads(1)
    for got, want in zip(sx.sigmoid_cross_entropy_with_grad(x, y, **kw), whole):
        _assert_same_bits(got, want, "1 thread vs 2")
    threads(2)
    for lo, hi in SLICES:
        for got, want in zip(sx.sigmoid_cross_entropy_with_grad(x[lo:hi], y[lo:hi], **kw), whole):
            _assert_same_bits(got, want[lo:hi], f"rows {lo}:{hi} alone vs in the whole batch")


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_softmax_family_rows_do_not_depend_on_threads_or_batches(shape, name, path, threads):
    rng = np.random.default_rng(11)
    x = random_logits(rng, shape, dtype=np.float32)
    fn = getattr(sx, name)
    threads(2)
    whole = fn(x)
    threads(1)
    _assert_same_bits(fn(x), whole, "1 thread vs 2")
    threads(2)
    for lo, hi in SLICES:
        _assert_same_bits(fn(x[lo:hi]), whole[lo:hi], f"rows {lo}:{hi} alone vs in the whole batch")
