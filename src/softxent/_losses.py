r"""Softmax and sigmoid cross-entropy from logits, with their analytic gradients.

Design (per-row math -> reduction -> public wrappers)
-----------------------------------------------------
Every option of the softmax loss folds into one *effective target* per row,
a non-negative vector :math:`t` over the K classes:

* integer label :math:`y`, class weights :math:`w`, smoothing :math:`\varepsilon`:
  :math:`t = (1-\varepsilon)\, w_y\, e_y + \tfrac{\varepsilon}{K} w`
  (PyTorch's definition), :math:`t = 0` for a row labelled ``ignore_index``;
* probability labels :math:`Y`: :math:`t = w \odot ((1-\varepsilon) Y + \tfrac{\varepsilon}{K})`.

With :math:`a = \operatorname{softmax}(z / T)` the row loss is eq. (7)

.. math::

    \ell = -\sum_c t_c \log a_c = \sum_c t_c (\log s - d_c),
    \qquad d = (z - \max z)/T,\; s = \sum_c e^{d_c}

and its gradient is eq. (15), :math:`\partial \ell / \partial z = (a \sum_c t_c - t)/T`,
which is :math:`a - y` (eq. 16) for a one-hot label, weight 1, no smoothing and
:math:`T = 1`. So :func:`_softmax_xent` is the whole loss; the three public
functions only choose what to return. A sample weight multiplies the row;
``reduction="mean"`` divides by the summed weights of the rows that count.

Precision: the loss uses :math:`\log s` from ``log1p`` (see
:func:`softxent._softmax.normalise`), and the gradient of the top class is
:math:`\sum t \cdot \operatorname{expm1}(-\log s) + \sum_{c \ne m} t_c`, never
:math:`a_m - 1` after rounding :math:`a_m` to 1. So a confident, correct row
keeps a tiny but exact loss and gradient (for float32 output too).

The sigmoid loss (independent binary heads) is elementwise; see
:func:`sigmoid_cross_entropy` (in :mod:`softxent._sigmoid_xent`).

Modules: the labels and the wrappers live here; the fused kernel call and the
exact NumPy path in :mod:`softxent._softmax_paths`; the z-loss and the
soft-cap, a pass around either of them, in :mod:`softxent._xent_options`
(calls without them never reach it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _contract, kernels
from ._contract import Reduction
from ._fused import plain_index_call, softmax_xent_rows
from ._sigmoid_xent import sigmoid_cross_entropy, sigmoid_cross_entropy_grad, sigmoid_cross_entropy_with_grad
from ._validation import (
    as_array,
    as_float_array,
    check_axis,
    check_bool,
    check_class_labels,
    check_class_weight,
    check_probability_labels,
    check_sample_weight,
)
from ._xent_common import Labels as _Labels
from ._xent_common import compiled_index_labels
from ._xent_common import kernel_probability_labels as _kernel_probability_labels

__all__ = [
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_grad",
    "sigmoid_cross_entropy_with_grad",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "softmax_cross_entropy_with_grad",
]


# --------------------------------------------------------------------------- softmax


def _parse_labels(
    labels: Any,
    shape: tuple[int, ...],
    kern: Any,
    axis: int,
    weight: np.ndarray | None,
    ignore_index: int | None,
) -> _Labels:
    """Class indices if ``labels`` has the logits' shape without ``axis``,
    probabilities if it has the logits' shape (``kern``: the logits'
    :func:`kernels.cpu`, None for the NumPy checks)."""
    n_classes = shape[axis]
    batch = shape[:axis] + shape[axis + 1 :]
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be class indices or probabilities, got the string {labels!r}")
    lab = as_array(labels, "labels")
    if lab.shape == shape:  # probability labels (eq. 15 holds even if rows do not sum to 1)
        probs, at_most_one = _kernel_probability_labels(lab, kern, None)
        if probs is None:
            probs = check_probability_labels(lab)
        return _Labels(None, np.moveaxis(probs, axis, -1), None, at_most_one)
    if lab.shape == batch:
        fast = compiled_index_labels(lab, kern, n_classes, weight, ignore_index)
        if isinstance(fast, int):
            check_class_labels(lab, n_classes, ignore_index)  # raises, naming the first bad label
            raise AssertionError("the compiled label pass and check_class_labels disagree")  # pragma: no cover
        if fast is not None:
            return fast
        idx, kept = check_class_labels(lab, n_classes, ignore_index, original=labels)
        idx = np.where(kept, idx, -1)
        w = np.ones(n_classes) if weight is None else weight
        row_weight = np.where(kept, w[np.maximum(idx, 0)] if n_classes else 0.0, 0.0)
        return _Labels(idx, None, row_weight)
    raise ValueError(
        f"labels must be class indices of shape {batch} (the logits' shape {shape} without "
        f"axis {axis}) or probabilities of shape {shape}, got shape {lab.shape}"
    )


def _grad_buffer(arr: np.ndarray, logits: Any, out: Any, inplace: bool) -> np.ndarray | None:
    """Check ``out`` / ``inplace``; return the array the gradient must end up in (or None)."""
    if inplace:
        if out is not None:
            raise ValueError("out and inplace=True are exclusive: inplace writes the gradient over logits")
        if not isinstance(logits, np.ndarray) or logits is not arr:
            raise TypeError(
                f"inplace=True needs logits to be a NumPy array of float32 or float64, got {type(logits).__name__}"
            )
        if not arr.flags.writeable:
            raise ValueError("inplace=True needs writable logits, got a read-only array")
        return arr
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != arr.shape or out.dtype != arr.dtype:
        raise ValueError(
            f"out must have the logits' shape {arr.shape} and dtype {arr.dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def _softmax_xent(
    logits: Any,
    labels: Any,
    *,
    axis: int,
    weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    sample_weight: Any,
    temperature: Any,
    reduction: Any,
    need_grad: bool,
    z_loss: Any = 0.0,
    softcap: Any = None,
    out: Any = None,
    inplace: bool = False,
    need_lse: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validate, pick the backend, compute loss, gradient and (``need_lse``)
    log-sum-exp in one pass."""
    if (
        weight is None and sample_weight is None and softcap is None and inplace is False
        and not need_lse and _contract.plain_number(label_smoothing, 0.0)
        and _contract.plain_number(z_loss, 0.0) and _contract.plain_number(temperature, 1.0)
    ):  # fmt: skip
        plain = plain_index_call(logits, labels, axis, ignore_index, reduction, need_grad, out)
        if plain is not None:
            return plain[0], plain[1], None
    arr = as_float_array(logits, "logits", allow_int=False)
    if arr.ndim == 0:
        raise ValueError("logits must have a class axis, got a 0-d array")
    ax = check_axis(axis, arr.ndim)
    n_classes = arr.shape[ax]
    batch = arr.shape[:ax] + arr.shape[ax + 1 :]
    opts = _contract.XentOptions.build(
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing, temperature=temperature,
        z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    inplace = check_bool(inplace, "inplace")
    weight = check_class_weight(weight, n_classes)
    sample_weight = check_sample_weight(sample_weight, batch)
    target = _grad_buffer(arr, logits, out, inplace) if need_grad else None
    kern = kernels.cpu(arr.dtype)
    lab = _parse_labels(labels, arr.shape, kern, ax, weight, opts.ignore_index)
    return softmax_xent_rows(
        arr, ax, lab, opts, weight=weight, sample_weight=sample_weight, need_grad=need_grad,
        target=target, inplace=inplace, need_lse=need_lse, kern=kern,
    )  # fmt: skip


_SOFTMAX_PARAMS = r"""
    Parameters
    ----------
    logits : array_like of float, shape (..., K, ...)
        Unnormalised scores :math:`z`; ``-inf`` masks a class. float16/32/64
        keep their dtype (the math runs in float64). Integer logits are refused.
    labels : array_like
        Either class indices, shape ``logits.shape`` without ``axis``, with
        values in ``[0, K)`` or ``ignore_index`` (integers, or floats with
        integral values); or probabilities, the same shape as ``logits``,
        non-negative (rows need not sum to 1: eq. 15 covers that).
    axis : int, default -1
        The class axis of ``logits``.
    weight : array_like, shape (K,), optional
        Non-negative per-class weights (PyTorch's ``weight``).
    ignore_index : int or None, default -100
        Class-index labels equal to it are skipped: loss 0, gradient 0, and
        left out of the mean. Not used with probability labels.
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution:
        :math:`(1-\varepsilon) y + \varepsilon / K`.
    sample_weight : array_like, optional
        Non-negative per-row weights, shape ``logits.shape`` without ``axis``.
    temperature : float > 0, default 1
        Loss of :math:`\operatorname{softmax}(z' / T)`; the gradient is w.r.t.
        the raw logits :math:`z` (a factor :math:`1/T`).
    z_loss : float >= 0, default 0
        Adds :math:`\lambda_z \operatorname{lse}(z'/T)^2` (times the sample
        weight) to every row not ignored: PaLM's auxiliary loss that keeps the
        normaliser near 0. Class weights do not multiply it; ``"mean"``
        divides its sum by the summed sample weights of the rows not ignored
        (their count without ``sample_weight``), as ``softxent.torch`` does.
        Its gradient is :math:`2 \lambda_z \operatorname{lse}\, a / T`.
    softcap : float > 0, optional
        Soft-caps the logits first, :math:`z' = c \tanh(z / c)` (Gemma 2),
        before the temperature; the gradient carries the chain rule's
        :math:`\operatorname{sech}^2(z / c)`. ``-inf`` becomes :math:`-c`:
        masking does not survive the cap. Without it :math:`z' = z`.
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"none"``: one loss per row. ``"sum"``: their sum. ``"mean"``: the
        sum divided by the total weight of the rows that count,
        :math:`\sum_i s_i w_{y_i}` over non-ignored rows for class indices
        (as PyTorch does), :math:`\sum_i s_i` for probability labels. A batch
        whose total weight is 0 (empty, or every row ignored) gives 0, not NaN.
"""

_GRAD_BUFFER_PARAMS = r"""    out : ndarray, optional
        Gradient buffer of the logits' shape and dtype; the gradient is written
        into it and it is returned. Reuse it across calls to avoid allocating.
    inplace : bool, default False
        Write the gradient over ``logits`` (a float32/float64 ndarray) and
        return it: no extra memory of the logits' size. **This destroys the
        logits.** Exclusive with ``out``.
"""

_SOFTMAX_NOTES = r"""
    Backends: float32 and float64 logits run on the fused CPU kernel (numba,
    one sweep per row, parallel over rows); float16, longdouble, or the
    environment variable ``SOFTXENT_REFERENCE=1`` take the exact NumPy path
    (float64 arithmetic). The kernel agrees with the exact path to 1e-6
    relative on the loss and 1e-6 absolute on the gradient for float32 input
    (in practice ~1e-8), and to 1e-13 for float64. Confident rows keep their
    tiny true-class gradients on both paths.

    Edge cases: a row with NaN or ``+inf`` logits gives NaN for that row only
    (the mean is then NaN too); a row whose logits are all ``-inf`` raises
    ``ValueError`` unless it is ignored; a row that is ignored or weighted 0
    gives loss 0 and gradient 0 whatever its logits hold; a label on a
    ``-inf`` (masked) class gives an infinite loss.
"""


def softmax_cross_entropy(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: Reduction = "mean",
) -> np.ndarray:
    r"""Cross-entropy of the softmax of ``logits`` against ``labels``: eq. (7) with eq. (8).

    .. math::

        \ell_i = -\sum_c y_{ic} \log \operatorname{softmax}(z'_i / T)_c
               = \sum_c y_{ic} \left(\operatorname{logsumexp}(z'_i / T) - z'_{ic} / T\right)
                 \;[+\; \lambda_z \operatorname{logsumexp}(z'_i / T)^2]

    with :math:`z' = c \tanh(z / c)` when ``softcap`` is given (else :math:`z' = z`)
    and the z-loss term only with ``z_loss``, computed from the logits as
    log-sum-exp minus the label's logit, never as
    ``log(softmax)``. With integer labels it equals
    ``torch.nn.functional.cross_entropy`` for the arguments they share.
    {params}
    Returns
    -------
    loss : scalar, or ndarray of shape ``logits.shape`` without ``axis`` for ``reduction="none"``
        In the dtype of ``logits``.

    Notes
    -----{notes}
    Examples
    --------
    >>> import softxent as sx
    >>> logits = [[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]]
    >>> print(round(float(sx.softmax_cross_entropy(logits, [0, 1])), 6))
    0.31854
    >>> sx.softmax_cross_entropy(logits, [0, -100], reduction="none")
    array([0.41703002, 0.        ])
    """
    loss, _, _ = _softmax_xent(
        logits, labels, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, need_grad=False, z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    return loss


def softmax_cross_entropy_grad(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: Reduction = "mean",
    out: np.ndarray | None = None,
    inplace: bool = False,
) -> np.ndarray:
    r"""Gradient of :func:`softmax_cross_entropy` w.r.t. the logits: eq. (15) and (16).

    .. math::

        \frac{\partial \ell}{\partial z_i} = a_i \sum_j y_j - y_i \quad (15),
        \qquad a = \operatorname{softmax}(z)

    which is :math:`a_i - y_i` (eq. 16) when the labels sum to one, as a
    one-hot label does. Weights, smoothing and sample weights enter through
    the effective target :math:`y`; a temperature divides the result by
    :math:`T`; ``reduction="mean"`` divides it by the same total weight as the
    loss. For ``reduction="none"`` it is each row's own gradient (equal to
    the gradient of the sum).
    {params}{buffers}
    Returns
    -------
    ndarray, same shape and dtype as ``logits``

    Notes
    -----{notes}
    The top class's entry is computed as :math:`\sum y \cdot
    \operatorname{expm1}(-\log s) + \sum_{j \ne m} y_j` rather than from a
    rounded :math:`a_m`, so confident rows keep their tiny gradients.

    Examples
    --------
    >>> import softxent as sx
    >>> sx.softmax_cross_entropy_grad([[0.0, 0.0]], [1], reduction="sum")
    array([[ 0.5, -0.5]])
    """
    _, grad, _ = _softmax_xent(
        logits, labels, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, need_grad=True, out=out, inplace=inplace,
        z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    assert grad is not None
    return grad


def softmax_cross_entropy_with_grad(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int | None = -100,
    label_smoothing: float = 0.0,
    sample_weight: Any = None,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: Reduction = "mean",
    out: np.ndarray | None = None,
    inplace: bool = False,
    return_lse: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Loss and gradient of the softmax cross-entropy from one pass over the logits.

    .. math::

        a = \operatorname{softmax}(z), \qquad
        \ell = -\sum_c y_c \log a_c \quad (7), \qquad
        \frac{\partial \ell}{\partial z} = a \sum_c y_c - y \quad (15)

    Returns exactly ``(softmax_cross_entropy(...), softmax_cross_entropy_grad(...))``
    with the same arguments, but normalises the logits once: the softmax
    :math:`a` of eq. (8) serves both the loss and the gradient. This is the
    contract the fused kernels implement.
    {params}{buffers}    return_lse : bool, default False
        Also return the per-row log-sum-exp of :math:`z' / T` (the soft-capped
        logits over the temperature; float64, shape ``logits.shape`` without
        ``axis``), e.g. to rebuild the softmax later as ``exp(z' / T - lse)``.

    Returns
    -------
    loss : scalar or ndarray
        As :func:`softmax_cross_entropy`.
    grad : ndarray, same shape and dtype as ``logits``
        As :func:`softmax_cross_entropy_grad`; ``out`` or ``logits`` when given.
    lse : ndarray of float64
        Only with ``return_lse=True``.

    Notes
    -----{notes}
    Examples
    --------
    >>> import softxent as sx
    >>> loss, grad = sx.softmax_cross_entropy_with_grad([[0.0, 0.0]], [1])
    >>> print(round(float(loss), 6), grad)
    0.693147 [[ 0.5 -0.5]]
    """
    return_lse = check_bool(return_lse, "return_lse")
    loss, grad, lse = _softmax_xent(
        logits, labels, axis=axis, weight=weight, ignore_index=ignore_index,
        label_smoothing=label_smoothing, sample_weight=sample_weight,
        temperature=temperature, reduction=reduction, need_grad=True, out=out, inplace=inplace,
        need_lse=return_lse, z_loss=z_loss, softcap=softcap,
    )  # fmt: skip
    assert grad is not None
    if return_lse:
        assert lse is not None
        return loss, grad, lse
    return loss, grad


for _f in (softmax_cross_entropy, softmax_cross_entropy_grad, softmax_cross_entropy_with_grad):
    _f.__doc__ = (
        (_f.__doc__ or "")
        .replace("{params}", _SOFTMAX_PARAMS)
        .replace("{notes}", _SOFTMAX_NOTES)
        .replace("{buffers}", _GRAD_BUFFER_PARAMS)
    )
del _f
