"""``auditor index``: one page over every run in a reports folder, newest first, with trends.

A run is a sub-folder holding a summary.json. The page links to each run's report.html by a
relative link, so the reports folder can be moved or served as it is.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from auditor.errors import AuditorError, ConfigError
from auditor.runs.baseline import key_figures, read_baseline

INDEX_FILE = "index.html"
COLUMNS = (("accuracy", "accuracy"), ("mistakes", "mistakes"),
           ("flagged_classes", "Clever Hans suspects"), ("robust_accuracy", "robust accuracy"))
TRENDS = (("accuracy", "accuracy", True), ("flagged_classes", "Clever Hans suspects", False),
          ("robust_accuracy", "robust accuracy (checked epsilon)", True))


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
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
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


def trend_uri(runs: list[dict], name: str, label: str, percent: bool) -> str | None:
    """One figure over time (oldest to newest, points coloured by verdict); None when no run
    has it."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    from auditor.report.figures import figure_uri

    points = [(run["created"], run["figures"][name], run["summary"].get("verdict"))
              for run in reversed(runs) if run["figures"][name] is not None]
    if not points:
        return None
    times, values, verdicts = zip(*points, strict=True)
    values = [100 * v for v in values] if percent else list(values)
    colours = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.plot(times, values, color="#59636e", linewidth=1)
    ax.scatter(times, values, c=[colours.get(v, "#6e7781") for v in verdicts], s=18, zorder=3)
    ax.set_ylabel("%" if percent else "count", fontsize=8)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.tick_params(labelsize=7)
    if not percent:
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_uri(fig)


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
    runs, skipped = find_runs(root)
    rows = []
    for run in runs:
        summary, folder = run["summary"], run["folder"]
        report = folder / "report.html"
        rows.append({
            "name": folder.name, "created": summary.get("created", ""),
            "when": run["created"].strftime("%Y-%m-%d %H:%M UTC"),
            "verdict": summary.get("verdict", ""), "model": summary.get("model", {}),
            "data": summary.get("data", {}), "figures": run["figures"],
            "failed": sum(c.get("status") in ("fail", "error")
                          for c in summary.get("checks", [])),
            "warned": sum(c.get("status") == "warn" for c in summary.get("checks", [])),
            "report": _link(report, path) if report.is_file() else None,
            "summary": _link(folder / "summary.json", path),
            "baseline": (summary.get("baseline") or {}).get("path")})
    trends = [{"label": label, "uri": uri} for name, label, percent in TRENDS
              if (uri := trend_uri(runs, name, label, percent))]
    columns = [(name, label) for name, label in COLUMNS
               if any(run["figures"][name] is not None for run in runs)]
    page = {"root": str(root), "rows": rows, "trends": trends, "skipped": skipped,
            "columns": columns,
            "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    html = render_report(page, "index.html")
    write_page(path, html)
    return path, len(runs)
