"""Vector math for the CPU kernels: the pieces that let LLVM vectorise a loop.

* scalar bit casts (``_bits_to_f32`` ...), the prefetch intrinsic and
  streaming stores (:func:`_stream_scaled`, :func:`_store_fence`);
* :func:`vexp`, a polynomial exponential with Cody-Waite range reduction
  (numba's ``math.exp`` is a scalar libm call), and :func:`_estrin12`;
* order keys (:func:`order_key`, :func:`from_key`) and raw bits
  (:func:`float_bits`, :func:`bits_float`): floats compared as integers,
  which LLVM reduces in vector registers;
* a vectorisable ``log1p`` (:func:`_vlog1p`) and ``(log1p, 1/(1 + a))``
  in one division (:func:`_log1p_recip`).

The ``@overload`` functions here are registered when this module is
imported; every module whose jitted code calls them imports it first.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._jit import JIT_ELEMENT

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


# Streaming (non-temporal) stores: a gradient written into a separate
# buffer (``out=``) otherwise reads each of its lines from memory before
# writing it (a third stream of traffic: on the 2-core hosts the copy floor
# is 1.75x the in-place one). LLVM keeps a non-temporal store only when it
# is aligned to its width, so the vector is written here by hand, 32 bytes
# at a time, at addresses the caller has aligned.
_STREAM_BYTES = 32


@intrinsic
def _stream_scaled(typingctx, dst, i, src, j, f):
    """``dst[i : i + L] = src[j : j + L] * f`` with one non-temporal 32-byte
    store (L = 8 float32 or 4 float64); ``dst[i]`` must be 32-byte aligned
    and both ranges inside their arrays (no checks)."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype):
        return None
    if dst.dtype not in (types.float32, types.float64) or not isinstance(f, types.Float):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        dty, ity, sty, jty, fty = signature.args
        d = context.make_array(dty)(context, builder, args[0])
        s = context.make_array(sty)(context, builder, args[2])
        elem = context.get_value_type(dty.dtype)
        lanes = _STREAM_BYTES // context.get_abi_sizeof(elem)
        vec = ir.VectorType(elem, lanes)
        sp = cgutils.get_item_pointer(context, builder, sty, s, [args[3]], wraparound=False)
        dp = cgutils.get_item_pointer(context, builder, dty, d, [args[1]], wraparound=False)
        v = builder.load(builder.bitcast(sp, vec.as_pointer()), align=context.get_abi_sizeof(elem))
        fv = context.cast(builder, args[4], fty, dty.dtype)
        splat = builder.insert_element(ir.Constant(vec, ir.Undefined), fv, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(
            splat, ir.Constant(vec, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        )
        st = builder.store(builder.fmul(v, splat), builder.bitcast(dp, vec.as_pointer()), align=_STREAM_BYTES)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.none(dst, i, src, j, f), codegen


@intrinsic
def _store_fence(typingctx):
    """A full fence after streaming stores, which are weakly ordered: the
    thread that hands the gradient back must not leave them in flight
    (``mfence`` on x86, which orders them; a plain release fence compiles to
    nothing there)."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


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


# --------------------------------------------------------------------------- order keys


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


# --------------------------------------------------------------------------- log1p

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
    vector instruction here). +inf gives +inf and NaN gives NaN (a select at
    the end: the bit arithmetic alone would give 709.78 and a finite number).
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
    out = np.float64(k) * _LN2 + _atanh_series(num / den)
    return out if s < np.inf else s


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


# --------------------------------------------------------------------------- float32 elementwise pieces
#
# For kernels that compute float32 data in float32 arithmetic (the sigmoid
# heads), where each element's result is returned, not summed: a
# two-step reduction and a longer polynomial keep exp within about 1 ulp
# over the whole range (vexp's one-FMA reduction costs up to 3.4 ulps at the
# bottom of the range, harmless in a softmax sum but not in a confident
# element's loss, which is exp(-|z|) itself).

# ln2 = _LN2HI32 + _LN2LO32 with _LN2HI32 exact in 9 bits, so n * _LN2HI32 is
# exact for |n| < 2**15 (Cody-Waite).
_LN2HI32, _LN2LO32 = np.float32(0.693359375), np.float32(-2.12194440e-4)
# exp(r) = 1 + r + r^2 q(r), q the Taylor polynomial of degree 5: truncation
# 0.3466^8/8! < 6e-9 relative, far below float32's rounding.
_T32 = tuple(np.float32(1.0 / math.factorial(k)) for k in range(2, 8))


@nb.njit(**JIT_ELEMENT)
def _vexp32_fine(x):
    """exp(x) for float32 x <= 0 (NaN propagates), vectorisable, about 1 ulp.

    Same scheme as ``_vexp32`` (magic-constant rounding, bits of 2**n from
    the sum's mantissa), with the two-step reduction and a degree-7
    polynomial: measured 1.06 ulps at most over [-87.3, 0] against float64's
    exp (3e6 points; ``_vexp32``: 5.0). Arguments below ``_LO32`` (and -inf) give exactly 0.
    """
    t = x * _L2E32 + _M32
    n = t - _M32
    r = (x - n * _LN2HI32) - n * _LN2LO32
    c0, c1, c2, c3, c4, c5 = _T32
    r2 = r * r
    r4 = r2 * r2
    q = (c0 + c1 * r) + (c2 + c3 * r) * r2 + (c4 + c5 * r) * r4
    w = r + r2 * q  # exp(r) - 1
    scale = _bits_to_f32(np.int32(_f32_to_bits(t) << np.int32(23)))
    return np.float32(0.0) if x < _LO32 else w * scale + scale


_SQRT2M1_32 = np.float32(math.sqrt(2.0) - 1.0)
# ln2 = _LN2A32 + _LN2B32: the float32 ln2 and its remainder, so that
# ln2 + s keeps float32's precision where s is of the opposite sign.
_LN2A32 = np.float32(math.log(2.0))
_LN2B32 = np.float32(math.log(2.0) - float(np.float32(math.log(2.0))))
# 2 atanh(w) = 2w (1 + w^2/3 + w^4/5 + w^6/7 + w^8/9) for |w| <= 0.1716: the
# first omitted term is w^10/11 < 2.1e-9 relative.
_A32 = tuple(np.float32(1.0 / (2 * k + 1)) for k in range(1, 5))
_ONE32, _TWO32, _THREE32, _ZERO32 = np.float32(1.0), np.float32(2.0), np.float32(3.0), np.float32(0.0)


@nb.njit(**JIT_ELEMENT)
def _log1p_recip32(a):
    """``(log(1 + a), 1 / (1 + a))`` in float32 for float32 ``a`` in [0, 1], one division.

    The scheme of :func:`_log1p_recip` (w = a / (2 + a), or (a - 1)/(a + 3)
    when 1 + a > sqrt(2); one reciprocal for both quotients; the rounded 1 +
    a cancels from w), with the atanh series cut for float32: about 2 ulps
    for log1p (a tiny ``a`` keeps its digits) and 1.5 for the reciprocal.
    """
    big = a > _SQRT2M1_32
    num = a - _ONE32 if big else a
    den = a + _THREE32 if big else a + _TWO32
    opa = _ONE32 + a
    q = _ONE32 / (den * opa)
    w = num * opa * q
    w2 = w * w
    c1, c2, c3, c4 = _A32
    s = (w + w) * ((_ONE32 + c1 * w2) + (c2 + (c3 + c4 * w2) * w2) * (w2 * w2))
    # ln2 + s with s in [-0.35, 0]: the remainder of ln2 first, then its float32 part.
    log1p = ((s + _LN2B32) + _LN2A32) if big else s
    return log1p, den * q
