"""Pruning: edge pruning matches torch.nn.utils.prune's masks and the masked layer's outputs
with physically fewer parameters; neuron pruning matches the masked model and torch.ao's
structured pruner; dead-unit removal keeps outputs exact."""

from __future__ import annotations

import copy
import itertools
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.pruning._experimental.pruner import SaliencyPruner
from torch.nn.utils import prune as torch_prune

import torchwire as tw
from tests import reference

torch.set_num_threads(1)
D = torch.float64


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else v == b[k]


def _dense_mask(module: Any) -> torch.Tensor:
    """The ``(out, in)`` bool mask of a SparseLinear's connections."""
    return module.wiring.mask()


def _layer(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "linear":
        return nn.Linear(12, 9, dtype=D)
    if kind == "block":
        return tw.BlockLinear([4, 5, 3], [2, 4, 3], dtype=D)
    if kind == "shared":
        return tw.BlockLinear(12, 9, groups=3, shared=True, dtype=D)
    return tw.SparseLinear(tw.Wiring.random(12, 9, density=0.5, seed=seed), dtype=D)


def _masked_dense(module: nn.Module) -> torch.Tensor:
    """The layer's dense ``(out, in)`` float64 weight, zeros where nothing connects."""
    if isinstance(module, nn.Linear):
        return module.weight.detach().double()
    return module.to_dense().weight.detach().double()  # type: ignore[operator]


# ---------------------------------------------------------------------------- edges


@pytest.mark.parametrize("amount", [0.3, 0.9, 17, 0])
def test_edges_matches_torch_l1_unstructured(amount: float) -> None:
    linear = _layer("linear", 0)
    ours = tw.prune.edges(linear, amount=amount)
    theirs = torch_prune.l1_unstructured(copy.deepcopy(linear), "weight", amount=amount)
    assert torch.equal(_dense_mask(ours), theirs.weight_mask.bool())
    x = torch.randn(5, 12, dtype=D)
    _close(ours(x), theirs(x))
    removed = 108 - ours.nnz
    assert removed == (amount if isinstance(amount, int) else round(amount * 108))
    if removed:
        assert _params(ours) < _params(linear)


@pytest.mark.parametrize("kind", ["linear", "block", "sparse"])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_edges_equals_the_masked_layer(kind: str, method: str) -> None:
    module = _layer(kind, 1)
    before = copy.deepcopy(module.state_dict())
    pruned = tw.prune.edges(module, amount=0.4, score=method, seed=3)
    assert isinstance(pruned, tw.SparseLinear)
    dense = _masked_dense(module)
    connected = dense != 0 if kind != "sparse" else module.wiring.mask()  # type: ignore[operator]
    total = int(connected.sum())
    assert pruned.nnz == total - round(0.4 * total)
    mask = pruned.wiring.mask()
    assert bool((connected | ~mask).all())  # only existing connections survive
    if method == "magnitude":  # every removed connection is no larger than every survivor
        removed = dense[connected & ~mask].abs()
        assert float(removed.max()) <= float(dense[mask].abs().min())
    x = torch.randn(6, 12, dtype=D)
    bias = None if module.bias is None else module.bias.detach()
    _close(pruned(x), reference.linear(x, dense * mask, bias))
    assert _params(pruned) < _params(module)
    _assert_same_state(module.state_dict(), before)  # the input is untouched


def test_edges_random_is_reproducible_and_seeded() -> None:
    linear = _layer("linear", 2)
    a = tw.prune.edges(linear, amount=0.5, score="random", seed=7)
    b = tw.prune.edges(linear, amount=0.5, score="random", seed=7)
    c = tw.prune.edges(linear, amount=0.5, score="random", seed=8)
    assert a.wiring == b.wiring
    assert a.wiring != c.wiring
    torch.manual_seed(0)
    d = tw.prune.edges(linear, amount=0.5, score="random")
    torch.manual_seed(0)
    e = tw.prune.edges(linear, amount=0.5, score="random")
    assert d.wiring == e.wiring


def test_edges_removes_exactly_k_when_magnitudes_tie() -> None:
    linear = nn.Linear(10, 10)
    with torch.no_grad():
        linear.weight.fill_(0.5)
    for amount in (1, 37, 0.33):
        pruned = tw.prune.edges(linear, amount=amount)
        assert pruned.nnz == 100 - (amount if isinstance(amount, int) else 33)


def test_repeated_edges_is_cumulative_like_torch() -> None:
    linear = _layer("linear", 3)
    ours = tw.prune.edges(tw.prune.edges(linear, amount=0.5), amount=0.5)
    theirs = copy.deepcopy(linear)
    torch_prune.l1_unstructured(theirs, "weight", amount=0.5)
    torch_prune.l1_unstructured(theirs, "weight", amount=0.5)
    assert ours.nnz == int(theirs.weight_mask.sum()) == 108 - 54 - 27
    assert torch.equal(_dense_mask(ours), theirs.weight_mask.bool())


def test_edges_threshold_and_exact_zeros() -> None:
    linear = nn.Linear(6, 4, dtype=D)
    pruned = tw.prune.edges(linear, threshold=0.2)
    assert torch.equal(pruned.wiring.mask(), linear.weight.abs() > 0.2)
    with torch.no_grad():
        linear.weight[1].zero_()
    assert tw.prune.edges(linear, threshold=0).nnz == 24 - 6


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        (-1, ValueError),
        (1.5, ValueError),
        (-0.1, ValueError),
        ("half", TypeError),
        (109, ValueError),
    ],
)
def test_edges_amount_errors_are_torchs(amount: Any, error: type[Exception]) -> None:
    linear = _layer("linear", 4)
    before = copy.deepcopy(linear.state_dict())
    with pytest.raises(error) as ours:
        tw.prune.edges(linear, amount=amount)
    with pytest.raises(error) as theirs:
        torch_prune.l1_unstructured(copy.deepcopy(linear), "weight", amount=amount)
    assert str(ours.value) == str(theirs.value)
    _assert_same_state(linear.state_dict(), before)


