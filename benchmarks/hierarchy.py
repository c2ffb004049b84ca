"""A biologically informed network at Reactome's scale: torchwire against BINN's build.

The hierarchy is :func:`torchwire.bench.hierarchy.reactome_like` (11,000 genes, 2,200 lowest
pathways, 2,700 child-parent relations, 9 levels, 28 roots; generated: no data file ships with
torchwire). Two builds of the same network, timed interleaved in one run at batch 64:

- ``torchwire``: ``tw.hierarchy(base, relations)``, one SparseLinear per level, then Tanh;
- ``masked_dense``: what BINN builds, a dense ``nn.Linear`` per level masked with
  ``torch.nn.utils.prune.custom_from_mask``, then Tanh.

Per build: parameter + buffer bytes; forward+backward (gradients of the input and of every
parameter, as ``torchwire bench`` times it); and a training step (forward, backward to the
parameters, ``torch.optim.Adam`` step; the input is data, without a gradient). Medians over
interleaved rounds, the order alternating each round; ratios are masked_dense / torchwire.

Run: ``python benchmarks/hierarchy.py [--rounds 15] [--markdown PATH]``.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable

import _script
import torch
from torch import nn

import torchwire as tw
from torchwire.bench import device_name
from torchwire.bench.hierarchy import reactome_problem
from torchwire.bench.memory import state_bytes

BATCH = 64


def _builds() -> dict[str, nn.Module]:
    problem = reactome_problem()
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # every generated node is reached
        sparse = tw.hierarchy(problem.base, problem.relations)
    return {"torchwire": sparse, "masked_dense": problem.masked_dense()}


def _steps(model: nn.Module, genes: int) -> dict[str, Callable[[], object]]:
    x = torch.randn(BATCH, genes)
    x_grad = x.clone().requires_grad_()
    params = list(model.parameters())
    with torch.no_grad():
        grad = torch.randn_like(model(x))
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def fwd_bwd() -> object:
        return torch.autograd.grad(model(x_grad), [x_grad, *params], grad)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(x).backward(grad)
        optimizer.step()

    return {"fwd+bwd": fwd_bwd, "training step": train}


def main() -> None:
    args = _script.options(__doc__, 15).parse_args()
    _script.start(args)
    builds = _builds()
    genes = reactome_problem().base.in_features
    steps = {name: _steps(model, genes) for name, model in builds.items()}
    for by_mode in steps.values():  # warm up (Adam's state, the layers' caches)
        for step in by_mode.values():
            step()
            step()
    times: dict[tuple[str, str], list[float]] = {}
    names = list(builds)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            for mode, step in steps[name].items():
                start = time.perf_counter()
                step()
                times.setdefault((name, mode), []).append(time.perf_counter() - start)
    median = {key: statistics.median(values) * 1e3 for key, values in times.items()}
    problem = reactome_problem()
    lines = [
        "# A pathway hierarchy at Reactome's scale: torchwire against BINN's build",
        "",
        f"{device_name(torch.device('cpu'))}, torch {torch.__version__}, float32, "
        f"{args.threads} thread(s), "
        f"batch {BATCH}, {args.rounds} interleaved rounds (medians). "
        "Written by `python benchmarks/hierarchy.py`.",
        "",
        f"Hierarchy: {problem.description}.",
        "",
        "| build | parameters + buffers | fwd+bwd ms | training step ms |",
        "|---|---:|---:|---:|",
    ]
    sizes = {name: state_bytes(model) for name, model in builds.items()}
    for name in names:
        lines.append(
            f"| {name} | {sizes[name] / 2**20:,.2f} MiB | {median[(name, 'fwd+bwd')]:.2f} | "
            f"{median[(name, 'training step')]:.2f} |"
        )
    ratio = {
        mode: median[("masked_dense", mode)] / median[("torchwire", mode)]
        for mode in ("fwd+bwd", "training step")
    }
    lines += [
        "",
        f"masked_dense / torchwire: **{sizes['masked_dense'] / sizes['torchwire']:.0f}x** the "
        f"bytes, **{ratio['fwd+bwd']:.1f}x** the forward+backward time, "
        f"**{ratio['training step']:.1f}x** the training-step time (forward, backward to "
        "the parameters, Adam step).",
        "",
        "torchwire layers (in -> out, connections): "
        + ", ".join(
            f"{m.in_features} -> {m.out_features} ({m.nnz:,})"
            for m in builds["torchwire"]
            if isinstance(m, tw.SparseLinear)
        ),
        "",
    ]
    _script.publish("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
