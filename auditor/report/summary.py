"""The machine-readable outputs of a run: summary.json (schema auditor.summary/1), summary.md
for a PR comment, and junit.xml with one test case per check."""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from auditor import __version__
from auditor.checks.check import Check, deciding, verdict
from auditor.checks.declared import NOT_IN_VERDICT
from auditor.steps.shared import plain

SCHEMA = "auditor.summary/1"
SCHEMA_FILE = Path(__file__).with_name("summary.schema.json")  # its JSON Schema (docs/summary.md)
MARKDOWN_LIMIT = 60_000
MARKDOWN_CHECKS = 150  # rows of the checks table; the rest are in summary.json
MARKDOWN_METRICS = 100  # rows of the changed-metrics table
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
        "data": {"source": dataset.source, "n": dataset.n, "class_names": dataset.class_names,
                 "skipped": dataset.skipped},
    }
    if dataset.class_mapping:
        summary["data"]["class_mapping"] = dataset.class_mapping
    if handle.distribution is not None:
        summary["distribution"] = handle.distribution.describe()
    for result in results:  # read-only once returned (SectionResult.frozen): plain copies
        for key, value in result.summary.items():
            summary[key] = plain(value)
    skipped = {r.name: r.not_applicable for r in results if r.not_applicable is not None}
    if skipped:
        summary["not_applicable"] = skipped
    summary["verdict"] = verdict(checks)
    summary["gated"] = any(c.gated for c in deciding(checks))
    summary["checks"] = [c.to_dict() for c in checks]
    summary["timings"] = timings
    return summary


def shown(value: Any) -> str:
    """A value as a table cell shows it: numbers to 4 digits, lists joined, None blank."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "none"
    return "" if value is None else str(value)


def signed(value: float | None, percent: bool = False) -> str:
    """A change with its sign; in points when the values are fractions shown as percentages."""
    if value is None:
        return ""
    return f"{100 * value:+.2f} pts" if percent else f"{value:+.4g}"


def _figure(value: Any, percent: bool) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2%}" if percent else shown(value)


# Markdown that a name or message could use to change the PR comment: raw HTML (escaped as
# entities), and the characters of emphasis, links, code and tables (backslash-escaped).
_MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]|~])")
# Characters XML 1.0 cannot hold at all, even escaped: a class name with one breaks junit.xml.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _cell(text: Any) -> str:
    """Free text (messages, class names) as Markdown shows it literally, on one line."""
    text = html.escape(str(text), quote=False).replace("\r", " ").replace("\n", " ")
    return _MARKDOWN_ACTIVE.sub(r"\\\1", text)


def _code(text: Any, table: bool = False) -> str:
    """A code span that holds ``text`` whatever backticks it contains (HTML is not rendered
    inside code spans; in a table, | still needs its backslash)."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    if table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _xml(text: Any) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def capitalize_first(text: str) -> str:
    """'robust accuracy' -> 'Robust accuracy' (str.capitalize would lower 'Clever Hans')."""
    return text[:1].upper() + text[1:]


def _key_figures_md(summary: dict) -> list[str]:
    from auditor.sections import key_figures

    declared = {figure.name: figure for figure in key_figures()}
    comparison = summary.get("baseline")
    if comparison:
        lines = ["| figure | value | baseline | change |", "|---|---|---|---|"]
        for name, delta in comparison["key_figures"].items():
            figure = declared[name]
            lines.append(f"| {capitalize_first(figure.caption)} | "
                         f"{_figure(delta['value'], figure.percent)} | "
                         f"{_figure(delta['baseline'], figure.percent)} | "
                         f"{signed(delta['change'], figure.percent)} |")
        return lines
    lines = ["| figure | value |", "|---|---|"]
    for figure in declared.values():
        value = figure.value(summary)
        if value is not None:
            lines.append(f"| {capitalize_first(figure.caption)} | "
                         f"{_figure(value, figure.percent)} |")
    return lines


