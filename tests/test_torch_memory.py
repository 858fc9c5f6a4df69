"""The CPU front end's cache of freed large buffers (softxent.torch._memory)."""

from __future__ import annotations

import gc

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the PyTorch front end is optional")

import softxent.torch as sxt  # noqa: E402
from softxent.torch import _memory  # noqa: E402

BIG = (512, 4096)  # 8 MiB of float32: above MIN_CACHED_BYTES
assert 4 * BIG[0] * BIG[1] >= _memory.MIN_CACHED_BYTES


@pytest.fixture(autouse=True)
def fresh_cache():
    limit = _memory.cache_limit()
    sxt.empty_cache()
    sxt.set_cache_limit(1 << 30)
    yield
    sxt.set_cache_limit(limit)
    sxt.empty_cache()


def test_a_freed_block_is_reused_for_the_same_size():
    t = _memory.empty(BIG, torch.float32)
    ptr = t.data_ptr()
    assert sxt.cached_bytes() == 0
    del t
    assert sxt.cached_bytes() == 4 * BIG[0] * BIG[1]
    again = _memory.empty(BIG, torch.float32)
    assert again.data_ptr() == ptr and again.shape == BIG and again.is_contiguous()
    assert sxt.cached_bytes() == 0


@pytest.mark.parametrize("keeper", ["tensor", "view", "numpy", "grad"])
def test_memory_still_reachable_is_never_handed_out(keeper):
    """As long as anything reaches the memory (the tensor, a view, a NumPy array, a .grad), a new
    request gets other memory."""
    t = _memory.empty(BIG, torch.float32)
    ptr = t.data_ptr()
    if keeper == "view":
        keep = t[3:, 1::2]
    elif keeper == "numpy":
        keep = t.numpy()
    elif keeper == "grad":
        leaf = torch.zeros(BIG, requires_grad=True)
        leaf.grad = t
        keep = leaf
        del leaf
    else:
        keep = t
    del t
    gc.collect()
    other = _memory.empty(BIG, torch.float32)
    assert other.data_ptr() != ptr
    assert sxt.cached_bytes() == 0
    del keep, other
    gc.collect()
    assert sxt.cached_bytes() == 2 * 4 * BIG[0] * BIG[1]


def test_reused_memory_holds_the_new_results():
    """A training loop: each step's gradient reuses the last step's block, and is that step's gradient."""
    rng = torch.Generator().manual_seed(0)
    y = torch.randint(0, BIG[1], (BIG[0],), generator=rng)
    ptrs = set()
    for step in range(3):
        z = (torch.randn(BIG, generator=rng) * (step + 1)).requires_grad_()
        sxt.cross_entropy(z, y).backward()
        ref = z.detach().clone().requires_grad_()
        torch.nn.functional.cross_entropy(ref, y).backward()
        torch.testing.assert_close(z.grad, ref.grad, rtol=1e-5, atol=1e-7)
        ptrs.add(z.grad.data_ptr())
        del z, ref
    assert len(ptrs) == 1, "every step after the first should reuse the block the previous step freed"


def test_small_buffers_and_a_zero_limit_bypass_the_cache():
    small = _memory.empty((4, 5), torch.float32)
    del small
    assert sxt.cached_bytes() == 0
    sxt.set_cache_limit(0)
    big = _memory.empty(BIG, torch.float32)
    del big
    assert sxt.cached_bytes() == 0


def test_the_limit_evicts_the_sizes_freed_longest_ago():
    nbytes = 4 * BIG[0] * BIG[1]
    sxt.set_cache_limit(2 * nbytes)
    a = _memory.empty(BIG, torch.float32)
    b = _memory.empty((BIG[0] * 2, BIG[1]), torch.float32)  # twice the size
    del a  # cached: nbytes
    del b  # cached too: 3 * nbytes > limit, so a's block (freed first) goes
    assert sxt.cached_bytes() == 2 * nbytes
    c = _memory.empty(BIG, torch.float32)  # no block of that size left: new memory
    assert sxt.cached_bytes() == 2 * nbytes
    del c  # 3 * nbytes again: now b's block (freed before c's) goes
    assert sxt.cached_bytes() == nbytes
    sxt.set_cache_limit(nbytes)  # lowering the limit trims at once
    assert sxt.cached_bytes() <= nbytes
    sxt.empty_cache()
    assert sxt.cached_bytes() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_every_dtype_of_the_front_end(dtype):
    t = _memory.empty(BIG, dtype)
    assert t.dtype == dtype and t.shape == BIG
    t.fill_(1.5)
    assert float(t[7, 9]) == 1.5


@pytest.mark.parametrize("shape", [(3, 5), (1, 1023), BIG, (BIG[0] + 1, BIG[1] - 3)])
@pytest.mark.parametrize("limit", [1 << 30, 0])
def test_buffers_start_on_a_cache_line(shape, limit):
    # NumPy's own large arrays start 16 bytes into a page; MKL wrote to those ~25% slower.
    sxt.set_cache_limit(limit)
    for _ in range(2):  # a fresh block, then (cache on) the same block reused
        t = _memory.empty(shape, torch.float32)
        assert t.data_ptr() % 64 == 0 and t.shape == shape and t.is_contiguous()
        t.fill_(2.0)
        assert float(t.sum()) == 2.0 * shape[0] * shape[1]
        del t
        gc.collect()


@pytest.mark.parametrize("bad", [-1, 1.5, "1", True, None])
def test_set_cache_limit_rejects_what_is_not_a_byte_count(bad):
    with pytest.raises(ValueError, match="nbytes must be a non-negative integer"):
        sxt.set_cache_limit(bad)


def test_environment_variable_sets_the_limit(monkeypatch):
    monkeypatch.setenv("SOFTXENT_CPU_CACHE_BYTES", "12345")
    assert _memory._limit_from_env() == 12345
    monkeypatch.setenv("SOFTXENT_CPU_CACHE_BYTES", "lots")
    with pytest.raises(ValueError, match="SOFTXENT_CPU_CACHE_BYTES must be a number of bytes"):
        _memory._limit_from_env()
    monkeypatch.delenv("SOFTXENT_CPU_CACHE_BYTES")
    assert _memory._limit_from_env() == 1 << 30
