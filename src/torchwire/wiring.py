"""Immutable connectivity between the inputs and outputs of a partially connected layer.

A :class:`Wiring` holds structure only, never trainable numbers. Layers keep its index tensors
as buffers and one value per connection, in the canonical order of :meth:`Wiring.edges`:
by output, then by input.
"""

from __future__ import annotations

import numbers
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, SupportsIndex

import torch
from torch import Tensor

from torchwire import _files
from torchwire._checks import check_size, renamed

__all__ = ["Wiring"]

_FORMAT = "torchwire.wiring/1"
# Every tensor a Wiring makes lives on the CPU, even inside `with torch.device(...)`.
_CPU = torch.device("cpu")
# Wiring.random uses one full permutation when in * out is at most this (or at most 4 * nnz).
_RANDPERM_LIMIT = 1 << 20
# Wiring.then uses a dense float matmul when its operands and result hold at most this many
# elements (or fewer than the path products a sparse gather would enumerate).
_DENSE_THEN_LIMIT = 1 << 22


class Wiring:
    r"""Which of ``in_features`` inputs feeds which of ``out_features`` outputs.

    An immutable value describing the structure of a partially connected layer
    :math:`y_o = \sum_{i \to o} w_{o,i} x_i`, stored as CSR by output: the connections of
    output ``o`` are the inputs ``indices[indptr[o]:indptr[o + 1]]``, strictly increasing.
    Connection ``k`` of the canonical order (by output, then by input) is ``edges()[k]``;
    layers store the value of connection ``k`` at ``weight[k]``.

    Build one with a constructor (:meth:`block_diagonal`, :meth:`random`, :meth:`banded`,
    :meth:`from_mask`, :meth:`from_edges`, :meth:`from_mapping`, :meth:`from_dict`) or, from
    CSR arrays you already have, with this raw constructor, which validates everything and
    keeps its own copies.

    Args:
        indptr: ``out_features + 1`` non-decreasing integers from ``0`` to ``nnz``.
        indices: ``nnz`` input indices in ``[0, in_features)``, strictly increasing within
            each output.
        in_features: number of inputs.
        out_features: number of outputs.
        input_names: optional unique name for each input.
        output_names: optional unique name for each output.

    Attributes:
        in_features (int): number of inputs.
        out_features (int): number of outputs.
        nnz (int): number of connections.
        density (float): ``nnz / (in_features * out_features)``.
        shape (tuple[int, int]): ``(out_features, in_features)``, like a weight.
        indptr (Tensor): int64 ``(out_features + 1,)``, a copy.
        indices (Tensor): int32 ``(nnz,)``, a copy.

    Examples::

        >>> w = Wiring(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 2]), 3, 2)
        >>> w
        Wiring(in_features=3, out_features=2, nnz=3, density=0.5)
        >>> w.mask()
        tensor([[ True,  True, False],
                [False, False,  True]])
        >>> w.edges().tolist()
        [[0, 0], [1, 0], [2, 1]]
    """

    __slots__ = ("_hash", "_in", "_indices", "_indptr", "_input_names", "_out", "_output_names")

    _in: int
    _out: int
    _indptr: Tensor
    _indices: Tensor
    _input_names: tuple[str, ...] | None
    _output_names: tuple[str, ...] | None
    _hash: int | None

    def __init__(
        self,
        indptr: Any,
        indices: Any,
        in_features: int,
        out_features: int,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> None:
        in_f = check_size(in_features, "in_features")
        out_f = check_size(out_features, "out_features")
        ptr = _as_index_tensor(indptr, "indptr")
        idx = _as_index_tensor(indices, "indices")
        if ptr.ndim != 1 or ptr.numel() != out_f + 1:
            raise ValueError(
                f"indptr must be 1-D with out_features + 1 = {out_f + 1} entries, "
                f"got shape {tuple(ptr.shape)}"
            )
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D, got shape {tuple(idx.shape)}")
        nnz = idx.numel()
        if int(ptr[0]) != 0 or int(ptr[-1]) != nnz:
            raise ValueError(
                f"indptr must start at 0 and end at nnz = len(indices) = {nnz}, "
                f"got indptr[0] = {int(ptr[0])} and indptr[-1] = {int(ptr[-1])}"
            )
        counts = ptr.diff()
        if bool((counts < 0).any()):
            o = int(torch.nonzero(counts < 0)[0])
            raise ValueError(
                f"indptr must be non-decreasing, but indptr[{o}] = {int(ptr[o])} > "
                f"indptr[{o + 1}] = {int(ptr[o + 1])}"
            )
        bad = (idx < 0) | (idx >= in_f)
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"indices must be in [0, in_features) = [0, {in_f}), "
                f"got indices[{k}] = {int(idx[k])}"
            )
        rows = _row_ids(ptr, out_f, nnz)
        unsorted = (idx[1:] <= idx[:-1]) & (rows[1:] == rows[:-1])
        if bool(unsorted.any()):
            k = int(torch.nonzero(unsorted)[0])
            raise ValueError(
                f"indices must be strictly increasing within each output (no duplicate or "
                f"unsorted connections), but output {int(rows[k])} lists input {int(idx[k])} "
                f"then input {int(idx[k + 1])} (indices[{k}:{k + 2}]); "
                "use Wiring.from_edges to build from pairs in any order"
            )
        self._init(
            ptr,
            idx.to(torch.int32),
            in_f,
            out_f,
            *_check_both_names(input_names, output_names, in_f, out_f),
        )

    def _init(
        self,
        indptr: Tensor,
        indices: Tensor,
        in_features: int,
        out_features: int,
        input_names: tuple[str, ...] | None,
        output_names: tuple[str, ...] | None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "_indptr", indptr)
        setattr_(self, "_indices", indices)
        setattr_(self, "_in", in_features)
        setattr_(self, "_out", out_features)
        setattr_(self, "_input_names", input_names)
        setattr_(self, "_output_names", output_names)
        setattr_(self, "_hash", None)

    @classmethod
    def _trusted(
        cls,
        rows: Tensor,
        cols: Tensor,
        in_features: int,
        out_features: int,
        input_names: tuple[str, ...] | None = None,
        output_names: tuple[str, ...] | None = None,
    ) -> Wiring:
        """Build from connections already in canonical order, without validation."""
        counts = torch.bincount(rows, minlength=out_features)
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64, device=_CPU), counts.cumsum(0)])
        self = cls.__new__(cls)
        self._init(
            indptr, cols.to(torch.int32), in_features, out_features, input_names, output_names
        )
        return self

    @classmethod
    def _from_flat(
        cls,
        flat: Tensor,
        in_features: int,
        out_features: int,
        input_names: tuple[str, ...] | None = None,
        output_names: tuple[str, ...] | None = None,
    ) -> Wiring:
        """Build from sorted, unique flat ids ``output * in_features + input``."""
        rows = torch.div(flat, in_features, rounding_mode="floor")
        cols = flat - rows * in_features
        return cls._trusted(rows, cols, in_features, out_features, input_names, output_names)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def block_diagonal(
        cls,
        in_sizes: Sequence[int],
        out_sizes: Sequence[int],
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Wiring:
        """Groups of consecutive inputs fully connected to groups of consecutive outputs.

        Group ``g``'s ``in_sizes[g]`` inputs feed all of group ``g``'s ``out_sizes[g]`` outputs
        and nothing else. Groups may have different sizes.

        Args:
            in_sizes: positive input group sizes.
            out_sizes: positive output group sizes, one per input group.
            input_names: optional names of the inputs, see :class:`Wiring`.
            output_names: optional names of the outputs, see :class:`Wiring`.

        Examples::

            >>> w = Wiring.block_diagonal([2, 2], [3, 1])
            >>> w.nnz
            8
            >>> w.block_sizes
            ((2, 2), (3, 1))
        """
        a = _check_group_sizes(in_sizes, "in_sizes")
        b = _check_group_sizes(out_sizes, "out_sizes")
        if len(a) != len(b):
            raise ValueError(
                "in_sizes and out_sizes must have one entry per group (the same length), "
                f"got {len(a)} and {len(b)} entries"
            )
        in_f = check_size(sum(a), "in_features = sum(in_sizes)")
        out_f = check_size(sum(b), "out_features = sum(out_sizes)")
        in_size, out_size = torch.tensor(a, device=_CPU), torch.tensor(b, device=_CPU)
        row_group = torch.repeat_interleave(torch.arange(len(a), device=_CPU), out_size)
        fan = in_size[row_group]
        indptr = torch.cat([torch.zeros(1, dtype=torch.int64, device=_CPU), fan.cumsum(0)])
        nnz = int(indptr[-1])
        rows = _row_ids(indptr, out_f, nnz)
        in_start = (in_size.cumsum(0) - in_size)[row_group]
        indices = in_start[rows] + torch.arange(nnz, device=_CPU) - indptr[rows]
        self = cls.__new__(cls)
        self._init(
            indptr,
            indices.to(torch.int32),
            in_f,
            out_f,
            *_check_both_names(input_names, output_names, in_f, out_f),
        )
        return self

    @classmethod
    def random(
        cls,
        in_features: int,
        out_features: int,
        density: float | None = None,
        nnz: int | None = None,
        seed: int | None = None,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Wiring:
        """Exactly ``nnz`` connections drawn uniformly at random, without repetition.

        Every set of ``nnz`` connections is equally likely. Memory is ``O(nnz)`` when
        ``nnz`` is small against ``in_features * out_features``: candidates are drawn in
        rounds, deduplicated, and exactly ``nnz`` of them kept at random.

        Args:
            in_features: number of inputs.
            out_features: number of outputs.
            density: fraction of connections in ``[0, 1]``;
                ``nnz = round(density * in_features * out_features)``.
            nnz: number of connections. Give exactly one of ``density`` and ``nnz``.
            seed: makes the result reproducible; ``None`` draws a fresh seed.
            input_names: optional names of the inputs, see :class:`Wiring`.
            output_names: optional names of the outputs, see :class:`Wiring`.

        Examples::

            >>> w = Wiring.random(100, 50, density=0.1, seed=0)
            >>> w.nnz
            500
            >>> w == Wiring.random(100, 50, nnz=500, seed=0)
            True
        """
        in_f = check_size(in_features, "in_features")
        out_f = check_size(out_features, "out_features")
        total = in_f * out_f
        if (density is None) == (nnz is None):
            raise ValueError(
                "Wiring.random needs exactly one of density= or nnz=, "
                f"got density={density!r} and nnz={nnz!r}"
            )
        if density is not None:
            count = round(_check_density(density) * total)
        else:
            count = _check_count(nnz, total)
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(_check_seed(seed))
        flat = _sample_flat(total, count, generator)
        return cls._from_flat(
            flat,
            in_f,
            out_f,
            *_check_both_names(input_names, output_names, in_f, out_f),
        )

    @classmethod
    def banded(
        cls,
        in_features: int,
        out_features: int,
        width: int,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Wiring:
        r"""Each output connected to ``width`` consecutive inputs, windows sliding evenly.

        Output ``o`` connects to inputs ``start_o, ..., start_o + width - 1`` with

        .. math::
            \text{start}_o = \operatorname{round}\left(
                \frac{o \cdot (\text{in\_features} - \text{width})}
                     {\max(\text{out\_features} - 1, 1)}\right)

        rounding halves to even like Python's :func:`round`. The first window starts at input
        ``0`` and the last ends at the last input; every output has fan-in ``width``.

        Args:
            in_features: number of inputs.
            out_features: number of outputs.
            width: inputs per output, ``1 <= width <= in_features``.
            input_names: optional names of the inputs, see :class:`Wiring`.
            output_names: optional names of the outputs, see :class:`Wiring`.

        Examples::

            >>> Wiring.banded(5, 3, 3).mask().int()
            tensor([[1, 1, 1, 0, 0],
                    [0, 1, 1, 1, 0],
                    [0, 0, 1, 1, 1]], dtype=torch.int32)
        """
        in_f = check_size(in_features, "in_features")
        out_f = check_size(out_features, "out_features")
        w = check_size(width, "width")
        if w > in_f:
            raise ValueError(
                f"width must be at most in_features = {in_f} (each output connects to width "
                f"consecutive inputs), got width = {w}"
            )
        num = torch.arange(out_f, device=_CPU) * (in_f - w)
        den = max(out_f - 1, 1)
        quotient = torch.div(num, den, rounding_mode="floor")
        twice_rest = 2 * (num - quotient * den)
        round_up = (twice_rest > den) | ((twice_rest == den) & (quotient % 2 == 1))
        start = quotient + round_up.long()
        rows = torch.arange(out_f, device=_CPU).repeat_interleave(w)
        cols = start.repeat_interleave(w) + torch.arange(w, device=_CPU).repeat(out_f)
        return cls._trusted(
            rows,
            cols,
            in_f,
            out_f,
            *_check_both_names(input_names, output_names, in_f, out_f),
        )

    @classmethod
    def from_mask(
        cls,
        mask: Any,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Wiring:
        """The connections where a 2-D ``(out_features, in_features)`` mask is true.

        Args:
            mask: bool tensor or array shaped like a weight, or a numeric one holding only
                ``0`` and ``1``.
            input_names: optional names of the inputs, see :class:`Wiring`.
            output_names: optional names of the outputs, see :class:`Wiring`.

        Examples::

            >>> mask = torch.tensor([[1, 0, 1], [0, 1, 0]])
            >>> w = Wiring.from_mask(mask)
            >>> w.edges().tolist()
            [[0, 0], [2, 0], [1, 1]]
            >>> torch.equal(w.mask(), mask.bool())
            True
        """
        m = torch.as_tensor(mask, device=_CPU)
        if m.ndim != 2 or m.numel() == 0:
            raise ValueError(
                "mask must be a non-empty 2-D tensor of shape (out_features, in_features), "
                f"got shape {tuple(m.shape)}"
            )
        if m.dtype != torch.bool:
            bad = (m != 0) & (m != 1)
            if bool(bad.any()):
                r, c = (int(v) for v in torch.nonzero(bad)[0])
                raise ValueError(
                    f"mask must be bool or hold only 0 and 1, got {m[r, c].item()!r} at "
                    f"[{r}, {c}] (dtype {m.dtype}); pass a bool mask, e.g. `mask != 0`"
                )
        out_f = check_size(m.shape[0], "out_features")
        in_f = check_size(m.shape[1], "in_features")
        nz = torch.nonzero(m)
        return cls._trusted(
            nz[:, 0],
            nz[:, 1],
            in_f,
            out_f,
            *_check_both_names(input_names, output_names, in_f, out_f),
        )

    @classmethod
    def from_edges(
        cls,
        edges: Any,
        in_features: int,
        out_features: int,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Wiring:
        """The connections listed as ``(input, output)`` pairs, in any order.

        Args:
            edges: integer tensor, array or list of pairs, shape ``(E, 2)``; ``E`` may be 0.
                Each pair appears at most once.
            in_features: number of inputs.
            out_features: number of outputs.
            input_names: optional names of the inputs, see :class:`Wiring`.
            output_names: optional names of the outputs, see :class:`Wiring`.

        Examples::

            >>> w = Wiring.from_edges([(2, 1), (0, 0), (1, 1)], in_features=3, out_features=2)
            >>> w.edges().tolist()
            [[0, 0], [1, 1], [2, 1]]
        """
        in_f = check_size(in_features, "in_features")
        out_f = check_size(out_features, "out_features")
        e = torch.as_tensor(edges, device=_CPU)
        if e.numel() == 0:
            e = torch.zeros(0, 2, dtype=torch.int64, device=_CPU)
        if e.dtype == torch.bool or e.dtype.is_floating_point or e.dtype.is_complex:
            raise TypeError(
                f"edges must hold integer (input, output) indices, got dtype {e.dtype}; "
                "convert with .long() after checking the values are whole numbers"
            )
        if e.ndim != 2 or e.shape[1] != 2:
            raise ValueError(
                f"edges must have shape (E, 2) of (input, output) pairs, got shape {tuple(e.shape)}"
            )
        e = e.long()
        bad = (e[:, 0] < 0) | (e[:, 0] >= in_f) | (e[:, 1] < 0) | (e[:, 1] >= out_f)
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"edge {k} is (input={int(e[k, 0])}, output={int(e[k, 1])}), but inputs must be "
                f"in [0, {in_f}) and outputs in [0, {out_f})"
            )
        flat = (e[:, 1] * in_f + e[:, 0]).sort().values
        repeated = flat[1:] == flat[:-1]
        if bool(repeated.any()):
            f = int(flat[int(torch.nonzero(repeated)[0])])
            raise ValueError(
                f"edges must be unique, but (input={f % in_f}, output={f // in_f}) appears "
                "more than once; deduplicate them, e.g. with torch.unique(edges, dim=0)"
            )
        return cls._from_flat(
            flat,
            in_f,
            out_f,
            *_check_both_names(input_names, output_names, in_f, out_f),
        )

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, Iterable[str]],
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        **deprecated: Any,
    ) -> Wiring:
        """Named connections ``{output_name: [input_name, ...]}``.

        The result keeps the names as :attr:`input_names` and :attr:`output_names`.

        Args:
            mapping: for each output name, the names of the inputs that feed it.
            input_names: all input names, in order. Default: in order of first appearance,
                reading the mapping's lists in its iteration order. (Formerly ``inputs=``,
                deprecated.)
            output_names: all output names, in order. Default: the mapping's keys, in order.
                Outputs missing from ``mapping`` have no connections. (Formerly
                ``outputs=``, deprecated.)

        Examples::

            >>> w = Wiring.from_mapping({"y": ["a", "b"], "z": ["b"]})
            >>> w.input_names, w.output_names
            (('a', 'b'), ('y', 'z'))
            >>> w.mask()
            tensor([[ True,  True],
                    [False,  True]])
        """
        input_names, output_names = _renamed_names(
            "Wiring.from_mapping", deprecated, input_names, output_names
        )
        if not isinstance(mapping, Mapping):
            raise TypeError(
                "mapping must be a dict {output_name: [input_name, ...]}, "
                f"got {type(mapping).__name__}"
            )
        items: list[tuple[object, object]] = list(mapping.items())
        lists: dict[str, tuple[str, ...]] = {}
        for key, value in items:
            if not isinstance(key, str):
                raise TypeError(f"mapping keys must be output names (str), got {key!r}")
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise TypeError(
                    f"mapping[{key!r}] must be a list of input names, got {value!r}; "
                    "wrap a single name in a list"
                )
            names = tuple(value)
            for name in names:
                if not isinstance(name, str):
                    raise TypeError(f"mapping[{key!r}] must list input names (str), got {name!r}")
            if len(set(names)) != len(names):
                twice = next(name for name in names if names.count(name) > 1)
                raise ValueError(
                    f"duplicate connection: mapping[{key!r}] lists input {twice!r} more than "
                    "once; list each input at most once per output"
                )
            lists[key] = names
        if output_names is None:
            out_names = tuple(lists)
        else:
            out_names = _name_tuple(output_names, "output_names")
        _check_known(lists, out_names, "output", "output_names")
        if input_names is None:
            in_names = tuple(dict.fromkeys(name for names in lists.values() for name in names))
        else:
            in_names = _name_tuple(input_names, "input_names")
            inputs_used = (name for names in lists.values() for name in names)
            _check_known(inputs_used, in_names, "input", "input_names")
        if not out_names:
            raise ValueError(
                "from_mapping needs at least one output, but mapping is empty and "
                "output_names= was not given"
            )
        if not in_names:
            raise ValueError(
                "from_mapping needs at least one input, but no output lists any input; "
                "pass input_names=[...] to declare them"
            )
        out_index = {name: o for o, name in enumerate(out_names)}
        in_index = {name: i for i, name in enumerate(in_names)}
        rows = torch.tensor(
            [out_index[key] for key, names in lists.items() for _ in names],
            dtype=torch.int64,
            device=_CPU,
        )
        cols = torch.tensor(
            [in_index[name] for names in lists.values() for name in names],
            dtype=torch.int64,
            device=_CPU,
        )
        flat = (rows * len(in_names) + cols).sort().values
        return cls._from_flat(flat, len(in_names), len(out_names), in_names, out_names)

    @classmethod
    def from_gmt(
        cls,
        path: str | os.PathLike[str],
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        unknown: str = "error",
    ) -> Wiring:
        """Gene sets from a GMT file: each set is an output, its members feed it.

        The GMT format has one set per line: its name, a description, then its members,
        tab-separated (MSigDB, Reactome and Enrichr ship gene sets this way). A path ending
        in ``.gz`` is read through gzip. Blank lines and empty fields are skipped, and a
        member listed twice in a set counts once.

        Args:
            path: the file.
            input_names: all input names, in order (say, the genes your data measures).
                Default: the members in order of first appearance.
            output_names: all output names, in order. Default: the sets in file order.
            unknown: what to do with members not in ``input_names`` and sets not in
                ``output_names``: ``"error"`` (default) or ``"drop"`` them.

        Raises:
            ValueError: for a bad file, naming the line: an empty file, a line with too few
                fields, a set without members, a set name defined twice.

        Examples::

            >>> import tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "sets.gmt")
            >>> with open(path, "w") as f:
            ...     _ = f.write("apoptosis\\tsome genes\\tTP53\\tBAX\\n")
            ...     _ = f.write("cell cycle\\t\\tTP53\\tCDK1\\n")
            >>> w = Wiring.from_gmt(path)
            >>> w.input_names, w.output_names
            (('TP53', 'BAX', 'CDK1'), ('apoptosis', 'cell cycle'))
            >>> Wiring.from_gmt(path, input_names=["CDK1", "TP53"], unknown="drop").nnz
            3
        """
        sets = _files.read_gmt(path)
        pairs = [(member, name) for name, members in sets.items() for member in members]
        return cls._from_named_pairs(
            pairs, input_names, output_names, unknown, os.fspath(path), list(sets)
        )

    @classmethod
    def from_table(
        cls,
        path: str | os.PathLike[str],
        *,
        sep: str = "\t",
        columns: tuple[int, int] = (0, 1),
        header: bool = False,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        unknown: str = "error",
    ) -> Wiring:
        """Connections from a table with one ``input, output`` pair of names per row.

        A TSV or CSV file (``sep=","``); a path ending in ``.gz`` is read through gzip.
        Blank lines are skipped, and a pair listed twice counts once.

        Args:
            path: the file.
            sep: the column separator.
            columns: the column of the input names, then the column of the output names.
            header: skip the first line.
            input_names: all input names, in order. Default: in order of first appearance.
            output_names: all output names, in order. Default: in order of first appearance.
            unknown: what to do with names not in ``input_names`` or ``output_names``:
                ``"error"`` (default) or ``"drop"`` their rows.

        Raises:
            ValueError: for a bad file, naming the line: an empty file, a row with too few
                columns or an empty name.

        Examples::

            >>> import tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "edges.csv")
            >>> with open(path, "w") as f:
            ...     _ = f.write("gene,pathway\\nTP53,apoptosis\\nCDK1,cell cycle\\n")
            >>> w = Wiring.from_table(path, sep=",", header=True)
            >>> w.input_names, w.output_names, w.nnz
            (('TP53', 'CDK1'), ('apoptosis', 'cell cycle'), 2)
        """
        pairs = _files.read_table(path, sep=sep, columns=columns, header=header)
        outputs = list(dict.fromkeys(output for _, output in pairs))
        return cls._from_named_pairs(
            pairs, input_names, output_names, unknown, os.fspath(path), outputs
        )

    @classmethod
    def _from_named_pairs(
        cls,
        pairs: list[tuple[str, str]],
        input_names: Sequence[str] | None,
        output_names: Sequence[str] | None,
        unknown: str,
        source: str,
        outputs: list[str],
    ) -> Wiring:
        """A wiring of ``(input, output)`` name pairs read from ``source``, whose outputs
        in file order are ``outputs``."""
        if unknown not in ("error", "drop"):
            raise ValueError(f"unknown must be 'error' or 'drop', got {unknown!r}")
        ins = None if input_names is None else _name_tuple(input_names, "input_names")
        outs = None if output_names is None else _name_tuple(output_names, "output_names")
        for names, position, kind, arg in (
            (ins, 0, "input", "input_names"),
            (outs, 1, "output", "output_names"),
        ):
            if names is None:
                continue
            known = set(names)
            missing = list(dict.fromkeys(p[position] for p in pairs if p[position] not in known))
            if missing and unknown == "error":
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise ValueError(
                    f"{source} names {kind}s {missing[:5]}{more} that are not in {arg}; pass "
                    f"unknown='drop' to leave them out, or add them to {arg}"
                )
            pairs = [p for p in pairs if p[position] in known]
        mapping: dict[str, list[str]] = {name: [] for name in (outputs if outs is None else outs)}
        for input_name, output_name in pairs:
            mapping[output_name].append(input_name)  # every output is a key already
        if ins is None:
            ins = tuple(dict.fromkeys(input_name for input_name, _ in pairs))
        return cls.from_mapping(mapping, ins, tuple(mapping))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Wiring:
        """Inverse of :meth:`to_dict`.

        Args:
            d: a dict produced by :meth:`to_dict`, e.g. after a JSON round trip.

        Examples::

            >>> w = Wiring.banded(6, 4, 2)
            >>> Wiring.from_dict(w.to_dict()) == w
            True
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"from_dict expects a dict from Wiring.to_dict, got {type(d).__name__}")
        if "format" not in d:
            raise ValueError(
                f"not a Wiring dict: missing key 'format' (expected {_FORMAT!r}); "
                "build it with Wiring.to_dict"
            )
        if d["format"] != _FORMAT:
            raise ValueError(
                f"unsupported Wiring dict format {d['format']!r}, expected {_FORMAT!r}"
            )
        required = ("in_features", "out_features", "indptr", "indices")
        missing = [key for key in required if key not in d]
        if missing:
            raise ValueError(
                f"Wiring dict is missing key(s) {missing}; expected keys {list(required)} "
                "as written by Wiring.to_dict"
            )
        return cls(
            d["indptr"],
            d["indices"],
            d["in_features"],
            d["out_features"],
            input_names=d.get("input_names"),
            output_names=d.get("output_names"),
        )

    # ------------------------------------------------------------------ queries

    @property
    def in_features(self) -> int:
        """Number of inputs."""
        return self._in

    @property
    def out_features(self) -> int:
        """Number of outputs."""
        return self._out

    @property
    def nnz(self) -> int:
        """Number of connections."""
        return self._indices.numel()

    @property
    def density(self) -> float:
        """Fraction of possible connections present: ``nnz / (in_features * out_features)``."""
        return self.nnz / (self._in * self._out)

    @property
    def shape(self) -> tuple[int, int]:
        """``(out_features, in_features)``, like the weight of ``nn.Linear``."""
        return (self._out, self._in)

    @property
    def indptr(self) -> Tensor:
        """CSR row pointers, int64 ``(out_features + 1,)`` (a copy)."""
        return self._indptr.clone()

    @property
    def indices(self) -> Tensor:
        """Input index of each connection in canonical order, int32 ``(nnz,)`` (a copy)."""
        return self._indices.clone()

    @property
    def input_names(self) -> tuple[str, ...] | None:
        """Name of each input, or ``None``."""
        return self._input_names

    @property
    def output_names(self) -> tuple[str, ...] | None:
        """Name of each output, or ``None``."""
        return self._output_names

    def fan_in(self) -> Tensor:
        """Number of inputs feeding each output, int64 ``(out_features,)``.

        Examples::

            >>> Wiring.block_diagonal([2, 1], [1, 2]).fan_in()
            tensor([2, 1, 1])
        """
        return self._indptr.diff()

    def fan_out(self) -> Tensor:
        """Number of outputs fed by each input, int64 ``(in_features,)``.

        Examples::

            >>> Wiring.block_diagonal([2, 1], [1, 2]).fan_out()
            tensor([1, 1, 2])
        """
        return torch.bincount(self._indices.long(), minlength=self._in)

    def mask(self) -> Tensor:
        """Dense bool ``(out_features, in_features)`` mask, true where a connection exists."""
        mask = torch.zeros(self._out, self._in, dtype=torch.bool, device=_CPU)
        mask[self._rows(), self._indices.long()] = True
        return mask

    def positions(self) -> Tensor:
        """Each connection's position in the row-major dense ``(out_features, in_features)``
        matrix, ``output * in_features + input``: int64, in canonical (:meth:`edges`)
        order, so strictly increasing.

        Examples::

            >>> Wiring.from_mapping({"y": ["a", "b"], "z": ["b"]}).positions()
            tensor([0, 1, 3])
        """
        return self._flat()

    @classmethod
    def from_positions(
        cls,
        positions: Tensor,
        in_features: int,
        out_features: int,
        *,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
    ) -> Wiring:
        """The wiring whose connections sit at ``positions`` of the row-major dense
        ``(out_features, in_features)`` matrix (the inverse of :meth:`positions`).

        Args:
            positions: a 1-D integer tensor of strictly increasing positions in
                ``[0, in_features * out_features)``.
            in_features: number of inputs.
            out_features: number of outputs.
            input_names: optional names of the inputs, as for the constructor.
            output_names: optional names of the outputs, as for the constructor.

        Examples::

            >>> w = Wiring.from_positions(torch.tensor([0, 1, 3]), 2, 2)
            >>> w.edges().tolist()
            [[0, 0], [1, 0], [1, 1]]
        """
        in_f = check_size(in_features, "in_features")
        out_f = check_size(out_features, "out_features")
        names = _check_both_names(input_names, output_names, in_f, out_f)
        if not isinstance(positions, Tensor) or positions.dim() != 1:
            raise TypeError(
                f"positions must be a 1-D tensor, got {type(positions).__name__}"
                + (f" of shape {tuple(positions.shape)}" if isinstance(positions, Tensor) else "")
            )
        if positions.is_floating_point() or positions.dtype == torch.bool:
            raise TypeError(f"positions must hold integers, got {positions.dtype}")
        flat = positions.detach().to("cpu", torch.int64)
        if flat.numel():
            if int(flat[0]) < 0 or int(flat[-1]) >= in_f * out_f:
                raise ValueError(
                    f"positions must lie in [0, {in_f * out_f}) for a {out_f} x {in_f} "
                    f"matrix, got values from {int(flat.min())} to {int(flat.max())}"
                )
            if flat.numel() > 1 and not bool((flat[1:] > flat[:-1]).all()):
                raise ValueError(
                    "positions must be strictly increasing (sorted, each connection once); "
                    "sort them with torch.unique(positions)"
                )
        return cls._from_flat(flat, in_f, out_f, *names)

    def edges(self) -> Tensor:
        """Connections as int64 ``(nnz, 2)`` ``(input, output)`` pairs in canonical order.

        Canonical order sorts by output, then by input; layers store the value of
        ``edges()[k]`` at ``weight[k]``.

        Examples::

            >>> Wiring.from_mask(torch.tensor([[0, 1], [1, 1]])).edges().tolist()
            [[1, 0], [0, 1], [1, 1]]
        """
        return torch.stack([self._indices.long(), self._rows()], dim=1)

    def with_names(
        self,
        input_names: Sequence[str] | None = None,
        output_names: Sequence[str] | None = None,
        **deprecated: Any,
    ) -> Wiring:
        """The same connections with exactly these names (``None`` leaves that side unnamed).
        (``inputs=``/``outputs=`` are deprecated spellings of ``input_names=``/
        ``output_names=``.)

        Examples::

            >>> w = Wiring.banded(3, 2, 2).with_names(input_names=["a", "b", "c"])
            >>> w.input_names, w.output_names
            (('a', 'b', 'c'), None)
        """
        input_names, output_names = _renamed_names(
            "Wiring.with_names", deprecated, input_names, output_names
        )
        copy = type(self).__new__(type(self))
        copy._init(
            self._indptr,
            self._indices,
            self._in,
            self._out,
            *_check_both_names(input_names, output_names, self._in, self._out),
        )
        return copy

    @property
    def block_sizes(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """``(in_sizes, out_sizes)`` if the wiring is block diagonal, else ``None``.

        The finest partition into consecutive input groups and consecutive output groups such
        that each input group feeds all of its output group and nothing else. ``None`` when no
        such partition exists, e.g. when some input or output has no connection.

        Examples::

            >>> Wiring.block_diagonal([1, 3], [2, 2]).block_sizes
            ((1, 3), (2, 2))
            >>> Wiring.banded(4, 3, 2).block_sizes is None
            True
        """
        fan = self._indptr.diff()
        if bool((fan == 0).any()):
            return None
        first = self._indices[self._indptr[:-1]].long()
        last = self._indices[self._indptr[1:] - 1].long()
        if bool((last - first + 1 != fan).any()):  # a gap inside a row
            return None
        stop = last + 1
        same = (first[1:] == first[:-1]) & (stop[1:] == stop[:-1])
        follows = first[1:] == stop[:-1]
        if not bool((same | follows).all()) or int(first[0]) != 0 or int(stop[-1]) != self._in:
            return None
        starts = torch.cat(
            [torch.zeros(1, dtype=torch.int64, device=_CPU), torch.nonzero(~same)[:, 0] + 1]
        )
        out_sizes = torch.cat([starts[1:], torch.tensor([self._out], device=_CPU)]) - starts
        in_sizes = fan[starts]
        return tuple(in_sizes.tolist()), tuple(out_sizes.tolist())

    @property
    def is_block_diagonal(self) -> bool:
        """Whether :attr:`block_sizes` is not ``None``."""
        return self.block_sizes is not None

    # ------------------------------------------------------------------ algebra

    def then(self, other: Wiring) -> Wiring:
        """Connectivity of this layer followed by ``other``: input ``i`` reaches output ``k``.

        Output ``k`` of the result is connected to input ``i`` if some path ``i -> j -> k``
        exists, ``i -> j`` in ``self`` and ``j -> k`` in ``other`` (a boolean matrix product
        ``other.mask() @ self.mask()``). Input names come from ``self``, output names from
        ``other``.

        Args:
            other: the next layer's wiring; ``other.in_features == self.out_features``.

        Examples::

            >>> w = Wiring.block_diagonal([2, 2], [1, 1])
            >>> v = Wiring.from_edges([[0, 0], [1, 1]], 2, 3)
            >>> w.then(v).mask().int()
            tensor([[1, 1, 0, 0],
                    [0, 0, 1, 1],
                    [0, 0, 0, 0]], dtype=torch.int32)
        """
        if not isinstance(other, Wiring):
            raise TypeError(f"then expects a Wiring, got {type(other).__name__}")
        if self._out != other._in:
            raise ValueError(
                "w.then(v) needs w.out_features == v.in_features, got "
                f"w.out_features = {self._out} and v.in_features = {other._in}"
            )
        a, b, c = self._in, self._out, other._out
        counts = self.fan_in()[other._indices.long()]  # paths through each edge of other
        products = int(counts.sum())
        dense_size = c * b + b * a + c * a
        if dense_size <= max(_DENSE_THEN_LIMIT, products):
            reach = (other.mask().float() @ self.mask().float()) > 0
            flat = torch.nonzero(reach.flatten())[:, 0]
        else:
            out = other._rows().repeat_interleave(counts, output_size=products)
            first = self._indptr[other._indices.long()]
            offset = torch.arange(products, device=_CPU) - (
                counts.cumsum(0) - counts
            ).repeat_interleave(counts, output_size=products)
            pos = first.repeat_interleave(counts, output_size=products) + offset
            flat = torch.unique(out * a + self._indices[pos].long())
        return type(self)._from_flat(flat, a, c, self._input_names, other._output_names)

    def __or__(self, other: object) -> Wiring:
        """Connections present in either wiring."""
        if not isinstance(other, Wiring):
            return NotImplemented
        names = self._combined_names(other, "|")
        flat = torch.unique(torch.cat([self._flat(), other._flat()]))
        return type(self)._from_flat(flat, self._in, self._out, *names)

    def __and__(self, other: object) -> Wiring:
        """Connections present in both wirings."""
        if not isinstance(other, Wiring):
            return NotImplemented
        names = self._combined_names(other, "&")
        flat = self._flat()
        flat = flat[torch.isin(flat, other._flat())]
        return type(self)._from_flat(flat, self._in, self._out, *names)

    @property
    def T(self) -> Wiring:
        """The transpose: inputs and outputs (and their names) swapped.

        Examples::

            >>> w = Wiring.block_diagonal([1, 2], [2, 1])
            >>> torch.equal(w.T.mask(), w.mask().T)
            True
        """
        order = torch.sort(self._indices, stable=True).indices
        return type(self)._trusted(
            self._indices[order].long(),
            self._rows()[order],
            self._out,
            self._in,
            self._output_names,
            self._input_names,
        )

    def select(self, inputs: Any = None, outputs: Any = None) -> Wiring:
        """The wiring between a subset of the inputs and a subset of the outputs.

        Kept inputs and outputs are renumbered in their original order and keep their
        names; a connection survives when both its ends are kept. Its position in the new
        canonical order is its position among the survivors of the old one, so
        ``weight[keep]`` with ``keep = w.selected_edges(inputs, outputs)`` gives the values.

        Args:
            inputs: the inputs to keep, as a bool mask of ``in_features`` entries or
                increasing indices. Default: ``None`` (all).
            outputs: the outputs to keep, likewise. Default: ``None`` (all).

        Examples::

            >>> w = Wiring.block_diagonal([2, 1], [1, 2])
            >>> w.select(inputs=[0, 2]).edges().tolist()
            [[0, 0], [1, 1], [1, 2]]
        """
        keep_in, keep_out, kept = self._selection(inputs, outputs)
        new_in = keep_in.cumsum(0) - 1
        new_out = keep_out.cumsum(0) - 1
        return type(self)._trusted(
            new_out[self._rows()[kept]],
            new_in[self._indices[kept].long()],
            int(keep_in.sum()),
            int(keep_out.sum()),
            _take_names(self._input_names, keep_in),
            _take_names(self._output_names, keep_out),
        )

    def selected_edges(self, inputs: Any = None, outputs: Any = None) -> Tensor:
        """Bool ``(nnz,)``: which connections :meth:`select` with these arguments keeps.

        Examples::

            >>> Wiring.block_diagonal([2, 1], [1, 2]).selected_edges(inputs=[0, 2]).tolist()
            [True, False, True, True]
        """
        return self._selection(inputs, outputs)[2]

    def select_edges(self, keep: Any) -> Wiring:
        """The same inputs and outputs with only the connections where ``keep`` is true.

        Args:
            keep: bool ``(nnz,)`` in canonical order (``keep[k]`` for ``edges()[k]``).

        Examples::

            >>> w = Wiring.block_diagonal([2], [2])
            >>> w.select_edges(torch.tensor([True, False, False, True])).mask().int().tolist()
            [[1, 0], [0, 1]]
        """
        keep = torch.as_tensor(keep, device=_CPU)
        if keep.dtype != torch.bool or tuple(keep.shape) != (self.nnz,):
            raise ValueError(
                f"select_edges expected a bool tensor of shape (nnz,) = ({self.nnz},), got "
                f"dtype {keep.dtype} and shape {tuple(keep.shape)}"
            )
        return type(self)._trusted(
            self._rows()[keep],
            self._indices[keep].long(),
            self._in,
            self._out,
            self._input_names,
            self._output_names,
        )

    def _selection(self, inputs: Any, outputs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Bool masks of the kept inputs, the kept outputs and the kept connections."""
        keep_in = _keep_mask(inputs, self._in, "inputs", "in_features")
        keep_out = _keep_mask(outputs, self._out, "outputs", "out_features")
        return keep_in, keep_out, keep_in[self._indices.long()] & keep_out[self._rows()]

    def _combined_names(
        self, other: Wiring, op: str
    ) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        if self.shape != other.shape:
            raise ValueError(
                f"w {op} v needs wirings of the same shape (out_features, in_features), "
                f"got {self.shape} and {other.shape}"
            )
        merged = []
        for side, mine, theirs in (
            ("input_names", self._input_names, other._input_names),
            ("output_names", self._output_names, other._output_names),
        ):
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(
                    f"w {op} v needs matching {side} where both are set, got "
                    f"{_short(mine)} and {_short(theirs)}; rename one with with_names"
                )
            merged.append(mine if mine is not None else theirs)
        return merged[0], merged[1]

    # ------------------------------------------------------------------ value semantics

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (plain ints, lists and strings); see :meth:`from_dict`.

        Examples::

            >>> Wiring.block_diagonal([1, 1], [1, 1]).to_dict()["indices"]
            [0, 1]
        """
        return {
            "format": _FORMAT,
            "in_features": self._in,
            "out_features": self._out,
            "indptr": self._indptr.tolist(),
            "indices": self._indices.tolist(),
            "input_names": None if self._input_names is None else list(self._input_names),
            "output_names": None if self._output_names is None else list(self._output_names),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Wiring):
            return NotImplemented
        return (
            self.shape == other.shape
            and self._input_names == other._input_names
            and self._output_names == other._output_names
            and torch.equal(self._indptr, other._indptr)
            and torch.equal(self._indices, other._indices)
        )

    def __hash__(self) -> int:
        if self._hash is None:
            key = (self.shape, self._input_names, self._output_names)
            value = hash((key, _checksum(self._indptr), _checksum(self._indices)))
            object.__setattr__(self, "_hash", value)
            return value
        return self._hash

    def __repr__(self) -> str:
        density = f"{self.density:.4g}"
        if density.isdigit():
            density += ".0"
        named = [
            side
            for side, names in (("inputs", self._input_names), ("outputs", self._output_names))
            if names is not None
        ]
        extra = f", named={'+'.join(named)}" if named else ""
        return (
            f"Wiring(in_features={self._in}, out_features={self._out}, nnz={self.nnz}, "
            f"density={density}{extra})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        state = (self._indptr, self._indices, self._in, self._out)
        return (_restore, (*state, self._input_names, self._output_names))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"Wiring is immutable, cannot set {name!r}; build a new one (e.g. with_names, |, &)"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Wiring is immutable, cannot delete {name!r}")

    # ------------------------------------------------------------------ private

    def _rows(self) -> Tensor:
        return _row_ids(self._indptr, self._out, self.nnz)

    def _flat(self) -> Tensor:
        return self._rows() * self._in + self._indices.long()


def _restore(
    indptr: Tensor,
    indices: Tensor,
    in_features: int,
    out_features: int,
    input_names: tuple[str, ...] | None,
    output_names: tuple[str, ...] | None,
) -> Wiring:
    return Wiring(
        indptr,
        indices,
        in_features,
        out_features,
        input_names=input_names,
        output_names=output_names,
    )


def _row_ids(indptr: Tensor, out_features: int, nnz: int) -> Tensor:
    """The output index of each connection."""
    return torch.arange(out_features, device=_CPU).repeat_interleave(indptr.diff(), output_size=nnz)


def _check_group_sizes(sizes: object, name: str) -> list[int]:
    if isinstance(sizes, str) or not isinstance(sizes, Iterable):
        raise TypeError(
            f"{name} must be a sequence of positive ints (one per group), got "
            f"{type(sizes).__name__} ({sizes!r}); for G equal groups of n pass [n] * G"
        )
    values = [check_size(size, f"{name}[{g}]") for g, size in enumerate(sizes)]
    if not values:
        raise ValueError(f"{name} must list at least one group size, got an empty sequence")
    return values


def _check_density(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"density must be a float in [0, 1], got {type(value).__name__} ({value!r})"
        )
    density = float(value)
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    return density


def _check_count(value: object, total: int) -> int:
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f"nnz must be an int, got {type(value).__name__} ({value!r})")
    count = operator.index(value)
    if not 0 <= count <= total:
        raise ValueError(
            f"nnz must be in [0, in_features * out_features] = [0, {total}], got {count}"
        )
    return count


def _check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise TypeError(f"seed must be an int or None, got {type(value).__name__} ({value!r})")
    return operator.index(value)


def _sample_flat(total: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct ids uniformly from ``range(total)``, sorted, in ``O(count)`` memory."""
    if total <= max(_RANDPERM_LIMIT, 4 * count):
        return torch.randperm(total, generator=generator, device=_CPU)[:count].sort().values
    found = torch.zeros(0, dtype=torch.int64, device=_CPU)
    while found.numel() < count:
        draws = torch.randint(total, (2 * (count - found.numel()) + 16,), generator=generator)
        found = torch.unique(torch.cat([found, draws]))
    # The distinct draws are a uniformly random set; keep a uniformly random subset of it.
    keep = torch.randperm(found.numel(), generator=generator, device=_CPU)[:count]
    return found[keep].sort().values


def _as_index_tensor(value: object, name: str) -> Tensor:
    t = torch.as_tensor(value, device=_CPU)
    if t.numel() == 0:
        return torch.zeros(t.shape, dtype=torch.int64, device=_CPU)
    if t.dtype == torch.bool or t.dtype.is_floating_point or t.dtype.is_complex:
        raise TypeError(
            f"{name} must hold integers, got dtype {t.dtype}; "
            "convert with .long() after checking the values are whole numbers"
        )
    return t.to(device="cpu", dtype=torch.int64, copy=True)


def _renamed_names(
    where: str, deprecated: dict[str, Any], input_names: Any, output_names: Any
) -> tuple[Any, Any]:
    """``input_names`` and ``output_names``, or their deprecated spellings ``inputs=`` and
    ``outputs=`` (warned about at the caller of ``where``)."""
    return (
        renamed(
            where,
            deprecated,
            "inputs",
            "input_names",
            input_names,
            None,
            also=("outputs",),
            stacklevel=4,
        ),
        renamed(
            where,
            deprecated,
            "outputs",
            "output_names",
            output_names,
            None,
            also=("inputs",),
            stacklevel=4,
        ),
    )


def _name_tuple(names: object, arg: str) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"{arg} must be a sequence of str, got {type(names).__name__} ({names!r})")
    result = tuple(names)
    for pos, name in enumerate(result):
        if not isinstance(name, str):
            raise TypeError(f"{arg}[{pos}] must be a str, got {type(name).__name__} ({name!r})")
    seen: set[str] = set()
    for name in result:
        if name in seen:
            raise ValueError(f"{arg} must not repeat a name, but {name!r} appears more than once")
        seen.add(name)
    return result


def _check_names(names: object, count: int, arg: str, size_name: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    result = _name_tuple(names, arg)
    if len(result) != count:
        raise ValueError(
            f"{arg} must have one name per feature ({size_name} = {count}), got {len(result)} names"
        )
    return result


def _check_both_names(
    input_names: object, output_names: object, in_features: int, out_features: int
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    return (
        _check_names(input_names, in_features, "input_names", "in_features"),
        _check_names(output_names, out_features, "output_names", "out_features"),
    )


def _check_known(names: Iterable[str], known: tuple[str, ...], kind: str, arg: str) -> None:
    allowed = set(known)
    unknown = list(dict.fromkeys(name for name in names if name not in allowed))
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(
            f"unknown {kind} name(s) {unknown[:5]}{more}: not in {arg}={_short(known)}; "
            f"add them to {arg}= or fix the mapping"
        )


def _short(names: tuple[str, ...]) -> str:
    return repr(list(names)) if len(names) <= 5 else repr(list(names[:5]))[:-1] + ", ...]"


def _checksum(t: Tensor) -> int:
    """A cheap deterministic fingerprint of an integer tensor, for hashing."""
    p = 2_147_483_647
    weights = torch.arange(1, t.numel() + 1, dtype=torch.int64, device=_CPU) % p
    return int((((t.long() % p) * weights) % p).sum())


def _keep_mask(keep: object, size: int, arg: str, size_name: str) -> Tensor:
    """Bool ``(size,)`` from ``None`` (all), a bool mask or increasing unique indices."""
    if keep is None:
        return torch.ones(size, dtype=torch.bool, device=_CPU)
    t = torch.as_tensor(keep, device=_CPU)
    if t.numel() == 0 and t.ndim == 1:  # [] keeps nothing
        return torch.zeros(size, dtype=torch.bool, device=_CPU)
    if t.dtype == torch.bool:
        if tuple(t.shape) != (size,):
            raise ValueError(
                f"{arg} as a bool mask must have {size_name} = {size} entries, "
                f"got shape {tuple(t.shape)}"
            )
        return t.clone()
    if t.dtype.is_floating_point or t.dtype.is_complex or t.ndim != 1:
        raise TypeError(
            f"{arg} must be a bool mask or 1-D integer indices, got dtype {t.dtype} "
            f"and shape {tuple(t.shape)}"
        )
    t = t.long()
    if t.numel() and (bool((t[1:] <= t[:-1]).any()) or int(t[0]) < 0 or int(t[-1]) >= size):
        raise ValueError(
            f"{arg} must be increasing unique indices in [0, {size_name}) = [0, {size}), "
            f"got {t.tolist()[:10]}{' ...' if t.numel() > 10 else ''}"
        )
    mask = torch.zeros(size, dtype=torch.bool, device=_CPU)
    mask[t] = True
    return mask


def _take_names(names: tuple[str, ...] | None, keep: Tensor) -> tuple[str, ...] | None:
    if names is None:
        return None
    return tuple(name for name, k in zip(names, keep.tolist(), strict=True) if k)
