r"""Device code shared by softxent's Triton kernels: the guarded ``triton`` import, the interpreter flag,
the scalar helpers (exp of the sums, expm1, log1p, soft cap, sech^2, bf16 rounding) and the online (max, s')
updates: per tile (:func:`_online_update`) and per lane (:func:`_lane_update`, :func:`_lane_merge`).

The kernels live by family, beside their host modules: :mod:`._kernels_ce` (cross-entropy on given
logits, launched by :mod:`._cross_entropy`) and :mod:`._kernels_linear` (the linear + cross-entropy head,
launched by :mod:`._linear_head`). :func:`softxent.kernels.triton._host.kernels` imports them on first
use, never users. Under ``TRITON_INTERPRET=1`` (set before ``triton`` is imported) the
kernels run in Triton's interpreter on CPU tensors: that is how the tests
check them without a GPU.

Notation (every kernel): rows :math:`i`, classes :math:`c`, logits
:math:`z_{ic}` (after the optional cap :math:`z' = \kappa \tanh(z/\kappa)`),
:math:`m_i = \max_c z_{ic}`, and

.. math::

    s'_i = \sum_{c \ne c^*_i} e^{z_{ic} - m_i}, \qquad
    \operatorname{lse}_i = m_i + \operatorname{log1p}(s'_i),

where :math:`c^*_i` is one arg-max class. Keeping the arg-max term (exactly
1) out of the sum is the precision trick of this file: for a confident row
(:math:`a_{y} = \operatorname{softmax}(z)_y \to 1`) the loss
:math:`\operatorname{lse} - z_y = \operatorname{log1p}(s')` and the true-class
gradient :math:`a_y - 1 = -s' / (1 + s')` are computed without the
cancellation of ``1 + tiny - 1`` (a sum that includes the 1 rounds ``s'`` to
``2**-24`` in float32, so ``p_y - 1`` would come out 0 or ``-6e-8`` instead of,
say, ``-3e-11``).

Precision: every load is converted to float32 and all arithmetic, sums and
matmul accumulators are float32, whatever the input dtype (bf16, fp16, fp32;
the cross-entropy kernel computes float64 input in float64, ``ACC``); results
are rounded once when stored. The interpreter lacks libdevice, so
``expm1``/``log1p``/``tanh`` are written here from ``exp``/``log`` (Kahan's
formulas, accurate to a few ulp).

The sums of exponentials that set the cross-entropy kernel's loss use :func:`_exp_sum_term`:
libdevice's ``expf`` when compiled (at most 2 ulp, with an exact range
reduction), not ``tl.exp``, which compiles to ``ex2.approx(x * log2(e))``:
the rounding of that product alone is up to ``|x| log2(e) 2**-24`` in the
exponent, 1.8e-6 relative at ``x = -30`` (a confident row's whole loss).
"""

from __future__ import annotations

import os

try:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice
except ImportError:  # pragma: no cover - tools that import every module (pytest --doctest-modules)

    class triton:  # noqa: N801 - a stand-in: the functions stay plain Python, never launched
        @staticmethod
        def jit(fn):
            return fn

    tl = libdevice = None

# Triton fixes its mode (compiler or interpreter) when it is first imported, and this module
# is imported after it (see _host.kernels): the interpreter has no libdevice (its calls return None).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if tl is not None:
    INTERPRETED = tl.constexpr(INTERPRETED)


# --------------------------------------------------------------------------- scalar helpers


@triton.jit
def _exp_sum_term(x, PRECISE: tl.constexpr):
    # exp for the terms of s' (the loss of a confident row is s' itself). PRECISE: 1 (True)
    # libdevice's expf (2 ulp); 2 :func:`_exp_split` (float32 only); 0 (False) tl.exp. NumPy's exp
    # (correctly rounded in practice) in the interpreter, whatever PRECISE.
    # The linear head passes PRECISE=False: its logits carry the float32 GEMM's own rounding
    # (about 1e-5 relative for |z| ~ 30 at d ~ 2000), ten times tl.exp's, and libdevice's
    # longer sequence makes its 128 x 128 forward spill at sm_90a (255 registers).
    if INTERPRETED or PRECISE == 0:
        return tl.exp(x)
    elif PRECISE == 2:
        return _exp_split(x)
    else:
        return libdevice.exp(x)


