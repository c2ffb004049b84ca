"""Pruning that makes models physically smaller: removed connections and units stop existing.

Edge pruning (:func:`edges`, :func:`global_edges`, :func:`sparsify`) returns
:class:`~torchwire.SparseLinear` layers that store only the surviving connections. Neuron
pruning (:func:`neurons`, :func:`dead_neurons`) removes hidden units: the producing layer
loses outputs, a BatchNorm between loses channels, the consuming layer loses inputs. Every
function returns a new module (rebuild the optimizer afterwards); the module given is never
changed, even when a call fails.

Neuron pruning follows units through ``nn.Sequential`` (nested or not, anywhere in the
model) and into the branches of a :class:`~torchwire.Parallel`: a unit is prunable when its
layer is followed, through elementwise modules only (activations, Dropout, Identity, a
BatchNorm in eval mode), by layers that read it as an input feature or channel. A removed
unit that is constant (its incoming weights are gone or zero) contributes a constant to the
next layer: that contribution is folded into the next layer's bias, so the outputs stay
exact where the unit was dead. Constants are computed as in eval mode.

Every rebuilt layer follows surgery's one policy (``torchwire._surgery``): it keeps the
replaced layer's train/eval mode, frozen parameters, device, dtype and backend setting. A
layer that would be rebuilt and has hooks or parametrizations is refused (``ValueError``),
since the new layer would lose them; ``torch.nn.utils.prune`` masks are read through.
"""

from __future__ import annotations

import copy
import itertools
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from torchwire import _surgery
from torchwire._checks import renamed
from torchwire.containers import Parallel
from torchwire.layers import SparseLinear
from torchwire.wiring import Wiring

__all__ = ["dead_neurons", "edges", "global_edges", "neurons", "sparsify"]

_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.LogSigmoid, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Threshold, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)  # fmt: skip
Filter = Callable[[str, nn.Module], bool]


# ---------------------------------------------------------------------------- edge pruning


def edges(
    module: nn.Module,
    amount: int | float | None = None,
    threshold: float | None = None,
    *,
    score: str = "magnitude",
    seed: int | None = None,
    **deprecated: Any,
) -> SparseLinear:
    """Remove connections of a linear layer; returns a compact :class:`SparseLinear`.

    Exactly one of ``amount`` and ``threshold`` chooses what goes. Pruning a
    :class:`SparseLinear` again removes from its remaining connections, so repeated pruning
    is cumulative, as with ``torch.nn.utils.prune``. The result computes what the masked
    dense layer computes, with storage and time proportional to the connections left.

    Args:
        module: an ``nn.Linear``, :class:`BlockLinear` (not shared) or :class:`SparseLinear`.
        amount: connections to remove: a float in ``[0, 1]`` is a fraction of the current
            connections (rounded), an int an exact count (torch's semantics). Exactly that
            many are removed even when magnitudes tie (the earliest in ``wiring.edges()``
            order go first).
        threshold: remove every connection with ``|w| <= threshold`` (``score="magnitude"``
            only); ``threshold=0`` drops exact zeros.
        score: ``"magnitude"`` (smallest ``|w|`` first) or ``"random"``. (Formerly
            ``method=``, deprecated.)
        seed: seed for ``score="random"``. Default: ``None`` (torch's global generator).

    Returns:
        A new :class:`SparseLinear` on the module's device and dtype, with its bias, mode
        and frozen parameters.

    Raises:
        ValueError: the module has hooks or parametrizations (``torch.nn.utils.prune``
            masks are read through), which the new layer would lose.

    Warns:
        UserWarning: the result holds more bytes than the module: each connection costs a
            value and an int32 index, so a float32 ``nn.Linear`` that keeps more than about
            half its connections grows (``sparsify``, ``global_edges`` warn alike).

    Examples::

        >>> dense = nn.Linear(100, 50)
        >>> sparse = torchwire.prune.edges(dense, amount=0.9)
        >>> sparse.nnz, sparse.weight.numel() < dense.weight.numel()
        (500, True)
        >>> torchwire.prune.edges(sparse, amount=0.5).nnz     # cumulative
        250
    """
    _check_linear(module, "prune.edges")
    _check_plain(module, "", "prune.edges")
    if (amount is None) == (threshold is None):
        raise ValueError(
            "prune.edges takes exactly one of amount (fraction or count of connections) and "
            f"threshold (remove |w| <= threshold), got amount={amount!r}, threshold={threshold!r}"
        )
    score = renamed("torchwire.prune.edges", deprecated, "method", "score", score, "magnitude")
    _check_score(score, ("magnitude", "random"))
    return _edges(module, amount, threshold, score, seed, "", stacklevel=4)


