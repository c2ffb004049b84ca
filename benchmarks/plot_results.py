"""Draw the recorded ``torchwire bench`` results as pictures for the docs.

Every ``benchmarks/results/*.json`` file (but ``*-costs.json``, which ``block_costs.py`` and
``sparse_costs.py`` wrote) is one run of ``torchwire bench --json`` on one device
and dtype, either all sections or one (``cpu-amd-epyc-float32-sparse.json``). The files of one
device and dtype (the name without its section suffix) are drawn together, by
:func:`torchwire.bench.plot.save_plot`, into ``docs/images/<device>-<dtype>.png``.

Run: ``python benchmarks/plot_results.py [--results DIR] [--out DIR]`` (needs matplotlib:
``pip install 'torchwire[plot]'``).
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from torchwire.bench.plot import save_plot

ROOT = Path(__file__).resolve().parent.parent
SECTION_SUFFIXES = ("-overhead", "-block", "-sparse", "-branches", "-merge")


def run_name(path: Path) -> str:
    """The device+dtype run a results file belongs to: its name without a section suffix."""
    for suffix in SECTION_SUFFIXES:
        if path.stem.endswith(suffix):
            return path.stem.removesuffix(suffix)
    return path.stem


def group_results(results_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """The results files of ``results_dir``, loaded and grouped by :func:`run_name`."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(results_dir.glob("*.json")):
        if path.stem.endswith("-costs"):  # block_costs.py's or sparse_costs.py's timings
            continue
        runs[run_name(path)].append(json.loads(path.read_text()))
    for name, results in runs.items():
        kinds = {
            (r["environment"].get("device_name"), r["environment"].get("dtype")) for r in results
        }
        if len(kinds) > 1:
            warnings.warn(
                f"{name}: files from different devices or dtypes: {sorted(kinds)}", stacklevel=2
            )
    return dict(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, results in group_results(args.results).items():
        path = args.out / f"{name}.png"
        save_plot(results, path)
        print(
            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {len(results)} files"
        )


if __name__ == "__main__":
    main()
