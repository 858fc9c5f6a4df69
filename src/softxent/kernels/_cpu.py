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
few classes run across rows instead (see ``_xent_index_tiles``).

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
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

# Loops that sum get reassoc (so LLVM vectorises the reduction) and contract
# (FMAs); never nnan/ninf: NaN rows must stay NaN and -inf logits are masked
# classes. Everything else, the per-row scalar code above all, is compiled
# without fast-math: reassociation would turn (ties - 1) + r into
# (ties + r) - 1 and lose exactly the tiny terms the numerics keep.
# error_model="numpy": a float division by zero gives inf/NaN instead of
# raising, which also removes the branch that stops LLVM vectorising a loop
# with a division in it.
FAST = {"reassoc", "contract", "nsz", "arcp"}
JIT_SUM = dict(nogil=True, cache=True, fastmath=FAST, error_model="numpy")
JIT = dict(nogil=True, cache=True, error_model="numpy")
JIT_ELEMENT = dict(nogil=True, cache=True, fastmath={"contract"}, error_model="numpy")


# --------------------------------------------------------------------------- exp


def _bitcast(src: types.Type, dst: types.Type):
    """An intrinsic that reinterprets the bits of a ``src`` scalar as ``dst``
    (numba has no scalar bit casts; the exponential builds 2**n this way and
    the row max compares floats as integers)."""

    @intrinsic
    def cast(typingctx, value):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return cast


_bits_to_f32 = _bitcast(types.int32, types.float32)
_bits_to_f64 = _bitcast(types.int64, types.float64)
_f32_to_bits = _bitcast(types.float32, types.int32)
_f64_to_bits = _bitcast(types.float64, types.int64)


@intrinsic
def _prefetch(typingctx, arr, index):
    """Hint the CPU to load the cache line of ``arr[index]`` (``llvm.prefetch``:
    read, keep in all cache levels). Never faults, whatever the index."""
    if not isinstance(arr, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [byte_ptr, i32(0), i32(3), i32(1)])  # read, high locality, data cache
        return context.get_dummy_value()

    return types.none(arr, index), codegen


def vexp(x):  # pragma: no cover - replaced by the overload below inside jitted code
    """exp(x) for x <= 0 (NaN propagates), vectorisable; see the overload."""
    raise NotImplementedError


# Exponentials below these underflow to subnormals; they are returned as 0
# (absolute error below the smallest normal number, harmless in a softmax sum).
_LO32 = np.float32(-87.33654)
_LO64 = -708.3964185322641


# Range reduction: x = n ln2 + r, |r| <= ln2/2. float64 splits ln2 into a
# part exact in few bits (n * hi is exact) and a small correction
# (Cody-Waite); float32 takes r = x - n ln2_f32 in one FMA (ln2_f32, the
# float32 nearest ln2, is 1.9e-9 off, which costs |n| * 1.9e-9 relative:
# below 1 ulp for x > -30 and 3.4 ulps at the bottom of the range, where the
# terms are below 1e-37 of the row max and count for nothing in its sum).
# One FMA fewer of the ten per vector that bound the loop (2048x32768
# float32, pass 2 alone: 12% faster). These two functions are compiled on
# their own, without reassoc (the loops that call them have it, and
# reassociation would fold the two-step reduction into one and lose the
# split, or fold (t + M) - M to t below); LLVM inlines them into those loops
# and vectorises them there.
#
# n = round(x / ln2) by adding a "magic" constant M = 1.5 * 2**p + bias
# (p the mantissa width): the sum t is rounded to an integer, t - M is n
# exactly, and t's low mantissa bits hold n + bias, so that t's bits
# shifted left by p are the bits of 2**n. This replaces a floor, a float ->
# int conversion and an integer add (float64 -> int64 has no AVX2
# instruction: it ran as four scalar conversions per vector).
#
# Arguments below _LO underflow to subnormals and are returned as exactly 0
# by the final select (harmless in a softmax sum, and -inf gives 0 as it
# must); that select also covers -inf and the garbage bits t has there, so
# the argument is never clamped. NaN: every comparison is False and NaN
# propagates through the polynomial.
_L2E32, _LN2_32 = np.float32(1.4426950408889634), np.float32(math.log(2.0))
_M32 = np.float32(1.5 * 2**23 + 127)
# exp(r) = 1 + r + r^2 q(r) with q of degree 3, fitted on [-ln2/2, ln2/2] to
# the relative error of exp (Lawson's weighted least squares on Chebyshev
# nodes: 1.05e-7, 0.9 ulp), then rounded to float32; with the one-FMA
# reduction, 1.8 ulps at most for x > -20 and 3.4 over [-87.3, 0] (float32
# evaluation, measured on 2e6 points). The degree-4 q it replaces had 0.6
# ulp with a two-step reduction, and cost two FMAs more per vector (pass 2:
# 0.42 -> 0.33 ns an element, one core, in cache).
_C32 = tuple(
    np.float32(c) for c in (0.008312525227665901, 0.041890114545822144, 0.16667114198207855, 0.499992311000824)
)  # fmt: skip
_L2E64, _HI64, _LO64C = 1.4426950408889634, 6.93147180369123816490e-01, 1.90821492927058770002e-10
_M64 = 1.5 * 2.0**52 + 1023.0
# Taylor to degree 13: truncation 0.347^14/14! < 4e-18 relative; the
# coefficients of r^2 ... r^13, lowest first, for _estrin12.
_E64 = tuple(1.0 / math.factorial(k) for k in range(2, 14))


@nb.njit(**JIT_ELEMENT)
def _estrin12(x, c):
    """sum_k c[k] x^k for 12 coefficients, by Estrin's scheme: 4 dependent
    multiply-adds deep instead of Horner's 11. Long float64 polynomials in
    a loop otherwise leave the loop waiting on their latency (the sigmoid
    loop, about 23 instructions an element, ran at 1.3 per cycle)."""
    x2 = x * x
    x4 = x2 * x2
    x8 = x4 * x4
    q0 = (c[0] + c[1] * x) + (c[2] + c[3] * x) * x2
    q1 = (c[4] + c[5] * x) + (c[6] + c[7] * x) * x2
    q2 = (c[8] + c[9] * x) + (c[10] + c[11] * x) * x2
    return (q0 + q1 * x4) + q2 * x8


@nb.njit(**JIT_ELEMENT)
def _vexp32(x):
    t = x * _L2E32 + _M32
    n = t - _M32
    r = x - n * _LN2_32  # one FMA (contract)
    # exp(r) - 1 = r + r^2 q(r), q by Estrin's scheme (two FMAs side by side,
    # then one): 3 dependent steps where Horner had 5; then 2**n (1 + w) as
    # one FMA, scale + w * scale, instead of an add and a multiply. The loop
    # is bound by its FMA pipes and by this chain's latency: pass 2 alone,
    # in cache, about 6% faster (min of 300 interleaved rounds); 1.82 ulps
    # for x > -20 and 3.37 over the range, against 1.79 and 3.33.
    c0, c1, c2, c3 = _C32
    r2 = r * r
    w = r + r2 * ((c2 * r + c3) + (c0 * r + c1) * r2)
    scale = _bits_to_f32(np.int32(_f32_to_bits(t) << np.int32(23)))
    return np.float32(0.0) if x < _LO32 else w * scale + scale