def _edges(
    module: nn.Module,
    amount: int | float | None,
    threshold: float | None,
    score: str,
    seed: int | None,
    name: str,
    stacklevel: int,
) -> SparseLinear:
    """:func:`edges` of a checked module and arguments (``name``, ``stacklevel``: as
    :func:`_sparse_with` takes them)."""
    wiring, values = _surgery.edges(module)
    if threshold is not None:
        if score != "magnitude":
            raise ValueError("threshold only applies to score='magnitude'")
        _check_real(threshold, "threshold")
        keep = (values.abs() > threshold).cpu()
    else:
        count = _amount_count(amount, wiring.nnz)
        keep = torch.ones(wiring.nnz, dtype=torch.bool)
        keep[_surgery.lowest(_scores(values, score, seed), count)] = False
    kept = values[keep.to(values.device)]
    return _sparse_with(module, wiring.select_edges(keep), kept, name, stacklevel)


def global_edges(
    model: nn.Module,
    amount: int | float,
    *,
    score: str = "magnitude",
    seed: int | None = None,
    filter: Filter | None = None,
    **deprecated: Any,
) -> nn.Module:
    """Remove connections ranked across all linear layers of ``model`` at once.

    Like ``torch.nn.utils.prune.global_unstructured``, but the result is smaller: every layer
    that loses a connection becomes a :class:`SparseLinear` holding only the rest.

    Args:
        model: any module; its ``nn.Linear``, :class:`BlockLinear` and :class:`SparseLinear`
            layers (those ``filter`` selects) are ranked together. A shared BlockLinear
            cannot lose single connections and is left out.
        amount: connections to remove in total: fraction (float) or count (int).
        score: ``"magnitude"`` or ``"random"``. (Formerly ``method=``, deprecated.)
        seed: seed for ``score="random"``.
        filter: ``filter(name, module) -> bool``, asked about each linear layer, chooses
            them. Default: every ``nn.Linear`` (exactly that type), unshared BlockLinear and
            SparseLinear.

    Returns:
        A new model (the input is unchanged). A selected layer with hooks or
        parametrizations raises ``ValueError`` (prune masks are read through).

    Examples::

        >>> model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
        >>> pruned = torchwire.prune.global_edges(model, amount=0.8)
        >>> sum(m.nnz for m in pruned.modules() if isinstance(m, torchwire.SparseLinear))
        150
    """
    score = renamed(
        "torchwire.prune.global_edges", deprecated, "method", "score", score, "magnitude"
    )
    _check_score(score, ("magnitude", "random"))
    layers = _layers(model, filter, "prune.global_edges")
    pairs = [_surgery.edges(m) for _, m in layers]
    scores = _scores(torch.cat([v.reshape(-1).cpu() for _, v in pairs]), score, seed)
    count = _amount_count(amount, scores.numel())
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[_surgery.lowest(scores, count)] = False
    new = _copy(model)
    start = 0
    for (name, _), (wiring, values) in zip(layers, pairs, strict=True):
        mine = keep[start : start + wiring.nnz]
        start += wiring.nnz
        if not bool(mine.all()):
            old = new.get_submodule(name)
            kept = values[mine.to(values.device)]
            pruned = _sparse_with(old, wiring.select_edges(mine), kept, name, stacklevel=3)
            new = _replace(new, old, pruned)
    return new


