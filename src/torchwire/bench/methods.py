"""The methods of a case: the ways of computing the same thing that the block, sparse,
branches and merge sections time side by side on the same input.

:func:`measure` builds, warms up and times every method of a case (interleaved rounds,
:mod:`~torchwire.bench.timing`) and measures its memory (:mod:`~torchwire.bench.memory`);
:class:`Measured` holds what it found and computes the ratios the reports show.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.utils._pytree import tree_leaves

import torchwire
from torchwire.bench import memory, timing
from torchwire.bench.config import BenchConfig

__all__ = [
    "MODES",
    "Measured",
    "MethodResult",
    "backend_builders",
    "backend_of",
    "measure",
    "pruned",
]

MODES = ("fwd", "fwd_bwd")
"""Timed modes: forward under ``torch.no_grad()``; forward, then backward of a dense gradient."""


@dataclass
class MethodResult:
    """Timings (by mode), parameter + buffer bytes and peak fwd+bwd bytes of one method."""

    name: str
    timings: dict[str, timing.Timing]
    param_bytes: int
    peak_bytes: int


@dataclass
class Measured:
    """What every case measures: per-method results, by name, and the backends auto chose.

    Ratios divide by the median time of :attr:`reference`, a method of the same case;
    :attr:`alternatives` are the methods users write today instead of torchwire.
    """

    reference: ClassVar[str]
    alternatives: ClassVar[tuple[str, ...]]

    batch: int
    auto_backend: dict[str, str]
    methods: dict[str, MethodResult]
    skipped: dict[str, str]
    seconds: float

    def median(self, name: str, mode: str) -> float:
        return self.methods[name].timings[mode].median

    def ratio(self, name: str, mode: str) -> float:
        """Median time of method ``name`` divided by the median time of :attr:`reference`."""
        return self.median(name, mode) / self.median(self.reference, mode)

    def speedup_over(self, name: str, mode: str) -> float:
        """Median time of method ``name`` divided by that of ``torchwire`` (auto)."""
        return self.median(name, mode) / self.median("torchwire", mode)

    def fastest(self, names: Sequence[str], mode: str) -> str | None:
        present = [name for name in names if name in self.methods]
        return min(present, key=lambda name: self.median(name, mode), default=None)

    @property
    def backends(self) -> list[str]:
        """Names of the forced torchwire methods that ran, e.g. ``["torchwire[bmm]"]``."""
        return [name for name in self.methods if name.startswith("torchwire[")]

    def fastest_backend(self, mode: str) -> str | None:
        """The fastest forced backend in ``mode`` (compare with :attr:`auto_backend`)."""
        name = self.fastest(self.backends, mode)
        return None if name is None else backend_of(name)

    @property
    def alternative(self) -> str | None:
        """The fastest of :attr:`alternatives` in fwd+bwd."""
        return self.fastest(self.alternatives, "fwd_bwd")

    @property
    def speedup(self) -> float | None:
        """fwd+bwd time of :attr:`alternative` divided by that of ``torchwire``."""
        name = self.alternative
        return None if name is None else self.speedup_over(name, "fwd_bwd")

    def auto_vs_fastest(self, mode: str) -> float | None:
        """Time of the backend auto chose over that of the fastest one (both forced by name).

        1.0 when auto chose the fastest backend; ``None`` if no forced backend ran.
        """
        fastest = self.fastest_backend(mode)
        chosen = f"torchwire[{self.auto_backend[mode]}]"
        if fastest is None or chosen not in self.methods:
            return None
        return self.median(chosen, mode) / self.median(f"torchwire[{fastest}]", mode)

    def bytes_per_connection(self, name: str) -> float | None:
        """Bytes of method ``name`` per connection, where a case counts connections."""
        return None

    def label(self, name: str) -> str:
        if name != "torchwire":
            return name
        fwd, fwd_bwd = (self.auto_backend[mode] for mode in MODES)
        return f"torchwire (auto -> {fwd if fwd == fwd_bwd else f'{fwd} / {fwd_bwd}'})"

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        """What ``torchwire`` ran, by mode: the backend ``backend="auto"`` chose."""
        layer = cast(torchwire.BlockLinear | torchwire.SparseLinear, module)
        with torch.no_grad():  # auto may choose differently without autograd
            fwd = layer.resolve_backend(x)
        return {"fwd": fwd, "fwd_bwd": layer.resolve_backend(x_grad)}


def backend_of(name: str) -> str:
    """``"bmm"`` of ``"torchwire[bmm]"``."""
    return name.removeprefix("torchwire[").removesuffix("]")


def backend_builders(
    build: Callable[..., nn.Module], backends: Sequence[str]
) -> dict[str, Callable[..., nn.Module]]:
    """``torchwire``: ``build(backend="auto")``, and ``torchwire[NAME]`` for every backend."""
    builders: dict[str, Callable[..., nn.Module]] = {"torchwire": partial(build, backend="auto")}
    builders.update({f"torchwire[{b}]": partial(build, backend=b) for b in backends})
    return builders


class _Upstream(torch.autograd.Function):
    """Stands for the layers before the timed one: the input's gradient is computed and
    taken, as a hidden layer's is, and stored nowhere. (A leaf input would have
    ``AccumulateGrad`` copy a gradient of another layout into its own, which no hidden layer
    pays: csr's input gradient is column-major, which the layer before reads as it is.)"""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> None:
        return None


