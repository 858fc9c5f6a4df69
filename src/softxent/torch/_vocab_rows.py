"""The per-row work of the vocabulary-parallel losses: each rank's row state, its merge across ranks, the loss
and the gradient plan from the merged state, and a rank's slice of the gradient.

The state and its merge rule are :mod:`softxent._rowstats`; this module applies them to torch tensors
of one rank's vocabulary slice and all-reduces them over the group (one MAX, then one SUM).
:mod:`softxent.torch.distributed` builds its autograd Functions from these pieces.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from .. import _rowstats as rs
from .._contract import XentOptions, grad_scale, keeps_rows, reduce_total
from ._memory import empty
from ._validation import masked_row_error

_F64 = torch.float64
# Rows per slice of the soft-cap's chain rule: about 4 MiB of float32 temporaries, in cache.
_SLICE_ELEMENTS = 1 << 20


def _new(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # On the CPU from NumPy's allocator: huge pages for large buffers, freed blocks reused (see _memory).
    return empty(shape, dtype) if device.type == "cpu" else torch.empty(shape, dtype=dtype, device=device)


def _local_state(
    src: torch.Tensor, buf: torch.Tensor, y_loc: torch.Tensor, w: torch.Tensor | None, smooth: bool
) -> tuple[rs.RowStats, torch.Tensor]:
    """The state (float64) of the (R, Vc) soft-capped logits ``src``; ``buf`` receives ``exp(src - shift)``.

    In place: one (R, Vc) buffer, ``buf``, which may be ``src`` itself.
    ``y_loc`` (R,) is the target's column in this slice, or -1.
    """
    m, at = src.max(dim=1)  # one read: the maximum and where it is (its term is the lead)
    m, at = m.to(_F64), at[:, None]
    owned = y_loc >= 0
    col = y_loc.clamp(min=0)[:, None]
    label = torch.where(owned, src.gather(1, col)[:, 0].to(_F64), 0.0)
    label_w = owned.to(_F64) if w is None else torch.where(owned, w[col[:, 0]].to(_F64), 0.0)
    shift = rs.shift_of(m, torch).to(src.dtype)[:, None]
    buf = src.sub_(shift) if buf is src else torch.sub(src, shift, out=buf)
    dot = None
    if smooth:  # sum_c w_c (z'_c - shift), classes of weight 0 left out (a masked class adds 0, not NaN)
        positive = None if w is None or bool((w > 0).all()) else w > 0
        dot = buf.sum(dim=1) if w is None else buf @ w if positive is None else buf[:, positive] @ w[positive]
        dot = dot.to(_F64)
    buf.exp_()
    lead = buf.gather(1, at)
    buf.scatter_(1, at, 0.0)  # the maximum's 1 left out of the rest ...
    rest = buf.sum(dim=1).to(_F64)  # (torch's CPU sum is cascaded: no drift over 10^5 terms)
    buf.scatter_(1, at, lead)  # ... and put back
    total = torch.full_like(m, float(src.shape[1]) if w is None else float(w.to(_F64).sum()))
    return rs.RowStats(m, lead[:, 0].to(_F64), rest, label, label_w, dot, total), buf


def _merge_ranks(st: rs.RowStats, group: Any) -> rs.RowStats:
    """The state of the whole rows, on every rank: MAX of the maxima, then one SUM of the rebased fields."""
    m = st.m.clone()
    if m.numel():
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
    st = rs.rebase(st, m, torch)
    packed = torch.stack([f for f in st[1:] if f is not None], dim=1)
    if packed.numel():
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    out = iter(packed.unbind(1))
    return rs.RowStats(m, *(None if f is None else next(out) for f in st[1:]))


class _Plan(NamedTuple):
    """Per-row factors of the gradient (float64, (N,)); the same on every rank."""

    lse: torch.Tensor
    coef: torch.Tensor  # multiplies a_c = exp(z'_c - lse): ce * sum(t) + zl * 2 lambda lse
    smooth_coef: torch.Tensor | None  # multiplies -w_c: ce * eps / V
    label: torch.Tensor  # the target's entry of the gradient
    live: torch.Tensor  # rows with a loss term (others get gradient 0)


def _loss_and_plan(g: rs.RowStats, kept: torch.Tensor, n_total: int, o: XentOptions, name: str):
    """The loss (0-d, or (N,) for ``"none"``, float64) and the gradient plan of the merged state ``g``."""
    eps, lam = o.label_smoothing, o.z_loss
    log_s = rs.log_sum(g, torch)
    lse = rs.shift_of(g.m, torch) + log_s
    w_y = g.label_weight
    t_sum = (1.0 - eps) * w_y + (eps / n_total) * g.total
    counts = kept & (t_sum > 0)
    live = kept if lam else counts
    masked = live & (g.lead + g.rest == 0)
    if bool(masked.any()):
        raise masked_row_error(int(masked.nonzero()[0, 0]), o.ignore_index or 0, name=name)
    nll = rs.label_loss(g, torch)
    rows = torch.where(w_y > 0, (1.0 - eps) * w_y * nll, 0.0)
    if eps:
        rows = rows + torch.where(kept, (eps / n_total) * rs.smooth_loss(g, torch), 0.0)
    rows = torch.where(counts, rows, 0.0)
    z_rows = torch.where(kept, lam * lse * lse, 0.0) if lam else None
    den, n_kept = float(w_y.sum()), float(kept.sum())  # the denominators of a mean
    if keeps_rows(o.reduction):
        loss = rows if z_rows is None else rows + z_rows
    else:
        loss = reduce_total(rows.sum(), den, o.reduction)
        if z_rows is not None:
            loss = loss + reduce_total(z_rows.sum(), n_kept, o.reduction)
    ce = counts.to(_F64) * grad_scale(o.reduction, den)  # (torch.where of two numbers would be float32)
    zl = torch.where(kept, (2.0 * lam * grad_scale(o.reduction, n_kept)) * lse, 0.0) if lam else 0.0
    # The target's entry a_y (sum t) - t_y with a_y - 1 = expm1(z'_y - lse): no cancellation as a_y -> 1.
    a_y = torch.exp(-nll)
    label = ce * ((1.0 - eps) * w_y * torch.expm1(-nll) + (eps / n_total) * (g.total * a_y - w_y)) + zl * a_y
    smooth_coef = ce * (eps / n_total) if eps else None
    return loss, _Plan(lse, ce * t_sum + zl, smooth_coef, label, live)


def _scaled(plan: _Plan, rows: Any, scale: torch.Tensor | None = None) -> _Plan:
    """The plan of some rows, optionally times a per-row factor (the backward of ``"none"``)."""
    p = _Plan._make(None if t is None else t[rows] for t in plan)
    if scale is None:
        return p
    sc = None if p.smooth_coef is None else p.smooth_coef * scale
    return p._replace(coef=p.coef * scale, label=p.label * scale, smooth_coef=sc)


def _softmax_factor(plan: _Plan, st: rs.RowStats) -> torch.Tensor:
    """Turns exp(z' - shift) into coef * a: coef * exp(shift - lse); 0 for a row masked in the whole slice."""
    return torch.where(st.lead + st.rest == 0, 0.0, plan.coef * torch.exp(rs.shift_of(st.m, torch) - plan.lse))


def _grad_slice(e, factor, plan: _Plan, y_loc, c0: int, w, pre, softcap: float | None) -> torch.Tensor:
    """In place: ``e`` (R, Vc) = exp(z' - s) of classes [c0, c0 + Vc) becomes dL/dz of those entries.

    ``factor`` (R,) = coef * exp(s - lse); ``pre`` the logits before the
    soft-cap (for its chain rule; converted to ``e``'s dtype slice by slice).
    """
    e.mul_(factor.to(e.dtype)[:, None])  # coef * a_c
    if plan.smooth_coef is not None:
        sc = plan.smooth_coef.to(e.dtype)
        if w is None:
            e.sub_(sc[:, None])  # - ce eps/V
        else:
            e.addr_(sc, w[c0 : c0 + e.shape[1]], alpha=-1.0)  # - ce eps/V w_c
    rows = ((y_loc >= c0) & (y_loc < c0 + e.shape[1])).nonzero()[:, 0]
    e[rows, y_loc[rows] - c0] = plan.label[rows].to(e.dtype)
    if not bool(plan.live.all()):
        e.masked_fill_(~plan.live[:, None], 0.0)  # ignored rows: 0, even if they hold -inf or NaN
    if softcap is not None:  # chain rule of z' = c tanh(z / c): times sech^2(z / c), in slices
        step = max(1, _SLICE_ELEMENTS // max(e.shape[1], 1))
        for r0 in range(0, e.shape[0], step):
            r1 = min(e.shape[0], r0 + step)
            # d tanh(u)/du = sech^2(u) = 1/cosh^2(u), not 1 - tanh^2(u): the latter rounds
            # to 0 once tanh(u) rounds to 1; cosh overflow gives 1/inf = 0, right.
            u = pre[r0:r1].to(e.dtype) / softcap
            e[r0:r1].mul_(u.cosh_().reciprocal_().square_().nan_to_num_(nan=0.0))
    return e


def _local_columns(target: torch.Tensor, kept: torch.Tensor, start: int, width: int) -> torch.Tensor:
    """The target's column in this rank's slice, or -1 (another rank's class, or an ignored row)."""
    return torch.where(kept & (target >= start) & (target < start + width), target - start, -1)


# --------------------------------------------------------------------------- logits form
