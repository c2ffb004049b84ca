"""Joining the outputs of parallel branches (private): what ``Parallel``, ``Sum`` and
``FusedParallel`` share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["JOINS", "join", "sum_tensors"]

JOINS = (None, "cat", "sum", "mean", "stack")


def sum_tensors(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The elementwise sum of a sequence of tensors (a leaf for torch.fx)."""
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


torch.fx.wrap("sum_tensors")


def join(outputs: list[torch.Tensor], how: str | None, dim: int) -> Any:
    """The branches' ``outputs`` joined ``how`` (one of :data:`JOINS`) along ``dim``."""
    if how is None:
        return tuple(outputs)
    if how == "cat":
        return torch.cat(outputs, dim)
    if how == "stack":
        return torch.stack(outputs, dim)
    total = sum_tensors(tuple(outputs))
    return total if how == "sum" else total / len(outputs)
