r"""The benchmark suite behind ``torchwire bench``.

The suite has five sections. **overhead** (see :mod:`torchwire._overhead`) times one call of
each layer and container at tiny shapes against the torch code it replaces, and counts its
ATen ops. Each of the others times every way of computing its cases' layers and
reports each time as a ratio to the case's *reference* method.

**block**: a case is a block-diagonal layout (group :math:`i` maps ``in_sizes[i]`` inputs to
``out_sizes[i]`` outputs) and a batch size; the reference is ``limit``, one dense GEMM with the
same multiply-adds. Methods:

- ``torchwire``: :class:`torchwire.BlockLinear` with ``backend="auto"``, and
  ``torchwire[NAME]`` for every registered ``block_linear`` backend forced by name.
- ``modulelist``: ``nn.ModuleList`` of ``nn.Linear``, a Python loop over ``x.split`` and
  ``torch.cat``.
- ``masked_dense``: a dense ``nn.Linear`` masked with ``torch.nn.utils.prune.custom_from_mask``.
- ``conv1d_groups``: ``nn.Conv1d(kernel_size=1, groups=G)`` (equal groups only).
- ``limit``: ``nn.Linear(in_features, n)`` with ``n = round(sum(in_i * out_i) / in_features)``.

**sparse**: a case is a random wiring ``Wiring.random(n, n, density=d, seed=seed)`` and a batch
size; the reference is ``masked_weight``, the dense weight times a mask that users write. Methods:

- ``torchwire``: :class:`torchwire.SparseLinear` with ``backend="auto"``, and
  ``torchwire[NAME]`` for every registered ``sparse_linear`` backend that can compute the case.
- ``masked_weight``: ``F.linear(x, weight * mask, bias)`` with a dense weight and a dense mask
  buffer.
- ``prune_mask``: a dense ``nn.Linear`` masked with ``torch.nn.utils.prune.custom_from_mask``.
- ``torch_sparse``: a values parameter and CSR indices, ``torch.sparse.mm`` with autograd.

**branches**: a case is a set of same-input heads (:data:`BRANCH_PROBLEMS`) and a batch size;
the reference is ``branches``, the heads run one after another. Methods:

- ``branches``: :class:`torchwire.Parallel` of the heads.
- ``torchwire``: :func:`torchwire.fuse_parallel` of that Parallel (one wide layer, cut back
  into one output per head).
- ``manual_split``: the same wide layer followed by ``torch.split``, as written by hand.

**merge**: a case is a chain of linear operators (:data:`MERGE_PROBLEMS`) and a batch size; the
reference is ``sequential``, the chain as written. ``torchwire`` is the chain merged into one
layer by :func:`torchwire.merge`.

Timing: all methods of a case are built and warmed up first, then timed in interleaved rounds
(every method once per round, in a rotating order); each timing runs a method ``k`` times with
``k`` chosen so that it lasts at least ``min_time``. Medians are taken across rounds, so all the
numbers compared within a case come from the same run.
"""

from __future__ import annotations

import gc
import platform
import re
import statistics
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from typing import Any, ClassVar, TextIO, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import torchwire
from torchwire import _overhead
from torchwire.backends import available

__all__ = [
    "ALTERNATIVES",
    "BRANCH_ALTERNATIVES",
    "BRANCH_PROBLEMS",
    "FULL_BATCHES",
    "FULL_BRANCH_PROBLEMS",
    "FULL_DENSITIES",
    "FULL_FEATURES",
    "FULL_LAYOUTS",
    "MERGE_PROBLEMS",
    "MODES",
    "PEAK_BYTES_MEANING",
    "QUICK_BATCHES",
    "QUICK_BRANCH_PROBLEMS",
    "QUICK_DENSITIES",
    "QUICK_FEATURES",
    "QUICK_LAYOUTS",
    "SECTIONS",
    "SPARSE_ALTERNATIVES",
    "BenchConfig",
    "BenchResult",
    "BranchCaseResult",
    "BranchProblem",
    "CaseResult",
    "Layout",
    "MergeCaseResult",
    "MergeProblem",
    "MethodResult",
    "SparseCaseResult",
    "Timing",
    "default_device",
    "format_markdown",
    "format_text",
    "make_config",
    "parse_layout",
    "peak_bytes",
    "run",
    "to_dict",
]

SECTIONS = ("overhead", "block", "sparse", "branches", "merge")
"""The sections of the suite: block-diagonal layers, layers with any (random) connectivity,
same-input branches fused into one layer, and consecutive layers merged into one."""
MODES = ("fwd", "fwd_bwd")
"""Timed modes: forward under ``torch.no_grad()``; forward, then backward of a dense gradient."""
ALTERNATIVES = ("modulelist", "masked_dense", "conv1d_groups")
"""The methods users write today instead of torchwire's block-diagonal layers."""
SPARSE_ALTERNATIVES = ("masked_weight", "prune_mask", "torch_sparse")
"""The methods users write today instead of torchwire's sparse layers."""
BRANCH_ALTERNATIVES = ("branches", "manual_split")
"""The ways users write same-input heads today: one after another, or fused by hand."""

_TERM = re.compile(r"(?:(\d+)x)?(?:(\d+)|\((\d+(?:,\d+)*)\))")
_SEPARATOR = re.compile(r"[+,](?![^(]*\))")  # a + or , outside parentheses


@dataclass(frozen=True)
class Layout:
    """A block-diagonal layout: group ``i`` maps ``in_sizes[i]`` inputs to ``out_sizes[i]`` outputs.

    Build one from a spec string with :func:`parse_layout`.
    """

    name: str
    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]

    @property
    def in_features(self) -> int:
        return sum(self.in_sizes)

    @property
    def out_features(self) -> int:
        return sum(self.out_sizes)

    @property
    def groups(self) -> int:
        return len(self.in_sizes)

    @property
    def equal(self) -> bool:
        """Whether all groups have the same shape (what ``Conv1d(groups=G)`` can express)."""
        return len(set(self.in_sizes)) == 1 and len(set(self.out_sizes)) == 1

    @property
    def multiply_adds(self) -> int:
        """Multiply-adds per input row: ``sum(in_i * out_i)``."""
        return sum(i * o for i, o in zip(self.in_sizes, self.out_sizes, strict=True))

    @property
    def limit_features(self) -> int:
        """Output size of the dense GEMM with the same multiply-adds as this layout."""
        return max(1, round(self.multiply_adds / self.in_features))


