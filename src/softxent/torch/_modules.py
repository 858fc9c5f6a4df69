"""Thin ``nn.Module`` wrappers around :func:`~softxent.torch.cross_entropy` and
:func:`~softxent.torch.linear_cross_entropy`: they hold the options, the functions do the work."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._functional import Reduction, check_temperature_arg, cross_entropy
from ._linear import linear_cross_entropy
from ._linear_args import chunk_rows_from_options
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
    r"""Module form of :func:`softxent.torch.linear_cross_entropy`; a drop-in for torch 2.13's
    ``torch.nn.LinearCrossEntropyLoss``.

    Two ways to build it:

    * **torch's**: ``LinearCrossEntropyLoss(in_features, num_classes, *,
      out_features=(), bias=False, device=None, dtype=None, reduction="mean",
      weight=None, ignore_index=None, label_smoothing=0.0, options=None)``
      owns the head, ``self.linear`` (an ``nn.Linear`` of ``num_classes x
      prod(out_features)`` outputs, as torch stores it), and ``weight`` (class
      weights) as a buffer: ``forward(input, target)``. Its ``state_dict`` has
      torch's keys (``linear.weight``, ``linear.bias``, ``weight``), so either
      module loads the other's.
    * **options only** (no ``in_features``/``num_classes``): the head's
      parameters stay where they live (typically ``model.lm_head.weight``, so
      that weight tying and optimisers are unaffected):
      ``forward(input, linear_weight, target, linear_bias=None)``.

    Both take softxent's extras ``z_loss``, ``softcap``, ``temperature``,
    ``chunk_size``, ``shift`` and ``return_lse`` as keywords (``forward`` then
    returns ``(loss, lse)``), and ``forward`` takes per-row weights as
    ``sample_weight=`` (see :func:`~softxent.torch.linear_cross_entropy`).

    Examples
    --------
    >>> import torch
    >>> from softxent.torch import LinearCrossEntropyLoss
    >>> torch.manual_seed(0) and None
    >>> loss_fn = LinearCrossEntropyLoss(8, 100, bias=True, label_smoothing=0.1)   # torch's constructor
    >>> x, y = torch.randn(4, 8), torch.tensor([5, 0, 7, 99])
    >>> theirs = torch.nn.LinearCrossEntropyLoss(8, 100, bias=True, label_smoothing=0.1)
    >>> _ = theirs.load_state_dict(loss_fn.state_dict())
    >>> bool(torch.allclose(loss_fn(x, y), theirs(x, y)))
    True
    >>> head = torch.nn.Linear(8, 100)
    >>> shared = LinearCrossEntropyLoss(ignore_index=0)                           # the head held elsewhere
    >>> loss = shared(x, head.weight, y, linear_bias=head.bias)
    >>> bool(torch.allclose(loss, torch.nn.functional.cross_entropy(head(x), y, ignore_index=0)))
    True
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        in_features: int | None = None,
        num_classes: int | None = None,
        *,
        out_features: tuple[int, ...] = (),
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        reduction: Reduction = "mean",
        weight: torch.Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        options: Any = None,
        z_loss: float = 0.0,
        softcap: float | None = None,
        temperature: float = 1.0,
        chunk_size: int | None = None,
        shift: bool = False,
        return_lse: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(return_lse, bool):
            raise TypeError(f"return_lse must be True or False, got {return_lse!r}")
        self.return_lse = return_lse
        checked = check_options(
            ignore_index=-100 if ignore_index is None else ignore_index, reduction=reduction,
            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        )  # fmt: skip
        _, self.reduction, self.label_smoothing, self.z_loss, self.softcap = checked
        self.ignore_index = ignore_index
        self.temperature = check_temperature_arg(temperature)
        chunk_rows_from_options(options, None)  # its type
        self.options = options
        check_head_options(chunk_size, shift)
        self.chunk_size = chunk_size
        self.shift = shift
        if (in_features is None) != (num_classes is None):
            raise TypeError(
                "LinearCrossEntropyLoss takes in_features and num_classes together (it then owns the head, "
                f"as torch's does) or neither (the head passed to forward), got in_features={in_features!r}, "
                f"num_classes={num_classes!r}"
            )
        if weight is not None:
            if not isinstance(weight, torch.Tensor) or weight.dim() != 1:
                shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
                raise TypeError(f"weight must be class weights, a tensor of shape (num_classes,), got {shape}")
            if num_classes is not None and tuple(weight.shape) != (num_classes,):
                raise ValueError(f"weight must have shape ({num_classes},) (one per class), got {tuple(weight.shape)}")
        self.register_buffer("weight", weight)
        self.num_classes = num_classes
        self.out_features = tuple(out_features)
        self.linear: nn.Linear | None = None
        if in_features is not None:
            for name, value in (("in_features", in_features), ("num_classes", num_classes)):
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be a positive integer, got {value!r}")
            self.linear = nn.Linear(
                in_features, math.prod(self.out_features, start=num_classes), bias=bias, device=device, dtype=dtype
            )
        elif self.out_features or bias or device is not None or dtype is not None:
            raise TypeError("out_features, bias, device and dtype shape the head, so they need in_features and "
                            "num_classes (without them the head is passed to forward)")  # fmt: skip

    def forward(self, input: torch.Tensor, *tensors: torch.Tensor, linear_bias: torch.Tensor | None = None,
                sample_weight: torch.Tensor | None = None):  # fmt: skip
        """``forward(input, target)`` when the module owns the head, else
        ``forward(input, linear_weight, target, linear_bias=None)``; either with ``sample_weight=`` (one per row)."""
        if self.linear is not None:
            if len(tensors) != 1 or linear_bias is not None:
                raise TypeError(
                    "this LinearCrossEntropyLoss owns its head (self.linear): call it as loss_fn(input, target)"
                )
            (target,) = tensors
            n_in = self.linear.in_features
            linear_weight = self.linear.weight.reshape((self.num_classes, *self.out_features, n_in))
            b = self.linear.bias
            linear_bias = None if b is None else b.reshape((self.num_classes, *self.out_features))
        else:
            if len(tensors) == 3 and linear_bias is None:
                tensors, linear_bias = tensors[:2], tensors[2]
            if len(tensors) != 2:
                raise TypeError(
                    "this LinearCrossEntropyLoss holds no head (built without in_features, num_classes): call it "
                    "as loss_fn(input, linear_weight, target, linear_bias=None)"
                )
            linear_weight, target = tensors
        return linear_cross_entropy(
            input, linear_weight, target, linear_bias=linear_bias, weight=self.weight, reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, options=self.options,
            z_loss=self.z_loss, softcap=self.softcap, temperature=self.temperature, chunk_size=self.chunk_size,
            shift=self.shift, sample_weight=sample_weight, return_lse=self.return_lse,
        )  # fmt: skip

    def extra_repr(self) -> str:
        head = ""
        if self.linear is not None:
            head = (f"in_features={self.linear.in_features}, num_classes={self.num_classes}, "
                    f"out_features={self.out_features}, bias={self.linear.bias is not None}, ")  # fmt: skip
        return head + _options_repr(self, ("ignore_index", None), ("reduction", None), ("label_smoothing", 0.0),
                                    ("options", None), ("z_loss", 0.0), ("softcap", None), ("temperature", 1.0),
                                    ("chunk_size", None), ("shift", False), ("return_lse", False))  # fmt: skip


def _options_repr(module: nn.Module, *names_defaults: tuple[str, object]) -> str:
    """``name=value`` for the options that differ from their defaults (``reduction`` always)."""
    parts = []
    for name, default in names_defaults:
        value = getattr(module, name)
        if name == "reduction" or value != default:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)
