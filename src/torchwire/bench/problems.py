"""What the branches and merge sections share: their cases are named problems (a model as
users write it, on a per-sample input shape), and ``torchwire`` is what a surgery function
(``fuse_parallel``, ``merge``) makes of the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from torch import nn

from torchwire.bench.compare import MODE_TEXT, Comparison
from torchwire.bench.config import BenchConfig
from torchwire.bench.methods import MODES, Measured, measure
from torchwire.bench.section import Table

__all__ = ["Problem", "ProblemCaseResult", "ProblemSection"]


class Problem(Protocol):
    """A named problem: what the tables and the JSON say about it."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


@dataclass
class ProblemCaseResult(Measured):
    """A case of a named problem; ``auto_backend`` holds the kind of layer the surgery made."""

    surgery: ClassVar[str]

    problem: Problem

    def label(self, name: str) -> str:
        if name != "torchwire":
            return name
        return f"torchwire ({self.surgery} -> {self.auto_backend['fwd']})"


P = TypeVar("P", bound=Problem)
R = TypeVar("R", bound=ProblemCaseResult)


class ProblemSection(Comparison[tuple[P, int], R]):
    """A section over named problems (``problems``, or those ``selected`` names) and batch
    sizes, whose cases' methods ``builders`` makes; the overview reports the speedups of
    ``torchwire`` over the reference (``result.reference``)."""

    result: type[R]
    problems: Sequence[P]
    headers: Sequence[str]

    def builders(self, problem: P) -> dict[str, Callable[..., nn.Module]]:
        """The methods of ``problem``'s cases, by name: ``torchwire`` and the alternatives."""
        raise NotImplementedError

    def selected(self, config: BenchConfig) -> Sequence[P]:
        """The problems ``config`` runs (default: all)."""
        return self.problems

    def cases(self, config: BenchConfig) -> list[tuple[P, int]]:
        return [(problem, batch) for batch in config.batches for problem in self.selected(config)]

    def run(self, case: tuple[P, int], config: BenchConfig) -> R:
        problem, batch = case
        builders = self.builders(problem)
        return measure(self.result, builders, problem.shape, batch, config, problem=problem)

    def progress(self, result: R) -> str:
        mode, reference = self.mode, result.reference
        return (
            f"{self.name} {self.case_name(result)}: {result.label('torchwire')},"
            f" {MODE_TEXT[mode]} {result.speedup_over(reference, mode):.2f}x vs {reference}"
            f" ({result.seconds:.1f} s)"
        )

    def case_name(self, case: R) -> str:
        return f"{case.problem.name} batch={case.batch}"

    def title(self, case: R) -> str:
        return (
            f"{self.name} {case.problem.name}: {case.problem.description}, batch"
            f" {case.batch}; reference = {case.reference}"
        )

    def row(self, case: R) -> list[str]:
        """The overview's row of ``case``: problem, batch, layer, speedups."""
        return [
            case.problem.name,
            str(case.batch),
            case.auto_backend["fwd"],
            *(f"{case.speedup_over(case.reference, mode):.2f}x" for mode in MODES),
        ]

    def overview(self, results: Sequence[R]) -> Table:
        reference = self.result.reference
        title = f"{self.name} summary (speedup: time of {reference} / time of torchwire)"
        return Table(title, self.headers, [self.row(case) for case in results])

    def to_dict(self, result: R) -> dict[str, Any]:
        return {
            "problem": result.problem.name,
            "description": result.problem.description,
            "input_shape": list(result.problem.shape),
            **self.common_dict(result),
            f"speedup_vs_{result.reference}": {
                mode: result.speedup_over(result.reference, mode) for mode in MODES
            },
        }
