"""TRL's ``SFTTrainer`` and a softxent-patched model: what happens, pinned down.

TRL 1.x's ``SFTTrainer`` installs its own fused output head on the model it
is given (``trl.trainer.utils.add_fused_lm_head``, which replaces
``model.forward`` on the instance) and computes the training loss from
``model(**inputs, fused_lm_head=True)``: the decoder (``model.base_model``)
and TRL's chunked log-probability head, never the model's own forward nor
``model.loss_function``. So a model patched by softxent *before* it is given
to ``SFTTrainer`` trains exactly as the unpatched model does (the same step
losses and parameters, checked here on a tiny random Llama with gradient
accumulation), and softxent's head is never called; patching *after* would
discard TRL's head, so :func:`softxent.transformers.patch` refuses it.

Everything is in memory: a word-level tokenizer built with ``tokenizers``
and a pre-tokenised dataset (no download, ``report_to=[]``).
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the Hugging Face patch needs transformers (dev extra)")
trl = pytest.importorskip("trl", reason="TRL is not installed")
datasets = pytest.importorskip("datasets", reason="SFTTrainer takes a datasets.Dataset")
tokenizers = pytest.importorskip("tokenizers", reason="the in-memory tokenizer is built with tokenizers")
if importlib.util.find_spec("accelerate") is None:  # pragma: no cover
    pytest.skip("transformers.Trainer needs accelerate, not installed", allow_module_level=True)

import softxent.transformers as sxh  # noqa: E402
from softxent.transformers import _patch  # noqa: E402

V, T = 512, 16


def tokenizer():
    """A word-level tokenizer over the words t0 ... t{V-3}, <pad> and <eos>: V ids, built in memory."""
    vocab = {f"t{i}": i for i in range(V - 2)} | {"<pad>": V - 2, "<eos>": V - 1}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def dataset():
    """16 pre-tokenised rows of 6 to T tokens (padding makes the rows' trained-token counts differ)."""
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(6, T + 1, (16,), generator=g)
    rows = [torch.randint(0, V - 2, (int(n),), generator=g).tolist() + [V - 1] for n in lengths]
    return datasets.Dataset.from_dict({"input_ids": rows})


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=V, max_position_embeddings=T + 1)  # fmt: skip
    return transformers.AutoModelForCausalLM.from_config(cfg)


def sft(tmp_path, model, name):
    args = trl.SFTConfig(
        output_dir=str(tmp_path / name), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
        learning_rate=0.5, optim="sgd", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True, max_length=T + 1, activation_checkpointing=False,
    )  # fmt: skip
    return trl.SFTTrainer(model=model, args=args, train_dataset=dataset(), processing_class=tokenizer())


def train(tmp_path, patched: bool, name: str, monkeypatch):
    model = tiny_llama()
    if patched:
        sxh.patch(model)
    trainer = sft(tmp_path, model, name)
    compute_loss = trainer.compute_loss
    seen, fused_calls = [], []

    def spy_loss(*a, **k):
        loss = compute_loss(*a, **k)
        seen.append((loss[0] if isinstance(loss, tuple) else loss).item())
        return loss

    def spy_head(*a, **k):
        fused_calls.append(1)
        return linear_cross_entropy(*a, **k)

    linear_cross_entropy = _patch.linear_cross_entropy
    monkeypatch.setattr(_patch, "linear_cross_entropy", spy_head)
    trainer.compute_loss = spy_loss
    out = trainer.train()
    monkeypatch.undo()
    return out.training_loss, seen, {n: p.detach().clone() for n, p in model.named_parameters()}, len(fused_calls)


def test_sft_trainer_on_a_patched_model_trains_as_the_unpatched_one(tmp_path, monkeypatch):
    """Same step losses and parameters; softxent's head is never called (TRL's own fused head computes the loss)."""
    loss_theirs, seen_theirs, params_theirs, _ = train(tmp_path, False, "theirs", monkeypatch)
    loss_ours, seen_ours, params_ours, fused_calls = train(tmp_path, True, "ours", monkeypatch)
    assert len(seen_ours) == len(seen_theirs) == 6  # 3 steps x 2 micro-batches
    assert fused_calls == 0  # the patch is bypassed, not used
    torch.testing.assert_close(torch.tensor(seen_ours), torch.tensor(seen_theirs), rtol=1e-5, atol=0)
    assert loss_ours == pytest.approx(loss_theirs, rel=1e-5)
    assert params_ours.keys() == params_theirs.keys()
    for name, p in params_theirs.items():
        torch.testing.assert_close(params_ours[name], p, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.equal(tiny_llama().lm_head.weight, params_ours["lm_head.weight"])  # the steps did move it


def test_sft_trainer_loss_is_the_patched_models_loss(tmp_path):
    """On one batch, TRL's fused loss equals the softxent-patched forward's (float32, 1e-5): the same objective."""
    model = tiny_llama().train()
    trainer = sft(tmp_path, model, "one")
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any()  # padding: rows train on different numbers of tokens
    trl_loss = model(**batch, fused_lm_head=True).loss
    fresh = sxh.patch(tiny_llama().train())
    ours = fresh(**batch)
    assert ours.logits is None
    torch.testing.assert_close(ours.loss, trl_loss, rtol=1e-5, atol=0)


def test_patching_after_sft_trainer_is_refused(tmp_path):
    """SFTTrainer replaced the model's forward on the instance: patching then would discard TRL's head."""
    model = tiny_llama()
    sft(tmp_path, model, "after")
    with pytest.raises(sxh.PatchError, match=r"forward is replaced on the instance \(by add_fused_lm_head"):
        sxh.patch(model)
