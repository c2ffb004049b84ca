"""The panels of :func:`torchwire.bench.plot.save_plot`: one function per kind of panel, each
turning the rows of one section of ``torchwire bench --json`` into a :class:`Panel` (a title
and how to draw it on matplotlib axes), and :func:`crossover_density`, the pure function
behind the sparse panels' crossover marks. Nothing here imports matplotlib: the axes come
from the caller.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "MODES",
    "Panel",
    "block_speedup",
    "case_memory",
    "crossover_density",
    "overhead_cost",
    "problem_speedup",
    "sparse_memory",
    "sparse_speedup",
]

MODES = ("fwd", "fwd_bwd")
_MODE_TEXT = {"fwd": "fwd", "fwd_bwd": "fwd+bwd"}
_BAR_SPAN = 0.8  # of the room between two groups of bars

# What each method is, for legends; the bench's JSON names methods, the markdown explains them.
_METHOD_TEXT = {
    "torchwire": "torchwire",
    "modulelist": "modulelist (loop of nn.Linear)",
    "masked_dense": "masked_dense (nn.utils.prune)",
    "conv1d_groups": "conv1d_groups (equal groups)",
    "masked_weight": "masked_weight (weight * mask)",
    "prune_mask": "prune_mask (nn.utils.prune)",
    "torch_sparse": "torch_sparse (torch.sparse.mm)",
    "branches": "branches (heads one by one)",
    "manual_split": "manual_split (fused by hand)",
    "sequential": "sequential (layers as written)",
}
# One colour per method in every panel (torchwire is always blue).
_METHOD_COLOUR = {
    "torchwire": "C0",
    "modulelist": "C1",
    "masked_dense": "C2",
    "conv1d_groups": "C3",
    "masked_weight": "C2",
    "prune_mask": "C4",
    "torch_sparse": "C3",
    "branches": "C1",
    "manual_split": "C4",
    "sequential": "C1",
}
_SPARE_COLOURS = ("C5", "C6", "C7", "C8", "C9")
# Methods that are bounds, not code users write: left out of the speedup bars.
_BOUNDS = frozenset({"limit"})


def crossover_density(points: Iterable[tuple[float, float]]) -> float | None:
    r"""The density at which torchwire stops being faster than the code it replaces.

    Walking from the sparsest measured density to the densest, the crossover lies between
    the first two neighbours whose speedup goes from :math:`\ge 1` to :math:`< 1`; it is
    interpolated linearly in :math:`\log(\text{density})` and :math:`\log(\text{speedup})`,
    the axes the sparse panels are drawn on. Points whose density or speedup is not a
    positive finite number are ignored.

    Args:
        points: ``(density, speedup)`` pairs, in any order; ``speedup`` is the time of the
            alternative over the time of torchwire (above 1: torchwire is faster).

    Returns:
        The crossover density, or ``None`` when there is none: torchwire is faster at every
        measured density, or already slower at the sparsest one.

    Example::

        >>> from torchwire.bench.panels import crossover_density
        >>> crossover_density([(0.01, 8.0), (0.1, 2.0), (0.5, 0.5)])  # between 0.1 and 0.5
        0.223...
        >>> crossover_density([(0.01, 8.0), (0.5, 1.5)]) is None  # faster everywhere
        True
    """
    clean = sorted(
        (float(d), float(s))
        for d, s in points
        if math.isfinite(d) and math.isfinite(s) and d > 0 and s > 0
    )
    for (d_a, s_a), (d_b, s_b) in itertools.pairwise(clean):
        if s_a >= 1 > s_b:
            t = math.log(s_a) / (math.log(s_a) - math.log(s_b))
            return math.exp(math.log(d_a) + t * (math.log(d_b) - math.log(d_a)))
    return None


@dataclass(frozen=True)
class Panel:
    title: str
    draw: Callable[[Axes], None]
    width: float = 1.0  # relative to the other panels of its row


# --- numbers from the rows ------------------------------------------------------------------


def _median_ms(row: Mapping[str, Any], method: str, mode: str) -> float | None:
    timing = (row.get("methods") or {}).get(method, {}).get(mode)
    value = timing.get("median_ms") if isinstance(timing, Mapping) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _speedup(row: Mapping[str, Any], alternative: str, mode: str) -> float | None:
    """Time of ``alternative`` over time of torchwire (auto) in ``row``; above 1: faster."""
    mine, theirs = _median_ms(row, "torchwire", mode), _median_ms(row, alternative, mode)
    return None if mine is None or theirs is None else theirs / mine


def _alternatives(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Methods other than torchwire's and the bounds, in the order the rows list them."""
    names: dict[str, None] = {}
    for row in rows:
        for name in row.get("methods") or {}:
            if not name.startswith("torchwire") and name not in _BOUNDS:
                names[name] = None
    return list(names)


