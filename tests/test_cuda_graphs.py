"""CUDA graphs: each layer's forward and backward run without a host synchronisation (under
``torch.cuda.set_sync_debug_mode("error")``), capture into one ``torch.cuda.CUDAGraph`` and
replay to what the eager layer computes, and ``torch.compile(mode="reduce-overhead")`` runs
them. Only with CUDA: CI has none; ``benchmarks/gpu_session.sh`` runs these where a GPU is
lent."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import torchwire as tw

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

LAYERS: dict[str, Callable[[], nn.Module]] = {
    "block_equal": lambda: tw.BlockLinear(256, 256, groups=4),
    "block_uneven": lambda: tw.BlockLinear([64, 32, 32], [32, 64, 32]),
    "sparse_dense": lambda: tw.SparseLinear(
        tw.Wiring.random(256, 128, density=0.5, seed=0), backend="dense"
    ),
    "sparse_csr": lambda: tw.SparseLinear(
        tw.Wiring.random(256, 128, density=0.05, seed=0), backend="csr"
    ),
    "sparse_block": lambda: tw.SparseLinear(
        tw.Wiring.block_diagonal([64, 64], [32, 32]), backend="block"
    ),
    "sparse_auto": lambda: tw.SparseLinear(tw.Wiring.random(256, 128, density=0.01, seed=0)),
    "multi": lambda: tw.MultiLinear([128, 64], 96),
}


def _inputs(layer: nn.Module, rows: int) -> list[torch.Tensor]:
    widths = layer.in_features if isinstance(layer, tw.MultiLinear) else [layer.in_features]
    return [torch.randn(rows, w, device="cuda", requires_grad=True) for w in widths]


@contextmanager
def _no_host_sync() -> Iterator[None]:
    """Any host synchronisation raises inside (what CUDA graph capture needs)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _step(layer: nn.Module, inputs: list[torch.Tensor], grad: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = layer(*inputs)
    out.backward(grad)
    return out


def _assert_matches_eager(
    layer: nn.Module, out: torch.Tensor, inputs: list[torch.Tensor], grad: torch.Tensor
) -> None:
    """``out`` and the gradients ``layer`` and ``inputs`` hold equal an eager step's on a
    copy of the layer."""
    reference = copy.deepcopy(layer)
    reference.zero_grad(set_to_none=True)
    fresh = [t.detach().clone().requires_grad_() for t in inputs]
    torch.testing.assert_close(out, _step(reference, fresh, grad))
    for ours, theirs in zip(inputs, fresh, strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad)
    for ours, theirs in zip(layer.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("name", list(LAYERS))
def test_forward_and_backward_capture_and_replay_without_host_synchronisation(name: str) -> None:
    torch.manual_seed(0)
    layer = LAYERS[name]().cuda()
    static = _inputs(layer, 64)
    grad = torch.randn(64, layer.out_features, device="cuda")  # type: ignore[arg-type]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up: what calls derive once is derived here
            layer.zero_grad(set_to_none=True)
            _step(layer, static, grad)
        with _no_host_sync():  # a warm eager call
            _step(layer, static, grad)
    torch.cuda.current_stream().wait_stream(side)
    layer.zero_grad(set_to_none=True)
    for t in static:
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), _no_host_sync():
        out = _step(layer, static, grad)
    for _ in range(2):  # new inputs into the captured memory, then the graph again
        with torch.no_grad():
            for t in static:
                t.copy_(torch.randn_like(t))
        graph.replay()
    torch.cuda.synchronize()
    _assert_matches_eager(layer, out, static, grad)


@pytest.mark.parametrize("name", list(LAYERS))
def test_compiled_with_cuda_graphs_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = LAYERS[name]().cuda()
    compiled = torch.compile(layer, mode="reduce-overhead", fullgraph=True)
    grad = torch.randn(64, layer.out_features, device="cuda")  # type: ignore[arg-type]
    for _ in range(4):  # warm-up, recording, then replays
        torch.compiler.cudagraph_mark_step_begin()
        inputs = _inputs(layer, 64)
        layer.zero_grad(set_to_none=True)
        out = _step(compiled, inputs, grad).clone()
        _assert_matches_eager(layer, out, inputs, grad)
