"""Dense block-linear backend: scatter the blocks into a dense weight, then one GEMM.

The obviously-correct reference, and the fastest choice when the dense product is tiny
(for example 2 groups of 2 inputs) or, on a GPU, when kernel launches cost more than the
extra multiply-adds: assembling the weight is one scatter, whatever the number of groups.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchwire.backends import (
    LAUNCH_CUDA,
    Backend,
    BlockLayout,
    BlockProblem,
    cached_for_device,
    keeping,
    register,
    weighted,
)


def dense_weight(
    weight: torch.Tensor, layout: BlockLayout, put: Callable[..., torch.Tensor] | None = None
) -> torch.Tensor:
    """The ``(out_features, in_features)`` block-diagonal matrix of a block weight, written
    by :func:`put_values` (or ``put(zeros, positions, values)``: :func:`scatter` in ONNX
    graphs)."""
    values = weight.expand(layout.groups, -1, -1) if layout.shared else weight
    shape = (layout.out_features, layout.in_features)
    positions = _positions(layout, weight.device)
    if put is not None:
        return put(weight.new_zeros(shape), positions, values)
    return put_values(shape, positions, values)


# Values from which index_copy_ (backward: index_select) beats put_ (backward: take): below,
# put_'s lighter call wins (12 us less a training step at 4 -> 6 features); at 1024 x 1024
# with half the connections, index_copy_ took a training step 15% less time (interleaved,
# 101 rounds, 2-core AVX-512 CPU); they tie at about 128 x 128, half connected.
_INDEX_COPY_FROM = 8192


def put_values(
    shape: tuple[int, int], positions: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """A fresh zero matrix of ``shape`` with ``values`` at its flat ``positions``, by the
    cheapest scatter: ``put_`` for few values, ``index_copy_`` into the flat matrix for many
    (in place on a fresh tensor, not a view: no copy in backward); out of place under
    torch.func transforms (a batched value cannot go into an unbatched tensor in place)."""
    if torch._C._are_functorch_transforms_active():
        return torch.put(values.new_zeros(shape), positions, values)
    if values.numel() < _INDEX_COPY_FROM:
        return values.new_zeros(shape).put_(positions, values)
    flat = values.new_zeros(shape[0] * shape[1])
    return flat.index_copy_(0, positions, values.reshape(-1)).view(shape)


def scatter(dense: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``dense`` with ``values`` at its flat ``positions``, out of place, by ``scatter``: what
    ONNX graphs write a dense weight with (ScatterElements; ``put`` has no ONNX translation).
    Where the values and positions are initializers, onnxruntime computes it once, when it
    loads the model."""
    flat = dense.reshape(-1).scatter(0, positions.reshape(-1), values.reshape(-1))
    return flat.view(dense.shape)


def _positions(layout: BlockLayout, device: torch.device) -> torch.Tensor:
    """Row-major positions in the dense matrix of every block entry, in weight order.

    Static-shape arange arithmetic per run of equal groups, so torch.compile traces it too.
    """

    def build() -> torch.Tensor:
        parts, row0, col0 = [], 0, 0
        for count, in_size, out_size in layout.runs:
            k = torch.arange(count * out_size * in_size, device=device)
            group, entry = k // (out_size * in_size), k % (out_size * in_size)
            row = row0 + group * out_size + entry // in_size
            col = col0 + group * in_size + entry % in_size
            parts.append(row * layout.in_features + col)
            row0, col0 = row0 + count * out_size, col0 + count * in_size
        return torch.cat(parts)

    return cached_for_device("dense_positions", layout, device, build)


def _positions_in(layout: BlockLayout, device: torch.device, transpose: bool) -> torch.Tensor:
    """:func:`_positions`, or (``transpose``) the same entries' positions in the dense
    matrix's transpose, kept per layout and device."""
    if not transpose:
        return _positions(layout, device)
    n_in, n_out = layout.in_features, layout.out_features
    return cached_for_device(
        "dense_positions_t",
        layout,
        device,
        lambda: transposed(_positions(layout, device), n_in, n_out),
    )