def test_edges_argument_errors() -> None:
    linear = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="exactly one of amount"):
        tw.prune.edges(linear)
    with pytest.raises(ValueError, match="exactly one of amount"):
        tw.prune.edges(linear, amount=0.5, threshold=0.1)
    with pytest.raises(ValueError, match="score must be one of"):
        tw.prune.edges(linear, amount=0.5, score="l3")
    with pytest.raises(ValueError, match="threshold only applies"):
        tw.prune.edges(linear, threshold=0.1, score="random")
    with pytest.raises(TypeError, match="threshold must be a number"):
        tw.prune.edges(linear, threshold="0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Invalid type for amount"):
        tw.prune.edges(linear, amount=True)
    with pytest.raises(TypeError, match=r"expected an nn.Linear, BlockLinear or SparseLinear"):
        tw.prune.edges(nn.Conv1d(2, 2, 1), amount=0.5)
    shared = _layer("shared", 0)
    with pytest.raises(ValueError, match="cannot prune a shared BlockLinear"):
        tw.prune.edges(shared, amount=0.5)
    model = nn.Sequential(shared, nn.Linear(9, 2))
    assert isinstance(tw.prune.global_edges(model, amount=3)[1], tw.SparseLinear)
    with pytest.raises(
        ValueError, match=r"\(filter selected '0'\) cannot prune a shared BlockLinear"
    ):
        tw.prune.global_edges(model, amount=3, filter=lambda n, m: True)


def test_edges_keeps_device_dtype_names_mode_and_frozen_bias() -> None:
    wiring = tw.Wiring.from_mapping({"p": ["a", "b"], "q": ["b", "c"]})
    layer = tw.SparseLinear(wiring, backend="csr", dtype=torch.float64).eval()
    layer.bias.requires_grad_(False)  # type: ignore[union-attr]
    pruned = tw.prune.edges(layer, amount=1)
    assert pruned.weight.dtype == torch.float64
    assert pruned.wiring.input_names == ("a", "b", "c")
    assert pruned.backend == "csr"
    assert not pruned.training
    assert not pruned.bias.requires_grad  # type: ignore[union-attr]


