"""The ``torchwire`` command line.

Subcommands:

- ``torchwire bench``: measure torchwire's layers, containers and model surgery against what
  users write today, on this device, and summarise where torchwire is (and is not) the best
  choice (see :mod:`torchwire.bench`).

``python -m torchwire`` runs the same command line. Bad options end with an argparse message
and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
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


FULL_DURATION = "about 30 minutes"
"""How long ``torchwire bench --full`` takes on a 2-core CPU (measured: 1,659 s on an Intel Xeon,
1 thread)."""


def _grid_help(values: Mapping[str, object]) -> str:
    """The values of an option in each grid: ``default and --quick: 64; --full: 64 1024``."""
    names: dict[str, list[str]] = {}
    for grid in ("default", "quick", "full"):
        value = values[grid]
        text = " ".join(map(str, value)) if isinstance(value, Sequence) else str(value)
        names.setdefault(text, []).append(grid if grid == "default" else f"--{grid}")
    return "; ".join(f"{' and '.join(grids)}: {text}" for text, grids in names.items())


def _add_bench(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure torchwire's layers against what users write today, on this device",
        description=(
            "Six sections. overhead: one call of each torchwire layer and container at tiny "
            "shapes against the torch code it replaces. block: BlockLinear (auto and every "
            "backend forced by name) against a loop of nn.Linear, a pruned (masked) dense "
            "nn.Linear and a grouped Conv1d, as ratios to one dense GEMM with the same "
            "multiply-adds ('limit'). sparse: SparseLinear on random wirings against a dense "
            "weight * mask ('masked_weight', the reference of the ratios), a pruned dense "
            "nn.Linear and torch.sparse.mm. branches: same-input heads fused by fuse_parallel "
            "against the heads one after another ('branches', the reference) and one wide layer "
            "split by hand. merge: layers in a row merged into one by torchwire.merge, against "
            "the chain as written ('sequential'). hierarchy (only with --full, or alone): a "
            "gene -> pathway network at Reactome's scale built by torchwire.hierarchy against "
            "the same layers dense with masks ('masked_dense'), as BINN builds them. "
            "The default grid runs a representative case "
            "or two of each section (about 35 s on a 2-core CPU); --quick a smaller one, "
            f"--full every case ({FULL_DURATION}). Progress goes to stderr; the tables and a "
            "one-screen summary (torchwire against the fastest alternative, and where it is "
            "not the best choice) to stdout."
        ),
    )
    parser.add_argument(
        "--section",
        choices=(*bench.SECTIONS, "all"),
        help="which section to run (default: the section whose grid options are given, else all)",
    )
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--quick",
        action="store_true",
        help="a small grid, 5 rounds: about 25 s on a 2-core CPU (the smoke test CI runs)",
    )
    grid.add_argument(
        "--full",
        action="store_true",
        help=f"every case of every section: {FULL_DURATION} on a 2-core CPU",
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
        help=f"batch sizes ({_grid_help(bench.BATCHES)})",
    )
    layouts = {size: [layout.name for layout in value] for size, value in bench.LAYOUTS.items()}
    parser.add_argument(
        "--layout",
        type=_layout,
        nargs="+",
        metavar="SPEC",
        help="block layouts: 16x64 (16 groups of 64 -> 64), 8x64+16x32, 16x(48,16) (pattern "
        f"repeated), 2x2->2x3 (inputs -> outputs) ({_grid_help(layouts)})",
    )
    parser.add_argument(
        "--features",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help=f"sizes of the sparse section's N -> N layers ({_grid_help(bench.FEATURES)})",
    )
    parser.add_argument(
        "--density",
        type=_density,
        nargs="+",
        metavar="D",
        help="densities of the sparse section's random wirings, in (0, 1] "
        f"({_grid_help(bench.DENSITIES)})",
    )
    parser.add_argument(
        "--problem",
        choices=bench.PROBLEMS["full"],
        nargs="+",
        metavar="NAME",
        help=f"the branches section's problems ({_grid_help(bench.PROBLEMS)})",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=None,
        metavar="R",
        help=f"interleaved timing rounds; medians are over rounds ({_grid_help(bench.REPEATS)})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="torch.manual_seed and the seed of the sparse wirings (default: 0)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print one table per case (every method's times and bytes), as --markdown has",
    )
    parser.add_argument(
        "--json", type=_output_path, metavar="PATH", help="write all results and samples as JSON"
    )
    parser.add_argument(
        "--markdown", type=_output_path, metavar="PATH", help="write the tables as markdown"
    )
    parser.add_argument(
        "--plot",
        type=_output_path,
        metavar="PATH",
        help="draw the results as a PNG (needs matplotlib: pip install 'torchwire[plot]')",
    )
    parser.set_defaults(handler=partial(_bench, parser))


_SECTION_OPTIONS = {
    "block": ("layout",),
    "sparse": ("features", "density"),
    "branches": ("problem",),
}


def _plot_missing() -> str | None:
    """Why ``--plot`` cannot draw here, or ``None``."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib, which is not installed: pip install 'torchwire[plot]'"
    return None


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
    if args.plot is not None and (why := _plot_missing()) is not None:
        parser.error(why)
    config = bench.make_config(
        grid="quick" if args.quick else "full" if args.full else "default",
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
    print(bench.format_text(result, details=args.verbose), end="")
    if args.json is not None:
        args.json.write_text(json.dumps(bench.to_dict(result), indent=2) + "\n")
    if args.markdown is not None:
        args.markdown.write_text(bench.format_markdown(result))
    if args.plot is not None:
        from torchwire.bench import plot  # matplotlib is optional: imported only to draw

        plot.save_plot([bench.to_dict(result)], args.plot)
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
