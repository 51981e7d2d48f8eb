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


def decisive_checks(summary: dict) -> list[dict]:
    """The checks behind a verdict other than pass: failures and errors first, then warnings."""
    return [c for c in sorted_checks(summary.get("checks", []))
            if c["status"] in ("fail", "error", "warn")]


def _spread_words(summary: dict, check: dict) -> str:
    top = (((summary.get("metrics") or {}).get("prediction_spread") or {}).get("top")
           or [{}])[0]
    if not top:
        return "The predictions have collapsed onto a few classes."
    return (f"The model answers '{top['class']}' for {top['share']:.0%} of the images: its "
            "predictions have collapsed, so the figures below show that collapse, not skill.")


def _order_words(summary: dict, check: dict) -> str:
    order = (summary.get("metrics") or {}).get("class_order") or {}
    return ("The model's class order does not match the data's: relabelled, its accuracy "
            f"would be {order.get('matched_accuracy', 0):.0%} instead of "
            f"{order.get('accuracy', 0):.0%}; the class_order check gives the class_names "
            "that fix it.")


def _chance_words(summary: dict, check: dict) -> str:
    accuracy = (summary.get("metrics") or {}).get("accuracy")
    shown = f"Accuracy {accuracy:.0%}" if isinstance(accuracy, (int, float)) else "Accuracy"
    level = "at chance level" if check["status"] != "warn" else "barely above chance level"
    return (f"{shown} is {level}: the predictions hardly follow the labels (a wrong input "
            "range, other data, or an untrained model?).")


def _range_words(summary: dict, check: dict) -> str:
    return ("The input range the model expects could not be told from the data: set "
            "--input-range to the range it was trained on.")


def _counterfactual_words(summary: dict, check: dict) -> str:
    return ("Counterfactuals were found for too few mistakes: the model's gradients do not "
            "lead anywhere, so gradient-based explanations of it are suspect.")


# Degenerate results, most basic first: the verdict sentence names the first one found, since
# every later figure rests on it. (check id, its reviewer words)
FINDINGS = (("prediction_spread", _spread_words), ("class_order", _order_words),
            ("accuracy", _chance_words), ("kappa", _chance_words),
            ("model.input_range", _range_words),
            ("counterfactuals.success_rate", _counterfactual_words))


def first_finding(summary: dict) -> str | None:
    """Reviewer words for the most basic degenerate result of the run, if there is one."""
    checks = {c["id"]: c for c in summary.get("checks", [])}
    for check_id, words in FINDINGS:
        check = checks.get(check_id)
        if check and check["status"] in ("fail", "error", "warn"):
            if check_id == "accuracy" and "chance" not in check["message"]:
                continue  # a missed accuracy bound is no degenerate result
            return words(summary, check)
    return None


def verdict_sentence(summary: dict) -> str:
    """One sentence saying why the run got its verdict; when a result is degenerate (collapsed
    predictions, chance level, a class order that does not match), a second one naming the
    most basic of them."""
    sentence = _count_sentence(summary)
    finding = first_finding(summary)
    return f"{sentence} {finding}" if finding else sentence


def _count_sentence(summary: dict) -> str:
    checks = summary.get("checks", [])
    count = {s: sum(c["status"] == s for c in checks) for s in STATUS_ORDER}
    total = len(checks)
    noun = "check" if total == 1 else "checks"
    if summary.get("verdict") == "fail":
        lead = (f"{count['fail']} of {total} {noun} failed" if count["fail"]
                else f"{count['error']} of {total} {noun} could not be computed")
        if count["fail"] and count["error"]:
            lead += f", {count['error']} could not be computed"
        return lead + (f", {count['warn']} warned." if count["warn"] else ".")
    if summary.get("verdict") == "warn":
        return f"{count['warn']} of {total} {noun} warned; none failed."
    if not total:
        return "No check ran."
    if not summary.get("gated", True):
        return f"All {total} {noun} passed, but none was gated." if total > 1 else (
            "The only check passed, but it was not gated.")
    ungated = sum(c["status"] == "pass" and not c.get("gated", True) for c in checks)
    note = f" ({ungated} of them had no bound that could apply)" if ungated else ""
    return f"All {total} {noun} passed{note}." if total > 1 else "The only check passed."


def _status_of(checks: list[dict], section: str) -> str:
    mine = judged([c for c in checks if c.get("section") == section])
    return worst_status(mine) or "info"


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
    status = _status_of(summary["checks"], declared.section) if declared.judged else "info"
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
            "figures": key_figures(summary, sections),
            "checks": sorted_checks(summary.get("checks", []))}