def sparsify(model: nn.Module, density: float, *, filter: Filter | None = None) -> nn.Module:
    """Convert the ``nn.Linear`` layers of ``model`` into :class:`SparseLinear` layers that
    keep the ``density`` fraction of each layer's largest weights (by magnitude).

    Args:
        model: any module.
        density: fraction of each layer's connections to keep, in ``[0, 1]``
            (``round(density * in * out)`` of them).
        filter: ``filter(name, module) -> bool``, asked about each ``nn.Linear`` (and
            subclass), chooses the layers. Default: those whose type is exactly
            ``nn.Linear`` (subclasses, such as attention's output projection, are read
            directly by their owners and left alone).

    Returns:
        A new model (the input is unchanged). A selected layer with hooks or
        parametrizations raises ``ValueError`` (prune masks are read through).

    Examples::

        >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        >>> small = torchwire.sparsify(model, density=0.1)
        >>> [m.nnz for m in small if isinstance(m, torchwire.SparseLinear)]
        [819, 128]
    """
    _check_real(density, "density")
    if not 0.0 <= float(density) <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    layers = _layers(model, filter, "sparsify", (nn.Linear,))
    new = _copy(model)
    for name, module in layers:
        total = module.in_features * module.out_features
        old = new.get_submodule(name)
        amount = total - round(float(density) * total)
        pruned = _edges(old, amount, None, "magnitude", None, name, stacklevel=4)
        new = _replace(new, old, pruned)
    return new


# ---------------------------------------------------------------------------- neurons


def neurons(
    model: nn.Module,
    amount: int | float,
    *,
    score: str | Callable[[nn.Module], torch.Tensor] = "l2",
    filter: Filter | None = None,
    **deprecated: Any,
) -> nn.Module:
    """Remove the weakest hidden units of every prunable layer; returns a smaller model.

    For each layer whose outputs feed other layers (see the module docstring), the units
    with the lowest ``score`` go: the layer's output rows, a BatchNorm's channels
    and the next layers' input columns are cut out of the stored weights. A removed unit's
    constant part (its bias, through the activation) is folded into the next layer's bias,
    so the result computes what the model with the removed units' incoming weights zeroed
    computes (``torch.nn.utils.prune.ln_structured``'s masked model), physically smaller.

    Args:
        model: the model; modules used at two places, and units that pass through a
            module with hooks between the layers, are left whole. A layer or BatchNorm that
            would be rebuilt and has hooks or parametrizations raises ``ValueError``
            (``torch.nn.utils.prune`` masks are read through); ``filter`` can leave it out.
        amount: units to remove from each prunable layer: fraction (float, rounded) or
            count (int), with torch's validation; at least one unit must stay.
        score: ``"l2"`` or ``"l1"`` norm of each unit's incoming weights, or
            ``score(layer) -> Tensor`` of one score per output unit (lowest removed).
            (Formerly ``criterion=``, deprecated.)
        filter: ``filter(name, layer) -> bool`` chooses the producing layers pruned.
            Default: all.

    Returns:
        A new model (the input is unchanged). Conv layers with ``groups > 1`` are not pruned.
        Folding a constant into a zero-padded conv is exact only away from the border; a
        warning says so when it happens.

    Examples::

        >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
        >>> torchwire.prune.neurons(model, amount=0.25)
        Sequential(
          (0): Linear(in_features=8, out_features=24, bias=True)
          (1): ReLU()
          (2): Linear(in_features=24, out_features=2, bias=True)
        )
    """
    score = renamed("torchwire.prune.neurons", deprecated, "criterion", "score", score, "l2")
    if not (callable(score) or score in ("l1", "l2")):
        raise ValueError(f"score must be 'l1', 'l2' or a callable, got {score!r}")
    _check_amount(amount)
    new = _copy(model)
    plan = _Plan("prune.neurons")
    for link in _links(new):
        if filter is not None and not filter(link.name, link.producer):
            continue
        plan.check(link)
        units = _units(link.producer)
        count = _amount_count(amount, units)
        if count == units:
            raise ValueError(
                f"prune.neurons would remove all {units} units of {link.name!r}; use a smaller "
                "amount (at least one unit must stay)"
            )
        scores = _unit_scores(link, score)
        remove = torch.zeros(units, dtype=torch.bool)
        remove[_surgery.lowest(scores, count)] = True
        plan.remove(link, remove, warn=True)
    if not plan.layers:
        raise ValueError(
            f"prune.neurons found no prunable hidden units in {type(model).__name__}: it needs "
            "layers in an nn.Sequential followed (through activations, Dropout or an eval-mode "
            "BatchNorm) by layers reading their outputs"
            + ("; filter selected none" if filter is not None else "")
        )
    return plan.apply(new)


