"""The bench's ``overhead`` section: what one call of each layer and container costs against
the torch code it replaces, at shapes so small that host work is all there is, and how many
ATen ops it runs (counted with :class:`OpCounter`; deterministic, so tests pin them).

Layers are compared with ``nn.Linear`` of the same in/out (4 -> 6): a no-grad forward at
batch 1 and a forward+backward at batch 64. Containers are compared with the ``nn.Module``
users write by hand for them: their branches (or the torch function they wrap) called
directly in its ``forward``, on the same shapes. The shapes, the CPU and float32 are fixed:
the section ignores the run's batch sizes, device and dtype (not its rounds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchwire as tw
from torchwire.bench import timing
from torchwire.bench.compare import NOT_BEST, span, times
from torchwire.bench.config import BenchConfig
from torchwire.bench.section import Summary, Table

__all__ = [
    "CASES",
    "CONTAINERS",
    "LAYERS",
    "SECTION",
    "OpCounter",
    "OverheadCase",
    "OverheadResult",
    "measure",
    "op_counts",
]

IN_FEATURES, OUT_FEATURES = 4, 6
SMALL_BATCH, LARGE_BATCH = 1, 64
MODES = ("fwd", "fwd_bwd")
MODE_TEXT = {
    "fwd": f"no-grad forward at batch {SMALL_BATCH}",
    "fwd_bwd": f"forward+backward at batch {LARGE_BATCH}",
}


@dataclass(frozen=True)
class OverheadCase:
    """A module and the torch code it replaces.

    ``build()`` returns ``(module, module_args, reference, reference_args)``: the two calls,
    and for each a function from a batch ``x`` of shape ``(B, 4)`` to its arguments (leaf
    tensors that require grad when ``x`` does)."""

    name: str
    description: str
    reference: str
    build: Callable[[], tuple[Callable[..., Any], Arguments, Callable[..., Any], Arguments]]


Arguments = Callable[[Tensor], tuple[Any, ...]]


def _whole(x: Tensor) -> tuple[Tensor]:
    return (x,)


def _halves(x: Tensor) -> tuple[Tensor, Tensor]:
    return (
        x[:, :2].detach().requires_grad_(x.requires_grad),
        x[:, 2:].detach().requires_grad_(x.requires_grad),
    )


def _pair(x: Tensor) -> tuple[tuple[Tensor, Tensor]]:
    return (_halves(x),)


def _layer(module: Callable[[], nn.Module], args: Arguments = _whole) -> Any:
    def build() -> tuple[nn.Module, Arguments, nn.Module, Arguments]:
        torch.manual_seed(0)
        return module(), args, nn.Linear(IN_FEATURES, OUT_FEATURES), _whole

    return build


class Written(nn.Module):
    """What users write today in place of a container: an ``nn.Module`` whose ``forward`` is
    the direct code (an ``nn.Sequential`` takes modules, not functions)."""

    def __init__(self, forward: Callable[..., Any], *modules: nn.Module) -> None:
        super().__init__()
        self.code = forward
        self.parts = nn.ModuleList(modules)

    def forward(self, *args: Any) -> Any:
        return self.code(*args)


def _parallel() -> tuple[nn.Module, Arguments, Callable[..., Any], Arguments]:
    a, b = nn.Linear(IN_FEATURES, 3), nn.Linear(IN_FEATURES, 3)
    written = Written(lambda x: torch.cat([a(x), b(x)], -1), a, b)
    return tw.Parallel(a, b, join="cat"), _whole, written, _whole


def _split() -> tuple[nn.Module, Arguments, Callable[..., Any], Arguments]:
    return tw.Split([2, 2]), _whole, Written(lambda x: x.split([2, 2], -1)), _whole


def _map() -> tuple[nn.Module, Arguments, Callable[..., Any], Arguments]:
    a, b = nn.Linear(2, 3), nn.Linear(2, 3)
    written = Written(lambda parts: (a(parts[0]), b(parts[1])), a, b)
    return tw.Map(a, b), _pair, written, _pair


def _concat() -> tuple[nn.Module, Arguments, Callable[..., Any], Arguments]:
    return tw.Concat(), _pair, Written(lambda parts: torch.cat(parts, -1)), _pair


LAYERS = (
    OverheadCase(
        "block_equal",
        "BlockLinear([2, 2], [3, 3])",
        "nn.Linear(4, 6)",
        _layer(lambda: tw.BlockLinear([2, 2], [3, 3])),
    ),
    OverheadCase(
        "block_uneven",
        "BlockLinear([2, 2], [3, 1]) (4 -> 4)",
        "nn.Linear(4, 6)",
        _layer(lambda: tw.BlockLinear([2, 2], [3, 1])),
    ),
    OverheadCase(
        "sparse_random",
        "SparseLinear(Wiring.random(4, 6, density=0.5))",
        "nn.Linear(4, 6)",
        _layer(lambda: tw.SparseLinear(tw.Wiring.random(4, 6, density=0.5, seed=0))),
    ),
    OverheadCase(
        "sparse_block",
        "SparseLinear(Wiring.block_diagonal([2, 2], [3, 3]))",
        "nn.Linear(4, 6)",
        _layer(lambda: tw.SparseLinear(tw.Wiring.block_diagonal([2, 2], [3, 3]))),
    ),
    OverheadCase(
        "multi",
        "MultiLinear([2, 2], 6), two inputs",
        "nn.Linear(4, 6)",
        _layer(lambda: tw.MultiLinear([2, 2], 6), _halves),
    ),
)
"""Layers, each against ``nn.Linear(4, 6)`` called on the whole batch."""

CONTAINERS = (
    OverheadCase(
        "parallel",
        "Parallel(Linear(4, 3), Linear(4, 3), join='cat')",
        "module: cat([a(x), b(x)], -1)",
        _parallel,
    ),
    OverheadCase("split", "Split([2, 2])", "module: x.split([2, 2], -1)", _split),
    OverheadCase("map", "Map(Linear(2, 3), Linear(2, 3))", "module: (a(x1), b(x2))", _map),
    OverheadCase("concat", "Concat()", "module: cat(parts, -1)", _concat),
)
"""Containers, each against the module users write for it by hand (:class:`Written`): its
branches called directly inside one ``nn.Module``, so both pay one module call."""

CASES = LAYERS + CONTAINERS


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops that run while it is active, by name (``counts``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.counts[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _loss(output: Any) -> Tensor:
    parts = output if isinstance(output, (tuple, list)) else (output,)
    total: Tensor = sum(p.sum() for p in parts)
    return total


def op_counts(call: Callable[..., Any], args: Arguments) -> dict[str, Counter[str]]:
    """ATen ops by name of one no-grad forward at the small batch (``"fwd"``), and of a
    forward (``"forward"``) and its backward (``"backward"``) at the large batch with
    autograd, each after a warm-up call; ``args`` makes the call's arguments from a batch."""
    small = args(torch.randn(SMALL_BATCH, IN_FEATURES))
    with torch.no_grad():
        call(*small)
        with OpCounter() as counter:
            call(*small)
    large = args(torch.randn(LARGE_BATCH, IN_FEATURES, requires_grad=True))
    _loss(call(*large)).backward()
    with OpCounter() as forward:
        loss = _loss(call(*large))
    with OpCounter() as backward:
        loss.backward()
    return {"fwd": counter.counts, "forward": forward.counts, "backward": backward.counts}