@nb.njit(**JIT_ELEMENT)
def _vexp64(x):
    t = x * _L2E64 + _M64
    n = t - _M64
    r = (x - n * _HI64) - n * _LO64C
    w = _estrin12(r, _E64) * r * r + r  # exp(r) - 1
    scale = _bits_to_f64(_f64_to_bits(t) << np.int64(52))
    return 0.0 if x < _LO64 else w * scale + scale  # one FMA for 2**n (1 + w)


@overload(vexp, inline="always")
def _vexp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: _vexp32(x)
    if isinstance(x, types.Float) and x.bitwidth == 64:
        return lambda x: _vexp64(x)
    return None


# --------------------------------------------------------------------------- row passes


def order_key(v):  # pragma: no cover - replaced by the overload inside jitted code
    """An integer that orders like the float ``v`` (an involution on the bits)."""
    raise NotImplementedError


def from_key(k, like):  # pragma: no cover
    """The float (of ``like``'s type) whose :func:`order_key` is ``k``."""
    raise NotImplementedError


# The row max runs on integer keys: LLVM vectorises an integer max reduction,
# but not numba's float compare-and-select. Flipping the magnitude bits of
# negative floats makes signed-integer order equal float order (-inf < ... <
# +inf < +NaN); a negative NaN sorts below -inf and is caught in pass 2.
@overload(order_key, inline="always")
def _order_key_overload(v):
    if isinstance(v, types.Float) and v.bitwidth == 32:

        def key32(v):
            b = _f32_to_bits(v)
            # numba widens int32 arithmetic to int64: cast back, or the max
            # would run on 64-bit lanes.
            return np.int32(b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF)))

        return key32
    if isinstance(v, types.Float) and v.bitwidth == 64:

        def key64(v):
            b = _f64_to_bits(v)
            return b ^ ((b >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))

        return key64
    return None