def dead_neurons(model: nn.Module) -> nn.Module:
    """Remove hidden units that no longer do anything; the outputs stay the same.

    A unit is dead when nothing reaches it (no incoming connection: its layer's row is empty,
    or all zero for dense layers) or nothing reads it (no outgoing connection in any next
    layer). Typical after edge pruning. A dead unit's constant output (its bias through the
    activation) is folded into the next layer's bias; where that would create biases with
    more parameters than the removal saves, units with a nonzero constant are kept. The
    model never grows. Removal repeats until no dead unit is left, since removing one can
    leave others without connections.

    Computed as in eval mode; units whose constant would reach a zero-padded conv (where it
    is not constant at the border) are kept. A layer or BatchNorm it examines that has
    hooks or parametrizations raises ``ValueError`` (``torch.nn.utils.prune`` masks are
    read through), as in :func:`neurons`.

    Examples::

        >>> w = torchwire.Wiring.from_mask(torch.tensor([[1, 1], [0, 0], [1, 0]]))
        >>> model = nn.Sequential(torchwire.SparseLinear(w), nn.ReLU(), nn.Linear(3, 1))
        >>> torchwire.prune.dead_neurons(model)[0]
        SparseLinear(in_features=2, out_features=2, nnz=3, bias=True)
    """
    new = _copy(model)
    while True:
        plan = _dead_plan(new, new_biases=True)
        if plan.growth() > 0:
            # The biases that would fold the removed units' constants outweigh what the
            # removal saves: keep the units whose constant needs a new bias.
            plan = _dead_plan(new, new_biases=False)
        if not plan.layers:
            return new
        new = plan.apply(new)


def _dead_plan(model: nn.Module, *, new_biases: bool) -> _Plan:
    """The plan removing ``model``'s dead units (see :func:`dead_neurons`); with
    ``new_biases=False``, a unit whose constant output would need a bias its consumer does
    not have is kept."""
    plan = _Plan("prune.dead_neurons")
    for link in _links(model):
        plan.check(link)
        dead = _fan(link.producer, "in") == 0
        if any(_zero_padded(c) for c in link.consumers) or (
            not new_biases and any(getattr(c, "bias", None) is None for c in link.consumers)
        ):
            dead &= _constants(link) == 0
        unread = torch.ones_like(dead)
        for consumer in link.consumers:
            unread &= _fan(consumer, "out") == 0
        dead |= unread
        if bool(dead.all()):
            dead[0] = False  # keep one unit: a zero-width layer helps nobody
        if bool(dead.any()):
            plan.remove(link, dead, warn=False)
    return plan


# ---------------------------------------------------------------------------- the plan


@dataclass
class _Link:
    """A layer (``producer``) whose outputs reach ``consumers`` through ``chain``, of which
    ``norms`` are BatchNorms (the modules pruning rebuilds: producer, norms, consumers)."""

    name: str
    producer: nn.Module
    chain: list[nn.Module]
    consumers: list[nn.Module]
    norms: list[nn.Module]
    names: dict[int, str]  # the model's modules' names, by id


@dataclass
class _Cut:
    keep_in: torch.Tensor | None = None
    keep_out: torch.Tensor | None = None
    bias_add: torch.Tensor | None = None
    norm: bool = False  # a BatchNorm: its channels (every per-channel state) are cut