def test_global_edges_matches_torch_global_unstructured() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU())
    model.append(nn.Linear(20, 3))
    ours = tw.prune.global_edges(model, amount=0.7)
    theirs = copy.deepcopy(model)
    layers = [(theirs[i], "weight") for i in (0, 2, 4)]
    torch_prune.global_unstructured(layers, torch_prune.L1Unstructured, amount=0.7)
    for i in (0, 2, 4):
        assert torch.equal(_dense_mask(ours[i]), theirs[i].weight_mask.bool())
    x = torch.randn(4, 10)
    torch.testing.assert_close(ours(x), theirs(x))
    assert _params(ours) < _params(model)
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4))  # input untouched


def test_global_edges_filter_random_and_shared_modules() -> None:
    shared = nn.Linear(8, 8)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(8, 2))
    pruned = tw.prune.global_edges(
        model, amount=10, score="random", seed=0, filter=lambda n, m: m is shared
    )
    assert pruned[0] is pruned[2]  # one module used twice stays one module
    assert isinstance(pruned[0], tw.SparseLinear)
    assert pruned[0].nnz == 54
    assert type(pruned[3]) is nn.Linear
    with pytest.raises(ValueError, match="found no layer to prune"):
        tw.prune.global_edges(nn.Sequential(nn.ReLU()), amount=0.5)
    with pytest.raises(ValueError, match="or filter selected none"):
        tw.prune.global_edges(model, amount=0.5, filter=lambda n, m: n == "1")


def test_pruning_that_would_grow_a_layer_says_so() -> None:
    """A connection costs a value and an int32 index: kept at high density, a SparseLinear
    holds more bytes than the dense layer it replaces (float32: above half the
    connections), which pruning promises to shrink. The warning points at the caller."""
    dense = nn.Linear(32, 16)
    with pytest.warns(UserWarning, match=r"SparseLinear, Linear\(32, 16\) grows") as record:
        grown = tw.prune.edges(dense, amount=0.1)
    assert _nbytes(grown) > _nbytes(dense)
    assert f"from {_nbytes(dense):,} to {_nbytes(grown):,} bytes" in str(record[0].message)
    assert "keeps 461 of its 512 connections" in str(record[0].message)
    assert record[0].filename == __file__
    model = nn.Sequential(nn.ReLU(), nn.Linear(32, 16))
    for prune in (
        lambda: tw.sparsify(model, density=0.9),
        lambda: tw.prune.global_edges(model, amount=0.1),
    ):
        with pytest.warns(UserWarning, match=r"layer '1' \(Linear\(32, 16\)\) grows") as record:
            prune()
        assert record[0].filename == __file__  # the call that pruned, not torchwire's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shrunk = tw.prune.edges(dense, amount=0.6)
        tw.prune.edges(shrunk, amount=0.1)  # above density 1/6, fewer connections: fewer bytes
    assert _nbytes(shrunk) < _nbytes(dense)


def _nbytes(module: nn.Module) -> int:
    return sum(t.nbytes for t in itertools.chain(module.parameters(), module.buffers()))


def test_sparsify_keeps_the_largest_weights_and_skips_linear_subclasses() -> None:
    torch.manual_seed(6)
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    model = nn.ModuleDict(
        {"mlp": nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)), "attn": attention}
    )
    small: Any = tw.sparsify(model, density=0.25)
    for i, size in ((0, 128), (2, 128)):
        layer = small["mlp"][i]
        assert isinstance(layer, tw.SparseLinear)
        assert layer.nnz == round(0.25 * size)
        oracle = torch_prune.l1_unstructured(
            copy.deepcopy(model["mlp"][i]), "weight", amount=size - layer.nnz
        )
        assert torch.equal(layer.wiring.mask(), oracle.weight_mask.bool())
    assert type(small["attn"].out_proj) is type(attention.out_proj)  # left alone
    x = torch.randn(2, 3, 8)
    small["attn"](x, x, x)  # still runs
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\]"):
        tw.sparsify(model, density=1.5)
    with pytest.raises(ValueError, match="sparsify found no layer to prune"):
        tw.sparsify(model, density=0.5, filter=lambda n, m: n == "attn")


# ---------------------------------------------------------------------------- neurons


