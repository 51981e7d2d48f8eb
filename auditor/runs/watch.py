"""``auditor watch DIR``: audit each new checkpoint in a folder, against the one before it.

A checkpoint is known by its content hash. The ledger ``watch.json`` in the reports root records
each checkpoint audited (hash, file, size and modification time, its run folder, verdict and exit
code, or the error that stopped it), so that a second call audits nothing twice and a file is
hashed again only when its size or modification time changed. A checkpoint whose size or
modification time changes between two looks a few seconds apart is still being written: it is
left for the next call. A file whose content changed since its ledger entry is audited again.

Watches over one reports root (two cron jobs that overlap) share the work: an advisory lock
beside the ledger (``.watch.lock``) guards reading it and claiming a checkpoint, and a claimed
checkpoint (a lock on ``.RUN.claim``, held while it is audited) is left to its watch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from auditor.config.spec import AuditConfig
from auditor.errors import AuditorError, Interrupted, ModelError

CHECKPOINT_SUFFIXES = (".keras", ".h5")
LEDGER_FILE = "watch.json"
LEDGER_SCHEMA = "auditor.runs.watch/1"
LOCK_FILE = ".watch.lock"


@dataclass
class Audited:
    """One checkpoint handled by a watch pass."""

    file: Path
    folder: Path | None
    exit_code: int
    message: str
    summary: dict | None = None  # the run's summary.json, when it ran


def look(folder: Path) -> dict[Path, tuple[int, int]]:
    """Size and modification time of every checkpoint file in ``folder`` (not recursive)."""
    files = {}
    for path in folder.iterdir():
        if path.suffix in CHECKPOINT_SUFFIXES and path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            files[path] = (stat.st_size, stat.st_mtime_ns)
    return files


def settled(folder: Path, settle: float) -> tuple[list[Path], list[Path]]:
    """Checkpoints that kept their size and modification time over ``settle`` seconds, oldest
    first, and those still changing (being written) or empty."""
    first = look(folder)
    if settle > 0:
        time.sleep(settle)
    second = look(folder)
    ready = [p for p, seen in second.items() if first.get(p) == seen and seen[0] > 0]
    busy = [p for p in second if p not in ready]
    return sorted(ready, key=lambda p: (second[p][1], p.name)), sorted(busy)


def read_ledger(root: Path) -> list[dict]:
    """The ledger's entries; it is untrusted like any file read (run folders travel), so an
    entry must look like one auditor writes: its run folder a plain name inside ``root``."""
    path = root / LEDGER_FILE
    if not path.is_file():
        return []
    try:
        ledger = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AuditorError(f"watch ledger '{path}' is not valid JSON ({exc}); fix or delete it "
                           "(deleting it re-audits every checkpoint)") from None
    if not isinstance(ledger, dict) or ledger.get("schema") != LEDGER_SCHEMA:
        raise AuditorError(f"'{path}' is not an auditor watch ledger; auditor never replaces a "
                           "file it did not write: choose another --out for the reports")
    entries = ledger.get("checkpoints", [])
    bad = next((i for i, e in enumerate(entries if isinstance(entries, list) else [None])
                if not _valid_entry(e)), None)
    if bad is not None:
        raise AuditorError(f"watch ledger '{path}' has an entry auditor did not write (number "
                           f"{bad + 1}: a run folder must be a plain name inside the reports "
                           "root); fix or delete the ledger (deleting it re-audits every "
                           "checkpoint)")
    return list(entries)


def _valid_entry(entry: object) -> bool:
    from auditor.runs.staging import plain_name

    if not isinstance(entry, dict):
        return False
    kinds = {"sha256": str, "file": str, "size": int, "mtime_ns": int}
    if not all(isinstance(entry.get(key), kind) for key, kind in kinds.items()):
        return False
    folder = entry.get("folder")
    return folder is None or plain_name(folder) and "/" not in folder


@contextlib.contextmanager
def ledger_lock(root: Path) -> Iterator[None]:
    """An advisory lock beside the ledger (``fcntl.flock``), held while a watch reads the
    ledger and claims a checkpoint, or records one: concurrent watches over one reports root
    share the work instead of doing it twice."""
    descriptor = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def claim(root: Path, run_folder: str) -> int | None:
    """Claim one checkpoint's audit (under ``ledger_lock``): a lock on its claim file, held by
    the live watch auditing it; None when another live watch holds it."""
    descriptor = os.open(root / f".{run_folder}.claim", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def release(root: Path, run_folder: str, descriptor: int) -> None:
    """Drop a claim (under ``ledger_lock``, so that no other watch is opening its file)."""
    with contextlib.suppress(FileNotFoundError):
        (root / f".{run_folder}.claim").unlink()
    os.close(descriptor)


def write_ledger(root: Path, entries: list[dict]) -> None:
    from auditor.runs.staging import write_text_atomically

    write_text_atomically(root / LEDGER_FILE, json.dumps(
        {"schema": LEDGER_SCHEMA, "checkpoints": entries}, indent=2))


def due(path: Path, sha: str, root: Path, entries: list[dict]) -> bool:
    """Whether a checkpoint's content is still to be audited. A file the ledger knows is due
    when its content changed since (a half-copied file first seen as an error is audited once
    its finished copy is there, even when that matches another checkpoint); a new file when
    its content was not audited yet, under any name, in the ledger or in a run under ``root``."""
    from auditor.runs.history import find_runs

    mine = [e for e in entries if e["file"] == str(path)]
    if mine:
        return mine[-1]["sha256"] != sha
    runs, _ = find_runs(root)
    return sha not in {e["sha256"] for e in entries} | {
        run["summary"].get("model", {}).get("sha256") for run in runs}


def previous_run(entries: list[dict], root: Path) -> str | None:
    """The run folder of the last checkpoint audited successfully: the next one's baseline."""
    for entry in reversed(entries):
        if entry.get("folder") and (root / entry["folder"] / "summary.json").is_file():
            return str(root / entry["folder"])
    return None


