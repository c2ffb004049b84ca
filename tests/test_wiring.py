"""Tests for torchwire.wiring.Wiring, with dense boolean masks as the oracle."""

import contextlib
import copy
import json
import pickle
import resource

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchwire.wiring as wiring_module
from torchwire.wiring import Wiring

torch.set_num_threads(1)

settings.register_profile("wiring", deadline=None, max_examples=60)
settings.load_profile("wiring")


# ---------------------------------------------------------------- oracles and strategies


def mask_edges(mask):
    """(input, output) pairs of a dense mask, by output then input (the definition)."""
    out_f, in_f = mask.shape
    return [[i, o] for o in range(out_f) for i in range(in_f) if mask[o, i]]


def mask_of_edges(edges, in_f, out_f):
    mask = torch.zeros(out_f, in_f, dtype=torch.bool)
    for i, o in edges:
        mask[o, i] = True
    return mask


def block_mask(in_sizes, out_sizes):
    return torch.block_diag(
        *[torch.ones(b, a) for a, b in zip(in_sizes, out_sizes, strict=True)]
    ).bool()


def bool_product(first, second):
    """Mask of `first` followed by `second`: (c, b) x (b, a) -> (c, a), any path."""
    return (second[:, :, None] & first[None, :, :]).any(dim=1)


def assert_valid(w):
    """Structural invariants, checked independently of the implementation."""
    indptr, indices = w.indptr, w.indices
    assert indptr.dtype == torch.int64
    assert indices.dtype == torch.int32
    assert indptr.shape == (w.out_features + 1,)
    assert indices.shape == (w.nnz,)
    assert indptr[0] == 0
    assert indptr[-1] == w.nnz
    for o in range(w.out_features):
        row = indices[indptr[o] : indptr[o + 1]].tolist()
        assert row == sorted(set(row))
        assert all(0 <= i < w.in_features for i in row)


@st.composite
def masks(draw, max_side=12, shape=None):
    out_f, in_f = shape or (draw(st.integers(1, max_side)), draw(st.integers(1, max_side)))
    p = draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]))
    cells = draw(st.lists(st.floats(0, 1), min_size=out_f * in_f, max_size=out_f * in_f))
    return torch.tensor(cells).reshape(out_f, in_f) < p


@st.composite
def layouts(draw, max_groups=5, max_size=4):
    groups = draw(st.integers(1, max_groups))
    in_sizes = draw(st.lists(st.integers(1, max_size), min_size=groups, max_size=groups))
    out_sizes = draw(st.lists(st.integers(1, max_size), min_size=groups, max_size=groups))
    return in_sizes, out_sizes


# ---------------------------------------------------------------- raw constructor


def test_raw_constructor_follows_csr_definition():
    indptr, indices = [0, 2, 2, 5], [1, 3, 0, 1, 2]
    w = Wiring(torch.tensor(indptr), torch.tensor(indices), 4, 3)
    expected = [[i, o] for o in range(3) for i in indices[indptr[o] : indptr[o + 1]]]
    assert w.edges().tolist() == expected
    assert torch.equal(w.mask(), mask_of_edges(expected, 4, 3))
    assert (w.in_features, w.out_features, w.nnz, w.shape) == (4, 3, 5, (3, 4))
    assert w.density == 5 / 12
    assert Wiring(indptr, indices, 4, 3) == w  # lists accepted
    assert Wiring(np.array(indptr), np.array(indices, dtype=np.int16), 4, 3) == w


def test_raw_constructor_copies_its_inputs():
    indptr, indices = torch.tensor([0, 1, 2]), torch.tensor([0, 1], dtype=torch.int32)
    w = Wiring(indptr, indices, 2, 2)
    before = w.mask()
    indptr[1] = 0
    indices[0] = 1
    assert torch.equal(w.mask(), before)
    assert torch.equal(before, torch.eye(2, dtype=torch.bool))


def test_raw_constructor_allows_no_connections():
    w = Wiring([0, 0, 0], [], 3, 2)
    assert w.nnz == 0
    assert w.density == 0.0
    assert not w.mask().any()
    assert w.edges().shape == (0, 2)


@pytest.mark.parametrize(
    ("indptr", "indices", "match"),
    [
        ([0, 1], [0, 1], r"out_features \+ 1 = 3 entries, got shape \(2,\)"),
        ([1, 1, 2], [0, 1], r"start at 0 and end at nnz .* got indptr\[0\] = 1"),
        ([0, 1, 1], [0, 1], r"end at nnz = len\(indices\) = 2.*indptr\[-1\] = 1"),
        ([0, 2, 1], [0], r"non-decreasing, but indptr\[1\] = 2 > indptr\[2\] = 1"),
        ([0, 1, 2], [0, 5], r"in \[0, in_features\) = \[0, 3\), got indices\[1\] = 5"),
        ([0, 1, 2], [-1, 0], r"got indices\[0\] = -1"),
        (
            [0, 2, 2],
            [1, 1],
            r"strictly increasing .*duplicate.*output 0 lists input 1 then input 1",
        ),
        ([0, 2, 2], [2, 0], r"unsorted.*output 0 lists input 2 then input 0.*from_edges"),
    ],
)
def test_raw_constructor_rejects_bad_csr(indptr, indices, match):
    with pytest.raises(ValueError, match=match):
        Wiring(torch.tensor(indptr), torch.tensor(indices), in_features=3, out_features=2)