def _parse_sizes(text: str) -> tuple[int, ...]:
    sizes: list[int] = []
    for term in _SEPARATOR.split(text):
        match = _TERM.fullmatch(term)
        if match is None:
            raise ValueError(f"cannot read {term!r}")
        count, size, pattern = match.groups()
        block = (int(size),) if size is not None else tuple(int(s) for s in pattern.split(","))
        sizes.extend(block * int(count or 1))
    return tuple(sizes)


def parse_layout(spec: str) -> Layout:
    r"""Read a layout spec such as ``16x64``, ``8x64+16x32``, ``16x(48,16)`` or ``2x2->2x3``.

    A spec is ``SIZES`` or ``IN_SIZES->OUT_SIZES``; ``SIZES`` is terms joined by ``+`` or ``,``,
    each term a size ``B``, ``GxB`` (``G`` groups of size ``B``) or ``Gx(B1,B2,...)`` (the pattern
    repeated ``G`` times). Without ``->`` the blocks are square (``out_sizes == in_sizes``).

    Args:
        spec (str): the layout spec; its whitespace-free form becomes :attr:`Layout.name`.

    Examples::

        >>> layout = parse_layout("2x(48,16)+32")
        >>> layout.in_sizes, layout.out_sizes == layout.in_sizes
        ((48, 16, 48, 16, 32), True)
        >>> parse_layout("2x2->2x3").out_sizes
        (3, 3)
    """
    name = "".join(spec.split())
    parts = name.split("->")
    try:
        if not 1 <= len(parts) <= 2:
            raise ValueError("more than one '->'")
        in_sizes = _parse_sizes(parts[0])
        out_sizes = _parse_sizes(parts[-1])
        if len(in_sizes) != len(out_sizes):
            raise ValueError(f"{len(in_sizes)} input groups but {len(out_sizes)} output groups")
        if 0 in in_sizes or 0 in out_sizes:
            raise ValueError("group sizes must be positive")
    except ValueError as error:
        raise ValueError(
            f"invalid layout {spec!r} ({error}): expected SIZES or IN_SIZES->OUT_SIZES with "
            "SIZES like 16x64, 8x64+16x32, 16x(48,16) or 2,2"
        ) from None
    return Layout(name, in_sizes, out_sizes)


FULL_LAYOUTS = tuple(
    parse_layout(spec)
    for spec in (
        "2x2->2x3",
        "4x256",
        "16x64",
        "64x32",
        "8x512",
        "256x8",
        "8x64+16x32",
        "4x128+8x64+16x32",
        "16x(48,16)",
    )
)
QUICK_LAYOUTS = tuple(parse_layout(spec) for spec in ("2x2->2x3", "16x64", "256x8", "8x64+16x32"))
FULL_FEATURES = (1024, 4096)
"""Sizes ``n`` of the sparse section's ``n -> n`` layers."""
QUICK_FEATURES = (1024,)
FULL_DENSITIES = (0.5, 0.2, 0.1, 0.05, 0.01, 0.001)
"""Densities of the sparse section's wirings (fractions of the ``n * n`` connections)."""
QUICK_DENSITIES = (0.05, 0.01)
FULL_BATCHES = (64, 1024)
QUICK_BATCHES = (64,)


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
"""The branches section's problems: narrow heads (where fusing pays) and wide ones."""
_BRANCH_PROBLEMS = {problem.name: problem for problem in BRANCH_PROBLEMS}
FULL_BRANCH_PROBLEMS = tuple(_BRANCH_PROBLEMS)
QUICK_BRANCH_PROBLEMS = ("vae-conv-heads", "linear-heads")


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
"""The merge section's problems: the 3x3 then 5x5 convolution of the merging guide."""


