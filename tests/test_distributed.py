"""Distributed training over gloo (2 CPU processes), each rank on its own rows of the data:
the replicas stay identical and equal one process trained on all the data, with
DistributedDataParallel over every layer type, with FSDP2's ``fully_shard``, and with
DynamicSparsity rewiring under both.

One spawn runs every scenario (starting the processes costs more than the scenarios); the
tests compare what each rank saved with a run of one process."""

from __future__ import annotations

import datetime
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

torch.set_num_threads(1)
WORLD = 2
STEPS = 6
BATCH = 5  # rows per rank and step
F64 = torch.float64
DYNAMIC_STEPS = 30
UPDATE_EVERY = 5  # so DYNAMIC_STEPS // UPDATE_EVERY = 6 rewiring updates
RANDOM_SEED = 100  # global seed before DynamicSparsity(seed=None): 100 + rank on each rank


def _layers_model() -> nn.Sequential:
    """Every layer type: BlockLinear (equal and uneven groups), SparseLinear, MultiLinear, and
    Parallel holding a SparseLinear and a BlockLinear."""
    torch.manual_seed(0)
    return nn.Sequential(
        tw.BlockLinear(16, 32, groups=4, dtype=F64),
        nn.ReLU(),
        tw.BlockLinear([10, 22], [6, 10], dtype=F64),
        nn.Tanh(),
        tw.Parallel(
            tw.SparseLinear(tw.Wiring.random(16, 8, density=0.3, seed=0), dtype=F64),
            tw.BlockLinear(16, 6, groups=2, dtype=F64),
        ),
        tw.MultiLinear([8, 6], 8, dtype=F64),
    )


def _sharded_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        tw.BlockLinear(16, 32, groups=4, dtype=F64),
        nn.ReLU(),
        tw.SparseLinear(tw.Wiring.random(32, 8, density=0.3, seed=0), dtype=F64),
    )


def _dynamic_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        tw.SparseLinear(tw.Wiring.random(16, 24, density=0.25, seed=1), dtype=F64),
        nn.ReLU(),
        tw.SparseLinear(tw.Wiring.random(24, 8, density=0.3, seed=2), dtype=F64),
    )