def test_raw_constructor_rejects_non_integer_indices():
    with pytest.raises(TypeError, match=r"indices must hold integers, got dtype torch.float32"):
        Wiring(torch.tensor([0, 1]), torch.tensor([0.0]), 2, 1)
    with pytest.raises(TypeError, match=r"indptr must hold integers, got dtype torch.bool"):
        Wiring(torch.tensor([False, True]), torch.tensor([0]), 2, 1)


def test_rows_in_different_outputs_may_decrease():
    # Indices restart at each output: only within a row must they increase.
    w = Wiring([0, 2, 4], [2, 3, 0, 1], 4, 2)
    assert torch.equal(w.mask(), torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]]).bool())


@pytest.mark.parametrize("name", ["in_features", "out_features"])
def test_sizes_are_validated(name):
    def build(value):
        sizes = {"in_features": 2, "out_features": 2, name: value}
        return Wiring.random(sizes["in_features"], sizes["out_features"], nnz=0)

    with pytest.raises(TypeError, match=rf"{name} must be an int, got bool"):
        build(True)
    with pytest.raises(TypeError, match=rf"{name} must be an int, got float \(2.0\)"):
        build(2.0)
    with pytest.raises(ValueError, match=rf"{name} must be a positive int, got 0"):
        build(0)
    with pytest.raises(ValueError, match=rf"{name} must be a positive int, got -3"):
        build(-3)
    with pytest.raises(ValueError, match=rf"{name} must be less than 2\*\*31.*got {2**31}"):
        build(2**31)
    assert build(np.int64(3)).shape == ((2, 3) if name == "in_features" else (3, 2))


def test_names_are_validated():
    with pytest.raises(
        ValueError,
        match=r"input_names must have one name per feature "
        r"\(in_features = 2\), got 3 names",
    ):
        Wiring.banded(2, 1, 1, input_names=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"output_names must not repeat a name, but 'y' appears"):
        Wiring.banded(2, 2, 1, output_names=["y", "y"])
    with pytest.raises(TypeError, match=r"input_names\[1\] must be a str, got int \(3\)"):
        Wiring.banded(2, 1, 1, input_names=["a", 3])
    with pytest.raises(TypeError, match=r"input_names must be a sequence of str, got str"):
        Wiring.banded(2, 1, 1, input_names="ab")


# ---------------------------------------------------------------- block_diagonal


@given(layouts())
def test_block_diagonal_matches_block_diag(layout):
    in_sizes, out_sizes = layout
    w = Wiring.block_diagonal(in_sizes, out_sizes)
    assert_valid(w)
    assert torch.equal(w.mask(), block_mask(in_sizes, out_sizes))
    assert w.nnz == sum(a * b for a, b in zip(in_sizes, out_sizes, strict=True))
    assert w.block_sizes == (tuple(in_sizes), tuple(out_sizes))
    assert w.is_block_diagonal


def test_block_diagonal_errors():
    with pytest.raises(ValueError, match=r"same length\), got 2 and 1 entries"):
        Wiring.block_diagonal([1, 2], [3])
    with pytest.raises(ValueError, match=r"in_sizes must list at least one group size"):
        Wiring.block_diagonal([], [])
    with pytest.raises(ValueError, match=r"out_sizes\[1\] must be a positive int, got 0"):
        Wiring.block_diagonal([1, 2], [3, 0])
    with pytest.raises(TypeError, match=r"in_sizes\[0\] must be an int, got float"):
        Wiring.block_diagonal([1.5], [1])
    with pytest.raises(TypeError, match=r"in_sizes must be a sequence of positive ints .*got int"):
        Wiring.block_diagonal(4, [1])  # type: ignore[arg-type]


def test_block_diagonal_names():
    w = Wiring.block_diagonal([1, 1], [1, 1], input_names=["a", "b"], output_names=["y", "z"])
    assert w.input_names == ("a", "b")
    assert w.output_names == ("y", "z")


# ---------------------------------------------------------------- random


def test_random_exact_count_from_density_and_nnz():
    w = Wiring.random(7, 3, density=0.3, seed=0)
    assert w.nnz == round(0.3 * 21)
    assert_valid(w)
    w = Wiring.random(40, 30, nnz=123, seed=1)
    assert w.nnz == 123 == int(w.mask().sum())
    assert_valid(w)


