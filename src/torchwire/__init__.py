"""torchwire: partially connected neural network layers for PyTorch."""

from torchwire import backends, functional, prune
from torchwire.containers import Concat, Map, Parallel, Split, Sum
from torchwire.dynamic import DynamicSparsity
from torchwire.fusion import FusedParallel, FuseReport, fuse, fuse_parallel, unfuse
from torchwire.hierarchy import hierarchy
from torchwire.layers import BlockLinear, MultiLinear, SparseLinear
from torchwire.merging import merge
from torchwire.prune import sparsify
from torchwire.serialization import load, save
from torchwire.wiring import Wiring

__version__ = "0.1.0"

__all__ = [
    "BlockLinear",
    "Concat",
    "DynamicSparsity",
    "FuseReport",
    "FusedParallel",
    "Map",
    "MultiLinear",
    "Parallel",
    "SparseLinear",
    "Split",
    "Sum",
    "Wiring",
    "__version__",
    "backends",
    "functional",
    "fuse",
    "fuse_parallel",
    "hierarchy",
    "load",
    "merge",
    "prune",
    "save",
    "sparsify",
    "unfuse",
]