def _bytes(row: Mapping[str, Any], method: str, key: str) -> float | None:
    value = (row.get("methods") or {}).get(method, {}).get(key)
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _colour(method: str, others: Sequence[str]) -> str:
    if method in _METHOD_COLOUR:
        return _METHOD_COLOUR[method]
    unknown = [name for name in others if name not in _METHOD_COLOUR]
    return _SPARE_COLOURS[unknown.index(method) % len(_SPARE_COLOURS)]


def _percent(density: float) -> str:
    text = f"{100 * density:.2g}"
    return f"{float(text):g}%"


# --- axes helpers ---------------------------------------------------------------------------


def _ratio_axis(ax: Axes) -> None:
    """A log y axis of ratios labelled 0.5x, 1x, 2x, 10x ... with a dashed line at 1x."""
    from matplotlib import ticker

    ax.set_yscale("log")
    ax.axhline(1.0, color="0.2", linestyle="--", linewidth=1.2, zorder=5)
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.grid(True, axis="y", which="major", alpha=0.3)


def _density_axis(ax: Axes, densities: Iterable[float]) -> None:
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.set_xticks(sorted(set(densities)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _percent(v)))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("density: fraction of the n x n connections present (log scale)")


def _bytes_axis(ax: Axes, values: Iterable[float | None], headroom: float = 40.0) -> None:
    """A log axis of bytes (1 kB, 10 MB ...) from a decade below the smallest value."""
    from matplotlib import ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: _byte_text(v)))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.grid(True, axis="y", which="major", alpha=0.3)
    shown = [v for v in values if v is not None]
    if shown:
        low, high = min(shown), max(shown)
        ax.set_ylim(10 ** math.floor(math.log10(low) - 0.3), high * headroom)  # for a legend


def _byte_text(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


def _grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    *,
    hatches: Sequence[str | None] | None = None,
    base: float = 0.0,
) -> list[tuple[float, float]]:
    """Bars of each ``(label, colour, values)`` series side by side within each group, from
    ``base`` to the value (ratios: from 1x, so that slowdowns point down); a value of None
    leaves its slot empty. Returns ``(x, value)`` of every bar drawn."""
    width = _BAR_SPAN / max(len(series), 1)
    drawn: list[tuple[float, float]] = []
    for k, (label, colour, values) in enumerate(series):
        xs = _slots(len(groups), len(series), k)
        shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
        drawn += shown
        hatch = hatches[k] if hatches else None
        ax.bar(
            [x for x, _ in shown],
            [v - base for _, v in shown],
            width=width,
            bottom=base,
            color=colour,
            label=label,
            hatch=hatch,
            edgecolor="white" if hatch else None,
            linewidth=0,
            zorder=2,
        )
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    return drawn


def _slots(groups: int, series: int, k: int) -> list[float]:
    """The x of series ``k``'s bar in each of ``groups`` groups of ``series`` bars."""
    width = _BAR_SPAN / max(series, 1)
    return [g + (k - (series - 1) / 2) * width for g in range(groups)]


def _ratio_limits(ax: Axes, bars: Sequence[tuple[float, float]], headroom: float) -> None:
    """Room on a log ratio axis for the bars, the labels at their ends and a legend."""
    values = [value for _, value in bars] or [1.0]
    ax.set_ylim(min(0.5, min(values) / 3), max(2.0, max(values)) * headroom)


def _slant(ax: Axes) -> None:
    for label in ax.get_xticklabels():
        label.set(rotation=30, ha="right", rotation_mode="anchor", fontsize="small")


def _label_bars(ax: Axes, bars: Iterable[tuple[float, float]]) -> None:
    """Each ratio bar's value at its end (above the bar, or below one pointing down)."""
    for x, value in bars:
        ax.annotate(
            f"{value:.3g}",
            (x, value),
            xytext=(0, 2 if value >= 1 else -2),
            textcoords="offset points",
            ha="center",
            va="bottom" if value >= 1 else "top",
            rotation=90,
            fontsize="x-small",
        )


# --- panels ---------------------------------------------------------------------------------

_SPEEDUP_LABEL = "speedup: {alt} time / torchwire time\n(above 1x: torchwire is faster)"