def _torch_masked_units(model: nn.Module, amount: Any, n: int) -> nn.Module:
    """``model`` with the producer layers' weakest output rows zeroed by
    ``torch.nn.utils.prune.ln_structured`` (biases kept): the masked model."""
    masked = copy.deepcopy(model)
    layers = [m for m in masked if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))][:-1]  # type: ignore[attr-defined]
    for layer in layers:
        torch_prune.ln_structured(layer, "weight", amount=amount, n=n, dim=0)
    return masked


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.Tanh(), nn.Linear(8, 3)],
        lambda: [nn.Linear(6, 10), nn.Sigmoid(), nn.Dropout(0.2), nn.Linear(10, 3)],
        lambda: [
            nn.Conv2d(3, 8, 3),
            nn.ReLU(),
            nn.Conv2d(8, 6, 3, stride=2),
            nn.GELU(),
            nn.Conv2d(6, 2, 1),
        ],
        lambda: [
            nn.Conv1d(3, 8, 3, padding=1, padding_mode="circular"),
            nn.SiLU(),
            nn.Conv1d(8, 2, 3, padding=2, padding_mode="reflect"),
        ],
    ],
)
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_neurons_equals_the_torch_masked_model(layers: Any, criterion: str) -> None:
    torch.manual_seed(7)
    model = nn.Sequential(*layers()).double().eval()
    amount = 2
    pruned = tw.prune.neurons(model, amount=amount, score=criterion)
    masked = _torch_masked_units(model, amount, 1 if criterion == "l1" else 2)
    conv = isinstance(model[0], (nn.Conv1d, nn.Conv2d))
    shape = (2, 3, 11, 11) if isinstance(model[0], nn.Conv2d) else (2, 3, 9) if conv else (5, 6)
    x = torch.randn(shape, dtype=D)
    _close(pruned(x), masked(x))
    assert _params(pruned) < _params(model)


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3)],
        lambda: [nn.Linear(6, 10), nn.Linear(10, 3)],
        lambda: [nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)],
    ],
)
def test_neurons_matches_torch_ao_structured_pruner(layers: Any) -> None:
    """An independent implementation: torch.ao's SaliencyPruner (L1 rows) with bias
    propagation physically removes the same units and folds the same biases."""
    torch.manual_seed(8)
    model = nn.Sequential(*layers()).double().eval()
    pruner = SaliencyPruner({"prune_bias": False})
    theirs = copy.deepcopy(model)
    pruner.prepare(theirs, [{"tensor_fqn": "0.weight", "sparsity_level": 0.3}])
    pruner.enable_mask_update = True
    pruner.step()
    theirs = pruner.prune()
    ours = tw.prune.neurons(model, amount=0.3, score="l1", filter=lambda name, _: name == "0")
    x = torch.randn((4, 6) if isinstance(model[0], nn.Linear) else (2, 3, 9, 9), dtype=D)
    _close(ours(x), theirs(x))
    assert ours[0].weight.shape == theirs.get_submodule("0").weight.shape


def test_neurons_shrinks_batchnorm_and_folds_its_shift() -> None:
    torch.manual_seed(9)
    model = (
        nn.Sequential(
            nn.Conv2d(3, 8, 3),
            reference.trained_batchnorm(nn.BatchNorm2d, 8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 3),
            nn.Flatten(),
            nn.Linear(4 * 5 * 5, 6),
            reference.trained_batchnorm(nn.BatchNorm1d, 6),
            nn.Linear(6, 2),
        )
        .double()
        .eval()
    )
    scores = torch.arange(8, dtype=D)
    pruned: Any = tw.prune.neurons(model, amount=3, score=lambda m: scores[: m.weight.shape[0]])
    assert pruned[1].num_features == pruned[0].out_channels == 5
    assert pruned[6].num_features == pruned[5].out_features == 3
    assert pruned[3].out_channels == 4  # its outputs go through Flatten: not prunable
    masked = copy.deepcopy(model)
    with torch.no_grad():
        masked[0].weight[:3] = 0
        masked[5].weight[:3] = 0
    x = torch.randn(2, 3, 9, 9, dtype=D)
    _close(pruned(x), masked(x))


