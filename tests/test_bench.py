"""Tests of ``torchwire bench``'s measurements and reports, on one small run of every section
(no timing checks: only what the numbers must satisfy whatever they are)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import torchwire
from torchwire import bench
from torchwire.bench import overhead
from torchwire.cli import main

torch.set_num_threads(1)

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results"
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
    assert env["sections"] == ["overhead", "block", "sparse", "branches", "merge", "hierarchy"]
    rows = run["json"]["overhead"]
    assert [row["case"] for row in rows] == [c.name for c in overhead.CASES]
    for row in rows:
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


def _keys(data: dict[str, Any]) -> dict[str, Any]:
    """The key structure of a bench JSON: top level, environment, and per section the keys
    of a case, of a method and of a method's timing."""
    shape: dict[str, Any] = {"top": set(data), "environment": set(data["environment"])}
    for key, cases in data.items():
        if key == "environment" or not cases:
            continue
        shape[key] = {"case": set(cases[0])}
        if "methods" in cases[0]:
            methods = cases[0]["methods"]
            shape[key]["method"] = set(methods["torchwire"])
            shape[key]["timing"] = set(methods["torchwire"]["fwd"])
            alternative = next(name for name in methods if not name.startswith("torchwire"))
            shape[key]["alternative"] = set(methods[alternative])
    return shape


BENCH_RUNS = [p for p in sorted(RESULTS.glob("*.json")) if not p.name.endswith("-costs.json")]


@pytest.mark.parametrize("path", BENCH_RUNS, ids=lambda path: path.name)
def test_json_keys_match_the_recorded_results(run: dict[str, Any], path: Path) -> None:
    """Whatever reads the recorded results reads a new run: the same keys everywhere (runs
    recorded before a section or an environment entry existed have fewer; the CUDA runs also
    lack a case's ``reference``)."""
    recorded, ours = _keys(json.loads(path.read_text())), _keys(run["json"])
    assert recorded["top"] <= ours["top"]
    assert recorded["environment"] <= ours["environment"]
    older = path.name.startswith("cuda-")
    for key, shape in recorded.items():
        if key not in ("top", "environment"):
            for level, names in shape.items():
                assert names <= ours[key][level] if older else names == ours[key][level], key


def test_json_has_every_section_key(run: dict[str, Any]) -> None:
    keys = ["environment", "overhead", "cases", "sparse", "branches", "merge", "hierarchy"]
    assert list(run["json"]) == keys


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
        assert case["heads"] == problem.count
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


def test_text_shows_overviews_and_markdown_every_table(run: dict[str, Any]) -> None:
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
        assert f"## {case['layout']}: " in run["markdown"]
        assert label in run["markdown"]
        assert f"{case['layout']}: " not in run["stdout"]  # per-case tables need --verbose
    for case in run["json"]["sparse"]:
        label = case["methods"]["torchwire"]["label"]
        assert label.startswith("torchwire (auto -> ")
        title = f"sparse {FEATURES} -> {FEATURES}, density {case['density'] * 100:g}% ("
        assert f"## {title[:1].upper()}{title[1:]}" in run["markdown"]
        assert label in run["markdown"]
    for case in run["json"]["branches"]:
        title = f"ranches {case['problem']}: {case['description']}, batch 8"
        assert title in run["markdown"]
        assert case["methods"]["torchwire"]["label"] in run["markdown"]
    for title in ("block summary (fwd+bwd)", "sparse summary (", "branches summary (", "merge"):
        assert title in run["stdout"]
        assert f"## {title[:1].upper()}{title[1:]}" in run["markdown"]
    assert "overhead (per call at tiny shapes" in run["stdout"]
    assert "## Overhead (per call at tiny shapes" in run["markdown"]
    for case in overhead.CASES:
        assert case.description in run["stdout"]
    assert "| method | fwd ms | fwd x limit | fwd+bwd ms |" in run["markdown"]
    assert "| method | fwd ms | fwd x masked_weight | fwd+bwd ms |" in run["markdown"]
    assert "| method | fwd ms | fwd x branches | fwd+bwd ms |" in run["markdown"]


def test_progress_lines(run: dict[str, Any]) -> None:
    progress = run["stderr"].splitlines()
    count = len(overhead.CASES) + 7
    assert [line.split(" ")[0] for line in progress] == [
        f"[{i}/{count}]" for i in range(1, count + 1)
    ]
    assert progress[0].startswith(f"[1/{count}] overhead block_equal: ")
    rest = [line.split(" ", 1)[1] for line in progress[len(overhead.CASES) :]]
    assert rest[0].startswith("block 2x2->2x3 batch=8: ")
    assert rest[2].startswith(f"sparse {FEATURES} 100% batch=8: torchwire (auto -> ")
    assert rest[4].startswith(
        "branches wide-conv-heads batch=8: torchwire (fuse_parallel -> Conv2d)"
    )
    assert rest[6].startswith("merge conv3x3-conv5x5 batch=8: torchwire (merge -> ")