def _examples_md(kind: str, block: dict, limit: int = 20) -> str:
    listed = ", ".join(f"#{e['index']} {_cell(e['baseline_pred'])} → {_cell(e['pred'])} "
                       f"(true {_cell(e['true'])})"
                       for e in block["examples"][:limit])
    more = " …" if block["count"] > limit else ""
    return f"- **{block['count']}** examples {kind}" + (f": {listed}{more}" if listed else "")


def _baseline_md(comparison: dict, limit: int = 10) -> list[str]:
    model = comparison["model"]
    lines = ["", "### Changes since the baseline", "",
             f"Baseline {_code(comparison['path'])}: model {_code(model['name'])} (sha256 "
             f"`{(model['sha256'] or '')[:12]}`), created {comparison['created']}, verdict "
             f"{comparison['verdict']}.", ""]
    examples = comparison["examples"]
    if examples.get("comparable"):
        lines += [_examples_md("became wrong", examples["became_wrong"]),
                  _examples_md("became right", examples["became_right"])]
    else:
        lines += [f"- Examples not compared: {examples['reason']}."]
    for kind, word in (("worse", "lower"), ("better", "higher")):
        moves = comparison["classes"][kind]
        if moves:
            listed = ", ".join(f"'{_cell(m['class'])}' {m['baseline']:.1%} → {m['recall']:.1%}"
                               for m in moves[:limit])
            more = f" and {len(moves) - limit} more" if len(moves) > limit else ""
            lines.append(f"- Classes with {word} recall: {listed}{more}")
    flagged = comparison.get("flagged_classes")
    if flagged:
        lines.append(f"- Clever Hans suspects newly flagged: {_cell(shown(flagged['new']))}; "
                     f"no longer flagged: {_cell(shown(flagged['gone']))}")
    moved = [(path, d) for path, d in comparison["metrics"].items() if d["change"]]
    moved.sort(key=lambda item: -abs(item[1]["change"]))
    if moved:
        lines += ["", f"<details><summary>Metrics that changed ({len(moved)})</summary>", "",
                  "| metric | value | baseline | change |", "|---|---|---|---|"]
        lines += [f"| {_code(path, table=True)} | {shown(d['value'])} | {shown(d['baseline'])} | "
                  f"{signed(d['change'])} |" for path, d in moved[:MARKDOWN_METRICS]]
        if len(moved) > MARKDOWN_METRICS:
            lines.append(f"\n{len(moved) - MARKDOWN_METRICS} more in summary.json.")
        lines += ["", "</details>"]
    return lines


def _checks_md(checks: list[dict], title: str, limit: int) -> list[str]:
    """One checks table under its heading, with the count of each status."""
    counts = {status: sum(c["status"] == status for c in checks)
              for status in ("fail", "error", "warn", "pass", "skipped")}
    summary_line = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    lines = [f"### {title} ({summary_line or 'none'})", "",
             "| status | check | value | baseline | change | message |",
             "|---|---|---|---|---|---|"]
    for check in checks[:limit]:
        was = check.get("baseline_status")
        was = f" (was {was})" if was and was != check["status"] else ""
        lines.append(f"| {STATUS_ICON.get(check['status'], '')} {check['status']}{was} | "
                     f"{_code(check['id'], table=True)} | {_cell(shown(check['value']))} | "
                     f"{_cell(shown(check['baseline']))} | {signed(check.get('change'))} | "
                     f"{_cell(check['message'])} |")
    if len(checks) > limit:
        lines.append(f"\n{len(checks) - limit} more checks in summary.json.")
    return lines


