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
