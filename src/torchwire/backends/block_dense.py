"""Dense block-linear backend: scatter the blocks into a dense weight, then one GEMM.

The obviously-correct reference, and the fastest choice when the dense product is tiny
(for example 2 groups of 2 inputs) or, on a GPU, when kernel launches cost more than the
extra multiply-adds: assembling the weight is one scatter, whatever the number of groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchwire.backends import (
    LAUNCH_CUDA,
    Backend,
    BlockLayout,
    BlockProblem,
    cached_for_device,
    register,
)

# Cost units: one multiply-add of a large GEMM = 1 (see block_bmm for the whole model).
# CPU: a call costs about 20k multiply-adds. CUDA: see LAUNCH_CUDA.
_CALL_CPU = 20_000.0


def dense_weight(weight: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """The ``(out_features, in_features)`` block-diagonal matrix of a block weight."""
    values = weight.expand(layout.groups, -1, -1) if layout.shared else weight
    flat = weight.new_zeros(layout.out_features * layout.in_features)
    flat = flat.index_put((_positions(layout, weight.device),), values.reshape(-1))
    return flat.view(layout.out_features, layout.in_features)


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


def block_linear_dense(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, problem: BlockProblem
) -> torch.Tensor:
    return F.linear(input, dense_weight(weight, problem.layout), bias)


def _supports(problem: BlockProblem) -> str | None:
    return None


def _cost(problem: BlockProblem) -> float:
    layout = problem.layout
    dense = layout.in_features * layout.out_features
    passes = 3 if problem.requires_grad else 1  # forward GEMM; grad-input and grad-weight GEMMs
    if problem.device_type == "cpu":
        # The GEMMs, plus assembling (and, in backward, reading) the dense weight.
        return passes * (problem.rows * dense + _CALL_CPU) + 2 * dense
    return passes * (problem.rows * dense + LAUNCH_CUDA) + 2 * LAUNCH_CUDA


register(Backend("dense", "block_linear", block_linear_dense, _supports, _cost))
