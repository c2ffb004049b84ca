"""SparseLinear and functional.sparse_linear: exactness of every backend against the float64
masked-dense oracle, storage, absent connections staying absent under optimizers, init,
conversions, named connectivity, training equivalence with a dense weight*mask twin,
checkpoints and errors. Generic module behaviour is in test_module_contract."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torchwire as tw
from tests import reference

BACKENDS = tw.backends.available("sparse_linear")
F64 = torch.float64


def _edges_wiring(pairs: list[tuple[int, int]], n_in: int, n_out: int) -> tw.Wiring:
    return tw.Wiring.from_edges(torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2), n_in, n_out)


def _backends_for(wiring: tw.Wiring, rows: int = 4) -> tuple[str, ...]:
    """The registered backends whose capability check accepts a problem of this wiring."""
    index = tw.backends.sparse_index(wiring)
    problem = tw.backends.SparseProblem(
        in_features=wiring.in_features,
        out_features=wiring.out_features,
        nnz=wiring.nnz,
        blocks=index.blocks,
        rows=rows,
        dtype=F64,
        device_type="cpu",
        requires_grad=True,
    )
    return tw.backends.available("sparse_linear", problem)


def _bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _oracle(m: tw.SparseLinear, x: torch.Tensor) -> torch.Tensor:
    return reference.sparse_linear(x, m.weight, m.wiring.edges(), m.wiring.shape, m.bias)


def _weight_at_edges(dense: torch.Tensor, wiring: tw.Wiring) -> torch.Tensor:
    """The values of a dense ``(out, in)`` matrix at the connections, in canonical order."""
    edges = wiring.edges()
    return dense[edges[:, 1], edges[:, 0]]


@st.composite
def wirings(draw: st.DrawFn) -> tw.Wiring:
    """Random connectivity: any edge set (including none, idle inputs and idle outputs) or
    a block-diagonal one (even and uneven groups)."""
    if draw(st.booleans()):
        groups = draw(
            st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=1, max_size=3)
        )
        groups = groups * draw(st.sampled_from([1, 2]))
        return tw.Wiring.block_diagonal([i for i, _ in groups], [o for _, o in groups])
    n_in, n_out = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    flat = draw(st.sets(st.integers(0, n_in * n_out - 1), max_size=n_in * n_out))
    return _edges_wiring([(f % n_in, f // n_in) for f in sorted(flat)], n_in, n_out)


# ---------------------------------------------------------------- exactness (property tests)


@settings(max_examples=100, deadline=None)
@given(
    wiring=wirings(),
    bias=st.booleans(),
    batch=st.sampled_from([(), (0,), (3,), (2, 3)]),
    seed=st.integers(0, 2**16),
)
@example(wiring=_edges_wiring([], 3, 2), bias=True, batch=(2, 3), seed=0)  # nnz = 0
@example(wiring=_edges_wiring([(0, 0)], 1, 1), bias=False, batch=(), seed=0)
@example(wiring=_edges_wiring([(1, 0), (1, 2)], 3, 4), bias=True, batch=(0,), seed=0)
@example(wiring=tw.Wiring.block_diagonal([2, 3], [3, 1]), bias=True, batch=(2, 3), seed=1)
def test_every_backend_equals_the_oracle_in_forward_and_all_gradients(
    wiring: tw.Wiring, bias: bool, batch: tuple[int, ...], seed: int
) -> None:
    names = _backends_for(wiring)
    assert {"dense", "csr"} <= set(names)  # the general paths accept every wiring
    assert ("block" in names) == (wiring.block_sizes is not None)
    for name in names:
        torch.manual_seed(seed)
        m = tw.SparseLinear(wiring, bias=bias, backend=name, dtype=F64)
        x = torch.randn(*batch, wiring.in_features, dtype=F64, requires_grad=True)
        assert m.resolve_backend(x) == name
        y = m(x)
        assert y.shape == (*batch, wiring.out_features)
        params = [m.weight] + ([m.bias] if m.bias is not None else [])
        ref_x = x.detach().clone().requires_grad_()
        ref_params = [p.detach().clone().requires_grad_() for p in params]
        expected = reference.sparse_linear(
            ref_x,
            ref_params[0],
            wiring.edges(),
            wiring.shape,
            ref_params[1] if bias else None,
        )
        torch.testing.assert_close(y, expected)
        # The functional form with the Wiring itself computes the same.
        functional = tw.functional.sparse_linear(x, m.weight, wiring, m.bias, backend=name)
        torch.testing.assert_close(functional, y, rtol=0, atol=0)
        grad = torch.randn_like(y)
        y.backward(grad)
        expected.backward(grad)
        torch.testing.assert_close(x.grad, ref_x.grad)
        for p, q in zip(params, ref_params, strict=True):
            assert p.grad is not None
            assert p.grad.shape == p.shape
            torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize(
    ("rows", "dtype", "bias"),
    [
        (1, torch.float32, True),
        (4, torch.float32, False),
        (1, torch.bfloat16, False),
        (4, torch.bfloat16, True),
    ],
)
def test_compiled_csr_inference_equals_the_oracle(
    rows: int, dtype: torch.dtype, bias: bool
) -> None:
    """The compiled no-grad path (one opaque op, the bias fused, one row by matrix-vector)
    computes the layer at every row count and dtype, with the eager layer's output layout."""
    torch._dynamo.reset()
    wiring = tw.Wiring.random(9, 7, density=0.4, seed=3)
    m = tw.SparseLinear(wiring, bias=bias, backend="csr", dtype=dtype)
    x = torch.randn(rows, 9, dtype=dtype)
    with torch.no_grad():
        eager, compiled = m(x), torch.compile(m, fullgraph=True)(x)
    expected = reference.sparse_linear(
        x.double(),
        m.weight.double(),
        wiring.edges(),
        wiring.shape,
        m.bias.double() if bias else None,
    )
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    assert compiled.dtype == dtype
    torch.testing.assert_close(compiled.double(), expected, **tol)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


_GRADCHECK_WIRINGS = {
    "random": tw.Wiring.random(7, 5, density=0.4, seed=1),
    "idle-features": _edges_wiring([(0, 0), (3, 0), (1, 2), (3, 2), (4, 3)], 6, 4),
    "block-uneven": tw.Wiring.block_diagonal([2, 1, 3], [1, 3, 2]),
}


