r"""Biologically informed networks: a stack of sparse layers that follows a hierarchy of named
groups, such as genes -> pathways -> higher pathways (P-NET, BINN).

:func:`hierarchy` turns a named :class:`~torchwire.Wiring` from inputs to the groups they
belong to (``Wiring.from_gmt``) and the child -> parent relations between groups (Reactome's
pathway relations, ``Wiring.from_table``'s format) into one :class:`~torchwire.SparseLinear`
per level, each keeping the names of its inputs and outputs.

**The rules** (the network is exactly what they say, nothing more):

1. *Nodes.* The nodes are the outputs of ``base`` and the names in ``relations``. A node is
   kept when some input reaches it: through ``base``, then up child -> parent relations.
   Names that no input reaches are reported in one warning, not silently dropped.
   ``relations`` must be acyclic: a cycle is an error naming its nodes.
2. *Levels.* A root is a kept node without a parent. A node's depth is the length of the
   *longest* path down to it from a root (roots: depth 0), so every parent is shallower than
   each of its children. The network has one layer per depth, the deepest first: layer
   ``j`` of ``L`` computes the nodes at depth ``L - j``, and the last layer the roots.
3. *Cut.* ``levels=K`` keeps the ``K`` depths nearest the roots (depth ``< K``). An input of a
   deeper node connects instead to the first kept node on each path up from it, so that no
   reachability is lost or made up.
4. *Copies for skipped levels.* A node appears in every layer from the first that feeds it to
   the last its parents need, under its own name (one output per layer):

   - a node whose inputs come from ``base`` appears from the first layer: below its own
     depth it holds the part its inputs give, at its depth its children join;
   - a node appears above its depth, as a copy of itself (one connection from its own output
     of the layer below), up to one below its shallowest parent (the roots: to the top).

   So a relation that skips levels costs one connection per skipped level, and the inputs
   connect only in the first layer.
5. *Connections.* In the first layer each node is fed by its ``base`` inputs. In a later
   layer, a node is fed by its own output of the layer below (where it has one) and, at its
   depth, by the outputs of its children.

**The contract:** an input reaches a top-level node through the network's connections exactly
when it reaches that node in ``base`` followed by ``relations``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from torchwire import _files
from torchwire.layers import SparseLinear
from torchwire.wiring import Wiring

__all__ = ["LevelHeads", "hierarchy", "hierarchy_wirings"]

_ORDERS = ("child-parent", "parent-child")


class LevelHeads(nn.Module):
    """The layers of a :func:`hierarchy` with one output head per level, as P-NET predicts
    at every level of its pathway hierarchy.

    Args:
        layers: one module per level, applied in order.
        heads: one module per level, applied to that level's output.

    Shape:
        - Input: :math:`(*, H_{in})`, the first layer's inputs.
        - Output: a tuple with one tensor per level, :math:`(*, H_{head})` each.

    Example::

        >>> m = LevelHeads([nn.Linear(4, 3), nn.Linear(3, 2)], [nn.Linear(3, 1), nn.Linear(2, 1)])
        >>> [y.shape for y in m(torch.randn(5, 4))]
        [torch.Size([5, 1]), torch.Size([5, 1])]
    """

    def __init__(self, layers: Sequence[nn.Module], heads: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(layers) != len(heads) or not layers:
            raise ValueError(
                f"LevelHeads needs one head per layer and at least one layer, got "
                f"{len(layers)} layers and {len(heads)} heads"
            )
        self.layers = nn.ModuleList(layers)
        self.heads = nn.ModuleList(heads)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = []
        for layer, head in zip(self.layers, self.heads, strict=True):
            input = layer(input)
            outputs.append(head(input))
        return tuple(outputs)


def hierarchy(
    base: Wiring,
    relations: Iterable[tuple[str, str]] | Mapping[str, Iterable[str]] | str | os.PathLike[str],
    *,
    levels: int | None = None,
    activation: Callable[[], nn.Module] | None = nn.Tanh,
    bias: bool = True,
    heads: int | None = None,
    order: str = "child-parent",
    sep: str = "\t",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """A network of :class:`~torchwire.SparseLinear` layers, one per level of a hierarchy.

    The levels, the copies for relations that skip levels and the cut are the rules of
    :mod:`torchwire.hierarchy`; :func:`hierarchy_wirings` gives the layers' wirings alone.

    Args:
        base: a named Wiring from the inputs to the nodes they belong to, such as genes to
            the pathways they are annotated to (``Wiring.from_gmt``).
        relations: the ``(child, parent)`` pairs of an acyclic hierarchy: an iterable of
            pairs, a mapping ``{child: [parent, ...]}``, or the path of a two-column table
            (``sep``-separated, ``.gz`` read through gzip).
        levels: keep this many levels nearest the roots. Default: all.
        activation: a module factory applied after every layer (``None``: none).
        bias: whether the layers have biases.
        heads: with an int ``n``, return a :class:`LevelHeads` with an ``nn.Linear(width, n)``
            head after every level, whose forward returns one tensor per level.
        order: ``"child-parent"`` (default) or ``"parent-child"``, the order of each pair or
            table row. Reactome's ``ReactomePathwaysRelation.txt`` is parent-child.
        sep: the column separator of a relations table.
        device: where to build the layers.
        dtype: the layers' dtype.

    Returns:
        an ``nn.Sequential`` of ``SparseLinear`` layers, each followed by ``activation()``;
        with ``heads``, a :class:`LevelHeads`.

    Example::

        >>> base = Wiring.from_mapping({"DNA repair": ["BRCA1", "ATM"], "apoptosis": ["TP53"]})
        >>> model = hierarchy(base, [("DNA repair", "cell cycle"), ("apoptosis", "cell cycle")])
        >>> model
        Sequential(
          (0): SparseLinear(in_features=3, out_features=2, nnz=3, bias=True)
          (1): Tanh()
          (2): SparseLinear(in_features=2, out_features=1, nnz=2, bias=True)
          (3): Tanh()
        )
        >>> model[2].wiring.input_names, model[2].wiring.output_names
        (('DNA repair', 'apoptosis'), ('cell cycle',))
        >>> model(torch.randn(8, 3)).shape
        torch.Size([8, 1])
    """
    if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int) or heads < 1):
        raise ValueError(f"heads must be a positive int (outputs per level's head), got {heads!r}")
    if activation is not None and not callable(activation):
        raise TypeError(f"activation must be a module factory such as nn.Tanh, got {activation!r}")
    wirings = hierarchy_wirings(base, relations, levels=levels, order=order, sep=sep)
    factory: dict[str, Any] = {"device": device, "dtype": dtype}
    stages = [
        [
            SparseLinear(wiring, bias=bias, **factory),
            *([] if activation is None else [activation()]),
        ]
        for wiring in wirings
    ]
    if heads is None:
        return nn.Sequential(*(m for stage in stages for m in stage))
    outs = [nn.Linear(w.out_features, heads, **factory) for w in wirings]
    return LevelHeads([s[0] if len(s) == 1 else nn.Sequential(*s) for s in stages], outs)


def hierarchy_wirings(
    base: Wiring,
    relations: Iterable[tuple[str, str]] | Mapping[str, Iterable[str]] | str | os.PathLike[str],
    *,
    levels: int | None = None,
    order: str = "child-parent",
    sep: str = "\t",
) -> list[Wiring]:
    """The named wirings of the layers :func:`hierarchy` builds, the first layer first.

    Arguments as in :func:`hierarchy`.

    Example::

        >>> base = Wiring.from_mapping({"a": ["x"], "b": ["y"]})
        >>> first, second = hierarchy_wirings(base, [("a", "top"), ("b", "top")])
        >>> first.output_names, second.output_names
        (('a', 'b'), ('top',))
    """
    if not isinstance(base, Wiring):
        raise TypeError(f"base must be a torchwire.Wiring, got {type(base).__name__}")
    if base.input_names is None or base.output_names is None:
        raise ValueError(
            "base must name its inputs and outputs (Wiring.from_gmt, Wiring.from_mapping, or "
            "wiring.with_names(input_names=..., output_names=...)): relations refer to names"
        )
    if levels is not None and (
        isinstance(levels, bool) or not isinstance(levels, int) or levels < 1
    ):
        raise ValueError(f"levels must be a positive int, got {levels!r}")
    parents = _parents(relations, order, sep)
    annotated = _annotations(base)  # node -> its inputs, in base's input order
    _check_acyclic(parents)
    kept_nodes = _reached(annotated, parents)
    _report_unreached(kept_nodes, parents, base)
    parents = {v: [p for p in parents.get(v, ()) if p in kept_nodes] for v in kept_nodes}
    depth = _depths(kept_nodes, parents)
    if levels is not None and max(depth.values()) >= levels:
        annotated, parents, depth = _cut(annotated, parents, depth, levels)
    return _layers(base, annotated, parents, depth)


# ---------------------------------------------------------------------------- the graph


def _parents(relations: object, order: str, sep: str) -> dict[str, list[str]]:
    """``{child: [parent, ...]}`` from any form of ``relations``, each pair once."""
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {list(_ORDERS)}, got {order!r}")
    if isinstance(relations, (str, os.PathLike)):
        pairs: list[tuple[str, str]] = _files.read_table(relations, sep=sep)
    elif isinstance(relations, Mapping):
        if order == "parent-child":
            raise ValueError(
                "a relations mapping is {child: [parents]}; order='parent-child' applies to "
                "pairs and tables only"
            )
        pairs = []
        for child, value in relations.items():
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise TypeError(
                    f"relations[{child!r}] must list parent names, got {value!r}; wrap a "
                    "single name in a list"
                )
            pairs += [(child, parent) for parent in value]
    elif isinstance(relations, Iterable):
        pairs = []
        for pair in relations:
            if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise TypeError(f"relations must hold (child, parent) pairs, got {pair!r}")
            pairs.append((pair[0], pair[1]))
    else:
        raise TypeError(
            "relations must be (child, parent) pairs, a {child: [parents]} mapping or a "
            f"table's path, got {type(relations).__name__}"
        )
    if order == "parent-child" and not isinstance(relations, Mapping):
        pairs = [(child, parent) for parent, child in pairs]
    result: dict[str, list[str]] = {}
    for child, parent in pairs:
        if not isinstance(child, str) or not isinstance(parent, str):
            raise TypeError(f"relations must hold names (str), got {(child, parent)!r}")
        if child == parent:
            raise ValueError(f"relations make {child!r} its own parent (a cycle)")
        known = result.setdefault(child, [])
        if parent not in known:
            known.append(parent)
    return result


def _annotations(base: Wiring) -> dict[str, list[str]]:
    """``{output name: [input names]}`` of ``base``'s connected outputs."""
    assert base.input_names is not None
    assert base.output_names is not None
    indptr, indices = base.indptr.tolist(), base.indices.tolist()
    return {
        name: [base.input_names[i] for i in indices[indptr[o] : indptr[o + 1]]]
        for o, name in enumerate(base.output_names)
        if indptr[o + 1] > indptr[o]
    }


