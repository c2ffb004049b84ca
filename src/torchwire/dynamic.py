"""Dynamic sparse training: drop weak connections, grow new ones, keep the optimizer valid.

:class:`DynamicSparsity` rewires the :class:`~torchwire.SparseLinear` layers of a model
during training (SET grows at random, RigL where the gradient is largest) while every layer
keeps its number of connections, its ``Parameter`` objects and the optimizer's per-connection
state, moved to follow each surviving connection.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeGuard

import torch
import torch.distributed as dist
from torch import nn

from torchwire import _surgery
from torchwire._checks import renamed
from torchwire.layers import SparseLinear
from torchwire.wiring import Wiring

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup
    from torch.distributed.tensor import DTensor

__all__ = ["DynamicSparsity"]

_CHUNK_ELEMENTS = 1 << 22  # dense gradient scores are computed this many at a time
_DENSE_CANDIDATES = 1 << 24  # random growth lists absent connections up to this many


class DynamicSparsity:
    r"""Prune-and-regrow for the :class:`~torchwire.SparseLinear` layers of a model.

    Call :meth:`step` after every ``optimizer.step()``. Every ``update_every`` steps each
    layer drops its ``f`` weakest connections (smallest ``|w|``) and grows ``f`` new ones
    where there was none, so its connection count stays constant; new connections start at
    zero. ``f`` is ``drop_fraction`` of the layer's connections, decayed with a cosine to
    zero at ``end_step`` (RigL's schedule); after ``end_step`` nothing changes. With
    ``end_step=None`` it stays at ``drop_fraction`` for the whole run.

    Growth by ``"gradient"`` (RigL) picks the absent connections with the largest
    :math:`|\partial L / \partial w|` of the last step, computed from the layer's input and
    output gradient in chunks of rows, never as one dense ``(out, in)`` gradient; the
    forward and backward of the step before an update are recorded for it. ``"random"``
    (SET) picks uniformly among absent connections.

    Rewiring happens in place: the layers keep their ``weight`` and ``bias`` Parameter
    objects (so the optimizer keeps updating them) and every optimizer state tensor shaped
    like a weight (momentum, Adam's moments, ...) and the gradient are remapped: a surviving
    connection keeps its state, a new one starts at zero. Nothing happens while the model
    is in eval mode. With ``torch.compile``, create it before compiling the model (gradient
    growth records through forward hooks, which a compiled graph only sees if they exist
    when it is traced).

    In distributed data-parallel training every rank takes the same decisions, so the
    replicas stay identical: with ``torch.distributed`` initialised and more than one rank
    in ``process_group``, the gradient scores of growth are summed over the ranks (growth
    sees the gradient of the whole global batch, as one process trained on all of it
    would), rank 0 chooses what to drop and grow and broadcasts the new connections, and
    every rank moves its values, gradient and optimizer state alike. This holds under
    ``DistributedDataParallel`` (given the DDP model or the module inside it) and FSDP2's
    ``fully_shard`` (sharded weights and optimizer state are gathered, remapped and sharded
    again; the index buffers, which are not sharded, are rewritten on every rank). Every
    rank must call :meth:`step` as often as the others: each update is a collective. An
    update first checks that the ranks have the same step count, connections and (unless
    sharded) weights, and raises ``RuntimeError`` on every rank where they differ, since
    the ranks could then no longer be rewired alike; models that are not replicas of each
    other (one model per process) need a ``process_group`` of their own process.

    Args:
        model: the model; its SparseLinear layers whose weight requires grad are rewired
            (freeze a layer with ``weight.requires_grad_(False)`` to leave it out).
        optimizer: the optimizer updating them (every such layer's weight must be in it).
        update_every: steps between rewirings. Default: ``100``.
        drop_fraction: fraction of each layer's connections replaced, in ``(0, 1]``: at
            every update without ``end_step``, else the start of the cosine (an update at
            step ``t`` replaces ``drop_fraction / 2 * (1 + cos(pi * t / end_step))``).
            Default: ``0.3``.
        end_step: where the fraction reaches zero: no rewiring from this step on; ``None``
            for no end and no decay. Default: ``None``.
        score: how growth candidates (absent connections) are scored: ``"gradient"``
            (RigL: the largest gradient magnitudes grow) or ``"random"`` (SET). Default:
            ``"gradient"``. (Formerly ``grow=``, deprecated.)
        seed: seed of the random growth. Default: ``None`` (drawn from torch's global
            generator; in distributed training, rank 0's generator draws for all ranks).
            Ties in magnitude drop the earlier connection first.
        process_group: the processes holding replicas of the model, which rewire alike.
            Default: ``None``: the DDP model's process group where ``model`` is a
            ``DistributedDataParallel``, else the default group whenever
            ``torch.distributed`` is initialised. A group of one process (e.g. from
            ``torch.distributed.new_subgroups(1)``) rewires that process on its own.

    Examples::

        >>> model = nn.Sequential(
        ...     torchwire.SparseLinear(torchwire.Wiring.random(20, 30, density=0.1, seed=0)),
        ...     nn.ReLU(),
        ...     nn.Linear(30, 2),
        ... )
        >>> optimizer = torch.optim.Adam(model.parameters())
        >>> rewire = torchwire.DynamicSparsity(model, optimizer, update_every=2)
        >>> before = model[0].wiring
        >>> for _ in range(2):
        ...     loss = model(torch.randn(16, 20)).square().mean()
        ...     optimizer.zero_grad()
        ...     loss.backward()
        ...     optimizer.step()
        ...     rewire.step()
        >>> model[0].nnz, model[0].wiring != before
        (60, True)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        update_every: int = 100,
        drop_fraction: float = 0.3,
        end_step: int | None = None,
        score: str = "gradient",
        seed: int | None = None,
        process_group: ProcessGroup | None = None,
        **deprecated: Any,
    ) -> None:
        score = renamed("DynamicSparsity", deprecated, "grow", "score", score, "gradient")
        if not isinstance(model, nn.Module):
            raise TypeError(f"DynamicSparsity expected an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"DynamicSparsity expected a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        _check_int(update_every, "update_every", 1)
        if end_step is not None:
            _check_int(end_step, "end_step", 0)
        _check_fraction(drop_fraction)
        if score not in ("gradient", "random"):
            raise ValueError(f"score must be 'gradient' or 'random', got {score!r}")
        self.layers = {
            name: m
            for name, m in model.named_modules()
            if isinstance(m, SparseLinear) and m.weight.requires_grad
        }
        if not self.layers:
            raise ValueError(
                f"DynamicSparsity found no trainable SparseLinear layer in "
                f"{type(model).__name__}; convert layers first, e.g. with "
                "torchwire.sparsify(model, density=0.1)"
            )
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for name, m in self.layers.items():
            if id(m.weight) not in optimized:
                raise ValueError(
                    f"the weight of SparseLinear {name!r} is not in the optimizer; build the "
                    "optimizer from model.parameters(), or freeze the layer "
                    "(weight.requires_grad_(False)) to leave it out of rewiring"
                )
        if process_group is None and isinstance(model, nn.parallel.DistributedDataParallel):
            process_group = model.process_group
        if process_group is not None:
            _check_process_group(process_group)
        self.model = model
        self.optimizer = optimizer
        self.process_group = process_group
        self.update_every = int(update_every)
        self.drop_fraction = float(drop_fraction)
        self.end_step = None if end_step is None else int(end_step)
        self.score = score
        if seed is None:
            seed = int(torch.randint(2**62, (1,)))
        self._generator = torch.Generator().manual_seed(seed)
        self.step_count = 0
        self._records: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._handles = [
            m.register_forward_hook(self._recorder(name), with_kwargs=True)
            for name, m in self.layers.items()
            if score == "gradient"
        ]

    @property
    def grow(self) -> str:
        """Deprecated spelling of :attr:`score`."""
        warnings.warn(
            "DynamicSparsity.grow is deprecated; use DynamicSparsity.score",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.score

    def fraction(self, step: int) -> float:
        """The fraction of connections replaced by an update at ``step`` (0 if none)."""
        if step % self.update_every or (self.end_step is not None and step >= self.end_step):
            return 0.0
        if self.end_step is None:
            return self.drop_fraction
        return self.drop_fraction / 2 * (1 + math.cos(math.pi * step / max(self.end_step, 1)))

    def step(self) -> None:
        """Count one optimizer step; rewire when an update is due (training mode only)."""
        self.step_count += 1
        records, self._records = self._records, {}
        if self.model.training:
            fraction = self.fraction(self.step_count)
            if fraction > 0:
                missing = [name for name in self.layers if not records.get(name)]
                if self.score != "gradient":
                    missing = []
                group = self._group()
                # checked before any layer changes
                if group is not None and self._check_ranks(group, bool(missing)):
                    missing = missing or ["the layers of another rank"]
                if missing:
                    raise RuntimeError(
                        f"DynamicSparsity(score='gradient') saw no backward pass through "
                        f"{missing} on this update step; call loss.backward(), "
                        "optimizer.step(), then DynamicSparsity.step(), in training mode "
                        "(with torch.compile, create DynamicSparsity before compiling the "
                        "model: it records through hooks)"
                    )
                for name, layer in self.layers.items():
                    self._update(layer, fraction, records.get(name, []), group)

    def _group(self) -> ProcessGroup | None:
        """The process group that rewires alike, or ``None`` to rewire this process alone."""
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group
        if group is None:
            group = dist.group.WORLD
        return None if group is None or dist.get_world_size(group) == 1 else group

    def _check_ranks(self, group: ProcessGroup, missing: bool) -> bool:
        """Raise unless the ranks of ``group`` can be rewired alike; whether any rank
        missed the backward pass that gradient growth needs (one collective)."""
        structure = values = 0
        for position, layer in enumerate(self.layers.values(), 1):
            flat = layer.wiring.positions()
            shape = layer.in_features * 1_000_003 + layer.out_features
            structure += position * (_bits(flat) + 31 * _bits(flat * flat) + shape)
            weight = layer.weight.detach()
            if not _is_dtensor(weight):  # sharded weights are one tensor by construction
                values += position * _bits(weight)
        facts = {
            "step counts": self.step_count,
            "numbers of SparseLinear layers": len(self.layers),
            "connections": structure,
            "weights": values,
        }
        status = [_int64(x) for fact in (int(missing), *facts.values()) for x in (fact, -fact)]
        device = _collective_device(group, next(iter(self.layers.values())).weight.device)
        reduced = torch.tensor(status, dtype=torch.int64, device=device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX, group=group)
        high, low = reduced[0::2].tolist(), [-x for x in reduced[1::2].tolist()]
        differ = [what for what, h, lo in zip(facts, high[1:], low[1:], strict=True) if h != lo]
        if differ:
            raise RuntimeError(
                f"DynamicSparsity cannot rewire the ranks of its process group alike at step "
                f"{self.step_count}: they hold different {' and '.join(differ)}. It expects "
                "replicas of one model (DistributedDataParallel or fully_shard) on which "
                "every rank calls step() after each optimizer step; to rewire each process "
                "on its own, pass process_group=a group of that process alone (e.g. from "
                "torch.distributed.new_subgroups(1))"
            )
        return bool(high[0])

    def _recording(self) -> bool:
        """Whether the coming forward and backward are those of an update step."""
        return self.model.training and self.fraction(self.step_count + 1) > 0

    def _recorder(self, name: str) -> Any:
        def hook(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor
        ) -> None:
            if not (self._recording() and output.requires_grad):
                return
            x = (args[0] if args else kwargs["input"]).detach()

            def keep(grad: torch.Tensor) -> None:
                self._records.setdefault(name, []).append((x, grad.detach()))

            output.register_hook(keep)

        return hook

    def _update(
        self,
        layer: SparseLinear,
        fraction: float,
        records: list[tuple[torch.Tensor, torch.Tensor]],
        group: ProcessGroup | None,
    ) -> None:
        wiring = layer.wiring
        count = min(
            round(fraction * wiring.nnz), wiring.in_features * wiring.out_features - wiring.nnz
        )
        if count <= 0:
            return
        weight = layer.weight
        values = _full(weight.detach())
        present = wiring.positions()  # sorted ids output * in_features + input
        deciding = group is None or dist.get_rank(group) == 0  # rank 0 decides for all
        device = None if group is None else _collective_device(group, values.device)
        if self.score == "gradient":
            reduce = None if group is None else _reducer(group, device)
            grown = _largest_gradients(present, wiring, count, records, reduce)
        elif deciding:
            grown = _random_absent(present, wiring, count, self._generator)
        if deciding:
            keep = torch.ones(wiring.nnz, dtype=torch.bool)
            keep[_surgery.lowest(values.abs().cpu(), count)] = False
            flat, _ = torch.sort(torch.cat([present[keep], grown]))
        else:
            flat = torch.empty(wiring.nnz, dtype=torch.int64)
        if group is not None:
            flat = flat.to(device)
            dist.broadcast(flat, src=dist.get_global_rank(group, 0), group=group)
            flat = flat.cpu()
        new = Wiring.from_positions(
            flat,
            wiring.in_features,
            wiring.out_features,
            input_names=wiring.input_names,
            output_names=wiring.output_names,
        )
        kept = torch.isin(present, flat)  # grown connections were all absent
        where = torch.searchsorted(flat, present[kept]).to(values.device)
        kept = kept.to(values.device)
        layer.rewire_(new)
        with torch.no_grad():
            _remap(weight, where, kept)
            if weight.grad is not None:
                _remap(weight.grad, where, kept)
            for state in self.optimizer.state.get(weight, {}).values():
                if isinstance(state, torch.Tensor) and state.shape == weight.shape:
                    _remap(state, where, kept)

    def remove(self) -> None:
        """Detach the recording hooks from the layers (no more updates can grow by gradient)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict[str, Any]:
        """The step count and random state, to resume a run (the wirings live in the model)."""
        return {"step_count": self.step_count, "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return (
            f"DynamicSparsity(layers={len(self.layers)}, update_every={self.update_every}, "
            f"drop_fraction={self.drop_fraction}, end_step={self.end_step}, score={self.score!r})"
        )


def _check_int(value: object, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def _check_fraction(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"drop_fraction must be a float, got {type(value).__name__}")
    if not 0.0 < float(value) <= 1.0:
        raise ValueError(f"drop_fraction must be in (0, 1], got {value}")


def _check_process_group(group: object) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "DynamicSparsity got a process_group, but torch.distributed is not initialised; "
            "call torch.distributed.init_process_group() first, or leave process_group=None"
        )
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"process_group must be a torch.distributed.ProcessGroup, got {type(group).__name__}"
        )
    if dist.get_rank(group) < 0:
        raise ValueError(
            f"this process (rank {dist.get_rank()}) is not in the process_group given to "
            "DynamicSparsity; pass a group that holds it (each rank its own, e.g. from "
            "torch.distributed.new_subgroups)"
        )


def _collective_device(group: ProcessGroup, device: torch.device) -> torch.device:
    """Where tensors for ``group``'s collectives live: the layers' device, or the CPU where
    the layers are there or the backend is gloo alone."""
    if device.type == "cpu" or dist.get_backend(group) == "gloo":
        return torch.device("cpu")
    return device


def _reducer(
    group: ProcessGroup, device: torch.device | None
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """A function summing a tensor over ``group`` into its rank 0 (``None`` elsewhere)."""
    root = dist.get_global_rank(group, 0)
    deciding = dist.get_rank(group) == 0

    def reduce(t: torch.Tensor) -> torch.Tensor | None:
        t = t.to(device).contiguous()
        dist.reduce(t, dst=root, group=group)
        return t if deciding else None

    return reduce


def _is_dtensor(t: torch.Tensor) -> TypeGuard[DTensor]:
    """Whether ``t`` is a DTensor (a parameter sharded by FSDP2, for example)."""
    if not dist.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _full(t: torch.Tensor) -> torch.Tensor:
    """``t`` whole on every rank: a DTensor's ``full_tensor()`` (a collective), else ``t``."""
    return t.full_tensor() if _is_dtensor(t) else t


_INTS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> int:
    """The sum of ``t``'s elements read as integers: tensors that are bit for bit equal
    have the same (wrapped to 64 bits, whatever the order of summation)."""
    flat = t.contiguous().view(-1)
    flat = flat.view(_INTS.get(flat.element_size(), torch.uint8))
    return int(flat.sum(dtype=torch.int64))


def _int64(value: int) -> int:
    """``value`` wrapped to a signed 64-bit integer."""
    return (value + 2**63) % 2**64 - 2**63


def _remap(t: torch.Tensor, where: torch.Tensor, kept: torch.Tensor) -> None:
    """In place: survivor ``kept`` values move to positions ``where``; the rest become 0.

    A DTensor is gathered, remapped and sharded again as it was (every rank alike)."""
    if _is_dtensor(t):
        from torch.distributed.tensor import distribute_tensor

        full = t.full_tensor()
        _remap(full, where, kept)
        shards = distribute_tensor(full, t.device_mesh, t.placements, src_data_rank=None)
        t.to_local().copy_(shards.to_local())
        return
    survivors = t[kept].clone()
    t.zero_()
    t[where] = survivors


def _random_absent(
    present: torch.Tensor, wiring: Wiring, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` distinct absent connection ids, uniformly at random."""
    total = wiring.in_features * wiring.out_features
    if total <= _DENSE_CANDIDATES:
        absent = torch.ones(total, dtype=torch.bool)
        absent[present] = False
        candidates = absent.nonzero()[:, 0]
        return candidates[torch.randperm(candidates.numel(), generator=generator)[:count]]
    found = torch.zeros(0, dtype=torch.int64)
    while found.numel() < count:
        draws = torch.randint(total, (2 * count + 16,), generator=generator)
        draws = draws[~torch.isin(draws, present)]
        found = torch.unique(torch.cat([found, draws]))
    return found[torch.randperm(found.numel(), generator=generator)[:count]]


def _largest_gradients(
    present: torch.Tensor,
    wiring: Wiring,
    count: int,
    records: list[tuple[torch.Tensor, torch.Tensor]],
    reduce: Callable[[torch.Tensor], torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """The ``count`` absent connection ids of largest ``|sum_b g_b^T x_b|``, computed a
    chunk of output rows at a time.

    With ``reduce``, each chunk of the gradient goes through it (a sum over ranks, say):
    where it returns ``None`` nothing is chosen and the result is empty."""
    n_in, n_out = wiring.in_features, wiring.out_features
    pairs = [(x.reshape(-1, n_in), g.reshape(-1, n_out)) for x, g in records]
    rows = max(1, _CHUNK_ELEMENTS // max(n_in, 1))
    best_scores = torch.zeros(0, dtype=torch.float64)
    best_ids = torch.zeros(0, dtype=torch.int64)
    for start in range(0, n_out, rows):
        stop = min(start + rows, n_out)
        grad: Any = sum(g[:, start:stop].T.double() @ x.double() for x, g in pairs)
        if reduce is not None:
            grad = reduce(grad)
            if grad is None:
                continue
        scores = grad.abs().flatten().cpu()
        inside = present[(present >= start * n_in) & (present < stop * n_in)] - start * n_in
        scores[inside] = -1.0  # present connections are not candidates
        top = torch.topk(scores, min(count, scores.numel()))
        best_scores = torch.cat([best_scores, top.values])
        best_ids = torch.cat([best_ids, top.indices + start * n_in])
        if best_scores.numel() > count:
            keep = torch.topk(best_scores, count).indices
            best_scores, best_ids = best_scores[keep], best_ids[keep]
    return best_ids  # absent ids only: at least `count` absent connections score >= 0
