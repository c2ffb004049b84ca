"""Batched-matmul block-linear backends: one ``bmm`` per run of equally shaped groups (or
per position of a repeating pattern of shapes).

The products are cheap; moving activations between the natural row-major layout
``(M, G * i)`` and a layout batched GEMM accepts is what costs. Four ways, each a
registered backend because each wins somewhere (see ``torchwire bench``):

* ``bmm`` (strided): no copies at all. The GEMMs read strided views of the input and write
  straight into the output's group-major view; ATen hands each block to BLAS with a
  leading dimension. Best for large blocks and large batches.
* ``bmm_packed``: copies activations group-major ``(G, M, i)`` and contiguous, so MKL's
  batched GEMM takes all blocks in one call. Best for mid-sized blocks at small batches.
* ``bmm_t`` (transposed): copies activations feature-major ``(G, i, M)`` with the fast 2-D
  transpose, so each block is a wide GEMM over the batch. Best for small blocks (8 wide).
* ``bmm_autograd``: plain differentiable ops (strided reads, a contiguous group-major result,
  one copy back), differentiated by autograd's C++ formulas with no Python backward. Least
  fixed cost per call: best for mid-sized blocks at small batches, above all in inference.

The first three write forward and backward by hand (three batched products per call), into
preallocated tensors and strided views (``out=``): code that torch.compile and torch.export
cannot trace and torch.func transforms cannot run. They refuse those problems
(``BlockProblem.compiling``, ``functorch``), so there ``select`` picks ``bmm_autograd`` or
``dense``, which run. Their backward stays differentiable: when autograd records it
(``create_graph=True``, which the forward cannot know), it computes the same two products
in allocating ops with strided reads, as ``bmm_autograd``'s backward does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from torchwire.backends import (
    GATHER,
    LAUNCH_CUDA,
    PATTERN,
    Backend,
    BlockLayout,
    BlockProblem,
    cached_for_device,
    register,
    weighted,
)

STRIDED, PACKED, TRANSPOSED, AUTOGRAD = "strided", "packed", "transposed", "autograd"
_CHUNK_ROWS = 128  # rows packed at a time: (128, G * i) floats stay in a core's L2 cache


def _feature_major(t: torch.Tensor) -> torch.Tensor:
    """``(M, n, k)`` -> contiguous ``(n, k, M)`` through one 2-D transpose."""
    rows, n, k = t.shape
    return t.reshape(rows, n * k).t().contiguous().view(n, k, rows)


def _from_feature_major(t: torch.Tensor) -> torch.Tensor:
    """Contiguous ``(n, k, M)`` -> contiguous ``(M, n, k)`` through one 2-D transpose."""
    n, k, rows = t.shape
    return t.view(n * k, rows).t().contiguous().view(rows, n, k)


def _grouped_matmul(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, mode: str
) -> None:
    """``y[:, g] = x[:, g] @ W[g]^T + b[g]`` for ``x`` ``(M, G, i)``, ``W`` ``(G, o, i)``,
    ``b`` ``(G, o)``, written into ``y`` ``(M, G, o)``. All may be strided views."""
    if mode == TRANSPOSED:
        y.copy_(_from_feature_major(torch.bmm(weight, _feature_major(x))))
        if bias is not None:
            y.add_(bias)
    elif mode == PACKED:  # row chunks keep the packed copies in cache
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            chunk = slice(start, start + _CHUNK_ROWS)
            yg = torch.bmm(x[chunk].transpose(0, 1).contiguous(), weight.transpose(1, 2))
            if bias is None:
                y[chunk].copy_(yg.transpose(0, 1))
            else:  # the copy back to row-major order adds the bias at no extra pass
                torch.add(yg.transpose(0, 1), bias, out=y[chunk])
    elif bias is None:  # strided: the GEMMs write straight into y
        torch.bmm(x.transpose(0, 1), weight.transpose(1, 2), out=y.transpose(0, 1))
    else:
        torch.baddbmm(
            bias.unsqueeze(1), x.transpose(0, 1), weight.transpose(1, 2), out=y.transpose(0, 1)
        )


def _grouped_matmul_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    grad: torch.Tensor,
    mode: str,
    grad_x: torch.Tensor | None,
    grad_w: torch.Tensor | None,
) -> None:
    """Gradients of :func:`_grouped_matmul` for its input and weight, written into
    ``grad_x`` ``(M, G, i)`` and ``grad_w`` ``(G, o, i)`` (either may be None; ``grad_w``
    must be zero-filled for the packed mode, which accumulates over row chunks)."""
    if mode == TRANSPOSED:
        gt = _feature_major(grad)
        if grad_x is not None:
            grad_x.copy_(_from_feature_major(torch.bmm(weight.transpose(1, 2), gt)))
        if grad_w is not None:
            torch.bmm(gt, _feature_major(x).transpose(1, 2), out=grad_w)
    elif mode == PACKED:  # row chunks keep the packed copies in cache
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            chunk = slice(start, start + _CHUNK_ROWS)
            gg = grad[chunk].transpose(0, 1).contiguous()
            if grad_x is not None:
                grad_x[chunk].copy_(torch.bmm(gg, weight).transpose(0, 1))
            if grad_w is not None:
                grad_w.baddbmm_(gg.transpose(1, 2), x[chunk].transpose(0, 1).contiguous())
    else:  # strided: the GEMMs write straight into the gradients
        gg = grad.transpose(0, 1)
        if grad_x is not None:
            torch.bmm(gg, weight, out=grad_x.transpose(0, 1))
        if grad_w is not None:
            torch.bmm(gg.transpose(1, 2), x.transpose(0, 1), out=grad_w)


def _pieces(layout: BlockLayout, t: torch.Tensor, role: str) -> list[torch.Tensor]:
    """Views of ``t`` for each batched call of ``layout``.

    ``role`` says what ``t`` is: ``"in"`` ``(M, in_features)`` or ``"out"``
    ``(M, out_features)`` activations (views ``(M, n, size)``), ``"weight"`` (views
    ``(n, o, i)``) or ``"bias"`` (views ``(n, o)``). Calls are one per run of equally
    shaped groups, or one per position of a repeating pattern (strided views).
    """
    if len(layout.runs) == 1:  # equal groups: one call, plain views
        count, in_size, out_size = layout.runs[0]
        if role == "weight":
            return [t.view(count, out_size, in_size)]
        if role == "bias":
            return [t.view(count, out_size)]
        return [t.reshape(t.shape[0], count, in_size if role == "in" else out_size)]
    if layout.plan == PATTERN:
        period = layout.period
        repeats = layout.groups // period
        ins, outs = layout.in_sizes[:period], layout.out_sizes[:period]
        if role in ("in", "out"):
            sizes = ins if role == "in" else outs
            parts = t.reshape(t.shape[0], repeats, sum(sizes)).split_with_sizes(sizes, -1)
            return list(parts)
        if role == "bias":
            return list(t.view(repeats, -1).split_with_sizes(outs, -1))
        blocks = t.view(repeats, -1).split_with_sizes(
            [i * o for i, o in zip(ins, outs, strict=True)], -1
        )
        return [w.view(repeats, o, i) for w, i, o in zip(blocks, ins, outs, strict=True)]
    runs = layout.runs
    if role in ("in", "out"):
        widths = [(n, i if role == "in" else o) for n, i, o in runs]
        return [
            part.reshape(t.shape[0], n, size)
            for part, (n, size) in zip(
                t.split_with_sizes([n * k for n, k in widths], -1), widths, strict=True
            )
        ]
    if role == "bias":
        return [
            b.view(n, o)
            for b, (n, _, o) in zip(
                t.split_with_sizes([n * o for n, _, o in runs]), runs, strict=True
            )
        ]
    blocks = t.split_with_sizes([n * i * o for n, i, o in runs])
    return [w.view(n, o, i) for w, (n, i, o) in zip(blocks, runs, strict=True)]


def _forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: BlockLayout, mode: str
) -> torch.Tensor:
    """The layer's output, each batched call writing into its part of one output tensor."""
    rows = x.shape[0]
    y = x.new_empty(rows, layout.out_features)
    if len(layout.runs) == 1:  # equal groups: one call on plain views, no lists to build
        n, i, o = layout.runs[0]
        b = None if bias is None else bias.view(n, o)
        _grouped_matmul(x.reshape(rows, n, i), weight.view(n, o, i), b, y.view(rows, n, o), mode)
        return y
    xs, ws, ys = (
        _pieces(layout, x, "in"),
        _pieces(layout, weight, "weight"),
        _pieces(layout, y, "out"),
    )
    bs = [None] * len(xs) if bias is None else _pieces(layout, bias, "bias")
    for xp, wp, bp, yp in zip(xs, ws, bs, ys, strict=True):
        _grouped_matmul(xp, wp, bp, yp, mode)
    return y


