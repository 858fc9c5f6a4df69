r"""The loss contract: the options of softmax cross-entropy, their checks and texts, and the shared rules.

Framework-free (NumPy and the standard library only), so that every front end
and every backend can import it.

How a call flows
----------------
::

    front end                      contract                    backend (one entry point a family)   kernel
    sx.softmax_cross_entropy  ─┐                               ┌ CPU: _fused.softmax_xent_rows  ─> numba (or the
    softxent.torch (CPU)       ├─> XentOptions.build(...)  ─>  │      (z-loss/cap: _xent_options)    exact NumPy path)
    estimators (sigmoid:       │   (checks, error texts)       ├ CUDA: kernels.triton (host code) ─> Triton
      _sigmoid_xent.sigmoid_xent_total)                        └ other devices: torch/_reference (plain torch)
    torch.distributed losses  ─┘   rows reduced by the rules here; row states merged by softxent._rowstats

1. A front end takes its own argument names (PyTorch's for ``softxent.torch``,
   NumPy's for ``softxent``), converts framework scalars to Python numbers,
   and calls :meth:`XentOptions.build`. That is the only place the scalar
   options are checked; nothing below checks them again. The front end also
   checks its arrays (shapes, dtypes, label values: once, by the compiled
   pass that prepares them for the kernel) and speaks to its user in its own
   words: a backend's :class:`MaskedRowError` carries the row for that.
2. The backend computes per-row losses, the gradient of their weighted sum and
   the per-row log-sum-exp, for the effective target :math:`t` (seed eq. (15):
   :math:`\partial\ell/\partial z = a \sum_c t_c - t`).
3. The reduction is the same everywhere: ``"none"`` keeps the rows
   (:func:`keeps_rows`), ``"sum"`` adds them, ``"mean"`` divides the sum by
   the summed weights of the rows that count (:func:`mean_scale`,
   :func:`reduce_total`, :func:`reduce_rows`), and a batch in which no row
   counts gives 0, not 0/0. No other module compares ``reduction`` with a mode.
4. Parts of a row computed apart (vocabulary chunks, Triton splits, the ranks
   of a tensor-parallel group) are merged with :mod:`softxent._rowstats`;
   the kernels run the same recurrence element by element inside their loops.

Adding an option
----------------
Add a field to :class:`XentOptions`, its check to :meth:`XentOptions.build`
(with the error text), implement it in the backends that must honour it
(the CPU entry point or its kernels, ``torch/_reference.py``, the Triton
kernels and ``torch/_vocab_rows.py``), and add its oracle tests. Front ends
pass it through by name.

Class weights and per-row weights are arrays of each framework's own type;
the front ends check them (their rules, non-negative and finite, are stated
here in :data:`WEIGHT_RULE`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "REDUCTIONS",
    "WEIGHT_RULE",
    "Reduction",
    "XentOptions",
    "check_ignore_index",
    "check_real",
    "check_reduction",
    "check_temperature",
    "MaskedRowError",
    "format_index",
    "grad_scale",
    "keeps_rows",
    "label_range_message",
    "masked_row_message",
    "mean_scale",
    "reduce_rows",
    "reduce_total",
    "short_repr",
]

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")
WEIGHT_RULE = "finite and non-negative"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def short_repr(value: Any) -> str:
    """A one-line ``repr`` for error messages (arrays summarised, long texts cut)."""
    if isinstance(value, np.ndarray):
        return " ".join(np.array2string(value, threshold=6, edgeitems=2, precision=6).split())
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_index(flat_index: int, shape: tuple[int, ...]) -> str:
    """The position ``flat_index`` of a C-ordered array of ``shape``, as ``(i, j, ...)``."""
    if not shape:
        return "()"
    idx = []
    rest = int(flat_index)
    for n in reversed(shape):
        idx.append(rest % n if n else 0)
        rest = rest // n if n else 0
    idx.reverse()
    return "(" + ", ".join(str(i) for i in idx) + ("," if len(idx) == 1 else "") + ")"


def check_real(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """A finite real number within the given bounds, as a Python float.

    Booleans are refused (``label_smoothing=True`` is a mistake, not 1.0).
    Only comparisons decide finiteness: under ``torch.compile(dynamic=True)``
    a float argument may be symbolic, and Dynamo traces comparisons but not
    ``math.isfinite``.
    """
    if type(value) is not float and type(value) is not int:  # the common case skips the ABC checks
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {short_repr(value)}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float's range, e.g. 10**400
        raise ValueError(f"{name} must be finite, got {short_repr(value)}, which is beyond float64's range") from None
    if not -float("inf") < value < float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and high is not None and low_inclusive and high_inclusive and not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low:g}, got {value!r}")
    if high is not None and (value > high or (not high_inclusive and value == high)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high:g}, got {value!r}")
    return value


def check_reduction(reduction: Any) -> Reduction:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {short_repr(reduction)}")
    return reduction  # type: ignore[return-value]


def check_ignore_index(ignore_index: Any, *, allow_none: bool = True) -> int | None:
    """An integer that fits int64 (labels are compared as int64), or None where allowed."""
    if ignore_index is None and allow_none:
        return None
    if type(ignore_index) is not int:
        if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
            kind = "an integer or None" if allow_none else "an integer"
            raise TypeError(f"ignore_index must be {kind}, got {short_repr(ignore_index)}")
        ignore_index = int(ignore_index)
    if not _INT64_MIN <= ignore_index <= _INT64_MAX:
        raise ValueError(f"ignore_index must fit in a 64-bit integer, got {ignore_index}")
    return ignore_index


def check_temperature(temperature: Any) -> float:
    """A temperature: a finite real number > 0, as a Python float."""
    return check_real(temperature, "temperature", low=0.0, low_inclusive=False)


@dataclass(frozen=True)
class XentOptions:
    """The scalar options of softmax cross-entropy, checked once.

    Attributes
    ----------
    ignore_index : int or None
        Class-index labels equal to it are skipped (loss 0, gradient 0, not in
        the mean). ``None``: no label is skipped (NumPy API only).
    reduction : {"mean", "sum", "none"}
    label_smoothing : float in [0, 1]
        The target becomes :math:`(1-\\varepsilon) y + \\varepsilon / K` (class
        weights multiply it, as in PyTorch).
    temperature : float > 0
        The loss of :math:`\\operatorname{softmax}(z' / T)`; gradients are
        with respect to the raw logits :math:`z`.
    z_loss : float >= 0
        Adds :math:`z_\\text{loss} \\cdot \\operatorname{lse}(z'/T)^2` per row not
        ignored; ``"mean"`` divides the sum of these terms by the (sample-)weight
        of the rows not ignored (their count, without sample weights), not by
        the cross-entropy's denominator, and class weights do not multiply it.
    softcap : float > 0 or None
        Logits become :math:`z' = c \\tanh(z / c)` before the softmax
        (:math:`z' = z` without it).

    The order is fixed and the same in every front end: cap, then divide by
    the temperature, then softmax, cross-entropy and z-loss of
    :math:`z'/T`. So a temperature softens or sharpens the capped model's
    distribution (the cap belongs to the model, as in Gemma 2), and
    :math:`c \\tanh(z/c)/T = (c/T) \\tanh((z/T)/(c/T))` lets a front end
    apply the temperature by dividing its logits by :math:`T` and the cap
    by :math:`T`.
    """

    ignore_index: int | None = -100
    reduction: Reduction = "mean"
    label_smoothing: float = 0.0
    temperature: float = 1.0
    z_loss: float = 0.0
    softcap: float | None = None

    @classmethod
    def build(
        cls,
        *,
        ignore_index: Any = -100,
        reduction: Any = "mean",
        label_smoothing: Any = 0.0,
        temperature: Any = 1.0,
        z_loss: Any = 0.0,
        softcap: Any = None,
        allow_no_ignore: bool = True,
    ) -> XentOptions:
        """Check every option and return them; the errors name the argument and the value."""
        if (  # the defaults, as most calls pass them: nothing to check (about 5 us of a 50 us call)
            type(ignore_index) is int
            and ignore_index == -100
            and type(reduction) is str
            and reduction == "mean"
            and plain_number(label_smoothing, 0.0)
            and plain_number(temperature, 1.0)
            and plain_number(z_loss, 0.0)
            and softcap is None
            and cls is XentOptions
        ):
            return _DEFAULT_OPTIONS
        return cls(
            ignore_index=check_ignore_index(ignore_index, allow_none=allow_no_ignore),
            reduction=check_reduction(reduction),
            label_smoothing=check_real(label_smoothing, "label_smoothing", low=0.0, high=1.0),
            temperature=check_temperature(temperature),
            z_loss=check_real(z_loss, "z_loss", low=0.0),
            softcap=None if softcap is None else check_real(softcap, "softcap", low=0.0, low_inclusive=False),
        )


# Exactly these types (not bool, not a traced or symbolic number) take build()'s shortcut.
_PLAIN_REALS = (int, float)


def plain_number(x: Any, value: float) -> bool:
    """``x`` is exactly an int or a float (not a bool, a NumPy or a traced
    scalar) equal to ``value``: an option at its default as most calls spell
    it, which needs no check."""
    return type(x) in _PLAIN_REALS and x == value


_DEFAULT_OPTIONS = XentOptions()


def mean_scale(denominator: float) -> float:
    """The factor of a ``"mean"``: ``1 / denominator``, and 0 when no row counts.

    ``denominator`` is the summed weight of the rows that count (sample weight
    times the class weight of the label for class indices, the sample weight
    for probability labels; ignored rows weigh 0). An empty or fully ignored
    batch has loss 0 and gradient 0 rather than 0/0 = NaN (PyTorch gives NaN).
    """
    return 1.0 / denominator if denominator else 0.0


def grad_scale(reduction: Reduction, denominator: float) -> float:
    """What multiplies the gradient of the summed row losses: :func:`mean_scale` for a mean, else 1."""
    return mean_scale(denominator) if reduction == "mean" else 1.0


def reduce_total(total: Any, denominator: Any, reduction: Reduction) -> Any:
    """The ``"sum"`` or ``"mean"`` loss from the sum of the (weighted) row losses.

    Works on Python floats, NumPy and torch scalars alike (``denominator``
    may be a 0-d array or tensor). A mean over no counted row is 0 (those rows' losses are all 0, so ``total * 0.0`` is 0
    of the right type and device).
    """
    if reduction != "mean":
        return total
    # A float first: after gc.collect() the ABC's isinstance took 10.7-13.5 us
    # and the type test 4.5-5.2, against 3.6-4.3 for a call that does nothing.
    if type(denominator) is float or isinstance(denominator, numbers.Real):
        return total / denominator if denominator else total * 0.0
    # An array or a (traced, or device) tensor: the same rule without reading it on the host.
    return total / (denominator + (denominator == 0))


def reduce_rows(rows: Any, total: Any, denominator: Any, reduction: Reduction) -> Any:
    """The loss a caller sees: the per-row losses for ``"none"``, else :func:`reduce_total` of their sum."""
    return rows if reduction == "none" else reduce_total(total, denominator, reduction)


def keeps_rows(reduction: Reduction) -> bool:
    """Whether the loss is one value per row (``"none"``) rather than one number."""
    return reduction == "none"


def masked_row_message(where: str, skip: str, *, label: str = "label") -> str:
    """The one text for a row whose classes are all masked (-inf) but whose label asks for a loss.

    ``where`` names the row in the front end's words (``"logits row (3,)"``,
    ``"row 3 of input (the batch flattened)"``); ``skip`` says how to skip it
    with that front end's arguments; ``label`` is its word for a label
    (PyTorch's is ``"target"``).
    """
    return (
        f"{where} is -inf for every class (all classes masked), so it has no softmax, "
        f"but its {label} asks for a loss; {skip}"
    )


class MaskedRowError(ValueError):
    """A row whose classes are all masked but whose label asks for a loss; ``row`` is its flat index.

    Raised by the backends in the NumPy API's words; a front end with other
    argument names catches it and says the same in its own words
    (:func:`masked_row_message`).
    """

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = row


def label_range_message(label: str, n_classes: int, ignore_index: int | None, given: str, where: str) -> str:
    """The one text for a class index outside ``[0, n_classes)``.

    ``label`` is the front end's name for the labels (``"labels"``,
    ``"target"``), ``given`` the bad value as the user wrote it, ``where`` its
    index (:func:`format_index`).
    """
    hint = "" if ignore_index is None else f" (or ignore_index={ignore_index} to skip the row)"
    return (
        f"{label} must hold class indices in [0, {n_classes}) for {n_classes} classes{hint}, "
        f"got {given} at index {where}"
    )
