"""A non-editable install carries its templates: the report renders outside the source tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_package_finds_every_template(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(ROOT), "-w", str(tmp_path / "wheel")], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("auditor-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(tmp_path / "site"), str(wheel)], check=True, timeout=300,
                   capture_output=True)
    site = str(tmp_path / "site")
    probe = "\n".join([
        "from auditor.report.render import environment, template_root",
        "from auditor.sections import SECTION_NAMES",
        f"assert str(template_root()).startswith({site!r}), template_root()",
        "env = environment()",
        "for name in ['report.html'] + [f'sections/{s}.html' for s in SECTION_NAMES]:",
        "    env.get_template(name)",
        "from auditor.inputs.demo import demo_spec_path",
        f"assert str(demo_spec_path()).startswith({site!r}), demo_spec_path()",
        "assert demo_spec_path().is_file()",
        "from auditor.report.summary import SCHEMA_FILE",
        f"assert str(SCHEMA_FILE).startswith({site!r}) and SCHEMA_FILE.is_file(), SCHEMA_FILE",
        "print(len(SECTION_NAMES))",
    ])
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": site, "PATH": ""},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 2