def default_device() -> torch.device:
    """``cuda`` if CUDA is available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class BenchConfig:
    """What to run. :func:`make_config` fills in the grid and the defaults of ``--quick``."""

    device: torch.device = field(default_factory=default_device)
    dtype: torch.dtype = torch.float32
    threads: int = 1
    sections: tuple[str, ...] = SECTIONS
    batches: tuple[int, ...] = FULL_BATCHES
    layouts: tuple[Layout, ...] = FULL_LAYOUTS
    features: tuple[int, ...] = FULL_FEATURES
    densities: tuple[float, ...] = FULL_DENSITIES
    problems: tuple[str, ...] = FULL_BRANCH_PROBLEMS
    repeats: int = 11
    seed: int = 0
    min_time: float = 2e-3
    quick: bool = False


def make_config(
    *,
    quick: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    threads: int = 1,
    sections: Sequence[str] | None = None,
    batches: Sequence[int] | None = None,
    layouts: Sequence[Layout] | None = None,
    features: Sequence[int] | None = None,
    densities: Sequence[float] | None = None,
    problems: Sequence[str] | None = None,
    repeats: int | None = None,
    seed: int = 0,
) -> BenchConfig:
    """Build a :class:`BenchConfig`; ``None`` picks the full or the ``quick`` default
    (``sections``: all of :data:`SECTIONS`)."""
    sections = tuple(sections or SECTIONS)
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown sections {unknown}; expected some of {list(SECTIONS)}")
    problems = tuple(problems or (QUICK_BRANCH_PROBLEMS if quick else FULL_BRANCH_PROBLEMS))
    unknown = [name for name in problems if name not in FULL_BRANCH_PROBLEMS]
    if unknown:
        raise ValueError(
            f"unknown branch problems {unknown}; expected some of {list(FULL_BRANCH_PROBLEMS)}"
        )
    return BenchConfig(
        device=default_device() if device is None else device,
        dtype=dtype,
        threads=threads,
        sections=sections,
        batches=tuple(batches or (QUICK_BATCHES if quick else FULL_BATCHES)),
        layouts=tuple(layouts or (QUICK_LAYOUTS if quick else FULL_LAYOUTS)),
        features=tuple(features or (QUICK_FEATURES if quick else FULL_FEATURES)),
        densities=tuple(densities or (QUICK_DENSITIES if quick else FULL_DENSITIES)),
        problems=problems,
        repeats=repeats or (5 if quick else 11),
        seed=seed,
        quick=quick,
    )


@dataclass
class Timing:
    """Milliseconds per call of one method in one mode: one sample per round."""

    iterations: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass
class MethodResult:
    """Timings (by mode), parameter + buffer bytes and peak fwd+bwd bytes of one method."""

    name: str
    timings: dict[str, Timing]
    param_bytes: int
    peak_bytes: int


@dataclass
class _Measured:
    """What every case measures: per-method results, by name, and the backends auto chose.

    Ratios divide by the median time of :attr:`reference`, a method of the same case.
    """

    reference: ClassVar[str]
    alternatives: ClassVar[tuple[str, ...]]

    batch: int
    auto_backend: dict[str, str]
    methods: dict[str, MethodResult]
    skipped: dict[str, str]
    seconds: float

    def median(self, name: str, mode: str) -> float:
        return self.methods[name].timings[mode].median

    def ratio(self, name: str, mode: str) -> float:
        """Median time of method ``name`` divided by the median time of :attr:`reference`."""
        return self.median(name, mode) / self.median(self.reference, mode)

    def speedup_over(self, name: str, mode: str) -> float:
        """Median time of method ``name`` divided by that of ``torchwire`` (auto)."""
        return self.median(name, mode) / self.median("torchwire", mode)

    def fastest(self, names: Sequence[str], mode: str) -> str | None:
        present = [name for name in names if name in self.methods]
        return min(present, key=lambda name: self.median(name, mode), default=None)

    @property
    def backends(self) -> list[str]:
        """Names of the forced torchwire methods that ran, e.g. ``["torchwire[bmm]"]``."""
        return [name for name in self.methods if name.startswith("torchwire[")]

    def fastest_backend(self, mode: str) -> str | None:
        """The fastest forced backend in ``mode`` (compare with :attr:`auto_backend`)."""
        name = self.fastest(self.backends, mode)
        return None if name is None else _backend_of(name)

    @property
    def alternative(self) -> str | None:
        """The fastest of :attr:`alternatives` in fwd+bwd."""
        return self.fastest(self.alternatives, "fwd_bwd")

    @property
    def speedup(self) -> float | None:
        """fwd+bwd time of :attr:`alternative` divided by that of ``torchwire``."""
        name = self.alternative
        return None if name is None else self.speedup_over(name, "fwd_bwd")

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        """What ``torchwire`` ran, by mode: the backend ``backend="auto"`` chose."""
        layer = cast(torchwire.BlockLinear | torchwire.SparseLinear, module)
        with torch.no_grad():  # auto may choose differently without autograd
            fwd = layer.resolve_backend(x)
        return {"fwd": fwd, "fwd_bwd": layer.resolve_backend(x_grad)}

    def label(self, name: str) -> str:
        if name != "torchwire":
            return name
        fwd, fwd_bwd = (self.auto_backend[mode] for mode in MODES)
        return f"torchwire (auto -> {fwd if fwd == fwd_bwd else f'{fwd} / {fwd_bwd}'})"

    def auto_vs_fastest(self, mode: str) -> float | None:
        """Time of the backend auto chose over that of the fastest one (both forced by name).

        1.0 when auto chose the fastest backend; ``None`` if no forced backend ran.
        """
        fastest = self.fastest_backend(mode)
        chosen = f"torchwire[{self.auto_backend[mode]}]"
        if fastest is None or chosen not in self.methods:
            return None
        return self.median(chosen, mode) / self.median(f"torchwire[{fastest}]", mode)


@dataclass
class CaseResult(_Measured):
    """Everything measured for one block-diagonal layout and batch size (reference: ``limit``)."""

    reference: ClassVar[str] = "limit"
    alternatives: ClassVar[tuple[str, ...]] = ALTERNATIVES

    layout: Layout


@dataclass
class SparseCaseResult(_Measured):
    """Everything measured for one random ``features -> features`` wiring and batch size
    (reference: ``masked_weight``)."""

    reference: ClassVar[str] = "masked_weight"
    alternatives: ClassVar[tuple[str, ...]] = SPARSE_ALTERNATIVES

    features: int
    density: float
    nnz: int

    @property
    def name(self) -> str:
        """``"FEATURES DENSITY%"``, e.g. ``"1024 5%"``."""
        return f"{self.features} {_percent(self.density)}"

    def bytes_per_connection(self, name: str) -> float:
        """Parameter + buffer bytes of method ``name`` divided by the number of connections."""
        return self.methods[name].param_bytes / self.nnz


@dataclass
class _ProblemCaseResult(_Measured):
    """A case of a named problem, where ``torchwire`` is what a surgery function (``surgery``)
    made of the reference module; ``auto_backend`` holds the layer it made."""

    section: ClassVar[str]
    surgery: ClassVar[str]
    headline: ClassVar[str]  # the mode the progress line reports

    problem: BranchProblem | MergeProblem

    def label(self, name: str) -> str:
        if name != "torchwire":
            return name
        return f"torchwire ({self.surgery} -> {self.auto_backend['fwd']})"


@dataclass
class MergeCaseResult(_ProblemCaseResult):
    """Everything measured for one chain of layers and batch size (reference: ``sequential``,
    the chain as written)."""

    reference: ClassVar[str] = "sequential"
    alternatives: ClassVar[tuple[str, ...]] = ("sequential",)
    section: ClassVar[str] = "merge"
    surgery: ClassVar[str] = "merge"
    headline: ClassVar[str] = "fwd"  # merging is for inference

    problem: MergeProblem

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        merged: Any = module
        kind = type(merged).__name__
        if isinstance(merged, nn.modules.conv._ConvNd):
            kind += f" {'x'.join(map(str, merged.kernel_size))}"
        return {mode: kind for mode in MODES}


@dataclass
class BranchCaseResult(_ProblemCaseResult):
    """Everything measured for one set of same-input heads and batch size (reference:
    ``branches``, the heads one after another)."""

    reference: ClassVar[str] = "branches"
    alternatives: ClassVar[tuple[str, ...]] = BRANCH_ALTERNATIVES
    section: ClassVar[str] = "branches"
    surgery: ClassVar[str] = "fuse_parallel"
    headline: ClassVar[str] = "fwd_bwd"

    problem: BranchProblem

    @staticmethod
    def chosen(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, str]:
        kind = type(cast(torchwire.FusedParallel, module).layer).__name__
        return {mode: kind for mode in MODES}


_AnyCase = CaseResult | SparseCaseResult | BranchCaseResult | MergeCaseResult


def _backend_of(name: str) -> str:
    return name.removeprefix("torchwire[").removesuffix("]")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


@dataclass
class BenchResult:
    """The environment and the results of all cases of a run, by section."""

    environment: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    sparse: list[SparseCaseResult] = field(default_factory=list)
    branches: list[BranchCaseResult] = field(default_factory=list)
    merge: list[MergeCaseResult] = field(default_factory=list)
    overhead: list[_overhead.OverheadResult] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Methods


class _ModuleListLinear(nn.Module):
    def __init__(self, layout: Layout, **factory_kwargs: Any) -> None:
        super().__init__()
        self.in_sizes = list(layout.in_sizes)
        self.linears = nn.ModuleList(
            nn.Linear(i, o, **factory_kwargs)
            for i, o in zip(layout.in_sizes, layout.out_sizes, strict=True)
        )

    def forward(self, input: Tensor) -> Tensor:
        parts = torch.split(input, self.in_sizes, -1)
        return torch.cat([linear(x) for linear, x in zip(self.linears, parts, strict=True)], -1)


class _PointwiseConv1d(nn.Module):
    def __init__(self, layout: Layout, **factory_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            layout.in_features, layout.out_features, 1, groups=layout.groups, **factory_kwargs
        )

    def forward(self, input: Tensor) -> Tensor:
        out: Tensor = self.conv(input.unsqueeze(-1))
        return out.squeeze(-1)


def _pruned(mask: Tensor, **factory_kwargs: Any) -> nn.Linear:
    """A dense ``nn.Linear`` masked with ``prune.custom_from_mask``; ``mask`` is like its weight."""
    linear = nn.Linear(mask.shape[1], mask.shape[0], **factory_kwargs)
    prune.custom_from_mask(linear, "weight", mask.to(linear.weight.device))
    return linear


def _masked_dense(layout: Layout, **factory_kwargs: Any) -> nn.Linear:
    device = factory_kwargs.get("device")
    groups = torch.arange(layout.groups, device=device)
    in_group = groups.repeat_interleave(torch.tensor(layout.in_sizes, device=device))
    out_group = groups.repeat_interleave(torch.tensor(layout.out_sizes, device=device))
    mask = out_group[:, None] == in_group[None, :]  # (out_features, in_features), like weight
    return _pruned(mask, **factory_kwargs)


def _block_linear(layout: Layout, backend: str, **factory_kwargs: Any) -> torchwire.BlockLinear:
    if layout.equal:  # the ints + groups form, as users write equal groups
        sizes: tuple[Any, ...] = (layout.in_features, layout.out_features, layout.groups)
    else:
        sizes = (layout.in_sizes, layout.out_sizes)
    return torchwire.BlockLinear(*sizes, backend=backend, **factory_kwargs)


class _MaskedWeightLinear(nn.Linear):
    """The dense weight times a mask that users write: ``F.linear(x, weight * mask, bias)``."""

    mask: Tensor

    def __init__(self, mask: Tensor, **factory_kwargs: Any) -> None:
        super().__init__(mask.shape[1], mask.shape[0], **factory_kwargs)
        self.register_buffer("mask", mask.to(self.weight))

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight * self.mask, self.bias)


class _TorchSparseLinear(nn.Module):
    """Connection values as a parameter; per call, a sparse CSR tensor of them and
    ``torch.sparse.mm``, differentiated by autograd."""

    crow_indices: Tensor
    col_indices: Tensor

    def __init__(self, wiring: torchwire.Wiring, **factory_kwargs: Any) -> None:
        super().__init__()
        layer = torchwire.SparseLinear(wiring, **factory_kwargs)  # for its initial values
        self.weight, self.bias = layer.weight, cast(nn.Parameter, layer.bias)
        self.shape = wiring.shape
        device = factory_kwargs.get("device")
        # CSR by output: the canonical order of the values. int64, like Tensor.to_sparse_csr().
        self.register_buffer("crow_indices", wiring.indptr.to(device))
        self.register_buffer("col_indices", wiring.indices.to(device, torch.int64))
        with warnings.catch_warnings():
            # torch warns once per process that sparse CSR support is in beta: here, silenced.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self._sparse_weight()

    def _sparse_weight(self) -> Tensor:
        # check_invariants=False explicitly, as users do to silence torch's warning about it.
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.weight, self.shape, check_invariants=False
        )

    def forward(self, input: Tensor) -> Tensor:
        out: Tensor = torch.sparse.mm(self._sparse_weight(), input.t())
        return out.t() + self.bias


class _ManualSplit(nn.Module):
    """The heads' wide layer, then ``torch.split`` into their outputs: what users write by
    hand (here the layer is taken from a fused Parallel)."""

    def __init__(self, fused: torchwire.FusedParallel) -> None:
        super().__init__()
        self.layer, self.sizes, self.dim = fused.layer, fused.sizes, fused.feature_dim

    def forward(self, input: Tensor) -> tuple[Tensor, ...]:
        return torch.split(self.layer(input), self.sizes, self.dim)


def _torchwire_builders(
    build: Callable[..., nn.Module], backends: Sequence[str]
) -> dict[str, Callable[..., nn.Module]]:
    """``torchwire``: ``build(backend="auto")``, and ``torchwire[NAME]`` for every backend."""
    builders: dict[str, Callable[..., nn.Module]] = {"torchwire": partial(build, backend="auto")}
    builders.update({f"torchwire[{b}]": partial(build, backend=b) for b in backends})
    return builders


def _block_builders(layout: Layout, backends: Sequence[str]) -> dict[str, Callable[..., nn.Module]]:
    builders = _torchwire_builders(partial(_block_linear, layout), backends)
    builders["modulelist"] = partial(_ModuleListLinear, layout)
    builders["masked_dense"] = partial(_masked_dense, layout)
    if layout.equal:
        builders["conv1d_groups"] = partial(_PointwiseConv1d, layout)
    builders["limit"] = partial(nn.Linear, layout.in_features, layout.limit_features)
    return builders


def _sparse_builders(
    wiring: torchwire.Wiring, backends: Sequence[str]
) -> dict[str, Callable[..., nn.Module]]:
    mask = wiring.mask()
    builders = _torchwire_builders(partial(torchwire.SparseLinear, wiring), backends)
    builders["masked_weight"] = partial(_MaskedWeightLinear, mask)
    builders["prune_mask"] = partial(_pruned, mask)
    builders["torch_sparse"] = partial(_TorchSparseLinear, wiring)
    return builders


def _steps(module: nn.Module, x: Tensor, x_grad: Tensor) -> dict[str, Callable[[], None]]:
    inputs = (x_grad, *(p for p in module.parameters() if p.requires_grad))

    with torch.no_grad():
        # A dense upstream gradient, as a hidden layer receives. (``out.sum().backward()``
        # would hand every method a stride-0 expanded gradient, which no BLAS call accepts
        # and which favours whichever method copies it least.) One per output of the heads.
        grad_out = [torch.randn_like(y) for y in tree_leaves(module(x))]

    def fwd() -> None:
        module(x)

    def fwd_bwd() -> None:
        # Like ``module(x).backward(grad_out)`` with every ``.grad`` None beforehand: the
        # gradients of the input and of all parameters are computed, nothing accumulates.
        outputs = tree_leaves(module(x_grad))
        torch.autograd.grad(outputs, inputs, grad_out, allow_unused=True)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def _state_bytes(module: nn.Module) -> int:
    tensors = chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


# ---------------------------------------------------------------------------------------------
# Measurement


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


def _seconds_per_call(
    step: Callable[[], None], iterations: int, mode: str, sync: Callable[[], None]
) -> float:
    with torch.set_grad_enabled(mode == "fwd_bwd"):
        sync()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        sync()
        return (time.perf_counter() - start) / iterations


def _calibrate(
    step: Callable[[], None], mode: str, sync: Callable[[], None], min_time: float
) -> int:
    """Warm up ``step``, then return the number of calls that takes at least ``min_time``."""
    _seconds_per_call(step, 1, mode, sync)
    iterations = 1
    while _seconds_per_call(step, iterations, mode, sync) * iterations < min_time:
        iterations *= 2
    return iterations


_SPARSE_PARTS = {
    torch.sparse_coo: ("_indices", "_values"),
    torch.sparse_csr: ("crow_indices", "col_indices", "values"),
    torch.sparse_bsr: ("crow_indices", "col_indices", "values"),
    torch.sparse_csc: ("ccol_indices", "row_indices", "values"),
    torch.sparse_bsc: ("ccol_indices", "row_indices", "values"),
}


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    """Storages of the tensors in ``tree``; a sparse tensor's: those of its indices and values."""
    storages = []
    for t in tree_leaves(tree):
        if isinstance(t, Tensor):
            parts = [getattr(t, name)() for name in _SPARSE_PARTS.get(t.layout, ())] or [t]
            storages += [part.untyped_storage() for part in parts]
    return storages


