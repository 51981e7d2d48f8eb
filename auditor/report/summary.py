"""The machine-readable outputs of a run: summary.json (schema auditor.summary/1), summary.md
for a PR comment, and junit.xml with one test case per check."""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.etree import ElementTree as ET

from auditor import __version__
from auditor.checks import Check, verdict

SCHEMA = "auditor.summary/1"
MARKDOWN_LIMIT = 60_000
STATUS_ICON = {"pass": "✅", "warn": "⚠️", "fail": "❌", "error": "💥", "skipped": "⏭️"}


def build_summary(config, handle, dataset, results, checks: list[Check],
                  timings: dict[str, float], created: dt.datetime | None = None) -> dict:
    """The summary.json document: contract keys first, then what each section added."""
    created = created or dt.datetime.now(dt.timezone.utc)
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "tool": {"name": "auditor", "version": __version__},
        "created": created.isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "model": handle.describe(),
        "data": {"source": dataset.source, "n": dataset.n, "class_names": dataset.class_names},
    }
    for result in results:
        for key, value in result.summary.items():
            summary[key] = value
    summary["verdict"] = verdict(checks)
    summary["gated"] = any(c.threshold for c in checks)
    summary["checks"] = [c.to_dict() for c in checks]
    summary["timings"] = timings
    return summary


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def render_markdown(summary: dict) -> str:
    """Verdict, key figures and the checks table, short enough for a PR comment."""
    model, data = summary["model"], summary["data"]
    lines = [
        f"## {STATUS_ICON.get(summary['verdict'], '')} auditor: **{summary['verdict'].upper()}**",
        "",
        f"Model `{model['name']}` ({model['params']:,} parameters, sha256 "
        f"`{model['sha256'][:12]}`) on `{data['source']}` ({data['n']} images).",
        "",
    ]
    accuracy = summary.get("metrics", {}).get("accuracy")
    if accuracy is not None:
        mistakes = summary.get("misclassifications", {}).get("count", "?")
        lines += [f"- Accuracy: **{accuracy:.2%}** ({mistakes} mistakes)"]
    if not summary.get("gated"):
        lines += ["- Nothing was gated: no check has a threshold set."]
    lines += ["", "| status | check | value | baseline | message |", "|---|---|---|---|---|"]
    for check in summary["checks"]:
        message = check["message"].replace("|", "\\|")
        lines.append(f"| {STATUS_ICON.get(check['status'], '')} {check['status']} | "
                     f"`{check['id']}` | {_format(check['value'])} | "
                     f"{_format(check['baseline'])} | {message} |")
    text = "\n".join(lines) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        text = text[: MARKDOWN_LIMIT - 200] + "\n\n…(truncated; see summary.json)\n"
    return text


def render_junit(summary: dict) -> str:
    """One JUnit test case per check; fail and error map to <failure> and <error>."""
    checks = summary["checks"]
    suite = ET.Element("testsuite", name="auditor", tests=str(len(checks)),
                       failures=str(sum(c["status"] == "fail" for c in checks)),
                       errors=str(sum(c["status"] == "error" for c in checks)),
                       skipped=str(sum(c["status"] == "skipped" for c in checks)),
                       time=_format(summary.get("timings", {}).get("total", 0.0)))
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"auditor.{check['section'] or 'run'}",
                             name=check["id"])
        text = f"{check['message']} (value {_format(check['value'])})"
        if check["status"] == "fail":
            ET.SubElement(case, "failure", message=check["message"]).text = text
        elif check["status"] == "error":
            ET.SubElement(case, "error", message=check["message"]).text = text
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=check["message"])
        else:
            ET.SubElement(case, "system-out").text = f"{check['status']}: {text}"
    suites = ET.Element("testsuites")
    suites.append(suite)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)