@dataclass
class _Plan:
    operation: str
    layers: dict[int, tuple[nn.Module, _Cut]] = field(default_factory=dict)

    def _cut(self, module: nn.Module) -> _Cut:
        return self.layers.setdefault(id(module), (module, _Cut()))[1]

    def check(self, link: _Link) -> None:
        """Refuse the link if a module it would rebuild has hooks or parametrizations."""
        for m in (link.producer, *link.norms, *link.consumers):
            _check_plain(m, link.names[id(m)], self.operation)

    def remove(self, link: _Link, remove: torch.Tensor, *, warn: bool) -> None:
        keep = ~remove
        self._cut(link.producer).keep_out = keep
        for norm in link.norms:
            cut = self._cut(norm)
            cut.keep_out, cut.norm = keep, True
        # A removed unit's incoming weights count as zero (all of them, also those from
        # units removed upstream), so it sends its bias through the chain: the masked model.
        constants = torch.where(remove, _constants(link), 0.0)
        for consumer in link.consumers:
            cut = self._cut(consumer)
            cut.keep_in = keep
            if bool(constants.any()):
                if warn and _zero_padded(consumer):
                    warnings.warn(
                        f"prune.neurons folds the constant output of removed units into a "
                        f"zero-padded {type(consumer).__name__}: exact only away from the "
                        "border",
                        stacklevel=3,
                    )
                add = _bias_contribution(consumer, constants)
                # Through no connection, the constants add nothing: create no bias for it.
                if getattr(consumer, "bias", None) is not None or bool(add.any()):
                    cut.bias_add = add

    def growth(self) -> int:
        """How many parameters applying the plan adds (negative: removes)."""
        return sum(
            _parameter_count(_shrunk(module, cut)) - _parameter_count(module)
            for module, cut in self.layers.values()
        )

    def apply(self, model: nn.Module) -> nn.Module:
        for module, cut in self.layers.values():
            model = _replace(model, module, _shrunk(module, cut))
        return model


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _links(model: nn.Module) -> list[_Link]:
    """Every prunable producer of ``model`` with the modules its units flow through."""
    counts: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    names = {id(m): name for name, m in model.named_modules()}
    covered: set[str] = set()
    links = []
    for prefix, seq in model.named_modules():
        if type(seq) is not nn.Sequential or prefix in covered:
            continue
        leaves = _flatten(seq, f"{prefix}." if prefix else "", covered)
        for i, (name, producer) in enumerate(leaves):
            kind = _kind(producer)
            if kind is None:
                continue
            units = _units(producer)
            j = i + 1
            while j < len(leaves) and _elementwise(leaves[j][1], kind, units):
                j += 1
            if j == len(leaves):
                continue
            consumers = _entries(leaves[j][1], kind, units)
            if not consumers:
                continue
            chain = [m for _, m in leaves[i + 1 : j]]
            stateful = [producer, *consumers, *(m for m in chain if _has_state(m))]
            if any(counts[id(m)] > 1 for m in stateful):
                continue  # a module used twice: shrinking it would break its other use
            norms = [m for m in chain if type(m) is _surgery.UNIT_NORM[kind]]
            if not all(_surgery.plain(m, prune_masks=True) for m in chain if m not in norms):
                continue  # a hook between the layers could change the units: leave them
            links.append(_Link(name, producer, chain, consumers, norms, names))
    return links


def _flatten(seq: nn.Module, prefix: str, covered: set[str]) -> list[tuple[str, nn.Module]]:
    """The modules ``seq`` runs, in order (a module listed twice appears twice)."""
    leaves = []
    for name, child in seq._modules.items():
        if child is None:
            continue
        if type(child) is nn.Sequential:
            covered.add(prefix + name)
            leaves += _flatten(child, f"{prefix}{name}.", covered)
        else:
            leaves.append((prefix + name, child))
    return leaves


