r"""Merging consecutive linear operators into one: :func:`merge` for two modules (a whole
model: :func:`torchwire.fuse`, in :mod:`torchwire.fusion`), and the tensor-level functions
beneath it (:func:`compose_linear_weights`, :func:`compose_conv_weights`,
:func:`fold_batchnorm_weights`, :func:`fold_input_batchnorm_weights`).

Which pairs merge is one table, :data:`MERGE_RULES`: ``{(first type, second type): rule}``,
read by both :func:`merge` and :func:`torchwire.fuse`. Both take more rules as ``rules=`` (a
:class:`MergeRule` is ``rule(first, second, *, allow_border) -> nn.Module``), so a pair a
user adds merges in a whole model too. Whatever the rule, a merged layer follows the
rebuild policy of ``torchwire._surgery`` for a layer that replaces two (see :func:`merge`),
and layers with hooks or parametrizations are refused.

Merges are exact or refused. Every composition is computed in float64 and cast back to the
parameters' dtype, so a merged layer differs from the pair it replaces only by the rounding
of that cast and of its own (shorter) sums.

**When a convolution merge is exact.** Write ``first`` with kernel :math:`k_1`, stride
:math:`s_1`, dilation :math:`d_1`, padding :math:`p_1` and ``second`` with :math:`k_2,
s_2, d_2, p_2` (per spatial dimension). The merged convolution has stride
:math:`s_1 s_2`, dilation :math:`D = \gcd(d_1, s_1 d_2)` and kernel
:math:`(d_1 (k_1 - 1) + s_1 d_2 (k_2 - 1)) / D + 1`; it is exact:

1. when ``second`` does not pad (:math:`p_2 = 0`): always (``first`` may pad in any mode);
2. when ``second`` pads with zeros, if ``first`` has no bias, pads with zeros (or not at
   all) and its kernel fits in its own padding, :math:`d_1 (k_1 - 1) \le p_1` (a 1x1
   ``first``, or a 3x3 with padding 2): then ``first``'s output, extended past the border,
   is zero there, which is what ``second``'s padding assumes; the merged layer pads by
   :math:`p_1 + s_1 p_2`;
3. when ``first`` is 1x1 with stride 1 and no padding: it commutes with any padding
   (zeros need it without a bias), so the merged layer pads as ``second`` does;
4. when both pad circularly and ``first`` keeps the size (stride 1,
   :math:`2 p_1 = d_1 (k_1 - 1)`): both are convolutions on a circle, and so is the merged
   layer, padded by :math:`p_1 + p_2`.

Anywhere else ``second`` would see zeros at the border where the merged layer sees the
values of ``first`` (its bias, or its response to the image near the border), and
:func:`merge` raises unless called with ``allow_border=True``, which keeps the interior
exact and changes the outermost outputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchwire import _surgery
from torchwire.wiring import Wiring

__all__ = [
    "MERGE_RULES",
    "MergeRule",
    "compose_conv_weights",
    "compose_linear_weights",
    "fold_batchnorm_weights",
    "fold_input_batchnorm_weights",
    "merge",
    "merge_rules",
]

SPARSE_DENSITY = 0.1
"""A merge of structured linear layers stays a ``SparseLinear`` up to this density."""


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().double()


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def compose_linear_weights(
    weight1: torch.Tensor,
    bias1: torch.Tensor | None,
    weight2: torch.Tensor,
    bias2: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    r"""The weight and bias of ``x -> W_2 (W_1 x + b_1) + b_2``: :math:`W_2 W_1` and
    :math:`W_2 b_1 + b_2` (``None`` when neither layer has a bias), computed in float64 and
    returned in ``weight1``'s dtype.

    Examples::

        >>> w, b = compose_linear_weights(torch.eye(2), torch.ones(2), 2 * torch.eye(2), None)
        >>> w, b
        (tensor([[2., 0.],
                [0., 2.]]), tensor([2., 2.]))
    """
    w1, w2 = weight1.detach().double(), weight2.detach().double()
    if w1.dim() != 2 or w2.dim() != 2 or w2.shape[1] != w1.shape[0]:
        raise ValueError(
            "compose_linear_weights expected weights of shapes (mid, in) and (out, mid), got "
            f"{tuple(weight1.shape)} and {tuple(weight2.shape)}"
        )
    b1 = _f64(bias1)
    bias = _add(None if b1 is None else w2 @ b1, _f64(bias2))
    dtype = weight1.dtype
    return (w2 @ w1).to(dtype), None if bias is None else bias.to(dtype)


def _ungroup(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped convolution weight ``(out, in / groups, *k)`` as a dense ``(out, in, *k)``
    one, zero outside the groups."""
    if groups == 1:
        return weight
    out, per_in = weight.shape[:2]
    per_out = out // groups
    dense = weight.new_zeros(out, per_in * groups, *weight.shape[2:])
    for g in range(groups):
        rows, cols = slice(g * per_out, (g + 1) * per_out), slice(g * per_in, (g + 1) * per_in)
        dense[rows, cols] = weight[rows]
    return dense