def open_root(root: Path) -> list[dict]:
    """The reports root, created if needed, and its ledger; a root that is a file, cannot be
    made, or holds a ledger auditor did not write is refused before any work."""
    if root.exists() and not root.is_dir():
        raise AuditorError(f"reports root '{root}' is a file; pass --out a folder for the "
                           "watch's run folders")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditorError(f"cannot create the reports root '{root}' ({exc.strerror or exc}); "
                           "pass --out a folder you can write to") from None
    with ledger_lock(root):
        return read_ledger(root)


def watch_once(folder: Path, root: Path, configure: Callable[..., AuditConfig],
               settle: float = 2.0, say: Callable[[str], None] = print) -> list[Audited]:
    """Audit every settled checkpoint in ``folder`` not audited yet, oldest first, each against
    the previous one; then rewrite the index. ``configure(model=, out=, baseline=)`` builds
    the audit's config (the spec and flags of the command line). Several watches may run over
    one reports root at once: each claims a checkpoint before auditing it."""
    from auditor.inputs.models import file_sha256
    from auditor.runs.history import write_index

    if not folder.is_dir():
        raise AuditorError(f"checkpoint folder '{folder}' does not exist; pass the folder your "
                           "training job saves .keras/.h5 checkpoints into")
    entries = open_root(root)
    seen = {(e["file"], e["size"], e["mtime_ns"]): e["sha256"] for e in entries}
    ready, busy = settled(folder, settle)
    for path in busy:
        say(f"{path.name}: still being written; left for the next look")
    done: list[Audited] = []
    for path in ready:
        stat = path.stat()
        sha = seen.get((str(path), stat.st_size, stat.st_mtime_ns)) or file_sha256(path)
        run_folder = run_folder_of(path, sha)
        with ledger_lock(root):
            entries = read_ledger(root)
            if not due(path, sha, root, entries):
                continue
            held = claim(root, run_folder)
            baseline = previous_run(entries, root)
        if held is None:
            say(f"{path.name}: being audited by another watch; left to it")
            continue
        try:
            done.append(audit_checkpoint(path, root, configure, sha=sha, baseline=baseline,
                                         say=say))
        finally:
            with ledger_lock(root):
                release(root, run_folder, held)
    if not done:
        with ledger_lock(root):
            write_index(root)
    return done


