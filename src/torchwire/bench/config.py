"""What a bench run measures (:class:`BenchConfig`) and the grids every section shares.

Three grids, timed on a 2-core CPU (Intel Xeon, 1 thread): ``quick`` (the smoke test CI runs,
about 25 s), ``default`` (a representative case or two of every section at batch 64, about
35 s) and ``full`` (every case, batch 64 and 1024, about 30 minutes). Each section keeps its
own grid values beside its code; the batch sizes and the number of rounds are shared and live
here. :func:`torchwire.bench.make_config` puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torchwire.bench.block import Layout

__all__ = ["BATCHES", "GRIDS", "REPEATS", "BenchConfig", "default_device"]

GRIDS = ("quick", "default", "full")
"""The grid sizes: ``torchwire bench --quick``, ``torchwire bench``, ``torchwire bench --full``."""
BATCHES = {"quick": (64,), "default": (64,), "full": (64, 1024)}
"""Batch sizes of every section (but overhead, whose shapes are fixed), by grid."""
REPEATS = {"quick": 5, "default": 11, "full": 11}
"""Interleaved timing rounds, by grid."""


def default_device() -> torch.device:
    """``cuda`` if CUDA is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class BenchConfig:
    """What to run; :func:`torchwire.bench.make_config` fills in a grid's values.

    ``sections`` run in the order of the registry; every other section's grid options
    (``layouts``: block; ``features``, ``densities``: sparse; ``problems``: branches) are
    read only by their section. ``grid`` is the grid the values came from (options given
    by hand replace its values).
    """

    device: torch.device
    dtype: torch.dtype
    threads: int
    sections: tuple[str, ...]
    batches: tuple[int, ...]
    layouts: tuple[Layout, ...]
    features: tuple[int, ...]
    densities: tuple[float, ...]
    problems: tuple[str, ...]
    repeats: int
    seed: int = 0
    min_time: float = 2e-3
    grid: str = "default"

    @property
    def quick(self) -> bool:
        """Whether the values came from the ``quick`` grid."""
        return self.grid == "quick"

    @property
    def factory_kwargs(self) -> dict[str, Any]:
        """``device`` and ``dtype``, as modules take them."""
        return {"device": self.device, "dtype": self.dtype}
