r"""Row statistics: the per-row state of an online softmax and the rule that merges two states.

Framework-free: every function takes the array namespace ``xp`` (``numpy`` or
``torch``; only ``amax``, ``sum``, ``where``, ``exp``, ``log``, ``log1p``,
``maximum``, ``isfinite``, ``arange`` and ``zeros_like`` are used), so the
NumPy tests check the same code that :mod:`softxent.torch.distributed` runs
on tensors.

The state of a part
-------------------
Split the classes of a row of (soft-capped) logits :math:`z` into parts
:math:`P` (vocabulary chunks, the slices of the ranks of a tensor-parallel
group). With class weights :math:`w_c` (all 1 without weights) and the
label :math:`y`, the state of a part is

.. math::

    m &= \max_{c \in P} z_c \quad (-\infty \text{ for an empty or fully masked part, NaN with a NaN}), \\
    \sigma &= \text{the shift}: m \text{ where finite, else } 0, \\
    S &= \sum_{c \in P} e^{z_c - \sigma} = \text{lead} + \text{rest}, \\
    \text{label} &= z_y \text{ if } y \in P \text{ else } 0, \qquad
    \text{label\_weight} = w_y \text{ if } y \in P \text{ else } 0, \\
    \text{dot} &= \sum_{c \in P} w_c (z_c - \sigma) \text{ (classes of weight 0 left out)}, \qquad
    \text{total} = \sum_{c \in P} w_c.

:math:`S` is kept in two parts: ``lead``, the terms equal to exactly 1 (those
of the maximum), and ``rest``, all the others. For a confident row ``rest``
is ~1e-12, which ``1 + rest`` would round away (in float32 entirely, in
float64 to 4 digits); :math:`\log S = \operatorname{log1p}((\text{lead} - 1)
+ \text{rest})` keeps it, and with it the label's tiny gradient entry
:math:`\operatorname{expm1}(z_y - \operatorname{lse})`.

The merge
---------
Two states of disjoint parts of the same rows merge into the state of their
union (:func:`merge`): with :math:`m = \max(m_1, m_2)` and its shift
:math:`\sigma`,

.. math::

    S = S_1 e^{\sigma_1 - \sigma} + S_2 e^{\sigma_2 - \sigma}, \qquad
    \text{dot} = \textstyle\sum_i \bigl(\text{dot}_i + \text{total}_i (\sigma_i - \sigma)\bigr),

and ``label``, ``label_weight`` and ``total`` add (the label lies in one part,
the others hold 0). A part whose shift is the new one keeps its ``lead``;
the others' whole sum joins ``rest``; a part with :math:`S_i = 0` (masked)
adds 0, not :math:`0 \cdot e^{\infty}`. The merge is the identity for the
state of an empty part, commutative, and associative up to rounding. It is
two steps: :func:`rebase` each state to the common maximum, then :func:`add`
the fields, which is exactly what a process group does with one all-reduce
``MAX`` of :math:`m` and one all-reduce ``SUM`` of the rebased fields.

What the merged state of the whole row gives
--------------------------------------------
(:func:`log_sum`, :func:`lse`) every term is a difference of shifted values,
never :math:`\operatorname{lse} - z` of two large numbers:

.. math::

    \operatorname{lse} = \sigma + \log S, \qquad
    \operatorname{lse} - z_y = \log S - (\text{label} - \sigma), \qquad
    \sum_c w_c (\operatorname{lse} - z_c) = \text{total} \cdot \log S - \text{dot},

the label's loss (eq. 7 with eq. 8) and the label-smoothing sum; the loss of
:math:`t = (1-\varepsilon) w_y e_y + \tfrac{\varepsilon}{V} w` is
:math:`(1-\varepsilon) w_y (\operatorname{lse} - z_y) + \tfrac{\varepsilon}{V}
\sum_c w_c (\operatorname{lse} - z_c)`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["RowStats", "add", "label_loss", "log_sum", "lse", "merge", "of_part", "rebase", "shift_of", "smooth_loss"]


class RowStats(NamedTuple):
    """The state of one part of each row (arrays of shape (R,); see the module docstring)."""

    m: Any  # max_c z_c over the part
    lead: Any  # the terms of S equal to exactly 1 (the maximum's), relative to shift_of(m)
    rest: Any  # the other terms of S
    label: Any  # z_y where the part holds the label, else 0 (not shifted)
    label_weight: Any  # w_y where the part holds the label, else 0
    dot: Any | None  # sum_c w_c (z_c - shift_of(m)); None where not needed (no label smoothing)
    total: Any  # sum_c w_c over the part


def shift_of(m: Any, xp: Any) -> Any:
    """The reference point of a state: its maximum where finite, else 0 (so that exp(-inf - 0) = 0)."""
    return xp.where(xp.isfinite(m), m, 0.0)


def rebase(st: RowStats, m: Any, xp: Any) -> RowStats:
    """``st`` relative to the maximum ``m`` of a larger part (``m >= st.m``)."""
    own, shift = shift_of(st.m, xp), shift_of(m, xp)
    same = own == shift
    s = st.lead + st.rest
    moved = xp.where(s == 0, 0.0, s * xp.exp(own - shift))  # a masked part adds 0, not 0 * inf
    dot = None if st.dot is None else st.dot + st.total * (own - shift)
    return st._replace(m=m, lead=xp.where(same, st.lead, 0.0), rest=xp.where(same, st.rest, moved), dot=dot)


def add(a: RowStats, b: RowStats) -> RowStats:
    """Two states rebased to the same maximum: every field but ``m`` adds."""
    return RowStats(a.m, *(None if u is None else u + v for u, v in zip(a[1:], b[1:])))


def merge(a: RowStats, b: RowStats, xp: Any) -> RowStats:
    """The state of the union of two disjoint parts of the same rows."""
    m = xp.maximum(a.m, b.m)
    return add(rebase(a, m, xp), rebase(b, m, xp))


def log_sum(st: RowStats, xp: Any) -> Any:
    """log S, as log1p((lead - 1) + rest) when the maximum's term is there (exact for a confident row)."""
    return xp.where(st.lead >= 1, xp.log1p((st.lead - 1.0) + st.rest), xp.log(st.lead + st.rest))


