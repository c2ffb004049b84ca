"""Fit the CPU cost models of SparseLinear's backends (``dense`` and ``csr``) to this machine.

``backend="auto"`` picks between the dense GEMM and the CSR kernels by their cost models
(``torchwire/backends/sparse_dense.py``, ``sparse_csr.py``). On a CPU each backend's cost is
a weighted sum of a few counts of the problem (``cost_features``: GEMM multiply-adds and
dense elements; sparse products, activations, connections; calls), one set of weights for
inference and one for training. This script times both backends over a grid of sizes,
densities and batches, interleaved in an order shuffled each round, fits those weights by
non-negative least squares on relative error, and prints them in the models' unit (one
multiply-add of a large GEMM), with how often the fitted models pick the faster backend.

Training is timed as a training step runs it: every ``.grad`` None, forward, then
``backward`` of a dense gradient to the input and the parameters.

Run: ``python benchmarks/sparse_costs.py [--rounds 7] [--json PATH]`` (needs scipy).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import _script
import numpy as np
import torch

import torchwire
from torchwire.backends import SparseProblem, sparse_csr, sparse_dense
from torchwire.bench import device_name

FEATURES = [256, 1024, 4096]
DENSITIES = [0.001, 0.01, 0.05, 0.1, 0.2, 0.5]
BATCHES = [1, 8, 64, 256, 1024]
BACKENDS = {"dense": sparse_dense, "csr": sparse_csr}
_LARGEST = 2**32  # features^2 * batch above which a case is too slow to time (4096 at 1024)


def _steps(layer: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> dict[str, Callable]:
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


def measure(rounds: int) -> list[dict]:
    """Median seconds of both backends in both modes for every case of the grid."""
    rows = []
    for n in FEATURES:
        for density in DENSITIES:
            wiring = torchwire.Wiring.random(n, n, density=density, seed=0)
            layers = {b: torchwire.SparseLinear(wiring, backend=b) for b in BACKENDS}
            for batch in BATCHES:
                if n * n * batch > _LARGEST:
                    continue
                x, grad = torch.randn(batch, n), torch.randn(batch, n)
                steps = {
                    (backend, mode): step
                    for backend, layer in layers.items()
                    for mode, step in _steps(layer, x, grad).items()
                }
                for (backend, mode), median in _script.medians(steps, rounds).items():
                    rows.append(
                        {
                            "features": n,
                            "nnz": wiring.nnz,
                            "batch": batch,
                            "backend": backend,
                            "mode": mode,
                            "seconds": median,
                        }
                    )
                print(f"{n} features, density {density}, batch {batch}", flush=True)
    return rows


def _problem(row: dict) -> SparseProblem:
    n = row["features"]
    train = row["mode"] == "train"
    return SparseProblem(n, n, row["nnz"], None, row["batch"], torch.float32, "cpu", train)


def fit(rows: list[dict], unit: float) -> dict[str, dict[str, list[float]]]:
    """Non-negative weights per backend and mode, minimising relative error."""
    weights: dict[str, dict[str, list[float]]] = {}
    for backend, module in BACKENDS.items():
        weights[backend] = {}
        for kind in ("fwd", "train"):
            chosen = [r for r in rows if r["backend"] == backend and r["mode"] == kind]
            weights[backend][kind] = _script.fit_weights(
                [module.cost_features(_problem(r)) for r in chosen],
                [r["seconds"] / unit for r in chosen],
            )
    return weights


def evaluate(rows: list[dict], weights: dict[str, dict[str, list[float]]]) -> str:
    """How the models with ``weights`` choose on the measured cases: how often they pick the
    faster backend, and the worst and geometric-mean slowdown of their picks."""
    for backend, kinds in weights.items():
        for kind, coef in kinds.items():
            BACKENDS[backend]._CPU[kind == "train"] = tuple(coef)
    cases: dict = {}
    for r in rows:
        cases.setdefault((r["features"], r["nnz"], r["batch"], r["mode"]), {})[r["backend"]] = r
    lines, slow = [], []
    for (n, nnz, batch, kind), measured in cases.items():
        problem = _problem(next(iter(measured.values())))
        costs = {b: BACKENDS[b]._cost(problem) for b in measured}
        pick = min(costs, key=costs.__getitem__)
        best = min(measured, key=lambda b: measured[b]["seconds"])
        ratio = measured[pick]["seconds"] / measured[best]["seconds"]
        slow.append(ratio)
        if ratio > 1.05:
            density = nnz / (n * n)
            lines.append(f"  {n} at {density:.3g}, batch {batch} {kind}: {pick} {ratio:.2f}x")
    hits = sum(r <= 1.0 for r in slow)
    mean = float(np.exp(np.mean(np.log(slow))))
    head = f"picks the faster in {hits} of {len(slow)}; geomean {mean:.3f}x, worst {max(slow):.2f}x"
    return "\n".join([head, *lines])


def main() -> None:
    parser = _script.options(__doc__, 7, markdown=False)
    parser.add_argument("--json", help="write the measurements and the fit to this file")
    parser.add_argument("--load", help="fit measurements read from a file --json wrote")
    args = parser.parse_args()
    _script.start(args)
    if args.load:
        with open(args.load) as f:
            saved = json.load(f)
        rows, unit = saved["rows"], saved["seconds_per_unit"]
    else:
        unit = _script.seconds_per_unit(args.rounds)
        rows = measure(args.rounds)
        if args.json:  # the measurements first: refit them later with --load
            with open(args.json, "w") as f:
                json.dump({"seconds_per_unit": unit, "rows": rows}, f)
    print(
        f"# {device_name(torch.device('cpu'))}, torch {torch.__version__}, {args.threads} thread(s)"
    )
    print(
        "before:",
        evaluate(
            rows,
            {
                b: {k: list(m._CPU[k == "train"]) for k in ("fwd", "train")}
                for b, m in BACKENDS.items()
            },
        ).split("\n")[0],
    )
    weights = fit(rows, unit)
    for backend, kinds in weights.items():
        print(f"{backend}: {', '.join(BACKENDS[backend].FEATURES)}")
        for kind, coef in kinds.items():
            print(f"  {kind:5s} {coef}")
    print(evaluate(rows, weights))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds_per_unit": unit, "rows": rows, "weights": weights}, f)


if __name__ == "__main__":
    main()