def sparse_speedup(rows: Sequence[Mapping[str, Any]], mode: str) -> Panel:
    reference = str(rows[0].get("reference", "masked_weight"))
    lines: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        speedup = _speedup(row, reference, mode)
        if speedup is not None:
            lines[(int(row["features"]), int(row["batch"]))].append((row["density"], speedup))

    def draw(ax: Axes) -> None:
        _ratio_axis(ax)
        for k, ((features, batch), points) in enumerate(sorted(lines.items())):
            points = sorted(points)
            colour = f"C{k % 10}"
            crossover = crossover_density(points)
            ax.plot(
                [d for d, _ in points],
                [s for _, s in points],
                marker="o",
                markersize=4,
                color=colour,
                label=f"n={features}, batch {batch}: {_crossover_text(points, crossover)}",
                zorder=3,
            )
            if crossover is not None:
                ax.plot(crossover, 1.0, "X", ms=12, color=colour, mec="black", mew=0.8, zorder=6)
        _density_axis(ax, (d for points in lines.values() for d, _ in points))
        bottom, top = ax.get_ylim()
        ax.set_ylim(min(bottom, 0.3), top * 1.3)
        ax.set_ylabel(_SPEEDUP_LABEL.format(alt=reference))
        ax.legend(
            fontsize="small",
            loc="upper right",
            title="X: crossover, where torchwire stops being faster",
            title_fontsize="small",
        )

    return Panel(f"sparse, {_MODE_TEXT[mode]}: speedup of SparseLinear over {reference}", draw)


def _crossover_text(points: Sequence[tuple[float, float]], crossover: float | None) -> str:
    if crossover is not None:
        return f"crossover {_percent(crossover)}"
    if all(s >= 1 for _, s in points):
        return "faster at every density"
    if all(s < 1 for _, s in points):
        return "slower at every density"
    return "slower when sparser"  # below 1x at low density, above it at high density


def block_speedup(rows: Sequence[Mapping[str, Any]], batch: int, mode: str) -> Panel:
    rows = [row for row in rows if row["batch"] == batch]
    alternatives = _alternatives(rows)

    def draw(ax: Axes) -> None:
        _ratio_axis(ax)
        bars = _grouped_bars(
            ax,
            [str(row["layout"]) for row in rows],
            [
                (
                    _METHOD_TEXT.get(alt, alt),
                    _colour(alt, alternatives),
                    [_speedup(row, alt, mode) for row in rows],
                )
                for alt in alternatives
            ],
            base=1.0,
        )
        _label_bars(ax, bars)
        _ratio_limits(ax, bars, headroom=15.0)  # room for the legend
        _slant(ax)
        ax.set_xlabel("layout: groups x block size, + joins uneven groups")
        ax.set_ylabel(_SPEEDUP_LABEL.format(alt="alternative's"))
        ax.legend(fontsize="small", loc="upper left")

    return Panel(
        f"block, {_MODE_TEXT[mode]}, batch {batch}: speedup of BlockLinear over each alternative",
        draw,
    )


def problem_speedup(section: str, rows: Sequence[Mapping[str, Any]]) -> Panel:
    alternatives = _alternatives(rows)
    series = [(alt, mode) for alt in alternatives for mode in MODES]

    def draw(ax: Axes) -> None:
        _ratio_axis(ax)
        bars = _grouped_bars(
            ax,
            [f"{row['problem']}\nbatch {row['batch']}" for row in rows],
            [
                (
                    f"{_METHOD_TEXT.get(alt, alt)}, {_MODE_TEXT[mode]}",
                    _colour(alt, alternatives),
                    [_speedup(row, alt, mode) for row in rows],
                )
                for alt, mode in series
            ],
            hatches=[None if mode == "fwd" else "///" for _, mode in series],
            base=1.0,
        )
        _label_bars(ax, bars)
        _ratio_limits(ax, bars, headroom=4.0)  # room for the legend
        ax.tick_params(axis="x", labelsize="small")
        ax.set_ylabel(_SPEEDUP_LABEL.format(alt="alternative's"))
        ax.legend(fontsize="small", loc="upper left", ncols=2 if len(rows) > 4 else 1)

    what = {"branches": "fuse_parallel", "merge": "merge", "hierarchy": "hierarchy"}.get(
        section, "layers"
    )
    return Panel(
        f"{section}: speedup of torchwire's {what} over each alternative",
        draw,
        width=_problem_width(rows),
    )


def _problem_width(rows: Sequence[Mapping[str, Any]]) -> float:
    return 3.0 if len(rows) > 4 else 1.0


