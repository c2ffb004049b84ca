"""The registry of sections, the configuration of a run and the run itself.

Adding a section: write its module (an object satisfying
:class:`~torchwire.bench.section.Section`) and add it to :data:`REGISTRY`. A section with
grid options of its own also adds them to :class:`~torchwire.bench.config.BenchConfig`,
:func:`make_config` and the command line.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

import torch

import torchwire
from torchwire.bench import block, branches, hierarchy, merge, overhead, sparse
from torchwire.bench.config import BATCHES, GRIDS, REPEATS, BenchConfig, default_device
from torchwire.bench.memory import PEAK_BYTES_MEANING
from torchwire.bench.section import Section

__all__ = ["REGISTRY", "SECTIONS", "BenchResult", "device_name", "make_config", "run"]

REGISTRY: dict[str, Section[Any, Any]] = {
    section.name: section
    for section in (
        overhead.SECTION,
        block.SECTION,
        sparse.SECTION,
        branches.SECTION,
        merge.SECTION,
        hierarchy.SECTION,
    )
}
"""Every section, by name, in the order a run runs them: one line registers a section."""
SECTIONS = tuple(REGISTRY)
"""The sections' names: the per-call overhead, block-diagonal layers, layers with any (random)
connectivity, same-input branches fused into one layer, consecutive layers merged into one."""


@dataclass
class BenchResult:
    """The environment of a run and its results, by section name, in the order they ran."""

    environment: dict[str, Any]
    results: dict[str, list[Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def sections(self) -> list[tuple[Section[Any, Any], list[Any]]]:
        """The sections that ran, each with its results."""
        return [(REGISTRY[name], results) for name, results in self.results.items() if results]


def make_config(
    *,
    grid: str = "default",
    quick: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    threads: int = 1,
    sections: Sequence[str] | None = None,
    batches: Sequence[int] | None = None,
    layouts: Sequence[block.Layout] | None = None,
    features: Sequence[int] | None = None,
    densities: Sequence[float] | None = None,
    problems: Sequence[str] | None = None,
    repeats: int | None = None,
    seed: int = 0,
) -> BenchConfig:
    """Build a :class:`BenchConfig`: ``None`` takes the value of ``grid`` (one of
    :data:`~torchwire.bench.config.GRIDS`; ``quick=True`` means ``grid="quick"``), and
    ``sections`` defaults to all of :data:`REGISTRY` (and runs in its order).

    Examples::

        >>> config = make_config(grid="full", sections=["sparse"], batches=[8])
        >>> config.sections, config.batches, config.densities
        (('sparse',), (8,), (0.5, 0.2, 0.1, 0.05, 0.01, 0.001))
    """
    grid = "quick" if quick else grid
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; expected one of {list(GRIDS)}")
    sections = tuple(sections or REGISTRY)
    unknown = [name for name in sections if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown sections {unknown}; expected some of {list(REGISTRY)}")
    problems = tuple(problems or branches.PROBLEMS[grid])
    known = branches.PROBLEMS["full"]
    unknown = [name for name in problems if name not in known]
    if unknown:
        raise ValueError(f"unknown branch problems {unknown}; expected some of {list(known)}")
    return BenchConfig(
        device=default_device() if device is None else device,
        dtype=dtype,
        threads=threads,
        sections=tuple(name for name in REGISTRY if name in sections),
        batches=tuple(batches or BATCHES[grid]),
        layouts=tuple(layouts or block.LAYOUTS[grid]),
        features=tuple(features or sparse.FEATURES[grid]),
        densities=tuple(densities or sparse.DENSITIES[grid]),
        problems=problems,
        repeats=repeats or REPEATS[grid],
        seed=seed,
        grid=grid,
    )


def device_name(device: torch.device) -> str:
    """The device's model name (the GPU's, or the CPU's from /proc/cpuinfo), as runs record it."""
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


def _environment(config: BenchConfig) -> dict[str, Any]:
    environment: dict[str, Any] = {
        "torch": torch.__version__,
        "torchwire": torchwire.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(config.device),
        "device_name": device_name(config.device),
        "dtype": str(config.dtype).removeprefix("torch."),
        "threads": config.threads,
        "quick": config.quick,
        "repeats": config.repeats,
        "seed": config.seed,
        "min_time_ms": config.min_time * 1e3,
        "sections": list(config.sections),
        "batches": list(config.batches),
        "modes": {
            "fwd": "forward under torch.no_grad()",
            "fwd_bwd": (
                "forward, then backward of a random dense output gradient to the input and "
                "all parameters"
            ),
        },
    }
    for section in REGISTRY.values():  # every section's entries, run or not
        environment.update(section.environment(config))
    meaning = PEAK_BYTES_MEANING.get(config.device.type, PEAK_BYTES_MEANING["cpu"])
    environment["peak_bytes"] = meaning
    environment["started"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return environment


def run(config: BenchConfig, *, progress: TextIO | None = None) -> BenchResult:
    """Run every case of ``config``'s sections, section by section in the order of
    :data:`REGISTRY`, each in the order of its ``cases`` (batch sizes outermost).

    Sets ``torch.set_num_threads(config.threads)`` for the run and restores it afterwards.

    Args:
        config (BenchConfig): the grid and the measurement settings.
        progress (TextIO, optional): where to write one line per finished case (the CLI passes
            ``sys.stderr``). Default: ``None`` (silent).

    Returns:
        BenchResult: the environment and per-case results; render it with
        :func:`~torchwire.bench.report.format_text`,
        :func:`~torchwire.bench.report.format_markdown` or
        :func:`~torchwire.bench.report.to_dict`.
    """
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        result = BenchResult(_environment(config))
        sections = [REGISTRY[name] for name in config.sections]
        jobs = [(section, case) for section in sections for case in section.cases(config)]
        for index, (section, case) in enumerate(jobs, 1):
            measured = section.run(case, config)
            result.results.setdefault(section.name, []).append(measured)
            if progress is not None:
                line = section.progress(measured)
                print(f"[{index}/{len(jobs)}] {line}", file=progress, flush=True)
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - start
    return result
