"""The bench's ``branches`` section: same-input heads fused into one layer.

A case is a set of same-input heads (:data:`BRANCH_PROBLEMS`) and a batch size; the reference
is ``branches``, the heads run one after another. Methods:

- ``branches``: :class:`torchwire.Parallel` of the heads.
- ``torchwire``: :func:`torchwire.fuse_parallel` of that Parallel (one wide layer, cut back
  into one output per head).
- ``manual_split``: the same wide layer followed by ``torch.split``, as written by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

import torchwire
from torchwire.bench.config import BenchConfig
from torchwire.bench.methods import MODES
from torchwire.bench.problems import ProblemCaseResult, ProblemSection

__all__ = [
    "BRANCH_ALTERNATIVES",
    "BRANCH_PROBLEMS",
    "PROBLEMS",
    "SECTION",
    "BranchCaseResult",
    "BranchProblem",
]

BRANCH_ALTERNATIVES = ("branches", "manual_split")
"""The ways users write same-input heads today: one after another, or fused by hand."""


@dataclass(frozen=True)
class BranchProblem:
    """Same-input heads: ``count`` copies of ``head`` (a module spec) on a per-sample input
    of ``shape``."""

    name: str
    description: str
    shape: tuple[int, ...]
    count: int
    head: Callable[..., nn.Module]

    def parallel(self, **factory_kwargs: Any) -> torchwire.Parallel:
        return torchwire.Parallel(*(self.head(**factory_kwargs) for _ in range(self.count)))


BRANCH_PROBLEMS = (
    BranchProblem(
        "vae-conv-heads",
        "VAE encoder heads (mean, log-variance): 2 x Conv2d(128, 8, 3, padding=1) on 128x16x16",
        (128, 16, 16),
        2,
        partial(nn.Conv2d, 128, 8, 3, padding=1),
    ),
    BranchProblem(
        "wide-conv-heads",
        "wide heads: 2 x Conv2d(64, 32, 3, padding=1) on 64x8x8",
        (64, 8, 8),
        2,
        partial(nn.Conv2d, 64, 32, 3, padding=1),
    ),
    BranchProblem(
        "linear-heads",
        "task heads: 8 x Linear(512, 16)",
        (512,),
        8,
        partial(nn.Linear, 512, 16),
    ),
    BranchProblem(
        "wide-linear-heads",
        "wide heads: 8 x Linear(256, 64)",
        (256,),
        8,
        partial(nn.Linear, 256, 64),
    ),
)
"""The section's problems: narrow heads (where fusing pays) and wide ones."""
_BY_NAME = {problem.name: problem for problem in BRANCH_PROBLEMS}
PROBLEMS = {
    "quick": ("vae-conv-heads", "linear-heads"),
    "default": ("vae-conv-heads", "wide-conv-heads", "linear-heads"),
    "full": tuple(_BY_NAME),
}
"""Names of the section's problems, by grid (the default: narrow heads, where fusing pays, and
wide ones, where it barely does)."""


class _ManualSplit(nn.Module):
    """The heads' wide layer, then ``torch.split`` into their outputs: what users write by
    hand (here the layer is taken from a fused Parallel)."""

    def __init__(self, fused: torchwire.FusedParallel) -> None:
        super().__init__()
        self.layer, self.sizes, self.dim = fused.layer, fused.sizes, fused.feature_dim

    def forward(self, input: Tensor) -> tuple[Tensor, ...]:
        return torch.split(self.layer(input), self.sizes, self.dim)


@dataclass
class BranchCaseResult(ProblemCaseResult):
    """Everything measured for one set of same-input heads and batch size (reference:
    ``branches``, the heads one after another)."""

    reference: ClassVar[str] = "branches"
    alternatives: ClassVar[tuple[str, ...]] = BRANCH_ALTERNATIVES
    surgery: ClassVar[str] = "fuse_parallel"

    problem: BranchProblem

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        kind = type(cast(torchwire.FusedParallel, module).layer).__name__
        return {mode: kind for mode in MODES}


class BranchSection(ProblemSection[BranchProblem, BranchCaseResult]):
    name, key, kind = "branches", "branches", "same-input heads"
    runs = "fuse_parallel"
    advice: ClassVar[Mapping[str, str]] = {
        "branches": "the heads one by one",
        "manual_split": "a wide layer and torch.split",
    }
    also = "branches"
    result = BranchCaseResult
    problems = BRANCH_PROBLEMS
    headers = (
        "problem",
        "batch",
        "fused layer",
        "speedup fwd",
        "speedup fwd+bwd",
        "torchwire / manual_split fwd+bwd",
    )

    def selected(self, config: BenchConfig) -> Sequence[BranchProblem]:
        return [_BY_NAME[name] for name in config.problems]

    def builders(self, problem: BranchProblem) -> dict[str, Callable[..., nn.Module]]:
        return {
            "torchwire": lambda **f: torchwire.fuse_parallel(problem.parallel(**f)),
            "branches": problem.parallel,
            "manual_split": lambda **f: _ManualSplit(
                torchwire.fuse_parallel(problem.parallel(**f))
            ),
        }

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        return {"branches": {name: _BY_NAME[name].description for name in config.problems}}

    def notes(self, results: Sequence[BranchCaseResult]) -> list[str]:
        return [
            "x branches: time / time of `branches`, the heads one after another.",
            "branches cases: torchwire = fuse_parallel(Parallel(heads)); speedup: time of"
            " branches / time of torchwire.",
        ]

    def row(self, case: BranchCaseResult) -> list[str]:
        return [*super().row(case), f"{1 / case.speedup_over('manual_split', 'fwd_bwd'):.2f}"]

    def to_dict(self, result: BranchCaseResult) -> dict[str, Any]:
        return {**super().to_dict(result), "heads": result.problem.count}


SECTION = BranchSection()