def test_neurons_follows_nested_sequentials_and_parallel_branches() -> None:
    torch.manual_seed(10)
    model = (
        nn.Sequential(
            nn.Sequential(tw.BlockLinear([3, 3], [4, 4]), nn.ReLU()),
            tw.Parallel(
                nn.Linear(8, 2),
                nn.Sequential(
                    tw.SparseLinear(tw.Wiring.random(8, 5, density=0.5, seed=1)),
                    nn.ReLU(),
                    nn.Linear(5, 1),
                ),
            ),
        )
        .double()
        .eval()
    )
    pruned: Any = tw.prune.neurons(model, amount=1)
    block = pruned[0][0]
    assert block.out_features == pruned[1][0].in_features == 7
    assert pruned[1][1][0].in_features == 7
    assert pruned[1][1][0].out_features == 4
    assert pruned[1][1][2].in_features == 4
    x = torch.randn(3, 6, dtype=D)
    masked = copy.deepcopy(model)
    scores_block = block_scores = model[0][0].to_dense().weight.norm(dim=1)
    scores_sparse = model[1][1][0].to_dense().weight.norm(dim=1)
    with torch.no_grad():
        i = int(scores_block.argmin())
        masked[0][0].weight.view(-1)[i * 3 : i * 3 + 3] = 0  # row i of its group's block
        masked[1][1][0].weight[
            model[1][1][0].wiring.edges()[:, 1] == int(scores_sparse.argmin())
        ] = 0
    for ours, theirs in zip(pruned(x), masked(x), strict=True):
        _close(ours, theirs)
    assert block_scores.numel() == 8


def test_neurons_adds_a_bias_where_a_constant_must_be_folded() -> None:
    model = (
        nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 2, bias=False)).double().eval()
    )
    pruned: Any = tw.prune.neurons(model, amount=2)
    assert pruned[2].bias is not None
    masked = _torch_masked_units(model, 2, 2)
    x = torch.randn(3, 4, dtype=D)
    _close(pruned(x), masked(x))


def test_neurons_warns_for_zero_padded_convs_and_refuses_bad_arguments() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1))
    with pytest.warns(UserWarning, match="exact only away from the border"):
        tw.prune.neurons(model, amount=0.5)
    with pytest.raises(ValueError, match="would remove all 8 units"):
        tw.prune.neurons(model, amount=1.0)
    with pytest.raises(ValueError, match="score must be"):
        tw.prune.neurons(model, amount=1, score="l3")
    with pytest.raises(ValueError, match="one score per output unit"):
        tw.prune.neurons(model, amount=1, score=lambda m: torch.zeros(3))
    with pytest.raises(ValueError, match="found no prunable hidden units"):
        tw.prune.neurons(nn.Sequential(nn.Linear(3, 3)), amount=1)
    with pytest.raises(ValueError, match="should either be a float"):
        tw.prune.neurons(model, amount=-2)


def test_neurons_leaves_hooked_shared_and_grouped_layers_whole() -> None:
    hooked = nn.ReLU()  # a hook between the layers (a hooked layer is refused: see below)
    hooked.register_forward_hook(lambda *args: None)
    shared = nn.Linear(6, 6)
    grouped = nn.Conv1d(4, 4, 1, groups=2)
    for model in (
        nn.Sequential(nn.Linear(4, 6), hooked, nn.Linear(6, 2)),
        nn.Sequential(nn.Linear(4, 6), shared, nn.ReLU(), shared),
        nn.Sequential(grouped, nn.ReLU(), nn.Conv1d(4, 2, 1)),
    ):
        with pytest.raises(ValueError, match="found no prunable hidden units"):
            tw.prune.neurons(model, amount=1)


def test_neurons_keeps_train_mode_and_frozen_parameters() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    model[2].weight.requires_grad_(False)
    pruned: Any = tw.prune.neurons(model, amount=1)
    assert pruned.training
    assert pruned[0].training
    assert not pruned[2].weight.requires_grad
    assert pruned[2].bias.requires_grad


# ---------------------------------------------------------------------------- dead neurons


