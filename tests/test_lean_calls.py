"""Lean calls: the ATen ops a call runs are pinned, nothing on the call path synchronises
with the host, and what a layer derives once (plans, index views, positions, scratch
matrices) follows every change of the structure or the values."""

from __future__ import annotations

import copy
import dataclasses
import io
import pickle
from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call

import torchwire as tw
from tests import reference
from torchwire.backends import sparse_dense
from torchwire.bench import overhead as _overhead
from torchwire.bench.overhead import OpCounter

# ATen ops a call runs beyond nn.Linear(4, 6)'s (no-grad forward; forward+backward), at the
# bench's overhead shapes. A layer with a small dense product builds its dense weight:
# without autograd, one put_ into a kept zero matrix that is already the transpose the GEMM
# reads (so no t(): as many ops as nn.Linear), with autograd zeros plus put_ into a fresh
# transpose (whose backward is one take, and no transpose of the weight's gradient: one op
# more than nn.Linear); MultiLinear adds one GEMM per extra input. Containers add nothing.
EXTRA_OPS = {
    "block_equal": (0, 1),
    "block_uneven": (0, 1),
    "sparse_random": (0, 1),
    "sparse_block": (0, 1),
    "multi": (2, 10),
    "parallel": (0, 0),
    "split": (0, 0),
    "map": (0, 0),
    "concat": (0, 0),
}
SYNCING = {"_local_scalar_dense", "item", "nonzero", "tolist", "_assert_async"}


def _totals(counts: dict[str, Any]) -> tuple[int, int]:
    fwd = sum(counts["fwd"].values())
    return fwd, sum(counts["forward"].values()) + sum(counts["backward"].values())


def test_every_overhead_case_has_pinned_op_counts() -> None:
    assert sorted(EXTRA_OPS) == sorted(case.name for case in _overhead.CASES)


@pytest.mark.parametrize("case", _overhead.CASES, ids=lambda c: c.name)
def test_op_counts_are_pinned(case: _overhead.OverheadCase) -> None:
    module, module_args, torch_module, torch_args = case.build()
    ops = _totals(_overhead.op_counts(module, module_args))
    against = _totals(_overhead.op_counts(torch_module, torch_args))
    assert (ops[0] - against[0], ops[1] - against[1]) == EXTRA_OPS[case.name]


def _layers() -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = []
    for backend in tw.backends.available("block_linear"):
        layers.append((f"block-{backend}", tw.BlockLinear([8, 8, 4], [4, 4, 8], backend=backend)))
    layers.append(("block-shared", tw.BlockLinear(16, 8, groups=4, shared=True)))
    wiring = tw.Wiring.random(20, 12, density=0.3, seed=0)
    for backend in ("dense", "csr"):
        layers.append((f"sparse-{backend}", tw.SparseLinear(wiring, backend=backend)))
    blocks = tw.Wiring.block_diagonal([8, 8, 4], [4, 4, 8])
    layers.append(("sparse-block", tw.SparseLinear(blocks, backend="block")))
    return layers


@pytest.mark.parametrize(("name", "layer"), _layers(), ids=[n for n, _ in _layers()])
@pytest.mark.parametrize("batch", [1, 64])
def test_no_host_synchronisation_on_the_call_path(name: str, layer: nn.Module, batch: int) -> None:
    x = torch.randn(batch, layer.in_features, requires_grad=True)  # type: ignore[arg-type]
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            layer(x)  # warm up: plans and index tensors are built here, once
            with OpCounter() as counter:
                y = layer(x)
                if grad:
                    y.sum().backward()
        assert counter.total > 0
        assert not SYNCING & set(counter.counts), dict(counter.counts)


def _sparse_reference(layer: tw.SparseLinear, x: torch.Tensor) -> torch.Tensor:
    weight = torch.zeros(layer.out_features, layer.in_features, dtype=x.dtype)
    for (i, o), value in zip(layer.wiring.edges().tolist(), layer.weight.tolist(), strict=True):
        weight[o, i] = value
    bias = layer.bias.detach() if layer.bias is not None else None
    return torch.nn.functional.linear(x, weight, bias)


