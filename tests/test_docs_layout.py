"""docs/layout.md lists every module of the package: a newcomer finds the room for a change
there, so a module it leaves out (or one it lists that is gone) fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "auditor"


def listed_modules(text: str) -> set[str]:
    """The module paths (under auditor/) in the 'Every module' table's first column."""
    section = text.split("\n## Every module", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([\w/]+\.py)`", row)}


def package_modules() -> tuple[set[str], set[str]]:
    """(every module of the package, those that must be listed): a package's ``__init__.py``
    must be only when it holds more than a docstring."""
    every, required = set(), set()
    for path in PACKAGE.rglob("*.py"):
        name = path.relative_to(PACKAGE).as_posix()
        every.add(name)
        body = ast.parse(path.read_text()).body
        marker = path.name == "__init__.py" and all(
            isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)
        if not marker:
            required.add(name)
    return every, required


def test_docs_layout_lists_every_module_and_nothing_that_is_gone():
    listed = listed_modules((ROOT / "docs" / "layout.md").read_text())
    every, required = package_modules()
    assert not required - listed, f"add to docs/layout.md: {sorted(required - listed)}"
    assert not listed - every, f"gone from auditor/: {sorted(listed - every)}"


def test_the_listing_is_read_from_the_table_only():
    text = ("intro `cli.py`\n\n## Every module\n\n| module | job |\n|---|---|\n"
            "| `a.py`, `b/c.py` | mentions `d.py` |\n\n## Next\n\n| `e.py` | x |\n")
    assert listed_modules(text) == {"a.py", "b/c.py"}
