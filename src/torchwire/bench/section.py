"""What a section of the bench is: the interface :func:`torchwire.bench.run` and the reports
use, and the two values a section hands them (a :class:`Table`, a :class:`Summary`).

A section is one module of this package with one object that satisfies :class:`Section`,
registered in :data:`torchwire.bench.suite.REGISTRY`. The suite asks it for its cases, runs
them one by one, and asks it again to describe the results: progress lines, tables, its
entries in the JSON and its lines in the one-screen summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from torchwire.bench.config import BenchConfig

__all__ = ["Section", "Summary", "Table"]

C = TypeVar("C")
R = TypeVar("R")


@dataclass(frozen=True)
class Table:
    """A titled table of strings; ``note`` (if any) is printed under it."""

    title: str
    headers: Sequence[str]
    rows: list[list[str]]
    note: str | None = None


@dataclass(frozen=True)
class Summary:
    """A section's part of the one-screen summary.

    ``headline`` names what torchwire runs, ``lines`` compare it with what users write today
    (ratios), ``not_best`` lists where torchwire is not the best choice on this device and
    what to use there instead.
    """

    kind: str
    headline: str
    lines: list[str] = field(default_factory=list)
    not_best: list[str] = field(default_factory=list)


class Section(Protocol[C, R]):
    """One section of the bench: its cases (``C``) and what one case measures (``R``).

    Attributes:
        name: the ``--section`` name; :class:`~torchwire.bench.suite.BenchResult` keeps the
            results under it.
        key: the key of the section's list of cases in :func:`~torchwire.bench.to_dict`.
        kind: the problem it measures, as the summary names it (``"sparse layers"``).
    """

    name: str
    key: str
    kind: str

    def cases(self, config: BenchConfig) -> list[C]:
        """The cases ``config`` asks for, in the order they run."""
        ...

    def run(self, case: C, config: BenchConfig) -> R:
        """Measure one case."""
        ...

    def progress(self, result: R) -> str:
        """One line about a finished case (the CLI prints it on stderr)."""
        ...

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        """The section's entries in the run's ``environment`` (written for every run)."""
        ...

    def notes(self, results: Sequence[R]) -> list[str]:
        """Lines of the report's header that explain the section's tables."""
        ...

    def tables(self, results: Sequence[R], *, details: bool) -> list[Table]:
        """The section's tables: with ``details``, one per case, then one row per case."""
        ...

    def summary(self, results: Sequence[R]) -> Summary:
        """The section's lines in the one-screen summary."""
        ...

    def to_dict(self, result: R) -> dict[str, Any]:
        """One case as JSON-ready data."""
        ...
