"""Write a run's folder atomically, and never replace anything the tool did not write itself.

Everything goes to a hidden sibling ``.NAME.partial-*`` that moves into place only when the run
succeeded. The finished folder holds a marker, ``.auditor-run.json``, listing every file the run
wrote. An existing ``--out`` is replaced only when it carries that marker and holds nothing but
the files it lists; any other existing path (a file, a folder of the user's, an earlier run the
user added files to) is refused before any work starts.

The marker is untrusted input (run folders travel as CI artifacts and on shared drives): only
plain names inside the folder are accepted, never an absolute path, ``..``, or a link, so that
replacing a run can never delete anything outside it. The staging folder is claimed while the
run lives (``runs/leftovers.py``): a run killed outright leaves it to the next run to remove.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from auditor.errors import ConfigError, Interrupted
from auditor.runs import disk, leftovers

MARKER = ".auditor-run.json"
MARKER_SCHEMA = "auditor.run/1"
GENERATOR = '<meta name="generator" content="auditor">'  # in the head of every page it writes


def plain_name(name: object) -> bool:
    """A relative POSIX path of plain names: no absolute path, no '.', '..' or empty part, no
    backslash or NUL (what a marker or ledger written by auditor holds, and nothing else)."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    return (not PurePosixPath(name).is_absolute()
            and all(part not in ("", ".", "..") for part in name.split("/")))


def read_marker(folder: Path) -> tuple[list[str] | None, str]:
    """The files an earlier auditor run in ``folder`` wrote (its marker's list), or None and
    why not."""
    marker_path = Path(folder) / MARKER
    if marker_path.is_symlink():
        return None, f"its {MARKER} is a link"
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, ""
    files = marker.get("files") if isinstance(marker, dict) else None
    if marker.get("schema") != MARKER_SCHEMA or not isinstance(files, list):
        return None, ""
    unsafe = [f for f in files if not plain_name(f)]
    if unsafe:
        return None, (f"its {MARKER} lists {str(unsafe[0])[:200]!r}, which is not a plain name "
                      "inside the folder")
    return [str(f) for f in files], ""


def run_files(folder: Path) -> list[str] | None:
    """The files an earlier auditor run in ``folder`` wrote (its marker's list), or None when
    ``folder`` carries no valid marker."""
    return read_marker(folder)[0]


def _contents(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, as relative POSIX paths (folders end in /)."""
    found = set()
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        found.add(relative + "/" if path.is_dir() and not path.is_symlink() else relative)
    return found


def check_out(final: Path, inputs: dict[str, str] | None = None, images: int = 0) -> None:
    """Refuse an output path the run may not write, before any work: one that exists and is not
    an unchanged earlier auditor run, one that would hold one of the run's ``inputs`` (label ->
    path), one whose nearest existing parent is a file or cannot be written in, one whose name
    is too long for the file system, or one without room for a run folder of ``images``."""
    final = Path(final)
    try:
        resolved = final.resolve()
    except OSError as exc:  # a name too long for the system, a loop of links
        raise ConfigError(f"--out '{str(final)[:60]}' cannot be used ({exc.strerror or exc}); "
                          "choose another --out") from None
    disk.check_names(final)
    for label, source in (inputs or {}).items():
        path = Path(source.partition(":")[2] if source.startswith("npz:") else source)
        if path.exists() and resolved in (path.resolve(), *path.resolve().parents):
            raise ConfigError(f"--out '{final}' would replace the folder holding the {label} "
                              f"'{source}'; choose an --out folder of its own")
    if final.is_symlink() or final.exists():
        _check_replaceable(final)
        disk.check_room(final, images)
        return
    ancestor = final.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out '{final}' is under '{ancestor}', which is a file; choose an "
                          "--out folder whose parents are folders")
    try:  # a real probe: permissions, read-only file systems and quotas all show up here
        with Interrupted.deferred():  # made and removed at once, whenever a signal comes
            os.rmdir(tempfile.mkdtemp(prefix=".auditor-probe-", dir=ancestor))
    except OSError as exc:
        raise ConfigError(f"cannot write in '{ancestor}' ({exc.strerror or exc}); choose an "
                          "--out folder you can write to") from None
    disk.check_room(final, images)


def _check_replaceable(final: Path) -> None:
    if final.is_symlink() or not final.is_dir():
        raise ConfigError(f"--out '{final}' is an existing file, not a run folder; auditor never "
                          "replaces a file it did not write: choose another --out")
    files, why = read_marker(final)
    if files is None:
        because = f" ({why})" if why else ""
        raise ConfigError(f"--out '{final}' is an existing folder that is not an auditor "
                          f"run{because}; auditor never replaces a folder it did not write: "
                          "choose a new --out")
    links = sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_symlink())
    if links:
        raise ConfigError(f"--out '{final}' holds the link '{links[0]}', which auditor never "
                          "writes; auditor never replaces a folder it did not write: choose a "
                          "new --out")
    written = set(files) | {MARKER} | {
        parent.as_posix() + "/" for f in files for parent in Path(f).parents if str(parent) != "."}
    extra = sorted(_contents(final) - written)
    if extra:
        raise ConfigError(f"--out '{final}' is an earlier auditor run, but it also holds "
                          f"'{extra[0]}'{f' and {len(extra) - 1} more' if len(extra) > 1 else ''}"
                          ", which auditor did not write; move them out or choose a new --out")


def _mark(folder: Path) -> None:
    """Write the marker listing every file of the finished run (the marker itself excluded)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    (folder / MARKER).write_text(json.dumps({"schema": MARKER_SCHEMA, "files": files}, indent=2),
                                 encoding="utf-8")


