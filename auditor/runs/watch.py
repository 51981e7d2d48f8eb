"""``auditor watch DIR``: audit each new checkpoint in a folder, against the one before it.

A checkpoint is known by its content hash. The ledger ``watch.json`` in the reports root records
each checkpoint audited (hash, file, size and modification time, its run folder, verdict and exit
code, or the error that stopped it), so that a second call audits nothing twice and a file is
hashed again only when its size or modification time changed. A checkpoint whose size or
modification time changes between two looks a few seconds apart is still being written: it is
left for the next call.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor.config.spec import AuditConfig
from auditor.errors import AuditorError, Interrupted, ModelError

CHECKPOINT_SUFFIXES = (".keras", ".h5")
LEDGER_FILE = "watch.json"
LEDGER_SCHEMA = "auditor.runs.watch/1"


@dataclass
class Audited:
    """One checkpoint handled by a watch pass."""

    file: Path
    folder: Path | None
    exit_code: int
    message: str


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
    return list(ledger.get("checkpoints", []))


def write_ledger(root: Path, entries: list[dict]) -> None:
    from auditor.runs.staging import write_text_atomically

    write_text_atomically(root / LEDGER_FILE, json.dumps(
        {"schema": LEDGER_SCHEMA, "checkpoints": entries}, indent=2))


def known_hashes(root: Path, entries: list[dict]) -> set[str]:
    """Checkpoints already audited: in the ledger, or the model of a run already in ``root``."""
    from auditor.runs.history import find_runs

    runs, _ = find_runs(root)
    return {e["sha256"] for e in entries} | {
        run["summary"].get("model", {}).get("sha256") for run in runs}


def previous_run(entries: list[dict], root: Path) -> str | None:
    """The run folder of the last checkpoint audited successfully: the next one's baseline."""
    for entry in reversed(entries):
        if entry.get("folder") and (root / entry["folder"] / "summary.json").is_file():
            return str(root / entry["folder"])
    return None


def watch_once(folder: Path, root: Path, configure: Callable[..., AuditConfig],
               settle: float = 2.0, say: Callable[[str], None] = print) -> list[Audited]:
    """Audit every settled checkpoint in ``folder`` not audited yet, oldest first, each against
    the previous one; then rewrite the index. ``configure(model=, out=, baseline=)`` builds
    the audit's config (the spec and flags of the command line)."""
    from auditor.inputs.models import file_sha256
    from auditor.pipeline import run_audit
    from auditor.runs.history import write_index

    if not folder.is_dir():
        raise AuditorError(f"checkpoint folder '{folder}' does not exist; pass the folder your "
                           "training job saves .keras/.h5 checkpoints into")
    if root.exists() and not root.is_dir():
        raise AuditorError(f"reports root '{root}' is a file; pass --out a folder for the "
                           "watch's run folders")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditorError(f"cannot create the reports root '{root}' ({exc.strerror or exc}); "
                           "pass --out a folder you can write to") from None
    entries = read_ledger(root)
    seen = {(e["file"], e["size"], e["mtime_ns"]): e["sha256"] for e in entries}
    known = known_hashes(root, entries)
    ready, busy = settled(folder, settle)
    for path in busy:
        say(f"{path.name}: still being written; left for the next look")
    done: list[Audited] = []
    for path in ready:
        stat = path.stat()
        sha = seen.get((str(path), stat.st_size, stat.st_mtime_ns)) or file_sha256(path)
        if sha in known:
            continue
        known.add(sha)
        run_folder = f"{path.stem}-{sha[:12]}"
        entry = {"sha256": sha, "file": str(path), "size": stat.st_size,
                 "mtime_ns": stat.st_mtime_ns,
                 "audited": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        baseline = previous_run(entries, root)
        config = configure(model=str(path), out=str(root / run_folder),
                           **({"baseline": baseline} if baseline else {}))
        try:
            outcome = run_audit(config)
        except ModelError as exc:  # this checkpoint is broken; bad data or spec stop the watch
            entry.update(folder=None, verdict="error", exit_code=2, message=str(exc))
            done.append(Audited(path, None, 2, str(exc)))
            say(f"{path.name}: error: {exc}")
        else:
            verdict = outcome.summary["verdict"]
            against = f" against {Path(baseline).name}" if baseline else ""
            entry.update(folder=run_folder, verdict=verdict, exit_code=outcome.exit_code,
                         message=f"{verdict}{against}")
            done.append(Audited(path, outcome.out, outcome.exit_code, entry["message"]))
            say(f"{path.name}: {verdict}{against} -> {outcome.page}")
        entries.append(entry)
        write_ledger(root, entries)
        write_index(root)
    if not done:
        write_index(root)
    return done


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
