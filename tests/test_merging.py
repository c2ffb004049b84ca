"""merge and the tensor-level compositions: wherever merge returns it equals the two modules
applied in a row (float64, to 1e-10); wherever the merge cannot be exact it raises, and the
border-accepting merge it refused does differ."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

import torchwire as tw
from tests import reference

D = torch.float64
CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
NORMS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@st.composite
def _conv_pairs(draw: st.DrawFn) -> tuple[nn.Module, nn.Module, int]:
    d = draw(st.integers(1, 3))
    conv = CONVS[d]

    def settings_() -> dict[str, Any]:
        return {
            "kernel_size": draw(st.integers(1, 3)),
            "stride": draw(st.integers(1, 2)),
            "dilation": draw(st.integers(1, 2)),
            "padding": draw(st.sampled_from([0, 0, 1, 2])),
            "padding_mode": draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"])),
            "bias": draw(st.booleans()),
        }

    g1, g2 = draw(st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (1, 2)]))
    cin, mid, out = 4, 4 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2))
    first = conv(cin, mid, groups=g1, dtype=D, **settings_())
    second = conv(mid, out, groups=g2, dtype=D, **settings_())
    return first, second, d


def _pair(first: dict[str, Any], second: dict[str, Any]) -> tuple[nn.Module, nn.Module, int]:
    return nn.Conv2d(4, 4, dtype=D, **first), nn.Conv2d(4, 2, dtype=D, **second), 2


PAD_1 = {"kernel_size": 3, "padding": 1}


# The border cases, always run: a kernel that does not fit its padding (refused), one that
# does (exact), a first bias under zero padding (refused), a 1x1 first under reflection
# padding (exact, bias and all), two size-keeping circular convolutions (exact).
@example(_pair({**PAD_1, "bias": False}, PAD_1), 0)
@example(_pair({"kernel_size": 3, "padding": 2, "bias": False}, PAD_1), 0)
@example(_pair({"kernel_size": 1}, PAD_1), 0)
@example(_pair({"kernel_size": 1}, {**PAD_1, "padding_mode": "reflect"}), 0)
@example(_pair({**PAD_1, "padding_mode": "circular"}, {**PAD_1, "padding_mode": "circular"}), 0)
@settings(max_examples=200, deadline=None)
@given(_conv_pairs(), st.integers(0, 2**16))
def test_conv_merges_are_exact_or_refused(
    pair: tuple[nn.Module, nn.Module, int], seed: int
) -> None:
    first, second, d = pair
    torch.manual_seed(seed)
    sizes = [17, 18, 19, 20]  # every residue of the merged stride (at most 4)
    try:
        merged = tw.merge(first, second)
    except ValueError as error:
        refusal: str | None = str(error)
    else:
        refusal = None
    if refusal is not None:
        assert "allow_border=True" in refusal
        approximate = tw.merge(first, second, allow_border=True)
        differs = False
        for n in sizes:
            x = torch.randn(2, 4, *[n] * d, dtype=D)
            y = second(first(x))
            z = approximate(x)
            assert z.shape == y.shape
            differs |= not torch.allclose(z, y, rtol=1e-10, atol=1e-10)
        assert differs, "refused a merge that was exact"
        return
    assert type(merged) is type(first)
    for n in sizes:
        x = torch.randn(2, 4, *[n] * d, dtype=D)
        _close(merged(x), second(first(x)))


def test_the_issue_example_3x3_then_5x5_is_one_7x7() -> None:
    torch.manual_seed(0)
    first, second = nn.Conv2d(1, 100, 3, dtype=D), nn.Conv2d(100, 2, 5, dtype=D)
    merged = tw.merge(first, second)
    assert merged.weight.shape == (2, 1, 7, 7)
    assert first.weight.numel() + second.weight.numel() == 5900
    assert merged.weight.numel() == 98
    x = torch.randn(3, 1, 28, 28, dtype=D)
    _close(merged(x), second(first(x)))


def test_depthwise_then_pointwise_becomes_dense_and_aligned_groups_stay_grouped() -> None:
    depthwise, pointwise = nn.Conv2d(8, 8, 3, groups=8, dtype=D), nn.Conv2d(8, 16, 1, dtype=D)
    assert tw.merge(depthwise, pointwise).groups == 1
    grouped = tw.merge(nn.Conv2d(8, 8, 3, groups=4, dtype=D), nn.Conv2d(8, 4, 3, groups=2, dtype=D))
    assert grouped.groups == 2  # group g of the second reads groups 2g and 2g + 1 of the first


@st.composite
def _linear_pairs(draw: st.DrawFn) -> tuple[nn.Module, nn.Module]:
    def layer(n_in: int, n_out: int, kind: str) -> nn.Module:
        bias = draw(st.booleans())
        if kind == "linear":
            return nn.Linear(n_in, n_out, bias=bias, dtype=D)
        if kind == "block":
            return tw.BlockLinear(n_in, n_out, groups=2, bias=bias, dtype=D)
        density = draw(st.sampled_from([0.05, 0.3, 1.0]))
        wiring = tw.Wiring.random(n_in, n_out, density=density, seed=draw(st.integers(0, 9)))
        return tw.SparseLinear(wiring, bias=bias, dtype=D)

    sizes = [2 * draw(st.integers(1, 20)) for _ in range(3)]
    kinds = draw(st.lists(st.sampled_from(["linear", "block", "sparse"]), min_size=2, max_size=2))
    return layer(sizes[0], sizes[1], kinds[0]), layer(sizes[1], sizes[2], kinds[1])


@settings(max_examples=80, deadline=None)
@given(_linear_pairs(), st.integers(0, 2**16))
def test_linear_merges_are_exact(pair: tuple[nn.Module, nn.Module], seed: int) -> None:
    first, second = pair
    torch.manual_seed(seed)
    merged = tw.merge(first, second)
    x = torch.randn(5, first.in_features, dtype=D)
    _close(merged(x), second(first(x)))
    kinds = {type(first), type(second)}
    if kinds == {nn.Linear}:
        assert type(merged) is nn.Linear
    if kinds == {tw.BlockLinear}:
        assert type(merged) is tw.BlockLinear  # groups line up: 2 and 2
    if type(merged) is tw.SparseLinear:
        assert merged.wiring == _wiring(first).then(_wiring(second))
        assert merged.wiring.density <= tw.merging.SPARSE_DENSITY


def _wiring(m: Any) -> tw.Wiring:
    if isinstance(m, nn.Linear):
        return tw.Wiring.block_diagonal([m.in_features], [m.out_features])
    return m.wiring


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_then_batchnorm_matches_torch_fuse_conv_bn_eval(d: int, bias: bool) -> None:
    torch.manual_seed(d)
    conv = CONVS[d](4, 6, 3, padding=1, groups=2, bias=bias, dtype=D).eval()
    bn = reference.trained_batchnorm(NORMS[d], 6)
    merged = tw.merge(conv, bn)
    oracle = fuse_conv_bn_eval(copy.deepcopy(conv), bn)  # torch's own fold: an independent oracle
    _close(merged.weight, oracle.weight)
    _close(merged.bias, oracle.bias)
    x = torch.randn(2, 4, *[7] * d, dtype=D)
    _close(merged(x), bn(conv(x)))


def test_linear_then_batchnorm_matches_torch_fuse_linear_bn_eval() -> None:
    linear, bn = nn.Linear(5, 4, dtype=D).eval(), reference.trained_batchnorm(nn.BatchNorm1d, 4)
    merged = tw.merge(linear, bn)
    oracle = fuse_linear_bn_eval(copy.deepcopy(linear), bn)
    _close(merged.weight, oracle.weight)
    _close(merged.bias, oracle.bias)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: tw.BlockLinear([2, 4], [3, 1], dtype=D),
        lambda: tw.BlockLinear(6, 4, groups=2, shared=True, dtype=D),
        lambda: tw.SparseLinear(tw.Wiring.random(6, 4, density=0.4, seed=0), dtype=D),
    ],
)
def test_structured_layers_fold_a_batchnorm_on_either_side(layer: Callable[[], Any]) -> None:
    torch.manual_seed(0)
    m = layer()
    x = torch.randn(5, 6, dtype=D)
    after, before = (
        reference.trained_batchnorm(nn.BatchNorm1d, 4),
        reference.trained_batchnorm(nn.BatchNorm1d, 6),
    )
    folded = tw.merge(m, after)
    assert type(folded) is type(m)
    _close(folded(x), after(m(x)))
    folded = tw.merge(before, m)
    assert type(folded) is type(m)
    _close(folded(x), m(before(x)))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
@pytest.mark.parametrize("padding", [0, 1])
def test_batchnorm_then_conv_is_exact_where_the_padding_allows(
    padding: int, padding_mode: str
) -> None:
    torch.manual_seed(0)
    bn = reference.trained_batchnorm(nn.BatchNorm2d, 4)
    conv = nn.Conv2d(4, 6, 3, padding=padding, padding_mode=padding_mode, groups=2, dtype=D)
    x = torch.randn(2, 4, 8, 8, dtype=D)
    if padding and padding_mode == "zeros":
        with pytest.raises(ValueError, match=r"pads the output of BatchNorm2d.*allow_border=True"):
            tw.merge(bn, conv)
        approximate = tw.merge(bn, conv, allow_border=True)
        assert not torch.allclose(approximate(x), conv(bn(x)))
        torch.testing.assert_close(approximate(x)[..., 1:-1, 1:-1], conv(bn(x))[..., 1:-1, 1:-1])
        return
    _close(tw.merge(bn, conv)(x), conv(bn(x)))


def test_tensor_functions_compute_in_float64_and_return_the_input_dtype() -> None:
    torch.manual_seed(0)
    w1, w2 = torch.randn(30, 20), torch.randn(10, 30)
    w, b = tw.merging.compose_linear_weights(w1, None, w2, None)
    assert b is None
    assert w.dtype == torch.float32
    # Rounded once from the float64 product, not accumulated in float32.
    assert torch.equal(w, (w2.double() @ w1.double()).float())


def _eval_bn() -> nn.Module:
    return reference.trained_batchnorm(nn.BatchNorm1d, 4)


REFUSED: list[tuple[Callable[[], tuple[nn.Module, nn.Module]], type[Exception], str]] = [
    (lambda: (nn.Linear(4, 4), nn.ReLU()), TypeError, r"cannot merge Linear then ReLU; it merges"),
    (lambda: (nn.Conv1d(4, 4, 1), nn.Conv2d(4, 4, 1)), TypeError, r"Conv1d then Conv2d"),
    (lambda: (nn.Conv2d(4, 4, 1), nn.BatchNorm1d(4)), TypeError, r"Conv2d then BatchNorm1d"),
    (
        lambda: (nn.Linear(4, 5), nn.Linear(4, 2)),
        ValueError,
        r"gives 5 features but Linear takes 4",
    ),
    (lambda: (nn.Conv2d(4, 5, 1), nn.Conv2d(4, 2, 1)), ValueError, r"gives 5 channels"),
    (lambda: (nn.Linear(4, 4), nn.BatchNorm1d(4)), ValueError, r"training mode.*\.eval\(\)"),
    (
        lambda: (nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False).eval()),
        ValueError,
        r"tracks no running statistics",
    ),
    (lambda: (nn.Linear(4, 3), _eval_bn()), ValueError, r"normalises 4 features but Linear"),
    (
        lambda: (nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)),
        ValueError,
        r"pads the output of Conv2d.*kernel fits.*allow_border=True",
    ),
    (
        lambda: (nn.Conv2d(4, 4, 2, padding="same"), nn.Conv2d(4, 4, 1)),
        ValueError,
        r"pads asymmetrically",
    ),
    (lambda: (nn.Linear(4, 4), 3), TypeError, r"expected nn.Module arguments, got int as second"),
]


@pytest.mark.parametrize(("build", "exc", "match"), REFUSED, ids=[m for _, _, m in REFUSED])
def test_unsupported_or_inexact_pairs_are_refused(
    build: Callable[[], tuple[nn.Module, nn.Module]], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        tw.merge(*build())


def test_merge_leaves_its_inputs_unchanged() -> None:
    first, second = nn.Conv2d(2, 3, 3), nn.Conv2d(3, 2, 3)
    before = [p.clone() for p in [*first.parameters(), *second.parameters()]]
    merged = tw.merge(first, second)
    with torch.no_grad():
        merged.weight.zero_()
    for p, q in zip(before, [*first.parameters(), *second.parameters()], strict=True):
        assert torch.equal(p, q)


class Scale(nn.Module):
    """A module merge does not know: one factor per feature."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.rand(features, dtype=D) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def linear_then_scale(linear: nn.Linear, scale: Scale, *, allow_border: bool) -> nn.Module:
    weight, bias = tw.merging.compose_linear_weights(
        linear.weight, linear.bias, torch.diag(scale.factor), None
    )
    merged = nn.Linear(linear.in_features, linear.out_features, bias is not None, dtype=D)
    with torch.no_grad():
        merged.weight.copy_(weight)
        if bias is not None:
            merged.bias.copy_(bias)
    return merged