@pytest.mark.parametrize("backend", ["dense", "csr", "auto"])
def test_sparse_layer_follows_a_loaded_checkpoint_of_other_connections(backend: str) -> None:
    torch.manual_seed(0)
    a = tw.SparseLinear(tw.Wiring.random(6, 5, nnz=12, seed=1), backend=backend).double()
    b = tw.SparseLinear(tw.Wiring.random(6, 5, nnz=12, seed=2), backend=backend).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    with torch.no_grad():
        a(x)  # the index (and its positions) are built and kept
        a.load_state_dict(b.state_dict())  # written into the same buffers, in place
        torch.testing.assert_close(a(x), b(x))
        torch.testing.assert_close(a(x), _sparse_reference(b, x))


def test_sparse_layer_follows_buffers_written_in_place() -> None:
    layer = tw.SparseLinear(tw.Wiring.from_edges([[0, 0], [2, 1]], 3, 2), bias=False).double()
    other = tw.SparseLinear(tw.Wiring.from_edges([[1, 0], [2, 1]], 3, 2), bias=False)
    x = torch.tensor([[1.0, 10.0, 100.0]], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        torch.testing.assert_close(layer(x), torch.tensor([[1.0, 100.0]], dtype=torch.float64))
        # Another rank's connections broadcast into the buffers: the layer computes with
        # what they hold, not with what it derived from them before.
        for name, tensor in other.named_buffers():
            getattr(layer, name).copy_(tensor)
        torch.testing.assert_close(layer(x), torch.tensor([[10.0, 100.0]], dtype=torch.float64))


def test_functional_call_with_other_buffers_uses_them() -> None:
    a = tw.SparseLinear(tw.Wiring.random(6, 5, nnz=10, seed=1), bias=False).double()
    b = tw.SparseLinear(tw.Wiring.random(6, 5, nnz=10, seed=2), bias=False).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    a(x)
    tensors = {k: v for k, v in b.state_dict(keep_vars=True).items() if k != "_extra_state"}
    swapped = functional_call(a, tensors, (x,))
    torch.testing.assert_close(swapped, b(x))
    torch.testing.assert_close(a(x), _sparse_reference(a, x))  # and a itself is unchanged


@pytest.mark.parametrize(
    "make",
    [
        lambda: tw.BlockLinear([2, 2], [3, 1]),
        lambda: tw.SparseLinear(tw.Wiring.random(4, 6, density=0.5, seed=0)),
    ],
    ids=["block", "sparse"],
)
def test_inference_calls_follow_the_values(make: Any) -> None:
    torch.manual_seed(0)
    first, second = make().double(), make().double()  # the same structure: one scratch
    with torch.no_grad():
        second.weight.mul_(-3.0)
    x = torch.randn(2, first.in_features, dtype=torch.float64)
    expected = [m.to_dense()(x).detach() for m in (first, second)]
    with torch.no_grad():
        for _ in range(2):  # alternating layers of one structure
            torch.testing.assert_close(first(x), expected[0])
            torch.testing.assert_close(second(x), expected[1])
        first.weight.add_(1.0)  # an optimizer step, in place
        torch.testing.assert_close(first(x), first.to_dense()(x))
    with torch.inference_mode():
        torch.testing.assert_close(first(x), first.to_dense()(x))
    with torch.no_grad():  # what inference mode used stays writable outside it
        torch.testing.assert_close(second(x), expected[1])
    y = first(x.requires_grad_())  # with autograd, a fresh matrix: the graph keeps it
    with torch.no_grad():
        second(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, first.to_dense().weight.sum(0).expand_as(x).detach())


def _oracle(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, tw.BlockLinear):
        return reference.block_linear(x, layer.weight, layer.bias, layer.in_sizes, layer.out_sizes)
    shape = (layer.out_features, layer.in_features)
    return reference.sparse_linear(x, layer.weight, layer.wiring.edges(), shape, layer.bias)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tw.BlockLinear(8, 12, groups=4, shared=True, backend="dense"),
        lambda: tw.BlockLinear([3, 1], [2, 5], backend="dense"),
        lambda: tw.SparseLinear(tw.Wiring.random(6, 5, density=0.5, seed=0), backend="dense"),
        # from _INDEX_COPY_FROM connections the weight is written in order, not transposed
        lambda: tw.SparseLinear(tw.Wiring.random(128, 128, density=0.6, seed=0), backend="dense"),
    ],
    ids=["block-shared", "block-uneven", "sparse-few", "sparse-many"],
)
def test_training_calls_through_a_fresh_dense_weight_match_the_oracle(make: Any) -> None:
    torch.manual_seed(0)
    layer = make().double()
    x = torch.randn(5, layer.in_features, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(5, layer.out_features, dtype=torch.float64)
    for _ in range(3):  # the first call binds the kept call, the next ones reuse it
        tensors = (x, layer.weight, layer.bias)
        got = torch.autograd.grad(layer(x), tensors, grad)
        expected = torch.autograd.grad(_oracle(layer, x), tensors, grad)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)
        with torch.no_grad():  # an optimizer step, in place
            layer.weight.mul_(-0.5).add_(0.25)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tw.BlockLinear(4, 6, groups=2),
        lambda: tw.SparseLinear(tw.Wiring.random(4, 6, density=0.5, seed=0)),
    ],
    ids=["block", "sparse"],
)
def test_a_training_call_bound_in_inference_mode_keeps_nothing_of_it(make: Any) -> None:
    """Autograd can record inside inference mode (with enable_grad): what the bound call
    keeps must still serve training outside it (an inference tensor cannot be saved for
    backward). Blocks share bound calls by layout, so a fresh layer meets them too."""
    x = torch.randn(3, 4)
    first = make()
    with torch.inference_mode(), torch.enable_grad():
        first(x)
    for layer in (first, make()):
        layer(x).sum().backward()
        assert layer.weight.grad is not None


