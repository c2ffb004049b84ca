"""The digits demo (examples/digits_sparse.py) in reduced form: every model learns, the sparse
ones hold a tenth of the connections, dynamic sparsity rewires, pruning is exact."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import torchwire as tw

torch.set_num_threads(1)
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_sparse.py"


@pytest.fixture(scope="module")
def demo() -> Any:
    spec = importlib.util.spec_from_file_location("digits_sparse", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["digits_sparse"] = module
    spec.loader.exec_module(module)
    return module


def test_reduced_demo_trains_every_model(demo: Any) -> None:
    data = demo.digits(0)
    models = demo.train_models(data, hidden=128, density=0.1, epochs=12, finetune_epochs=4, seed=0)
    names = list(models)
    dense, pruned, finetuned, static, dynamic = models.values()
    x_test, y_test = data[2], data[3]
    accuracy = {name: demo.accuracy(m, x_test, y_test) for name, m in models.items()}
    for name in (names[0], names[2], names[3], names[4]):  # trained models learn (chance: 10%)
        assert accuracy[name] > 0.8, accuracy
    # pruning is exact: dead_neurons(sparsify(dense)) equals sparsify(dense)
    torch.testing.assert_close(pruned(x_test), tw.sparsify(dense, density=0.1)(x_test))
    assert demo.parameters(pruned) < demo.parameters(dense)
    assert demo.parameters(finetuned) == demo.parameters(pruned)
    # a tenth of the connections, and dynamic sparsity rewired them
    initial = demo.sparse_mlp(128, 0.1, 0)
    for trained in (static, dynamic):
        layers = [m for m in trained if isinstance(m, tw.SparseLinear)]
        assert [m.nnz for m in layers] == [
            round(0.1 * m.in_features * m.out_features) for m in layers
        ]
    assert static[2].wiring == initial[2].wiring
    assert dynamic[2].wiring != initial[2].wiring


def test_demo_table_lists_every_model_and_batch(demo: Any) -> None:
    rows = demo.run(hidden=32, epochs=1, finetune_epochs=1, rounds=1, batches=(1, 8), seeds=(0,))
    config = {
        "hidden": 32,
        "density": 0.1,
        "epochs": 1,
        "finetune_epochs": 1,
        "rounds": 1,
        "seeds": (0,),
    }
    table = demo.markdown(rows, config)
    assert len(rows) == 5
    for row in rows:
        assert f"| {row.name} |" in table
        assert set(row.ms) == {1, 8}
    assert "ms (B=8)" in table
    assert table.count("\n|") == 2 + 5
