"""A section that takes its method from the reliability card takes one the compute plan pays
for: the card's best trusted method when one map of it fits the allowance (contrastive's
map_cost), else the next trusted one that fits, else the fallback, and it says why."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import plan_for
from test_reliability import card_for

from auditor.configure import make_config
from auditor.predict.plan import REFERENCE_FLOPS, Facts, Passes
from auditor.sections import attribution, contrastive
from auditor.sections.base import Context
from auditor.steps.card import ReliabilityCard, choice_note, choose, passes_per_map
from auditor.steps.shared import Shared

RGB = (224, 224, 3)
MODULES = {"contrastive": contrastive, "attribution": attribution}


@pytest.fixture(scope="module")
def context(digits_handle):
    """The demo model on 120 digits and their predictions."""
    from auditor.inputs.datasets import load_dataset
    from auditor.predict.predictions import predict

    config = make_config(model="demo", data="sklearn:digits:test")
    dataset = load_dataset(config.data, digits_handle.input_shape, digits_handle.num_classes,
                           max_samples=120)
    return Context(config, digits_handle, dataset, predict(digits_handle, dataset), Path("."))


def planted(ctx: Context, card: dict) -> Context:
    """The run's context with ``card`` as the card step leaves it for the sections."""
    made = ReliabilityCard(card=card, methods=list(card), unavailable={}, options=None,
                           sanity={}, sanity_data={}, sanity_checks=[], stages=[],
                           faithfulness={}, faithfulness_data={}, faithfulness_checks=[],
                           completeness=None, invariance_reason=None)
    return replace(ctx, steps=Shared(card=made))


# Occlusion most faithful, then Integrated Gradients, then gradient; saliency ignores the
# weights (its maps barely change when they are randomised), so it is not trusted.
RANKED = card_for({"occlusion": 0.2, "integrated_gradients": 0.2, "gradient": 0.2,
                   "saliency": 0.9}, {"occlusion": 0.5, "integrated_gradients": 0.4,
                                      "gradient": 0.3, "saliency": 0.6})


def test_the_best_trusted_method_that_fits_is_taken_then_the_next_then_the_fallback(context):
    shape = context.handle.input_shape
    occlusion = passes_per_map("occlusion", shape)
    assert occlusion == 113 and passes_per_map("integrated_gradients", shape) == 32
    card = planted(context, RANKED).steps.card
    for allowed, expected in ((None, "occlusion"), (occlusion, "occlusion"),
                              (40, "integrated_gradients"), (1, "gradient")):
        method, used = choose(card, shape, "gradient", max_cost=allowed)
        assert method == used.method == expected and used.trusted
        assert used.best == "occlusion" and used.allowed == allowed
    assert used.reason == ("occlusion costs 113 passes per map on this model; the allowance "
                           "is 1 pass")
    assert choice_note(used, shape) == (
        " (the reliability card's best trusted method within 1 pass per map; its best, "
        "occlusion, costs 113 passes)")
    _, used = choose(card, shape, "gradient")
    assert used.reason is None
    assert choice_note(used, shape) == " (the reliability card's best trusted method)"

    only_dear = planted(context, card_for({"occlusion": 0.2}, {"occlusion": 0.5})).steps.card
    method, used = choose(only_dear, shape, "gradcam", max_cost=4)
    assert method == "gradcam"
    assert used.to_summary() == {"method": "gradcam", "trusted": False, "best": "occlusion",
                                 "cost": 1.0, "allowed": 4,
                                 "reason": "occlusion costs 113 passes per map on this "
                                           "model; the allowance is 4 passes"}
    assert choice_note(used, shape).startswith(
        " (the default: no method the reliability card trusts costs at most 4 passes per map")


def test_contrastive_explains_the_mistakes_with_the_method_its_allowance_affords(context):
    ctx = planted(context, RANKED)
    result = contrastive.run(ctx, contrastive.Options(examples=2, map_cost=40))
    assert result.summary["contrastive"]["method"] == "integrated_gradients"
    assert result.summary["contrastive"]["method_from_card"]
    assert "integrated_gradients (the reliability card's best trusted method within 40 " \
           "passes per map; its best, occlusion, costs 113 passes) saliency" in result.intro


def test_a_method_the_spec_names_is_never_replaced(context):
    ctx = planted(context, RANKED)
    result = contrastive.run(ctx, contrastive.Options(examples=2, method="saliency",
                                                      map_cost=1))
    assert result.summary["contrastive"]["method"] == "saliency"
    assert not result.summary["contrastive"]["method_from_card"]
    assert result.method_choice is None  # the card was not asked
    facts = Facts(images=1000, input_shape=RGB, classes=10, card_methods=("smoothgrad",))
    plan = plan_for(MODULES, {"contrastive": {"method": "occlusion"}}, facts, 1,
                     REFERENCE_FLOPS)
    assert "contrastive" not in plan.settings
    given = contrastive.resolve(contrastive.Options(method="occlusion"), facts)
    assert given.map_cost is None  # nothing to allow: the spec chose
    # occlusion reads the model's logits pass, which the plan's timing traced (registry.TIMED)
    assert contrastive.map_passes(given, facts) == Passes(forward=16 * 226, traces=0)
    # a pass neither the timing nor the card traced is counted
    gradcam = contrastive.resolve(contrastive.Options(method="gradcam"), facts)
    assert contrastive.map_passes(gradcam, facts).traces == 1


