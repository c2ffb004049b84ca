"""The backend registry: every way of computing a layer registers here, and :func:`select`
is the only place in torchwire that chooses between them.

A backend is a function plus a capability check and a cost estimate. ``select`` keeps the
backends whose check accepts the problem and returns the one with the lowest estimated cost;
a name forces that backend (an error if it cannot run the problem). The cost models are
calibrated from ``torchwire bench`` runs; their constants live next to each backend.

A problem holds everything that changes what runs: besides sizes and the input's traits,
whether torch.compile or torch.export traces the call (``compiling``) and whether torch.func
transforms run (``functorch``). A backend whose code cannot run there refuses the problem in
its capability check, so ``select`` returns the backend that really runs, and a forced name
that cannot run there is an error naming the reason (a ``torch.export`` trace, which makes a
graph for later runs, takes the cheapest backend that can instead, as ONNX exports do).
No backend switches to other code on either. (Whether a backward will be differentiated
again, ``create_graph=True``, is not known when the forward chooses: a backend with a
hand-written backward keeps it differentiable.)

While ``torch.onnx.export`` traces a model, the computation is meant for onnxruntime, not for
torch's kernels: ``select`` then chooses among the backends' ONNX forms (graphs of standard
ONNX ops, :attr:`Backend.onnx`) by their onnxruntime costs. That is the only place torchwire
asks whether it is exporting to ONNX.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar

import torch

if TYPE_CHECKING:
    from torchwire.wiring import Wiring

__all__ = [
    "Backend",
    "BlockLayout",
    "BlockProblem",
    "IndexCache",
    "SparseIndex",
    "SparseProblem",
    "available",
    "block_layout",
    "built_to_keep",
    "cached_for_device",
    "equal_block_layout",
    "keeping",
    "plan",
    "register",
    "select",
    "sparse_index",
    "weighted",
]


RUNS, PATTERN, GATHER = "runs", "pattern", "gather"


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Group structure of a block-diagonal layer and how a batched kernel splits the work
    (interned by :func:`block_layout`, so it compares and hashes by identity: cheap on every
    forward).

    ``runs`` lists maximal stretches of consecutive groups with the same block shape as
    ``(count, in_size, out_size)``; ``period`` is the length of the shortest pattern of block
    shapes whose repetition gives all groups; ``classes`` lists the distinct block shapes as
    ``(count, in_size, out_size)`` in order of first appearance. A batched kernel computes a
    layout with one call per run, per position of the pattern (strided views), or per
    distinct shape after gathering each shape's groups together (two index copies of the
    activations): ``plan`` names the split this layout computes with (by default the one
    with the fewest calls: :func:`block_layout`), ``calls`` its number of calls.
    """

    in_sizes: tuple[int, ...]
    out_sizes: tuple[int, ...]
    shared: bool
    runs: tuple[tuple[int, int, int], ...]
    period: int
    classes: tuple[tuple[int, int, int], ...]
    plan: str
    # Derived once (read on every forward):
    groups: int = field(init=False)
    in_features: int = field(init=False)
    out_features: int = field(init=False)
    connections: int = field(init=False)  # input-output connections: multiply-adds per row
    calls: int = field(init=False)

    def __post_init__(self) -> None:
        calls = {RUNS: len(self.runs), PATTERN: self.period, GATHER: len(self.classes)}
        derived = {
            "groups": len(self.in_sizes),
            "in_features": sum(self.in_sizes),
            "out_features": sum(self.out_sizes),
            "connections": sum(i * o for i, o in zip(self.in_sizes, self.out_sizes, strict=True)),
            "calls": calls[self.plan],
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def __fx_create_arg__(self, tracer: Any) -> Any:
        """In a ``torch.fx`` graph, a layout is rebuilt (from the cache) by its group sizes."""
        return tracer.create_node(
            "call_function",
            block_layout,
            (self.in_sizes, self.out_sizes, self.shared, self.plan),
            {},
        )

    def gathered(self) -> BlockLayout:
        """The layout of the groups in gather-plan order: one run per distinct shape."""
        ins = tuple(i for count, i, _ in self.classes for _ in range(count))
        outs = tuple(o for count, _, o in self.classes for _ in range(count))
        return block_layout(ins, outs, False, RUNS)

    def gather_order(self) -> tuple[list[int], list[int], list[int]]:
        """Input features, weights and outputs in the order of the gather plan: the groups
        of each distinct shape together (shapes in first-appearance order)."""
        shapes = list(zip(self.in_sizes, self.out_sizes, strict=True))
        in_start, w_start, out_start = [0], [0], [0]
        for i, o in shapes:
            in_start.append(in_start[-1] + i)
            w_start.append(w_start[-1] + i * o)
            out_start.append(out_start[-1] + o)
        inputs: list[int] = []
        weights: list[int] = []
        outputs: list[int] = []
        for _, i, o in self.classes:
            for g, shape in enumerate(shapes):
                if shape == (i, o):
                    inputs.extend(range(in_start[g], in_start[g + 1]))
                    weights.extend(range(w_start[g], w_start[g + 1]))
                    outputs.extend(range(out_start[g], out_start[g + 1]))
        return inputs, weights, outputs


def _make_block_layout(
    in_sizes: tuple[int, ...], out_sizes: tuple[int, ...], shared: bool, plan: str | None
) -> BlockLayout:
    shapes = list(zip(in_sizes, out_sizes, strict=True))
    runs: list[tuple[int, int, int]] = []
    for i, o in shapes:
        if runs and runs[-1][1:] == (i, o):
            runs[-1] = (runs[-1][0] + 1, i, o)
        else:
            runs.append((1, i, o))
    groups = len(shapes)
    period = next(
        p for p in range(1, groups + 1) if groups % p == 0 and shapes == shapes[:p] * (groups // p)
    )
    distinct = list(dict.fromkeys(shapes))
    classes = tuple((shapes.count(shape), *shape) for shape in distinct)
    if plan is None:  # the fewest calls; gathering's two index copies count as two calls
        options = {RUNS: len(runs), PATTERN: period, GATHER: len(classes) + 2}
        return block_layout(in_sizes, out_sizes, shared, min(options, key=options.__getitem__))
    if plan not in (RUNS, PATTERN, GATHER):
        raise ValueError(f"unknown block plan {plan!r}; expected one of {[RUNS, PATTERN, GATHER]}")
    return BlockLayout(in_sizes, out_sizes, shared, tuple(runs), period, classes, plan)


_cached_block_layout = functools.lru_cache(maxsize=4096)(_make_block_layout)


def block_layout(
    in_sizes: tuple[int, ...],
    out_sizes: tuple[int, ...],
    shared: bool = False,
    plan: str | None = None,
) -> BlockLayout:
    """The (cached) :class:`BlockLayout` of validated group sizes, computed with the split
    ``plan`` (``"runs"``, ``"pattern"`` or ``"gather"``; default: the fewest calls)."""
    if torch.compiler.is_compiling():  # dynamo traces plain Python; it warns on lru_cache
        return _make_block_layout(in_sizes, out_sizes, shared, plan)
    return _cached_block_layout(in_sizes, out_sizes, shared, plan)


def _make_equal_layout(groups: int, in_size: int, out_size: int, shared: bool) -> BlockLayout:
    return block_layout((in_size,) * groups, (out_size,) * groups, shared)


_cached_equal_layout = functools.lru_cache(maxsize=4096)(_make_equal_layout)


def equal_block_layout(groups: int, in_size: int, out_size: int, shared: bool) -> BlockLayout:
    """:func:`block_layout` of ``groups`` equal groups, cached on the four numbers."""
    if torch.compiler.is_compiling():
        return _make_equal_layout(groups, in_size, out_size, shared)
    return _cached_equal_layout(groups, in_size, out_size, shared)


@dataclass(frozen=True)
class BlockProblem:
    """What a block-linear backend is asked to compute: the layout, the input's traits,
    whether torch.func transforms (grad, vmap, ...) are active and whether torch.compile or
    torch.export traces the call (``torch.compiler.is_compiling()``)."""

    layout: BlockLayout
    rows: int
    dtype: torch.dtype
    device_type: str
    requires_grad: bool
    functorch: bool = False
    compiling: bool = False


class IndexCache(dict[Any, Any]):
    """A :class:`SparseIndex`'s cache: what is derived from its tensors once, and the calls
    bound to it. A ``torch.fx`` graph holds none of it (an index enters a graph without a
    cache, and derives what it needs there)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple[Any, ...], Callable[..., torch.Tensor]] = {}

    def __fx_create_arg__(self, tracer: Any) -> None:
        return None


class SparseIndex(NamedTuple):
    """A wiring's connections as index tensors on the compute device (what sparse backends
    read; :class:`torchwire.SparseLinear` keeps ``indptr`` and ``indices`` as buffers).

    ``indptr``/``indices`` are the CSR structure by output (canonical order, the order of the
    weight values), in one integer dtype (int32 where sizes allow). ``blocks`` is the
    :class:`BlockLayout` when the wiring is block diagonal, else ``None``. ``cache`` holds
    what is derived from these tensors once: the transposed structure
    (:meth:`transposed`), a backend's positions or scratch matrix, and calls bound to their
    problem (``torchwire.functional``); or it is ``None`` to derive them on every call.
    ``by_input`` is the transposed structure where its owner keeps it (a sparse
    :class:`torchwire.SparseLinear` keeps it as buffers, so compiled graphs read it rather
    than derive it). ``owned``: the tensors are buffers a module holds (a compiled graph's
    inputs, each with its own version counter, not views the graph makes), so a compiled
    graph may read what is kept with them. Whoever changes the tensors in place builds a new
    index (:class:`torchwire.SparseLinear` does).
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    in_features: int
    out_features: int
    blocks: BlockLayout | None
    cache: IndexCache | None = None
    by_input: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    owned: bool = False

    @property
    def nnz(self) -> int:
        return self.indices.shape[0]

    def transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t_indptr, t_indices, perm)``: the CSR structure of the transpose (by input,
        then output) and the canonical position of each of its connections, so
        ``weight[perm]`` are its values; in the index's dtype, on its device: ``by_input``, or
        computed there without a host synchronisation (once, where the index has a cache).
        Only the sparse kernels' backward and grad-weight read it."""
        if self.by_input is not None:
            return self.by_input
        return self.derived("transposed", _transpose)  # type: ignore[no-any-return]

    def derived(self, name: str, build: Callable[[SparseIndex], Any]) -> Any:
        """``build(self)``, kept in the cache under ``name`` (built on every call for an index
        without a cache, and not kept where nothing may be: :func:`keeping`)."""
        cache = self.cache
        if cache is None:
            return build(self)
        found = cache.get(name)
        if found is None:
            found = built_to_keep(lambda: build(self), self.indptr, self.indices)
            if found is None:
                return build(self)
            cache[name] = found
        return found

    @property
    def tensors(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``indptr``, ``indices`` and :meth:`transposed`: what the sparse kernels take."""
        return (self.indptr, self.indices, *self.transposed())


def _transpose(index: SparseIndex) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    indptr, inputs = index.indptr, index.indices
    outputs = torch.arange(index.out_features, device=inputs.device, dtype=inputs.dtype)
    outputs = outputs.repeat_interleave(indptr.diff(), output_size=index.nnz)
    perm = torch.argsort(inputs, stable=True)  # by input, then output
    bounds = torch.arange(index.in_features + 1, device=inputs.device, dtype=inputs.dtype)
    t_indptr = torch.searchsorted(inputs[perm], bounds)
    dtype = inputs.dtype
    return t_indptr.to(dtype), outputs[perm], perm.to(dtype)


def sparse_index(wiring: Wiring, device: torch.device | str | None = None) -> SparseIndex:
    """The :class:`SparseIndex` of ``wiring`` on ``device`` (default: CPU)."""
    # CSR kernels need one index dtype; int32 halves the memory where every value fits.
    dtype = torch.int32 if wiring.nnz < 2**31 else torch.int64
    indptr, indices = (
        t.to(device=device, dtype=dtype).contiguous() for t in (wiring.indptr, wiring.indices)
    )
    blocks = wiring.block_sizes
    return SparseIndex(
        indptr,
        indices,
        wiring.in_features,
        wiring.out_features,
        None if blocks is None else block_layout(*blocks),
        IndexCache(),
    )


def weighted(weights: tuple[float, ...], features: tuple[float, ...]) -> float:
    """A CPU cost model's estimate: the sum of ``features`` (a backend's ``cost_features``)
    times their fitted ``weights``."""
    return sum(w * f for w, f in zip(weights, features, strict=True))


@dataclass(frozen=True)
class SparseProblem:
    """What a sparse-linear backend is asked to compute: sizes, block structure (a
    :class:`BlockLayout` or ``None``), the input's traits, whether torch.func transforms
    (grad, vmap, ...) are active and whether torch.compile or torch.export traces the call."""

    in_features: int
    out_features: int
    nnz: int
    blocks: BlockLayout | None
    rows: int
    dtype: torch.dtype
    device_type: str
    requires_grad: bool
    functorch: bool = False
    compiling: bool = False


@dataclass(frozen=True)
class Backend:
    """One way of computing an operation.

    Args:
        name: the name users pass as ``backend=``.
        op: the operation it computes, e.g. ``"block_linear"``.
        fn: the implementation; its signature is fixed per operation (block_linear:
            ``fn(input_2d, weight, bias, problem)``).
        supports: returns ``None`` when the backend can compute the problem, else the reason.
        cost: estimated relative cost of the problem (lower is faster); only compared
            between backends of the same operation.
        bind: optional; ``bind(problem, structure, like)`` returns a function of
            ``(input_2d, weight, bias)`` specialised for the problem, the structure (a
            :class:`BlockLayout` or :class:`SparseIndex`) and weights of ``like``'s dtype and
            device, with what it can prepare once (scratch matrices, positions) already
            found; or ``None`` to call ``fn``.
        onnx: optional; what ``fn`` computes as a graph of standard ONNX ops (same
            signature), traced in its place by ``torch.onnx.export``; ``None`` where the
            backend has no such form (``select`` then never picks it for ONNX).
        onnx_cost: optional; the estimated cost of the ``onnx`` graph in onnxruntime, in
            the units of ``cost`` (default: ``cost``).
    """

    name: str
    op: str
    fn: Callable[..., torch.Tensor]
    supports: Callable[[Any], str | None]
    cost: Callable[[Any], float]
    bind: Callable[[Any, Any, torch.Tensor], Callable[..., torch.Tensor] | None] | None = None
    onnx: Callable[..., torch.Tensor] | None = None
    onnx_cost: Callable[[Any], float] | None = None

    def bound(
        self, problem: Any, structure: Any, like: torch.Tensor
    ) -> Callable[..., torch.Tensor]:
        """This backend as a function of ``(input_2d, weight, bias)`` for ``problem`` on
        ``structure`` (a :class:`BlockLayout` for block_linear, a :class:`SparseIndex` for
        sparse_linear) with weights like ``like``: what a call memoises per input
        signature, so that a repeated call is one lookup and the kernels."""
        if self.bind is not None:
            run = self.bind(problem, structure, like)
            if run is not None:
                return run
        if isinstance(structure, SparseIndex):
            return functools.partial(self.fn, index=structure, problem=problem)
        return functools.partial(self.fn, problem=problem)


T = TypeVar("T")
_DEVICE_CACHE: dict[tuple[str, Any, torch.device], Any] = {}
_DEVICE_CACHE_SIZE = 256


def keeping(*tensors: torch.Tensor) -> bool:
    """Whether what a call derives now (index tensors, positions, scratch matrices, bound
    calls) may be kept for later calls, from ``tensors``: not while torch.compile or
    torch.export traces (a graph holds its own) or under a FakeTensorMode, and not from a
    tensor subclass's tensors (FakeTensors, also outside their mode). Under torch.func
    transforms, what is kept is built with the transforms off (:func:`built_to_keep`)."""
    return not (
        torch.compiler.is_compiling() or torch._C._get_dispatch_mode(_FAKE_MODE) is not None
    ) and all(type(t) in _PLAIN for t in tensors)


def built_to_keep(build: Callable[[], T], *sources: torch.Tensor) -> T | None:
    """``build()``, made to be kept for later calls (usable in and outside inference mode;
    under torch.func transforms, built with them off, since what a transform builds is
    wrapped for a transform that ends), or None where nothing built from ``sources`` may be
    kept (:func:`keeping`, or a source that is itself a transform's tensor)."""
    if not keeping(*sources):
        return None
    with torch.inference_mode(False):
        if not torch._C._are_functorch_transforms_active():
            return build()
        if any(_is_wrapped(t) for t in sources):
            return None
        with torch._C._DisableFuncTorch():
            return build()


_FAKE_MODE = torch._C._TorchDispatchModeKey.FAKE
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor


def cached_for_device(name: str, layout: Any, device: torch.device, build: Callable[[], T]) -> T:
    """``build()`` (index tensors of ``layout``, a hashable structure, on ``device``), cached
    per name, layout and device; rebuilt uncached where nothing may be kept
    (:func:`keeping`): while torch.compile traces, so they become graph constants."""
    key = (name, layout, device)
    value = _DEVICE_CACHE.get(key) if keeping() else None
    if value is None:
        value = built_to_keep(build)
        if value is None:
            return build()
        if len(_DEVICE_CACHE) >= _DEVICE_CACHE_SIZE:  # wirings can be large: keep a few
            _DEVICE_CACHE.clear()
        _DEVICE_CACHE[key] = value
    return value


# Cost-model units, shared by every backend: one multiply-add of a large GEMM costs 1. On
# CUDA the layers people build are launch-bound: one kernel launch (with its share of Python
# dispatch) costs about as much as 1e9 multiply-adds (refit on an H100, float32 and
# bfloat16, from `torchwire bench`; benchmarks/results/).
LAUNCH_CUDA = 1e9

_REGISTRY: dict[str, dict[str, Backend]] = {}
_CHOSEN: dict[tuple[str, Any], Backend] = {}  # select()'s memo of "auto" choices
_PLANS: dict[tuple[Any, ...], tuple[Backend, Any]] = {}  # plan()'s memo
_MEMO_SIZE = 4096


def register(backend: Backend) -> Backend:
    """Add ``backend`` to the registry (replacing one of the same op and name)."""
    _REGISTRY.setdefault(backend.op, {})[backend.name] = backend
    _CHOSEN.clear()
    _PLANS.clear()
    generation[0] += 1
    return backend


generation = [0]
"""How many times :func:`register` has run (in a list, so readers keep a reference): part of
every memoised call's key, so a call made before a registration chooses again."""


P = TypeVar("P")


def plan(
    op: str, backend: str, key: tuple[Any, ...], problem: Callable[..., P]
) -> tuple[Backend, P]:
    """``(select(op, problem(*key), backend), problem(*key))``, memoised on the plain tuple
    ``key`` (which must determine the problem): what a layer's call does instead of building
    and hashing a problem, so choosing costs one dictionary lookup.

    While torch.compile traces, the choice is made afresh and the memo is neither read nor
    written: dynamo would guard on the memo's contents, and every later eager call that adds
    to it would make each compiled layer trace again. While ``torch.export`` traces
    (``torch.onnx.export`` too), the choice is made for the example input: a dynamic size (a
    ``SymInt``) counts as its example value, without constraining it."""
    if torch.compiler.is_compiling():
        exporting = not torch.compiler.is_dynamo_compiling()
        built = problem(*(_example(k) for k in key)) if exporting else problem(*key)
        return select(op, built, backend), built
    memo = (op, backend, key)
    try:
        hit = _PLANS.get(memo)
    except TypeError:  # a symbolic size (make_fx's symbolic tracing): no memo, as export
        built = problem(*(_example(k) for k in key))
        return select(op, built, backend), built
    if hit is not None:
        return hit
    built = problem(*key)
    chosen = select(op, built, backend)
    if len(_PLANS) >= _MEMO_SIZE:
        _PLANS.clear()
    _PLANS[memo] = (chosen, built)
    return chosen, built


def _example(value: Any) -> Any:
    """``value``, or a symbolic int's example value (no guard on it: choosing a backend is an
    optimization decision, and every backend computes any size)."""
    if isinstance(value, torch.SymInt):
        from torch.fx.experimental.symbolic_shapes import optimization_hint  # loaded by export

        return optimization_hint(value)
    return value


def available(op: str, problem: Any = None) -> tuple[str, ...]:
    """Names of the backends registered for ``op`` (that can compute ``problem``, if given).

    Example:
        >>> import torchwire
        >>> torchwire.backends.available("block_linear")
        ('dense', 'bmm', 'bmm_packed', 'bmm_t', 'bmm_autograd')
    """
    backends = _backends(op)
    if problem is None:
        return tuple(backends)
    return tuple(name for name, b in backends.items() if b.supports(problem) is None)


def select(op: str, problem: Any, backend: str = "auto") -> Backend:
    """Return the backend that computes ``problem``: the named one, or the cheapest for "auto".

    A named backend that cannot compute the problem is a ``ValueError`` giving its reason
    (under torch.compile or torch.func too), except while ``torch.export`` traces a graph for
    later runs (non-strict, as ``torch.onnx.export`` does): there it gives way to the
    cheapest backend that can (the module's eager calls keep it).

    While ``torch.onnx.export`` traces, the backend returned computes through its ONNX form
    (its ``fn`` is :attr:`Backend.onnx`, its ``cost`` the onnxruntime cost): the named one
    where it has such a form, else the cheapest in onnxruntime of those that have one.
    """
    backends = _backends(op)
    if _exporting_onnx():
        return _select_onnx(op, problem, backend, backends)
    if backend != "auto":
        chosen = backends.get(backend)
        if chosen is None:
            _unknown(op, backend, backends)
        reason = chosen.supports(problem)
        if reason is None:
            return chosen
        if not _exporting():
            raise ValueError(
                f"backend {backend!r} cannot compute this {op}: {reason}; "
                f"use backend='auto' or one of {list(available(op, problem))}"
            )
    compiling = torch.compiler.is_compiling()
    if not compiling:  # the choice depends only on the (hashable, frozen) problem
        memo = _CHOSEN.get((op, problem))
        if memo is not None:
            return memo
    best: Backend | None = None
    best_cost = float("inf")
    for candidate in backends.values():
        if candidate.supports(problem) is None:
            cost = candidate.cost(problem)
            if cost < best_cost:
                best, best_cost = candidate, cost
    if best is None:
        raise RuntimeError(f"no registered backend can compute this {op}: {problem}")
    if not compiling:
        if len(_CHOSEN) >= _MEMO_SIZE:
            _CHOSEN.clear()
        _CHOSEN[(op, problem)] = best
    return best


def _exporting() -> bool:
    """Whether ``torch.export`` (non-strict; ``torch.onnx.export`` too) traces the call:
    compiling, but not with dynamo."""
    return torch.compiler.is_compiling() and not torch.compiler.is_dynamo_compiling()


def _exporting_onnx() -> bool:
    """Whether ``torch.onnx.export`` is tracing the call (``dynamo=True`` traces with
    ``torch.export``'s non-strict mode, which runs this Python). False under torch.compile and
    strict ``torch.export`` (dynamo's own answer there), and cheap when not compiling."""
    if not _exporting():
        return False
    onnx = sys.modules.get("torch.onnx")  # an export has imported it; don't import it here
    return onnx is not None and bool(onnx.is_in_onnx_export())


def _select_onnx(op: str, problem: Any, backend: str, backends: dict[str, Backend]) -> Backend:
    """:func:`select` for a graph exported to ONNX (see there)."""
    if backend != "auto" and backend not in backends:
        _unknown(op, backend, backends)
    forms = {
        name: b
        for name, b in backends.items()
        if b.onnx is not None and b.supports(problem) is None
    }
    if not forms:
        raise RuntimeError(f"no registered backend of {op} exports to ONNX: {problem}")

    def onnx_cost(b: Backend) -> float:
        return (b.onnx_cost or b.cost)(problem)

    chosen = forms.get(backend) or min(forms.values(), key=onnx_cost)
    return dataclasses.replace(
        chosen, fn=chosen.onnx or chosen.fn, cost=chosen.onnx_cost or chosen.cost, bind=None
    )


def _unknown(op: str, backend: str, backends: dict[str, Backend]) -> NoReturn:
    raise ValueError(
        f"unknown backend {backend!r} for {op}; expected 'auto' or one of {sorted(backends)}"
    )


def _backends(op: str) -> dict[str, Backend]:
    backends = _REGISTRY.get(op)
    if not backends:
        raise ValueError(f"unknown operation {op!r}; expected one of {sorted(_REGISTRY)}")
    return backends


# Importing the implementations registers them; the order is the listing order.
from torchwire.backends import (  # noqa: E402, F401, I001
    block_dense,
    block_bmm,
    sparse_dense,
    sparse_csr,
    sparse_block,
)