def _kind(m: nn.Module) -> type[nn.Module] | None:
    """The family of ``m``'s units (``_surgery.Adapter.family``: ``nn.Linear`` for linear
    layers, the conv type for convolutions) where pruning follows them, else ``None``
    (grouped convolutions, other modules)."""
    facts = _surgery.adapter(m)
    if facts is None or (facts.spatial and getattr(m, "groups", None) != 1):
        return None
    return facts.family


def _units(m: Any) -> int:
    return _surgery.units(m)[1]


def _elementwise(m: Any, kind: type[nn.Module], units: int) -> bool:
    if type(m) in _ELEMENTWISE:
        return True
    if type(m) is nn.PReLU:
        return m.num_parameters == 1
    return bool(
        type(m) is _surgery.UNIT_NORM[kind]
        and m.num_features == units
        and m.running_mean is not None
        and not m.training
    )


def _entries(m: Any, kind: type[nn.Module], units: int) -> list[nn.Module] | None:
    """The layers that read ``m``'s input as features (``None`` if something else does)."""
    if _kind(m) is kind:
        return [m] if _surgery.units(m)[0] == units else None
    if type(m) is nn.Sequential:
        first = next(iter(m.children()), None)
        return None if first is None else _entries(first, kind, units)
    if isinstance(m, Parallel):
        found: list[nn.Module] = []
        for branch in m.children():
            entries = _entries(branch, kind, units)
            if entries is None:
                return None
            found += entries
        return found or None
    return None


def _has_state(m: nn.Module) -> bool:
    return any(True for _ in m.parameters()) or any(True for _ in m.buffers())


def _unit_scores(link: _Link, score: Any) -> torch.Tensor:
    m: Any = link.producer
    units = _units(m)
    if callable(score):
        scores = torch.as_tensor(score(m)).detach()
        if tuple(scores.shape) != (units,):
            raise ValueError(
                f"score must return one score per output unit of {link.name!r}, shape "
                f"({units},), got {tuple(scores.shape)}"
            )
        return scores.double().cpu()
    power = 1 if score == "l1" else 2
    if _kind(m) is nn.Linear:
        wiring, values = _surgery.edges(m)
        rows = wiring.edges()[:, 1].to(values.device)
        sums = values.new_zeros(units, dtype=torch.float64)
        sums.index_add_(0, rows, values.double().abs() ** power)
    else:
        sums = m.weight.detach().double().abs().pow(power).flatten(1).sum(1)
    return sums.cpu() ** (1.0 / power)


def _fan(m: Any, side: str) -> torch.Tensor:
    """Connections into each output (``side="in"``) or out of each input (``"out"``);
    for dense layers a connection is a nonzero weight."""
    if not _surgery.known(m).dense:
        wiring, _ = _surgery.edges(m)
        return wiring.fan_in() if side == "in" else wiring.fan_out()
    nonzero: torch.Tensor = m.weight.detach() != 0
    return (nonzero if side == "in" else nonzero.transpose(0, 1)).flatten(1).sum(1).cpu()


def _zero_padded(m: Any) -> bool:
    if not _surgery.known(m).spatial:
        return False
    padding = m.padding
    padded = padding == "same" or (not isinstance(padding, str) and any(padding))
    return bool(padded) and m.padding_mode == "zeros"


def _constants(link: _Link) -> torch.Tensor:
    """float64 ``(units,)``: each unit's output when its incoming weights are zero, i.e. its
    bias (or zero) through ``chain`` in eval mode."""
    m: Any = link.producer
    units = _units(m)
    # a copy: an in-place activation in the chain must not write into the bias
    bias = m.bias.detach().clone() if m.bias is not None else m.weight.new_zeros(units)
    x = bias.view(1, units, *([1] * _surgery.known(m).spatial))
    with torch.no_grad():
        for step in link.chain:
            was = step.training
            step.train(False)
            try:
                x = step(x)
            finally:
                step.train(was)
    constants: torch.Tensor = x.reshape(units).double().cpu()
    return constants


