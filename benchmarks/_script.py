"""What the scripts in ``benchmarks/`` share: their common options and how they publish.

Each script runs as ``python benchmarks/NAME.py`` (so this folder is on ``sys.path``) and
takes ``--rounds``, ``--threads`` (default 1: more is unstable on a shared machine) and, where
it writes a table, ``--markdown PATH``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def medians(steps: dict[Any, Callable[[], object]], rounds: int) -> dict[Any, float]:
    """Median seconds of each step over ``rounds`` rounds after one warm-up call each, in
    an order shuffled afresh every round (seeded, so a run repeats): no step always follows
    the same one."""
    for step in steps.values():
        step()
    times: dict[Any, list[float]] = {name: [] for name in steps}
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


def timed_rows(seconds: dict[tuple[str, str], float], **case: Any) -> list[dict]:
    """One row per ``(backend, mode)`` of ``seconds`` (as :func:`medians` returns them), each
    with the fields of its ``case``."""
    return [{**case, "backend": b, "mode": m, "seconds": s} for (b, m), s in seconds.items()]


def fit_by_backend(
    rows: list[dict], unit: float, backends: Sequence[str], features: Callable[[dict], Any]
) -> dict[str, dict[str, list[float]]]:
    """:func:`fit_weights` per backend and mode (``fwd``, ``train``) of the timed ``rows``,
    each row's counts from ``features(row)`` and its time in ``unit``."""
    weights: dict[str, dict[str, list[float]]] = {}
    for backend in backends:
        weights[backend] = {}
        for kind in ("fwd", "train"):
            chosen = [r for r in rows if r["backend"] == backend and r["mode"] == kind]
            weights[backend][kind] = fit_weights(
                [features(r) for r in chosen], [r["seconds"] / unit for r in chosen]
            )
    return weights


def training_steps(
    layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor
) -> dict[str, Callable[[], None]]:
    """``layer``'s inference (``"fwd"``, under ``no_grad``) and its training step
    (``"train"``: every ``.grad`` None, forward, then ``backward`` of ``grad`` to the input
    and the parameters, as a step after ``optimizer.zero_grad()`` runs it)."""
    params = list(layer.parameters())
    xg = x.clone().requires_grad_()

    def fwd() -> None:
        with torch.no_grad():
            layer(x)

    def train() -> None:
        xg.grad = None
        for p in params:
            p.grad = None
        layer(xg).backward(grad)

    return {"fwd": fwd, "train": train}


def fit_options(doc: str | None, rounds: int) -> argparse.ArgumentParser:
    """:func:`options` of a script that fits a cost model: ``--json`` and ``--load``."""
    parser = options(doc, rounds, markdown=False)
    parser.add_argument("--json", help="write the measurements and the fit to this file")
    parser.add_argument("--load", help="fit measurements read from a file --json wrote")
    return parser


def measurements(
    args: argparse.Namespace, measure: Callable[[int], list[dict]]
) -> tuple[list[dict], float]:
    """The timed rows and :func:`seconds_per_unit`: read from ``args.load``, or measured now
    (and written to ``args.json`` at once, so that a fit can be redone with ``--load``)."""
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        return saved["rows"], saved["seconds_per_unit"]
    unit = seconds_per_unit(args.rounds)
    rows = measure(args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds_per_unit": unit, "rows": rows}))
    return rows, unit


def save_fit(path: str | None, rows: list[dict], unit: float, weights: dict) -> None:
    """Write the rows, the unit and the fitted weights to ``path``, when one was given."""
    if path:
        Path(path).write_text(
            json.dumps({"seconds_per_unit": unit, "rows": rows, "weights": weights})
        )


def picked(costs: dict[str, float], measured: dict[str, dict]) -> tuple[str, str, float]:
    """The backend a cost model picks (the lowest of ``costs``), the fastest of the
    ``measured`` rows, and how many times the fastest's time the pick took."""
    pick = min(costs, key=costs.__getitem__)
    best = min(measured, key=lambda b: measured[b]["seconds"])
    return pick, best, measured[pick]["seconds"] / measured[best]["seconds"]


def judged(slowdowns: list[float], misses: list[str], what: str) -> str:
    """A fit's verdict: how often the model picks the ``what`` backend (a slowdown of 1),
    the geometric mean and worst slowdown of its picks, then the ``misses``."""
    hits = sum(r <= 1.0 for r in slowdowns)
    mean = math.exp(sum(math.log(r) for r in slowdowns) / len(slowdowns))
    head = (
        f"picks the {what} in {hits} of {len(slowdowns)}; geomean {mean:.3f}x, "
        f"worst {max(slowdowns):.2f}x"
    )
    return "\n".join([head, *misses])