def render_markdown(summary: dict) -> str:
    """Verdict, key figures, the checks table and what changed since the baseline, short
    enough for a PR comment (under 60,000 characters)."""
    model, data, checks = summary["model"], summary["data"], summary["checks"]
    lines = [
        f"## {STATUS_ICON.get(summary['verdict'], '')} auditor: **{summary['verdict'].upper()}**",
        "",
        f"Model {_code(model['name'])} ({model['params']:,} parameters, sha256 "
        f"`{model['sha256'][:12]}`) on {_code(data['source'])} ({data['n']} images).",
        "",
    ]
    lines += _key_figures_md(summary)
    lines += [""]
    if not summary.get("gated"):
        lines += ["> Nothing was gated: no check had a threshold it could apply (set "
                  "`[checks.ID]` bounds in the spec, or pass `--baseline`).", ""]
    model_checks = [c for c in checks if c.get("in_verdict", True)]
    apart = [c for c in checks if not c.get("in_verdict", True)]
    lines += _checks_md(model_checks, "Checks", MARKDOWN_CHECKS)
    if apart:
        lines += ["", *_checks_md(apart, f"Explanation checks ({NOT_IN_VERDICT})",
                                  max(0, MARKDOWN_CHECKS - len(model_checks)))]
    if summary.get("baseline"):
        lines += _baseline_md(summary["baseline"])
    text = "\n".join(lines) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        text = text[: MARKDOWN_LIMIT - 200] + "\n\n…(truncated; see summary.json)\n"
    return text


def render_junit(summary: dict) -> str:
    """One JUnit test case per check: fail and error map to <failure> and <error>, skipped to
    <skipped>, and warn to <failure> when the run fails on warnings (--fail-on warn). The checks
    not part of the verdict (explanation reliability) form a second suite in which nothing
    fails: their status is in each case's output."""
    checks = summary["checks"]
    strict = summary.get("config", {}).get("fail_on") == "warn"
    failing = ("fail", "warn") if strict else ("fail",)
    model_checks = [c for c in checks if c.get("in_verdict", True)]
    apart = [c for c in checks if not c.get("in_verdict", True)]
    suites = ET.Element("testsuites")
    suite = _junit_suite(suites, "auditor", model_checks, failing, summary)
    properties = ET.SubElement(suite, "properties")
    for name, value in (("verdict", summary["verdict"]), ("model", summary["model"]["path"]),
                        ("model.sha256", summary["model"]["sha256"]),
                        ("data", summary["data"]["source"]),
                        ("baseline", (summary.get("baseline") or {}).get("path", ""))):
        ET.SubElement(properties, "property", name=name, value=_xml(value))
    for check in model_checks:
        _junit_case(suite, check, failing)
    if apart:
        extra = _junit_suite(suites, f"auditor: {NOT_IN_VERDICT}", apart, (), summary)
        for check in apart:
            _junit_case(extra, check, ())
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _junit_suite(parent, name: str, checks: list[dict], failing: tuple, summary: dict):
    errors = sum(c["status"] == "error" for c in checks) if failing else 0
    return ET.SubElement(parent, "testsuite", name=name, tests=str(len(checks)),
                         failures=str(sum(c["status"] in failing for c in checks)),
                         errors=str(errors),
                         skipped=str(sum(c["status"] == "skipped" for c in checks)),
                         time=shown(summary.get("timings", {}).get("total", 0.0)),
                         timestamp=summary.get("created", ""))


def _junit_case(suite, check: dict, failing: tuple) -> None:
    """One check as a test case; with ``failing`` empty (the suite outside the verdict) only a
    skip is marked, every other status goes to the case's output."""
    case = ET.SubElement(suite, "testcase", classname=f"auditor.{check['section'] or 'run'}",
                         name=_xml(check["id"]))
    detail = f"value {shown(check['value'])}"
    if check.get("baseline") is not None:
        detail += (f", baseline {shown(check['baseline'])}"
                   f"{', change ' + signed(check['change']) if check.get('change') else ''}")
    if check.get("threshold"):
        detail += ", bounds " + ", ".join(f"{k}={v:g}" for k, v in check["threshold"].items())
    text, message = _xml(f"{check['message']} ({detail})"), _xml(check["message"])
    if check["status"] in failing:
        ET.SubElement(case, "failure", message=message, type=check["status"]).text = text
    elif check["status"] == "error" and failing:
        ET.SubElement(case, "error", message=message).text = text
    elif check["status"] == "skipped":
        ET.SubElement(case, "skipped", message=message)
    else:
        ET.SubElement(case, "system-out").text = f"{check['status']}: {text}"
