"""Dense sparse-linear backend: scatter the connections' values into a dense weight, then one
GEMM.

The obviously-correct reference, and the fastest choice at high density, where a GEMM's
efficiency outweighs the multiply-adds spent on absent connections. The dense weight is a
temporary of each call; the layer never keeps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchwire.backends import LAUNCH_CUDA, Backend, SparseIndex, SparseProblem, register

# Cost model, in units of one multiply-add of a large GEMM (shared by every backend), as
# (forward, forward+backward) pairs. CPU: besides the GEMMs, each element of the dense weight
# costs a little (zero fill; the GEMMs stream it, which small batches cannot hide), and each
# connection a lot more (its int64 position, the scatter, and in backward the gather of its
# gradient), more again once those position arrays leave the cache. Fitted by least squares
# (relative error) to forward and forward+backward times of both sparse backends over
# 256-4096 features, batch 8-1024, density 0.1%-50% on a 2-core AVX-512 CPU (MKL), one
# thread; see benchmarks/results/ for the recorded runs.
_PER_ELEMENT_CPU = (27.0, 58.0)
_PER_CONNECTION_CPU = (175.0, 365.0)
_PER_CONNECTION_OUT_OF_CACHE_CPU = (170.0, 150.0)  # added where nnz > _CACHED_CONNECTIONS
_CACHED_CONNECTIONS = 2**18
_PER_CALL_CPU = (3.3e6, 6.0e6)


def dense_weight(weight: torch.Tensor, index: SparseIndex) -> torch.Tensor:
    """The ``(out_features, in_features)`` matrix with ``weight`` at the connections and
    zeros elsewhere (differentiable with respect to ``weight``)."""
    n_in, n_out = index.in_features, index.out_features
    # Row-major positions (int64, scatter's index type): each output's start, repeated over
    # its connections, plus the input. scatter, not index_put: 2-5x faster on CPU, and its
    # backward is one gather.
    starts = torch.arange(0, n_out * n_in, n_in, device=weight.device)
    positions = starts.repeat_interleave(index.indptr.diff(), output_size=index.nnz)
    positions = positions + index.indices
    return weight.new_zeros(n_out * n_in).scatter(0, positions, weight).view(n_out, n_in)


def sparse_linear_dense(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: SparseIndex,
    problem: SparseProblem,
) -> torch.Tensor:
    return F.linear(input, dense_weight(weight, index), bias)


def _supports(problem: SparseProblem) -> str | None:
    return None


def _cost(problem: SparseProblem) -> float:
    dense = problem.in_features * problem.out_features
    passes = 3 if problem.requires_grad else 1  # forward; grad-input and grad-weight GEMMs
    gemms = passes * problem.rows * dense
    if problem.device_type != "cpu":
        return gemms + passes * 2 * LAUNCH_CUDA
    mode = int(problem.requires_grad)
    per_connection = _PER_CONNECTION_CPU[mode]
    if problem.nnz > _CACHED_CONNECTIONS:
        per_connection += _PER_CONNECTION_OUT_OF_CACHE_CPU[mode]
    return (
        gemms + _PER_ELEMENT_CPU[mode] * dense + per_connection * problem.nnz + _PER_CALL_CPU[mode]
    )


register(Backend("dense", "sparse_linear", sparse_linear_dense, _supports, _cost))
