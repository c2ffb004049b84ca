"""What the scripts in ``benchmarks/`` share: their common options and how they publish.

Each script runs as ``python benchmarks/NAME.py`` (so this folder is on ``sys.path``) and
takes ``--rounds``, ``--threads`` (default 1: more is unstable on a shared machine) and, where
it writes a table, ``--markdown PATH``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
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


def medians(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each step over ``rounds`` rounds after one warm-up call each, in
    an order shuffled afresh every round (seeded, so a run repeats): no step always follows
    the same one."""
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    order = random.Random(0)
    for _ in range(rounds):
        for name in order.sample(names, len(names)):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def seconds_per_unit(rounds: int) -> float:
    """Seconds per multiply-add of a large GEMM: the unit of torchwire's cost models."""
    a, b = torch.randn(1024, 2048), torch.randn(2048, 2048)
    t = []
    for _ in range(rounds + 2):
        start = time.perf_counter()
        torch.mm(a, b)
        t.append(time.perf_counter() - start)
    return statistics.median(t[2:]) / (1024 * 2048 * 2048)


def fit_weights(features: Sequence[Sequence[float]], units: Sequence[float]) -> list[float]:
    """Non-negative weights ``w`` minimising the relative error of ``features @ w`` against
    the measured costs ``units`` (needs scipy), to 3 significant digits."""
    import numpy as np
    from scipy.optimize import nnls

    a, t = np.array(features, dtype=float), np.array(units, dtype=float)
    coef, _ = nnls(a / t[:, None], np.ones(len(t)))
    return [float(f"{c:.3g}") for c in coef]
