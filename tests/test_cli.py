"""Tests of the ``torchwire`` command line and the ``torchwire bench`` suite (no timing checks)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

import torchwire
import torchwire._overhead
from torchwire import bench
from torchwire.cli import main

torch.set_num_threads(1)

LAYOUTS = ["2x2->2x3", "4+2"]  # equal groups (rectangular blocks) and uneven groups
FEATURES = 32
DENSITIES = [1.0, 0.1]  # fully connected (one block: the block backend runs) and sparse
PROBLEMS = ["wide-conv-heads", "linear-heads"]  # convolutions and linear layers
REPEATS = 2
# Per section (its key in the JSON): the backend op, the reference of ratios, the alternatives.
SECTIONS = {
    "cases": ("block_linear", "limit", bench.ALTERNATIVES),
    "sparse": ("sparse_linear", "masked_weight", bench.SPARSE_ALTERNATIVES),
    "branches": (None, "branches", bench.BRANCH_ALTERNATIVES),
    "merge": (None, "sequential", ("sequential",)),
}
BACKEND_SECTIONS = [section for section, (op, _, _) in SECTIONS.items() if op is not None]


def bench_main(argv: list[str], tmp: Path) -> dict[str, Any]:
    """Run ``torchwire bench ARGV --json --markdown``: its JSON, markdown, stdout and stderr."""
    argv = ["bench", "--device", "cpu", *argv, "--json", str(tmp / "out.json")]
    argv += ["--markdown", str(tmp / "out.md")]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(argv)
    return {
        "status": status,
        "json": json.loads((tmp / "out.json").read_text()),
        "markdown": (tmp / "out.md").read_text(),
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small ``torchwire bench --quick`` run of all sections."""
    argv = ["--quick", "--batch", "8", "--repeats", str(REPEATS), "--layout", *LAYOUTS]
    argv += ["--features", str(FEATURES), "--density", *map(str, DENSITIES)]
    argv += ["--problem", *PROBLEMS]
    return bench_main(argv, tmp_path_factory.mktemp("bench"))


def test_run_succeeds(run: dict[str, Any]) -> None:
    assert run["status"] == 0
    env = run["json"]["environment"]
    assert env["torch"] == torch.__version__
    assert env["torchwire"] == torchwire.__version__
    assert (env["device"], env["dtype"], env["threads"]) == ("cpu", "float32", 1)
    assert env["quick"] is True
    assert env["repeats"] == REPEATS
    assert env["sections"] == ["overhead", "block", "sparse", "branches", "merge"]
    overhead = run["json"]["overhead"]
    assert [row["case"] for row in overhead] == [c.name for c in torchwire._overhead.CASES]
    for row in overhead:
        for mode in ("fwd", "fwd_bwd"):
            assert row["ratio"][mode] == pytest.approx(row["us"][mode] / row["reference_us"][mode])
        assert row["aten_ops"]["fwd"] >= 1
    assert env["layouts"] == LAYOUTS
    assert env["backends"] == list(torchwire.backends.available("block_linear"))
    assert env["sparse"]["features"] == [FEATURES]
    assert env["sparse"]["densities"] == DENSITIES
    assert env["sparse"]["backends"] == list(torchwire.backends.available("sparse_linear"))
    assert env["device_name"]
    assert env["peak_bytes"]
    assert [case["layout"] for case in run["json"]["cases"]] == LAYOUTS
    assert [case["batch"] for case in run["json"]["cases"]] == [8, 8]
    sparse = run["json"]["sparse"]
    assert [(case["features"], case["density"], case["batch"]) for case in sparse] == [
        (FEATURES, density, 8) for density in DENSITIES
    ]
    assert [case["nnz"] for case in sparse] == [round(d * FEATURES**2) for d in DENSITIES]
    assert list(env["branches"]) == PROBLEMS
    branches = run["json"]["branches"]
    assert [(case["problem"], case["batch"]) for case in branches] == [(p, 8) for p in PROBLEMS]
    assert [case["problem"] for case in run["json"]["merge"]] == ["conv3x3-conv5x5"]


