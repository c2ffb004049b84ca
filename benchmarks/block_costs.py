"""Fit the CPU cost model of the batched-matmul block backends to this machine.

``backend="auto"`` picks among ``bmm``, ``bmm_packed``, ``bmm_t``, ``bmm_autograd`` and
``dense`` by a cost model (``torchwire/backends/block_bmm.py``). On a CPU each mode's cost
is a weighted sum of a few counts of the problem (``cost_features``: multiply-adds, blocks,
activation elements copied in and out of cache, weight elements, ...), one set of weights
per mode, for inference and for training. This script measures every mode over a grid of
layouts (equal groups, and three uneven ones) and batches, interleaved in an order shuffled
each round, fits those weights by non-negative least
squares on relative error, and prints them in the model's units (one multiply-add of a
large GEMM), with how often the fitted model picks the fastest mode.

Training is timed as a training step runs it: every ``.grad`` None, forward, then
``backward`` of a dense gradient, through ``AccumulateGrad`` (where a gradient that does not
come out in its parameter's layout pays a strided copy).

Run: ``python benchmarks/block_costs.py [--rounds 7] [--json PATH]`` (needs scipy).
"""

from __future__ import annotations

import json

import _script
import torch

import torchwire
from torchwire.backends import (
    BlockProblem,
    available,
    block_bmm,
    block_dense,
    block_layout,
    select,
)
from torchwire.backends.block_bmm import FEATURES, MODES
from torchwire.bench import device_name

# (in_features, out_features, groups): square blocks from 4 to 512 wide (every layout of
# benchmarks/block_floor.py among them), a few others, and three uneven layouts.
LAYOUTS = [
    *((256, 256, g) for g in (64, 32, 16, 8, 4, 2)),
    *((1024, 1024, g) for g in (128, 64, 32, 16, 8, 4, 2)),
    *((2048, 2048, g) for g in (256, 64)),
    *((4096, 4096, g) for g in (512, 256, 128, 64, 32, 16, 8)),
    (1024, 512, 16),
    (512, 1024, 16),
    (2048, 512, 64),
    (512, 2048, 8),
    ([64] * 8 + [32] * 16, [64] * 8 + [32] * 16, None),  # two runs
    ([16, 48] * 16, [16, 48] * 16, None),  # a pattern of two shapes
    ([8] * 32 + [128] * 4 + [32] * 8, [8] * 32 + [128] * 4 + [32] * 8, None),  # three runs
]
BATCHES = [1, 8, 64, 256, 1024]
BACKENDS = ["bmm", "bmm_packed", "bmm_t", "bmm_autograd", "dense"]


def measure(rounds: int) -> list[dict]:
    """Median seconds of every backend, mode and case of the grid."""
    rows = []
    for args in LAYOUTS:
        shape = torchwire.BlockLinear(*_args(args))
        in_f, out_f = shape.in_features, shape.out_features
        for batch in BATCHES:
            x, grad = torch.randn(batch, in_f), torch.randn(batch, out_f)
            steps = {}
            for backend in BACKENDS:
                if backend == "dense" and in_f * out_f * batch > 2**31:
                    continue  # never the fastest there, and slow to time
                layer = torchwire.BlockLinear(*_args(args), backend=backend)
                for mode, step in _script.training_steps(layer, x, grad).items():
                    steps[backend, mode] = step
            seconds = _script.medians(steps, rounds)
            rows += _script.timed_rows(seconds, layout=list(args), batch=batch)
            print(f"{args} batch {batch}", flush=True)
    return rows


def _args(layout: tuple | list) -> tuple:
    """BlockLinear's arguments for a LAYOUTS entry."""
    in_f, out_f, groups = layout
    return (in_f, out_f) if groups is None else (in_f, out_f, groups)


def _problem(row: dict) -> BlockProblem:
    shape = torchwire.BlockLinear(*_args(row["layout"]))
    layout = block_layout(shape.in_sizes, shape.out_sizes)
    return BlockProblem(layout, row["batch"], torch.float32, "cpu", row["mode"] == "train")


def _features(row: dict) -> tuple[float, ...]:
    problem = _problem(row)
    if row["backend"] == "dense":
        return block_dense.cost_features(problem)
    return block_bmm.cost_features(problem, problem.layout, MODES[row["backend"]])


def fit(rows: list[dict], unit: float) -> dict[str, dict[str, list[float]]]:
    """Non-negative weights per backend and mode, minimising relative error."""
    return _script.fit_by_backend(rows, unit, BACKENDS, _features)


def evaluate(rows: list[dict], weights: dict[str, dict[str, list[float]]]) -> str:
    """How the model with ``weights`` chooses on the measured cases: how often it picks the
    fastest backend, and the worst and geometric-mean slowdown of its picks."""
    for backend, kinds in weights.items():
        for kind, coef in kinds.items():
            table = block_dense._CPU if backend == "dense" else block_bmm._CPU[MODES[backend]]
            table[kind == "train"] = tuple(coef)
    cases: dict = {}
    for r in rows:
        cases.setdefault((json.dumps(r["layout"]), r["batch"], r["mode"]), {})[r["backend"]] = r
    lines, slow = [], []
    for (layout, batch, kind), measured in cases.items():
        problem = _problem(next(iter(measured.values())))
        costs = {
            name: select("block_linear", problem, name).cost(problem)
            for name in available("block_linear", problem)
        }  # (not select's "auto": it memoises its choices)
        pick, best, ratio = _script.picked(costs, measured)
        slow.append(ratio)
        if ratio > 1.05:
            lines.append(f"  {layout} batch {batch} {kind}: {pick} {ratio:.2f}x of {best}")
    return _script.judged(slow, lines, "fastest")


def main() -> None:
    args = _script.fit_options(__doc__, 7).parse_args()
    _script.start(args)
    rows, unit = _script.measurements(args, measure)
    weights = fit(rows, unit)
    device = device_name(torch.device("cpu"))
    print(f"# {device}, torch {torch.__version__}, {args.threads} thread(s)")
    print("features:", ", ".join(FEATURES), "| dense:", ", ".join(block_dense.FEATURES))
    for backend, kinds in weights.items():
        for kind, coef in kinds.items():
            print(f"{backend:14s} {kind:5s} {coef}")
    print(evaluate(rows, weights))
    _script.save_fit(args.json, rows, unit, weights)


if __name__ == "__main__":
    main()
