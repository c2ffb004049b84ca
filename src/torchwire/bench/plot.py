"""Pictures of ``torchwire bench`` results.

:func:`save_plot` draws the dicts that ``torchwire bench --json`` writes as one PNG, one panel
per section present: speedups over the code users write today, memory, and the cost of one
call. It needs matplotlib, the ``plot`` extra (``pip install 'torchwire[plot]'``), imported
only when called. The panels are :mod:`torchwire.bench.panels`, where
:func:`crossover_density`, the pure function behind the sparse panels' crossover marks,
lives (also importable from here).
"""

from __future__ import annotations

import io
import os
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torchwire.bench.panels import (
    MODES,
    Panel,
    block_speedup,
    case_memory,
    crossover_density,
    overhead_cost,
    problem_speedup,
    sparse_memory,
    sparse_speedup,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["INSTALL_HINT", "crossover_density", "save_plot"]

INSTALL_HINT = "pip install 'torchwire[plot]'"
"""How to install what :func:`save_plot` needs."""

_DPI = 100
_WIDTH_IN = 15.0
_ROW_HEIGHT_IN = 4.6
_TITLE_CHARS = 190  # of a medium-size title across the whole figure


def save_plot(results: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Draw ``torchwire bench`` results as one PNG at ``path``, one panel per section.

    Rows of the same section from several results (for example one file per section) are
    drawn together; the figure title names each device and dtype. Panels, for the sections
    present:

    - **sparse**: speedup of ``SparseLinear`` over ``masked_weight`` against density, one
      line per (features, batch), fwd and fwd+bwd; the density where torchwire stops being
      faster (:func:`crossover_density`) is marked on the 1x line and named in the legend.
      Memory: parameter + buffer bytes and peak bytes against density.
    - **block** (the ``cases`` key): speedup of ``BlockLinear`` over each alternative, per
      layout, one panel per mode and batch; memory per layout.
    - **branches**, **merge**: speedup over each alternative per problem and batch; memory.
    - **overhead**: time of one call over the torch code it replaces, per layer or container.

    Args:
        results: dicts as ``torchwire bench --json`` writes them (``environment`` and the
            section lists ``overhead``, ``cases``, ``sparse``, ``branches``, ``merge``).
        path: where to write the PNG.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'torchwire[plot]'``).
        ValueError: no section of ``results`` holds a row.

    Example::

        >>> import json
        >>> from torchwire.bench.plot import save_plot
        >>> with open("benchmarks/results/cuda-h100-float32.json") as f:  # doctest: +SKIP
        ...     save_plot([json.load(f)], "cuda-h100-float32.png")
    """
    figure = _figure(results)
    from PIL import Image  # pillow comes with matplotlib

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    # A plot has few colours: a 256-colour palette keeps it sharp at a third of the size.
    image = Image.open(buffer).convert("RGB").quantize(256)
    image.save(os.fspath(path), format="PNG", optimize=True)


def _figure(results: Sequence[Mapping[str, Any]]) -> Figure:
    """The figure :func:`save_plot` writes, drawn on the Agg canvas."""
    rows = _rows(results)
    if not rows:
        raise ValueError(
            "save_plot needs at least one benchmark row: expected dicts from "
            "`torchwire bench --json` with a non-empty 'overhead', 'cases', 'sparse', "
            f"'branches' or 'merge' list, got keys {[sorted(r) for r in results]}"
        )
    _require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, _ROW_HEIGHT_IN * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)  # non-interactive, whatever pyplot's backend is
    grid = fig.add_gridspec(len(rows), 1)
    for i, row in enumerate(rows):
        widths = [panel.width for panel in row]
        cells = grid[i].subgridspec(1, len(row), width_ratios=widths)
        for j, panel in enumerate(row):
            ax = fig.add_subplot(cells[j])
            panel.draw(ax)
            chars = int(_TITLE_CHARS * panel.width / sum(widths)) - 12  # the y label's room
            ax.set_title(textwrap.fill(panel.title, chars), fontsize="medium", loc="left")
    fig.suptitle(f"torchwire bench: {_environment_text(results)}", fontsize="x-large")
    return fig


def _require_matplotlib() -> None:
    """Import matplotlib, or say how to install it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"torchwire's plots need matplotlib, which is not installed: {INSTALL_HINT}"
        ) from error


def _rows(results: Sequence[Mapping[str, Any]]) -> list[list[Panel]]:
    """The figure's panels, row by row: each section's speedups, then its memory."""

    def section(name: str) -> list[Mapping[str, Any]]:
        return [row for result in results for row in (result.get(name) or ())]

    rows: list[list[Panel]] = []
    sparse, block = section("sparse"), section("cases")
    branches, merge, overhead = section("branches"), section("merge"), section("overhead")
    if sparse:
        rows.append([sparse_speedup(sparse, mode) for mode in MODES])
        rows.append([sparse_memory(sparse)])
    if block:
        for batch in sorted({row["batch"] for row in block}):
            rows.append([block_speedup(block, batch, mode) for mode in MODES])
        rows.append([case_memory("block", block, "layout")])
    named = (("branches", branches), ("merge", merge), ("hierarchy", section("hierarchy")))
    problems = [(name, part) for name, part in named if part]
    if problems:
        rows.append([problem_speedup(name, part) for name, part in problems])
        rows.append([case_memory(name, part, "problem") for name, part in problems])
    if overhead:
        rows.append([overhead_cost(overhead)])
    return rows


def _environment_text(results: Sequence[Mapping[str, Any]]) -> str:
    """Device, dtype, threads and versions of ``results``; values that differ are joined."""
    seen: dict[str, dict[str, None]] = defaultdict(dict)
    for result in results:
        env = result.get("environment") or {}
        device, name = env.get("device"), env.get("device_name")
        seen["device"][f"{name} ({device})" if name and device else str(name or device)] = None
        seen["dtype"][str(env.get("dtype"))] = None
        if device == "cpu" and env.get("threads") is not None:
            threads = int(env["threads"])
            seen["threads"][f"{threads} thread{'s' if threads != 1 else ''}"] = None
        seen["torch"][f"torch {env.get('torch')}"] = None
    return ", ".join(" / ".join(values) for values in seen.values() if values)