def test_merge_case_times_the_merged_layer_against_the_chain(run: dict[str, Any]) -> None:
    (case,) = run["json"]["merge"]
    assert set(case["methods"]) == {"torchwire", "sequential"}
    assert case["auto_backend"] == {mode: "Conv2d 7x7" for mode in bench.MODES}
    assert case["methods"]["torchwire"]["label"] == "torchwire (merge -> Conv2d 7x7)"
    # 98 weights and 2 biases, against 900 + 100 and 5,000 + 2.
    assert case["methods"]["torchwire"]["param_bytes"] == 4 * 100
    assert case["methods"]["sequential"]["param_bytes"] == 4 * 6002
    for mode in bench.MODES:
        speedup = (
            case["methods"]["sequential"][mode]["median_ms"]
            / case["methods"]["torchwire"][mode]["median_ms"]
        )
        assert math.isclose(case["speedup_vs_sequential"][mode], speedup)


def test_every_method_for_every_case(run: dict[str, Any]) -> None:
    backends = run["json"]["environment"]["backends"]
    for case in run["json"]["cases"]:
        expected = {"torchwire", "modulelist", "masked_dense", "conv1d_groups", "limit"}
        expected |= {f"torchwire[{name}]" for name in backends}
        assert set(case["methods"]) | set(case["skipped"]) == expected
        assert not set(case["methods"]) & set(case["skipped"])
        # Only forced backends that cannot run this case, and Conv1d on uneven groups, are skipped.
        for name, why in case["skipped"].items():
            assert why
            assert name.startswith("torchwire[") or name == "conv1d_groups"
        equal = len(set(case["in_sizes"])) == 1 and len(set(case["out_sizes"])) == 1
        assert ("conv1d_groups" in case["methods"]) == equal


def test_every_method_for_every_sparse_case(run: dict[str, Any]) -> None:
    backends = run["json"]["environment"]["sparse"]["backends"]
    for case in run["json"]["sparse"]:
        expected = {"torchwire", *bench.SPARSE_ALTERNATIVES}
        expected |= {f"torchwire[{name}]" for name in backends}
        assert set(case["methods"]) | set(case["skipped"]) == expected
        assert not set(case["methods"]) & set(case["skipped"])
        # Only forced backends that cannot compute the wiring are skipped: here 'block', on
        # wirings that are not block diagonal.
        wiring = torchwire.Wiring.random(FEATURES, FEATURES, density=case["density"], seed=0)
        expected_skipped = set() if wiring.is_block_diagonal else {"torchwire[block]"}
        assert set(case["skipped"]) == expected_skipped
        for why in case["skipped"].values():
            assert "cannot compute" in why


def test_every_method_for_every_branch_case(run: dict[str, Any]) -> None:
    for case in run["json"]["branches"]:
        assert set(case["methods"]) == {"torchwire", *bench.BRANCH_ALTERNATIVES}
        assert not case["skipped"]
        problem = next(p for p in bench.BRANCH_PROBLEMS if p.name == case["problem"])
        kind = type(problem.head()).__name__  # one wide layer of the heads' type
        assert case["auto_backend"] == {mode: kind for mode in bench.MODES}
        assert case["methods"]["torchwire"]["label"] == f"torchwire (fuse_parallel -> {kind})"
        # The same weights, however they are computed.
        assert len({m["param_bytes"] for m in case["methods"].values()}) == 1
        heads = problem.parallel()
        assert case["methods"]["branches"]["param_bytes"] == 4 * sum(
            p.numel() for p in heads.parameters()
        )
        for mode in bench.MODES:
            speedup = (
                case["methods"]["branches"][mode]["median_ms"]
                / case["methods"]["torchwire"][mode]["median_ms"]
            )
            assert math.isclose(case["speedup_vs_branches"][mode], speedup)


@pytest.mark.parametrize("section", SECTIONS)
def test_medians_and_ratios_are_consistent(run: dict[str, Any], section: str) -> None:
    _, reference, alternatives = SECTIONS[section]
    for case in run["json"][section]:
        assert case["reference"] == reference
        methods = case["methods"]
        for mode in bench.MODES:
            base = methods[reference][mode]["median_ms"]
            for name, method in methods.items():
                timing = method[mode]
                assert len(timing["samples_ms"]) == REPEATS
                assert all(sample > 0 for sample in timing["samples_ms"])
                assert timing["median_ms"] == statistics.median(timing["samples_ms"])
                assert timing["iterations"] >= 1
                ratio = timing[f"x_{reference}"]
                assert math.isclose(ratio, timing["median_ms"] / base), name
            assert methods[reference][mode][f"x_{reference}"] == 1.0
        alternative = case["fastest_alternative"]
        assert alternative in alternatives
        times = {name: methods[name]["fwd_bwd"]["median_ms"] for name in methods}
        assert times[alternative] == min(times[n] for n in alternatives if n in times)
        speedup = times[alternative] / times["torchwire"]
        assert math.isclose(case["speedup_vs_fastest_alternative"], speedup)


