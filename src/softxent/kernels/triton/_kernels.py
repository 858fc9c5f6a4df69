r"""Triton kernels of softxent's GPU path (only the ``@triton.jit`` functions; no host code).

This module is imported by :func:`softxent.kernels.triton._host.kernels` on first
use, never by users. Under ``TRITON_INTERPRET=1`` (set before ``triton`` is imported) the
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
    # exp for the terms of s' (the loss of a confident row is s' itself): libdevice's expf
    # (2 ulp) on the GPU; NumPy's exp (correctly rounded in practice) in the interpreter.
    # The linear head passes PRECISE=False: its logits carry the float32 GEMM's own rounding
    # (about 1e-5 relative for |z| ~ 30 at d ~ 2000), ten times tl.exp's, and libdevice's
    # longer sequence makes its 128 x 128 forward spill at sm_90a (255 registers).
    if INTERPRETED or not PRECISE:
        return tl.exp(x)
    else:
        return libdevice.exp(x)


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


# --------------------------------------------------------------------------- cross-entropy on logits


@triton.jit
def ce_kernel(
    z_ptr,
    stride_z,  # (M, C) logits, any float dtype, class stride 1
    y_ptr,
    stride_y,  # (M,) int class indices, or (M, C) probabilities (PROB)
    w_ptr,  # (C,) class weights (HAS_WEIGHT)
    g_ptr,
    stride_g,  # (M, C) gradient out (NEED_GRAD); may be z_ptr itself
    loss_ptr,  # (M,) fp32: each row's loss, already scaled (ce_scale, zl_scale)
    lse_ptr,  # (M,) fp32: each row's log-sum-exp (ignored rows too)
    scale_ptr,  # (2,) fp32 on the device: ce_scale, zl_scale (mean denominators)
    n_rows,
    n_classes,
    ignore_index,
    eps,
    z_loss,
    cap,
    PROB: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    SMOOTH: tl.constexpr,
    ZLOSS: tl.constexpr,
    SOFTCAP: tl.constexpr,
    NEED_GRAD: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
    DOWNCAST: tl.constexpr,  # DOWNCAST: bf16 gradient in the interpreter
    STAGES: tl.constexpr,  # software-pipelining depth of the sweeps over a row (1: none)
    HINTS: tl.constexpr = False,  # L2 schedule: evict-last / evict-first loads, pass 2 backwards, streaming stores
):
    r"""Loss, log-sum-exp and gradient of ROWS rows per program (ROWS = 1 for wide rows).

    Effective target (torch's, with class weights w and smoothing eps):
    class index y: t = (1 - eps) w_y e_y + (eps / C) w;  probabilities p:
    t = w * ((1 - eps) p + eps / C). With T = sum_c t_c, eq. (7) and (15):

        loss = sum_{t_c > 0} t_c (lse - z_c) + z_loss lse^2
        dloss/dz_c = (a_c T - t_c) + 2 z_loss lse a_c,     a = softmax(z)

    times sech^2(z_c / cap) with a soft cap (chain rule of cap tanh(z / cap)).
    The true class, written so that a_y -> 1 does not cancel:

        a_y T - t_y = (1 - eps) w_y (a_y - 1) + (eps / C)(a_y W - w_y),  W = sum_c w_c
        a_y - 1 = -s' / (1 + s')   if z_y = m (y is an arg-max), else exp(z_y - lse) - 1
        lse - z_y = (m - z_y) + log1p(s')

    Pass 1 reads the row once for (m, s') and the sums T, W; pass 2
    (only when needed: gradient, smoothing, probability targets) reads it again
    (from L2 for all but huge rows) for the terms that need lse. Rows that take
    no part (ignored, or no target mass and no z-loss) get loss 0 and a
    gradient of exact zeros, whatever their logits hold (-inf, NaN). A class
    index out of range gives NaN (no host sync to raise an error).
    """
    # Grid-stride over row blocks: the host may launch fewer programs than blocks
    # (``programs=``) to bound the rows in flight, so that pass 2 re-reads from L2.
    for pid in range(tl.program_id(0), tl.cdiv(n_rows, ROWS), tl.num_programs(0)):
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask = rows < n_rows
        rows64 = rows.to(tl.int64)
        z_row = z_ptr + rows64 * stride_z
        ninf = -float("inf")
        inv_c = 1.0 / tl.sum(tl.zeros((1,), ACC) + n_classes, axis=0)  # 1/C in ACC (float64 for float64)

        if PROB:
            kept = rmask
            in_range = rmask
        else:
            y = tl.load(y_ptr + rows64 * stride_y, mask=rmask, other=ignore_index).to(tl.int64)
            kept = rmask & (y != ignore_index)
            in_range = (y >= 0) & (y < n_classes)
            y_safe = tl.where(in_range, y, 0)

        # ---- pass 1: online max / s' (float32), and the target sums
        m = tl.full((ROWS,), ninf, ACC)
        sp = tl.zeros((ROWS,), ACC)
        t_sum = tl.zeros((ROWS,), ACC)  # T (probability targets)
        w_sum = tl.zeros((ROWS,), ACC)  # W (class weights with smoothing)
        n_nan = tl.zeros((ROWS,), tl.int32)
        for c0 in tl.range(0, n_classes, BLOCK, num_stages=STAGES):  # prefetch the next tile
            cols = c0 + tl.arange(0, BLOCK)
            cmask = cols < n_classes
            mask = rmask[:, None] & cmask[None, :]
            if HINTS:  # keep the row in L2 for pass 2
                z = tl.load(z_row[:, None] + cols[None, :], mask=mask, other=ninf, eviction_policy="evict_last")
            else:
                z = tl.load(z_row[:, None] + cols[None, :], mask=mask, other=ninf)
            z = z.to(ACC)
            if SOFTCAP:
                z = tl.where(mask, _softcap(z, cap), ninf)
            m, sp = _online_update(z, m, sp, True)
            n_nan += tl.sum(tl.where(z != z, 1, 0), axis=1)  # max may skip NaN: count it
            if HAS_WEIGHT:
                wc = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
            if PROB:
                p = tl.load(y_ptr + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(ACC)
                t = (1.0 - eps) * p + eps * inv_c if SMOOTH else p
                if HAS_WEIGHT:
                    t = t * wc[None, :]
                t_sum += tl.sum(tl.where(mask, t, 0.0), axis=1)
            elif SMOOTH and HAS_WEIGHT:
                w_sum += tl.sum(tl.where(mask, wc[None, :] + tl.zeros((ROWS, BLOCK), ACC), 0.0), axis=1)

        # NaN in, NaN out for the row (its loss, lse and gradient), as the reference.
        m = tl.where(n_nan > 0, float("nan"), m)
        sp = tl.where(n_nan > 0, float("nan"), sp)
        log1p_sp = _log1p(sp)
        lse = m + log1p_sp
        lse_safe = tl.where(lse == ninf, 0.0, lse)
        ce_scale = tl.load(scale_ptr)
        zl_scale = tl.load(scale_ptr + 1)
        tl.store(lse_ptr + rows, lse, mask=rmask)

        if PROB:
            total = t_sum
            ce_on = rmask & (t_sum > 0)
            ce_row = tl.zeros((ROWS,), ACC)  # from pass 2
        else:
            if HAS_WEIGHT:
                w_y = tl.load(w_ptr + y_safe, mask=rmask, other=0.0).to(ACC)
            else:
                w_y = tl.full((ROWS,), 1.0, ACC)
                w_sum = tl.full((ROWS,), 1.0, ACC) * n_classes
            w_y = tl.where(kept, w_y, 0.0)
            total = (1.0 - eps) * w_y + eps * inv_c * w_sum if SMOOTH else w_y
            ce_on = kept & (total > 0)
            z_y = tl.load(z_row + y_safe, mask=rmask, other=0.0).to(ACC)
            if SOFTCAP:
                z_y = _softcap(z_y, cap)
            y_is_max = z_y == m
            nll_y = (m - z_y) + log1p_sp  # lse - z_y, see the docstring
            # a_y - 1 without cancellation (exp(z_y - lse) <= 1/2 when z_y < m).
            am1_y = tl.where(y_is_max, -sp / (1.0 + sp), tl.exp(z_y - lse_safe) - 1.0)
            ce_row = tl.where(w_y > 0, (1.0 - eps) * w_y * nll_y, 0.0)
        live = (ce_on | kept) if ZLOSS else ce_on

        # ---- pass 2: terms that need lse, and the gradient
        if NEED_GRAD or SMOOTH or PROB:
            smooth = tl.zeros((ROWS,), ACC)
            last_tile = (tl.cdiv(n_classes, BLOCK) - 1) * BLOCK
            for c_step in tl.range(0, n_classes, BLOCK, num_stages=STAGES):
                if HINTS:  # backwards: pass 1's last tiles are the likeliest still in L2; read them once
                    c0 = last_tile - c_step
                else:
                    c0 = c_step
                cols = c0 + tl.arange(0, BLOCK)
                cmask = cols < n_classes
                mask = rmask[:, None] & cmask[None, :]
                if HINTS:
                    z_raw = tl.load(
                        z_row[:, None] + cols[None, :], mask=mask, other=ninf, eviction_policy="evict_first"
                    )
                else:
                    z_raw = tl.load(z_row[:, None] + cols[None, :], mask=mask, other=ninf)
                z_raw = z_raw.to(ACC)
                if SOFTCAP:
                    z = tl.where(mask, _softcap(z_raw, cap), ninf)
                else:
                    z = z_raw
                # lse - z_c >= 0 summed term by term (no cancellation of lse * T - sum t z).
                d = lse[:, None] - z
                if HAS_WEIGHT:
                    wc = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
                if PROB:
                    p = tl.load(y_ptr + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(ACC)
                    t = (1.0 - eps) * p + eps * inv_c if SMOOTH else p
                    if HAS_WEIGHT:
                        t = t * wc[None, :]
                    t = tl.where(mask, t, 0.0)
                    ce_row += tl.sum(tl.where(t > 0, t * d, 0.0), axis=1)  # 0 * inf = 0: no mass, no term
                elif SMOOTH:
                    if HAS_WEIGHT:
                        wsm = wc[None, :] + tl.zeros((ROWS, BLOCK), ACC)
                    else:
                        wsm = tl.full((ROWS, BLOCK), 1.0, ACC)
                    wsm = tl.where(mask, wsm, 0.0)
                    smooth += tl.sum(tl.where(wsm > 0, wsm * d, 0.0), axis=1)
                if NEED_GRAD:
                    a = tl.exp(z - lse_safe[:, None])
                    if PROB:
                        # At a maximum a = 1/(1+s') exactly: T a - t = T (a - 1) + (T - t).
                        at_max = z == m[:, None]  # every maximum (ties too) has a = 1/(1+s')
                        g = tl.where(
                            at_max,
                            total[:, None] * (-sp / (1.0 + sp))[:, None] + (total[:, None] - t),
                            a * total[:, None] - t,
                        )
                    else:
                        is_y = cols[None, :] == y_safe[:, None]
                        if SMOOTH:
                            if HAS_WEIGHT:
                                wct = wc[None, :]
                            else:
                                wct = 1.0
                            g = a * total[:, None] - eps * inv_c * wct
                            g_y = (1.0 - eps) * w_y * am1_y + eps * inv_c * (tl.exp(z_y - lse_safe) * w_sum - w_y)
                        else:
                            g = a * total[:, None]
                            g_y = w_y * am1_y
                        g = tl.where(is_y, g_y[:, None], g)
                    g = tl.where(ce_on[:, None], g * ce_scale, 0.0)
                    if ZLOSS:
                        zcoef = tl.where(kept, 2.0 * z_loss * zl_scale * lse_safe, 0.0)
                        g += zcoef[:, None] * a
                    if SOFTCAP:
                        g = g * _sech2(z_raw, cap)
                    g = tl.where(live[:, None], g, 0.0)  # exact zeros for rows that take no part
                    if DOWNCAST:  # the interpreter truncates float32 -> bf16; the GPU rounds to nearest even
                        g = _round_bf16(g)
                    g_out = g_ptr + rows64[:, None] * stride_g + cols[None, :]
                    if HINTS:  # streaming store: the gradient is not read again by this kernel
                        tl.store(g_out, g.to(g_ptr.dtype.element_ty), mask=mask, cache_modifier=".cs")
                    else:
                        tl.store(g_out, g.to(g_ptr.dtype.element_ty), mask=mask)
            if SMOOTH and not PROB:
                ce_row += tl.where(kept, eps * inv_c * smooth, 0.0)

        ce_row = tl.where(ce_on, ce_row, 0.0)
        if not PROB:
            ce_row = tl.where(kept & (y_safe != y), float("nan"), ce_row)  # bad class index: NaN, not a wrong number
        loss = ce_row * ce_scale
        if ZLOSS:
            loss += tl.where(kept, z_loss * lse * lse, 0.0) * zl_scale
        tl.store(loss_ptr + rows, loss, mask=rmask)


# --------------------------------------------------------------------------- linear cross-entropy


@triton.jit
def _logits_tile(
    x_ptr,
    w_ptr,
    b_ptr,
    rows64,
    rmask,
    cols,
    cmask,
    n_dim,
    stride_x,
    stride_w,
    HAS_BIAS: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    """z = x[rows] @ W[cols]^T (+ b) for one (BM, BN) tile, float32 accumulator, on chip."""
    acc = tl.zeros((BM, BN), tl.float32)
    for k0 in range(0, n_dim, BK):
        ks = k0 + tl.arange(0, BK)
        kmask = ks < n_dim
        xt = tl.load(x_ptr + rows64[:, None] * stride_x + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
        wt = tl.load(
            w_ptr + cols.to(tl.int64)[:, None] * stride_w + ks[None, :], mask=cmask[:, None] & kmask[None, :], other=0.0
        )
        if UPCAST:  # the interpreter's bf16 dot is wrong: products of bf16 are exact in fp32 anyway
            xt = xt.to(tl.float32)
            wt = wt.to(tl.float32)
        if IEEE:  # float32 inputs: true fp32 products, not TF32
            acc = tl.dot(xt, tl.trans(wt), acc, input_precision="ieee")
        else:  # bf16/fp16 tensor cores, fp32 accumulation
            acc = tl.dot(xt, tl.trans(wt), acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    return acc


@triton.jit
def lce_forward_kernel(
    x_ptr,
    stride_x,
    w_ptr,
    stride_w,
    b_ptr,
    m_ptr,
    sp_ptr,
    d_ptr,  # (S, N) fp32 partial max, s', sum (m - z) of each vocabulary split
    zy_ptr,
    y_ptr,  # (N,) fp32 label logit out (written by the split holding it), int labels
    n_rows,
    n_classes,
    n_dim,
    split_size,
    cap,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    SOFTCAP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    r"""Per (row block, vocabulary split): the split's online (m, s', D) of z = x W^T + b, never stored.

    Grid (cdiv(N, BM), S). The host combines the S splits (float64, cheap):
    M = max_p m_p; s' = s'_{p*} + sum_{p != p*} (s'_p + 1) e^{m_p - M} (p* the
    split holding the max, so its 1 is never added and subtracted);
    lse = M + log1p(s'); and, for label smoothing,
    sum_c (lse - z_c) = sum_p [D_p + n_p (lse - m_p)] with D_p = sum_{c in p} (m_p - z_c) >= 0
    kept online as D <- D + (m' - m) n_seen + sum (m' - z).
    """
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    rmask = rows < n_rows
    rows64 = rows.to(tl.int64)
    y = tl.load(y_ptr + rows64, mask=rmask, other=-1).to(tl.int64)
    v_lo = pid_s * split_size
    v_hi = tl.minimum(v_lo + split_size, n_classes)
    ninf = -float("inf")
    m = tl.full((BM,), ninf, tl.float32)
    sp = tl.zeros((BM,), tl.float32)
    dsum = tl.zeros((BM,), tl.float32)
    n_seen = 0.0
    zy = tl.zeros((BM,), tl.float32)
    n_nan = tl.zeros((BM,), tl.int32)
    for c0 in range(v_lo, v_hi, BN):
        cols = c0 + tl.arange(0, BN)
        cmask = cols < v_hi
        z = _logits_tile(
            x_ptr,
            w_ptr,
            b_ptr,
            rows64,
            rmask,
            cols,
            cmask,
            n_dim,
            stride_x,
            stride_w,
            HAS_BIAS,
            BM,
            BN,
            BK,
            UPCAST,
            IEEE,
        )
        if SOFTCAP:
            z = _softcap(z, cap)
        z = tl.where(cmask[None, :], z, ninf)
        m_old = m
        m, sp = _online_update(z, m, sp, False)
        n_nan += tl.sum(tl.where(z != z, 1, 0), axis=1)
        if SMOOTH:
            n_blk = tl.sum(cmask.to(tl.float32), axis=0)
            dsum = tl.where(n_seen > 0, dsum + (m - m_old) * n_seen, 0.0)
            dsum += tl.sum(tl.where(cmask[None, :], m[:, None] - z, 0.0), axis=1)
            n_seen += n_blk
        zy += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
    out = pid_s * n_rows + rows64
    m = tl.where(n_nan > 0, float("nan"), m)  # NaN in x or W: the row's loss is NaN
    tl.store(m_ptr + out, m, mask=rmask)
    tl.store(sp_ptr + out, sp, mask=rmask)
    if SMOOTH:
        tl.store(d_ptr + out, dsum, mask=rmask)
    tl.store(zy_ptr + rows64, zy, mask=rmask & (y >= v_lo) & (y < v_hi))


@triton.jit
def lce_backward_kernel(
    x_ptr,
    stride_x,
    w_ptr,
    stride_w,
    b_ptr,
    y_ptr,
    lse_ptr,
    nll_ptr,  # (N,) fp32: lse, and lse - z_y from the forward (HAS_NLL)
    ce_ptr,
    zc_ptr,  # (N,) fp32 per-row coefficients: of (a - t), and of a (z-loss)
    dx_ptr,
    dw_ptr,
    db_ptr,  # fp32 accumulators: (N, D), (V_chunk, D), (V_chunk,)
    flag_ptr,  # (1,) int32: tiles skipped by the filter (FILTER)
    g_ptr,
    stride_g,  # (N, v1 - v0) gradient block out (STORE_G)
    n_rows,
    n_classes,
    n_dim,
    v0,
    v1,
    eps,
    cap,
    filter_eps,
    HAS_BIAS: tl.constexpr,
    SMOOTH: tl.constexpr,
    SOFTCAP: tl.constexpr,
    HAS_NLL: tl.constexpr,
    NEED_DX: tl.constexpr,
    NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr,
    FILTER: tl.constexpr,
    STORE_G: tl.constexpr,
    DOWNCAST: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
):
    r"""Per (row block, vocabulary block of the chunk [v0, v1)): recompute z, form G, accumulate dx, dW, db.

    Two uses. ``STORE_G``: write the chunk's G (in x's dtype; fp16 scaled by a power of
    two through the coefficients, see ``_linear_head._g_scale``) and stop; the host then forms dx += G W_chunk and dW_chunk = G^T x
    with cuBLAS (float32 accumulation, deterministic, each dW entry rounded
    once). Otherwise (the gradient filter): the fused form below, which skips
    the matmuls of the tiles the filter drops.

    With t = (1 - eps) e_y + eps / V and a = exp(z' - lse):

        G_ic = ce_i (a_ic - t_ic) + zc_i a_ic   [times sech^2(z_ic / cap)]
        G_iy = ce_i ((1 - eps)(a_iy - 1) + eps (a_iy - 1/V)) + zc_i a_iy,
        a_iy - 1 = expm1(-(lse_i - z_iy))   (Kahan's expm1, the forward's precise lse - z_y)

    where ce_i holds the reduction's scale, the upstream gradient and 0 for
    ignored rows, zc_i = 2 z_loss lse_i (its scale) likewise. Then
    dx[rows] += G W[cols], dW[cols] += G^T x[rows], db[cols] += sum_i G.
    The tile's G is rounded to the input dtype for the tensor-core matmuls (as
    torch's bf16 autograd rounds its logits gradient); in the fused form the
    products are accumulated in float32 with atomic adds (so the last bits
    depend on the order the tiles finish in).

    Gradient filtering (FILTER): a tile whose unscaled |a - t| (and z-loss
    term |a|) are all below filter_eps adds nothing to dx and dW; see
    :func:`softxent.kernels.triton._linear_head.linear_cross_entropy_triton` for the bound.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    rmask = rows < n_rows
    rows64 = rows.to(tl.int64)
    cols = v0 + pid_n * BN + tl.arange(0, BN)
    cmask = cols < v1
    inv_v = 1.0 / n_classes
    y = tl.load(y_ptr + rows64, mask=rmask, other=-1).to(tl.int64)
    lse = tl.load(lse_ptr + rows64, mask=rmask, other=0.0)
    ce = tl.load(ce_ptr + rows64, mask=rmask, other=0.0)
    zc = tl.load(zc_ptr + rows64, mask=rmask, other=0.0)
    lse = tl.where((ce != 0.0) | (zc != 0.0), lse, 0.0)  # ignored rows: coefficients 0, keep their lse out of exp
    z_raw = _logits_tile(
        x_ptr, w_ptr, b_ptr, rows64, rmask, cols, cmask, n_dim, stride_x, stride_w, HAS_BIAS, BM, BN, BK, UPCAST, IEEE
    )
    if SOFTCAP:
        z = _softcap(z_raw, cap)
    else:
        z = z_raw
    a = tl.exp(z - lse[:, None])
    is_y = cols[None, :] == y[:, None]
    if HAS_NLL:
        am1 = _expm1(-tl.load(nll_ptr + rows64, mask=rmask, other=0.0))[:, None]
    else:
        am1 = _expm1(z - lse[:, None])
    if SMOOTH:
        base = a - eps * inv_v
        lab = (1.0 - eps) * am1 + eps * (a - inv_v)
    else:
        base = a
        lab = am1
    u = tl.where(is_y, lab, base)  # a - t, unscaled
    g = ce[:, None] * u + zc[:, None] * a
    if SOFTCAP:
        g = g * _sech2(z_raw, cap)
    valid = rmask[:, None] & cmask[None, :]
    g = tl.where(valid & ((ce != 0.0) | (zc != 0.0))[:, None], g, 0.0)

    if STORE_G:
        if DOWNCAST:  # the interpreter truncates float32 -> bf16; the GPU rounds to nearest even
            g = _round_bf16(g)
        tl.store(g_ptr + rows64[:, None] * stride_g + (cols - v0)[None, :], g.to(g_ptr.dtype.element_ty), mask=valid)
    else:
        use_tile = True
        if FILTER:
            big = tl.where(valid & ((ce != 0.0) | (zc != 0.0))[:, None], tl.maximum(tl.abs(u), a), 0.0)
            use_tile = tl.max(tl.max(big, axis=1), axis=0) >= filter_eps
            if not use_tile:
                tl.atomic_add(flag_ptr, 1, sem="relaxed")
        if use_tile:
            if UPCAST:
                gd = g
            else:
                gd = g.to(x_ptr.dtype.element_ty)
            if NEED_DB:
                tl.atomic_add(db_ptr + (cols - v0), tl.sum(g, axis=0), mask=cmask, sem="relaxed")
            for k0 in range(0, n_dim, BK):
                ks = k0 + tl.arange(0, BK)
                kmask = ks < n_dim
                if NEED_DX:
                    wt = tl.load(
                        w_ptr + cols.to(tl.int64)[:, None] * stride_w + ks[None, :],
                        mask=cmask[:, None] & kmask[None, :],
                        other=0.0,
                    )
                    if UPCAST:
                        wt = wt.to(tl.float32)
                    if IEEE:
                        dxk = tl.dot(gd, wt, input_precision="ieee")
                    else:
                        dxk = tl.dot(gd, wt)
                    tl.atomic_add(
                        dx_ptr + rows64[:, None] * n_dim + ks[None, :],
                        dxk,
                        mask=rmask[:, None] & kmask[None, :],
                        sem="relaxed",
                    )
                if NEED_DW:
                    xt = tl.load(
                        x_ptr + rows64[:, None] * stride_x + ks[None, :],
                        mask=rmask[:, None] & kmask[None, :],
                        other=0.0,
                    )
                    if UPCAST:
                        xt = xt.to(tl.float32)
                    if IEEE:
                        dwk = tl.dot(tl.trans(gd), xt, input_precision="ieee")
                    else:
                        dwk = tl.dot(tl.trans(gd), xt)
                    tl.atomic_add(
                        dw_ptr + (cols - v0).to(tl.int64)[:, None] * n_dim + ks[None, :],
                        dwk,
                        mask=cmask[:, None] & kmask[None, :],
                        sem="relaxed",
                    )
