"""One policy for every surgery entry point: a rebuilt layer keeps the replaced layer's
train/eval mode and its frozen parameters, and a layer with hooks or parametrizations is
refused the same way everywhere (``torchwire._surgery``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations

import torchwire as tw

torch.set_num_threads(1)


def _model() -> nn.Sequential:
    """Eval mode, every bias frozen: what each entry point must keep."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4)).eval()
    for layer in (model[0], model[2]):
        layer.bias.requires_grad_(False)
    return model


def _rebuilt_layers(result: nn.Module) -> list[nn.Module]:
    return [m for m in result.modules() if isinstance(m, (nn.Linear, tw.SparseLinear))]


def _load(tmp_path: Path) -> nn.Module:
    path = tmp_path / "m.pt"
    tw.save(tw.sparsify(_model(), density=0.5), path)
    return tw.load(path, _model())


ENTRY_POINTS: dict[str, Callable[[Path], nn.Module]] = {
    "prune.edges": lambda _: tw.prune.edges(_model()[0], amount=0.5),
    "prune.global_edges": lambda _: tw.prune.global_edges(_model(), amount=0.5),
    "prune.neurons": lambda _: tw.prune.neurons(_model(), amount=2),
    "prune.dead_neurons": lambda _: tw.prune.dead_neurons(tw.sparsify(_model(), density=0.1)),
    "sparsify": lambda _: tw.sparsify(_model(), density=0.5),
    "merge": lambda _: tw.merge(_model()[0], nn.Linear(12, 4).eval().requires_grad_(False)),
    "fuse": lambda _: tw.fuse(nn.Sequential(_model()[0], _model()[2]).eval())[0],
    "fuse_parallel": lambda _: tw.fuse_parallel(tw.Parallel(_model()[0], _model()[0])),
    "unfuse": lambda _: tw.unfuse(tw.fuse_parallel(tw.Parallel(_model()[0], _model()[0]))),
    "load": _load,
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_rebuilt_layers_keep_mode_and_frozen_parameters(entry: str, tmp_path: Path) -> None:
    result = ENTRY_POINTS[entry](tmp_path)
    layers = _rebuilt_layers(result)
    assert layers, f"{entry} returned no layer: {result}"
    for layer in layers:
        assert not layer.training, f"{entry}: {layer} is in training mode"
        bias: Any = layer.bias
        assert bias is None or not bias.requires_grad, f"{entry}: the bias of {layer} thaws"
        assert layer.weight.requires_grad, f"{entry}: the weight of {layer} froze"


def _hooked() -> nn.Linear:
    layer = nn.Linear(8, 12)
    layer.register_forward_hook(lambda *args: None)
    return layer


def _normed() -> nn.Linear:
    return parametrizations.weight_norm(nn.Linear(8, 12))


def _chain(first: nn.Linear) -> nn.Sequential:
    return nn.Sequential(first, nn.ReLU(), nn.Linear(12, 4))


def _fuse(m: nn.Linear) -> object:
    """fuse skips a pair it cannot merge and reports why: the refusal, as a report line."""
    _, report = tw.fuse(nn.Sequential(m, nn.Linear(12, 4)).eval())
    if report.skipped:
        raise ValueError(report.skipped[0])
    return report


def _unfuse(m: nn.Linear) -> object:
    fused = tw.fuse_parallel(tw.Parallel(nn.Linear(8, 6), nn.Linear(8, 6)))
    fused.layer = m  # the wide layer now has the hooks
    return tw.unfuse(fused)


def _load_into(m: nn.Linear, tmp_path: Path) -> object:
    """Loading rebuilds ``m`` (an nn.Linear) as the saved SparseLinear."""
    path = tmp_path / "m.pt"
    tw.save(tw.sparsify(_chain(nn.Linear(8, 12)), density=0.5), path)
    return tw.load(path, _chain(m))


REFUSALS: dict[str, Callable[[nn.Linear, Path], object]] = {
    "prune.edges": lambda m, _: tw.prune.edges(m, amount=0.5),
    "prune.global_edges": lambda m, _: tw.prune.global_edges(_chain(m), amount=0.5),
    "prune.neurons": lambda m, _: tw.prune.neurons(_chain(m), amount=2),
    "prune.dead_neurons": lambda m, _: tw.prune.dead_neurons(_chain(m)),
    "sparsify": lambda m, _: tw.sparsify(_chain(m), density=0.5),
    "merge": lambda m, _: tw.merge(m, nn.Linear(12, 4)),
    "fuse": lambda m, _: _fuse(m),
    "fuse_parallel": lambda m, _: tw.fuse_parallel(tw.Parallel(m, nn.Linear(8, 3))),
    "unfuse": lambda m, _: _unfuse(m),
    "load": _load_into,
}
assert set(REFUSALS) == set(ENTRY_POINTS)  # every entry point, both tests


@pytest.mark.parametrize("make", [_hooked, _normed], ids=["forward-hook", "weight-norm"])
@pytest.mark.parametrize("entry", list(REFUSALS))
def test_hooks_and_parametrizations_are_refused_alike(
    entry: str, make: Callable[[], nn.Linear], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"has hooks or parametrizations .* would silently lose"):
        REFUSALS[entry](make(), tmp_path)
