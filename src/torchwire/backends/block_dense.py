"""Dense block-linear backend: assemble the block-diagonal weight, then one GEMM.

The obviously-correct reference, and the fastest choice when the dense product is tiny
(for example 2 groups of 2 inputs), where one kernel call beats any batching.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchwire.backends import Backend, BlockLayout, BlockProblem, register, run_weights

# Cost units: one multiply-add of a large GEMM = 1 (see block_bmm for the whole model).
# CPU: a call costs about 20k multiply-adds. CUDA: launch-bound at these sizes, a kernel
# launch costs about 1.5e8 multiply-adds and assembling the dense weight (torch.block_diag)
# about half a launch per group. Calibrated from `torchwire bench` (benchmarks/results/).
_CALL_CPU = 20_000.0
_LAUNCH_CUDA = 1.5e8


def dense_weight(weight: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """The ``(out_features, in_features)`` block-diagonal matrix of a block weight."""
    blocks: list[torch.Tensor] = []
    for w, (count, _, _) in zip(run_weights(weight, layout), layout.runs, strict=True):
        blocks.extend(w.expand(count, -1, -1).unbind(0))
    dense: torch.Tensor = torch.block_diag(*blocks)
    return dense


def block_linear_dense(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: BlockLayout
) -> torch.Tensor:
    return F.linear(input, dense_weight(weight, layout), bias)


def _supports(problem: BlockProblem) -> str | None:
    return None


def _cost(problem: BlockProblem) -> float:
    layout = problem.layout
    dense = layout.in_features * layout.out_features
    passes = 3 if problem.requires_grad else 1  # forward GEMM; grad-input and grad-weight GEMMs
    if problem.device_type == "cpu":
        # The GEMMs, plus assembling (and, in backward, reading) the dense weight.
        return passes * (problem.rows * dense + _CALL_CPU) + 2 * dense
    return passes * (problem.rows * dense + _LAUNCH_CUDA) + layout.groups * _LAUNCH_CUDA / 2


register(Backend("dense", "block_linear", block_linear_dense, _supports, _cost))
