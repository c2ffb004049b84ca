"""The bench's section interface and its one-screen summary, on made-up results (nothing is
timed here: the numbers are chosen so that the summary's verdicts are known)."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import torchwire as tw
from torchwire import bench
from torchwire.bench import hierarchy, overhead, suite
from torchwire.bench.methods import MODES, MethodResult
from torchwire.bench.section import Summary, Table
from torchwire.bench.timing import Timing
from torchwire.hierarchy import hierarchy_wirings

CPU = torch.device("cpu")


def _method(name: str, ms: float | dict[str, float], param_bytes: int = 1000) -> MethodResult:
    times = ms if isinstance(ms, dict) else dict.fromkeys(MODES, ms)
    timings = {mode: Timing(4, [times[mode]] * 3) for mode in MODES}
    return MethodResult(name, timings, param_bytes, 2 * param_bytes)


def _case(section: str, torchwire: float | dict[str, float], other: float, **kw: Any) -> Any:
    """A made-up case of ``section``: torchwire takes ``torchwire`` ms; each alternative and
    reference ``other`` ms and twice torchwire's bytes (the last alternative 10% slower)."""
    batch = kw.pop("batch", 64)
    if section == "block":
        result: Any = bench.CaseResult
        fields: dict[str, Any] = {"layout": bench.parse_layout(kw.pop("layout", "16x64"))}
        names, backends = [*bench.ALTERNATIVES, "limit"], {"fwd": "bmm", "fwd_bwd": "bmm_t"}
    elif section == "sparse":
        result, density = bench.SparseCaseResult, kw.pop("density", 0.5)
        fields = {"features": 1024, "density": density, "nnz": round(density * 1024**2)}
        names, backends = list(bench.SPARSE_ALTERNATIVES), {"fwd": "csr", "fwd_bwd": "dense"}
    elif section == "branches":
        result, fields = bench.BranchCaseResult, {"problem": bench.BRANCH_PROBLEMS[0]}
        names, backends = list(bench.BRANCH_ALTERNATIVES), dict.fromkeys(MODES, "Conv2d")
    elif section == "merge":
        result, fields = bench.MergeCaseResult, {"problem": bench.MERGE_PROBLEMS[0]}
        names, backends = ["sequential"], dict.fromkeys(MODES, "Conv2d 7x7")
    else:
        base = tw.Wiring.from_mapping({"a": ["g"]})
        problem = hierarchy.HierarchyProblem("toy", "one gene, one pathway", base, (("a", "b"),))
        result, fields = hierarchy.HierarchyCaseResult, {"problem": problem}
        names, backends = ["masked_dense"], dict.fromkeys(MODES, "2 SparseLinear")
    methods = {"torchwire": _method("torchwire", torchwire)}
    for name in backends.values():
        if section in ("block", "sparse"):
            methods[f"torchwire[{name}]"] = _method(f"torchwire[{name}]", torchwire)
    for index, name in enumerate(names):
        slower = 1.1 if index == len(names) - 1 and len(names) > 1 else 1.0
        methods[name] = _method(name, other * slower, param_bytes=2000)
    return result(
        batch=batch, auto_backend=backends, methods=methods, skipped={}, seconds=1.0, **fields
    )


def _overhead(case: overhead.OverheadCase, ratio: float) -> overhead.OverheadResult:
    ops = {"fwd": 2, "forward": 5, "backward": 12}
    us = dict.fromkeys(MODES, 10.0)
    return overhead.OverheadResult(case, {m: 10.0 * ratio for m in MODES}, us, ops, ops)


def _results(section: str, count: int = 2) -> list[Any]:
    if section == "overhead":
        return [_overhead(case, 1.0) for case in overhead.CASES]
    return [_case(section, 1.0, 2.0, batch=8 * (i + 1)) for i in range(count)]


def test_registry_names_every_section_once() -> None:
    assert tuple(bench.REGISTRY) == bench.SECTIONS
    assert bench.SECTIONS == ("overhead", "block", "sparse", "branches", "merge", "hierarchy")
    for name, section in bench.REGISTRY.items():
        assert section.name == name
    keys = [section.key for section in bench.REGISTRY.values()]
    assert keys == ["overhead", "cases", "sparse", "branches", "merge", "hierarchy"]
    kinds = [section.kind for section in bench.REGISTRY.values()]
    assert len(set(kinds)) == len(kinds)
    empty = bench.to_dict(bench.BenchResult({"device": "cpu"}))
    assert empty == {"environment": {"device": "cpu"}, **{key: [] for key in keys}}


@pytest.mark.parametrize("grid", bench.GRIDS)
def test_every_section_has_cases_in_every_grid(grid: str) -> None:
    config = bench.make_config(grid=grid, device=CPU)
    counts = {name: len(s.cases(config)) for name, s in bench.REGISTRY.items()}
    assert counts.pop("hierarchy") == (grid == "full")  # Reactome's scale: --full only
    assert all(counts.values()), counts
    assert counts["overhead"] == len(overhead.CASES)
    block = len(config.batches) * len(config.layouts)
    assert counts["block"] == block
    assert counts["sparse"] == len(config.batches) * len(config.features) * len(config.densities)
    assert counts["branches"] == len(config.batches) * len(config.problems)
    assert counts["merge"] == len(config.batches) * len(bench.MERGE_PROBLEMS)


