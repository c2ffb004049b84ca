"""How the bench measures memory: bytes a module keeps (:func:`state_bytes`) and bytes a step
has alive at its peak (:func:`peak_bytes`; on a CPU tracked per ATen op by :class:`LiveBytes`,
on CUDA read from the caching allocator)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["PEAK_BYTES_MEANING", "LiveBytes", "peak_bytes", "state_bytes"]

PEAK_BYTES_MEANING = {
    "cpu": (
        "most bytes alive at once of the tensors created during one forward+backward step"
        " (outputs, saved activations, gradients of the input and all parameters), tracked per"
        " ATen op with a TorchDispatchMode; scratch memory inside a kernel is not seen"
    ),
    "cuda": (
        "peak bytes allocated by the CUDA caching allocator during one forward+backward step,"
        " above what was allocated before it (torch.cuda.max_memory_allocated)"
    ),
}
"""What ``peak bytes`` means, by device type."""

_SPARSE_PARTS = {
    torch.sparse_coo: ("_indices", "_values"),
    torch.sparse_csr: ("crow_indices", "col_indices", "values"),
    torch.sparse_bsr: ("crow_indices", "col_indices", "values"),
    torch.sparse_csc: ("ccol_indices", "row_indices", "values"),
    torch.sparse_bsc: ("ccol_indices", "row_indices", "values"),
}


def state_bytes(module: nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers."""
    tensors = chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    """Storages of the tensors in ``tree``; a sparse tensor's: those of its indices and values."""
    storages = []
    for t in tree_leaves(tree):
        if isinstance(t, Tensor):
            parts = [getattr(t, name)() for name in _SPARSE_PARTS.get(t.layout, ())] or [t]
            storages += [part.untyped_storage() for part in parts]
    return storages


class LiveBytes(TorchDispatchMode):
    """Track the bytes of tensor storages created by ATen ops while the mode is active.

    A storage counts from the op that creates it (outputs that alias an input, such as views and
    in-place results, are not new) until it is freed (a ``weakref.finalize`` on the storage);
    :attr:`peak` is the maximum of the running total. Sparse tensors count their index and
    value tensors.

    Examples::

        >>> with LiveBytes() as tracker:
        ...     a = torch.ones(100)  # 400 B
        ...     b = a * 2  # 400 B more
        ...     del a, b
        >>> tracker.peak, tracker.current
        (800, 0)
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        aliased = {storage.data_ptr() for storage in _storages((args, kwargs))}
        for storage in _storages(out):
            key = storage.data_ptr()
            if key == 0 or key in aliased or key in self.live:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


def peak_bytes(step: Callable[[], None], device: torch.device) -> int:
    """Peak memory of ``step()`` beyond what existed before it (see :data:`PEAK_BYTES_MEANING`).

    Args:
        step (Callable[[], None]): the work to measure; it runs once, with grad mode enabled.
        device (torch.device): where ``step`` allocates. CUDA reads the caching allocator's
            statistics; other devices track tensors with :class:`LiveBytes`.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.enable_grad():
            step()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    tracker = LiveBytes()
    with torch.enable_grad(), tracker:
        step()
    return tracker.peak
