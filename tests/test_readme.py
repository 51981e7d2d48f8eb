"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [line for block in blocks for line in block.splitlines()
            if line.startswith("python3 -m venv")]


def test_readme_gives_a_demo_command_and_a_test_command():
    demo, tests = readme_commands()[:2]
    assert demo.endswith("auditor demo")
    assert tests.endswith("-m pytest")


def test_ci_runs_the_readme_test_command():
    tests = readme_commands()[1]
    assert tests in (ROOT / ".ci" / "run").read_text()