class _LiveBytes(TorchDispatchMode):
    """Track the bytes of tensor storages created by ATen ops while the mode is active.

    A storage counts from the op that creates it (outputs that alias an input, such as views and
    in-place results, are not new) until it is freed (a ``weakref.finalize`` on the storage);
    :attr:`peak` is the maximum of the running total. Sparse tensors count their index and
    value tensors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        aliased = {storage.data_ptr() for storage in _storages((args, kwargs))}
        for storage in _storages(out):
            key = storage.data_ptr()
            if key == 0 or key in aliased or key in self.live:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


PEAK_BYTES_MEANING = {
    "cpu": (
        "most bytes alive at once of the tensors created during one forward+backward step"
        " (outputs, saved activations, gradients of the input and all parameters), tracked per"
        " ATen op with a TorchDispatchMode; scratch memory inside a kernel is not seen"
    ),
    "cuda": (
        "peak bytes allocated by the CUDA caching allocator during one forward+backward step,"
        " above what was allocated before it (torch.cuda.max_memory_allocated)"
    ),
}
"""What ``peak bytes`` means, by device type."""


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory of ``step()`` beyond what existed before it (see :data:`PEAK_BYTES_MEANING`).

    Args:
        step (Callable[[], None]): the work to measure; it runs once, with grad mode enabled.
        device (torch.device): where ``step`` allocates. CUDA reads the caching allocator's
            statistics; other devices track tensors with a ``TorchDispatchMode``.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.enable_grad():
            step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    tracker = _LiveBytes()
    with torch.enable_grad(), tracker:
        step()
    return tracker.peak


_Case = TypeVar("_Case", bound=_Measured)


def _run_case(
    result: type[_Case],
    builders: dict[str, Callable[..., nn.Module]],
    shape: tuple[int, ...],
    batch: int,
    config: BenchConfig,
    *,
    skipped: dict[str, str] | None = None,
    **case: Any,
) -> _Case:
    """Measure every method of ``builders`` on a ``(batch, *shape)`` input.

    A forced backend (``torchwire[NAME]``) that fails to build or run joins ``skipped`` (the
    methods not built at all, with why); any other method that fails raises. Returns
    ``result(..., **case)``.
    """
    start = time.perf_counter()
    skipped = dict(skipped or {})
    torch.manual_seed(config.seed)
    factory_kwargs: dict[str, Any] = {"device": config.device, "dtype": config.dtype}
    x = torch.randn(batch, *shape, **factory_kwargs)
    x_grad = x.detach().requires_grad_()
    sync = _synchronizer(config.device)

    modules: dict[str, nn.Module] = {}
    steps: dict[str, dict[str, Callable[[], None]]] = {}
    for name, build in builders.items():
        try:
            module = build(**factory_kwargs)
            module_steps = _steps(module, x, x_grad)
            for mode, step in module_steps.items():
                _seconds_per_call(step, 1, mode, sync)
        except Exception as error:
            if not name.startswith("torchwire["):
                raise
            skipped[name] = f"{type(error).__name__}: {error}"
            continue
        modules[name], steps[name] = module, module_steps

    timings = {
        name: {mode: Timing(_calibrate(fn, mode, sync, config.min_time)) for mode, fn in s.items()}
        for name, s in steps.items()
    }
    names = list(steps)
    gc.collect()
    gc.disable()
    try:
        for round_ in range(config.repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                for mode, timing in timings[name].items():
                    seconds = _seconds_per_call(steps[name][mode], timing.iterations, mode, sync)
                    timing.samples.append(seconds * 1e3)
    finally:
        gc.enable()

    methods = {
        name: MethodResult(
            name,
            timings[name],
            _state_bytes(modules[name]),
            peak_bytes(steps[name]["fwd_bwd"], config.device),
        )
        for name in names
    }
    return result(
        batch=batch,
        auto_backend=result.chosen(modules["torchwire"], x, x_grad),
        methods=methods,
        skipped=skipped,
        seconds=time.perf_counter() - start,
        **case,
    )


def _run_block_case(
    layout: Layout, batch: int, backends: Sequence[str], config: BenchConfig
) -> CaseResult:
    builders = _block_builders(layout, backends)
    skipped = {} if layout.equal else {"conv1d_groups": "needs equal groups"}
    return _run_case(
        CaseResult, builders, (layout.in_features,), batch, config, skipped=skipped, layout=layout
    )


def _run_sparse_case(
    features: int, density: float, batch: int, backends: Sequence[str], config: BenchConfig
) -> SparseCaseResult:
    # Wiring.random(n, n, density=density) draws round(density * n * n) connections; at least one.
    nnz = max(1, round(density * features * features))
    wiring = torchwire.Wiring.random(features, features, nnz=nnz, seed=config.seed)
    builders = _sparse_builders(wiring, backends)
    return _run_case(
        SparseCaseResult,
        builders,
        (features,),
        batch,
        config,
        features=features,
        density=density,
        nnz=nnz,
    )


def _run_branch_case(problem: BranchProblem, batch: int, config: BenchConfig) -> BranchCaseResult:
    builders = {
        "torchwire": lambda **f: torchwire.fuse_parallel(problem.parallel(**f)),
        "branches": problem.parallel,
        "manual_split": lambda **f: _ManualSplit(torchwire.fuse_parallel(problem.parallel(**f))),
    }
    return _run_case(BranchCaseResult, builders, problem.shape, batch, config, problem=problem)


def _run_merge_case(problem: MergeProblem, batch: int, config: BenchConfig) -> MergeCaseResult:
    builders = {
        "torchwire": lambda **f: torchwire.merge(*problem.sequential(**f)),
        "sequential": problem.sequential,
    }
    return _run_case(MergeCaseResult, builders, problem.shape, batch, config, problem=problem)


def _device_name(device: torch.device) -> str:
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


def _environment(
    config: BenchConfig, backends: Sequence[str], sparse_backends: Sequence[str]
) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "torchwire": torchwire.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(config.device),
        "device_name": _device_name(config.device),
        "dtype": str(config.dtype).removeprefix("torch."),
        "threads": config.threads,
        "quick": config.quick,
        "repeats": config.repeats,
        "seed": config.seed,
        "min_time_ms": config.min_time * 1e3,
        "sections": list(config.sections),
        "batches": list(config.batches),
        "layouts": [layout.name for layout in config.layouts],
        "backends": list(backends),
        "modes": {
            "fwd": "forward under torch.no_grad()",
            "fwd_bwd": (
                "forward, then backward of a random dense output gradient to the input and "
                "all parameters"
            ),
        },
        "limit": "one nn.Linear(in_features, round(sum(in_i * out_i) / in_features))",
        "sparse": {
            "features": list(config.features),
            "densities": list(config.densities),
            "backends": list(sparse_backends),
            "wiring": f"Wiring.random(n, n, density=d, seed={config.seed})",
            "masked_weight": "F.linear(x, weight * mask, bias), dense weight and dense mask buffer",
        },
        "branches": {name: _BRANCH_PROBLEMS[name].description for name in config.problems},
        "merge": {problem.name: problem.description for problem in MERGE_PROBLEMS},
        "peak_bytes": PEAK_BYTES_MEANING.get(config.device.type, PEAK_BYTES_MEANING["cpu"]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _progress_line(case: _AnyCase) -> str:
    if isinstance(case, _ProblemCaseResult):
        mode, reference = case.headline, case.reference
        return (
            f"{case.section} {case.problem.name} batch={case.batch}: {case.label('torchwire')},"
            f" {mode.replace('_', '+')} {case.speedup_over(reference, mode):.2f}x vs {reference}"
            f" ({case.seconds:.1f} s)"
        )
    if isinstance(case, SparseCaseResult):
        return (
            f"sparse {case.name} batch={case.batch}: {case.label('torchwire')},"
            f" fwd+bwd {case.speedup_over('masked_weight', 'fwd_bwd'):.2f}x vs masked_weight"
            f" ({case.seconds:.1f} s)"
        )
    speedup = "" if case.speedup is None else f", {case.speedup:.2f}x vs {case.alternative}"
    return (
        f"{case.layout.name} batch={case.batch}: {case.label('torchwire')},"
        f" fwd+bwd {case.ratio('torchwire', 'fwd_bwd'):.2f}x limit{speedup}"
        f" ({case.seconds:.1f} s)"
    )


def run(config: BenchConfig, *, progress: TextIO | None = None) -> BenchResult:
    """Run every case of ``config``'s sections: block, then sparse, then branches.

    Each section loops over batch sizes outermost; then over layouts (block), over features
    and then densities (sparse), or over problems (branches).

    Sets ``torch.set_num_threads(config.threads)`` for the run and restores it afterwards.

    Args:
        config (BenchConfig): the grid and the measurement settings.
        progress (TextIO, optional): where to write one line per finished case (the CLI passes
            ``sys.stderr``). Default: ``None`` (silent).

    Returns:
        BenchResult: the environment and per-case results; render it with :func:`format_text`,
        :func:`format_markdown` or :func:`to_dict`.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        backends, sparse_backends = available("block_linear"), available("sparse_linear")
        result = BenchResult(_environment(config, backends, sparse_backends))
        jobs: list[Callable[[], _AnyCase]] = []
        if "overhead" in config.sections:  # per-call host cost, at tiny shapes
            result.overhead = _overhead.run(config.repeats)
            if progress is not None:
                print(f"overhead: {len(result.overhead)} cases", file=progress, flush=True)
        if "block" in config.sections:
            jobs += [
                partial(_run_block_case, layout, batch, backends, config)
                for batch in config.batches
                for layout in config.layouts
            ]
        if "sparse" in config.sections:
            jobs += [
                partial(_run_sparse_case, features, density, batch, sparse_backends, config)
                for batch in config.batches
                for features in config.features
                for density in config.densities
            ]
        if "branches" in config.sections:
            jobs += [
                partial(_run_branch_case, _BRANCH_PROBLEMS[name], batch, config)
                for batch in config.batches
                for name in config.problems
            ]
        if "merge" in config.sections:
            jobs += [
                partial(_run_merge_case, problem, batch, config)
                for batch in config.batches
                for problem in MERGE_PROBLEMS
            ]
        for index, job in enumerate(jobs, 1):
            case = job()
            if isinstance(case, MergeCaseResult):
                result.merge.append(case)
            elif isinstance(case, BranchCaseResult):
                result.branches.append(case)
            elif isinstance(case, SparseCaseResult):
                result.sparse.append(case)
            else:
                result.cases.append(case)
            if progress is not None:
                print(f"[{index}/{len(jobs)}] {_progress_line(case)}", file=progress, flush=True)
    finally:
        torch.set_num_threads(threads)
    return result


