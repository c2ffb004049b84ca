"""BlockLinear and functional.block_linear: exactness against the oracles, storage, init,
conversions and backend selection. Generic module behaviour is in test_module_contract."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchwire as tw
from tests import reference
from torchwire.bench.overhead import OpCounter

TRACEABLE = ["auto", "dense", "bmm_autograd"]  # run under compile and torch.func
BACKENDS = tw.backends.available("block_linear")


def _check_against_oracle(m: tw.BlockLinear, x: torch.Tensor) -> None:
    """Forward and the gradients of input, weight and bias equal the float64 oracle's."""
    y = m(x)
    expected = reference.block_linear(x, m.weight, m.bias, m.in_sizes, m.out_sizes)
    torch.testing.assert_close(y, expected)
    grad = torch.randn_like(y)
    inputs = (x, m.weight, m.bias)
    got = torch.autograd.grad(y, inputs, grad)
    want = torch.autograd.grad(expected, inputs, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Uneven layouts: runs of repeated block shapes, alternations, and repeated patterns."""
    shapes = draw(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=3))
    picks = draw(st.lists(st.sampled_from(shapes), min_size=1, max_size=7))
    picks = picks * draw(st.sampled_from([1, 1, 2, 3]))  # a pattern repeated: strided calls
    return [i for i, _ in picks], [o for _, o in picks]


@settings(max_examples=40, deadline=None)
@given(
    layout=layouts(),
    backend=st.sampled_from(BACKENDS),
    bias=st.booleans(),
    batch=st.sampled_from([(), (0,), (3,), (2, 3)]),
    seed=st.integers(0, 2**16),
)
def test_every_backend_equals_the_oracle_in_forward_and_all_gradients(
    layout: tuple[list[int], list[int]],
    backend: str,
    bias: bool,
    batch: tuple[int, ...],
    seed: int,
) -> None:
    in_sizes, out_sizes = layout
    torch.manual_seed(seed)
    m = tw.BlockLinear(in_sizes, out_sizes, bias=bias, backend=backend, dtype=torch.float64)
    x = torch.randn(*batch, m.in_features, dtype=torch.float64, requires_grad=True)
    y = m(x)
    params = [m.weight] + ([m.bias] if bias else [])
    ref_x = x.detach().clone().requires_grad_()
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    expected = reference.block_linear(
        ref_x, ref_params[0], ref_params[1] if bias else None, in_sizes, out_sizes
    )
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(
        y, reference.block_linear_loop(x, m.weight, m.bias, in_sizes, out_sizes)
    )
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, ref_x.grad)
    for p, q in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "args",
    [
        ((12, 8), {"groups": 4}),
        ((12, 8), {"groups": 4, "shared": True}),
        (([2, 3, 3], [4, 1, 1]), {}),
    ],
)
def test_gradcheck_per_backend(
    backend: str, args: tuple[tuple[object, ...], dict[str, object]]
) -> None:
    m = tw.BlockLinear(*args[0], **args[1], backend=backend, dtype=torch.float64)  # type: ignore[arg-type]
    if m.shared and backend in ("bmm_packed", "bmm_t", "bmm_autograd"):
        with pytest.raises(ValueError, match="a shared block runs as one GEMM"):
            m(torch.randn(3, m.in_features, dtype=torch.float64))
        return
    x = torch.randn(3, m.in_features, dtype=torch.float64, requires_grad=True)
    w = m.weight.detach().clone().requires_grad_()
    b = m.bias.detach().clone().requires_grad_()  # type: ignore[union-attr]

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize(
    ("in_sizes", "out_sizes", "plan", "calls"),
    [
        ([48, 16] * 16, [48, 16] * 16, "pattern", 2),  # alternating: 32 runs, 2 positions
        ([2, 2, 3] * 4, [1, 1, 2] * 4, "pattern", 3),
        ([64] * 8 + [32] * 16, [64] * 8 + [32] * 16, "runs", 2),  # two runs, no repetition
        ([4] * 6, [2] * 6, "runs", 1),
        ([48, 16] * 16 + [32], [48, 16] * 16 + [32], "gather", 3),  # 33 runs, 3 shapes
        ([3, 1, 2, 1, 3, 2, 2, 3], [1, 2, 2, 2, 1, 2, 2, 1], "gather", 3),
    ],
)
def test_layout_needs_one_call_per_run_pattern_position_or_distinct_shape(
    in_sizes: list[int], out_sizes: list[int], plan: str, calls: int
) -> None:
    layout = tw.backends.block_layout(tuple(in_sizes), tuple(out_sizes))
    assert (layout.plan, layout.calls) == (plan, calls)
    assert layout.calls <= len(layout.classes) + 2
    m = tw.BlockLinear(in_sizes, out_sizes, dtype=torch.float64)
    x = torch.randn(3, m.in_features, dtype=torch.float64, requires_grad=True)
    for backend in BACKENDS:
        m.backend = backend
        _check_against_oracle(m, x)


def test_shared_uses_one_block_for_every_group() -> None:
    m = tw.BlockLinear(6, 8, groups=2, shared=True, dtype=torch.float64)
    assert m.weight.shape == (1, 4, 3)
    assert m.bias is not None
    assert m.bias.shape == (8,)
    x = torch.randn(5, 6, dtype=torch.float64)
    w = m.weight[0]
    expected = torch.cat([x[:, :3] @ w.T, x[:, 3:] @ w.T], -1) + m.bias
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize(
    ("args", "kwargs", "connections"),
    [
        ((1024, 1024), {"groups": 16}, 16 * 64 * 64),
        ((4, 6), {"groups": 2}, 2 * 2 * 3),
        (([2, 2], [3, 1]), {}, 2 * 3 + 2 * 1),
        (([64] * 8 + [32] * 16, [64] * 8 + [32] * 16), {}, 8 * 64 * 64 + 16 * 32 * 32),
        ((8, 8), {"groups": 4, "shared": True}, 2 * 2),
    ],
)
def test_parameter_count_is_exactly_the_blocks(
    args: tuple[object, ...], kwargs: dict[str, object], connections: int
) -> None:
    m = tw.BlockLinear(*args, **kwargs)  # type: ignore[arg-type]
    assert m.weight.numel() == connections
    assert sum(p.numel() for p in m.parameters()) == connections + m.out_features
    assert list(m.buffers()) == []


def test_uneven_example_from_the_docs_connects_the_right_features() -> None:
    m = tw.BlockLinear([2, 2], [3, 1])
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0:3, 0:2] = True
    expected[3, 2:4] = True
    assert torch.equal(m.wiring.mask(), expected)
    assert torch.equal(m.to_dense().weight != 0, expected)
    assert m.wiring == tw.Wiring.block_diagonal([2, 2], [3, 1])


def test_weight_order_is_the_wiring_edge_order() -> None:
    m = tw.BlockLinear([2, 3], [2, 1], dtype=torch.float64)
    dense = m.to_dense().weight
    edges = m.wiring.edges()
    torch.testing.assert_close(m.weight, dense[edges[:, 1], edges[:, 0]])


def test_one_group_has_exactly_nn_linear_init() -> None:
    torch.manual_seed(7)
    linear = nn.Linear(40, 30)
    torch.manual_seed(7)
    block = tw.BlockLinear(40, 30)
    assert block.bias is not None
    torch.testing.assert_close(block.weight[0], linear.weight, rtol=0, atol=0)
    torch.testing.assert_close(block.bias, linear.bias, rtol=0, atol=0)


def test_each_group_is_initialised_with_its_own_fan_in() -> None:
    torch.manual_seed(0)
    in_sizes, out_sizes = [4, 100, 4], [300, 300, 300]
    m = tw.BlockLinear(in_sizes, out_sizes)
    assert m.bias is not None
    blocks = reference.block_weights(m.weight.detach(), in_sizes, out_sizes)
    biases = m.bias.detach().split(out_sizes)
    for block, bias, fan_in in zip(blocks, biases, in_sizes, strict=True):
        bound = 1 / math.sqrt(fan_in)
        for values in (block, bias):
            assert values.abs().max() <= bound
            assert values.abs().max() > 0.9 * bound  # fills the range, not a narrower one
            # U(-b, b) has standard deviation b / sqrt(3).
            assert abs(values.std().item() - bound / math.sqrt(3)) < 0.15 * bound


def test_from_linears_equals_running_them_side_by_side() -> None:
    linears = [nn.Linear(3, 2), nn.Linear(5, 4, bias=False), nn.Linear(3, 2)]
    m = tw.BlockLinear.from_linears(linears)
    assert (m.in_sizes, m.out_sizes) == ((3, 5, 3), (2, 4, 2))
    x = torch.randn(7, 11)
    expected = torch.cat(
        [lin(part) for lin, part in zip(linears, x.split([3, 5, 3], -1), strict=True)], -1
    )
    torch.testing.assert_close(m(x), expected)
    equal = [nn.Linear(4, 4) for _ in range(3)]
    m = tw.BlockLinear.from_linears(equal)
    assert m.weight.shape == (3, 4, 4)
    x = torch.randn(2, 12)
    torch.testing.assert_close(
        m(x), torch.cat([lin(p) for lin, p in zip(equal, x.split(4, -1), strict=True)], -1)
    )


def test_from_linears_rejects_other_modules_and_mixed_dtypes() -> None:
    with pytest.raises(TypeError, match=r"sequence of nn.Linear, got \['Linear', 'Conv1d'\]"):
        tw.BlockLinear.from_linears([nn.Linear(2, 2), nn.Conv1d(2, 2, 1)])
    with pytest.raises(TypeError, match="non-empty"):
        tw.BlockLinear.from_linears([])
    with pytest.raises(ValueError, match="one dtype and device"):
        tw.BlockLinear.from_linears([nn.Linear(2, 2), nn.Linear(2, 2).double()])


def test_to_dense_and_from_dense_round_trip() -> None:
    m = tw.BlockLinear([2, 3, 1], [1, 2, 2], dtype=torch.float64)
    dense = m.to_dense()
    assert isinstance(dense, nn.Linear)
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(dense(x), m(x))
    back = tw.BlockLinear.from_dense(dense, [2, 3, 1], [1, 2, 2], strict=True)
    torch.testing.assert_close(back.weight, m.weight, rtol=0, atol=0)
    torch.testing.assert_close(back(x), m(x))


def test_from_dense_keeps_only_the_blocks_and_strict_refuses_to_drop_weights() -> None:
    linear = nn.Linear(4, 4).double()
    m = tw.BlockLinear.from_dense(linear, [2, 2], [2, 2])
    mask = torch.block_diag(torch.ones(2, 2), torch.ones(2, 2)).bool()
    x = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(m(x), x @ (linear.weight * mask).T + linear.bias)
    with pytest.raises(ValueError, match=r"8 weights outside the blocks are nonzero"):
        tw.BlockLinear.from_dense(linear, [2, 2], [2, 2], strict=True)
    with pytest.raises(ValueError, match=r"expected a Linear\(4, 5\).*got Linear\(4, 4\)"):
        tw.BlockLinear.from_dense(linear, [2, 2], [2, 3])


def test_functional_block_linear_matches_the_module_and_validates() -> None:
    m = tw.BlockLinear([2, 2], [3, 1], dtype=torch.float64)
    x = torch.randn(5, 4, dtype=torch.float64)
    y = tw.functional.block_linear(x, m.weight, m.bias, in_sizes=[2, 2], out_sizes=[3, 1])
    torch.testing.assert_close(y, m(x))
    with pytest.raises(ValueError, match=r"1-D weight of 8 elements .* got 7"):
        tw.functional.block_linear(x, m.weight[:7], None, in_sizes=[2, 2], out_sizes=[3, 1])
    with pytest.raises(ValueError, match="with in_sizes and out_sizes"):
        tw.functional.block_linear(x, m.weight)
    with pytest.raises(ValueError, match="only with a 1-D"):
        tw.functional.block_linear(x, torch.randn(2, 2, 2), in_sizes=[2, 2], out_sizes=[2, 2])
    with pytest.raises(ValueError, match=r"expected bias of shape \(4,\)"):
        tw.functional.block_linear(x, m.weight, torch.zeros(3), in_sizes=[2, 2], out_sizes=[3, 1])


def test_backend_selection_is_explained_and_forced_names_are_checked() -> None:
    m = tw.BlockLinear(64, 64, groups=4)
    assert m.resolve_backend(torch.randn(8, 64)) in BACKENDS
    for name in BACKENDS:
        assert (
            tw.BlockLinear(64, 64, groups=4, backend=name).resolve_backend(torch.randn(2, 64))
            == name
        )
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; expected 'auto' or one of"):
        tw.BlockLinear(64, 64, groups=4, backend="nope")
    with pytest.raises(ValueError, match=r"unknown backend 'nope' for block_linear"):
        tw.functional.block_linear(torch.randn(2, 8), torch.randn(2, 4, 4), backend="nope")
    with pytest.raises(ValueError, match="unknown operation"):
        tw.backends.available("no_such_op")


def test_auto_picks_a_batched_kernel_for_many_groups_and_dense_for_tiny() -> None:
    # The cost model's two ends: it must never densify 64 groups (64x the work), and a
    # 4-feature layer is one tiny GEMM.
    x = torch.randn(64, 64 * 32)
    assert tw.BlockLinear(64 * 32, 64 * 32, groups=64).resolve_backend(x) != "dense"
    assert tw.BlockLinear([2, 2], [3, 3]).resolve_backend(torch.randn(64, 4)) == "dense"


def test_cpu_cost_model_weighs_every_count_of_a_layout() -> None:
    # Deterministic counts the fitted weights multiply (benchmarks/block_costs.py fits them).
    from torchwire.backends import BlockProblem, block_bmm, block_dense, block_layout

    layout = block_layout((4, 4, 2), (3, 3, 5), plan="runs")  # runs (2, 4, 3), (1, 2, 5)
    problem = BlockProblem(layout, 6, torch.float32, "cpu", True)
    features = block_bmm.cost_features(problem, layout, "autograd")
    counts = dict(zip(block_bmm.FEATURES, features, strict=True))
    assert counts == {
        "call": 1,
        "calls": 2,
        "macs": 6 * (2 * 4 * 3 + 2 * 5),
        "blocks": 3,
        "copied": 6 * (2 * 7 + 7) + 6 * 11,  # autograd joins its two calls' outputs
        "copied_far": 0,
        "short_rows": 6 * 2 * 7 / 3 + 6 * 7 / 2,
        "weight": 2 * 12 + 10,
    }
    dense = dict(zip(block_dense.FEATURES, block_dense.cost_features(problem), strict=True))
    assert dense == {"call": 1, "macs": 6 * 10 * 11, "dense": 10 * 11, "weight": 34}
    for table, features in [
        *((by_mode, block_bmm.FEATURES) for by_mode in block_bmm._CPU.values()),
        (block_dense._CPU, block_dense.FEATURES),
    ]:
        assert all(len(table[training]) == len(features) for training in (False, True))


def test_cpu_cost_weights_are_the_recorded_fit() -> None:
    # The weights in the code are those benchmarks/block_costs.py fitted to the recorded run.
    from torchwire.backends import block_bmm, block_dense

    path = Path(__file__).parents[1] / "benchmarks/results/cpu-intel-xeon-float32-block-costs.json"
    recorded = json.loads(path.read_text())["weights"]
    for backend, by_kind in recorded.items():
        for kind, weights in by_kind.items():
            table = (
                block_dense._CPU if backend == "dense" else block_bmm._CPU[block_bmm.MODES[backend]]
            )
            assert table[kind == "train"] == pytest.approx(weights, rel=1e-3), (backend, kind)


def test_outputs_with_no_grad_and_inference_mode() -> None:
    m = tw.BlockLinear([3, 1], [2, 2])
    x = torch.randn(4, 4)
    expected = m(x).detach()
    with torch.no_grad():
        torch.testing.assert_close(m(x), expected)
    with torch.inference_mode():
        torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("backend", TRACEABLE)  # the others are refused there
@pytest.mark.parametrize(
    "sizes", [([3, 3, 2], [2, 2, 4]), (12, 6, 3), ([2, 1] * 3 + [4], [1, 2] * 3 + [3])]
)
def test_compile_fullgraph_matches_eager_for_every_traceable_backend(
    backend: str, sizes: tuple[object, ...]
) -> None:
    torch._dynamo.reset()
    eager = tw.BlockLinear(*sizes, backend=backend)  # type: ignore[arg-type]
    compiled = torch.compile(copy.deepcopy(eager), fullgraph=True)
    for batch in (5, 7):  # a second batch size exercises recompilation / dynamic shapes
        eager.zero_grad()
        compiled.zero_grad()
        x = torch.randn(batch, eager.in_features, requires_grad=True)
        cx = x.detach().clone().requires_grad_()
        y, cy = eager(x), compiled(cx)
        torch.testing.assert_close(cy, y)
        grad = torch.randn_like(y)
        y.backward(grad)
        cy.backward(grad)
        torch.testing.assert_close(cx.grad, x.grad)
        for p, q in zip(eager.parameters(), compiled.parameters(), strict=True):
            torch.testing.assert_close(q.grad, p.grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes", [(12, 6, 3), ([2, 3, 3, 1], [1, 4, 4, 2])])
@pytest.mark.parametrize("case", ["no_grad", "inference_mode", "frozen_weight", "bias_only"])
def test_paths_without_a_full_graph_match_the_oracle(
    backend: str, sizes: tuple[object, ...], case: str
) -> None:
    m = tw.BlockLinear(*sizes, backend=backend, dtype=torch.float64)  # type: ignore[arg-type]
    assert m.bias is not None
    x = torch.randn(4, m.in_features, dtype=torch.float64)
    expected = reference.block_linear(x, m.weight, m.bias, m.in_sizes, m.out_sizes)
    if case == "no_grad":
        with torch.no_grad():
            torch.testing.assert_close(m(x), expected)
    elif case == "inference_mode":
        with torch.inference_mode():
            torch.testing.assert_close(m(x), expected)
    else:  # frozen weight: the input, or only the bias (BitFit), still needs gradients
        m.weight.requires_grad_(False)
        if case == "frozen_weight":
            x.requires_grad_()
        else:
            m.bias.requires_grad_(True)
        y = m(x)
        torch.testing.assert_close(y, expected)
        grad = torch.randn_like(y)
        y.backward(grad)
        assert m.weight.grad is None
        torch.testing.assert_close(m.bias.grad, grad.sum(0))
        if case == "frozen_weight":
            dense = torch.block_diag(*reference.block_weights(m.weight, m.in_sizes, m.out_sizes))
            torch.testing.assert_close(x.grad, grad @ dense)


def test_width_is_checked_exactly_for_one_group_and_for_a_shared_block() -> None:
    with pytest.raises(ValueError, match=r"expected input of shape \(\*, 4\)"):
        tw.BlockLinear(4, 3, bias=False)(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"expected input of shape \(\*, 8\)"):
        tw.BlockLinear(8, 4, groups=4, shared=True)(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"groups=3 for a weight of 2 blocks"):
        tw.functional.block_linear(torch.randn(2, 6), torch.randn(2, 2, 2), groups=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_computes_in_the_autocast_dtype(backend: str) -> None:
    m = tw.BlockLinear([2, 3, 3], [4, 1, 1], backend=backend)
    x = torch.randn(5, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    expected = reference.block_linear(x, m.weight, m.bias, m.in_sizes, m.out_sizes)
    torch.testing.assert_close(y.double(), expected, rtol=3e-2, atol=3e-2)
    y.float().sum().backward()
    assert x.grad is not None
    assert x.grad.dtype == torch.float32
    assert m.weight.grad is not None
    assert m.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("backend", TRACEABLE)  # the others are refused there
def test_torch_func_grad_and_vmap(backend: str) -> None:
    m = tw.BlockLinear([2, 3, 3], [4, 1, 1], backend=backend, dtype=torch.float64)
    params = dict(m.named_parameters())
    x = torch.randn(5, 8, dtype=torch.float64)

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, p, (x,)).pow(2).sum()

    grads = torch.func.grad(loss)(params, x)
    expected = torch.autograd.grad(loss(params, x), list(params.values()))
    for name, want in zip(params, expected, strict=True):
        torch.testing.assert_close(grads[name], want)
    per_sample = torch.func.vmap(lambda row: m(row))(x)
    torch.testing.assert_close(per_sample, m(x))


def test_state_dict_records_the_layout_in_a_tensor() -> None:
    saved = tw.BlockLinear([2, 2], [3, 1]).state_dict()
    assert all(isinstance(v, torch.Tensor) for v in saved.values())
    for other in (tw.BlockLinear([2, 2], [1, 3]), tw.BlockLinear([3, 1], [2, 2])):
        assert other.weight.shape == saved["weight"].shape  # same parameter shapes
        with pytest.raises(
            ValueError, match=r"saved from a BlockLinear with .* \[\[2, 2\], \[3, 1\]\]"
        ):
            other.load_state_dict(saved)
    same = tw.BlockLinear([2, 2], [3, 1])
    same.load_state_dict(saved)
    torch.testing.assert_close(same.weight, saved["weight"])


def test_checkpoints_of_0_1_with_a_dict_layout_still_load() -> None:
    saved = tw.BlockLinear([2, 2], [3, 1]).state_dict()
    saved["_extra_state"] = {"in_sizes": [2, 2], "out_sizes": [3, 1], "shared": False}
    same = tw.BlockLinear([2, 2], [3, 1])
    same.load_state_dict(saved)
    torch.testing.assert_close(same.weight, saved["weight"])
    with pytest.raises(ValueError, match="build the layer with the saved sizes"):
        tw.BlockLinear([2, 2], [1, 3]).load_state_dict(saved)


def test_functional_validates_group_sizes() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="2 input sizes and 1 output sizes"):
        tw.functional.block_linear(x, torch.randn(8), in_sizes=[2, 2], out_sizes=[8])
    with pytest.raises(ValueError, match="at least one input and one output"):
        tw.functional.block_linear(x, torch.randn(8), in_sizes=[4, 0], out_sizes=[2, 2])
    with pytest.raises(TypeError, match="expected weight to be a Tensor, got list"):
        tw.functional.block_linear(x, [1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected bias to be a Tensor or None, got list"):
        tw.functional.block_linear(x, torch.randn(2, 3, 2), [0.0] * 6)  # type: ignore[arg-type]


def test_construction_validates_every_argument() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'fast'"):
        tw.BlockLinear(4, 4, backend="fast")
    with pytest.raises(TypeError, match="shared must be a bool, got str"):
        tw.BlockLinear(4, 4, 2, shared="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sequences of group sizes"):
        tw.BlockLinear.from_dense(nn.Linear(4, 4), 4, 4)  # type: ignore[arg-type]
    numpy = pytest.importorskip("numpy")
    m = tw.BlockLinear(numpy.int64(8), numpy.int64(4), groups=numpy.int64(2))
    assert (m.in_sizes, m.out_sizes) == ((4, 4), (2, 2))
    assert "groups=2" in repr(m)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batches_larger_than_a_row_chunk(backend: str) -> None:
    # 300 rows: several of the packed backend's 128-row chunks, the last one partial.
    m = tw.BlockLinear([3, 3, 2, 2], [2, 2, 3, 3], backend=backend, dtype=torch.float64)
    _check_against_oracle(m, torch.randn(300, 10, dtype=torch.float64, requires_grad=True))


# select() sees what changes what runs: torch.compile / torch.export tracing and torch.func
# transforms are properties of the problem, so resolve_backend reports the backend that runs.

HAND_WRITTEN = ("bmm", "bmm_packed", "bmm_t")  # forward and backward written with out=


@contextlib.contextmanager
def recording_block_backends() -> Iterator[list[str]]:
    """Every block_linear backend wrapped so that running its code records its name."""
    ran: list[str] = []
    layout = tw.backends.block_layout((2, 2), (2, 2))
    anything = tw.backends.BlockProblem(layout, 1, torch.float32, "cpu", False)
    originals = [
        tw.backends.select("block_linear", anything, name)
        for name in tw.backends.available("block_linear")
    ]

    def recording(backend: tw.backends.Backend) -> Callable[..., torch.Tensor]:
        def fn(*args: Any, **kwargs: Any) -> torch.Tensor:
            ran.append(backend.name)
            return backend.fn(*args, **kwargs)

        return fn

    try:
        for backend in originals:
            tw.backends.register(dataclasses.replace(backend, fn=recording(backend), bind=None))
        yield ran
    finally:
        for backend in originals:
            tw.backends.register(backend)


def _small_blocks() -> tw.BlockLinear:
    """64 groups of 4 -> 4: at a batch of 1024, "auto" picks a hand-written mode in eager."""
    return tw.BlockLinear(256, 256, groups=64, dtype=torch.float64)


@pytest.mark.parametrize("grad", [False, True])
def test_resolve_backend_inside_torch_compile_reports_the_backend_that_runs(grad: bool) -> None:
    torch._dynamo.reset()
    m = _small_blocks()
    x = torch.randn(1024, 256, dtype=torch.float64, requires_grad=grad)
    eager = m.resolve_backend(x)
    assert eager in HAND_WRITTEN  # the point: eager's choice cannot be traced
    reported: list[str] = []

    def step(x: torch.Tensor) -> torch.Tensor:
        reported.append(m.resolve_backend(x))
        y: torch.Tensor = m(x)
        return y

    with recording_block_backends() as ran:
        y = torch.compile(step, backend="eager", fullgraph=True)(x)
    assert reported == ran
    assert ran[0] in ("dense", "bmm_autograd")
    torch.testing.assert_close(y, m(x))
    assert m.resolve_backend(x) == eager  # eager calls keep their own choice


def test_resolve_backend_under_torch_func_reports_the_backend_that_runs() -> None:
    m = _small_blocks()
    x = torch.randn(1024, 256, dtype=torch.float64)
    assert m.resolve_backend(x.requires_grad_()) in HAND_WRITTEN
    params = {name: p.detach() for name, p in m.named_parameters()}
    reported: list[str] = []

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        reported.append(m.resolve_backend(x))
        y: torch.Tensor = torch.func.functional_call(m, p, (x,))
        return y.pow(2).sum()

    def per_sample(rows: torch.Tensor) -> torch.Tensor:
        reported.append(m.resolve_backend(rows))
        y: torch.Tensor = m(rows)
        return y

    with recording_block_backends() as ran:
        grads = torch.func.grad(loss)(params, x)
        batched = torch.func.vmap(per_sample)(x.detach().view(4, 256, 256))
    assert reported == ran
    assert len(ran) == 2
    assert set(ran) <= {"dense", "bmm_autograd"}
    expected = torch.autograd.grad(loss(dict(m.named_parameters()), x), list(m.parameters()))
    for name, want in zip(params, expected, strict=True):
        torch.testing.assert_close(grads[name], want)
    torch.testing.assert_close(batched.view(1024, 256), m(x).detach())


@pytest.mark.parametrize("backend", HAND_WRITTEN)
def test_forcing_a_backend_that_cannot_be_traced_or_transformed_names_the_reason(
    backend: str,
) -> None:
    m = tw.BlockLinear([2, 3, 3, 1], [1, 4, 4, 2], backend=backend)
    x = torch.randn(5, 9)
    torch.testing.assert_close(m(x), m.to_dense()(x))  # eager runs it
    refused = rf"backend '{backend}' cannot compute this block_linear: "
    choices = r".*use backend='auto' or one of \['dense', 'bmm_autograd'\]"
    with pytest.raises(ValueError, match=refused + "torch.func transforms" + choices):
        torch.func.vmap(m)(x)
    torch._dynamo.reset()
    # dynamo reports select's ValueError inside its own error
    with pytest.raises(Exception, match=refused + "torch.compile and torch.export"):
        torch.compile(m, backend="eager", fullgraph=True)(x)


@pytest.mark.parametrize("backend", HAND_WRITTEN)
def test_torch_export_of_a_forced_hand_written_mode_takes_a_backend_that_runs(
    backend: str,
) -> None:
    # An export makes a graph for later runs (as ONNX does): the forced backend gives way to
    # the cheapest one that can be traced, and the eager module keeps its own.
    m = tw.BlockLinear([2, 3, 3, 1], [1, 4, 4, 2], backend=backend).eval()
    x = torch.randn(5, 9)
    with recording_block_backends() as ran:
        program = torch.export.export(m, (x,))
    assert ran in (["dense"], ["bmm_autograd"])
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), m(x))
    assert m.resolve_backend(x) == backend


@pytest.mark.parametrize("backend", HAND_WRITTEN)
@pytest.mark.parametrize(
    ("sizes", "plan"),
    [
        (([2, 3] * 3, [3, 1] * 3), "pattern"),
        (([3, 1, 2, 1, 3, 2, 2, 3], [1, 2, 2, 2, 1, 2, 2, 1]), "gather"),
    ],
)
def test_double_backward_of_a_hand_written_mode_differentiates_its_own_products(
    backend: str, sizes: tuple[list[int], list[int]], plan: str
) -> None:
    # With create_graph=True the backward runs its two products per call in differentiable
    # ops; the forward is not recomputed.
    m = tw.BlockLinear(*sizes, backend=backend, dtype=torch.float64)
    layout = tw.backends.block_layout(tuple(sizes[0]), tuple(sizes[1]))
    assert layout.plan == plan
    x = torch.randn(3, m.in_features, dtype=torch.float64, requires_grad=True)
    y = m(x)
    with OpCounter() as counter:
        torch.autograd.grad(y, (x, m.weight), torch.randn_like(y), create_graph=True)
    products = counter.counts["bmm"] + counter.counts["baddbmm"]
    assert products == 2 * layout.calls
    w = m.weight.detach().clone().requires_grad_()
    b = m.bias.detach().clone().requires_grad_()  # type: ignore[union-attr]

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = torch.func.functional_call(m, {"weight": w, "bias": b}, (x,))
        return y

    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_a_layer_prints_one_way_however_it_was_written_and_keeps_it_through_surgery(
    tmp_path: Any,
) -> None:
    # Equal groups print as groups= (as nn.Conv2d prints kernel_size=3 as (3, 3)), and the
    # repr survives saving and fusing: surgery rebuilds from the sizes alone.
    even = [tw.BlockLinear(8, 6, groups=2), tw.BlockLinear([4, 4], [3, 3])]
    assert {repr(m) for m in even} == {
        "BlockLinear(in_features=8, out_features=6, groups=2, bias=True)"
    }
    uneven = tw.BlockLinear([4, 4], [3, 1])
    assert repr(uneven) == "BlockLinear(in_features=[4, 4], out_features=[3, 1], bias=True)"
    for m in [*even, uneven, tw.BlockLinear([5], [2])]:
        tw.save(nn.Sequential(m), tmp_path / "m.pt")
        loaded = tw.load(tmp_path / "m.pt", nn.Sequential(tw.BlockLinear(1, 1)))
        assert repr(loaded[0]) == repr(m)
        branches = tw.unfuse(tw.fuse_parallel(tw.Parallel(m, nn.Linear(m.in_features, 2))))
        assert repr(branches[0]) == repr(m)