def _bias_contribution(consumer: Any, constants: torch.Tensor) -> torch.Tensor:
    """float64 ``(out,)``: what inputs held at ``constants`` add to ``consumer``'s outputs."""
    if _kind(consumer) is nn.Linear:
        wiring, values = _surgery.edges(consumer)
        pairs = wiring.edges()
        total = torch.zeros(wiring.out_features, dtype=torch.float64)
        return total.index_add_(0, pairs[:, 1], values.double().cpu() * constants[pairs[:, 0]])
    kernel_sums: torch.Tensor = consumer.weight.detach().double().cpu().flatten(2).sum(2)
    return kernel_sums @ constants


def _shrunk(m: Any, cut: _Cut) -> Any:
    """``m`` without the inputs and outputs ``cut`` drops, ``cut.bias_add`` folded in."""
    keep_out: Any = cut.keep_out if cut.keep_out is not None else slice(None)
    if cut.norm:
        return _shrunk_norm(m, keep_out)
    bias = None if m.bias is None else m.bias.detach().double()
    if cut.bias_add is not None:
        add = cut.bias_add.to(m.weight.device)
        bias = add if bias is None else bias + add
    if bias is not None:
        bias = bias[keep_out].to(m.weight.dtype)
    if _kind(m) is not nn.Linear:  # an (ungrouped) convolution: cut its weight's channels
        keep_in = cut.keep_in if cut.keep_in is not None else slice(None)
        weight = m.weight.detach()[keep_out][:, keep_in]
        return _surgery.rebuilt(_surgery.conv_like(m, weight, bias), m)
    wiring, values = _surgery.edges(m)
    kept = wiring.selected_edges(cut.keep_in, cut.keep_out)
    sub = wiring.select(cut.keep_in, cut.keep_out)
    values = values[kept.to(values.device)]
    return _surgery.rebuilt(_surgery.rewired(m, sub, values, bias), m)


def _shrunk_norm(norm: Any, keep: torch.Tensor) -> Any:
    """A BatchNorm of the ``keep`` channels of ``norm`` (which tracks running statistics)."""
    found = _surgery.ADAPTERS[type(norm)]
    config = {**found.config(norm), "num_features": int(keep.sum())}
    new = found.build(config, norm.running_mean.device, norm.running_mean.dtype)
    state = norm.state_dict()
    new.load_state_dict({k: v[keep.to(v.device)] if v.ndim else v for k, v in state.items()})
    return _surgery.rebuilt(new, norm)


# ---------------------------------------------------------------------------- helpers


def _check_linear(module: object, where: str) -> None:
    if not isinstance(module, _surgery.LINEARS):
        raise TypeError(
            f"{where} expected an nn.Linear, BlockLinear or SparseLinear, got "
            f"{type(module).__name__}; for a whole model use torchwire.prune.global_edges or "
            "torchwire.sparsify"
        )
    if getattr(module, "shared", False):
        raise ValueError(
            f"{where} cannot prune a shared BlockLinear: its one block serves every group, so "
            "removing connections group by group would store more weights, not fewer; untie "
            "it first with SparseLinear.from_block(layer) if that is what you want"
        )


def _check_score(score: object, allowed: tuple[str, ...]) -> None:
    if score not in allowed:
        raise ValueError(f"score must be one of {list(allowed)}, got {score!r}")