def test_sparse_speedup_vs_masked_weight(run: dict[str, Any]) -> None:
    for case in run["json"]["sparse"]:
        methods = case["methods"]
        for mode in bench.MODES:
            speedup = (
                methods["masked_weight"][mode]["median_ms"]
                / methods["torchwire"][mode]["median_ms"]
            )
            assert math.isclose(case["speedup_vs_masked_weight"][mode], speedup)


@pytest.mark.parametrize("section", BACKEND_SECTIONS)
def test_chosen_backend_is_available(run: dict[str, Any], section: str) -> None:
    available = torchwire.backends.available(SECTIONS[section][0])
    for case in run["json"][section]:
        assert set(case["auto_backend"]) == set(bench.MODES)
        for mode, name in case["auto_backend"].items():
            assert name in available
            assert f"torchwire[{name}]" in case["methods"]  # the auto choice also ran forced
            fastest = case["fastest_backend"][mode]
            times = {n: m[mode]["median_ms"] for n, m in case["methods"].items()}
            assert times[f"torchwire[{fastest}]"] == min(
                t for n, t in times.items() if n.startswith("torchwire[")
            )
            regret = times[f"torchwire[{name}]"] / times[f"torchwire[{fastest}]"]
            assert math.isclose(case["auto_vs_fastest_backend"][mode], regret)
            assert regret >= 1.0
        assert case["methods"]["torchwire"]["backend"] == case["auto_backend"]


def test_bytes(run: dict[str, Any]) -> None:
    for case in run["json"]["cases"]:
        pairs = list(zip(case["in_sizes"], case["out_sizes"], strict=True))
        methods = case["methods"]
        assert methods["modulelist"]["param_bytes"] == 4 * sum(i * o + o for i, o in pairs)
        n = case["limit_out_features"]
        assert n == round(sum(i * o for i, o in pairs) / sum(case["in_sizes"]))
        assert methods["limit"]["param_bytes"] == 4 * (case["in_features"] * n + n)
        dense = case["in_features"] * case["out_features"]
        # weight_orig and weight_mask are dense
        assert methods["masked_dense"]["param_bytes"] == 4 * (2 * dense + case["out_features"])
        for method in methods.values():
            assert method["param_bytes"] > 0
            assert method["peak_bytes"] >= 4 * 8 * case["in_features"]  # at least grad of input


def test_sparse_bytes(run: dict[str, Any]) -> None:
    n = FEATURES
    for case in run["json"]["sparse"]:
        methods, nnz = case["methods"], case["nnz"]
        # A dense weight and a dense float mask (a buffer, or prune's weight_mask), and a bias.
        assert methods["masked_weight"]["param_bytes"] == 4 * (2 * n * n + n)
        assert methods["prune_mask"]["param_bytes"] == 4 * (2 * n * n + n)
        # Values, int64 CSR indices, bias.
        assert methods["torch_sparse"]["param_bytes"] == 4 * nnz + 8 * (nnz + n + 1) + 4 * n
        # SparseLinear: at most 16 bytes per connection plus O(in + out) (issue 3).
        for name, method in methods.items():
            if name.startswith("torchwire"):
                assert method["param_bytes"] <= 16 * nnz + 4 * 3 * (n + 1)
        for method in methods.values():
            assert method["bytes_per_connection"] == method["param_bytes"] / nnz
            assert method["peak_bytes"] >= 4 * 8 * n  # at least the gradient of the input


