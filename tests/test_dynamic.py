"""DynamicSparsity: connection counts stay constant, the optimizer keeps updating the live
parameters with their state moved to the surviving connections, drop and growth pick what
the dense oracles say."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import torchwire as tw
from tests import reference
from torchwire import dynamic

torch.set_num_threads(1)
D = torch.float64


def _model(seed: int = 0, density: float = 0.2, backend: str = "auto") -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        tw.SparseLinear(tw.Wiring.random(12, 16, density=density, seed=seed), backend=backend),
        nn.ReLU(),
        tw.SparseLinear(tw.Wiring.random(16, 3, density=0.5, seed=seed + 1), backend=backend),
    ).double()


def _train_step(model: nn.Module, optimizer: Any, rewire: Any, x: torch.Tensor) -> None:
    loss = model(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    rewire.step()


def _pairs(layer: Any) -> dict[tuple[int, int], int]:
    """Connection (input, output) -> its position in the weight."""
    return {(i, o): k for k, (i, o) in enumerate(layer.wiring.edges().tolist())}


@pytest.mark.parametrize("grow", ["gradient", "random"])
@pytest.mark.parametrize("backend", ["auto", "dense", "csr"])
def test_rewiring_keeps_count_parameters_and_moves_adam_state(grow: str, backend: str) -> None:
    model = _model(backend=backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    rewire = tw.DynamicSparsity(
        model, optimizer, update_every=3, drop_fraction=0.4, score=grow, seed=0
    )
    layer: Any = model[0]
    weight, bias = layer.weight, layer.bias
    x = torch.randn(32, 12, dtype=D)
    for _ in range(2):
        _train_step(model, optimizer, rewire, x)
    before = _pairs(layer)
    values = layer.weight.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[weight].items()}
    _train_step(model, optimizer, rewire, x)  # step 3: forward, backward, Adam, rewire
    after = _pairs(layer)
    assert layer.nnz == len(before) == len(after)
    assert layer.weight is weight
    assert layer.bias is bias
    survivors = before.keys() & after.keys()
    grown = after.keys() - before.keys()
    assert len(grown) == round(0.4 * len(before))
    state = optimizer.state[weight]
    for pair in grown:
        assert float(state["exp_avg"][after[pair]]) == 0.0
        assert float(state["exp_avg_sq"][after[pair]]) == 0.0
        assert float(layer.weight.detach()[after[pair]]) == 0.0
    dropped = before.keys() - after.keys()
    moved = [(before[p], after[p]) for p in survivors]
    old, new = torch.tensor(moved).unbind(1)
    m, stepped = _adam_once(values, moments, layer.weight.grad, before, after)
    torch.testing.assert_close(state["exp_avg"][new], m[old])  # moments moved with the values
    assert bool((m[old] != moments["exp_avg"][old]).any())  # step 3 did change them
    # the dropped were the weakest after step 3's update
    weakest = stepped.abs()[[before[p] for p in dropped]].max()
    assert float(weakest) <= float(stepped.abs()[old].min())
    torch.testing.assert_close(layer.weight.detach()[new], stepped[old])
    # the optimizer still updates the live parameter after rewiring, new connections too
    snapshot = layer.weight.detach().clone()
    loss = model(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = layer.weight.detach() != snapshot
    assert bool(changed[[after[p] for p in grown]].any())
    assert any(p is layer.weight for g in optimizer.param_groups for p in g["params"])


def _adam_once(
    values: torch.Tensor, moments: dict[str, torch.Tensor], grad: Any, before: Any, after: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 3's Adam update of the old connections, recomputed from the saved moments (the
    gradient is read back at the old positions through the remap)."""
    old_grad = torch.zeros_like(values)
    for pair, k in before.items():
        if pair in after:
            old_grad[k] = grad[after[pair]]
    beta1, beta2, lr, eps, t = 0.9, 0.999, 0.01, 1e-8, float(moments["step"]) + 1
    m = beta1 * moments["exp_avg"] + (1 - beta1) * old_grad
    v = beta2 * moments["exp_avg_sq"] + (1 - beta2) * old_grad**2
    step = lr / (1 - beta1**t) * m / ((v / (1 - beta2**t)).sqrt() + eps)
    return m, values - step