def sparse_memory(rows: Sequence[Mapping[str, Any]]) -> Panel:
    features = max(int(row["features"]) for row in rows)
    batch = max(int(row["batch"]) for row in rows)
    rows = sorted(
        (row for row in rows if row["features"] == features and row["batch"] == batch),
        key=lambda row: float(row["density"]),
    )
    methods = ["torchwire", *_alternatives(rows)]

    def draw(ax: Axes) -> None:
        values: list[float | None] = []
        for k, method in enumerate(methods):
            colour = _colour(method, methods)
            for key, style, marker in (("param_bytes", "-", "o"), ("peak_bytes", ":", "D")):
                points = [(float(row["density"]), _bytes(row, method, key)) for row in rows]
                shown = [(d, b) for d, b in points if b is not None]
                values += [b for _, b in shown]
                ax.plot(
                    [d for d, _ in shown],
                    [b for _, b in shown],
                    linestyle=style,
                    marker=marker,
                    markersize=8 - 1.5 * k,  # equal values of two methods stay visible
                    color=colour,
                    label=f"{_METHOD_TEXT.get(method, method)}: "
                    + ("params + buffers" if key == "param_bytes" else "peak"),
                    zorder=3 + k,  # smaller markers on top
                )
        _bytes_axis(ax, values, headroom=8.0)
        _density_axis(ax, (float(row["density"]) for row in rows))
        ax.set_ylabel("bytes (log scale)")
        ax.legend(fontsize="small", loc="upper left", ncols=len(methods))

    return Panel(
        f"sparse memory, n={features}: parameter + buffer bytes (solid) and peak bytes of one "
        f"fwd+bwd at batch {batch} (dotted)",
        draw,
    )


def case_memory(section: str, rows: Sequence[Mapping[str, Any]], key: str) -> Panel:
    batch = max(int(row["batch"]) for row in rows)
    width = _problem_width(rows) if key == "problem" else 1.0
    wide = key != "problem" or width > 1
    rows = [row for row in rows if row["batch"] == batch]
    methods = ["torchwire", *_alternatives(rows)]

    def draw(ax: Axes) -> None:
        bars = _grouped_bars(
            ax,
            [str(row[key]) for row in rows],
            [
                (
                    _METHOD_TEXT.get(m, m),
                    _colour(m, methods),
                    [_bytes(row, m, "param_bytes") for row in rows],
                )
                for m in methods
            ],
        )
        shown = [
            (x, peak)
            for k, m in enumerate(methods)
            for x, row in zip(_slots(len(rows), len(methods), k), rows, strict=True)
            if (peak := _bytes(row, m, "peak_bytes")) is not None
        ]
        ax.scatter(
            [x for x, _ in shown],
            [p for _, p in shown],
            marker="D",
            s=24,
            color="black",
            zorder=4,
            label=f"peak bytes, one fwd+bwd at batch {batch}",
        )
        _bytes_axis(ax, [v for _, v in bars] + [p for _, p in shown])
        if len(rows) > 4:
            _slant(ax)
        ax.set_ylabel("bytes (log scale)")
        ax.legend(fontsize="small", loc="upper left", ncols=3 if wide else 1)

    return Panel(
        f"{section} memory: parameter + buffer bytes (bars), peak bytes (black diamonds)",
        draw,
        width=width,
    )


def overhead_cost(rows: Sequence[Mapping[str, Any]]) -> Panel:
    def draw(ax: Axes) -> None:
        labels = [f"{row['description']}  vs  {row['reference']}" for row in rows]
        height = 0.38
        for k, mode in enumerate(MODES):
            ratios = [(row.get("ratio") or {}).get(mode) for row in rows]
            shown = [(i, float(r)) for i, r in enumerate(ratios) if isinstance(r, (int, float))]
            ys = [i + (k - 0.5) * height for i, _ in shown]
            ax.barh(
                ys,
                [r for _, r in shown],
                height=height,
                color=("C0", "C9")[k],
                label=_MODE_TEXT[mode],
                zorder=2,
            )
            for y, (_, r) in zip(ys, shown, strict=True):
                ax.annotate(
                    f"{r:.2f}x",
                    (r, y),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize="x-small",
                )
        ax.axvline(1.0, color="0.2", linestyle="--", linewidth=1.2, zorder=5)
        ax.set_yticks(range(len(rows)), labels, fontsize="small")
        ax.invert_yaxis()
        ax.set_xlim(0, max(ax.get_xlim()[1], 1.2) * 1.12)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlabel(
            "time of one torchwire call / time of the torch code it replaces "
            "(1x = same cost; lower is better)"
        )
        ax.legend(fontsize="small", loc="upper right")

    return Panel("overhead: cost of one call at tiny shapes", draw)
