"""torchwire: partially connected neural network layers for PyTorch."""

from torchwire import backends, functional
from torchwire.layers import BlockLinear
from torchwire.wiring import Wiring

__version__ = "0.1.0"

__all__ = ["BlockLinear", "Wiring", "__version__", "backends", "functional"]