def _remove_run(folder: Path) -> None:
    """Delete an earlier run file by file, as its marker lists them: nothing else is touched,
    and nothing outside ``folder`` (no name leaves it, no link is followed)."""
    inside = folder.resolve()
    for name in [*(run_files(folder) or []), MARKER]:
        path = folder / name
        if path.parent.resolve() != inside / PurePosixPath(name).parent or path.is_symlink():
            continue  # a link on the way: what it points to is not the run's
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            path.unlink()
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()),
                      reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


@contextlib.contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``final`` only if the block succeeds.

    On any error or interruption the temporary folder is removed (and the parent too, if this
    call created it and it stayed empty), so a failed run leaves nothing half-written. An
    earlier run at ``final`` is swapped out atomically, checked again just before.
    """
    final = Path(final)
    check_out(final)
    parent = final.parent
    created = [p for p in (parent, *parent.parents) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    staging = None
    try:
        with Interrupted.deferred():  # made and claimed at once: no signal comes between
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=parent))
            leftovers.claim(staging)
        staging.chmod(0o777 & ~umask)  # mkdtemp's private 0700 would surprise a reader
        yield staging
        Interrupted.raise_if_pending()
        leftovers.release(staging)
        _mark(staging)
        old = None
        if final.exists() or final.is_symlink():
            _check_replaceable(final)
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=parent))
            os.replace(final, old / final.name)
        try:
            os.replace(staging, final)
        except BaseException:
            if old is not None:  # put the earlier run back where it was
                os.replace(old / final.name, final)
                old.rmdir()
            raise
    except BaseException:
        if staging is not None:
            leftovers.release(staging)
            shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first; only those this call made, only if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    if old is not None:
        _remove_run(old / final.name)
        with contextlib.suppress(OSError):
            old.rmdir()


def write_text_atomically(path: Path, text: str) -> None:
    """Write one file so that a reader sees the old version or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with disk.full_disk_is_an_error(path), leftovers.locked_partial(partial) as file:
            file.write(text)
            file.flush()
            os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_page(path: Path, html: str) -> None:
    """Write an HTML page (index, comparison) unless ``path`` holds something auditor did not
    write; a page written into a run folder joins that run's marker."""
    path = Path(path)
    if path.is_symlink() or path.exists() and not _is_our_page(path):
        raise ConfigError(f"'{path}' exists and auditor did not write it; auditor never "
                          "replaces a file it did not write: choose another --out")
    write_text_atomically(path, html)
    files = run_files(path.parent)
    if files is not None and path.name not in files:
        write_text_atomically(path.parent / MARKER, json.dumps(
            {"schema": MARKER_SCHEMA, "files": sorted([*files, path.name])}, indent=2))


def _is_our_page(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return path.is_file() and GENERATOR in file.read(4096)
    except OSError:
        return False
