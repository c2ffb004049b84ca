"""Biologically informed networks: GMT and table loaders, and tw.hierarchy's contract."""

from __future__ import annotations

import gzip
import itertools
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torchwire as tw
from torchwire.hierarchy import LevelHeads, hierarchy_wirings

torch.set_num_threads(1)

GMT = "apoptosis\thttp://x\tTP53\tBAX\tTP53\t\ncell cycle\t\tCDK1\tTP53\n\nrepair\tdesc\tATM\n"


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


# ---------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", ["sets.gmt", "sets.gmt.gz"])
def test_gmt_sets_are_outputs_fed_by_their_members(tmp_path: Path, name: str) -> None:
    w = tw.Wiring.from_gmt(_write(tmp_path / name, GMT))
    assert w.input_names == ("TP53", "BAX", "CDK1", "ATM")
    assert w.output_names == ("apoptosis", "cell cycle", "repair")
    expected = {("TP53", "apoptosis"), ("BAX", "apoptosis"), ("CDK1", "cell cycle")}
    expected |= {("TP53", "cell cycle"), ("ATM", "repair")}  # TP53 twice in a set: once
    got = {(w.input_names[i], w.output_names[o]) for i, o in w.edges().tolist()}
    assert got == expected


def test_gmt_orders_and_unknown_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "sets.gmt", GMT)
    genes = ["ATM", "TP53", "MYC", "CDK1", "BAX"]  # MYC is in no set: an unconnected input
    w = tw.Wiring.from_gmt(
        path, input_names=genes, output_names=["repair", "cell cycle", "apoptosis"]
    )
    assert w.input_names == tuple(genes)
    assert w.output_names == ("repair", "cell cycle", "apoptosis")
    assert w.fan_out().tolist() == [1, 2, 0, 1, 1]
    with pytest.raises(ValueError, match=r"names inputs \['BAX', 'CDK1', 'ATM'\].*unknown='drop'"):
        tw.Wiring.from_gmt(path, input_names=["TP53"])
    kept = tw.Wiring.from_gmt(
        path, input_names=["TP53"], output_names=["apoptosis"], unknown="drop"
    )
    assert (kept.nnz, kept.output_names) == (1, ("apoptosis",))
    with pytest.raises(ValueError, match="unknown must be 'error' or 'drop'"):
        tw.Wiring.from_gmt(path, unknown="ignore")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"holds no gene sets"),
        ("\n\n", r"holds no gene sets"),
        ("a\tdesc\tX\nlonely\n", r"line 2: expected a set name, a description and its members"),
        ("a\tdesc\tX\nb\tdesc\t\t\n", r"line 2: set 'b' has no members"),
        ("a\tdesc\tX\nb\td\tY\na\td\tZ\n", r"line 3: set 'a' was already defined on line 1"),
    ],
)
def test_bad_gmt_files_are_errors_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tw.Wiring.from_gmt(_write(tmp_path / "bad.gmt", text))


@pytest.mark.parametrize("name", ["edges.tsv", "edges.tsv.gz"])
def test_table_rows_are_connections(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, "g1\tp1\tx\ng2\tp1\ty\n\ng1\tp2\tz\ng1\tp1\tw\n")
    w = tw.Wiring.from_table(path)
    assert (w.input_names, w.output_names) == (("g1", "g2"), ("p1", "p2"))
    assert w.mask().tolist() == [[True, True], [True, False]]
    flipped = tw.Wiring.from_table(path, columns=(1, 0))
    assert flipped.input_names == ("p1", "p2")


