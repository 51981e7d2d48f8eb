"""``auditor compare OLD NEW``: two saved runs side by side, without re-running anything.

The regression checks (accuracy and per-class recall against the baseline, no class newly
flagged as a Clever Hans suspect) are re-evaluated from the two summaries with NEW's thresholds,
so the verdict and exit code mean what an audit of NEW with ``--baseline OLD`` would have said.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor.checks.check import Check, exit_code, verdict
from auditor.errors import ConfigError
from auditor.runs.baseline import (
    Run,
    class_difference,
    compare_runs,
    load_run,
    regression_checks,
    task_difference,
)
from auditor.sections import section_module, section_names

COMPARISON_FILE = "comparison.html"


@dataclass
class Comparison:
    old: Run
    new: Run
    block: dict  # what changed: the same structure as summary.json's `baseline` block
    checks: list[Check]  # the regression checks, re-evaluated
    out: Path  # the comparison.html written

    @property
    def verdict(self) -> str:
        return verdict(self.checks)

    def exit_code(self, fail_on: str = "fail") -> int:
        return exit_code(self.checks, fail_on)


def comparison_path(new: Run, out: str | None) -> Path:
    """--out as a file (ending in .html) or a folder; by default beside NEW's summary.json."""
    if out is None:
        return new.folder / COMPARISON_FILE
    path = Path(out)
    return path if path.suffix == ".html" else path / COMPARISON_FILE


def reevaluate(new: dict, old: dict) -> list[Check]:
    """The checks computable from summaries alone, for the sections NEW ran, against OLD."""
    spec = (new.get("config") or {}).get("checks") or {}
    checks = []
    for name in section_names():
        if name in (new.get("timings") or {}):
            module = section_module(name)
            if hasattr(module, "summary_checks"):
                checks += module.summary_checks(new, old, spec)
    return checks + regression_checks(new, old, spec)


def check_rows(new: dict, old: dict) -> list[dict]:
    """Every check of either run: its status and value in each."""
    before = {c["id"]: c for c in old.get("checks", [])}
    now = {c["id"]: c for c in new.get("checks", [])}
    empty = {"status": "", "value": None, "section": ""}
    return [{"id": check_id, "section": (now.get(check_id) or before[check_id])["section"],
             "old": before.get(check_id, empty), "new": now.get(check_id, empty)}
            for check_id in list(now) + [i for i in before if i not in now]]


def compare(old_path: str, new_path: str, out: str | None = None) -> Comparison:
    """Compare two runs (folders or summary.json files) and write the comparison page."""
    from auditor.report.render import render_report
    from auditor.runs.staging import write_page

    old, new = load_run(old_path, "OLD run"), load_run(new_path, "NEW run")
    other_task = task_difference((new.summary.get("model") or {}).get("task") or
                                 "single-label", old.summary)
    if other_task:
        raise ConfigError(f"OLD run '{old.path}' and NEW run '{new.path}' are not comparable: "
                          f"{other_task.replace('the baseline', 'OLD').replace('this one', 'NEW')}"
                          "; compare runs of one task")
    difference = class_difference(new.summary["data"]["class_names"], old.summary)
    if difference:
        named = difference.replace("this run", "NEW").replace("the baseline", "OLD")
        raise ConfigError(f"OLD run '{old.path}' and NEW run '{new.path}' have other classes "
                          f"({named}); compare runs of one task")
    block = compare_runs(new.summary, new.predictions, old)
    checks = reevaluate(new.summary, old.summary)
    path = comparison_path(new, out)
    page = {"old": old.summary, "new": new.summary, "old_path": str(old.path),
            "new_path": str(new.path), "comparison": block, "changed_examples": {},
            "checks": [c.to_dict() for c in checks], "verdict": verdict(checks),
            "checks_caption": "Regression checks, re-evaluated",
            "rows": check_rows(new.summary, old.summary)}
    html = render_report(page, "comparison.html")
    write_page(path, html)
    return Comparison(old, new, block, checks, path)


def text_verdict(result: Comparison) -> str:
    """A few lines for the terminal: what changed, and whether it is a regression."""
    block, new, old = result.block, result.new.summary, result.old.summary
    lines = [f"{new['model']['name']} ({new['model']['sha256'][:12]}, {new['created']}) against "
             f"{old['model']['name']} ({old['model']['sha256'][:12]}, {old['created']})"]
    accuracy = block["key_figures"].get("accuracy")
    if accuracy and accuracy["value"] is not None and accuracy["baseline"] is not None:
        lines.append(f"accuracy {accuracy['value']:.2%} (was {accuracy['baseline']:.2%}, "
                     f"{100 * accuracy['change']:+.2f} pts)")
    examples = block["examples"]
    if examples["comparable"]:
        lines.append(f"{examples['became_wrong']['count']} examples became wrong, "
                     f"{examples['became_right']['count']} became right")
    else:
        lines.append(f"examples not compared: {examples['reason']}")
    broken = [c for c in result.checks if c.status in ("fail", "warn", "error")]
    lines.append(f"verdict: {result.verdict}" + "".join(
        f"\n  {c.status}: {c.id}: {c.message}" for c in broken))
    return "\n".join(lines)
