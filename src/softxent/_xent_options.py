r"""The z-loss and soft-capping of :func:`softxent.softmax_cross_entropy`, around either computation.

With the cap :math:`z' = c \tanh(z / c)` (:math:`z' = z` without one), the
temperature :math:`T`, the effective target :math:`t` and the sample weight
:math:`s` of a row (:mod:`softxent._losses`), the row's loss is

.. math::

    \ell = s \sum_c t_c \bigl(\operatorname{lse} - z'_c / T\bigr)
           + s\, \lambda_z \operatorname{lse}^2 \,[\text{row not ignored}],
    \qquad \operatorname{lse} = \log \textstyle\sum_c e^{z'_c / T},

as :func:`softxent.torch._reference.cross_entropy_rows_reference` defines it
(that function is the definition; this is the same in NumPy). ``"mean"``
divides the cross-entropy part by the usual denominator and the z-loss part
by :math:`\sum s` over the rows not ignored (their count without sample
weights, as the torch front end does). By the chain rule, with
:math:`a = \operatorname{softmax}(z' / T)`:

.. math::

    \frac{\partial \ell}{\partial z}
        = \Bigl(\underbrace{\tfrac{s}{T}(a \textstyle\sum_c t_c - t)}_{\text{eq. (15), from the kernel}}
          + \tfrac{2 s \lambda_z \operatorname{lse}}{T}\, a\Bigr)
          \odot \operatorname{sech}^2(z / c)

So the loss and the first term come from the unchanged computation (the
fused kernel or the exact NumPy path) run on :math:`z'`; the kernels already
return the per-row log-sum-exp, and one pass over the gradient here adds the
z-loss term and the cap's factor. Calls without these options never come
here: their cost is unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import _contract, kernels
from ._contract import XentOptions
from ._softmax_paths import _all_masked_error, _kernel_softmax_xent, _reference_softmax_xent
from ._validation import compute_dtype
from ._xent_common import Labels

__all__ = ["softmax_xent_options"]

# Rows per slice of the elementwise pass: about 1 Mi float64 temporaries, in cache.
_SLICE_ELEMENTS = 1 << 20


def _cap(z: np.ndarray, softcap: float) -> np.ndarray:
    """:math:`c \\tanh(z / c)` in ``z``'s dtype, a new array (``-inf`` becomes ``-c``)."""
    out = np.divide(z, softcap)
    np.tanh(out, out=out)
    out *= softcap
    return out


def _sech2(u: np.ndarray) -> np.ndarray:
    """:math:`\\operatorname{sech}^2(u) = 1 / \\cosh^2(u)` (float64), NaN as 0."""
    # Not 1 - tanh(u)^2: that rounds to 0 once tanh(u) rounds to 1 (|u| > 19 in
    # float64), while 1/cosh^2 keeps its tiny value; cosh overflow gives 1/inf = 0.
    with np.errstate(over="ignore", invalid="ignore"):
        c = np.cosh(u)
        return np.nan_to_num(1.0 / (c * c), nan=0.0)