@st.composite
def _edge_pruned_mlps(draw: st.DrawFn) -> tuple[nn.Module, torch.Tensor]:
    sizes = draw(st.lists(st.integers(1, 7), min_size=3, max_size=5))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        kind = draw(st.sampled_from(["dense", "sparse", "block"]))
        bias = draw(st.booleans())
        if kind == "sparse":
            density = draw(st.floats(0.0, 1.0))
            layers.append(
                tw.SparseLinear(
                    tw.Wiring.random(a, b, density=density, seed=seed + i), bias, dtype=D
                )
            )
        elif kind == "block" and a % 2 == 0 and b % 2 == 0:
            layers.append(tw.BlockLinear(a, b, groups=2, bias=bias, dtype=D))
        else:
            linear = nn.Linear(a, b, bias, dtype=D)
            zero_rows = draw(st.lists(st.booleans(), min_size=b, max_size=b))
            zero_cols = draw(st.lists(st.booleans(), min_size=a, max_size=a))
            with torch.no_grad():
                linear.weight[torch.tensor(zero_rows)] = 0
                linear.weight[:, torch.tensor(zero_cols)] = 0
            layers.append(linear)
        layers.append(draw(st.sampled_from([nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity]))())
    return nn.Sequential(*layers[:-1]).eval(), torch.randn(4, sizes[0], dtype=D)


@settings(max_examples=60, deadline=None)
@given(case=_edge_pruned_mlps())
def test_dead_neurons_is_exact(case: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = case
    cleaned = tw.prune.dead_neurons(model)
    _close(cleaned(x), model(x))
    assert _params(cleaned) <= _params(model)
    again = tw.prune.dead_neurons(cleaned)  # nothing dead is left
    assert [tuple(p.shape) for p in again.parameters()] == [
        tuple(p.shape) for p in cleaned.parameters()
    ]


def test_dead_neurons_after_global_edge_pruning_removes_units_exactly() -> None:
    torch.manual_seed(11)
    model = (
        nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
        .double()
        .eval()
    )
    sparse = tw.prune.global_edges(model, amount=0.97)
    cleaned: Any = tw.prune.dead_neurons(sparse)
    assert cleaned[0].out_features < 64
    assert cleaned[2].out_features < 64
    assert _params(cleaned) < _params(sparse) < _params(model)
    x = torch.randn(8, 20, dtype=D)
    _close(cleaned(x), sparse(x))
    masked = copy.deepcopy(model)  # the same connections as a torch-masked dense model
    torch_prune.global_unstructured(
        [(masked[i], "weight") for i in (0, 2, 4)], torch_prune.L1Unstructured, amount=0.97
    )
    _close(cleaned(x), masked(x))


def test_dead_neurons_reads_torch_pruned_layers_and_keeps_border_constants() -> None:
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2)).double().eval()
    rows = torch.ones(6, 5)
    rows[1:3] = 0
    torch_prune.custom_from_mask(model[0], "weight", rows)
    cleaned: Any = tw.prune.dead_neurons(model)
    assert cleaned[0].out_features == 4
    assert not hasattr(cleaned[0], "weight_mask")
    x = torch.randn(3, 5, dtype=D)
    _close(cleaned(x), model(x))
    conv = (
        nn.Sequential(nn.Conv1d(2, 4, 1), nn.ReLU(), nn.Conv1d(4, 1, 3, padding=1)).double().eval()
    )
    with torch.no_grad():
        conv[0].weight[0] = 0
        conv[0].bias[0] = 1.0  # a constant 1 that zero padding would cut at the border
        conv[0].weight[1] = 0
        conv[0].bias[1] = -1.0  # ReLU makes it 0: removable
    cleaned = tw.prune.dead_neurons(conv)
    assert cleaned[0].out_channels == 3
    x = torch.randn(2, 2, 7, dtype=D)
    _close(cleaned(x), conv(x))


def test_constants_follow_in_place_and_shared_activations() -> None:
    """Regressions: an in-place activation once overwrote the kept bias; a module listed
    twice in a Sequential was skipped in the chain."""
    torch.manual_seed(13)
    act = nn.ReLU()
    for model in (
        nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 3)),
        nn.Sequential(nn.Linear(4, 8), act, nn.Linear(8, 8), act, nn.Linear(8, 2)),
    ):
        model = model.double().eval()
        with torch.no_grad():
            model[0].bias.uniform_(-1, 1)  # kept units with negative biases
            model[0].weight[1] = 0  # a dead unit: its constant goes through the activation
            model[2].weight[1] = 0
            model[2].bias[1] = -1.0
        x = torch.randn(3, 4, dtype=D)
        _close(tw.prune.dead_neurons(model)(x), model(x))
    shared = nn.LayerNorm(8)
    model = nn.Sequential(nn.Linear(4, 8), shared, nn.Linear(8, 8), shared, nn.Linear(8, 2))
    with pytest.raises(ValueError, match="found no prunable hidden units"):
        tw.prune.neurons(model, amount=1)