def _listed_pairs(message: str) -> set[tuple[str, str]]:
    """The pairs an unsupported-pair message lists: 'A then B, C or D; E then F; ...'."""
    listed = message.split("; it merges ", 1)[1].split(" (", 1)[0]
    pairs = set()
    for group in listed.split("; "):
        first, seconds = group.split(" then ")
        for second in seconds.replace(" or ", ", ").split(", "):
            pairs.add((first, second))
    return pairs


def _names(table: Any) -> set[tuple[str, str]]:
    return {(a.__name__, b.__name__) for a, b in table}


def test_a_user_rule_merges_a_pair_merge_does_not_know() -> None:
    torch.manual_seed(0)
    linear, scale = nn.Linear(5, 3, dtype=D), Scale(3)
    rules = {(nn.Linear, Scale): linear_then_scale}
    with pytest.raises(TypeError, match=r"cannot merge Linear then Scale"):
        tw.merge(linear, scale)
    merged = tw.merge(linear, scale, rules=rules)
    assert type(merged) is nn.Linear
    x = torch.randn(4, 5, dtype=D)
    _close(merged(x), scale(linear(x)))
    # The built-in pairs still merge beside the user's rules.
    _close(tw.merge(linear, nn.Linear(3, 2, dtype=D), rules=rules)(x).shape, torch.Size([4, 2]))