def _join(parts: list[torch.Tensor], layout: BlockLayout, rows: int, features: int) -> torch.Tensor:
    """``(M, features)`` activations from their ``(M, n, size)`` parts (one per batched call,
    as :func:`_pieces` splits them)."""
    if len(parts) == 1:
        return parts[0].reshape(rows, features)
    if layout.plan == PATTERN:  # (M, repeats, size_p) per position: join within each repeat
        return torch.cat(parts, dim=-1).reshape(rows, features)
    return torch.cat([part.flatten(1) for part in parts], dim=-1)


def _join_weight(parts: list[torch.Tensor], layout: BlockLayout, shape: torch.Size) -> torch.Tensor:
    """A weight of ``shape`` from its ``(n, o, i)`` parts (as :func:`_pieces` splits it)."""
    if len(parts) == 1:
        return parts[0].reshape(shape)
    if layout.plan == PATTERN:  # (repeats, o_p, i_p) per position: join within each repeat
        repeats = layout.groups // layout.period
        return torch.cat([part.reshape(repeats, -1) for part in parts], dim=1).reshape(shape)
    return torch.cat([part.reshape(-1) for part in parts]).reshape(shape)


def _plain(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, layout: BlockLayout
) -> torch.Tensor:
    """:func:`_forward` in plain differentiable ops, so autograd's C++ formulas do the
    backward: the ``bmm_autograd`` backend (which torch.compile, torch.export and torch.func
    run; dynamo takes no strided ``out=``, inductor chooses layouts itself).

    Each batched call reads strided views of ``x`` and writes a contiguous group-major
    ``(n, M, o)`` result; one copy per call puts it back in row-major order."""
    xs, ws = _pieces(layout, x, "in"), _pieces(layout, weight, "weight")
    bs = [None] * len(xs) if bias is None else _pieces(layout, bias, "bias")
    ys = []
    for xp, wp, bp in zip(xs, ws, bs, strict=True):
        if bp is None:
            yp = torch.bmm(xp.transpose(0, 1), wp.transpose(1, 2))
        else:
            yp = torch.baddbmm(bp.unsqueeze(1), xp.transpose(0, 1), wp.transpose(1, 2))
        ys.append(yp.transpose(0, 1))
    return _join(ys, layout, x.shape[0], layout.out_features)


