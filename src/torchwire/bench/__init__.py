"""The benchmark suite behind ``torchwire bench``.

Five sections, one module each, run in this order:

- **overhead** (:mod:`~torchwire.bench.overhead`): one call of each layer and container at
  tiny shapes against the torch code it replaces, and its ATen op counts.
- **block** (:mod:`~torchwire.bench.block`): grouped (block-diagonal) layers, ``BlockLinear``
  against a loop of ``nn.Linear``, a masked dense ``nn.Linear`` and a grouped ``Conv1d``.
- **sparse** (:mod:`~torchwire.bench.sparse`): layers with random connectivity,
  ``SparseLinear`` against a dense weight times a mask, a pruned ``nn.Linear`` and
  ``torch.sparse.mm``.
- **branches** (:mod:`~torchwire.bench.branches`): same-input heads fused by
  ``fuse_parallel`` against the heads one after another and a wide layer split by hand.
- **merge** (:mod:`~torchwire.bench.merge`): layers in a row merged by ``merge`` against the
  chain as written.

Every section but overhead times each way of computing a case (its *methods*) against the
case's *reference* method, in interleaved rounds of the same run (:mod:`~.timing`), and
measures parameter and peak memory (:mod:`~.memory`); :mod:`~.methods` and :mod:`~.compare` hold
what these four share. A section is an object satisfying :class:`~.section.Section`, registered in
:data:`~.suite.REGISTRY`; :func:`run` runs the sections :func:`make_config` names, and
:mod:`~.report` renders the result as text, markdown or JSON, each text ending with a
one-screen summary. Three grids (:data:`~.config.GRIDS`): ``quick``, ``default`` (a case or two
of each section) and ``full``.

Examples::

    >>> from torchwire import bench
    >>> config = bench.make_config(sections=["merge"], batches=[2], repeats=1)
    >>> result = bench.run(config)
    >>> [case["problem"] for case in bench.to_dict(result)["merge"]]
    ['conv3x3-conv5x5']
"""

from torchwire.bench.block import ALTERNATIVES, LAYOUTS, CaseResult, Layout, parse_layout
from torchwire.bench.branches import (
    BRANCH_ALTERNATIVES,
    BRANCH_PROBLEMS,
    PROBLEMS,
    BranchCaseResult,
    BranchProblem,
)
from torchwire.bench.compare import NOT_BEST
from torchwire.bench.config import BATCHES, GRIDS, REPEATS, BenchConfig, default_device
from torchwire.bench.memory import PEAK_BYTES_MEANING, peak_bytes
from torchwire.bench.merge import MERGE_PROBLEMS, MergeCaseResult, MergeProblem
from torchwire.bench.methods import MODES, MethodResult
from torchwire.bench.report import format_markdown, format_text, summary_lines, to_dict
from torchwire.bench.section import Section, Summary, Table
from torchwire.bench.sparse import DENSITIES, FEATURES, SPARSE_ALTERNATIVES, SparseCaseResult
from torchwire.bench.suite import REGISTRY, SECTIONS, BenchResult, device_name, make_config, run
from torchwire.bench.timing import Timing

__all__ = [
    "ALTERNATIVES",
    "BATCHES",
    "BRANCH_ALTERNATIVES",
    "BRANCH_PROBLEMS",
    "DENSITIES",
    "FEATURES",
    "GRIDS",
    "LAYOUTS",
    "MERGE_PROBLEMS",
    "MODES",
    "NOT_BEST",
    "PEAK_BYTES_MEANING",
    "PROBLEMS",
    "REGISTRY",
    "REPEATS",
    "SECTIONS",
    "SPARSE_ALTERNATIVES",
    "BenchConfig",
    "BenchResult",
    "BranchCaseResult",
    "BranchProblem",
    "CaseResult",
    "Layout",
    "MergeCaseResult",
    "MergeProblem",
    "MethodResult",
    "Section",
    "SparseCaseResult",
    "Summary",
    "Table",
    "Timing",
    "default_device",
    "device_name",
    "format_markdown",
    "format_text",
    "make_config",
    "parse_layout",
    "peak_bytes",
    "run",
    "summary_lines",
    "to_dict",
]
