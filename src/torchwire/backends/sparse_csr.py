r"""CSR sparse-linear backend: sparse kernels for the forward and both gradients.

For a layer :math:`y = x A^T` whose weight :math:`A` has ``nnz`` connections:

* forward: a sparse-dense product with :math:`A` in CSR form (by output);
* grad-input: :math:`\partial x = \partial y \\, A`, the same product with the transposed
  structure (CSR by input; its values are ``weight[perm]``), so no sparse transpose is built;
* grad-weight: sampled dense-dense product (SDDMM), :math:`\partial A_e =
  \sum_n \partial y_{n, o_e} x_{n, i_e}`, computed at the connections only.

Each is ``rows * nnz`` multiply-adds, against ``rows * in * out`` for a dense GEMM. The two
operations are registered as torch operators (``torch.ops.torchwire.csr_linear`` and
``csr_sampled``) whose derivatives are again these two ops, so gradients of any order exist,
and ``torch.compile(fullgraph=True)`` treats them as opaque calls (given the input
column-major, as eager calls copy it). Eager calls skip the ops' dispatch: without autograd
the kernel runs on the weight directly, with autograd through a plain ``autograd.Function``
on the same kernels. Compiled graphs that record no autograd call a third op,
``torch.ops.torchwire.csr_addmm``: one kernel with the bias fused.
The sparse tensors are temporary views built inside the ops: nothing outside sees
``torch.sparse``. ATen's sparse kernels (MKL on CPU, cuSPARSE on CUDA) take float32 and
float64; half-precision inputs are computed in float32 and rounded once at the end.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from torchwire.backends import (
    LAUNCH_CUDA,
    Backend,
    SparseIndex,
    SparseProblem,
    register,
    weighted,
)
from torchwire.backends.sparse_dense import connection_outputs

_NATIVE = (torch.float32, torch.float64)
_FIRST_CSR = [True]


def _csr(indptr: Tensor, indices: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    if _FIRST_CSR[0]:
        # ATen warns once per process that sparse CSR support is "beta"; these tensors never
        # leave this module, so the warning would only confuse users. Silence that one.
        _FIRST_CSR[0] = False
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return _csr(indptr, indices, values, shape)
    return torch.sparse_csr_tensor(indptr, indices, values, shape, check_invariants=False)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in _NATIVE else torch.float32


def _linear(
    x: Tensor,
    values: Tensor,
    indptr: Tensor,
    indices: Tensor,
    t_indptr: Tensor,
    t_indices: Tensor,
    perm: Tensor,
    transpose: bool,
) -> Tensor:
    """``x @ A^T`` (``transpose=False``, ``x`` is ``(M, in)``) or ``x @ A`` (``transpose=True``,
    ``x`` is ``(M, out)``), for ``A`` the ``(out, in)`` matrix with ``values`` at the
    connections. Returns a ``(M, n)`` tensor stored column-major (a transposed view)."""
    n_out, n_in = indptr.shape[0] - 1, t_indptr.shape[0] - 1
    dtype = _compute_dtype(x.dtype)
    values = values.to(dtype)
    if transpose:  # index_select: several times faster than values[perm] on CPU
        matrix = _csr(t_indptr, t_indices, values.index_select(0, perm), (n_in, n_out))
    else:
        matrix = _csr(indptr, indices, values, (n_out, n_in))
    return torch.mm(matrix, x.to(dtype).t()).to(x.dtype).t()


def _csr_linear_fake(
    x: Tensor, values: Tensor, indptr: Tensor, indices: Tensor, t_indptr: Tensor, *rest: Any
) -> Tensor:
    transpose = rest[-1]
    n = (t_indptr if transpose else indptr).shape[0] - 1
    return x.new_empty(n, x.shape[0]).t()


def _sampled(
    a: Tensor,
    b: Tensor,
    indptr: Tensor,
    indices: Tensor,
    t_indptr: Tensor,
    t_indices: Tensor,
    perm: Tensor,
) -> Tensor:
    """``(a^T b)`` at the connections, in canonical order: ``v_e = sum_n a[n, o_e] b[n, i_e]``
    for ``a`` ``(M, out)`` and ``b`` ``(M, in)``."""
    dtype = _compute_dtype(a.dtype)
    shape = (indptr.shape[0] - 1, t_indptr.shape[0] - 1)
    pattern = _csr(indptr, indices, a.new_zeros(indices.shape[0], dtype=dtype), shape)
    product = torch.sparse.sampled_addmm(pattern, a.to(dtype).t(), b.to(dtype), beta=0.0)
    values: Tensor = product.values()
    return values.to(a.dtype)


def _csr_sampled_fake(a: Tensor, b: Tensor, indptr: Tensor, indices: Tensor, *rest: Any) -> Tensor:
    return a.new_empty(indices.shape[0])


def _setup_linear(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, values, *index, transpose = inputs
    ctx.save_for_backward(x, values, *index)
    ctx.transpose = transpose


def _linear_grads(
    ctx: Any,
    grad: Tensor,
    linear: Callable[..., Tensor],
    sampled: Callable[..., Tensor],
    columns: Tensor | None = None,
) -> tuple[Tensor | None, ...]:
    """The gradients of :func:`csr_linear`; ``columns``: the input, column-major, if the
    forward made that copy (the sampled product reads it faster)."""
    # y = x A^T: dx = dy A,   dA_e = sum_n dy[n, o_e] x[n, i_e]
    # y = x A:   dx = dy A^T, dA_e = sum_n x[n, o_e] dy[n, i_e]
    x, values, *index = ctx.saved_tensors
    if columns is not None:
        x = columns
    grad_x = grad_v = None
    if ctx.needs_input_grad[0]:
        grad_x = linear(grad, values, *index, not ctx.transpose)
    if ctx.needs_input_grad[1]:
        grad_v = sampled(x, grad, *index) if ctx.transpose else sampled(grad, x, *index)
    return grad_x, grad_v, None, None, None, None, None, None


def _backward_linear(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    return _linear_grads(ctx, grad, csr_linear, csr_sampled)


def _setup_sampled(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward_sampled(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    # v_e = sum_n a[n, o_e] b[n, i_e]: da = b A_dv^T, db = a A_dv (A_dv: dv at the connections)
    a, b, *index = ctx.saved_tensors
    grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_a = csr_linear(b, grad, *index, False)
    if ctx.needs_input_grad[1]:
        grad_b = csr_linear(a, grad, *index, True)
    return grad_a, grad_b, None, None, None, None, None


# The two as ops, for autograd and torch.compile (`_linear` and `_sampled` stay callable
# without their dispatch). Library ops, not custom_ops: the same registrations, at less
# dispatch (measured on CPU, a tiny call: 11 us over the kernel's own Python against 17
# without autograd, 46 against 52 with it; three calls a training step).
_LIBRARY = torch.library.Library("torchwire", "FRAGMENT")
_INDEX_ARGS = "Tensor indptr, Tensor indices, Tensor t_indptr, Tensor t_indices, Tensor perm"
_LIBRARY.define(f"csr_linear(Tensor x, Tensor values, {_INDEX_ARGS}, bool transpose) -> Tensor")
_LIBRARY.define(f"csr_sampled(Tensor a, Tensor b, {_INDEX_ARGS}) -> Tensor")
for _name, _impl, _fake, _backward, _setup in (
    ("csr_linear", _linear, _csr_linear_fake, _backward_linear, _setup_linear),
    ("csr_sampled", _sampled, _csr_sampled_fake, _backward_sampled, _setup_sampled),
):
    _LIBRARY.impl(_name, _impl, "CompositeExplicitAutograd")
    torch.library.register_fake(f"torchwire::{_name}", _fake, lib=_LIBRARY)
    torch.library.register_autograd(
        f"torchwire::{_name}", _backward, setup_context=_setup, lib=_LIBRARY
    )
csr_linear = torch.ops.torchwire.csr_linear.default
csr_sampled = torch.ops.torchwire.csr_sampled.default


def _column_major(x: Tensor) -> Tensor:
    """``x`` stored column-major, as the kernels read it: copied once where it is not (in
    the dtypes they compute in; the others are converted anyway)."""
    if x.dtype in _NATIVE and not x.t().is_contiguous():
        return x.t().contiguous().t()
    return x


class _CsrLinear(torch.autograd.Function):
    """:func:`csr_linear` with the bias fused, in eager mode: the same kernels and
    derivatives without the ops' dispatch (tens of microseconds a call with autograd, three
    calls a step). Double backward goes through the ops, which are differentiable to any
    order.

    The kernels read the input column-major: a row-major input is copied once, here, and
    the copy is what backward's sampled product reads (about twice as fast as the row-major
    input, which it would copy again). Inputs from another layer's kernel are column-major
    already (no copy)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, values: Tensor, bias: Tensor | None, *index: Tensor) -> Tensor:
        ctx.save_for_backward(x, values, *index)  # the input itself, for double backward
        ctx.transpose = False
        columns = _column_major(x)
        ctx.columns = None if columns is x else columns  # an intermediate: kept on ctx
        return _addmm(columns, values, index[0], index[1], index[2].shape[0] - 1, bias)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        if torch.is_grad_enabled():  # double backward: the differentiable ops
            grad_x, grad_v, *_ = _backward_linear(ctx, grad)
        else:
            grad_x, grad_v, *_ = _linear_grads(ctx, grad, _linear, _sampled, ctx.columns)
        return grad_x, grad_v, grad_bias, None, None, None, None, None