def test_random_density_zero_and_one():
    assert Wiring.random(6, 5, density=0.0, seed=0).nnz == 0
    full = Wiring.random(6, 5, density=1.0, seed=0)
    assert torch.equal(full.mask(), torch.ones(5, 6, dtype=torch.bool))
    assert Wiring.random(6, 5, nnz=30, seed=0) == full


def test_random_is_reproducible_and_seed_dependent():
    a = Wiring.random(50, 50, nnz=100, seed=0)
    assert a == Wiring.random(50, 50, nnz=100, seed=0)
    assert a != Wiring.random(50, 50, nnz=100, seed=1)
    # No seed: fresh randomness (two equal draws of 100 out of 2500 are essentially impossible).
    assert Wiring.random(50, 50, nnz=100) != Wiring.random(50, 50, nnz=100)


@pytest.mark.parametrize("path", ["randperm", "rounds"])
def test_random_is_uniform(monkeypatch, path):
    calls = []
    randint = torch.randint

    def counting_randint(*args, **kwargs):
        calls.append(1)
        return randint(*args, **kwargs)

    monkeypatch.setattr(torch, "randint", counting_randint)
    if path == "rounds":
        monkeypatch.setattr(wiring_module, "_RANDPERM_LIMIT", 0)
    in_f, out_f, nnz, trials = 5, 4, 4, 2000
    hits = torch.zeros(out_f, in_f)
    for seed in range(trials):
        w = Wiring.random(in_f, out_f, nnz=nnz, seed=seed)
        assert w.nnz == nnz
        hits += w.mask()
    assert bool(calls) == (path == "rounds")
    expected = trials * nnz / (in_f * out_f)  # 400, standard deviation about 18
    assert (hits - expected).abs().max() < 100


def test_random_large_sparse_uses_memory_proportional_to_nnz():
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    w = Wiring.random(200_000, 200_000, nnz=1000, seed=0)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert w.nnz == 1000
    assert w.fan_in().sum() == 1000
    assert w.fan_out().sum() == 1000
    assert int(w.indices.max()) < 200_000
    edges = w.edges()
    flat = edges[:, 1] * 200_000 + edges[:, 0]
    assert bool((flat[1:] > flat[:-1]).all())  # canonical order, no duplicates
    assert grown_kib < 100 * 1024  # a dense mask would need 40 GB
    assert w == Wiring.random(200_000, 200_000, nnz=1000, seed=0)