def _plain_grads(
    x: torch.Tensor,
    weight: torch.Tensor,
    grad: torch.Tensor,
    layout: BlockLayout,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of :func:`_forward` for its input and weight in differentiable ops
    (strided reads, allocated results): what the hand-written backward computes while
    autograd records it, so that it can be differentiated again."""
    xs, ws, gs = (
        _pieces(layout, x, "in"),
        _pieces(layout, weight, "weight"),
        _pieces(layout, grad, "out"),
    )
    grad_x = grad_w = None
    if need_x:  # (n, M, o) @ (n, o, i) per call
        parts = [
            torch.bmm(gp.transpose(0, 1), wp).transpose(0, 1) for gp, wp in zip(gs, ws, strict=True)
        ]
        grad_x = _join(parts, layout, x.shape[0], layout.in_features)
    if need_w:  # (n, o, M) @ (n, M, i) per call
        parts = [
            torch.bmm(gp.permute(1, 2, 0), xp.transpose(0, 1))
            for gp, xp in zip(gs, xs, strict=True)
        ]
        grad_w = _join_weight(parts, layout, weight.shape)
    return grad_x, grad_w


class _BlockMatmul(torch.autograd.Function):
    """:func:`_forward` with a hand-written backward that also writes into whole tensors
    (differentiable while autograd records it: :func:`_plain_grads`)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        layout: BlockLayout,
        mode: str,
    ) -> torch.Tensor:
        # Save x, not a packed copy: a copy made here has no graph back to x, which double
        # backward needs, and keeping both would double the saved activations.
        ctx.save_for_backward(x, weight)
        ctx.layout, ctx.mode, ctx.has_bias = layout, mode, bias is not None
        return _forward(x, weight, bias, layout, mode)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        layout = ctx.layout
        grad_b = grad.sum(0) if ctx.has_bias and need_b else None
        if torch.is_grad_enabled():  # create_graph: the same products, differentiable
            grad_x, grad_w = _plain_grads(x, weight, grad, layout, need_x, need_w)
            return grad_x, grad_w, grad_b, None, None
        grad_x, grad_w = _backward(x, weight, grad, layout, ctx.mode, need_x, need_w)
        return grad_x, grad_w, grad_b, None, None


