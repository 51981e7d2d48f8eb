"""``auditor index``: one page over every run in a reports folder, newest first, with trends.

A run is a sub-folder holding a summary.json. The page links to each run's report.html by a
relative link, so the reports folder can be moved or served as it is. Single- and multi-label
runs are drawn on trends of their own: a figure of the same name is another measure for each
(a multi-label run's accuracy is the share of images whose whole label set is right), so one
line through both would show a change that is only a change of task.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from auditor.errors import AuditorError, ConfigError
from auditor.runs.baseline import key_figures, read_baseline
from auditor.sections import key_figures as key_figures_declared

INDEX_FILE = "index.html"


def _created(summary: dict) -> dt.datetime:
    try:
        created = dt.datetime.fromisoformat(str(summary.get("created")))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return created if created.tzinfo else created.replace(tzinfo=dt.timezone.utc)


def find_runs(root: Path) -> tuple[list[dict], list[str]]:
    """The runs under ``root`` (its sub-folders with a summary.json), newest first, and the
    folders that were skipped because their summary.json could not be read."""
    runs, skipped = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and not p.is_symlink()):  # a link may lead out of the reports folder
        if not (folder / "summary.json").is_file():
            continue
        try:
            summary = read_baseline(folder, "run")
        except ConfigError as exc:
            skipped.append(f"{folder.name}: {exc}")
            continue
        runs.append({"folder": folder, "summary": summary, "created": _created(summary),
                     "figures": key_figures(summary)})
    runs.sort(key=lambda run: (run["created"], run["folder"].name), reverse=True)
    return runs, skipped


def task_of(summary: dict) -> str:
    """'single-label' or 'multi-label' (a summary written before the key: single-label)."""
    return (summary.get("model") or {}).get("task") or "single-label"


def trend_points(runs: list[dict], name: str) -> list[tuple]:
    """One figure's (created, value, verdict) over ``runs``, oldest to newest."""
    return [(run["created"], run["figures"][name], run["summary"].get("verdict"))
            for run in reversed(runs) if run["figures"][name] is not None]


def trend_series(runs: list[dict], declared) -> list[dict]:
    """Each declared trend figure's points, one series per task among the runs (labelled with
    the task when there is more than one), in the figures' order; series without points are
    left out."""
    tasks = sorted({task_of(run["summary"]) for run in runs})
    series = []
    for figure in (f for f in declared if f.trend):
        for task in tasks:
            points = trend_points([r for r in runs if task_of(r["summary"]) == task],
                                  figure.name)
            if points:
                label = figure.caption if len(tasks) == 1 else f"{figure.caption} ({task} runs)"
                series.append({"label": label, "task": task, "points": points,
                               "percent": figure.percent})
    return series


def _link(target: Path, page: Path) -> str:
    return Path(os.path.relpath(target, page.parent)).as_posix()


def write_index(root: str | Path, out: str | Path | None = None) -> tuple[Path, int]:
    """Write the index page of the runs under ``root``; returns its path and the run count."""
    from auditor.report.render import render_report
    from auditor.runs.staging import write_page

    root = Path(root)
    if not root.is_dir():
        raise AuditorError(f"reports folder '{root}' does not exist; pass the folder that holds "
                           "your run folders (default: reports/)")
    path = Path(out) if out else root / INDEX_FILE
    from auditor.report.figures import trend_plot_uri

    runs, skipped = find_runs(root)
    rows = []
    for run in runs:
        summary, folder = run["summary"], run["folder"]
        report = folder / "report.html"
        rows.append({
            "name": folder.name, "created": summary.get("created", ""), "task": task_of(summary),
            "when": run["created"].strftime("%Y-%m-%d %H:%M UTC"),
            "verdict": summary.get("verdict", ""), "model": summary.get("model", {}),
            "data": summary.get("data", {}), "figures": run["figures"],
            "failed": sum(c.get("status") in ("fail", "error")
                          for c in summary.get("checks", [])),
            "warned": sum(c.get("status") == "warn" for c in summary.get("checks", [])),
            "report": _link(report, path) if report.is_file() else None,
            "summary": _link(folder / "summary.json", path),
            "baseline": (summary.get("baseline") or {}).get("path")})
    declared = key_figures_declared()
    trends = [{"label": t["label"], "uri": trend_plot_uri(t["points"], t["percent"])}
              for t in trend_series(runs, declared)]
    columns = [(f.name, f.caption) for f in declared
               if any(run["figures"][f.name] is not None for run in runs)]
    page = {"root": str(root), "rows": rows, "trends": trends, "skipped": skipped,
            "columns": columns, "tasks": sorted({row["task"] for row in rows}),
            "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    html = render_report(page, "index.html")
    write_page(path, html)
    return path, len(runs)
