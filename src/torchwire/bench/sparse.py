"""The bench's ``sparse`` section: layers with any (here random) connectivity.

A case is a random wiring ``Wiring.random(n, n, density=d, seed=seed)`` and a batch size; the
reference is ``masked_weight``, the dense weight times a mask that users write. Methods:

- ``torchwire``: :class:`torchwire.SparseLinear` with ``backend="auto"``, and
  ``torchwire[NAME]`` for every registered ``sparse_linear`` backend that can compute the case.
- ``masked_weight``: ``F.linear(x, weight * mask, bias)`` with a dense weight and a dense mask
  buffer.
- ``prune_mask``: a dense ``nn.Linear`` masked with ``torch.nn.utils.prune.custom_from_mask``.
- ``torch_sparse``: a values parameter and CSR indices, ``torch.sparse.mm`` with autograd.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import torchwire
from torchwire.backends import available
from torchwire.bench.compare import AUTO_NOTE, Comparison, regret
from torchwire.bench.config import BenchConfig
from torchwire.bench.methods import MODES, Measured, backend_builders, measure, pruned
from torchwire.bench.section import Table

__all__ = ["DENSITIES", "FEATURES", "SECTION", "SPARSE_ALTERNATIVES", "SparseCaseResult"]

SPARSE_ALTERNATIVES = ("masked_weight", "prune_mask", "torch_sparse")
"""The methods users write today instead of torchwire's sparse layers."""
FEATURES = {"quick": (1024,), "default": (1024,), "full": (1024, 4096)}
"""Sizes ``n`` of the section's ``n -> n`` layers, by grid."""
DENSITIES = {
    "quick": (0.05, 0.01),
    "default": (0.5, 0.1, 0.01),
    "full": (0.5, 0.2, 0.1, 0.05, 0.01, 0.001),
}
"""Densities of the section's wirings (fractions of the ``n * n`` connections), by grid."""
_MASKED_WEIGHT = "F.linear(x, weight * mask, bias), dense weight and dense mask buffer"


class _MaskedWeightLinear(nn.Linear):
    """The dense weight times a mask that users write: ``F.linear(x, weight * mask, bias)``."""

    mask: Tensor

    def __init__(self, mask: Tensor, **factory_kwargs: Any) -> None:
        super().__init__(mask.shape[1], mask.shape[0], **factory_kwargs)
        self.register_buffer("mask", mask.to(self.weight))

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight * self.mask, self.bias)


class _TorchSparseLinear(nn.Module):
    """Connection values as a parameter; per call, a sparse CSR tensor of them and
    ``torch.sparse.mm``, differentiated by autograd."""

    crow_indices: Tensor
    col_indices: Tensor

    def __init__(self, wiring: torchwire.Wiring, **factory_kwargs: Any) -> None:
        super().__init__()
        layer = torchwire.SparseLinear(wiring, **factory_kwargs)  # for its initial values
        self.weight, self.bias = layer.weight, cast(nn.Parameter, layer.bias)
        self.shape = wiring.shape
        device = factory_kwargs.get("device")
        # CSR by output: the canonical order of the values. int64, like Tensor.to_sparse_csr().
        self.register_buffer("crow_indices", wiring.indptr.to(device))
        self.register_buffer("col_indices", wiring.indices.to(device, torch.int64))
        with warnings.catch_warnings():
            # torch warns once per process that sparse CSR support is in beta: here, silenced.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self._sparse_weight()

    def _sparse_weight(self) -> Tensor:
        # check_invariants=False explicitly, as users do to silence torch's warning about it.
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.weight, self.shape, check_invariants=False
        )

    def forward(self, input: Tensor) -> Tensor:
        out: Tensor = torch.sparse.mm(self._sparse_weight(), input.t())
        return out.t() + self.bias


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


@dataclass
class SparseCaseResult(Measured):
    """Everything measured for one random ``features -> features`` wiring and batch size
    (reference: ``masked_weight``)."""

    reference: ClassVar[str] = "masked_weight"
    alternatives: ClassVar[tuple[str, ...]] = SPARSE_ALTERNATIVES

    features: int
    density: float
    nnz: int

    @property
    def name(self) -> str:
        """``"FEATURES DENSITY%"``, e.g. ``"1024 5%"``."""
        return f"{self.features} {_percent(self.density)}"

    def bytes_per_connection(self, name: str) -> float:
        """Parameter + buffer bytes of method ``name`` divided by the number of connections."""
        return self.methods[name].param_bytes / self.nnz


