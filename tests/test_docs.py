"""Every Python example in README.md and docs/*.md runs verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [
    pytest.param(block, id=f"{page.name}-{n}")
    for page in PAGES
    for n, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


def test_every_page_has_examples() -> None:
    assert {param.id.rsplit("-", 1)[0] for param in EXAMPLES} == {page.name for page in PAGES}


@pytest.mark.parametrize("code", EXAMPLES)
def test_example_runs(code: str) -> None:
    exec(compile(code, "example", "exec"), {})


# The site (mkdocs.yml) must show every page in docs/, and every page it lists must exist.
DOCS = ROOT / "docs"


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    return []


def _mkdocs_config() -> dict[str, object]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):  # mkdocs.yml may name Python objects (!!python/name:...)
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)
    assert isinstance(config, dict)
    return config


def test_site_nav_lists_every_docs_page() -> None:
    nav = _nav_pages(_mkdocs_config()["nav"])
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    missing = sorted(page for page in nav if not (DOCS / page).is_file())
    assert not missing, f"mkdocs.yml's nav lists pages that do not exist: {missing}"
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    unlisted = sorted(pages - set(nav))
    assert not unlisted, f"docs pages missing from mkdocs.yml's nav: {unlisted}"


def test_home_page_shows_the_readme_first_screen() -> None:
    def blocks(text: str, language: str) -> list[str]:
        return re.findall(rf"```{language}\n(.*?)```", text, re.S)

    readme, home = (ROOT / "README.md").read_text(), (DOCS / "index.md").read_text()
    assert blocks(home, "bash")[0] == blocks(readme, "bash")[0]
    assert blocks(home, "python")[0] == blocks(readme, "python")[0]


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))],
    ids=lambda page: page.relative_to(ROOT).as_posix(),
)
def test_relative_links_resolve(page: Path) -> None:
    """Links between pages work on the site and on a code host: relative paths to files."""
    broken = []
    for target in LINK.findall(page.read_text()):
        path = target.split("#", 1)[0]
        if not path or re.match(r"[a-z]+:", path):
            continue  # an anchor on the same page, or a URL
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"
    if page.is_relative_to(DOCS):
        outside = [t for t in LINK.findall(page.read_text()) if t.startswith("../")]
        outside = [t for t in outside if not (page.parent / t).resolve().is_relative_to(DOCS)]
        assert not outside, f"{page.name} links outside docs/, which the site does not have"


def test_sphinx_markup_is_translated_for_the_site() -> None:
    """docs/reference/sphinx_roles.py turns PyTorch-style docstring markup into Markdown."""
    pytest.importorskip("griffe")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "sphinx_roles", DOCS / "reference/sphinx_roles.py"
    )
    assert spec is not None
    assert spec.loader is not None
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    known = {
        "torchwire.Wiring": "torchwire.wiring.Wiring",
        "torchwire.merge": "torchwire.merging.merge",
    }
    text = (
        "Sum :math:`\\sum_i x_i` of a :class:`~torchwire.Wiring`, see :func:`torchwire.merge`"
        " and :func:`round`.\n\n.. math::\n    y = x\n\nExamples::\n\n    >>> 1\n    1\n"
    )
    translated = roles.translate(text, known.get)
    assert "\\(\\sum_i x_i\\)" in translated
    wiring = '<autoref identifier="torchwire.wiring.Wiring" optional><code>Wiring</code>'
    assert wiring in translated
    assert '<autoref identifier="torchwire.merging.merge" optional>' in translated
    assert "<code>round()</code>" in translated
    assert "$$\ny = x\n$$" in translated
    assert "Examples:\n" in translated
    assert "::" not in translated
