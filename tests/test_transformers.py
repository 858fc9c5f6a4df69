"""softxent.transformers.patch / unpatch on tiny randomly initialised Hugging Face causal LMs (no downloads).

Oracle: the same model unpatched, i.e. transformers' own forward and
``ForCausalLMLoss`` (logits materialised, ``F.cross_entropy``), differentiated
by torch's autograd: the patched loss and every parameter's gradient agree in
float32 to 1e-5 (relative), for Llama, Qwen2, Qwen3, Mistral, Gemma 2 and
Gemma 3 (final-logit soft-capping; both tie the head to the embeddings) and a
Llama with tied embeddings; with ``num_items_in_batch``, ``logits_to_keep``,
``shift_labels``, ``return_dict=False``, bf16 weights and autocast.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the Hugging Face patch needs transformers (dev extra)")

import softxent.transformers as sxh  # noqa: E402
from softxent.transformers import PatchError  # noqa: E402

V = 512
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=V, max_position_embeddings=64)  # fmt: skip


def config(name: str, **extra):
    c = transformers
    configs = {
        "llama": lambda: c.LlamaConfig(**SMALL),
        "llama-tied": lambda: c.LlamaConfig(**SMALL, tie_word_embeddings=True),
        "qwen2": lambda: c.Qwen2Config(**SMALL),
        "qwen3": lambda: c.Qwen3Config(**SMALL, head_dim=16),
        "mistral": lambda: c.MistralConfig(**SMALL),
        "gemma2": lambda: c.Gemma2Config(**SMALL, head_dim=16, final_logit_softcapping=2.0),
        "gemma3": lambda: c.Gemma3TextConfig(**SMALL, head_dim=16, final_logit_softcapping=2.0),
    }
    cfg = configs[name]()
    for k, v in extra.items():
        setattr(cfg, k, v)
    return cfg


def build(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config(name, **extra)).train()


def batch(seed: int = 1, shape=(2, 12)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, shape, generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt that is not trained on
    labels[1, -2:] = -100  # padding
    return ids, labels


def loss_and_grads(model, **inputs):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def assert_same(a, b, rtol=1e-5):
    (out_a, g_a), (out_b, g_b) = a, b
    torch.testing.assert_close(out_a.loss, out_b.loss, rtol=rtol, atol=0)
    assert g_a.keys() == g_b.keys()
    for name in g_a:
        scale = g_b[name].abs().max().item()
        torch.testing.assert_close(
            g_a[name], g_b[name], rtol=rtol, atol=rtol * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


ARCHS = ["llama", "llama-tied", "qwen2", "qwen3", "mistral", "gemma2", "gemma3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_patched_loss_and_gradients_equal_the_models_own(arch):
    model = build(arch)
    ids, labels = batch()
    theirs = loss_and_grads(model, input_ids=ids, labels=labels)
    assert theirs[0].logits is not None
    assert sxh.patch(model) is model and sxh.is_patched(model)
    ours = loss_and_grads(model, input_ids=ids, labels=labels)
    assert ours[0].logits is None  # never materialised
    assert_same(ours, theirs)
    if arch in ("llama-tied", "gemma3"):
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # without labels, and in evaluation mode, the model's own forward
    torch.testing.assert_close(model(input_ids=ids).logits, theirs[0].logits, rtol=0, atol=0)
    model.eval()
    torch.testing.assert_close(model(input_ids=ids, labels=labels).loss, theirs[0].loss, rtol=0, atol=0)


def test_softcapping_is_honoured():
    """Gemma 2 with and without its cap: the patch follows the config (the losses differ, each matches)."""
    for cap in (None, 0.5):
        model = build("gemma2", final_logit_softcapping=cap)
        ids, labels = batch()
        theirs = loss_and_grads(model, input_ids=ids, labels=labels)
        sxh.patch(model)
        assert_same(loss_and_grads(model, input_ids=ids, labels=labels), theirs)


def test_loss_options_of_the_forward():
    model = build("qwen2")
    ids, labels = batch(shape=(3, 10))
    keep = 4
    cases = [
        dict(num_items_in_batch=torch.tensor(37)),  # Trainer: the tokens of the whole accumulated batch
        dict(num_items_in_batch=11),
        dict(logits_to_keep=keep, labels=labels[:, -keep:]),
        dict(shift_labels=torch.roll(labels, -1, 1)),
        dict(ignore_index=7, labels=torch.where(labels == -100, 7, labels)),
    ]
    for case in cases:
        inputs = dict(input_ids=ids, labels=labels) | case
        sxh.unpatch(model)
        theirs = loss_and_grads(model, **inputs)
        sxh.patch(model)
        assert_same(loss_and_grads(model, **inputs), theirs)


def test_chunked_blocks_and_tuple_outputs():
    model = build("mistral")
    ids, labels = batch()
    theirs = loss_and_grads(model, input_ids=ids, labels=labels)
    sxh.patch(model, chunk_size=5)  # several row blocks
    assert_same(loss_and_grads(model, input_ids=ids, labels=labels), theirs)
    out = model(input_ids=ids, labels=labels, return_dict=False, use_cache=False)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out[0], theirs[0].loss, rtol=1e-5, atol=0)
    # positional arguments bind as the model's own forward binds them
    torch.testing.assert_close(model(ids, None, None, None, None, labels).loss, theirs[0].loss, rtol=1e-5, atol=0)


def test_bfloat16_model_and_autocast():
    model = build("llama")
    ids, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = loss_and_grads(model, input_ids=ids, labels=labels)
        sxh.patch(model)
        ours = loss_and_grads(model, input_ids=ids, labels=labels)
    assert ours[0].loss.dtype == theirs[0].loss.dtype == torch.float32
    assert_same(ours, theirs, rtol=2e-2)  # theirs rounds the logits to bf16, ours does not
    sxh.unpatch(model)
    model = model.to(torch.bfloat16)
    theirs = loss_and_grads(model, input_ids=ids, labels=labels)
    sxh.patch(model)
    ours = loss_and_grads(model, input_ids=ids, labels=labels)
    assert ours[0].loss.dtype == torch.float32
    assert all(g.dtype == torch.bfloat16 for g in ours[1].values())
    assert_same(ours, theirs, rtol=3e-2)


def test_generation_is_unchanged():
    model = build("llama").eval()
    ids, _ = batch()
    want = model.generate(ids[:1, :5], max_new_tokens=6, do_sample=False)
    sxh.patch(model, when="always")
    got = model.generate(ids[:1, :5], max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)


def test_patch_is_idempotent_and_reversible_on_instances_and_classes():
    cls = transformers.LlamaForCausalLM
    own = cls.__dict__["forward"]
    model = build("llama")
    ids, labels = batch()
    theirs = model(input_ids=ids, labels=labels).loss
    sxh.patch(model)
    first = model.forward
    sxh.patch(model)
    assert model.forward == first  # nothing added on the second call
    sxh.patch(model, when="always")  # other options replace the patch, not stack on it
    assert model.forward.__func__.__wrapped__ is own
    assert sxh.unpatch(model) is model and not sxh.is_patched(model) and "forward" not in model.__dict__
    assert sxh.unpatch(model) is model  # unpatching an unpatched model does nothing
    try:
        sxh.patch(cls)
        sxh.patch(cls)
        assert cls.forward.__wrapped__ is own
        other = build("llama")
        assert sxh.is_patched(other) and other(input_ids=ids, labels=labels).logits is None
        sxh.patch(other)  # already patched through its class: nothing to do
        assert "forward" not in other.__dict__
        with pytest.raises(ValueError, match=r"patched through its class: softxent.transformers.unpatch\("):
            sxh.unpatch(other)
    finally:
        sxh.unpatch(cls)
    assert cls.__dict__["forward"] is own and not sxh.is_patched(cls)
    torch.testing.assert_close(model(input_ids=ids, labels=labels).loss, theirs, rtol=0, atol=0)


def test_models_it_cannot_patch_are_refused_with_the_reason():
    with pytest.raises(PatchError, match="its forward takes no `labels`"):
        sxh.patch(transformers.LlamaModel)
    with pytest.raises(PatchError, match="takes a transformers model or model class"):
        sxh.patch(torch.nn.Linear(2, 3))

    class ScaledHead(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = build("llama")
    model.lm_head = ScaledHead(64, V, bias=False)
    with pytest.raises(PatchError, match="its output head is a ScaledHead, not a plain torch.nn.Linear"):
        sxh.patch(model)
    # A forward that rescales the logits (Cohere's logit_scale) is found at the first labelled forward.
    cohere = transformers.AutoModelForCausalLM.from_config(
        transformers.CohereConfig(**SMALL, logit_scale=0.25)
    ).train()  # fmt: skip
    sxh.patch(cohere)
    ids, labels = batch()
    with pytest.raises(PatchError, match=r"transforms the output head's logits .*a logit of 0.5 became 0.125"):
        cohere(input_ids=ids, labels=labels)
    assert "forward" not in cohere.lm_head.__dict__  # the probe is gone again
    with pytest.raises(ValueError, match="when must be 'training' or 'always'"):
        sxh.patch(model, when="eval")