def _data(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of every step for all ranks: ``(steps, WORLD * BATCH, features)``."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(steps, WORLD * BATCH, 16, generator=generator, dtype=F64)
    target = torch.randn(steps, WORLD * BATCH, 8, generator=generator, dtype=F64)
    return x, target


def _rows(rank: int) -> slice:
    return slice(rank * BATCH, (rank + 1) * BATCH)


ALL_ROWS = slice(0, WORLD * BATCH)  # the concatenated data of both ranks


def _full(value: Any) -> Any:
    """A tensor as one process holds it (FSDP2 keeps DTensor shards)."""
    if isinstance(value, torch.Tensor) and hasattr(value, "full_tensor"):
        return value.full_tensor()
    return value


def _states(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's state_dict and the optimizer's per-parameter state, as full tensors."""
    state = optimizer.state_dict()["state"]
    module = model.module if isinstance(model, DistributedDataParallel) else model
    return {
        "model": {k: _full(v) for k, v in module.state_dict().items()},
        "optimizer": {
            f"{index}.{name}": _full(value)
            for index, entry in state.items()
            for name, value in entry.items()
        },
    }


def _train(model: nn.Module, rows: slice) -> dict[str, Any]:
    """SGD with momentum on ``rows`` of every step's batch (mean loss: DDP averages grads)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, target = _data(STEPS)
    for step in range(STEPS):
        optimizer.zero_grad()
        F.mse_loss(model(x[step, rows]), target[step, rows]).backward()
        optimizer.step()
    return _states(model, optimizer)


def _train_dynamic(
    model: nn.Module,
    rows: slice,
    grow: str,
    rank: int = 0,
    rewire_module: nn.Module | None = None,
    process_group: Any = None,
) -> dict[str, Any]:
    """Adam and DynamicSparsity (``update_every=5``) on ``rows`` of every step's batch.

    ``model`` is what is called (maybe wrapped), ``rewire_module`` what DynamicSparsity is
    given (default ``model``). Also records, per SparseLinear, the updates that changed its
    connections."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    torch.manual_seed(RANDOM_SEED + rank)  # random growth: a different seed=None on each rank
    options = {} if process_group is None else {"process_group": process_group}
    rewire = tw.DynamicSparsity(
        model if rewire_module is None else rewire_module,
        optimizer,
        update_every=UPDATE_EVERY,
        drop_fraction=0.3,
        score=grow,
        **options,
    )
    layers = {n: m for n, m in model.named_modules() if isinstance(m, tw.SparseLinear)}
    initial = {n: m.wiring for n, m in layers.items()}
    changed = dict.fromkeys(layers, 0)
    x, target = _data(DYNAMIC_STEPS)
    for step in range(DYNAMIC_STEPS):
        before = {n: m.wiring for n, m in layers.items()}
        optimizer.zero_grad()
        F.mse_loss(model(x[step, rows]), target[step, rows]).backward()
        optimizer.step()
        rewire.step()
        for name, layer in layers.items():
            changed[name] += layer.wiring != before[name]
    states = _states(model, optimizer)
    states["changed"] = [changed[n] for n in layers]
    states["initial_edges"] = [initial[n].edges() for n in layers]
    states["edges"] = [m.wiring.edges() for m in layers.values()]
    return states


def _ddp(model: nn.Module) -> nn.Module:
    return DistributedDataParallel(model)


def _shard(model: nn.Sequential) -> nn.Sequential:
    """FSDP2: every layer with parameters, then the root, sharded over the ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _scenarios(rank: int) -> dict[str, Callable[[], dict[str, Any]]]:
    rows = _rows(rank)
    return {
        "ddp": lambda: _train(_ddp(_layers_model()), rows),
        # DDP's own process group; DynamicSparsity given the DDP model
        "ddp_dynamic_gradient": lambda: _train_dynamic(_ddp(_dynamic_model()), rows, "gradient"),
        # the default process group; DynamicSparsity given the module inside DDP
        "ddp_dynamic_random": lambda: _dynamic_inside_ddp(rows, rank),
        "fsdp": lambda: _train(_shard(_sharded_model()), rows),
        "fsdp_dynamic_gradient": lambda: _train_dynamic(_shard(_dynamic_model()), rows, "gradient"),
        "dynamic_without_replicas": lambda: _dynamic_without_replicas(rows, rank),
    }


def _dynamic_inside_ddp(rows: slice, rank: int) -> dict[str, Any]:
    inner = _dynamic_model()
    return _train_dynamic(_ddp(inner), rows, "random", rank, rewire_module=inner)


def _dynamic_without_replicas(rows: slice, rank: int) -> dict[str, Any]:
    """A model per process (no DDP): the default group refuses to rewire them alike; a
    group of each process alone rewires each on its own. And a process_group of a bad type."""
    errors = {}
    differing = _dynamic_model()
    first: Any = differing[0]
    with torch.no_grad():
        first.weight.add_(rank)
    try:
        _train_dynamic(differing, rows, "random", rank)
    except RuntimeError as error:
        errors["default_group"] = str(error)
    alone, _ = dist.new_subgroups(group_size=1)
    model = _dynamic_model()
    edges = _train_dynamic(model, rows, "gradient", rank, process_group=alone)["edges"]
    try:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tw.DynamicSparsity(model, optimizer, process_group="gloo")  # type: ignore[arg-type]
    except TypeError as error:
        errors["process_group_type"] = str(error)
    return {"errors": errors, "edges": edges}


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
        for name, run in _scenarios(rank).items():
            try:
                result: Any = run()
            except Exception:  # reported by that scenario's test
                result = traceback.format_exc()
            torch.save(result, Path(out_dir) / f"{name}.rank{rank}.pt")
            dist.barrier()  # no rank tears gloo down while its peer still talks to it
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory where every rank saved the result of every scenario."""
    path = tmp_path_factory.mktemp("distributed")
    spawn(_worker, args=(str(path / "store"), str(path)), nprocs=WORLD, join=True)
    return path


def _replicas(runs: Path, name: str) -> list[dict[str, Any]]:
    replicas = [torch.load(runs / f"{name}.rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for rank, replica in enumerate(replicas):
        if isinstance(replica, str):
            pytest.fail(f"rank {rank} raised in scenario {name!r}:\n{replica}")
    return replicas


def _assert_identical(replicas: list[dict[str, Any]], part: str) -> None:
    """Every tensor of ``part`` bit for bit the same on every rank."""
    first = replicas[0][part]
    for other in replicas[1:]:
        assert set(other[part]) == set(first)
        for key, value in first.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(other[part][key], value), f"{part} {key}"


def _assert_equal_one_process(
    replicas: list[dict[str, Any]], reference: dict[str, Any], part: str
) -> None:
    assert set(replicas[0][part]) == set(reference[part])
    for key, value in reference[part].items():
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                torch.testing.assert_close(replicas[0][part][key], value, rtol=1e-10, atol=1e-12)
            else:
                assert torch.equal(replicas[0][part][key], value), f"{part} {key}"


def _assert_replicas_of(replicas: list[dict[str, Any]], reference: dict[str, Any]) -> None:
    """Every rank holds the same model and optimizer state, that of one process trained on
    all the data (``reference``)."""
    for part in ("model", "optimizer"):
        _assert_identical(replicas, part)
        _assert_equal_one_process(replicas, reference, part)


def _float_params(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.is_floating_point()]


def test_ddp_every_layer_type_replicas_identical_and_equal_one_process(runs: Path) -> None:
    replicas = _replicas(runs, "ddp")
    _assert_replicas_of(replicas, _train(_layers_model(), ALL_ROWS))
    initial = _layers_model()
    only_rank0 = _train(_layers_model(), _rows(0))["model"]
    params = _float_params(initial)
    assert {"0.weight", "2.weight", "4.0.weight", "4.1.weight", "5.weights.1"} <= set(params)
    for key in params:
        assert not torch.equal(replicas[0]["model"][key], initial.state_dict()[key]), key
        # the gradients were averaged over both ranks, not taken from one rank's data
        assert not torch.allclose(replicas[0]["model"][key], only_rank0[key]), key
    for key, value in initial.state_dict().items():
        if key not in params:  # buffers (SparseLinear's index) and extra state: untouched
            assert _same(replicas[0]["model"][key], value), key


def _same(a: Any, b: Any) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else bool(a == b)


@pytest.mark.parametrize(
    ("name", "grow"),
    [
        ("ddp_dynamic_gradient", "gradient"),
        ("ddp_dynamic_random", "random"),
        ("fsdp_dynamic_gradient", "gradient"),
    ],
)
def test_dynamic_sparsity_rewires_every_rank_alike(runs: Path, name: str, grow: str) -> None:
    replicas = _replicas(runs, name)
    # weights, index buffers and the optimizer's moments: bit for bit the same on every rank,
    # and what one process makes of all the data: the growth saw the gradient of all of it
    # (seed=None: rank 0's seed, which this process draws from the same global seed)
    reference = _train_dynamic(_dynamic_model(), ALL_ROWS, grow)
    _assert_replicas_of(replicas, reference)
    for replica in replicas[1:]:
        for edges, first in zip(replica["edges"], replicas[0]["edges"], strict=True):
            assert torch.equal(edges, first)
    final = replicas[0]
    assert final["changed"] == reference["changed"]
    assert all(n >= 5 for n in final["changed"]), final["changed"]  # rewired at every update
    for initial, edges in zip(final["initial_edges"], final["edges"], strict=True):
        assert len(edges) == len(initial)  # connection count constant
        assert set(map(tuple, edges.tolist())) != set(map(tuple, initial.tolist()))
    model = final["model"]
    assert model["0.weight"].numel() == len(final["edges"][0])
    assert model["0.indices"].numel() == len(final["edges"][0])


def test_fsdp2_equals_one_process(runs: Path) -> None:
    replicas = _replicas(runs, "fsdp")
    _assert_replicas_of(replicas, _train(_sharded_model(), ALL_ROWS))
    initial = _sharded_model().state_dict()
    for key in ("0.weight", "2.weight", "2.bias"):
        assert not torch.equal(replicas[0]["model"][key], initial[key]), key


def test_dynamic_sparsity_refuses_ranks_that_are_not_replicas(runs: Path) -> None:
    replicas = _replicas(runs, "dynamic_without_replicas")
    for replica in replicas:  # every rank raised, none went on alone (or hung)
        message = replica["errors"]["default_group"]
        assert "cannot rewire the ranks of its process group alike at step 5" in message
        assert "they hold different weights." in message  # the same connections so far
        assert "process_group=" in message
        assert "got str" in replica["errors"]["process_group_type"]
    # a process group of each process alone: each rewired from its own data
    assert len(replicas[0]["edges"][0]) == len(replicas[1]["edges"][0])
    assert not all(
        torch.equal(a, b) for a, b in zip(replicas[0]["edges"], replicas[1]["edges"], strict=True)
    )


def test_dynamic_sparsity_process_group_needs_torch_distributed() -> None:
    assert not dist.is_initialized()
    model = _dynamic_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="init_process_group"):  # before any group exists
        tw.DynamicSparsity(model, optimizer, process_group=object())  # type: ignore[arg-type]
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1, score="random", seed=0)
    model(torch.randn(3, 16, dtype=F64)).sum().backward()
    optimizer.step()
    layer: Any = model[0]
    before = layer.wiring
    rewire.step()  # one process: no collective
    assert layer.wiring != before
    assert layer.nnz == before.nnz