def test_table_separator_header_and_errors(tmp_path: Path) -> None:
    csv = _write(tmp_path / "e.csv", "from,to\na,x\nb,x\n")
    w = tw.Wiring.from_table(csv, sep=",", header=True, output_names=["y", "x"])
    assert (w.input_names, w.output_names, w.nnz) == (("a", "b"), ("y", "x"), 2)
    with pytest.raises(ValueError, match=r"e.csv, line 1: expected at least 2 columns.*sep="):
        tw.Wiring.from_table(csv)
    with pytest.raises(ValueError, match="holds no rows"):
        tw.Wiring.from_table(_write(tmp_path / "empty.tsv", ""))
    with pytest.raises(ValueError, match=r"line 2: an empty name"):
        tw.Wiring.from_table(_write(tmp_path / "gap.tsv", "a\tx\n\tx\n"))
    with pytest.raises(ValueError, match="two different column indices"):
        tw.Wiring.from_table(csv, columns=(0, 0))
    with pytest.raises(TypeError, match="expected a file path"):
        tw.Wiring.from_table(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- hierarchy


def _reach(wirings: list[tw.Wiring]) -> torch.Tensor:
    """Which first-layer input reaches which last-layer output through the connections."""
    reach = wirings[0].mask().T.double()
    for w in wirings[1:]:
        reach = (reach @ w.mask().T.double()).clamp(max=1)
    return reach > 0


def _expected(base: tw.Wiring, pairs: list[tuple[str, str]]) -> dict[str, set[str]]:
    """For each node, the inputs that reach it through base and then the relations."""
    assert base.input_names is not None
    assert base.output_names is not None
    reach: dict[str, set[str]] = {}
    for i, o in base.edges().tolist():
        reach.setdefault(base.output_names[o], set()).add(base.input_names[i])
    changed = True
    while changed:
        changed = False
        for child, parent in pairs:
            new = reach.get(child, set()) - reach.get(parent, set())
            if new:
                reach.setdefault(parent, set()).update(new)
                changed = True
    return reach


@st.composite
def hierarchies(draw: st.DrawFn) -> tuple[tw.Wiring, list[tuple[str, str]]]:
    """A random named base and random acyclic relations (parents have larger indices)."""
    nodes = draw(st.integers(1, 9))
    inputs = draw(st.integers(1, 6))
    pairs = [
        (f"n{c}", f"n{p}")
        for c in range(nodes)
        for p in range(c + 1, nodes)
        if draw(st.floats(0, 1)) < 0.3
    ]
    mask = torch.tensor(
        [[draw(st.floats(0, 1)) < 0.3 for _ in range(inputs)] for _ in range(nodes)]
    )
    mask[draw(st.integers(0, nodes - 1)), draw(st.integers(0, inputs - 1))] = True
    base = tw.Wiring.from_mask(mask).with_names(
        input_names=[f"x{i}" for i in range(inputs)], output_names=[f"n{v}" for v in range(nodes)]
    )
    return base, pairs


@settings(deadline=None, max_examples=150)
@given(hierarchies(), st.one_of(st.none(), st.integers(1, 4)))
def test_an_input_reaches_a_top_node_exactly_when_base_and_relations_say_so(
    drawn: tuple[tw.Wiring, list[tuple[str, str]]], levels: int | None
) -> None:
    base, pairs = drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreached names are reported, tested below
        wirings = hierarchy_wirings(base, pairs, levels=levels)
    expected = _expected(base, pairs)
    parents = {child for child, _ in pairs}
    roots = [v for v in expected if v not in parents]
    tops = wirings[-1].output_names
    assert tops is not None
    assert set(tops) == set(roots)  # every reached root, nothing else
    reach = _reach(wirings)
    assert base.input_names == wirings[0].input_names
    for r, top in enumerate(tops):
        got = {base.input_names[i] for i in range(base.in_features) if reach[i, r]}
        assert got == expected[top]
    if levels is not None:
        assert len(wirings) <= levels
    for below, above in itertools.pairwise(wirings):
        assert below.output_names == above.input_names  # the layers chain by name


@settings(deadline=None, max_examples=100)
@given(hierarchies())
def test_every_connection_is_a_base_edge_a_relation_or_a_copy(
    drawn: tuple[tw.Wiring, list[tuple[str, str]]],
) -> None:
    base, pairs = drawn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wirings = hierarchy_wirings(base, pairs)
    assert base.input_names is not None
    assert base.output_names is not None
    base_edges = {(base.input_names[i], base.output_names[o]) for i, o in base.edges().tolist()}
    relations = set(pairs)
    for k, w in enumerate(wirings):
        assert w.input_names is not None
        assert w.output_names is not None
        for i, o in w.edges().tolist():
            edge = (w.input_names[i], w.output_names[o])
            allowed = base_edges if k == 0 else relations | {(edge[1], edge[1])}
            assert edge in allowed


def test_a_skipped_level_costs_one_copy_per_level_and_names_are_kept() -> None:
    # leaf -> mid -> top and leaf2 -> top: leaf2 skips a level and is copied once.
    base = tw.Wiring.from_mapping({"leaf": ["g1", "g2"], "leaf2": ["g3"]})
    model = tw.hierarchy(base, {"leaf": ["mid"], "mid": ["top"], "leaf2": ["top"]}, activation=None)
    first, second, third = (m.wiring for m in model)
    assert first.output_names == ("leaf", "leaf2")
    assert second.output_names == ("leaf2", "mid")  # leaf2's copy beside mid
    assert second.mask().tolist() == [[False, True], [True, False]]
    assert third.output_names == ("top",)
    assert sum(m.nnz for m in model) == 3 + 2 + 2


def test_an_annotated_inner_node_gets_its_inputs_from_the_first_layer() -> None:
    base = tw.Wiring.from_mapping({"leaf": ["g1"], "top": ["g2"]})
    first, second = hierarchy_wirings(base, [("leaf", "top")])
    assert (first.output_names, second.output_names) == (("leaf", "top"), ("top",))
    assert second.input_names == ("leaf", "top")
    assert second.mask().tolist() == [[True, True]]  # the child and its own lower part


def test_relation_forms_orders_and_files_agree(tmp_path: Path) -> None:
    base = tw.Wiring.from_mapping({"a": ["g1"], "b": ["g2"]})
    pairs = [("a", "root"), ("b", "root")]
    table = _write(tmp_path / "rel.txt.gz", "root\ta\nroot\tb\n")  # Reactome: parent, child
    built = [
        hierarchy_wirings(base, pairs),
        hierarchy_wirings(base, {"a": ["root"], "b": ["root"]}),
        hierarchy_wirings(base, [(p, c) for c, p in pairs], order="parent-child"),
        hierarchy_wirings(base, table, order="parent-child"),
        hierarchy_wirings(base, str(table), order="parent-child"),
    ]
    assert all(b == built[0] for b in built)


def test_cycles_bad_arguments_and_unreached_names_are_reported() -> None:
    base = tw.Wiring.from_mapping({"a": ["g1"]})
    with pytest.raises(ValueError, match=r"cycle: 'a' -> 'b' -> 'c' -> 'a'"):
        hierarchy_wirings(base, [("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(ValueError, match="its own parent"):
        hierarchy_wirings(base, [("a", "a")])
    with pytest.warns(UserWarning, match=r"2 node\(s\) that no input of base reaches.*'x', 'y'"):
        hierarchy_wirings(base, [("a", "b"), ("x", "y")])
    with pytest.raises(ValueError, match="must name its inputs and outputs"):
        hierarchy_wirings(tw.Wiring.random(3, 2, density=0.5, seed=0), [])
    with pytest.raises(ValueError, match="levels must be a positive int"):
        hierarchy_wirings(base, [("a", "b")], levels=0)
    with pytest.raises(ValueError, match="order must be one of"):
        hierarchy_wirings(base, [("a", "b")], order="up")
    with pytest.raises(ValueError, match="applies to pairs and tables only"):
        hierarchy_wirings(base, {"a": ["b"]}, order="parent-child")
    with pytest.raises(TypeError, match=r"wrap a single name in a list"):
        hierarchy_wirings(base, {"a": "b"})
    with pytest.raises(TypeError, match=r"\(child, parent\) pairs, got 'ab'"):
        hierarchy_wirings(base, ["ab"])
    with pytest.raises(ValueError, match="heads must be a positive int"):
        tw.hierarchy(base, [("a", "b")], heads=0)


def test_levels_keep_the_top_and_move_deeper_inputs_up() -> None:
    base = tw.Wiring.from_mapping({"deep": ["g1"], "mid": ["g2"]})
    pairs = [("deep", "mid"), ("mid", "top")]
    full = hierarchy_wirings(base, pairs)
    cut = hierarchy_wirings(base, pairs, levels=2)
    assert [w.output_names for w in full] == [("deep", "mid"), ("mid",), ("top",)]
    assert [w.output_names for w in cut] == [("mid",), ("top",)]
    assert cut[0].mask().tolist() == [[True, True]]  # g1 moved from deep to mid


def test_heads_predict_at_every_level_and_the_model_trains() -> None:
    torch.manual_seed(0)
    base = tw.Wiring.from_mapping({"a": ["g1", "g2"], "b": ["g2", "g3"], "c": ["g4"]})
    model = tw.hierarchy(base, [("a", "ab"), ("b", "ab"), ("ab", "root"), ("c", "root")], heads=2)
    assert isinstance(model, LevelHeads)
    x = torch.randn(16, 4)
    outputs = model(x)
    assert [y.shape for y in outputs] == [torch.Size([16, 2])] * 3
    sum(y.square().sum() for y in outputs).backward()
    layer = model.layers[0][0]
    assert isinstance(layer, tw.SparseLinear)
    assert layer.weight.grad is not None
    assert isinstance(model.layers[0][1], nn.Tanh)
    plain = tw.hierarchy(base, [("a", "ab")], activation=nn.ReLU, bias=False, dtype=torch.float64)
    assert [type(m) for m in plain] == [tw.SparseLinear, nn.ReLU, tw.SparseLinear, nn.ReLU]
    assert plain[0].bias is None
    assert plain[0].weight.dtype == torch.float64
