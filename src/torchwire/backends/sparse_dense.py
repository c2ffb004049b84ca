"""Dense sparse-linear backend: scatter the connections' values into a dense weight, then one
GEMM.

The obviously-correct reference, and the fastest choice at high density, where a GEMM's
efficiency outweighs the multiply-adds spent on absent connections. The dense weight is a
temporary of each call; the layer never keeps it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchwire.backends import (
    LAUNCH_CUDA,
    Backend,
    SparseIndex,
    SparseProblem,
    built_to_keep,
    keeping,
    register,
    weighted,
)
from torchwire.backends.block_dense import (
    _INDEX_COPY_FROM,
    linear_through,
    linear_written,
    put_values,
    scatter,
    scratch,
    transposed,
)

# Cost model, in units of one multiply-add of a large GEMM (shared by every backend). CPU: a
# weighted sum of the counts of cost_features, one set of weights for inference and one for
# training. Besides the GEMMs, each element of the dense weight costs a little (zero fill;
# the GEMMs stream it, which small batches cannot hide), and each connection a lot more (its
# int64 position, the scatter, and in backward the gather of its gradient), more again once
# those position arrays leave the cache. Fitted by benchmarks/sparse_costs.py, with csr's
# weights, on the recorded run benchmarks/results/cpu-intel-xeon-float32-sparse-costs.json.
FEATURES = ("gemm", "element", "connection", "connection_far", "call")
_CPU = {False: (0.92, 38.8, 79.6, 0.0, 1.51e06), True: (2.56, 87.7, 39.3, 70.9, 1.02e07)}
_CACHED_CONNECTIONS = 2**18


def cost_features(problem: SparseProblem) -> tuple[float, ...]:
    """The counts of ``problem`` the CPU cost model weighs, in the order of
    :data:`FEATURES`: the multiply-adds of one GEMM pass, the dense weight's elements, the
    connections, the connections again where their positions leave the cache, 1 per call."""
    nnz = problem.nnz
    far = nnz if nnz > _CACHED_CONNECTIONS else 0
    return (
        problem.rows * problem.in_features * problem.out_features,
        problem.in_features * problem.out_features,
        nnz,
        far,
        1,
    )


def dense_weight(weight: torch.Tensor, index: SparseIndex) -> torch.Tensor:
    """The ``(out_features, in_features)`` matrix with ``weight`` at the connections and
    zeros elsewhere (differentiable with respect to ``weight``)."""
    return put_values((index.out_features, index.in_features), positions(index), weight)


def positions(index: SparseIndex, device: object = None) -> torch.Tensor:
    """Row-major int64 positions of the connections in the dense ``(out, in)`` matrix, in
    canonical order, on the index's device (``device`` is ignored: the signature
    :func:`~torchwire.backends.block_dense.scratch` calls). Built once per pair of index
    tensors, unchanged in place (as their version counters tell), and kept with them (8
    bytes a connection while the dense backend runs; eager calls and compiled graphs share
    them), or on every call for an index without a cache (as in a traced graph)."""
    if index.cache is None:
        return _positions(index)
    found: torch.Tensor = index.derived("dense_positions", _kept)
    return found


def _positions_in(index: SparseIndex, transpose: bool) -> torch.Tensor:
    """:func:`positions`, or (``transpose``) the same connections' positions in the dense
    matrix's transpose, kept with the index."""
    if not transpose:
        return positions(index)
    found: torch.Tensor = index.derived(
        "dense_positions_t", lambda i: transposed(positions(i), i.in_features, i.out_features)
    )
    return found


def _positions(index: SparseIndex) -> torch.Tensor:
    return connection_outputs(index) * index.in_features + index.indices


def connection_outputs(index: SparseIndex) -> torch.Tensor:
    """The output of every connection (int64, canonical order), from the index's tensors."""
    # Each connection's output is the number of outputs (after the first) starting at or
    # before it: a mark at each start, summed. Cheaper than repeat_interleave, above all in a
    # traced graph, which derives this on every call (measured 1.16x the eager layer's
    # time against 2.9x, forward+backward, 1024 x 1024 at 50%, batch 64); and it exports
    # to ONNX (repeat_interleave's output_size does not; ONNX's scatters index by int64).
    nnz = index.nnz
    starts = index.indptr[1:-1].to(torch.int64)
    marks = torch.zeros(nnz + 1, dtype=torch.int64, device=starts.device)
    marks.index_add_(0, starts, torch.ones_like(starts))
    return marks.cumsum(0)[:nnz]


