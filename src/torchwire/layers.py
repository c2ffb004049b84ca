"""Partially connected linear layers: the modules hold state; torchwire.functional does the math."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchwire import _calls, backends
from torchwire._checks import is_int
from torchwire.backends import SparseIndex
from torchwire.backends import sparse_dense as _sparse_dense
from torchwire.backends.block_dense import dense_weight
from torchwire.wiring import Wiring

__all__ = ["BlockLinear", "MultiLinear", "SparseLinear"]


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
        self.in_sizes, self.out_sizes = _calls.group_sizes(in_features, out_features, groups)
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
        self.backend = _check_backend("block_linear", backend)
        if equal:
            shape: tuple[int, ...] = (
                1 if shared else self.groups,
                self.out_sizes[0],
                self.in_sizes[0],
            )
        else:
            shape = (sum(i * o for i, o in zip(self.in_sizes, self.out_sizes, strict=True)),)
        self._weight_shape = torch.Size(shape)
        self._layout = backends.block_layout(self.in_sizes, self.out_sizes, shared)
        self.weight = nn.Parameter(torch.empty(shape, **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_layout" not in state:  # pickled by a version that derived it on every call
            self._weight_shape = self.weight.shape
            self._layout = backends.block_layout(self.in_sizes, self.out_sizes, self.shared)

    def reset_parameters(self) -> None:
        """Initialise each group like ``nn.Linear(in_g, out_g)``: U(-1/sqrt(in_g), 1/sqrt(in_g))."""
        with torch.no_grad():
            if self.weight.dim() == 3:
                fan_in = self.in_sizes[0]
                self.weight.uniform_(-_linear_weight_bound(fan_in), _linear_weight_bound(fan_in))
                if self.bias is not None:
                    bound = 1.0 / math.sqrt(fan_in)
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
        weight, bias = _weight_and_bias(self)
        if weight.shape != self._weight_shape:
            _wrong_weight(self, weight)
        return _calls.block_call(input, weight, bias, self._layout, self.backend)

    def resolve_backend(self, input: torch.Tensor) -> str:
        """Name of the backend this layer runs for ``input`` (what ``backend="auto"`` picks), in
        the context it is called in: inside a function torch.compile or torch.export traces,
        or under torch.func transforms, the backend that runs there. The hand-written
        ``bmm``, ``bmm_packed`` and ``bmm_t`` modes cannot run there, so ``bmm_autograd`` or
        ``dense`` does; a forced hand-written mode is refused there with the reason, except
        in an export, which takes the cheapest backend that can. When their backward is
        differentiated again (``create_graph=True``), it computes its products as
        differentiable ops."""
        chosen, _ = _calls.block_plan(input, self.weight, self.bias, self._layout, self.backend)
        return chosen.name

    def get_extra_state(self) -> torch.Tensor:
        """The group sizes as a ``(2, groups)`` int64 tensor (input sizes, then output sizes),
        saved in ``state_dict`` so that a checkpoint cannot load into a layer with other
        groups of the same parameter shapes. A shared layer is told apart by its weight's
        shape."""
        return torch.tensor([self.in_sizes, self.out_sizes], dtype=torch.int64)

    def set_extra_state(self, state: Any) -> None:
        mine = [list(self.in_sizes), list(self.out_sizes)]
        if isinstance(state, dict):  # written by torchwire 0.1.0
            saved = [state.get("in_sizes"), state.get("out_sizes")]
            same = saved == mine and state.get("shared") == self.shared
        else:
            saved = _int_rows(state)
            same = saved == mine
        if not same:
            raise ValueError(
                f"this checkpoint was saved from a BlockLinear with (in_sizes, out_sizes) = "
                f"{saved}, but this layer has {mine}; build the layer with the saved sizes"
            )

    @property
    def wiring(self) -> Wiring:
        """The connectivity: :meth:`Wiring.block_diagonal` of the group sizes."""
        return Wiring.block_diagonal(self.in_sizes, self.out_sizes)

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same function (zeros outside the blocks)."""
        return _to_linear(dense_weight(self.weight, self._layout), self.bias)

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear], *, backend: str = "auto") -> BlockLinear:
        """One BlockLinear equal to running ``linears`` side by side and concatenating.

        Input group ``g`` feeds ``linears[g]``. Linears without a bias get a zero bias when
        others have one. All must share a dtype and a device.

        Example::

            >>> heads = [nn.Linear(4, 2), nn.Linear(3, 5)]
            >>> m = torchwire.BlockLinear.from_linears(heads)
            >>> x = torch.randn(6, 7)
            >>> expected = torch.cat([heads[0](x[:, :4]), heads[1](x[:, 4:])], -1)
            >>> torch.allclose(m(x), expected, atol=1e-6)
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
            >>> torch.allclose(m(x), dense(x), atol=1e-6)
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

    @classmethod
    def from_sparse(cls, sparse: SparseLinear, *, backend: str = "auto") -> BlockLinear:
        """The same layer as a BlockLinear, when ``sparse``'s wiring is block diagonal.

        Equal groups give a 3-D weight, uneven ones a 1-D weight; the values are the same
        (both layers store connections in ``wiring.edges()`` order).

        Example::

            >>> s = torchwire.SparseLinear(torchwire.Wiring.block_diagonal([2, 2], [3, 1]))
            >>> b = torchwire.BlockLinear.from_sparse(s)
            >>> b
            BlockLinear(in_features=[2, 2], out_features=[3, 1], bias=True)
            >>> x = torch.randn(5, 4)
            >>> torch.allclose(b(x), s(x), atol=1e-6)
            True
        """
        if not isinstance(sparse, SparseLinear):
            raise TypeError(f"from_sparse expected a SparseLinear, got {type(sparse).__name__}")
        sizes = sparse.wiring.block_sizes
        if sizes is None:
            raise ValueError(
                "from_sparse needs a block-diagonal wiring (consecutive input groups, each "
                f"connected to all of its own consecutive outputs and nothing else); got "
                f"{sparse.wiring!r}; keep it a SparseLinear"
            )
        in_sizes, out_sizes = sizes
        equal = len(set(zip(in_sizes, out_sizes, strict=True))) == 1
        block = cls(
            sum(in_sizes) if equal else list(in_sizes),
            sum(out_sizes) if equal else list(out_sizes),
            len(in_sizes) if equal else None,
            bias=sparse.bias is not None,
            backend=backend,
            device=sparse.weight.device,
            dtype=sparse.weight.dtype,
        )
        with torch.no_grad():
            block.weight.copy_(sparse.weight.view_as(block.weight))
            if block.bias is not None and sparse.bias is not None:
                block.bias.copy_(sparse.bias)
        return block

    def extra_repr(self) -> str:
        # One repr per layer, however it was written (as torch prints kernel_size=3 as (3, 3)):
        # equal groups print as groups=, uneven ones as their sizes.
        if len(set(self.in_sizes)) > 1 or len(set(self.out_sizes)) > 1:
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


class SparseLinear(nn.Module):
    r"""Linear layer with any connectivity: :math:`y_o = \sum_{i \to o} w_{io} x_i + b_o`.

    Only the connections of ``wiring`` exist: one value each, in the wiring's canonical order
    (``weight[k]`` belongs to ``wiring.edges()[k]``: by output, then input). There is no dense
    weight, so optimizers (momentum, weight decay, Adam's moments) never touch an absent
    connection and can never make one nonzero. The computation is chosen per input by
    :func:`torchwire.backends.select`: a dense GEMM at high density, sparse kernels (CSR
    forward and grad-input, sampled grad-weight) at low density, BlockLinear's kernels when the
    wiring is block diagonal.

    Args:
        wiring: the connectivity, a :class:`~torchwire.Wiring` (from a mask, an edge list,
            a named mapping, ...). Its input and output names are kept.
        bias: if ``False``, the layer will not learn an additive bias. Default: ``True``.
        backend: ``"auto"`` or a name from ``torchwire.backends.available("sparse_linear")``.
            Default: ``"auto"``.

    Shape:
        - Input: :math:`(*, H_{in})` where :math:`*` means any number of dimensions
          (including none) and :math:`H_{in} = \text{in\_features}`.
        - Output: :math:`(*, H_{out})` where :math:`H_{out} = \text{out\_features}`.

    Attributes:
        weight: the learnable connection values, shape :math:`(\text{nnz})`. The value of a
            connection into output :math:`o` is initialised from
            :math:`\mathcal{U}(-\sqrt{k_o}, \sqrt{k_o})` with :math:`k_o = 1/\text{fan\_in}(o)`,
            so a fully connected wiring gives ``nn.Linear``'s distribution.
        bias: the learnable bias of shape :math:`(\text{out\_features})`, initialised from
            the same distribution as its output's weights (zero for an output without inputs).
        indptr: with ``indices``, the connections as persistent integer buffers, CSR by
            output (int32 where sizes allow; see :class:`torchwire.backends.SparseIndex`),
            saved in ``state_dict`` and moved by ``.to()``.
        indices: see ``indptr``.
        t_indptr: with ``t_indices`` and ``perm``, the transposed structure, which the
            sparse kernels' backward reads; buffers like the others at a density of at most
            1/6, where those kernels are the fast ones, else derived (once) where needed.
            Parameters and buffers take 16 bytes a connection in float32 up to density 1/6
            and 8 above, plus :math:`O(H_{in} + H_{out})`: never more than a dense weight
            and a bool mask (5 bytes an element) up to 62% density.
        t_indices: see ``t_indptr``.
        perm: see ``t_indptr``.

    Examples::

        >>> wiring = torchwire.Wiring.random(1000, 100, density=0.01, seed=0)
        >>> m = torchwire.SparseLinear(wiring)
        >>> m
        SparseLinear(in_features=1000, out_features=100, nnz=1000, bias=True)
        >>> m(torch.randn(8, 1000)).shape
        torch.Size([8, 100])
        >>> pathways = torchwire.Wiring.from_mapping({"p1": ["g1", "g2"], "p2": ["g3"]})
        >>> torchwire.SparseLinear(pathways, bias=False).connections()[0][:2]
        ('g1', 'p1')
    """

    in_features: int
    out_features: int
    backend: str
    weight: nn.Parameter
    bias: nn.Parameter | None
    indptr: torch.Tensor
    indices: torch.Tensor

    def __init__(
        self,
        wiring: Wiring,
        bias: bool = True,
        *,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        if not isinstance(wiring, Wiring):
            raise TypeError(
                f"SparseLinear expected a torchwire.Wiring, got {type(wiring).__name__}; build "
                "one with Wiring.from_mask(mask), Wiring.from_edges(pairs, in, out) or "
                "Wiring.from_mapping({output: [inputs]})"
            )
        self.backend = _check_backend("sparse_linear", backend)
        self.in_features = wiring.in_features
        self.out_features = wiring.out_features
        index_dtype = torch.int32 if wiring.nnz < 2**31 else torch.int64  # as sparse_index
        sizes = (
            wiring.out_features + 1,
            wiring.nnz,
            wiring.in_features + 1,
            wiring.nnz,
            wiring.nnz,
        )
        self._by_input = _keeps_transpose(wiring)
        names = _INDEX_FIELDS + _DERIVED_FIELDS if self._by_input else _INDEX_FIELDS
        for name, size in zip(names, sizes, strict=False):
            self.register_buffer(name, torch.empty(size, dtype=index_dtype, device=device))
        self._wiring = wiring  # the buffers are filled from it by reset_parameters
        self._blocks: backends.BlockLayout | None = None
        self._cached_index: SparseIndex | None = None  # the buffers as one SparseIndex
        self._index_versions: tuple[int, int] = (-1, -1)
        self.weight = nn.Parameter(torch.empty(wiring.nnz, **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def __getstate__(self) -> dict[str, Any]:
        # The kept index holds calls bound to this layer's scratch memory: a copy derives
        # its own.
        return {**super().__getstate__(), "_cached_index": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._cached_index = None  # also for layers pickled before the cache existed
        if "_by_input" not in state:  # pickled by torchwire 0.1, which kept it at any density
            self._by_input = "t_indices" in self._buffers

    def reset_parameters(self) -> None:
        """Initialise each output like ``nn.Linear(fan_in, 1)``: weights and bias from
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias of an output without inputs is zero.

        Also restores the index buffers from the wiring (after ``to_empty``, for example).
        """
        self._copy_index(self._wiring)
        with torch.no_grad():
            fan_in = self._wiring.fan_in()
            if bool((fan_in == fan_in[0]).all()) and int(fan_in[0]) > 0:
                size = int(fan_in[0])  # one bound: drawn as nn.Linear draws it, bit for bit
                self.weight.uniform_(-_linear_weight_bound(size), _linear_weight_bound(size))
                if self.bias is not None:
                    bound = 1.0 / math.sqrt(size)
                    self.bias.uniform_(-bound, bound)
                return
            # Built on the CPU explicitly: a `with torch.device("meta")` context would
            # otherwise make these meta tensors.
            cpu = torch.device("cpu")
            bounds = fan_in.to(cpu, torch.float64).clamp(min=1).rsqrt()
            per_weight = bounds.repeat_interleave(fan_in.to(cpu), output_size=self._wiring.nnz)
            self.weight.uniform_(-1.0, 1.0).mul_(per_weight.to(self.weight))
            if self.bias is not None:
                self.bias.uniform_(-1.0, 1.0).mul_((bounds * (fan_in > 0)).to(self.bias))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = _weight_and_bias(self)
        if torch.compiler.is_compiling():  # read no kept state: the graph would guard on it
            return _calls.sparse_call(input, weight, self._new_index(None), bias, self.backend)
        index = self._cached_index
        if index is None or not self._current(index):
            index = self._index()
        return _calls.sparse_call(input, weight, index, bias, self.backend)

    def resolve_backend(self, input: torch.Tensor) -> str:
        """Name of the backend this layer runs for ``input`` (what ``backend="auto"`` picks), in
        the context it is called in (torch.compile or torch.export tracing, torch.func
        transforms: ``csr`` cannot run under torch.func). Backend ``"block"`` chooses its
        block-linear kernel the same way."""
        chosen, _ = _calls.sparse_plan(input, self.weight, self._index(), self.bias, self.backend)
        return chosen.name

    def _index(self) -> SparseIndex:
        """The index buffers as a :class:`SparseIndex`, kept (with what backends derive from
        it) while the buffers are the same tensors, unchanged in place."""
        buffers = self._buffers
        if (
            torch.compiler.is_compiling()  # a traced graph holds its own copies
            or buffers["indptr"].is_inference()  # type: ignore[union-attr]
            or buffers["indices"].is_inference()  # type: ignore[union-attr]
        ):  # (inference tensors have no version counters to follow)
            return self._new_index(None)
        index = self._cached_index
        if index is not None and self._current(index):
            return index
        index = self._cached_index = self._new_index(backends.IndexCache())
        self._index_versions = (index.indptr._version, index.indices._version)
        return index

    def _current(self, index: SparseIndex) -> bool:
        """Whether the kept ``index`` still describes the buffers (not to be called while
        compiling: dynamo cannot read version counters)."""
        buffers = self._buffers
        return (
            index.indices is buffers["indices"]
            and index.indptr is buffers["indptr"]
            and self._index_versions == (index.indptr._version, index.indices._version)
            and (index.by_input is None or _same(index.by_input, self._by_input_buffers()))
        )

    def _by_input_buffers(self) -> tuple[Any, ...] | None:
        buffers = self._buffers
        return tuple(buffers[name] for name in _DERIVED_FIELDS) if self._by_input else None

    def _new_index(self, cache: backends.IndexCache | None) -> SparseIndex:
        buffers = self._buffers
        by_input = self._by_input_buffers()
        return SparseIndex(
            buffers["indptr"],  # type: ignore[arg-type]
            buffers["indices"],  # type: ignore[arg-type]
            self.in_features,
            self.out_features,
            self._blocks,
            cache,
            by_input,
            owned=True,
        )

    @property
    def wiring(self) -> Wiring:
        """The connectivity (immutable), with its input and output names."""
        return self._wiring

    @property
    def nnz(self) -> int:
        """Number of connections."""
        return self._wiring.nnz

    def connections(self) -> list[tuple[str | int, str | int, float]]:
        """Every connection as ``(input, output, weight)``, in ``wiring.edges()`` order.

        Inputs and outputs are given by name where the wiring has names, else by index.

        Example::

            >>> w = torchwire.Wiring.from_mapping({"pathway": ["gene_a", "gene_b"]})
            >>> m = torchwire.SparseLinear(w)
            >>> [(i, o) for i, o, _ in m.connections()]
            [('gene_a', 'pathway'), ('gene_b', 'pathway')]
        """
        edges = self._wiring.edges().tolist()
        values = self.weight.detach().cpu().tolist()
        ins = self._wiring.input_names
        outs = self._wiring.output_names
        return [
            (
                i if ins is None else ins[i],
                o if outs is None else outs[o],
                value,
            )
            for (i, o), value in zip(edges, values, strict=True)
        ]

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same function (zeros where no connection exists)."""
        return _to_linear(_sparse_dense.dense_weight(self.weight, self._index()), self.bias)

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        mask: Any = None,
        threshold: float | None = None,
        *,
        backend: str = "auto",
    ) -> SparseLinear:
        """Keep some connections of ``linear``: those ``mask`` names, those with
        ``|w| > threshold``, or (neither given) its nonzero weights; the bias is kept.

        Args:
            linear: the dense layer.
            mask: optional ``(out_features, in_features)`` bool (or 0/1) tensor or array.
            threshold: optional magnitude; weights with ``|w| > threshold`` are kept.

        Example::

            >>> dense = nn.Linear(4, 3)
            >>> m = torchwire.SparseLinear.from_dense(dense, mask=torch.eye(3, 4, dtype=bool))
            >>> m.nnz
            3
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_dense expected an nn.Linear, got {type(linear).__name__}")
        if mask is not None and threshold is not None:
            raise ValueError("from_dense takes a mask or a threshold, not both")
        weight = linear.weight.detach()
        if mask is not None:
            mask = torch.as_tensor(mask)
            if tuple(mask.shape) != tuple(weight.shape):
                raise ValueError(
                    f"from_dense expected a mask of the weight's shape {tuple(weight.shape)} "
                    f"(out_features, in_features), got {tuple(mask.shape)}"
                )
            wiring = Wiring.from_mask(mask)
        elif threshold is not None:
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
                raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
            wiring = Wiring.from_mask(weight.abs().cpu() > threshold)
        else:
            wiring = Wiring.from_mask(weight.cpu() != 0)
        return cls._with_values(wiring, weight, linear.bias, backend)

    @classmethod
    def from_pruned(cls, module: nn.Linear, *, backend: str = "auto") -> SparseLinear:
        """A compact layer equal to an ``nn.Linear`` pruned with ``torch.nn.utils.prune``.

        Reads ``weight_orig`` and ``weight_mask``: the connections are the mask's nonzeros,
        their values ``weight_orig * weight_mask`` there, so outputs are the pruned module's.
        The pruned module (its dense copies) is left unchanged.

        Example::

            >>> from torch.nn.utils import prune
            >>> linear = prune.l1_unstructured(nn.Linear(64, 32), "weight", amount=0.9)
            >>> m = torchwire.SparseLinear.from_pruned(linear)
            >>> m.nnz
            205
            >>> x = torch.randn(4, 64)
            >>> torch.allclose(m(x), linear(x), atol=1e-6)
            True
        """
        if not isinstance(module, nn.Linear):
            raise TypeError(f"from_pruned expected an nn.Linear, got {type(module).__name__}")
        mask = getattr(module, "weight_mask", None)
        weight_orig = getattr(module, "weight_orig", None)
        if not isinstance(mask, torch.Tensor) or not isinstance(weight_orig, torch.Tensor):
            raise ValueError(
                "from_pruned expected a module pruned with torch.nn.utils.prune (it has "
                "weight_orig and weight_mask); for a plain nn.Linear use "
                "SparseLinear.from_dense(linear, mask=..., threshold=...)"
            )
        wiring = Wiring.from_mask(mask.detach().cpu() != 0)
        weight = weight_orig.detach() * mask.detach()
        return cls._with_values(wiring, weight, module.bias, backend)

    @classmethod
    def from_block(cls, block: BlockLinear, *, backend: str = "auto") -> SparseLinear:
        """The same layer as a SparseLinear (a shared block is copied to every group).

        Example::

            >>> b = torchwire.BlockLinear(4, 6, groups=2)
            >>> s = torchwire.SparseLinear.from_block(b)
            >>> x = torch.randn(3, 4)
            >>> s.nnz, s.wiring == b.wiring, torch.allclose(s(x), b(x))
            (12, True, True)
        """
        if not isinstance(block, BlockLinear):
            raise TypeError(f"from_block expected a BlockLinear, got {type(block).__name__}")
        layer = cls(
            block.wiring,
            bias=block.bias is not None,
            backend=backend,
            device=block.weight.device,
            dtype=block.weight.dtype,
        )
        weight = block.weight.detach()
        if block.shared:
            weight = weight.expand(block.groups, -1, -1)
        with torch.no_grad():
            layer.weight.copy_(weight.reshape(-1))
            if block.bias is not None and layer.bias is not None:
                layer.bias.copy_(block.bias)
        return layer

    @classmethod
    def _with_values(
        cls,
        wiring: Wiring,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        backend: str,
    ) -> SparseLinear:
        """A layer of ``wiring`` whose values are read from the dense ``weight``."""
        layer = cls(
            wiring,
            bias=bias is not None,
            backend=backend,
            device=weight.device,
            dtype=weight.dtype,
        )
        edges = wiring.edges().to(weight.device)
        with torch.no_grad():
            layer.weight.copy_(weight[edges[:, 1], edges[:, 0]])
            if bias is not None and layer.bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    def get_extra_state(self) -> torch.Tensor:
        """``[in_features, out_features]`` as an int64 tensor, saved in ``state_dict`` beside
        the index buffers (which give the connections; :func:`torchwire.save` also keeps the
        names)."""
        return torch.tensor([self.in_features, self.out_features], dtype=torch.int64)

    def set_extra_state(self, state: Any) -> None:
        mine = (self.in_features, self.out_features)
        if isinstance(state, dict):  # written by torchwire 0.1.0, with the names
            saved: Any = (state.get("in_features"), state.get("out_features"))
            names = (state.get("input_names"), state.get("output_names"))
        else:
            saved, names = _int_rows(state), None
            saved = tuple(saved) if isinstance(saved, list) else saved
        if saved != mine:
            raise ValueError(
                f"this checkpoint was saved from a SparseLinear of (in_features, out_features) "
                f"= {saved}, but this layer has {mine}; build the layer with the saved wiring"
            )
        if names is not None:
            self._loaded_names = names

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        errors: list[str] = args[-1]
        count = len(errors)
        for name in _DERIVED_FIELDS:  # derived from indptr and indices: never trusted
            if self._by_input:  # recomputed after loading: any tensor of the shape will do
                state_dict.setdefault(prefix + name, self._buffers[name])
            else:  # torchwire 0.1 saved them at every density
                state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args)
        if len(errors) == count:  # adopt the loaded connections (e.g. rewired by training)
            self._adopt_loaded_structure()
        else:  # torch may have copied the buffers whose shapes matched: restore them all
            self.__dict__.pop("_loaded_names", None)
            self._copy_index(self._wiring)

    def _adopt_loaded_structure(self) -> None:
        names = getattr(self, "_loaded_names", None)
        if names is None:
            names = (self._wiring.input_names, self._wiring.output_names)
        self.__dict__.pop("_loaded_names", None)
        if self.indptr.is_meta:
            return
        try:
            wiring = Wiring(
                self.indptr.cpu(),
                self.indices.cpu(),
                self.in_features,
                self.out_features,
                input_names=names[0],
                output_names=names[1],
            )
        except ValueError as error:
            self._copy_index(self._wiring)  # the buffers describe the layer's wiring again
            raise ValueError(
                f"the checkpoint's connections are not a valid wiring: {error}"
            ) from None
        self._wiring = wiring
        self._copy_index(wiring)  # in the canonical form, checked by Wiring

    def rewire_(self, wiring: Wiring) -> SparseLinear:
        """Take ``wiring`` in place, keeping the parameters (and so every optimizer's hold on
        them): the step dynamic sparse training takes (see :class:`torchwire.DynamicSparsity`).

        ``wiring`` has the layer's sizes and connection count. The index buffers are
        overwritten; the values are not moved: ``weight[k]`` becomes the value of ``wiring``'s
        ``k``-th connection (``wiring.edges()`` order). Move the values first where
        connections survive (:meth:`Wiring.positions` gives where each one sits).

        Args:
            wiring: the new connections.

        Returns:
            The layer itself.

        Example::

            >>> from torchwire import Wiring
            >>> m = torchwire.SparseLinear(Wiring.from_positions(torch.tensor([0, 3]), 2, 2))
            >>> new = Wiring.from_positions(torch.tensor([1, 3]), 2, 2)
            >>> m.rewire_(new).wiring.positions()
            tensor([1, 3])
        """
        if not isinstance(wiring, Wiring):
            raise TypeError(f"rewire_ expected a torchwire.Wiring, got {type(wiring).__name__}")
        if wiring.shape != self._wiring.shape or wiring.nnz != self.nnz:
            raise ValueError(
                f"rewire_ keeps the layer's parameters, so it needs a wiring of the same shape "
                f"and connection count: got {tuple(wiring.shape)} with {wiring.nnz} connections "
                f"for a layer of {tuple(self._wiring.shape)} with {self.nnz}; build a new "
                "SparseLinear for other sizes"
            )
        self._wiring = wiring
        self._copy_index(wiring)
        return self

    def _copy_index(self, wiring: Wiring) -> None:
        """Write ``wiring``'s index tensors into the buffers (same shapes) and its block
        layout into ``_blocks``."""
        index = backends.sparse_index(wiring)
        self._blocks = index.blocks
        self._cached_index = None
        with torch.no_grad():
            self.indptr.copy_(index.indptr)
            self.indices.copy_(index.indices)
            if self._by_input:
                for name, tensor in zip(_DERIVED_FIELDS, index.transposed(), strict=True):
                    getattr(self, name).copy_(tensor)

    def extra_repr(self) -> str:
        s = (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"nnz={self.nnz}, bias={self.bias is not None}"
        )
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s


_INDEX_FIELDS = ("indptr", "indices")
_DERIVED_FIELDS = ("t_indptr", "t_indices", "perm")


def _same(tensors: tuple[Any, ...], others: tuple[Any, ...] | None) -> bool:
    """Whether two tuples hold the same tensor objects."""
    return others is not None and all(t is o for t, o in zip(tensors, others, strict=True))


def _keeps_transpose(wiring: Wiring) -> bool:
    """Whether a SparseLinear of ``wiring`` keeps the transposed structure as buffers: at a
    density of at most 1/6, where training runs the sparse kernels and the 16 bytes a
    connection (float32; 18 in bfloat16) stay within a dense weight and a bool mask."""
    return 6 * wiring.nnz <= wiring.in_features * wiring.out_features


_MISSING: Any = object()


def _tensor(module: nn.Module, name: str) -> Any:
    """``getattr(module, name)``, read from ``_parameters`` where it is a plain parameter
    (or None), skipping ``nn.Module.__getattr__``, a large share of a small layer's call;
    else as an attribute (pruned or parametrized layers)."""
    value = module._parameters.get(name, _MISSING)
    return getattr(module, name) if value is _MISSING else value


def _weight_and_bias(module: nn.Module) -> tuple[Any, Any]:
    """``(module.weight, module.bias)``, as :func:`_tensor` reads them."""
    params = module._parameters
    weight, bias = params.get("weight", _MISSING), params.get("bias", _MISSING)
    if weight is _MISSING or bias is _MISSING:
        return _tensor(module, "weight"), _tensor(module, "bias")
    return weight, bias


def _wrong_weight(module: BlockLinear, weight: torch.Tensor) -> None:
    raise ValueError(
        f"{module!r} expected a weight of shape {tuple(module._weight_shape)}, got "
        f"{tuple(weight.shape)}; assign a weight of the layer's shape, or build a layer of "
        "the new sizes"
    )


def _check_backend(op: str, backend: str) -> str:
    """``backend`` if it is "auto" or registered for ``op``, else a ValueError."""
    if backend != "auto" and backend not in backends.available(op):
        raise ValueError(
            f"unknown backend {backend!r}; expected 'auto' or one of {list(backends.available(op))}"
        )
    return backend


# The layers model surgery (merging, pruning, saving) understands, by kind; exact types only.
def _linear_weight_bound(fan_in: int) -> float:
    """``nn.Linear``'s weight bound ``1/sqrt(fan_in)``, computed as ``kaiming_uniform_(a=
    sqrt(5))`` computes it (it can differ in the last bit, which float64 draws keep)."""
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    return math.sqrt(3.0) * (gain / math.sqrt(fan_in))


def _int_rows(state: object) -> Any:
    """A saved integer tensor as (nested) lists, or ``repr`` of whatever else was saved."""
    if isinstance(state, torch.Tensor) and not state.is_floating_point():
        return state.tolist()
    return repr(state)


class MultiLinear(nn.Module):
    r"""Linear layer over several inputs: :math:`y = \sum_i x_i W_i^T + b`.

    The same function as ``nn.Linear(sum(in_features), out_features)`` applied to the
    concatenated inputs, without concatenating them and without zero blocks: each input has
    its own weight, and one GEMM per input accumulates into one output.

    Args:
        in_features: the size of each input (a sequence of ints).
        out_features: size of each output sample.
        bias: if ``False``, the layer will not learn an additive bias. Default: ``True``.

    Shape:
        - Input: ``forward(x1, x2, ...)`` or ``forward((x1, x2, ...))`` with :math:`x_i` of
          shape :math:`(*, H_{in,i})`, the same :math:`*` for all.
        - Output: :math:`(*, H_{out})`.

    Attributes:
        weights: ``nn.ParameterList`` of :math:`(H_{out}, H_{in,i})` weights; ``weights[i]``
            initialised as the columns of one
            ``nn.Linear(sum(in_features), out_features)`` weight would be (bit for bit, for
            the same seed).
        bias: :math:`(H_{out})`, initialised as that ``nn.Linear``'s bias.

    Examples::

        >>> m = torchwire.MultiLinear([5, 3], 10)
        >>> m(torch.randn(4, 5), torch.randn(4, 3)).shape
        torch.Size([4, 10])
    """

    in_features: tuple[int, ...]
    out_features: int

    def __init__(
        self,
        in_features: Sequence[int],
        out_features: int,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        factory_kwargs: dict[str, Any] = {"device": device, "dtype": dtype}
        super().__init__()
        if is_int(in_features) or isinstance(in_features, (str, bytes)):
            raise TypeError(
                f"MultiLinear expected in_features as a sequence of ints (one per input), got "
                f"{in_features!r}; for one input use nn.Linear"
            )
        try:
            sizes = tuple(in_features)
        except TypeError:
            raise TypeError(
                f"MultiLinear expected in_features as a sequence of ints, got "
                f"{type(in_features).__name__}"
            ) from None
        if not sizes or not all(is_int(s) for s in sizes) or min(sizes) < 1:
            raise ValueError(
                f"MultiLinear expected positive input sizes, got in_features={list(sizes)}"
            )
        if not is_int(out_features) or out_features < 1:
            raise ValueError(f"out_features must be a positive int, got {out_features!r}")
        self.in_features = tuple(int(s) for s in sizes)
        self.out_features = int(out_features)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(self.out_features, size, **factory_kwargs))
            for size in self.in_features
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as one ``nn.Linear(sum(in_features), out_features)``, split by input."""
        total = sum(self.in_features)
        first = self.weights[0]
        with torch.no_grad():
            whole = torch.empty(self.out_features, total, device=first.device, dtype=first.dtype)
            whole.uniform_(-_linear_weight_bound(total), _linear_weight_bound(total))
            for w, part in zip(self.weights, whole.split(list(self.in_features), 1), strict=True):
                w.copy_(part)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(total)
                self.bias.uniform_(-bound, bound)

    def forward(self, *inputs: Any) -> torch.Tensor:
        xs: tuple[Any, ...] = inputs
        if len(inputs) == 1:
            if isinstance(inputs[0], (tuple, list)):
                xs = tuple(inputs[0])
            elif isinstance(inputs[0], torch.fx.Proxy):  # a traced tuple
                traced: Any = inputs[0]
                xs = tuple(traced[i] for i in range(len(self.in_features)))
        count = len(self.in_features)
        if len(xs) != count:
            self._wrong_count(xs)
        listed = self._modules["weights"]
        weights: tuple[torch.Tensor, ...] = tuple(listed._parameters.values())  # type: ignore[union-attr,arg-type]
        if len(weights) != count:  # parametrized: read them one by one
            weights = tuple(self.weights)
        return _calls.multi_call(xs, weights, _tensor(self, "bias"))

    def _wrong_count(self, xs: tuple[Any, ...]) -> None:
        raise ValueError(
            f"MultiLinear has {len(self.in_features)} inputs of sizes "
            f"{list(self.in_features)}, got {len(xs)}"
            + (
                f"; to feed it one concatenated tensor, cut it first with "
                f"torchwire.Split({list(self.in_features)})"
                if len(xs) == 1 and isinstance(xs[0], torch.Tensor)
                else ""
            )
        )

    def to_dense(self) -> nn.Linear:
        """The ``nn.Linear(sum(in_features), out_features)`` over the concatenated inputs."""
        return _to_linear(torch.cat(list(self.weights), 1), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={list(self.in_features)}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


def _to_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    from torchwire._surgery import dense_linear  # surgery builds on the layers: import late

    return dense_linear(weight, bias)