def _post_pass(
    g2: np.ndarray, z2: np.ndarray, lse: np.ndarray, coef: np.ndarray | None, softcap: float | None, temperature: float
) -> None:
    """In place on the (N, V) gradient ``g2`` with respect to :math:`z'`: add
    ``coef * softmax(z' / T)`` (the z-loss), then multiply by
    :math:`\\operatorname{sech}^2(z / c)` (the cap). ``z2`` holds the raw
    logits; :math:`z'` is rebuilt from them slice by slice."""
    n_rows, n_classes = g2.shape
    step = max(1, _SLICE_ELEMENTS // max(n_classes, 1))
    for r0 in range(0, n_rows, step):
        r1 = min(n_rows, r0 + step)
        z = z2[r0:r1].astype(np.float64)
        g = g2[r0:r1].astype(np.float64)
        if coef is not None:
            zc = z if softcap is None else _cap(z, softcap)
            c = coef[r0:r1, None]
            with np.errstate(invalid="ignore", over="ignore"):
                a = np.exp(zc / temperature - lse[r0:r1, None])
                # Ignored rows have coef 0 but may hold -inf/NaN logits: their term is 0, not 0 * NaN.
                g += np.where(c != 0.0, c * a, 0.0)
        if softcap is not None:
            g *= _sech2(z / softcap)
        g2[r0:r1] = g


def softmax_xent_options(
    arr: np.ndarray, ax: int, lab: Labels, weight: np.ndarray | None, sample_weight: np.ndarray | None,
    opts: XentOptions, denominator: float, grad_scale: float, kern: Any, inv_t: float | None,
    need_grad: bool, effective_target: Any, z_weight: np.ndarray | None = None,
) -> tuple[np.ndarray | float, np.ndarray | None, np.ndarray]:  # fmt: skip
    """Loss (reduced, float64), gradient (``arr``'s shape and dtype, or None) and lse (batch shape, float64).

    ``inv_t`` is the kernels' ``1/T`` when they run this call (None: the exact
    path); ``effective_target(lab)`` gives the exact path's dense target;
    ``z_weight`` replaces the sample weight in the z-loss term.
    """
    c, lam, temperature, reduction = opts.softcap, opts.z_loss, opts.temperature, opts.reduction
    n_classes = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    n_rows = math.prod(batch)
    # The z-loss weight of each row: its sample weight if not ignored (probability labels: every row).
    row_w = sample_weight if z_weight is None else z_weight
    zw = np.ones(n_rows) if row_w is None else row_w.reshape(-1).astype(np.float64)
    if lab.index is not None:
        zw = np.where(lab.index.reshape(-1) >= 0, zw, 0.0)
    zl_scale = _contract.grad_scale(reduction, float(zw.sum()))

    if inv_t is not None:  # the fused kernel on the (N, V) rows of z'
        z2 = kernels.as_rows(arr, ax)
        src, src_ax = (_cap(z2, c), 1) if c is not None else (arr, ax)
        g2 = None
        if need_grad:  # the capped copy is ours to overwrite; the raw logits are needed after
            g2 = src if c is not None else np.empty(z2.shape, dtype=arr.dtype)
        loss_rows, lse, total = _kernel_softmax_xent(
            kern, src, src_ax, lab, weight, opts.label_smoothing, sample_weight, inv_t, grad_scale,
            g2, opts.ignore_index, keep_rows=True, keep_lse=True,
        )  # fmt: skip
        loss_rows, lse = loss_rows.reshape(-1), lse.reshape(-1)
    else:  # the exact path, float64, classes last
        z = np.moveaxis(arr.astype(compute_dtype(arr.dtype)), ax, -1)
        u = z if c is None else _cap(z, c)
        scale = np.ones(batch) if sample_weight is None else sample_weight
        loss_rows, grad, lse = _reference_softmax_xent(
            u, effective_target(lab), scale, temperature, grad_scale, need_grad, opts.ignore_index
        )
        loss_rows, lse = loss_rows.reshape(-1), lse.reshape(-1)
        total = float(loss_rows.sum())
        z2 = z.reshape(n_rows, n_classes)
        g2 = None if grad is None else grad.reshape(n_rows, n_classes)

    if lam:
        bad = (zw > 0) & (lse == -np.inf)  # a row the z-loss needs is masked everywhere
        if bad.any():
            raise _all_masked_error(int(np.flatnonzero(bad)[0]), batch, opts.ignore_index)
        with np.errstate(over="ignore", invalid="ignore"):
            z_rows = np.where(zw > 0, lam * zw * lse * lse, 0.0)
    loss = _contract.reduce_rows(loss_rows.reshape(batch), total, denominator, reduction)
    if lam:
        loss = loss + (z_rows.reshape(batch) if _contract.keeps_rows(reduction) else float(z_rows.sum()) * zl_scale)

    grad_out = None
    if g2 is not None:
        if not grad_scale:
            g2[...] = 0.0  # a mean over no counted row: its cross-entropy gradient is 0, not 0/0
        coef = None
        if lam:
            with np.errstate(over="ignore", invalid="ignore"):
                coef = np.where(zw > 0, (2.0 * lam * zl_scale / temperature) * zw * lse, 0.0)
        _post_pass(g2, z2, lse, coef, c, temperature)
        if inv_t is not None:
            grad_out = kernels.from_rows(g2, arr.shape, ax)
        else:
            grad_out = np.moveaxis(g2.reshape(batch + (n_classes,)), -1, ax).astype(arr.dtype, copy=False)
    return loss, grad_out, lse.reshape(batch)
