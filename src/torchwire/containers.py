"""Branching containers that compose inside ``nn.Sequential``: tuples flow between them.

``Parallel`` runs several branches on one input; ``Split`` cuts a tensor into a tuple;
``Map`` applies one module per tuple element; ``Concat`` and ``Sum`` join a tuple back
into a tensor. A module that gets a tuple where it expects a tensor (or the reverse) raises
a ``TypeError`` naming both.
"""

from __future__ import annotations

import operator
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from torchwire import _join
from torchwire._checks import renamed

__all__ = ["Concat", "Map", "Parallel", "Split", "Sum"]


def _check_tensor(value: object, module: str) -> None:
    if not isinstance(value, (torch.Tensor, torch.fx.Proxy)):
        raise TypeError(
            f"{module} expected a Tensor, got {type(value).__name__}"
            + (
                "; join a tuple first with torchwire.Concat() or torchwire.Sum(), or apply one "
                "module per element with torchwire.Map(...)"
                if isinstance(value, (tuple, list))
                else ""
            )
        )


def _check_tuple(value: object, module: str) -> None:
    if isinstance(value, torch.Tensor):
        raise TypeError(
            f"{module} expected a tuple of tensors (from Split or Parallel), got a Tensor of "
            f"shape {tuple(value.shape)}; split it first with torchwire.Split(...)"
        )
    if not isinstance(value, (tuple, list, torch.fx.Proxy)):
        raise TypeError(f"{module} expected a tuple of tensors, got {type(value).__name__}")


