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
    probe = (
        "from auditor.report.render import environment, template_root\n"
        "from auditor.sections import SECTION_NAMES\n"
        "root = template_root()\n"
        "assert str(root).startswith(%r), root\n"
        "env = environment()\n"
        "for name in ('report.html', *('sections/%%s.html' %% s for s in SECTION_NAMES)):\n"
        "    env.get_template(name)\n"
        "print(len(SECTION_NAMES))\n" % str(tmp_path / "site")
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": ""},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 2