# ---------------------------------------------------------------------------------------------
# Reports

_SUMMARY_HEADERS = (
    "case",
    "batch",
    "auto backend",
    "fastest backend",
    "auto / fastest",
    "torchwire x limit",
    "fastest alternative",
    "torchwire speedup",
)
_SPARSE_SUMMARY_HEADERS = (
    "features",
    "density",
    "batch",
    "auto backend",
    "fastest backend",
    "auto / fastest",
    "speedup fwd",
    "speedup fwd+bwd",
    "torchwire bytes / conn",
)
_BRANCH_SUMMARY_HEADERS = (
    "problem",
    "batch",
    "fused layer",
    "speedup fwd",
    "speedup fwd+bwd",
    "torchwire / manual_split fwd+bwd",
)


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _header(result: BenchResult) -> list[str]:
    env = result.environment
    threads = f"{env['threads']} thread" + ("s" if env["threads"] != 1 else "")
    ratios = [f"x limit: time / time of `limit`, {env['limit']}"] if result.cases else []
    if result.sparse:
        masked_weight = env["sparse"]["masked_weight"]
        ratios.append(f"x masked_weight: time / time of `masked_weight`, {masked_weight}")
    if result.branches:
        ratios.append("x branches: time / time of `branches`, the heads one after another")
    if result.merge:
        ratios.append("x sequential: time / time of `sequential`, the layers as written")
    lines = [
        f"torchwire bench: torch {env['torch']}, torchwire {env['torchwire']},"
        f" {env['device']} ({env['device_name']}), {env['dtype']}, {threads}",
        f"fwd: {env['modes']['fwd']}; fwd+bwd: {env['modes']['fwd_bwd']}.",
        "; ".join([f"ms: median over {env['repeats']} interleaved rounds", *ratios]) + ".",
        f"params bytes: parameters + buffers; peak bytes: {env['peak_bytes']}.",
    ]
    if result.cases or result.sparse:
        lines.insert(
            3,
            'auto -> A / B: torchwire\'s backend="auto" runs A for fwd and B for fwd+bwd;'
            " auto / fastest: time of the backend auto chose / time of the fastest backend"
            " (both forced by name).",
        )
    if result.sparse:
        lines.append(
            f"sparse cases: {env['sparse']['wiring']}; bytes / conn: params bytes / connections;"
            " speedup: time of masked_weight / time of torchwire (auto)."
        )
    if result.branches:
        lines.append(
            "branches cases: torchwire = fuse_parallel(Parallel(heads)); speedup: time of"
            " branches / time of torchwire."
        )
    return lines