@dataclass
class OverheadResult:
    """One case: median microseconds per call of the module and its reference, per mode,
    and the module's and the reference's ATen op counts (fwd, forward, backward)."""

    case: OverheadCase
    module_us: dict[str, float]
    reference_us: dict[str, float]
    module_ops: dict[str, int]
    reference_ops: dict[str, int]

    def ratio(self, mode: str) -> float:
        return self.module_us[mode] / self.reference_us[mode]


def measure(case: OverheadCase, repeats: int, calls: int = 200) -> OverheadResult:
    """Time ``case``: per mode, ``repeats`` interleaved rounds (module and reference, the
    order alternating) of ``calls`` calls (a quarter of them for forward+backward); medians
    over rounds. The thread count is the caller's."""
    module, module_args, reference, reference_args = case.build()
    roles = {"module": (module, module_args), "reference": (reference, reference_args)}
    timings: dict[str, dict[str, timing.Timing]] = {role: {} for role in roles}
    for mode in MODES:
        groups = []
        for role, (call, args) in roles.items():
            if mode == "fwd":
                step = partial(call, *args(torch.randn(SMALL_BATCH, IN_FEATURES)))
            else:
                large = args(torch.randn(LARGE_BATCH, IN_FEATURES, requires_grad=True))
                step = partial(_backward, call, large)
            timings[role][mode] = timing.Timing(calls if mode == "fwd" else max(calls // 4, 1))
            groups.append([timing.Timed(step, mode != "fwd", timings[role][mode])])
            timing.seconds_per_call(step, timings[role][mode].iterations, grad=mode != "fwd")
        timing.interleaved(groups, repeats)
    ops = {role: op_counts(call, args) for role, (call, args) in roles.items()}
    return OverheadResult(
        case,
        {mode: t.median * 1e3 for mode, t in timings["module"].items()},
        {mode: t.median * 1e3 for mode, t in timings["reference"].items()},
        {k: sum(v.values()) for k, v in ops["module"].items()},
        {k: sum(v.values()) for k, v in ops["reference"].items()},
    )


def _backward(call: Callable[..., Any], args: tuple[Any, ...]) -> None:
    _loss(call(*args)).backward()


_HEADERS = (
    "case",
    "against",
    f"fwd b{SMALL_BATCH} us",
    "x against",
    f"fwd+bwd b{LARGE_BATCH} us",
    "x against",
    "ATen ops fwd / fwd+bwd",
    "against's ops",
)


def _ops(counts: dict[str, int]) -> str:
    return f"{counts['fwd']} / {counts['forward'] + counts['backward']}"


class OverheadSection:
    """The :class:`~torchwire.bench.section.Section` of :data:`CASES`."""

    name, key, kind = "overhead", "overhead", "per-call overhead"

    def cases(self, config: BenchConfig) -> list[OverheadCase]:
        return list(CASES)

    def run(self, case: OverheadCase, config: BenchConfig) -> OverheadResult:
        return measure(case, config.repeats)

    def progress(self, result: OverheadResult) -> str:
        fwd, fwd_bwd = (f"{result.ratio(mode):.2f}x" for mode in MODES)
        against = result.case.reference
        return (
            f"overhead {result.case.name}: {fwd} (fwd), {fwd_bwd} (fwd+bwd) the time of {against}"
        )

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        return {}

    def notes(self, results: Sequence[OverheadResult]) -> list[str]:
        modes = "; ".join(f"{m}: {t}" for m, t in MODE_TEXT.items())
        return [
            "overhead: per call at tiny shapes, median us; x against: time / time of the torch"
            f" code it replaces; {modes}; ATen ops counted by a TorchDispatchMode."
        ]

    def tables(self, results: Sequence[OverheadResult], *, details: bool) -> list[Table]:
        rows = [
            [
                r.case.description,
                r.case.reference,
                f"{r.module_us['fwd']:.1f}",
                f"{r.ratio('fwd'):.2f}",
                f"{r.module_us['fwd_bwd']:.1f}",
                f"{r.ratio('fwd_bwd'):.2f}",
                _ops(r.module_ops),
                _ops(r.reference_ops),
            ]
            for r in results
        ]
        return [Table("overhead (per call at tiny shapes, median us)", _HEADERS, rows)]

    def summary(self, results: Sequence[OverheadResult]) -> Summary:
        """Per call, the time of the layers and of the containers over that of the torch code
        they replace, and the cases that cost at least :data:`NOT_BEST` times as much."""
        summary = Summary(
            self.kind,
            f"{len(results)} layers and containers, {IN_FEATURES} -> {OUT_FEATURES} features",
        )
        groups = {
            "layers": (LAYERS, "nn.Linear(4, 6)", "for layers this small, use nn.Linear"),
            "containers": (CONTAINERS, "a hand-written module", "write it by hand"),
        }
        for group, (members, against, instead) in groups.items():
            found = [r for r in results if r.case in members]
            if not found:
                continue
            fwd, fwd_bwd = ([r.ratio(mode) for r in found] for mode in MODES)
            summary.lines.append(
                f"{group}: {span(fwd)} the time of {against} (no-grad, batch {SMALL_BATCH}),"
                f" {span(fwd_bwd)} (fwd+bwd, batch {LARGE_BATCH})"
            )
            worst = max(found, key=lambda r: max(r.ratio(mode) for mode in MODES))
            ratio = max(worst.ratio(mode) for mode in MODES)
            if ratio >= NOT_BEST:
                summary.not_best.append(
                    f"{self.kind}, {worst.case.description}: {times(ratio)} the time of"
                    f" {against}: {instead}"
                )
        return summary

    def to_dict(self, result: OverheadResult) -> dict[str, Any]:
        return {
            "case": result.case.name,
            "description": result.case.description,
            "reference": result.case.reference,
            "us": result.module_us,
            "reference_us": result.reference_us,
            "ratio": {mode: result.ratio(mode) for mode in MODES},
            "aten_ops": result.module_ops,
            "reference_aten_ops": result.reference_ops,
        }


SECTION = OverheadSection()