@triton.jit
def _exp_split(x):
    # float32 exp(x) for x <= 0 (or NaN) as ex2.approx of x log2(e) with the product's rounding put back:
    # t = fl(x L), r = x L - t exactly by an fma plus x times L's own remainder, then
    # 2^t (1 + r ln 2). tl.exp drops r: |r| up to |x| log2(e) 2**-24, 1.8e-6 relative at x = -30;
    # kept, the error is ex2.approx's own (2 ulp) plus r**2 (1e-12). Below -127 the result is 0
    # either way, and the clamp keeps -inf from making r = -inf + inf = NaN (NaN stays NaN).
    x = tl.where(x < -127.0, -127.0, x)
    t = x * 1.4426950216293335  # log2(e) rounded to float32
    r = tl.fma(x, 1.4426950216293335, -t)
    r = tl.fma(x, 1.925963033500e-08, r)  # log2(e) - its float32 rounding
    e = tl.math.exp2(t)
    return tl.fma(e, r * 0.6931471805599453, e)


@triton.jit
def _expm1(u):
    # Kahan: with e = fl(exp(u)), (e - 1) * u / log(e) cancels e's own rounding
    # error, so expm1 is accurate near 0 where e - 1 alone is not. Away from 0
    # (|u| >= 0.5) e - 1 has no cancellation. The e == 1 branch (log(e) = 0)
    # is discarded by the where.
    e = tl.exp(u)
    em1 = e - 1.0
    kahan = tl.where(e == 1.0, u, em1 * (u / tl.log(e)))
    return tl.where(tl.abs(u) < 0.5, kahan, em1)


@triton.jit
def _log1p(x):
    # Kahan: w = fl(1 + x); log(w) * x / (w - 1) corrects w's rounding. x >= 0 here.
    w = 1.0 + x
    return tl.where(w == 1.0, x, tl.log(w) * (x / (w - 1.0)))


@triton.jit
def _softcap(z, cap):
    # cap * tanh(z / cap), tanh(|u|) = -expm1(-2|u|) / (2 + expm1(-2|u|)): no
    # overflow, and no cancellation for small |u| (where tanh(u) ~ u).
    u = z / cap
    em = _expm1(-2.0 * tl.abs(u))
    t = -em / (2.0 + em)
    return cap * tl.where(u < 0, -t, t)


