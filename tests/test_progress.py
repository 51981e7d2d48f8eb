"""Progress output only on a terminal, never in CI logs or with --no-progress."""

from __future__ import annotations

import sys

from auditor.progress import progress_enabled


class FakeTerminal:
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert progress_enabled(True)
    assert not progress_enabled(False)  # --no-progress
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(True)


def test_no_progress_when_stderr_is_a_pipe(monkeypatch, capsys):
    monkeypatch.delenv("CI", raising=False)
    assert not progress_enabled(True)  # pytest captures stderr: not a TTY


def test_no_progress_keeps_the_section_log_lines_and_quiet_silences_them(tmp_path,
                                                                          digits_model_path):
    from click.testing import CliRunner

    from auditor.cli import cli

    args = ["audit", "--model", str(digits_model_path), "--data", "sklearn:digits:test",
            "--sections", "performance", "--max-samples", "60", "--format", "json"]
    speaking = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a"), "--no-progress"])
    assert speaking.exit_code in (0, 1), speaking.output
    assert "auditor: performance (1/1) started" in speaking.stderr
    assert "auditor: performance done in" in speaking.stderr
    quiet = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b"), "--quiet"])
    assert quiet.exit_code == speaking.exit_code
    assert "auditor:" not in quiet.stderr and "verdict:" in quiet.stderr
