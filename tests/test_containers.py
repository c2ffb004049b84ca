"""Parallel, Split, Concat, Sum and Map composed inside nn.Sequential: behaviour, torch.fx
symbolic tracing and torch.compile of whole models. (Each container's own checks and errors
are rows of the generic module contract.)"""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pytest
import torch
from torch import nn

import torchwire as tw


def _heads() -> tw.Parallel:
    torch.manual_seed(0)
    return tw.Parallel(nn.Linear(8, 2), nn.Linear(8, 3))


@pytest.mark.parametrize("merge", [None, "cat", "sum", "mean", "stack"])
def test_parallel_gives_every_branch_the_input_and_merges(merge: str | None) -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(8, 3), nn.Linear(8, 3)
    x = torch.randn(4, 8)
    out = tw.Parallel(a, b, join=merge)(x)
    ya, yb = a(x), b(x)
    expected = {
        None: (ya, yb),
        "cat": torch.cat([ya, yb], -1),
        "sum": ya + yb,
        "mean": (ya + yb) / 2,
        "stack": torch.stack([ya, yb], -1),
    }[merge]
    if merge is None:
        assert isinstance(out, tuple)
        assert len(out) == 2
        for o, e in zip(out, expected, strict=True):
            torch.testing.assert_close(o, e)
    else:
        torch.testing.assert_close(out, expected)


def test_sequential_with_parallel_returns_two_tensors() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    conv_a, conv_b = nn.Conv2d(8, 4, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), tw.Parallel(conv_a, conv_b))
    x = torch.randn(2, 3, 16, 16)
    mean, logvar = model(x)
    h = torch.relu(conv(x))
    torch.testing.assert_close(mean, conv_a(h))
    torch.testing.assert_close(logvar, conv_b(h))


def test_parallel_behaves_like_a_container() -> None:
    named = tw.Parallel(OrderedDict(mean=nn.Linear(8, 2), logvar=nn.Linear(8, 2)))
    assert list(named.state_dict()) == ["mean.weight", "mean.bias", "logvar.weight", "logvar.bias"]
    assert named[1] is named.logvar
    assert len(named) == 2
    assert list(named) == [named.mean, named.logvar]
    named.append(nn.Linear(8, 1))
    assert len(named) == 3
    assert isinstance(named[2], nn.Linear)
    tail = named[1:]
    assert isinstance(tail, tw.Parallel)
    assert len(tail) == 2
    assert tail[0] is named.logvar
    assert repr(tw.Parallel(nn.Identity(), join="cat", dim=1)).startswith(
        "Parallel(\n  join='cat', dim=1"
    )


def test_split_concat_sum_map() -> None:
    x = torch.randn(3, 10)
    parts = tw.Split([4, 6])(x)
    assert [p.shape[-1] for p in parts] == [4, 6]
    torch.testing.assert_close(tw.Concat()(parts), x)
    halves = tw.Split(2)(x)
    torch.testing.assert_close(tw.Sum()(halves), x[:, :5] + x[:, 5:])
    torch.testing.assert_close(tw.Split(3, dim=0)(x)[1], x[1:2])
    torch.manual_seed(0)
    m = tw.Map(nn.Linear(4, 2), nn.Linear(6, 2))
    ys = m(parts)
    torch.testing.assert_close(ys[1], m[1](parts[1]))
    assert len(m) == 2


def test_a_tuple_where_a_layer_expects_a_tensor_names_both() -> None:
    with pytest.raises(TypeError, match=r"expected input to be a Tensor, got tuple.*Concat\(\)"):
        nn.Sequential(tw.Split(2), tw.BlockLinear(5, 5))(torch.randn(3, 10))


def _models() -> list[nn.Module]:
    torch.manual_seed(0)
    return [
        nn.Sequential(
            nn.Linear(8, 8), tw.Split([5, 3]), tw.Map(nn.Linear(5, 2), nn.Linear(3, 2)), tw.Sum()
        ),
        nn.Sequential(
            nn.Linear(8, 8),
            tw.Parallel(nn.Linear(8, 2), nn.Linear(8, 4), join="cat"),
            tw.Split(2),
            tw.Concat(),
        ),
        nn.Sequential(tw.Parallel(nn.Linear(8, 2), tw.BlockLinear(8, 4, groups=2)), tw.Concat()),
    ]


@pytest.mark.parametrize("index", range(3))
def test_fx_symbolic_trace_of_a_sequential_with_containers(index: int) -> None:
    model = _models()[index]
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(4, 8)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("index", range(3))
def test_compile_fullgraph_matches_eager(index: int) -> None:
    torch._dynamo.reset()
    model = _models()[index]
    x = torch.randn(4, 8)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x))


def test_a_split_pickled_by_torchwire_0_1_still_cuts() -> None:
    old = tw.Split([2, 4])
    del old.__dict__["_sizes_sum"]  # 0.1 kept the sum, under another name
    old.__dict__["_total"] = 6
    loaded = pickle.loads(pickle.dumps(old))
    assert [p.shape[-1] for p in loaded(torch.randn(3, 6))] == [2, 4]


def test_parallel_merge_keyword_and_attribute_are_deprecated_spellings_of_join() -> None:
    a, b = nn.Linear(4, 2), nn.Linear(4, 3)
    x = torch.randn(5, 4)
    with pytest.warns(DeprecationWarning, match=r"Parallel\(merge=\.\.\.\) is deprecated; use"):
        old = tw.Parallel(a, b, merge="cat")
    assert old.join == "cat"
    torch.testing.assert_close(old(x), tw.Parallel(a, b, join="cat")(x))
    with pytest.warns(
        DeprecationWarning, match=r"Parallel\.merge is deprecated; use Parallel\.join"
    ):
        assert old.merge == "cat"
    fused = tw.fuse_parallel(old)
    with pytest.warns(DeprecationWarning, match=r"FusedParallel\.merge is deprecated"):
        assert fused.merge == "cat"
    with pytest.raises(TypeError, match="got both join= and its deprecated spelling merge="):
        tw.Parallel(a, join="cat", merge="cat")
    with pytest.raises(TypeError, match="unexpected keyword argument 'how'"):
        tw.Parallel(a, how="cat")


def test_a_parallel_pickled_by_torchwire_0_1_still_joins() -> None:
    p = tw.Parallel(nn.Linear(4, 2), nn.Linear(4, 3), join="cat")
    state = p.__dict__.copy()
    state["merge"] = state.pop("join")  # the attribute's name in torchwire 0.1
    old = tw.Parallel.__new__(tw.Parallel)
    old.__setstate__(state)
    x = torch.randn(5, 4)
    torch.testing.assert_close(old(x), p(x))
