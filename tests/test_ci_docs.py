"""docs/ci.md shows commands that run: its spec, its GitHub Actions job and its cron line are
read from the page and executed as written, on the demo model and the digits test set.

The only change made to them: two spec keys that keep the test fast (the performance section,
100 images), put in front of the page's spec.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from auditor.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ci.md"
FAST_SPEC = 'sections = ["performance"]\nmax_samples = 100\n'


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def project(tmp_path, digits_model_path, digits_npz):
    """A user's project as the page assumes it: the spec in audits/, a model and test data."""
    (tmp_path / "audits").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    (spec,) = code_blocks("toml")
    (tmp_path / "audits" / "model.toml").write_text(FAST_SPEC + spec)
    shutil.copy(digits_model_path, tmp_path / "models" / "classifier.keras")
    shutil.copy(digits_npz, tmp_path / "data" / "test.npz")
    return tmp_path


def run_auditor_line(line: str, cwd: Path) -> int:
    """An ``auditor ...`` command line from the page, run in-process from ``cwd``."""
    words = shlex.split(line)
    assert words[0] == "auditor"
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, words[1:])
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code


def test_the_github_actions_job_runs_and_posts_the_summary(project):
    (workflow,) = code_blocks("yaml")
    steps = yaml.safe_load(workflow)["jobs"]["audit"]["steps"]
    commands = [step["run"] for step in steps if "run" in step]
    assert commands[0].startswith("pip install")  # the environment, already installed here

    (refresh,) = code_blocks("bash")  # the baseline the job compares with
    assert run_auditor_line(refresh.strip(), project) == 0
    assert (project / "audits" / "baseline" / "predictions.npz").is_file()

    audit, post = commands[1:]
    assert run_auditor_line(audit, project) == 0
    step_summary = project / "step-summary.md"
    subprocess.run(["bash", "-c", post], cwd=project, check=True,
                   env={**os.environ, "GITHUB_STEP_SUMMARY": str(step_summary)})
    posted = step_summary.read_text()
    assert "auditor: **PASS**" in posted and "Changes since the baseline" in posted
    assert "**0** examples became wrong" in posted
    upload = next(step for step in steps if step.get("uses", "").startswith(
        "actions/upload-artifact"))
    assert (project / upload["with"]["path"] / "report.html").is_file()


def test_the_cron_line_watches_checkpoints_from_a_bare_environment(project):
    (cron,) = code_blocks("cron")
    fields = cron.strip().split(maxsplit=5)
    assert len(fields) == 6 and fields[:2] == ["*/30", "*"]
    command = fields[5]
    workdir = re.match(r"cd (\S+) && ", command).group(1)
    command = command.replace(f"cd {workdir}", f"cd {shlex.quote(str(project))}", 1)

    # the virtual environment the line names: its auditor runs this checkout's python -m auditor
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "auditor").write_text(
        f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(ROOT))} exec {shlex.quote(sys.executable)} '
        '-m auditor "$@"\n')
    (venv_bin / "auditor").chmod(0o755)
    (project / "checkpoints").mkdir()
    shutil.copy(project / "models" / "classifier.keras", project / "checkpoints" / "epoch-1.keras")

    cron_env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(project)),
                "AUDITOR_CACHE": os.environ["AUDITOR_CACHE"]}
    result = subprocess.run(["/bin/sh", "-c", command], env=cron_env, timeout=300)
    log = (project / "watch.log").read_text()
    assert result.returncode == 0, log
    reports = project / "reports" / "checkpoints"
    (run,) = [p for p in reports.iterdir() if p.is_dir()]
    assert run.name.startswith("epoch-1-") and (run / "report.html").is_file()
    assert "epoch-1.keras: pass" in log and (reports / "index.html").is_file()


def test_the_readme_shows_the_same_tested_job_and_cron_line():
    readme = (ROOT / "README.md").read_text()
    for language in ("yaml", "cron"):
        shown = re.findall(rf"```{language}\n(.*?)```", readme, flags=re.S)
        assert shown == code_blocks(language), f"README's {language} block differs from docs/ci.md"