def _case_title(case: _AnyCase) -> str:
    if isinstance(case, _ProblemCaseResult):
        return (
            f"{case.section} {case.problem.name}: {case.problem.description}, batch"
            f" {case.batch}; reference = {case.reference}"
        )
    if isinstance(case, SparseCaseResult):
        return (
            f"sparse {case.features} -> {case.features}, density {_percent(case.density)}"
            f" ({case.nnz:,} connections), batch {case.batch}; reference = masked_weight"
        )
    layout = case.layout
    return (
        f"{layout.name}: {layout.in_features} -> {layout.out_features}, {layout.groups} groups,"
        f" batch {case.batch}; limit = Linear({layout.in_features}, {layout.limit_features})"
    )


def _case_table(case: _AnyCase) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a case's table: one row per method."""
    sparse = isinstance(case, SparseCaseResult)
    ratio = f"x {case.reference}"
    headers = ["method", "fwd ms", f"fwd {ratio}", "fwd+bwd ms", f"fwd+bwd {ratio}"]
    headers += ["params bytes", *(["bytes / conn"] if sparse else []), "peak bytes"]
    rows = []
    for name, method in case.methods.items():
        row = [case.label(name)]
        for mode in MODES:
            row += [_ms(case.median(name, mode)), f"{case.ratio(name, mode):.2f}"]
        row.append(_bytes(method.param_bytes))
        if isinstance(case, SparseCaseResult):
            row.append(f"{case.bytes_per_connection(name):.1f}")
        rows.append([*row, _bytes(method.peak_bytes)])
    return headers, rows