def _addmm(
    x: Tensor,
    values: Tensor,
    indptr: Tensor,
    indices: Tensor,
    in_features: int,
    bias: Tensor | None,
) -> Tensor:
    """``x @ A^T + bias`` in one sparse kernel with the bias fused, the sparse matrix-vector
    kernel for one row (about 2x faster); nothing is recorded for autograd (the no-grad
    path, and the forward of :class:`_CsrLinear`). Returns a ``(M, out)`` tensor stored
    column-major, as :func:`_linear` does."""
    if x.dtype not in _NATIVE:  # computed in float32, rounded once (no casts on the fast path)
        b = None if bias is None else bias.float()
        y = _addmm(x.float(), values.float(), indptr, indices, in_features, b)
        return y.to(x.dtype)
    matrix = _csr(indptr, indices, values, (indptr.shape[0] - 1, in_features))
    if x.shape[0] == 1:
        row = x[0]
        y = torch.mv(matrix, row) if bias is None else torch.addmv(bias, matrix, row)
        return y.unsqueeze(1).t()
    xt = x.t()
    y = torch.mm(matrix, xt) if bias is None else torch.addmm(bias.unsqueeze(1), matrix, xt)
    return y.t()


# The no-grad forward as an op for compiled graphs. A plain library op, not a custom_op:
# it needs no autograd (only graphs that record none call it), and its dispatch costs a
# few microseconds against about 20 for a custom_op's (measured on CPU).
_LIBRARY.define(
    "csr_addmm(Tensor x, Tensor values, Tensor indptr, Tensor indices, SymInt in_features, "
    "Tensor? bias) -> Tensor"
)
_LIBRARY.impl("csr_addmm", _addmm, "CompositeExplicitAutograd")


