"""Progress bars on a terminal only: never in CI logs, pipes, or with --no-progress."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(requested: bool) -> bool:
    """Bars only when asked for, on a TTY, and outside CI."""
    return requested and sys.stderr.isatty() and os.environ.get("CI", "").lower() != "true"


def track(items: Iterable[T], length: int, label: str, enabled: bool) -> Iterator[T]:
    """Iterate ``items``, drawing a click progress bar on stderr when enabled."""
    if not enabled:
        yield from items
        return
    import click

    with click.progressbar(items, length=length, label=label, file=sys.stderr) as bar:
        yield from bar


def duration(seconds: float) -> str:
    """'41 s', '3 min', '1.5 h': how long, as a log line says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class SectionLog:
    """One line per section on stderr when it starts and when it ends, with the time it took
    and the plan's estimate for the rest: readable in a CI log, where no bar is drawn.

    The estimate for the rest is the plan's, corrected by how far the finished sections were
    off it (their actual over their estimated time)."""

    def __init__(self, enabled: bool, estimates: dict[str, float]):
        self.enabled = enabled
        self.estimates = dict(estimates)
        self.spent = 0.0
        self.expected = 0.0

    def say(self, message: str) -> None:
        if self.enabled:
            try:
                print(f"auditor: {message}", file=sys.stderr, flush=True)
            except BrokenPipeError:  # the log's reader has gone; the run goes on without it
                self.enabled = False

    def start(self, name: str, index: int, count: int) -> None:
        estimate = self.estimates.get(name, 0.0) * self.correction
        about = f"; about {duration(estimate)}" if estimate >= 1 else ""
        self.say(f"{name} ({index}/{count}) started{about}")

    def done(self, name: str, seconds: float) -> None:
        estimate = self.estimates.pop(name, 0.0)
        if estimate >= 1:  # sections the plan barely counts say nothing about its error
            self.spent += seconds
            self.expected += estimate
        rest = sum(self.estimates.values()) * self.correction
        left = f"; about {duration(rest)} left" if self.estimates else ""
        self.say(f"{name} done in {duration(seconds)}{left}")

    @property
    def correction(self) -> float:
        """Actual over estimated time of the finished sections, within 1/3 to 3."""
        if self.expected <= 0 or self.spent <= 0:
            return 1.0
        return float(min(3.0, max(1 / 3, self.spent / self.expected)))
