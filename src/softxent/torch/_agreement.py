"""The agreement step of the vocabulary-parallel losses, and their argument checks.

:mod:`softxent.torch.distributed` calls :func:`agree` first: every rank runs
its own argument checks (:func:`check_logits_arguments`,
:func:`check_linear_arguments`), then all ranks exchange the outcome with
their slice sizes, ``vocab_start``, options and two checksums of ``target``
in one ``all_gather`` of a few numbers per rank. A rank whose arguments are
wrong raises its error; every other rank raises too, naming that rank,
instead of waiting forever in a collective. Options or targets that differ
between ranks, and slices that do not tile :math:`[0, V)`, raise on every
rank. What comes out is the checked options and the :class:`Layout`: where
this rank's slice lies in the vocabulary.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from .._contract import REDUCTIONS, XentOptions
from ._validation import (
    check_float_tensor,
    check_head_options,
    check_index_target_values,
    check_options,
    check_same_device,
    check_weight_values,
)

# What a rank's checks return: its options, its fields of _KEYS, and the target to score (shifted or not).
Checked = tuple[XentOptions, dict[str, float], torch.Tensor]
_F64 = torch.float64


class Layout(NamedTuple):
    """Where this rank's slice lies in the vocabulary, agreed by all ranks."""

    group: Any
    start: int  # this rank's first class
    n_total: int  # V, the whole vocabulary


def _torch_ignore_index(opts: XentOptions) -> int:
    """torch's front ends always skip some index (their options are built with ``allow_no_ignore=False``)."""
    assert opts.ignore_index is not None
    return opts.ignore_index


def group_size(group: Any) -> int:
    """The size of ``group``, or a clear error when there is no usable group."""
    if not dist.is_available():
        raise RuntimeError(
            "torch.distributed is not available in this PyTorch build (torch.distributed.is_available() "
            "is False): the vocabulary-parallel losses need it"
        )
    if isinstance(group, int) and not isinstance(group, bool) and group == dist.GroupMember.NON_GROUP_MEMBER:
        raise ValueError(
            "group: this process is not a member of the group (torch.distributed.new_group returned "
            "NON_GROUP_MEMBER here); call the loss only on the group's ranks"
        )
    if group is not None and not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"group must be a torch.distributed ProcessGroup or None (the default group), got {type(group).__name__}"
        )
    if not dist.is_initialized():
        which = "None (the default process group)" if group is None else repr(group)
        raise ValueError(
            f"group={which} cannot be used: torch.distributed is not initialised in this process; call "
            "torch.distributed.init_process_group(backend, rank=..., world_size=...) on every rank first"
        )
    if dist.get_rank(group) < 0:
        raise ValueError(
            f"group: this process (global rank {dist.get_rank()}) is not a member of the group; "
            "call the loss only on the group's ranks"
        )
    return dist.get_world_size(group)


# What each rank reports in the agreement step (one float64 each).
_KEYS = (
    "ok", "rows", "classes", "vocab_start", "vocab_start given", "ignore_index", "reduction",
    "label_smoothing", "z_loss", "softcap", "weight given", "target sum", "target order sum", "x grad",
)  # fmt: skip
# Values that must be equal on every rank, with the words that name them in an error.
_SHARED = (
    ("rows", "the number of rows (target's shape)"),
    ("vocab_start given", "vocab_start (given on every rank or on none)"),
    ("ignore_index", "ignore_index"),
    ("reduction", "reduction"),
    ("label_smoothing", "label_smoothing"),
    ("z_loss", "z_loss"),
    ("softcap", "softcap"),
    ("weight given", "weight (given on every rank or on none)"),
    ("x grad", "x.requires_grad (every rank takes part in the all-reduce of dx)"),
)


def _show(key: str, value: float) -> str:
    if key == "reduction":
        return repr(REDUCTIONS[int(value)])
    if key == "softcap" and value == 0.0:
        return "None"
    if key in ("label_smoothing", "z_loss", "softcap"):
        return repr(value)
    return str(bool(value)) if key in ("vocab_start given", "weight given", "x grad") else str(int(value))


