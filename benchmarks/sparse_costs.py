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

import _script
import torch

import torchwire
from torchwire.backends import SparseProblem, sparse_csr, sparse_dense
from torchwire.bench import device_name

FEATURES = [256, 1024, 4096]
DENSITIES = [0.001, 0.01, 0.05, 0.1, 0.2, 0.5]
BATCHES = [1, 8, 64, 256, 1024]
BACKENDS = {"dense": sparse_dense, "csr": sparse_csr}
_LARGEST = 2**32  # features^2 * batch above which a case is too slow to time (4096 at 1024)


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
                    for mode, step in _script.training_steps(layer, x, grad).items()
                }
                seconds = _script.medians(steps, rounds)
                rows += _script.timed_rows(seconds, features=n, nnz=wiring.nnz, batch=batch)
                print(f"{n} features, density {density}, batch {batch}", flush=True)
    return rows


def _problem(row: dict) -> SparseProblem:
    n = row["features"]
    train = row["mode"] == "train"
    return SparseProblem(n, n, row["nnz"], None, row["batch"], torch.float32, "cpu", train)


def fit(rows: list[dict], unit: float) -> dict[str, dict[str, list[float]]]:
    """Non-negative weights per backend and mode, minimising relative error."""
    return _script.fit_by_backend(
        rows, unit, list(BACKENDS), lambda r: BACKENDS[r["backend"]].cost_features(_problem(r))
    )


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
        pick, _, ratio = _script.picked(costs, measured)
        slow.append(ratio)
        if ratio > 1.05:
            density = nnz / (n * n)
            lines.append(f"  {n} at {density:.3g}, batch {batch} {kind}: {pick} {ratio:.2f}x")
    return _script.judged(slow, lines, "faster")


def main() -> None:
    args = _script.fit_options(__doc__, 7).parse_args()
    _script.start(args)
    rows, unit = _script.measurements(args, measure)
    device = device_name(torch.device("cpu"))
    print(f"# {device}, torch {torch.__version__}, {args.threads} thread(s)")
    before = {
        b: {k: list(m._CPU[k == "train"]) for k in ("fwd", "train")} for b, m in BACKENDS.items()
    }
    print("the weights in the code:", evaluate(rows, before).split("\n")[0])
    weights = fit(rows, unit)
    for backend, kinds in weights.items():
        print(f"{backend}: {', '.join(BACKENDS[backend].FEATURES)}")
        for kind, coef in kinds.items():
            print(f"  {kind:5s} {coef}")
    print("refitted:", evaluate(rows, weights))
    _script.save_fit(args.json, rows, unit, weights)


if __name__ == "__main__":
    main()
