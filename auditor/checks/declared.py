"""Each check declared once, next to the section that makes it (as Deepchecks' conditions are):
its id, its kind, its default bounds, the key figure it colours and the words the headline uses.

A section lists its checks in ``CHECKS`` (a tuple of Declared). The config validates every
``[checks.ID]`` table of the spec against these declarations; the section judges a value with
``Declared.judge`` (the spec's bounds over the declared defaults); the kind decides whether the
check is part of the verdict; the headline, summary.md and junit.xml read the kind, the key
figure and the words from here, never from a check's message.

Two kinds. **model** checks (accuracy, agreement, collapse, class order, input range, data
health, triage, Clever Hans findings, robustness, baseline regressions, counterfactuals) decide
the verdict and the exit code. **explanation** checks (each attribution method's randomisation,
invariance and faithfulness, the reliability card's columns, a planted shortcut's visibility to
the methods) say how far each explanation can be believed: they fill the card and choose the
methods, and decide the verdict only where the spec opts in with ``gate = true`` in the check's
table. ``gate = false`` takes a model check out of the verdict in the same way.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auditor.checks.check import Check, check_bounds, evaluate
from auditor.errors import ConfigError

MODEL = "model"
EXPLANATION = "explanation"
KINDS = (MODEL, EXPLANATION)
GATE = "gate"  # the spec key that puts a check into the verdict (true) or takes it out (false)
NOT_IN_VERDICT = "explanation reliability: not part of the verdict"


@dataclass(frozen=True, eq=False)
class Declared:
    """One check (or one family of checks: ``*`` stands for a method's, shortcut's or card
    column's name).

    ``bounds``: the default bounds (a spec's ``[checks.ID]`` table goes over them);
    ``figure``: the name of the KeyFigure this check colours at the top of the report;
    ``finding(summary, check)``: the reviewer's words when this check says the results are
    degenerate (None when it does not), read by the headline; ``finding_rank`` orders them,
    most basic first, since every later figure rests on the first.
    """

    id: str
    kind: str = MODEL
    what: str = ""  # what is measured, in a few words (summary.md, the report's tables)
    bounds: Mapping[str, float] = field(default_factory=dict)
    figure: str | None = None
    finding: Callable[[dict, dict], str | None] | None = None
    finding_rank: int = 100
    listed: bool = True  # False: bounds only (a reliability card's column), never a check

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"check '{self.id}': kind must be one of {KINDS}, got {self.kind!r}")

    def matches(self, check_id: str) -> bool:
        return fnmatch.fnmatchcase(check_id, self.id)

    def check_id(self, name: str | None = None) -> str:
        """The id of one check of this declaration (``name`` fills the ``*``)."""
        return self.id if name is None else self.id.replace("*", name)

    def judge(self, value: Any, *, checks: Mapping, message: str, section: str,
              name: str | None = None, baseline: Any = None,
              bounds: Mapping[str, float] | None = None) -> Check:
        """``value`` held to the spec's bounds over the declared ones (``bounds`` replaces the
        declared defaults where they depend on the section's options)."""
        check_id = self.check_id(name)
        check = evaluate(check_id, value, message=message, section=section,
                         defaults=dict(self.bounds if bounds is None else bounds),
                         spec=spec_bounds(checks, check_id), baseline=baseline)
        return self.stamp(check, checks)

    def outcome(self, status: str, value: Any, *, checks: Mapping, message: str, section: str,
                name: str | None = None, threshold: Mapping | None = None) -> Check:
        """A check whose status is decided by the section (skipped, not measurable, a rule
        beyond bounds); it is gated when it judged something (not skipped)."""
        check = Check(self.check_id(name), status, value, dict(threshold or {}), None, message,
                      section, gated=status != "skipped")
        return self.stamp(check, checks)

    def stamp(self, check: Check, checks: Mapping) -> Check:
        """``check`` with this declaration's kind and whether it is in the verdict."""
        gate = spec_gate(checks, check.id)
        return dataclasses.replace(check, kind=self.kind,
                                   in_verdict=self.kind == MODEL if gate is None else gate)


def spec_table(checks: Mapping, check_id: str) -> dict:
    """The spec's table for ``check_id``: tables whose id has a ``*`` matching it (e.g.
    ``[checks."attribution.sanity.*"]``), then its own, which wins."""
    merged: dict = {}
    for key in sorted(k for k in checks if "*" in k and fnmatch.fnmatchcase(check_id, k)):
        merged.update(checks[key])
    merged.update(checks.get(check_id, {}))
    return merged


def spec_bounds(checks: Mapping, check_id: str) -> dict[str, float]:
    return {k: v for k, v in spec_table(checks, check_id).items() if k != GATE}


def spec_gate(checks: Mapping, check_id: str) -> bool | None:
    return spec_table(checks, check_id).get(GATE)


def validate_table(check_id: str, table: Mapping, declared: Declared | None = None) -> None:
    """A ``[checks.ID]`` table: known bounds with numbers, and ``gate`` a boolean (only for a
    check of the list)."""
    if GATE in table and declared is not None and not declared.listed:
        raise ConfigError(f"'checks.{check_id}.gate': {declared.id} are bounds of the "
                          "reliability card's cells, not checks of the verdict; set "
                          "'gate' on attribution.sanity.METHOD or attribution.faithfulness")
    if GATE in table and not isinstance(table[GATE], bool):
        raise ConfigError(f"'checks.{check_id}.gate' must be true or false, got "
                          f"{table[GATE]!r}")
    check_bounds(check_id, {k: v for k, v in table.items() if k != GATE})


def declaration_of(check_id: str, declared) -> Declared | None:
    """The declaration ``check_id`` belongs to: an exact id before a pattern."""
    exact = [d for d in declared if d.id == check_id]
    return exact[0] if exact else next((d for d in declared if d.matches(check_id)), None)