def _csr_addmm_fake(
    x: Tensor, values: Tensor, indptr: Tensor, indices: Tensor, in_features: int, bias: Any
) -> Tensor:
    return x.new_empty(indptr.shape[0] - 1, x.shape[0]).t()


torch.library.register_fake("torchwire::csr_addmm", _csr_addmm_fake, lib=_LIBRARY)


def sparse_linear_csr(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    index: SparseIndex,
    problem: SparseProblem,
) -> Tensor:
    if not problem.requires_grad:  # no graph to record: one kernel, the bias fused
        if problem.compiling:  # an opaque call in the graph
            addmm = torch.ops.torchwire.csr_addmm
            out: Tensor = addmm(input, weight, index.indptr, index.indices, index.in_features, bias)
            return out
        return _addmm(input, weight, index.indptr, index.indices, index.in_features, bias)
    if problem.compiling:  # graphs keep the op, an opaque call
        y: Tensor = csr_linear(_column_major(input), weight, *index.tensors, False)
        return y if bias is None else y + bias
    fused: Tensor = _CsrLinear.apply(input, weight, bias, *index.tensors)
    return fused


def sparse_linear_gather(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    index: SparseIndex,
    problem: SparseProblem,
) -> Tensor:
    r"""The ONNX form (no sparse kernels there), the same ``rows * nnz`` products:
    :math:`y^T = \mathrm{ScatterND_{add}}(0, o, x^T[i] \odot w)`: the input rows of every
    connection gathered (by input ``i_e``), scaled by its value ``w_e``, and added into its
    output's row ``o_e`` (Gather, Mul, ScatterND with ``reduction="add"``). The outputs are
    computed from the index buffers (folded by onnxruntime when it loads the model)."""
    outputs = connection_outputs(index)
    products = input.t().index_select(0, index.indices) * weight.unsqueeze(1)
    y = input.new_zeros((index.out_features, input.shape[0]))
    y = y.index_put((outputs,), products, accumulate=True).t()
    return y if bias is None else y + bias