_HEADERS = (
    "features",
    "density",
    "batch",
    "auto backend",
    "fastest backend",
    "auto / fastest",
    "speedup fwd",
    "speedup fwd+bwd",
    "torchwire bytes / conn",
)


class SparseSection(Comparison[tuple[int, float, int], SparseCaseResult]):
    name, key, kind = "sparse", "sparse", "sparse layers"
    runs = "SparseLinear"
    advice: ClassVar[Mapping[str, str]] = {
        "masked_weight": "a dense nn.Linear",
        "prune_mask": "a dense nn.Linear",
        "torch_sparse": "torch.sparse.mm",
    }

    def cases(self, config: BenchConfig) -> list[tuple[int, float, int]]:
        return [
            (features, density, batch)
            for batch in config.batches
            for features in config.features
            for density in config.densities
        ]

    def run(self, case: tuple[int, float, int], config: BenchConfig) -> SparseCaseResult:
        features, density, batch = case
        # Wiring.random(n, n, density=d) draws round(d * n * n) connections; at least one.
        nnz = max(1, round(density * features * features))
        wiring = torchwire.Wiring.random(features, features, nnz=nnz, seed=config.seed)
        builders = backend_builders(
            partial(torchwire.SparseLinear, wiring), available("sparse_linear")
        )
        mask = wiring.mask()
        builders["masked_weight"] = partial(_MaskedWeightLinear, mask)
        builders["prune_mask"] = partial(pruned, mask)
        builders["torch_sparse"] = partial(_TorchSparseLinear, wiring)
        return measure(
            SparseCaseResult,
            builders,
            (features,),
            batch,
            config,
            features=features,
            density=density,
            nnz=nnz,
        )

    def progress(self, result: SparseCaseResult) -> str:
        return (
            f"sparse {self.case_name(result)}: {result.label('torchwire')},"
            f" fwd+bwd {result.speedup_over('masked_weight', 'fwd_bwd'):.2f}x vs masked_weight"
            f" ({result.seconds:.1f} s)"
        )

    def case_name(self, case: SparseCaseResult) -> str:
        return f"{case.name} batch={case.batch}"

    def environment(self, config: BenchConfig) -> dict[str, Any]:
        return {
            "sparse": {
                "features": list(config.features),
                "densities": list(config.densities),
                "backends": list(available("sparse_linear")),
                "wiring": f"Wiring.random(n, n, density=d, seed={config.seed})",
                "masked_weight": _MASKED_WEIGHT,
            }
        }

    def notes(self, results: Sequence[SparseCaseResult]) -> list[str]:
        return [
            f"x masked_weight: time / time of `masked_weight`, {_MASKED_WEIGHT}.",
            AUTO_NOTE,
            "sparse cases: Wiring.random(n, n, density=d); bytes / conn: params bytes /"
            " connections; speedup: time of masked_weight / time of torchwire (auto).",
        ]

    def title(self, case: SparseCaseResult) -> str:
        return (
            f"sparse {case.features} -> {case.features}, density {_percent(case.density)}"
            f" ({case.nnz:,} connections), batch {case.batch}; reference = masked_weight"
        )

    def overview(self, results: Sequence[SparseCaseResult]) -> Table:
        rows = [
            [
                str(case.features),
                _percent(case.density),
                str(case.batch),
                case.auto_backend["fwd_bwd"],
                case.fastest_backend("fwd_bwd") or "-",
                regret(case),
                *(f"{case.speedup_over(case.reference, mode):.2f}x" for mode in MODES),
                f"{case.bytes_per_connection('torchwire'):.1f}",
            ]
            for case in results
        ]
        title = "sparse summary (auto / fastest: fwd+bwd; speedup vs masked_weight)"
        return Table(title, _HEADERS, rows)

    def to_dict(self, result: SparseCaseResult) -> dict[str, Any]:
        return {
            "features": result.features,
            "density": result.density,
            "nnz": result.nnz,
            **self.common_dict(result),
            "speedup_vs_masked_weight": {
                mode: result.speedup_over(result.reference, mode) for mode in MODES
            },
        }


SECTION = SparseSection()
