"""The call paths of torchwire's layers and functions (private): input checks, the backend
choice and its memo, and the calls themselves. ``torchwire.functional`` is their public face."""

from __future__ import annotations

import functools
import operator
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from torchwire import backends
from torchwire._checks import check_size, is_int
from torchwire.backends import (
    BlockLayout,
    BlockProblem,
    IndexCache,
    SparseIndex,
    SparseProblem,
)
from torchwire.wiring import Wiring

__all__ = [
    "block_call",
    "block_plan",
    "check_bias",
    "check_is_tensor",
    "group_sizes",
    "index_of",
    "layout_of",
    "multi_call",
    "sparse_call",
    "sparse_plan",
]


def block_call(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    layout: BlockLayout,
    backend: str,
) -> torch.Tensor:
    """:func:`block_linear` once the weight is known to fit ``layout`` (what
    :class:`~torchwire.BlockLinear` calls, its layout built at construction)."""
    if torch._C._is_any_autocast_enabled():
        dtype = _autocast_dtype(input)
        if dtype is not None:
            with torch.autocast(input.device.type, enabled=False):
                input, weight, bias = _cast(dtype, input, weight, bias)
                return block_call(input, weight, bias, layout, backend)
    run: Callable[..., torch.Tensor] | None
    if _traced(input):  # the backend's plain function: nothing kept is read or written
        chosen, problem = block_plan(input, weight, bias, layout, backend)
        run = functools.partial(chosen.fn, problem=problem)
    else:
        key = _call_key(
            (layout, backend), input, weight, bias, layout.in_features, layout.out_features
        )
        run = _BLOCK_CALLS.get(key)
        if run is None:
            chosen, problem = backends.plan(
                "block_linear", backend, (layout, *key[1:6], False), _block_problem
            )
            run = _remember(_BLOCK_CALLS, key, chosen.bound(problem, layout, weight), input, weight)
    if input.dim() == 2:
        return run(input, weight, bias)
    shape = input.shape
    y = run(input.reshape(-1, layout.in_features), weight, bias)
    return y.reshape(*shape[:-1], layout.out_features)


# A call's backend, bound to its problem and structure (Backend.bound), memoised by
# signature: the structure, the backend asked for, the input's rows, dtype and device, whether
# autograd records, whether torch.func transforms run, the thread (bound calls may keep
# per-thread scratch memory) and the registry's generation. Block calls share one memo; a
# sparse call's lives in its index's cache. Each keeps at most as many calls (and so scratch
# matrices) as the scratch stores do.
_BLOCK_CALLS: dict[tuple[Any, ...], Callable[..., torch.Tensor]] = {}
_MEMO_SIZE = 256
_functorch = torch._C._are_functorch_transforms_active
_thread = threading.get_ident
_GENERATION = backends.generation  # [count of registrations]


def _traced(input: torch.Tensor) -> bool:
    """Whether a call runs for a traced graph: while torch.compile or torch.export traces,
    or on a tensor subclass's input (FakeTensors while make_fx traces), where calls take
    their backend's plain function and nothing kept is read or written."""
    return torch.compiler.is_compiling() or type(input) is not torch.Tensor


def _remember(
    memo: dict[Any, Any],
    key: tuple[Any, ...],
    run: Callable[..., torch.Tensor],
    *tensors: torch.Tensor,
) -> Callable[..., torch.Tensor]:
    """``run``, kept in ``memo`` under ``key`` where it may be (:func:`backends.keeping`: a
    call bound to fake ``tensors``, or under a FakeTensorMode, may hold fake tensors)."""
    if not backends.keeping(*tensors):
        return run
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = run
    return run


def block_plan(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    layout: BlockLayout,
    backend: str,
) -> tuple[backends.Backend, BlockProblem]:
    """Check a block_linear call (integer and identity comparisons only; the full checks
    run to word an error) and choose its backend (the only place that does), for the
    context it is called in (torch.compile or torch.export tracing, torch.func transforms)."""
    if not isinstance(input, torch.Tensor):
        check_is_tensor(input, weight, "block_linear")  # type: ignore[unreachable]
    key = _call_key(layout, input, weight, bias, layout.in_features, layout.out_features, False)
    return backends.plan("block_linear", backend, (*key, _traced(input)), _block_problem)


