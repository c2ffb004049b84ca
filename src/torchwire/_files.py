"""Readers of the text files that name connections: GMT gene sets and two-column tables.

Both return plain Python data (names, in file order) and report a bad file with its path and
line number. A path ending in ``.gz`` is read through gzip.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from typing import IO

__all__ = ["read_gmt", "read_table"]

PathLike = str | os.PathLike[str]


def _lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line without its line break)`` for each line of ``path``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected a file path (str or os.PathLike), got {type(path).__name__}")
    name = os.fspath(path)
    stream: IO[str] = (
        gzip.open(name, "rt", encoding="utf-8")  # noqa: SIM115 (closed by the with below)
        if name.endswith(".gz")
        else open(name, encoding="utf-8")  # noqa: SIM115
    )
    with stream:
        for number, line in enumerate(stream, 1):
            yield number, line.rstrip("\r\n")


def read_gmt(path: PathLike) -> dict[str, list[str]]:
    """The gene sets of a GMT file: ``{set name: [member, ...]}``, in file order.

    One set per line: its name, a description, then its members, tab-separated. Blank lines
    and empty fields (trailing tabs) are skipped; a member listed twice in a set counts once.
    """
    sets: dict[str, list[str]] = {}
    where: dict[str, int] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        name = fields[0].strip()
        members = list(dict.fromkeys(f.strip() for f in fields[2:] if f.strip()))
        at = f"{os.fspath(path)}, line {number}"
        if len(fields) < 2 or not name:
            raise ValueError(
                f"{at}: expected a set name, a description and its members, tab-separated, "
                f"got {line[:80]!r}; a GMT file has one gene set per line"
            )
        if not members:
            raise ValueError(f"{at}: set {name!r} has no members; remove the line or fill it")
        if name in sets:
            raise ValueError(
                f"{at}: set {name!r} was already defined on line {where[name]}; set names "
                "must be unique (merge the two lines)"
            )
        sets[name] = members
        where[name] = number
    if not sets:
        raise ValueError(f"{os.fspath(path)} holds no gene sets (an empty GMT file)")
    return sets


def read_table(
    path: PathLike, *, sep: str = "\t", columns: tuple[int, int] = (0, 1), header: bool = False
) -> list[tuple[str, str]]:
    """The ``(first, second)`` name pairs of a table's two ``columns``, in file order, each
    pair once. Blank lines are skipped; ``header=True`` skips the first line."""
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep must be a non-empty string such as '\\t' or ',', got {sep!r}")
    if (
        not isinstance(columns, (tuple, list))
        or len(columns) != 2
        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in columns)
        or columns[0] == columns[1]
    ):
        raise ValueError(
            f"columns must be two different column indices such as (0, 1), got {columns!r}"
        )
    pairs: dict[tuple[str, str], None] = {}
    need = max(columns) + 1
    skip = bool(header)
    for number, line in _lines(path):
        if skip:
            skip = False
            continue
        if not line.strip():
            continue
        fields = line.split(sep)
        at = f"{os.fspath(path)}, line {number}"
        if len(fields) < need:
            raise ValueError(
                f"{at}: expected at least {need} columns separated by {sep!r}, got "
                f"{len(fields)} in {line[:80]!r}; pass sep= or columns= to match the file"
            )
        first, second = fields[columns[0]].strip(), fields[columns[1]].strip()
        if not first or not second:
            raise ValueError(f"{at}: an empty name in columns {tuple(columns)} of {line[:80]!r}")
        pairs[(first, second)] = None
    if not pairs:
        raise ValueError(f"{os.fspath(path)} holds no rows (an empty table)")
    return list(pairs)
