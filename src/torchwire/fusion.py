"""Fusing: same-input branches into one wide layer (:func:`fuse_parallel`) and back
(:func:`unfuse`), and a whole model's linear operators merged (:func:`fuse`, which applies
:func:`torchwire.merge`'s rules and :func:`fuse_parallel` wherever they fit).

Fusing is exact: the wide layer holds the branches' weights side by side, so it computes
the same outputs (up to floating-point summation order) and the same gradients.

Both follow surgery's one rebuild policy (``torchwire._surgery``). The wide layer is in
eval mode when every branch is (else in training mode), and each of its parameters
(``weight``, ``bias``) is frozen (``requires_grad=False``) when every branch holding that
parameter froze it, else trainable; the :class:`FusedParallel` takes the Parallel's mode.
:func:`unfuse` gives every branch the wide layer's mode and frozen parameters, and the
Parallel the FusedParallel's mode. Modules with hooks or parametrizations are refused, since
the new ones would lose them.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_leaves

from torchwire import _join, _surgery, merging
from torchwire.containers import Parallel
from torchwire.layers import BlockLinear, SparseLinear
from torchwire.wiring import Wiring

__all__ = ["FuseReport", "FusedParallel", "fuse", "fuse_parallel", "unfuse"]

_SUPPORTED = "nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, torchwire.BlockLinear, SparseLinear"


# Branches by name (typed Any: attribute access on checked nn.Linear / ConvNd / BlockLinear /
# SparseLinear branches).
_Named = list[tuple[str, Any]]
# A wide layer and where branch order reads its outputs (None: they are already in order).
_Fused = tuple[nn.Module, list[int] | None]


class _Branch(NamedTuple):
    """What :func:`unfuse` needs to rebuild one branch besides its values."""

    name: str
    kind: type[nn.Module]  # the branch's layer type: its adapter builds it back
    size: int  # outputs (features or channels)
    bias: bool
    config: dict[str, Any]  # the branch's full adapter config (_surgery.full_config)


class FusedParallel(nn.Module):
    r"""Same-input branches computed by one wide layer: what :func:`fuse_parallel` returns.

    The wide ``layer`` computes every branch's outputs at once; they are cut back into one
    tensor per branch (views, no copies, unless grouped channels must be reordered first)
    and joined as the original :class:`~torchwire.Parallel` did. :func:`unfuse` gives the
    per-branch modules back, with their original names.

    Attributes:
        layer: the wide layer (``nn.Linear``, ``nn.ConvNd``, ``BlockLinear`` or
            ``SparseLinear``).
        names: the branches' names, in order.
        sizes: each branch's number of outputs (features, or channels for convolutions).
        join: the original ``Parallel``'s join.
        dim: the original ``Parallel``'s ``dim``.

    Examples::

        >>> heads = torchwire.Parallel(nn.Linear(8, 2), nn.Linear(8, 3))
        >>> fused = torchwire.fuse_parallel(heads)
        >>> fused
        FusedParallel(
          names=['0', '1'], sizes=[2, 3]
          (layer): Linear(in_features=8, out_features=5, bias=True)
        )
        >>> x = torch.randn(4, 8)
        >>> all(torch.allclose(a, b, atol=1e-6) for a, b in zip(fused(x), heads(x)))
        True
    """

    join: str | None
    dim: int
    feature_dim: int
    order: torch.Tensor | None

    def __init__(
        self,
        layer: nn.Module,
        branches: Sequence[_Branch],
        order: Sequence[int] | None,
        join: str | None,
        dim: int,
        feature_dim: int,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.branches = tuple(branches)
        self.join = join
        self.dim = dim
        self.feature_dim = feature_dim
        # Where branch order reads the wide layer's outputs (None: they are already in order).
        self._order = None if order is None else tuple(order)
        self.register_buffer("order", None, persistent=False)
        self._restore_order(next(layer.parameters()).device)

    @property
    def merge(self) -> str | None:
        """Deprecated spelling of :attr:`join`."""
        warnings.warn(
            "FusedParallel.merge is deprecated; use FusedParallel.join",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.join

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "join" not in state:  # pickled by torchwire 0.1, as merge
            state["join"] = state.pop("merge", None)
        super().__setstate__(state)

    def _restore_order(self, device: torch.device) -> None:
        if self._order is not None:
            self.order = torch.tensor(self._order, dtype=torch.long, device=device)

    def reset_parameters(self) -> None:
        """Initialise the wide layer as the branches would be (branches without a bias keep
        zeros in its bias), and rebuild the output order (after ``to_empty``)."""
        layer: Any = self.layer
        layer.reset_parameters()
        if layer.bias is not None:
            with torch.no_grad():
                start = 0
                for branch in self.branches:
                    if not branch.bias:
                        layer.bias[self._positions()[start : start + branch.size]] = 0
                    start += branch.size
        self._restore_order(layer.weight.device)

    def _positions(self) -> list[int]:
        """Where each output, in branch order, sits among the wide layer's outputs."""
        return list(range(sum(self.sizes))) if self._order is None else list(self._order)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.branches]

    @property
    def sizes(self) -> list[int]:
        return [b.size for b in self.branches]

    def forward(self, input: Any) -> Any:
        y = self.layer(input)
        if self.order is not None:
            y = y.index_select(self.feature_dim, self.order)
        parts = y.split(self.sizes, self.feature_dim)
        if self.join is None:
            return parts
        if self.join == "cat" and self._cat_is_features(y):
            return y
        return _join.join([parts[i] for i in range(len(self.branches))], self.join, self.dim)

    def _cat_is_features(self, y: Any) -> bool:
        """Whether the join concatenates along the wide layer's own output dimension."""
        if isinstance(y, torch.fx.Proxy):  # rank unknown while tracing: split and join
            return False
        rank: int = y.dim()
        return self.dim % rank == self.feature_dim % rank

    def get_extra_state(self) -> torch.Tensor:
        """The branch layout as a ``(2, branches)`` int64 tensor (output sizes, then 1 where a
        branch has a bias), saved in ``state_dict`` so that a checkpoint cannot load into a
        fused layer of other branches with the same parameter shapes."""
        return torch.tensor([self.sizes, [int(b.bias) for b in self.branches]], dtype=torch.int64)

    def set_extra_state(self, state: Any) -> None:
        mine = [self.sizes, [int(b.bias) for b in self.branches]]
        if isinstance(state, dict):  # written by torchwire 0.1.0
            saved: Any = [state.get("sizes"), [int(b) for b in state.get("bias", [])]]
        elif isinstance(state, torch.Tensor) and not state.is_floating_point():
            saved = state.tolist()
        else:
            saved = repr(state)
        if saved != mine:
            raise ValueError(
                f"this checkpoint was saved from a FusedParallel with branch (sizes, bias) = "
                f"{saved}, not {mine}; fuse the same Parallel before loading it"
            )

    def extra_repr(self) -> str:
        s = f"names={self.names}, sizes={self.sizes}"
        if self.join is not None:
            s += f", join={self.join!r}"
        if self.dim != -1:
            s += f", dim={self.dim}"
        return s