def _block_problem(
    layout: BlockLayout,
    rows: int,
    dtype: torch.dtype,
    device: torch.device,
    grad: bool,
    functorch: bool,
    compiling: bool,
) -> BlockProblem:
    return BlockProblem(layout, rows, dtype, device.type, grad, functorch, compiling)


def _call_key(
    head: Any,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
    out_features: int,
    kept: bool = True,
) -> tuple[Any, ...]:
    """``(head, rows, dtype, device, grad, functorch, thread, generation)``: the key of a
    kept call (its middle five, the plan's), after checking the input's shape, dtype and
    device and the bias against the weight (comparisons only; the full checks run to word
    an error). ``grad``: whether autograd records the call; ``functorch``: whether torch.func
    transforms run; the thread, as bound calls may keep per-thread scratch memory; the
    backend registry's generation. Without ``kept`` (for plans, which torch.compile may
    trace) the first six only. Tensors only (the caller checks); dtypes compare by identity
    (one object per dtype)."""
    shape = input.shape
    dtype = input.dtype
    device = input.device
    if (
        not shape
        or shape[-1] != in_features
        or dtype is not weight.dtype
        or device != weight.device
        or (
            bias is not None
            and (bias.shape != (out_features,) or bias.dtype is not dtype or bias.device != device)
        )
    ):
        _check_tensors(input, weight, bias, in_features, out_features)
    rows = shape[0] if len(shape) == 2 else input.numel() // in_features
    grad = torch.is_grad_enabled() and (
        input.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if kept:
        return head, rows, dtype, device, grad, _functorch(), _thread(), _GENERATION[0]
    return head, rows, dtype, device, grad, _functorch()


def _autocast_dtype(input: object) -> torch.dtype | None:
    """The autocast dtype for ``input``'s device while autocast is on there, else None."""
    if isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type):
        return torch.get_autocast_dtype(input.device.type)
    return None