def test_summary_ends_every_report(run: dict[str, Any]) -> None:
    lines = run["stdout"].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("summary: torchwire"))
    summary = lines[start:]
    assert len(summary) <= 35  # one screen
    kinds = ["per-call overhead", "grouped layers", "sparse layers", "same-input heads"]
    kinds.append("merged chains")
    assert [line.split(":")[0] for line in summary if line.split(":")[0] in kinds] == kinds
    assert "grouped layers: BlockLinear -> " in run["stdout"]
    assert "merged chains: merge -> Conv2d 7x7; 1 case, fwd" in run["stdout"]
    best = any("not the best choice" in line for line in summary)
    assert best != any("no alternative was" in line for line in summary)
    markdown = run["markdown"].split("## Summary\n\n```text\n")[1]
    assert markdown.split("```")[0].splitlines() == summary


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
    cpu = torch.device("cpu")
    quick = bench.make_config(quick=True, device=cpu)
    assert bench.make_config(grid="quick", device=cpu) == quick
    assert quick.sections == ("overhead", "block", "sparse", "branches", "merge", "hierarchy")
    assert quick.problems == ("vae-conv-heads", "linear-heads")
    assert quick.batches == (64,)
    assert [layout.name for layout in quick.layouts] == ["2x2->2x3", "16x64", "256x8", "8x64+16x32"]
    assert (quick.features, quick.densities) == ((1024,), (0.05, 0.01))
    assert (quick.repeats, quick.quick) == (5, True)
    full_problems = bench.PROBLEMS["full"]
    default = bench.make_config(device=cpu)
    assert (default.grid, default.quick) == ("default", False)
    assert default.sections == quick.sections
    assert default.batches == (64,)
    equal = [layout for layout in default.layouts if layout.equal]
    assert 0 < len(equal) < len(default.layouts)  # equal groups and uneven ones
    assert default.features == (1024,)
    assert min(default.densities) <= 0.01  # a low density and a high one
    assert max(default.densities) >= 0.5
    assert 0 < len(default.problems) < len(full_problems)
    full = bench.make_config(grid="full", device=cpu)
    assert full.sections == quick.sections
    assert full.problems == tuple(p.name for p in bench.BRANCH_PROBLEMS)
    assert len(full.problems) == 4
    assert full.batches == (64, 1024)
    assert len(full.layouts) == 9
    assert set(default.layouts) < set(full.layouts)
    assert full.features == (1024, 4096)
    assert full.densities == (0.5, 0.2, 0.1, 0.05, 0.01, 0.001)
    assert set(default.densities) < set(full.densities)
    assert full.repeats == default.repeats > quick.repeats
    assert bench.make_config(sections=["sparse", "block"]).sections == ("block", "sparse")
    with pytest.raises(ValueError, match="unknown sections"):
        bench.make_config(sections=["dense"])
    with pytest.raises(ValueError, match="unknown branch problems"):
        bench.make_config(problems=["heads"])
    with pytest.raises(ValueError, match="unknown grid"):
        bench.make_config(grid="huge")


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


def test_a_timed_training_step_stores_gradients_as_training_a_hidden_layer_does() -> None:
    # Parameters' gradients go through AccumulateGrad (as after optimizer.zero_grad()), not
    # torch.autograd.grad, which skips it: a gradient that arrives in another layout than
    # its parameter's pays a strided copy there. The input's gradient is computed and handed
    # on, as to the layers before, and stored nowhere.
    from torchwire.bench.methods import _steps

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torchwire.BlockLinear(8, 8, 2)
            self.input_grads: list[torch.Size] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.requires_grad:
                x.register_hook(lambda g: self.input_grads.append(g.shape))
            return self.layer(x)

    probe = Probe()
    x = torch.randn(4, 8)
    x_grad = x.clone().requires_grad_()
    for p in probe.parameters():
        p.grad = torch.full_like(p, float("nan"))  # left over from an earlier step
    _steps(probe, x, x_grad)["fwd_bwd"]()
    for p in probe.parameters():
        assert p.grad is not None
        assert p.grad.shape == p.shape
        assert not p.grad.isnan().any()  # set afresh, not added to the earlier step's
    assert probe.input_grads == [x.shape]
    assert x_grad.grad is None
