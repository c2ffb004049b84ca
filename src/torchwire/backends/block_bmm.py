"""Batched-matmul block-linear backends: one ``bmm`` per run of equal-shape groups.

Two memory layouts, registered as two backends because each wins somewhere:

* ``bmm``: works on strided views of the input and gradients (no copies going in); ATen
  hands each block to BLAS with a leading dimension. Best for blocks of 32 and more.
* ``bmm_packed``: packs activations group-major and contiguous first, which lets MKL's
  batched GEMM take all blocks in one call. Costs two extra memory passes; best for small
  blocks (for example 256 groups of 8), where per-block overhead dominates.

Forward and backward are written by hand (three batched products, no transposed copies of
the weight) and are themselves differentiable, so double backward works.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from torchwire.backends import Backend, BlockLayout, BlockProblem, register, run_weights


class _GroupedMatmul(torch.autograd.Function):
    """``y[:, g] = x[:, g] @ W[g]^T + b[g]`` for ``x`` ``(M, G * i)`` and ``W`` ``(G, o, i)``."""

    @staticmethod
    def forward(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, packed: bool
    ) -> torch.Tensor:
        rows = x.shape[0]
        groups, out_size, in_size = weight.shape
        xg = _group_major(x, groups, in_size, packed)
        wt = weight.transpose(1, 2)
        if bias is None:
            yg = torch.bmm(xg, wt)
        else:
            yg = torch.baddbmm(bias.view(groups, 1, out_size), xg, wt)
        return yg.transpose(0, 1).reshape(rows, groups * out_size)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, weight, bias, packed = inputs
        ctx.save_for_backward(x, weight)
        ctx.packed = packed
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        rows = x.shape[0]
        groups, out_size, in_size = weight.shape
        gg = _group_major(grad, groups, out_size, ctx.packed)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(gg, weight).transpose(0, 1).reshape(rows, groups * in_size)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(gg.transpose(1, 2), _group_major(x, groups, in_size, ctx.packed))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, None


def _group_major(t: torch.Tensor, groups: int, size: int, packed: bool) -> torch.Tensor:
    """``(M, groups * size)`` -> ``(groups, M, size)`` view, packed contiguous if asked."""
    tg = t.reshape(t.shape[0], groups, size).transpose(0, 1)
    return tg.contiguous() if packed else tg


def _block_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    layout: BlockLayout,
    packed: bool,
) -> torch.Tensor:
    if layout.shared:  # one block for every group: a single GEMM over all groups' rows
        ((count, in_size, _out_size),) = layout.runs
        y = F.linear(input.reshape(-1, count, in_size), weight[0]).flatten(1)
        return y if bias is None else y + bias
    weights = run_weights(weight, layout)
    if len(weights) == 1:
        out: torch.Tensor = _GroupedMatmul.apply(input, weights[0], bias, packed)
        return out
    xs = input.split([n * i for n, i, _ in layout.runs], dim=-1)
    bs: list[torch.Tensor | None] = (
        [None] * len(weights)
        if bias is None
        else list(bias.split([n * o for n, _, o in layout.runs]))
    )
    return torch.cat(
        [_GroupedMatmul.apply(x, w, b, packed) for x, w, b in zip(xs, weights, bs, strict=True)],
        dim=-1,
    )


def block_linear_bmm(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: BlockLayout
) -> torch.Tensor:
    return _block_linear(input, weight, bias, layout, packed=False)


def block_linear_bmm_packed(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: BlockLayout
) -> torch.Tensor:
    return _block_linear(input, weight, bias, layout, packed=True)


def _supports(problem: BlockProblem) -> str | None:
    return None


# Cost model, in units of one multiply-add of a large GEMM (see block_dense). A block's
# multiply-adds cost more the smaller its narrowest side (short BLAS loops); every block and
# every kernel call has a fixed overhead; packing moves each activation element once more.
# Calibrated from `torchwire bench` on a 2-core AVX-512 CPU (MKL) and on an H100.
_SMALL = {False: 40.0, True: 24.0}
_PER_BLOCK = {False: 20_000.0, True: 3_000.0}
_PER_CALL = 20_000.0
_PER_COPY = 11.0


def _cost_for(problem: BlockProblem, packed: bool) -> float:
    layout = problem.layout
    passes = 3 if problem.requires_grad else 1
    if layout.shared:
        return passes * (problem.rows * layout.connections + _PER_CALL)
    total = 0.0
    for count, in_size, out_size in layout.runs:
        macs = problem.rows * count * in_size * out_size
        total += passes * (macs * (1 + _SMALL[packed] / min(in_size, out_size)))
        total += passes * (_PER_CALL + count * _PER_BLOCK[packed])
        if packed:
            total += _PER_COPY * problem.rows * count * (in_size + out_size) * (passes - 1 or 1)
    return total


register(Backend("bmm", "block_linear", block_linear_bmm, _supports, lambda p: _cost_for(p, False)))
register(
    Backend(
        "bmm_packed",
        "block_linear",
        block_linear_bmm_packed,
        _supports,
        lambda p: _cost_for(p, True),
    )
)
