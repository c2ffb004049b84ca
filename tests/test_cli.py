"""Tests of the ``torchwire`` command line: options, errors, ``python -m torchwire``,
``--plot`` (the bench's measurements and reports are tested in test_bench*.py)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import torchwire
from torchwire import cli
from torchwire.cli import main

torch.set_num_threads(1)
ROOT = Path(__file__).parents[1]


def bench_main(argv: list[str], tmp: Path) -> dict[str, Any]:
    """Run ``torchwire bench ARGV --json``: its JSON, stdout and stderr."""
    argv = ["bench", "--device", "cpu", *argv, "--json", str(tmp / "out.json")]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return {
        "status": status,
        "json": json.loads((tmp / "out.json").read_text()),
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
    }


@pytest.mark.parametrize(
    ("section", "argv"),
    [
        ("block", ["--layout", "2,2"]),
        ("sparse", ["--features", "16", "--density", "0.25"]),
        ("branches", ["--problem", "linear-heads"]),
        ("merge", []),
    ],
)
def test_one_section(section: str, argv: list[str], tmp_path: Path) -> None:
    """A grid option alone picks its section; --section names it explicitly."""
    alone = [argv] if argv else []  # the merge section has no grid option to pick it
    for args in [*alone, ["--section", section, *argv]]:
        out = bench_main(["--batch", "4", "--repeats", "1", *args], tmp_path)
        assert out["status"] == 0
        data = out["json"]
        assert data["environment"]["sections"] == [section]
        counts = {key: len(data[key]) for key in ("cases", "sparse", "branches", "merge")}
        assert counts == {
            key: int(key == {"block": "cases"}.get(section, section)) for key in counts
        }
        assert ("sparse summary" in out["stdout"]) == (section == "sparse")
        assert ("branches summary" in out["stdout"]) == (section == "branches")
        assert ("x limit" in out["stdout"]) == (section == "block")
        assert ("auto -> A / B" in out["stdout"]) == (section in ("block", "sparse"))
        assert "summary: torchwire against what users write today" in out["stdout"]
        assert len(out["stderr"].splitlines()) == 1  # one progress line: one case


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["bench", "--dtype", "float16"], "invalid choice"),
        (["bench", "--threads", "0"], "expected a positive integer"),
        (["bench", "--batch", "8", "x"], "expected a positive integer"),
        (["bench", "--repeats", "-1"], "expected a positive integer"),
        (["bench", "--layout", "3x"], "invalid layout"),
        (["bench", "--layout", "2x2->3x3"], "2 input groups but 3 output groups"),
        (["bench", "--layout", "2x0"], "invalid layout"),
        (["bench", "--section", "dense"], "invalid choice"),
        (["bench", "--features", "0"], "expected a positive integer"),
        (["bench", "--density", "0"], "expected a density in (0, 1]"),
        (["bench", "--density", "1.5"], "expected a density in (0, 1]"),
        (["bench", "--density", "0.1", "5%"], "expected a density in (0, 1]"),
        (["bench", "--density", "nan"], "expected a density in (0, 1]"),
        (["bench", "--section", "sparse", "--layout", "16x64"], "--layout sets the block"),
        (["bench", "--section", "block", "--features", "64"], "--features sets the sparse"),
        (["bench", "--section", "block", "--density", "0.1"], "--density sets the sparse"),
        (["bench", "--section", "block", "--problem", "linear-heads"], "--problem sets the"),
        (["bench", "--problem", "heads"], "invalid choice"),
        (["bench", "--device", "tpu"], "expected cpu, cuda or cuda:N"),
        (["bench", "--device", "meta"], "expected cpu, cuda or cuda:N"),
        (["bench", "--json", "/nonexistent/dir/out.json"], "does not exist"),
        (["bench", "--plot", "/nonexistent/dir/out.png"], "does not exist"),
        (["bench", "--quick", "--full"], "not allowed with argument"),
        (["bench", "--unknown"], "unrecognized arguments"),
    ],
)
def test_bad_options_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: torchwire" in err
    assert message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_unavailable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--device", "cuda"])
    assert info.value.code == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == torchwire.__version__


def test_console_entry_point() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["torchwire"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is main


def test_verbose_adds_a_table_per_case(tmp_path: Path) -> None:
    argv = ["--section", "merge", "--batch", "2", "--repeats", "1"]
    plain = bench_main(argv, tmp_path)["stdout"]
    verbose = bench_main([*argv, "--verbose"], tmp_path)["stdout"]
    title = "merge conv3x3-conv5x5: Conv2d(1, 100, 3) then Conv2d(100, 2, 5)"
    assert title not in plain
    assert title in verbose
    assert "merge summary (" in plain
    assert "merge summary (" in verbose


def test_help_states_the_grids_and_how_long_full_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["bench", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"--full every case of every section: {cli.FULL_DURATION} on a 2-core CPU" in text
    assert "minutes" in cli.FULL_DURATION
    assert "--quick a small grid, 5 rounds: about" in text
    assert "--batch N [N ...] batch sizes (default and --quick: 64; --full: 64 1024)" in text


@pytest.mark.parametrize(("flag", "grid"), [([], "default"), (["--quick"], "quick")])
def test_grid_flags_pick_the_grid(
    flag: list[str], grid: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configs = []

    def fake_run(config: Any, *, progress: Any = None) -> Any:
        configs.append(config)
        return torchwire.bench.BenchResult(
            {"device": "cpu", "device_name": "CPU", "dtype": "float32", "threads": 1}
        )

    monkeypatch.setattr(torchwire.bench, "run", fake_run)
    monkeypatch.setattr(torchwire.bench, "format_text", lambda result, details: "")
    monkeypatch.setattr(torchwire.bench, "to_dict", lambda result: {})
    bench_main(flag, tmp_path)
    (config,) = configs
    assert config == torchwire.bench.make_config(grid=grid, device=torch.device("cpu"))
    configs.clear()
    bench_main(["--full"], tmp_path)
    assert configs[0].grid == "full"


def test_plot_draws_the_json_dict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from torchwire.bench import plot as _plot

    drawn: list[tuple[Any, Any]] = []
    monkeypatch.setattr(_plot, "save_plot", lambda results, path: drawn.append((results, path)))
    monkeypatch.setattr(cli, "_plot_missing", lambda: None)
    out = bench_main(
        ["--section", "merge", "--batch", "2", "--repeats", "1", "--plot", str(tmp_path / "a.png")],
        tmp_path,
    )
    ((results, path),) = drawn
    assert path == tmp_path / "a.png"
    assert results == [out["json"]]  # the dict --json writes, as it writes it


def test_plot_without_matplotlib_stops_before_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "_plot_missing", lambda: "--plot needs matplotlib")
    monkeypatch.setattr(torchwire.bench, "run", lambda *args, **kwargs: pytest.fail("ran"))
    with pytest.raises(SystemExit) as info:
        main(["bench", "--plot", str(tmp_path / "a.png")])
    assert info.value.code == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_line(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "", "OMP_NUM_THREADS": "1"}
    version = subprocess.run(
        [sys.executable, "-m", "torchwire", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert version.stdout.strip() == torchwire.__version__
    out = tmp_path / "out.json"
    argv = ["bench", "--quick", "--section", "merge", "--repeats", "1", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "torchwire", *argv], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["merge"][0]["problem"] == "conv3x3-conv5x5"
    assert "merged chains: merge -> Conv2d 7x7; 1 case, fwd" in done.stdout
    assert done.stderr.startswith("[1/1] merge conv3x3-conv5x5 batch=64: ")
