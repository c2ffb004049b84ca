"""One description of each layer type for model surgery: prune, merge, fuse, save, rewire.

Every function that reads a layer's connections or builds a replacement goes through an
:class:`Adapter`, found by the layer's exact type in :data:`ADAPTERS`. An adapter tells:

- ``config(m)``: the constructor arguments that rebuild ``m`` (plain values: what
  :func:`torchwire.save` writes as the layer's topology), completed by ``structure(m)``
  where the ``state_dict`` holds part of the structure (:func:`full_config`);
- ``build(config, device, dtype)``: a new layer from them;
- for linear layers (``nn.Linear``, BlockLinear, SparseLinear, MultiLinear), ``edges(m)``:
  the wiring and its values in ``wiring.edges()`` order.

Adding a layer type to surgery means adding one adapter here.

**What a rebuilt layer keeps** (:func:`rebuilt`), whichever operation built it: the replaced
layer's train/eval mode, which of its parameters are frozen (``requires_grad=False``), and
its device and dtype (unless the operation says otherwise, as merging in float64 does); a
torchwire layer keeps its ``backend`` setting. Hooks and parametrizations cannot follow a
layer into a new one: every operation refuses a layer that has them, with one check
(:func:`check_plain`) and one list of what counts (:data:`HOOKS`), except the masks of
``torch.nn.utils.prune``, which pruning reads through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.prune import BasePruningMethod

from torchwire.layers import BlockLinear, MultiLinear, SparseLinear
from torchwire.wiring import Wiring

__all__ = [
    "ADAPTERS",
    "CONVS",
    "HOOKS",
    "LINEARS",
    "NORM_OF",
    "UNIT_NORM",
    "Adapter",
    "adapter",
    "check_plain",
    "conv_like",
    "dense_linear",
    "edges",
    "filled",
    "full_config",
    "known",
    "linear_for",
    "lowest",
    "plain",
    "rebuilt",
    "rebuilt_from",
    "rewired",
    "units",
]

M = TypeVar("M", bound=nn.Module)

LINEARS: tuple[type[nn.Module], ...] = (nn.Linear, BlockLinear, SparseLinear)
CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
NORM_OF: dict[type[nn.Module], type[nn.Module]] = dict(zip(CONVS, NORMS, strict=True))
# The BatchNorm that normalises the units of each family (see Adapter.family).
UNIT_NORM: dict[type[nn.Module], type[nn.Module]] = {nn.Linear: nn.BatchNorm1d, **NORM_OF}

# Where a module keeps the hooks that cannot follow it into a rebuilt layer.
HOOKS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


@dataclass(frozen=True)
class Adapter:
    """How surgery reads and rebuilds one layer type.

    Attributes:
        kind: the layer type (matched exactly: subclasses may compute something else).
        config: the plain constructor arguments of a layer (its topology).
        build: a new layer from ``config``, on a device and dtype.
        edges: for linear layers, the wiring and its connection values (``wiring.edges()``
            order, detached); ``None`` for other layers.
        family: the layers whose units can feed each other's: ``nn.Linear`` for every
            linear layer (features, on the last dimension), the conv type for a convolution
            (channels, on dimension 1); ``None`` for layers without units of their own.
        spatial: the dimensions after the units' one (0 for linear layers).
        sizes: ``(input units, output units)`` of a layer.
        dense: its weight holds every possible connection, one row per output, so a zero
            weight is an absent connection.
        rewire: for linear layers, the config of this type holding another wiring (from a
            layer's config), or ``None`` where the type cannot hold that wiring.
        structure: what rebuilding a layer needs beyond ``config`` where its ``state_dict``
            holds the rest of its structure (a SparseLinear's wiring); ``None`` otherwise.
        saved_structure: the same, read from a ``state_dict`` (the layer's entries start
            with a prefix) for a saved ``config``.
    """

    kind: type[nn.Module]
    config: Callable[[Any], dict[str, Any]]
    build: Callable[[dict[str, Any], torch.device | None, torch.dtype | None], nn.Module]
    edges: Callable[[Any], tuple[Wiring, torch.Tensor]] | None = None
    family: type[nn.Module] | None = None
    spatial: int = 0
    sizes: Callable[[Any], tuple[int, int]] | None = None
    dense: bool = False
    rewire: Callable[[dict[str, Any], Wiring], dict[str, Any] | None] | None = None
    structure: Callable[[Any], dict[str, Any]] | None = None
    saved_structure: Callable[[dict[str, Any], dict[str, Any], str], dict[str, Any]] | None = None


ADAPTERS: dict[type[nn.Module], Adapter] = {}


def register(adapter: Adapter) -> None:
    ADAPTERS[adapter.kind] = adapter


def adapter(m: object) -> Adapter | None:
    """The adapter of ``m``'s exact type, or ``None`` where surgery does not know it. A
    parametrized layer is seen as the type it wraps (and then refused by
    :func:`check_plain`)."""
    kind = parametrize.type_before_parametrizations(m) if isinstance(m, nn.Module) else type(m)
    return ADAPTERS.get(kind)


def edges(m: object) -> tuple[Wiring, torch.Tensor]:
    """A linear layer's wiring and its connection values in ``wiring.edges()`` order."""
    found = adapter(m)
    if found is None or found.edges is None:
        raise TypeError(
            f"expected a linear layer ({', '.join(k.__name__ for k in _linear_kinds())}), "
            f"got {type(m).__name__}"
        )
    return found.edges(m)


def known(m: object) -> Adapter:
    """The adapter of ``m``, which the caller knows surgery supports."""
    found = adapter(m)
    if found is None:
        raise TypeError(f"torchwire's surgery does not know {type(m).__name__} layers")
    return found


def full_config(m: object) -> dict[str, Any]:
    """The config that rebuilds ``m`` exactly without its ``state_dict``'s buffers."""
    found = known(m)
    config = found.config(m)
    return config if found.structure is None else {**config, **found.structure(m)}


def units(m: object) -> tuple[int, int]:
    """``(input units, output units)`` of a layer with units: features or channels."""
    sizes = known(m).sizes
    if sizes is None:
        raise TypeError(f"{type(m).__name__} layers have no input and output units")
    return sizes(m)


def _linear_kinds() -> list[type[nn.Module]]:
    return [kind for kind, a in ADAPTERS.items() if a.edges is not None]


# ---------------------------------------------------------------- the rebuild policy


def rebuilt(new: M, old: nn.Module) -> M:
    """``new`` with what a rebuilt layer keeps of ``old`` (see the module docstring): its
    train/eval mode and its frozen parameters (by name; ``torch.nn.utils.prune``'s
    ``weight_orig`` counts as ``weight``)."""
    new.train(old.training)
    frozen = {name for name, p in old.named_parameters() if not p.requires_grad}
    for name, p in new.named_parameters():
        if name in frozen or name + "_orig" in frozen:
            p.requires_grad_(False)
    return new


def rebuilt_from(new: M, olds: Sequence[nn.Module], training: bool) -> M:
    """:func:`rebuilt` for a layer that replaces several (a merge, fused branches): in
    ``training`` mode, and a parameter frozen where every old layer holding a parameter of
    that name froze it (one that none holds is trainable)."""
    new.train(training)
    trainable: dict[str, bool] = {}
    for old in olds:
        for name, p in old.named_parameters():
            trainable[name] = trainable.get(name, False) or p.requires_grad
    for name, p in new.named_parameters():
        p.requires_grad_(trainable.get(name, True))
    return new


def plain(m: nn.Module, *, prune_masks: bool = False) -> bool:
    """Whether ``m`` has no hooks (:data:`HOOKS`) and no parametrizations; with
    ``prune_masks``, ``torch.nn.utils.prune``'s masks (forward pre-hooks) are allowed."""
    if hasattr(m, "parametrizations"):
        return False
    for name in HOOKS:
        hooks = getattr(m, name, None) or {}
        if name == "_forward_pre_hooks" and prune_masks:
            if not all(isinstance(h, BasePruningMethod) for h in hooks.values()):
                return False
        elif len(hooks):
            return False
    return True


def check_plain(m: nn.Module, label: str, operation: str, *, prune_masks: bool = False) -> None:
    """Refuse ``m`` (called ``label``) if it has hooks or parametrizations, which a rebuilt
    layer would lose."""
    if not plain(m, prune_masks=prune_masks):
        raise ValueError(
            f"{operation} cannot rebuild {label}: it has hooks or parametrizations (weight "
            "norm, spectral norm, pruning masks, ...), which the new layer would silently "
            "lose; remove them first (torch.nn.utils.parametrize.remove_parametrizations, "
            "torch.nn.utils.prune.remove, handle.remove())"
        )


# ---------------------------------------------------------------- shared building blocks


def filled(layer: M, values: torch.Tensor, bias: torch.Tensor | None) -> M:
    """``layer`` holding ``values`` (its weight's elements in order: ``wiring.edges()``
    order for torchwire layers) and ``bias``."""
    target: Any = layer
    with torch.no_grad():
        target.weight.copy_(values.view_as(target.weight))
        if bias is not None:
            target.bias.copy_(bias)
    return layer


def dense_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of a dense ``(out, in)`` ``weight`` and ``bias``."""
    out_features, in_features = weight.shape
    linear = nn.Linear(
        in_features, out_features, bias is not None, device=weight.device, dtype=weight.dtype
    )
    return filled(linear, weight.detach(), None if bias is None else bias.detach())


def linear_for(
    wiring: Wiring,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    backend: str = "auto",
    *,
    dense: bool = True,
) -> nn.Module:
    """The smallest exact layer of ``wiring`` holding ``values`` (``wiring.edges()`` order):
    ``nn.Linear`` where everything connects (if ``dense``), BlockLinear where the wiring is
    block-diagonal, else SparseLinear."""
    factory: dict[str, Any] = {"device": values.device, "dtype": values.dtype}
    full = wiring.nnz == wiring.in_features * wiring.out_features
    if dense and full:
        return dense_linear(values.view(wiring.out_features, wiring.in_features), bias)
    if wiring.block_sizes is not None and not full:
        in_sizes, out_sizes = wiring.block_sizes
        layer: nn.Module = BlockLinear(
            list(in_sizes), list(out_sizes), bias=bias is not None, backend=backend, **factory
        )
    else:
        layer = SparseLinear(wiring, bias is not None, backend=backend, **factory)
    return filled(layer, values, bias)


def rewired(
    m: nn.Module,
    wiring: Wiring,
    values: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    kind: type[nn.Module] | None = None,
) -> nn.Module:
    """A layer of ``kind`` (default: ``m``'s type) with ``wiring``, holding ``values``
    (``wiring.edges()`` order) and ``bias``, with ``m``'s settings (its backend) where the
    type stays ``m``'s; a SparseLinear where ``kind`` cannot hold the wiring. Not yet
    :func:`rebuilt`."""
    kind = type(m) if kind is None else kind
    base = ADAPTERS[kind].config(m) if kind is type(m) else {"backend": "auto"}
    rewire = ADAPTERS[kind].rewire
    config = None if rewire is None else rewire(base, wiring)
    if config is None:
        kind, config = SparseLinear, _rewire_sparse({"backend": "auto"}, wiring)
    config["bias"] = bias is not None
    layer = ADAPTERS[kind].build(config, values.device, values.dtype)
    return filled(layer, values, bias)


def lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` lowest scores; ties broken by position (stable)."""
    return torch.sort(scores, stable=True).indices[:count]


def _names(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else list(names)


# ---------------------------------------------------------------- the adapters


def _features(m: Any) -> tuple[int, int]:
    return int(m.in_features), int(m.out_features)


def _channels(m: Any) -> tuple[int, int]:
    return int(m.in_channels), int(m.out_channels)


def _rewire_dense(config: dict[str, Any], wiring: Wiring) -> dict[str, Any] | None:
    if wiring.nnz != wiring.in_features * wiring.out_features:
        return None  # a dense layer holds every connection
    return {**config, "in_features": wiring.in_features, "out_features": wiring.out_features}


def _rewire_blocks(config: dict[str, Any], wiring: Wiring) -> dict[str, Any] | None:
    sizes = wiring.block_sizes
    if sizes is None:
        return None
    return {**_block_config(list(sizes[0]), list(sizes[1])), **_settings(config), "shared": False}


def _rewire_sparse(config: dict[str, Any], wiring: Wiring) -> dict[str, Any]:
    return {**config, "wiring": wiring}


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k in ("bias", "backend", "shared")}


def _linear_edges(m: nn.Linear) -> tuple[Wiring, torch.Tensor]:
    wiring = Wiring.block_diagonal([m.in_features], [m.out_features])
    return wiring, m.weight.detach().reshape(-1)


register(
    Adapter(
        nn.Linear,
        lambda m: {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        },
        lambda c, device, dtype: nn.Linear(
            c["in_features"], c["out_features"], c["bias"], device=device, dtype=dtype
        ),
        _linear_edges,
        family=nn.Linear,
        sizes=_features,
        dense=True,
        rewire=_rewire_dense,
    )
)


def _block_edges(m: BlockLinear) -> tuple[Wiring, torch.Tensor]:
    weight = m.weight.detach()
    if m.shared:  # one block for every group: repeated, as the dense matrix holds it
        weight = weight.expand(m.groups, -1, -1)
    return m.wiring, weight.reshape(-1)


def _block_config(in_sizes: list[int], out_sizes: list[int]) -> dict[str, Any]:
    return {"in_sizes": in_sizes, "out_sizes": out_sizes}


def _block_build(c: dict[str, Any], device: Any, dtype: Any) -> nn.Module:
    return BlockLinear(
        c["in_sizes"],
        c["out_sizes"],
        shared=c["shared"],
        bias=c["bias"],
        backend=c["backend"],
        device=device,
        dtype=dtype,
    )


register(
    Adapter(
        BlockLinear,
        lambda m: {
            **_block_config(list(m.in_sizes), list(m.out_sizes)),
            "shared": m.shared,
            "bias": m.bias is not None,
            "backend": m.backend,
        },
        _block_build,
        _block_edges,
        family=nn.Linear,
        sizes=_features,
        rewire=_rewire_blocks,
    )
)


def _sparse_config(m: SparseLinear) -> dict[str, Any]:
    """The sizes, connection count and names; the connections themselves are the
    ``indptr``/``indices`` of the ``state_dict`` (see :func:`_sparse_saved_structure`)."""
    return {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "nnz": m.nnz,
        "bias": m.bias is not None,
        "backend": m.backend,
        "input_names": _names(m.wiring.input_names),
        "output_names": _names(m.wiring.output_names),
    }


def _sparse_saved_structure(
    config: dict[str, Any], state: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """The wiring of a saved SparseLinear ``config``: its connections are the ``indptr`` and
    ``indices`` of the ``state_dict`` (names: the config, or 0.1.0's dict ``_extra_state``)."""
    names = {k: config.get(k) for k in ("input_names", "output_names")}
    extra = state.get(prefix + "_extra_state")
    if isinstance(extra, dict):  # torchwire 0.1.0 kept the names there
        names = {k: extra.get(k) for k in names}
    wiring = Wiring(
        state[prefix + "indptr"].cpu(),
        state[prefix + "indices"].cpu(),
        config["in_features"],
        config["out_features"],
        **names,
    )
    return {"wiring": wiring}


def _sparse_build(c: dict[str, Any], device: Any, dtype: Any) -> nn.Module:
    """``c`` also holds the ``wiring`` (see :func:`full_config`)."""
    return SparseLinear(c["wiring"], c["bias"], backend=c["backend"], device=device, dtype=dtype)


register(
    Adapter(
        SparseLinear,
        _sparse_config,
        _sparse_build,
        lambda m: (m.wiring, m.weight.detach()),
        family=nn.Linear,
        sizes=_features,
        rewire=_rewire_sparse,
        structure=lambda m: {"wiring": m.wiring},
        saved_structure=_sparse_saved_structure,
    )
)


def _multi_edges(m: MultiLinear) -> tuple[Wiring, torch.Tensor]:
    """One wiring over the concatenated inputs: everything connects."""
    wiring = Wiring.block_diagonal([sum(m.in_features)], [m.out_features])
    values = torch.cat([w.detach() for w in m.weights], 1)
    return wiring, values.reshape(-1)


register(
    Adapter(
        MultiLinear,
        lambda m: {
            "in_features": list(m.in_features),
            "out_features": m.out_features,
            "bias": m.bias is not None,
        },
        lambda c, device, dtype: MultiLinear(
            c["in_features"], c["out_features"], c["bias"], device=device, dtype=dtype
        ),
        _multi_edges,
        sizes=lambda m: (sum(m.in_features), int(m.out_features)),
        dense=True,
    )
)


def _conv_config(m: Any) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _conv_builder(kind: type[nn.Module]) -> Callable[..., nn.Module]:
    def build(c: dict[str, Any], device: Any, dtype: Any) -> nn.Module:
        args = {k: v for k, v in c.items() if k not in ("in_channels", "out_channels")}
        return kind(c["in_channels"], c["out_channels"], **args, device=device, dtype=dtype)

    return build


def _norm_config(m: Any) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


def _norm_builder(kind: type[nn.Module]) -> Callable[..., nn.Module]:
    def build(c: dict[str, Any], device: Any, dtype: Any) -> nn.Module:
        args = {k: v for k, v in c.items() if k != "num_features"}
        return kind(c["num_features"], **args, device=device, dtype=dtype)

    return build


for _spatial, _kind in enumerate(CONVS, 1):
    register(
        Adapter(
            _kind,
            _conv_config,
            _conv_builder(_kind),
            family=_kind,
            spatial=_spatial,
            sizes=_channels,
            dense=True,
        )
    )
for _kind in NORMS:
    register(Adapter(_kind, _norm_config, _norm_builder(_kind)))
del _kind, _spatial


def conv_like(conv: Any, weight: torch.Tensor, bias: torch.Tensor | None, **changes: Any) -> Any:
    """A convolution of ``conv``'s type and settings, with ``changes`` (say a new
    ``kernel_size`` or ``padding``), holding copies of ``weight`` and ``bias``; channel
    counts from ``weight``'s shape."""
    config = {**_conv_config(conv), **changes}
    config["out_channels"] = weight.shape[0]
    config["in_channels"] = weight.shape[1] * config["groups"]
    config["kernel_size"] = list(weight.shape[2:])
    config["bias"] = bias is not None
    new = ADAPTERS[type(conv)].build(config, weight.device, weight.dtype)
    return filled(new, weight.detach(), None if bias is None else bias.detach())