@pytest.mark.parametrize("name", bench.SECTIONS)
def test_every_section_reports_its_results(name: str) -> None:
    section, results = bench.REGISTRY[name], _results(name)
    summary = section.summary(results)
    assert isinstance(summary, Summary)
    assert summary.kind == section.kind
    assert summary.headline
    assert summary.lines
    assert summary.not_best == []  # torchwire is 2x faster than everything (overhead: 1.0x)
    overview = section.tables(results, details=False)
    detailed = section.tables(results, details=True)
    assert all(isinstance(table, Table) for table in detailed)
    assert overview[-1] == detailed[-1]
    assert len(overview[-1].rows) == len(results)
    assert all(len(row) == len(overview[-1].headers) for row in overview[-1].rows)
    if name != "overhead":  # one table per case, then the overview
        assert len(detailed) == len(results) + 1
    for result in results:
        json.dumps(section.to_dict(result))
        assert "\n" not in section.progress(result)
    assert all(isinstance(note, str) and note for note in section.notes(results))
    config = bench.make_config(device=CPU)
    env = section.environment(config)
    json.dumps(env)
    assert set(env) <= set(suite._environment(config))


@pytest.mark.parametrize("name", ["block", "sparse", "branches"])
def test_summary_compares_with_the_fastest_alternative(name: str) -> None:
    section = bench.REGISTRY[name]
    summary = section.summary([_case(name, 1.0, 2.0), _case(name, 1.0, 4.0)])
    runs = {"block": "BlockLinear -> bmm_t", "sparse": "SparseLinear -> dense"}
    runs["branches"] = "fuse_parallel -> Conv2d"
    assert summary.headline == f"{runs[name]}; 2 cases, fwd+bwd"
    first = {"block": "modulelist", "sparse": "masked_weight", "branches": "branches"}[name]
    assert summary.lines[0] == (f"vs {first}: speed 2.00x-4.00x, params 2.00x, peak 2.00x")


def test_branches_summary_also_compares_with_the_heads_one_by_one() -> None:
    case = _case("branches", 1.0, 2.0)
    case.methods["manual_split"] = _method("manual_split", 1.0)  # as fast as torchwire
    summary = bench.REGISTRY["branches"].summary([case])
    assert summary.lines == [
        "vs manual_split: speed 1.00x, params 1.00x, peak 1.00x",
        "vs branches (the heads one by one): speed 2.00x",
    ]


def test_not_the_best_choice_names_the_alternative_and_what_to_use() -> None:
    losing = _case("sparse", 1.69, 1.3, density=0.5)
    winning = _case("sparse", 1.0, 5.0, density=0.01)
    summary = bench.REGISTRY["sparse"].summary([losing, winning])
    assert summary.lines == ["vs masked_weight: speed 0.77x-5.00x, params 2.00x, peak 2.00x"]
    assert summary.not_best == [
        "sparse layers, 1024 50% batch=64: masked_weight is 1.30x faster: use a dense"
        " nn.Linear (torchwire: 2.00x fewer bytes)"
    ]
    result = bench.BenchResult({"device": "cpu", "device_name": "CPU", "dtype": "float32"})
    result.environment["threads"] = 1
    result.results["sparse"] = [losing, winning]
    lines = bench.summary_lines(result)
    assert lines[-2:] == [
        "where torchwire is not the best choice here (1.10x or more):",
        f"  {summary.not_best[0]}",
    ]


def test_alternatives_within_noise_are_not_listed() -> None:
    within = _case("block", 1.05, 1.0)  # modulelist 5% faster: below NOT_BEST
    assert bench.NOT_BEST > 1.05
    assert bench.REGISTRY["block"].summary([within]).not_best == []
    result = bench.BenchResult({"device": "cpu", "device_name": "CPU", "dtype": "float32"})
    result.environment["threads"] = 2
    result.results["block"] = [within]
    lines = bench.summary_lines(result)
    assert lines[0] == (
        "summary: torchwire against what users write today, on CPU (cpu, float32, 2 threads)"
    )
    assert lines[-1] == "no alternative was 1.10x faster than torchwire here."


def test_merge_summary_reports_the_forward() -> None:
    # Merged: 10x faster without autograd, slower with it (merging is for inference).
    case = _case("merge", {"fwd": 1.0, "fwd_bwd": 30.0}, 10.0)
    summary = bench.REGISTRY["merge"].summary([case])
    assert summary.headline == "merge -> Conv2d 7x7; 1 case, fwd"
    assert summary.lines == ["vs sequential: speed 10.0x, params 2.00x, peak 2.00x"]
    assert summary.not_best == []