def test_a_user_rule_replaces_the_built_in_rule_for_its_pair() -> None:
    sentinel = nn.Linear(1, 1)

    def mine(first: nn.Module, second: nn.Module, *, allow_border: bool) -> nn.Module:
        return sentinel

    assert tw.merge(nn.Linear(2, 2), nn.Linear(2, 2), rules={(nn.Linear, nn.Linear): mine}) is (
        sentinel
    )


def test_the_unsupported_pair_error_lists_the_rule_table() -> None:
    with pytest.raises(TypeError) as error:
        tw.merge(nn.Linear(4, 4), nn.ReLU())
    assert _listed_pairs(str(error.value)) == _names(tw.merging.MERGE_RULES)
    assert ("Conv2d", "BatchNorm2d") in _listed_pairs(str(error.value))
    rules = {(nn.Linear, Scale): linear_then_scale}
    with pytest.raises(TypeError, match=r"Linear then ReLU.*rules=") as error:
        tw.merge(nn.Linear(4, 4), nn.ReLU(), rules=rules)
    assert _listed_pairs(str(error.value)) == _names(tw.merging.MERGE_RULES) | {("Linear", "Scale")}


@pytest.mark.parametrize(
    "rules",
    [
        {nn.Linear: linear_then_scale},
        {(nn.Linear, Scale): 3},
        {(nn.Linear, int): linear_then_scale},
    ],
)
def test_malformed_rules_are_refused(rules: Any) -> None:
    with pytest.raises(TypeError, match=r"expected rules (as|keyed)|rules maps Linear then"):
        tw.merge(nn.Linear(3, 3), Scale(3), rules=rules)


