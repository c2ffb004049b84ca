r"""The benchmark suite behind ``torchwire bench``.

A *case* is a block-diagonal layout (group :math:`i` maps ``in_sizes[i]`` inputs to
``out_sizes[i]`` outputs) and a batch size. For every case the suite builds every way of computing
:math:`y = x W^T + b` with a block-diagonal :math:`W`, times them side by side and reports each
time as a ratio to ``limit``: one dense GEMM with the same multiply-adds.

Methods:

- ``torchwire``: :class:`torchwire.BlockLinear` with ``backend="auto"``, and
  ``torchwire[NAME]`` for every registered ``block_linear`` backend forced by name.
- ``modulelist``: ``nn.ModuleList`` of ``nn.Linear``, a Python loop over ``x.split`` and
  ``torch.cat``.
- ``masked_dense``: a dense ``nn.Linear`` masked with ``torch.nn.utils.prune.custom_from_mask``.
- ``conv1d_groups``: ``nn.Conv1d(kernel_size=1, groups=G)`` (equal groups only).
- ``limit``: ``nn.Linear(in_features, n)`` with ``n = round(sum(in_i * out_i) / in_features)``.

Timing: all methods of a case are built and warmed up first, then timed in interleaved rounds
(every method once per round, in a rotating order); each timing runs a method ``k`` times with
``k`` chosen so that it lasts at least ``min_time``. Medians are taken across rounds, so all the
numbers compared within a case come from the same run.
"""

from __future__ import annotations

import gc
import platform
import re
import statistics
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from typing import Any, TextIO, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import torchwire
from torchwire.backends import available

__all__ = [
    "ALTERNATIVES",
    "FULL_BATCHES",
    "FULL_LAYOUTS",
    "MODES",
    "PEAK_BYTES_MEANING",
    "QUICK_BATCHES",
    "QUICK_LAYOUTS",
    "BenchConfig",
    "BenchResult",
    "CaseResult",
    "Layout",
    "MethodResult",
    "Timing",
    "default_device",
    "format_markdown",
    "format_text",
    "make_config",
    "parse_layout",
    "peak_bytes",
    "run",
    "to_dict",
]

MODES = ("fwd", "fwd_bwd")
"""Timed modes: forward under ``torch.no_grad()``; forward, then backward of a dense gradient."""
ALTERNATIVES = ("modulelist", "masked_dense", "conv1d_groups")
"""The methods users write today instead of torchwire."""

_TERM = re.compile(r"(?:(\d+)x)?(?:(\d+)|\((\d+(?:,\d+)*)\))")
_SEPARATOR = re.compile(r"[+,](?![^(]*\))")  # a + or , outside parentheses


@dataclass(frozen=True)
class Layout:
    """A block-diagonal layout: group ``i`` maps ``in_sizes[i]`` inputs to ``out_sizes[i]`` outputs.

    Build one from a spec string with :func:`parse_layout`.
    """

    name: str
    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]

    @property
    def in_features(self) -> int:
        return sum(self.in_sizes)

    @property
    def out_features(self) -> int:
        return sum(self.out_sizes)

    @property
    def groups(self) -> int:
        return len(self.in_sizes)

    @property
    def equal(self) -> bool:
        """Whether all groups have the same shape (what ``Conv1d(groups=G)`` can express)."""
        return len(set(self.in_sizes)) == 1 and len(set(self.out_sizes)) == 1

    @property
    def multiply_adds(self) -> int:
        """Multiply-adds per input row: ``sum(in_i * out_i)``."""
        return sum(i * o for i, o in zip(self.in_sizes, self.out_sizes, strict=True))

    @property
    def limit_features(self) -> int:
        """Output size of the dense GEMM with the same multiply-adds as this layout."""
        return max(1, round(self.multiply_adds / self.in_features))


def _parse_sizes(text: str) -> tuple[int, ...]:
    sizes: list[int] = []
    for term in _SEPARATOR.split(text):
        match = _TERM.fullmatch(term)
        if match is None:
            raise ValueError(f"cannot read {term!r}")
        count, size, pattern = match.groups()
        block = (int(size),) if size is not None else tuple(int(s) for s in pattern.split(","))
        sizes.extend(block * int(count or 1))
    return tuple(sizes)


