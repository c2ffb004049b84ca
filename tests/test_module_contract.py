"""The generic module contract: every public torchwire module goes through the same checks.

Add a row to ``CASES`` for each new public module (or configuration worth its own row);
the test bodies below are shared. Modelled on PyTorch's ``module_db``.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call

import torchwire as tw
from tests import reference
from torchwire.hierarchy import LevelHeads

Inputs = tuple[Any, ...]  # the arguments of ``module(*inputs)``: tensors or tuples of tensors


@dataclass
class Case:
    """One row of the contract table.

    make: builds the module from factory kwargs (device=, dtype=).
    make_inputs: ``(module, batch_shape, dtype, device) -> inputs`` for ``module(*inputs)``.
    oracle: float64 reference ``(module, *inputs) -> output`` (a tensor or a tuple).
    repr: text that ``repr(module)`` contains.
    stateless: the module has no parameters or buffers (Split, Concat, Sum).
    """

    id: str
    make: Callable[..., nn.Module]
    make_inputs: Callable[[nn.Module, tuple[int, ...], torch.dtype, str], Inputs]
    oracle: Callable[..., torch.Tensor]
    repr: str
    compile: bool = False
    stateless: bool = False
    bad_inputs: list[tuple[Callable[[nn.Module], Any], type[Exception], str]] = field(
        default_factory=list
    )
    bad_construction: list[tuple[Callable[[], Any], type[Exception], str]] = field(
        default_factory=list
    )


def _features_input(
    m: nn.Module, batch: tuple[int, ...], dtype: torch.dtype, device: str
) -> Inputs:
    return (torch.randn(*batch, m.in_features, dtype=dtype, device=device),)


def _block_oracle(m: tw.BlockLinear, x: torch.Tensor) -> torch.Tensor:
    return reference.block_linear(x, m.weight, m.bias, m.in_sizes, m.out_sizes)


_BLOCK_BAD_INPUTS: list[tuple[Callable[[nn.Module], Any], type[Exception], str]] = [
    (lambda m: m(torch.randn(3, m.in_features + 1)), ValueError, r"expected input of shape"),
    (lambda m: m(torch.tensor(1.0)), ValueError, r"expected input of shape"),
    (
        lambda m: m((torch.randn(3, m.in_features),)),
        TypeError,
        r"expected input to be a Tensor, got tuple",
    ),
    (lambda m: m(torch.randn(3, m.in_features, dtype=torch.float64)), TypeError, r"dtype"),
]


def _block(*args: Any, **kwargs: Any) -> Callable[..., nn.Module]:
    return lambda **factory: tw.BlockLinear(*args, **kwargs, **factory)


CASES = [
    Case(
        "BlockLinear-equal",
        _block(12, 6, groups=3),
        _features_input,
        _block_oracle,
        "BlockLinear(in_features=12, out_features=6, groups=3, bias=True)",
        compile=True,
        bad_inputs=_BLOCK_BAD_INPUTS,
        bad_construction=[
            (
                lambda: tw.BlockLinear(10, 6, groups=3),
                ValueError,
                r"in_features must be divisible by groups",
            ),
            (
                lambda: tw.BlockLinear(9, 5, groups=3),
                ValueError,
                r"out_features must be divisible by groups",
            ),
            (lambda: tw.BlockLinear(0, 5), ValueError, r"must be positive"),
            (lambda: tw.BlockLinear(6, 6, groups=0), ValueError, r"groups must be a positive"),
            (lambda: tw.BlockLinear(6, [3, 3]), TypeError, r"both be ints .* or both be"),
            (lambda: tw.BlockLinear(6.0, 6), TypeError, r"must both be ints .*got float and int"),
            (lambda: tw.BlockLinear("ab", "cd"), TypeError, r"group sizes must be ints"),
        ],
    ),
    Case(
        "BlockLinear-uneven",
        _block([2, 3, 3, 1], [1, 4, 4, 2]),
        _features_input,
        _block_oracle,
        "BlockLinear(in_features=[2, 3, 3, 1], out_features=[1, 4, 4, 2], bias=True)",
        compile=True,
        bad_inputs=_BLOCK_BAD_INPUTS,
        bad_construction=[
            (
                lambda: tw.BlockLinear([2, 0], [3, 1]),
                ValueError,
                r"at least one input and one output",
            ),
            (lambda: tw.BlockLinear([2, 2], [3]), ValueError, r"2 input sizes and 1 output sizes"),
            (
                lambda: tw.BlockLinear([2, 2], [3, 1], shared=True),
                ValueError,
                r"shared=True needs equal groups",
            ),
            (
                lambda: tw.BlockLinear([2, 2], [3, 1], groups=3),
                ValueError,
                r"groups=3 but 2 group sizes",
            ),
            (lambda: tw.BlockLinear([2, 2.5], [3, 1]), TypeError, r"group sizes must be ints"),
        ],
    ),
    Case(
        "BlockLinear-tiny",
        _block([2, 2], [3, 3]),
        _features_input,
        _block_oracle,
        "BlockLinear(in_features=4, out_features=6, groups=2, bias=True)",
    ),
    Case(
        "BlockLinear-shared",
        _block(8, 4, groups=4, shared=True),
        _features_input,
        _block_oracle,
        "BlockLinear(in_features=8, out_features=4, groups=4, shared=True, bias=True)",
    ),
    Case(
        "BlockLinear-nobias",
        _block(8, 12, groups=4, bias=False),
        _features_input,
        _block_oracle,
        "BlockLinear(in_features=8, out_features=12, groups=4, bias=False)",
    ),
    *(
        Case(
            f"BlockLinear-{name}",
            _block([2, 1] * 3 + [3], [1, 2] * 3 + [2], backend=name),  # gather plan
            _features_input,
            _block_oracle,
            "BlockLinear(in_features=[2, 1, 2, 1, 2, 1, 3], out_features=[1, 2, 1, 2, 1, 2, 2], "
            f"bias=True, backend='{name}')",
        )
        for name in tw.backends.available("block_linear")
    ),
]


def _sparse_oracle(m: tw.SparseLinear, x: torch.Tensor) -> torch.Tensor:
    return reference.sparse_linear(x, m.weight, m.wiring.edges(), m.wiring.shape, m.bias)


def _sparse(wiring: tw.Wiring, **kwargs: Any) -> Callable[..., nn.Module]:
    return lambda **factory: tw.SparseLinear(wiring, **kwargs, **factory)


_RANDOM = tw.Wiring.random(12, 6, density=0.4, seed=0)
_GAPS = tw.Wiring.from_edges([[0, 0], [3, 0], [1, 2], [3, 2], [4, 3]], 6, 4)  # idle in/outputs
_NAMED = tw.Wiring.from_mapping({"p1": ["g1", "g2"], "p2": ["g2", "g3", "g4"]})
_SPARSE_BAD_INPUTS = [
    *_BLOCK_BAD_INPUTS[:2],
    (
        lambda m: m((torch.randn(3, m.in_features),)),
        TypeError,
        r"sparse_linear expected input to be a Tensor, got tuple",
    ),
    _BLOCK_BAD_INPUTS[3],
]

CASES += [
    Case(
        "SparseLinear-random",
        _sparse(_RANDOM),
        _features_input,
        _sparse_oracle,
        "SparseLinear(in_features=12, out_features=6, nnz=29, bias=True)",
        compile=True,
        bad_inputs=_SPARSE_BAD_INPUTS,
        bad_construction=[
            (lambda: tw.SparseLinear(torch.ones(3, 4)), TypeError, r"expected a torchwire.Wiring"),
            (lambda: tw.SparseLinear(_RANDOM, backend="cuda"), ValueError, r"unknown backend"),
        ],
    ),
    Case(
        "SparseLinear-idle-features",
        _sparse(_GAPS),
        _features_input,
        _sparse_oracle,
        "SparseLinear(in_features=6, out_features=4, nnz=5, bias=True)",
        compile=True,
    ),
    Case(
        "SparseLinear-named-nobias",
        _sparse(_NAMED, bias=False),
        _features_input,
        _sparse_oracle,
        "SparseLinear(in_features=4, out_features=2, nnz=5, bias=False)",
    ),
    *(
        Case(
            f"SparseLinear-{name}",
            _sparse(_RANDOM, backend=name),
            _features_input,
            _sparse_oracle,
            f"SparseLinear(in_features=12, out_features=6, nnz=29, bias=True, backend='{name}')",
            compile=True,
        )
        for name in ("dense", "csr")
    ),
    Case(
        "SparseLinear-block",
        _sparse(tw.Wiring.block_diagonal([2, 3, 3], [1, 4, 4]), backend="block"),
        _features_input,
        _sparse_oracle,
        "SparseLinear(in_features=8, out_features=9, nnz=26, bias=True, backend='block')",
        compile=True,
    ),
]


def _multi_inputs(m: nn.Module, batch: tuple[int, ...], dtype: torch.dtype, device: str) -> Inputs:
    return tuple(torch.randn(*batch, size, dtype=dtype, device=device) for size in m.in_features)


def _multi_oracle(m: tw.MultiLinear, *inputs: torch.Tensor) -> torch.Tensor:
    return reference.multi_linear(inputs, list(m.weights), m.bias)


CASES += [
    Case(
        "MultiLinear",
        lambda **factory: tw.MultiLinear([5, 3], 4, **factory),
        _multi_inputs,
        _multi_oracle,
        "MultiLinear(\n  in_features=[5, 3], out_features=4, bias=True",
        compile=True,
        bad_inputs=[
            (
                lambda m: m(torch.randn(2, 8)),
                ValueError,
                r"has 2 inputs of sizes \[5, 3\], got 1; .* torchwire.Split\(\[5, 3\]\)",
            ),
            (
                lambda m: m(torch.randn(2, 5), torch.randn(2, 4)),
                ValueError,
                r"input 1 of shape \(\*, 3\)",
            ),
            (
                lambda m: m(torch.randn(2, 5), torch.randn(3, 3)),
                ValueError,
                r"same leading dimensions",
            ),
        ],
        bad_construction=[
            (lambda: tw.MultiLinear(8, 4), TypeError, r"sequence of ints .* use nn.Linear"),
            (lambda: tw.MultiLinear([5, 0], 4), ValueError, r"positive input sizes"),
            (lambda: tw.MultiLinear([5, 3], 0), ValueError, r"out_features must be a positive"),
        ],
    ),
    Case(
        "MultiLinear-nobias",
        lambda **factory: tw.MultiLinear([2, 3, 1], 5, bias=False, **factory),
        _multi_inputs,
        _multi_oracle,
        "MultiLinear(\n  in_features=[2, 3, 1], out_features=5, bias=False",
    ),
]


def _oracle(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The float64 oracle of a layer used as a branch."""
    if isinstance(m, nn.Linear):
        return reference.linear(x, m.weight, m.bias)
    if isinstance(m, tw.BlockLinear):
        return _block_oracle(m, x)
    if isinstance(m, tw.SparseLinear):
        return _sparse_oracle(m, x)
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return reference.conv(x, m)
    raise AssertionError(f"no oracle for {type(m).__name__}")