def test_bound_training_calls_share_the_positions_the_structure_keeps() -> None:
    """One bound call per batch size: they hold the positions the index keeps, not a copy
    each (a memo of 256 row counts would otherwise keep 256 copies)."""
    layer = tw.SparseLinear(tw.Wiring.random(16, 8, density=0.5, seed=0), backend="dense")
    for rows in (1, 2, 3, 5):
        layer(torch.randn(rows, 16)).sum().backward()
    calls = layer._index().cache.calls
    assert len(calls) == 4
    kept = {
        cell.cell_contents.data_ptr()
        for run in calls.values()
        for cell in (getattr(run, "__closure__", None) or ())
        if isinstance(cell.cell_contents, torch.Tensor)
    }
    assert len(kept) == 1


def test_block_layer_refuses_a_weight_of_another_shape() -> None:
    layer = tw.BlockLinear(4, 6, groups=2)
    layer.weight = nn.Parameter(torch.randn(2, 2, 3))  # transposed blocks, same numel
    with pytest.raises(ValueError, match=r"weight of shape \(2, 3, 2\), got \(2, 2, 3\)"):
        layer(torch.randn(1, 4))


def test_pruned_layers_still_read_their_masked_weight() -> None:
    layer = tw.BlockLinear(4, 6, groups=2).double()
    torch.nn.utils.prune.random_unstructured(layer, "weight", amount=0.5)
    x = torch.randn(3, 4, dtype=torch.float64)
    dense = tw.BlockLinear(4, 6, groups=2).double()
    with torch.no_grad():
        dense.weight.copy_(layer.weight)
        dense.bias.copy_(layer.bias)
    torch.testing.assert_close(layer(x), dense(x))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(6,), (1, 6), (3, 6), (2, 1, 6)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_csr_inference_matches_the_dense_reference(
    bias: bool, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    layer = tw.SparseLinear(tw.Wiring.random(6, 5, nnz=13, seed=3), bias=bias, backend="csr")
    layer = layer.to(dtype)
    x = torch.randn(shape, dtype=dtype)
    with torch.no_grad():
        y = layer(x)
    expected = _sparse_reference(layer.double(), x.double().reshape(-1, 6))
    assert y.shape == (*shape[:-1], 5)
    assert y.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 2e-2
    torch.testing.assert_close(y.double().reshape(-1, 5), expected, rtol=tol, atol=tol)


def _traced_matches(layer: nn.Module, x: torch.Tensor) -> None:
    traced = torch.fx.symbolic_trace(nn.Sequential(layer))
    torch.testing.assert_close(traced(x), layer(x))


@pytest.mark.parametrize("backend", ["dense", "csr", "auto"])
@pytest.mark.parametrize("grad", [False, True])
def test_kept_calls_survive_pickle_deepcopy_and_fx(backend: str, grad: bool) -> None:
    torch.manual_seed(0)
    layer = tw.SparseLinear(tw.Wiring.random(8, 6, density=0.5, seed=0), backend=backend)
    x = torch.randn(3, 8, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        expected = layer(x).detach()  # bound calls are kept from here on
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(layer)
    with torch.no_grad():
        for other in (loaded, copied, pickle.loads(pickle.dumps(layer))):
            torch.testing.assert_close(other(x), expected)
        copied.weight.mul_(2.0)  # a copy keeps its own scratch: the original is unchanged
        copied(x)
        torch.testing.assert_close(layer(x), expected)
    _traced_matches(layer, x.detach())


@pytest.mark.parametrize(
    "make",
    [
        lambda: tw.BlockLinear(4, 6, groups=2),
        lambda: tw.SparseLinear(tw.Wiring.random(4, 6, density=0.5, seed=0), backend="dense"),
    ],
    ids=["block", "sparse"],
)
def test_a_first_call_in_inference_mode_does_not_break_training(make: Any) -> None:
    layer = make()
    x = torch.randn(2, 4)
    with torch.inference_mode():
        layer(x)  # what is derived once is derived here
    layer(x.requires_grad_()).sum().backward()
    assert layer.weight.grad is not None


def test_a_newly_registered_backend_is_used_by_calls_made_before() -> None:
    layer = tw.BlockLinear(4, 6, groups=2)
    x = torch.randn(2, 4)
    with torch.no_grad():
        layer(x)
        old = tw.backends.select("block_linear", None, "dense")
        calls = []

        def counted(*args: Any, **kwargs: Any) -> torch.Tensor:
            calls.append(1)
            return old.fn(*args, **kwargs)

        try:
            tw.backends.register(dataclasses.replace(old, fn=counted, bind=None))
            layer(x)
        finally:
            tw.backends.register(old)
    assert calls == [1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: tw.SparseLinear(tw.Wiring.random(64, 64, density=0.5, seed=0)),
        lambda: tw.SparseLinear(tw.Wiring.random(256, 256, density=0.01, seed=0)),
        lambda: tw.BlockLinear(64, 64, groups=4),
        lambda: tw.MultiLinear([32, 32], 64),
    ],
    ids=["sparse_half", "sparse_1pct", "block", "multi"],
)
def test_a_dynamic_shape_graph_serves_every_batch_size(make: Any) -> None:
    """With dynamic shapes, a compiled layer traces again only where dynamo specialises
    (batch 1) or its backend choice changes, not for every batch size: what it remembers of
    eager calls is not guarded on."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    layer = make()
    compiled = torch.compile(layer, fullgraph=True, dynamic=True)
    sizes = [1, 3, 8, 64, 300, 1024]
    with torch.no_grad():
        for rows in sizes:
            widths = layer.in_features if isinstance(layer, tw.MultiLinear) else [layer.in_features]
            inputs = [torch.randn(rows, n) for n in widths]
            torch.testing.assert_close(compiled(*inputs), layer(*inputs), rtol=1e-5, atol=1e-5)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 3


def _dense_layer(seed: int) -> tw.SparseLinear:
    """A dense-backend layer with enough connections for compiled graphs to read kept
    positions (float64)."""
    nnz = sparse_dense._INDEX_COPY_FROM + 100
    wiring = tw.Wiring.random(128, 96, nnz=nnz, seed=seed)
    return tw.SparseLinear(wiring, backend="dense").double()


def test_a_compiled_dense_layer_reads_kept_positions_that_follow_its_buffers() -> None:
    """Many connections: the compiled graph looks the positions up where eager calls keep
    them (not deriving them on every call), and sees the buffers written in place."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    a, b = _dense_layer(1), _dense_layer(2)
    compiled = torch.compile(a, fullgraph=True)
    for source in (a, b):  # a's connections, then b's, loaded into a's buffers in place
        x = torch.randn(5, 128, dtype=torch.float64, requires_grad=True)
        y = compiled(x)
        assert hasattr(a.indices.untyped_storage(), sparse_dense._KEPT)  # the graph's ops
        torch.testing.assert_close(y, _sparse_reference(source, x))
        grad = torch.randn_like(y)
        y.backward(grad)
        index = source._index()
        dense = sparse_dense.dense_weight(source.weight.detach(), index)
        torch.testing.assert_close(x.grad, grad @ dense)
        expected = (grad.t() @ x.detach()).flatten()[sparse_dense.positions(index)]
        torch.testing.assert_close(a.weight.grad, expected)
        a.zero_grad()
        a.load_state_dict(b.state_dict())


@pytest.mark.parametrize("kept", [False, True])
def test_the_kept_position_ops_are_differentiable_and_key_what_they_read(kept: bool) -> None:
    """The ops' gradients to second order; and positions kept for index tensors are not read
    for other sizes, or for other views of the same memory (same start and length)."""
    wiring = tw.Wiring.random(7, 5, nnz=20, seed=3)
    index = tw.backends.sparse_index(wiring, torch.device("cpu"))
    indptr, indices = index.indptr.clone(), index.indices.long()
    values = torch.randn(20, dtype=torch.float64, requires_grad=True)
    dense = torch.randn(5, 7, dtype=torch.float64, requires_grad=True)
    ops = torch.ops.torchwire
    for op, first in ((ops.dense_weight, values), (ops.connection_values, dense)):
        torch.library.opcheck(op, (first, indptr, indices, 7, kept))
        assert torch.autograd.gradgradcheck(lambda t, op=op: op(t, indptr, indices, 7, kept), first)
    one_each = torch.arange(21)  # one connection per output: any columns are a wiring
    columns = torch.randint(0, 7, (20,))
    pairs = torch.stack([columns, (columns + 3) % 7], 1).reshape(-1)  # strided views
    as_int32 = torch.zeros(40, dtype=torch.int64)
    as_int32[:20] = columns
    for cols, width in (
        (columns, 7),
        (columns, 9),  # other sizes
        (pairs[0::2], 7),
        (pairs[:20], 7),  # the same start and length, every element
        (as_int32[:20], 7),
        (as_int32.view(torch.int32)[:20], 7),  # the same memory, as int32
    ):
        expected = torch.zeros(20, width, dtype=torch.float64)
        expected[torch.arange(20), cols.long()] = values.detach()
        got = ops.dense_weight(values, one_each, cols, width, kept)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(
            ops.connection_values(expected, one_each, cols, width, kept), values.detach()
        )


def test_a_compiled_graph_that_views_its_index_derives_the_positions() -> None:
    """Views a compiled graph makes count their own versions, which in-place writes of the
    tensor they view do not move: the functional call derives its positions in the graph."""
    torch._dynamo.reset()
    nnz = sparse_dense._INDEX_COPY_FROM + 100
    a, b = (tw.Wiring.random(128, 96, nnz=nnz, seed=s) for s in (1, 2))
    packed = torch.cat([tw.backends.sparse_index(a).indptr, tw.backends.sparse_index(a).indices])
    values = torch.randn(nnz, dtype=torch.float64)
    x = torch.randn(4, 128, dtype=torch.float64)

    def call(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        index = tw.backends.SparseIndex(packed[:97], packed[97:], 128, 96, None)
        return tw.functional.sparse_linear(x, values, index, backend="dense")

    compiled = torch.compile(call, fullgraph=True)
    for wiring in (a, b):
        index = tw.backends.sparse_index(wiring)
        packed.copy_(torch.cat([index.indptr, index.indices]))
        expected = tw.functional.sparse_linear(x, values, wiring, backend="dense")
        torch.testing.assert_close(compiled(x, packed), expected)


def test_positions_first_derived_under_torch_func_or_fake_tensors_are_not_kept() -> None:
    """What a torch.func transform or a FakeTensorMode builds is not kept for later calls
    (it is wrapped for a transform that ends, or fake)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    torch._dynamo.reset()
    layer = _dense_layer(4)
    x = torch.randn(3, 128, dtype=torch.float64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    torch.func.grad(lambda p: functional_call(layer, p, (x,)).square().sum())(params)
    with FakeTensorMode(allow_non_fake_inputs=True):
        layer(torch.empty(3, 128, dtype=torch.float64))
    expected = _sparse_reference(layer, x)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)
        torch.testing.assert_close(torch.compile(layer, fullgraph=True)(x), expected)
    torch.testing.assert_close(layer(x.requires_grad_()), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tw.BlockLinear([2, 2], [3, 3]),
        lambda: tw.SparseLinear(tw.Wiring.random(4, 6, nnz=12)),
    ],
    ids=["block", "sparse"],
)
def test_a_call_on_fake_tensors_outside_their_mode_leaves_nothing_kept(make: Any) -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    layer = make()
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake = {
        k: mode.from_tensor(v)
        for k, v in {**dict(layer.named_parameters()), **dict(layer.named_buffers())}.items()
    }
    x = torch.randn(3, 4)
    with torch.no_grad():
        functional_call(layer, fake, (mode.from_tensor(x),))  # FakeTensors, mode not entered
        y = layer(x)
    assert type(y) is torch.Tensor
    torch.testing.assert_close(y, torch.nn.functional.linear(x, _dense_of(layer), layer.bias))


def _dense_of(layer: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return layer(torch.eye(layer.in_features)).sub(layer.bias).t()  # type: ignore[arg-type]


def test_a_layer_built_in_inference_mode_runs_eagerly() -> None:
    """Inference tensors have no version counters to follow: the index is built afresh."""
    with torch.inference_mode():
        layer = _dense_layer(8)
    x = torch.randn(3, 128, dtype=torch.float64)
    expected = _sparse_reference(layer, x)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), expected)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)


def test_kept_positions_leave_swapping_loads_and_inference_tensors_working() -> None:
    torch._dynamo.reset()
    a, b = _dense_layer(5), _dense_layer(6)
    x = torch.randn(3, 128, dtype=torch.float64)
    torch.compile(a, fullgraph=True)(x)
    swapping = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:  # torch.utils.swap_tensors refuses tensors with weak references
        a.load_state_dict(b.state_dict())
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swapping)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(a, fullgraph=True)(x), _sparse_reference(b, x))
    with torch.inference_mode():  # buffers without version counters
        frozen = _dense_layer(7)
        torch.testing.assert_close(
            torch.compile(frozen, fullgraph=True)(x), _sparse_reference(frozen, x)
        )


def test_under_torch_func_index_tensors_are_kept_plain() -> None:
    """torch.func transforms do not stop what is derived from a structure from being kept:
    it is built with the transforms off, as plain tensors."""
    layer = tw.BlockLinear(16, 16, groups=4, backend="dense")
    x = torch.randn(5, 3, 16)
    params = dict(layer.named_parameters())
    tw.backends._DEVICE_CACHE.clear()
    out = torch.func.vmap(lambda xi: functional_call(layer, params, (xi,)))(x)
    kept = [v for k, v in tw.backends._DEVICE_CACHE.items() if k[0] == "dense_positions"]
    assert len(kept) == 1
    assert not torch._C._functorch.is_functorch_wrapped_tensor(kept[0])
    torch.testing.assert_close(out, layer(x))


_TRACED = {
    "block": lambda: tw.BlockLinear(32, 16, groups=2),
    "block_uneven": lambda: tw.BlockLinear([16, 16], [4, 12]),
    "sparse_dense": lambda: tw.SparseLinear(tw.Wiring.random(32, 16, density=0.5), backend="dense"),
    "sparse_csr": lambda: tw.SparseLinear(tw.Wiring.random(32, 16, density=0.1), backend="csr"),
    "multi": lambda: tw.MultiLinear([16, 16], 16),
}


@pytest.mark.parametrize("mode", ["fake", "symbolic"])
@pytest.mark.parametrize("name", list(_TRACED))
def test_make_fx_traces_a_layer_after_eager_calls(name: str, mode: str) -> None:
    """make_fx (FakeTensors, symbolic sizes too) traces a layer as it traces nn.Linear
    (through functional_call), after eager calls have kept what they derive; nothing it
    builds is kept."""
    from torch.fx.experimental.proxy_tensor import make_fx

    layer = _TRACED[name]()
    widths = layer.in_features if isinstance(layer, tw.MultiLinear) else [layer.in_features]
    state = {**dict(layer.named_parameters()), **dict(layer.named_buffers())}
    inputs = [torch.randn(4, w) for w in widths]
    with torch.no_grad():
        layer(*inputs)  # kept: plans, bound calls, index tensors

        def call(state: dict[str, torch.Tensor], *xs: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = functional_call(layer, state, xs)
            return out

        graph = make_fx(call, tracing_mode=mode)(state, *inputs)
        other = [torch.randn(4, w) for w in widths]
        torch.testing.assert_close(graph(state, *other), layer(*other))
        assert type(layer(*other)) is torch.Tensor