# A graph torch.compile traces cannot keep what it derives from the index buffers: it
# would find the positions again on every call (an index_add, a cumsum and a fused scatter
# slower than index_copy_: measured 1.14x the eager training step, 1024 x 1024 at half
# density, batch 64, against 1.03x-1.05x with kept positions). From _INDEX_COPY_FROM
# connections a compiled graph instead calls two ops, opaque to it, that look the positions
# up at run time where eager calls keep them: on the storage of the ``indices`` tensor (an
# attribute of its Python object, which lives and dies with the memory and is neither
# pickled nor copied; no reference to the tensors themselves, which would stop
# ``torch.utils.swap_tensors``), for the same ``indptr`` memory and ``in_features``, both
# unchanged in place (their version counters: what autograd sees; a write that bypasses them,
# through ``.data`` or ``torch.distributed.broadcast``, is not seen, by eager calls either).
# Below that, the traced form fuses into one or two kernels and costs less than an op's
# dispatch.
_KEPT = "_torchwire_dense_positions"


def _kept(index: SparseIndex) -> torch.Tensor:
    indptr, indices = index.indptr, index.indices
    if indptr.is_inference() or indices.is_inference() or not keeping(indptr, indices):
        return _positions(index)  # no version counters, or nothing may be kept
    source = (
        *(_where(t) for t in (indptr, indices)),
        indptr._version,
        indices._version,
        index.in_features,
    )
    store, of_indptr = indices.untyped_storage(), indptr.untyped_storage()
    kept = getattr(store, _KEPT, None)
    if kept is not None and kept[0] is of_indptr and kept[1] == source:
        return kept[2]  # type: ignore[no-any-return]
    found = built_to_keep(lambda: _positions(index), indptr, indices)
    if found is None:
        return _positions(index)
    setattr(store, _KEPT, (of_indptr, source, found))
    return found


def _where(t: torch.Tensor) -> tuple[Any, ...]:
    """Which elements of its memory ``t`` reads, and as what."""
    return (t.data_ptr(), t.dtype, t.shape, t.stride())


def _op_positions(
    indptr: torch.Tensor, indices: torch.Tensor, in_features: int, kept: bool = False
) -> torch.Tensor:
    index = SparseIndex(indptr, indices, in_features, indptr.shape[0] - 1, None)
    return _kept(index) if kept else _positions(index)


def _dense_weight_op(
    values: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    in_features: int,
    kept: bool = False,
) -> torch.Tensor:
    shape = (indptr.shape[0] - 1, in_features)
    return put_values(shape, _op_positions(indptr, indices, in_features, kept), values)


def _connection_values_op(
    dense: torch.Tensor,
    indptr: torch.Tensor,
    indices: torch.Tensor,
    in_features: int,
    kept: bool = False,
) -> torch.Tensor:
    positions = _op_positions(indptr, indices, in_features, kept)
    return dense.reshape(-1).index_select(0, positions)


_LIBRARY = torch.library.Library("torchwire", "FRAGMENT")
# ``kept``: the index tensors are a module's buffers (SparseIndex.owned), whose positions
# may be kept with them; else (views a graph makes have version counters of their own, which
# in-place writes of the tensor they view do not move) they are derived on every call.
_ARGS = "Tensor indptr, Tensor indices, SymInt in_features, bool kept=False"
_LIBRARY.define(f"dense_weight(Tensor values, {_ARGS}) -> Tensor")
_LIBRARY.define(f"connection_values(Tensor dense, {_ARGS}) -> Tensor")
_LIBRARY.impl("dense_weight", _dense_weight_op, "CompositeExplicitAutograd")
_LIBRARY.impl("connection_values", _connection_values_op, "CompositeExplicitAutograd")


def _dense_weight_fake(values: torch.Tensor, indptr: torch.Tensor, *rest: Any) -> torch.Tensor:
    in_features = rest[1]  # (indices, in_features, kept)
    return values.new_empty(indptr.shape[0] - 1, in_features)


def _connection_values_fake(dense: torch.Tensor, indptr: torch.Tensor, *rest: Any) -> torch.Tensor:
    indices = rest[0]
    return dense.new_empty(indices.shape[0])


torch.library.register_fake("torchwire::dense_weight", _dense_weight_fake, lib=_LIBRARY)
torch.library.register_fake("torchwire::connection_values", _connection_values_fake, lib=_LIBRARY)


