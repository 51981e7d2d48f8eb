"""No silent blessing: a conclusion drawn from attribution maps is only as good as the method
that drew them. A section whose conclusions rest on methods (the contrastive maps, the shortcut
discovery, a planted shortcut's visibility) reports, in a model check of its own, whether the
reliability card trusts them; when it does not, those conclusions are not measurable and the
check warns, naming what could not be read and why. When the card did not judge those methods
(it ran below its floors: ``reliability.unjudged``), neither is known: the check is skipped,
not measured, never a pass."""

from __future__ import annotations

from collections.abc import Mapping

from auditor.checks.check import Check
from auditor.checks.declared import Declared
from auditor.methods.attribution.reliability import NOT_MEASURED, unjudged, why_untrusted

# Every conclusion must rest on trusted methods: one that does not warns (value: how many
# conclusions could not be read).
TRUST_BOUNDS = {"warn_above": 0}


def trust_check(declared: Declared, card: dict | None, rests_on: Mapping[str, list[str]], *,
                checks: Mapping, section: str) -> Check:
    """``rests_on`` maps each conclusion (in words) to the methods it was drawn with; ``card``
    is the run's reliability card, or None when the audit does not make one."""
    rests_on = {what: list(dict.fromkeys(m for m in methods if m))
                for what, methods in rests_on.items() if any(methods)}
    if not rests_on:
        return declared.outcome("skipped", None, checks=checks, section=section,
                                threshold=TRUST_BOUNDS, message="no conclusion drawn from maps")
    named = "; ".join(f"{what}: {', '.join(methods)}" for what, methods in rests_on.items())
    if card is None:
        return declared.outcome(
            "skipped", None, checks=checks, section=section, threshold=TRUST_BOUNDS,
            message=f"not measured: this audit makes no reliability card (the attribution "
                    f"section does not run), so whether the methods can be believed here is "
                    f"unknown ({named})")
    unread, unknown = {}, {}
    for what, methods in rests_on.items():
        doubts = {m: why_untrusted(card, m) for m in methods}
        doubts = {m: why for m, why in doubts.items() if why}
        unjudged_here = {m: unjudged(card[m]) for m in doubts if m in card}
        if doubts and all(unjudged_here.get(m) for m in doubts):
            unknown[what] = unjudged_here
        elif doubts:
            unread[what] = doubts
    if not unread and unknown:
        reason = next(iter(next(iter(unknown.values())).values()))
        return declared.outcome(
            "skipped", None, checks=checks, section=section, threshold=TRUST_BOUNDS,
            message=f"not measured: the reliability card did not judge the methods these "
                    f"conclusions rest on ({named}): {reason.removeprefix(NOT_MEASURED + ': ')}")
    if not unread:
        return declared.outcome("pass", 0, checks=checks, section=section,
                                threshold=TRUST_BOUNDS,
                                message=f"every conclusion rests on a trusted method ({named})")
    words = "; ".join(f"{what} ({', '.join(f'{m}: {why}' for m, why in doubts.items())})"
                      for what, doubts in unread.items())
    return declared.outcome("warn", len(unread), checks=checks, section=section,
                            threshold=TRUST_BOUNDS,
                            message=f"not measurable, the reliability card does not trust the "
                                    f"method they rest on: {words}")