def fuse_parallel(parallel: nn.Module) -> FusedParallel:
    r"""One wide layer computing every branch of a :class:`~torchwire.Parallel` at once.

    Branches must all be ``nn.Linear``, all one kind of ``nn.Conv1d/2d/3d`` (same
    ``in_channels``, kernel size, stride, padding, dilation, groups and padding mode), or any
    mix of ``nn.Linear``, :class:`~torchwire.BlockLinear` and
    :class:`~torchwire.SparseLinear` with the same ``in_features``. The result is:

    - ``nn.Linear`` or ``nn.ConvNd`` for branches of that type (grouped convolutions keep
      their groups; their outputs are reordered by one gather);
    - ``BlockLinear`` for ``BlockLinear`` branches with the same input groups;
    - ``SparseLinear`` with the branches' wirings stacked, otherwise.

    Branches without a bias get zeros in the wide layer's bias when others have one. The
    weights are copied: rebuild the optimizer after fusing (and after :func:`unfuse`).

    The fused layer computes the same outputs and gradients up to floating-point rounding
    (its sums may run in another order). Training either form trains the same network; in
    float32, long runs can drift apart by rounding, as any change of kernel can make them.

    Args:
        parallel (Parallel): the branches, all run on the same input. (Typed ``nn.Module``
            so that ``model[-1] = fuse_parallel(model[-1])`` type-checks; anything else
            raises ``TypeError``.)

    Returns:
        A new :class:`FusedParallel`; ``parallel`` is not changed. The wide layer is in eval
        mode when every branch is, and a parameter of it is frozen when every branch
        holding that parameter froze it (see the module docstring).

    Raises:
        TypeError: a branch is of a type that cannot be fused, or types are mixed.
        ValueError: a branch differs from the first in something fusing cannot keep
            exactly (its input size, kernel, stride, ...), shares a module with another
            branch, has hooks or parametrizations, or is a shared-block ``BlockLinear``.
            The message names the branch. The Parallel itself has hooks.

    Examples::

        >>> encoder_heads = torchwire.Parallel(nn.Conv2d(64, 16, 3, padding=1),
        ...                                    nn.Conv2d(64, 16, 3, padding=1))
        >>> fused = torchwire.fuse_parallel(encoder_heads)
        >>> fused.layer
        Conv2d(64, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
        >>> mean, logvar = fused(torch.randn(2, 64, 8, 8))
        >>> mean.shape
        torch.Size([2, 16, 8, 8])
    """
    if not isinstance(parallel, Parallel):
        raise TypeError(
            f"fuse_parallel expected a torchwire.Parallel, got {type(parallel).__name__}"
        )
    named = [(name, m) for name, m in parallel._modules.items() if m is not None]
    if not named:
        raise ValueError("fuse_parallel got a Parallel without branches")
    _surgery.check_plain(parallel, "the Parallel", "fuse_parallel")
    _check_branches(named)
    kinds = {type(m) for _, m in named}
    rule = _RULES.get(kinds.pop()) if len(kinds) == 1 else None
    fused = None if rule is None else rule(named)
    layer, order = _fuse_wirings(named) if fused is None else fused
    training = any(m.training for _, m in named)
    layer = _surgery.rebuilt_from(layer, [m for _, m in named], training)
    branches = [_describe(name, m) for name, m in named]
    feature_dim = -(_surgery.known(named[0][1]).spatial + 1)
    result = FusedParallel(layer, branches, order, parallel.join, parallel.dim, feature_dim)
    result.training = parallel.training  # the container's own flag; the layer keeps its mode
    return result