def parse_layout(spec: str) -> Layout:
    r"""Read a layout spec such as ``16x64``, ``8x64+16x32``, ``16x(48,16)`` or ``2x2->2x3``.

    A spec is ``SIZES`` or ``IN_SIZES->OUT_SIZES``; ``SIZES`` is terms joined by ``+`` or ``,``,
    each term a size ``B``, ``GxB`` (``G`` groups of size ``B``) or ``Gx(B1,B2,...)`` (the pattern
    repeated ``G`` times). Without ``->`` the blocks are square (``out_sizes == in_sizes``).

    Args:
        spec (str): the layout spec; its whitespace-free form becomes :attr:`Layout.name`.

    Examples::

        >>> layout = parse_layout("2x(48,16)+32")
        >>> layout.in_sizes, layout.out_sizes == layout.in_sizes
        ((48, 16, 48, 16, 32), True)
        >>> parse_layout("2x2->2x3").out_sizes
        (3, 3)
    """
    name = "".join(spec.split())
    parts = name.split("->")
    try:
        if not 1 <= len(parts) <= 2:
            raise ValueError("more than one '->'")
        in_sizes = _parse_sizes(parts[0])
        out_sizes = _parse_sizes(parts[-1])
        if len(in_sizes) != len(out_sizes):
            raise ValueError(f"{len(in_sizes)} input groups but {len(out_sizes)} output groups")
        if 0 in in_sizes or 0 in out_sizes:
            raise ValueError("group sizes must be positive")
    except ValueError as error:
        raise ValueError(
            f"invalid layout {spec!r} ({error}): expected SIZES or IN_SIZES->OUT_SIZES with "
            "SIZES like 16x64, 8x64+16x32, 16x(48,16) or 2,2"
        ) from None
    return Layout(name, in_sizes, out_sizes)


FULL_LAYOUTS = tuple(
    parse_layout(spec)
    for spec in (
        "2x2->2x3",
        "4x256",
        "16x64",
        "64x32",
        "8x512",
        "256x8",
        "8x64+16x32",
        "4x128+8x64+16x32",
        "16x(48,16)",
    )
)
QUICK_LAYOUTS = tuple(parse_layout(spec) for spec in ("2x2->2x3", "16x64", "256x8", "8x64+16x32"))
FULL_BATCHES = (64, 1024)
QUICK_BATCHES = (64,)


def default_device() -> torch.device:
    """``cuda`` if CUDA is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. :func:`make_config` fills in the grid and the defaults of ``--quick``."""

    device: torch.device = field(default_factory=default_device)
    dtype: torch.dtype = torch.float32
    threads: int = 1
    batches: tuple[int, ...] = FULL_BATCHES
    layouts: tuple[Layout, ...] = FULL_LAYOUTS
    repeats: int = 11
    seed: int = 0
    min_time: float = 2e-3
    quick: bool = False


def make_config(
    *,
    quick: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    threads: int = 1,
    batches: Sequence[int] | None = None,
    layouts: Sequence[Layout] | None = None,
    repeats: int | None = None,
    seed: int = 0,
) -> BenchConfig:
    """Build a :class:`BenchConfig`; ``None`` picks the full or the ``quick`` default."""
    return BenchConfig(
        device=default_device() if device is None else device,
        dtype=dtype,
        threads=threads,
        batches=tuple(batches or (QUICK_BATCHES if quick else FULL_BATCHES)),
        layouts=tuple(layouts or (QUICK_LAYOUTS if quick else FULL_LAYOUTS)),
        repeats=repeats or (5 if quick else 11),
        seed=seed,
        quick=quick,
    )


@dataclass
class Timing:
    """Milliseconds per call of one method in one mode: one sample per round."""

    iterations: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class MethodResult:
    """Timings (by mode), parameter + buffer bytes and peak fwd+bwd bytes of one method."""

    name: str
    timings: dict[str, Timing]
    param_bytes: int
    peak_bytes: int


