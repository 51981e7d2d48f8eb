"""An audit sized to seconds: what the Keras callback can audit within its overhead budget.

The plan (``predict/plan.py``) sizes the sections to a budget of model passes; the callback's
budget is seconds, a share of the training time less what it spent before. Seconds become
passes through the plan's own estimate (``Plan.estimated_seconds``, from a forward and a
backward pass timed on the model), by asking ``make_plan`` for the largest ``--budget N`` whose
estimate fits: nothing here knows how a named budget becomes passes, so the plan may change
that freely. The named budget stays the ceiling.

Sections are taken cheapest first (at their floors: the lowest settings the plan would give
them); one that does not fit even at its floors is not run in that audit and says so in a
``skipped`` check of the run, never a pass. The cheapest section always runs, so that every
audited epoch has a run folder.

What the plan cannot estimate (a section's figures, work that is not model passes) is learnt
by running the section: until then a guess stands for it, and at most one section runs on a
guess per audit, so that a wrong guess overruns one audit by one section's cost, once. The
first audit of a fit therefore runs the cheapest section alone. Until the model's passes are
timed (once per fit, seconds on a small model), a section that runs them is charged that
timing too, guessed: nothing is timed that the budget could not pay for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

NOT_RUN = ("not run: over the callback's overhead budget ({available:.1f} s available, "
           "{needed} s needed{guessed}); raise overhead= or every=")  # the audit's, with it
# What a section not run yet in this fit is charged for what the plan does not count (its
# figures, its work that is not model passes), in audits' fixed parts (saving, predicting,
# writing): on MobileNetV2 224 px, triage's took 3.6 times the rest of its audit (24.9 s
# against 7.0 s, bench/callback.py, load 8 to 11); on the demo CNN 6.6 times (5.3 s against
# 0.8 s). Too low, it overruns one audit once (the next audits repay it); too high, the
# section waits until the budget has room for the guess.
GUESS_FIXED_PARTS = 4.0
GUESSED = ", its figures guessed"  # in NOT_RUN, for a section not run yet in this fit
TIMING = ", the timing of the model's passes guessed"  # in NOT_RUN, before they are timed
# What timing the model's passes once per fit (``predict.plan.model_timing``: traces of the
# gradient and training passes, a few timed calls, a copy of the model) is guessed to cost, in
# the seconds the callback took to copy the model and predict its data once when training
# started (the same kind of work: loading, tracing, passes). Measured (load 7 to 9): 3.8 times
# on MobileNetV2 224 px with 32 images (36.7 s against 9.7 s), 2.9 on ResNet50 96 px with 64
# (45.9 s against 15.8 s), 2.3 on the demo CNN with 200 (2.0 s against 0.9 s). Too low, the
# timing is paid by an audit that then cannot run the section it was for (the next audits
# repay it); too high, the sections that run passes wait for more budget.
GUESS_TIMING_PARTS = 4.0
# What the index written when training ends is guessed to cost, until the callback measured
# it in an earlier fit, in audits' fixed parts (the account holds it from the first audit): it
# reads every run and draws the trends, whatever the model. bench/callback.py: 0.3 s on
# MobileNetV2 224 px against fixed parts of 0.6 to 0.9 s (0.4); 0.2 s on the demo CNN against
# 0.12 to 0.19 s (up to 1.7).
GUESS_INDEX_PARTS = 1.5
NOT_MEASURED = ("not run: its cost is not measured yet, and each audit measures one new "
                "section ({trying} in this one); it runs in a later audit if it fits the "
                "callback's overhead budget; raise overhead= or every=")


@dataclass
class Sized:
    """What one audit runs: its sections (report order), its budget (the named one when it
    fits, else a number of passes) and why the other sections are not run."""

    sections: list[str]
    budget: str | int
    estimated_seconds: float  # the whole audit's, fixed part included
    not_run: dict[str, str] = field(default_factory=dict)


def requested(config) -> list[str]:
    """The sections the callback was asked for, in report order."""
    from auditor.sections import SECTION_NAMES

    return list(config.sections or SECTION_NAMES)


def planner(config, facts, flops: int | None, timing, handle=None) -> Callable:
    """``plan_at(sections, budget) -> Plan`` for this model (its ``Facts``, forward FLOPs and
    ``Timing``), with the spec's section options; as ``pipeline.plan_sections`` plans a run,
    but before it, so with every image counted as a mistake (the audit has not predicted).
    Sections that do not apply to the ``handle``'s model (a multi-label one) cost nothing: the
    audit skips them."""
    import dataclasses

    from auditor.pipeline import applicable
    from auditor.predict.plan import make_plan
    from auditor.sections import SECTION_NAMES, section_module
    from auditor.steps.card import card_candidates

    plans: dict = {}  # the same plans are asked for at every audit (the floors)

    def plan_at(sections, budget):
        ordered = tuple(n for n in SECTION_NAMES if n in sections)
        ordered = ordered if handle is None else tuple(applicable(ordered, handle))
        if (ordered, budget) in plans:
            return plans[ordered, budget]
        run_facts = dataclasses.replace(facts, sections=ordered,
                                        card_methods=card_candidates(config, ordered))
        plan = make_plan({n: section_module(n) for n in ordered}, config.options,
                         config.section_options, run_facts, budget, flops)
        plan.timing = timing
        plans[ordered, budget] = plan
        return plan

    return plan_at


def size_audit(names: list[str], budget: str | int, available: float, plan_at: Callable,
               fixed: float = 0.0, drift: float = 1.0, extra: dict[str, float] | None = None,
               guess: float | None = None, at_least: bool = False,
               untimed: float | None = None) -> Sized:
    """The sections of ``names`` and the budget whose audit fits ``available`` seconds: the
    ``fixed`` seconds of an audit (loading, predicting, writing) and the sections' seconds as
    the plan estimates them, times ``drift`` (the actual over the estimate, measured before),
    plus each section's ``extra``: what the plan does not count (its figures, and work that is
    not model passes, such as triage's neighbours), as measured when it last ran. With a
    ``guess``, a section without a measured extra is charged that many seconds for it, and at
    most one such section is run (None: none is charged, any number run). ``at_least``: the
    plan's estimates are lower bounds (its passes not timed yet), and the reasons say so.
    ``untimed``: the seconds timing the passes would take, charged once to sections that run
    any (None: the passes are timed)."""
    extra = extra or {}

    def new(sections) -> list[str]:
        return [] if guess is None else [n for n in sections if n not in extra]

    def timing(sections, passes) -> float:
        estimated = plan_at(sections, passes).estimated_seconds()
        return untimed if untimed is not None and estimated > 0 else 0.0

    def seconds(sections, passes) -> float:
        return (fixed + drift * plan_at(sections, passes).estimated_seconds()
                + timing(sections, passes) + sum(extra.get(n, guess or 0.0) for n in sections))

    def fits(sections, passes) -> bool:
        return len(new(sections)) <= 1 and seconds(sections, passes) <= available

    if fits(names, budget):
        return Sized(list(names), budget, seconds(names, budget))
    floors = {n: seconds([n], 1) for n in names}
    chosen: list[str] = []
    not_run: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (floors[n], names.index(n))):
        if fits([*chosen, name], 1) or not chosen:  # the cheapest runs whatever it costs
            chosen.append(name)
        elif seconds([*chosen, name], 1) <= available:  # a second guess in one audit
            not_run[name] = NOT_MEASURED.format(trying=", ".join(new(chosen)))
        else:
            needed = f"{'at least ' if at_least else ''}{seconds([*chosen, name], 1):.1f}"
            guessed = ((GUESSED if new([name]) else "")
                       + (TIMING if timing([*chosen, name], 1) else ""))
            not_run[name] = NOT_RUN.format(available=max(available, 0.0), needed=needed,
                                           guessed=guessed)
    chosen = [n for n in names if n in chosen]
    ceiling = plan_at(chosen, budget)
    if seconds(chosen, budget) <= available or ceiling.total_passes == 0:
        return Sized(chosen, budget, seconds(chosen, budget), not_run)
    passes = largest_budget(ceiling.budget_passes,
                            lambda passes: seconds(chosen, passes) <= available)
    return Sized(chosen, passes, seconds(chosen, passes), not_run)


# How close the passes found come to the largest that fits: 5%, well inside what the plan's
# estimate can tell apart (one timed call of MobileNetV2 varied by 40%, predict/plan.py).
TOLERANCE = 0.05


def largest_budget(most: int, fits: Callable[[int], bool]) -> int:
    """The largest number of passes, at most ``most``, that ``fits``, to within TOLERANCE (1,
    the floors, when none does): the estimate grows with the budget, so a bisection on the
    logarithm finds it in a few plans (each plan is itself a bisection)."""
    low, high = 1, max(int(most), 1)
    if fits(high):
        return high
    while high - low > max(1.0, TOLERANCE * low):
        middle = min(max(int(math.sqrt(low * high)), low + 1), high - 1)
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low
