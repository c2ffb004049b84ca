"""torchwire: partially connected neural network layers for PyTorch."""

from torchwire import backends, functional
from torchwire.layers import BlockLinear, SparseLinear
from torchwire.wiring import Wiring

__version__ = "0.1.0"

__all__ = ["BlockLinear", "SparseLinear", "Wiring", "__version__", "backends", "functional"]