@pytest.mark.parametrize("wiring_id", list(_GRADCHECK_WIRINGS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_gradcheck_and_gradgradcheck_per_backend(wiring_id: str, backend: str) -> None:
    wiring = _GRADCHECK_WIRINGS[wiring_id]
    if backend not in _backends_for(wiring):
        with pytest.raises(ValueError, match="not block diagonal"):
            tw.functional.sparse_linear(
                torch.randn(2, wiring.in_features), torch.randn(wiring.nnz), wiring, None, backend
            )
        return
    x = torch.randn(3, wiring.in_features, dtype=F64, requires_grad=True)
    w = torch.randn(wiring.nnz, dtype=F64, requires_grad=True)
    b = torch.randn(wiring.out_features, dtype=F64, requires_grad=True)

    def fn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return tw.functional.sparse_linear(x, w, wiring, b, backend=backend)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))

    def no_bias(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return tw.functional.sparse_linear(x, w, wiring, backend=backend)

    assert torch.autograd.gradgradcheck(no_bias, (x, w))


@pytest.mark.parametrize("transpose", [False, True])
def test_the_csr_ops_pass_opcheck(transpose: bool) -> None:
    """The ops compiled graphs call: schema, fake tensors, autograd registration and dynamic
    shapes agree with the kernels; their gradients, to second order, with finite
    differences."""
    wiring = tw.Wiring.random(7, 5, nnz=16, seed=4)
    index = tw.backends.sparse_index(wiring, torch.device("cpu")).tensors
    x = torch.randn(3, 5 if transpose else 7, dtype=F64, requires_grad=True)
    values = torch.randn(16, dtype=F64, requires_grad=True)
    a, b = torch.randn(3, 5, dtype=F64), torch.randn(3, 7, dtype=F64, requires_grad=True)
    ops = torch.ops.torchwire
    torch.library.opcheck(ops.csr_linear, (x, values, *index, transpose))
    torch.library.opcheck(ops.csr_sampled, (a.requires_grad_(), b, *index))
    assert torch.autograd.gradgradcheck(
        lambda x, v: ops.csr_linear(x, v, *index, transpose), (x, values)
    )
    assert torch.autograd.gradgradcheck(lambda a, b: ops.csr_sampled(a, b, *index), (a, b))


# ---------------------------------------------------------------- storage


@pytest.mark.parametrize(
    "wiring",
    [
        tw.Wiring.random(4096, 4096, density=0.01, seed=0),
        tw.Wiring.random(1000, 100, density=0.05, seed=1),
        tw.Wiring.random(300, 7, nnz=5, seed=2),
        _edges_wiring([], 5, 3),
        tw.Wiring.block_diagonal([64] * 4, [32] * 4),
        tw.Wiring.from_mapping({"p1": ["g1", "g2"], "p2": ["g3"]}),
    ],
    ids=["4096-1pct", "1000x100", "nnz5", "nnz0", "block", "named"],
)
def test_storage_per_connection_plus_the_sizes(wiring: tw.Wiring) -> None:
    m = tw.SparseLinear(wiring)
    n_in, n_out, nnz = wiring.in_features, wiring.out_features, wiring.nnz
    # weight 4 and indices 4 per connection, indptr (out + 1 int32s), bias 4 per output;
    # at density <= 1/6 also the transposed structure: t_indices and perm 4 per connection,
    # t_indptr (in + 1 int32s).
    if 6 * nnz <= n_in * n_out:
        bound = 16 * nnz + 4 * (n_in + n_out + 2) + 4 * n_out
    else:
        bound = 8 * nnz + 4 * (n_out + 1) + 4 * n_out
    assert _bytes(m) <= bound
    assert _bytes(tw.SparseLinear(wiring, bias=False)) <= bound - 4 * n_out
    for name, tensor in [*m.named_parameters(), *m.named_buffers()]:
        if wiring.density < 1:
            assert tensor.numel() < n_in * n_out, name
        assert tensor.dim() == 1, name
    buffers = dict(m.named_buffers())
    assert buffers, "the index structure must be buffers"
    assert all(b.dtype == torch.int32 for b in buffers.values())
    state = m.state_dict()
    for name, buffer in buffers.items():
        assert torch.equal(state[name], buffer)
    assert set(buffers) | {"weight", "bias"} <= set(state)


# ---------------------------------------------------------------- absent connections


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
        lambda ps: torch.optim.Adam(ps, lr=0.05),
        lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.5),
    ],
    ids=["sgd-momentum", "adam", "adamw-decay"],
)
@pytest.mark.parametrize("backend", ["auto", "dense", "csr"])
def test_optimizers_never_create_absent_connections(
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer], backend: str
) -> None:
    torch.manual_seed(0)
    wiring = tw.Wiring.random(20, 10, density=0.2, seed=4)
    mask = wiring.mask()
    m = tw.SparseLinear(wiring, backend=backend)
    optimizer = make_optimizer(list(m.parameters()))
    before = m.to_dense().weight.detach().clone()
    for _ in range(5):
        loss = m(torch.randn(8, 20)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        dense = m.to_dense().weight.detach()
        assert torch.count_nonzero(dense[~mask]) == 0
        assert m.weight.shape == (wiring.nnz,)
    assert not torch.equal(dense[mask], before[mask])  # it did train
    for state in optimizer.state[m.weight].values():  # momentum / moments: one per connection
        if isinstance(state, torch.Tensor) and state.dim() > 0:
            assert state.shape == (wiring.nnz,)


# ---------------------------------------------------------------- init


def test_init_is_bounded_by_each_outputs_fan_in() -> None:
    torch.manual_seed(0)
    # Outputs with fan-in 1, 2, ~8, 30 and 0 (idle), in one layer.
    pairs = [(0, 0), (0, 1), (1, 1)] + [(i, 2) for i in range(0, 30, 4)]
    pairs += [(i, 3) for i in range(30)]
    wiring = _edges_wiring(pairs, 30, 5)
    fan_in = wiring.fan_in()
    assert fan_in.tolist() == [1, 2, 8, 30, 0]
    for dtype in (torch.float32, F64):
        m = tw.SparseLinear(wiring, dtype=dtype)
        assert m.bias is not None
        bound = 1 / fan_in.double().clamp(min=1).sqrt()
        per_weight = bound[wiring.edges()[:, 1]]
        slack = 1 + 1e-6
        assert bool((m.weight.detach().double().abs() <= per_weight * slack).all())
        assert bool((m.bias.detach().double().abs()[:4] <= bound[:4] * slack).all())
        assert m.bias[4].item() == 0.0  # an output without inputs gets no random bias


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (3, 2), (4, 5), (40, 30), (100, 7)])
def test_fully_connected_init_is_bit_identical_to_nn_linear(
    n_in: int, n_out: int, dtype: torch.dtype
) -> None:
    wiring = tw.Wiring.from_mask(torch.ones(n_out, n_in, dtype=torch.bool))
    for seed in (0, 1234):
        torch.manual_seed(seed)
        linear = nn.Linear(n_in, n_out, dtype=dtype)
        torch.manual_seed(seed)
        dense = tw.SparseLinear(wiring, dtype=dtype).to_dense()
        torch.testing.assert_close(dense.weight, linear.weight, rtol=0, atol=0)
        torch.testing.assert_close(dense.bias, linear.bias, rtol=0, atol=0)