@triton.jit
def _sech2(z, cap):
    # d tanh(u)/du = sech^2(u) = 4 e / (1 + e)^2 with e = exp(-2|u|): never
    # 1 - tanh^2 (which rounds to 0 once tanh rounds to 1, |u| > 9 in fp32).
    e = tl.exp(-2.0 * tl.abs(z / cap))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _round_bf16(x):
    # float32 -> bfloat16 rounded to nearest even, by hand: add 0x7FFF plus the lowest kept
    # bit, drop 16 bits (NaN stays NaN: quiet NaNs have high mantissa bits). The GPU's own
    # cast does this; only the interpreter (which truncates) needs it (DOWNCAST).
    bits = x.to(tl.uint32, bitcast=True)
    bits = bits + 0x7FFF + ((bits >> 16) & 1)
    return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _online_update(z, m, sp, PRECISE: tl.constexpr):
    """One block of the online (max, s') recurrence: z (R, B) fp32, -inf where masked.

    New max m' = max(m, bm), bm the block's max. The block's maxima (every
    element equal to bm: ties too) are left out of its exponential sum by
    equality with bm, and added back as exact numbers: if the block holds the
    new max, one of them is the new lead (the 1 kept out of s') and the others
    are exact 1s, while the old lead joins the sum:
    s' <- (s' + 1) e^{m - m'} + sum_{z_c != bm} e^{z_c - m'} + (k - 1);
    else s' <- s' + sum_{z_c != bm} e^{z_c - m} + k e^{bm - m}, with k the count
    of maxima. No arg-max (an index reduction beside the max) and no
    subtraction of 1, so no cancellation.
    """
    bm = tl.max(z, axis=1)
    new = bm > m
    m_new = tl.maximum(m, bm)
    m_safe = tl.where(m_new == -float("inf"), 0.0, m_new)  # all masked so far: no NaN from -inf - -inf
    at = z == bm[:, None]
    p = tl.where(at, 0.0, _exp_sum_term(z - m_safe[:, None], PRECISE))
    k = tl.sum(at.to(tl.float32), axis=1).to(m.dtype)
    extra = tl.where(new, k - 1.0, k * _exp_sum_term(bm - m_safe, PRECISE))
    extra = tl.where(bm == -float("inf"), 0.0, extra)  # a fully masked block adds nothing
    old = tl.where(new, (sp + 1.0) * _exp_sum_term(m - m_safe, PRECISE), sp)
    old = tl.where(m == -float("inf"), 0.0, old)  # nothing seen before: no old max to rescale
    sp = old + tl.sum(p, axis=1) + extra
    return m_new, sp


@triton.jit
def _lane_update(z, m_v, s_v, PRECISE: tl.constexpr):
    """The online (max, s') recurrence per lane: each element of the (R, B) tile updates its own lane's state.

    No reduction across the tile, so no shuffles or barriers in the loop over a row (the per-tile
    update above does four). Lane state: its max m_v and s_v = the sum of e^{z - m_v} over the lane's
    other elements (its lead left out, as above). One exponential per element, e^{-|z - m_v|}:
    a new max rescales the old state, s_v <- (s_v + 1) e^{m_v - z} (the old lead joins the sum);
    otherwise s_v <- s_v + e^{z - m_v}. A tie adds an exact 1 (also at +inf, where the difference
    is NaN); -inf adds e^{-inf} = 0 to a lane with a finite max. A lane that has seen only -inf
    counts those as ties, harmlessly: its first finite element rescales its state by e^{-inf} = 0,
    and :func:`_lane_merge` weighs a lane still at -inf by 0. NaN makes s_v NaN (NaN in, NaN out).
    :func:`_lane_merge` folds the lanes into the row's (m, s').
    """
    new = z > m_v
    e = _exp_sum_term(tl.where(new, m_v - z, z - m_v), PRECISE)
    e = tl.where(z == m_v, 1.0, e)
    s_v = tl.where(new, (s_v + 1.0) * e, s_v + e)
    m_v = tl.where(new, z, m_v)
    return m_v, s_v


@triton.jit
def _lane_merge(m_v, s_v):
    """The row's (m, s') from its lanes' states (:func:`_lane_update`): the rule that merges two states.

    m = max of the lane maxima; the k lanes that hold it keep their s_v as it is (scale 1), the
    others join with (s_v + 1) e^{m_v - m} (their lead is not the row's); of the k leads one is the
    row's and the other k - 1 are exact 1s: s' = sum + (k - 1), an integer added, never a 1 subtracted.
    """
    m = tl.max(m_v, axis=1)
    m_safe = tl.where(m == -float("inf"), 0.0, m)  # a row of -inf: every lane adds 0
    lead = (m_v == m[:, None]) & (m_v > -float("inf"))
    k = tl.sum(lead.to(tl.float32), axis=1).to(m.dtype)
    part = tl.where(lead, s_v, (s_v + 1.0) * _exp_sum_term(m_v - m_safe[:, None], True))
    sp = tl.sum(part, axis=1) + tl.maximum(k - 1.0, 0.0)
    return m, sp
