"""The top of the report: the verdict, the checks that decided it, and the key figures.

Everything is read from summary.json as written (its shapes are the schema's): a key that is
missing means the section that owns it did not run (or failed), and the figure says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditor.checks.check import STATUS_ORDER, judged, worst_status


@dataclass
class ShownFigure:
    """One figure at the top: ``value`` is short text; ``status`` colours it (pass, warn, fail,
    error, info when no check judges it, notrun when its section did not run)."""

    label: str
    value: str
    detail: str
    section: str
    status: str


def sorted_checks(checks: list[dict]) -> list[dict]:
    """Failures first, then errors, warnings, passes and skips; stable within a status."""
    return sorted(checks, key=lambda c: STATUS_ORDER.get(c["status"], 5))


def in_verdict(check: dict) -> bool:
    """Whether a written check counts for the verdict (runs written before the two kinds
    existed counted every check)."""
    return check.get("in_verdict", True)


def decisive_checks(summary: dict) -> list[dict]:
    """The checks behind a verdict other than pass: failures and errors first, then warnings;
    only those in the verdict."""
    return [c for c in sorted_checks(summary.get("checks", []))
            if in_verdict(c) and c["status"] in ("fail", "error", "warn")]


def explanation_checks(summary: dict) -> list[dict]:
    """The checks that are not part of the verdict (explanation reliability, unless the spec
    gates them), worst first."""
    return [c for c in sorted_checks(summary.get("checks", [])) if not in_verdict(c)]


def first_finding(summary: dict) -> str | None:
    """Reviewer words for the most basic degenerate result of the run, if there is one: the
    first (by ``finding_rank``) in-verdict check not passing whose declaration has words for it."""
    from auditor.checks.declared import declaration_of
    from auditor.sections import declared_checks

    declared = declared_checks()
    found = []
    for check in summary.get("checks", []):
        declaration = declaration_of(check["id"], declared)
        if (declaration is None or declaration.finding is None or not in_verdict(check)
                or check["status"] not in ("fail", "error", "warn")):
            continue
        words = declaration.finding(summary, check)
        if words:
            found.append((declaration.finding_rank, words))
    return min(found, key=lambda pair: pair[0])[1] if found else None


def verdict_sentence(summary: dict) -> str:
    """One sentence saying why the run got its verdict; when a result is degenerate (collapsed
    predictions, chance level, a class order that does not match), a second one naming the
    most basic of them; then what the explanation checks (not part of the verdict) found."""
    sentence = _count_sentence(summary)
    finding = first_finding(summary)
    sentence = f"{sentence} {finding}" if finding else sentence
    aside = _explanation_sentence(summary)
    return f"{sentence} {aside}" if aside else sentence


def _explanation_sentence(summary: dict) -> str:
    apart = explanation_checks(summary)
    broken = [c for c in apart if c["status"] in ("fail", "error", "warn")]
    unmeasured = [c for c in apart if c["status"] == "skipped"]  # neither passed nor failed
    if not apart:
        return ""
    noun = "check" if len(apart) == 1 else "checks"
    said = [f"{len(broken)} did not pass"] if broken else []
    said += [f"{len(unmeasured)} could not be measured"] if unmeasured else []
    return (f"Explanation reliability ({len(apart)} {noun}, not part of the verdict): "
            + (f"{' and '.join(said)}; see the reliability card." if said else "all passed."))


def _count_sentence(summary: dict) -> str:
    """How many in-verdict checks failed, warned or passed; a skipped one (not measurable) is
    counted apart, never as passed."""
    checks = [c for c in summary.get("checks", []) if in_verdict(c)]
    count = {s: sum(c["status"] == s for c in checks) for s in STATUS_ORDER}
    total = len(checks)
    noun = "check" if total == 1 else "checks"
    unmeasured = (f", {count['skipped']} could not be measured" if count["skipped"] else "")
    if summary.get("verdict") == "fail":
        lead = (f"{count['fail']} of {total} {noun} failed" if count["fail"]
                else f"{count['error']} of {total} {noun} could not be computed")
        if count["fail"] and count["error"]:
            lead += f", {count['error']} could not be computed"
        return lead + (f", {count['warn']} warned" if count["warn"] else "") + unmeasured + "."
    if summary.get("verdict") == "warn":
        return f"{count['warn']} of {total} {noun} warned; none failed{unmeasured}."
    if not total:
        return "No check ran."
    if count["skipped"] == total:
        return ("The only check could not be measured." if total == 1
                else f"None of the {total} checks could be measured.")
    if count["skipped"]:
        return f"{count['pass']} of {total} {noun} passed{unmeasured}."
    if not summary.get("gated", True):
        return f"All {total} {noun} passed, but none was gated." if total > 1 else (
            "The only check passed, but it was not gated.")
    ungated = sum(c["status"] == "pass" and not c.get("gated", True) for c in checks)
    note = f" ({ungated} of them had no bound that could apply)" if ungated else ""
    return f"All {total} {noun} passed{note}." if total > 1 else "The only check passed."


def _status_of(checks: list[dict], figure: str) -> str:
    """The worst status of the in-verdict checks declared to feed ``figure``."""
    from auditor.checks.declared import declaration_of
    from auditor.sections import declared_checks

    declared = declared_checks()
    mine = [c for c in checks if in_verdict(c)
            and getattr(declaration_of(c["id"], declared), "figure", None) == figure]
    return worst_status(judged(mine)) or "info"


def _absent(label: str, section: str, ran: dict[str, bool]) -> ShownFigure:
    """A figure whose key is missing: its section did not run, failed, or did not report it."""
    if section not in ran:
        return ShownFigure(label, "not run", "section not run", section, "notrun")
    if not ran[section]:
        return ShownFigure(label, "error", "the section failed", section, "error")
    return ShownFigure(label, "n/a", "not reported by its section", section, "info")


def shown_figure(declared, summary: dict, ran: dict[str, bool]) -> ShownFigure:
    """One section's declared figure as the top of the page shows it."""
    value = declared.value(summary)
    if value is None:
        return _absent(declared.label, declared.section, ran)
    status = _status_of(summary["checks"], declared.name) if declared.judged else "info"
    if declared.status is not None:
        status = declared.status(summary, status)
    return ShownFigure(declared.label, declared.shown(summary, value), declared.detail(summary),
                       declared.section, status)


def key_figures(summary: dict, sections: dict[str, bool]) -> list[ShownFigure]:
    """The figures the sections declare (auditor.sections.key_figures), for the top of the
    page; ``sections`` maps each section run to whether it succeeded."""
    from auditor.sections import key_figures as declared

    return [shown_figure(figure, summary, sections) for figure in declared() if figure.headline]


def headline(summary: dict, sections: dict[str, bool]) -> dict:
    """What the top of the page shows, in one dict for the template."""
    return {"sentence": verdict_sentence(summary), "decisive": decisive_checks(summary),
            "explanation": explanation_checks(summary),
            "figures": key_figures(summary, sections),
            "checks": sorted_checks(summary.get("checks", []))}