def test_tables(run: dict[str, Any]) -> None:
    env = run["json"]["environment"]
    header = run["stdout"].splitlines()[0]
    for word in (torch.__version__, torchwire.__version__, env["device_name"], "float32"):
        assert word in header
    for case in run["json"]["cases"]:
        label = case["methods"]["torchwire"]["label"]
        chosen = case["auto_backend"]
        choice = (
            chosen["fwd"] if chosen["fwd"] == chosen["fwd_bwd"] else " / ".join(chosen.values())
        )
        assert label == f"torchwire (auto -> {choice})"
        for text in (run["stdout"], run["markdown"]):
            assert f"{case['layout']}: " in text
            assert label in text
    for case in run["json"]["sparse"]:
        label = case["methods"]["torchwire"]["label"]
        assert label.startswith("torchwire (auto -> ")
        title = f"sparse {FEATURES} -> {FEATURES}, density {case['density'] * 100:g}% ("
        for text in (run["stdout"], run["markdown"]):
            assert title in text
            assert label in text
    assert "summary (fwd+bwd):" in run["stdout"]
    assert "sparse summary (" in run["stdout"]
    assert "| method | fwd ms | fwd x limit | fwd+bwd ms |" in run["markdown"]
    assert "| method | fwd ms | fwd x masked_weight | fwd+bwd ms |" in run["markdown"]
    assert "## Sparse summary (" in run["markdown"]
    for case in run["json"]["branches"]:
        title = f"branches {case['problem']}: {case['description']}, batch 8"
        for text in (run["stdout"], run["markdown"]):
            assert title in text
            assert case["methods"]["torchwire"]["label"] in text
    assert "branches summary (" in run["stdout"]
    assert "| method | fwd ms | fwd x branches | fwd+bwd ms |" in run["markdown"]
    assert "overhead (per call at tiny shapes" in run["stdout"]
    assert "## Overhead (per call at tiny shapes" in run["markdown"]
    for case in torchwire._overhead.CASES:
        assert case.description in run["stdout"]
    overhead, *progress = run["stderr"].splitlines()
    assert overhead == f"overhead: {len(torchwire._overhead.CASES)} cases"
    assert [line.split(" ")[0] for line in progress] == [f"[{i}/7]" for i in range(1, 8)]
    assert progress[0].startswith("[1/7] 2x2->2x3 batch=8: ")
    assert progress[2].startswith(f"[3/7] sparse {FEATURES} 100% batch=8: torchwire (auto -> ")
    assert progress[4].startswith(
        "[5/7] branches wide-conv-heads batch=8: torchwire (fuse_parallel -> Conv2d)"
    )
    assert progress[6].startswith("[7/7] merge conv3x3-conv5x5 batch=8: torchwire (merge -> ")
    assert "merge summary (" in run["stdout"]


