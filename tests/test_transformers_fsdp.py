"""A patched tiny Llama under FSDP2 (``fully_shard``) on 2 gloo ranks = one unpatched process on the global batch.

Each decoder layer and then the whole model are wrapped by
``torch.distributed.fsdp.fully_shard`` on a 1-D CPU device mesh of 2 gloo
ranks: every parameter is a ``DTensor`` sharded over the ranks and
all-gathered around each layer's forward and backward, its gradient
reduce-scattered. Each rank takes half of a 4-row global batch and returns, as
``Trainer`` does, its token sum over the tokens of the whole global batch
(``num_items_in_batch``) times the world size (FSDP averages the gradients over
the ranks). After 2 SGD steps the global losses and the parameters (the
shards gathered with ``full_tensor()``) equal those of the model's own
forward, unpatched, on the global batch in one process (float32, 1e-5). The
ranks are subprocesses with a time limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the Hugging Face patch needs transformers (dev extra)")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)
fsdp = pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is not in this torch build")

import softxent  # noqa: E402

V, T, ROWS, STEPS, WORLD = 512, 12, 4, 2, 2
TIMEOUT_S = 240


def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=V, max_position_embeddings=T)  # fmt: skip
    return transformers.AutoModelForCausalLM.from_config(cfg).train()


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(0, V, (ROWS, T), generator=g)
    labels = ids.clone()
    for r in range(ROWS):
        labels[r, : 1 + 2 * r + step] = -100  # each row trains on a different number of tokens
    return ids, labels


def n_items(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != -100).sum())


def _worker(rank: str, world: str, store: str, out: str) -> None:
    """One rank: the patched model under fully_shard, its share of each global batch."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import softxent.transformers as sxh

    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    model = sxh.patch(tiny_llama())
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert type(model.lm_head.weight).__name__ == "DTensor"  # sharded: each rank holds half of the rows
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    share = ROWS // world
    for step in range(STEPS):
        ids, labels = global_batch(step)
        mine = slice(rank * share, (rank + 1) * share)
        out_ = model(input_ids=ids[mine], labels=labels[mine], num_items_in_batch=torch.tensor(n_items(labels)))
        assert out_.logits is None
        (out_.loss * world).backward()  # FSDP averages the gradients over the ranks
        total = out_.loss.detach().clone()
        dist.all_reduce(total)  # the global loss: the ranks' shares add up
        losses.append(total.item())
        opt.step()
        opt.zero_grad()
    params = {n: p.full_tensor().detach() for n, p in model.named_parameters()}  # every rank takes part
    if rank == 0:
        torch.save({"losses": losses, "params": params}, out)
    dist.destroy_process_group()


_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); import test_transformers_fsdp as t; t._worker(*sys.argv[2:])"


def test_fully_shard_on_two_gloo_ranks_equals_one_process(tmp_path):
    src = str(Path(softxent.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([src, tests] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    out = tmp_path / "rank0.pt"
    procs = []
    for rank in range(WORLD):
        log = open(tmp_path / f"rank{rank}.log", "w")  # noqa: SIM115  (closed below)
        cmd = [sys.executable, "-c", _WORKER, tests, str(rank), str(WORLD), str(tmp_path / "store"), str(out)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log))
    try:
        for p, _ in procs:
            p.wait(timeout=TIMEOUT_S)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = "\n".join((tmp_path / f"rank{r}.log").read_text() for r in range(WORLD))
    assert all(p.returncode == 0 for p, _ in procs), logs
    ranks = torch.load(out)

    # One process, the model's own forward and loss, the whole global batch.
    model = tiny_llama()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(STEPS):
        ids, labels = global_batch(step)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
        opt.step()
        opt.zero_grad()
    torch.testing.assert_close(torch.tensor(ranks["losses"]), torch.tensor(losses), rtol=1e-5, atol=0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(
            ranks["params"][name], p.detach(), rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )
