"""``patch`` / ``unpatch``: a Hugging Face causal LM's training loss on the fused linear + cross-entropy head.

How it works, for any architecture
----------------------------------
A ``transformers`` causal LM's forward runs its decoder, slices the hidden
states (``logits_to_keep``), applies the output head (``lm_head``, found by
``get_output_embeddings()``), maybe soft-caps the logits (Gemma 2/3:
``c * tanh(z / c)`` with ``c = config.final_logit_softcapping``) and hands them
with the labels to ``self.loss_function`` (shift by one, ``ignore_index=-100``,
``"sum" / num_items_in_batch`` under ``Trainer``'s gradient accumulation, else
the mean; logits upcast to float32).

The patched forward runs the model's *own* forward, with ``labels=None`` and
the head's ``forward`` replaced for that one call by a probe that records its
input (the sliced hidden states) and returns a (..., 1) tensor holding 0.5
instead of the (..., V) logits. Whatever the model does after its head is
applied to that probe: the patch checks that the probe came back as 0.5, or
as ``c * tanh(0.5 / c)`` where the config declares a soft-cap, and refuses
(:class:`PatchError`) a model that transforms its logits in any other way
(a logit scale, a bias added outside the head, ...), rather than compute a
different loss. The loss is then :func:`softxent.torch.linear_cross_entropy`
of the recorded hidden states and the head's parameters (tied embeddings are
the same parameter, so their gradient adds up as in the model), with the
labels shifted as ``ForCausalLMLoss`` shifts them.

Only labelled forwards in training mode take this path (``when="always"``:
also in evaluation mode, where ``Trainer``'s evaluation then gets no logits);
everything else, including ``generate``, is the model's forward untouched.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import types
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..torch import linear_cross_entropy

__all__ = ["PatchError", "is_patched", "patch", "unpatch"]

T = TypeVar("T")
_PROBE = 0.5  # what the probe head returns; any value where tanh is far from linear would do
_MARK = "__softxent_patch__"  # attribute of a patched forward: (original, owned by the class, options)


class PatchError(TypeError):
    """A model (or class) that :func:`patch` cannot make compute its loss on the fused head, and why."""


def _name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__name__


def _check_class(cls: type) -> None:
    from transformers import PreTrainedModel

    if not issubclass(cls, PreTrainedModel):
        raise PatchError(f"softxent.transformers.patch takes a transformers model or model class, got {cls!r}")
    params = inspect.signature(cls.forward).parameters
    if "labels" not in params:
        raise PatchError(
            f"cannot patch {cls.__name__}: its forward takes no `labels`, so it computes no loss to fuse "
            "(patch the ...ForCausalLM class)"
        )
    if not hasattr(cls, "get_output_embeddings"):
        raise PatchError(f"cannot patch {cls.__name__}: it has no get_output_embeddings() to find its head")


def _head(model: nn.Module) -> nn.Linear:
    """The model's output head, an ``nn.Linear`` whose forward is torch's (else :class:`PatchError`)."""
    head = model.get_output_embeddings()
    if head is None:
        raise PatchError(f"cannot patch {_name(model)}: get_output_embeddings() returned None (it has no output head)")
    if not isinstance(head, nn.Linear) or type(head).forward is not nn.Linear.forward:
        raise PatchError(
            f"cannot patch {_name(model)}: its output head is a {type(head).__name__}, not a plain torch.nn.Linear "
            "(a quantised or adapted head computes something other than input @ weight.T + bias)"
        )
    if "forward" in head.__dict__:
        raise PatchError(
            f"cannot patch {_name(model)}: its output head's forward is replaced on the instance (a hook such as "
            "accelerate's device placement); the fused loss would bypass it"
        )
    return head


def _softcap(model: nn.Module) -> float | None:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    cap = getattr(text, "final_logit_softcapping", None)
    return None if cap is None else float(cap)


@contextlib.contextmanager
def _probe_head(head: nn.Linear) -> Iterator[list[torch.Tensor]]:
    """For one forward: the head records its input and returns a (..., 1) tensor of 0.5, not the logits."""
    seen: list[torch.Tensor] = []

    def probe(hidden: torch.Tensor) -> torch.Tensor:
        seen.append(hidden)
        return torch.full((*hidden.shape[:-1], 1), _PROBE, dtype=torch.float32, device=hidden.device)

    head.forward = probe
    try:
        yield seen
    finally:
        del head.forward


def _check_probe(model: nn.Module, seen: list[torch.Tensor], logits: Any, softcap: float | None) -> torch.Tensor:
    """The head's recorded input, once the forward is known to have left the head's output as the loss sees it."""
    if len(seen) != 1:
        raise PatchError(f"cannot patch {_name(model)}: its forward called the output head {len(seen)} times, not once")
    hidden = seen[0]
    want = _PROBE if softcap is None else softcap * math.tanh(_PROBE / softcap)
    ok = (
        isinstance(logits, torch.Tensor)
        and tuple(logits.shape) == (*hidden.shape[:-1], 1)
        and bool(torch.all((logits.float() - want).abs() <= 1e-5 * max(1.0, abs(want))))
    )
    if not ok:
        got = logits.reshape(-1)[0].item() if isinstance(logits, torch.Tensor) and logits.numel() else logits
        raise PatchError(
            f"cannot patch {_name(model)}: its forward transforms the output head's logits in a way softxent does "
            f"not reproduce (a logit of {_PROBE} became {got!r}, expected {want!r}"
            + ("" if softcap is None else f" from final_logit_softcapping={softcap}")
            + "); softxent.transformers.unpatch() it"
        )
    return hidden


def _fused_loss(model: nn.Module, hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor,
                loss_kwargs: dict[str, Any], softcap: float | None, chunk_size: int | None) -> torch.Tensor:  # fmt: skip
    """``ForCausalLMLoss`` of ``head(hidden)`` (soft-capped), on the fused head."""
    ignore_index = loss_kwargs.get("ignore_index", -100)
    shift_labels = loss_kwargs.get("shift_labels")
    if shift_labels is None:
        # Position t predicts label t + 1; the last position predicts nothing (as ForCausalLMLoss pads).
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    shift_labels = shift_labels.to(hidden.device)
    if shift_labels.numel() != hidden[..., 0].numel():
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match the {tuple(hidden.shape[:-1])} positions the head "
            "is applied to (with logits_to_keep, give labels for the kept positions only)"
        )
    shift_labels = shift_labels.reshape(hidden.shape[:-1])
    weight, bias = head.weight, head.bias
    if hidden.dtype in (torch.float16, torch.bfloat16) and not torch.is_autocast_enabled(hidden.device.type):
        # The model's loss upcasts its logits to float32; the fused head computes in float32
        # anyway, and its float32 loss is only had from float32 operands.
        hidden, weight = hidden.float(), weight.float()
        bias = None if bias is None else bias.float()
    num_items = loss_kwargs.get("num_items_in_batch")
    loss = linear_cross_entropy(
        hidden, weight, shift_labels, linear_bias=bias, ignore_index=ignore_index,
        reduction="mean" if num_items is None else "sum", softcap=softcap, chunk_size=chunk_size,
    )  # fmt: skip
    if num_items is not None:
        # Trainer's gradient accumulation: the sum over this micro-batch / the tokens of the whole batch.
        loss = loss / (num_items.to(loss.device) if isinstance(num_items, torch.Tensor) else num_items)
    return loss


def _fused_forward(original: Callable[..., Any], owned: bool, when: str, chunk_size: int | None) -> Callable[..., Any]:
    """The patched forward around the class's ``original`` forward."""
    sig = inspect.signature(original)
    var_kw = next((p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None)

    @functools.wraps(original)
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        labels = bound.arguments.get("labels")
        if labels is None or (when == "training" and not self.training):
            return original(self, *args, **kwargs)
        head = _head(self)
        softcap = _softcap(self)
        extra = dict(bound.arguments.get(var_kw, {})) if var_kw else {}
        return_dict = bound.arguments.get("return_dict", extra.pop("return_dict", None))
        if return_dict is None:
            return_dict = getattr(self.config, "return_dict", True)
        if var_kw:
            bound.arguments[var_kw] = {**extra, "return_dict": True}
        elif "return_dict" in sig.parameters:
            bound.arguments["return_dict"] = True
        bound.arguments["labels"] = None
        with _probe_head(head) as seen:
            out = original(*bound.args, **bound.kwargs)
        hidden = _check_probe(self, seen, out.get("logits"), softcap)
        loss = _fused_loss(self, hidden, head, labels, extra, softcap, chunk_size)
        fields = {k: v for k, v in out.items() if k not in ("loss", "logits")}
        result = type(out)(loss=loss, **fields)
        return result if return_dict else result.to_tuple()

    setattr(forward, _MARK, (original, owned, (when, chunk_size)))
    return forward


def _mark(forward: Any) -> tuple[Any, bool, tuple[Any, ...]] | None:
    forward = getattr(forward, "__func__", forward)
    return getattr(forward, _MARK, None)


def is_patched(model_or_class: Any) -> bool:
    """Whether ``model_or_class`` (an instance: itself or through its class) computes its loss on the fused head."""
    if isinstance(model_or_class, type):
        return _mark(model_or_class.__dict__.get("forward")) is not None
    return _mark(model_or_class.__dict__.get("forward")) is not None or is_patched(type(model_or_class))


def _refuse_foreign_forward(model: nn.Module) -> None:
    """Raise :class:`PatchError` if something other than softxent replaced ``model.forward`` on the instance.

    TRL's trainers (``SFTTrainer``, ``DPOTrainer``, ...) install their own
    fused head that way (``trl.trainer.utils.add_fused_lm_head``), as do
    accelerate's hooks; patching over it would silently discard it.
    """
    own = model.__dict__.get("forward")
    if own is None or _mark(own) is not None:
        return
    code = getattr(getattr(own, "__func__", own), "__code__", None)
    where = getattr(code, "co_qualname", None) or getattr(code, "co_name", None) or repr(own)
    raise PatchError(
        f"cannot patch this {_name(model)}: its forward is replaced on the instance (by {where}; TRL's trainers "
        "install their own fused head this way, and compute the training loss with it), and patching would "
        "discard that; patch the model before handing it on (TRL's trainers then still use their own head)"
    )


def patch(model_or_class: T, *, when: Literal["training", "always"] = "training", chunk_size: int | None = None) -> T:
    """Make a ``transformers`` causal LM (an instance, or its class: every instance) train on the fused head.

    With ``labels``, the forward returns the loss of
    :func:`softxent.torch.linear_cross_entropy` on the decoder's hidden
    states and the output head's weight (and bias), soft-capped as the config
    says, labels shifted by one, ``ignore_index=-100`` (or the ``ignore_index``
    passed to the forward), divided by ``num_items_in_batch`` when given
    (``Trainer``'s gradient accumulation), else the mean over the counted
    tokens; ``logits`` is ``None`` then. The logits are never materialised.

    Parameters
    ----------
    model_or_class : transformers.PreTrainedModel or its class
        A causal LM whose forward takes ``labels`` and whose
        ``get_output_embeddings()`` is a plain ``nn.Linear`` (tied or not).
    when : {"training", "always"}
        ``"training"`` (default, as Liger-Kernel): only while
        ``model.training``; in evaluation mode the model's own forward gives
        logits and loss (what ``Trainer.evaluate`` needs for metrics).
        ``"always"``: every labelled forward.
    chunk_size : int, optional
        Rows per block of the fused head (default: from its memory budget).

    Returns
    -------
    The same object, patched. Patching again with the same options does
    nothing; with other options, replaces them. :func:`unpatch` undoes it.

    Raises
    ------
    PatchError
        (a ``TypeError``) for a model it cannot patch, saying why: no labels,
        no output head, a head that is not a plain ``nn.Linear``, a forward
        that something else replaced on the instance (TRL's trainers install
        their own fused head that way: patch before handing the model on), or
        (at the first labelled forward) logits transformed beyond the
        config's soft-capping.

    Notes
    -----
    Differences from the model's own loss: a batch whose labels are all
    ``-100`` gives 0 (the model's: NaN). bf16/fp16 models compute in float32
    (one float32 copy of the head's weight for the step) and return a float32
    loss, as the model's loss does.
    """
    if when not in ("training", "always"):
        raise ValueError(f"when must be 'training' or 'always', got {when!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    options = (when, chunk_size)
    if isinstance(model_or_class, type):
        cls = model_or_class
        _check_class(cls)
        mark = _mark(cls.__dict__.get("forward"))
        if mark is not None:
            if mark[2] == options:
                return model_or_class
            unpatch(cls)
        owned = "forward" in cls.__dict__
        cls.forward = _fused_forward(cls.forward, owned, when, chunk_size)
        return model_or_class
    model = model_or_class
    if not isinstance(model, nn.Module):
        raise PatchError(f"softxent.transformers.patch takes a transformers model or model class, got {model!r}")
    _check_class(type(model))
    _head(model)
    _refuse_foreign_forward(model)
    mark = _mark(model.__dict__.get("forward"))
    if mark is not None:
        if mark[2] == options:
            return model_or_class
        unpatch(model)
    original = type(model).forward
    class_mark = _mark(original)
    if class_mark is not None:
        if class_mark[2] == options:
            return model_or_class  # its class is patched with these options already
        original = class_mark[0]
    model.forward = types.MethodType(_fused_forward(original, False, when, chunk_size), model)
    return model_or_class


def unpatch(model_or_class: T) -> T:
    """Undo :func:`patch`: the model's (or class's) own forward again. Unpatched objects are returned unchanged.

    An instance patched through its class stays patched until the class is
    unpatched (``unpatch(type(model))``); that raises a ``ValueError`` saying so.
    """
    if isinstance(model_or_class, type):
        mark = _mark(model_or_class.__dict__.get("forward"))
        if mark is not None:
            original, owned, _ = mark
            if owned:
                model_or_class.forward = original
            else:
                delattr(model_or_class, "forward")
        return model_or_class
    if _mark(model_or_class.__dict__.get("forward")) is not None:
        del model_or_class.forward
    elif is_patched(type(model_or_class)):
        raise ValueError(
            f"this {_name(model_or_class)} is patched through its class: softxent.transformers.unpatch"
            f"({_name(model_or_class)}) undoes that for every instance"
        )
    return model_or_class