@dataclass
class CaseResult:
    """Everything measured for one layout and batch size."""

    layout: Layout
    batch: int
    auto_backend: dict[str, str]
    methods: dict[str, MethodResult]
    skipped: dict[str, str]
    seconds: float

    def median(self, name: str, mode: str) -> float:
        return self.methods[name].timings[mode].median

    def ratio(self, name: str, mode: str) -> float:
        """Median time of method ``name`` divided by the median time of ``limit``."""
        return self.median(name, mode) / self.median("limit", mode)

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
        return None if name is None else _backend_of(name)

    @property
    def alternative(self) -> str | None:
        """The fastest of :data:`ALTERNATIVES` in fwd+bwd."""
        return self.fastest(ALTERNATIVES, "fwd_bwd")

    @property
    def speedup(self) -> float | None:
        """fwd+bwd time of :attr:`alternative` divided by that of ``torchwire``."""
        name = self.alternative
        if name is None:
            return None
        return self.median(name, "fwd_bwd") / self.median("torchwire", "fwd_bwd")

    def label(self, name: str) -> str:
        if name != "torchwire":
            return name
        fwd, fwd_bwd = (self.auto_backend[mode] for mode in MODES)
        return f"torchwire (auto -> {fwd if fwd == fwd_bwd else f'{fwd} / {fwd_bwd}'})"

    def auto_vs_fastest(self, mode: str) -> float | None:
        """Time of the backend auto chose over that of the fastest one (both forced by name).

        1.0 when auto chose the fastest backend; ``None`` if no forced backend ran.
        """
        fastest = self.fastest_backend(mode)
        chosen = f"torchwire[{self.auto_backend[mode]}]"
        if fastest is None or chosen not in self.methods:
            return None
        return self.median(chosen, mode) / self.median(f"torchwire[{fastest}]", mode)


def _backend_of(name: str) -> str:
    return name.removeprefix("torchwire[").removesuffix("]")


@dataclass
class BenchResult:
    """The environment and the results of all cases of a run."""

    environment: dict[str, Any]
    cases: list[CaseResult]


# ---------------------------------------------------------------------------------------------
# Methods


class _ModuleListLinear(nn.Module):
    def __init__(self, layout: Layout, **factory_kwargs: Any) -> None:
        super().__init__()
        self.in_sizes = list(layout.in_sizes)
        self.linears = nn.ModuleList(
            nn.Linear(i, o, **factory_kwargs)
            for i, o in zip(layout.in_sizes, layout.out_sizes, strict=True)
        )

    def forward(self, input: Tensor) -> Tensor:
        parts = torch.split(input, self.in_sizes, -1)
        return torch.cat([linear(x) for linear, x in zip(self.linears, parts, strict=True)], -1)


class _PointwiseConv1d(nn.Module):
    def __init__(self, layout: Layout, **factory_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            layout.in_features, layout.out_features, 1, groups=layout.groups, **factory_kwargs
        )

    def forward(self, input: Tensor) -> Tensor:
        out: Tensor = self.conv(input.unsqueeze(-1))
        return out.squeeze(-1)


def _masked_dense(layout: Layout, **factory_kwargs: Any) -> nn.Linear:
    linear = nn.Linear(layout.in_features, layout.out_features, **factory_kwargs)
    device = factory_kwargs.get("device")
    groups = torch.arange(layout.groups, device=device)
    in_group = groups.repeat_interleave(torch.tensor(layout.in_sizes, device=device))
    out_group = groups.repeat_interleave(torch.tensor(layout.out_sizes, device=device))
    mask = out_group[:, None] == in_group[None, :]  # (out_features, in_features), like weight
    prune.custom_from_mask(linear, "weight", mask)
    return linear


def _block_linear(layout: Layout, backend: str, **factory_kwargs: Any) -> torchwire.BlockLinear:
    if layout.equal:  # the ints + groups form, as users write equal groups
        sizes: tuple[Any, ...] = (layout.in_features, layout.out_features, layout.groups)
    else:
        sizes = (layout.in_sizes, layout.out_sizes)
    return torchwire.BlockLinear(*sizes, backend=backend, **factory_kwargs)


def _builders(layout: Layout, backends: Sequence[str]) -> dict[str, Callable[..., nn.Module]]:
    builders: dict[str, Callable[..., nn.Module]] = {
        "torchwire": partial(_block_linear, layout, "auto")
    }
    builders.update({f"torchwire[{b}]": partial(_block_linear, layout, b) for b in backends})
    builders["modulelist"] = partial(_ModuleListLinear, layout)
    builders["masked_dense"] = partial(_masked_dense, layout)
    if layout.equal:
        builders["conv1d_groups"] = partial(_PointwiseConv1d, layout)
    builders["limit"] = partial(nn.Linear, layout.in_features, layout.limit_features)
    return builders


