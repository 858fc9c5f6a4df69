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

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers", reason="the Hugging Face patch needs transformers (dev extra)")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)
fsdp = pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (fully_shard) is not in this torch build")

from _hf_ranks import assert_equals_one_process, run_ranks, tiny_llama, train_on_share  # noqa: E402

TIMEOUT_S = 240


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
    losses = train_on_share(model, model, rank, world)
    params = {n: p.full_tensor().detach() for n, p in model.named_parameters()}  # every rank takes part
    if rank == 0:
        torch.save({"losses": losses, "params": params}, out)
    dist.destroy_process_group()


def test_fully_shard_on_two_gloo_ranks_equals_one_process(tmp_path):
    assert_equals_one_process(run_ranks("test_transformers_fsdp", tmp_path, TIMEOUT_S))
