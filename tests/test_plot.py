"""Pictures of bench results (torchwire.bench.plot): the crossover arithmetic, the panels drawn from
the recorded results, the PNG written, and the error without matplotlib."""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from torchwire.bench.plot import (
    INSTALL_HINT,
    _environment_text,
    _rows,
    crossover_density,
    save_plot,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load(*names: str) -> list[dict[str, Any]]:
    return [json.loads((RESULTS / name).read_text()) for name in names]


AMD = (
    "cpu-amd-epyc-float32.json",
    "cpu-amd-epyc-float32-sparse.json",
    "cpu-amd-epyc-float32-branches.json",
    "cpu-amd-epyc-float32-merge.json",
    "cpu-amd-epyc-float32-overhead.json",
)


# --- crossover_density --------------------------------------------------------------------------


def test_crossover_interpolates_in_log_log_between_the_neighbours() -> None:
    # 2x at 10%, 0.5x at 50%: log speedup is symmetric about 0, so the crossover is the
    # geometric mean of the two densities.
    points = [(0.01, 8.0), (0.1, 2.0), (0.5, 0.5)]
    assert crossover_density(points) == pytest.approx(math.sqrt(0.1 * 0.5))
    # Unequal distances from 1x move the crossover toward the closer point.
    closer = crossover_density([(0.1, 1.1), (0.5, 0.5)])
    assert closer is not None
    assert 0.1 < closer < math.sqrt(0.1 * 0.5)


def test_crossover_does_not_depend_on_the_order_of_points() -> None:
    points = [(0.001, 40.0), (0.01, 9.0), (0.05, 3.0), (0.1, 1.4), (0.2, 0.8), (0.5, 0.6)]
    expected = crossover_density(points)
    assert expected is not None
    assert 0.1 < expected < 0.2
    shuffled = points[:]
    random.Random(0).shuffle(shuffled)
    assert crossover_density(shuffled) == pytest.approx(expected)


def test_crossover_is_where_torchwire_first_stops_being_faster() -> None:
    # Slower at 5%, faster again at 10% (noise, or another backend), slower at 50%: the
    # first fall below 1x counts.
    crossover = crossover_density([(0.01, 3.0), (0.05, 0.8), (0.1, 1.2), (0.5, 0.9)])
    assert crossover is not None
    assert 0.01 < crossover < 0.05


def test_crossover_at_a_point_of_exactly_1x_is_that_point() -> None:
    assert crossover_density([(0.01, 4.0), (0.2, 1.0), (0.5, 0.7)]) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "points",
    [
        pytest.param([(0.001, 50.0), (0.01, 9.0), (0.5, 1.02)], id="faster-everywhere"),
        pytest.param([(0.001, 0.9), (0.01, 0.5), (0.5, 0.2)], id="slower-everywhere"),
        pytest.param([(0.001, 0.9), (0.5, 1.5)], id="only-gets-faster"),
        pytest.param([(0.1, 0.5)], id="one-point"),
        pytest.param([], id="no-points"),
    ],
)
def test_no_crossover(points: list[tuple[float, float]]) -> None:
    assert crossover_density(points) is None


def test_crossover_ignores_points_that_are_not_positive_finite_numbers() -> None:
    clean = [(0.01, 5.0), (0.1, 2.0), (0.5, 0.5)]
    noisy = [*clean, (0.3, math.nan), (0.0, 0.1), (0.4, 0.0), (0.45, -1.0), (math.inf, 0.1)]
    assert crossover_density(noisy) == pytest.approx(crossover_density(clean))


# --- panels from the recorded results (no matplotlib needed to lay them out) --------------------


def test_panels_follow_the_sections_present() -> None:
    titles = [[panel.title for panel in row] for row in _rows(_load(*AMD))]
    flat = " | ".join(title for row in titles for title in row)
    assert titles[0] == [
        "sparse, fwd: speedup of SparseLinear over masked_weight",
        "sparse, fwd+bwd: speedup of SparseLinear over masked_weight",
    ]
    for words in ("sparse memory", "block, fwd, batch 64", "block, fwd+bwd, batch 1024"):
        assert words in flat
    for words in ("block memory", "branches:", "branches memory", "merge:", "overhead"):
        assert words in flat
    # Only the sparse and overhead sections were recorded on the Xeon.
    xeon = _rows(
        _load("cpu-intel-xeon-float32-sparse.json", "cpu-intel-xeon-float32-overhead.json")
    )
    xeon_titles = " | ".join(panel.title for row in xeon for panel in row)
    assert "sparse, fwd" in xeon_titles
    assert "overhead" in xeon_titles
    assert "block" not in xeon_titles
    assert "branches" not in xeon_titles


