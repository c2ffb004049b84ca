"""The bench's ``hierarchy`` section: a biologically informed network at the scale of Reactome.

The case is :func:`reactome_like`, a generated gene -> pathway hierarchy with the shape of the
real Reactome (no data file ships with torchwire): 11,000 genes, 2,200 lowest pathways
with about 20 genes each (median), 2,700 child -> parent relations, 9 levels and 28 roots.
Methods, trained at batch 64:

- ``torchwire``: :func:`torchwire.hierarchy`, one :class:`~torchwire.SparseLinear` per level.
- ``masked_dense``: the same layers as BINN builds them, a dense ``nn.Linear`` masked with
  ``torch.nn.utils.prune.custom_from_mask``, each followed by ``nn.Tanh``; the reference.

The section runs in the full grid (``torchwire bench --full``) or alone
(``torchwire bench --section hierarchy``); ``benchmarks/hierarchy.py`` records it.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

import torchwire
from torchwire.bench.config import BenchConfig
from torchwire.bench.methods import MODES, pruned
from torchwire.bench.problems import ProblemCaseResult, ProblemSection
from torchwire.hierarchy import hierarchy_wirings
from torchwire.wiring import Wiring

__all__ = [
    "SECTION",
    "HierarchyCaseResult",
    "HierarchyProblem",
    "reactome_like",
    "reactome_problem",
]

# Internal pathways per depth (depth 0: the roots), and the share of lowest pathways (the
# leaves, which the genes are annotated to) at each depth 1-8: Reactome's shape.
_INTERNAL = (28, 70, 110, 110, 80, 50, 25, 12)
_LEAF_DEPTHS = (0.05, 0.15, 0.22, 0.22, 0.16, 0.10, 0.06, 0.04)


def reactome_like(
    *,
    genes: int = 11_000,
    leaves: int = 2_200,
    relations: int = 2_700,
    genes_per_leaf: float = 20.0,
    seed: int = 0,
) -> tuple[Wiring, list[tuple[str, str]]]:
    """A generated gene -> pathway hierarchy shaped like Reactome: the named base wiring
    (genes -> lowest pathways) and the ``(child, parent)`` relations.

    Internal pathways have :data:`_INTERNAL` nodes per depth; each lowest pathway sits at
    a depth drawn from :data:`_LEAF_DEPTHS` under one parent one level up; relations past one
    per node add a second parent one or more levels up (some skip levels). Gene
    sets have log-normal sizes (median ``genes_per_leaf``), popular genes in many sets.

    Example::

        >>> base, pairs = reactome_like()
        >>> base.in_features, base.out_features, len(pairs)
        (11000, 2200, 2700)
    """
    rng = random.Random(seed)
    internal = [[f"P{d}.{k}" for k in range(n)] for d, n in enumerate(_INTERNAL)]
    parents: dict[str, list[str]] = {}
    depth_of: dict[str, int] = {}
    for d, names in enumerate(internal[1:], 1):
        above = internal[d - 1]
        for k, name in enumerate(names):  # every internal node above gets a child
            parents[name] = [above[k % len(above)] if k < len(above) else rng.choice(above)]
            depth_of[name] = d
    lowest = [f"L{k}" for k in range(leaves)]
    with_children = {ps[0] for ps in parents.values()}
    childless = [
        (d, n) for d, names in enumerate(internal) for n in names if n not in with_children
    ]
    for k, name in enumerate(lowest):
        if k < len(childless):  # the internal nodes nothing hangs under yet
            parent_depth, parent = childless[k]
            depth = parent_depth + 1
        else:
            depth = rng.choices(range(1, 9), _LEAF_DEPTHS)[0]
            parent = rng.choice(internal[depth - 1])
        parents[name], depth_of[name] = [parent], depth
    extra = relations - len(parents)
    if extra < 0:
        raise ValueError(f"relations must be at least {len(parents)}, got {relations}")
    candidates = [name for name, d in depth_of.items() if d >= 2]
    while extra:
        child = rng.choice(candidates)
        parent = rng.choice(internal[rng.randrange(depth_of[child])])
        if parent not in parents[child]:
            parents[child].append(parent)
            extra -= 1
    names = [f"G{k}" for k in range(genes)]
    popularity = list(itertools.accumulate(1 / (k + 1) ** 0.6 for k in range(genes)))
    mapping: dict[str, list[str]] = {}
    for name in lowest:
        size = min(genes, max(3, round(rng.lognormvariate(math.log(genes_per_leaf), 0.9))))
        chosen = dict.fromkeys(rng.choices(names, cum_weights=popularity, k=size))
        mapping[name] = list(chosen)
    base = Wiring.from_mapping(mapping, names, lowest)
    return base, [(child, parent) for child, ps in parents.items() for parent in ps]


@dataclass(frozen=True)
class HierarchyProblem:
    """A generated hierarchy (see :func:`reactome_like`) and the layers it gives."""

    name: str
    description: str
    base: Wiring
    relations: tuple[tuple[str, str], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.base.in_features,)

    def wirings(self) -> list[Wiring]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # every generated node is reached
            return hierarchy_wirings(self.base, self.relations)

    def masked_dense(self, **factory_kwargs: Any) -> nn.Sequential:
        """BINN's build: a dense ``nn.Linear`` per level, masked, then ``nn.Tanh``."""
        layers: list[nn.Module] = []
        for wiring in self.wirings():
            layers += [pruned(wiring.mask(), **factory_kwargs), nn.Tanh()]
        return nn.Sequential(*layers)


