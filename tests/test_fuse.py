"""fuse: the whole-model pass merges chains of linear operators, folds BatchNorm and fuses
Parallel heads, verified against the original, and never merges what it must not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchwire as tw
import torchwire.fusion
import torchwire.merging
from tests import reference
from tests.test_merging import Scale, linear_then_scale

D = torch.float64


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_conv_bn_conv_then_relu_then_two_linears_becomes_smaller_and_equal() -> None:
    """The issue's model: conv -> BN -> conv (no activation) -> ReLU -> linear -> linear."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, dtype=D),
        reference.trained_batchnorm(nn.BatchNorm2d, 16),
        nn.Conv2d(16, 4, 3, dtype=D),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 64, dtype=D),
        nn.Identity(),
        nn.Linear(64, 10, dtype=D),
    ).eval()
    x = torch.randn(5, 3, 10, 10, dtype=D)
    fused, report = tw.fuse(model, x)  # verified on x
    torch.testing.assert_close(fused(x), model(x), rtol=1e-10, atol=1e-10)
    assert _count(fused) < _count(model)
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in fused.modules() if isinstance(m, nn.Linear)]
    assert len(convs) == len(linears) == 1  # conv+BN+conv is one conv, linear+linear one linear
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert convs[0].kernel_size == (5, 5)
    assert len(report.merged) == 3
    assert report.removed == ["6 (Identity)"]
    assert any(isinstance(m, nn.ReLU) for m in fused.modules())  # the nonlinearity stays


def test_parallel_heads_are_fused_and_verified() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        tw.MultiLinear([5, 5], 10, dtype=D),
        nn.ReLU(),
        tw.Parallel(nn.Linear(10, 3, dtype=D), nn.Linear(10, 3, dtype=D)),
    ).eval()
    inputs = (torch.randn(4, 5, dtype=D), torch.randn(4, 5, dtype=D))
    fused, report = tw.fuse(model, (inputs,))
    assert len(report.fused) == 1
    assert any(isinstance(m, tw.FusedParallel) for m in fused.modules())
    # Two heads became one layer (the same weights: fusing side by side removes none).
    linears = [m for m in fused.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1
    assert _count(fused) == _count(model)
    for a, b in zip(fused(inputs), model(inputs), strict=True):
        torch.testing.assert_close(a, b)


def test_nothing_merges_across_a_nonlinearity_or_an_unknown_module() -> None:
    class Scale(nn.Module):  # state fuse does not understand
        def __init__(self) -> None:
            super().__init__()
            self.factor = nn.Parameter(torch.tensor(2.0, dtype=D))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.factor

    model = nn.Sequential(
        nn.Linear(4, 4, dtype=D),
        nn.ReLU(),
        nn.Linear(4, 4, dtype=D),
        Scale(),
        nn.Linear(4, 2, dtype=D),
    ).eval()
    fused, report = tw.fuse(model, torch.randn(3, 4, dtype=D))
    assert report.merged == []
    assert _count(fused) == _count(model)


def test_inexact_and_growing_merges_are_skipped_with_their_reason() -> None:
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, dtype=D),
        nn.Conv2d(8, 8, 3, padding=1, dtype=D),  # pads the first's output: not exact
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, groups=8, dtype=D),  # depthwise then pointwise: a dense 3x3 is
        nn.Conv2d(8, 32, 1, dtype=D),  # larger than both
    ).eval()
    x = torch.randn(2, 8, 9, 9, dtype=D)
    fused, report = tw.fuse(model, x)
    assert report.merged == []
    assert any("0 + 1: merge:" in line and "allow_border" in line for line in report.skipped)
    assert any(
        line.startswith("3 + 4: the merged layer would hold 2336 weights")
        for line in report.skipped
    )
    torch.testing.assert_close(fused(x), model(x))


def test_fuse_needs_eval_mode_and_leaves_the_model_unchanged() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"eval mode .* model.eval\(\)"):
        tw.fuse(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused, _ = tw.fuse(model.eval())
    assert isinstance(model[0], nn.Linear)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert len([m for m in fused.modules() if isinstance(m, nn.Linear)]) == 1
    with pytest.raises(TypeError, match=r"fuse expected an nn.Module, got function"):
        tw.fuse(lambda x: x)  # type: ignore[arg-type]


def test_a_wrong_merge_is_caught_by_the_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check on example_inputs can fail: a merge that is off by a little is reported."""
    real = torchwire.merging.merge

    def off_by_a_little(first: nn.Module, second: nn.Module, **kwargs: bool) -> nn.Module:
        merged = real(first, second, **kwargs)
        with torch.no_grad():
            merged.bias.add_(1e-3)  # type: ignore[operator, union-attr]
        return merged

    monkeypatch.setattr(torchwire.merging, "merge", off_by_a_little)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match=r"fuse changed the model's output"):
        tw.fuse(model, torch.randn(3, 4))


def test_a_user_merge_rule_works_in_fuse() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6, dtype=D), Scale(6), nn.ReLU(), nn.Linear(6, 2, dtype=D), Scale(2)
    ).eval()
    x = torch.randn(3, 4, dtype=D)
    _, report = tw.fuse(model, x)
    assert report.merged == []  # fuse does not know Scale
    fused, report = tw.fuse(model, x, rules={(nn.Linear, Scale): linear_then_scale})
    assert [line.split(" -> ")[0] for line in report.merged] == ["0 + 1", "3 + 4"]
    assert not any(isinstance(m, Scale) for m in fused.modules())
    torch.testing.assert_close(fused(x), model(x), rtol=1e-10, atol=1e-10)


def test_fuse_skips_a_hooked_layer_with_the_reason_and_keeps_frozen_parameters() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    model[1].requires_grad_(False)
    model[3].register_forward_hook(lambda m, i, o: o)
    model.append(nn.Linear(2, 2))
    fused, report = tw.fuse(model.eval(), torch.randn(3, 4))
    assert [line.split(" -> ")[0] for line in report.merged] == ["0 + 1"]
    assert any(
        line.startswith("3 + 4: merge cannot rebuild the first module (Linear): it has hooks")
        for line in report.skipped
    )
    merged = fused.get_submodule("0")
    assert not merged.training
    assert not any(p.requires_grad for p in merged.parameters())


def test_fuse_moved_beside_fuse_parallel_and_the_old_path_warns() -> None:
    assert tw.fuse is torchwire.fusion.fuse
    with pytest.warns(DeprecationWarning, match=r"torchwire\.merging\.fuse moved to"):
        old = torchwire.merging.fuse
    assert old is torchwire.fusion.fuse
    with pytest.warns(DeprecationWarning, match=r"merging\.FuseReport moved"):
        assert torchwire.merging.FuseReport is tw.FuseReport
