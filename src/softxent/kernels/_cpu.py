r"""Fused CPU kernels (numba): softmax cross-entropy loss and gradient in one sweep.

Contract (shared with every backend): 2-D C-contiguous float32/float64 logits
``z`` of shape (N, V), already validated by the caller. Per row, with
:math:`d = (z - \max z)/T` and :math:`s = \sum_c e^{d_c}`:

* pass 1 reads the row once from memory and takes its max;
* pass 2 computes :math:`e_c = e^{d_c}` (the one exponential per element),
  stores it in the gradient row, and sums it (blocks of 256 terms in the
  data's dtype, so that the loop runs at its vector width, the block sums
  in float64; see ``_SUM_BLOCK``), plus the label terms the loss needs,
  and prefetches the next row (see ``_AHEAD_BYTES``);
* pass 3 rewrites the stored :math:`e_c` into the gradient
  :math:`(a_c \sum t - t_c) \cdot \text{coef}` while the row is still in cache.

A long row (over 64 KiB) runs passes 1 and 2 chunk by chunk, each chunk
against its own max, and pass 3 rescales the chunks (see ``_CHUNK_BYTES``);
few classes run across rows instead (see ``_xent_index_tiles``), and
rows of 65-256 classes by groups of rows (see ``_xent_index_short``).

The gradient buffer may be the logits themselves (``inplace``): pass 2 reads
:math:`z_c` before it overwrites it, and the label's logit is read first;
pass 2 then runs as its own one-array specialisation, since LLVM sends
aliasing arrays to its scalar loop.

Numerics (the reasons beside the code): the exponential is a polynomial with
Cody-Waite range reduction, written so that LLVM vectorises it (numba's
``math.exp`` is a scalar libm call); for confident rows (:math:`s < 2`) the
normaliser is summed again in float64 as :math:`s = n_{\max} + r`, with
:math:`r` the sum of the non-maximal terms, so that :math:`\log s =
\log1p(n_{\max} - 1 + r)` and the top class's :math:`a - 1 =
\operatorname{expm1}(-\log s)` keep full precision, as in the NumPy oracle.

Layout (this module keeps the parallel drivers and re-exports the kernels,
so that ``kernels.cpu(dtype)`` returns one module with every name):

* :mod:`._jit`: the numba options (``FAST``, ``JIT``, ``JIT_SUM``,
  ``JIT_ELEMENT``), one place for the fast-math flags;
* :mod:`._vmath`: bit casts, the prefetch intrinsic, the polynomial
  exponential :func:`vexp`, order keys, :func:`_vlog1p` and
  :func:`_log1p_recip`;
* :mod:`._rows`: the row passes above, chunked long rows, and the row
  loops :func:`_xent_index_rows` and :func:`_xent_prob_rows`;
* :mod:`._tiles`: few classes across rows (:func:`_xent_index_tiles`),
  with :mod:`._tile_vec`, its passes for float32 in explicit LLVM vectors,
  and :mod:`._narrow_vec`, float32 rows of up to 24 classes eight at a
  time in registers (no tile);
* :mod:`._short_rows`: the tiles' 8x8 transposing copies, and rows of
  65-256 classes by groups (:func:`_xent_index_short`, no smoothing),
  with :mod:`._row_vec`, its passes and per-row work for float32 in
  explicit vectors;
* :mod:`._softmax_rows`: softmax, log-softmax and log-sum-exp rows;
* :mod:`._sigmoid`: the sigmoid heads' loss total and gradient, with its
  own parallel driver (called by :mod:`softxent._sigmoid_xent`);
* :mod:`._dense_head`: the softmax estimators' head on dense X (logits,
  loss and gradient, and the weight gradient over cached row chunks);
* :mod:`._checks`: the label checks :func:`class_rows`,
  :func:`class_check`, :func:`bounded_check`;
* here: the parallel drivers :func:`softmax_xent_index`,
  :func:`softmax_xent_prob`, :func:`softmax_rows` and :func:`logsumexp_rows`.

numba's on-disk cache (``cache=True``) checks only the source file of the
function it loads: after editing a module that others call into (above
all :mod:`._vmath` or :mod:`._rows`), delete the kernels' ``__pycache__``
(or touch the calling modules) so that stale compiled callers are not
reused.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

# Import order: _vmath (whose @overloads the others' jitted code calls) comes
# in through every module below, before anything is compiled. The names that
# callers and tests take from this module are re-exported ("x as x").
from ._checks import bounded_check as bounded_check
from ._checks import class_check as class_check
from ._checks import class_rows as class_rows
from ._dense_head import softmax_head_rows as softmax_head_rows
from ._jit import FAST as FAST
from ._jit import JIT as JIT
from ._jit import JIT_ELEMENT as JIT_ELEMENT
from ._jit import JIT_SUM as JIT_SUM
from ._rows import _exp_pass as _exp_pass
from ._rows import _exp_store as _exp_store
from ._rows import _row_max as _row_max
from ._rows import _xent_index_rows as _xent_index_rows
from ._rows import _xent_prob_rows as _xent_prob_rows
from ._short_rows import _MID_V as _MID_V
from ._short_rows import _fetch_add as _fetch_add
from ._short_rows import _xent_index_short as _xent_index_short
from ._softmax_rows import _logsumexp_rows as _logsumexp_rows
from ._softmax_rows import _softmax_rows as _softmax_rows
from ._tiles import _SMALL_V as _SMALL_V
from ._tiles import _xent_index_tiles as _xent_index_tiles
from ._vmath import _log1p_recip as _log1p_recip
from ._vmath import _vlog1p as _vlog1p
from ._vmath import bits_float as bits_float
from ._vmath import float_bits as float_bits
from ._vmath import from_key as from_key
from ._vmath import order_key as order_key
from ._vmath import vexp as vexp

# --------------------------------------------------------------------------- parallel drivers
#
# Each public kernel splits its rows into blocks of about _BLOCK_ELEMENTS
# logits and runs the blocks in parallel; an input of one block runs serially,
# without waking the thread pool (whose start-up costs more than a small
# input's whole computation). Rows are independent, so the result is the same
# bit for bit whatever the number of threads.

_BLOCK_ELEMENTS = 1 << 16


# Few classes (V <= 64: the tile kernel) get blocks of half the size: a
# call of 65536 x 10 is then 22 blocks instead of 11 (made even by
# softmax_xent_index), so that two threads end within a small block of each
# other (6 and 5 blocks before); each block costs its scratch allocations,
# a few microseconds.
_SMALL_BLOCK_ELEMENTS = 1 << 15
# softmax_xent_index: at most this many workers share the blocks.
_MAX_WORKERS = 64


@nb.njit(**JIT)
def _rows_per_block(n_rows, n_cls):
    if n_cls <= _SMALL_V:
        return max(1, _SMALL_BLOCK_ELEMENTS // max(n_cls, 1))
    return max(1, _BLOCK_ELEMENTS // max(n_cls, 1))


@nb.njit(**JIT)
def _sum_rows(loss, lo, hi):
    """``loss[lo:hi]`` summed in a fixed order (four running sums, then their
    sum): the same bits whatever the number of threads. The caller then needs
    no NumPy reduction of its own, whose fixed cost (a cold ufunc call, tens
    of microseconds after a pause) exceeded the kernel's on small inputs."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    i = lo
    while i + 4 <= hi:
        s0 += loss[i]
        s1 += loss[i + 1]
        s2 += loss[i + 2]
        s3 += loss[i + 3]
        i += 4
    while i < hi:
        s0 += loss[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


@nb.njit(**JIT)
def _xent_index_block(
    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi, small, short
):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` through the kernel for their row length."""
    if small:
        _xent_index_tiles(
            z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
        )
    elif short:
        _xent_index_short(z, labels, weight, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi)
    else:
        _xent_index_rows(
            z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
        )


@nb.njit(parallel=True, **JIT)
def softmax_xent_index(z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse):
    """Softmax cross-entropy with integer labels (``labels[i] < 0``: ignored row).

    Writes ``loss`` and ``lse`` (float64 per row; ``lse`` is of ``z / T``)
    and, when ``need_grad``, ``grad`` (which may be ``z``). ``weight`` and
    ``sample_weight`` are float64, of size 0 when absent; ``grad_scale``
    multiplies every gradient (1/denominator for the mean). A row whose
    classes are all masked but which counts gets loss NaN and lse -inf: the
    caller raises. Returns the sum of ``loss`` (by blocks in a fixed order,
    see :func:`_sum_rows`).
    """
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    n_blocks = (n + step - 1) // step
    if n_blocks > 1 and n_blocks % 2 == 1:
        # An even number of equal blocks: two threads (these hosts) that both
        # run from the start then get equal shares (8192 x 100 was 7 blocks
        # against 6). Rows are independent: the same bits either way.
        step = (n + n_blocks) // (n_blocks + 1)
        n_blocks = (n + step - 1) // step
    small = 0 < z.shape[1] <= _SMALL_V
    short = _SMALL_V < z.shape[1] <= _MID_V and smoothing == 0.0
    if n_blocks <= 1:
        _xent_index_block(
            z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, 0, n,
            small, short,
        )  # fmt: skip
        return _sum_rows(loss, 0, n)
    # Blocks are taken from a shared counter, not split in advance: a thread
    # that starts late (woken from sleep after the caller was busy elsewhere,
    # or held back on a busy host) finds the blocks the others already took.
    # With prange's static split the caller waited for it (8192 x 100, two
    # threads, called after a 2 ms pause: 1.10 -> 0.77 ms, minimum of 200).
    # Iterations beyond the threads' count find the counter spent.
    taken = np.zeros(1, dtype=np.int64)
    sums = np.empty(n_blocks)
    for _ in prange(min(n_blocks, _MAX_WORKERS)):
        b = _fetch_add(taken, 0, 1)
        while b < n_blocks:
            lo = b * step
            hi = min(n, lo + step)
            _xent_index_block(
                z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse,
                lo, hi, small, short,
            )  # fmt: skip
            sums[b] = _sum_rows(loss, lo, hi)
            b = _fetch_add(taken, 0, 1)
    return _sum_rows(sums, 0, n_blocks)


@nb.njit(parallel=True, **JIT)
def softmax_xent_prob(z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse):
    """Softmax cross-entropy with probability labels ``target`` (N, V);
    otherwise as :func:`softmax_xent_index` (the sum of ``loss`` returned
    likewise). The effective target is
    ``t_c = w_c ((1 - eps) target_c + eps / V)``."""
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    if step >= n:
        _xent_prob_rows(
            z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, 0, n
        )
        return _sum_rows(loss, 0, n)
    n_blocks = (n + step - 1) // step
    sums = np.empty(n_blocks)
    for b in prange(n_blocks):
        lo = b * step
        hi = min(n, lo + step)
        _xent_prob_rows(
            z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
        )
        sums[b] = _sum_rows(loss, lo, hi)
    return _sum_rows(sums, 0, n_blocks)


@nb.njit(parallel=True, **JIT)
def softmax_rows(z, out, inv_t, log):
    """``out`` = softmax (or log-softmax if ``log``) of each row of ``z / T``.
    ``out`` must not alias ``z``. Row conventions as in :mod:`softxent._softmax`."""
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    if step >= n:
        _softmax_rows(z, out, inv_t, log, 0, n)
        return
    for b in prange((n + step - 1) // step):
        _softmax_rows(z, out, inv_t, log, b * step, min(n, b * step + step))


@nb.njit(parallel=True, **JIT)
def logsumexp_rows(z, out):
    """``out[i]`` = log sum exp of row ``i`` (float64); row conventions as in
    :func:`softxent.logsumexp`."""
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    if step >= n:
        _logsumexp_rows(z, out, 0, n)
        return
    for b in prange((n + step - 1) // step):
        _logsumexp_rows(z, out, b * step, min(n, b * step + step))