def _regroup(dense: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The most groups a dense ``(out, in, *k)`` weight is block diagonal in (its entries
    outside the blocks exactly zero), and its grouped form."""
    out, inp = dense.shape[:2]
    for groups in sorted(
        (g for g in range(1, math.gcd(out, inp) + 1) if out % g == 0 and inp % g == 0), reverse=True
    ):
        po, pi = out // groups, inp // groups
        mask = torch.zeros(out, inp, dtype=torch.bool, device=dense.device)
        for g in range(groups):
            mask[g * po : (g + 1) * po, g * pi : (g + 1) * pi] = True
        if groups == 1 or not dense[~mask].any():
            blocks = [dense[g * po : (g + 1) * po, g * pi : (g + 1) * pi] for g in range(groups)]
            return torch.cat(blocks), groups
    raise AssertionError("one group always fits")


def compose_conv_weights(
    weight1: torch.Tensor,
    bias1: torch.Tensor | None,
    weight2: torch.Tensor,
    bias2: torch.Tensor | None,
    *,
    stride1: Sequence[int],
    dilation1: Sequence[int],
    dilation2: Sequence[int],
    groups1: int = 1,
    groups2: int = 1,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...], int]:
    r"""The kernel of two convolutions in a row, where the second reads every output of the
    first it covers (no padding in between; see the module notes for borders).

    Computed in float64; returned in ``weight1``'s dtype.

    Args:
        weight1: the first convolution's ``(C_1, C_{in} / groups1, *k_1)`` weight.
        bias1: the first convolution's bias, or ``None``.
        weight2: the second's ``(C_2, C_1 / groups2, *k_2)`` weight.
        bias2: the second's bias, or ``None``.
        stride1: the first's stride, one per spatial dimension.
        dilation1: the first's dilation, one per spatial dimension.
        dilation2: the second's dilation.
        groups1: the first's groups.
        groups2: the second's groups.

    Returns:
        ``(weight, bias, dilation, groups)`` of the merged convolution: its weight
        ``(C_2, C_{in} / groups, *K)`` with :math:`K = (d_1 (k_1 - 1) + s_1 d_2 (k_2 - 1))
        / D + 1`, its bias :math:`b_2 + \sum W_2 b_1` (``None`` when neither has one), its
        dilation :math:`D = \gcd(d_1, s_1 d_2)`, and the most groups the merged weight is
        block diagonal in (``groups1`` then ``groups2`` aligned stay grouped; depthwise then
        pointwise becomes dense). Its stride is ``stride1 * stride2``.

    Examples::

        >>> w1, w2 = torch.randn(100, 1, 3, 3), torch.randn(2, 100, 5, 5)
        >>> w, b, dilation, groups = compose_conv_weights(
        ...     w1, None, w2, None, stride1=(1, 1), dilation1=(1, 1), dilation2=(1, 1))
        >>> w.shape, dilation, groups  # one 7x7 convolution: 98 weights instead of 5,900
        (torch.Size([2, 1, 7, 7]), (1, 1), 1)
    """
    w1 = _ungroup(weight1.detach().double(), groups1)
    w2 = _ungroup(weight2.detach().double(), groups2)
    if w2.shape[1] != w1.shape[0] or w1.dim() != w2.dim() or w1.dim() < 3:
        raise ValueError(
            "compose_conv_weights expected the second convolution to read the first's "
            f"{weight1.shape[0]} channels, got weights of shapes {tuple(weight1.shape)} (groups="
            f"{groups1}) and {tuple(weight2.shape)} (groups={groups2})"
        )
    k1, k2 = w1.shape[2:], w2.shape[2:]
    dilation = tuple(
        math.gcd(d1, s1 * d2) for d1, s1, d2 in zip(dilation1, stride1, dilation2, strict=True)
    )
    step1 = [d1 // d for d1, d in zip(dilation1, dilation, strict=True)]
    step2 = [s1 * d2 // d for s1, d2, d in zip(stride1, dilation2, dilation, strict=True)]
    kernel = [
        a * (n1 - 1) + b * (n2 - 1) + 1 for a, b, n1, n2 in zip(step1, step2, k1, k2, strict=True)
    ]
    merged = w1.new_zeros(w2.shape[0], w1.shape[1], *kernel)
    for tap in itertools.product(*(range(n) for n in k2)):
        # Tap m of the second reads the first's output there: the first's kernel, shifted.
        at: Any = (slice(None), slice(None), *tap)
        product = torch.einsum("oc,ci...->oi...", w2[at], w1)
        window: list[slice] = [slice(None), slice(None)]
        window += [
            slice(b * m, b * m + a * (n1 - 1) + 1, a)
            for a, b, m, n1 in zip(step1, step2, tap, k1, strict=True)
        ]
        merged[tuple(window)] += product
    b1 = _f64(bias1)
    through = None if b1 is None else w2.sum(tuple(range(2, w2.dim()))) @ b1
    bias = _add(through, _f64(bias2))
    weight, groups = _regroup(merged)
    dtype = weight1.dtype
    return weight.to(dtype), None if bias is None else bias.to(dtype), dilation, groups


def _scale_shift(
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``x * scale + shift`` per channel, in float64."""
    scale = torch.rsqrt(var.double() + eps)
    if weight is not None:
        scale = scale * weight.detach().double()
    shift = -mean.double() * scale
    if bias is not None:
        shift = shift + bias.detach().double()
    return scale, shift


def _bn_scale_shift(bn: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return _scale_shift(bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)


def fold_batchnorm_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The weight and bias of a linear layer or convolution followed by an eval BatchNorm:
    output channel :math:`o` scaled by :math:`\gamma_o / \sqrt{\sigma^2_o + \epsilon}`, and
    the bias :math:`(b_o - \mu_o) \gamma_o / \sqrt{\sigma^2_o + \epsilon} + \beta_o`. Like
    ``torch.nn.utils.fusion.fuse_conv_bn_weights``, computed in float64.

    Examples::

        >>> w, b = fold_batchnorm_weights(torch.ones(2, 3), None, torch.zeros(2),
        ...                               torch.full((2,), 4.0), 0.0, None, None)
        >>> w
        tensor([[0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000]])
    """
    scale, shift = _scale_shift(running_mean, running_var, eps, bn_weight, bn_bias)
    w = weight.detach().double() * scale.view(-1, *[1] * (weight.dim() - 1))
    b = shift if bias is None else bias.detach().double() * scale + shift
    return w.to(weight.dtype), b.to(weight.dtype)


def fold_input_batchnorm_weights(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    eps: float,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The weight and bias of an eval BatchNorm followed by a linear layer or convolution
    that reads every normalised value (no padding): input channel :math:`i` scaled by
    :math:`a_i = \gamma_i / \sqrt{\sigma^2_i + \epsilon}`, and the bias
    :math:`b + \sum W c` with :math:`c_i = \beta_i - \mu_i a_i`. Computed in float64.

    Examples::

        >>> w, b = fold_input_batchnorm_weights(torch.ones(1, 2), None, torch.ones(2),
        ...                                     torch.ones(2), 0.0, None, None)
        >>> w, b  # y = (x0 - 1) + (x1 - 1)
        (tensor([[1., 1.]]), tensor([-2.]))
    """
    scale, shift = _scale_shift(running_mean, running_var, eps, bn_weight, bn_bias)
    out, per_group, *kernel = weight.shape
    # weight[o, j] reads input channel (o // (out / groups)) * per_group + j.
    in_scale = scale.view(groups, 1, per_group).expand(groups, out // groups, per_group)
    w = weight.detach().double() * in_scale.reshape(out, per_group, *[1] * len(kernel))
    dense = _ungroup(weight.detach().double(), groups)
    through = (dense * shift.view(1, -1, *[1] * len(kernel))).sum(tuple(range(1, dense.dim())))
    b = through if bias is None else bias.detach().double() + through
    return w.to(weight.dtype), b.to(weight.dtype)


# ---------------------------------------------------------------- merge: a table of rules


class MergeRule(Protocol):
    """A merge rule: ``rule(first, second, *, allow_border)`` returns one new module equal to
    ``second(first(x))``, or raises ``ValueError`` saying why no exact one exists (sizes that
    do not chain, a border it cannot reproduce unless ``allow_border``). It reads its inputs
    and changes neither."""

    def __call__(self, first: Any, second: Any, /, *, allow_border: bool) -> nn.Module: ...


Rules = Mapping[tuple[type[nn.Module], type[nn.Module]], MergeRule]


def merge(
    first: nn.Module,
    second: nn.Module,
    *,
    allow_border: bool = False,
    rules: Rules | None = None,
) -> nn.Module:
    r"""One module equal to ``second(first(x))``, or a clear error saying why there is none.

    The pair of layer types (their exact types) is looked up in :data:`MERGE_RULES`, the
    table of built-in rules, and in ``rules``; the rule found composes the two layers.
    Built-in pairs:

    - ``nn.Linear``, ``BlockLinear`` or ``SparseLinear`` followed by any of them:
      :math:`W_2 W_1` and :math:`W_2 b_1 + b_2`. Two ``nn.Linear`` give an ``nn.Linear``;
      ``BlockLinear`` whose groups line up give a ``BlockLinear``; otherwise the composed
      wiring (``first.wiring.then(second.wiring)``) decides: a ``BlockLinear`` if it is
      block diagonal, a ``SparseLinear`` up to :data:`SPARSE_DENSITY`, a dense
      ``nn.Linear`` above.
    - ``nn.Conv1d/2d/3d`` followed by the same kind: kernels composed with strides,
      dilations, groups and padding (exact cases in the module notes; otherwise a
      ``ValueError`` explaining, or, with ``allow_border=True``, a merge exact away from
      the border).
    - A convolution or linear layer followed by a ``BatchNorm`` over its outputs, and a
      ``BatchNorm`` followed by a convolution or linear layer (eval statistics; before a
      zero-padded convolution only where the padding allows, as above).

    The result is a new module in ``first``'s dtype and device; neither input is changed.
    It follows torchwire's rebuild policy, for a layer that replaces two: it is in
    ``first``'s train/eval mode, and a parameter of it is frozen (``requires_grad=False``)
    only where every input holding a parameter of that name has it frozen (a parameter
    neither input has, such as the bias a folded BatchNorm's shift creates, requires grad).
    Layers with hooks or parametrizations (weight norm, spectral norm, pruning masks) are
    refused, since the merged layer would lose them.

    Args:
        first: the module applied first.
        second: the module applied to ``first``'s output.
        allow_border: accept a convolution merge that is exact away from the border only
            (see the module notes). Default: ``False``.
        rules: more rules, ``{(first type, second type): rule}``, each a function
            ``rule(first, second, *, allow_border) -> nn.Module`` (see :class:`MergeRule`).
            They add pairs to :data:`MERGE_RULES` and replace its rule where a pair is in
            both. :func:`torchwire.fuse` takes the same ``rules``. Default: ``None``.

    Raises:
        TypeError: an unsupported pair (the message lists the supported ones), or malformed
            ``rules``.
        ValueError: a pair whose merge would not be exact, or whose sizes do not chain; a
            BatchNorm in training mode; a layer with hooks or parametrizations.

    Examples::

        >>> first, second = nn.Conv2d(1, 100, 3), nn.Conv2d(100, 2, 5)
        >>> merged = torchwire.merge(first, second)
        >>> merged
        Conv2d(1, 2, kernel_size=(7, 7), stride=(1, 1))
        >>> x = torch.randn(4, 1, 28, 28)
        >>> torch.allclose(merged(x), second(first(x)), atol=1e-5)
        True

        A rule for a layer merge does not know, used by ``merge`` and ``fuse`` alike:

        >>> class Scale(nn.Module):  # one factor per feature
        ...     def __init__(self, features):
        ...         super().__init__()
        ...         self.factor = nn.Parameter(torch.rand(features))
        ...     def forward(self, x):
        ...         return x * self.factor
        >>> def linear_then_scale(linear, scale, *, allow_border):
        ...     merged = nn.Linear(linear.in_features, linear.out_features)
        ...     with torch.no_grad():
        ...         merged.weight.copy_(linear.weight * scale.factor[:, None])
        ...         merged.bias.copy_(linear.bias * scale.factor)
        ...     return merged
        >>> rules = {(nn.Linear, Scale): linear_then_scale}
        >>> linear, scale = nn.Linear(8, 4), Scale(4)
        >>> torchwire.merge(linear, scale, rules=rules)
        Linear(in_features=8, out_features=4, bias=True)
        >>> x = torch.randn(2, 8)
        >>> merged = torchwire.merge(linear, scale, rules=rules)
        >>> torch.allclose(merged(x), scale(linear(x)), atol=1e-6)
        True
        >>> model = nn.Sequential(linear, scale, nn.ReLU()).eval()
        >>> fused, report = torchwire.fuse(model, x, rules=rules)
        >>> print(report)
        merged: 0 + 1 -> Linear(in_features=8, out_features=4, bias=True)
    """
    for name, module in (("first", first), ("second", second)):
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"merge expected nn.Module arguments, got {type(module).__name__} as {name}"
            )
    table = _table(rules, "merge")
    kinds = (_kind(first), _kind(second))
    rule = table.get(kinds)
    if rule is None:
        raise TypeError(_unsupported(*kinds, table))
    for name, module in (("first", first), ("second", second)):
        _surgery.check_plain(module, f"the {name} module ({_kind(module).__name__})", "merge")
    merged = rule(first, second, allow_border=allow_border)
    if not isinstance(merged, nn.Module):
        raise TypeError(
            f"merge: the rule for {kinds[0].__name__} then {kinds[1].__name__} returned "
            f"{type(merged).__name__}; a merge rule returns an nn.Module"
        )
    return _surgery.rebuilt_from(merged, [first, second], first.training)


def _kind(m: nn.Module) -> type[nn.Module]:
    """``m``'s layer type: for a parametrized module, the class the parametrization wraps
    (so the pair is found, then refused for its parametrization)."""
    if parametrize.is_parametrized(m):
        return cast("type[nn.Module]", type(m).__bases__[0])
    return type(m)


def merge_rules(rules: Rules | None = None) -> Rules:
    """The rule table :func:`merge` and :func:`torchwire.fuse` apply: :data:`MERGE_RULES`
    with ``rules`` added (theirs win over a built-in rule for the same pair), checked.

    Examples::

        >>> (nn.Linear, nn.BatchNorm1d) in torchwire.merging.merge_rules()
        True
    """
    return _table(rules, "merge_rules")


def _table(rules: Rules | None, caller: str) -> Rules:
    """:data:`MERGE_RULES` with the user's ``rules`` added (theirs win), checked."""
    if rules is None:
        return MERGE_RULES
    if not isinstance(rules, Mapping):
        raise TypeError(
            f"{caller} expected rules as a mapping {{(first type, second type): rule}}, got "
            f"{type(rules).__name__}"
        )
    for pair, rule in rules.items():
        kinds = pair if isinstance(pair, tuple) and len(pair) == 2 else ()
        if not kinds or not all(isinstance(k, type) and issubclass(k, nn.Module) for k in kinds):
            raise TypeError(
                f"{caller} expected rules keyed by pairs of nn.Module types, e.g. "
                f"{{(nn.Linear, MyScale): rule}}, got the key {pair!r}"
            )
        if not callable(rule):
            raise TypeError(
                f"{caller}: rules maps {pair[0].__name__} then {pair[1].__name__} to a "
                f"{type(rule).__name__}; expected a function rule(first, second, *, "
                "allow_border) -> nn.Module"
            )
    return {**MERGE_RULES, **rules}


def _unsupported(first: type[nn.Module], second: type[nn.Module], table: Rules) -> str:
    """The error for a pair not in ``table``, listing the pairs that are."""
    seconds: dict[type[nn.Module], list[str]] = {}
    for a, b in table:
        seconds.setdefault(a, []).append(b.__name__)
    listed = "; ".join(f"{a.__name__} then {_either(names)}" for a, names in seconds.items())
    pair = f"{first.__name__} then {second.__name__}"
    return (
        f"merge cannot merge {pair}; it merges {listed} (to add a pair, pass "
        f"rules={{({first.__name__}, {second.__name__}): rule}}: see torchwire.merge)"
    )


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


# ---------------------------------------------------------------- the built-in rules


def _values(m: Any) -> tuple[Wiring, torch.Tensor]:
    """A linear layer's wiring and its values in ``wiring.edges()`` order, in float64."""
    wiring, values = _surgery.edges(m)
    return wiring, values.double()


def _dense(wiring: Wiring, values: torch.Tensor) -> torch.Tensor:
    """The ``(out, in)`` weight of ``wiring`` holding ``values``, zeros where nothing
    connects."""
    edges = wiring.edges().to(values.device)
    dense = values.new_zeros(wiring.out_features, wiring.in_features)
    return dense.index_put((edges[:, 1], edges[:, 0]), values)


def _same_layer(
    m: Any, wiring: Wiring, values: torch.Tensor, bias: torch.Tensor | None
) -> nn.Module:
    """A layer of ``m``'s type and wiring (in its dtype and device) holding new connection
    values (``wiring.edges()`` order) and ``bias``. A shared BlockLinear comes back
    unshared: the new values differ from group to group."""
    dtype = m.weight.dtype
    return _surgery.rewired(m, wiring, values.to(dtype), None if bias is None else bias.to(dtype))


def _check_chain(first: Any, second: Any, gives: int, takes: int) -> None:
    if gives != takes:
        raise ValueError(
            f"merge: {type(first).__name__} gives {gives} features but "
            f"{type(second).__name__} takes {takes}"
        )


def _merge_dense(first: Any, second: Any, *, allow_border: bool) -> nn.Module:
    """``nn.Linear`` then ``nn.Linear``: one ``nn.Linear``."""
    _check_chain(first, second, first.out_features, second.in_features)
    weight, bias = compose_linear_weights(first.weight, first.bias, second.weight, second.bias)
    return _surgery.dense_linear(weight, bias)


def _merge_linears(first: Any, second: Any, *, allow_border: bool) -> nn.Module:
    """Two linear layers, one of them structured: the composed wiring decides the type."""
    (wiring1, values1), (wiring2, values2) = _values(first), _values(second)
    _check_chain(first, second, wiring1.out_features, wiring2.in_features)
    dtype = first.weight.dtype
    w2 = _dense(wiring2, values2)
    b1 = _f64(first.bias)
    bias = _add(None if b1 is None else w2 @ b1, _f64(second.bias))
    bias = None if bias is None else bias.to(dtype)
    weight = (w2 @ _dense(wiring1, values1)).to(dtype)
    wiring = wiring1.then(wiring2)
    if wiring.block_sizes is None and wiring.density > SPARSE_DENSITY:
        return _surgery.dense_linear(weight, bias)
    # Otherwise the smallest exact layer: BlockLinear, SparseLinear, or nn.Linear if full.
    edges = wiring.edges().to(weight.device)
    return _surgery.linear_for(wiring, weight[edges[:, 1], edges[:, 0]], bias)


def _padding(conv: Any) -> tuple[int, ...]:
    """A convolution's padding per spatial dimension (``"same"`` and ``"valid"`` resolved)."""
    if not isinstance(conv.padding, str):
        return tuple(conv.padding)
    if conv.padding == "valid":
        return (0,) * len(conv.kernel_size)
    totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    if any(t % 2 for t in totals):
        raise ValueError(
            f"merge: {conv} pads asymmetrically (padding='same' with an even kernel), which a "
            "merged convolution's padding cannot express; pad explicitly with nn.ZeroPad"
        )
    return tuple(t // 2 for t in totals)


def _border_problem(
    first: Any, second: Any, p1: tuple[int, ...], p2: tuple[int, ...]
) -> str | None:
    """Why ``second``'s padding makes the merge inexact near the border (``None``: exact)."""
    mode1 = first.padding_mode if any(p1) else "zeros"
    mode2 = second.padding_mode
    no_bias = first.bias is None or not bool(first.bias.any())
    pointwise = all(k == 1 for k in first.kernel_size) and all(s == 1 for s in first.stride)
    if pointwise and not any(p1) and (mode2 != "zeros" or no_bias):
        return None  # a 1x1, stride-1 first convolution commutes with padding
    reach = [d * (k - 1) for d, k in zip(first.dilation, first.kernel_size, strict=True)]
    padded = [i for i, q in enumerate(p2) if q]
    fits = all(reach[i] <= p1[i] for i in padded)
    if mode2 == "zeros" and mode1 == "zeros" and no_bias and fits:
        return None  # first's output is exactly zero past the border, as padding assumes
    keeps_size = all(first.stride[i] == 1 and 2 * p1[i] == reach[i] for i in padded)
    if mode2 == mode1 == "circular" and keeps_size:
        return None  # first is a convolution on the circle (same size), and so is the merge
    return (
        f"merge: {second} pads the output of {first} (padding={p2}, padding_mode="
        f"{mode2!r}), so near the border it reads padding where the merged convolution would "
        "read the first convolution's own output there (its bias, or its response to the "
        "image edge). The merge is exact when the second convolution does not pad; or when "
        "it pads with zeros and the first has no bias, pads with zeros and its kernel fits "
        "in that padding (dilation * (kernel_size - 1) <= padding, e.g. a 3x3 with padding "
        "2); or when the first is a 1x1 with stride 1 and no padding (and no bias, if the "
        "second pads with zeros); or when both pad circularly and the first keeps the size "
        "(stride 1, 2 * padding = dilation * (kernel_size - 1)). Pass allow_border=True to "
        "accept different values in the outermost outputs"
    )


def _merge_convs(first: Any, second: Any, *, allow_border: bool) -> nn.Module:
    """A convolution then one of the same kind: one convolution (see the module notes)."""
    if second.in_channels != first.out_channels:
        raise ValueError(
            f"merge: {first} gives {first.out_channels} channels but {second} takes "
            f"{second.in_channels}"
        )
    p1, p2 = _padding(first), _padding(second)
    weight, bias, dilation, groups = compose_conv_weights(
        first.weight,
        first.bias,
        second.weight,
        second.bias,
        stride1=first.stride,
        dilation1=first.dilation,
        dilation2=second.dilation,
        groups1=first.groups,
        groups2=second.groups,
    )
    stride = tuple(a * b for a, b in zip(first.stride, second.stride, strict=True))
    grown = tuple(a + s * b for a, s, b in zip(p1, first.stride, p2, strict=True))
    mode = first.padding_mode if any(p1) else "zeros"
    if not any(p2):
        padding = p1
    else:
        problem = _border_problem(first, second, p1, p2)
        if problem is not None and not allow_border:
            raise ValueError(problem)
        pointwise = problem is None and not any(p1) and all(k == 1 for k in first.kernel_size)
        if pointwise and second.padding_mode != "zeros":
            padding, mode = p2, second.padding_mode
        else:
            padding = grown
            mode = (
                second.padding_mode
                if problem is not None and second.padding_mode != "zeros"
                else mode
            )
    merged: nn.Module = _surgery.conv_like(
        first,
        weight,
        bias,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )
    return merged


def _check_norm(bn: Any, channels: int, layer: nn.Module, where: str) -> None:
    if bn.training:
        raise ValueError(
            f"merge folds the running statistics of {bn}, which is in training mode (it "
            "normalises by batch statistics); call .eval() on the model first"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            f"merge cannot fold {bn}: it tracks no running statistics "
            "(track_running_stats=False), so it always normalises by batch statistics"
        )
    if bn.num_features != channels:
        raise ValueError(
            f"merge: {bn} normalises {bn.num_features} features but {layer} {where} {channels}"
        )


def _fold_after_conv(conv: Any, bn: Any, *, allow_border: bool) -> nn.Module:
    """A convolution then its BatchNorm: the convolution, scaled per output channel."""
    _check_norm(bn, conv.out_channels, conv, "gives")
    w, b = fold_batchnorm_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    folded: nn.Module = _surgery.conv_like(conv, w, b)
    return folded


def _fold_after_linear(layer: Any, bn: Any, *, allow_border: bool) -> nn.Module:
    """A linear layer then a BatchNorm1d: the same layer, scaled per output."""
    wiring, values = _values(layer)
    _check_norm(bn, wiring.out_features, layer, "gives")
    scale, shift = _bn_scale_shift(bn)
    outputs = wiring.edges()[:, 1].to(values.device)
    bias = shift if layer.bias is None else layer.bias.detach().double() * scale + shift
    return _same_layer(layer, wiring, values * scale[outputs], bias)


def _fold_before_conv(bn: Any, conv: Any, *, allow_border: bool) -> nn.Module:
    """A BatchNorm then a convolution: the convolution, scaled per input channel."""
    _check_norm(bn, conv.in_channels, conv, "takes")
    shift = _bn_scale_shift(bn)[1]
    padded = any(_padding(conv)) and conv.padding_mode == "zeros"
    if padded and bool(shift.any()) and not allow_border:
        raise ValueError(
            f"merge: {conv} pads the output of {bn} with zeros, but folding the "
            "BatchNorm into it would pad its input instead, where the normalised value "
            "of zero is its shift (beta - mean * scale), not zero. Exact when the "
            "convolution does not pad or pads by copying (padding_mode='reflect', "
            "'replicate' or 'circular'); pass allow_border=True to accept different "
            "values in the outermost outputs"
        )
    w, b = fold_input_batchnorm_weights(
        conv.weight,
        conv.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
        groups=conv.groups,
    )
    folded: nn.Module = _surgery.conv_like(conv, w, b)
    return folded


def _fold_before_linear(bn: Any, layer: Any, *, allow_border: bool) -> nn.Module:
    """A BatchNorm1d then a linear layer: the same layer, scaled per input."""
    wiring, values = _values(layer)
    _check_norm(bn, wiring.in_features, layer, "takes")
    scale, shift = _bn_scale_shift(bn)
    edges = wiring.edges().to(values.device)
    bias = torch.zeros(wiring.out_features, dtype=torch.float64, device=values.device)
    bias = bias.index_add(0, edges[:, 1], values * shift[edges[:, 0]])
    if layer.bias is not None:
        bias = bias + layer.bias.detach().double()
    return _same_layer(layer, wiring, values * scale[edges[:, 0]], bias)


def _built_in_rules() -> dict[tuple[type[nn.Module], type[nn.Module]], MergeRule]:
    table: dict[tuple[type[nn.Module], type[nn.Module]], MergeRule] = {}
    for first, second in itertools.product(_surgery.LINEARS, repeat=2):
        table[first, second] = _merge_linears
    table[nn.Linear, nn.Linear] = _merge_dense
    for linear in _surgery.LINEARS:
        table[linear, nn.BatchNorm1d] = _fold_after_linear
    for conv, norm in _surgery.NORM_OF.items():
        table[conv, conv] = _merge_convs
        table[conv, norm] = _fold_after_conv
    for linear in _surgery.LINEARS:
        table[nn.BatchNorm1d, linear] = _fold_before_linear
    for conv, norm in _surgery.NORM_OF.items():
        table[norm, conv] = _fold_before_conv
    return table


MERGE_RULES: Rules = MappingProxyType(_built_in_rules())
"""The built-in merge rules, ``{(first type, second type): rule}`` (read-only; pass more to
:func:`merge` or :func:`torchwire.fuse` as ``rules``). Types match exactly: a subclass may compute
something else."""


def __getattr__(name: str) -> Any:
    """``fuse`` and ``FuseReport`` moved to :mod:`torchwire.fusion`, beside ``fuse_parallel``;
    the old import path still works, with a DeprecationWarning."""
    if name in ("fuse", "FuseReport"):
        import warnings

        from torchwire import fusion

        warnings.warn(
            f"torchwire.merging.{name} moved to torchwire.fusion.{name} (also torchwire.{name})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(fusion, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