def block_linear_dense(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, problem: BlockProblem
) -> torch.Tensor:
    return F.linear(input, dense_weight(weight, problem.layout), bias)


def block_linear_dense_onnx(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, problem: BlockProblem
) -> torch.Tensor:
    """The ONNX form: the dense weight scattered (constant-folded by onnxruntime), one Gemm."""
    return F.linear(input, dense_weight(weight, problem.layout, scatter), bias)


def _bind(
    problem: BlockProblem, layout: BlockLayout, like: torch.Tensor
) -> Callable[..., torch.Tensor] | None:
    """Without autograd, a small dense weight is written into a kept zero matrix: one
    ``put_`` (or ``index_copy_``) and one GEMM a call, as many kernels as ``nn.Linear`` (see
    :func:`scratch`). With autograd, into a fresh one (:func:`linear_written`); the
    positions found once. Neither under torch.func transforms."""
    groups = layout.groups
    values = (lambda weight: weight.expand(groups, -1, -1)) if layout.shared else None
    if problem.requires_grad:
        if problem.functorch or not keeping(like):
            return None
        shape = (layout.out_features, layout.in_features)
        return linear_written(shape, functools.partial(_positions_in, layout, like.device), values)
    found = scratch(_SCRATCH, layout, layout, like, _positions)
    return None if found is None else linear_through(*found, values)


def transposed(positions: torch.Tensor, in_features: int, out_features: int) -> torch.Tensor:
    """Flat positions in an ``(out, in)`` matrix, moved to the same entries of its
    ``(in, out)`` transpose."""
    return positions % in_features * out_features + positions // in_features