def unfuse(fused: nn.Module) -> Parallel:
    r"""The per-branch modules of a :class:`FusedParallel`, as a :class:`~torchwire.Parallel`
    with the original branch names, types, join and current values.

    A branch that had no bias stays without one, unless the wide layer's bias for its outputs
    was trained away from zero after fusing: then it keeps that bias (so outputs do not
    change) and a warning says so. Every branch takes the wide layer's train/eval mode and
    frozen parameters; a FusedParallel or wide layer with hooks or parametrizations is
    refused (``ValueError``).

    Examples::

        >>> heads = torchwire.Parallel(OrderedDict(mean=nn.Linear(8, 2), logvar=nn.Linear(8, 2)))
        >>> back = torchwire.unfuse(torchwire.fuse_parallel(heads))
        >>> list(back.state_dict()) == list(heads.state_dict())
        True
    """
    if not isinstance(fused, FusedParallel):
        raise TypeError(f"unfuse expected a torchwire.FusedParallel, got {type(fused).__name__}")
    layer = fused.layer
    _surgery.check_plain(fused, "the FusedParallel", "unfuse")
    _surgery.check_plain(layer, f"its layer ({type(layer).__name__})", "unfuse")
    positions = fused._positions()
    modules: OrderedDict[str, nn.Module] = OrderedDict()
    start = 0
    for branch in fused.branches:
        rows = positions[start : start + branch.size]
        start += branch.size
        modules[branch.name] = _unfuse_branch(layer, branch, rows)
    parallel = Parallel(modules, join=fused.join, dim=fused.dim)
    parallel.training = fused.training  # the container's own flag; branches take the layer's
    return parallel