@overload(from_key, inline="always")
def _from_key_overload(k, like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda k, like: _bits_to_f32(np.int32(k ^ ((k >> 31) & 0x7FFFFFFF)))
    if isinstance(like, types.Float) and like.bitwidth == 64:
        return lambda k, like: _bits_to_f64(np.int64(k ^ ((k >> 63) & 0x7FFFFFFFFFFFFFFF)))
    return None


def float_bits(v):  # pragma: no cover - replaced by the overload inside jitted code
    """The bits of the float ``v`` as a signed integer of its width."""
    raise NotImplementedError


def bits_float(b, like):  # pragma: no cover
    """The float (of ``like``'s type) whose bits are ``b``."""
    raise NotImplementedError


@overload(float_bits, inline="always")
def _float_bits_overload(v):
    if isinstance(v, types.Float):
        return (lambda v: _f32_to_bits(v)) if v.bitwidth == 32 else (lambda v: _f64_to_bits(v))
    return None


@overload(bits_float, inline="always")
def _bits_float_overload(b, like):
    if isinstance(like, types.Float):
        return (lambda b, like: _bits_to_f32(b)) if like.bitwidth == 32 else (lambda b, like: _bits_to_f64(b))
    return None


@nb.njit(**JIT)
def _row_max(x):
    """Pass 1: the row max as float64 (NaN if the row holds a positive NaN).

    On the raw bits as signed integers, non-negative floats order as their
    bits and negative ones in reverse (+NaN above +inf, -0 at the bottom). So
    the max is the largest bits if any is >= 0, else the smallest: two
    integer reductions (vpmaxsd, vpminsd) instead of :func:`order_key`'s
    three operations and a max (about 0.055 -> 0.047 ns an element, in L2). Starting both
    at -inf's bits, a negative NaN (above -inf's bits) is never the min: it
    is caught in pass 2, like any NaN.
    """
    lowest = x.dtype.type(-np.inf)
    hi = float_bits(lowest)
    lo = hi
    for c in range(x.shape[0]):
        b = float_bits(x[c])
        hi = b if b > hi else hi
        lo = b if b < lo else lo
    return np.float64(bits_float(hi if hi >= 0 else lo, lowest))


@nb.njit(**JIT)
def _has_nan(x):
    for c in range(x.shape[0]):
        if x[c] != x[c]:
            return True
    return False


# Pass 2 sums its exponentials in blocks of _SUM_BLOCK terms in the data's
# dtype, then the block sums in float64. A float64 accumulator in the loop
# would make LLVM vectorise the whole loop at the width of float64 (4 lanes
# with AVX2), halving the float32 exponential's throughput. The block's terms
# are positive and LLVM spreads them over its vector accumulators (8 lanes x
# 4 with AVX2), so a float32 block sum is good to about 13 ulps (8 terms an
# accumulator, then a 32-way tree); even a scalar loop would stay within 256
# ulps (1.5e-5, a bound random rounding never comes near). The confident rows
# that need more (s < 2) are summed again exactly by _split_sum.
_SUM_BLOCK = 256


# While pass 2 computes on a row that sits in cache, it asks for the next
# row (``ahead``), a block's worth of cache lines per block: pass 1 of that
# row then reads from cache instead of waiting on memory, and the memory
# traffic overlaps the computation instead of following it (2048x32768
# float32, 2 threads: about 5% off the median time). 64-byte lines.
_LINE_BYTES = 64


# The next row is prefetched whole when two rows fit in a core's L2 with
# room to spare (512 KiB on the machines measured); a longer row would
# evict the one being worked on.
_AHEAD_BYTES = 256 << 10


@nb.njit(**JIT)
def _ahead_elements(z):
    """How much of the next row pass 2 prefetches: all of it, or nothing."""
    return z.shape[1] if z.shape[1] * z.itemsize <= _AHEAD_BYTES else 0


@nb.njit(**JIT_SUM)
def _exp_store(x, e, m, inv_t, ahead):
    """Pass 2: ``e = exp((x - m) / T)``, or over ``x`` itself when ``e`` is
    None; return the sum, block sums accumulated in float64 (NaN if any term
    is NaN). Prefetches ``ahead`` (the next row) along the way. Callers go
    through :func:`_exp_pass`."""
    mm = x.dtype.type(m)
    it = x.dtype.type(inv_t)
    n = x.shape[0]
    n_ahead = ahead.shape[0]
    line = _LINE_BYTES // ahead.itemsize
    scaled = inv_t != 1.0  # T = 1 skips a multiply (LLVM unswitches the loop)
    total = 0.0
    # Each block runs on slices: a loop over range(lo, hi) of the row itself
    # was left scalar by LLVM when written in place.
    for lo in range(0, n, _SUM_BLOCK):
        for p in range(lo, min(n_ahead, lo + _SUM_BLOCK), line):
            _prefetch(ahead, p)
        xb = x[lo : min(n, lo + _SUM_BLOCK)]
        acc = x.dtype.type(0.0)
        if e is None:  # resolved when numba compiles: one loop per specialisation
            for c in range(xb.shape[0]):
                d = xb[c] - mm
                v = vexp(d * it if scaled else d)
                xb[c] = v
                acc += v
        else:
            eb = e[lo : lo + xb.shape[0]]
            for c in range(xb.shape[0]):
                d = xb[c] - mm
                v = vexp(d * it if scaled else d)
                eb[c] = v
                acc += v
        total += np.float64(acc)
    return total


@nb.njit(**JIT)
def _exp_pass(x, e, m, inv_t, ahead):
    """Pass 2 into ``e``, which may be ``x`` itself (``inplace``), prefetching
    ``ahead``. In place it runs on one array: with two that alias, LLVM's
    vectorised loop is guarded by a run-time overlap check, which fails and
    sends the row to its scalar loop (measured 3-5x slower)."""
    if e.ctypes.data == x.ctypes.data:
        return _exp_store(x, None, m, inv_t, ahead)
    return _exp_store(x, e, m, inv_t, ahead)


@nb.njit(**JIT_SUM)
def _exp_sum64(x, m):
    """The float64 sum of ``exp(x - m)``, each term in float64 even for
    float32 ``x``: a log-sum-exp near 0 cancels ``m`` against ``log s``, and
    float32 terms would leave it tens of ulps off."""
    total = 0.0
    for c in range(x.shape[0]):
        total += vexp(np.float64(x[c]) - m)
    return total


@nb.njit(**JIT_SUM)
def _split_sum(x, m, inv_t, stored):
    """``(ties, r)``: the number of terms equal to 1 (the maxima) and the
    float64 sum of the others, from the stored exponentials (``stored``) or
    recomputed in float64 from the logits ``x`` (as :func:`_exp_sum64`).
    Used for confident rows only (s < 2), where ``log s = log1p(ties - 1 +
    r)`` must not lose ``r`` to rounding."""
    ties = 0.0
    r = 0.0
    for c in range(x.shape[0]):
        v = np.float64(x[c]) if stored else vexp((np.float64(x[c]) - m) * inv_t)
        top = np.float64(v == 1.0)
        ties += top
        r += np.float64(v) * (1.0 - top)
    return ties, r


@nb.njit(**JIT)
def _normaliser(x, m, inv_t, s, stored):
    """``(log s, s)`` for a row whose pass-2 sum is ``s``.

    When ``s < 2`` the row is confident (its top class has a > 1/2) and
    ``log s`` is taken as ``log1p(ties - 1 + r)`` from an exact split, so that
    ``a_max - 1 = expm1(-log s)`` keeps all its digits (e.g. -4e-18 at logits
    [40, 0], where ``1/s - 1`` would give 0).
    """
    if s < 2.0:
        ties, r = _split_sum(x, m, inv_t, stored)
        return math.log1p((ties - 1.0) + r), ties + r
    return math.log(s), s


@nb.njit(**JIT_SUM)
def _weighted_shift_sum(x, m, inv_t, weight):
    """``sum_c w_c d_c`` with ``d = (x - m) / T`` (``weight`` of size 0: all
    ones); classes of weight 0 are skipped, so a masked one adds no 0 * -inf."""
    total = 0.0
    if weight.shape[0] == 0:
        for c in range(x.shape[0]):
            total += (np.float64(x[c]) - m) * inv_t
    else:
        for c in range(x.shape[0]):
            wc = weight[c]
            total += wc * ((np.float64(x[c]) - m) * inv_t) if wc > 0.0 else 0.0
    return total


@nb.njit(**JIT)
def _fill(g, value):
    for c in range(g.shape[0]):
        g[c] = value


# Row states.
_NORMAL, _MASKED, _UNDEFINED = 0, 1, 2


@nb.njit(**JIT)
def _row_state(x, m):
    """After pass 1: NaN or +inf -> undefined; all -inf (or V = 0) -> masked."""
    if m != m or m == np.inf:
        return _UNDEFINED
    if m == -np.inf:
        return _UNDEFINED if _has_nan(x) else _MASKED
    return _NORMAL


# --------------------------------------------------------------------------- cross-entropy


@nb.njit(**JIT)
def _scale_row(g, f):
    ff = g.dtype.type(f)
    for c in range(g.shape[0]):
        g[c] = g[c] * ff


@nb.njit(**JIT)
def _grad_row(g, top, t_sum, a_coef, coef, weight, k1):
    """Pass 3: the stored e_c becomes coef * (a_c sum(t) - t_c), eq. (15), with
    t_c = k1 * w_c (the label's own share is added by the caller) and
    a_c = e_c / s = e_c * a_coef / t_sum. The top class (e_c == 1) uses
    t_sum (a - 1) + (t_sum - t_c), whose first term ``top`` = t_sum *
    expm1(-log s) has no cancellation.

    Without smoothing (k1 = 0) every t_c here is 0 and the top class's value
    is t_sum (a - 1) + t_sum = t_sum a, as for any other class (the caller
    rewrites the label's entry, the only one that cancels): the pass is a
    plain scale, one multiply an element instead of a compare, a multiply-add
    and a select (pass 3 alone about 25% faster)."""
    if k1 == 0.0:
        _scale_row(g, a_coef * coef)
        return
    if weight.shape[0] == 0:
        # Uniform t_c: constants per row, the loop runs in the data's dtype.
        dt = g.dtype.type
        one = dt(1.0)
        top_val = dt((top + (t_sum - k1)) * coef)
        ka = dt(a_coef * coef)
        kt = dt(k1 * coef)
        for c in range(g.shape[0]):
            e = g[c]
            g[c] = top_val if e == one else e * ka - kt
    else:
        for c in range(g.shape[0]):
            e = np.float64(g[c])
            t_c = k1 * weight[c]
            val = (top + (t_sum - t_c)) if e == 1.0 else (a_coef * e - t_c)
            g[c] = val * coef


# Rows longer than _CHUNK_BYTES run passes 1 and 2 chunk by chunk: each
# chunk gets its own max m_b and exponentials e^{(x - m_b)/T} while the next
# chunk is prefetched; the row's sum is sum_b s_b e^{(m_b - M)/T} with M the
# row max, and pass 3 scales each chunk by its factor (only chunks with m_b =
# M hold the top class). Still one exponential per element, and pass 1 of a
# chunk reads from cache instead of waiting on memory. Whole rows with the
# next one prefetched (_AHEAD_BYTES) did worse once a row outgrew 64 KiB:
# 512x131072 float32 (512 KiB rows, too long to prefetch at all) in place,
# 2 threads, 32 -> 27 ms; 2048x32768 (128 KiB rows) about 29 -> 27 ms
# (medians of four alternating benchmark runs each). Used without label
# smoothing only, whose sum_c w_c d_c needs M before x is overwritten.
_CHUNK_BYTES = 64 << 10


@nb.njit(**JIT)
def _chunk_elements(z, k1):
    """Elements per chunk of a long row; 0 when rows go whole."""
    if k1 > 0.0 or z.shape[1] * z.itemsize <= _CHUNK_BYTES:
        return 0
    return _CHUNK_BYTES // z.itemsize


@nb.njit(**JIT)
def _chunked_exp(x, e, inv_t, chunk, mb, nxt):
    """Passes 1 and 2 of a long row by chunks (see _CHUNK_BYTES): ``mb[b]``
    = the chunk's max, ``e`` = its exponentials relative to it. Returns
    ``(M, s)``, the row max and the float64 sum relative to it: ``(-inf,
    0)`` for a row of -inf only, NaN when a chunk holds NaN or +inf."""
    n = x.shape[0]
    big = -np.inf
    s = 0.0
    undefined = False
    for b in range(mb.shape[0]):
        lo = b * chunk
        hi = min(n, lo + chunk)
        xb = x[lo:hi]
        m_b = _row_max(xb)
        mb[b] = m_b
        state = _row_state(xb, m_b)
        if state == _UNDEFINED:
            undefined = True
            continue
        if state == _MASKED:  # every class of the chunk masked: e = 0 there
            _fill(e[lo:hi], 0.0)
            continue
        ahead = x[hi : min(n, hi + chunk)] if hi < n else nxt
        s_b = _exp_pass(xb, e[lo:hi], m_b, inv_t, ahead)
        # Rescale the running sum to the new max as it grows (online softmax).
        if m_b > big:
            s = s * math.exp((big - m_b) * inv_t) + s_b if big > -np.inf else s_b
            big = m_b
        else:
            s += s_b * math.exp((m_b - big) * inv_t)
    if undefined:
        return np.nan, np.nan
    return big, s


@nb.njit(**JIT)
def _chunked_normaliser(e, chunk, mb, big, inv_t, s):
    """:func:`_normaliser` of a chunked row: ties only in the chunks whose
    max is the row's; the other chunks' exponentials are scaled to M."""
    if s >= 2.0:
        return math.log(s), s
    n = e.shape[0]
    ties = 0.0
    r = 0.0
    for b in range(mb.shape[0]):
        if mb[b] == -np.inf:
            continue
        lo = b * chunk
        t_b, r_b = _split_sum(e[lo : min(n, lo + chunk)], 0.0, 1.0, True)
        if mb[b] == big:
            ties += t_b
            r += r_b
        else:  # its e = 1 terms are its own max, below M: not ties
            r += (t_b + r_b) * math.exp((mb[b] - big) * inv_t)
    return math.log1p((ties - 1.0) + r), ties + r


@nb.njit(**JIT)
def _chunked_grad(g, chunk, mb, big, inv_t, a_coef, coef):
    """Pass 3 of a chunked row (no smoothing, so t_c = 0 but for the label,
    which the caller rewrites): ``e * a e^{(m_b - M)/T} * coef``, the factor
    1 in the chunks whose max is the row's (see :func:`_grad_row`)."""
    n = g.shape[0]
    for b in range(mb.shape[0]):
        if mb[b] > -np.inf:  # an all-masked chunk already holds its zeros
            f = 1.0 if mb[b] == big else math.exp((mb[b] - big) * inv_t)
            _scale_row(g[b * chunk : min(n, b * chunk + chunk)], a_coef * f * coef)


@nb.njit(**JIT)
def _xent_index_rows(
    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` (integer labels)."""
    n_cls = z.shape[1]
    ahead_n = _ahead_elements(z)
    n_rows = z.shape[0]  # the next row may be the next block's: prefetch it all the same
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    k1 = smoothing / n_cls if n_cls > 0 else 0.0
    scratch = np.empty(0 if need_grad else n_cls, dtype=z.dtype)
    chunk = _chunk_elements(z, k1)
    mb = np.empty((n_cls + chunk - 1) // chunk if chunk > 0 else 0)
    w_sum = 0.0
    if has_w:
        for c in range(n_cls):
            w_sum += weight[c]
    else:
        w_sum = float(n_cls)
    for i in range(lo, hi):
        x = z[i]
        g = grad[i]
        dest = g if need_grad else scratch
        y = labels[i]
        sw = sample_weight[i] if has_sw else 1.0
        kept = y >= 0
        w_y = (weight[y] if has_w else 1.0) if kept else 0.0
        t_sum = ((1.0 - smoothing) * w_y + k1 * w_sum) if kept else 0.0
        counts = sw * t_sum > 0.0
        x_y = np.float64(x[y]) if kept else 0.0  # read before an in-place pass 2
        if chunk > 0:  # passes 1 and 2 by chunks
            m, s = _chunked_exp(x, dest, inv_t, chunk, mb, z[min(i + 1, n_rows - 1), :chunk])
            state = _UNDEFINED if m != m else (_MASKED if m == -np.inf else _NORMAL)
        else:
            m = _row_max(x)
            state = _row_state(x, m)
        if state == _MASKED:
            lse[i] = -np.inf
            loss[i] = np.nan if counts else 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        # sum_c w_c d_c for the smoothing term, before pass 2 may overwrite x.
        wd = _weighted_shift_sum(x, m, inv_t, weight) if (k1 > 0.0 and counts and state == _NORMAL) else 0.0
        # Without a gradient the exponentials go to a scratch row: the same
        # summation as with one, so the loss is identical bit for bit.
        if chunk == 0:
            s = _exp_pass(x, dest, m, inv_t, z[min(i + 1, n_rows - 1), :ahead_n])
        if s != s:
            state = _UNDEFINED
        log_s = np.nan
        if state == _NORMAL:
            if chunk > 0:
                log_s, s = _chunked_normaliser(dest, chunk, mb, m, inv_t, s)
            else:
                log_s, s = _normaliser(dest, m, inv_t, s, True)
        lse[i] = m * inv_t + log_s
        if not counts:  # ignored or weighted 0: exactly 0, whatever the logits
            loss[i] = 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        if state == _UNDEFINED:  # NaN in, NaN out for the row
            loss[i] = np.nan
            if need_grad:
                _fill(g, np.nan)
            continue
        d_y = (x_y - m) * inv_t
        # eq. (7) with t = (1-eps) w_y e_y + (eps/V) w:  sum_c t_c (log s - d_c);
        # a label of weight 0 adds nothing, even on a masked class (0 * -inf).
        label_term = (1.0 - smoothing) * w_y * d_y if w_y > 0.0 else 0.0
        loss[i] = sw * (t_sum * log_s - label_term - k1 * wd)
        if not need_grad:
            continue
        coef = sw * inv_t * grad_scale
        top = t_sum * math.expm1(-log_s)
        a_coef = t_sum / s
        if chunk > 0:
            _chunked_grad(g, chunk, mb, m, inv_t, a_coef, coef)
        else:
            _grad_row(g, top, t_sum, a_coef, coef, weight, k1)
        # The label's entry also carries (1 - eps) w_y of the target: eq. (16).
        e_y = np.float64(vexp(x.dtype.type(d_y)))
        t_y = k1 * w_y + (1.0 - smoothing) * w_y
        rest = k1 * (w_sum - w_y)  # t_sum - t_y, exactly 0 without smoothing
        val = (top + rest) if e_y == 1.0 else (a_coef * e_y - t_y)
        g[y] = val * coef


@nb.njit(**JIT_SUM)
def _target_sums(x, yrow, m, inv_t, weight, keep, k1, normal):
    """(sum_c t_c, sum_c t_c d_c) with t_c = w_c (keep * y_c + k1); terms with
    t_c = 0 are skipped (0 * -inf = 0)."""
    has_w = weight.shape[0] > 0
    t_sum = 0.0
    td = 0.0
    for c in range(x.shape[0]):
        t_c = (keep * np.float64(yrow[c]) + k1) * (weight[c] if has_w else 1.0)
        t_sum += t_c
        if normal:
            td += t_c * ((np.float64(x[c]) - m) * inv_t) if t_c > 0.0 else 0.0
    return t_sum, td


@nb.njit(**JIT)
def _xent_prob_rows(z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi):
    """Rows ``lo:hi`` of :func:`softmax_xent_prob`: probability labels ``target`` (N, V),
    otherwise as :func:`_xent_index_rows`.

    The effective target is ``t_c = w_c ((1 - eps) target_c + eps / V)``.
    """
    n_cls = z.shape[1]
    ahead_n = _ahead_elements(z)
    n_rows = z.shape[0]  # the next row may be the next block's: prefetch it all the same
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    k1 = smoothing / n_cls if n_cls > 0 else 0.0
    keep = 1.0 - smoothing
    scratch = np.empty(0 if need_grad else n_cls, dtype=z.dtype)
    for i in range(lo, hi):
        x = z[i]
        g = grad[i]
        yrow = target[i]
        sw = sample_weight[i] if has_sw else 1.0
        m = _row_max(x)
        state = _row_state(x, m)
        t_sum, td = _target_sums(x, yrow, m, inv_t, weight, keep, k1, state == _NORMAL)
        counts = sw * t_sum > 0.0
        if state == _MASKED:
            lse[i] = -np.inf
            loss[i] = np.nan if counts else 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        # Without a gradient the exponentials go to a scratch row: the same
        # summation as with one, so the loss is identical bit for bit.
        s = _exp_pass(x, g if need_grad else scratch, m, inv_t, z[min(i + 1, n_rows - 1), :ahead_n])
        if s != s:
            state = _UNDEFINED
        log_s = np.nan
        if state == _NORMAL:
            log_s, s = _normaliser(g if need_grad else scratch, m, inv_t, s, True)
        lse[i] = m * inv_t + log_s
        if not counts:
            loss[i] = 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        if state == _UNDEFINED:
            loss[i] = np.nan
            if need_grad:
                _fill(g, np.nan)
            continue
        loss[i] = sw * (t_sum * log_s - td)
        if not need_grad:
            continue
        coef = sw * inv_t * grad_scale
        top = t_sum * math.expm1(-log_s)
        a_coef = t_sum / s
        for c in range(n_cls):
            e = np.float64(g[c])
            t_c = (keep * np.float64(yrow[c]) + k1) * (weight[c] if has_w else 1.0)
            val = (top + (t_sum - t_c)) if e == 1.0 else (a_coef * e - t_c)
            g[c] = val * coef


# --------------------------------------------------------------------------- softmax family


@nb.njit(**JIT)
def _softmax_rows(z, out, inv_t, log, lo, hi):
    """``out`` = softmax (or log-softmax if ``log``) of each row of ``z / T``.
    ``out`` must not alias ``z``. Row conventions as in :mod:`softxent._softmax`."""
    n_cls = z.shape[1]
    ahead_n = _ahead_elements(z)
    n_rows = z.shape[0]  # the next row may be the next block's: prefetch it all the same
    for i in range(lo, hi):
        x = z[i]
        o = out[i]
        m = _row_max(x)
        state = _row_state(x, m)
        if state == _MASKED:
            _fill(o, -np.inf if log else 0.0)
            continue
        s = _exp_pass(x, o, m, inv_t, z[min(i + 1, n_rows - 1), :ahead_n])
        if state == _UNDEFINED or s != s:
            _fill(o, np.nan)
            continue
        log_s, s = _normaliser(o, m, inv_t, s, True)
        if log:
            mm = x.dtype.type(m)
            it = x.dtype.type(inv_t)
            for c in range(n_cls):
                o[c] = np.float64((x[c] - mm) * it) - log_s
        else:
            inv_s = 1.0 / s
            for c in range(n_cls):
                o[c] = np.float64(o[c]) * inv_s


@nb.njit(**JIT)
def _logsumexp_rows(z, out, lo, hi):
    """``out[i]`` = log sum exp of row ``i`` (float64); row conventions as in
    :func:`softxent.logsumexp`."""
    for i in range(lo, hi):
        x = z[i]
        m = _row_max(x)
        state = _row_state(x, m)
        if state == _MASKED:
            out[i] = -np.inf
            continue
        if m == np.inf and not _has_nan(x):
            out[i] = np.inf
            continue
        s = _exp_sum64(x, m)
        if state == _UNDEFINED or s != s:
            out[i] = np.nan
        else:
            out[i] = m + _normaliser(x, m, 1.0, s, False)[0]


# --------------------------------------------------------------------------- few classes
#
# With few classes (V <= _SMALL_V) a row is shorter than a vector register, so
# the row loops above run mostly scalar remainders and per-row libm calls. The
# tile kernel transposes tiles of _TILE rows into a (V, _TILE) buffer and runs
# every step across rows instead: the exponentials, and the per-row log
# through _vlog1p. Rows that need care (NaN, +-inf, every class masked) are
# left to the row kernel, which sees them untouched.

_SMALL_V = 64
_TILE = 64
_SQRT2 = math.sqrt(2.0)
_LN2 = math.log(2.0)
# 2 / (2k + 1), k = 0..11: log f = 2 atanh(w) = sum_k 2 w^(2k+1) / (2k + 1),
# |w| <= 0.1716; the first omitted term is w^24 / 25 < 2e-20 relative.
_ATANH = tuple(2.0 / (2 * k + 1) for k in range(12))


@nb.njit(**JIT_ELEMENT)
def _atanh_series(w):
    """2 atanh(w) = log((1 + w) / (1 - w)) for |w| <= 0.1716."""
    return w * _estrin12(w * w, _ATANH)


@nb.njit(**JIT_ELEMENT)
def _vlog1p(u):
    """log(1 + u) for u >= 0, vectorisable, to about 1 ulp.

    1 + u = 2^k f with f in [sqrt(1/2), sqrt(2)); log f = 2 atanh(w), w =
    (f - 1)/(f + 1). When k = 0, w is taken as u / (2 + u), so a tiny u
    (a confident row) keeps all its digits: log1p(4e-18) = 4e-18. The
    numerator and denominator are selected before the one division (a
    select of two quotients would compute both: divisions are the slowest
    vector instruction here).
    """
    s = 1.0 + u
    b = _f64_to_bits(s)
    k = (b >> np.int64(52)) - np.int64(1023)
    f = _bits_to_f64((b & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000))
    big = f > _SQRT2
    f = f * 0.5 if big else f
    k = k + np.int64(1) if big else k
    num = u if k == 0 else f - 1.0
    den = 2.0 + u if k == 0 else f + 1.0
    return np.float64(k) * _LN2 + _atanh_series(num / den)


@nb.njit(**JIT_ELEMENT)
def _log1p_recip(a):
    """``(log(1 + a), 1 / (1 + a))`` for ``a`` in [0, 1] (0 or normal), with one division.

    1 + a = 2^k f with k = 1 exactly when 1 + a > sqrt(2); then f - 1 =
    (a - 1)/2 and w = (f - 1)/(f + 1) = (a - 1)/(a + 3), otherwise w = a /
    (2 + a) (a tiny ``a`` keeps its digits). Both quotients come from one
    reciprocal, q = 1 / (den (1 + a)): w = num (1 + a) q, 1 / (1 + a) =
    den q, each within about 2 ulps.
    """
    big = a > _SQRT2 - 1.0
    num = a - 1.0 if big else a
    den = a + 3.0 if big else a + 2.0
    opa = 1.0 + a
    q = 1.0 / (den * opa)
    log1p = (_LN2 if big else 0.0) + _atanh_series(num * opa * q)
    return log1p, den * q


def _key_array(n, like):  # pragma: no cover - replaced by the overload inside jitted code
    """An empty array of ``n`` :func:`order_key` integers for floats like ``like``."""
    raise NotImplementedError


@overload(_key_array, inline="always")
def _key_array_overload(n, like):
    # int32 keys for float32: the tile max then runs 8 lanes wide (AVX2), as
    # the data does, instead of 4 with int64 keys.
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda n, like: np.empty(n, dtype=np.int32)
    if isinstance(like, types.Float) and like.bitwidth == 64:
        return lambda n, like: np.empty(n, dtype=np.int64)
    return None


@nb.njit(**JIT)
def _xent_index_tiles(
    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` for few classes, across rows."""
    n_cls = z.shape[1]
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    k1 = smoothing / n_cls
    keep = 1.0 - smoothing
    w_sum = 0.0
    for c in range(n_cls):
        w_sum += weight[c] if has_w else 1.0
    dt = z.dtype.type
    one = dt(1.0)
    zero = dt(0.0)
    it = dt(inv_t)
    buf = np.empty((n_cls, _TILE), dtype=z.dtype)
    mk = _key_array(_TILE, zero)
    # Labels as integers of the data's width (int32 for float32), compared
    # with class numbers of the same type: a select on "y == c" then runs in
    # the lanes of the data. int64 labels against float32 data halved the
    # vector width of every loop they entered.
    yk = _key_array(_TILE, zero)
    cls = _key_array(n_cls, zero)
    for c in range(n_cls):
        cls[c] = c
    m = np.empty(_TILE, dtype=z.dtype)
    ties = np.empty(_TILE, dtype=z.dtype)  # counts <= 64: exact in any float
    xy = np.empty(_TILE, dtype=z.dtype)  # the label's logit
    rs = np.empty(_TILE)
    wd = np.empty(_TILE)
    special = np.empty(_TILE, dtype=np.bool_)
    coef = np.empty(_TILE)
    tsum = np.empty(_TILE)
    wys = np.empty(_TILE)
    tops = np.empty(_TILE)
    acoef = np.empty(_TILE)
    sws = np.empty(_TILE)
    losses = np.empty(_TILE)
    lses = np.empty(_TILE)
    g_lab = np.empty(_TILE)  # the label's gradient entry, eq. (16)
    # The gradient's per-row constants in the data's dtype (uniform t_c).
    g_top = np.empty(_TILE, dtype=z.dtype)
    g_a = np.empty(_TILE, dtype=z.dtype)
    g_t = np.empty(_TILE, dtype=z.dtype)
    g_y = np.empty(_TILE, dtype=z.dtype)  # the label's exponential, then its gradient entry
    for base in range(lo, hi, _TILE):
        nr = min(_TILE, hi - base)
        # Rows along the vector lanes: contiguous loads of each row, strided
        # stores into the L1-resident tile (twice as fast as strided loads).
        # A last partial tile is padded with copies of its first row.
        for r in range(_TILE):
            i = base + r if r < nr else base
            for c in range(n_cls):
                buf[c, r] = z[i, c]
        # Per-row inputs, contiguous: the label (-1: ignored, matches no
        # class) and the sample weight.
        for r in range(nr):
            y = labels[base + r]
            yk[r] = y if y >= 0 else -1
        for r in range(nr):
            sws[r] = sample_weight[base + r] if has_sw else 1.0
        for r in range(nr, _TILE):
            yk[r] = yk[0]
            sws[r] = sws[0]
        # Pass 1: max per row, on integer keys (a float compare-and-select
        # became a masked store, microcoded and slow on AMD); the label's
        # logit and weight picked by selects over the classes, not gathered
        # row by row.
        for r in range(_TILE):
            mk[r] = order_key(dt(-np.inf))
            xy[r] = zero
        for c in range(n_cls):
            row = buf[c]
            kc = cls[c]
            for r in range(_TILE):
                mk[r] = max(mk[r], order_key(row[r]))
                # A sum of one value and zeros: written as select-or-keep
                # (xy if not the label), the whole tile ran twice as slow.
                xy[r] += row[r] if yk[r] == kc else zero
        for r in range(_TILE):
            m[r] = from_key(mk[r], zero)
            wys[r] = 1.0 if yk[r] >= 0 else 0.0
        if has_w:
            for r in range(_TILE):
                wys[r] = 0.0
            for c in range(n_cls):
                kc = cls[c]
                wc = weight[c]
                for r in range(_TILE):
                    wys[r] += wc if yk[r] == kc else 0.0
        # sum_c w_c d_c, for label smoothing only, before the exponentials
        # overwrite the logits.
        if k1 > 0.0:
            for r in range(_TILE):
                wd[r] = 0.0
            for c in range(n_cls):
                wc = weight[c] if has_w else 1.0
                if wc > 0.0:
                    row = buf[c]
                    for r in range(_TILE):
                        wd[r] += wc * np.float64((row[r] - m[r]) * it)
        # Pass 2: exponentials in place, then s = ties + rs as in _split_sum.
        # Separate loops, so that each runs at its own dtype's vector width:
        # a float64 sum in the exponential's loop would run all of it at
        # float64's; the tie count stays in the data's dtype.
        for r in range(_TILE):
            ties[r] = zero
            rs[r] = 0.0
        for c in range(n_cls):
            row = buf[c]
            for r in range(_TILE):
                row[r] = vexp((row[r] - m[r]) * it)
            for r in range(_TILE):
                ties[r] += one if row[r] == one else zero
            for r in range(_TILE):
                e = row[r]
                rs[r] += np.float64(zero if e == one else e)
        # Per-row scalars, across rows (padding lanes compute harmless
        # values): the label's e_y = exp(d_y) has the bits of its stored
        # exponential (same operands, same function).
        for r in range(_TILE):
            g_y[r] = vexp((xy[r] - m[r]) * it)
        # Two loops, so that each vectorises (one with every per-row array
        # in it was left scalar: too many arrays for LLVM's alias checks).
        for r in range(_TILE):
            mr = np.float64(m[r])
            wy = wys[r]
            t_sum = (keep * wy + k1 * w_sum) if yk[r] >= 0 else 0.0
            tr = np.float64(ties[r])
            u = (tr - 1.0) + rs[r]
            s = tr + rs[r]
            log_s = _vlog1p(u)
            counts = sws[r] * t_sum > 0.0
            d_y = (np.float64(xy[r]) - mr) * inv_t
            # A label of weight 0 adds nothing, even on a masked class (0 * -inf).
            row_loss = sws[r] * (
                t_sum * log_s - (keep * wy * d_y if wy > 0.0 else 0.0) - (k1 * wd[r] if k1 > 0.0 else 0.0)
            )
            coef[r] = sws[r] * inv_t * grad_scale if counts else 0.0
            tsum[r] = t_sum
            tops[r] = -t_sum * (u / s)  # t_sum (a_max - 1), exact: a_max - 1 = -(s - 1)/s
            acoef[r] = t_sum / s
            lses[r] = mr * inv_t + log_s
            losses[r] = row_loss if counts else 0.0
        for r in range(_TILE):
            cf = coef[r]
            top = tops[r]
            ac = acoef[r]
            wy = wys[r]
            # The label's entry also carries (1 - eps) w_y of the target: eq. (16).
            e_y = np.float64(g_y[r])
            lab = (top + k1 * (w_sum - wy)) if e_y == 1.0 else (ac * e_y - (k1 + keep) * wy)
            g_lab[r] = lab * cf
            g_y[r] = dt(lab * cf)
            g_a[r] = dt(ac * cf)
            g_top[r] = dt((top + (tsum[r] - k1)) * cf)
            g_t[r] = dt(k1 * cf)
        for r in range(nr):
            loss[base + r] = losses[r]
            lse[base + r] = lses[r]
        # Bitwise, not short-circuit: a branch per row kept the loop scalar.
        for r in range(nr):
            mr = np.float64(m[r])
            special[r] = not (math.isfinite(mr) & (rs[r] == rs[r]) & ((k1 == 0.0) | math.isfinite(wd[r])))
        if need_grad:
            # eq. (15) across rows, the label's entry selected in the same
            # loop (a scatter row by row cost more than the whole loop).
            # Without smoothing the top class needs no case of its own (as
            # in _grad_row); with it, it avoids the cancellation.
            if not has_w and k1 == 0.0:
                for c in range(n_cls):
                    row = buf[c]
                    kc = cls[c]
                    for r in range(_TILE):
                        row[r] = g_y[r] if yk[r] == kc else row[r] * g_a[r]
            elif not has_w:  # uniform t_c: per-row constants, the data's dtype
                for c in range(n_cls):
                    row = buf[c]
                    kc = cls[c]
                    for r in range(_TILE):
                        e = row[r]
                        v = g_top[r] if e == one else e * g_a[r] - g_t[r]
                        row[r] = g_y[r] if yk[r] == kc else v
            else:
                for c in range(n_cls):
                    t_c = k1 * weight[c]
                    row = buf[c]
                    kc = cls[c]
                    for r in range(_TILE):
                        e = np.float64(row[r])
                        val = (tops[r] + (tsum[r] - t_c)) if e == 1.0 else (acoef[r] * e - t_c)
                        row[r] = g_lab[r] if yk[r] == kc else val * coef[r]
            # Indexed 2-D, not through a row view: a view per row costs a
            # reference-count update, which took a third of the copy's time.
            for r in range(nr):
                if not special[r]:
                    for c in range(n_cls):
                        grad[base + r, c] = buf[c, r]
        for r in range(nr):
            if special[r]:
                _xent_index_rows(
                    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad,
                    loss, lse, base + r, base + r + 1,
                )  # fmt: skip


# --------------------------------------------------------------------------- sigmoid heads


@nb.njit(**JIT_ELEMENT)
def _sigmoid_row(x, yr, pos_w, w, sw, grad_scale, g, e):
    """One row of independent sigmoid heads: losses into ``e``, the gradient into ``g``.

    Elementwise and branch-free (the conditions below compile to selects),
    so LLVM vectorises it, the exponential and log1p included; the row's sum
    is taken afterwards by :func:`_row_sum` with a vectorised reduction.
    """
    for c in range(x.shape[0]):
        zc = np.float64(x[c])
        # a = exp(-|z|) in (0, 1]: sigma(+-z) and log sigma(+-z) all follow
        # from it without overflow; log sigma(z) = min(z, 0) - log1p(a).
        a = vexp(-abs(zc))
        l1p, inv = _log1p_recip(a)
        pos = zc >= 0.0
        sig_p = inv if pos else a * inv  # sigma(z)
        sig_n = a * inv if pos else inv  # sigma(-z) = 1 - sigma(z), without cancelling
        cp = pos_w[c] * np.float64(yr[c])  # weight of -log sigma(z)
        cn = 1.0 - np.float64(yr[c])  # weight of -log sigma(-z)
        scale = w[c] * sw
        # 0 * inf = 0: a term with no weight adds nothing even at z = +-inf.
        lp = cp * (l1p - min(zc, 0.0)) if cp != 0.0 else 0.0
        ln = cn * (l1p - min(-zc, 0.0)) if cn != 0.0 else 0.0
        nan = zc != zc  # NaN in, NaN out, even where both weights are 0
        e[c] = np.nan if nan else scale * (lp + ln)
        gc = scale * (cn * sig_p - cp * sig_n) * grad_scale
        g[c] = np.nan if nan else gc


@nb.njit(**JIT_SUM)
def _row_sum(e):
    total = 0.0
    for c in range(e.shape[0]):
        total += e[c]
    return total


@nb.njit(**JIT)
def _sigmoid_xent_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, lo, hi):
    """Rows ``lo:hi`` of :func:`sigmoid_xent`: one elementwise pass per row, then its sum.

    Without a gradient (or per-element losses) the row still goes through
    the same code, into a scratch row: the loss is bit-identical either way.
    """
    n_lab = z.shape[1]
    has_sw = sample_weight.shape[0] > 0
    want_elem = loss_elem.shape[0] > 0
    e_scratch = np.empty(n_lab)
    g_scratch = np.empty(n_lab, dtype=grad.dtype)
    for i in range(lo, hi):
        sw = sample_weight[i] if has_sw else 1.0
        e = loss_elem[i] if want_elem else e_scratch
        g = grad[i] if need_grad else g_scratch
        _sigmoid_row(z[i], y[i], pos_w, w, sw, grad_scale, g, e)
        row_loss[i] = _row_sum(e)


# Few labels (K <= _SMALL_K): a row is too short for the vector loop of
# _sigmoid_row (K = 14 ran at 20-27 ns an element, a 1000-wide row at 7), so
# tiles of rows run as one flat elementwise loop, with the per-label weights
# repeated along the tile; the row sums follow.
_SMALL_K = 64
_FLAT_TILE = 2048  # elements per tile (about 16 KiB of float64 per operand)


@nb.njit(**JIT)
def _sigmoid_xent_flat(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, lo, hi):
    """Rows ``lo:hi`` of :func:`sigmoid_xent` for few labels, a tile of rows at a time.

    The same elementwise code (:func:`_sigmoid_row`) and the same row sums
    (:func:`_row_sum`) as the row path, with ``w_c * s_i`` formed per
    element: the same results up to rounding (two compiled loops, which LLVM
    may vectorise differently; which one runs depends on the label count only,
    never on the batch).
    """
    k = z.shape[1]
    rows = max(1, _FLAT_TILE // k)
    has_sw = sample_weight.shape[0] > 0
    want_elem = loss_elem.shape[0] > 0
    zf = z.reshape(-1)
    yf = y.reshape(-1)
    gf = grad.reshape(-1) if need_grad else np.empty(0, dtype=grad.dtype)
    ef = loss_elem.reshape(-1) if want_elem else np.empty(0)
    pos_t = np.empty(rows * k)
    w_t = np.empty(rows * k)
    for r in range(rows):
        for c in range(k):
            pos_t[r * k + c] = pos_w[c]
            w_t[r * k + c] = w[c]
    wsw = np.empty(rows * k)
    e_scratch = np.empty(rows * k)
    g_scratch = np.empty(rows * k, dtype=grad.dtype)
    for base in range(lo, hi, rows):
        nr = min(rows, hi - base)
        a, b = base * k, (base + nr) * k
        scale = w_t[: b - a]
        if has_sw:
            for r in range(nr):
                sw = sample_weight[base + r]
                for c in range(k):
                    wsw[r * k + c] = w_t[r * k + c] * sw
            scale = wsw[: b - a]
        e = ef[a:b] if want_elem else e_scratch[: b - a]
        g = gf[a:b] if need_grad else g_scratch[: b - a]
        _sigmoid_row(zf[a:b], yf[a:b], pos_t[: b - a], scale, 1.0, grad_scale, g, e)
        for r in range(nr):
            row_loss[base + r] = _row_sum(e[r * k : (r + 1) * k])


@nb.njit(parallel=True, **JIT)
def sigmoid_xent(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss):
    """Binary cross-entropy of independent sigmoid heads, loss and gradient in one sweep.

    ``z``, ``y``: (N, K); ``pos_w``, ``w``: float64 (K,); ``sample_weight``:
    float64 (N,) or size 0. Writes per-row sums of the loss into ``row_loss``
    (float64), per-element losses into ``loss_elem`` when it is (N, K)
    (size 0: skipped), and ``grad_scale`` times the gradient into ``grad``.
    """
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    small = 0 < z.shape[1] <= _SMALL_K
    if step >= n:
        if small:
            _sigmoid_xent_flat(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, 0, n)
        else:
            _sigmoid_xent_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, 0, n)
        return
    for b in prange((n + step - 1) // step):
        lo = b * step
        hi = min(n, lo + step)
        if small:
            _sigmoid_xent_flat(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, lo, hi)
        else:
            _sigmoid_xent_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, lo, hi)


# --------------------------------------------------------------------------- labels


_CHECK_BLOCK = 4096


@nb.njit(**JIT)
def class_rows(labels, n_classes, ignore_index, has_ignore, weight, idx, row_weight):
    """One pass over 1-D integer class labels for the wrappers: ``idx`` = the
    label, or -1 for a row labelled ``ignore_index`` (when ``has_ignore``);
    ``row_weight`` = ``weight[label]`` (1 when ``weight`` has size 0), 0 for
    an ignored row. Returns the position of the first label outside
    ``[0, n_classes)`` (-1 if none); the caller raises the error. Replaces
    about ten NumPy passes over the labels, which cost more than the kernel
    itself on inputs with few classes."""
    has_w = weight.shape[0] > 0
    for i in range(labels.shape[0]):
        y = np.int64(labels[i])
        if has_ignore and y == ignore_index:
            idx[i] = -1
            row_weight[i] = 0.0
        elif y < 0 or y >= n_classes:
            return i
        else:
            idx[i] = y
            row_weight[i] = weight[y] if has_w else 1.0
    return -1


@nb.njit(**JIT)
def class_check(labels, n_classes, ignore_index, has_ignore):
    """:func:`class_rows` without its outputs, for int64 labels and no class
    weights: ``(first bad position or -1, whether any row is ignored)``.
    When none is, the labels are already the kernels' class indices and
    every row weighs 1: the wrappers then use them as they are, without two
    (N,) arrays to allocate and fill. Counts per block, without an exit in
    the loop, so that it vectorises (as :func:`bounded_check`): 65536 labels
    0.1 -> 0.03 ms."""
    n = labels.shape[0]
    ign = ignore_index if has_ignore else np.int64(-1)  # -1 is out of range anyway
    any_ignored = False
    for lo in range(0, n, _CHECK_BLOCK):
        yb = labels[lo : min(n, lo + _CHECK_BLOCK)]
        n_bad = 0
        n_ign = 0
        for i in range(yb.shape[0]):
            y = yb[i]
            skip = has_ignore & (y == ign)
            n_ign += 1 if skip else 0
            n_bad += 1 if ((y < 0) | (y >= n_classes)) & ~skip else 0
        any_ignored |= n_ign > 0
        if n_bad:
            for i in range(yb.shape[0]):
                y = yb[i]
                if not (has_ignore and y == ign) and (y < 0 or y >= n_classes):
                    return lo + i, any_ignored
    return -1, any_ignored


@nb.njit(**JIT_SUM)
def bounded_check(y, upper):
    """The position of the first entry of the flat ``y`` outside [0, upper]
    (NaN included; ``upper`` the dtype's largest float excludes +inf), -1 if
    none: the wrappers' check of probability labels in one pass, without the
    float64 copy and the four NumPy passes of the general check."""
    ub = y.dtype.type(upper)
    n = y.shape[0]
    for lo in range(0, n, _CHECK_BLOCK):
        # A count per block, with no exit in the loop, so that it vectorises;
        # the block that holds a bad entry is then scanned for its position.
        yb = y[lo : min(n, lo + _CHECK_BLOCK)]
        n_bad = 0
        for i in range(yb.shape[0]):
            v = yb[i]
            n_bad += 0 if (v >= 0.0) & (v <= ub) else 1
        if n_bad:
            for i in range(yb.shape[0]):
                v = yb[i]
                if not (v >= 0.0 and v <= ub):
                    return lo + i
    return -1


# --------------------------------------------------------------------------- parallel drivers
#
# Each public kernel splits its rows into blocks of about _BLOCK_ELEMENTS
# logits and runs the blocks in parallel; an input of one block runs serially,
# without waking the thread pool (whose start-up costs more than a small
# input's whole computation). Rows are independent, so the result is the same
# bit for bit whatever the number of threads.

_BLOCK_ELEMENTS = 1 << 16


@nb.njit(**JIT)
def _rows_per_block(n_rows, n_cls):
    return max(1, _BLOCK_ELEMENTS // max(n_cls, 1))


@nb.njit(parallel=True, **JIT)
def softmax_xent_index(z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse):
    """Softmax cross-entropy with integer labels (``labels[i] < 0``: ignored row).

    Writes ``loss`` and ``lse`` (float64 per row; ``lse`` is of ``z / T``)
    and, when ``need_grad``, ``grad`` (which may be ``z``). ``weight`` and
    ``sample_weight`` are float64, of size 0 when absent; ``grad_scale``
    multiplies every gradient (1/denominator for the mean). A row whose
    classes are all masked but which counts gets loss NaN and lse -inf: the
    caller raises.
    """
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    n_blocks = (n + step - 1) // step
    small = 0 < z.shape[1] <= _SMALL_V
    if n_blocks <= 1:
        if small:
            _xent_index_tiles(
                z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, 0, n
            )
        else:
            _xent_index_rows(
                z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, 0, n
            )
        return
    for b in prange(n_blocks):
        lo = b * step
        hi = min(n, lo + step)
        if small:
            _xent_index_tiles(
                z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
            )
        else:
            _xent_index_rows(
                z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
            )


@nb.njit(parallel=True, **JIT)
def softmax_xent_prob(z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse):
    """Softmax cross-entropy with probability labels ``target`` (N, V);
    otherwise as :func:`softmax_xent_index`. The effective target is
    ``t_c = w_c ((1 - eps) target_c + eps / V)``."""
    n = z.shape[0]
    step = _rows_per_block(n, z.shape[1])
    if step >= n:
        _xent_prob_rows(
            z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, 0, n
        )
        return
    for b in prange((n + step - 1) // step):
        lo = b * step
        _xent_prob_rows(
            z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse,
            lo, min(n, lo + step),
        )  # fmt: skip


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
