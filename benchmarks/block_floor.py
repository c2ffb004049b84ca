"""How close can any composition of ATen kernels get to ``limit`` for a block-diagonal layer?

``torchwire bench`` compares ``BlockLinear`` forward+backward with ``limit``, one dense GEMM
of the same multiply-adds. This script times the kernels a block-diagonal layer cannot
avoid, with every layout conversion left out, as if activations already sat in the layout
each batched GEMM likes best, and then the compositions that compute the layer from
row-major activations: those kernels plus the conversions, or the kernels on strided views.
The best of those compositions is the floor ``BlockLinear`` is held to (within 1.15x).

Per case and batch it times, interleaved, each kernel's median:

* ``limit``: ``addmm`` forward, grad-input ``mm``, grad-weight ``mm``, bias-grad ``sum``;
* ``group-major`` operands ``(G, batch, i)``, contiguous: the three ``bmm`` and the sum;
* ``feature-major`` operands ``(G, i, batch)``, contiguous: the three ``bmm`` and the sum;
* ``strided`` views of row-major ``(batch, G * i)`` activations, outputs written in place
  (what the ``bmm`` backend runs): the three ``bmm`` and the sum;
* one conversion of an activation to each of the first two layouts (a permuted copy, a 2-D
  transpose); forward+backward needs four (input, output, output gradient, input gradient);
* the ``BlockLinear`` layer (``backend="auto"``) and ``nn.Linear`` as ``limit``, forward
  then backward of a dense gradient, as ``torchwire bench`` times them.

Run: ``python benchmarks/block_floor.py [--rounds 11] [--markdown PATH]``.
"""

from __future__ import annotations

from collections.abc import Callable

import _script
import torch
from torch import nn

import torchwire
from torchwire.bench import device_name

CASES = [(4, 256), (16, 64), (64, 32), (8, 512), (256, 8)]  # (groups, block width)
BATCHES = [64, 1024]
Kernels = dict[str, Callable[[], object]]


def _limit(x: torch.Tensor, limit_out: int) -> Kernels:
    rows, width = x.shape
    w, b, g = torch.randn(limit_out, width), torch.randn(limit_out), torch.randn(rows, limit_out)
    return {
        "fwd": lambda: torch.addmm(b, x, w.t()),
        "grad_x": lambda: g @ w,
        "grad_w": lambda: g.t() @ x,
        "grad_b": lambda: g.sum(0),
    }


def _group_major(rows: int, groups: int, size: int) -> Kernels:
    x, g = torch.randn(groups, rows, size), torch.randn(groups, rows, size)
    w, b = torch.randn(groups, size, size), torch.randn(groups, 1, size)
    return {
        "fwd": lambda: torch.baddbmm(b, x, w.transpose(1, 2)),
        "grad_x": lambda: torch.bmm(g, w),
        "grad_w": lambda: torch.bmm(g.transpose(1, 2), x),
        "grad_b": lambda: g.sum(1),
    }


def _feature_major(rows: int, groups: int, size: int) -> Kernels:
    x, g = torch.randn(groups, size, rows), torch.randn(groups, size, rows)
    w, b = torch.randn(groups, size, size), torch.randn(groups, size, 1)
    return {
        "fwd": lambda: torch.baddbmm(b, w, x),
        "grad_x": lambda: torch.bmm(w.transpose(1, 2), g),
        "grad_w": lambda: torch.bmm(g, x.transpose(1, 2)),
        "grad_b": lambda: g.sum(2),
    }


def _strided(rows: int, groups: int, size: int) -> Kernels:
    """Views of row-major ``(batch, G * size)`` activations, as the ``bmm`` backend uses."""
    x, g = torch.randn(rows, groups, size), torch.randn(rows, groups, size)
    y, gx = torch.empty(rows, groups, size), torch.empty(rows, groups, size)
    w, b = torch.randn(groups, size, size), torch.randn(groups, 1, size)
    xv, gv = x.transpose(0, 1), g.transpose(0, 1)
    return {
        "fwd": lambda: torch.baddbmm(b, xv, w.transpose(1, 2), out=y.transpose(0, 1)),
        "grad_x": lambda: torch.bmm(gv, w, out=gx.transpose(0, 1)),
        "grad_w": lambda: torch.bmm(gv.transpose(1, 2), xv),
        "grad_b": lambda: g.sum(0),
    }