def _steps(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, Callable[[], None]]:
    inputs = (x_grad, *(p for p in module.parameters() if p.requires_grad))

    with torch.no_grad():
        # A dense upstream gradient, as a hidden layer receives. (``out.sum().backward()``
        # would hand every method a stride-0 expanded gradient, which no BLAS call accepts
        # and which favours whichever method copies it least.)
        grad_out = torch.randn_like(module(x))

    def fwd() -> None:
        module(x)

    def fwd_bwd() -> None:
        # Like ``module(x).backward(grad_out)`` with every ``.grad`` None beforehand: the
        # gradients of the input and of all parameters are computed, nothing accumulates.
        torch.autograd.grad(module(x_grad), inputs, grad_out, allow_unused=True)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def _state_bytes(module: nn.Module) -> int:
    tensors = chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------------------------------------
# Measurement


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


def _seconds_per_call(
    step: Callable[[], None], iterations: int, mode: str, sync: Callable[[], None]
) -> float:
    with torch.set_grad_enabled(mode == "fwd_bwd"):
        sync()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        sync()
        return (time.perf_counter() - start) / iterations


def _calibrate(
    step: Callable[[], None], mode: str, sync: Callable[[], None], min_time: float
) -> int:
    """Warm up ``step``, then return the number of calls that takes at least ``min_time``."""
    _seconds_per_call(step, 1, mode, sync)
    iterations = 1
    while _seconds_per_call(step, iterations, mode, sync) * iterations < min_time:
        iterations *= 2
    return iterations


class _LiveBytes(TorchDispatchMode):
    """Track the bytes of tensor storages created by ATen ops while the mode is active.

    A storage counts from the op that creates it (outputs that alias an input, such as views and
    in-place results, are not new) until it is freed (a ``weakref.finalize`` on the storage);
    :attr:`peak` is the maximum of the running total.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        aliased = {
            t.untyped_storage().data_ptr()
            for t in tree_leaves((args, kwargs))
            if isinstance(t, Tensor)
        }
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in aliased or key in self.live:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


PEAK_BYTES_MEANING = {
    "cpu": (
        "most bytes alive at once of the tensors created during one forward+backward step"
        " (outputs, saved activations, gradients of the input and all parameters), tracked per"
        " ATen op with a TorchDispatchMode; scratch memory inside a kernel is not seen"
    ),
    "cuda": (
        "peak bytes allocated by the CUDA caching allocator during one forward+backward step,"
        " above what was allocated before it (torch.cuda.max_memory_allocated)"
    ),
}
"""What ``peak bytes`` means, by device type."""


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory of ``step()`` beyond what existed before it (see :data:`PEAK_BYTES_MEANING`).

    Args:
        step (Callable[[], None]): the work to measure; it runs once, with grad mode enabled.
        device (torch.device): where ``step`` allocates. CUDA reads the caching allocator's
            statistics; other devices track tensors with a ``TorchDispatchMode``.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.enable_grad():
            step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    tracker = _LiveBytes()
    with torch.enable_grad(), tracker:
        step()
    return tracker.peak


def _run_case(
    layout: Layout, batch: int, backends: Sequence[str], config: BenchConfig
) -> CaseResult:
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    factory_kwargs: dict[str, Any] = {"device": config.device, "dtype": config.dtype}
    x = torch.randn(batch, layout.in_features, **factory_kwargs)
    x_grad = x.detach().requires_grad_()
    sync = _synchronizer(config.device)

    modules: dict[str, nn.Module] = {}
    steps: dict[str, dict[str, Callable[[], None]]] = {}
    skipped = {} if layout.equal else {"conv1d_groups": "needs equal groups"}
    for name, build in _builders(layout, backends).items():
        try:
            module = build(**factory_kwargs)
            module_steps = _steps(module, x, x_grad)
            for mode, step in module_steps.items():
                _seconds_per_call(step, 1, mode, sync)
        except Exception as error:
            if not name.startswith("torchwire["):
                raise
            skipped[name] = f"{type(error).__name__}: {error}"
            continue
        modules[name], steps[name] = module, module_steps

    timings = {
        name: {mode: Timing(_calibrate(fn, mode, sync, config.min_time)) for mode, fn in s.items()}
        for name, s in steps.items()
    }
    names = list(steps)
    gc.collect()
    gc.disable()
    try:
        for round_ in range(config.repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                for mode, timing in timings[name].items():
                    seconds = _seconds_per_call(steps[name][mode], timing.iterations, mode, sync)
                    timing.samples.append(seconds * 1e3)
    finally:
        gc.enable()

    methods = {
        name: MethodResult(
            name,
            timings[name],
            _state_bytes(modules[name]),
            peak_bytes(steps[name]["fwd_bwd"], config.device),
        )
        for name in names
    }
    auto = cast(torchwire.BlockLinear, modules["torchwire"])
    with torch.no_grad():  # auto may choose differently without autograd
        auto_fwd = auto.resolve_backend(x)
    auto_backend = {"fwd": auto_fwd, "fwd_bwd": auto.resolve_backend(x_grad)}
    return CaseResult(
        layout, batch, auto_backend, methods, skipped, seconds=time.perf_counter() - start
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _environment(config: BenchConfig, backends: Sequence[str]) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "torchwire": torchwire.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(config.device),
        "device_name": _device_name(config.device),
        "dtype": str(config.dtype).removeprefix("torch."),
        "threads": config.threads,
        "quick": config.quick,
        "repeats": config.repeats,
        "seed": config.seed,
        "min_time_ms": config.min_time * 1e3,
        "batches": list(config.batches),
        "layouts": [layout.name for layout in config.layouts],
        "backends": list(backends),
        "modes": {
            "fwd": "forward under torch.no_grad()",
            "fwd_bwd": (
                "forward, then backward of a random dense output gradient to the input and "
                "all parameters"
            ),
        },
        "limit": "one nn.Linear(in_features, round(sum(in_i * out_i) / in_features))",
        "peak_bytes": PEAK_BYTES_MEANING.get(config.device.type, PEAK_BYTES_MEANING["cpu"]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _progress_line(case: CaseResult) -> str:
    speedup = "" if case.speedup is None else f", {case.speedup:.2f}x vs {case.alternative}"
    return (
        f"{case.layout.name} batch={case.batch}: {case.label('torchwire')},"
        f" fwd+bwd {case.ratio('torchwire', 'fwd_bwd'):.2f}x limit{speedup}"
        f" ({case.seconds:.1f} s)"
    )


def run(config: BenchConfig, *, progress: TextIO | None = None) -> BenchResult:
    """Run every case of ``config``: batch sizes in the outer loop, layouts in the inner one.

    Sets ``torch.set_num_threads(config.threads)`` for the run and restores it afterwards.

    Args:
        config (BenchConfig): the grid and the measurement settings.
        progress (TextIO, optional): where to write one line per finished case (the CLI passes
            ``sys.stderr``). Default: ``None`` (silent).

    Returns:
        BenchResult: the environment and per-case results; render it with :func:`format_text`,
        :func:`format_markdown` or :func:`to_dict`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        backends = available("block_linear")
        grid = [(layout, batch) for batch in config.batches for layout in config.layouts]
        cases = []
        for index, (layout, batch) in enumerate(grid, 1):
            case = _run_case(layout, batch, backends, config)
            cases.append(case)
            if progress is not None:
                print(f"[{index}/{len(grid)}] {_progress_line(case)}", file=progress, flush=True)
    finally:
        torch.set_num_threads(threads)
    return BenchResult(_environment(config, backends), cases)


