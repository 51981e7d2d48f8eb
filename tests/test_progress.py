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