def _layer(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    grad = torch.randn(x.shape[0], module(x).shape[1])

    def step() -> None:
        module(x).backward(grad)

    return step


def measure(groups: int, size: int, rows: int, rounds: int) -> dict[str, float]:
    """Median seconds of every kernel and layer of one case, timed interleaved."""
    width = groups * size
    x = torch.randn(rows, width)
    xg = x.clone().requires_grad_()
    steps: dict[str, Callable[[], object]] = {}
    for prefix, kernels in (
        ("limit", _limit(x, size)),
        ("group-major", _group_major(rows, groups, size)),
        ("feature-major", _feature_major(rows, groups, size)),
        ("strided", _strided(rows, groups, size)),
    ):
        steps.update({f"{prefix} {name}": fn for name, fn in kernels.items()})
    src, dst, flat = torch.randn(rows, groups, size), torch.empty(groups, rows, size), x.t()
    steps["convert group-major"] = lambda: dst.copy_(src.transpose(0, 1))
    steps["convert feature-major"] = lambda: flat.contiguous()
    steps["layer limit"] = _layer(nn.Linear(width, size), xg)
    steps["layer torchwire"] = _layer(torchwire.BlockLinear(width, width, groups), xg)
    return _script.medians(steps, rounds)


def _total(m: dict[str, float], prefix: str) -> float:
    return sum(m[f"{prefix} {k}"] for k in ("fwd", "grad_x", "grad_w", "grad_b"))


LAYOUTS = ("group-major", "feature-major", "strided")


def report(results: dict[tuple[int, int, int], dict[str, float]]) -> str:
    lines = [
        "| layout | batch | group-major kernels | + 4 copies | feature-major kernels "
        "| + 4 transposes | strided kernels | kernels alone | floor | torchwire "
        "| torchwire / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (groups, size, rows), m in results.items():
        limit = _total(m, "limit")
        kernels = [_total(m, p) / limit for p in LAYOUTS]
        converted = [kernels[i] + 4 * m[f"convert {LAYOUTS[i]}"] / limit for i in (0, 1)]
        # The compositions that compute the layer from row-major activations and back.
        floor = min(*converted, kernels[2])
        cells = [kernels[0], converted[0], kernels[1], converted[1], kernels[2], min(kernels)]
        text = " | ".join(f"{c:.2f}" for c in cells)
        layer = m["layer torchwire"] / m["layer limit"]
        lines.append(
            f"| {groups}x{size} | {rows} | {text} | **{floor:.2f}** | {layer:.2f} "
            f"| **{layer / floor:.2f}** |"
        )
    return "\n".join(lines)


def main() -> None:
    args = _script.options(__doc__, 11).parse_args()
    _script.start(args)
    results = {}
    for groups, size in CASES:
        for rows in BATCHES:
            print(f"{groups}x{size}, batch {rows} ...", flush=True)
            results[groups, size, rows] = measure(groups, size, rows, args.rounds)
    header = (
        f"# Block-diagonal floor: torch {torch.__version__}, {device_name(torch.device('cpu'))}, "
        f"float32, {args.threads} thread(s), {args.rounds} interleaved rounds\n\n"
        "Forward+backward time as a multiple of `limit`. Each kernels column adds the medians "
        "of the four kernels no block-diagonal layer can avoid (forward, grad-input, "
        "grad-weight, bias-grad) with operands in that layout, over the same four kernels "
        "of `limit`. The + columns add four conversions between row-major activations and "
        "that layout, the least a layer converting whole tensors pays; the strided kernels "
        "read and write row-major activations in place. Kernels alone is the least kernels "
        "column: what no layer reaches, since activations arrive row-major. Floor is the "
        "best composition that computes the layer: the least of the + columns and the "
        "strided kernels. The torchwire column is `BlockLinear` (auto) over `nn.Linear` as "
        "`limit`, both forward then backward of a dense gradient, as `torchwire bench` "
        "times them; the target is torchwire / floor <= 1.15.\n\n"
    )
    _script.publish(header + report(results) + "\n", args.markdown)


if __name__ == "__main__":
    main()
