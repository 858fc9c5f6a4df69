r"""The blocked computation of the linear + cross-entropy head on the CPU and other non-Triton devices.

:func:`plan_blocks` sizes the blocks of rows (and, for huge vocabularies, of
classes) within a memory budget; :func:`_linear_xent` runs them: each block's
logits from a matmul, its loss and gradient rows from the fused backend (or
the plain-torch formulas), then dx, dW and db from that block of G, so the
(N, V) logits never exist. The design and its measurements are in
:mod:`softxent.torch._linear`, whose custom ops call :func:`_linear_xent`.

Column layout (CPU, class-index targets)
----------------------------------------
On the CPU a block of R rows is computed transposed, as :math:`Z^\top = W
X_b^\top` of shape (V, R): MKL runs that (V x d) @ (d x R) product as fast
as the unblocked (N x d) @ (d x V) one, while the (R x d) @ (d x V) product
of the row layout cost 35-40% more CPU time at R = 256 on 2 threads (and
its 2048-class panels as much; measured in one process, N=4096, d=1024,
V=32768 float32, per-thread CPU time with passive OpenMP waits so that a
shared host's load does not count). The gradient products read the same
buffer: :math:`dX_b = G^\top W` and :math:`dW \mathrel{+}= G X_b`, within a
few percent of the unblocked ones.

:func:`._linear_columns._xent_columns` (numba kernels on Python threads, one part of the
vocabulary at a time: numba's own parallel loops would bring a second OpenMP pool whose
spinning workers take cores from MKL's next product) computes each column's loss and log-sum-exp in
two sweeps: the column maxima, then :math:`e = \exp(z - m)` stored over the
logits with the sums, the top entries (:math:`z = m`) counted apart so that
:math:`\log s = \operatorname{log1p}(n_{\max} - 1 + r)` keeps confident
rows exact (tests/test_torch_linear_columns.py). It does not rewrite :math:`e` into
:math:`G`: :math:`G_{vr} = k_r e_{vr} - \sigma_r` with :math:`k_r = (c +
2 \lambda_z c_z \operatorname{lse}_r) s_r^{-1}` and the smoothing term
:math:`\sigma_r = c\,\varepsilon / V`, so the column scale is applied to
the (R, d) products instead (:math:`dX_b = \operatorname{diag}(k) E^\top
W - \sigma \mathbf{1}^\top W`, :math:`dW \mathrel{+}= E
(\operatorname{diag}(k) X_b) - \mathbf{1} \sigma^\top X_b`, the latter
rank-one term summed over the blocks and subtracted once): one sweep of the
(V, R) buffer fewer. The label's entry is stored as :math:`(g_y +
\sigma)/k`, with :math:`g_y` from :math:`\operatorname{expm1}(z_y -
\operatorname{lse})`, so that a confident row's tiny gradient does not
come out of a cancellation. Anything else (a NaN or a fully masked row, an
infinite loss) sends the block back to the row layout and its kernel, which
define those cases. Class weights, probability targets and ``softcap`` take
the row layout.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import kernels
from .._contract import grad_scale, keeps_rows
from ._backends import fused_backend
from ._linear_extras import check_sample_weight_values, lse_rows
from ._memory import empty
from ._reference import work_dtype
from ._validation import (
    check_index_target_values,
    check_prob_target_values,
    check_weight_values,
    first_masked_row,
    masked_row_error,
)

#: Memory budget of one block of logits (and the buffers beside it), in bytes,
#: when ``chunk_size=None``.
BLOCK_BYTES = 32 * 2**20
_MIN_ROWS = 32  # fewer rows than this per block: split the vocabulary instead
# Rows per block that keep the block's matmuls efficient. Every block reads
# all of W twice and updates all of dW, so a block of few rows is bound by
# that traffic, not by arithmetic: at N=2048, d=768, V=100277 (float32, 2
# cores) 83 rows per block (what 32 MiB holds) took 10.2 s for forward +
# backward, 256 rows 7.7 s, the naive head 8.7 s. Blocks grow to this many
# rows when that fits in _GROW budgets.
_FAST_ROWS = 256
_GROW = 4
_VOCAB_ALIGN = 256
# In the row layout (class weights, probabilities, softcap; see the module
# docstring for the column layout) a block's logits and its dx are computed
# in vocabulary panels of this many classes (W[c0:c1] is 8 MiB at d = 1024):
# measured about 12% faster than one (R, V) matmul on an idle host. dW is
# updated unsplit: its panels measured no faster.
_MM_PANEL = 2048
# The column layout for class-index targets on the CPU (False: row layout everywhere; tests compare both).
_COLUMN_LAYOUT = True


def plan_blocks(n_rows: int, n_classes: int, elem_bytes: int, n_buffers: int, chunk_size: int | None,
                budget: int | None = None) -> tuple[int, int]:  # fmt: skip
    """Rows per block and classes per vocabulary chunk.

    ``chunk_size`` given: that many rows, the whole vocabulary. Otherwise as
    many rows as fit ``budget`` bytes (default :data:`BLOCK_BYTES`) with
    ``n_buffers`` (rows, V) buffers alive at once, or up to 256 rows where
    those fit in four budgets (large vocabularies: see ``_FAST_ROWS``); when fewer than
    :data:`_MIN_ROWS` rows fit, blocks of that many rows and the vocabulary
    split into chunks that fit.
    """
    budget = BLOCK_BYTES if budget is None else budget
    if chunk_size is not None:
        return max(1, min(chunk_size, n_rows)), n_classes
    per_row = max(1, n_classes * elem_bytes * n_buffers)
    rows = max(budget // per_row, min(_FAST_ROWS, _GROW * budget // per_row))
    if rows >= min(_MIN_ROWS, n_rows):
        return max(1, min(rows, n_rows)), n_classes
    rows = min(_MIN_ROWS, n_rows)
    vocab = budget // (rows * elem_bytes * n_buffers) // _VOCAB_ALIGN * _VOCAB_ALIGN
    return rows, min(max(vocab, _VOCAB_ALIGN), n_classes)


# --------------------------------------------------------------------------- the blocked computation


def _torch_rows_block(
    xb: torch.Tensor, wc: torch.Tensor, bc: torch.Tensor | None, yb: torch.Tensor, cw: torch.Tensor | None, *,
    vocab: int, label_smoothing: float, z_loss: float, softcap: float | None, ce_scale: float, zl_scale: float,
    need_loss: bool, need_grad: bool, lse: torch.Tensor | None, row_grad: torch.Tensor | None, on_grad_chunk,
) -> tuple[torch.Tensor | None, torch.Tensor]:  # fmt: skip
    r"""One row block in plain torch, the vocabulary in chunks (online log-sum-exp).

    ``yb`` holds class indices (no ignored rows) or (R, V) probabilities;
    ``cw`` the class weights (V,) or None. Returns ``(loss_rows or None,
    lse)``, the loss rows scaled by ``ce_scale`` (cross-entropy) and
    ``zl_scale`` (z-loss); calls ``on_grad_chunk(c0, c1, G)`` with each
    chunk's gradient block when ``need_grad``.

    The effective target is that of torch's ``cross_entropy``:
    :math:`T_c = w_c((1-\varepsilon) y_c + \varepsilon / V)`, so the row's loss
    is :math:`S \operatorname{lse} - \sum_c T_c z_c` with :math:`S = \sum_c T_c`,
    and its gradient (eq. 15) :math:`a S - T`.
    """
    n_classes = wc.shape[0]
    eps = label_smoothing
    prob = yb.is_floating_point()
    dtype = xb.dtype
    chunks = [(c0, min(n_classes, c0 + vocab)) for c0 in range(0, n_classes, vocab)]

    def logits(c0: int, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
        pre = xb @ wc[c0:c1].t() if bc is None else torch.addmm(bc[c0:c1], xb, wc[c0:c1].t())
        return (softcap * torch.tanh(pre / softcap) if softcap is not None else pre), pre

    def dense_target(c0: int, c1: int) -> torch.Tensor | float:
        """The part of T on every class of the chunk: all of it for probabilities, the smoothing for indices."""
        if prob:
            t = yb[:, c0:c1].to(dtype) * (1.0 - eps) + eps / n_classes
            return t if cw is None else t * cw[c0:c1]
        if not eps:
            return 0.0
        return eps / n_classes if cw is None else (eps / n_classes) * cw[c0:c1]

    # S = sum_c T_c, from the targets alone (the backward of "none" has no first pass).
    if prob:
        w_all = torch.ones(n_classes, dtype=dtype, device=xb.device) if cw is None else cw
        s_row = (yb.to(dtype) * (1.0 - eps)) @ w_all + (eps / n_classes) * w_all.sum()
        w_y = None
    else:
        w_y = torch.ones_like(xb[:, 0]) if cw is None else cw[yb]
        s_row = (1.0 - eps) * w_y + (eps * (1.0 if cw is None else float(cw.sum()) / n_classes))

    kept_logits = None
    loss_rows = None
    if lse is None or need_loss:
        lse_acc = torch.full((xb.shape[0],), -math.inf, dtype=dtype, device=xb.device)
        tz = torch.zeros_like(lse_acc)  # sum_c T_c z_c
        for c0, c1 in chunks:
            z, pre = logits(c0, c1)
            lse_acc = torch.logaddexp(lse_acc, torch.logsumexp(z, dim=1))  # online log-sum-exp
            t = dense_target(c0, c1)
            if isinstance(t, torch.Tensor):
                # a class of target 0 adds nothing, even where its logit is -inf (masked)
                tz = tz + torch.where(t == 0, 0.0, t * z).sum(dim=1)
            elif t:
                tz = tz + t * z.sum(dim=1)
            if not prob:
                inside = (yb >= c0) & (yb < c1)
                local = (yb - c0).clamp(0, c1 - c0 - 1)
                tz = tz + torch.where(inside, (1.0 - eps) * w_y * z.gather(1, local[:, None])[:, 0], 0.0)
            if len(chunks) == 1:
                kept_logits = (z, pre)
        lse = lse_acc
        # eq. (7) with the effective target T: S lse - sum_c T_c z_c
        loss_rows = ce_scale * (s_row * lse - tz)
        if z_loss:
            loss_rows = loss_rows + zl_scale * z_loss * lse * lse
    if not need_grad:
        return loss_rows, lse
    a_coef = ce_scale * s_row + 2.0 * z_loss * zl_scale * lse  # multiplies softmax(z): CE and z-loss terms
    for c0, c1 in chunks:
        z, pre = kept_logits if kept_logits is not None else logits(c0, c1)
        p = torch.exp(z - lse[:, None])
        g = p * a_coef[:, None]
        t = dense_target(c0, c1)
        if isinstance(t, torch.Tensor) or t:
            g = g - ce_scale * t
        if not prob:
            rows = ((yb >= c0) & (yb < c1)).nonzero()[:, 0]
            cols = yb[rows] - c0
            p_y, wy = p[rows, cols], w_y[rows]
            t_y = (1.0 - eps) * wy
            # The label's entry p_y a - T_y, with p_y - 1 = expm1(z_y - lse) (no cancellation when p_y -> 1):
            # (1-eps) w_y (p_y - 1) + p_y (S - (1-eps) w_y) - (eps/V) w_y, plus the z-loss term.
            g[rows, cols] = (
                ce_scale * (t_y * torch.expm1(z[rows, cols] - lse[rows]) + p_y * (s_row[rows] - t_y)
                            - (eps / n_classes) * wy)
                + (a_coef[rows] - ce_scale * s_row[rows]) * p_y
            )  # fmt: skip
        if softcap is not None:
            g = g / torch.cosh(pre / softcap).square()  # chain rule: d tanh(u)/du = sech^2(u)
        if row_grad is not None:
            g = g * row_grad[:, None]
        on_grad_chunk(c0, c1, g)
    return loss_rows, lse


def _raise_masked_row(logits: torch.Tensor, yb: torch.Tensor, ignore_index: int, r0: int, idx) -> None:
    """Raise the front end's error if a row of the block's ``logits`` is -inf everywhere (else return)."""
    row = first_masked_row(logits, yb, ignore_index)
    if row is not None:
        row = r0 + row if idx is None else int(idx[r0 + row])
        raise masked_row_error(row, ignore_index, name="input @ linear_weight.T + linear_bias") from None


def _zeros_cpu(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return empty(shape, dtype).zero_()  # NumPy's allocator: huge pages, freed blocks reused (see _memory)


class _ColumnBlocks:
    """The column layout of one call (module docstring): its (V, R) buffer, the kernel, the smoothing's rank-one terms.

    :meth:`block` computes one block of rows and adds its gradients, or
    returns None for the row layout to redo the block (nothing added then).
    """

    def __init__(self, wc: torch.Tensor, bc: torch.Tensor | None, block_rows: int, *, label_smoothing: float,
                 z_loss: float, ce_scale: float, zl_scale: float, need_dx: bool, need_dw: bool) -> None:  # fmt: skip
        import numba

        from ._linear_columns import _xent_columns

        self.kernel = _xent_columns
        self.wc, self.bc = wc, bc
        self.opts = (float(label_smoothing), float(z_loss), float(ce_scale), float(zl_scale))
        n_classes, d = wc.shape
        self.flat = empty((n_classes * block_rows,), wc.dtype)  # each block's (V, r) view is contiguous
        # Two parts per thread: the column sweeps split the vocabulary between the threads.
        self.n_threads = numba.get_num_threads()
        self.n_parts = max(1, min(2 * self.n_threads, n_classes // 64))
        # sigma_r 1^T W for dX and sum_r sigma_r x_r for dW: the smoothing target's share of G.
        self.col_sum = wc.sum(dim=0) if (label_smoothing and need_dx) else None
        self.x_sum = torch.zeros(d, dtype=wc.dtype) if (label_smoothing and need_dw) else None

    def block(self, xb: torch.Tensor, yb: torch.Tensor, row_scale: torch.Tensor | None, need_grad: bool,
              dxb: torch.Tensor | None, dw: torch.Tensor | None, db: torch.Tensor | None):  # fmt: skip
        """Loss and lse rows (float64) of the block, its dX rows into ``dxb``, its share of dW and db."""
        wc, bc = self.wc, self.bc
        r = xb.shape[0]
        zt = self.flat[: wc.shape[0] * r].view(wc.shape[0], r)
        if bc is None:
            torch.mm(wc, xb.t(), out=zt)
        else:
            torch.addmm(bc[:, None], wc, xb.t(), out=zt)
        loss, lse, k, sub = (np.empty(r) for _ in range(4))
        scale = np.ones(r) if row_scale is None else row_scale.to(torch.float64).numpy()
        labels = yb.to(torch.int64).contiguous().numpy()
        if self.kernel(zt.numpy(), labels, *self.opts, scale, self.n_parts, loss, lse, k, sub, self.n_threads):
            return None
        if need_grad:
            k_t, sub_t = torch.from_numpy(k).to(wc.dtype), torch.from_numpy(sub).to(wc.dtype)
            if dxb is not None:  # diag(k) E'^T W - sigma 1^T W
                # As (W^T E')^T: 8% less CPU time than E'^T W straight into the rows (N=4096, V=32768).
                torch.mul(torch.mm(wc.t(), zt).t(), k_t[:, None], out=dxb)
                if self.col_sum is not None:
                    dxb.addr_(sub_t, self.col_sum, alpha=-1.0)
            if dw is not None:  # E' diag(k) X_b; the smoothing's - 1 sigma^T X_b once, in finish()
                dw.addmm_(zt, xb * k_t[:, None])
                if self.x_sum is not None:
                    self.x_sum.addmv_(xb.t(), sub_t)
            if db is not None:
                db.addmv_(zt, k_t)
                db -= sub_t.sum()
        return torch.from_numpy(loss), torch.from_numpy(lse)

    def finish(self, dw: torch.Tensor | None) -> None:
        if dw is not None and self.x_sum is not None:
            dw -= self.x_sum  # every class's row: - sum_r sigma_r x_r


def _columns_for(x: torch.Tensor, wd: torch.dtype, prob: bool, cw, softcap) -> bool:
    """Whether this call takes the column layout: CPU, class indices without class weights or cap, numba."""
    if not (_COLUMN_LAYOUT and x.device.type == "cpu" and not prob and cw is None and softcap is None):
        return False
    return kernels.cpu(np.dtype("float64" if wd == torch.float64 else "float32")) is not None  # else the reference


def _linear_xent(
    x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None, *,
    ignore_index: int, label_smoothing: float, z_loss: float, softcap: float | None, reduction: str,
    block_rows: int, block_vocab: int, need_dx: bool, need_dw: bool, need_db: bool,
    row_grad: torch.Tensor | None = None, saved_lse: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None, sample_weight: torch.Tensor | None = None, all_lse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Loss, per-row lse and the requested gradients of the blocked head (see the module docstring).

    ``target`` holds (N,) class indices or (N, V) probabilities;
    ``class_weight`` (V,) weighs the classes as torch's ``weight`` does;
    ``sample_weight`` (N,) weighs the rows (the rules of :mod:`._linear_extras`).
    ``row_grad`` (N,): the backward of ``reduction="none"``: gradients of
    ``sum_i row_grad[i] * loss[i]``, the loss itself not computed again.
    ``all_lse``: the log-sum-exp of the ignored rows too (else 0 there).
    """
    n_rows, _ = x.shape
    n_classes = weight.shape[0]
    wd = work_dtype(x.dtype)
    wc = weight if weight.dtype == wd else weight.to(wd)  # low precision: one float32 copy
    bc = None if bias is None else bias.to(wd)
    cw = None if class_weight is None else class_weight.to(wd)
    prob = target.is_floating_point()
    if cw is not None:
        check_weight_values(class_weight)
    check_sample_weight_values(sample_weight)
    if prob:
        check_prob_target_values(target)
        kept = None  # probabilities: every row counts (there is no ignore_index)
        all_kept = True
    else:
        check_index_target_values(target, n_classes, ignore_index)
        kept = target != ignore_index
        all_kept = bool(kept.all())
    idx = None if all_kept else kept.nonzero()[:, 0]
    n_kept = n_rows if all_kept else int(idx.numel())
    need_grad = need_dx or need_dw or need_db
    need_loss = row_grad is None

    # The contract's denominators: the cross-entropy's mean divides by the summed class
    # weight of the labels (the row count without class weights, and for probabilities,
    # as torch does), the z-loss's by the rows not ignored.
    # With sample weights each counted row adds its weight (times its label's class weight).
    sw_kept = None if sample_weight is None else sample_weight.to(torch.float64)
    if sw_kept is not None and idx is not None:
        sw_kept = sw_kept[idx]
    zl_denominator: float = n_kept if sw_kept is None else float(sw_kept.sum())
    ce_denominator = zl_denominator
    if cw is not None and not prob:
        labels = target if idx is None else target[idx]
        w_y = class_weight.to(torch.float64)[labels]
        ce_denominator = float(w_y.sum() if sw_kept is None else (w_y * sw_kept).sum())
    ce_scale = grad_scale(reduction, ce_denominator)
    zl_scale = grad_scale(reduction, zl_denominator)
    if x.device.type == "cpu":
        zeros = _zeros_cpu
    else:

        def zeros(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=x.device)

    dx = zeros(tuple(x.shape), wd) if need_dx else None
    dw = zeros(tuple(weight.shape), wd) if need_dw else None
    db = zeros((n_classes,), wd) if need_db else None
    loss_rows = torch.zeros(n_rows, dtype=torch.float64, device=x.device)
    lse_all = torch.zeros(n_rows, dtype=wd, device=x.device)
    rows_fn = fused_backend(x.device) if block_vocab >= n_classes else None
    use_kernel = rows_fn is not None
    panel = _MM_PANEL if x.device.type == "cpu" else n_classes
    panels = [(c0, min(n_classes, c0 + panel)) for c0 in range(0, n_classes, panel)]
    buf_shape = (min(block_rows, max(n_kept, 1)), n_classes)
    columns = None
    if use_kernel and _columns_for(x, wd, prob, cw, softcap):
        columns = _ColumnBlocks(
            wc, bc, buf_shape[0], label_smoothing=label_smoothing, z_loss=z_loss, ce_scale=ce_scale,
            zl_scale=zl_scale, need_dx=need_dx, need_dw=need_dw,
        )  # fmt: skip
    buf = None  # the row layout's buffer: allocated when a block needs it

    for r0 in range(0, n_kept, block_rows):
        r1 = min(n_kept, r0 + block_rows)
        rows = slice(r0, r1) if idx is None else idx[r0:r1]
        xb = x[rows].to(wd)
        yb = target[rows]
        sw_b = None if sample_weight is None else sample_weight[rows].to(wd)
        gb_rows = None if row_grad is None else row_grad[rows].to(wd)
        if sw_b is not None:  # the row's loss is weighted: so is its gradient
            gb_rows = sw_b if gb_rows is None else gb_rows * sw_b
        done = None
        if columns is not None:
            dxb = None if dx is None else (dx[rows] if idx is None else torch.empty_like(xb))
            done = columns.block(xb, yb, gb_rows, need_grad, dxb, dw, db)
            if done is not None:
                loss_b, lse_b = done
                lse_all[rows] = lse_b.to(wd)
                if need_loss:
                    loss_rows[rows] = loss_b if sw_b is None else loss_b * sw_b.to(loss_b.dtype)
                if dxb is not None and idx is not None:
                    dx[rows] = dxb
        if done is None and use_kernel:
            if buf is None:
                buf = (
                    empty(buf_shape, wd)
                    if x.device.type == "cpu"
                    else torch.empty(buf_shape, dtype=wd, device=x.device)
                )
            zb = buf[: r1 - r0]
            for c0, c1 in panels:
                if bc is None:
                    torch.mm(xb, wc[c0:c1].t(), out=zb[:, c0:c1])
                else:
                    torch.addmm(bc[c0:c1], xb, wc[c0:c1].t(), out=zb[:, c0:c1])
            # Loss rows and each row's own gradient, scaled for the mean over all blocks.
            try:
                loss_b, gb, lse_b = rows_fn(
                    zb, yb, cw, ignore_index=ignore_index, label_smoothing=label_smoothing, z_loss=z_loss,
                    softcap=softcap, reduction="none", need_grad=need_grad, need_lse=True, z_writable=True,
                    scale=(ce_scale, zl_scale),
                )  # fmt: skip
            except ValueError:
                # zb may hold part of the gradient now: rebuild the block's logits to name the row.
                pre = xb @ wc.t() if bc is None else torch.addmm(bc, xb, wc.t())
                _raise_masked_row(pre, yb, ignore_index, r0, idx)
                raise
            lse_all[rows] = lse_b.to(wd)
            if need_loss:
                loss_rows[rows] = loss_b if sw_b is None else loss_b * sw_b.to(loss_b.dtype)
            if need_grad:
                if gb_rows is not None:
                    gb.mul_(gb_rows[:, None])
                if dx is not None:
                    dxb = dx[rows] if idx is None else torch.zeros_like(xb)  # zeros: accumulated
                    for c0, c1 in panels:
                        dxb.addmm_(gb[:, c0:c1], wc[c0:c1])
                    if idx is not None:
                        dx[rows] = dxb
                if dw is not None:
                    dw.addmm_(gb.t(), xb)  # float32 (float64) accumulation over the blocks
                if db is not None:
                    db += gb.sum(dim=0)
        elif done is None:
            dxb = torch.zeros_like(xb) if need_dx else None

            def on_grad_chunk(c0, c1, g, xb=xb, dxb=dxb, db=db):
                if dxb is not None:
                    dxb.addmm_(g, wc[c0:c1])
                if dw is not None:
                    dw[c0:c1].addmm_(g.t(), xb)
                if db is not None:
                    db[c0:c1] += g.sum(dim=0)

            lb, lse_b = _torch_rows_block(
                xb, wc, bc, yb, cw, vocab=block_vocab, label_smoothing=label_smoothing, z_loss=z_loss,
                softcap=softcap, ce_scale=ce_scale, zl_scale=zl_scale, need_loss=need_loss,
                need_grad=need_grad, lse=None if saved_lse is None else saved_lse[rows].to(wd),
                row_grad=gb_rows, on_grad_chunk=on_grad_chunk,
            )  # fmt: skip
            if x.device.type == "cpu" and softcap is None and bool((lse_b == -math.inf).any()):
                # Only possible with infinite x or weight; on other devices a NaN row (no host sync).
                _raise_masked_row(torch.where(lse_b == -math.inf, -math.inf, 0.0)[:, None], yb, ignore_index, r0, idx)
            lse_all[rows] = lse_b
            if need_loss:
                loss_rows[rows] = lb.to(torch.float64) if sw_b is None else lb.to(torch.float64) * sw_b
            if dx is not None:
                dx[rows] = dxb
    if columns is not None:
        columns.finish(dw)
    if all_lse and idx is not None:
        # return_lse reports every row's log-sum-exp: the ignored rows' logits, once, for that alone.
        skipped = (~kept).nonzero()[:, 0]
        for r0 in range(0, int(skipped.numel()), block_rows):
            rows = skipped[r0 : r0 + block_rows]
            lse_all[rows] = lse_rows(x[rows].to(wd), wc, bc, softcap, block_vocab)
    loss = loss_rows if keeps_rows(reduction) else loss_rows.sum()
    dtype = x.dtype
    return (
        loss.to(dtype),
        lse_all,
        None if dx is None else dx.to(dtype),
        None if dw is None else dw.to(weight.dtype),
        None if db is None else db.to(bias.dtype),
    )