NAME = "reactome-like"
DESCRIPTION = (
    "generated like Reactome (reactome_like()): 11,000 genes -> 2,200 lowest pathways (about "
    "20 genes each) -> 2,700 child-parent relations, 9 levels, 28 roots"
)


@functools.cache
def reactome_problem() -> HierarchyProblem:
    """The section's problem: :func:`reactome_like`'s hierarchy (built once)."""
    base, pairs = reactome_like()
    return HierarchyProblem(NAME, DESCRIPTION, base, tuple(pairs))


@dataclass
class HierarchyCaseResult(ProblemCaseResult):
    """Everything measured for the hierarchy at one batch size (reference: ``masked_dense``)."""

    reference: ClassVar[str] = "masked_dense"
    alternatives: ClassVar[tuple[str, ...]] = ("masked_dense",)
    surgery: ClassVar[str] = "hierarchy"

    problem: HierarchyProblem

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        layers = [m for m in module.modules() if isinstance(m, torchwire.SparseLinear)]
        return {mode: f"{len(layers)} SparseLinear" for mode in MODES}


class HierarchySection(ProblemSection[HierarchyProblem, HierarchyCaseResult]):
    name, key, kind = "hierarchy", "hierarchy", "pathway hierarchies"
    runs = "hierarchy"
    advice: ClassVar[Mapping[str, str]] = {"masked_dense": "dense layers with masks"}
    result = HierarchyCaseResult
    headers = ("problem", "batch", "layers", "speedup fwd", "speedup fwd+bwd")
    batch = 64

    @property
    def problems(self) -> Sequence[HierarchyProblem]:  # type: ignore[override]
        return [reactome_problem()]

    def cases(self, config: BenchConfig) -> list[tuple[HierarchyProblem, int]]:
        """At batch 64, in the full grid or when the section runs alone."""
        if config.grid != "full" and config.sections != (self.name,):
            return []
        return [(problem, self.batch) for problem in self.problems]

    def builders(self, problem: HierarchyProblem) -> dict[str, Callable[..., nn.Module]]:
        def build(**factory: Any) -> nn.Module:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torchwire.hierarchy(problem.base, problem.relations, **factory)

        return {"torchwire": build, "masked_dense": problem.masked_dense}

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        return {"hierarchy": {NAME: DESCRIPTION}}  # without generating it

    def notes(self, results: Sequence[HierarchyCaseResult]) -> list[str]:
        return [
            "x masked_dense: time / time of `masked_dense`, BINN's build: per level a dense "
            "nn.Linear masked by torch.nn.utils.prune.custom_from_mask, then nn.Tanh."
        ]


SECTION = HierarchySection()
