"""Partially connected linear layers: the modules hold state; torchwire.functional does the math."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchwire import backends
from torchwire import functional as F
from torchwire.backends.block_dense import dense_weight
from torchwire.wiring import Wiring

__all__ = ["BlockLinear"]


class BlockLinear(nn.Module):
    r"""Block-diagonal (grouped) linear layer: :math:`y = x\,\mathrm{blockdiag}(W_1..W_G)^T + b`.

    The input features are split into ``G`` consecutive groups and each group is connected
    only to its own consecutive group of output features. Only the ``G`` blocks are stored
    and computed; groups may have different sizes. A few batched kernel calls compute them:
    one per run of equally shaped groups, per position of a repeating pattern of shapes, or
    per distinct shape after gathering, whichever needs fewest.

    Args:
        in_features: size of each input sample (``int``, with ``groups``), or the input size
            of every group (sequence of ints, for uneven groups).
        out_features: size of each output sample (``int``), or the output size of every
            group (sequence of ints, same length as ``in_features``).
        groups: number of equal groups when the sizes are ints; both sizes must be divisible
            by it. Default: ``None`` (one group, or one per size given).
        shared: if ``True``, all groups use the same block (equal groups only), like a
            1x1 convolution applied to every group. Default: ``False``.
        bias: if ``False``, the layer will not learn an additive bias. Default: ``True``.
        backend: ``"auto"`` (the fastest for each input, chosen by
            :func:`torchwire.backends.select`) or a name from
            ``torchwire.backends.available("block_linear")``. Default: ``"auto"``.

    Shape:
        - Input: :math:`(*, H_{in})` where :math:`*` means any number of dimensions
          (including none) and :math:`H_{in} = \text{in\_features}` (the sum of the groups).
        - Output: :math:`(*, H_{out})` where :math:`H_{out} = \text{out\_features}`.

    Attributes:
        weight: the learnable blocks. Equal groups: shape
            :math:`(G, \text{out}_g, \text{in}_g)` (:math:`(1, \text{out}_g, \text{in}_g)` when
            ``shared``). Uneven groups: 1-D of :math:`\sum_g \text{out}_g \cdot \text{in}_g`
            values, block after block, each row-major (this is the order of
            ``wiring.edges()``). Initialised like ``nn.Linear(in_g, out_g)`` per group:
            :math:`\mathcal{U}(-\sqrt{k_g}, \sqrt{k_g})` with :math:`k_g = 1/\text{in}_g`.
        bias: the learnable bias of shape :math:`(\text{out\_features})`, each output
            initialised from :math:`\mathcal{U}(-\sqrt{k_g}, \sqrt{k_g})` of its group.

    Examples::

        >>> m = torchwire.BlockLinear(1024, 1024, groups=16)   # 16 groups of 64 -> 64
        >>> m(torch.randn(8, 1024)).shape
        torch.Size([8, 1024])
        >>> m = torchwire.BlockLinear([2, 2], [3, 1])          # inputs 0-1 -> outputs 0-2, 2-3 -> 3
        >>> m.weight.shape                                      # 2*3 + 2*1 weights, nothing else
        torch.Size([8])
        >>> m(torch.randn(5, 4)).shape
        torch.Size([5, 4])
    """

    in_features: int
    out_features: int
    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]
    groups: int
    shared: bool
    backend: str
    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        groups: int | None = None,
        *,
        shared: bool = False,
        bias: bool = True,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_sizes, self.out_sizes = F._group_sizes(in_features, out_features, groups)
        self._uneven_args = not F._is_int(in_features)
        self.groups = len(self.in_sizes)
        self.in_features = sum(self.in_sizes)
        self.out_features = sum(self.out_sizes)
        equal = len(set(zip(self.in_sizes, self.out_sizes, strict=True))) == 1
        if not isinstance(shared, bool):
            raise TypeError(f"shared must be a bool, got {type(shared).__name__}")
        if shared and not equal:
            raise ValueError(
                "shared=True needs equal groups (one block reused by every group); got "
                f"in_sizes={self.in_sizes}, out_sizes={self.out_sizes}"
            )
        self.shared = shared
        if backend != "auto" and backend not in backends.available("block_linear"):
            raise ValueError(
                f"unknown backend {backend!r}; expected 'auto' or one of "
                f"{list(backends.available('block_linear'))}"
            )
        self.backend = backend
        if equal:
            shape: tuple[int, ...] = (
                1 if shared else self.groups,
                self.out_sizes[0],
                self.in_sizes[0],
            )
        else:
            shape = (sum(i * o for i, o in zip(self.in_sizes, self.out_sizes, strict=True)),)
        self.weight = nn.Parameter(torch.empty(shape, **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise each group like ``nn.Linear(in_g, out_g)``: U(-1/sqrt(in_g), 1/sqrt(in_g))."""
        with torch.no_grad():
            if self.weight.dim() == 3:
                bound = 1.0 / math.sqrt(self.in_sizes[0])
                self.weight.uniform_(-bound, bound)
                if self.bias is not None:
                    self.bias.uniform_(-bound, bound)
                return
            # Built on the CPU explicitly: a `with torch.device("meta")` context would
            # otherwise make these meta tensors, whose repeat counts are unknown.
            cpu = torch.device("cpu")
            bounds = torch.tensor([1.0 / math.sqrt(i) for i in self.in_sizes], device=cpu)
            sizes = [i * o for i, o in zip(self.in_sizes, self.out_sizes, strict=True)]
            per_weight = bounds.repeat_interleave(torch.tensor(sizes, device=cpu))
            self.weight.uniform_(-1.0, 1.0).mul_(per_weight.to(self.weight.device))
            if self.bias is not None:
                per_out = bounds.repeat_interleave(torch.tensor(self.out_sizes, device=cpu))
                self.bias.uniform_(-1.0, 1.0).mul_(per_out.to(self.bias.device))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.block_linear(
            input,
            self.weight,
            self.bias,
            *self._size_args(),
            groups=self.groups,
            backend=self.backend,
        )

    def resolve_backend(self, input: torch.Tensor) -> str:
        """Name of the backend this layer runs for ``input`` (what ``backend="auto"`` picks)."""
        chosen, _ = F._block_plan(
            input, self.weight, self.bias, *self._size_args(), self.groups, self.backend
        )
        return chosen.name

    def _size_args(self) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        if self.weight.dim() == 3:
            return None, None
        return self.in_sizes, self.out_sizes

    def get_extra_state(self) -> dict[str, Any]:
        """The group layout, saved in ``state_dict`` so a checkpoint cannot load into a layer
        with other groups of the same parameter shapes."""
        return {
            "in_sizes": list(self.in_sizes),
            "out_sizes": list(self.out_sizes),
            "shared": self.shared,
        }

    def set_extra_state(self, state: Any) -> None:
        if state != self.get_extra_state():
            raise ValueError(
                f"this checkpoint was saved from a BlockLinear with layout {state}, but this "
                f"layer has {self.get_extra_state()}; build the layer with the saved sizes"
            )

    @property
    def wiring(self) -> Wiring:
        """The connectivity: :meth:`Wiring.block_diagonal` of the group sizes."""
        return Wiring.block_diagonal(self.in_sizes, self.out_sizes)

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same function (zeros outside the blocks)."""
        layout = backends.block_layout(self.in_sizes, self.out_sizes, self.shared)
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=self.weight.device,
            dtype=self.weight.dtype,
        )
        with torch.no_grad():
            linear.weight.copy_(dense_weight(self.weight, layout))
            if self.bias is not None and linear.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear], *, backend: str = "auto") -> BlockLinear:
        """One BlockLinear equal to running ``linears`` side by side and concatenating.

        Input group ``g`` feeds ``linears[g]``. Linears without a bias get a zero bias when
        others have one. All must share a dtype and a device.

        Example::

            >>> heads = [nn.Linear(4, 2), nn.Linear(3, 5)]
            >>> m = torchwire.BlockLinear.from_linears(heads)
            >>> x = torch.randn(6, 7)
            >>> torch.allclose(m(x), torch.cat([heads[0](x[:, :4]), heads[1](x[:, 4:])], -1))
            True
        """
        linears = list(linears)
        if not linears or not all(isinstance(m, nn.Linear) for m in linears):
            raise TypeError(
                "from_linears expected a non-empty sequence of nn.Linear, got "
                f"{[type(m).__name__ for m in linears]}"
            )
        first = linears[0].weight
        for m in linears:
            if m.weight.dtype != first.dtype or m.weight.device != first.device:
                raise ValueError(
                    "from_linears expected every Linear on one dtype and device, got "
                    f"{[(str(m.weight.dtype), str(m.weight.device)) for m in linears]}"
                )
        has_bias = any(m.bias is not None for m in linears)
        block = cls(
            [m.in_features for m in linears],
            [m.out_features for m in linears],
            bias=has_bias,
            backend=backend,
            device=first.device,
            dtype=first.dtype,
        )
        with torch.no_grad():
            block.weight.copy_(
                torch.cat([m.weight.flatten() for m in linears]).view_as(block.weight)
            )
            if block.bias is not None:
                block.bias.copy_(
                    torch.cat(
                        [
                            m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)
                            for m in linears
                        ]
                    )
                )
        return block

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        in_sizes: Sequence[int],
        out_sizes: Sequence[int],
        *,
        strict: bool = False,
        backend: str = "auto",
    ) -> BlockLinear:
        """Keep the diagonal blocks of ``linear``'s weight (and its bias).

        Args:
            linear: the dense layer; its sizes must equal the sums of the group sizes.
            in_sizes: input features per group.
            out_sizes: output features per group.
            strict: if ``True``, raise when a weight outside the blocks is nonzero (the
                result would then differ from ``linear``).

        Example::

            >>> dense = torchwire.BlockLinear([2, 2], [3, 1]).to_dense()
            >>> m = torchwire.BlockLinear.from_dense(dense, [2, 2], [3, 1], strict=True)
            >>> x = torch.randn(5, 4)
            >>> torch.allclose(m(x), dense(x))
            True
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_dense expected an nn.Linear, got {type(linear).__name__}")
        if isinstance(in_sizes, int) or isinstance(out_sizes, int):
            raise TypeError(
                "from_dense expected in_sizes and out_sizes as sequences of group sizes, got "
                f"{in_sizes!r} and {out_sizes!r}; for G equal groups pass [in // G] * G"
            )
        block = cls(
            list(in_sizes),
            list(out_sizes),
            bias=linear.bias is not None,
            backend=backend,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        if (linear.in_features, linear.out_features) != (block.in_features, block.out_features):
            raise ValueError(
                f"from_dense expected a Linear({block.in_features}, {block.out_features}) "
                f"(the sums of in_sizes and out_sizes), got Linear({linear.in_features}, "
                f"{linear.out_features})"
            )
        mask = block.wiring.mask().to(linear.weight.device)
        with torch.no_grad():
            if strict:
                outside = linear.weight[~mask]
                if bool((outside != 0).any()):
                    raise ValueError(
                        f"from_dense(strict=True): {int((outside != 0).sum())} weights outside "
                        f"the blocks are nonzero (largest |w| = {outside.abs().max().item():.3g}); "
                        "pass strict=False to drop them, or check in_sizes/out_sizes"
                    )
            # Boolean indexing reads row-major: exactly the blocks' canonical order.
            block.weight.copy_(linear.weight[mask].view_as(block.weight))
            if linear.bias is not None and block.bias is not None:
                block.bias.copy_(linear.bias)
        return block

    def extra_repr(self) -> str:
        if self._uneven_args:
            s = f"in_features={list(self.in_sizes)}, out_features={list(self.out_sizes)}"
        else:
            s = f"in_features={self.in_features}, out_features={self.out_features}"
            if self.groups != 1:
                s += f", groups={self.groups}"
        if self.shared:
            s += ", shared=True"
        s += f", bias={self.bias is not None}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
