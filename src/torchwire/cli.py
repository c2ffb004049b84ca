"""The ``torchwire`` command line.

Subcommands:

- ``torchwire bench``: time every way of computing a block-diagonal or a sparse linear layer on
  this device and show which one torchwire uses (see :mod:`torchwire.bench`).

Bad options end with an argparse message and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch

import torchwire
from torchwire import bench

__all__ = ["build_parser", "main"]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _density(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a density in (0, 1] such as 0.05, got {text!r}")
    return value


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        device = torch.device("meta")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but CUDA is not available to this torch ({torch.__version__});"
            " use --device cpu"
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return device


def _layout(text: str) -> bench.Layout:
    try:
        return bench.parse_layout(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _output_path(text: str) -> Path:
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(path.parent)!r} does not exist")
    return path


def _add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time every way of computing block-diagonal, sparse and branching layers here",
        description=(
            "Four sections. block: torchwire's BlockLinear (auto and every backend forced by "
            "name) against an nn.ModuleList of nn.Linear, a pruned (masked) dense nn.Linear and a "
            "grouped Conv1d, as ratios to one dense GEMM with the same multiply-adds ('limit'). "
            "sparse: torchwire's SparseLinear on random wirings (auto and every backend that can "
            "run the wiring) against a dense weight * mask ('masked_weight', the reference of the "
            "ratios), a pruned (masked) dense nn.Linear and torch.sparse.mm. branches: "
            "same-input heads fused by fuse_parallel against the heads run one after another "
            "('branches', the reference) and one wide layer split by hand. merge: layers in a "
            "row merged into one by torchwire.merge, against the chain as written "
            "('sequential'). Progress goes to stderr, the tables to stdout."
        ),
    )
    parser.add_argument(
        "--section",
        choices=(*bench.SECTIONS, "all"),
        help="which section to run (default: the section whose grid options are given, else all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small grid (block: 4 layouts; sparse: 1024 features at densities 0.05 and 0.01; "
        "branches: 2 problems; batch 64; 5 rounds): about 30 s on a 2-core CPU",
    )
    parser.add_argument(
        "--device",
        type=_device,
        default=None,
        help="cpu, cuda or cuda:N (default: cuda if available, else cpu)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="default: float32")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="torch.set_num_threads(N) during the run (default: 1: more is unstable when shared)",
    )
    parser.add_argument(
        "--batch",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="batch sizes (default: 64 1024; with --quick: 64)",
    )
    parser.add_argument(
        "--layout",
        type=_layout,
        nargs="+",
        metavar="SPEC",
        help="block layouts instead of the built-in grid: 16x64 (16 groups of 64 -> 64), "
        "8x64+16x32, 16x(48,16) (pattern repeated), 2x2->2x3 (inputs -> outputs)",
    )
    parser.add_argument(
        "--features",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="sizes of the sparse section's N -> N layers (default: 1024 4096; with --quick: 1024)",
    )
    parser.add_argument(
        "--density",
        type=_density,
        nargs="+",
        metavar="D",
        help="densities of the sparse section's random wirings, in (0, 1] "
        "(default: 0.5 0.2 0.1 0.05 0.01 0.001; with --quick: 0.05 0.01)",
    )
    parser.add_argument(
        "--problem",
        choices=bench.FULL_BRANCH_PROBLEMS,
        nargs="+",
        metavar="NAME",
        help="the branches section's problems, some of "
        f"{' '.join(bench.FULL_BRANCH_PROBLEMS)} (default: all; with --quick: "
        f"{' '.join(bench.QUICK_BRANCH_PROBLEMS)})",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=None,
        metavar="R",
        help="interleaved timing rounds; medians are over rounds (default: 11; with --quick: 5)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch.manual_seed and the seed of the sparse wirings (default: 0)",
    )
    parser.add_argument(
        "--json", type=_output_path, metavar="PATH", help="write all results and samples as JSON"
    )
    parser.add_argument(
        "--markdown", type=_output_path, metavar="PATH", help="write the tables as markdown"
    )
    parser.set_defaults(handler=partial(_bench, parser))


_SECTION_OPTIONS = {
    "block": ("layout",),
    "sparse": ("features", "density"),
    "branches": ("problem",),
}


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.section is None:  # a grid option names its section
        named = [
            section
            for section, options in _SECTION_OPTIONS.items()
            if any(getattr(args, option) is not None for option in options)
        ]
        args.section = named[0] if len(named) == 1 else "all"
    sections = bench.SECTIONS if args.section == "all" else (args.section,)
    for section, options in _SECTION_OPTIONS.items():
        for option in options:
            if section not in sections and getattr(args, option) is not None:
                parser.error(
                    f"--{option} sets the {section} section's grid, but --section "
                    f"{args.section} does not run it; use --section {section} or all"
                )
    config = bench.make_config(
        quick=args.quick,
        device=args.device,
        dtype=DTYPES[args.dtype],
        threads=args.threads,
        sections=sections,
        batches=args.batch,
        layouts=args.layout,
        features=args.features,
        densities=args.density,
        problems=args.problem,
        repeats=args.repeats,
        seed=args.seed,
    )
    result = bench.run(config, progress=sys.stderr)
    print(bench.format_text(result), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(bench.to_dict(result), indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(bench.format_markdown(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``torchwire`` argument parser, one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="torchwire", description="torchwire: partially connected layers for PyTorch."
    )
    parser.add_argument("--version", action="version", version=torchwire.__version__)
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    _add_bench(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchwire`` command line.

    Args:
        argv (Sequence[str], optional): the arguments after the program name.
            Default: ``sys.argv[1:]``.

    Returns:
        int: the exit status. Bad arguments raise ``SystemExit(2)`` with a message on stderr.
    """
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