def test_init_fills_the_whole_range_of_each_bound() -> None:
    torch.manual_seed(0)
    wiring = tw.Wiring.random(512, 256, density=0.1, seed=5)
    m = tw.SparseLinear(wiring)
    assert m.bias is not None
    fan_in = wiring.fan_in().double()
    assert int(fan_in.min()) > 0
    scaled = m.weight.detach().double() * fan_in[wiring.edges()[:, 1]].sqrt()  # ~ U(-1, 1)
    assert scaled.abs().max() <= 1 + 1e-6
    assert scaled.abs().max() > 0.9
    assert abs(scaled.mean().item()) < 0.02
    assert abs(scaled.std().item() - 1 / math.sqrt(3)) < 0.02  # U(-1, 1): std 1/sqrt(3)
    bias = m.bias.detach().double() * fan_in.sqrt()
    assert bias.abs().max() <= 1 + 1e-6
    assert bias.abs().max() > 0.9


# ---------------------------------------------------------------- conversions


def test_from_dense_with_a_mask_equals_the_masked_dense_layer() -> None:
    linear = nn.Linear(9, 6).double()
    mask = torch.rand(6, 9, generator=torch.Generator().manual_seed(0)) < 0.4
    mask[2] = False  # an output without inputs keeps its bias
    x = torch.randn(4, 9, dtype=F64)
    expected = F.linear(x, linear.weight * mask, linear.bias)
    for given_mask in (mask, mask.int(), mask.numpy()):
        m = tw.SparseLinear.from_dense(linear, mask=given_mask)
        assert torch.equal(m.wiring.mask(), mask)
        assert m.weight.dtype == F64
        torch.testing.assert_close(m(x), expected)
        torch.testing.assert_close(
            m.weight, _weight_at_edges(linear.weight, m.wiring), rtol=0, atol=0
        )


def test_from_dense_with_a_threshold_or_the_nonzeros() -> None:
    linear = nn.Linear(8, 5).double()
    x = torch.randn(3, 8, dtype=F64)
    m = tw.SparseLinear.from_dense(linear, threshold=0.2)
    kept = linear.weight.abs() > 0.2
    assert 0 < m.nnz < 40
    assert torch.equal(m.wiring.mask(), kept)
    torch.testing.assert_close(m(x), F.linear(x, linear.weight * kept, linear.bias))
    with torch.no_grad():
        linear.weight[linear.weight.abs() < 0.15] = 0.0
    nonzero = tw.SparseLinear.from_dense(linear)
    assert torch.equal(nonzero.wiring.mask(), linear.weight != 0)
    torch.testing.assert_close(nonzero(x), linear(x))
    no_bias = tw.SparseLinear.from_dense(nn.Linear(4, 3, bias=False))
    assert no_bias.bias is None