def run_folder_of(path: Path, sha: str) -> str:
    """A checkpoint's run folder under the reports root: its name and its content's hash."""
    from auditor.inputs.models import model_name

    return f"{model_name(str(path))}-{sha[:12]}"


def audit_checkpoint(path: Path, root: Path, configure: Callable[..., AuditConfig], *,
                     sha: str, baseline: str | None, say: Callable[[str], None] = print,
                     facts: dict | None = None, not_run: dict[str, str] | None = None,
                     index: bool = True, handle=None, held: tuple[int, int] | None = None,
                     baseline_run=None) -> Audited:
    """Audit one checkpoint file into ``root/<stem>-<sha[:12]>`` against ``baseline`` (a run
    folder, or None), record it in the ledger (with ``facts``, such as the epoch it was saved
    at) and rewrite the index: what ``watch`` does per checkpoint, and the Keras callback per
    audited epoch (``not_run``: the sections its overhead budget left out, and why; it writes
    the index once, when training ends: ``index=False``; ``handle``: its one copy of the model,
    holding the checkpoint's weights, see ``run_audit``; ``held``: the weights are in the
    handle only, ``path`` is ``memory:NAME`` and ``held`` the (bytes, time in ns) of the
    weights, recorded as a file's size and modification time; ``baseline_run``: the baseline
    as already read, see ``run_audit``). A checkpoint that cannot be
    loaded is recorded as an error, not raised; bad data or spec stop the watch (nothing
    recorded). ``facts`` add to the entry and never replace what it records of the checkpoint."""
    from auditor.pipeline import run_audit
    from auditor.runs.history import write_index

    if held is None:
        stat = path.stat()
        held = stat.st_size, stat.st_mtime_ns
    run_folder = run_folder_of(path, sha)
    entry = {**(facts or {}), "sha256": sha, "file": str(path), "size": held[0],
             "mtime_ns": held[1],
             "audited": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    with ledger_lock(root):
        count = len(read_ledger(root))
    step = (facts or {}).get("epoch", count + 1)  # trackers' step: epoch or checkpoint
    config = configure(model=str(path), out=str(root / run_folder), tracker_step=step,
                       **({"baseline": baseline} if baseline else {}))
    try:
        outcome = run_audit(config, not_run, handle, baseline_run if baseline else None)
    except ModelError as exc:  # this checkpoint is broken
        entry.update(folder=None, verdict="error", exit_code=2, message=str(exc))
        audited = Audited(path, None, 2, str(exc))
        say(f"{path.name}: error: {exc}")
    else:
        verdict = outcome.summary["verdict"]
        against = f" against {Path(baseline).name}" if baseline else ""
        entry.update(folder=run_folder, verdict=verdict, exit_code=outcome.exit_code,
                     message=f"{verdict}{against}")
        audited = Audited(path, outcome.out, outcome.exit_code, entry["message"],
                          outcome.summary)
        say(f"{path.name}: {verdict}{against} -> {outcome.page}")
    with ledger_lock(root):
        write_ledger(root, [*read_ledger(root), entry])
        if index:
            write_index(root)
    return audited


def watch(folder: Path, root: Path, configure: Callable[..., AuditConfig], *, once: bool,
          interval: float = 60.0, settle: float = 2.0,
          say: Callable[[str], None] = print) -> int:
    """Watch once (for cron) or poll every ``interval`` seconds until interrupted; returns the
    worst exit code of the audits run (0 when nothing new was found)."""
    worst = 0
    while True:
        done = watch_once(folder, root, configure, settle, say)
        if not done and once:
            say(f"nothing new in {folder}")
        worst = max([worst] + [item.exit_code for item in done])
        if once:
            return worst
        try:
            time.sleep(interval)
        except (KeyboardInterrupt, Interrupted):
            return worst
