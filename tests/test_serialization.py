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
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1, score="random", seed=0)
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


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_names_travel_with_the_topology(tmp_path: Path, suffix: str) -> None:
    names = {"p": ["a", "b"], "q": ["b", "c"], "r": ["c"]}
    model = nn.Sequential(tw.SparseLinear(tw.Wiring.from_mapping(names)), nn.Linear(3, 1))
    fresh = nn.Sequential(tw.SparseLinear(tw.Wiring.random(3, 3, nnz=4, seed=0)), nn.Linear(3, 1))
    path = tmp_path / f"model{suffix}"
    tw.save(model, path)
    restored: Any = tw.load(path, fresh)
    assert restored[0].wiring == model[0].wiring
    assert restored[0].wiring.input_names == ("a", "b", "c")
    assert restored[0].wiring.output_names == ("p", "q", "r")
    x = torch.randn(2, 3)
    assert torch.equal(restored(x), model(x))


def test_safetensors_file_holds_the_weights_and_the_topology(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors")
    pruned = tw.prune.dead_neurons(tw.sparsify(_trained(Net().double()), density=0.2))
    path = tmp_path / "model.safetensors"
    tw.save(pruned, path)
    with st.safe_open(str(path), framework="pt") as f:  # a plain safetensors file
        assert set(f.keys()) == set(pruned.state_dict())
        assert f.metadata()["format"] == "torchwire.model/1"
    restored: Any = tw.load(path, Net().double()).eval()
    x = torch.randn(2, 3, 8, 8, dtype=D)
    assert torch.equal(restored(x), pruned(x))
    for a, b in zip(restored.modules(), pruned.modules(), strict=True):
        assert repr(a) == repr(b)


def test_safetensors_ties_shared_tensors_again(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied, as embeddings and output heads often are
    path = tmp_path / "tied.safetensors"
    tw.save(model, path)
    fresh = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    fresh[1].weight = fresh[0].weight
    restored: Any = tw.load(path, fresh)
    assert torch.equal(restored[1].weight, model[0].weight)
    assert restored[1].weight is restored[0].weight


def test_safetensors_without_the_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'torchwire\[safetensors\]'"):
        tw.save(nn.Linear(2, 2), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_files_of_0_1_with_dict_extra_state_still_load(tmp_path: Path) -> None:
    names = {"p": ["a", "b"], "q": ["b", "c"]}
    model = nn.Sequential(
        tw.BlockLinear([2, 1], [1, 2]), tw.SparseLinear(tw.Wiring.from_mapping(names))
    )
    state = dict(model.state_dict())
    state["0._extra_state"] = {"in_sizes": [2, 1], "out_sizes": [1, 2], "shared": False}
    state["1._extra_state"] = {
        "in_features": 3,
        "out_features": 2,
        "input_names": ["a", "b", "c"],
        "output_names": ["p", "q"],
    }
    topology = {
        "1": {
            "type": "SparseLinear",
            "in_features": 3,
            "out_features": 2,
            "nnz": 4,
            "bias": True,
            "backend": "auto",
        }
    }
    path = tmp_path / "old.pt"
    torch.save({"format": "torchwire.model/1", "topology": topology, "state_dict": state}, path)
    fresh = nn.Sequential(
        tw.BlockLinear([2, 1], [1, 2]), tw.SparseLinear(tw.Wiring.random(3, 2, nnz=4, seed=1))
    )
    restored: Any = tw.load(path, fresh)
    assert restored[1].wiring.input_names == ("a", "b", "c")
    x = torch.randn(2, 3)
    assert torch.equal(restored(x), model(x))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_sparsified_bert_model_reloads_into_a_fresh_one(tmp_path: Path, suffix: str) -> None:
    """A model of a real client library (built from a small config, nothing downloaded)."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    model = tw.sparsify(transformers.BertModel(config), density=0.3).eval()
    assert any(isinstance(m, tw.SparseLinear) for m in model.modules())
    path = tmp_path / f"bert{suffix}"
    tw.save(model, path)
    torch.manual_seed(1)
    restored = tw.load(path, transformers.BertModel(config)).eval()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        expected = model(input_ids=ids).last_hidden_state
        assert torch.equal(restored(input_ids=ids).last_hidden_state, expected)
