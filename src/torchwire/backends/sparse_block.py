"""Block sparse-linear backend: a block-diagonal wiring computed by the block-linear kernels.

A wiring whose connections form consecutive dense blocks (``Wiring.block_sizes``) is a
:class:`torchwire.BlockLinear` in disguise, and its canonical weight order is exactly
BlockLinear's flat block order, so the weight passes through unchanged. The block backend
itself is chosen by :func:`torchwire.backends.select` for ``"block_linear"``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from torchwire.backends import (
    Backend,
    BlockProblem,
    SparseIndex,
    SparseProblem,
    plan,
    register,
)


def _block_plan(problem: SparseProblem) -> tuple[Backend, BlockProblem]:
    """The block-linear backend and problem of a block-diagonal sparse problem."""
    if problem.blocks is None:
        raise ValueError(f"backend 'block' needs a block-diagonal wiring: {_supports(problem)}")
    key = (
        problem.blocks,
        problem.rows,
        problem.dtype,
        problem.device_type,
        problem.requires_grad,
        problem.functorch,
        problem.compiling,
    )
    return plan("block_linear", "auto", key, BlockProblem)


def sparse_linear_block(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    index: SparseIndex,
    problem: SparseProblem,
) -> torch.Tensor:
    chosen, block_problem = _block_plan(problem)
    return chosen.fn(input, weight, bias, block_problem)


def _bind(
    problem: SparseProblem, index: SparseIndex, like: torch.Tensor
) -> Callable[..., torch.Tensor]:
    chosen, block_problem = _block_plan(problem)
    return chosen.bound(block_problem, problem.blocks, like)


def _supports(problem: SparseProblem) -> str | None:
    if problem.blocks is None:
        return "the wiring is not block diagonal (Wiring.block_sizes is None)"
    return None


def _cost(problem: SparseProblem) -> float:
    chosen, block_problem = _block_plan(problem)
    return chosen.cost(block_problem)


# In an ONNX graph the block plan is of block_linear's ONNX forms (select chooses them), at
# their onnxruntime costs.
register(
    Backend(
        "block",
        "sparse_linear",
        sparse_linear_block,
        _supports,
        _cost,
        _bind,
        onnx=sparse_linear_block,
    )
)
