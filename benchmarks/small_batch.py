"""Is a sparse layer faster than the dense layer it replaces at batch 1 to 8?

Small-batch inference reads every weight once per call, so a layer with 1% of the
connections should take a fraction of the dense layer's time; at these sizes per-call host
work decides whether it does. Per batch, ``SparseLinear(Wiring.random(1024, 1024,
density))`` (``backend="auto"``) and ``nn.Linear(1024, 1024)``, no-grad forward, timed
interleaved (the order alternating each round), medians of rounds of 10 calls; the speedup
is nn.Linear's time over SparseLinear's.

Run: ``python benchmarks/small_batch.py [--rounds 41] [--markdown PATH]``.
"""

from __future__ import annotations

import statistics
import time

import _script
import torch
from torch import nn

import torchwire as tw
from torchwire.bench import device_name

FEATURES = 1024
DENSITIES = [0.01, 0.05]
BATCHES = [1, 2, 8]
CALLS = 10


def measure(density: float, batch: int, rounds: int) -> dict[str, float | str]:
    sparse = tw.SparseLinear(tw.Wiring.random(FEATURES, FEATURES, density=density, seed=0))
    dense = nn.Linear(FEATURES, FEATURES)
    x = torch.randn(batch, FEATURES)
    layers = {"sparse": sparse, "dense": dense}
    times: dict[str, list[float]] = {name: [] for name in layers}
    with torch.no_grad():
        for layer in layers.values():
            layer(x)
        for r in range(rounds):
            for name in list(layers)[:: 1 if r % 2 else -1]:
                start = time.perf_counter()
                for _ in range(CALLS):
                    layers[name](x)
                times[name].append((time.perf_counter() - start) / CALLS)
        backend = sparse.resolve_backend(x)
    us = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    return {**us, "speedup": us["dense"] / us["sparse"], "backend": backend}


def main() -> None:
    args = _script.options(__doc__, 41).parse_args()
    _script.start(args)
    lines = [
        f"# Small-batch inference: torch {torch.__version__}, {device_name(torch.device('cpu'))}, "
        f"float32, {args.threads} thread(s), {args.rounds} interleaved rounds of {CALLS} calls",
        "",
        f"No-grad forward of `SparseLinear(Wiring.random({FEATURES}, {FEATURES}, density))` "
        f"(auto) against `nn.Linear({FEATURES}, {FEATURES})`: medians per call; speedup is "
        "nn.Linear's time over SparseLinear's.",
        "",
        "| density | batch | SparseLinear backend | SparseLinear us | nn.Linear us | speedup |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for density in DENSITIES:
        for batch in BATCHES:
            m = measure(density, batch, args.rounds)
            lines.append(
                f"| {density:.0%} | {batch} | {m['backend']} | {m['sparse']:.1f} | "
                f"{m['dense']:.1f} | **{m['speedup']:.2f}x** |"
            )
            print(lines[-1], flush=True)
    _script.publish("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()