class Parallel(nn.Module):
    r"""Runs every branch on the same input: :math:`(f_1(x), \dots, f_n(x))`, optionally joined.

    Args:
        *modules: the branches, or one ``OrderedDict`` of named branches (as ``nn.Sequential``).
        join: how the outputs are joined: ``None`` (return a tuple), ``"cat"`` or ``"stack"``
            (along ``dim``), ``"sum"`` or ``"mean"`` (elementwise). Default: ``None``.
            (Formerly ``merge=``, deprecated: "merge" is :func:`torchwire.merge`, composing
            layers.)
        dim: the dimension ``"cat"`` and ``"stack"`` use. Default: ``-1``.

    Shape:
        - Input: whatever every branch accepts.
        - Output: a tuple of the branches' outputs, or their join.

    Examples::

        >>> heads = torchwire.Parallel(nn.Linear(8, 2), nn.Linear(8, 2))  # mean, log-variance
        >>> mean, logvar = heads(torch.randn(4, 8))
        >>> mean.shape
        torch.Size([4, 2])
        >>> both = torchwire.Parallel(nn.Linear(8, 2), nn.Linear(8, 3), join="cat")
        >>> both(torch.randn(4, 8)).shape
        torch.Size([4, 5])
    """

    join: str | None
    dim: int

    def __init__(
        self,
        *modules: nn.Module | OrderedDict[str, nn.Module],
        join: str | None = None,
        dim: int = -1,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        join = renamed("Parallel", deprecated, "merge", "join", join, None)
        if join not in _join.JOINS:
            raise ValueError(f"join must be one of {list(_join.JOINS)}, got {join!r}")
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        self.join = join
        self.dim = dim
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            named: list[tuple[str, object]] = list(modules[0].items())
        else:
            named = [(str(i), m) for i, m in enumerate(modules)]
        for name, module in named:
            self._add(name, module)

    @property
    def merge(self) -> str | None:
        """Deprecated spelling of :attr:`join`."""
        warnings.warn(
            "Parallel.merge is deprecated; use Parallel.join", DeprecationWarning, stacklevel=2
        )
        return self.join

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "join" not in state:  # pickled by torchwire 0.1, as merge
            state["join"] = state.pop("merge", None)
        super().__setstate__(state)

    def _add(self, name: str, module: object) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"Parallel expected nn.Module branches, got {type(module).__name__} for branch "
                f"{name!r}"
            )
        self.add_module(name, module)

    def forward(self, input: Any) -> Any:
        outputs = [module(input) for module in self._modules.values()]  # type: ignore[misc]
        return _join.join(outputs, self.join, self.dim)

    def append(self, module: nn.Module) -> Parallel:
        """Add a branch at the end (named by its position)."""
        self._add(str(len(self)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())  # type: ignore[arg-type]

    def __getitem__(self, index: int | slice) -> Any:
        modules = [(name, m) for name, m in self._modules.items() if m is not None]
        if isinstance(index, slice):
            return Parallel(OrderedDict(modules[index]), join=self.join, dim=self.dim)
        return modules[operator.index(index)][1]

    def extra_repr(self) -> str:
        parts = []
        if self.join is not None:
            parts.append(f"join={self.join!r}")
        if self.dim != -1:
            parts.append(f"dim={self.dim}")
        return ", ".join(parts)


class Split(nn.Module):
    r"""Cuts a tensor into a tuple of parts along ``dim``.

    Args:
        sizes: an int, the number of equal parts (the dimension must be divisible by it), or
            a sequence of part sizes summing to the dimension.
        dim: the dimension to cut. Default: ``-1``.

    Examples::

        >>> a, b = torchwire.Split(2)(torch.randn(3, 8))
        >>> a.shape
        torch.Size([3, 4])
        >>> [p.shape[-1] for p in torchwire.Split([5, 3])(torch.randn(3, 8))]
        [5, 3]
    """

    sizes: int | tuple[int, ...]
    dim: int

    def __init__(self, sizes: int | Sequence[int], dim: int = -1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        if isinstance(sizes, int) and not isinstance(sizes, bool):
            if sizes < 1:
                raise ValueError(f"Split expected a positive number of parts, got {sizes}")
            self.sizes = sizes
        else:
            try:
                parts = tuple(sizes)  # type: ignore[arg-type]
            except TypeError:
                raise TypeError(
                    f"Split expected an int or a sequence of ints, got {type(sizes).__name__}"
                ) from None
            if not parts or not all(
                isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in parts
            ):
                raise ValueError(f"Split expected positive part sizes, got {list(parts)}")
            self.sizes = parts
        self._sizes_sum = -1 if isinstance(self.sizes, int) else sum(self.sizes)
        self.dim = dim

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_sizes_sum" not in state:  # pickled by torchwire 0.1
            self._sizes_sum = -1 if isinstance(self.sizes, int) else sum(self.sizes)

    def forward(self, input: Any) -> tuple[torch.Tensor, ...]:
        if not isinstance(input, torch.Tensor):
            _check_tensor(input, "Split")
            split: Any = torch.tensor_split  # symbolic tracing: no sizes to check
            traced: tuple[torch.Tensor, ...] = split(input, self._split_points(), self.dim)
            return traced
        size = input.shape[self.dim]
        if size == self._sizes_sum:  # the sizes given fit (the common case)
            cut: tuple[torch.Tensor, ...] = input.split(self.sizes, self.dim)
            return cut
        if isinstance(self.sizes, int):
            if size % self.sizes:
                example = _example(size, self.sizes)
                raise ValueError(
                    f"Split cannot cut dimension {self.dim} of size {size} into {self.sizes} "
                    f"equal parts; pass part sizes instead, e.g. Split({example})"
                )
            parts: tuple[torch.Tensor, ...] = input.split(size // self.sizes, self.dim)
            return parts
        raise ValueError(
            f"Split sizes {list(self.sizes)} sum to {self._sizes_sum}, but dimension "
            f"{self.dim} of the input has size {size} (input shape {tuple(input.shape)})"
        )

    def _split_points(self) -> int | list[int]:
        """``tensor_split``'s argument: the number of parts, or the indices between parts."""
        if isinstance(self.sizes, int):
            return self.sizes
        points, total = [], 0
        for size in self.sizes[:-1]:
            total += size
            points.append(total)
        return points

    def extra_repr(self) -> str:
        sizes = self.sizes if isinstance(self.sizes, int) else list(self.sizes)
        return f"sizes={sizes}" + (f", dim={self.dim}" if self.dim != -1 else "")


def _example(size: int, parts: int) -> list[int]:
    base, extra = divmod(size, parts)
    return [base + 1] * extra + [base] * (parts - extra)


class Concat(nn.Module):
    r"""Joins a tuple of tensors along ``dim`` (``torch.cat``).

    Examples::

        >>> torchwire.Concat()((torch.randn(3, 2), torch.randn(3, 5))).shape
        torch.Size([3, 7])
    """

    dim: int

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int, got {type(dim).__name__}")
        self.dim = dim

    def forward(self, inputs: Any) -> torch.Tensor:
        if type(inputs) is not tuple:  # torch.cat would also take a tensor, as its rows
            _check_tuple(inputs, "Concat")
        joined: torch.Tensor = torch.cat(inputs, self.dim)
        return joined

    def extra_repr(self) -> str:
        return f"dim={self.dim}" if self.dim != -1 else ""


class Sum(nn.Module):
    r"""Adds a tuple of tensors elementwise (broadcasting as ``+`` does).

    Examples::

        >>> torchwire.Sum()((torch.ones(2, 3), torch.ones(2, 3)))
        tensor([[2., 2., 2.],
                [2., 2., 2.]])
    """

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_tuple(inputs, "Sum")
        return _join.sum_tensors(inputs)


class Map(nn.Module):
    r"""Applies module ``i`` to element ``i`` of a tuple: :math:`(f_1(x_1), \dots, f_n(x_n))`.

    Examples::

        >>> m = torchwire.Map(nn.Linear(4, 2), nn.Linear(3, 2))
        >>> [y.shape for y in m((torch.randn(5, 4), torch.randn(5, 3)))]
        [torch.Size([5, 2]), torch.Size([5, 2])]
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, nn.Module):
                raise TypeError(
                    f"Map expected nn.Module arguments, got {type(module).__name__} at {i}"
                )
            self.add_module(str(i), module)

    def forward(self, inputs: Sequence[Any]) -> tuple[Any, ...]:
        modules = self._modules.values()
        if type(inputs) is not tuple:
            _check_tuple(inputs, "Map")
            if isinstance(inputs, torch.fx.Proxy):
                return tuple(module(inputs[i]) for i, module in enumerate(modules))  # type: ignore[misc]
        if len(inputs) != len(modules):
            raise ValueError(
                f"Map has {len(modules)} modules but got a tuple of {len(inputs)} elements; "
                "give one module per element"
            )
        return tuple([module(x) for module, x in zip(modules, inputs, strict=True)])  # type: ignore[misc]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> nn.Module:
        return list(self._modules.values())[operator.index(index)]  # type: ignore[return-value]