def _check_acyclic(parents: Mapping[str, list[str]]) -> None:
    """Raise naming the nodes of a cycle, if ``parents`` has one."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in parents:
        if start in state:
            continue
        path = [start]
        stack = [iter(parents.get(start, ()))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                cycle = [*path[path.index(step) :], step]
                raise ValueError(
                    f"relations have a cycle: {' -> '.join(map(repr, cycle))} (child -> "
                    "parent); a hierarchy must be acyclic: remove one of these relations"
                )
            elif step not in state:
                state[step] = 1
                path.append(step)
                stack.append(iter(parents.get(step, ())))


def _reached(annotated: Mapping[str, list[str]], parents: Mapping[str, list[str]]) -> set[str]:
    """The nodes some input reaches: annotated nodes and everything above them."""
    reached: set[str] = set()
    todo = list(annotated)
    while todo:
        node = todo.pop()
        if node not in reached:
            reached.add(node)
            todo.extend(parents.get(node, ()))
    return reached


def _report_unreached(reached: set[str], parents: Mapping[str, list[str]], base: Wiring) -> None:
    assert base.output_names is not None
    named = dict.fromkeys(
        [*base.output_names, *parents, *(p for ps in parents.values() for p in ps)]
    )
    missing = [name for name in named if name not in reached]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        warnings.warn(
            f"hierarchy: {len(missing)} node(s) that no input of base reaches are left out: "
            f"{missing[:5]}{more} (a relations file often covers more than your gene sets)",
            stacklevel=3,
        )


def _depths(nodes: set[str], parents: Mapping[str, list[str]]) -> dict[str, int]:
    """The longest path from a root down to each node (roots: 0)."""
    depth: dict[str, int] = {}
    for start in nodes:
        stack = [start]
        while stack:
            node = stack[-1]
            if node in depth:
                stack.pop()
                continue
            pending = [p for p in parents[node] if p not in depth]
            if pending:
                stack.extend(pending)
                continue
            depth[node] = 1 + max((depth[p] for p in parents[node]), default=-1)
            stack.pop()
    return depth


def _cut(
    annotated: dict[str, list[str]],
    parents: dict[str, list[str]],
    depth: dict[str, int],
    levels: int,
) -> tuple[dict[str, list[str]], dict[str, list[str]], dict[str, int]]:
    """Keep depths ``< levels``; a deeper node's inputs move to the first kept node on each
    path up from it (its frontier)."""
    frontier: dict[str, list[str]] = {}

    def first_kept(node: str) -> list[str]:
        if node not in frontier:
            found: dict[str, None] = {}
            for parent in parents[node]:
                found.update(
                    dict.fromkeys([parent] if depth[parent] < levels else first_kept(parent))
                )
            frontier[node] = list(found)
        return frontier[node]

    moved: dict[str, dict[str, None]] = {}
    for node, inputs in annotated.items():
        for target in [node] if depth[node] < levels else first_kept(node):
            moved.setdefault(target, {}).update(dict.fromkeys(inputs))
    kept = {node for node in depth if depth[node] < levels}
    return (
        {node: list(inputs) for node, inputs in moved.items()},
        {node: parents[node] for node in kept},
        {node: depth[node] for node in kept},
    )


def _layers(
    base: Wiring,
    annotated: Mapping[str, list[str]],
    parents: Mapping[str, list[str]],
    depth: Mapping[str, int],
) -> list[Wiring]:
    """The wirings of the rules' layers (see the module docstring)."""
    count = max(depth.values()) + 1
    order = _ordered(base, depth)
    children: dict[str, list[str]] = {node: [] for node in depth}
    for node in order:
        for parent in parents[node]:
            children[parent].append(node)
    # Each node's slots: from its lowest (the bottom for annotated nodes) up to its highest.
    lowest = {v: count - 1 if v in annotated else depth[v] for v in depth}
    highest = {v: min((depth[p] for p in parents[v]), default=-1) + 1 for v in depth}
    assert base.input_names is not None
    wirings = []
    previous: tuple[str, ...] = base.input_names
    for level in range(count - 1, -1, -1):
        outputs = [v for v in order if highest[v] <= level <= lowest[v]]
        mapping: dict[str, list[str]] = {}
        for v in outputs:
            feeds: list[str] = []
            if level == count - 1:
                feeds += annotated.get(v, [])
            elif level < lowest[v]:
                feeds.append(v)  # its own output of the layer below
            if level == depth[v]:
                feeds += children[v]
            mapping[v] = feeds
        wirings.append(Wiring.from_mapping(mapping, previous, outputs))
        previous = tuple(outputs)
    return wirings


def _ordered(base: Wiring, depth: Mapping[str, int]) -> list[str]:
    """The kept nodes in a stable order: base's outputs first, then by depth and name."""
    assert base.output_names is not None
    first = [name for name in base.output_names if name in depth]
    seen = set(first)
    rest = sorted((v for v in depth if v not in seen), key=lambda v: (-depth[v], v))
    return first + rest
