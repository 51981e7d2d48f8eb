"""Whether a run folder fits where it goes, checked before any work, and a disk that fills up
while it is written told in one line.

Before the model is read: the names the run creates beside ``--out`` (its staging folder
``.NAME.partial-XXXXXXXX`` is the longest) within the file system's name and path limits, and
the free space and inodes against an estimate of the run folder's size. While the outputs are
written: ENOSPC (no space, or no inode, left) and EDQUOT (quota exceeded) become an AuditorError,
the staging folder is removed as for any error, and nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from auditor.errors import AuditorError, ConfigError

# The longest name a run creates beside --out: tempfile.mkdtemp appends 8 random characters to
# the staging prefix ".NAME.partial-" (and to ".NAME.old-", shorter, when a run is replaced).
STAGING_EXTRA = len("..partial-") + 8
# The longest path a run creates inside its folder, below --out (featureviz's arrays).
INNER_PATH = len("/featureviz_images.npz") + 32
# Room a run folder needs. Measured here on runs of every section of the digits CNN (150 to 200
# images): 2.2 to 2.7 MB in all, report.html about 2.1 to 2.5 MB of it, summary.json 80 to 180
# kB, that is up to about 850 bytes per image (per-example lists: triage verdicts, label
# issues, duplicates). The bound keeps three times the folder plus 1 kB per image, so that a
# disk that cannot hold a report is refused before the model is read.
FOLDER_BYTES = 8 << 20
BYTES_PER_IMAGE = 1024
INODES = 32  # the files and folders of a run, its staging folder and temporary files, rounded up
FULL = {errno.ENOSPC: "no space or no inode left on the device",
        errno.EDQUOT: "the disk quota is exceeded"}


def nearest_existing(path: Path) -> Path:
    ancestor = Path(os.path.abspath(path))
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def check_names(final: Path) -> None:
    """The run folder's name, its staging folder's and the paths inside it fit the file
    system's limits (NAME_MAX, PATH_MAX)."""
    ancestor = nearest_existing(final.parent)
    name_max, path_max = _limits(ancestor)
    longest = max((part for part in Path(os.path.abspath(final)).relative_to(ancestor).parts),
                  key=lambda part: len(os.fsencode(part)), default="")
    name_bytes = len(os.fsencode(final.name)) + STAGING_EXTRA
    if len(os.fsencode(longest)) > name_max or name_bytes > name_max:
        raise ConfigError(f"--out name '{final.name[:40]}...' is too long: with its staging "
                          f"folder's '.partial-' suffix it takes {name_bytes} bytes, and this "
                          f"file system allows {name_max} per name; choose a shorter --out")
    full = len(os.fsencode(os.path.abspath(final))) + INNER_PATH
    if full > path_max:
        raise ConfigError(f"--out '{str(final)[:40]}...' is too long: the paths inside the run "
                          f"folder would take {full} bytes, and this system allows {path_max}; "
                          "choose a shorter --out")


def _limits(ancestor: Path) -> tuple[int, int]:
    try:
        return os.pathconf(ancestor, "PC_NAME_MAX"), os.pathconf(ancestor, "PC_PATH_MAX")
    except (OSError, ValueError):  # no limits reported (some network file systems)
        return 255, 4096


def check_room(final: Path, images: int = 0) -> None:
    """Free space and inodes where the run folder goes, against an estimate of its size."""
    ancestor = nearest_existing(final.parent)
    needed = FOLDER_BYTES + BYTES_PER_IMAGE * images
    try:
        free = shutil.disk_usage(ancestor).free
        stats = os.statvfs(ancestor)
    except OSError:
        return  # nothing to measure: the writing itself will say
    if free < needed:
        raise ConfigError(f"only {_size(free)} free where --out '{final}' goes, and a run folder "
                          f"takes up to about {_size(needed)}; free some space or choose "
                          "another --out")
    if stats.f_files and stats.f_favail < INODES:  # f_files 0: the file system has no count
        raise ConfigError(f"only {stats.f_favail} free inodes where --out '{final}' goes, and a "
                          f"run needs about {INODES}; delete some files or choose another --out")


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e5 else f"{count / 1e3:.0f} kB"


@contextlib.contextmanager
def full_disk_is_an_error(out: Path) -> Iterator[None]:
    """A full disk or quota while the run folder is written: one line (AuditorError), after
    the staging folder inside this block is removed."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FULL:
            raise
        raise AuditorError(f"cannot write '{out}': {FULL[exc.errno]}; free some space or "
                           "choose another --out (nothing half-written was kept)") from None