def agree(group: Any, like: Any, check: Callable[[], Checked]) -> tuple[XentOptions, Layout, torch.Tensor]:
    """Run ``check`` (options and the fields of :data:`_KEYS`), exchange every rank's outcome and slice.

    Raise the same kind of error everywhere, or return the options, the
    agreed layout and the target, its values checked against the whole vocabulary.
    """
    world = group_size(group)
    opts = fields = target = error = None
    try:
        opts, fields, target = check()
    except (TypeError, ValueError) as exc:
        error = exc
    if isinstance(like, torch.Tensor) and like.device.type != "meta":
        device = like.device  # the small exchanged tensors live beside the logits
    else:
        nccl = dist.get_backend(group) == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    row = torch.zeros(len(_KEYS), dtype=_F64)
    if fields is not None:
        row = torch.tensor([1.0] + [float(fields[k]) for k in _KEYS[1:]], dtype=_F64)
    row = row.to(device)
    table = [torch.empty_like(row) for _ in range(world)]
    dist.all_gather(table, row, group=group)
    if error is not None:
        raise error
    ranks = [dict(zip(_KEYS, t.tolist())) for t in table]
    failed = [r for r, info in enumerate(ranks) if info["ok"] != 1.0]
    if failed:
        raise ValueError(
            f"rank {failed[0]} of the group rejected its arguments (its own error says why); every rank "
            "raises instead of waiting for it in a collective"
        )
    for key, words in _SHARED:
        values = [info[key] for info in ranks]
        if len(set(values)) > 1:
            shown = ", ".join(f"rank {r}: {_show(key, v)}" for r, v in enumerate(values))
            raise ValueError(f"{words} must be the same on every rank of the group, got {shown}")
    for key in ("target sum", "target order sum"):
        differ = [r for r, info in enumerate(ranks) if info[key] != ranks[0][key]]
        if differ:
            raise ValueError(
                f"target must be the same on every rank of the group (vocabulary parallelism splits the "
                f"classes, not the rows), but ranks {differ} hold other targets than rank 0"
            )
    sizes = [int(info["classes"]) for info in ranks]
    starts = [sum(sizes[:r]) for r in range(world)]
    if ranks[0]["vocab_start given"]:
        starts = [int(info["vocab_start"]) for info in ranks]
        expect = 0
        for r in sorted(range(world), key=lambda r: starts[r]):
            if starts[r] != expect:
                shown = ", ".join(f"rank {q}: [{s}, {s + n})" for q, (s, n) in enumerate(zip(starts, sizes)))
                raise ValueError(
                    "vocab_start: the ranks' slices [vocab_start, vocab_start + V_local) must tile "
                    f"[0, V) without gaps or overlaps, got {shown}"
                )
            expect += sizes[r]
    assert opts is not None and target is not None and opts.ignore_index is not None
    check_index_target_values(target, sum(sizes), opts.ignore_index)  # the same targets everywhere
    return opts, Layout(group, starts[dist.get_rank(group)], sum(sizes)), target


def _common_fields(opts: XentOptions, vocab_start: Any, target: torch.Tensor) -> dict[str, float]:
    """The checked options, ``vocab_start`` and two int64 checksums of the targets (the same bits everywhere)."""
    if vocab_start is not None:
        if isinstance(vocab_start, bool) or not isinstance(vocab_start, numbers.Integral):
            raise TypeError(f"vocab_start must be an integer (this rank's first class) or None, got {vocab_start!r}")
        if vocab_start < 0:
            raise ValueError(f"vocab_start must be >= 0 (this rank's first class), got {vocab_start!r}")
    t = target.reshape(-1).to(torch.int64)
    order = torch.arange(t.numel(), device=t.device) % 65521 + 1
    return {
        "vocab_start": -1.0 if vocab_start is None else float(vocab_start),
        "vocab_start given": float(vocab_start is not None),
        "ignore_index": float(_torch_ignore_index(opts)),
        "reduction": float(REDUCTIONS.index(opts.reduction)),
        "label_smoothing": opts.label_smoothing,
        "z_loss": opts.z_loss,
        "softcap": 0.0 if opts.softcap is None else opts.softcap,
        "target sum": float(int(t.sum())),
        "target order sum": float(int((t * order).sum())),
    }


def _options(**options: Any) -> XentOptions:
    ignore_index, reduction, label_smoothing, z_loss, softcap = check_options(**options)
    return XentOptions(ignore_index, reduction, label_smoothing, z_loss=z_loss, softcap=softcap)  # type: ignore[arg-type]


def _check_index_target(target: Any, batch: tuple[int, ...], shape_words: str) -> None:
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point():
        raise TypeError(
            f"target holds floating-point values (dtype {target.dtype}), but the vocabulary-parallel losses "
            "take class indices only (an integer dtype); probability targets are not supported here: "
            "gather the logits and use softxent.torch.cross_entropy for those"
        )
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must hold class indices (an integer dtype), got {target.dtype}")
    if tuple(target.shape) != batch:
        raise ValueError(f"target must have shape {batch} ({shape_words}), got {tuple(target.shape)}")


