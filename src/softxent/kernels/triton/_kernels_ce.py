r"""The cross-entropy kernel on given logits, :func:`ce_kernel`: loss, log-sum-exp and gradient of (M, C)
rows, ROWS rows per program, in two sweeps over each row.

Launched by :func:`._cross_entropy.cross_entropy_rows` (its tiles from
:func:`._cross_entropy.ce_launch_config`). The notation, the precision rules and the online
(max, s') update it shares with the linear head are in :mod:`._kernels_common`; its loss-setting
exponentials are libdevice's when compiled (``PRECISE=True`` there).
"""

from __future__ import annotations

from ._kernels_common import (
    _lane_merge,
    _lane_update,
    _log1p,
    _online_update,
    _round_bf16,
    _sech2,
    _softcap,
    tl,
    triton,
)


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
    scale_ptr,  # (2,) in ACC on the device: ce_scale, zl_scale (mean denominators)
    n_rows,
    n_classes,
    ignore_index,
    eps: tl.float64,  # float64 arguments, cast to ACC below: a Python float would reach the kernel as float32,
    z_loss: tl.float64,  # and float64 logits would see z_loss = 0.01 rounded (2e-10 relative)
    cap: tl.float64,
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
    LANES: tl.constexpr = False,  # per-lane state and sums, reduced once per row (see below)
    EXP: tl.constexpr = 1,  # pass 1's exponentials: _kernels_common._exp_sum_term's PRECISE (1: libdevice)
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

    LANES (rows of several tiles; the default there since the second H200 sweep, 8% faster than
    per tile): every element of the (ROWS, BLOCK) tile keeps its own running (max, s') and partial sums
    across the tiles of a row (:func:`._kernels_common._lane_update`), and they are reduced across
    the tile once per row (:func:`._kernels_common._lane_merge`), not once per tile: the loops over
    a row then hold no shuffle or barrier, only loads, exponentials and arithmetic. Without LANES
    each tile is reduced as it comes.
    """
    eps = tl.full((), eps, ACC)  # not tl.cast: the interpreter would round a Python float to float32 first
    z_loss = tl.full((), z_loss, ACC)
    cap = tl.full((), cap, ACC)
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
        if LANES:  # per-lane state and partial sums, reduced after the loop
            m_v = tl.full((ROWS, BLOCK), ninf, ACC)
            s_v = tl.zeros((ROWS, BLOCK), ACC)
            t_v = tl.zeros((ROWS, BLOCK), ACC)
            w_v = tl.zeros((ROWS, BLOCK), ACC)
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
            if LANES:
                m_v, s_v = _lane_update(z, m_v, s_v, EXP)  # NaN makes its lane's s_v NaN
            else:
                m, sp = _online_update(z, m, sp, EXP)
                n_nan += tl.sum(tl.where(z != z, 1, 0), axis=1)  # max may skip NaN: count it
            if HAS_WEIGHT:
                wc = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(ACC)
            if PROB:
                p = tl.load(y_ptr + rows64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(ACC)
                t = (1.0 - eps) * p + eps * inv_c if SMOOTH else p
                if HAS_WEIGHT:
                    t = t * wc[None, :]
                if LANES:
                    t_v += tl.where(mask, t, 0.0)
                else:
                    t_sum += tl.sum(tl.where(mask, t, 0.0), axis=1)
            elif SMOOTH and HAS_WEIGHT:
                if LANES:
                    w_v += tl.where(mask, wc[None, :] + tl.zeros((ROWS, BLOCK), ACC), 0.0)
                else:
                    w_sum += tl.sum(tl.where(mask, wc[None, :] + tl.zeros((ROWS, BLOCK), ACC), 0.0), axis=1)
        if LANES:
            m, sp = _lane_merge(m_v, s_v)
            n_nan = tl.where(sp != sp, 1, 0)
            if PROB:
                t_sum = tl.sum(t_v, axis=1)
            elif SMOOTH and HAS_WEIGHT:
                w_sum = tl.sum(w_v, axis=1)

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
            if LANES:
                ce_v = tl.zeros((ROWS, BLOCK), ACC)
                smooth_v = tl.zeros((ROWS, BLOCK), ACC)
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
                    if LANES:  # 0 * inf = 0: no mass, no term
                        ce_v += tl.where(t > 0, t * d, 0.0)
                    else:
                        ce_row += tl.sum(tl.where(t > 0, t * d, 0.0), axis=1)
                elif SMOOTH:
                    if HAS_WEIGHT:
                        wsm = wc[None, :] + tl.zeros((ROWS, BLOCK), ACC)
                    else:
                        wsm = tl.full((ROWS, BLOCK), 1.0, ACC)
                    wsm = tl.where(mask, wsm, 0.0)
                    if LANES:
                        smooth_v += tl.where(wsm > 0, wsm * d, 0.0)
                    else:
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
            if LANES:
                if PROB:
                    ce_row += tl.sum(ce_v, axis=1)
                elif SMOOTH:
                    smooth += tl.sum(smooth_v, axis=1)
            if SMOOTH and not PROB:
                ce_row += tl.where(kept, eps * inv_c * smooth, 0.0)

        ce_row = tl.where(ce_on, ce_row, 0.0)
        if not PROB:
            ce_row = tl.where(kept & (y_safe != y), float("nan"), ce_row)  # bad class index: NaN, not a wrong number
        loss = ce_row * ce_scale
        if ZLOSS:
            loss += tl.where(kept, z_loss * lse * lse, 0.0) * zl_scale
        tl.store(loss_ptr + rows, loss, mask=rmask)