def test_overhead_summary_says_where_a_dense_layer_is_cheaper() -> None:
    results = [_overhead(case, 1.5) for case in overhead.LAYERS]
    results += [_overhead(case, 1.02) for case in overhead.CONTAINERS]
    summary = bench.REGISTRY["overhead"].summary(results)
    assert summary.lines == [
        "layers: 1.50x the time of nn.Linear(4, 6) (no-grad, batch 1), 1.50x (fwd+bwd, batch 64)",
        "containers: 1.02x the time of a hand-written module (no-grad, batch 1), 1.02x"
        " (fwd+bwd, batch 64)",
    ]
    (line,) = summary.not_best
    assert line.startswith(f"per-call overhead, {overhead.LAYERS[0].description}: 1.50x")
    assert line.endswith("for layers this small, use nn.Linear")


def test_not_best_lines_are_few_per_kind() -> None:
    losing = [_case("sparse", 2.0, 1.0, density=d / 100) for d in range(1, 11)]
    summary = bench.REGISTRY["sparse"].summary(losing)
    assert len(summary.not_best) == 2  # the worst case, then the others in one line
    assert summary.not_best[0].startswith("sparse layers, 1024 1% batch=64: masked_weight is")
    assert summary.not_best[1].startswith(
        "sparse layers, 9 more: 1024 2% batch=64 (masked_weight 2.00x), "
    )
    assert summary.not_best[1].endswith(", ...")
    assert len(summary.not_best[1]) <= 110


def test_summary_of_a_full_grid_fits_one_screen() -> None:
    """As many cases as --full runs, torchwire losing in half of them: still one screen."""
    result = bench.BenchResult({"device": "cpu", "device_name": "CPU", "dtype": "float32"})
    result.environment["threads"] = 1
    result.results["overhead"] = [_overhead(case, 1.4) for case in overhead.CASES]
    counts = {"block": 18, "sparse": 24, "branches": 8, "merge": 2, "hierarchy": 1}
    for name, count in counts.items():
        result.results[name] = [
            _case(name, 1.0, 2.0 if i % 2 else 0.5, batch=i + 1) for i in range(count)
        ]
    lines = bench.summary_lines(result)
    assert len(lines) <= 30
    assert max(map(len, lines)) <= 130
    for section in bench.REGISTRY.values():
        assert sum(line.startswith(f"{section.kind}: ") for line in lines) == 1


@dataclass
class _Toy:
    value: int


class _ToySection:
    """A section of made-up numbers: what a new section has to write."""

    name, key, kind = "toy", "toy", "toy problems"

    def cases(self, config: bench.BenchConfig) -> list[int]:
        return list(config.batches)

    def run(self, case: int, config: bench.BenchConfig) -> _Toy:
        return _Toy(case * 10)

    def progress(self, result: _Toy) -> str:
        return f"toy {result.value}"

    def environment(self, config: bench.BenchConfig) -> dict[str, Any]:
        return {"toy": "made-up numbers"}

    def notes(self, results: Any) -> list[str]:
        return ["toy: numbers made up for a test."]

    def tables(self, results: Any, *, details: bool) -> list[Table]:
        return [Table("toy table", ["value"], [[str(r.value)] for r in results])]

    def summary(self, results: Any) -> Summary:
        return Summary(self.kind, "nothing", [f"{len(results)} values"], ["toys: never"])

    def to_dict(self, result: _Toy) -> dict[str, Any]:
        return {"value": result.value}


def test_a_registered_section_runs_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a section is its module and one entry in the registry: nothing else changes."""
    monkeypatch.setitem(suite.REGISTRY, "toy", _ToySection())
    config = bench.make_config(sections=["toy"], batches=[1, 2], device=CPU)
    assert config.sections == ("toy",)
    result = bench.run(config)
    assert bench.to_dict(result)["toy"] == [{"value": 10}, {"value": 20}]
    assert bench.to_dict(result)["environment"]["toy"] == "made-up numbers"
    text = bench.format_text(result)
    assert "toy: numbers made up for a test." in text
    assert "toy table:\nvalue\n-----\n10   \n20   \n" in text
    assert "toy problems: nothing\n  2 values\n" in text
    assert "  toys: never\n" in text
    assert "## Toy table" in bench.format_markdown(result)


def test_the_hierarchy_section_runs_in_the_full_grid_or_alone() -> None:
    section = hierarchy.SECTION
    assert section.cases(bench.make_config(grid="default")) == []
    assert section.cases(bench.make_config(grid="quick")) == []
    for config in (bench.make_config(grid="full"), bench.make_config(sections=["hierarchy"])):
        ((problem, batch),) = section.cases(config)
        assert (problem.name, batch) == ("reactome-like", 64)


def test_the_generated_hierarchy_has_reactomes_shape() -> None:
    base, pairs = hierarchy.reactome_like()
    assert (base.in_features, base.out_features, len(pairs)) == (11_000, 2_200, 2_700)
    assert len(set(pairs)) == len(pairs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every generated node is reached: nothing to report
        wirings = hierarchy_wirings(base, pairs)
    assert len(wirings) == 9
    assert wirings[-1].out_features == 28
    assert 50_000 < base.nnz < 100_000  # about 20 genes per lowest pathway, popular genes in many
