"""How the bench times code: a calibrated number of calls per sample, and interleaved rounds.

Every way of computing a case is warmed up first. Each timing then runs a step ``k`` times,
``k`` chosen so that a sample lasts at least ``min_time`` (:func:`calibrate`), or fixed by
the caller. :func:`interleaved` takes one sample of every step per round, the steps in an
order shuffled afresh each round and the garbage collector off, so the medians compared
within a case come from the same rounds of the same run.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

__all__ = ["Timed", "Timing", "calibrate", "interleaved", "seconds_per_call", "synchronizer"]

Step = Callable[[], object]


@dataclass
class Timing:
    """Milliseconds per call of one step: one sample per round, each of ``iterations`` calls."""

    iterations: int
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Timed:
    """A step to time, whether it runs with autograd (``grad``), and where its samples go."""

    step: Step
    grad: bool
    timing: Timing


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for ``device`` to finish its queued work (nothing on a CPU)."""
    if device.type == "cuda":
        return partial(torch.cuda.synchronize, device)
    return lambda: None


def _nothing() -> None:
    pass


def seconds_per_call(
    step: Step, iterations: int, *, grad: bool, sync: Callable[[], None] = _nothing
) -> float:
    """Seconds per call of ``step`` over ``iterations`` calls, with grad mode ``grad``.

    Examples::

        >>> seconds_per_call(lambda: None, 10, grad=False) >= 0
        True
    """
    with torch.set_grad_enabled(grad):
        sync()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        sync()
        return (time.perf_counter() - start) / iterations


def calibrate(
    step: Step, *, grad: bool, sync: Callable[[], None] = _nothing, min_time: float = 2e-3
) -> int:
    """Warm up ``step``, then return the number of calls (a power of two) that lasts at least
    ``min_time`` seconds."""
    seconds_per_call(step, 1, grad=grad, sync=sync)
    iterations = 1
    while seconds_per_call(step, iterations, grad=grad, sync=sync) * iterations < min_time:
        iterations *= 2
    return iterations


def interleaved(
    groups: Sequence[Sequence[Timed]], repeats: int, sync: Callable[[], None] = _nothing
) -> None:
    """Time ``repeats`` rounds; each round runs every group once, a group's steps in order.

    The groups' order is shuffled afresh each round (seeded: a run repeats), so no group
    always follows the same one: a step after one that evicts the caches pays for it, and a
    fixed neighbour made that cost one method's (in a rotating order, ``BlockLinear`` 4x256
    with ``auto`` measured 1.09x the time of the same backend forced by name; shuffled,
    1.00x-1.05x). Each step appends one sample, in milliseconds per call, to its timing.
    The garbage collector is off meanwhile (a caller with garbage to spare collects it
    first).
    """
    order = random.Random(0)
    gc.disable()
    try:
        for _ in range(repeats):
            for group in order.sample(list(groups), len(groups)):
                for timed in group:
                    iterations = timed.timing.iterations
                    seconds = seconds_per_call(timed.step, iterations, grad=timed.grad, sync=sync)
                    timed.timing.samples.append(seconds * 1e3)
    finally:
        gc.enable()