def _regret(case: _AnyCase) -> str:
    regret = case.auto_vs_fastest("fwd_bwd")
    return "-" if regret is None else f"{regret:.2f}"


def _summary_rows(result: BenchResult) -> list[list[str]]:
    rows = []
    for case in result.cases:
        rows.append(
            [
                case.layout.name,
                str(case.batch),
                case.auto_backend["fwd_bwd"],
                case.fastest_backend("fwd_bwd") or "-",
                _regret(case),
                f"{case.ratio('torchwire', 'fwd_bwd'):.2f}",
                case.alternative or "-",
                "-" if case.speedup is None else f"{case.speedup:.2f}x",
            ]
        )
    return rows


def _sparse_summary_rows(result: BenchResult) -> list[list[str]]:
    return [
        [
            str(case.features),
            _percent(case.density),
            str(case.batch),
            case.auto_backend["fwd_bwd"],
            case.fastest_backend("fwd_bwd") or "-",
            _regret(case),
            *(f"{case.speedup_over(case.reference, mode):.2f}x" for mode in MODES),
            f"{case.bytes_per_connection('torchwire'):.1f}",
        ]
        for case in result.sparse
    ]


def _branch_summary_rows(result: BenchResult) -> list[list[str]]:
    return [
        [
            case.problem.name,
            str(case.batch),
            case.auto_backend["fwd"],
            *(f"{case.speedup_over(case.reference, mode):.2f}x" for mode in MODES),
            f"{1 / case.speedup_over('manual_split', 'fwd_bwd'):.2f}",
        ]
        for case in result.branches
    ]


