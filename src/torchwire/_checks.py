"""Checks of arguments shared by several modules (private)."""

from __future__ import annotations

import operator
from typing import SupportsIndex

__all__ = ["MAX_FEATURES", "check_size", "is_int"]

MAX_FEATURES = 2**31  # input indices are stored as int32


def check_size(value: object, name: str) -> int:
    # type() first: isinstance against the SupportsIndex protocol costs microseconds, and
    # layers validate sizes on every forward.
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, SupportsIndex)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    size = operator.index(value)
    if size <= 0:
        raise ValueError(f"{name} must be a positive int, got {size}")
    if size >= MAX_FEATURES:
        raise ValueError(
            f"{name} must be less than 2**31 (inputs are indexed with int32), got {size}"
        )
    return size


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool."""
    return hasattr(value, "__index__") and not isinstance(value, bool)
