"""The bench's ``merge`` section: layers in a row merged into one.

A case is a chain of linear operators (:data:`MERGE_PROBLEMS`) and a batch size; the
reference is ``sequential``, the chain as written. ``torchwire`` is the chain merged into one
layer by :func:`torchwire.merge`. Merging is for inference: the summary reports the forward.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from torch import Tensor, nn

import torchwire
from torchwire.bench.config import BenchConfig
from torchwire.bench.methods import MODES
from torchwire.bench.problems import ProblemCaseResult, ProblemSection

__all__ = ["MERGE_PROBLEMS", "SECTION", "MergeCaseResult", "MergeProblem"]


@dataclass(frozen=True)
class MergeProblem:
    """Two layers in a row, ``first`` then ``second`` (module specs), on a per-sample input of
    ``shape``."""

    name: str
    description: str
    shape: tuple[int, ...]
    first: Callable[..., nn.Module]
    second: Callable[..., nn.Module]

    def sequential(self, **factory_kwargs: Any) -> nn.Sequential:
        return nn.Sequential(self.first(**factory_kwargs), self.second(**factory_kwargs))


MERGE_PROBLEMS = (
    MergeProblem(
        "conv3x3-conv5x5",
        "Conv2d(1, 100, 3) then Conv2d(100, 2, 5) on 1x28x28 (5,900 weights; merged: one "
        "7x7 Conv2d(1, 2), 98)",
        (1, 28, 28),
        partial(nn.Conv2d, 1, 100, 3),
        partial(nn.Conv2d, 100, 2, 5),
    ),
)
"""The section's problems: the 3x3 then 5x5 convolution of the merging guide."""


@dataclass
class MergeCaseResult(ProblemCaseResult):
    """Everything measured for one chain of layers and batch size (reference: ``sequential``,
    the chain as written)."""

    reference: ClassVar[str] = "sequential"
    alternatives: ClassVar[tuple[str, ...]] = ("sequential",)
    surgery: ClassVar[str] = "merge"

    problem: MergeProblem

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        kind = type(module).__name__
        if isinstance(module, nn.modules.conv._ConvNd):
            kind += f" {'x'.join(map(str, module.kernel_size))}"
        return {mode: kind for mode in MODES}


class MergeSection(ProblemSection[MergeProblem, MergeCaseResult]):
    name, key, kind = "merge", "merge", "merged chains"
    mode = "fwd"  # merging is for inference
    runs = "merge"
    advice: ClassVar[Mapping[str, str]] = {"sequential": "the layers unmerged"}
    result = MergeCaseResult
    problems = MERGE_PROBLEMS
    headers = ("problem", "batch", "merged layer", "speedup fwd", "speedup fwd+bwd")

    def builders(self, problem: MergeProblem) -> dict[str, Callable[..., nn.Module]]:
        return {
            "torchwire": lambda **f: torchwire.merge(*problem.sequential(**f)),
            "sequential": problem.sequential,
        }

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        return {"merge": {problem.name: problem.description for problem in MERGE_PROBLEMS}}

    def notes(self, results: Sequence[MergeCaseResult]) -> list[str]:
        return ["x sequential: time / time of `sequential`, the layers as written."]


SECTION = MergeSection()