def test_from_dense_rejects_bad_arguments() -> None:
    linear = nn.Linear(5, 4)
    with pytest.raises(ValueError, match="a mask or a threshold, not both"):
        tw.SparseLinear.from_dense(linear, mask=torch.ones(4, 5), threshold=0.1)
    with pytest.raises(ValueError, match=r"mask of the weight's shape \(4, 5\).*got \(5, 4\)"):
        tw.SparseLinear.from_dense(linear, mask=torch.ones(5, 4))
    with pytest.raises(TypeError, match=r"from_dense expected an nn\.Linear, got Conv1d"):
        tw.SparseLinear.from_dense(nn.Conv1d(5, 4, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="threshold must be a number, got str"):
        tw.SparseLinear.from_dense(linear, threshold="0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prune_fn",
    [
        lambda m: prune.l1_unstructured(m, "weight", amount=0.8),
        lambda m: prune.random_unstructured(m, "weight", amount=0.6),
        lambda m: prune.random_unstructured(
            prune.l1_unstructured(m, "weight", amount=0.5), "weight", amount=0.5
        ),  # pruned twice: a PruningContainer
        lambda m: prune.l1_unstructured(m, "weight", amount=1.0),  # nothing left
    ],
    ids=["l1", "random", "twice", "everything"],
)
@pytest.mark.parametrize("bias", [True, False])
def test_from_pruned_gives_the_pruned_modules_outputs(
    prune_fn: Callable[[nn.Module], nn.Module], bias: bool
) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(30, 20, bias=bias)
    prune_fn(linear)
    m = tw.SparseLinear.from_pruned(linear)
    weight_mask = linear.get_buffer("weight_mask")
    assert torch.equal(m.wiring.mask(), weight_mask != 0)
    assert m.nnz == int(weight_mask.sum())
    assert (m.bias is None) == (not bias)
    x = torch.randn(6, 30)
    torch.testing.assert_close(m(x), linear(x))
    torch.testing.assert_close(m.to_dense().weight, linear.weight, rtol=0, atol=0)
    assert hasattr(linear, "weight_orig")  # the pruned module is left as it was


def test_from_pruned_4096_square_at_99_percent_is_20x_smaller_with_equal_outputs() -> None:
    torch.manual_seed(0)
    linear = prune.l1_unstructured(nn.Linear(4096, 4096), "weight", amount=0.99)
    m = tw.SparseLinear.from_pruned(linear)
    assert m.nnz == 4096 * 4096 - round(0.99 * 4096 * 4096)
    x = torch.randn(4, 4096)
    with torch.no_grad():
        torch.testing.assert_close(m(x), linear(x))
    pruned_bytes = _bytes(linear) + linear.weight.numel() * linear.weight.element_size()
    assert 20 * _bytes(m) <= pruned_bytes


def test_from_pruned_rejects_unpruned_and_non_linear_modules() -> None:
    with pytest.raises(ValueError, match=r"pruned with torch.nn.utils.prune.*from_dense"):
        tw.SparseLinear.from_pruned(nn.Linear(4, 3))
    with pytest.raises(TypeError, match=r"from_pruned expected an nn\.Linear, got Conv1d"):
        tw.SparseLinear.from_pruned(nn.Conv1d(4, 3, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "wiring",
    [
        tw.Wiring.random(10, 7, density=0.3, seed=0),
        _edges_wiring([(0, 0), (3, 0), (1, 2)], 6, 4),
        tw.Wiring.block_diagonal([2, 3], [3, 1]),
    ],
    ids=["random", "idle", "block"],
)
def test_to_dense_round_trip(wiring: tw.Wiring) -> None:
    m = tw.SparseLinear(wiring, dtype=F64)
    dense = m.to_dense()
    assert isinstance(dense, nn.Linear)
    assert dense.weight.dtype == F64
    assert torch.count_nonzero(dense.weight[~wiring.mask()]) == 0
    x = torch.randn(5, wiring.in_features, dtype=F64)
    torch.testing.assert_close(dense(x), m(x))
    torch.testing.assert_close(dense(x), _oracle(m, x))
    back = tw.SparseLinear.from_dense(dense, mask=wiring.mask())
    assert back.wiring == wiring
    torch.testing.assert_close(back.weight, m.weight, rtol=0, atol=0)
    torch.testing.assert_close(back.bias, m.bias, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((12, 8), {"groups": 4}),
        (([2, 3, 1], [4, 1, 2]), {}),
        ((12, 8), {"groups": 4, "shared": True}),
        ((6, 6), {"groups": 3, "bias": False}),
    ],
    ids=["equal", "uneven", "shared", "nobias"],
)
def test_from_block_and_from_sparse_convert_exactly(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    block = tw.BlockLinear(*args, **kwargs, dtype=F64)  # type: ignore[arg-type]
    sparse = tw.SparseLinear.from_block(block)
    assert sparse.wiring == block.wiring
    x = torch.randn(5, block.in_features, dtype=F64)
    # The block kernel runs it (auto may find the dense one cheaper at this size).
    blocked = tw.SparseLinear.from_block(block, backend="block")
    assert blocked.resolve_backend(x) == "block"
    torch.testing.assert_close(sparse.to_dense().weight, block.to_dense().weight, rtol=0, atol=0)
    torch.testing.assert_close(sparse(x), block(x))
    torch.testing.assert_close(blocked(x), block(x))
    back = tw.BlockLinear.from_sparse(sparse)
    assert (back.in_sizes, back.out_sizes) == (block.in_sizes, block.out_sizes)
    assert not back.shared  # a shared block was copied into every group
    assert (back.bias is None) == (block.bias is None)
    torch.testing.assert_close(back.to_dense().weight, block.to_dense().weight, rtol=0, atol=0)
    torch.testing.assert_close(back(x), block(x))
    if not block.shared:
        assert back.weight.shape == block.weight.shape
        torch.testing.assert_close(back.weight, block.weight, rtol=0, atol=0)
    if block.bias is not None:
        torch.testing.assert_close(back.bias, block.bias, rtol=0, atol=0)


def test_from_sparse_needs_a_block_diagonal_wiring() -> None:
    for wiring in (
        tw.Wiring.random(6, 4, density=0.5, seed=0),
        _edges_wiring([(0, 0), (1, 1)], 3, 2),  # an idle input
    ):
        with pytest.raises(ValueError, match=r"needs a block-diagonal wiring.*keep it a Sparse"):
            tw.BlockLinear.from_sparse(tw.SparseLinear(wiring))
    with pytest.raises(TypeError, match="from_sparse expected a SparseLinear, got Linear"):
        tw.BlockLinear.from_sparse(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_block expected a BlockLinear, got Linear"):
        tw.SparseLinear.from_block(nn.Linear(2, 2))  # type: ignore[arg-type]


# ---------------------------------------------------------------- named connectivity


def test_named_layer_keeps_names_and_lists_its_connections() -> None:
    wiring = tw.Wiring.from_mapping(
        {"p1": ["g2", "g1"], "p2": ["g3"], "p3": []}, inputs=["g1", "g2", "g3", "g4"]
    )
    m = tw.SparseLinear(wiring)
    assert m.wiring.input_names == ("g1", "g2", "g3", "g4")
    assert m.wiring.output_names == ("p1", "p2", "p3")
    rows = m.connections()
    edges = wiring.edges().tolist()
    assert wiring.input_names is not None
    assert wiring.output_names is not None
    assert len(rows) == m.nnz == len(edges) == 3
    for (name_in, name_out, value), (i, o), w in zip(rows, edges, m.weight.tolist(), strict=True):
        assert (name_in, name_out) == (wiring.input_names[i], wiring.output_names[o])
        assert value == w
    assert [r[:2] for r in rows] == [("g1", "p1"), ("g2", "p1"), ("g3", "p2")]
    assert all(isinstance(r[2], float) for r in rows)


def test_unnamed_layer_lists_connections_by_index() -> None:
    wiring = tw.Wiring.random(7, 5, density=0.4, seed=3)
    m = tw.SparseLinear(wiring)
    assert m.wiring.input_names is None
    assert m.wiring.output_names is None
    rows = m.connections()
    assert [(i, o) for i, o, _ in rows] == [tuple(e) for e in wiring.edges().tolist()]
    assert all(isinstance(i, int) and isinstance(o, int) for i, o, _ in rows)
    assert [w for _, _, w in rows] == m.weight.tolist()


# ---------------------------------------------------------------- training equivalence


def _train_against_dense_twin(
    dtype: torch.dtype, backend: str, steps: int, rtol: float, atol: float
) -> None:
    """A SparseLinear and a dense ``weight * mask`` twin with the same init, trained with
    Adam on the same data, stay equal at every step."""
    torch.manual_seed(0)
    wiring = tw.Wiring.random(64, 48, density=0.1, seed=11)
    mask = wiring.mask()
    sparse = tw.SparseLinear(wiring, backend=backend, dtype=dtype)
    init = sparse.to_dense()
    weight = nn.Parameter(init.weight.detach().clone())
    bias = nn.Parameter(init.bias.detach().clone())
    opt_sparse = torch.optim.Adam(sparse.parameters(), lr=1e-2)
    opt_dense = torch.optim.Adam([weight, bias], lr=1e-2)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 64, generator=data, dtype=dtype)
        target = torch.randn(16, 48, generator=data, dtype=dtype)
        xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
        ys = sparse(xs)
        yd = F.linear(xd, weight * mask, bias)
        torch.testing.assert_close(ys, yd, rtol=rtol, atol=atol)
        opt_sparse.zero_grad()
        opt_dense.zero_grad()
        F.mse_loss(ys, target).backward()
        F.mse_loss(yd, target).backward()
        assert xs.grad is not None
        assert sparse.weight.grad is not None
        assert sparse.bias is not None
        assert weight.grad is not None
        torch.testing.assert_close(xs.grad, xd.grad, rtol=rtol, atol=atol)
        torch.testing.assert_close(
            sparse.weight.grad, _weight_at_edges(weight.grad, wiring), rtol=rtol, atol=atol
        )
        torch.testing.assert_close(sparse.bias.grad, bias.grad, rtol=rtol, atol=atol)
        opt_sparse.step()
        opt_dense.step()
        torch.testing.assert_close(
            sparse.weight, _weight_at_edges(weight, wiring), rtol=rtol, atol=atol
        )
        torch.testing.assert_close(sparse.bias, bias, rtol=rtol, atol=atol)
    trained = sparse.to_dense().weight.detach()
    torch.testing.assert_close(trained, (weight * mask).detach(), rtol=rtol, atol=atol)
    assert not torch.equal(trained, init.weight)


@pytest.mark.parametrize("backend", ["auto", "dense", "csr"])
def test_training_equals_a_dense_masked_twin_float64(backend: str) -> None:
    _train_against_dense_twin(F64, backend, 40, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["auto", "csr"])
def test_training_equals_a_dense_masked_twin_float32(backend: str) -> None:
    _train_against_dense_twin(torch.float32, backend, 40, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- checkpoints


def _roundtrip(state: dict[str, object]) -> dict[str, object]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded: dict[str, object] = torch.load(buffer, weights_only=True)
    return loaded


@pytest.mark.parametrize(
    ("source_wiring", "target_wiring"),
    [
        (tw.Wiring.random(6, 4, nnz=12, seed=1), tw.Wiring.random(6, 4, nnz=12, seed=2)),
        (tw.Wiring.block_diagonal([3, 3], [2, 2]), tw.Wiring.random(6, 4, nnz=12, seed=3)),
        (tw.Wiring.random(6, 4, nnz=12, seed=4), tw.Wiring.block_diagonal([3, 3], [2, 2])),
    ],
    ids=["random", "block-into-random", "random-into-block"],
)
def test_loading_a_checkpoint_adopts_its_connections(
    source_wiring: tw.Wiring, target_wiring: tw.Wiring
) -> None:
    assert source_wiring != target_wiring
    source = tw.SparseLinear(source_wiring, dtype=F64)
    target = tw.SparseLinear(target_wiring, dtype=F64)
    target.load_state_dict(_roundtrip(source.state_dict()))
    assert target.wiring == source_wiring
    assert target.nnz == source.nnz
    for name, buffer in source.named_buffers():
        assert torch.equal(getattr(target, name), buffer), name
    x = torch.randn(5, 6, dtype=F64, requires_grad=True)
    torch.testing.assert_close(target(x), source(x))
    torch.testing.assert_close(target(x), _oracle(target, x))
    assert target.resolve_backend(x) == source.resolve_backend(x)
    torch.testing.assert_close(target.to_dense().weight, source.to_dense().weight)
    target(x).sum().backward()  # and it trains with the adopted structure
    assert target.weight.grad is not None
    # d(sum y)/d w_(i->o) = sum over the batch of x_i
    expected = x.detach().sum(0)[source_wiring.edges()[:, 0]]
    torch.testing.assert_close(target.weight.grad, expected)


def test_loading_a_checkpoint_of_other_sizes_is_a_clear_error() -> None:
    source = tw.SparseLinear(tw.Wiring.random(6, 4, nnz=12, seed=1))
    state = source.state_dict()
    for other in (tw.Wiring.random(7, 4, nnz=12, seed=1), tw.Wiring.random(6, 3, nnz=12, seed=1)):
        with pytest.raises(ValueError, match=r"\(in_features, out_features\) = \(6, 4\)"):
            tw.SparseLinear(other).load_state_dict(state)
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        tw.SparseLinear(tw.Wiring.random(6, 4, nnz=11, seed=1)).load_state_dict(state)


# Densities up to which SparseLinear stores no more than a dense weight plus a bool mask: 4
# bytes of index per connection against 1 of mask per element, less the row pointers.
MASK_PARITY = {torch.float32: 0.62, torch.float64: 0.74, torch.bfloat16: 0.49}


@pytest.mark.parametrize("density", [0.01, 0.1, 1 / 6, 0.2, 1.0])
@pytest.mark.parametrize("dtype", list(MASK_PARITY))
def test_storage_never_exceeds_a_dense_weight_and_a_bool_mask(
    density: float, dtype: torch.dtype
) -> None:
    # What a user replaces: nn.Linear's weight plus a torch.bool mask of its shape.
    density = min(density, MASK_PARITY[dtype])
    m = tw.SparseLinear(tw.Wiring.random(512, 256, density=density, seed=0), bias=False)
    m = m.to(dtype)
    dense_and_mask = 512 * 256 * (dtype.itemsize + 1)
    assert _bytes(m) <= dense_and_mask


@given(wiring=wirings())
@settings(max_examples=60, deadline=None)
def test_transposed_structure_is_the_transpose(wiring: tw.Wiring) -> None:
    n_in = wiring.in_features
    index = tw.backends.sparse_index(wiring)
    t_indptr, t_indices, perm = index.transposed()
    edges = wiring.edges()  # (input, output), canonical order: by output, then input
    by_input = sorted(range(wiring.nnz), key=lambda k: (int(edges[k, 0]), int(edges[k, 1])))
    assert perm.tolist() == by_input
    assert t_indices.tolist() == [int(edges[k, 1]) for k in by_input]
    counts = torch.bincount(edges[:, 0], minlength=n_in)
    assert t_indptr.tolist() == [0, *counts.cumsum(0).tolist()]
    assert {t.dtype for t in (t_indptr, t_indices, perm)} == {index.indices.dtype}
    assert index.transposed()[0] is t_indptr  # derived once


@pytest.mark.parametrize("nnz", [4, 12], ids=["sparse", "half-dense"])
@pytest.mark.parametrize("saved", ["with", "without"])
def test_checkpoints_with_or_without_the_transposed_buffers_load(nnz: int, saved: str) -> None:
    # torchwire 0.1 saved the transposed structure at every density; a sparse layer keeps it
    # (density <= 1/6), a denser one derives it. Either loads either, and never trusts it.
    source = tw.SparseLinear(tw.Wiring.random(6, 4, nnz=nnz, seed=2), dtype=F64)
    derived = ("t_indptr", "t_indices", "perm")
    state = {k: v for k, v in source.state_dict().items() if k not in derived}
    if saved == "with":  # wrong on purpose: recomputed from indptr and indices
        state |= {"t_indptr": torch.zeros(7, dtype=torch.int32)}
        state |= {name: torch.zeros(nnz, dtype=torch.int32) for name in ("t_indices", "perm")}
    target = tw.SparseLinear(tw.Wiring.random(6, 4, nnz=nnz, seed=1), dtype=F64)
    target.load_state_dict(state)  # strict: nothing missing, nothing unexpected
    assert target.wiring == source.wiring
    x = torch.randn(3, 6, dtype=F64, requires_grad=True)
    for backend in ("dense", "csr"):
        target.backend = backend
        source.backend = backend
        torch.testing.assert_close(target(x), source(x))
        grads = torch.autograd.grad(target(x).sum(), (x, target.weight))
        expected = torch.autograd.grad(source(x).sum(), (x, source.weight))
        torch.testing.assert_close(grads, expected)


def test_a_failed_load_leaves_the_layer_consistent() -> None:
    # Same sizes, fewer connections: torch reports the size mismatches, after copying the
    # tensors whose shapes happen to match (indptr; and bias, as for any module).
    # The layer must still be the layer of its wiring: its index buffers and its outputs.
    # (Checked before any forward: a CSR kernel reading a mismatched structure can crash.)
    wiring = tw.Wiring.random(6, 4, nnz=12, seed=1)
    target = tw.SparseLinear(wiring, dtype=F64)
    source = tw.SparseLinear(tw.Wiring.random(6, 4, nnz=6, seed=2), dtype=F64)
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        target.load_state_dict(source.state_dict())
    assert target.wiring == wiring
    index = tw.backends.sparse_index(wiring)
    expected = dict(zip(("t_indptr", "t_indices", "perm"), index.transposed(), strict=True))
    expected |= {"indptr": index.indptr, "indices": index.indices}
    for name, buffer in target.named_buffers():
        assert torch.equal(buffer, expected[name]), f"{name} no longer matches the wiring"
    x = torch.randn(3, 6, dtype=F64)
    for backend in ("dense", "csr"):
        target.backend = backend
        torch.testing.assert_close(target(x), _oracle(target, x))


def test_a_load_of_invalid_connections_leaves_the_layer_consistent() -> None:
    # Shapes that match, connections that are no wiring: the load raises, and the buffers
    # (copied in by then) describe the layer's own wiring again before anything reads them.
    wiring = tw.Wiring.random(6, 4, nnz=12, seed=1)
    target = tw.SparseLinear(wiring, dtype=F64)
    state = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    state["indices"][0] = 99
    with pytest.raises(ValueError, match="not a valid wiring"):
        target.load_state_dict(state)
    assert target.wiring == wiring
    assert torch.equal(target.indices, tw.backends.sparse_index(wiring).indices)
    x = torch.randn(3, 6, dtype=F64)
    for backend in ("dense", "csr"):
        target.backend = backend
        torch.testing.assert_close(target(x), _oracle(target, x))


def test_names_of_a_failed_load_are_not_applied_by_a_later_load() -> None:
    target = tw.SparseLinear(tw.Wiring.random(3, 2, nnz=4, seed=0))
    saved = {k: v.clone() for k, v in target.state_dict().items() if isinstance(v, torch.Tensor)}
    named = tw.SparseLinear(tw.Wiring.from_mapping({"y": ["a", "b"], "z": ["c"]}))
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        target.load_state_dict(named.state_dict())
    # A checkpoint without extra state (e.g. written by hand) keeps the layer's own names.
    target.load_state_dict(saved, strict=False)
    assert target.wiring.input_names is None
    assert target.wiring.output_names is None
    assert target.wiring == tw.Wiring.random(3, 2, nnz=4, seed=0)


def test_a_state_dict_holds_tensors_and_carries_connections_not_names() -> None:
    named = tw.Wiring.from_mapping({"p1": ["g1", "g2"], "p2": ["g2", "g3"], "p3": ["g4"]})
    source = tw.SparseLinear(named)
    state = _roundtrip(source.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    # Other structure of the same nnz and sizes: the structure is adopted, the names are the
    # layer's own (torchwire.save keeps names; see test_serialization.py).
    other = tw.SparseLinear(tw.Wiring.random(4, 3, nnz=named.nnz, seed=0))
    assert other.wiring.mask().tolist() != named.mask().tolist()
    other.load_state_dict(state)
    assert other.wiring.mask().tolist() == named.mask().tolist()
    assert other.wiring.input_names is None
    assert other.wiring.output_names is None
    torch.testing.assert_close(other.weight, source.weight)
    x = torch.randn(2, 4)
    torch.testing.assert_close(other(x), source(x))
    # A named layer keeps its own names through a load of other connections.
    renamed = tw.Wiring.from_mapping({"q1": ["h1", "h2", "h3"], "q2": ["h4"], "q3": ["h1"]})
    assert renamed.shape == named.shape
    assert renamed.nnz == named.nnz
    target = tw.SparseLinear(renamed)
    target.load_state_dict(state)
    assert target.wiring.mask().tolist() == named.mask().tolist()
    assert target.wiring.input_names == renamed.input_names
    assert target.wiring.output_names == ("q1", "q2", "q3")


def test_checkpoints_of_0_1_with_names_in_a_dict_still_load_them() -> None:
    named = tw.Wiring.from_mapping({"p1": ["g1", "g2"], "p2": ["g2", "g3"], "p3": ["g4"]})
    source = tw.SparseLinear(named)
    state = dict(source.state_dict())
    state["_extra_state"] = {
        "in_features": 4,
        "out_features": 3,
        "input_names": ["g1", "g2", "g3", "g4"],
        "output_names": ["p1", "p2", "p3"],
    }
    target = tw.SparseLinear(tw.Wiring.random(4, 3, nnz=named.nnz, seed=0))
    target.load_state_dict(state)
    assert target.wiring == named
    assert target.wiring.input_names == ("g1", "g2", "g3", "g4")
    assert target.wiring.output_names == ("p1", "p2", "p3")
    assert target.connections() == source.connections()


# ---------------------------------------------------------------- errors


def test_functional_sparse_linear_errors_say_what_was_expected() -> None:
    wiring = tw.Wiring.random(5, 4, density=0.5, seed=0)
    x = torch.randn(3, 5)
    w = torch.randn(wiring.nnz)
    sl = tw.functional.sparse_linear
    with pytest.raises(ValueError, match=rf"1-D weight of {wiring.nnz} values .* got shape \(9,\)"):
        sl(x, w[:-1], wiring)
    with pytest.raises(ValueError, match=r"1-D weight of 10 values .* got shape \(1, 10\)"):
        sl(x, w.view(1, -1), wiring)
    with pytest.raises(ValueError, match=r"expected input of shape \(\*, 5\).*got \(3, 6\)"):
        sl(torch.randn(3, 6), w, wiring)
    with pytest.raises(TypeError, match=r"input of dtype torch.float32 .* got torch.float64"):
        sl(x.double(), w, wiring)
    with pytest.raises(TypeError, match=r"expected bias of the weight's dtype"):
        sl(x, w, wiring, torch.zeros(4, dtype=F64))
    with pytest.raises(ValueError, match=r"expected bias of shape \(4,\)"):
        sl(x, w, wiring, torch.zeros(3))
    with pytest.raises(TypeError, match=r"expected wiring to be a torchwire\.Wiring .* got Tensor"):
        sl(x, w, wiring.mask())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected weight to be a Tensor, got list"):
        sl(x, w.tolist(), wiring)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected bias to be a Tensor or None, got list"):
        sl(x, w, wiring, [0.0] * 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown backend 'nope' for sparse_linear"):
        sl(x, w, wiring, backend="nope")


def test_forcing_the_block_backend_on_a_non_block_wiring_names_the_reason() -> None:
    wiring = tw.Wiring.random(5, 4, density=0.5, seed=0)
    x = torch.randn(3, 5)
    reason = r"backend 'block' cannot compute .*not block diagonal.*one of \['dense', 'csr'\]"
    with pytest.raises(ValueError, match=reason):
        tw.functional.sparse_linear(x, torch.randn(wiring.nnz), wiring, backend="block")
    m = tw.SparseLinear(wiring, backend="block")
    with pytest.raises(ValueError, match=reason):
        m(x)
    with pytest.raises(ValueError, match=reason):
        m.resolve_backend(x)
    with pytest.raises(ValueError, match=r"unknown backend 'nope'; expected 'auto' or one of"):
        tw.SparseLinear(wiring, backend="nope")


def test_torch_func_grad_and_vmap_run_a_backend_that_supports_them() -> None:
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    m = tw.SparseLinear(tw.Wiring.random(20, 10, density=0.2, seed=0), dtype=F64)
    x = torch.randn(4, 20, dtype=F64)
    params = {k: v.detach() for k, v in m.named_parameters()}
    grads = grad(lambda p: functional_call(m, p, (x,)).sum())(params)
    m(x).sum().backward()
    assert m.weight.grad is not None
    torch.testing.assert_close(grads["weight"], m.weight.grad)
    torch.testing.assert_close(vmap(m)(x), m(x))
    forced = tw.SparseLinear(tw.Wiring.random(20, 10, density=0.2, seed=0), backend="csr")
    with pytest.raises(ValueError, match=r"torch.func transforms .* use backend='auto'"):
        vmap(forced)(torch.randn(3, 20))


@given(wiring=wirings())
@settings(max_examples=60, deadline=None)
def test_dense_positions_are_the_connections_row_major(wiring: tw.Wiring) -> None:
    index = tw.backends.sparse_index(wiring)
    inputs, outputs = wiring.edges().unbind(1)
    positions = tw.backends.sparse_dense.positions(index)
    assert positions.dtype == torch.int64
    assert positions.tolist() == (outputs * wiring.in_features + inputs).tolist()


def test_block_wirings_under_compile_and_torch_func_run_a_block_kernel_that_can() -> None:
    # The block backend's own choice of block-linear kernel sees torch.compile and torch.func
    # too: there it runs one whose code runs there, not a hand-written bmm mode.
    from tests.test_block_linear import HAND_WRITTEN, recording_block_backends

    torch._dynamo.reset()
    wiring = tw.Wiring.block_diagonal([4] * 64, [4] * 64)
    m = tw.SparseLinear(wiring, backend="block", dtype=F64)
    x = torch.randn(256, 256, dtype=F64)
    with recording_block_backends() as ran, torch.no_grad():
        m(x)
    assert ran[0] in HAND_WRITTEN  # the point: eager's choice cannot be traced
    with recording_block_backends() as ran, torch.no_grad():
        per_sample = torch.func.vmap(m)(x.view(4, 64, 256))
        compiled = torch.compile(m, backend="eager", fullgraph=True)(x)
    assert len(ran) == 2
    assert set(ran) <= {"dense", "bmm_autograd"}
    with torch.no_grad():
        torch.testing.assert_close(per_sample.view(256, 256), m(x))
        torch.testing.assert_close(compiled, m(x))
    params = {name: p.detach() for name, p in m.named_parameters()}
    with recording_block_backends() as ran:
        grads = torch.func.grad(lambda p: torch.func.functional_call(m, p, (x,)).sum())(params)
    assert set(ran) <= {"dense", "bmm_autograd"}
    m(x).sum().backward()
    torch.testing.assert_close(grads["weight"], m.weight.grad)


def test_rewire_in_place_keeps_the_parameters_and_computes_the_new_wiring() -> None:
    torch.manual_seed(0)
    m = tw.SparseLinear(tw.Wiring.random(6, 5, density=0.4, seed=0))
    weight, bias = m.weight, m.bias
    new = tw.Wiring.random(6, 5, nnz=m.nnz, seed=1)
    assert not torch.equal(new.positions(), m.wiring.positions())
    assert m.rewire_(new) is m
    assert m.weight is weight  # an optimizer keeps tracking them
    assert m.bias is bias
    assert torch.equal(m.wiring.positions(), new.positions())
    x = torch.randn(3, 6, dtype=torch.float64)
    m.double()
    expected = reference.sparse_linear(x, m.weight, new.edges(), new.shape, m.bias)
    torch.testing.assert_close(m(x), expected)


def test_rewire_in_place_needs_a_wiring_of_the_same_shape_and_count() -> None:
    m = tw.SparseLinear(tw.Wiring.random(6, 5, density=0.4, seed=0))
    with pytest.raises(ValueError, match=r"same shape and connection count.*build a new"):
        m.rewire_(tw.Wiring.random(6, 5, nnz=m.nnz + 1, seed=1))
    with pytest.raises(ValueError, match=r"got \(5, 7\)"):
        m.rewire_(tw.Wiring.random(7, 5, nnz=m.nnz, seed=1))
    with pytest.raises(TypeError, match=r"expected a torchwire\.Wiring, got Tensor"):
        m.rewire_(torch.ones(5, 6))  # type: ignore[arg-type]


@pytest.mark.parametrize("grad", [False, True])
def test_the_dense_backend_writes_many_connections_as_exactly_as_few(grad: bool) -> None:
    # From 8,192 connections the dense backends write the weight with index_copy_ instead
    # of put_ (kept matrix without autograd, fresh tensor with it): same values, gradients.
    sparse = tw.SparseLinear(tw.Wiring.random(160, 96, density=0.7, seed=3), backend="dense")
    block = tw.BlockLinear(192, 96, groups=2, backend="dense")  # 2 blocks of 96 x 48
    assert sparse.weight.numel() >= 8192
    assert block.weight.numel() >= 8192
    sparse, block = sparse.double(), block.double()
    x = torch.randn(7, 160, dtype=F64, requires_grad=grad)
    xb = torch.randn(7, 192, dtype=F64, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        ys, yb = sparse(x), block(xb)
    torch.testing.assert_close(ys, _oracle(sparse, x))
    expected = reference.block_linear(xb, block.weight.reshape(-1), block.bias, [96] * 2, [48] * 2)
    torch.testing.assert_close(yb, expected)
    if not grad:  # a kept matrix is written again with the new values, in its own layout
        with torch.no_grad():
            sparse.weight.mul_(-2.0)
            block.weight.mul_(-2.0)
            torch.testing.assert_close(sparse(x), _oracle(sparse, x))
            weight = block.weight.reshape(-1)
            expected = reference.block_linear(xb, weight, block.bias, [96] * 2, [48] * 2)
            torch.testing.assert_close(block(xb), expected)
    if grad:
        g, gb = torch.randn_like(ys), torch.randn_like(yb)
        got = torch.autograd.grad(ys, (x, sparse.weight), g)
        want = torch.autograd.grad(_oracle(sparse, x), (x, sparse.weight), g)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
        got = torch.autograd.grad(yb, (xb, block.weight), gb)
        want = torch.autograd.grad(expected, (xb, block.weight), gb)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)


def test_cpu_cost_weights_are_the_recorded_fit() -> None:
    # The weights in the code are those benchmarks/sparse_costs.py fitted to the recorded run.
    from torchwire.backends import sparse_csr, sparse_dense

    path = Path(__file__).parents[1] / "benchmarks/results/cpu-intel-xeon-float32-sparse-costs.json"
    recorded = json.loads(path.read_text())["weights"]
    assert set(recorded) == {"dense", "csr"}
    for backend, module in (("dense", sparse_dense), ("csr", sparse_csr)):
        for kind, weights in recorded[backend].items():
            assert len(weights) == len(module.FEATURES)
            assert module._CPU[kind == "train"] == pytest.approx(weights, rel=1e-3), (backend, kind)


def test_cost_features_count_the_problem() -> None:
    from torchwire.backends import sparse_csr, sparse_dense

    problem = tw.backends.SparseProblem(300, 200, 5000, None, 7, torch.float32, "cpu", True)
    dense = dict(zip(sparse_dense.FEATURES, sparse_dense.cost_features(problem), strict=True))
    assert dense == {
        "gemm": 7 * 300 * 200,
        "element": 300 * 200,
        "connection": 5000,
        "connection_far": 0,
        "call": 1,
    }
    csr = dict(zip(sparse_csr.FEATURES, sparse_csr.cost_features(problem), strict=True))
    assert csr == {
        "product": 7 * 5000,
        "product_far": 0,
        "activation": 7 * 500,
        "connection": 5000,
        "call": 1,
    }
    big = dataclasses.replace(problem, rows=1024, nnz=2**19)  # input 1.2 MB, positions 4 MB
    assert sparse_csr.cost_features(big)[1] == 1024 * 2**19
    assert sparse_dense.cost_features(big)[3] == 2**19
