r"""The bench's ``block`` section: grouped (block-diagonal) layers.

A case is a block-diagonal layout (group :math:`i` maps ``in_sizes[i]`` inputs to
``out_sizes[i]`` outputs) and a batch size; the reference is ``limit``, one dense GEMM with the
same multiply-adds. Methods:

- ``torchwire``: :class:`torchwire.BlockLinear` with ``backend="auto"``, and
  ``torchwire[NAME]`` for every registered ``block_linear`` backend forced by name.
- ``modulelist``: ``nn.ModuleList`` of ``nn.Linear``, a Python loop over ``x.split`` and
  ``torch.cat``.
- ``masked_dense``: a dense ``nn.Linear`` masked with ``torch.nn.utils.prune.custom_from_mask``.
- ``conv1d_groups``: ``nn.Conv1d(kernel_size=1, groups=G)`` (equal groups only).
- ``limit``: ``nn.Linear(in_features, n)`` with ``n = round(sum(in_i * out_i) / in_features)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

import torchwire
from torchwire.backends import available
from torchwire.bench.compare import AUTO_NOTE, Comparison, regret
from torchwire.bench.config import BenchConfig
from torchwire.bench.methods import Measured, backend_builders, measure, pruned
from torchwire.bench.section import Table

__all__ = ["ALTERNATIVES", "LAYOUTS", "SECTION", "CaseResult", "Layout", "parse_layout"]

ALTERNATIVES = ("modulelist", "masked_dense", "conv1d_groups")
"""The methods users write today instead of torchwire's block-diagonal layers."""

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


def _layouts(*specs: str) -> tuple[Layout, ...]:
    return tuple(parse_layout(spec) for spec in specs)


LAYOUTS = {
    "quick": _layouts("2x2->2x3", "16x64", "256x8", "8x64+16x32"),
    "default": _layouts("2x2->2x3", "16x64", "256x8", "8x64+16x32"),
    "full": _layouts(
        "2x2->2x3",
        "4x256",
        "16x64",
        "64x32",
        "8x512",
        "256x8",
        "8x64+16x32",
        "4x128+8x64+16x32",
        "16x(48,16)",
    ),
}
"""The section's layouts, by grid: a tiny layer, equal groups, many tiny groups, uneven groups
(and in the full grid, wider and narrower ones)."""


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


def _masked_dense(layout: Layout, **factory_kwargs: Any) -> nn.Linear:
    device = factory_kwargs.get("device")
    groups = torch.arange(layout.groups, device=device)
    in_group = groups.repeat_interleave(torch.tensor(layout.in_sizes, device=device))
    out_group = groups.repeat_interleave(torch.tensor(layout.out_sizes, device=device))
    mask = out_group[:, None] == in_group[None, :]  # (out_features, in_features), like weight
    return pruned(mask, **factory_kwargs)


def _block_linear(layout: Layout, backend: str, **factory_kwargs: Any) -> torchwire.BlockLinear:
    if layout.equal:  # the ints + groups form, as users write equal groups
        sizes: tuple[Any, ...] = (layout.in_features, layout.out_features, layout.groups)
    else:
        sizes = (layout.in_sizes, layout.out_sizes)
    return torchwire.BlockLinear(*sizes, backend=backend, **factory_kwargs)


@dataclass
class CaseResult(Measured):
    """Everything measured for one block-diagonal layout and batch size (reference: ``limit``)."""

    reference: ClassVar[str] = "limit"
    alternatives: ClassVar[tuple[str, ...]] = ALTERNATIVES

    layout: Layout


_HEADERS = (
    "case",
    "batch",
    "auto backend",
    "fastest backend",
    "auto / fastest",
    "torchwire x limit",
    "fastest alternative",
    "torchwire speedup",
)
_LIMIT = "one nn.Linear(in_features, round(sum(in_i * out_i) / in_features))"


class BlockSection(Comparison[tuple[Layout, int], CaseResult]):
    name, key, kind = "block", "cases", "grouped layers"
    runs = "BlockLinear"
    advice: ClassVar[Mapping[str, str]] = {
        "modulelist": "a loop of nn.Linear",
        "masked_dense": "a dense nn.Linear",
        "conv1d_groups": "nn.Conv1d(kernel_size=1, groups=G)",
    }

    def cases(self, config: BenchConfig) -> list[tuple[Layout, int]]:
        return [(layout, batch) for batch in config.batches for layout in config.layouts]

    def run(self, case: tuple[Layout, int], config: BenchConfig) -> CaseResult:
        layout, batch = case
        builders = backend_builders(partial(_block_linear, layout), available("block_linear"))
        builders["modulelist"] = partial(_ModuleListLinear, layout)
        builders["masked_dense"] = partial(_masked_dense, layout)
        if layout.equal:
            builders["conv1d_groups"] = partial(_PointwiseConv1d, layout)
        builders["limit"] = partial(nn.Linear, layout.in_features, layout.limit_features)
        skipped = {} if layout.equal else {"conv1d_groups": "needs equal groups"}
        shape = (layout.in_features,)
        return measure(CaseResult, builders, shape, batch, config, skipped=skipped, layout=layout)

    def progress(self, result: CaseResult) -> str:
        speedup = result.speedup
        against = "" if speedup is None else f", {speedup:.2f}x vs {result.alternative}"
        return (
            f"block {self.case_name(result)}: {result.label('torchwire')},"
            f" fwd+bwd {result.ratio('torchwire', 'fwd_bwd'):.2f}x limit{against}"
            f" ({result.seconds:.1f} s)"
        )

    def case_name(self, case: CaseResult) -> str:
        return f"{case.layout.name} batch={case.batch}"

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        return {
            "layouts": [layout.name for layout in config.layouts],
            "backends": list(available("block_linear")),
            "limit": _LIMIT,
        }

    def notes(self, results: Sequence[CaseResult]) -> list[str]:
        return [f"x limit: time / time of `limit`, {_LIMIT}.", AUTO_NOTE]

    def title(self, case: CaseResult) -> str:
        layout = case.layout
        return (
            f"{layout.name}: {layout.in_features} -> {layout.out_features}, {layout.groups}"
            f" groups, batch {case.batch}; limit = Linear({layout.in_features},"
            f" {layout.limit_features})"
        )

    def overview(self, results: Sequence[CaseResult]) -> Table:
        rows = [
            [
                case.layout.name,
                str(case.batch),
                case.auto_backend["fwd_bwd"],
                case.fastest_backend("fwd_bwd") or "-",
                regret(case),
                f"{case.ratio('torchwire', 'fwd_bwd'):.2f}",
                case.alternative or "-",
                "-" if case.speedup is None else f"{case.speedup:.2f}x",
            ]
            for case in results
        ]
        return Table("block summary (fwd+bwd)", _HEADERS, rows)

    def to_dict(self, result: CaseResult) -> dict[str, Any]:
        layout = result.layout
        return {
            "layout": layout.name,
            "in_sizes": list(layout.in_sizes),
            "out_sizes": list(layout.out_sizes),
            "in_features": layout.in_features,
            "out_features": layout.out_features,
            "groups": layout.groups,
            "multiply_adds_per_row": layout.multiply_adds,
            "limit_out_features": layout.limit_features,
            **self.common_dict(result),
        }


SECTION = BlockSection()