def test_random_errors():
    with pytest.raises(ValueError, match=r"exactly one of density= or nnz=, got density=None"):
        Wiring.random(3, 3)
    with pytest.raises(ValueError, match=r"exactly one.*got density=0.5 and nnz=2"):
        Wiring.random(3, 3, density=0.5, nnz=2)
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\], got 1.5"):
        Wiring.random(3, 3, density=1.5)
    with pytest.raises(TypeError, match=r"density must be a float in \[0, 1\], got str"):
        Wiring.random(3, 3, density="0.5")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"nnz must be in \[0, in_features \* out_features\] = "
        r"\[0, 9\], got 10",
    ):
        Wiring.random(3, 3, nnz=10)
    with pytest.raises(ValueError, match=r"got -1"):
        Wiring.random(3, 3, nnz=-1)
    with pytest.raises(TypeError, match=r"seed must be an int or None, got float"):
        Wiring.random(3, 3, nnz=1, seed=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------- banded


@given(st.integers(1, 20), st.integers(1, 20), st.data())
def test_banded_windows_follow_definition(in_f, out_f, data):
    width = data.draw(st.integers(1, in_f))
    w = Wiring.banded(in_f, out_f, width)
    assert_valid(w)
    assert torch.equal(w.fan_in(), torch.full((out_f,), width))
    mask = w.mask()
    for o in range(out_f):
        start = round(o * (in_f - width) / max(out_f - 1, 1))
        assert torch.nonzero(mask[o])[:, 0].tolist() == list(range(start, start + width))
    assert mask[0, 0]
    if out_f > 1:
        assert mask[-1, -1]


def test_banded_special_cases():
    assert torch.equal(Wiring.banded(4, 4, 1).mask(), torch.eye(4, dtype=torch.bool))
    assert torch.equal(Wiring.banded(4, 3, 4).mask(), torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"width must be at most in_features = 3.*got width = 4"):
        Wiring.banded(3, 2, 4)
    with pytest.raises(ValueError, match=r"width must be a positive int, got 0"):
        Wiring.banded(3, 2, 0)


# ---------------------------------------------------------------- from_mask


@given(masks())
def test_from_mask_round_trip(mask):
    w = Wiring.from_mask(mask)
    assert_valid(w)
    assert torch.equal(w.mask(), mask)
    assert w.shape == tuple(mask.shape)
    assert w.edges().tolist() == mask_edges(mask)
    assert torch.equal(w.fan_in(), mask.sum(1))
    assert torch.equal(w.fan_out(), mask.sum(0))
    assert w.density == int(mask.sum()) / mask.numel()


def test_from_mask_accepts_numeric_and_numpy():
    mask = torch.tensor([[True, False, True], [False, False, True]])
    expected = Wiring.from_mask(mask)
    for variant in (
        mask.int(),
        mask.double(),
        mask.numpy(),
        mask.numpy().astype(np.float32),
        mask.tolist(),
    ):
        assert Wiring.from_mask(variant) == expected


def test_from_mask_errors():
    with pytest.raises(ValueError, match=r"got 2 at \[0, 1\].*pass a bool mask, e.g. `mask != 0`"):
        Wiring.from_mask(torch.tensor([[1, 2], [0, 1]]))
    with pytest.raises(ValueError, match=r"got 0.5 at \[1, 0\]"):
        Wiring.from_mask(np.array([[1.0, 0.0], [0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(out_features, in_features\), got shape \(4,\)"):
        Wiring.from_mask(torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"got shape \(2, 2, 2\)"):
        Wiring.from_mask(torch.ones(2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"non-empty .*got shape \(0, 3\)"):
        Wiring.from_mask(torch.ones(0, 3, dtype=torch.bool))


# ---------------------------------------------------------------- from_edges


@given(masks(), st.randoms(use_true_random=False))
def test_from_edges_any_order(mask, rng):
    edges = mask_edges(mask)
    rng.shuffle(edges)
    out_f, in_f = mask.shape
    w = Wiring.from_edges(torch.tensor(edges, dtype=torch.int64).reshape(-1, 2), in_f, out_f)
    assert torch.equal(w.mask(), mask)
    assert w.edges().tolist() == mask_edges(mask)
    assert Wiring.from_edges(w.edges(), in_f, out_f) == w


def test_from_edges_inputs():
    expected = Wiring.from_mask(torch.tensor([[1, 0, 0], [0, 1, 1]]).bool())
    pairs = [[2, 1], [0, 0], [1, 1]]
    assert Wiring.from_edges(pairs, 3, 2) == expected
    assert Wiring.from_edges(np.array(pairs, dtype=np.int32), 3, 2) == expected
    assert Wiring.from_edges(torch.tensor(pairs, dtype=torch.uint8), 3, 2) == expected
    for empty in ([], torch.empty(0, 2, dtype=torch.int64), np.zeros((0, 2), dtype=np.int64)):
        w = Wiring.from_edges(empty, 3, 2)
        assert w.nnz == 0
        assert w.shape == (2, 3)


def test_from_edges_errors():
    with pytest.raises(TypeError, match=r"integer .* got dtype torch.float64"):
        Wiring.from_edges(np.array([[0.0, 1.0]]), 2, 2)
    with pytest.raises(ValueError, match=r"shape \(E, 2\).*got shape \(2, 3\)"):
        Wiring.from_edges([[0, 1, 0], [1, 0, 1]], 2, 2)
    with pytest.raises(
        ValueError,
        match=r"edge 1 is \(input=3, output=0\), but inputs must be in \[0, 3\) and outputs "
        r"in \[0, 2\)",
    ):
        Wiring.from_edges([[0, 0], [3, 0], [0, 5]], 3, 2)
    with pytest.raises(ValueError, match=r"edge 0 is \(input=0, output=-1\)"):
        Wiring.from_edges([[0, -1]], 3, 2)
    with pytest.raises(ValueError, match=r"\(input=1, output=0\) appears more than once"):
        Wiring.from_edges([[1, 0], [0, 1], [1, 0]], 3, 2)


# ---------------------------------------------------------------- from_mapping


def test_from_mapping_default_order():
    w = Wiring.from_mapping({"y": ["b", "a"], "x": ["c", "b"]})
    assert w.output_names == ("y", "x")
    assert w.input_names == ("b", "a", "c")  # order of first appearance
    expected = [[0, 0], [1, 0], [0, 1], [2, 1]]  # y <- b, a; x <- b, c (by output, then input)
    assert w.edges().tolist() == expected


def test_from_mapping_explicit_order_and_unused_names():
    w = Wiring.from_mapping({"y": ["b", "a"]}, input_names=["a", "b", "c"], output_names=["z", "y"])
    assert w.input_names == ("a", "b", "c")
    assert w.output_names == ("z", "y")
    assert torch.equal(w.mask(), torch.tensor([[0, 0, 0], [1, 1, 0]]).bool())
    assert w.fan_in().tolist() == [0, 2]


def test_from_mapping_unknown_names():
    with pytest.raises(
        ValueError, match=r"unknown output name\(s\) \['q'\].*add them to output_names="
    ):
        Wiring.from_mapping({"y": ["a"], "q": ["a"]}, output_names=["y"])
    with pytest.raises(
        ValueError,
        match=r"unknown input name\(s\) \['b', 'c', 'd', 'e', 'f'\] and 1 more: not in "
        r"input_names=\['a'\]; add them to input_names=",
    ):
        Wiring.from_mapping({"y": ["a", "b", "c", "d", "e", "f", "g"]}, input_names=["a"])


def test_from_mapping_errors():
    with pytest.raises(ValueError, match=r"duplicate connection: mapping\['y'\] lists input 'a'"):
        Wiring.from_mapping({"y": ["a", "b", "a"]})
    with pytest.raises(ValueError, match=r"input_names must not repeat a name, but 'a' appears"):
        Wiring.from_mapping({"y": ["a"]}, input_names=["a", "a"])
    with pytest.raises(ValueError, match=r"output_names must not repeat a name, but 'y' appears"):
        Wiring.from_mapping({"y": ["a"]}, output_names=["y", "y"])
    with pytest.raises(TypeError, match=r"mapping keys must be output names \(str\), got 1"):
        Wiring.from_mapping({1: ["a"]})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"mapping\['y'\] must list input names \(str\), got 0"):
        Wiring.from_mapping({"y": [0]})  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"mapping\['y'\] must be a list of input names, got 'a'"):
        Wiring.from_mapping({"y": "a"})
    with pytest.raises(TypeError, match=r"input_names\[0\] must be a str, got int"):
        Wiring.from_mapping({"y": ["a"]}, input_names=[0])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"must be a dict .* got list"):
        Wiring.from_mapping([("y", ["a"])])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"at least one output, but mapping is empty"):
        Wiring.from_mapping({})
    with pytest.raises(ValueError, match=r"at least one input.*pass input_names="):
        Wiring.from_mapping({"y": []})
    assert Wiring.from_mapping({"y": []}, input_names=["a"]).nnz == 0


def test_with_names_old_keywords_warn_and_still_work():
    w = Wiring.banded(3, 2, 2)
    with pytest.warns(DeprecationWarning, match=r"with_names\(inputs=\.\.\.\) is deprecated"):
        old = w.with_names(inputs=["a", "b", "c"])
    assert old.input_names == ("a", "b", "c")
    with pytest.warns(DeprecationWarning, match=r"use output_names="):
        assert w.with_names(outputs=["y", "z"]).output_names == ("y", "z")


def test_from_mapping_old_keywords_warn_and_still_work():
    with pytest.warns(DeprecationWarning, match=r"inputs=\.\.\.\) is deprecated; use input_names="):
        old = Wiring.from_mapping({"y": ["b"]}, inputs=["a", "b"])
    with pytest.warns(DeprecationWarning, match=r"use output_names="):
        both = Wiring.from_mapping({"y": ["b"]}, outputs=["z", "y"])
    assert old == Wiring.from_mapping({"y": ["b"]}, input_names=["a", "b"])
    assert old.input_names == ("a", "b")
    assert both.output_names == ("z", "y")
    with pytest.raises(TypeError, match="got both input_names= and its deprecated spelling"):
        Wiring.from_mapping({"y": ["b"]}, input_names=["b"], inputs=["b"])
    with pytest.raises(TypeError, match="unexpected keyword argument 'names'"):
        Wiring.from_mapping({"y": ["b"]}, names=["b"])


# ---------------------------------------------------------------- queries and names


def test_edges_canonical_order():
    mask = torch.tensor([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1]]).bool()
    edges = Wiring.from_mask(mask).edges()
    assert edges.dtype == torch.int64
    assert edges.shape == (6, 2)
    assert edges.tolist() == [[1, 0], [2, 0], [0, 1], [0, 3], [1, 3], [2, 3]]


@given(masks())
def test_edges_are_sorted_by_output_then_input(mask):
    edges = Wiring.from_mask(mask).edges()
    keys = list(zip(edges[:, 1].tolist(), edges[:, 0].tolist(), strict=True))
    assert keys == sorted(set(keys))


def test_query_dtypes():
    w = Wiring.banded(5, 3, 2)
    assert w.fan_in().dtype == torch.int64
    assert w.fan_in().shape == (3,)
    assert w.fan_out().dtype == torch.int64
    assert w.fan_out().shape == (5,)
    assert w.mask().dtype == torch.bool
    assert w.mask().shape == (3, 5)
    assert isinstance(w.density, float)
    assert isinstance(w.nnz, int)


def test_with_names_sets_exactly_the_given_names():
    w = Wiring.banded(3, 2, 2)
    named = w.with_names(input_names=["a", "b", "c"], output_names=["y", "z"])
    assert named.input_names == ("a", "b", "c")
    assert named.output_names == ("y", "z")
    assert torch.equal(named.mask(), w.mask())
    assert named != w
    assert named.with_names() == w
    assert w.input_names is None
    assert w.output_names is None
    with pytest.raises(ValueError, match=r"output_names must have one name per feature"):
        w.with_names(output_names=["y"])


def test_immutability():
    w = Wiring.from_mask(torch.tensor([[1, 0], [1, 1]]).bool())
    before = (w.indptr.clone(), w.indices.clone(), w.mask().clone())
    w.indptr[1] = 2
    w.indices[0] = 1
    w.mask()[0, 1] = True
    w.edges()[0, 0] = 1
    w.fan_in()[0] = 9
    assert torch.equal(w.indptr, before[0])
    assert torch.equal(w.indices, before[1])
    assert torch.equal(w.mask(), before[2])
    with pytest.raises(AttributeError, match=r"immutable"):
        w.in_features = 3  # type: ignore[misc]
    with pytest.raises(AttributeError, match=r"immutable"):
        w._indptr = torch.zeros(3)  # type: ignore[misc]


def test_from_mask_does_not_alias_the_mask():
    mask = torch.tensor([[True, False], [False, True]])
    w = Wiring.from_mask(mask)
    mask[0, 1] = True
    assert torch.equal(w.mask(), torch.eye(2, dtype=torch.bool))


# ---------------------------------------------------------------- block structure


@given(layouts(), st.booleans())
def test_block_sizes_detected_from_mask(layout, via_edges):
    in_sizes, out_sizes = layout
    mask = block_mask(in_sizes, out_sizes)
    w = Wiring.from_mask(mask)
    if via_edges:
        w = Wiring.from_edges(mask_edges(mask), *reversed(mask.shape))
    assert w.block_sizes == (tuple(in_sizes), tuple(out_sizes))


@given(layouts(), st.data())
def test_block_sizes_none_after_removing_an_edge(layout, data):
    in_sizes, out_sizes = layout
    mask = block_mask(in_sizes, out_sizes)
    edges = mask_edges(mask)
    i, o = data.draw(st.sampled_from(edges))
    mask[o, i] = False
    assert Wiring.from_mask(mask).block_sizes is None
    assert not Wiring.from_mask(mask).is_block_diagonal


@given(layouts(max_groups=4), st.data())
def test_block_sizes_none_after_adding_an_edge_across_groups(layout, data):
    in_sizes, out_sizes = layout
    mask = block_mask(in_sizes, out_sizes)
    missing = torch.nonzero(~mask).tolist()
    if not missing:
        return  # a single group has no cross-group cell
    o, i = data.draw(st.sampled_from(missing))
    mask[o, i] = True
    assert Wiring.from_mask(mask).block_sizes is None


@given(masks(max_side=6))
def test_block_sizes_is_sound(mask):
    sizes = Wiring.from_mask(mask).block_sizes
    if sizes is not None:
        assert torch.equal(block_mask(*sizes), mask)


@pytest.mark.parametrize(
    "rows",
    [
        [[0, 1], [1, 0]],  # blocks out of order
        [[1, 1], [0, 0]],  # output without connections
        [[1, 0, 0], [0, 1, 0]],  # input without connections
        [[1, 0, 1], [0, 1, 0]],  # a gap inside a row
        [[1, 1, 0], [0, 1, 1]],  # overlapping windows
        [[1, 1, 0], [1, 0, 0], [0, 0, 1]],  # partially filled block
    ],
)
def test_block_sizes_none_for_non_block_layouts(rows):
    w = Wiring.from_mask(torch.tensor(rows).bool())
    assert w.block_sizes is None
    assert not w.is_block_diagonal


def test_block_sizes_finest_partition():
    assert Wiring.from_mask(torch.eye(3, dtype=torch.bool)).block_sizes == ((1, 1, 1), (1, 1, 1))
    assert Wiring.from_mask(torch.ones(2, 3, dtype=torch.bool)).block_sizes == ((3,), (2,))


# ---------------------------------------------------------------- algebra


@st.composite
def chained_masks(draw):
    a, b, c = (draw(st.integers(1, 12)) for _ in range(3))
    return draw(masks(shape=(b, a))), draw(masks(shape=(c, b)))


@contextlib.contextmanager
def then_path(path):
    """Force Wiring.then to use its dense matmul or its sparse gather."""
    original = wiring_module._DENSE_THEN_LIMIT
    wiring_module._DENSE_THEN_LIMIT = 10**18 if path == "dense" else -1
    try:
        yield
    finally:
        wiring_module._DENSE_THEN_LIMIT = original


@pytest.mark.parametrize("path", ["dense", "gather"])
@given(pair=chained_masks())
def test_then_is_boolean_product(path, pair):
    first, second = pair
    w = Wiring.from_mask(first).with_names(input_names=[f"i{k}" for k in range(first.shape[1])])
    v = Wiring.from_mask(second).with_names(output_names=[f"o{k}" for k in range(second.shape[0])])
    with then_path(path):
        result = w.then(v)
    assert_valid(result)
    assert torch.equal(result.mask(), bool_product(first, second))
    assert result.input_names == w.input_names
    assert result.output_names == v.output_names


def test_then_large_gather_matches_dense():
    w = Wiring.random(300, 200, density=0.02, seed=0)
    v = Wiring.random(200, 250, density=0.02, seed=1)
    with then_path("gather"):
        gathered = w.then(v)
    with then_path("dense"):
        assert gathered == w.then(v)
    assert torch.equal(gathered.mask(), bool_product(w.mask(), v.mask()))


def test_then_shape_mismatch():
    with pytest.raises(ValueError, match=r"w.out_features = 3 and v.in_features = 4"):
        Wiring.banded(2, 3, 1).then(Wiring.banded(4, 2, 1))
    with pytest.raises(TypeError, match=r"then expects a Wiring, got Tensor"):
        Wiring.banded(2, 3, 1).then(torch.ones(3, 3))  # type: ignore[arg-type]


@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_or_and_transpose_match_mask_ops(in_f, out_f, data):
    m1 = data.draw(masks(shape=(out_f, in_f)))
    m2 = data.draw(masks(shape=(out_f, in_f)))
    w1, w2 = Wiring.from_mask(m1), Wiring.from_mask(m2)
    for result, expected in ((w1 | w2, m1 | m2), (w1 & w2, m1 & m2), (w1.T, m1.T)):
        assert_valid(result)
        assert torch.equal(result.mask(), expected)
    assert w1 == w1.T.T


def test_algebra_names():
    w = Wiring.banded(2, 2, 1, input_names=["a", "b"])
    v = Wiring.banded(2, 2, 2, output_names=["y", "z"])
    both = w | v
    assert both.input_names == ("a", "b")
    assert both.output_names == ("y", "z")
    assert (w & v).input_names == ("a", "b")
    assert (w & v).output_names == ("y", "z")
    assert w.T.output_names == ("a", "b")
    assert w.T.input_names is None
    with pytest.raises(
        ValueError, match=r"matching input_names .*got \['a', 'b'\] and \['b', 'a'\]"
    ):
        _ = w | v.with_names(input_names=["b", "a"], output_names=["y", "z"])


def test_or_and_shape_mismatch_and_other_types():
    w, v = Wiring.banded(3, 2, 1), Wiring.banded(2, 3, 1)
    with pytest.raises(ValueError, match=r"same shape .*got \(2, 3\) and \(3, 2\)"):
        _ = w | v
    with pytest.raises(ValueError, match=r"w & v needs wirings of the same shape"):
        _ = w & v
    assert w.__or__(1) is NotImplemented
    assert w.__and__(1) is NotImplemented
    assert w.__eq__(1) is NotImplemented
    with pytest.raises(TypeError):
        _ = w | 1  # type: ignore[operator]
    assert w != "w"


# ---------------------------------------------------------------- value semantics


@given(masks(), st.booleans())
def test_to_dict_json_round_trip(mask, named):
    w = Wiring.from_mask(mask)
    if named:
        w = w.with_names(input_names=[f"x{i}" for i in range(w.in_features)])
    d = w.to_dict()
    assert d["format"] == "torchwire.wiring/1"
    restored = Wiring.from_dict(json.loads(json.dumps(d)))
    assert restored == w
    assert restored.input_names == w.input_names


def test_from_dict_errors():
    d = Wiring.banded(3, 2, 1).to_dict()
    with pytest.raises(ValueError, match=r"missing key 'format' \(expected 'torchwire.wiring/1'\)"):
        Wiring.from_dict({k: v for k, v in d.items() if k != "format"})
    with pytest.raises(ValueError, match=r"format 'other/2', expected 'torchwire.wiring/1'"):
        Wiring.from_dict({**d, "format": "other/2"})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['indices'\]"):
        Wiring.from_dict({k: v for k, v in d.items() if k != "indices"})
    with pytest.raises(ValueError, match=r"strictly increasing"):
        Wiring.from_dict({**d, "indptr": [0, 2, 2], "indices": [1, 1]})
    with pytest.raises(TypeError, match=r"expects a dict from Wiring.to_dict, got str"):
        Wiring.from_dict("{}")  # type: ignore[arg-type]


@given(masks())
def test_pickle_deepcopy_hash(mask):
    w = Wiring.from_mask(mask).with_names(output_names=[f"y{o}" for o in range(mask.shape[0])])
    for clone in (pickle.loads(pickle.dumps(w)), copy.deepcopy(w), copy.copy(w)):
        assert clone == w
        assert hash(clone) == hash(w)
        assert clone.output_names == w.output_names
    assert len({w, Wiring.from_mask(mask).with_names(output_names=w.output_names)}) == 1


def test_equality_depends_on_structure_and_names():
    w = Wiring.banded(4, 3, 2)
    assert w == Wiring.from_mask(w.mask())
    assert w != Wiring.banded(4, 3, 3)
    assert w != Wiring.banded(4, 3, 2, input_names=list("abcd"))
    assert w != Wiring.from_mask(w.mask()[:, :3])


def test_repr():
    assert repr(Wiring.block_diagonal([2, 2], [2, 2])) == (
        "Wiring(in_features=4, out_features=4, nnz=8, density=0.5)"
    )
    assert repr(Wiring.from_mapping({"y": ["a"]})) == (
        "Wiring(in_features=1, out_features=1, nnz=1, density=1.0, named=inputs+outputs)"
    )


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_in=st.integers(1, 9),
    n_out=st.integers(1, 9),
    density=st.floats(0, 1),
    data=st.data(),
)
def test_select_is_the_mask_of_the_kept_rows_and_columns(
    seed: int, n_in: int, n_out: int, density: float, data: st.DataObject
) -> None:
    names = [f"i{k}" for k in range(n_in)]
    w = Wiring.random(n_in, n_out, density=density, seed=seed).with_names(input_names=names)
    keep_in = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n_in, max_size=n_in)))
    keep_out = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n_out, max_size=n_out)))
    sub = w.select(keep_in, keep_out.nonzero()[:, 0])  # a mask and indices
    assert torch.equal(sub.mask(), w.mask()[keep_out][:, keep_in])
    assert sub.input_names == tuple(n for n, k in zip(names, keep_in.tolist(), strict=True) if k)
    # the kept connections' positions, in order: values follow with weight[selected_edges]
    kept = w.selected_edges(keep_in, keep_out)
    flat = w.edges()[kept]
    assert torch.equal(w.mask()[flat[:, 1], flat[:, 0]], torch.ones(len(flat), dtype=torch.bool))
    assert int(kept.sum()) == sub.nnz
    order = torch.argsort(flat[:, 1] * n_in + flat[:, 0])
    assert torch.equal(order, torch.arange(len(flat)))
    dropped = w.select_edges(~kept)
    assert (dropped | w.select_edges(kept)) == w
    assert (dropped & w.select_edges(kept)).nnz == 0


