"""A few ``transformers.Trainer`` steps on a tiny random Llama, patched by softxent vs unpatched.

Gradient accumulation on (2 micro-batches per step), rows with different
numbers of trained tokens (so ``num_items_in_batch`` normalisation matters):
the same step losses and the same parameters after the steps, float32, 1e-5.
Everything is built in memory (no download, no network, ``report_to=[]``).
The optimiser is SGD: its step is linear in the gradient, so equal gradients
give equal parameters to rounding. (Adam divides by the root of the second
moment, so an element whose gradient is at float32 noise level, about 1e-9,
moves by up to the learning rate with a direction that noise decides.)
"""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the Hugging Face patch needs transformers (dev extra)")

import softxent.transformers as sxh  # noqa: E402

needs_accelerate = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None, reason="transformers.Trainer needs accelerate, not installed"
)

V, T = 1024, 16


class TinyData(torch.utils.data.Dataset):
    """16 sequences of T tokens; each row trains on a different number of tokens (a prompt masked with -100)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(3)
        self.ids = torch.randint(0, V, (16, T), generator=g)
        self.prompt = torch.randint(0, T - 2, (16,), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = self.ids[i].clone()
        labels[: self.prompt[i]] = -100
        return {"input_ids": self.ids[i], "labels": labels, "attention_mask": torch.ones(T, dtype=torch.long)}


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=V, max_position_embeddings=T)  # fmt: skip
    return transformers.AutoModelForCausalLM.from_config(cfg)


def train(tmp_path, patched: bool, name: str):
    model = tiny_llama()
    if patched:
        sxh.patch(model)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / name), per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
        learning_rate=0.5, optim="sgd", logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=TinyData())
    compute_loss = trainer.compute_loss
    seen = []

    def spy_loss(*a, **k):
        """The loss of every micro-batch, unrounded, as the model returned it."""
        loss = compute_loss(*a, **k)
        seen.append((loss[0] if isinstance(loss, tuple) else loss).item())
        return loss

    trainer.compute_loss = spy_loss
    out = trainer.train()
    return out.training_loss, seen, {n: p.detach().clone() for n, p in model.named_parameters()}, model


@needs_accelerate
def test_trainer_steps_with_gradient_accumulation_agree(tmp_path):
    loss_theirs, seen_theirs, params_theirs, _ = train(tmp_path, False, "theirs")
    loss_ours, seen_ours, params_ours, model = train(tmp_path, True, "ours")
    assert sxh.is_patched(model)
    assert len(seen_ours) == len(seen_theirs) == 6  # 3 steps x 2 micro-batches
    torch.testing.assert_close(torch.tensor(seen_ours), torch.tensor(seen_theirs), rtol=1e-5, atol=0)
    assert loss_ours == pytest.approx(loss_theirs, rel=1e-5)
    moved = 0
    for name, p in params_theirs.items():
        torch.testing.assert_close(params_ours[name], p, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
        moved += 1
    assert moved == len(params_ours)
    torch.manual_seed(0)  # the parameters did move from where they started
    fresh = transformers.AutoModelForCausalLM.from_config(model.config)
    assert not torch.equal(fresh.lm_head.weight, params_ours["lm_head.weight"])


def accumulate_by_hand(patched: bool, steps: int = 3, micro: int = 2):
    """What Trainer does with gradient accumulation, written out: each micro-batch's loss is its token sum
    over the tokens of the whole accumulated batch (``num_items_in_batch``), then one SGD step."""
    model = tiny_llama().train()
    if patched:
        sxh.patch(model)
    data = TinyData()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(steps):
        rows = [data[i] for i in range(step * micro * 2, (step + 1) * micro * 2)]
        parts = [rows[k : k + 2] for k in range(0, len(rows), 2)]
        n_items = sum(int((r["labels"][1:] != -100).sum()) for r in rows)
        for part in parts:
            inputs = {k: torch.stack([r[k] for r in part]) for k in part[0]}
            loss = model(**inputs, num_items_in_batch=torch.tensor(n_items)).loss
            loss.backward()
            losses.append(loss.item())
        opt.step()
        opt.zero_grad()
    return losses, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_gradient_accumulation_by_hand_agrees():
    """The same check as the Trainer test, without Trainer (which needs accelerate)."""
    theirs, params_theirs = accumulate_by_hand(False)
    ours, params_ours = accumulate_by_hand(True)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), rtol=1e-5, atol=0)
    assert params_ours.keys() == params_theirs.keys()
    for name, p in params_theirs.items():
        torch.testing.assert_close(params_ours[name], p, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert not torch.equal(tiny_llama().lm_head.weight, params_ours["lm_head.weight"])  # the steps did move it
