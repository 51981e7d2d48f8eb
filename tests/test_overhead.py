"""The Keras callback's overhead budget (runs/overhead.py): an audit sized to seconds through
the plan's own estimate, on the demo CNN's plan."""

from __future__ import annotations

import pytest

from auditor.configure import make_config
from auditor.predict.plan import Facts, forward_flops, measure_timing
from auditor.runs.overhead import (
    NOT_MEASURED,
    NOT_RUN,
    TIMING,
    largest_budget,
    planner,
    requested,
    size_audit,
)


@pytest.fixture(scope="module")
def plan_at(digits_handle):
    config = make_config({}, model="sized", budget="quick")
    facts = Facts(images=200, input_shape=digits_handle.input_shape, classes=10)
    return planner(config, facts, forward_flops(digits_handle), measure_timing(digits_handle))


def test_a_budget_that_fits_changes_nothing(plan_at):
    names = requested(make_config({}, model="sized"))
    sized = size_audit(names, "quick", 1e9, plan_at)
    assert (sized.sections, sized.budget, sized.not_run) == (names, "quick", {})


def test_the_sections_and_passes_fit_the_seconds_available(plan_at):
    names = requested(make_config({}, model="sized"))
    full = plan_at(names, "quick").estimated_seconds()
    available = full / 4
    sized = size_audit(names, "quick", available, plan_at, fixed=0.1)
    assert sized.estimated_seconds <= available
    assert sized.sections and set(sized.sections) | set(sized.not_run) == set(names)
    assert sized.sections == [n for n in names if n in sized.sections]  # report order
    if not sized.not_run:  # everything fits at fewer passes than the named budget
        assert isinstance(sized.budget, int)
        assert sized.budget < plan_at(names, "quick").budget_passes


def test_what_does_not_fit_is_not_run_and_says_why(plan_at):
    names = ["robustness", "performance", "featureviz"]
    sized = size_audit(names, "quick", 1.0, plan_at, fixed=5.0)  # the fixed part alone is over
    assert sized.sections == ["performance"]  # the cheapest runs whatever it costs
    assert sorted(sized.not_run) == ["featureviz", "robustness"]
    needed = 5.0 + plan_at(["performance", "robustness"], 1).estimated_seconds()
    assert sized.not_run["robustness"] == NOT_RUN.format(available=1.0, needed=f"{needed:.1f}",
                                                         guessed="")


def test_the_largest_budget_that_fits_is_found_within_five_percent():
    assert largest_budget(10_000, lambda passes: passes <= 3_000) in range(2_850, 3_001)
    assert largest_budget(10_000, lambda passes: True) == 10_000
    assert largest_budget(10_000, lambda passes: False) == 1


def test_a_section_is_charged_the_time_its_passes_do_not_show(plan_at):
    """What triage's plan does not show (its figures, and its neighbours and label issues when
    they take longer than the kernels it is charged): once measured (on MobileNetV2 224 px,
    18.7 s in bench/callback.py) that is what it costs, beside the plan's estimate."""
    names = ["performance", "triage"]
    available = plan_at(names, "quick").estimated_seconds() + 1.0
    assert size_audit(names, "quick", available, plan_at).sections == names
    sized = size_audit(names, "quick", available, plan_at, extra={"triage": 18.7})
    assert sized.sections == ["performance"] and list(sized.not_run) == ["triage"]


def test_one_section_runs_on_a_guess_per_audit(plan_at):
    """What the plan does not count (figures, work that is not passes) is measured by running a
    section; until then it is charged a guess, and one such section runs per audit: the first
    audit of a fit runs the cheapest alone, and the others say they wait to be measured."""
    names = ["performance", "contrastive", "robustness"]
    first = size_audit(names, "quick", 1e9, plan_at, guess=0.5)
    assert first.sections == ["performance"]
    assert sorted(first.not_run) == ["contrastive", "robustness"]
    assert first.not_run["contrastive"] == NOT_MEASURED.format(trying="performance")
    second = size_audit(names, "quick", 1e9, plan_at, extra={"performance": 0.1}, guess=0.5)
    assert second.sections == ["performance", "contrastive"]  # the cheaper new one
    assert second.not_run["robustness"] == NOT_MEASURED.format(trying="contrastive")
    measured = {"performance": 0.1, "contrastive": 0.2, "robustness": 0.3}
    assert size_audit(names, "quick", 1e9, plan_at, extra=measured, guess=0.5).sections == names
    guessed = size_audit(["performance", "contrastive"], "quick", 1.0, plan_at,
                         extra={"performance": 0.1}, guess=5.0, at_least=True)
    assert guessed.sections == ["performance"]  # the guess alone is over the budget
    assert "at least" in guessed.not_run["contrastive"]


def test_passes_not_timed_yet_are_charged_their_timing(plan_at):
    """Until the model's passes are timed, a section that runs them is charged the timing too
    (``untimed``): nothing is timed for a section the budget could not then pay for. A section
    without passes is not charged it."""
    names = ["performance", "robustness"]
    available = plan_at(names, 1).estimated_seconds() + 1.0  # both at their floors, and 1 s
    assert size_audit(names, "quick", available, plan_at, untimed=None).sections == names
    sized = size_audit(names, "quick", available, plan_at, untimed=5.0)
    assert sized.sections == ["performance"] and sized.estimated_seconds < 5.0
    assert sized.not_run["robustness"].endswith(f"needed{TIMING}); raise overhead= or every=")
    assert size_audit(names, "quick", available + 5.0, plan_at, untimed=5.0).sections == names
