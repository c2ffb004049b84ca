"""fuse_parallel and unfuse: the fused layer computes what the branches did (outputs, input
gradients and parameter gradients), unfuse gives back the same modules, and everything that
cannot be fused exactly is refused with the branch's name."""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torchwire as tw

D = torch.float64
MERGES = [None, "cat", "sum", "mean", "stack"]


def _tuple(y: Any) -> tuple[torch.Tensor, ...]:
    return y if isinstance(y, tuple) else (y,)


def _check_exact(parallel: tw.Parallel, x: torch.Tensor) -> tw.FusedParallel:
    """Fused outputs and input gradients equal the branches'; unfuse gives back the same
    modules (names, types, reprs and values, bit for bit)."""
    fused = tw.fuse_parallel(parallel)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, fs = _tuple(parallel(x1)), _tuple(fused(x2))
    assert len(ys) == len(fs)
    grads = [torch.randn_like(y) for y in ys]
    torch.autograd.backward(ys, grads)
    torch.autograd.backward(fs, grads)
    for y, f in zip(ys, fs, strict=True):
        torch.testing.assert_close(f, y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-10, atol=1e-10)
    back = tw.unfuse(fused)
    assert repr(back) == repr(parallel)
    original = parallel.state_dict()
    assert list(back.state_dict()) == list(original)
    for key, value in back.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, original[key]), key
        else:
            assert value == original[key], key
    return fused


@st.composite
def _linear_parallels(draw: st.DrawFn) -> tuple[tw.Parallel, torch.Tensor]:
    """Same-input branches of nn.Linear, BlockLinear and SparseLinear, with mixed biases."""
    kind = draw(st.sampled_from(["linear", "block", "mixed"]))
    n = draw(st.integers(1, 4))
    groups = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    in_features = sum(groups) if kind == "block" else draw(st.integers(1, 9))
    merge = draw(st.sampled_from(MERGES))
    equal_out = merge in ("sum", "mean", "stack")
    out_groups = draw(st.lists(st.integers(1, 3), min_size=len(groups), max_size=len(groups)))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    branches: list[nn.Module] = []
    for b in range(n):
        bias = draw(st.booleans())
        choice = kind if kind != "mixed" else draw(st.sampled_from(["linear", "sparse", "block"]))
        if choice == "block" and kind == "mixed":  # its own input groups: a SparseLinear
            inner = st.sets(st.integers(1, in_features - 1), max_size=3)
            cuts = sorted(draw(inner)) if in_features > 1 else []
            sizes = [b - a for a, b in zip([0, *cuts], [*cuts, in_features], strict=True)]
            outs = [draw(st.integers(1, 2)) for _ in sizes]
            if not equal_out:
                branches.append(tw.BlockLinear(sizes, outs, bias=bias, dtype=D))
                continue
            choice = "sparse"
        if choice == "linear":
            out = 3 if equal_out else draw(st.integers(1, 5))
            branches.append(nn.Linear(in_features, out, bias=bias, dtype=D))
        elif choice == "block":
            outs = out_groups if equal_out else [draw(st.integers(1, 3)) for _ in groups]
            if draw(st.booleans()) and len(set(groups)) == 1 and len(set(outs)) == 1:
                args: tuple[Any, ...] = (sum(groups), sum(outs), len(groups))  # equal groups
            else:
                args = (groups, outs)
            branches.append(tw.BlockLinear(*args, bias=bias, dtype=D))
        else:
            out = 3 if equal_out else draw(st.integers(1, 5))
            density = draw(st.floats(0.0, 1.0))
            wiring = tw.Wiring.random(in_features, out, density=density, seed=b)
            branches.append(tw.SparseLinear(wiring, bias=bias, dtype=D))
    batch = draw(st.sampled_from([(3,), (2, 3), ()]))
    return tw.Parallel(*branches, join=merge), torch.randn(*batch, in_features, dtype=D)


@settings(max_examples=80, deadline=None)
@given(_linear_parallels())
def test_linear_branches_fuse_exactly(case: tuple[tw.Parallel, torch.Tensor]) -> None:
    parallel, x = case
    _check_exact(parallel, x)