def _frozen(m: nn.Module, *names: str) -> nn.Module:
    for name in names:
        getattr(m, name).requires_grad_(False)
    return m


# (first, second, the merged layer's frozen parameters): a parameter is frozen only where
# every input holding a parameter of that name has it frozen.
KEPT: list[tuple[Callable[[], tuple[nn.Module, nn.Module]], set[str]]] = [
    (lambda: (nn.Linear(4, 4), nn.Linear(4, 2)), set()),
    (lambda: (_frozen(nn.Linear(4, 4), "weight", "bias"), nn.Linear(4, 2)), set()),
    (
        lambda: (_frozen(nn.Linear(4, 4), "weight"), _frozen(nn.Linear(4, 2), "weight")),
        {"weight"},
    ),
    (
        lambda: (
            _frozen(nn.Conv2d(2, 4, 3), "weight", "bias"),
            _frozen(nn.Conv2d(4, 2, 1), "weight", "bias"),
        ),
        {"weight", "bias"},
    ),
    (
        lambda: (
            _frozen(tw.BlockLinear(4, 4, groups=2, bias=False), "weight"),
            _frozen(reference.trained_batchnorm(nn.BatchNorm1d, 4), "weight", "bias"),
        ),
        {"weight", "bias"},
    ),
    (  # the folded BatchNorm's shift becomes a bias neither input had: it requires grad
        lambda: (_plain_batchnorm(4), _frozen(nn.Linear(4, 2, bias=False), "weight")),
        {"weight"},
    ),
]