def _save_index(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    _, indptr, indices, in_features, kept = inputs
    ctx.save_for_backward(indptr, indices)
    ctx.args = (in_features, kept)


def _dense_weight_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    indptr, indices = ctx.saved_tensors
    values = torch.ops.torchwire.connection_values(grad, indptr, indices, *ctx.args)
    return values, None, None, None, None


def _connection_values_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    indptr, indices = ctx.saved_tensors
    dense = torch.ops.torchwire.dense_weight(grad, indptr, indices, *ctx.args)
    return dense, None, None, None, None


torch.library.register_autograd(
    "torchwire::dense_weight", _dense_weight_backward, setup_context=_save_index, lib=_LIBRARY
)
torch.library.register_autograd(
    "torchwire::connection_values",
    _connection_values_backward,
    setup_context=_save_index,
    lib=_LIBRARY,
)


def sparse_linear_dense(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: SparseIndex,
    problem: SparseProblem,
) -> torch.Tensor:
    if problem.compiling and _kept_in_graph(problem, index):
        dense = torch.ops.torchwire.dense_weight(
            weight, index.indptr, index.indices, index.in_features, True
        )
        return F.linear(input, dense, bias)
    return F.linear(input, dense_weight(weight, index), bias)


def _kept_in_graph(problem: SparseProblem, index: SparseIndex) -> bool:
    """Whether a traced graph calls the ops that read kept positions: for a module's buffers
    (:attr:`SparseIndex.owned`) of ``_INDEX_COPY_FROM`` connections or more, under
    torch.compile on the CPU. Not under torch.export (an exported program keeps to ATen's
    ops) or torch.func, and not on CUDA: a CUDA graph replays the ops without running their
    Python, so it would not see the buffers written in place (there the graph derives the
    positions, on the device, with no host work)."""
    return (
        index.owned
        and problem.nnz >= _INDEX_COPY_FROM
        and problem.device_type == "cpu"
        and not problem.functorch
        and torch.compiler.is_dynamo_compiling()
        and not torch.compiler.is_exporting()
    )


def sparse_linear_dense_onnx(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: SparseIndex,
    problem: SparseProblem,
) -> torch.Tensor:
    """The ONNX form: the dense weight scattered from the values at positions computed from
    the index buffers, then one Gemm. All of the weight's graph reads initializers only, so
    onnxruntime computes it once, when it loads the model: a call is one Gemm."""
    dense = weight.new_zeros((index.out_features, index.in_features))
    return F.linear(input, scatter(dense, _positions(index), weight), bias)


def _bind(
    problem: SparseProblem, index: SparseIndex, like: torch.Tensor
) -> Callable[..., torch.Tensor] | None:
    """Without autograd, a small dense weight is written into a zero matrix the index keeps:
    one ``put_`` (or ``index_copy_``) and one GEMM a call (see
    :func:`~torchwire.backends.block_dense.scratch`). With autograd, into a fresh one
    (:func:`~torchwire.backends.block_dense.linear_written`), at the kept positions."""
    cache = index.cache
    if cache is None:
        return None
    if problem.requires_grad:
        if problem.functorch or not keeping(like):
            return None
        shape = (index.out_features, index.in_features)
        return linear_written(shape, functools.partial(_positions_in, index))
    found = scratch(cache, "scratch", index, like, positions)
    return None if found is None else linear_through(*found)


def _supports(problem: SparseProblem) -> str | None:
    return None


def _cost(problem: SparseProblem) -> float:
    if problem.device_type != "cpu":
        passes = 3 if problem.requires_grad else 1  # forward; grad-input and grad-weight GEMMs
        gemms = passes * problem.rows * problem.in_features * problem.out_features
        return gemms + passes * 2 * LAUNCH_CUDA
    weights = _CPU[problem.requires_grad]
    return weighted(weights, cost_features(problem))


# onnxruntime (one thread, MLAS), in units of one multiply-add of its large GEMM: the
# weight is folded into a dense matrix when the model loads, so a call is one Gemm, which
# also streams the whole matrix (about as much as 10 rows of multiply-adds). Fitted with
# sparse_csr's ONNX model (see there).
_ONNX_PER_ELEMENT = 10.0


def _onnx_cost(problem: SparseProblem) -> float:
    return (problem.rows + _ONNX_PER_ELEMENT) * problem.in_features * problem.out_features


register(
    Backend(
        "dense",
        "sparse_linear",
        sparse_linear_dense,
        _supports,
        _cost,
        _bind,
        onnx=sparse_linear_dense_onnx,
        onnx_cost=_onnx_cost,
    )
)
