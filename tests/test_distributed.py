"""DistributedDataParallel over gloo (2 CPU processes) with a SparseLinear and a BlockLinear:
the replicas stay identical and equal one process trained on all the data."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.spawn import spawn
from torch.nn.parallel import DistributedDataParallel

import torchwire as tw

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="needs torch.distributed with the gloo backend (not built into this torch)",
)

WORLD = 2
STEPS = 6
BATCH = 5  # rows per rank and step
F64 = torch.float64


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        tw.BlockLinear(16, 32, groups=4, dtype=F64),
        nn.ReLU(),
        tw.SparseLinear(tw.Wiring.random(32, 8, density=0.3, seed=0), dtype=F64),
    )


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of every step for all ranks: ``(STEPS, WORLD * BATCH, features)``."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, WORLD * BATCH, 16, generator=generator, dtype=F64)
    target = torch.randn(STEPS, WORLD * BATCH, 8, generator=generator, dtype=F64)
    return x, target


def _train(model: nn.Module, rows: slice) -> None:
    """SGD with momentum on ``rows`` of every step's batch (mean loss: DDP averages grads)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = _data()
    for step in range(STEPS):
        optimizer.zero_grad()
        F.mse_loss(model(x[step, rows]), target[step, rows]).backward()
        optimizer.step()


def _worker(rank: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=Path(store_path).as_uri(),  # a file rendezvous: no TCP port to pick
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        model = _model()
        _train(DistributedDataParallel(model), slice(rank * BATCH, (rank + 1) * BATCH))
        torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


def test_ddp_replicas_stay_identical_and_equal_one_process_on_all_data(tmp_path: Path) -> None:
    spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    replicas = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    initial = _model().state_dict()
    single = _model()
    _train(single, slice(0, WORLD * BATCH))  # the concatenated data of both ranks
    only_rank0 = _model()
    _train(only_rank0, slice(0, BATCH))
    reference = single.state_dict()
    assert set(replicas[0]) == set(replicas[1]) == set(reference)
    tensors = [k for k, v in reference.items() if isinstance(v, torch.Tensor)]
    params = [name for name, _ in single.named_parameters()]
    buffers = [name for name, _ in single.named_buffers()]
    assert {"2.weight", "2.indices", "0.weight"} <= set(params) | set(buffers)
    for key in tensors:  # parameters and buffers, bit for bit
        assert torch.equal(replicas[0][key], replicas[1][key]), key
        torch.testing.assert_close(replicas[0][key], reference[key], rtol=1e-10, atol=1e-12)
    for key in params:
        assert not torch.equal(replicas[0][key], initial[key]), f"{key} did not train"
        # the gradients were averaged over both ranks, not taken from one rank's data
        assert not torch.allclose(replicas[0][key], only_rank0.state_dict()[key]), key
    for key in buffers:
        assert torch.equal(replicas[0][key], initial[key]), key
    for key in set(reference) - set(tensors):  # extra state (SparseLinear sizes and names)
        assert replicas[0][key] == replicas[1][key] == reference[key]
