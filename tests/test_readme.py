"""The README's commands are the ones CI runs (its examples run in test_docs)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_test_command_is_the_one_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert commands is not None
    lines = [line.split("#")[0].strip() for line in commands.group(1).strip().splitlines()]
    assert len(lines) == 2
    assert lines[0].endswith("torchwire bench")
    install, test = (part.strip() for part in lines[1].split("&&"))
    assert install in ci
    assert test in ci
