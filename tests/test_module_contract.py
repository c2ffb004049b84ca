"""The generic module contract: every public torchwire module goes through the same checks.

Add a row to ``CASES`` for each new public module (or configuration worth its own row);
the test bodies below are shared. Modelled on PyTorch's ``module_db``.
"""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call

import torchwire as tw
from tests import reference

Inputs = tuple[torch.Tensor, ...]


@dataclass
class Case:
    """One row of the contract table.

    make: builds the module from factory kwargs (device=, dtype=).
    make_inputs: ``(module, batch_shape, dtype, device) -> inputs`` for ``module(*inputs)``.
    oracle: float64 reference ``(module, *inputs) -> output``.
    """

    id: str
    make: Callable[..., nn.Module]
    make_inputs: Callable[[nn.Module, tuple[int, ...], torch.dtype, str], Inputs]
    oracle: Callable[..., torch.Tensor]
    repr: str
    compile: bool = False
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
        "BlockLinear(in_features=[2, 2], out_features=[3, 3], bias=True)",
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
            (lambda m: m(torch.randn(2, 5)), ValueError, r"has 2 inputs of sizes \[5, 3\], got 1"),
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

IDS = [c.id for c in CASES]


def _f64(case: Case, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return case.make(dtype=torch.float64)


def _close(a: torch.Tensor, b: torch.Tensor, **kw: Any) -> None:
    torch.testing.assert_close(a.double(), b.double(), **kw)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("batch", [(5,), (2, 3), (), (0,)], ids=["2d", "3d", "nobatch", "empty"])
def test_forward_matches_oracle(case: Case, batch: tuple[int, ...]) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, batch, torch.float64, "cpu")
    out = m(*inputs)
    expected = case.oracle(m, *inputs)
    assert out.shape == expected.shape
    _close(out, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_and_gradgradcheck(case: Case) -> None:
    m = _f64(case)
    inputs = tuple(t.requires_grad_() for t in case.make_inputs(m, (3,), torch.float64, "cpu"))
    names = [n for n, _ in m.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def fn(*args: torch.Tensor) -> torch.Tensor:
        ins, ps = args[: len(inputs)], args[len(inputs) :]
        return functional_call(m, dict(zip(names, ps, strict=True)), ins)

    assert torch.autograd.gradcheck(fn, inputs + params)
    assert torch.autograd.gradgradcheck(fn, inputs + params)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_factory_kwargs_are_honoured(case: Case, dtype: torch.dtype) -> None:
    m = case.make(dtype=dtype, device="cpu")
    tensors = list(m.parameters()) + list(m.buffers())
    assert tensors
    assert all(t.device.type == "cpu" for t in tensors)
    assert all(t.dtype == dtype for t in m.parameters())
    meta = case.make(device="meta")
    assert all(t.is_meta for t in list(meta.parameters()) + list(meta.buffers()))
    if torch.cuda.is_available():
        cuda = case.make(device="cuda", dtype=dtype)
        assert all(t.is_cuda for t in list(cuda.parameters()) + list(cuda.buffers()))


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_forward_is_close_to_oracle(case: Case, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    m = case.make(dtype=dtype)
    inputs = case.make_inputs(m, (4,), dtype, "cpu")
    out = m(*inputs)
    assert out.dtype == dtype
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    _close(out, case.oracle(m, *inputs), rtol=tol, atol=tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_meta_construction_then_to_empty(case: Case) -> None:
    with torch.device("meta"):
        m = case.make()
    m.to_empty(device="cpu")
    m.reset_parameters()  # type: ignore[operator]
    m.double()
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    _close(m(*inputs), case.oracle(m, *inputs))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_repr_names_the_module_and_its_structure(case: Case) -> None:
    m = case.make()
    text = repr(m)
    assert text.startswith(type(m).__name__ + "(")
    assert m.extra_repr()
    assert m.extra_repr() in text


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_deepcopy_and_pickle_give_independent_equal_modules(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        _close(clone(*inputs), m(*inputs), rtol=0, atol=0)
        for p, q in zip(m.parameters(), clone.parameters(), strict=True):
            assert p.data_ptr() != q.data_ptr()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip_with_weights_only_load(case: Case) -> None:
    m = _f64(case, seed=0)
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = _f64(case, seed=1)
    inputs = case.make_inputs(m, (3,), torch.float64, "cpu")
    if any(p.numel() for p in m.parameters()):
        assert not torch.equal(fresh(*inputs), m(*inputs))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    _close(fresh(*inputs), m(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_non_contiguous_inputs(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (4, 3), torch.float64, "cpu")
    # Same values, transposed storage: (3, 4, F) stored as (4, 3, F) -> permuted view.
    strided = tuple(t.transpose(0, 1).contiguous().transpose(0, 1) for t in inputs)
    assert not any(t.is_contiguous() for t in strided)
    _close(m(*strided), m(*inputs))
    sliced = tuple(torch.cat([t, t], -1)[..., : t.shape[-1]] for t in inputs)
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


@pytest.mark.parametrize("case", [c for c in CASES if c.compile], ids=lambda c: c.id)
def test_compile_fullgraph_matches_eager(case: Case) -> None:
    torch._dynamo.reset()
    m = case.make()
    compiled = copy.deepcopy(m)
    inputs = case.make_inputs(m, (5,), torch.float32, "cpu")
    cinputs = tuple(t.clone().requires_grad_() for t in inputs)
    inputs = tuple(t.requires_grad_() for t in inputs)
    out = m(*inputs)
    cout = torch.compile(compiled, fullgraph=True)(*cinputs)
    _close(cout, out, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    cout.backward(grad)
    for a, b in zip(inputs, cinputs, strict=True):
        _close(b.grad, a.grad, rtol=1e-5, atol=1e-5)
    for p, q in zip(m.parameters(), compiled.parameters(), strict=True):
        _close(q.grad, p.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cuda_matches_cpu(case: Case) -> None:
    m = _f64(case)
    inputs = case.make_inputs(m, (6,), torch.float64, "cpu")
    out = m(*inputs)
    cuda_out = copy.deepcopy(m).cuda()(*(t.cuda() for t in inputs))
    assert cuda_out.is_cuda
    _close(cuda_out.cpu(), out)
