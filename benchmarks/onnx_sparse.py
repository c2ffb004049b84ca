"""Which ONNX graph of ``SparseLinear`` runs faster in onnxruntime: the dense or the gathered?

``torch.onnx.export(..., dynamo=True)`` writes a SparseLinear as one of two graphs of standard
ONNX ops (``torchwire.backends.select`` chooses by their onnxruntime costs):

- ``dense`` (the ``dense`` backend's ONNX form): the dense weight scattered from the values
  (ScatterElements), then one Gemm. Everything before the Gemm reads initializers only, so
  onnxruntime folds it into a dense matrix when it loads the model;
- ``gather`` (the ``csr`` backend's ONNX form): the inputs of every connection gathered,
  scaled by its value and added into its output (Gather, Mul, ScatterND with add).

Per case (a random ``in x out`` wiring at a density, a batch size), each graph is exported
from the same layer (``backend="dense"``, ``backend="csr"``), loaded into an onnxruntime CPU
session pinned to one thread (``intra_op_num_threads=1``), checked against the eager layer,
and timed: interleaved rounds (the order alternating each round), each the mean of enough
runs to last about 10 ms, medians over rounds; ratios are of medians measured in the same
run. Also reported: what ``backend="auto"`` exports, ``nn.Linear``'s Gemm for scale, the time
to load each model and the size of each serialized model.

Run: ``python benchmarks/onnx_sparse.py [--features 1024] [--density 0.002 ... 0.5]
[--batch 1 8 64] [--rounds 15] [--markdown PATH]`` (about 7 minutes with the defaults;
needs onnx, onnxscript and onnxruntime).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import _script
import numpy as np
import torch
from torch import nn

import torchwire as tw

METHODS = {"dense": "dense", "gather": "csr"}  # graph -> the backend whose ONNX form it is


def _session(module: nn.Module, x: torch.Tensor, folder: str, name: str) -> dict[str, Any]:
    import onnxruntime as ort

    program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
    assert program is not None
    path = os.path.join(folder, f"{name}.onnx")
    program.save(path)
    ops = [node.op_type for node in program.model_proto.graph.node]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - start
    feed = {session.get_inputs()[0].name: x.numpy()}
    return {
        "session": session,
        "feed": feed,
        "ops": ops,
        "load_ms": load * 1e3,
        "bytes": os.path.getsize(path),
    }


def _form(ops: list[str]) -> str:
    return "dense" if "Gemm" in ops else "gather"


def measure(features: int, density: float, batch: int, rounds: int, folder: str) -> dict[str, Any]:
    torch.manual_seed(0)
    layer = tw.SparseLinear(tw.Wiring.random(features, features, density=density, seed=0))
    layer.eval()
    x = torch.randn(batch, features)
    with torch.no_grad():
        expected = layer(x).numpy()
    runs: dict[str, dict[str, Any]] = {}
    for name, backend in METHODS.items():
        layer.backend = backend
        runs[name] = _session(layer, x, folder, name)
        assert _form(runs[name]["ops"]) == name, runs[name]["ops"]
    layer.backend = "auto"
    auto = _form(_session(layer, x, folder, "auto")["ops"])
    runs["nn.Linear"] = _session(layer.to_dense().eval(), x, folder, "linear")
    for name, run in runs.items():
        got = run["session"].run(None, run["feed"])[0]
        error = float(np.abs(got - expected).max())
        if error > 1e-4:
            raise AssertionError(f"{name}: onnxruntime differs from eager by {error:.2e}")
    # Runs per timed sample: about 10 ms each.
    reps = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run["session"].run(None, run["feed"])
        reps[name] = max(1, int(0.01 / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            run = runs[name]
            session, feed = run["session"], run["feed"]
            start = time.perf_counter()
            for _ in range(reps[name]):
                session.run(None, feed)
            times[name].append((time.perf_counter() - start) / reps[name] * 1e6)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "density": density,
        "batch": batch,
        "nnz": layer.nnz,
        "auto": auto,
        "us": medians,
        "load_ms": {name: run["load_ms"] for name, run in runs.items()},
        "bytes": {name: run["bytes"] for name, run in runs.items()},
    }


def markdown(results: list[dict[str, Any]], features: int, rounds: int, command: str) -> str:
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    lines = [
        f"# SparseLinear in onnxruntime: {cpu} ({os.cpu_count()} cores), float32, 1 thread, "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}",
        "",
        f"`{command}`: a random {features} x {features} SparseLinear "
        "exported with `torch.onnx.export(..., dynamo=True)` as each graph, run in an "
        "onnxruntime CPU session with `intra_op_num_threads=1`; medians of "
        f"{rounds} interleaved rounds. **dense**: the weight scattered from the values "
        "(folded by onnxruntime when the model loads), one Gemm. **gather**: Gather, Mul, "
        "ScatterND(add) over the connections. `nn.Linear`: the same weights as a dense "
        "Linear (a Gemm), for scale. gather / dense below 1: the gathered graph is faster. "
        'auto: the graph `backend="auto"` exports.',
        "",
        "| density | batch | connections | dense (us) | gather (us) | nn.Linear (us) "
        "| gather / dense | auto | load dense / gather (ms) | file dense / gather (kB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        us, load, size = r["us"], r["load_ms"], r["bytes"]
        fastest = "gather" if us["gather"] < us["dense"] else "dense"
        mark = "" if r["auto"] == fastest else " (slower)"
        lines.append(
            f"| {r['density']:.1%} | {r['batch']} | {r['nnz']} | {us['dense']:.0f} "
            f"| {us['gather']:.0f} | {us['nn.Linear']:.0f} | {us['gather'] / us['dense']:.2f} "
            f"| {r['auto']}{mark} | {load['dense']:.0f} / {load['gather']:.0f} "
            f"| {size['dense'] / 1e3:.0f} / {size['gather'] / 1e3:.0f} |"
        )
    right = sum(r["auto"] == min(("dense", "gather"), key=r["us"].__getitem__) for r in results)
    lines += [
        "",
        f"auto exported the faster graph in {right} of {len(results)} cases (the others are "
        "marked slower). The dense graph runs as fast as nn.Linear: onnxruntime folded the "
        "scatter into a dense matrix when it loaded the model (its load time), so it holds "
        "the whole matrix; the gathered graph holds and computes only the connections.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument(
        "--density", type=float, nargs="+", default=[0.002, 0.005, 0.01, 0.02, 0.1, 0.5]
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # the exporter's progress and deprecation notes
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)  # onnxruntime runs one thread too
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for density in args.density:
            for batch in args.batch:
                result = measure(args.features, density, batch, args.rounds, folder)
                results.append(result)
                print(result["density"], result["batch"], result["auto"], result["us"], flush=True)
    command = " ".join(["python benchmarks/onnx_sparse.py", *(argv or sys.argv[1:])])
    table = markdown(results, args.features, args.rounds, command)
    _script.publish(table, args.markdown)


if __name__ == "__main__":
    main()
