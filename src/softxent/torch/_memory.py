"""Host memory for the CPU front end's large tensors: NumPy's allocator, and a cache of freed buffers.

Why
---
A training step writes the (N, C) gradient of its logits into a new tensor.
On Linux a fresh large allocation is fresh memory from the kernel: every
page faults on its first write and is zeroed first. At 2048 x 32768 float32
(256 MiB) that costs about as much as the fused kernel itself (measured on
a 2-core machine: 48 ms for loss + gradient into a fresh buffer, 32 ms into
a reused one), and it is paid again at every step because neither glibc nor
torch's CPU allocator keeps blocks that large.

What
----
:func:`empty` returns a CPU tensor whose memory comes from NumPy (which asks
for transparent huge pages, ``madvise(MADV_HUGEPAGE)``, on large arrays),
and for buffers of at least :data:`MIN_CACHED_BYTES` from a small cache:
when the tensor, every view of it and every array sharing its memory are
gone, its block goes back to the cache (a ``weakref.finalize`` on the one
NumPy array that torch's storage keeps alive) instead of back to the
kernel, and the next request of the same size reuses it, already mapped.

Alignment: every buffer starts on a 64-byte boundary (a cache line, and
what torch's own allocator gives). NumPy's large arrays start 16 bytes into
a page (glibc's header), and MKL's float32 GEMMs writing to such a buffer
ran about 25% slower: the linear head's (V, 256) logits product took 6.1 s
of CPU time for N=4096, d=1024, V=32768 into this module's buffer against
4.4-4.9 s into a 64-byte aligned one (2 threads, one process).

Safety: a block returns to the cache only when nothing can reach its memory
any more (the storage holds the only reference to the array that owns the
finalizer), so a reused block is never visible through an older tensor.
The cache keeps at most :func:`cache_limit` bytes of free blocks (default
1 GiB, ``SOFTXENT_CPU_CACHE_BYTES``; ``0`` turns it off); blocks in use do
not count. :func:`empty_cache` returns every free block to the system, as
``torch.cuda.empty_cache`` does on the GPU.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict

import numpy as np
import torch

__all__ = ["MIN_CACHED_BYTES", "cache_limit", "cached_bytes", "empty", "empty_cache", "set_cache_limit"]

# Below this, page faults are cheap next to the work and the cache is not worth its memory.
MIN_CACHED_BYTES = 4 << 20
_ALIGN = 64  # bytes: every buffer starts on a cache line (see the module docstring)

_NUMPY_TWIN = {
    torch.float32: np.float32, torch.float64: np.float64,
    torch.float16: np.float16, torch.bfloat16: np.uint16,  # same width; the tensor is viewed as bfloat16
}  # fmt: skip


def _limit_from_env() -> int:
    raw = os.environ.get("SOFTXENT_CPU_CACHE_BYTES", "")
    if not raw:
        return 1 << 30
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(
            f"SOFTXENT_CPU_CACHE_BYTES must be a number of bytes (0 turns the cache off), got {raw!r}"
        ) from None
    return max(0, value)


def _raw(nbytes: int) -> np.ndarray:
    """A new 1-D uint8 array with room for ``nbytes`` from a 64-byte boundary on."""
    return np.empty(nbytes + _ALIGN, dtype=np.uint8)


def _aligned(block: np.ndarray, nbytes: int) -> np.ndarray:
    """The ``nbytes`` of ``block`` (from :func:`_raw`) that start on a 64-byte boundary."""
    start = -block.ctypes.data % _ALIGN
    return block[start : start + nbytes]


class _BlockCache:
    """Free blocks (1-D uint8 arrays from :func:`_raw`) by usable size, least recently freed first out."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            blocks = self._free.get(nbytes)
            if blocks:
                block = blocks.pop()
                if not blocks:
                    del self._free[nbytes]
                self._bytes -= nbytes
                return block
        return _raw(nbytes)

    def give_back(self, block: np.ndarray) -> None:
        nbytes = block.nbytes - _ALIGN
        with self._lock:
            if nbytes > self.limit:
                return  # dropped: the memory goes back to the system
            self._free.setdefault(nbytes, []).append(block)
            self._free.move_to_end(nbytes)
            self._bytes += nbytes
            self._trim()

    def set_limit(self, limit: int) -> None:
        with self._lock:
            self.limit = limit
            self._trim()

    def _trim(self) -> None:
        """Evict the sizes freed longest ago until the free blocks fit the limit (lock held)."""
        while self._bytes > self.limit:
            size, blocks = next(iter(self._free.items()))
            blocks.pop(0)
            self._bytes -= size
            if not blocks:
                del self._free[size]

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


_cache = _BlockCache(_limit_from_env())


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A new, uninitialised, C-contiguous CPU tensor of ``shape`` and ``dtype``.

    Its memory comes from NumPy, through the cache of freed blocks when it is
    at least :data:`MIN_CACHED_BYTES` and the cache is on, and starts on a
    64-byte boundary. Like every tensor
    made from a NumPy array it cannot be resized.
    """
    np_dtype = np.dtype(_NUMPY_TWIN[dtype])
    count = 1
    for n in shape:
        count *= int(n)
    nbytes = count * np_dtype.itemsize
    if nbytes < MIN_CACHED_BYTES or _cache.limit == 0:
        array = _aligned(_raw(nbytes), nbytes).view(np_dtype).reshape(shape)
    else:
        block = _cache.take(nbytes)
        array = _aligned(block, nbytes).view(np_dtype).reshape(shape)
        # ``array`` is the object torch's storage keeps alive: when it goes, nothing reaches the block.
        weakref.finalize(array, _cache.give_back, block)
    t = torch.from_numpy(array)
    return t.view(dtype) if dtype == torch.bfloat16 else t


def empty_cache() -> None:
    """Return every cached free block to the system (blocks in use are not affected)."""
    _cache.clear()


def cached_bytes() -> int:
    """Bytes held in free blocks, ready for reuse."""
    return _cache.nbytes


def cache_limit() -> int:
    """The most bytes of free blocks the cache keeps."""
    return _cache.limit


def set_cache_limit(nbytes: int) -> None:
    """Keep at most ``nbytes`` of free blocks (0 turns the cache off and empties it)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative integer number of bytes, got {nbytes!r}")
    _cache.set_limit(int(nbytes))
