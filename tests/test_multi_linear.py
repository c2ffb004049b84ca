"""MultiLinear and functional.multi_linear: equal to one nn.Linear over the concatenated
inputs (init included), in both call forms, traceable inside branching Sequentials."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchwire as tw
from tests import reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_init_is_one_nn_linear_split_by_input(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    linear = nn.Linear(8, 10, dtype=dtype)
    torch.manual_seed(3)
    m = tw.MultiLinear([5, 3], 10, dtype=dtype)
    assert torch.equal(m.to_dense().weight, linear.weight)
    assert m.bias is not None
    assert torch.equal(m.bias, linear.bias)


def test_both_call_forms_equal_the_dense_layer_on_concatenated_inputs() -> None:
    torch.manual_seed(0)
    m = tw.MultiLinear([5, 3, 2], 4).double()
    xs = [torch.randn(2, 6, n, dtype=torch.float64, requires_grad=True) for n in (5, 3, 2)]
    y = m(*xs)
    torch.testing.assert_close(m(tuple(xs)), y)
    torch.testing.assert_close(y, reference.multi_linear(xs, list(m.weights), m.bias))
    torch.testing.assert_close(y, m.to_dense()(torch.cat(xs, -1)))
    grads = torch.autograd.grad(y.sum(), xs)
    for g, w in zip(grads, m.weights, strict=True):
        torch.testing.assert_close(g, w.sum(0).expand_as(g))


def test_functional_errors_name_expected_and_received() -> None:
    w = [torch.randn(4, 5), torch.randn(4, 3)]
    with pytest.raises(ValueError, match=r"one weight per input .* 1 inputs and 2 weights"):
        tw.functional.multi_linear([torch.randn(2, 5)], w)
    with pytest.raises(TypeError, match=r"input 1 to be a Tensor, got list"):
        tw.functional.multi_linear([torch.randn(2, 5), [1.0]], w)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expected bias to be a Tensor or None, got list"):
        tw.functional.multi_linear([torch.randn(2, 5), torch.randn(2, 3)], w, [0.0] * 4)  # type: ignore[arg-type]


def test_two_input_two_head_network_traces_compiles_and_trains() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        tw.MultiLinear([5, 5], 10),
        nn.Tanh(),
        tw.Parallel(nn.Linear(10, 3), nn.Linear(10, 3)),
    )
    x1, x2 = torch.randn(64, 5), torch.randn(64, 5)
    target_w, target_v = x1[:, :3] - x2[:, :3], x1[:, 2:] * 0.5
    traced = torch.fx.symbolic_trace(model)
    for a, b in zip(traced((x1, x2)), model((x1, x2)), strict=True):
        torch.testing.assert_close(a, b)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)
    for a, b in zip(compiled((x1, x2)), model((x1, x2)), strict=True):
        torch.testing.assert_close(a, b)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        w, v = model((x1, x2))
        loss = nn.functional.mse_loss(w, target_w) + nn.functional.mse_loss(v, target_v)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_a_parametrized_weight_is_read_and_the_input_count_still_checked() -> None:
    torch.manual_seed(0)
    m = tw.MultiLinear([2, 2], 3).double()
    torch.nn.utils.parametrize.register_parametrization(m.weights, "0", _Doubled())
    x1, x2 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    w1, w2 = 2 * m.weights.parametrizations["0"].original, m.weights[1]
    expected = x1 @ w1.T + x2 @ w2.T + m.bias
    torch.testing.assert_close(m(x1, x2), expected)
    with pytest.raises(ValueError, match="MultiLinear has 2 inputs of sizes"):
        m(x1)  # as many inputs as plain (unparametrized) weights: still one too few


class _Doubled(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


@pytest.mark.parametrize(
    ("first", "second", "w_out"),
    [((1, 2), (5, 4), (3, 3)), ((1, 2), (0, 4), (3, 3)), ((5, 2), (5, 4), (1, 3))],
    ids=["rows-broadcast", "empty-second", "outputs-broadcast"],
)
def test_inputs_and_weights_that_would_broadcast_are_refused(
    first: tuple[int, int], second: tuple[int, int], w_out: tuple[int, int]
) -> None:
    xs = (torch.randn(first), torch.randn(second))
    ws = (torch.randn(w_out[0], 2), torch.randn(w_out[1], 4))
    with pytest.raises(ValueError, match="multi_linear expected"):
        tw.functional.multi_linear(xs, ws)


def test_autocast_computes_in_the_autocast_dtype() -> None:
    torch.manual_seed(0)
    m = tw.MultiLinear([2, 3], 4)
    x1, x2 = torch.randn(5, 2), torch.randn(5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x1, x2)
        expected = torch.nn.Linear(5, 4)(torch.cat([x1, x2], -1))  # what nn.Linear gives
    assert y.dtype == expected.dtype == torch.bfloat16
    dense = x1 @ m.weights[0].T + x2 @ m.weights[1].T + m.bias
    torch.testing.assert_close(y.float(), dense, atol=0.05, rtol=0.02)