def test_gradient_growth_picks_the_largest_dense_gradients(monkeypatch: Any) -> None:
    for chunk in (1 << 22, 5):  # whole layer at once, then 5 elements (one row) per chunk
        monkeypatch.setattr(dynamic, "_CHUNK_ELEMENTS", chunk)
        model = _model(seed=3)
        layer: Any = model[0]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # values stay: a clean oracle
        rewire = tw.DynamicSparsity(model, optimizer, update_every=1, drop_fraction=0.25)
        x = torch.randn(2, 4, 12, dtype=D)  # leading dims are flattened
        edges, values = layer.wiring.edges(), layer.weight.detach().clone()
        dense = reference.sparse_weight(values, edges, (16, 12)).requires_grad_(True)
        hidden = torch.relu(reference.linear(x, dense, layer.bias))
        model[2](hidden).square().mean().backward()
        _train_step(model, optimizer, rewire, x)
        count = round(0.25 * len(edges))
        scores = dense.grad.abs().clone()  # type: ignore[union-attr]
        scores[edges[:, 1], edges[:, 0]] = -1
        top = torch.topk(scores.flatten(), count).indices
        expected = {(int(f % 12), int(f // 12)) for f in top}
        new = set(_pairs(layer)) - {tuple(e) for e in edges.tolist()}
        assert new == expected
        kept_old = set(_pairs(layer)) & {tuple(e) for e in edges.tolist()}
        weakest = set(map(tuple, edges[torch.argsort(values.abs())[:count]].tolist()))
        assert kept_old.isdisjoint(weakest)


def test_rewired_layer_computes_its_new_wiring() -> None:
    model = _model(seed=4)
    optimizer = torch.optim.Adam(model.parameters())
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1, score="random", seed=1)
    _train_step(model, optimizer, rewire, torch.randn(8, 12, dtype=D))
    layer: Any = model[0]
    x = torch.randn(5, 12, dtype=D, requires_grad=True)
    ours = layer(x)
    oracle = reference.sparse_linear(x, layer.weight, layer.wiring.edges(), (16, 12), layer.bias)
    torch.testing.assert_close(ours, oracle)
    g = torch.randn_like(ours)
    (gx,) = torch.autograd.grad(ours, x, g)
    (ox,) = torch.autograd.grad(oracle, x, g)
    torch.testing.assert_close(gx, ox)
    assert layer.wiring == tw.Wiring(layer.indptr, layer.indices, 12, 16)


def test_random_growth_is_seeded_and_only_grows_absent(monkeypatch: Any) -> None:
    wirings = []
    for seed, limit in ((5, 1 << 24), (5, 1 << 24), (6, 1 << 24), (5, 10)):
        monkeypatch.setattr(dynamic, "_DENSE_CANDIDATES", limit)  # 10: rejection sampling
        model = _model(seed=0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        rewire = tw.DynamicSparsity(model, optimizer, update_every=1, score="random", seed=seed)
        before = set(_pairs(model[0]))
        _train_step(model, optimizer, rewire, torch.randn(4, 12, dtype=D))
        after = set(_pairs(model[0]))
        assert len(after) == len(before)
        assert len(after - before) == round(0.3 * len(before))
        wirings.append(model[0].wiring)
    assert wirings[0] == wirings[1]
    assert wirings[0] != wirings[2]


def test_schedule_eval_mode_and_end_step() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rewire = tw.DynamicSparsity(model, optimizer, update_every=2, drop_fraction=0.5, end_step=8)
    assert [rewire.fraction(t) for t in range(1, 11)] == pytest.approx(
        [
            0,
            0.5 / 2 * (1 + 0.7071067811865476),
            0,
            0.25,
            0,
            0.5 / 2 * (1 - 0.7071067811865476),
            0,
            0,
            0,
            0,
        ]
    )
    x = torch.randn(4, 12, dtype=D)
    history = [model[0].wiring]
    for _ in range(10):
        _train_step(model, optimizer, rewire, x)
        history.append(model[0].wiring)
    changed = [t for t in range(1, 11) if history[t] != history[t - 1]]
    assert changed == [2, 4, 6]  # step 8's fraction is 0; nothing after end_step
    model.eval()
    frozen = tw.DynamicSparsity(model, optimizer, update_every=1, score="random")
    wiring = model[0].wiring
    for _ in range(3):
        _train_step(model, optimizer, frozen, x)
    assert model[0].wiring == wiring
    constant = tw.DynamicSparsity(model, optimizer, update_every=3, drop_fraction=0.2)
    assert constant.fraction(300) == 0.2


def test_errors_say_what_to_do() -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="found no trainable SparseLinear layer"):
        tw.DynamicSparsity(nn.Linear(2, 2), optimizer)
    with pytest.raises(ValueError, match="is not in the optimizer"):
        tw.DynamicSparsity(model, torch.optim.SGD(model[2].parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"expected a torch\.optim\.Optimizer"):
        tw.DynamicSparsity(model, [optimizer])  # type: ignore[arg-type]
    for kwargs, error in (
        ({"update_every": 0}, ValueError),
        ({"update_every": 1.5}, TypeError),
        ({"drop_fraction": 0.0}, ValueError),
        ({"drop_fraction": "0.3"}, TypeError),
        ({"end_step": -1}, ValueError),
        ({"grow": "magnitude"}, ValueError),
    ):
        with pytest.raises(error):
            tw.DynamicSparsity(model, optimizer, **kwargs)
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1)
    with pytest.raises(RuntimeError, match="saw no backward pass"):
        rewire.step()
    # a layer missed on an update step: refused before any layer changes
    model(torch.randn(2, 12, dtype=D)).sum().backward()
    rewire.remove()
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1)
    before = [model[0].wiring, model[2].wiring]
    model[0](torch.randn(2, 12, dtype=D)).sum().backward()  # only the first layer runs
    with pytest.raises(RuntimeError, match=r"through \['2'\]"):
        rewire.step()
    assert [model[0].wiring, model[2].wiring] == before


def test_frozen_layers_are_left_out_and_keyword_calls_are_recorded() -> None:
    model = _model()
    model[2].weight.requires_grad_(False)
    optimizer = torch.optim.SGD([model[0].weight, model[0].bias], lr=0.1)
    rewire = tw.DynamicSparsity(model, optimizer, update_every=1)
    assert list(rewire.layers) == ["0"]
    frozen = model[2].wiring
    hidden = torch.relu(model[0](input=torch.randn(4, 12, dtype=D)))
    before = model[0].wiring
    model[2](hidden).sum().backward()
    optimizer.step()
    rewire.step()
    assert model[0].wiring != before
    assert model[2].wiring == frozen


def test_state_dict_resumes_the_schedule_and_randomness() -> None:
    runs = []
    for resume in (False, True):
        model = _model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        rewire = tw.DynamicSparsity(model, optimizer, update_every=2, score="random", seed=3)
        x = torch.randn(4, 12, dtype=D, generator=torch.Generator().manual_seed(0))
        for step in range(6):
            if resume and step == 3:
                saved = copy.deepcopy(rewire.state_dict())
                rewire.remove()
                rewire = tw.DynamicSparsity(model, optimizer, update_every=2, score="random")
                rewire.load_state_dict(saved)
            _train_step(model, optimizer, rewire, x)
        runs.append(model[0].wiring)
    assert runs[0] == runs[1]
    assert "update_every=2" in repr(rewire)


def test_compiled_model_rewires_like_eager() -> None:
    wirings = []
    for compiled in (False, True):
        model = _model(seed=6)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        rewire = tw.DynamicSparsity(model, optimizer, update_every=2, seed=0)  # before compile
        run = torch.compile(model) if compiled else model
        generator = torch.Generator().manual_seed(1)
        for _ in range(4):
            _train_step(run, optimizer, rewire, torch.randn(8, 12, dtype=D, generator=generator))
        wirings.append((model[0].wiring, model[2].wiring))
        x = torch.randn(3, 12, dtype=D)
        torch.testing.assert_close(run(x), model(x))
    assert wirings[0] == wirings[1]
    assert wirings[0][0] != _model(seed=6)[0].wiring


def test_grow_is_a_deprecated_spelling_of_score() -> None:
    model = nn.Sequential(tw.SparseLinear(tw.Wiring.random(6, 4, density=0.5, seed=0)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(DeprecationWarning, match=r"DynamicSparsity\(grow=\.\.\.\) is deprecated"):
        rewire = tw.DynamicSparsity(model, optimizer, grow="random", seed=0)
    assert rewire.score == "random"
    with pytest.warns(DeprecationWarning, match=r"DynamicSparsity\.grow is deprecated"):
        assert rewire.grow == "random"