def test_a_tight_budget_lowers_map_cost_to_the_fallback_s_cost_and_counts_what_runs():
    facts = Facts(images=1000, input_shape=RGB, classes=10, card_methods=("smoothgrad",
                                                                          "occlusion"))
    full = contrastive.resolve(contrastive.Options(), facts)
    assert full.map_cost == math.ceil(passes_per_map("occlusion", RGB)) == 113
    assert contrastive.map_passes(full, facts) == Passes(forward=16 * 226, traces=0)
    generous = plan_for(MODULES, {}, facts, 10 ** 9, REFERENCE_FLOPS)
    assert "contrastive" not in generous.settings
    tight = plan_for(MODULES, {}, facts, 1, REFERENCE_FLOPS)
    assert tight.settings["contrastive"] == {"map_cost": 1}
    assert "contrastive: map_cost 1 instead of 113" in tight.describe()
    at_floor = replace(full, map_cost=1)
    assert contrastive.map_passes(at_floor, facts) == Passes(backward=16)  # gradient's
    assert contrastive.map_passes(replace(full, map_cost=20), facts) == Passes(backward=16 * 16)
    alone = Facts(images=1000, input_shape=RGB, classes=10, card_methods=())
    assert contrastive.resolve(contrastive.Options(), alone).map_cost == 1  # no card: gradient


def test_at_the_floor_a_card_whose_best_is_dear_leads_contrastive_to_gradient(
        tmp_path, digits_model_path):
    from auditor.pipeline import run_audit

    spec = {"attribution": {"methods": ["smoothgrad", "occlusion"], "examples": 2,
                            "compare_layers": 0}, "contrastive": {"examples": 3}}
    outcome = run_audit(make_config(spec, model=str(digits_model_path), budget=1,
                                    data="sklearn:digits:test", max_samples=100,
                                    sections=["contrastive", "attribution"],
                                    format="json,html", out=str(tmp_path / "run"),
                                    progress=False))
    summary = outcome.summary
    used = summary["attribution"]["used_by"]["contrastive"]
    best = used["best"]
    assert best == summary["attribution"]["trusted_method"] in ("smoothgrad", "occlusion")
    assert summary["plan"]["contrastive"] == {"map_cost": 1}
    assert summary["plan"]["instead_of"]["contrastive"] == {"map_cost": 113}
    assert summary["contrastive"]["method"] == used["method"] == "gradient"
    assert used["cost"] == 1 and used["allowed"] == 1 and not used["trusted"]
    cost = passes_per_map(best, (32, 32, 1))
    assert used["reason"] == (f"{best} costs {cost:g} passes per map on this model; the "
                              "allowance is 1 pass")
    html = (outcome.out / "report.html").read_text()
    assert "<strong>contrastive</strong>: map_cost 1 instead of 113" in html
    section = html[html.index('id="contrastive"'):]
    assert ("gradient (the default: no method the reliability card trusts costs at most 1 "
            f"pass per map on this model; its best, {best}, costs {cost:g} passes)") in section


def test_on_the_demo_under_the_standard_budget_the_card_s_best_is_used_as_before(demo_report):
    summary = demo_report.summary
    assert "contrastive" not in summary["plan"]["instead_of"]
    used = summary["attribution"]["used_by"]["contrastive"]
    assert used["allowed"] is None  # unplanned: its default allows every method of the card
    best = summary["attribution"]["trusted_method"]
    assert summary["contrastive"]["method"] == used["method"] == (best or "gradient")
    assert used["best"] == best and (used["reason"] is None) == (best is not None)


def test_clever_hans_discovery_takes_the_card_s_method_within_its_own_allowance(context):
    from auditor.sections import clever_hans

    ctx = planted(context, RANKED)
    for allowed, expected in ((None, "occlusion"), (40, "integrated_gradients"), (1, "gradient")):
        options = clever_hans.Options(discovery_map_cost=allowed)
        method, used = clever_hans.trusted_method(ctx, options, "gradient")
        assert method == expected and used.allowed == allowed
    named = clever_hans.Options(discovery_method="gradient", discovery_map_cost=1)
    assert clever_hans.trusted_method(ctx, named, "saliency") == ("saliency", None)  # as is


def test_a_tight_budget_lowers_discovery_s_allowance_and_the_plan_counts_within_it():
    from auditor.sections import clever_hans

    facts = Facts(images=1000, input_shape=RGB, classes=10)
    modules = {**MODULES, "clever_hans": clever_hans}
    plan = plan_for(modules, {}, facts, "standard", REFERENCE_FLOPS)
    assert plan.settings["clever_hans"]["discovery_map_cost"] == 1
    assert plan.defaults["clever_hans"]["discovery_map_cost"] == math.ceil(
        passes_per_map("occlusion", RGB))  # the dearest on the default card
    free = plan_for(modules, {}, facts, 10 ** 9, REFERENCE_FLOPS)
    assert "clever_hans" not in free.settings  # a generous budget lowers nothing
    assert free.passes["clever_hans"].total > plan.passes["clever_hans"].total
