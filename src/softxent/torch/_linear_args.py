"""The arguments of :func:`softxent.torch.linear_cross_entropy`, in torch 2.13's names, checked and normalised.

torch 2.13's ``torch.nn.functional.linear_cross_entropy(input, linear_weight,
target, *, linear_bias, weight, reduction, ignore_index, label_smoothing,
options)`` calls the head's matrix ``linear_weight`` and its bias
``linear_bias``; ``weight`` holds class weights, as in ``cross_entropy``.
Earlier softxent releases called the head's matrix ``weight`` and its input
``x``: a call in that style is recognised here and refused with the text of
the call to write instead, never silently misread (a 2-D ``weight`` cannot be
class weights).

Static checks only (types, shapes, dtypes, devices): they read no tensor data,
so ``torch.compile`` traces them without a graph break. The data checks (class
indices in range, probabilities finite and non-negative, class weights finite
and non-negative) run inside the custom ops (:mod:`._linear_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._validation import check_float_tensor, check_same_device

__all__ = ["HeadArgs", "check_head_tensors", "refuse_legacy_call"]

_NEW_CALL = "linear_cross_entropy(input, linear_weight, target, linear_bias=bias, weight=class_weights)"


def refuse_legacy_call(input: Any, linear_weight: Any, target: Any, weight: Any, legacy: dict[str, Any]) -> None:
    """Raise a ``TypeError`` that says what to write for a call in softxent's earlier style."""
    if legacy:
        names = ", ".join(f"{k}=" for k in legacy)
        renamed = {"x": "input", "bias": "linear_bias"}
        hint = "; ".join(f"{k}= is now {renamed[k]}=" for k in legacy if k in renamed)
        raise TypeError(
            f"linear_cross_entropy got unexpected keyword argument(s) {names}"
            + (f" ({hint}, as in torch.nn.functional.linear_cross_entropy)" if hint else "")
            + f"; write {_NEW_CALL}"
        )
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        raise TypeError(
            f"weight is the class weights, shape (V,), as in torch.nn.functional.linear_cross_entropy, "
            f"got a 2-D tensor of shape {tuple(weight.shape)}: pass the head's matrix as linear_weight "
            f"(and its bias as linear_bias): {_NEW_CALL}"
        )
    if input is None or linear_weight is None or target is None:
        missing = "input" if input is None else "linear_weight" if linear_weight is None else "target"
        raise TypeError(f"linear_cross_entropy needs {missing}: {_NEW_CALL}")


@dataclass(frozen=True)
class HeadArgs:
    """What :func:`check_head_tensors` found: the batch shape and the kind of target."""

    batch: tuple[int, ...]  # input.shape[:-1]: the shape of reduction="none"
    prob: bool  # target holds probabilities of shape batch + (V,)
    k_dim: tuple[int, ...]  # torch's K-dimensional loss: linear_weight (V, d1, ..., dK, d)


def check_head_tensors(
    input: Any, linear_weight: Any, target: Any, linear_bias: Any, weight: Any, ignore_index: Any
) -> HeadArgs:
    """Static checks of the head's tensors, in torch's argument names; the dtypes agree after autocast."""
    check_float_tensor(input, "input")
    check_float_tensor(linear_weight, "linear_weight")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if input.dim() == 0:
        raise ValueError("input must have a feature axis: shape (d,), (N, d) or (..., d), got a 0-d tensor")
    d = input.shape[-1]
    if linear_weight.dim() < 2 or linear_weight.shape[-1] != d:
        raise ValueError(
            f"linear_weight must have shape (V, {d}) for input of shape {tuple(input.shape)}, got "
            f"{tuple(linear_weight.shape)} (torch's K-dimensional loss: (V, d1, ..., dK, {d}))"
        )
    n_classes = linear_weight.shape[0]
    if n_classes == 0:
        raise ValueError(f"linear_weight must have at least one row (class), got shape {tuple(linear_weight.shape)}")
    k_dim = tuple(linear_weight.shape[1:-1])
    batch = tuple(input.shape[:-1])
    if k_dim and input.dim() != 2:
        raise ValueError(
            f"a K-dimensional loss (linear_weight of shape {tuple(linear_weight.shape)}) needs input of shape "
            f"(N, {d}), as in torch, got {tuple(input.shape)}"
        )
    logits_shape = batch + (n_classes,) + k_dim
    index_shape = batch + k_dim
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(
            f"target must hold class indices (an integer dtype) or class probabilities (a floating dtype), "
            f"got {target.dtype}"
        )
    prob = target.is_floating_point()
    if prob and tuple(target.shape) != logits_shape:
        raise ValueError(
            f"target holds probabilities (dtype {target.dtype}), so it must have the logits' shape "
            f"{logits_shape}, got {tuple(target.shape)}; class indices need an integer dtype"
        )
    if not prob and tuple(target.shape) != index_shape:
        raise ValueError(
            f"target must hold class indices of shape {index_shape} (input's shape {tuple(input.shape)} "
            f"without its last axis) or probabilities of shape {logits_shape}, got shape {tuple(target.shape)}"
        )
    if prob and ignore_index is not None:
        raise ValueError(
            f"ignore_index applies to class-index targets only (as in torch), got ignore_index={ignore_index!r} "
            "with probability targets; leave it None (a row of zeros adds nothing to a sum)"
        )
    if linear_bias is not None:
        check_float_tensor(linear_bias, "linear_bias")
        if tuple(linear_bias.shape) != (n_classes,) + k_dim:
            raise ValueError(
                f"linear_bias must have shape {(n_classes,) + k_dim} (one per class), got {tuple(linear_bias.shape)}"
            )
    if weight is not None:
        check_float_tensor(weight, "weight")
        if tuple(weight.shape) != (n_classes,):
            raise ValueError(f"weight (class weights) must have shape ({n_classes},), got {tuple(weight.shape)}")
    for name, t in (("linear_weight", linear_weight), ("target", target), ("linear_bias", linear_bias),
                    ("weight", weight)):  # fmt: skip
        check_same_device(input, t, name, "input")
    return HeadArgs(batch=batch, prob=prob, k_dim=k_dim)


def chunk_rows_from_options(options: Any, chunk_size: int | None) -> int | None:
    """torch's ``options`` (a ``LinearCrossEntropyOptions`` or None): its ``batch_chunk_size``, if any.

    softxent always computes in blocks (``options=None`` too: the logits never
    exist) and accumulates in float32, and its backward may be run twice, so
    ``acc_policy``, ``acc_dtype``, ``chunking_method`` and
    ``allow_retain_graph`` have nothing to choose; ``batch_chunk_size`` sets
    the rows per block when ``chunk_size`` is not given.
    """
    if options is None:
        return chunk_size
    cls = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if cls is None or not isinstance(options, cls):
        raise TypeError(f"options must be a torch.nn.LinearCrossEntropyOptions or None, got {type(options).__name__}")
    rows = options.batch_chunk_size
    if chunk_size is not None or rows is None:
        return chunk_size
    return rows