def _backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    grad: torch.Tensor,
    layout: BlockLayout,
    mode: str,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input's and the weight's gradients (where needed), each batched call writing
    into its part of whole tensors."""
    grad_x = x.new_empty(x.shape) if need_x else None
    grad_w = None
    if need_w:  # only the packed mode accumulates (over row chunks)
        grad_w = (weight.new_zeros if mode == PACKED else weight.new_empty)(weight.shape)
    if len(layout.runs) == 1:  # equal groups: one call on plain views, no lists to build
        n, i, o = layout.runs[0]
        rows = x.shape[0]
        _grouped_matmul_backward(
            x.reshape(rows, n, i),
            weight.view(n, o, i),
            grad.reshape(rows, n, o),
            mode,
            None if grad_x is None else grad_x.view(rows, n, i),
            None if grad_w is None else grad_w.view(n, o, i),
        )
        return grad_x, grad_w
    xs, ws, gs = (
        _pieces(layout, x, "in"),
        _pieces(layout, weight, "weight"),
        _pieces(layout, grad, "out"),
    )
    gxs = [None] * len(xs) if grad_x is None else _pieces(layout, grad_x, "in")
    gws = [None] * len(xs) if grad_w is None else _pieces(layout, grad_w, "weight")
    for xp, wp, gp, gxp, gwp in zip(xs, ws, gs, gxs, gws, strict=True):
        _grouped_matmul_backward(xp, wp, gp, mode, gxp, gwp)
    return grad_x, grad_w


def _block_linear(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    layout: BlockLayout,
    mode: str,
    needs_grad: bool,
) -> torch.Tensor:
    """The layer in ``mode``, with ``layout``'s split. The hand-written modes run only where
    their backend accepts the problem (not while torch.compile or torch.export traces, nor
    under torch.func)."""
    rows = input.shape[0]
    if layout.shared:  # one block for every group: a single GEMM over all groups' rows
        shared = F.linear(input.reshape(rows, layout.groups, layout.in_sizes[0]), weight[0])
        return shared.flatten(1) if bias is None else shared.flatten(1) + bias
    if layout.plan == GATHER:  # groups of each shape together, computed as runs, put back
        inputs, weights, outputs, positions = _gather_index(layout, input.device)
        gathered = _block_linear(
            input.index_select(1, inputs),
            weight.index_select(0, weights),
            None if bias is None else bias.index_select(0, outputs),
            layout.gathered(),
            mode,
            needs_grad,
        )
        return gathered.index_select(1, positions)
    if mode == AUTOGRAD:
        return _plain(input, weight, bias, layout)
    if needs_grad:
        y: torch.Tensor = _BlockMatmul.apply(input, weight, bias, layout, mode)
        return y
    return _forward(input, weight, bias, layout, mode)  # no graph: skip the Function overhead


def _gather_index(layout: BlockLayout, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Index tensors of the gather plan on ``device``: input features, weights and outputs
    in shape-class order, and the output positions that restore group order."""

    def build() -> tuple[torch.Tensor, ...]:
        inputs, weights, outputs = layout.gather_order()
        order = torch.tensor(outputs, device=device)
        positions = torch.empty_like(order)
        positions[order] = torch.arange(len(outputs), device=device)
        return (
            torch.tensor(inputs, device=device),
            torch.tensor(weights, device=device),
            order,
            positions,
        )

    return cached_for_device("gather_index", layout, device, build)


