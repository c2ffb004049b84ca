"""Slow, obviously-correct float64 oracles that the tests compare torchwire against."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch


def block_weights(
    weight: torch.Tensor, in_sizes: Sequence[int], out_sizes: Sequence[int]
) -> list[torch.Tensor]:
    """The ``(out_g, in_g)`` block of every group, read group by group from a layer's weight."""
    if weight.dim() == 3:  # equal groups; a leading 1 is one block shared by every group
        return [weight[g if weight.shape[0] > 1 else 0] for g in range(len(in_sizes))]
    blocks, start = [], 0
    for i, o in zip(in_sizes, out_sizes, strict=True):
        blocks.append(weight[start : start + i * o].reshape(o, i))
        start += i * o
    assert start == weight.numel()
    return blocks


def block_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_sizes: Sequence[int],
    out_sizes: Sequence[int],
) -> torch.Tensor:
    """``x @ block_diag(blocks).T + bias`` in float64, via ``torch.block_diag``."""
    dense = torch.block_diag(*block_weights(weight.double(), in_sizes, out_sizes))
    y = x.double() @ dense.T
    return y if bias is None else y + bias.double()


def block_linear_loop(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_sizes: Sequence[int],
    out_sizes: Sequence[int],
) -> torch.Tensor:
    """A second, independent oracle: one matmul per group on the input's slices."""
    blocks = block_weights(weight.double(), in_sizes, out_sizes)
    parts = [p @ w.T for p, w in zip(x.double().split(list(in_sizes), -1), blocks, strict=True)]
    y = torch.cat(parts, -1)
    return y if bias is None else y + bias.double()


def sparse_weight(
    weight: torch.Tensor, edges: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """The dense float64 ``(out, in)`` matrix with ``weight[k]`` at ``edges[k] = (input,
    output)`` and zeros elsewhere (differentiable in ``weight``)."""
    inputs, outputs = edges.to(weight.device).long().unbind(1)
    assert len(set(zip(inputs.tolist(), outputs.tolist(), strict=True))) == len(weight)
    dense = torch.zeros(shape, dtype=torch.float64, device=weight.device)
    return dense.index_put((outputs, inputs), weight.double())


def sparse_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    edges: torch.Tensor,
    shape: tuple[int, int],
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``x @ W.T + bias`` in float64 with ``W`` from :func:`sparse_weight` (masked dense)."""
    y = x.double() @ sparse_weight(weight, edges, shape).T
    return y if bias is None else y + bias.double()


def multi_linear(
    inputs: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], bias: torch.Tensor | None
) -> torch.Tensor:
    """``cat(inputs) @ cat(weights, 1).T + bias`` in float64: one dense layer over the
    concatenated inputs."""
    x = torch.cat([t.double() for t in inputs], -1)
    y = x @ torch.cat([w.double() for w in weights], 1).T
    return y if bias is None else y + bias.double()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` in float64 (``nn.Linear``)."""
    y = x.double() @ weight.double().T
    return y if bias is None else y + bias.double()


def merge(outputs: Sequence[torch.Tensor], how: str | None, dim: int) -> Any:
    """What ``Parallel(join=how)`` makes of its branches' outputs, in float64."""
    outputs = [y.double() for y in outputs]
    if how is None:
        return tuple(outputs)
    if how == "cat":
        return torch.cat(outputs, dim)
    stacked = torch.stack(outputs, dim if how == "stack" else 0)
    return {"stack": stacked, "sum": stacked.sum(0), "mean": stacked.mean(0)}[how]


def split(x: torch.Tensor, sizes: Sequence[int], dim: int) -> tuple[torch.Tensor, ...]:
    """Consecutive slices of ``sizes[k]`` along ``dim`` (``narrow``, one part at a time)."""
    parts, start = [], 0
    for size in sizes:
        parts.append(x.narrow(dim, start, size))
        start += size
    assert start == x.shape[dim]
    return tuple(parts)


def conv(x: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """An ``nn.Conv1d/2d/3d`` applied in float64 (a float64 copy of the module)."""
    return copy.deepcopy(module).double()(x.double())


def trained_batchnorm(
    kind: type[torch.nn.Module], channels: int, dtype: torch.dtype = torch.float64
) -> torch.nn.Module:
    """A BatchNorm in eval mode holding random running statistics and affine parameters, as a
    trained one does (a fresh one is the identity, which would hide folding mistakes)."""
    bn: Any = kind(channels, dtype=dtype)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn.eval()  # type: ignore[no-any-return]
