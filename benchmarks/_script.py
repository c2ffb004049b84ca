"""What the scripts in ``benchmarks/`` share: their common options and how they publish.

Each script runs as ``python benchmarks/NAME.py`` (so this folder is on ``sys.path``) and
takes ``--rounds``, ``--threads`` (default 1: more is unstable on a shared machine) and, where
it writes a table, ``--markdown PATH``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def options(doc: str | None, rounds: int, *, markdown: bool = True) -> argparse.ArgumentParser:
    """A parser described by the first line of the script's docstring ``doc``, with the
    common options (``rounds``: the default number of interleaved rounds)."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--threads", type=int, default=1)
    if markdown:
        parser.add_argument("--markdown", help="also write the table to this file")
    return parser


def start(args: argparse.Namespace) -> None:
    """Pin the threads and seed torch, before anything is built or timed."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def publish(text: str, path: str | None) -> None:
    """Print ``text``, and write it to ``path`` when one was given."""
    print(text)
    if path:
        Path(path).write_text(text)
