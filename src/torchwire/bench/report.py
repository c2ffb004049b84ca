"""Reports of a bench run: plain text (:func:`format_text`), markdown
(:func:`format_markdown`), JSON-ready data (:func:`to_dict`), and the one-screen summary
both texts end with (:func:`summary_lines`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchwire.bench.compare import NOT_BEST, times
from torchwire.bench.section import Table
from torchwire.bench.suite import REGISTRY, BenchResult

__all__ = ["format_markdown", "format_text", "summary_lines", "to_dict"]


def _header(result: BenchResult) -> list[str]:
    env = result.environment
    threads = f"{env['threads']} thread" + ("s" if env["threads"] != 1 else "")
    lines = [
        f"torchwire bench: torch {env['torch']}, torchwire {env['torchwire']},"
        f" {env['device']} ({env['device_name']}), {env['dtype']}, {threads}",
        f"fwd: {env['modes']['fwd']}; fwd+bwd: {env['modes']['fwd_bwd']}.",
        f"ms: median over {env['repeats']} interleaved rounds.",
        f"params bytes: parameters + buffers; peak bytes: {env['peak_bytes']}.",
    ]
    notes = [note for section, results in result.sections() for note in section.notes(results)]
    return lines + list(dict.fromkeys(notes))


def _tables(result: BenchResult, *, details: bool) -> list[Table]:
    return [
        table
        for section, results in result.sections()
        for table in section.tables(results, details=details)
    ]


def _text_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [list(headers), *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return [line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _markdown_table(headers: Sequence[str], rows: list[list[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(headers), "|" + "|".join(["---", *["---:"] * (len(headers) - 1)]) + "|"] + [
        line(row) for row in rows
    ]


def summary_lines(result: BenchResult) -> list[str]:
    """The one-screen summary: per kind of problem, what torchwire runs and how it compares
    with the fastest alternative users write today, then where torchwire is not the best
    choice on this device (an alternative at least :data:`~torchwire.bench.compare.NOT_BEST`
    times faster) and what to use there."""
    env = result.environment
    threads = f"{env['threads']} thread" + ("s" if env["threads"] != 1 else "")
    lines = [
        f"summary: torchwire against what users write today, on {env['device_name']}"
        f" ({env['device']}, {env['dtype']}, {threads})",
        "ratios: the fastest alternative's / torchwire's, min-max over cases (above 1:"
        " torchwire is faster, smaller);",
        "speed: time; params: parameter + buffer bytes; peak: peak bytes of a forward+backward.",
        "",
    ]
    not_best: list[str] = []
    for section, results in result.sections():
        summary = section.summary(results)
        lines += [f"{summary.kind}: {summary.headline}", *(f"  {x}" for x in summary.lines)]
        not_best += summary.not_best
    if not_best:
        lines += ["", f"where torchwire is not the best choice here ({times(NOT_BEST)} or more):"]
        lines += [f"  {line}" for line in not_best]
    else:
        lines += ["", f"no alternative was {times(NOT_BEST)} faster than torchwire here."]
    if result.seconds:
        took = result.seconds
        lines.append(
            f"the run took {took:.0f} s." if took < 120 else f"the run took {took / 60:.0f} min."
        )
    return lines


def format_text(result: BenchResult, *, details: bool = False) -> str:
    """Render ``result`` as plain text: the header, per section its tables (with ``details``,
    one per case before its overview), then the one-screen summary."""
    lines = _header(result)
    for table in _tables(result, details=details):
        lines += ["", f"{table.title}:", *_text_table(table.headers, table.rows)]
        lines += [table.note] if table.note else []
    lines += ["", *summary_lines(result)]
    return "\n".join(lines) + "\n"


def format_markdown(result: BenchResult) -> str:
    """Render ``result`` as markdown: the header, every table (one per case, then each
    section's overview), and the one-screen summary as a text block."""
    header = _header(result)
    lines = ["# torchwire bench", "", header[0], "", *(f"- {line}" for line in header[1:])]
    for table in _tables(result, details=True):
        title = table.title[:1].upper() + table.title[1:]
        lines += ["", f"## {title}", "", *_markdown_table(table.headers, table.rows)]
        lines += ["", table.note] if table.note else []
    lines += ["", "## Summary", "", "```text", *summary_lines(result), "```"]
    return "\n".join(lines) + "\n"


def to_dict(result: BenchResult) -> dict[str, Any]:
    """Everything in ``result`` as JSON-ready data (times in milliseconds, sizes in bytes):
    ``environment``, then one list of cases per section, under the section's key:
    ``overhead``, ``cases`` (block), ``sparse``, ``branches``, ``merge``."""
    data: dict[str, Any] = {"environment": result.environment}
    for name, section in REGISTRY.items():
        data[section.key] = [section.to_dict(case) for case in result.results.get(name, [])]
    return data
