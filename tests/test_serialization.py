"""torchwire.save / torchwire.load: pruned and rewired models go back into a fresh instance of
their original class, without pickle, and compute the same function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import torchwire as tw

torch.set_num_threads(1)
D = torch.float64


class Net(nn.Module):
    """A model class as users write it: the constructor fixes the original sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Flatten()
        )
        self.head = nn.Sequential(
            nn.Linear(6 * 4 * 4, 32),
            nn.ReLU(),
            tw.BlockLinear([16, 16], [8, 8]),
            nn.ReLU(),
            tw.SparseLinear(tw.Wiring.random(16, 4, density=0.5, seed=0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # type: ignore[no-any-return]


def _trained(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2)  # type: ignore[union-attr]
    return model.eval()


def _roundtrip(model: nn.Module, fresh: nn.Module, tmp_path: Path) -> nn.Module:
    path = tmp_path / "model.pt"
    tw.save(model, path)
    payload = torch.load(path, weights_only=True)  # no pickled classes inside
    assert set(payload) == {"format", "topology", "state_dict"}
    return tw.load(path, fresh)


def test_pruned_model_loads_into_a_fresh_instance(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _trained(Net().double())
    pruned: Any = tw.prune.neurons(model, amount=0.25)
    pruned = tw.prune.dead_neurons(tw.sparsify(pruned, density=0.2))
    assert isinstance(pruned.head[0], tw.SparseLinear)
    assert pruned.features[0].out_channels == 6
    restored: Any = _roundtrip(pruned, Net().double(), tmp_path)
    assert all(m.training for m in restored.modules())  # the fresh model's mode, as torch does
    restored.eval()
    x = torch.randn(2, 3, 8, 8, dtype=D)
    assert torch.equal(restored(x), pruned(x))
    for a, b in zip(restored.modules(), pruned.modules(), strict=True):
        assert type(a) is type(b)
        assert repr(a) == repr(b)
    assert restored.head[0].weight.dtype == D


def test_rewired_and_named_sparse_layers_keep_their_wiring(tmp_path: Path) -> None:
    names = {"p": ["a", "b"], "q": ["b", "c"], "r": ["c"]}
    model = nn.Sequential(tw.SparseLinear(tw.Wiring.from_mapping(names)), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1, grow="random", seed=0)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    rewire.step()
    fresh = nn.Sequential(tw.SparseLinear(tw.Wiring.from_mapping(names)), nn.Linear(3, 1))
    assert fresh[0].wiring != model[0].wiring
    restored: Any = _roundtrip(model, fresh, tmp_path)
    assert restored[0].wiring == model[0].wiring
    assert restored[0].connections() == model[0].connections()


def test_load_refuses_other_files_and_other_classes(tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(nn.Linear(2, 2).state_dict(), plain)
    with pytest.raises(ValueError, match=r"was not written by torchwire\.save"):
        tw.load(plain, nn.Linear(2, 2))
    path = tmp_path / "model.pt"
    tw.save(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), path)
    with pytest.raises(ValueError, match="has no such submodule"):
        tw.load(path, nn.Sequential(nn.Linear(2, 3)))
    tw.save(nn.Linear(2, 3), path)
    with pytest.raises(ValueError, match="construct it with the saved sizes"):
        tw.load(path, nn.Linear(2, 2))
    with pytest.raises(TypeError, match=r"expected an nn\.Module to load into"):
        tw.load(path, {})  # type: ignore[arg-type]
