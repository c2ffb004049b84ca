"""Is ``torch.compile(layer, fullgraph=True)`` at least as fast as the eager layer?

Per layer, at batch 64: forward under ``torch.no_grad()`` and forward+backward of a dense
output gradient, eager and compiled timed interleaved (the order alternating each round),
medians over rounds; the ratio compiled / eager (below 1 means compiling pays). Also reports
which backend eager ``auto`` runs. Compilation happens before timing (warm-up calls).

Run: ``python benchmarks/compile_vs_eager.py [--rounds 15] [--markdown PATH]``; on a GPU
``--device cuda --mode reduce-overhead`` compiles with CUDA graphs (``--mode`` is
``torch.compile``'s).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import _script
import torch
from torch import nn

import torchwire as tw
from torchwire.bench import device_name

BATCH = 64
CASES: dict[str, Callable[[], nn.Module]] = {
    "BlockLinear(1024, 1024, groups=16)": lambda: tw.BlockLinear(1024, 1024, groups=16),
    "BlockLinear([64] * 8 + [32] * 16, same)": lambda: tw.BlockLinear(
        [64] * 8 + [32] * 16, [64] * 8 + [32] * 16
    ),
    "SparseLinear(random 1024 x 1024, 1%)": lambda: tw.SparseLinear(
        tw.Wiring.random(1024, 1024, density=0.01, seed=0)
    ),
    "SparseLinear(random 1024 x 1024, 50%)": lambda: tw.SparseLinear(
        tw.Wiring.random(1024, 1024, density=0.5, seed=0)
    ),
}
# torch.compile's own cost per call, for scale: the same ratio for nn.Linear (no torchwire).
REFERENCES: dict[str, Callable[[], nn.Module]] = {
    "nn.Linear(1024, 1024)": lambda: nn.Linear(1024, 1024),
    "nn.Linear(64, 64)": lambda: nn.Linear(64, 64),
}


def _steps(
    module: nn.Module, device: torch.device, graphs: bool = False
) -> dict[str, Callable[[], object]]:
    """The two timed steps of ``module``; with ``graphs`` (a module compiled with CUDA
    graphs), each call starts a new step of torch.compile's graph trees."""
    x = torch.randn(BATCH, module.in_features, device=device)  # type: ignore[arg-type]
    xg = x.clone().requires_grad_()
    grad = torch.randn(BATCH, module.out_features, device=device)  # type: ignore[arg-type]
    begin = torch.compiler.cudagraph_mark_step_begin if graphs else lambda: None

    def fwd() -> object:
        begin()
        with torch.no_grad():
            return module(x)

    def fwd_bwd() -> None:
        begin()
        # Fresh gradients each step, as an optimizer's zero_grad() leaves them: with CUDA
        # graphs, an accumulated .grad would live in memory the next replay overwrites.
        module.zero_grad(set_to_none=True)
        xg.grad = None
        module(xg).backward(grad)

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def measure(
    make: Callable[[], nn.Module],
    rounds: int,
    calls: int,
    device: torch.device | None = None,
    mode: str | None = None,
) -> dict[str, tuple[float, float]]:
    """Per mode: (compiled / eager time, compiled - eager time in microseconds), from
    medians over interleaved rounds; on ``device`` (default: the CPU), compiled in
    torch.compile's ``mode``."""
    device = torch.device("cpu") if device is None else device
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    torch.manual_seed(0)
    eager = make().to(device)
    compiled = torch.compile(make().to(device), fullgraph=True, mode=mode)
    graphs = device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
    ratios: dict[str, tuple[float, float]] = {}
    for step_name in ("fwd", "fwd_bwd"):
        steps = {
            "eager": _steps(eager, device)[step_name],
            "compiled": _steps(compiled, device, graphs)[step_name],
        }
        for step in steps.values():
            for _ in range(3):  # compiles, records the graphs, warms up
                step()
        times: dict[str, list[float]] = {name: [] for name in steps}
        for r in range(rounds):
            for name in list(steps) if r % 2 == 0 else list(reversed(steps)):
                sync()
                start = time.perf_counter()
                for _ in range(calls):
                    steps[name]()
                sync()
                times[name].append((time.perf_counter() - start) / calls)
        slow, fast = statistics.median(times["compiled"]), statistics.median(times["eager"])
        ratios[step_name] = (slow / fast, (slow - fast) * 1e6)
    return ratios


def main() -> None:
    parser = _script.options(__doc__, 15)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", help="torch.compile's mode, e.g. reduce-overhead")
    args = parser.parse_args()
    _script.start(args)
    device = torch.device(args.device)
    compile_call = "fullgraph=True" + (f", mode={args.mode!r}" if args.mode else "")
    lines = [
        f"# Compiled / eager: torch {torch.__version__}, {device_name(device)}, "
        f"float32, {args.threads} thread(s), batch {BATCH}, {args.rounds} interleaved rounds of "
        f"{args.calls} calls",
        "",
        f"`torch.compile(layer, {compile_call})` time over the eager layer's (below 1: compiling "
        "pays), and in brackets the difference per call. fwd: forward under no_grad; fwd+bwd: "
        "forward then backward of a dense gradient. The nn.Linear rows measure torch.compile's "
        "own cost per call on this machine, with no torchwire involved.",
        "",
        "| layer | eager auto (fwd / fwd+bwd) | compiled / eager, fwd "
        "| compiled / eager, fwd+bwd |",
        "|---|---|---:|---:|",
    ]
    for name, make in {**CASES, **REFERENCES}.items():
        print(f"{name} ...", flush=True)
        layer = make().to(device)
        backends = "(torch)"
        if name in CASES:
            x = torch.randn(BATCH, layer.in_features, device=device)  # type: ignore[arg-type]
            with torch.no_grad():
                fwd_backend = layer.resolve_backend(x)  # type: ignore[operator]
            bwd_backend = layer.resolve_backend(x.requires_grad_())  # type: ignore[operator]
            backends = f"{fwd_backend} / {bwd_backend}"
        r = measure(make, args.rounds, args.calls, device, args.mode)
        cells = [f"{r[m][0]:.2f} ({r[m][1]:+.0f} us)" for m in ("fwd", "fwd_bwd")]
        lines.append(f"| {name} | {backends} | {cells[0]} | {cells[1]} |")
        if args.markdown:  # each row as it is measured: a run cut short keeps what it has
            Path(args.markdown).write_text("\n".join(lines) + "\n")
    _script.publish("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()
