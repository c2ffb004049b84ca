"""Pure tensor functions behind torchwire's layers (the modules hold state, these do the math)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchwire import _calls
from torchwire.backends import SparseIndex
from torchwire.wiring import Wiring

__all__ = ["block_linear", "multi_linear", "sparse_linear"]


def block_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    in_sizes: Sequence[int] | None = None,
    out_sizes: Sequence[int] | None = None,
    *,
    groups: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Block-diagonal linear map: :math:`y = x \, \mathrm{blockdiag}(W_1, \dots, W_G)^T + b`.

    Group :math:`g` of the input (``in_sizes[g]`` consecutive features) feeds only group
    :math:`g` of the output (``out_sizes[g]`` consecutive features). Only the blocks exist.

    Args:
        input: tensor of shape :math:`(*, H_{in})`.
        weight: the blocks. Equal groups: ``(G, out_g, in_g)``, or ``(1, out_g, in_g)`` with
            ``groups=G`` to share one block across ``G`` groups. Uneven groups: 1-D, the
            blocks flattened row-major one after another (group order), with ``in_sizes``
            and ``out_sizes`` given.
        bias: optional tensor of shape :math:`(H_{out})`.
        in_sizes: input features per group (uneven groups only).
        out_sizes: output features per group (uneven groups only).
        groups: number of groups a ``(1, out_g, in_g)`` weight is shared by. Default: the
            weight's leading size.
        backend: ``"auto"`` (the registry's cheapest for this problem) or a backend name
            from ``torchwire.backends.available("block_linear")``.

    Shape:
        - Input: :math:`(*, H_{in})` with :math:`H_{in} = \sum_g \text{in\_sizes}[g]`.
        - Output: :math:`(*, H_{out})` with :math:`H_{out} = \sum_g \text{out\_sizes}[g]`.

    Under autocast, the input, weight and bias are cast to the autocast dtype, as for
    ``torch.nn.functional.linear``.

    Examples::

        >>> x = torch.randn(5, 4)
        >>> w = torch.randn(2, 3, 2)            # 2 groups, 2 inputs -> 3 outputs each
        >>> block_linear(x, w).shape
        torch.Size([5, 6])
        >>> w = torch.randn(2 * 3 + 2 * 1)      # uneven: 2 -> 3 and 2 -> 1
        >>> block_linear(x, w, in_sizes=[2, 2], out_sizes=[3, 1]).shape
        torch.Size([5, 4])
    """
    return _calls.block_call(
        input,
        weight,
        bias,
        _calls.layout_of(input, weight, bias, in_sizes, out_sizes, groups),
        backend,
    )


def sparse_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    wiring: Wiring | SparseIndex,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    r"""Linear map through the connections of a wiring: :math:`y_o = \sum_{i \to o} w_{io}
    x_i + b_o`.

    Only the connections exist: ``weight[k]`` is the value of connection ``k`` in the
    wiring's canonical order (``wiring.edges()[k]``: by output, then input).

    Args:
        input: tensor of shape :math:`(*, H_{in})`.
        weight: 1-D tensor of ``wiring.nnz`` connection values.
        wiring: the connectivity, a :class:`~torchwire.Wiring`, or its index tensors on the
            input's device (:func:`torchwire.backends.sparse_index`; a
            :class:`~torchwire.SparseLinear` passes its buffers). A ``Wiring``'s index
            tensors are built once per device and cached.
        bias: optional tensor of shape :math:`(H_{out})`.
        backend: ``"auto"`` (the registry's cheapest for this problem) or a backend name
            from ``torchwire.backends.available("sparse_linear")``.

    Shape:
        - Input: :math:`(*, H_{in})` with :math:`H_{in} = \text{wiring.in\_features}`.
        - Output: :math:`(*, H_{out})` with :math:`H_{out} = \text{wiring.out\_features}`.

    Under autocast, the input, weight and bias are cast to the autocast dtype, as for
    ``torch.nn.functional.linear``.

    Examples::

        >>> w = torchwire.Wiring.from_edges([[0, 0], [2, 0], [1, 1]], 3, 2)
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> sparse_linear(x, torch.tensor([10.0, 1.0, 5.0]), w)  # y0 = 10 x0 + x2, y1 = 5 x1
        tensor([[13., 10.]])
    """
    _calls.check_is_tensor(input, weight, "sparse_linear", bias)
    return _calls.sparse_call(input, weight, _calls.index_of(wiring, weight), bias, backend)


def multi_linear(
    inputs: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Linear map of several inputs at once: :math:`y = \sum_i x_i W_i^T + b`.

    Equal to ``F.linear(torch.cat(inputs, -1), torch.cat(weights, 1), bias)`` without
    concatenating the inputs: one GEMM per input, accumulated into one output.

    Args:
        inputs: tensors of shapes :math:`(*, H_{in,i})` (same leading dimensions).
        weights: tensors of shapes :math:`(H_{out}, H_{in,i})`, one per input.
        bias: optional tensor of shape :math:`(H_{out})`.

    Examples::

        >>> x1, x2 = torch.randn(4, 5), torch.randn(4, 3)
        >>> w1, w2 = torch.randn(2, 5), torch.randn(2, 3)
        >>> y = multi_linear([x1, x2], [w1, w2])
        >>> torch.allclose(y, torch.cat([x1, x2], -1) @ torch.cat([w1, w2], 1).T, atol=1e-6)
        True
    """
    if type(inputs) is not tuple:
        inputs = tuple(inputs)
    if type(weights) is not tuple:
        weights = tuple(weights)
    count = len(inputs)
    if not count or count != len(weights):
        raise ValueError(
            f"multi_linear expected one weight per input (at least one), got {count} "
            f"inputs and {len(weights)} weights"
        )
    _calls.check_bias(bias, "multi_linear")
    return _calls.multi_call(inputs, weights, bias)


torch.fx.wrap("block_linear")
torch.fx.wrap("sparse_linear")
torch.fx.wrap("multi_linear")