def _supports(problem: SparseProblem) -> str | None:
    if problem.functorch:
        return "torch.func transforms (grad, vmap, ...) cannot run its sparse kernels"
    return None


# Cost model, in units of one multiply-add of a large GEMM (shared by every backend). CPU
# (MKL): a weighted sum of the counts of cost_features, one set of weights for inference and
# one for training. A sparse multiply-add costs several GEMM ones (indirect access), more
# once the input no longer fits in the cache; each activation element read or written costs
# some (the kernels' dense operands are column-major), each connection some index work, and
# each call a custom op's dispatch. Fitted by benchmarks/sparse_costs.py, with the dense
# backend's weights (see there). CUDA: launch-bound at small sizes (cuSPARSE: a few launches
# per call), then about 4 GEMM multiply-adds per product.
FEATURES = ("product", "product_far", "activation", "connection", "call")
_CPU = {False: (2.53, 3.53, 74.7, 28.7, 4.4e06), True: (9.97, 10.1, 289.0, 358.0, 1.88e07)}
_CACHE_BYTES = 2**20
_PER_PRODUCT_CUDA = 4.0


def cost_features(problem: SparseProblem) -> tuple[float, ...]:
    """The counts of ``problem`` the CPU cost model weighs, in the order of
    :data:`FEATURES`: the products (rows times connections), the products again where the
    input exceeds the cache, the activation elements read and written, the connections,
    1 per call."""
    products = problem.rows * problem.nnz
    far = (
        products
        if problem.rows * problem.in_features * problem.dtype.itemsize > _CACHE_BYTES
        else 0
    )
    activations = problem.rows * (problem.in_features + problem.out_features)
    return (products, far, activations, problem.nnz, 1)


def _cost(problem: SparseProblem) -> float:
    if problem.device_type != "cpu":
        passes = 3 if problem.requires_grad else 1
        return passes * (_PER_PRODUCT_CUDA * problem.rows * problem.nnz + 3 * LAUNCH_CUDA)
    weights = _CPU[problem.requires_grad]
    return weighted(weights, cost_features(problem))


# onnxruntime (one thread, MLAS), in units of one multiply-add of its large GEMM (about
# 22 ps): the gathered form costs about 1140 a connection (ScatterND's work per index, above
# all) and 86 a product (Gather, Mul and ScatterND's add per row). Fitted to
# benchmarks/onnx_sparse.py (1024 x 1024 at 0.2%-50%, batch 1, 8 and 64; within 1.4x, the
# gathered form wins below about 1% density): benchmarks/results/cpu-intel-xeon-float32-onnx.md.
_ONNX_PER_CONNECTION = 1140.0
_ONNX_PER_PRODUCT = 86.0


def _onnx_cost(problem: SparseProblem) -> float:
    return (_ONNX_PER_CONNECTION + _ONNX_PER_PRODUCT * problem.rows) * problem.nnz


register(
    Backend(
        "csr",
        "sparse_linear",
        sparse_linear_csr,
        _supports,
        _cost,
        onnx=sparse_linear_gather,
        onnx_cost=_onnx_cost,
    )
)
