"""Export: every contract row through ``torch.export`` and through ONNX into onnxruntime.

The rows of the generic module contract (``tests/test_module_contract.py``) and a few models
worth their own row are exported together, as the modules of one model (an ONNX export takes
seconds, mostly per model), and each row's outputs are compared with its eager outputs; a row
whose combined export fails is exported alone, so the failure names it.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import torchwire as tw
from tests.test_module_contract import CASES

Inputs = tuple[Any, ...]
TOLERANCE = 1e-5


def _onnx() -> tuple[Any, Any]:
    """The ``onnx`` and ``onnxruntime`` modules (the ONNX tests skip without them; the
    exporter also needs ``onnxscript``)."""
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")


def _features(size: int) -> Callable[[nn.Module, tuple[int, ...], torch.dtype, str], Inputs]:
    return lambda m, batch, dtype, device: (torch.randn(*batch, size, dtype=dtype, device=device),)


def _pruned_model(**factory: Any) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU())
    model.append(nn.Linear(12, 4))
    with torch.no_grad():  # hidden units 0, 5 and 7 read no input: dead after sparsifying
        model[0].weight[[0, 5, 7]] = 0
    pruned = tw.prune.dead_neurons(tw.sparsify(model.to(**factory), density=0.3))
    assert pruned[0].out_features < 24, pruned  # the point: units were removed
    return pruned


Extra = tuple[
    str,
    Callable[..., nn.Module],
    Callable[[nn.Module, tuple[int, ...], torch.dtype, str], Inputs],
    tuple[int, ...],
]


def _extra(
    id: str, make: Callable[..., nn.Module], size: int, batch: tuple[int, ...] = (5,)
) -> Extra:
    return id, make, _features(size), batch


# Rows beyond the contract's: auto's ONNX choices (the gathered graph of a sparse layer,
# the dense one of a denser layer), N-D inputs, a block-diagonal wiring under auto, and
# a sparsified then pruned model.
EXTRA = [
    _extra(
        "SparseLinear-sparse-auto",  # 0.5%: exported as the gathered graph
        lambda **f: tw.SparseLinear(tw.Wiring.random(400, 300, density=0.005, seed=1), **f),
        400,
    ),
    _extra(
        "SparseLinear-dense-auto-3d",
        lambda **f: tw.SparseLinear(tw.Wiring.random(40, 30, density=0.5, seed=2), **f),
        40,
        (2, 3),
    ),
    _extra(
        "SparseLinear-csr-3d-nobias",
        lambda **f: tw.SparseLinear(
            tw.Wiring.random(12, 6, density=0.4, seed=0), bias=False, backend="csr", **f
        ),
        12,
        (2, 3),
    ),
    _extra(
        "SparseLinear-block-auto",
        lambda **f: tw.SparseLinear(tw.Wiring.block_diagonal([4, 4, 8], [2, 6, 2]), **f),
        16,
    ),
    _extra("sparsify-dead_neurons", _pruned_model, 16),
]


class Row:
    """One exported module: its id, the module (float32, eval) and its inputs."""

    def __init__(self, id: str, module: nn.Module, inputs: Inputs) -> None:
        self.id, self.module, self.inputs = id, module, inputs


def _rows() -> list[Row]:
    torch.manual_seed(0)
    rows = []
    for case in CASES:
        m = case.make(dtype=torch.float32).eval()
        rows.append(Row(case.id, m, case.make_inputs(m, (5,), torch.float32, "cpu")))
    for id, make, make_inputs, batch in EXTRA:
        m = make(dtype=torch.float32).eval()
        rows.append(Row(id, m, make_inputs(m, batch, torch.float32, "cpu")))
    return rows


ROWS = _rows()
IDS = [row.id for row in ROWS]


class _Together(nn.Module):
    """Several rows as one model: ``forward(inputs_0, inputs_1, ...)`` returns every row's
    outputs (the ``i``-th argument is the tuple of row ``i``'s inputs)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.rows = nn.ModuleList(modules)

    def forward(self, *inputs: Inputs) -> tuple[Any, ...]:
        return tuple(m(*x) for m, x in zip(self.rows, inputs, strict=True))


def _leaves(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _leaves(item)]


def _eager(rows: list[Row]) -> list[list[torch.Tensor]]:
    with torch.no_grad():
        return [_leaves(row.module(*row.inputs)) for row in rows]


def _torch_export(rows: list[Row]) -> list[list[torch.Tensor]]:
    model = _Together([row.module for row in rows])
    program = torch.export.export(model, tuple(row.inputs for row in rows))
    with torch.no_grad():
        outputs = program.module()(*(row.inputs for row in rows))
    return [_leaves(out) for out in outputs]


def _onnx_export(rows: list[Row], path: Path) -> list[list[torch.Tensor]]:
    model = _Together([row.module for row in rows])
    inputs = tuple(row.inputs for row in rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(model, inputs, dynamo=True, verbose=False)
    assert program is not None
    program.save(str(path))
    onnx, _ = _onnx()
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    custom = {node.domain for node in proto.graph.node} - {"", "ai.onnx"}
    assert not custom, f"non-standard ONNX ops of domains {custom}"
    outputs = _run(path, _leaves(inputs))
    counts = [len(out) for out in _eager(rows)]
    grouped, start = [], 0
    for count in counts:
        grouped.append(outputs[start : start + count])
        start += count
    return grouped


def _run(path: Path, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    _, ort = _onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert len(names) == len(inputs)
    feed = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
    return [torch.from_numpy(y) for y in session.run(None, feed)]


def _by_row(
    export: Callable[[list[Row]], list[list[torch.Tensor]]],
) -> dict[str, list[torch.Tensor] | BaseException]:
    """Every row's exported outputs, exported together; where that fails, each row alone
    (its error, where it fails)."""
    try:
        return dict(zip(IDS, export(ROWS), strict=True))
    except Exception:
        pass
    found: dict[str, list[torch.Tensor] | BaseException] = {}
    for row in ROWS:
        try:
            found[row.id] = export([row])[0]
        except Exception as error:  # reported by the row's test
            found[row.id] = error
    return found


@pytest.fixture(scope="module")
def eager() -> dict[str, list[torch.Tensor]]:
    return dict(zip(IDS, _eager(ROWS), strict=True))


@pytest.fixture(scope="module")
def torch_exported() -> dict[str, list[torch.Tensor] | BaseException]:
    return _by_row(_torch_export)


@pytest.fixture(scope="module")
def onnx_exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, list[torch.Tensor] | BaseException]:
    _onnx()
    folder = tmp_path_factory.mktemp("onnx")
    count = iter(range(len(ROWS) + 1))
    return _by_row(lambda rows: _onnx_export(rows, folder / f"model{next(count)}.onnx"))


def _check(
    id: str, found: list[torch.Tensor] | BaseException, expected: list[torch.Tensor]
) -> None:
    if isinstance(found, BaseException):
        raise AssertionError(f"{id} does not export: {found}") from found
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE)


@pytest.mark.parametrize("id", IDS)
def test_torch_export_matches_eager(
    id: str, torch_exported: dict[str, Any], eager: dict[str, list[torch.Tensor]]
) -> None:
    _check(id, torch_exported[id], eager[id])


@pytest.mark.parametrize("id", IDS)
def test_onnx_export_runs_in_onnxruntime_like_eager(
    id: str, onnx_exported: dict[str, Any], eager: dict[str, list[torch.Tensor]]
) -> None:
    _check(id, onnx_exported[id], eager[id])


def _export_alone(module: nn.Module, x: torch.Tensor, path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
    assert program is not None
    program.save(str(path))
    return _onnx()[0].load(str(path))


def test_onnx_sparse_graphs_are_dense_gemm_or_gathered_by_density(tmp_path: Path) -> None:
    # auto exports the dense weight and one Gemm for a denser layer (onnxruntime folds the
    # weight's subgraph when it loads the model, leaving the Gemm) and the gathered products
    # for a sparse one; the eager layer keeps its own backend (the export chose afresh).
    x = torch.randn(4, 512)
    for density, dense in ((0.3, True), (0.002, False)):
        layer = tw.SparseLinear(tw.Wiring.random(512, 256, density=density, seed=0)).eval()
        eager_backend = layer.resolve_backend(x)
        proto = _export_alone(layer, x, tmp_path / "layer.onnx")
        ops = {node.op_type for node in proto.graph.node}
        assert ("Gemm" in ops) == dense, ops
        assert ("Gather" in ops) != dense, ops
        assert layer.resolve_backend(x) == eager_backend
        if dense:
            onnx, ort = _onnx()
            options = ort.SessionOptions()
            options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
            ort.InferenceSession(str(tmp_path / "layer.onnx"), options)
            optimized = onnx.load(str(tmp_path / "optimized.onnx"))
            assert [node.op_type for node in optimized.graph.node] == ["Gemm"]


def test_torch_export_keeps_the_sparse_kernels_as_custom_ops() -> None:
    # torch.export (not ONNX) records the CSR kernels as torchwire's ops, as torch.compile
    # does: the exported program runs them.
    layer = tw.SparseLinear(tw.Wiring.random(12, 6, density=0.4, seed=0), backend="csr")
    x = torch.randn(5, 12)
    program = torch.export.export(layer.eval(), (x,))
    targets = {str(node.target) for node in program.graph.nodes}
    assert any(t.startswith("torchwire.") for t in targets), targets
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), layer(x))