_HAND_WRITTEN = {
    "compiling": "torch.compile and torch.export cannot trace its hand-written kernels (they "
    "write into preallocated tensors and strided views with out=); backend 'bmm_autograd' "
    "computes the same products in plain ops",
    "functorch": "torch.func transforms (grad, vmap, ...) cannot run its hand-written kernels "
    "(an autograd.Function writing into preallocated tensors); backend 'bmm_autograd' "
    "computes the same products in plain ops",
}


def _backend(name: str, mode: str) -> Backend:
    def supports(problem: BlockProblem) -> str | None:
        if problem.layout.shared:  # one F.linear, which runs everywhere
            if mode != STRIDED:
                return "a shared block runs as one GEMM, which backend 'bmm' computes"
            return None
        if mode != AUTOGRAD:
            if problem.compiling:
                return _HAND_WRITTEN["compiling"]
            if problem.functorch:
                return _HAND_WRITTEN["functorch"]
        return None

    def fn(
        input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, problem: BlockProblem
    ) -> torch.Tensor:
        return _block_linear(input, weight, bias, problem.layout, mode, problem.requires_grad)

    def bind(
        problem: BlockProblem, layout: BlockLayout, like: torch.Tensor
    ) -> Callable[..., torch.Tensor]:
        return functools.partial(
            _block_linear,
            layout=layout,
            mode=mode,
            needs_grad=problem.requires_grad,
        )

    def cost(problem: BlockProblem) -> float:
        return _cost_for(problem, problem.layout, mode)

    # Where a mode accepts a traced problem (bmm_autograd; bmm's shared GEMM), fn is plain
    # ops: standard ONNX ops too.
    return Backend(name, "block_linear", fn, supports, cost, bind, onnx=fn)