def _steps(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, Callable[[], None]]:
    params = [p for p in module.parameters() if p.requires_grad]

    with torch.no_grad():
        # A dense upstream gradient, as a hidden layer receives. (``out.sum().backward()``
        # would hand every method a stride-0 expanded gradient, which no BLAS call accepts
        # and which favours whichever method copies it least.) One per output of the heads.
        grad_out = [torch.randn_like(y) for y in tree_leaves(module(x))]

    def fwd() -> None:
        module(x)

    def fwd_bwd() -> None:
        # A training step's forward and backward of a hidden layer, as
        # ``optimizer.zero_grad()`` leaves it: every parameter's ``.grad`` None beforehand,
        # then ``backward`` stores them through ``AccumulateGrad`` (unlike
        # ``torch.autograd.grad``: a gradient that does not come out in its parameter's
        # layout pays a strided copy there, as it does in training), and the input's
        # gradient goes to the layers before (:class:`_Upstream`).
        for p in params:
            p.grad = None
        torch.autograd.backward(tree_leaves(module(_Upstream.apply(x_grad))), grad_out)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


M = TypeVar("M", bound=Measured)


def measure(
    result: type[M],
    builders: Mapping[str, Callable[..., nn.Module]],
    shape: tuple[int, ...],
    batch: int,
    config: BenchConfig,
    *,
    skipped: Mapping[str, str] | None = None,
    **fields: Any,
) -> M:
    """Measure every method of ``builders`` on a ``(batch, *shape)`` input.

    A forced backend (``torchwire[NAME]``) that fails to build or run joins ``skipped`` (the
    methods not built at all, with why); any other method that fails raises. Returns
    ``result(..., **fields)``.
    """
    start = time.perf_counter()
    skipped = dict(skipped or {})
    torch.manual_seed(config.seed)
    x = torch.randn(batch, *shape, **config.factory_kwargs)
    x_grad = x.detach().requires_grad_()
    sync = timing.synchronizer(config.device)

    modules: dict[str, nn.Module] = {}
    steps: dict[str, dict[str, Callable[[], None]]] = {}
    for name, build in builders.items():
        try:
            module = build(**config.factory_kwargs)
            module_steps = _steps(module, x, x_grad)
            for mode, step in module_steps.items():
                timing.seconds_per_call(step, 1, grad=mode == "fwd_bwd", sync=sync)
        except Exception as error:
            if not name.startswith("torchwire["):
                raise
            skipped[name] = f"{type(error).__name__}: {error}"
            continue
        modules[name], steps[name] = module, module_steps

    timings = {
        name: {
            mode: timing.Timing(
                timing.calibrate(fn, grad=mode == "fwd_bwd", sync=sync, min_time=config.min_time)
            )
            for mode, fn in module_steps.items()
        }
        for name, module_steps in steps.items()
    }
    groups = [
        [timing.Timed(steps[name][mode], mode == "fwd_bwd", timings[name][mode]) for mode in MODES]
        for name in steps
    ]
    gc.collect()  # the built and warmed-up methods' garbage, before the rounds
    timing.interleaved(groups, config.repeats, sync)
    methods = {
        name: MethodResult(
            name,
            timings[name],
            memory.state_bytes(module),
            memory.peak_bytes(steps[name]["fwd_bwd"], config.device),
        )
        for name, module in modules.items()
    }
    return result(
        batch=batch,
        auto_backend=result.chosen(modules["torchwire"], x, x_grad),
        methods=methods,
        skipped=skipped,
        seconds=time.perf_counter() - start,
        **fields,
    )


def pruned(mask: Tensor, **factory_kwargs: Any) -> nn.Linear:
    """A dense ``nn.Linear`` masked with ``torch.nn.utils.prune.custom_from_mask`` (``mask`` is
    shaped like its weight): what users write to keep only some connections."""
    linear = nn.Linear(mask.shape[1], mask.shape[0], **factory_kwargs)
    prune.custom_from_mask(linear, "weight", mask.to(linear.weight.device))
    return linear