def test_onnx_export_leaves_the_module_unchanged(tmp_path: Path) -> None:
    layer = tw.SparseLinear(tw.Wiring.random(64, 32, density=0.1, seed=0), backend="csr")
    before = copy.deepcopy(layer.state_dict())
    x = torch.randn(3, 64)
    _export_alone(layer, x, tmp_path / "m.onnx")
    after = layer.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert layer.resolve_backend(x) == "csr"


def test_a_dynamic_batch_exports_with_the_backends_chosen_for_the_example(tmp_path: Path) -> None:
    onnx, _ = _onnx()
    # The backend is chosen for the example input's batch without constraining it: one
    # program serves every batch size (before, torch.export failed on the symbolic size).
    torch.manual_seed(0)
    model = nn.Sequential(
        tw.SparseLinear(tw.Wiring.random(256, 128, density=0.005, seed=0)),  # gathered
        nn.ReLU(),
        tw.BlockLinear([64, 64], [32, 32]),
        tw.SparseLinear(tw.Wiring.random(64, 16, density=0.5, seed=1)),  # dense Gemm
    ).eval()
    example = (torch.randn(5, 256),)
    batch = torch.export.Dim("batch", min=1)
    shapes = {"input": {0: batch}}
    program = torch.export.export(model, example, dynamic_shapes=shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.onnx.export(
            model, example, dynamic_shapes=shapes, dynamo=True, verbose=False
        )
    assert exported is not None
    exported.save(str(tmp_path / "dynamic.onnx"))
    ops = {node.op_type for node in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node}
    assert {"Gather", "ScatterND", "Gemm"} <= ops, ops
    for rows in (1, 3, 9):
        x = torch.randn(rows, 256)
        with torch.no_grad():
            expected = model(x)
            torch.testing.assert_close(program.module()(x), expected)
        (got,) = _run(tmp_path / "dynamic.onnx", [x])
        torch.testing.assert_close(got, expected, rtol=TOLERANCE, atol=TOLERANCE)
