"""Shared by the distributed Hugging Face tests (DDP, FSDP2): a tiny Llama, its global batches, the
launcher of the gloo ranks, and the one-process reference that every distributed run must equal.

Each rank takes half of a 4-row global batch and returns, as ``Trainer``
does, its token sum over the tokens of the whole global batch
(``num_items_in_batch``) times the world size (the wrappers average the
gradients over the ranks). After ``STEPS`` SGD steps the global losses and
the parameters must equal those of the model's own forward, unpatched, on
the global batch in one process (float32, 1e-5). The ranks are
subprocesses with a time limit; rank 0 saves its losses and parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import transformers

import softxent

V, T, ROWS, STEPS, WORLD = 512, 12, 4, 2, 2


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


def train_on_share(forward, model, rank: int, world: int) -> list[float]:
    """STEPS SGD steps of one rank on its share of each global batch; the global losses.

    ``forward`` is the wrapped model (DDP) or the model itself (FSDP2); the
    wrappers average the gradients over the ranks, so each rank's loss (its
    token sum over the whole batch's tokens) is scaled by the world size.
    """
    import torch.distributed as dist

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    share = ROWS // world
    for step in range(STEPS):
        ids, labels = global_batch(step)
        mine = slice(rank * share, (rank + 1) * share)
        out = forward(input_ids=ids[mine], labels=labels[mine], num_items_in_batch=torch.tensor(n_items(labels)))
        assert out.logits is None
        (out.loss * world).backward()
        total = out.loss.detach().clone()
        dist.all_reduce(total)  # the global loss: the ranks' shares add up
        losses.append(total.item())
        opt.step()
        opt.zero_grad()
    return losses


def run_ranks(module: str, tmp_path: Path, timeout_s: float) -> dict:
    """Run ``module._worker(rank, world, store, out)`` on WORLD gloo ranks; rank 0's saved results."""
    src = str(Path(softxent.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([src, tests] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # Once the work is done (results saved, process group destroyed) a rank leaves with os._exit(0):
    # gloo's worker threads can abort the interpreter's own teardown ("terminate called without an
    # active exception", exit -6: seen once in a CI run on 2026-12-04; pytorch/pytorch#179291 describes it).
    # A failure during the work still raises first and exits non-zero.
    worker = (
        f"import os, sys; sys.path.insert(0, sys.argv[1]); import {module} as t; t._worker(*sys.argv[2:]); "
        "sys.stdout.flush(); sys.stderr.flush(); os._exit(0)"
    )
    out = tmp_path / "rank0.pt"
    procs = []
    for rank in range(WORLD):
        log = open(tmp_path / f"rank{rank}.log", "w")  # noqa: SIM115  (closed below)
        cmd = [sys.executable, "-c", worker, tests, str(rank), str(WORLD), str(tmp_path / "store"), str(out)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path), log))
    try:
        for p, _ in procs:
            p.wait(timeout=timeout_s)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = "\n".join((tmp_path / f"rank{r}.log").read_text() for r in range(WORLD))
    assert all(p.returncode == 0 for p, _ in procs), logs
    return torch.load(out)


def assert_equals_one_process(ranks: dict) -> None:
    """The distributed losses and parameters against the model's own forward on the global batch."""
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
