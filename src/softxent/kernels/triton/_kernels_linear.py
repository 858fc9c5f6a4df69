r"""The linear + cross-entropy head's kernels: :func:`lce_forward_kernel` (each vocabulary split's online
statistics of logit tiles computed on chip, never stored) and :func:`lce_backward_kernel` (the tiles again,
G, then G to cuBLAS or the fused products of the gradient filter), over the tile product
:func:`_logits_tile`.

Launched by :mod:`._linear_head` (its tiles from :func:`._linear_head._lce_blocks`). The notation, the
precision rules and the online (max, s') update it shares with the cross-entropy kernel are in
:mod:`._kernels_common`.
"""

from __future__ import annotations

from ._kernels_common import _expm1, _online_update, _round_bf16, _sech2, _softcap, tl, triton


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