def _cast(
    dtype: torch.dtype, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The three tensors in ``dtype`` (as ``F.linear`` casts them under autocast)."""
    return input.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def check_bias(bias: object, op: str) -> None:
    """A TypeError unless ``bias`` is a tensor or None."""
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"{op} expected bias to be a Tensor or None, got {type(bias).__name__}")


def check_is_tensor(input: object, weight: object, op: str, bias: object = None) -> None:
    """A TypeError unless ``input`` and ``weight`` are tensors and ``bias`` one or None."""
    check_bias(bias, op)
    for name, value in (("input", input), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{op} expected {name} to be a Tensor, got {type(value).__name__}"
                + (
                    "; a tuple here usually means a multi-output module (Split, Parallel) feeds "
                    "it: join its outputs first with torchwire.Concat() or torchwire.Sum(), or "
                    "apply one module per output with torchwire.Map(...)"
                    if name == "input" and isinstance(value, (tuple, list))
                    else ""
                )
            )


def layout_of(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_sizes: Sequence[int] | None,
    out_sizes: Sequence[int] | None,
    groups: int | None,
) -> BlockLayout:
    check_is_tensor(input, weight, "block_linear", bias)
    if weight.dim() == 3:
        blocks, out_g, in_g = weight.shape
        if in_sizes is not None or out_sizes is not None:
            raise ValueError(
                "block_linear takes in_sizes/out_sizes only with a 1-D (uneven) weight; "
                f"got a 3-D weight of shape {tuple(weight.shape)}, whose shape gives the groups"
            )
        count = blocks if groups is None else check_size(groups, "groups")
        if blocks not in (1, count):
            raise ValueError(
                f"block_linear got groups={groups} for a weight of {blocks} blocks; a 3-D "
                "weight has one block per group, or one block shared by all (leading size 1)"
            )
        return backends.equal_block_layout(count, in_g, out_g, blocks == 1 and count > 1)
    if weight.dim() != 1 or in_sizes is None or out_sizes is None:
        raise ValueError(
            "block_linear expected a 3-D weight (groups, out, in) for equal groups, or a 1-D "
            f"weight with in_sizes and out_sizes for uneven groups; got weight of shape "
            f"{tuple(weight.shape)}, in_sizes={in_sizes}, out_sizes={out_sizes}"
        )
    ins, outs = group_sizes(in_sizes, out_sizes, groups)
    layout = backends.block_layout(ins, outs)
    if weight.numel() != layout.connections:
        raise ValueError(
            f"block_linear expected a 1-D weight of {layout.connections} elements "
            f"(sum of in_sizes[g] * out_sizes[g]), got {weight.numel()}"
        )
    return layout


def _check_tensors(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    in_features: int,
    out_features: int,
) -> None:
    if input.dim() == 0 or input.shape[-1] != in_features:
        raise ValueError(
            f"expected input of shape (*, {in_features}) (in_features), got {tuple(input.shape)}"
        )
    if input.device != weight.device:
        raise ValueError(
            f"expected input on the weight's device {weight.device}, got {input.device}; "
            f"move one of them, e.g. input.to({str(weight.device)!r})"
        )
    if input.dtype != weight.dtype:
        hint = (
            f"convert one of them, e.g. input.to({weight.dtype}) or module.to({input.dtype})"
            if input.is_floating_point()
            else f"convert the input, e.g. input.to({weight.dtype})"
        )
        raise TypeError(
            f"expected input of dtype {weight.dtype} (the weight's dtype), got {input.dtype}; "
            + hint
        )
    if bias is not None:
        if bias.shape != (out_features,):
            raise ValueError(
                f"expected bias of shape ({out_features},) (out_features), got {tuple(bias.shape)}"
            )
        if bias.dtype != weight.dtype or bias.device != weight.device:
            raise TypeError(
                f"expected bias of the weight's dtype and device ({weight.dtype}, "
                f"{weight.device}), got ({bias.dtype}, {bias.device})"
            )


def group_sizes(
    in_features: int | Sequence[int], out_features: int | Sequence[int], groups: int | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Validate block-layer size arguments; return the input and output size of every group.

    Ints with ``groups`` give equal groups; two sequences give uneven groups.
    """
    if groups is not None:
        groups = check_size(groups, "groups")
    if is_int(in_features) and is_int(out_features):
        size_in = operator.index(in_features)  # type: ignore[arg-type]
        size_out = operator.index(out_features)  # type: ignore[arg-type]
        g = 1 if groups is None else groups
        if size_in < 1 or size_out < 1:
            raise ValueError(
                "in_features and out_features must be positive, got "
                f"in_features={size_in}, out_features={size_out}"
            )
        if size_in % g:
            raise ValueError(f"in_features must be divisible by groups (got {size_in} and {g})")
        if size_out % g:
            raise ValueError(f"out_features must be divisible by groups (got {size_out} and {g})")
        return (size_in // g,) * g, (size_out // g,) * g
    if is_int(in_features) or is_int(out_features):
        raise TypeError(
            "in_features and out_features must both be ints (equal groups) or both be "
            f"sequences of ints (uneven groups); got {type(in_features).__name__} and "
            f"{type(out_features).__name__}"
        )
    try:
        in_sizes, out_sizes = tuple(in_features), tuple(out_features)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "in_features and out_features must be ints or sequences of ints, got "
            f"{type(in_features).__name__} and {type(out_features).__name__}"
        ) from None
    if not all(is_int(s) for s in in_sizes + out_sizes):
        raise TypeError(f"group sizes must be ints, got in_sizes={in_sizes}, out_sizes={out_sizes}")
    if len(in_sizes) != len(out_sizes) or not in_sizes:
        raise ValueError(
            "expected one input size and one output size per group (same non-zero length), got "
            f"{len(in_sizes)} input sizes and {len(out_sizes)} output sizes"
        )
    if groups is not None and groups != len(in_sizes):
        raise ValueError(f"groups={groups} but {len(in_sizes)} group sizes were given; omit groups")
    ins = tuple(operator.index(s) for s in in_sizes)
    outs = tuple(operator.index(s) for s in out_sizes)
    if min(ins + outs) < 1:
        raise ValueError(
            "every group needs at least one input and one output; got "
            f"in_sizes={list(ins)}, out_sizes={list(outs)}"
        )
    return ins, outs


def index_of(wiring: Wiring | SparseIndex, weight: torch.Tensor) -> SparseIndex:
    """``wiring``'s index tensors on the weight's device (built once per device)."""
    if isinstance(wiring, SparseIndex):  # a traced graph derives what it needs itself
        return wiring._replace(cache=None) if torch.compiler.is_compiling() else wiring
    if not isinstance(wiring, Wiring):
        raise TypeError(
            "sparse_linear expected wiring to be a torchwire.Wiring (or its SparseIndex), got "
            f"{type(wiring).__name__}"
        )
    if torch.compiler.is_compiling():
        raise TypeError(
            "under torch.compile, sparse_linear needs the wiring's index tensors: pass "
            "torchwire.backends.sparse_index(wiring, device) built outside the compiled "
            "function, or use torchwire.SparseLinear (which keeps them as buffers)"
        )
    device = weight.device
    return backends.cached_for_device(
        "sparse_index", wiring, device, lambda: backends.sparse_index(wiring, device)
    )


def sparse_call(
    input: torch.Tensor,
    weight: torch.Tensor,
    index: SparseIndex,
    bias: torch.Tensor | None,
    backend: str,
) -> torch.Tensor:
    """:func:`sparse_linear` with the index tensors at hand (what
    :class:`~torchwire.SparseLinear` calls)."""
    if torch._C._is_any_autocast_enabled():
        dtype = _autocast_dtype(input)
        if dtype is not None:
            with torch.autocast(input.device.type, enabled=False):
                input, weight, bias = _cast(dtype, input, weight, bias)
                return sparse_call(input, weight, index, bias, backend)
    cache = index.cache
    run: Callable[..., torch.Tensor] | None
    if type(cache) is not IndexCache or type(input) is not torch.Tensor:
        # Nowhere to keep a bound call (as while compiling), or a tensor subclass's input (as
        # FakeTensors while make_fx traces): the backend's plain function, nothing kept read.
        chosen, problem = sparse_plan(input, weight, index, bias, backend)
        run = functools.partial(chosen.fn, index=index, problem=problem)
    else:
        if weight.shape != index.indices.shape:  # both (nnz,)
            _wrong_sparse_weight(weight, index)
        key = _call_key(backend, input, weight, bias, index.in_features, index.out_features)
        memo = cache.calls
        run = memo.get(key)
        if run is None:
            chosen, problem = backends.plan(
                "sparse_linear", backend, _sparse_key(index, (*key[1:6], False)), _sparse_problem
            )
            run = _remember(memo, key, chosen.bound(problem, index, weight), input, weight)
    if input.dim() == 2:
        return run(input, weight, bias)
    shape = input.shape
    y = run(input.reshape(-1, index.in_features), weight, bias)
    return y.reshape(*shape[:-1], index.out_features)


def sparse_plan(
    input: torch.Tensor,
    weight: torch.Tensor,
    index: SparseIndex,
    bias: torch.Tensor | None,
    backend: str,
) -> tuple[backends.Backend, SparseProblem]:
    """Check a sparse_linear call (integer and identity comparisons only; the full checks
    run to word an error) and choose its backend (the only place that does), for the
    context it is called in (torch.compile or torch.export tracing, torch.func transforms)."""
    traits = (*_sparse_traits(input, weight, index, bias), _traced(input))
    return backends.plan("sparse_linear", backend, _sparse_key(index, traits), _sparse_problem)


def _sparse_traits(
    input: torch.Tensor, weight: torch.Tensor, index: SparseIndex, bias: torch.Tensor | None
) -> tuple[int, torch.dtype, torch.device, bool, bool]:
    """The plan's part of :func:`_call_key` for a sparse_linear call (rows, dtype, device,
    grad, functorch), after checking the weight against the index."""
    if not (isinstance(input, torch.Tensor) and isinstance(weight, torch.Tensor)):
        check_is_tensor(input, weight, "sparse_linear")  # type: ignore[unreachable]
    if weight.shape != index.indices.shape:  # both (nnz,)
        _wrong_sparse_weight(weight, index)
    key = _call_key(None, input, weight, bias, index.in_features, index.out_features, False)
    return key[1:]


def _wrong_sparse_weight(weight: torch.Tensor, index: SparseIndex) -> None:
    raise ValueError(
        f"sparse_linear expected a 1-D weight of {index.nnz} values (one per connection, "
        f"in wiring.edges() order), got shape {tuple(weight.shape)}"
    )


def _sparse_key(index: SparseIndex, traits: tuple[Any, ...]) -> tuple[Any, ...]:
    """The arguments of :func:`_sparse_problem`: the index's sizes and blocks, then traits."""
    return (index.in_features, index.out_features, index.nnz, index.blocks, *traits)


def _sparse_problem(
    in_features: int,
    out_features: int,
    nnz: int,
    blocks: BlockLayout | None,
    rows: int,
    dtype: torch.dtype,
    device: torch.device,
    grad: bool,
    functorch: bool,
    compiling: bool,
) -> SparseProblem:
    return SparseProblem(
        in_features, out_features, nnz, blocks, rows, dtype, device.type, grad, functorch, compiling
    )


def multi_call(
    inputs: tuple[torch.Tensor, ...],
    weights: tuple[torch.Tensor, ...],
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """:func:`multi_linear` of as many inputs as weights (at least one). For 2-D inputs the
    kernels check everything (a mismatch raises there, and is then worded by
    :func:`_check_multi`); otherwise :func:`_check_multi` runs first."""
    try:
        y = torch.nn.functional.linear(inputs[0], weights[0], bias)
        if y.dim() == 2 and not (_functorch() or torch._C._is_any_autocast_enabled()):
            # Into the fresh output, in place: addmm_ raises unless every input is 2-D with
            # as many rows and every weight has as many outputs (it never broadcasts y).
            # Not under torch.func (an unbatched y cannot take batched values in place) nor
            # autocast (which casts no in-place op's operands).
            for k in range(1, len(inputs)):
                y.addmm_(inputs[k], weights[k].t())
            return y
    except (RuntimeError, TypeError):
        _check_multi(inputs, weights)
        raise
    _check_multi(inputs, weights)  # here (N-D inputs, or torch.func) the checks come first
    flat = y.reshape(-1, y.shape[-1])
    for k in range(1, len(inputs)):  # one GEMM per input, accumulated into the output
        x = inputs[k]
        flat = torch.addmm(flat, x.reshape(-1, x.shape[-1]), weights[k].t())
    return flat.reshape(y.shape)


def _check_multi(inputs: tuple[torch.Tensor, ...], weights: tuple[torch.Tensor, ...]) -> None:
    for k, (x, w) in enumerate(zip(inputs, weights, strict=True)):
        _check_multi_input(k, x, w)
        if x.shape[:-1] != inputs[0].shape[:-1]:
            raise ValueError(
                "multi_linear expected inputs with the same leading dimensions, got "
                f"{[tuple(t.shape) for t in inputs]}"
            )
        if w.shape[0] != weights[0].shape[0]:
            raise ValueError(
                "multi_linear expected weights with the same number of outputs (rows), got "
                f"{[tuple(t.shape) for t in weights]}"
            )


def _check_multi_input(k: int, x: object, w: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"multi_linear expected input {k} to be a Tensor, got {type(x).__name__}")
    if x.dim() == 0 or w.dim() != 2 or x.shape[-1] != w.shape[1]:
        raise ValueError(
            f"multi_linear expected input {k} of shape (*, {w.shape[-1]}) for its weight of "
            f"shape {tuple(w.shape)}, got {tuple(x.shape)}"
        )


# Under torch.fx symbolic tracing each functional is one leaf node of the graph: it validates
# shapes and chooses its backend when the graph runs.


# Leaves of torch.fx graphs: traced models call them, not their tensor ops.
torch.fx.wrap("block_call")
torch.fx.wrap("sparse_call")
torch.fx.wrap("multi_call")