def _plain_batchnorm(features: int) -> nn.Module:
    """An eval BatchNorm1d without affine parameters, holding running statistics."""
    bn = nn.BatchNorm1d(features, affine=False, dtype=D)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)  # type: ignore[union-attr]
    return bn.eval()


@pytest.mark.parametrize(("build", "frozen"), KEPT)
@pytest.mark.parametrize("training", [True, False])
def test_the_merged_layer_keeps_first_mode_and_frozen_parameters(
    build: Callable[[], tuple[nn.Module, nn.Module]], frozen: set[str], training: bool
) -> None:
    first, second = build()
    for m, mode in ((first, training), (second, not training)):
        if not isinstance(m, nn.BatchNorm1d):  # a BatchNorm folds in eval mode only
            m.train(mode)
    merged = tw.merge(first, second)
    assert merged.training == first.training
    assert {name for name, p in merged.named_parameters() if not p.requires_grad} == frozen


def test_merge_refuses_a_layer_with_a_hook_or_a_parametrization() -> None:
    hooked = nn.Linear(4, 4)
    handle = hooked.register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(
        ValueError, match=r"merge cannot rebuild the first module \(Linear\): it has hooks"
    ):
        tw.merge(hooked, nn.Linear(4, 2))
    handle.remove()
    assert type(tw.merge(hooked, nn.Linear(4, 2))) is nn.Linear
    normed = nn.utils.parametrizations.weight_norm(nn.Conv2d(4, 2, 1))
    match = r"merge cannot rebuild the second module \(Conv2d\): it has hooks or parametrizations"
    with pytest.raises(ValueError, match=match):
        tw.merge(nn.Conv2d(3, 4, 3), normed)
    with pytest.raises(TypeError, match=r"cannot merge Linear then Conv2d"):
        tw.merge(nn.Linear(4, 4), normed)  # the pair is looked up by the layer's own type