_MERGE_SUMMARY_HEADERS = ("problem", "batch", "merged layer", "speedup fwd", "speedup fwd+bwd")


def _merge_summary_rows(result: BenchResult) -> list[list[str]]:
    return [
        [
            case.problem.name,
            str(case.batch),
            case.auto_backend["fwd"],
            *(f"{case.speedup_over(case.reference, mode):.2f}x" for mode in MODES),
        ]
        for case in result.merge
    ]


# A section's cases, its summary's title, headers and rows.
_Section = tuple[Sequence[_AnyCase], str, Sequence[str], list[list[str]]]


def _sections(result: BenchResult) -> list[_Section]:
    """The sections that ran, in order."""
    sections: list[_Section] = []
    if result.cases:
        rows = _summary_rows(result)
        sections.append((result.cases, "summary (fwd+bwd)", _SUMMARY_HEADERS, rows))
    if result.sparse:
        title = "sparse summary (auto / fastest: fwd+bwd; speedup vs masked_weight)"
        rows = _sparse_summary_rows(result)
        sections.append((result.sparse, title, _SPARSE_SUMMARY_HEADERS, rows))
    if result.branches:
        title = "branches summary (speedup: time of branches / time of torchwire)"
        rows = _branch_summary_rows(result)
        sections.append((result.branches, title, _BRANCH_SUMMARY_HEADERS, rows))
    if result.merge:
        title = "merge summary (speedup: time of sequential / time of torchwire)"
        sections.append((result.merge, title, _MERGE_SUMMARY_HEADERS, _merge_summary_rows(result)))
    return sections


def _skipped_line(case: _AnyCase) -> str | None:
    if not case.skipped:
        return None
    return "skipped: " + "; ".join(f"{name} ({why})" for name, why in case.skipped.items())


def _text_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [list(headers), *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _markdown_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(headers), "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|"] + [
        line(row) for row in rows
    ]


def _overhead_title() -> str:
    modes = "; ".join(f"{m}: {t}" for m, t in _overhead.MODE_TEXT.items())
    return (
        "overhead (per call at tiny shapes, median us; x against: time / time of the torch code"
        f" it replaces; {modes}; ATen ops counted by a TorchDispatchMode)"
    )


def format_text(result: BenchResult) -> str:
    """Render ``result`` as plain-text tables: header, then per section one table per case and
    a summary."""
    lines = _header(result)
    if result.overhead:
        table = _text_table(_overhead.HEADERS, _overhead.rows(result.overhead))
        lines += ["", f"{_overhead_title()}:", *table]
    for cases, title, headers, rows in _sections(result):
        for case in cases:
            lines += ["", _case_title(case), *_text_table(*_case_table(case))]
            skipped = _skipped_line(case)
            lines += [skipped] if skipped else []
        lines += ["", f"{title}:", *_text_table(headers, rows)]
    return "\n".join(lines) + "\n"


def format_markdown(result: BenchResult) -> str:
    """Render ``result`` as markdown: the same tables as :func:`format_text`."""
    header = _header(result)
    lines = ["# torchwire bench", "", header[0], "", *(f"- {line}" for line in header[1:])]
    if result.overhead:
        table = _markdown_table(_overhead.HEADERS, _overhead.rows(result.overhead))
        lines += ["", f"## {_overhead_title().capitalize()}", "", *table]
    for cases, title, headers, rows in _sections(result):
        for case in cases:
            lines += ["", f"## {_case_title(case)}", "", *_markdown_table(*_case_table(case))]
            skipped = _skipped_line(case)
            lines += ["", skipped] if skipped else []
        lines += ["", f"## {title.capitalize()}", "", *_markdown_table(headers, rows)]
    return "\n".join(lines) + "\n"


def _case_dict(case: _AnyCase) -> dict[str, Any]:
    """The JSON entries both sections share: batch, auto's choice, comparisons, methods."""
    methods: dict[str, Any] = {}
    for name, method in case.methods.items():
        entry: dict[str, Any] = {"label": case.label(name)}
        if name.startswith("torchwire"):
            entry["backend"] = case.auto_backend if name == "torchwire" else _backend_of(name)
        for mode, timing in method.timings.items():
            entry[mode] = {
                "median_ms": timing.median,
                f"x_{case.reference}": case.ratio(name, mode),
                "iterations": timing.iterations,
                "samples_ms": timing.samples,
            }
        entry["param_bytes"] = method.param_bytes
        if isinstance(case, SparseCaseResult):
            entry["bytes_per_connection"] = case.bytes_per_connection(name)
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


def _problem_case_dict(case: BranchCaseResult | MergeCaseResult) -> dict[str, Any]:
    return {
        "problem": case.problem.name,
        "description": case.problem.description,
        "input_shape": list(case.problem.shape),
        **_case_dict(case),
        f"speedup_vs_{case.reference}": {
            mode: case.speedup_over(case.reference, mode) for mode in MODES
        },
    }


def to_dict(result: BenchResult) -> dict[str, Any]:
    """Everything in ``result`` as JSON-ready data (times in milliseconds, sizes in bytes):
    ``environment``, the block section's ``cases``, and the ``sparse`` and ``branches``
    sections' cases."""
    cases = [
        {
            "layout": case.layout.name,
            "in_sizes": list(case.layout.in_sizes),
            "out_sizes": list(case.layout.out_sizes),
            "in_features": case.layout.in_features,
            "out_features": case.layout.out_features,
            "groups": case.layout.groups,
            "multiply_adds_per_row": case.layout.multiply_adds,
            "limit_out_features": case.layout.limit_features,
            **_case_dict(case),
        }
        for case in result.cases
    ]
    sparse = [
        {
            "features": case.features,
            "density": case.density,
            "nnz": case.nnz,
            **_case_dict(case),
            "speedup_vs_masked_weight": {
                mode: case.speedup_over(case.reference, mode) for mode in MODES
            },
        }
        for case in result.sparse
    ]
    branches = [
        {**_problem_case_dict(case), "heads": case.problem.count} for case in result.branches
    ]
    merge = [_problem_case_dict(case) for case in result.merge]
    return {
        "environment": result.environment,
        "overhead": [_overhead.to_dict(r) for r in result.overhead],
        "cases": cases,
        "sparse": sparse,
        "branches": branches,
        "merge": merge,
    }