def _check_real(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")


def _check_amount(amount: object) -> None:
    """torch.nn.utils.prune's checks and messages (bools are refused as well)."""
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or (
        not isinstance(amount, numbers.Integral) and not 0.0 <= float(amount) <= 1.0
    ):
        raise ValueError(
            f"amount={amount} should either be a float in the range [0, 1] or a non-negative "
            "integer"
        )


def _amount_count(amount: object, total: int) -> int:
    """How many of ``total`` items ``amount`` removes, validated as torch validates it."""
    _check_amount(amount)
    if isinstance(amount, numbers.Integral):
        if int(amount) > total:
            raise ValueError(
                f"amount={amount} should be smaller than the number of parameters to prune={total}"
            )
        return int(amount)
    return round(float(amount) * total)  # type: ignore[arg-type]


def _scores(values: torch.Tensor, score: str, seed: int | None) -> torch.Tensor:
    if score == "magnitude":
        return values.detach().abs().cpu()
    if seed is None:  # drawn from torch's global generator, so torch.manual_seed applies
        seed = int(torch.randint(2**62, (1,)))
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(values.numel(), generator=generator, dtype=torch.float64)


def _layers(
    model: nn.Module,
    filter: Filter | None,
    where: str,
    kinds: tuple[type[nn.Module], ...] = _surgery.LINEARS,
) -> list[tuple[str, Any]]:
    """The layers of ``model`` of ``kinds`` that ``filter`` selects (default: exact
    ``nn.Linear``, SparseLinear and unshared BlockLinear)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{where} expected an nn.Module, got {type(model).__name__}")
    if filter is None:
        filter = _prunable
    layers: list[tuple[str, Any]] = [
        (n, m) for n, m in model.named_modules() if isinstance(m, kinds) and filter(n, m)
    ]
    if not layers:
        raise ValueError(
            f"{where} found no layer to prune in {type(model).__name__}: it holds no "
            f"{' or '.join(k.__name__ for k in kinds)} layer (or filter selected none)"
        )
    for name, m in layers:
        _check_linear(m, f"{where} (filter selected {name!r})")
        _check_plain(m, name, where)
    return layers


def _prunable(name: str, m: nn.Module) -> bool:
    """Edge pruning's default layers: exact ``nn.Linear`` (subclasses, such as attention's
    output projection, are read directly by their owners), SparseLinear, unshared BlockLinear
    (also with hooks or parametrizations, which are then refused)."""
    return _kind(m) is nn.Linear and not getattr(m, "shared", False)


def _check_plain(m: nn.Module, name: str, operation: str) -> None:
    """Refuse ``m`` (called ``name`` in the model; ``""``: the module given) if it has hooks or
    parametrizations, except ``torch.nn.utils.prune`` masks, which pruning reads through."""
    label = f"layer {name!r} ({type(m).__name__})" if name else f"the {type(m).__name__}"
    _surgery.check_plain(m, label, operation, prune_masks=True)


def _sparse_with(
    module: Any, wiring: Wiring, values: torch.Tensor, name: str = "", stacklevel: int = 3
) -> SparseLinear:
    """``module`` rebuilt as a SparseLinear of ``wiring`` and ``values``; a UserWarning
    where that grows it, naming it by ``name`` (its path in the model, if any), for the
    frame ``stacklevel`` up (as ``warnings.warn`` counts from here: the user's call)."""
    bias = None if module.bias is None else module.bias.detach()
    layer = _surgery.rewired(module, wiring, values, bias, kind=SparseLinear)
    result = cast(SparseLinear, _surgery.rebuilt(layer, module))
    before, after = _nbytes(module), _nbytes(result)
    if after > before:
        what = f"{type(module).__name__}({module.in_features}, {module.out_features})"
        connections = _surgery.edges(module)[0].nnz
        who = f"layer {name!r} ({what})" if name else what
        warnings.warn(
            f"pruned into a SparseLinear, {who} grows from {before:,} to {after:,} bytes of "
            f"parameters and buffers: it keeps {result.nnz:,} of its {connections:,} "
            "connections, and each costs a value and an int32 index (at density 1/6 or "
            "less, two more int32 for the transposed structure). Keep fewer connections, or "
            "leave this layer as it is.",
            stacklevel=stacklevel,
        )
    return result


def _nbytes(module: nn.Module) -> int:
    return sum(t.nbytes for t in itertools.chain(module.parameters(), module.buffers()))


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy; also of modules pruned with ``torch.nn.utils.prune``, whose computed
    ``weight`` attribute (not a graph leaf) ``copy.deepcopy`` refuses: it is copied detached."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for value in vars(m).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    """Put ``new`` at every place ``model`` holds ``old``; returns the model (``new`` when
    ``old`` is the model itself)."""
    if model is old:
        return new
    names = [n for n, m in model.named_modules(remove_duplicate=False) if m is old]
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
    return model