def _check_branches(named: _Named) -> None:
    """Everything fusing could not keep exactly is an error naming the branch."""
    seen: dict[int, str] = {}
    first_name, first = named[0]
    for name, m in named:
        label = f"branch {name!r} ({type(m).__name__})"
        _surgery.check_plain(m, label, "fuse_parallel")
        facts = _surgery.adapter(m)
        if facts is None:
            raise TypeError(f"fuse_parallel cannot fuse {label}; it fuses {_SUPPORTED}")
        if id(m) in seen:
            raise ValueError(
                f"branches {seen[id(m)]!r} and {name!r} are the same module (shared weights); "
                "a fused layer would hold two copies and train them apart"
            )
        seen[id(m)] = name
        if getattr(m, "shared", False):
            raise ValueError(
                f"{label} shares one block across its groups, which a wider layer cannot keep "
                "shared; fuse it with shared=False or leave it as its own branch"
            )
        weight, expected = m.weight, first.weight
        if (weight.dtype, weight.device) != (expected.dtype, expected.device):
            raise ValueError(
                f"{label} holds {weight.dtype} on {weight.device}, but branch {first_name!r} "
                f"holds {expected.dtype} on {expected.device}; move them to one dtype and "
                "device first"
            )
        if facts.family is not _surgery.known(first).family:
            raise TypeError(
                f"fuse_parallel cannot fuse {label} with branch {first_name!r} "
                f"({type(first).__name__}): convolutions fuse only with convolutions of the "
                "same dimension, linear layers only with linear layers"
            )
        for attr in _agreed(m, facts):
            if getattr(m, attr) != getattr(first, attr):
                raise ValueError(
                    f"{label} has {attr}={getattr(m, attr)}, but branch {first_name!r} has "
                    f"{attr}={getattr(first, attr)}; fused branches must agree on it"
                )


def _agreed(m: nn.Module, facts: _surgery.Adapter) -> list[str]:
    """What branches of ``m``'s family must agree on: a linear layer's input size; all of a
    convolution's settings but its output channels and bias."""
    if not facts.spatial:
        return ["in_features"]
    config = _surgery.ADAPTERS[type(m)].config(m)
    return [key for key in config if key not in ("out_channels", "bias")]


def _describe(name: str, m: Any) -> _Branch:
    size = _surgery.units(m)[1]
    return _Branch(name, type(m), size, m.bias is not None, _surgery.full_config(m))


def _bias_or_zeros(m: Any, size: int) -> torch.Tensor:
    bias = m.bias
    if isinstance(bias, torch.Tensor):
        return bias.detach()
    return torch.zeros(size, dtype=m.weight.dtype, device=m.weight.device)


def _any_bias(named: _Named) -> bool:
    return any(m.bias is not None for _, m in named)


def _common_backend(named: _Named) -> str:
    """The backend every branch forces, else ``"auto"`` (``nn.Linear`` counts as auto)."""
    backends = {_surgery.ADAPTERS[type(m)].config(m).get("backend", "auto") for _, m in named}
    return str(backends.pop()) if len(backends) == 1 else "auto"


def _cat_rows(named: _Named) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every ``nn.Linear``'s weight and bias stacked by output rows."""
    weight = torch.cat([m.weight.detach() for _, m in named])
    if not _any_bias(named):
        return weight, None
    return weight, torch.cat([_bias_or_zeros(m, m.out_features) for _, m in named])


def _group_major(sizes: Sequence[Sequence[int]]) -> list[int] | None:
    """Where each branch's outputs sit in a wide layer whose groups hold, group by group,
    every branch's outputs of that group: ``sizes[b][g]`` outputs of branch ``b`` in group
    ``g``. Positions are listed in branch order; ``None`` when that is the identity."""
    groups = len(sizes[0])
    starts, position = {}, 0
    for g in range(groups):
        for b in range(len(sizes)):
            starts[b, g] = position
            position += sizes[b][g]
    order = [
        starts[b, g] + r
        for b in range(len(sizes))
        for g in range(groups)
        for r in range(sizes[b][g])
    ]
    return None if order == list(range(len(order))) else order