# ---------------------------------------------------------------------------------------------
# Reports

_HEADERS = (
    "method",
    "fwd ms",
    "fwd x limit",
    "fwd+bwd ms",
    "fwd+bwd x limit",
    "params bytes",
    "peak bytes",
)
_SUMMARY_HEADERS = (
    "case",
    "batch",
    "auto backend",
    "fastest backend",
    "auto / fastest",
    "torchwire x limit",
    "fastest alternative",
    "torchwire speedup",
)


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _header(result: BenchResult) -> list[str]:
    env = result.environment
    threads = f"{env['threads']} thread" + ("s" if env["threads"] != 1 else "")
    return [
        f"torchwire bench: torch {env['torch']}, torchwire {env['torchwire']},"
        f" {env['device']} ({env['device_name']}), {env['dtype']}, {threads}",
        f"fwd: {env['modes']['fwd']}; fwd+bwd: {env['modes']['fwd_bwd']}.",
        f"ms: median over {env['repeats']} interleaved rounds; x limit: time / time of `limit`,"
        f" {env['limit']}.",
        'auto -> A / B: torchwire\'s backend="auto" runs A for fwd and B for fwd+bwd;'
        " auto / fastest: time of the backend auto chose / time of the fastest backend"
        " (both forced by name).",
        f"params bytes: parameters + buffers; peak bytes: {env['peak_bytes']}.",
    ]