def linear_through(
    operand: torch.Tensor,
    flat: torch.Tensor,
    positions: torch.Tensor,
    values: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[..., torch.Tensor]:
    """A call computing ``input @ W.T + bias`` through a kept zero matrix (see
    :func:`scratch`): ``operand`` is ``W.T``, ``(in, out)``, and ``flat`` the matrix's
    memory, where the connections sit at ``positions``. ``put_`` (or, for many connections,
    ``index_copy_``: see :func:`put_values`) writes the weight (or ``values(weight)``)
    there, then one ``addmm`` (``mm`` without a bias)."""
    many = positions.numel() >= _INDEX_COPY_FROM

    def run(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        connections = weight if values is None else values(weight)
        if many:
            flat.index_copy_(0, positions, connections.reshape(-1))
        else:
            flat.put_(positions, connections)
        return torch.mm(input, operand) if bias is None else torch.addmm(bias, input, operand)

    return run


def linear_written(
    shape: tuple[int, int],
    positions: Callable[[bool], torch.Tensor],
    values: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[..., torch.Tensor]:
    """A call computing ``input @ W.T + bias`` with autograd, through a fresh dense weight:
    :func:`put_values` writes the weight (or ``values(weight)``) into ``W``, of ``shape``
    ``(out, in)``, at ``positions(False)``, its connections' flat positions. Few connections
    are written into ``W.T`` instead, at ``positions(True)``: the GEMM's operand, so that
    backward reads their gradient from a contiguous matrix and no transpose runs (a training
    step at 4 -> 6 features took 0.88-0.90x the time of one through ``W``); many into ``W``,
    in order (see :func:`scratch`). The positions are the ones the structure keeps: the
    call, memoised per batch size, holds no copy of its own."""
    at = positions(False)
    if at.numel() >= _INDEX_COPY_FROM:

        def run(
            input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
        ) -> torch.Tensor:
            connections = weight if values is None else values(weight)
            return F.linear(input, put_values(shape, at, connections), bias)

        return run
    at_t = positions(True)
    shape_t = (shape[1], shape[0])

    def run_t(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        connections = weight if values is None else values(weight)
        operand = put_values(shape_t, at_t, connections)
        return torch.mm(input, operand) if bias is None else torch.addmm(bias, input, operand)

    return run_t


# Small dense weights built without autograd reuse one zero-filled matrix per structure,
# dtype, device and thread: each call writes only the connections (the rest stays zero), so
# it is two kernels, not three, and one lookup finds the matrix and the positions.
SCRATCH_ELEMENTS = 2**16
_SCRATCH: dict[Any, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def scratch(
    store: dict[Any, Any],
    key: Any,
    structure: Any,
    like: torch.Tensor,
    positions: Callable[[Any, torch.device], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """A zero-filled dense weight of ``like``'s dtype and device for ``structure`` (a
    BlockLayout or SparseIndex), as :func:`linear_through` takes it: the GEMM's operand
    ``W.T`` (``(in_features, out_features)``), the matrix's flat memory, and its
    connections' positions there (from ``positions(structure, device)``, row-major in
    ``W``); kept in ``store`` under ``key`` (and the dtype, device and thread).

    Few connections are written into ``W.T`` itself, so the GEMM reads a contiguous operand
    (2-4 us less a small call than a transposed one); many into ``W``, in order, since
    written into ``W.T`` they land a row apart each (measured 5.7x the time of in-order
    writes at 256 x 256, half connected: a no-grad call at batch 64 took 327 us, not 123).
    Callers write the connections and consume the matrix at once: no autograd graph may keep
    it, and only the calling thread may use it (a backend's ``bind`` runs per thread). None
    for large matrices, while torch.func transforms run, and where nothing may be kept
    (:func:`~torchwire.backends.keeping`: while torch.compile traces, under a FakeTensorMode,
    for a tensor subclass's ``like``)."""
    if (
        structure.out_features * structure.in_features > SCRATCH_ELEMENTS
        or torch._C._are_functorch_transforms_active()
        or not keeping(like)
    ):
        return None
    full_key = (key, like.dtype, like.device, threading.get_ident())
    found = store.get(full_key)
    if found is None:
        if len(store) >= 256:
            store.clear()
        n_in, n_out = structure.in_features, structure.out_features
        with torch.inference_mode(False):  # writable inside and outside inference mode
            at = positions(structure, like.device)
            if at.numel() >= _INDEX_COPY_FROM:
                matrix = like.new_zeros((n_out, n_in))
                found = (matrix.t(), matrix.view(-1), at)
            else:
                matrix = like.new_zeros((n_in, n_out))
                found = (matrix, matrix.view(-1), transposed(at, n_in, n_out))
        store[full_key] = found
    return found


def _supports(problem: BlockProblem) -> str | None:
    return None


# Cost units: one multiply-add of a large GEMM (see block_bmm for the whole model). CPU:
# weights of cost_features, for inference and for training, fitted with the block
# backends' (benchmarks/block_costs.py). CUDA: launches (LAUNCH_CUDA) and multiply-adds.
FEATURES = ("call", "macs", "dense", "weight")
_CPU = {False: (0, 1.27, 43, 194), True: (6.89e6, 3.64, 91.8, 362)}


def cost_features(problem: BlockProblem) -> tuple[float, ...]:
    """The counts of ``problem`` that the CPU cost model weighs, in the order of
    :data:`FEATURES`: 1 per call, the dense GEMMs' multiply-adds, the dense weight's
    elements (zeroed in forward), the block weight's (put there, and read back in backward:
    a scatter costs far more per element than the zeros)."""
    layout = problem.layout
    dense = layout.in_features * layout.out_features
    return (1.0, float(problem.rows * dense), float(dense), float(layout.connections))


def _cost(problem: BlockProblem) -> float:
    if problem.device_type == "cpu":
        weights = _CPU[problem.requires_grad]
        return weighted(weights, cost_features(problem))
    layout = problem.layout
    dense = layout.in_features * layout.out_features
    passes = 3 if problem.requires_grad else 1  # forward GEMM; grad-input and grad-weight GEMMs
    return passes * (problem.rows * dense + LAUNCH_CUDA) + 2 * LAUNCH_CUDA


register(
    Backend(
        "dense",
        "block_linear",
        block_linear_dense,
        _supports,
        _cost,
        _bind,
        onnx=block_linear_dense_onnx,
    )
)
