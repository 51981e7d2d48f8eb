"""The top of the report: the verdict, the checks that decided it, and the five key figures.

Everything is read from summary.json as written, defensively: a key that is missing means the
section that owns it did not run (or failed), and the figure says so instead of breaking the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from auditor.checks.check import SEVERITY
from auditor.runs.baseline import robust_accuracy_at

STATUS_ORDER = {"fail": 0, "error": 1, "warn": 2, "pass": 3, "skipped": 4}


@dataclass
class KeyFigure:
    """One figure at the top: ``value`` is short text; ``status`` colours it (pass, warn, fail,
    error, info when no check judges it, notrun when its section did not run)."""

    label: str
    value: str
    detail: str
    section: str
    status: str


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def worst_status(checks: list[dict]) -> str | None:
    """The worst status among checks (None when there are none); error ranks with fail."""
    if not checks:
        return None
    return min((c["status"] for c in checks), key=lambda s: (-SEVERITY[s], STATUS_ORDER[s]))


def judged(checks: list[dict]) -> list[dict]:
    """The checks that say something: an ungated pass (no bound could apply) says nothing."""
    return [c for c in checks if c["status"] != "pass" or c.get("gated", True)]


def sorted_checks(checks: list[dict]) -> list[dict]:
    """Failures first, then errors, warnings, passes and skips; stable within a status."""
    return sorted(checks, key=lambda c: STATUS_ORDER.get(c["status"], 5))


def decisive_checks(summary: dict) -> list[dict]:
    """The checks behind a verdict other than pass: failures and errors first, then warnings."""
    return [c for c in sorted_checks(summary.get("checks", []))
            if c["status"] in ("fail", "error", "warn")]


def _spread_words(summary: dict, check: dict) -> str:
    top = (_get(summary, "metrics", "prediction_spread", "top") or [{}])[0]
    if not top:
        return "The predictions have collapsed onto a few classes."
    return (f"The model answers '{top['class']}' for {top['share']:.0%} of the images: its "
            "predictions have collapsed, so the figures below show that collapse, not skill.")


def _order_words(summary: dict, check: dict) -> str:
    order = _get(summary, "metrics", "class_order") or {}
    return ("The model's class order does not match the data's: relabelled, its accuracy "
            f"would be {order.get('matched_accuracy', 0):.0%} instead of "
            f"{order.get('accuracy', 0):.0%}; the class_order check gives the class_names "
            "that fix it.")


def _chance_words(summary: dict, check: dict) -> str:
    accuracy = _get(summary, "metrics", "accuracy")
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


def _absent(label: str, section: str, ran: dict[str, bool]) -> KeyFigure:
    """A figure whose key is missing: its section did not run, failed, or did not report it."""
    if section not in ran:
        return KeyFigure(label, "not run", "section not run", section, "notrun")
    if not ran[section]:
        return KeyFigure(label, "error", "the section failed", section, "error")
    return KeyFigure(label, "n/a", "not reported by its section", section, "info")


def epsilon_text(epsilon: float) -> str:
    """8/255 rather than 0.0314 when the budget is a whole number of grey levels."""
    levels = epsilon * 255
    if epsilon > 0 and abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    return f"{Fraction(epsilon).limit_denominator(1000)}" if epsilon else "0"


def accuracy_figure(summary: dict, ran: dict[str, bool]) -> KeyFigure:
    accuracy = _get(summary, "metrics", "accuracy")
    if not isinstance(accuracy, (int, float)):
        return _absent("Accuracy", "performance", ran)
    n = _get(summary, "data", "n")
    return KeyFigure("Accuracy", f"{accuracy:.1%}", f"on {n} images" if n else "",
                     "performance", _status_of(summary.get("checks", []), "performance"))


def mistakes_figure(summary: dict, ran: dict[str, bool]) -> KeyFigure:
    count = _get(summary, "misclassifications", "count")
    if not isinstance(count, int):
        return _absent("Mistakes", "performance", ran)
    top = _get(summary, "misclassifications", "top_confusions") or []
    detail = (f"most often {top[0]['true']} taken for {top[0]['pred']} ({top[0]['count']}×)"
              if top and isinstance(top[0], dict) and {"true", "pred", "count"} <= top[0].keys()
              else "none" if count == 0 else "")
    return KeyFigure("Mistakes", f"{count:,}", detail, "performance", "info")


def clever_hans_figure(summary: dict, ran: dict[str, bool]) -> KeyFigure:
    flagged = _get(summary, "clever_hans", "discovery", "flagged_classes")
    if not isinstance(flagged, list):
        return _absent("Clever Hans", "clever_hans", ran)
    status = _status_of(summary.get("checks", []), "clever_hans")
    if not flagged:
        return KeyFigure("Clever Hans", "none", "no class flagged for a shortcut",
                         "clever_hans", status)
    names = ", ".join(str(name) for name in flagged[:6]) + (" …" if len(flagged) > 6 else "")
    return KeyFigure("Clever Hans", str(len(flagged)), f"classes flagged: {names}",
                     "clever_hans", status if status != "info" else "warn")


def robustness_figure(summary: dict, ran: dict[str, bool]) -> KeyFigure:
    """Accuracy under attack at the budget the check holds, else at the largest one tried."""
    found = robust_accuracy_at(summary)
    if found is None:
        return _absent("Robust accuracy", "robustness", ran)
    epsilon, value = found
    attack = _get(summary, "robustness", "attack")
    detail = ("" if epsilon is None else f"at ε = {epsilon_text(epsilon)}") + (
        f" ({str(attack).upper()})" if attack else "")
    return KeyFigure("Robust accuracy", f"{value:.1%}", detail.strip(), "robustness",
                     _status_of(summary.get("checks", []), "robustness"))


def _sanity_verdicts(sanity: Any) -> dict[str, bool]:
    """{method: passed} from the shapes a sanity result may take: {method: bool},
    {method: {passed|status|pass: ...}} or [{method, passed|status}]."""
    if isinstance(sanity, dict):
        items = list(sanity.items())
    elif isinstance(sanity, list):
        items = [(entry.get("method"), entry) for entry in sanity if isinstance(entry, dict)]
    else:
        return {}
    verdicts = {}
    for method, result in items:
        if isinstance(result, bool):
            verdicts[str(method)] = result
        elif isinstance(result, dict):
            for key in ("passed", "pass", "status"):
                if key in result:
                    value = result[key]
                    verdicts[str(method)] = value == "pass" if isinstance(value, str) else bool(
                        value)
                    break
    return verdicts


def sanity_figure(summary: dict, ran: dict[str, bool]) -> KeyFigure:
    """How many attribution methods pass the weight-randomisation sanity check."""
    checks = summary.get("checks", [])
    verdicts = _sanity_verdicts(_get(summary, "attribution", "sanity"))
    sanity_checks = [c for c in checks if "sanity" in c["id"]]
    if not verdicts and sanity_checks:
        verdicts = {c["id"].rsplit(".", 1)[-1]: c["status"] == "pass" for c in sanity_checks}
    if not verdicts:
        return _absent("Saliency sanity", "attribution", ran)
    passed = sum(verdicts.values())
    failed = [method for method, ok in verdicts.items() if not ok]
    detail = ("every method depends on the weights" if not failed
              else f"ignore the weights: {', '.join(failed[:4])}" + (" …" if len(failed) > 4
                                                                      else ""))
    status = worst_status(judged(sanity_checks)) or ("pass" if not failed else "warn")
    return KeyFigure("Saliency sanity", f"{passed} of {len(verdicts)}", detail, "attribution",
                     status)


def key_figures(summary: dict, sections: dict[str, bool]) -> list[KeyFigure]:
    """The five figures at the top; ``sections`` maps each section run to whether it succeeded."""
    return [maker(summary, sections) for maker in (accuracy_figure, mistakes_figure,
                                                   clever_hans_figure, robustness_figure,
                                                   sanity_figure)]


def headline(summary: dict, sections: dict[str, bool]) -> dict:
    """What the top of the page shows, in one dict for the template."""
    return {"sentence": verdict_sentence(summary), "decisive": decisive_checks(summary),
            "figures": key_figures(summary, sections),
            "checks": sorted_checks(summary.get("checks", []))}
