"""A patched tiny Llama under ``DistributedDataParallel`` on 2 gloo ranks = one unpatched process on the global batch.

Each rank takes half of a 4-row global batch and returns, as ``Trainer``
does under DDP, its token sum over the tokens of the whole global batch
(``num_items_in_batch``) times the world size (DDP averages the gradients
over the ranks). After 2 SGD steps the global losses and the parameters equal
those of the model's own forward, unpatched, on the global batch in one
process (float32, 1e-5). The ranks are subprocesses with a time limit.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the Hugging Face patch needs transformers (dev extra)")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)

from _hf_ranks import assert_equals_one_process, run_ranks, tiny_llama, train_on_share  # noqa: E402

TIMEOUT_S = 180


def _worker(rank: str, world: str, store: str, out: str) -> None:
    """One rank: the patched model under DDP, its share of each global batch."""
    import softxent.transformers as sxh

    rank, world = int(rank), int(world)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    model = sxh.patch(tiny_llama())
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    losses = train_on_share(ddp, model, rank, world)
    if rank == 0:
        torch.save({"losses": losses, "params": {n: p.detach() for n, p in model.named_parameters()}}, out)
    dist.destroy_process_group()


def test_ddp_on_two_gloo_ranks_equals_one_process(tmp_path):
    assert_equals_one_process(run_ranks("test_transformers_ddp", tmp_path, TIMEOUT_S))