def test_select_errors() -> None:
    w = Wiring.block_diagonal([2, 1], [1, 2])
    assert w.select(inputs=[]).shape == (3, 0)
    with pytest.raises(ValueError, match="increasing unique indices"):
        w.select(inputs=[2, 0])
    with pytest.raises(ValueError, match="increasing unique indices"):
        w.select(outputs=[3])
    with pytest.raises(ValueError, match="in_features = 3 entries"):
        w.select(inputs=torch.ones(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool mask or 1-D integer indices"):
        w.select(inputs=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"bool tensor of shape \(nnz,\) = \(4,\)"):
        w.select_edges(torch.ones(3, dtype=torch.bool))


@given(mask=masks(), named=st.booleans())
@settings(max_examples=50, deadline=None)
def test_positions_round_trip(mask: torch.Tensor, named: bool) -> None:
    wiring = Wiring.from_mask(mask)
    if named:
        wiring = wiring.with_names(
            [f"i{i}" for i in range(wiring.in_features)],
            [f"o{o}" for o in range(wiring.out_features)],
        )
    positions = wiring.positions()
    edges = wiring.edges()
    assert positions.tolist() == (edges[:, 1] * wiring.in_features + edges[:, 0]).tolist()
    back = Wiring.from_positions(
        positions,
        wiring.in_features,
        wiring.out_features,
        input_names=wiring.input_names,
        output_names=wiring.output_names,
    )
    assert back == wiring
    assert back.input_names == wiring.input_names


def test_from_positions_rejects_what_is_not_a_wiring():
    with pytest.raises(ValueError, match="strictly increasing"):
        Wiring.from_positions(torch.tensor([3, 1]), 2, 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        Wiring.from_positions(torch.tensor([1, 1]), 2, 2)
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\)"):
        Wiring.from_positions(torch.tensor([0, 4]), 2, 2)
    with pytest.raises(TypeError, match="must hold integers"):
        Wiring.from_positions(torch.tensor([0.0, 1.0]), 2, 2)
    with pytest.raises(TypeError, match="must be a 1-D tensor"):
        Wiring.from_positions([0, 1], 2, 2)  # type: ignore[arg-type]