def _case_title(case: CaseResult) -> str:
    layout = case.layout
    return (
        f"{layout.name}: {layout.in_features} -> {layout.out_features}, {layout.groups} groups,"
        f" batch {case.batch}; limit = Linear({layout.in_features}, {layout.limit_features})"
    )


def _case_rows(case: CaseResult) -> list[list[str]]:
    rows = []
    for name, method in case.methods.items():
        row = [case.label(name)]
        for mode in MODES:
            row += [_ms(case.median(name, mode)), f"{case.ratio(name, mode):.2f}"]
        rows.append([*row, _bytes(method.param_bytes), _bytes(method.peak_bytes)])
    return rows


def _summary_rows(result: BenchResult) -> list[list[str]]:
    rows = []
    for case in result.cases:
        regret = case.auto_vs_fastest("fwd_bwd")
        rows.append(
            [
                case.layout.name,
                str(case.batch),
                case.auto_backend["fwd_bwd"],
                case.fastest_backend("fwd_bwd") or "-",
                "-" if regret is None else f"{regret:.2f}",
                f"{case.ratio('torchwire', 'fwd_bwd'):.2f}",
                case.alternative or "-",
                "-" if case.speedup is None else f"{case.speedup:.2f}x",
            ]
        )
    return rows


def _skipped_line(case: CaseResult) -> str | None:
    if not case.skipped:
        return None
    return "skipped: " + "; ".join(f"{name} ({why})" for name, why in case.skipped.items())


def _text_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [list(headers), *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _markdown_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(headers), "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|"] + [
        line(row) for row in rows
    ]


def format_text(result: BenchResult) -> str:
    """Render ``result`` as plain-text tables: header, one table per case, summary."""
    lines = _header(result)
    for case in result.cases:
        lines += ["", _case_title(case), *_text_table(_HEADERS, _case_rows(case))]
        skipped = _skipped_line(case)
        lines += [skipped] if skipped else []
    lines += ["", "summary (fwd+bwd):", *_text_table(_SUMMARY_HEADERS, _summary_rows(result))]
    return "\n".join(lines) + "\n"


def format_markdown(result: BenchResult) -> str:
    """Render ``result`` as markdown: the same tables as :func:`format_text`."""
    header = _header(result)
    lines = ["# torchwire bench", "", header[0], "", *(f"- {line}" for line in header[1:])]
    for case in result.cases:
        lines += ["", f"## {_case_title(case)}", "", *_markdown_table(_HEADERS, _case_rows(case))]
        skipped = _skipped_line(case)
        lines += ["", skipped] if skipped else []
    lines += ["", "## Summary (fwd+bwd)", ""]
    lines += _markdown_table(_SUMMARY_HEADERS, _summary_rows(result))
    return "\n".join(lines) + "\n"


def to_dict(result: BenchResult) -> dict[str, Any]:
    """Everything in ``result`` as JSON-ready data (times in milliseconds, sizes in bytes)."""
    cases = []
    for case in result.cases:
        methods: dict[str, Any] = {}
        for name, method in case.methods.items():
            entry: dict[str, Any] = {"label": case.label(name)}
            if name.startswith("torchwire"):
                entry["backend"] = case.auto_backend if name == "torchwire" else _backend_of(name)
            for mode, timing in method.timings.items():
                entry[mode] = {
                    "median_ms": timing.median,
                    "x_limit": case.ratio(name, mode),
                    "iterations": timing.iterations,
                    "samples_ms": timing.samples,
                }
            entry["param_bytes"] = method.param_bytes
            entry["peak_bytes"] = method.peak_bytes
            methods[name] = entry
        cases.append(
            {
                "layout": case.layout.name,
                "in_sizes": list(case.layout.in_sizes),
                "out_sizes": list(case.layout.out_sizes),
                "in_features": case.layout.in_features,
                "out_features": case.layout.out_features,
                "groups": case.layout.groups,
                "multiply_adds_per_row": case.layout.multiply_adds,
                "limit_out_features": case.layout.limit_features,
                "batch": case.batch,
                "auto_backend": case.auto_backend,
                "fastest_backend": {mode: case.fastest_backend(mode) for mode in MODES},
                "auto_vs_fastest_backend": {mode: case.auto_vs_fastest(mode) for mode in MODES},
                "fastest_alternative": case.alternative,
                "speedup_vs_fastest_alternative": case.speedup,
                "seconds": case.seconds,
                "methods": methods,
                "skipped": case.skipped,
            }
        )
    return {"environment": result.environment, "cases": cases}