def test_figure_title_names_device_and_dtype() -> None:
    assert _environment_text(_load(*AMD)) == "AMD EPYC (cpu), float32, 1 thread, torch 2.13.0+cpu"
    cuda = _environment_text(_load("cuda-h100-float32.json", "cuda-h100-bfloat16.json"))
    assert cuda == "NVIDIA H100 80GB HBM3 (cuda), float32 / bfloat16, torch 2.11.0+cu130"


def test_no_rows_is_a_value_error(tmp_path: Path) -> None:
    empty = {"environment": {"device": "cpu"}, "cases": [], "sparse": []}
    with pytest.raises(ValueError, match="non-empty 'overhead', 'cases', 'sparse'"):
        save_plot([empty], tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()


# --- drawing (needs matplotlib) -----------------------------------------------------------------


def test_save_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    path = tmp_path / "sparse.png"
    save_plot(_load("cpu-intel-xeon-float32-sparse.json"), path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert 20_000 < len(data) < 500_000  # a real picture, still small enough for the docs
    with Image.open(path) as image:
        width, height = image.size
    assert width == 1500
    assert height > 600


def test_save_plot_draws_every_section_of_a_device(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    one, all_ = tmp_path / "one.png", tmp_path / "all.png"
    save_plot(_load("cpu-amd-epyc-float32-sparse.json"), one)
    save_plot(_load(*AMD), all_)
    assert all_.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(one) as small, Image.open(all_) as large:
        assert large.size[1] > 3 * small.size[1]  # a row of panels per section and batch


def test_sparse_panels_mark_and_name_the_crossover() -> None:
    pytest.importorskip("matplotlib")
    from torchwire.bench.plot import _figure

    figure = _figure(_load("cpu-amd-epyc-float32-sparse.json"))
    fwd = next(ax for ax in figure.axes if ax.get_title(loc="left").startswith("sparse, fwd:"))
    legend = fwd.get_legend()
    assert legend is not None
    labels = [text.get_text() for text in legend.get_texts()]
    # n=4096, batch 64, fwd: 2.56x at 20%, 0.93x at 50% -> about 47%.
    assert "n=4096, batch 64: crossover 47%" in labels
    assert "n=1024, batch 1024: faster at every density" in labels
    # Each crossover is an X on the 1x line, at the density the legend names.
    marks = [line for line in fwd.get_lines() if line.get_marker() == "X"]
    assert len(marks) == sum("crossover" in label for label in labels) == 3
    points = sorted(tuple(np.asarray(line.get_xydata(), dtype=float)[0]) for line in marks)
    assert points == [
        (pytest.approx(0.16, abs=0.01), 1.0),
        (pytest.approx(0.32, abs=0.01), 1.0),
        (pytest.approx(0.47, abs=0.01), 1.0),
    ]
    assert fwd.get_xscale() == "log"
    assert fwd.get_yscale() == "log"


def test_without_matplotlib_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    path = tmp_path / "plot.png"
    with pytest.raises(ImportError, match=r"pip install 'torchwire\[plot\]'"):
        save_plot(_load("cuda-h100-float32.json"), path)
    assert "torchwire[plot]" in INSTALL_HINT
    assert not path.exists()


# --- benchmarks/plot_results.py -----------------------------------------------------------------


def test_plot_results_groups_files_by_device_and_dtype() -> None:
    spec = importlib.util.spec_from_file_location(
        "plot_results", ROOT / "benchmarks" / "plot_results.py"
    )
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    runs = script.group_results(RESULTS)
    assert set(runs) == {
        "cpu-amd-epyc-float32",
        "cpu-intel-xeon-float32",
        "cuda-h100-float32",
        "cuda-h100-bfloat16",
    }
    assert len(runs["cpu-amd-epyc-float32"]) == len(AMD)
    assert {r["environment"]["dtype"] for r in runs["cuda-h100-bfloat16"]} == {"bfloat16"}


def test_a_hierarchy_run_gets_its_speedup_and_memory_panels() -> None:
    pytest.importorskip("matplotlib")
    methods = {
        name: {
            mode: {"median_ms": ms, "x_masked_dense": 1.0}
            for mode, ms in (("fwd", base), ("fwd_bwd", 2 * base))
        }
        | {"param_bytes": size, "peak_bytes": 2 * size}
        for name, base, size in (("torchwire", 1.0, 1_000), ("masked_dense", 30.0, 200_000))
    }
    row = {"problem": "reactome-like", "batch": 64, "reference": "masked_dense", "methods": methods}
    titles = [panel.title for line in _rows([{"hierarchy": [row]}]) for panel in line]
    assert titles[0] == "hierarchy: speedup of torchwire's hierarchy over each alternative"
    assert titles[1].startswith("hierarchy memory")
