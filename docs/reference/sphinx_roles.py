"""Griffe extension for the docs site: PyTorch-style (Sphinx) docstring markup to Markdown.

torchwire's docstrings follow PyTorch's layout, which Sphinx renders: ``:math:`...``` and
``.. math::`` for formulas, ``:func:`` / ``:class:`` / ``:meth:`` / ``:attr:`` / ``:mod:`` /
``:data:`` roles for cross-references, and ``Examples::`` before doctests. mkdocstrings reads
docstrings as Markdown (Google sections), so this extension translates that markup while the
API is loaded, leaving the source as it is (``help()`` and the doctests read it unchanged):

- ``:math:`x``` becomes ``\\(x\\)`` and a ``.. math::`` block a ``$$`` block, which
  ``pymdownx.arithmatex`` hands to MathJax;
- a cross-reference role becomes a link to the object's entry in the API reference when the
  name resolves to a public torchwire object, and inline code otherwise (``~`` shows the last
  name only, as in Sphinx);
- ``Examples::`` becomes the Google section ``Examples:``.

mkdocs.yml loads it with ``extensions: [docs/reference/sphinx_roles.py]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import griffe

ROLE = re.compile(r":(?P<role>math|func|class|meth|attr|mod|data|obj|exc):`(?P<text>[^`]+)`")
MATH_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+\S.*\n|[ \t]*\n)+)", re.M
)
SECTION = re.compile(r"^(?P<indent>[ \t]*)(?P<title>Examples?|Example usage)::[ \t]*$", re.M)
PACKAGE = "torchwire"


def translate(text: str, resolve: Callable[[str], str | None]) -> str:
    """Translate Sphinx markup in one docstring; ``resolve`` maps a name to an identifier."""
    text = SECTION.sub(r"\g<indent>\g<title>:", text)
    text = MATH_BLOCK.sub(_math_block, text if text.endswith("\n") else text + "\n")

    def role(match: re.Match[str]) -> str:
        body = match["text"]
        if match["role"] == "math":
            return rf"\({body}\)"
        name = body.lstrip("~").rstrip("()")
        shown = name.rsplit(".", 1)[-1] if body.startswith("~") else name
        if match["role"] in {"func", "meth"}:
            shown += "()"
        identifier = resolve(name)
        code = f"<code>{shown}</code>"
        if identifier is None:
            return code
        return f'<autoref identifier="{identifier}" optional>{code}</autoref>'

    return ROLE.sub(role, text).rstrip("\n")


def _math_block(match: re.Match[str]) -> str:
    indent = match["indent"]
    lines = [line.strip() for line in match["body"].splitlines() if line.strip()]
    formula = "\n".join(f"{indent}{line}" for line in lines)
    return f"{indent}$$\n{formula}\n{indent}$$\n\n"


def _resolver(obj: griffe.Object, loader: griffe.GriffeLoader) -> Callable[[str], str | None]:
    def resolve(name: str) -> str | None:
        head, _, rest = name.partition(".")
        try:
            path = obj.resolve(head) + (f".{rest}" if rest else "")
        except griffe.NameResolutionError:
            path = name
        try:
            target = loader.modules_collection[path]
            path = target.final_target.path if target.is_alias else target.path
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
        parts = path.split(".")
        if parts[0] != PACKAGE or any(part.startswith("_") for part in parts):
            return None
        return path

    return resolve


class SphinxRoles(griffe.Extension):
    """Translate every torchwire docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None and obj.path.split(".")[0] == PACKAGE:
            obj.docstring.value = translate(obj.docstring.value, _resolver(obj, loader))