def check_logits_arguments(
    local_logits: Any, target: Any, weight: Any, vocab_start: Any, return_lse: Any, **options: Any
) -> Checked:
    """This rank's checks of :func:`~softxent.torch.distributed.vocab_parallel_cross_entropy`'s arguments."""
    opts = _options(**options)
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be True or False, got {return_lse!r}")
    check_float_tensor(local_logits, "local_logits")
    if local_logits.dim() == 0:
        raise ValueError("local_logits must have a class axis (the last): shape (..., V_local), got a 0-d tensor")
    n_local, batch = local_logits.shape[-1], tuple(local_logits.shape[:-1])
    if n_local == 0:
        raise ValueError(
            f"local_logits must hold at least one class of this rank's slice (its last axis), "
            f"got shape {tuple(local_logits.shape)}"
        )
    _check_index_target(target, batch, f"local_logits' shape {tuple(local_logits.shape)} "
                        "without its last, class axis")  # fmt: skip
    check_same_device(local_logits, target, "target", "local_logits")
    if weight is not None:
        check_float_tensor(weight, "weight")
        if tuple(weight.shape) != (n_local,):
            raise ValueError(
                f"weight must have shape ({n_local},) (this rank's slice of the class weights), "
                f"got {tuple(weight.shape)}"
            )
        check_same_device(local_logits, weight, "weight", "local_logits")
        if weight.requires_grad:
            raise ValueError(
                "weight requires grad, but vocab_parallel_cross_entropy gives no gradient for the class "
                "weights; pass weight.detach()"
            )
        check_weight_values(weight)
    fields = {"rows": float(math.prod(batch)), "classes": float(n_local), "x grad": 0.0,
              "weight given": float(weight is not None)}  # fmt: skip
    return opts, {**fields, **_common_fields(opts, vocab_start, target)}, target


def check_linear_arguments(
    x: Any, local_weight: Any, target: Any, local_bias: Any, vocab_start: Any, chunk_size: Any, shift: Any,
    need_dx: bool, **options: Any,
) -> Checked:  # fmt: skip
    """This rank's checks of :func:`~softxent.torch.distributed.vocab_parallel_linear_cross_entropy`'s arguments.

    The target returned is the one scored: with ``shift``, row ``(.., t)``
    against ``target[.., t + 1]``.
    """
    opts = _options(**options)
    check_float_tensor(x, "x")
    check_float_tensor(local_weight, "local_weight")
    if x.dim() == 0:
        raise ValueError("x must have a feature axis: shape (..., d), got a 0-d tensor")
    d = x.shape[-1]
    if local_weight.dim() != 2 or local_weight.shape[1] != d or local_weight.shape[0] == 0:
        raise ValueError(
            f"local_weight must have shape (V_local, {d}) with V_local >= 1 for x of shape "
            f"{tuple(x.shape)}, got {tuple(local_weight.shape)}"
        )
    n_local = local_weight.shape[0]
    _check_index_target(target, tuple(x.shape[:-1]), "x's shape without its last axis")
    if local_bias is not None:
        check_float_tensor(local_bias, "local_bias")
        if tuple(local_bias.shape) != (n_local,):
            raise ValueError(
                f"local_bias must have shape ({n_local},) (one per class of this rank), got {tuple(local_bias.shape)}"
            )
    for name, t in (("local_weight", local_weight), ("target", target), ("local_bias", local_bias)):
        check_same_device(x, t, name, "x")
    if not torch.is_autocast_enabled(x.device.type) and (
        local_weight.dtype != x.dtype or (local_bias is not None and local_bias.dtype != x.dtype)
    ):
        raise TypeError(
            f"x, local_weight and local_bias must have one dtype, got {x.dtype}, {local_weight.dtype}"
            + ("" if local_bias is None else f" and {local_bias.dtype}")
        )
    check_head_options(chunk_size, shift, x)
    if shift:
        # Row (.., t) is scored against target[.., t + 1], the last position against nothing.
        pad = torch.full_like(target[..., :1], _torch_ignore_index(opts))
        target = torch.cat([target[..., 1:], pad], dim=-1)
    fields = {"rows": float(math.prod(x.shape[:-1])), "classes": float(n_local), "weight given": 0.0,
              "x grad": float(need_dx)}  # fmt: skip
    return opts, {**fields, **_common_fields(opts, vocab_start, target)}, target