def test_a_bare_layer_can_be_the_model() -> None:
    layer = nn.Linear(8, 4)
    assert isinstance(tw.sparsify(layer, density=0.5), tw.SparseLinear)
    assert tw.prune.global_edges(layer, amount=3).nnz == 29
    assert type(layer) is nn.Linear


# ---------------------------------------------------------------------------- rebuild policy


def _policy_model() -> Any:
    """An eval-mode MLP with a frozen bias, a frozen weight and a dead unit."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    model[0].bias.requires_grad_(False)
    model[2].weight.requires_grad_(False)
    with torch.no_grad():
        model[0].weight[0] = 0  # unit 0 of layer 0 is dead
    return model


def _forward_hook(m: nn.Module) -> None:
    m.register_forward_hook(lambda *args: None)


def _weight_norm(m: nn.Module) -> None:
    nn.utils.parametrizations.weight_norm(m)


ENTRY_POINTS: list[tuple[str, Callable[[Any], Any], str]] = [
    ("prune.edges", lambda m: tw.prune.edges(m[0], amount=5), "the {}"),
    ("prune.global_edges", lambda m: tw.prune.global_edges(m, amount=0.5), "layer '0' ({})"),
    ("sparsify", lambda m: tw.sparsify(m, density=0.5), "layer '0' ({})"),
    ("prune.neurons", lambda m: tw.prune.neurons(m, amount=2), "layer '0' ({})"),
    ("prune.dead_neurons", tw.prune.dead_neurons, "layer '0' ({})"),
]


@pytest.mark.parametrize(
    ("operation", "prune", "label"), ENTRY_POINTS, ids=[op for op, _, _ in ENTRY_POINTS]
)
def test_every_entry_point_keeps_mode_and_frozen_parameters_and_refuses_hooks(
    operation: str, prune: Callable[[Any], Any], label: str
) -> None:
    model = _policy_model()
    pruned = prune(model)
    pairs = [(pruned, model[0])] if operation == "prune.edges" else [(pruned[0], model[0])]
    if operation != "prune.edges":
        pairs.append((pruned[2], model[2]))
    for new, old in pairs:
        assert new is not old
        assert not new.training
        for name, p in old.named_parameters():
            assert getattr(new, name).requires_grad == p.requires_grad, name
    # torch.nn.utils.prune's masks are read through
    masked = _policy_model()
    torch_prune.l1_unstructured(masked[0], "weight", amount=0.25)
    assert not prune(masked).training
    # hooks and parametrizations are refused with one message
    for refused in (_forward_hook, _weight_norm):
        model = _policy_model()
        refused(model[0])
        kind = type(model[0]).__name__
        message = (
            f"{operation} cannot rebuild {label.format(kind)}: it has hooks or parametrizations"
        )
        with pytest.raises(ValueError, match=re.escape(message)):
            prune(model)


def test_old_scoring_keywords_warn_and_still_work() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(8, 6)
    with pytest.warns(
        DeprecationWarning, match=r"edges\(method=\.\.\.\) is deprecated; use score="
    ):
        old = tw.prune.edges(linear, amount=0.5, method="random", seed=3)
    new = tw.prune.edges(linear, amount=0.5, score="random", seed=3)
    assert old.wiring == new.wiring
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.warns(DeprecationWarning, match=r"global_edges\(method=\.\.\.\)"):
        tw.prune.global_edges(model, amount=4, method="random", seed=0)
    with pytest.warns(DeprecationWarning, match=r"neurons\(criterion=\.\.\.\) is deprecated"):
        old_units = tw.prune.neurons(model, amount=2, criterion="l1")
    new_units = tw.prune.neurons(model, amount=2, score="l1")
    torch.testing.assert_close(old_units[0].weight, new_units[0].weight)
    with pytest.raises(TypeError, match="got both score= and its deprecated spelling method="):
        tw.prune.edges(linear, amount=0.5, score="random", method="random")
    with pytest.raises(TypeError, match="unexpected keyword argument 'how'"):
        tw.prune.edges(linear, amount=0.5, how="random")