@st.composite
def _conv_parallels(draw: st.DrawFn) -> tuple[tw.Parallel, torch.Tensor]:
    d = draw(st.integers(1, 3))
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[d]
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 2))
    kernel = draw(st.integers(1, 3))
    options = {
        "stride": draw(st.integers(1, 2)),
        "dilation": draw(st.integers(1, 2)),
        "padding": draw(st.sampled_from([0, 1, "same"])),
        "padding_mode": draw(st.sampled_from(["zeros", "reflect", "circular"])),
        "groups": groups,
    }
    if options["padding"] == "same":
        options["stride"] = 1
    merge = draw(st.sampled_from(MERGES))
    dim = draw(st.sampled_from([-(d + 1), -1]))  # channels, or the last spatial dimension
    equal_out = merge in ("sum", "mean", "stack") or (merge == "cat" and dim == -1)
    torch.manual_seed(draw(st.integers(0, 2**16)))
    branches = [
        conv(
            in_channels,
            groups * (2 if equal_out else draw(st.integers(1, 3))),
            kernel,
            bias=draw(st.booleans()),
            dtype=D,
            **options,
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    batch = draw(st.sampled_from([(2,), ()]))
    x = torch.randn(*batch, in_channels, *[5] * d, dtype=D)
    return tw.Parallel(*branches, join=merge, dim=dim), x


@settings(max_examples=60, deadline=None)
@given(_conv_parallels())
def test_conv_branches_fuse_exactly(case: tuple[tw.Parallel, torch.Tensor]) -> None:
    parallel, x = case
    fused = _check_exact(parallel, x)
    assert type(fused.layer) is type(parallel[0])
    assert fused.layer.groups == parallel[0].groups


def test_parameter_gradients_are_the_branches_gradients() -> None:
    """Training the fused layer is training the branches: its weight gradient, unfused the
    same way as its weights, is each branch's gradient."""
    torch.manual_seed(0)
    parallel = tw.Parallel(
        nn.Conv2d(4, 4, 3, groups=2, dtype=D), nn.Conv2d(4, 6, 3, groups=2, dtype=D)
    )
    fused = tw.fuse_parallel(parallel)
    x = torch.randn(2, 4, 6, 6, dtype=D)
    grads = [torch.randn(2, c, 4, 4, dtype=D) for c in (4, 6)]
    torch.autograd.backward(parallel(x), grads)
    torch.autograd.backward(fused(x), grads)
    as_values = copy.deepcopy(fused)
    with torch.no_grad():
        as_values.layer.weight.copy_(fused.layer.weight.grad)
        as_values.layer.bias.copy_(fused.layer.bias.grad)
    for branch, grad in zip(parallel, tw.unfuse(as_values), strict=True):
        torch.testing.assert_close(grad.weight, branch.weight.grad)
        torch.testing.assert_close(grad.bias, branch.bias.grad)


def test_sequential_conv_relu_parallel_heads_fused_identically() -> None:
    """The issue's VAE encoder: the fused heads give the same mean and log-variance."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        tw.Parallel(nn.Conv2d(8, 4, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)),
    )
    fused = nn.Sequential(model[0], model[1], tw.fuse_parallel(model[2]))
    x = torch.randn(2, 3, 16, 16)
    mean, logvar = model(x)
    fmean, flogvar = fused(x)
    torch.testing.assert_close(fmean, mean)
    torch.testing.assert_close(flogvar, logvar)


def test_fusing_leaves_the_parallel_unchanged_and_copies_weights() -> None:
    parallel = tw.Parallel(nn.Linear(4, 2), nn.Linear(4, 3))
    before = copy.deepcopy(parallel.state_dict())
    fused = tw.fuse_parallel(parallel)
    with torch.no_grad():
        fused.layer.weight.zero_()
    for key, value in parallel.state_dict().items():
        assert torch.equal(value, before[key])


def test_named_branches_keep_their_names_through_unfuse() -> None:
    heads = tw.Parallel(OrderedDict(mean=nn.Linear(8, 2), logvar=nn.Linear(8, 2)), join="cat")
    fused = tw.fuse_parallel(heads)
    assert fused.names == ["mean", "logvar"]
    back = tw.unfuse(fused)
    assert list(back.state_dict()) == ["mean.weight", "mean.bias", "logvar.weight", "logvar.bias"]
    assert back.join == "cat"


def test_a_bias_trained_after_fusing_is_kept_with_a_warning() -> None:
    torch.manual_seed(0)
    fused = tw.fuse_parallel(tw.Parallel(nn.Linear(4, 2), nn.Linear(4, 3, bias=False)))
    with torch.no_grad():
        assert not fused.layer.bias[2:].any()  # zeros for the branch without a bias
        fused.layer.bias.add_(0.5)
    with pytest.warns(UserWarning, match=r"branch '1' had no bias.*keeps that bias"):
        back = tw.unfuse(fused)
    assert back[1].bias is not None
    x = torch.randn(3, 4)
    torch.testing.assert_close(back(x)[1], fused(x)[1])


def test_reset_parameters_keeps_zeros_for_branches_without_a_bias() -> None:
    fused = tw.fuse_parallel(
        tw.Parallel(nn.Conv1d(2, 4, 1, groups=2, bias=False), nn.Conv1d(2, 2, 1, groups=2))
    )
    fused.reset_parameters()
    # Grouped: channels of branch 0 sit at wide positions 0, 1, 3, 4.
    assert fused.layer.bias[[0, 1, 3, 4]].eq(0).all()
    assert fused.layer.bias[[2, 5]].ne(0).all()


def test_loading_another_fused_layout_is_refused() -> None:
    a = tw.fuse_parallel(tw.Parallel(nn.Linear(4, 2), nn.Linear(4, 3)))
    b = tw.fuse_parallel(tw.Parallel(nn.Linear(4, 3), nn.Linear(4, 2)))  # same wide shapes
    state = a.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    with pytest.raises(ValueError, match=r"saved from a FusedParallel with branch .* \[\[2, 3\]"):
        b.load_state_dict(state)
    c = tw.fuse_parallel(tw.Parallel(nn.Linear(4, 2), nn.Linear(4, 3)))
    c.load_state_dict(state)
    torch.testing.assert_close(c.layer.weight, a.layer.weight)


def _hooked() -> nn.Linear:
    m = nn.Linear(4, 2)
    m.register_forward_hook(lambda *args: None)
    return m


def _pruned() -> nn.Linear:
    m = nn.Linear(4, 2)
    prune.random_unstructured(m, "weight", amount=0.5)
    return m


SHARED = nn.Linear(4, 2)
REFUSED: list[tuple[Callable[[], Any], type[Exception], str]] = [
    (lambda: nn.Sequential(nn.Linear(4, 2)), TypeError, r"expected a torchwire.Parallel"),
    (lambda: tw.Parallel(), ValueError, r"without branches"),
    (
        lambda: tw.Parallel(nn.Linear(4, 2), nn.ReLU()),
        TypeError,
        r"cannot fuse branch '1' \(ReLU\); it fuses nn.Linear",
    ),
    (
        lambda: tw.Parallel(nn.Linear(4, 2), nn.Bilinear(4, 4, 2)),
        TypeError,
        r"branch '1' \(Bilinear\)",
    ),
    (
        lambda: tw.Parallel(nn.Conv2d(4, 2, 3), nn.Conv2d(4, 2, 3, stride=2)),
        ValueError,
        r"branch '1' \(Conv2d\) has stride=\(2, 2\), but branch '0' has stride=\(1, 1\)",
    ),
    (
        lambda: tw.Parallel(nn.Conv2d(4, 2, 3), nn.Conv2d(4, 2, 5)),
        ValueError,
        r"kernel_size=\(5, 5\)",
    ),
    (
        lambda: tw.Parallel(nn.Conv2d(4, 2, 3), nn.Conv2d(4, 2, 3, padding_mode="reflect")),
        ValueError,
        r"padding_mode=reflect",
    ),
    (
        lambda: tw.Parallel(nn.Conv1d(4, 2, 3), nn.Conv2d(4, 2, 3)),
        TypeError,
        r"same dimension",
    ),
    (
        lambda: tw.Parallel(OrderedDict(a=SHARED, b=SHARED)),
        ValueError,
        r"branches 'a' and 'b' are the same module",
    ),
    (
        lambda: tw.Parallel(nn.Linear(4, 2), _hooked()),
        ValueError,
        r"cannot rebuild branch '1' \(Linear\): it has hooks",
    ),
    (lambda: tw.Parallel(nn.Linear(4, 2), _pruned()), ValueError, r"has hooks"),
    (
        lambda: tw.Parallel(
            nn.Linear(4, 2), nn.utils.parametrizations.weight_norm(nn.Linear(4, 2))
        ),
        ValueError,
        r"parametrizations",
    ),
    (
        lambda: tw.Parallel(tw.BlockLinear(4, 2, groups=2, shared=True)),
        ValueError,
        r"shares one block across its groups",
    ),
    (
        lambda: tw.Parallel(nn.Linear(4, 2), nn.Linear(4, 2, dtype=D)),
        ValueError,
        r"branch '1' \(Linear\) holds torch.float64 on cpu, but branch '0' holds torch.float32",
    ),
]


@pytest.mark.parametrize(("build", "exc", "match"), REFUSED, ids=[m for _, _, m in REFUSED])
def test_what_cannot_be_fused_exactly_is_refused_naming_the_branch(
    build: Callable[[], Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        tw.fuse_parallel(build())


def test_unfuse_needs_a_fused_parallel() -> None:
    with pytest.raises(TypeError, match=r"unfuse expected a torchwire.FusedParallel, got Parallel"):
        tw.unfuse(tw.Parallel(nn.Linear(2, 2)))  # type: ignore[arg-type]


def _forward_hook(m: nn.Module) -> None:
    m.register_forward_hook(lambda *args: None)


def _weight_norm(m: nn.Module) -> None:
    nn.utils.parametrizations.weight_norm(m)


POLICY_BRANCHES: list[Callable[[], list[Any]]] = [
    lambda: [nn.Linear(4, 2), nn.Linear(4, 3)],
    lambda: [nn.Conv1d(4, 2, 3, groups=2), nn.Conv1d(4, 4, 3, groups=2)],
    lambda: [tw.BlockLinear(4, 2, groups=2), tw.BlockLinear([1, 3], [2, 2])],
    lambda: [tw.SparseLinear(tw.Wiring.random(4, 3, density=0.5, seed=0)), nn.Linear(4, 2)],
]


@pytest.mark.parametrize("branches", POLICY_BRANCHES, ids=["linear", "conv", "block", "mixed"])
def test_fuse_parallel_and_unfuse_keep_mode_and_frozen_parameters_and_refuse_hooks(
    branches: Callable[[], list[Any]],
) -> None:
    first, second = branches()
    first.requires_grad_(False)
    second.weight.requires_grad_(False)
    parallel = tw.Parallel(first, second).eval()
    fused = tw.fuse_parallel(parallel)
    assert not fused.training
    assert not fused.layer.training
    assert not fused.layer.weight.requires_grad  # every branch froze its weight
    assert fused.layer.bias.requires_grad  # not every branch froze its bias
    back = tw.unfuse(fused)
    assert not back.training
    for branch in back:
        assert not branch.training
        assert not branch.weight.requires_grad
        assert branch.bias.requires_grad
    # in training mode and trainable unless every branch is not
    first, second = branches()
    fused = tw.fuse_parallel(tw.Parallel(first.requires_grad_(False), second.eval()))
    assert fused.layer.training
    assert all(p.requires_grad for p in fused.layer.parameters())
    # unfuse gives every branch the wide layer's mode and frozen parameters
    fused.layer.eval().bias.requires_grad_(False)
    for branch in tw.unfuse(fused):
        assert not branch.training
        assert branch.weight.requires_grad
        assert not branch.bias.requires_grad
    # hooks and parametrizations are refused with one message
    for refused in (_forward_hook, _weight_norm):
        first, second = branches()
        refused(second)
        label = f"branch '1' ({type(second).__name__})"
        message = f"fuse_parallel cannot rebuild {label}: it has hooks or parametrizations"
        with pytest.raises(ValueError, match=re.escape(message)):
            tw.fuse_parallel(tw.Parallel(first, second))
        fused = tw.fuse_parallel(tw.Parallel(*branches()))
        refused(fused.layer)
        label = f"its layer ({type(fused.layer).__name__})"
        message = f"unfuse cannot rebuild {label}: it has hooks or parametrizations"
        with pytest.raises(ValueError, match=re.escape(message)):
            tw.unfuse(fused)
