"""Checks of arguments shared by several modules (private)."""

from __future__ import annotations

import operator
import warnings
from typing import Any, SupportsIndex

__all__ = ["MAX_FEATURES", "check_size", "is_int", "renamed"]

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


def renamed(
    where: str,
    deprecated: dict[str, Any],
    old: str,
    new: str,
    value: Any,
    default: Any,
    *,
    also: tuple[str, ...] = (),
    stacklevel: int = 3,
) -> Any:
    """``value`` of keyword ``new``, or that of its deprecated spelling ``old`` in
    ``deprecated`` (the call's other keywords) with a DeprecationWarning naming ``new``.
    Keywords other than ``old`` and those in ``also`` (renamed by other calls) are refused
    as unexpected. ``stacklevel`` points the warning at the user's call (3: the caller of
    the function calling this)."""
    for name in deprecated:
        if name != old and name not in also:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
    if old not in deprecated:
        return value
    if value is not default and value != default:
        raise TypeError(f"{where}() got both {new}= and its deprecated spelling {old}=")
    warnings.warn(
        f"{where}({old}=...) is deprecated; use {new}=...",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return deprecated[old]