def _fuse_linears(named: _Named) -> _Fused:
    """``nn.Linear`` branches: one ``nn.Linear`` of their rows."""
    return _surgery.dense_linear(*_cat_rows(named)), None


def _fuse_convs(named: _Named) -> _Fused:
    """Convolutions of one kind and settings: one of their output channels, group by group."""
    first: Any = named[0][1]
    g = first.groups
    # Group g of the wide convolution holds group g of every branch.
    weight = torch.cat([m.weight.detach().unflatten(0, (g, -1)) for _, m in named], 1)
    bias = None
    if _any_bias(named):
        biases = [_bias_or_zeros(m, m.out_channels).view(g, -1) for _, m in named]
        bias = torch.cat(biases, 1).flatten()
    layer = _surgery.conv_like(first, weight.flatten(0, 1), bias)
    return layer, _group_major([[m.out_channels // g] * g for _, m in named])


def _fuse_blocks(named: _Named) -> _Fused | None:
    """BlockLinear branches with the same input groups: one BlockLinear whose group ``g``
    holds group ``g`` of every branch (else ``None``: they fuse as any linear layers)."""
    found = _surgery.ADAPTERS[BlockLinear]
    configs = [found.config(m) for _, m in named]
    if len({tuple(c["in_sizes"]) for c in configs}) != 1:
        return None
    per_branch = []  # the (out_g, in_g) block of every group, of every branch
    for (_, m), c in zip(named, configs, strict=True):
        _, values = _surgery.edges(m)  # blocks one after another, each row by row
        sizes = [i * o for i, o in zip(c["in_sizes"], c["out_sizes"], strict=True)]
        blocks = values.split(sizes)
        per_branch.append([b.view(o, -1) for b, o in zip(blocks, c["out_sizes"], strict=True)])
    blocks = [torch.cat(group) for group in zip(*per_branch, strict=True)]
    config = {
        **configs[0],
        "out_sizes": [b.shape[0] for b in blocks],
        "bias": _any_bias(named),
        "backend": _common_backend(named),
    }
    weight = blocks[0]
    layer = found.build(config, weight.device, weight.dtype)
    bias = None
    if _any_bias(named):
        biases = [
            _bias_or_zeros(m, m.out_features).split(c["out_sizes"])
            for (_, m), c in zip(named, configs, strict=True)
        ]
        bias = torch.cat([torch.cat(group) for group in zip(*biases, strict=True)])
    values = torch.cat([b.flatten() for b in blocks])
    return _surgery.filled(layer, values, bias), _group_major([c["out_sizes"] for c in configs])


def _fuse_wirings(named: _Named) -> _Fused:
    """Any linear layers: a SparseLinear of their wirings, outputs stacked."""
    wirings, values = zip(*(_surgery.edges(m) for _, m in named), strict=True)
    edges, offset = [], 0
    for w in wirings:  # outputs stacked: each branch's edges keep their canonical order
        e = w.edges().clone()
        e[:, 1] += offset
        edges.append(e)
        offset += w.out_features
    stacked = Wiring.from_edges(torch.cat(edges), wirings[0].in_features, offset)
    weight = values[0]
    config = {"wiring": stacked, "bias": _any_bias(named), "backend": _common_backend(named)}
    layer = _surgery.ADAPTERS[SparseLinear].build(config, weight.device, weight.dtype)
    bias = None
    if _any_bias(named):
        bias = torch.cat(
            [_bias_or_zeros(m, w.out_features) for (_, m), w in zip(named, wirings, strict=True)]
        )
    return _surgery.filled(layer, torch.cat(values), bias), None


# How branches all of one type fuse into one layer (a rule may return None: then, and for
# branches of mixed types, they fuse as any linear layers, by their wirings).
_RULES: dict[type[nn.Module], Callable[[_Named], _Fused | None]] = {
    nn.Linear: _fuse_linears,
    BlockLinear: _fuse_blocks,
    **dict.fromkeys(_surgery.CONVS, _fuse_convs),
}


def _unfuse_branch(layer: nn.Module, branch: _Branch, rows: list[int]) -> nn.Module:
    """``branch`` rebuilt from the wide layer's outputs ``rows`` (increasing)."""
    weight: torch.Tensor = layer.weight  # type: ignore[assignment]
    index = torch.tensor(rows, dtype=torch.long, device=weight.device)
    wide_bias: torch.Tensor | None = layer.bias  # type: ignore[assignment]
    bias = None if wide_bias is None else wide_bias.detach().index_select(0, index)
    has_bias = branch.bias
    if not has_bias and bias is not None and bool(bias.any()):
        warnings.warn(
            f"branch {branch.name!r} had no bias, but the fused layer's bias for its outputs "
            "is no longer zero (it was trained after fusing); its unfused module keeps that "
            "bias so that its outputs stay the same",
            stacklevel=3,
        )
        has_bias = True
    if _surgery.known(layer).dense:  # its weight's rows are its outputs
        values = weight.detach().index_select(0, index)
    else:  # the values of those outputs' connections, in the branch's own order
        wiring, all_values = _surgery.edges(layer)
        values = all_values[wiring.selected_edges(outputs=rows).to(all_values.device)]
    config = {**branch.config, "bias": has_bias}
    module = _surgery.ADAPTERS[branch.kind].build(config, weight.device, weight.dtype)
    module = _surgery.filled(module, values, bias if has_bias else None)
    return _surgery.rebuilt(module, layer)


# ---------------------------------------------------------------------------- fuse


def _kind(m: nn.Module) -> type[nn.Module]:
    """``m``'s layer type as the merge rules name it (a parametrized layer: the type it
    wraps, so the pair is found and then refused for its parametrization)."""
    return parametrize.type_before_parametrizations(m)


@dataclass
class FuseReport:
    """What :func:`fuse` did: one line per change, and why it left other pairs alone."""

    merged: list[str] = field(default_factory=list)
    fused: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"merged: {line}" for line in self.merged]
        lines += [f"fused: {line}" for line in self.fused]
        lines += [f"removed: {line}" for line in self.removed]
        lines += [f"skipped: {line}" for line in self.skipped]
        return "\n".join(lines) or "nothing to fuse"


class _Tracer(torch.fx.Tracer):
    """Keeps torchwire's layers and branch containers, and every layer type a merge rule
    names (``kinds``), whole in the graph."""

    def __init__(self, kinds: set[type[nn.Module]]) -> None:
        super().__init__()
        self.kinds = kinds

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (Parallel, FusedParallel)) or _surgery.adapter(m) is not None:
            return True
        if _kind(m) in self.kinds:
            return True
        return super().is_leaf_module(m, module_qualified_name)


_DROPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _weights(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def fuse(
    model: nn.Module, example_inputs: Any = None, *, rules: merging.Rules | None = None
) -> tuple[torch.fx.GraphModule, FuseReport]:
    r"""A copy of an eval-mode ``model`` with its linear operators merged.

    Traces ``model`` with ``torch.fx`` (torchwire's layers and :class:`~torchwire.Parallel`
    kept whole), then: drops ``nn.Identity`` and (eval) dropout; fuses every ``Parallel``
    that :func:`~torchwire.fuse_parallel` can fuse; and merges, with
    :func:`~torchwire.merge`, every module whose output feeds only the next module, as long
    as the merged layer has no more weights than the pair (BatchNorm always folds). It
    merges the pairs ``merge`` has a rule for (:data:`~torchwire.merging.MERGE_RULES` and
    ``rules``), and never across a nonlinearity, a function call, or a module no rule names.
    Pairs whose merge would not be exact, or that hold a layer with hooks or
    parametrizations, are left alone, with the reason in the report. Merged layers follow
    ``merge``'s rebuild policy (mode, frozen parameters).

    Args:
        model: an ``nn.Module`` in eval mode (BatchNorm folding uses running statistics).
        example_inputs: optional input (a tensor or a tuple of ``model``'s arguments); when
            given, the new model is run on it and compared with ``model``.
        rules: more merge rules, ``{(first type, second type): rule}``, as :func:`~torchwire.merge`
            takes them (its examples show one used by both); a module whose type a rule names
            is kept whole when ``model`` is traced. Default: ``None``.

    Returns:
        ``(new_model, report)``: a ``torch.fx.GraphModule`` (``model`` is not changed) and a
        :class:`FuseReport`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or ``rules`` are malformed.
        ValueError: ``model`` is in training mode, or the fused model's output on
            ``example_inputs`` differs from ``model``'s.

    Examples::

        >>> model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 8, 1),
        ...                       nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 32),
        ...                       nn.Dropout(0.1), nn.Linear(32, 10)).eval()
        >>> fused, report = torchwire.fuse(model, torch.randn(2, 3, 8, 8))
        >>> print(report)
        merged: 0 + 1 -> Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1))
        merged: 0 + 2 -> Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1))
        merged: 5 + 7 -> Linear(in_features=288, out_features=10, bias=True)
        removed: 6 (Dropout)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse expected an nn.Module, got {type(model).__name__}")
    if model.training:
        raise ValueError(
            "fuse needs the model in eval mode (BatchNorm folds use running statistics, and "
            "dropout is dropped); call model.eval() first"
        )
    table = merging.merge_rules(rules)
    source = copy.deepcopy(model)
    graph = _Tracer({kind for pair in table for kind in pair}).trace(source)
    gm = torch.fx.GraphModule(source, graph)
    report = FuseReport()
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if isinstance(module, _DROPPED) and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            report.removed.append(f"{node.target} ({type(module).__name__})")
        elif isinstance(module, Parallel):
            try:
                fused = fuse_parallel(module)
            except (TypeError, ValueError) as error:
                report.skipped.append(f"{node.target}: {error}")
                continue
            gm.set_submodule(node.target, fused)
            modules[node.target] = fused
            report.fused.append(f"{node.target} -> {fused.layer}")
    tried: set[tuple[str, str]] = set()
    changed = True
    while changed:
        changed = False
        for node in gm.graph.nodes:
            prev = node.args[0] if node.op == "call_module" and len(node.args) == 1 else None
            if not isinstance(prev, torch.fx.Node) or node.kwargs or prev.kwargs:
                continue
            if prev.op != "call_module" or len(prev.users) != 1 or len(prev.args) != 1:
                continue
            names = (str(prev.target), str(node.target))
            if names in tried:
                continue
            tried.add(names)
            first, second = modules[names[0]], modules[names[1]]
            if (_kind(first), _kind(second)) not in table:
                continue  # no rule merges this pair
            try:
                merged = merging.merge(first, second, rules=rules)
            except ValueError as error:
                report.skipped.append(f"{prev.target} + {node.target}: {error}")
                continue
            norm = isinstance(first, _BatchNorm) or isinstance(second, _BatchNorm)
            pair_weights = _weights(first) + _weights(second)
            if not norm and _weights(merged) > pair_weights:
                report.skipped.append(
                    f"{prev.target} + {node.target}: the merged layer would hold "
                    f"{_weights(merged)} weights, more than the pair's {pair_weights}"
                )
                continue
            gm.set_submodule(names[0], merged)
            modules[names[0]] = merged
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
            report.merged.append(f"{prev.target} + {node.target} -> {merged}")
            changed = True
            break
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    if example_inputs is not None:
        _verify(model, gm, example_inputs)
    return gm, report


def _verify(model: nn.Module, fused: nn.Module, example_inputs: Any) -> None:
    """Raise unless ``fused`` computes what ``model`` does on ``example_inputs``."""
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    with torch.no_grad():
        expected, got = tree_leaves(model(*args)), tree_leaves(fused(*args))
    if len(expected) != len(got):
        raise ValueError(f"fuse changed the model's outputs: {len(expected)} became {len(got)}")
    for e, g in zip(expected, got, strict=True):
        tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(e.dtype, 1e-2)
        scale = float(e.abs().max()) if e.numel() else 1.0
        if e.shape != g.shape or not torch.allclose(g, e, rtol=tol, atol=tol * max(scale, 1.0)):
            difference = (g - e).abs().max().item() if e.shape == g.shape else "shapes differ"
            raise ValueError(
                f"fuse changed the model's output on example_inputs (largest difference "
                f"{difference}); please report this with the model"
            )