def test_sparse_summary_reports_auto_choice(run: dict[str, Any]) -> None:
    lines = run["stdout"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sparse summary ("))
    header, _, *rows = lines[start + 1 : start + 3 + len(DENSITIES)]
    assert header.split()[:6] == ["features", "density", "batch", "auto", "backend", "fastest"]
    assert lines[start + 3 + len(DENSITIES)] == ""  # the table ends there
    for row, case in zip(rows, run["json"]["sparse"], strict=True):
        features, density, batch, auto, fastest, _, _, speedup, _ = row.split()
        assert (features, density, batch) == (str(FEATURES), f"{case['density'] * 100:g}%", "8")
        assert auto == case["auto_backend"]["fwd_bwd"]
        assert fastest == case["fastest_backend"]["fwd_bwd"]
        assert speedup == f"{case['speedup_vs_masked_weight']['fwd_bwd']:.2f}x"


def test_branches_summary_reports_speedups(run: dict[str, Any]) -> None:
    lines = run["stdout"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("branches summary ("))
    header, _, *rows = lines[start + 1 : start + 3 + len(PROBLEMS)]
    assert header.split()[:4] == ["problem", "batch", "fused", "layer"]
    assert lines[start + 3 + len(PROBLEMS)] == ""  # the table ends there
    for row, case in zip(rows, run["json"]["branches"], strict=True):
        problem, batch, layer, fwd, fwd_bwd, vs_manual = row.split()
        assert (problem, batch, layer) == (case["problem"], "8", case["auto_backend"]["fwd"])
        assert [fwd, fwd_bwd] == [f"{case['speedup_vs_branches'][m]:.2f}x" for m in bench.MODES]
        methods = case["methods"]
        ratio = (
            methods["torchwire"]["fwd_bwd"]["median_ms"]
            / (methods["manual_split"]["fwd_bwd"]["median_ms"])
        )
        assert vs_manual == f"{ratio:.2f}"


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
        assert len(out["stderr"].splitlines()) == 1
    assert len(out["stderr"].splitlines()) == 1


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


def test_parse_layout() -> None:
    layout = bench.parse_layout("4x128 + 8x64 + 16x32")
    assert layout.name == "4x128+8x64+16x32"
    assert layout.in_sizes == layout.out_sizes == (128,) * 4 + (64,) * 8 + (32,) * 16
    alternating = bench.parse_layout("16x(48,16)")
    assert alternating.in_sizes == (48, 16) * 16
    assert not alternating.equal
    tiny = bench.parse_layout("2,2->2x3")
    assert (tiny.in_sizes, tiny.out_sizes, tiny.equal) == ((2, 2), (3, 3), True)
    assert (tiny.multiply_adds, tiny.limit_features) == (12, 3)
    for spec in ("", "x4", "2x", "4->", "2x(3,)", "4->4->4", "2x4->3x4"):
        with pytest.raises(ValueError, match="invalid layout"):
            bench.parse_layout(spec)


def test_grids() -> None:
    quick = bench.make_config(quick=True, device=torch.device("cpu"))
    assert quick.sections == ("overhead", "block", "sparse", "branches", "merge")
    assert quick.problems == ("vae-conv-heads", "linear-heads")
    assert quick.batches == (64,)
    assert [layout.name for layout in quick.layouts] == ["2x2->2x3", "16x64", "256x8", "8x64+16x32"]
    assert (quick.features, quick.densities) == ((1024,), (0.05, 0.01))
    assert quick.repeats == 5
    full = bench.make_config(device=torch.device("cpu"))
    assert full.sections == ("overhead", "block", "sparse", "branches", "merge")
    assert full.problems == tuple(p.name for p in bench.BRANCH_PROBLEMS)
    assert len(full.problems) == 4
    assert full.batches == (64, 1024)
    assert len(full.layouts) == 9
    assert full.features == (1024, 4096)
    assert full.densities == (0.5, 0.2, 0.1, 0.05, 0.01, 0.001)
    assert full.repeats > quick.repeats
    assert bench.make_config(sections=["sparse"]).sections == ("sparse",)
    with pytest.raises(ValueError, match="unknown sections"):
        bench.make_config(sections=["dense"])
    with pytest.raises(ValueError, match="unknown branch problems"):
        bench.make_config(problems=["heads"])


def test_peak_bytes_counts_live_tensors_created_in_step() -> None:
    existing = torch.ones(100_000)

    def step() -> None:
        a = torch.ones(1000)  # 4000 B
        b = a.view(10, 100)  # a view: nothing new
        a.add_(1)  # in place: nothing new
        c = a * 2  # 4000 B: peak 8000 B
        existing.view(-1)[:10].mul_(1)  # views and in-place ops on older tensors: nothing
        del a, b, c  # freed
        torch.ones(500)  # 2000 B
        d = torch.ones(1500)  # 6000 B
        del d

    assert bench.peak_bytes(step, torch.device("cpu")) == 8000


def test_peak_bytes_counts_sparse_tensors_by_their_parts() -> None:
    indices, values = torch.tensor([[0, 1, 2], [1, 2, 0]]), torch.ones(3)

    def step() -> None:
        # Built on existing indices and values: nothing new.
        weight = torch.sparse_coo_tensor(indices, values, (3, 3), check_invariants=False)
        weight * 2  # new int64 indices (48 B) and values (12 B)

    assert bench.peak_bytes(step, torch.device("cpu")) == 60


def test_peak_bytes_of_linear_training_step() -> None:
    linear = torch.nn.Linear(32, 16)
    x = torch.randn(8, 32, requires_grad=True)

    def step() -> None:
        torch.autograd.grad(linear(x).sum(), (x, *linear.parameters()))

    # The output dies once summed (neither backward saves it); the peak is the gradients of x,
    # weight and bias, plus two scalars (the sum and its gradient).
    expected = 4 * (8 * 32 + 16 * 32 + 16) + 2 * 4
    assert bench.peak_bytes(step, torch.device("cpu")) == expected