# Cost model, in units of one multiply-add of a large GEMM (block_dense uses the same units).
# CUDA: launch-bound at the sizes people use, so the model counts launches (autograd's
# untested there: counted like packing's, so the H100-fitted choice stands); fitted to
# `torchwire bench` runs on an H100 (benchmarks/results/). CPU: each mode's cost is a
# weighted sum of the counts `cost_features` gives, one set of weights per mode for
# inference and for training, fitted by `benchmarks/block_costs.py` (non-negative least
# squares on relative error) to interleaved timings of every mode on a 2-core AVX-512 CPU
# (MKL), training timed through AccumulateGrad as a training step runs it.
MODES = {"bmm": STRIDED, "bmm_packed": PACKED, "bmm_t": TRANSPOSED, "bmm_autograd": AUTOGRAD}
FEATURES = (
    "call",  # 1 per layer call: Python and dispatch
    "calls",  # batched calls (runs, or positions of the pattern)
    "macs",  # multiply-adds
    "blocks",  # blocks: per-block GEMM setup of strided calls
    "copied",  # activation elements, while the activations fit in cache
    "copied_far",  # activation elements, once they do not
    "short_rows",  # activation elements / the block's narrowest side: short rows
    "weight",  # weight elements: gradient copies into the parameter's layout
)
_CPU: dict[str, dict[bool, tuple[float, ...]]] = {  # mode: {training: weights of FEATURES}
    STRIDED: {
        False: (0, 4e6, 1.04, 52700, 82.6, 67.8, 133, 44.1),
        True: (4.38e6, 6.95e6, 3.02, 1.39e5, 126, 150, 623, 96.6),
    },
    PACKED: {
        False: (1.2e6, 2.97e6, 1.39, 29000, 64.8, 67.3, 268, 34.3),
        True: (3.56e6, 7.38e6, 3.73, 83000, 128, 152, 877, 123),
    },
    TRANSPOSED: {
        False: (1.19e6, 2.56e6, 1.16, 18400, 136, 198, 56.2, 56.7),
        True: (3.43e6, 8.17e6, 3.43, 77700, 337, 458, 21.9, 128),
    },
    AUTOGRAD: {
        False: (4.63e5, 2.84e6, 1.43, 17500, 33.1, 37.3, 452, 34.8),
        True: (0, 9.29e6, 3.82, 72500, 61.2, 117, 913, 192),
    },
}
_CACHE_BYTES = 2**20
# Per activation element the gather plan's index copies move (in cache, out of it): about
# what the fitted weights give a copy; the same for every mode, so it only weighs against
# the dense backend.
_GATHER_COPY = (40.0, 80.0)


def cost_features(problem: BlockProblem, layout: BlockLayout, mode: str) -> tuple[float, ...]:
    """The counts of ``problem`` (computed with ``layout``, its layout in a split) that the
    CPU cost model weighs, in the order of :data:`FEATURES`."""
    activation_bytes = (
        problem.rows * (layout.in_features + layout.out_features) * problem.dtype.itemsize
    )
    near_cache = activation_bytes <= _CACHE_BYTES
    macs = blocks = elements = short_rows = weight = 0.0
    for count, in_size, out_size in layout.classes if layout.plan == GATHER else layout.runs:
        narrow = min(in_size, out_size)
        block_macs = problem.rows * count * in_size * out_size
        block_elements = problem.rows * count * (in_size + out_size)
        macs += block_macs
        blocks += count
        elements += block_elements
        short_rows += block_elements / narrow
        weight += count * in_size * out_size
    if mode == AUTOGRAD and layout.calls > 1:  # the calls' results are joined by torch.cat
        elements += problem.rows * layout.out_features
    copied, far = (elements, 0.0) if near_cache else (0.0, elements)
    return (1.0, float(layout.calls), macs, blocks, copied, far, short_rows, weight)


def _cost_for(problem: BlockProblem, layout: BlockLayout, mode: str) -> float:
    """The cost of ``problem`` computed in ``mode`` with ``layout`` (its layout in a split)."""
    passes = 3 if problem.requires_grad else 1
    if problem.device_type != "cpu":
        launches = passes * layout.calls * (2 if mode == STRIDED else 4)
        if layout.calls > 1:
            launches += layout.calls
        if layout.plan == GATHER:
            launches += 3 * passes
        return launches * LAUNCH_CUDA + passes * problem.rows * layout.connections
    if layout.shared:  # one F.linear over every group's rows: never dearer than densifying
        return passes * problem.rows * layout.connections
    weights = _CPU[mode][problem.requires_grad]
    features = cost_features(problem, layout, mode)
    total = weighted(weights, features)
    if layout.plan == GATHER:  # index copies of inputs and outputs, there and back
        activations = problem.rows * (layout.in_features + layout.out_features)
        near_cache = activations * problem.dtype.itemsize <= _CACHE_BYTES
        per_copy = _GATHER_COPY[0] if near_cache else _GATHER_COPY[1]  # (rows may be symbolic)
        total += (4 if problem.requires_grad else 2) * per_copy * activations / 2
    return total


register(_backend("bmm", STRIDED))
register(_backend("bmm_packed", PACKED))
register(_backend("bmm_t", TRANSPOSED))
register(_backend("bmm_autograd", AUTOGRAD))
