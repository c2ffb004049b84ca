"""Pure tensor functions behind torchwire's layers (the modules hold state, these do the math)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchwire import backends
from torchwire.backends import BlockLayout, BlockProblem

__all__ = ["block_linear"]


def block_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    in_sizes: Sequence[int] | None = None,
    out_sizes: Sequence[int] | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Block-diagonal linear map: :math:`y = x \, \mathrm{blockdiag}(W_1, \dots, W_G)^T + b`.

    Group :math:`g` of the input (``in_sizes[g]`` consecutive features) feeds only group
    :math:`g` of the output (``out_sizes[g]`` consecutive features). Only the blocks exist.

    Args:
        input: tensor of shape :math:`(*, H_{in})`.
        weight: the blocks. Equal groups: ``(G, out_g, in_g)``; a leading size of 1 with an
            input of ``G * in_g`` features shares that one block across all ``G`` groups.
            Uneven groups: 1-D, the blocks flattened row-major one after another (group
            order), with ``in_sizes`` and ``out_sizes`` given.
        bias: optional tensor of shape :math:`(H_{out})`.
        in_sizes: input features per group (uneven groups only).
        out_sizes: output features per group (uneven groups only).
        backend: ``"auto"`` (the registry's cheapest for this problem) or a backend name
            from ``torchwire.backends.available("block_linear")``.

    Shape:
        - Input: :math:`(*, H_{in})` with :math:`H_{in} = \sum_g \text{in\_sizes}[g]`.
        - Output: :math:`(*, H_{out})` with :math:`H_{out} = \sum_g \text{out\_sizes}[g]`.

    Examples::

        >>> x = torch.randn(5, 4)
        >>> w = torch.randn(2, 3, 2)            # 2 groups, 2 inputs -> 3 outputs each
        >>> block_linear(x, w).shape
        torch.Size([5, 6])
        >>> w = torch.randn(2 * 3 + 2 * 1)      # uneven: 2 -> 3 and 2 -> 1
        >>> block_linear(x, w, in_sizes=[2, 2], out_sizes=[3, 1]).shape
        torch.Size([5, 4])
    """
    chosen, layout = _block_plan(input, weight, bias, in_sizes, out_sizes, backend)
    y = chosen.fn(input.reshape(-1, layout.in_features), weight, bias, layout)
    return y.reshape(*input.shape[:-1], layout.out_features)


def _block_plan(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_sizes: Sequence[int] | None,
    out_sizes: Sequence[int] | None,
    backend: str,
) -> tuple[backends.Backend, BlockLayout]:
    """Validate a block_linear call and choose its backend (the only place that does)."""
    layout = _layout_of(input, weight, in_sizes, out_sizes)
    _check_input(input, weight, bias, layout)
    problem = BlockProblem(
        layout=layout,
        rows=input.numel() // layout.in_features,
        dtype=input.dtype,
        device_type=input.device.type,
        requires_grad=torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad),
    )
    return backends.select("block_linear", problem, backend), layout


def _layout_of(
    input: torch.Tensor,
    weight: torch.Tensor,
    in_sizes: Sequence[int] | None,
    out_sizes: Sequence[int] | None,
) -> BlockLayout:
    if not isinstance(input, torch.Tensor):
        raise TypeError(
            f"block_linear expected input to be a Tensor, got {type(input).__name__}; "
            "a tuple here usually means a multi-output module (Split, Parallel) feeds it"
        )
    if weight.dim() == 3:
        groups, out_g, in_g = weight.shape
        if in_sizes is not None or out_sizes is not None:
            raise ValueError(
                "block_linear takes in_sizes/out_sizes only with a 1-D (uneven) weight; "
                f"got a 3-D weight of shape {tuple(weight.shape)}, whose shape gives the groups"
            )
        width = input.shape[-1] if input.dim() else 0
        shared = groups == 1 and in_g > 0 and width % in_g == 0 and width > in_g
        if shared:
            groups = width // in_g
        return backends.equal_block_layout(groups, in_g, out_g, shared)
    if weight.dim() != 1 or in_sizes is None or out_sizes is None:
        raise ValueError(
            "block_linear expected a 3-D weight (groups, out, in) for equal groups, or a 1-D "
            f"weight with in_sizes and out_sizes for uneven groups; got weight of shape "
            f"{tuple(weight.shape)}, in_sizes={in_sizes}, out_sizes={out_sizes}"
        )
    layout = backends.block_layout(tuple(in_sizes), tuple(out_sizes))
    if weight.numel() != layout.connections:
        raise ValueError(
            f"block_linear expected a 1-D weight of {layout.connections} elements "
            f"(sum of in_sizes[g] * out_sizes[g]), got {weight.numel()}"
        )
    return layout


def _check_input(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: BlockLayout
) -> None:
    if input.dim() == 0 or input.shape[-1] != layout.in_features:
        raise ValueError(
            f"expected input of shape (*, {layout.in_features}) (in_features), got "
            f"{tuple(input.shape)}"
        )
    if input.dtype != weight.dtype and not torch.is_autocast_enabled(input.device.type):
        raise TypeError(
            f"expected input of dtype {weight.dtype} (the weight's dtype), got {input.dtype}; "
            f"convert one of them, e.g. input.to({weight.dtype}) or module.to({input.dtype})"
        )
    if bias is not None and bias.shape != (layout.out_features,):
        raise ValueError(
            f"expected bias of shape ({layout.out_features},) (out_features), got "
            f"{tuple(bias.shape)}"
        )