def lse(st: RowStats, xp: Any) -> Any:
    """The log-sum-exp of the part (of the row, for the merged state)."""
    return shift_of(st.m, xp) + log_sum(st, xp)


def label_loss(st: RowStats, xp: Any) -> Any:
    """lse - z_y from shifted values (the merged state of the whole row)."""
    return log_sum(st, xp) - (st.label - shift_of(st.m, xp))


def smooth_loss(st: RowStats, xp: Any) -> Any:
    """sum_c w_c (lse - z_c) = total * log S - dot (the merged state of the whole row)."""
    return st.total * log_sum(st, xp) - st.dot


def of_part(z: Any, col: Any, xp: Any, weight: Any = None, smooth: bool = True) -> RowStats:
    """The state of (R, C) logits ``z`` (C may be 0); ``col`` (R,) the label's column in the part, or -1.

    ``weight`` (C,): class weights, or None. A plain reference (it allocates
    (R, C) temporaries); :mod:`softxent.torch.distributed` computes the same
    state in place.
    """
    n_rows, width = z.shape
    owned = col >= 0
    c = xp.where(owned, col, 0)
    zero = xp.sum(z[:, :0], axis=1)  # (R,) zeros of z's dtype
    if width == 0:
        return RowStats(zero - float("inf"), zero, zero, zero, zero, zero if smooth else None, zero)
    m = xp.amax(z, axis=1)
    d = z - shift_of(m, xp)[:, None]
    top = d == 0  # the terms exp(0) = 1 exactly
    lead = xp.sum(top, axis=1) + zero
    rest = xp.sum(xp.where(top, 0.0, xp.exp(d)), axis=1)
    label = xp.where(owned, z[xp.arange(n_rows), c], 0.0)
    label_weight = xp.where(owned, 1.0 if weight is None else weight[c], 0.0)
    if not smooth:
        dot = None
    elif weight is None:
        dot = xp.sum(d, axis=1)
    else:
        dot = xp.sum(xp.where(weight > 0, weight * d, 0.0), axis=1)
    total = zero + (float(width) if weight is None else xp.sum(weight))
    return RowStats(m, lead, rest, label, label_weight + zero, dot, total)
