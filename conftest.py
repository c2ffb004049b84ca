"""Suite-wide setup: one thread (2-core machines are 20-80x slower with two), doctest names."""

import pytest
import torch
from torch import nn

import torchwire

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict[str, object]) -> None:
    doctest_namespace.update(torch=torch, nn=nn, torchwire=torchwire, tw=torchwire)
