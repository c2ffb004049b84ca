"""What the block, sparse, branches and merge sections share in their reports: each compares
torchwire with the methods users write today (:mod:`~torchwire.bench.methods`), and
:class:`Comparison` is the part of the :class:`~torchwire.bench.section.Section` interface
the four have in common (per-case tables, JSON entries, summary lines).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from torchwire.bench.methods import MODES, Measured, backend_of
from torchwire.bench.section import Summary, Table

__all__ = ["AUTO_NOTE", "MODE_TEXT", "NOT_BEST", "Comparison", "regret", "span", "times"]

MODE_TEXT = {"fwd": "fwd", "fwd_bwd": "fwd+bwd"}
NOT_BEST = 1.1
"""The summary says torchwire is not the best choice where an alternative is this much faster."""

AUTO_NOTE = (
    'auto -> A / B: torchwire\'s backend="auto" runs A for fwd and B for fwd+bwd;'
    " auto / fastest: time of the backend auto chose / time of the fastest backend"
    " (both forced by name)."
)


def regret(case: Measured) -> str:
    """Auto's fwd+bwd time over the fastest backend's, for the overview tables."""
    value = case.auto_vs_fastest("fwd_bwd")
    return "-" if value is None else f"{value:.2f}"


def ms(value: float) -> str:
    """Milliseconds, to three significant digits."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def size(count: int) -> str:
    """Bytes, in B, KiB, MiB or GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def times(value: float) -> str:
    """A ratio: ``1.31x``, ``12.4x``, ``160x``."""
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def span(values: Sequence[float], *, median: bool = False) -> str:
    """The range of some ratios, ``1.02x-2.50x`` (or one ratio), and with ``median`` their
    median where there are more than two: ``1.02x-2.50x (median 1.31x)``."""
    low, high = times(min(values)), times(max(values))
    if low == high:
        return low
    if median and len(values) > 2:
        return f"{low}-{high} (median {times(statistics.median(values))})"
    return f"{low}-{high}"


C = TypeVar("C")
M = TypeVar("M", bound=Measured)


class Comparison(Generic[C, M]):
    """The :class:`~torchwire.bench.section.Section` interface that the sections comparing
    methods share: per-case tables, summary lines and the common JSON entries.

    A section sets the attributes and writes ``cases``, ``run``, ``progress``,
    ``environment``, ``notes``, ``to_dict``, :meth:`title`, :meth:`overview` and
    :meth:`case_name`.

    Attributes:
        mode: the mode the summary reports (``"fwd"`` for inference-only transforms).
        runs: what torchwire runs, as the summary names it (``"SparseLinear"``).
        advice: per alternative, what to use where it beats torchwire.
        also: a method the summary compares with besides the fastest alternative.
    """

    name: str
    key: str
    kind: str
    mode: str = "fwd_bwd"
    runs: str
    advice: ClassVar[Mapping[str, str]]
    also: str | None = None

    def title(self, case: M) -> str:
        raise NotImplementedError

    def overview(self, results: Sequence[M]) -> Table:
        """One row per case."""
        raise NotImplementedError

    def case_name(self, case: M) -> str:
        """A case in a few words: ``"16x64 batch 64"``."""
        raise NotImplementedError

    def tables(self, results: Sequence[M], *, details: bool) -> list[Table]:
        cases = [self.case_table(case) for case in results] if details else []
        return [*cases, self.overview(results)]

    def case_table(self, case: M) -> Table:
        """One row per method: times, ratios to the reference, bytes."""
        ratio = f"x {case.reference}"
        per_connection = case.bytes_per_connection("torchwire") is not None
        headers = ["method", "fwd ms", f"fwd {ratio}", "fwd+bwd ms", f"fwd+bwd {ratio}"]
        headers += ["params bytes", *(["bytes / conn"] if per_connection else []), "peak bytes"]
        rows = []
        for name, method in case.methods.items():
            row = [case.label(name)]
            for mode in MODES:
                row += [ms(case.median(name, mode)), f"{case.ratio(name, mode):.2f}"]
            row.append(size(method.param_bytes))
            if per_connection:
                row.append(f"{case.bytes_per_connection(name):.1f}")
            rows.append([*row, size(method.peak_bytes)])
        skipped = "; ".join(f"{name} ({why})" for name, why in case.skipped.items())
        return Table(self.title(case), headers, rows, f"skipped: {skipped}" if skipped else None)

    def common_dict(self, case: M) -> dict[str, Any]:
        """The JSON entries every comparing section writes: batch, auto's choice, methods."""
        methods: dict[str, Any] = {}
        for name, method in case.methods.items():
            entry: dict[str, Any] = {"label": case.label(name)}
            if name.startswith("torchwire"):
                entry["backend"] = case.auto_backend if name == "torchwire" else backend_of(name)
            for mode, measured in method.timings.items():
                entry[mode] = {
                    "median_ms": measured.median,
                    f"x_{case.reference}": case.ratio(name, mode),
                    "iterations": measured.iterations,
                    "samples_ms": measured.samples,
                }
            entry["param_bytes"] = method.param_bytes
            per_connection = case.bytes_per_connection(name)
            if per_connection is not None:
                entry["bytes_per_connection"] = per_connection
            entry["peak_bytes"] = method.peak_bytes
            methods[name] = entry
        return {
            "batch": case.batch,
            "reference": case.reference,
            "auto_backend": case.auto_backend,
            "fastest_backend": {mode: case.fastest_backend(mode) for mode in MODES},
            "auto_vs_fastest_backend": {mode: case.auto_vs_fastest(mode) for mode in MODES},
            "fastest_alternative": case.alternative,
            "speedup_vs_fastest_alternative": case.speedup,
            "seconds": case.seconds,
            "methods": methods,
            "skipped": case.skipped,
        }

    def summary(self, results: Sequence[M]) -> Summary:
        """Against the fastest alternative of each case, in :attr:`mode`: the ratios of time,
        parameter bytes and peak bytes (alternative / torchwire); and where an alternative is
        at least :data:`NOT_BEST` times faster, the worst case with what to use instead, and
        one line naming the others."""
        mode = self.mode
        speed, params, peak, losing = [], [], [], []
        against = [case.fastest(case.alternatives, mode) for case in results]
        for case, best in zip(results, against, strict=True):
            if best is None:
                continue
            mine, theirs = case.methods["torchwire"], case.methods[best]
            speed.append(case.speedup_over(best, mode))
            params.append(theirs.param_bytes / max(mine.param_bytes, 1))
            peak.append(theirs.peak_bytes / max(mine.peak_bytes, 1))
            if speed[-1] * NOT_BEST <= 1:
                losing.append((speed[-1], params[-1], case, best))
        chosen = ", ".join(dict.fromkeys(case.auto_backend[mode] for case in results))
        count = f"{len(results)} case{'s' * (len(results) != 1)}"
        summary = Summary(self.kind, f"{self.runs} -> {chosen}; {count}, {MODE_TEXT[mode]}")
        names = list(dict.fromkeys(name for name in against if name is not None))
        if speed:
            summary.lines.append(
                f"vs {', '.join(names)}: speed {span(speed, median=True)}, params {span(params)},"
                f" peak {span(peak)}"
            )
        also = self.also
        if also is not None and names != [also] and all(also in c.methods for c in results):
            ratios = [case.speedup_over(also, mode) for case in results]
            summary.lines.append(f"vs {also} ({self.advice[also]}): speed {span(ratios)}")
        if losing:
            losing.sort(key=lambda loss: loss[0])
            ratio, kept, case, best = losing[0]
            line = (
                f"{self.kind}, {self.case_name(case)}: {best} is {times(1 / ratio)} faster:"
                f" use {self.advice[best]}"
            )
            summary.not_best.append(
                line + (f" (torchwire: {times(kept)} fewer bytes)" * (kept > 1))
            )
        if len(losing) > 1:
            others = [f"{self.case_name(c)} ({b} {times(1 / r)})" for r, _, c, b in losing[1:]]
            summary.not_best.append(_listed(f"{self.kind}, {len(others)} more: ", others))
        return summary


def _listed(start: str, items: Sequence[str], width: int = 110) -> str:
    """``start`` and as many of ``items`` as fit in ``width`` characters, then ``...``."""
    line = start + items[0]
    for item in items[1:]:
        if len(line) + len(item) + 7 > width:
            return line + ", ..."
        line += ", " + item
    return line