def _features(size: int) -> Callable[[nn.Module, tuple[int, ...], torch.dtype, str], Inputs]:
    return lambda m, batch, dtype, device: (torch.randn(*batch, size, dtype=dtype, device=device),)


def _tuple_of(*sizes: int) -> Callable[[nn.Module, tuple[int, ...], torch.dtype, str], Inputs]:
    return lambda m, batch, dtype, device: (
        tuple(torch.randn(*batch, n, dtype=dtype, device=device) for n in sizes),
    )


def _parallel_oracle(m: tw.Parallel, x: torch.Tensor) -> Any:
    return reference.merge([_oracle(branch, x) for branch in m], m.join, m.dim)


def _split_oracle(m: tw.Split, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    size = x.shape[m.dim]
    sizes = [size // m.sizes] * m.sizes if isinstance(m.sizes, int) else list(m.sizes)
    return reference.split(x.double(), sizes, m.dim)


CASES += [
    Case(
        "Parallel-tuple",
        lambda **f: tw.Parallel(nn.Linear(6, 3, **f), tw.BlockLinear(6, 4, groups=2, **f)),
        _features(6),
        _parallel_oracle,
        "Parallel(\n  (0): Linear(in_features=6, out_features=3, bias=True)\n  (1): BlockLinear(",
        compile=True,
        bad_construction=[
            (lambda: tw.Parallel(nn.Identity(), join="max"), ValueError, r"join must be one of"),
            (lambda: tw.Parallel(nn.Identity(), 3), TypeError, r"nn.Module branches, got int"),
            (lambda: tw.Parallel(nn.Identity(), dim=1.0), TypeError, r"dim must be an int"),
        ],
    ),
    Case(
        "Parallel-cat",
        lambda **f: tw.Parallel(tw.SparseLinear(_RANDOM, **f), nn.Linear(12, 2, **f), join="cat"),
        _features(12),
        _parallel_oracle,
        "Parallel(\n  join='cat'\n  (0): SparseLinear(",
        compile=True,
        bad_inputs=[
            (
                lambda m: m((torch.randn(3, 12),)),
                TypeError,
                r"sparse_linear expected input to be a Tensor, got tuple",
            ),
        ],
    ),
    *(
        Case(
            f"Parallel-{merge}-named",
            lambda merge=merge, **f: tw.Parallel(
                OrderedDict(mean=nn.Linear(5, 4, **f), logvar=nn.Linear(5, 4, **f)), join=merge
            ),
            _features(5),
            _parallel_oracle,
            f"Parallel(\n  join='{merge}'\n  (mean): Linear(",
            compile=True,
        )
        for merge in ("sum", "mean", "stack")
    ),
    Case(
        "Split-sizes",
        lambda **f: tw.Split([2, 3, 1]),
        _features(6),
        _split_oracle,
        "Split(sizes=[2, 3, 1])",
        compile=True,
        stateless=True,
        bad_inputs=[
            (
                lambda m: m(torch.randn(3, 7)),
                ValueError,
                r"sizes \[2, 3, 1\] sum to 6, but dimension -1 .* size 7",
            ),
            (
                lambda m: m((torch.randn(3, 6),)),
                TypeError,
                r"Split expected a Tensor, got tuple.*Concat",
            ),
        ],
        bad_construction=[
            (lambda: tw.Split([4, 0]), ValueError, r"positive part sizes, got \[4, 0\]"),
            (lambda: tw.Split(0), ValueError, r"positive number of parts, got 0"),
            (lambda: tw.Split(2.5), TypeError, r"an int or a sequence of ints, got float"),
        ],
    ),
    Case(
        "Split-equal-dim0",
        lambda **f: tw.Split(2, dim=0),
        lambda m, batch, dtype, device: (torch.randn(4, *batch, 3, dtype=dtype, device=device),),
        _split_oracle,
        "Split(sizes=2, dim=0)",
        stateless=True,
        bad_inputs=[
            (
                lambda m: m(torch.randn(3, 6)),
                ValueError,
                r"size 3 into 2 equal parts; .* Split\(\[2, 1\]\)",
            ),
        ],
    ),
    Case(
        "Concat",
        lambda **f: tw.Concat(),
        _tuple_of(2, 3, 1),
        lambda m, xs: torch.cat([x.double() for x in xs], -1),
        "Concat()",
        compile=True,
        stateless=True,
        bad_inputs=[
            (
                lambda m: m(torch.randn(3, 6)),
                TypeError,
                r"Concat expected a tuple .* got a Tensor of shape \(3, 6\); split it first",
            ),
        ],
        bad_construction=[(lambda: tw.Concat(dim="x"), TypeError, r"dim must be an int")],
    ),
    Case(
        "Sum",
        lambda **f: tw.Sum(),
        _tuple_of(4, 4, 4),
        lambda m, xs: torch.stack([x.double() for x in xs]).sum(0),
        "Sum()",
        compile=True,
        stateless=True,
        bad_inputs=[(lambda m: m(torch.randn(3, 4)), TypeError, r"Sum expected a tuple")],
    ),
    Case(
        "Map",
        lambda **f: tw.Map(nn.Linear(4, 2, **f), tw.BlockLinear([1, 2], [2, 1], **f)),
        _tuple_of(4, 3),
        lambda m, xs: tuple(_oracle(mod, x) for mod, x in zip(m, xs, strict=True)),
        "Map(\n  (0): Linear(in_features=4, out_features=2, bias=True)\n  (1): BlockLinear(",
        compile=True,
        bad_inputs=[
            (
                lambda m: m((torch.randn(2, 4),)),
                ValueError,
                r"Map has 2 modules but got a tuple of 1 elements",
            ),
            (lambda m: m(torch.randn(2, 4)), TypeError, r"Map expected a tuple"),
        ],
        bad_construction=[(lambda: tw.Map(nn.Identity(), 3), TypeError, r"got int at 1")],
    ),
]


def _fused(*branches: Callable[..., nn.Module], **kwargs: Any) -> Callable[..., nn.Module]:
    return lambda **f: tw.fuse_parallel(tw.Parallel(*(b(**f) for b in branches), **kwargs))


def _fused_oracle(m: tw.FusedParallel, x: torch.Tensor) -> Any:
    return _parallel_oracle(tw.unfuse(m), x)


def _images(m: nn.Module, batch: tuple[int, ...], dtype: torch.dtype, device: str) -> Inputs:
    """Convolutions take one batch dimension (or none)."""
    return (torch.randn(*batch[:1], 4, 5, 5, dtype=dtype, device=device),)


CASES += [
    Case(
        "FusedParallel-linear-bias-mixed",
        _fused(lambda **f: nn.Linear(6, 3, **f), lambda **f: nn.Linear(6, 2, bias=False, **f)),
        _features(6),
        _fused_oracle,
        "FusedParallel(\n  names=['0', '1'], sizes=[3, 2]\n  (layer): Linear(in_features=6, "
        "out_features=5, bias=True)",
        compile=True,
        bad_inputs=[(lambda m: m(torch.randn(3, 5)), RuntimeError, r"cannot be multiplied")],
    ),
    Case(
        "FusedParallel-conv2d-groups",
        _fused(
            lambda **f: nn.Conv2d(4, 4, 3, padding=1, groups=2, **f),
            lambda **f: nn.Conv2d(4, 2, 3, padding=1, groups=2, bias=False, **f),
            join="cat",
            dim=-3,
        ),
        _images,
        _fused_oracle,
        "FusedParallel(\n  names=['0', '1'], sizes=[4, 2], join='cat', dim=-3\n  (layer): "
        "Conv2d(4, 6, ",
        compile=True,
    ),
    Case(
        "FusedParallel-block-sum",
        _fused(
            lambda **f: tw.BlockLinear([3, 5], [2, 1], **f),
            lambda **f: tw.BlockLinear([3, 5], [1, 2], **f),
            join="sum",
        ),
        _features(8),
        _fused_oracle,
        "(layer): BlockLinear(in_features=[3, 5], out_features=[3, 3], bias=True)",
        compile=True,
    ),
    Case(
        "FusedParallel-sparse-stack",
        _fused(lambda **f: tw.SparseLinear(_RANDOM, **f), lambda **f: nn.Linear(12, 6, **f)),
        _features(12),
        _fused_oracle,
        "(layer): SparseLinear(in_features=12, out_features=12, nnz=101, bias=True)",
        compile=True,
        bad_construction=[
            (
                lambda: tw.fuse_parallel(tw.Parallel(nn.Linear(4, 2), nn.Conv1d(4, 2, 1))),
                TypeError,
                r"cannot fuse branch '1' \(Conv1d\) with branch '0' \(Linear\)",
            ),
            (
                lambda: tw.fuse_parallel(tw.Parallel(nn.Linear(4, 2), nn.Linear(5, 2))),
                ValueError,
                r"branch '1' \(Linear\) has in_features=5, but branch '0' has in_features=4",
            ),
        ],
    ),
]


_GENES = tw.Wiring.from_mapping(
    {"repair": ["BRCA1", "ATM"], "apoptosis": ["TP53", "BAX"], "cycle": ["TP53", "CDK1"]}
)
_PATHWAYS = [("repair", "cell fate"), ("apoptosis", "cell fate"), ("cycle", "root")]
_PATHWAYS += [("cell fate", "root")]


def _level_heads_oracle(m: Any, x: torch.Tensor) -> Any:
    """Every level's SparseLinear as a dense masked matmul, tanh, then its head."""
    outputs = []
    for stage, head in zip(m.layers, m.heads, strict=True):
        layer = stage[0]
        w = layer.wiring
        x = torch.tanh(reference.sparse_linear(x, layer.weight, w.edges(), w.shape, layer.bias))
        outputs.append(reference.linear(x, head.weight, head.bias))
    return tuple(outputs)


CASES += [
    Case(
        "LevelHeads-hierarchy",
        lambda **f: tw.hierarchy(_GENES, _PATHWAYS, heads=2, **f),
        _features(5),
        _level_heads_oracle,
        "LevelHeads(\n  (layers): ModuleList(\n    (0): Sequential(\n      (0): SparseLinear(",
        compile=True,
        bad_inputs=[(lambda m: m(torch.randn(3, 4)), ValueError, r"expected input of shape")],
        bad_construction=[
            (
                lambda: LevelHeads([nn.Linear(2, 2)], []),
                ValueError,
                r"one head per layer and at least one layer, got 1 layers and 0 heads",
            )
        ],
    ),
]

IDS = [c.id for c in CASES]


def _leaves(value: Any) -> list[torch.Tensor]:
    """The tensors of a tensor or of (nested) tuples of tensors, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _leaves(item)]


def _map(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    """``value`` with ``fn`` applied to each of its tensors (tuple structure kept)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    return tuple(_map(fn, item) for item in value)


def _rebuild(like: Any, tensors: list[torch.Tensor]) -> Any:
    """``like``'s structure with its tensors replaced, in order, by ``tensors``."""
    it = iter(tensors)
    return _map(lambda _: next(it), like)


def _f64(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return case.make(dtype=torch.float64)


def _close(a: Any, b: Any, **kw: Any) -> None:
    """Same structure (tensor or tuple), shapes and values."""
    assert isinstance(a, torch.Tensor) == isinstance(b, torch.Tensor)
    xs, ys = _leaves(a), _leaves(b)
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys, strict=True):
        torch.testing.assert_close(x.double(), y.double(), **kw)


def _tensors(m: nn.Module) -> list[torch.Tensor]:
    return list(m.parameters()) + list(m.buffers())


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("batch", [(5,), (2, 3), (), (0,)], ids=["2d", "3d", "nobatch", "empty"])
def test_forward_matches_oracle(case: Case, batch: tuple[int, ...]) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, batch, torch.float64, "cpu")
    _close(m(*inputs), case.oracle(m, *inputs))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_and_gradgradcheck(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    leaves = [t.requires_grad_() for t in _leaves(inputs)]
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]

    def fn(*args: torch.Tensor) -> Any:
        ins = _rebuild(inputs, list(args[: len(leaves)]))
        return functional_call(m, dict(zip(names, args[len(leaves) :], strict=True)), ins)

    assert torch.autograd.gradcheck(fn, (*leaves, *params))
    assert torch.autograd.gradgradcheck(fn, (*leaves, *params))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_factory_kwargs_are_honoured(case: Case, dtype: torch.dtype) -> None:
    m = case.make(dtype=dtype, device="cpu")
    assert bool(_tensors(m)) != case.stateless
    assert all(t.device.type == "cpu" for t in _tensors(m))
    assert all(t.dtype == dtype for t in m.parameters())
    assert all(t.is_meta for t in _tensors(case.make(device="meta")))
    if torch.cuda.is_available():
        assert all(t.is_cuda for t in _tensors(case.make(device="cuda", dtype=dtype)))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_is_close_to_oracle(case: Case, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    m = case.make(dtype=dtype)
    inputs = case.make_inputs(m, (4,), dtype, "cpu")
    out = m(*inputs)
    assert all(y.dtype == dtype for y in _leaves(out))
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    _close(out, case.oracle(m, *inputs), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_meta_construction_then_to_empty(case: Case) -> None:
    with torch.device("meta"):
        m = case.make()
    m.to_empty(device="cpu")
    for module in reversed(list(m.modules())):  # inner modules first
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    m.double()
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    _close(m(*inputs), case.oracle(m, *inputs))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_names_the_module_and_its_structure(case: Case) -> None:
    m = case.make()
    text = repr(m)
    assert text.startswith(type(m).__name__ + "(")
    assert m.extra_repr() in text
    assert case.repr in text


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deepcopy_and_pickle_give_independent_equal_modules(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        _close(clone(*inputs), m(*inputs), rtol=0, atol=0)
        for p, q in zip(_tensors(m), _tensors(clone), strict=True):
            assert p.data_ptr() != q.data_ptr()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip_with_weights_only_load(case: Case) -> None:
    m = _f64(case, seed=0)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = _f64(case, seed=1)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    if not case.stateless:
        assert not all(map(torch.equal, _leaves(fresh(*inputs)), _leaves(m(*inputs))))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    _close(fresh(*inputs), m(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_holds_only_tensors_and_round_trips_through_safetensors(
    case: Case, tmp_path: Path
) -> None:
    """What Hugging Face-style checkpoints, EMA and averaging helpers assume."""
    st = pytest.importorskip("safetensors.torch")
    m = _f64(case, seed=0)
    state = m.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values()), {
        k: type(v).__name__ for k, v in state.items() if not isinstance(v, torch.Tensor)
    }
    path = tmp_path / "model.safetensors"
    st.save_file({k: v.contiguous() for k, v in state.items()}, path)
    fresh = _f64(case, seed=1)
    fresh.load_state_dict(st.load_file(path))
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    _close(fresh(*inputs), m(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_contiguous_inputs(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (4, 3), torch.float64, "cpu")
    # Same values, transposed storage: (3, 4, F) stored as (4, 3, F) -> permuted view.
    strided = _map(lambda t: t.transpose(0, 1).contiguous().transpose(0, 1), inputs)
    assert not any(t.is_contiguous() for t in _leaves(strided))
    _close(m(*strided), m(*inputs))
    sliced = _map(lambda t: torch.cat([t, t], -1)[..., : t.shape[-1]], inputs)
    _close(m(*sliced), m(*inputs))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_train_and_eval_modes_agree(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    train_out = m.train()(*inputs)
    assert m.training
    eval_out = m.eval()(*inputs)
    assert not m.training
    _close(train_out, eval_out, rtol=0, atol=0)


@pytest.mark.parametrize("case", [c for c in CASES if c.bad_inputs], ids=lambda c: c.id)
def test_bad_input_gets_a_clear_error(case: Case) -> None:
    m = case.make()
    for call, exc, match in case.bad_inputs:
        with pytest.raises(exc, match=match):
            call(m)


@pytest.mark.parametrize("case", [c for c in CASES if c.bad_construction], ids=lambda c: c.id)
def test_bad_construction_gets_a_clear_error(case: Case) -> None:
    for build, exc, match in case.bad_construction:
        with pytest.raises(exc, match=match):
            build()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fx_symbolic_trace_of_a_sequential_containing_it(case: Case) -> None:
    """Traced once, the graph runs any batch shape; several inputs arrive through a Split."""
    m = _f64(case)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor):
        model = nn.Sequential(m)
        pack: Callable[[Inputs], torch.Tensor] = lambda ins: ins[0]  # noqa: E731
    else:
        model = nn.Sequential(tw.Split([t.shape[-1] for t in _leaves(inputs)]), m)
        pack = lambda ins: torch.cat(_leaves(ins), -1)  # noqa: E731
    traced = torch.fx.symbolic_trace(model)
    for batch in [(3,), (2, 5), ()]:
        ins = case.make_inputs(m, batch, torch.float64, "cpu")
        _close(traced(pack(ins)), m(*ins))  # the Split's views may take other BLAS paths


@pytest.mark.parametrize("case", [c for c in CASES if c.compile], ids=lambda c: c.id)
def test_compile_fullgraph_matches_eager(case: Case) -> None:
    torch._dynamo.reset()
    m = case.make()
    compiled = copy.deepcopy(m)
    inputs = case.make_inputs(m, (5,), torch.float32, "cpu")
    cinputs = _map(lambda t: t.clone().requires_grad_(), inputs)
    inputs = _map(lambda t: t.requires_grad_(), inputs)
    out = m(*inputs)
    cout = torch.compile(compiled, fullgraph=True)(*cinputs)
    _close(cout, out, rtol=1e-5, atol=1e-5)
    grads = [torch.randn_like(y) for y in _leaves(out)]
    torch.autograd.backward(_leaves(out), grads)
    torch.autograd.backward(_leaves(cout), grads)
    for a, b in zip(_leaves(inputs), _leaves(cinputs), strict=True):
        _close(b.grad, a.grad, rtol=1e-5, atol=1e-5)
    for p, q in zip(m.parameters(), compiled.parameters(), strict=True):
        _close(q.grad, p.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("case", [c for c in CASES if c.compile], ids=lambda c: c.id)
def test_compiled_graph_is_kept_across_eager_calls(case: Case, grad: bool) -> None:
    """Eager calls between compiled ones (and what torchwire keeps for them) do not make
    torch.compile trace the module again."""
    torch._dynamo.reset()
    m = case.make()
    compiled = torch.compile(m, fullgraph=True)
    inputs = case.make_inputs(m, (5,), torch.float32, "cpu")
    with torch.set_grad_enabled(grad), torch._dynamo.config.patch(error_on_recompile=True):
        first = compiled(*inputs)
        eager = m(*inputs)
        _close(compiled(*inputs), first)
    _close(first, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_matches_cpu(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (6,), torch.float64, "cpu")
    out = m(*inputs)
    cuda_out = copy.deepcopy(m).cuda()(*_map(lambda t: t.cuda(), inputs))
    assert all(y.is_cuda for y in _leaves(cuda_out))
    _close(_map(lambda t: t.cpu(), cuda_out), out)
