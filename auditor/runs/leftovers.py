"""What a run leaves while it works, and the cleaning of what dead runs left.

A run's staging folder (``.NAME.partial-*``), its temporary files (``.NAME.PID.partial``) and
its scratch folder for temporary files (``auditor-run-*`` in the system's temporary folder) are
each *claimed*: an advisory lock (``fcntl.flock``) held by the live process on an owner file
inside the folder, or on the file itself. The kernel drops the lock when the process ends,
however it ends (``kill -9``, the OOM killer), so the next run can tell a dead run's leftovers
from a live run's work without trusting process ids or clocks: it removes only what carries the
owner file (or the name) auditor gives it and whose lock it can take.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".auditor-owner.json"
OWNER_SCHEMA = "auditor.owner/1"
STAGING = re.compile(r"^\..+\.partial-[A-Za-z0-9_]+$")  # tempfile.mkdtemp's suffix
PARTIAL_FILE = re.compile(r"^\..+\.\d+\.partial$")  # write_text_atomically's temporary file
SCRATCH_PREFIX = "auditor-run-"
SCRATCH = re.compile(rf"^{SCRATCH_PREFIX}[A-Za-z0-9_]+$")

_HELD: dict[Path, int] = {}  # claimed folder -> the open descriptor that holds its lock


def claim(folder: Path) -> None:
    """Mark ``folder`` (just created by this process) as this live run's: an owner file, locked
    for as long as the process lives or until ``release``."""
    owner = folder / OWNER_FILE
    descriptor = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    os.write(descriptor, json.dumps({"schema": OWNER_SCHEMA, "pid": os.getpid(),
                                     "host": socket.gethostname(),
                                     "started": time.time()}).encode())
    _HELD[folder] = descriptor


def release(folder: Path) -> None:
    """The owner file goes (a finished run folder does not list it) and the lock with it."""
    descriptor = _HELD.pop(folder, None)
    with contextlib.suppress(FileNotFoundError):
        (folder / OWNER_FILE).unlink()
    if descriptor is not None:
        os.close(descriptor)


def held() -> list[Path]:
    """The folders this process has claimed and not released: what an interrupted run removes
    on its way out, whatever stage of its work the signal cut."""
    return list(_HELD)


def _lockable(path: Path) -> bool:
    """Whether no live process holds ``path``'s lock (taken and dropped at once)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return True


def _dead_claim(folder: Path) -> bool:
    """A folder claimed by auditor whose owner is gone: not a link, an owner file of ours, its
    lock free."""
    owner = folder / OWNER_FILE
    if folder.is_symlink() or not folder.is_dir() or owner.is_symlink() or not owner.is_file():
        return False
    try:
        record = json.loads(owner.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("schema") != OWNER_SCHEMA:
        return False
    return _lockable(owner) and folder not in _HELD


def sweep(parent: Path) -> list[str]:
    """Remove the staging folders and temporary files that dead runs left in ``parent``;
    returns their names, for the log."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for path in entries:
        if (STAGING.match(path.name) or SCRATCH.match(path.name)) and _dead_claim(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        elif (PARTIAL_FILE.match(path.name) and path.is_file() and not path.is_symlink()
              and _lockable(path)):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed


@contextlib.contextmanager
def locked_partial(path: Path):
    """Open ``path`` (a new temporary file) for writing, locked while it is written: a dead
    writer's file is then told apart by ``sweep``."""
    with open(path, "w", encoding="utf-8") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        yield file


def sweep_dead_runs(out_parent: Path) -> list[str]:
    """``sweep`` beside a run's --out and in the temporary folder that holds the scratch
    folders (done once the inputs are known good, so that an error stays one line)."""
    base = Path(tempfile.gettempdir())
    if SCRATCH.match(base.name):
        base = base.parent
    return sweep(out_parent) + sweep(base)


def process_scratch() -> Path:
    """A claimed scratch folder for this process's temporary files (TensorFlow's autograph
    modules, a worker's throw-away report), made the default temporary folder."""
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=tempfile.gettempdir()))
    claim(scratch)
    tempfile.tempdir = str(scratch)
    return scratch


def remove_scratch(scratch: Path) -> None:
    """The process's scratch folder, at exit (after TensorFlow removed its own files)."""
    release(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    if tempfile.tempdir == str(scratch):
        tempfile.tempdir = None
