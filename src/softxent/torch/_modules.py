"""Thin ``nn.Module`` wrappers around :func:`~softxent.torch.cross_entropy` and
:func:`~softxent.torch.linear_cross_entropy`: they hold the options, the functions do the work."""

from __future__ import annotations

import torch
from torch import nn

from ._functional import Reduction, check_temperature_arg, cross_entropy
from ._linear import linear_cross_entropy
from ._validation import check_head_options, check_options

__all__ = ["CrossEntropyLoss", "LinearCrossEntropyLoss"]


class CrossEntropyLoss(nn.Module):
    r"""Module form of :func:`softxent.torch.cross_entropy`; a drop-in for ``torch.nn.CrossEntropyLoss``.

    ``weight`` is registered as a buffer (it follows ``.to(device)`` and is
    saved in the ``state_dict``), as torch does. The options after ``weight``
    are keyword-only (torch's deprecated ``size_average`` and ``reduce`` do
    not exist here, so a positional call fails loudly instead of
    misreading its arguments).

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import CrossEntropyLoss
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1, z_loss=1e-4)
    >>> loss_fn
    CrossEntropyLoss(reduction='mean', label_smoothing=0.1, z_loss=0.0001)
    >>> loss = loss_fn(torch.zeros(2, 3), torch.tensor([0, 2]))
    >>> print(f"{loss.item():.6f}")                  # log 3 + 1e-4 (log 3)^2
    1.098733
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        *,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        temperature: float = 1.0,
        return_lse: bool = False,
    ) -> None:
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing, self.z_loss, self.softcap = check_options(
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            z_loss=z_loss, softcap=softcap,
        )  # fmt: skip
        self.temperature = check_temperature_arg(temperature)
        if not isinstance(return_lse, bool):
            raise TypeError(f"return_lse must be True or False, got {return_lse!r}")
        self.return_lse = return_lse
        if weight is not None and not isinstance(weight, torch.Tensor):
            raise TypeError(
                f"weight must be a torch.Tensor of class weights, shape (C,), or None, got {type(weight).__name__}"
            )
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor):
        return cross_entropy(
            input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing,
            z_loss=self.z_loss, softcap=self.softcap, temperature=self.temperature, return_lse=self.return_lse,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return _options_repr(self, ("ignore_index", -100), ("reduction", None), ("label_smoothing", 0.0),
                             ("z_loss", 0.0), ("softcap", None), ("temperature", 1.0),
                             ("return_lse", False))  # fmt: skip


class LinearCrossEntropyLoss(nn.Module):
    r"""Module form of :func:`softxent.torch.linear_cross_entropy`: ``forward(x, weight, target, bias=None)``.

    The module holds only the options; the head's parameters stay where
    they live (typically ``model.lm_head.weight``), so that weight tying and
    optimisers are unaffected.

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import LinearCrossEntropyLoss
    >>> head = torch.nn.Linear(8, 100)
    >>> loss_fn = LinearCrossEntropyLoss(ignore_index=0)
    >>> x, y = torch.randn(4, 8), torch.tensor([5, 0, 7, 99])
    >>> loss = loss_fn(x, head.weight, y, head.bias)
    >>> bool(torch.allclose(loss, torch.nn.functional.cross_entropy(head(x), y, ignore_index=0)))
    True
    """

    def __init__(
        self,
        *,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        softcap: float | None = None,
        temperature: float = 1.0,
        chunk_size: int | None = None,
        shift: bool = False,
    ) -> None:
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing, self.z_loss, self.softcap = check_options(
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
            z_loss=z_loss, softcap=softcap,
        )  # fmt: skip
        self.temperature = check_temperature_arg(temperature)
        check_head_options(chunk_size, shift)
        self.chunk_size = chunk_size
        self.shift = shift

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return linear_cross_entropy(
            x, weight, target, bias, ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing, z_loss=self.z_loss, softcap=self.softcap,
            temperature=self.temperature, chunk_size=self.chunk_size, shift=self.shift,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return _options_repr(self, ("ignore_index", -100), ("reduction", None), ("label_smoothing", 0.0),
                             ("z_loss", 0.0), ("softcap", None), ("temperature", 1.0), ("chunk_size", None),
                             ("shift", False))  # fmt: skip


def _options_repr(module: nn.Module, *names_defaults: tuple[str, object]) -> str:
    """``name=value`` for the options that differ from their defaults (``reduction`` always)."""
    parts = []
    for name, default in names_defaults:
        value = getattr(module, name)
        if name == "reduction" or value != default:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)
