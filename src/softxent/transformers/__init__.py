"""Hugging Face front end of softxent: one call makes a ``transformers`` causal LM train on the fused head.

:func:`patch` (a model instance or its class) makes the model's forward
compute the loss with :func:`softxent.torch.linear_cross_entropy` whenever it
trains on ``labels``: the (batch, sequence, vocabulary) logits are never
materialised, and the output carries ``logits=None`` then. Without labels, in
evaluation mode and in ``generate`` the forward is the model's own.
:func:`unpatch` restores it. Generic over architectures: the head is found
with ``get_output_embeddings()``, the final-logit soft-capping (Gemma 2/3) is
read from the config, and the model's own forward runs unchanged up to the
head, so everything before it (attention, caches, ``logits_to_keep``,
gradient checkpointing) is the model's.

Needs ``transformers`` (``pip install "softxent[transformers]"``) and torch.

>>> from transformers import LlamaConfig, AutoModelForCausalLM   # doctest: +SKIP
>>> import softxent.transformers as sxh                          # doctest: +SKIP
>>> model = sxh.patch(AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=64, ...)))  # doctest: +SKIP
"""

from __future__ import annotations

try:
    import transformers  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "softxent.transformers needs Hugging Face transformers, which is not installed: "
        'pip install "softxent[transformers]"'
    ) from exc

from ._patch import PatchError, is_patched, patch, unpatch

__all__ = ["PatchError", "is_patched", "patch", "unpatch"]
