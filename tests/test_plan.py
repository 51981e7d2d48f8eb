"""The compute plan, the log lines CI reads, and the one batched path every heavy loop uses."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import plan_for

from auditor.configure import make_config
from auditor.errors import ConfigError
from auditor.predict.plan import REFERENCE_FLOPS, Facts, Timing, budget_passes
from auditor.progress import SectionLog
from auditor.sections import SECTION_NAMES, section_module
from auditor.sections.base import Context, ResolvedOptions, RunInputs

MODULES = {name: section_module(name) for name in SECTION_NAMES}
IMAGENET_SIZE = Facts(images=1000, input_shape=(224, 224, 3), classes=10)


def test_a_224_px_model_is_sized_down_to_the_budget():
    plan = plan_for(MODULES, {}, IMAGENET_SIZE, "standard", REFERENCE_FLOPS)
    assert plan.settings["robustness"]["samples"] < 200
    assert plan.settings["featureviz"]["steps"] < 128  # its default at 224 px
    assert plan.settings["clever_hans"]["steps"] < 300
    assert plan.defaults["robustness"]["samples"] == 200
    full = plan_for(MODULES, {}, IMAGENET_SIZE, 10 ** 9, REFERENCE_FLOPS)
    assert not full.settings and full.total_passes > plan.total_passes
    block = plan.to_summary(actual_seconds=12.0)
    assert block["robustness"] == plan.settings["robustness"]
    assert {"passes", "estimated_seconds", "budget", "instead_of"} <= set(block)


def test_the_spec_s_own_settings_always_win_over_the_plan(digits_handle):
    tables = {"robustness": {"samples": 200}, "featureviz": {"steps": 300}}
    plan = plan_for(MODULES, tables, IMAGENET_SIZE, "quick", REFERENCE_FLOPS)
    assert "samples" not in plan.settings.get("robustness", {})
    assert "steps" in plan.settings["robustness"]  # the other setting is still planned
    assert "steps" not in plan.settings.get("featureviz", {})
    config = make_config({**tables, "model": "demo"}, budget="quick")
    ctx = Context(config=config, handle=digits_handle, dataset=None, predictions=None,
                  workdir=Path("."), options=ResolvedOptions.of(config, plan))
    robustness = ctx.options["robustness"]
    assert robustness.samples == 200
    assert robustness.steps == plan.settings["robustness"]["steps"] < 10


def test_a_named_budget_is_compute_so_the_small_demo_keeps_its_defaults(digits_handle):
    from auditor.predict.plan import forward_flops

    flops = forward_flops(digits_handle)
    assert 1e5 < flops < REFERENCE_FLOPS / 10
    assert budget_passes("standard", flops) > budget_passes("standard", REFERENCE_FLOPS)
    assert budget_passes(5000, flops) == 5000  # a number is passes of this model
    demo = Facts(images=1797, input_shape=(32, 32, 1), classes=10)
    assert not plan_for(MODULES, {}, demo, "standard", flops).settings
    assert plan_for(MODULES, {}, demo, 2000, flops).settings  # a small number still plans


# Seconds per image of a 48 px model and of the reference kernel beside it, chosen on the
# plan's grid (a pass half a kernel, a forward a quarter, a trace 8 kernels) so that a jitter
# of 15% keeps every graded time in its cell, as the same model timed twice would.
TIMED = Timing(forward=0.00375, backward=0.0075, trace=0.12, train=0.0075, kernel=0.015)
SMALL = Facts(images=200, input_shape=(48, 48, 3), classes=10)
# The demo CNN as measure_timing timed it (32 px, on this machine, load 7): a pass is a
# thirtieth of a kernel, a trace 64 kernels.
DEMO_TIMED = Timing(forward=0.0007, backward=0.00041, trace=0.87, train=0.00055, kernel=0.0152)


def times(timing: Timing, factor: float, kernel: float = 1.0) -> Timing:
    return Timing(timing.forward * factor, timing.backward * factor, timing.trace * factor,
                  timing.train * factor, timing.kernel * kernel)


def test_a_named_budget_is_a_wait_so_a_slower_model_gets_fewer_passes():
    plan = plan_for(MODULES, {}, SMALL, "quick", timing=times(TIMED, 1 / 2))
    slower = plan_for(MODULES, {}, SMALL, "quick", timing=TIMED)
    assert slower.budget_passes < plan.budget_passes and slower.total_passes < plan.total_passes
    assert slower.settings["clever_hans"]["steps"] < plan.settings["clever_hans"]["steps"]
    for each in (plan, slower):  # the wait fits the budget, counted with the traces
        assert each.total_kernels <= each.budget_kernels and not each.over_budget
    block = slower.to_summary()["timing"]
    assert block["kernels"]["backward"] == 0.5 and block["measured"]["kernel"] == 0.015
    assert block["budget_kernels"] == slower.budget_kernels
    # copies of the model (the card's, concepts') are counted at their time too; Clever Hans
    # fine-tunes the working copy the card made (inputs/copies.py), so it makes none
    copying = plan_for(MODULES, {}, SMALL, "quick", timing=dataclasses.replace(TIMED, copy=6.0))
    assert copying.passes["card"].copies == 2 and copying.passes["clever_hans"].copies == 0
    assert copying.total_passes < slower.total_passes


def test_the_same_measurement_gives_the_same_plan_and_a_number_stays_passes():
    plan = plan_for(MODULES, {}, SMALL, "standard", timing=TIMED)
    assert 0 < plan.scale < 1
    assert plan_for(MODULES, {}, SMALL, "standard", timing=TIMED).settings == plan.settings
    for factor in (0.87, 1.15):  # the same model timed again, within the grid's cell
        again = plan_for(MODULES, {}, SMALL, "standard", timing=times(TIMED, factor))
        assert again.settings == plan.settings
    # a loaded machine slows the model and the kernel alike: the same plan
    loaded = plan_for(MODULES, {}, SMALL, "standard", timing=times(TIMED, 3, 3))
    assert loaded.settings == plan.settings
    assert loaded.estimated_seconds() == pytest.approx(3 * plan.estimated_seconds())
    fixed = plan_for(MODULES, {}, SMALL, 3000, timing=times(TIMED, 4))
    assert fixed.budget_passes == 3000 and fixed.kernels is None
    assert fixed.settings == plan_for(MODULES, {}, SMALL, 3000).settings


def test_the_demo_keeps_its_settings_under_the_default_budget():
    demo = Facts(images=1797, input_shape=(32, 32, 1), classes=10)
    assert not plan_for(MODULES, {}, demo, "standard", timing=DEMO_TIMED).settings


def test_a_bad_budget_is_a_config_error_naming_the_key():
    assert make_config(model="demo", budget=5000).budget == 5000
    for bad in ("huge", 0):
        with pytest.raises(ConfigError, match="'budget'"):
            make_config(model="demo", budget=bad)


def test_the_section_log_says_how_long_the_rest_will_take(capsys):
    log = SectionLog(True, {"clever_hans": 40.0, "robustness": 90.0, "featureviz": 90.0})
    log.start("clever_hans", 1, 3)
    log.done("clever_hans", 41.0)
    log.done("robustness", 95.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "auditor: clever_hans (1/3) started; about 40 s"
    assert lines[1] == "auditor: clever_hans done in 41 s; about 3 min left"
    assert lines[2] == "auditor: robustness done in 2 min; about 2 min left"  # 94 s, corrected
    SectionLog(False, {}).say("nothing")
    assert capsys.readouterr().err == ""


def test_without_a_terminal_an_audit_logs_a_line_per_section_and_writes_its_plan(
        tmp_path, digits_model_path, monkeypatch, capsys):
    """Through the console entry point in this process: its standard error is pytest's capture,
    no terminal, which is all the choice between the progress bar and the lines reads
    (auditor/progress.py: ``sys.stderr.isatty()``); a fresh process would add only a TensorFlow
    import."""
    from auditor.cli import main

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "auditor", "audit", "--model", str(digits_model_path), "--data", "sklearn:digits:test",
        "--max-samples", "60", "--sections", "performance,robustness", "--budget", "300",
        "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        main()
    stderr = capsys.readouterr().err
    assert stop.value.code in (0, 1), stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("auditor: ")]
    assert "auditor: performance (1/2) started" in lines
    assert any(line.startswith("auditor: performance done in ") and line.endswith(" left")
               for line in lines)
    assert any(line.startswith("auditor: robustness done in ") for line in lines)
    assert any("estimate / actual" in line for line in lines)
    assert any(line.startswith("auditor: plan: robustness: samples 30 instead of 200")
               for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["plan"]["robustness"] == {"samples": 30, "steps": 5, "curve_points": 3}
    assert summary["plan"]["budget_passes"] == 300
    assert summary["robustness"]["samples"] == 30 and summary["robustness"]["steps"] == 5
    assert "samples 30 instead of 200" in (out / "report.html").read_text()


def test_chunked_passes_equal_one_unchunked_call(digits_handle, digits_test):
    from auditor.methods.attacks import pgd
    from auditor.methods.counterfactual import counterfactuals
    from auditor.predict.batched import chunked, forward

    x, y = digits_test[0][:11], digits_test[1][:11]
    whole = np.asarray(digits_handle.logits_fn(x))
    assert np.allclose(forward(digits_handle, x), whole, atol=1e-5)
    assert np.allclose(chunked(digits_handle, digits_handle.logits_fn, x, rows=3), whole,
                       atol=1e-5)
    one = pgd(digits_handle, x, y, 8 / 255, steps=3, batch_size=len(x))
    assert np.allclose(pgd(digits_handle, x, y, 8 / 255, steps=3, batch_size=4), one, atol=1e-6)
    wrong = (y + 1) % 10
    one = counterfactuals(digits_handle, x, wrong, steps=5, batch_size=len(x)).counterfactual
    blocks = counterfactuals(digits_handle, x, wrong, steps=5, batch_size=4).counterfactual
    assert np.allclose(blocks, one, atol=1e-5)


def test_features_come_from_the_prediction_pass_and_equal_a_second_pass(digits_handle,
                                                                        digits_npz):
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.layers import final_layer_input
    from auditor.predict.predictions import predict

    dataset = load_dataset(f"npz:{digits_npz}", digits_handle.input_shape, 10, max_samples=40)
    predictions = predict(digits_handle, dataset, batch_size=16)
    images = dataset.images(np.arange(dataset.n))
    second = np.asarray(final_layer_input(digits_handle)(images)).reshape(dataset.n, -1)
    assert predictions.features.shape == second.shape
    assert np.allclose(predictions.features, second, atol=1e-5)
    assert np.allclose(predictions.logits, np.asarray(digits_handle.logits_fn(images)),
                       atol=1e-5)


class _Asks:
    """A section that reads two maps of the saliency step."""

    STEPS = ("saliency",)

    @staticmethod
    def saliency_requests(inputs, options, shared):
        from auditor.steps.saliency import Request

        return (Request.of("gradient", [0, 1], [3, 4]),)


def test_a_map_the_saliency_step_made_is_read_not_made_again(digits_handle, digits_npz,
                                                             monkeypatch):
    import auditor.methods.attribution as methods
    from auditor.inputs.datasets import load_dataset
    from auditor.methods.attribution import attribute
    from auditor.steps import saliency
    from auditor.steps.shared import Shared

    dataset = load_dataset(f"npz:{digits_npz}", digits_handle.input_shape, 10, max_samples=20)
    inputs = RunInputs(config=make_config(model="demo"), handle=digits_handle, dataset=dataset,
                       predictions=None, workdir=Path("."))
    step = saliency.make(inputs, {"asks": None}, Shared(), {"asks": _Asks})
    first = step.maps(inputs, "gradient", [0, 1], [3, 4])
    assert np.allclose(first, attribute(digits_handle, dataset.images([0, 1]), [3, 4]),
                       atol=1e-6)
    made = []

    def counted(handle, x, targets, method="gradient", **options):
        made.append(len(x))
        return attribute(handle, x, targets, method, **options)

    monkeypatch.setattr(methods, "attribute", counted)
    again = step.maps(inputs, "gradient", [1, 2, 0], [4, 5, 3])
    assert np.array_equal(again[[2, 0]], first) and made == [1]  # only image 2 is new
    assert len(step) == 2  # the reader's own map is its own: the step's result is unchanged
    other_score = step.maps(inputs, "gradient", [2], [5], score="softmax")
    assert other_score.any() and made == [1, 1]  # another score is another map


def plans_made(model_path, sections):
    """The plan of a 40-image audit of ``sections``, and the timings ``make_plan`` was given
    each time the run made a plan (None when the model was not timed for it)."""
    import auditor.pipeline as pipeline
    import auditor.predict.plan as planning
    from auditor.predict.distribute import make_distribution
    from auditor.predict.predictions import predict

    made, real = [], planning.make_plan

    def counted(*args, **kwargs):
        made.append(kwargs.get("timing"))
        return real(*args, **kwargs)

    config = make_config(model=str(model_path), data="sklearn:digits:test", max_samples=40,
                         sections=sections, input_range="0-1")
    loaded = pipeline.load_inputs(config, make_distribution("default"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(planning, "make_plan", counted)
        plan = pipeline.plan_sections(config, sections, loaded, predict(loaded.handle,
                                                                        loaded.dataset))
    return plan, made


def test_a_run_makes_its_plan_once_timed_only_when_its_sections_run_passes(digits_model_path):
    """The plan is made once per run (it was made twice: once to see whether any pass runs,
    then again with the timing), and the model is timed only when some section runs a pass."""
    for sections, timed in ((["performance"], False), (["performance", "robustness"], True)):
        plan, made = plans_made(digits_model_path, sections)
        assert len(made) == 1 and (made[0] is not None) == timed
        assert plan.timing is made[0]


def test_the_training_pass_is_timed_only_when_the_plan_keeps_a_training_step(
        digits_model_path):
    """Without Clever Hans's fine-tuning the training pass is priced from the forward-backward
    one (its trace is seconds on a large model) and never traced; a plan that keeps the
    fine-tuning has it timed, and is made again by the measure."""
    import auditor.predict.plan as planning

    for sections, trains in ((["performance", "robustness"], False), (["clever_hans"], True)):
        plan, made = plans_made(digits_model_path, sections)
        assert plan.trains == trains and plan.timing.train_priced == (not trains)
        assert len(made) == 1 + trains and made[0].train_priced
        measured = plan.to_summary()["timing"]["measured"]
        assert ("train" in measured and "train_trace" in measured) == trains
        assert made[0].train == pytest.approx(planning.TRAIN_SHARE * made[0].backward)


def test_sections_that_do_not_apply_to_a_multi_label_model_are_not_budgeted(tmp_path,
                                                                            monkeypatch):
    """On a sigmoid head the sections that do not apply are skipped, so the plan sizes only
    the others (their passes and estimates), in an audit and in the callback's planner. Two
    sections are declared not to apply here (as a section without multi-label support says
    why), whichever sections support label sets when this runs."""
    import keras

    from auditor.inputs.models import load_model
    from auditor.pipeline import applicable, run_audit
    from auditor.predict.plan import measure_timing
    from auditor.runs.overhead import planner

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="sigmoid")])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(0, 1, (40, 8, 8, 1)).astype(np.float32),
             y=(rng.random((40, 3)) < 0.5).astype(np.int8))
    wanted = ["performance", "attribution", "triage"]
    for name in wanted[1:]:
        monkeypatch.setattr(section_module(name), "MULTI_LABEL", "declared unsupported here")
    handle = load_model(str(tmp_path / "m.keras"), "0-1")
    assert applicable(wanted, handle) == ["performance"]
    done = run_audit(make_config({"model": str(tmp_path / "m.keras"),
                                  "data": f"npz:{tmp_path / 'd.npz'}", "input_range": "0-1",
                                  "sections": wanted, "format": ["json"]},
                                 out=str(tmp_path / "run"), progress=False, quiet=True))
    assert set(done.summary["not_applicable"]) == {"attribution", "triage"}
    assert set(done.summary["plan"]["estimates"]) <= {"performance"}
    config = make_config({"model": "m", "sections": wanted})
    facts = Facts(images=40, input_shape=(8, 8, 1), classes=3)
    plan_at = planner(config, facts, None, measure_timing(handle), handle)
    alone = plan_at(["performance"], "quick")
    assert plan_at(wanted, "quick").total_passes == alone.total_passes
    assert plan_at(["attribution"], "quick").total_passes == 0


# MobileNetV3Small at 48 px as measure_timing timed it under a load of 10: a trace is 311
# kernels and a copy 89, so a few dozen traces fill `quick` (10,000 kernels) alone.
TRACE_BOUND = Timing(forward=0.00393, backward=0.00544, trace=7.63, train=0.0115,
                     kernel=0.0245, copy=2.18)


def test_a_named_budget_too_small_for_the_fixed_costs_leaves_work_out_and_says_what():
    """The lowest settings of every section are over `quick` on a model whose traces are
    dear: the plan leaves out work the sections declare they can do without, the most saving
    first, says what and which spec key brings it back, and never touches what the spec
    gives; a number budget and a model whose traces are cheap leave nothing out."""
    facts = dataclasses.replace(SMALL, sections=tuple(SECTION_NAMES))
    floors = plan_for(MODULES, {}, facts, 1, timing=TRACE_BOUND)  # the floors, as passes
    plan = plan_for(MODULES, {}, facts, "quick", timing=TRACE_BOUND)
    assert {"concepts", "attribution"} <= set(plan.dropped)
    assert plan.options["attribution"].input_invariance is False
    assert plan.estimated_seconds() < 0.8 * floors.estimated_seconds()
    lines = [line for line in plan.describe() if "left out" in line]
    assert len(lines) == sum(len(drops) for drops in plan.dropped.values())
    assert any("'attribution.input_invariance' in the spec" in line for line in lines)
    block = plan.to_summary()["dropped"]
    assert {"setting": "input_invariance", "value": False,
            "spec_key": "attribution.input_invariance",
            "what": "the card's input-invariance column"} in block["attribution"]
    given = plan_for(MODULES, {"attribution": {"input_invariance": True}}, facts, "quick",
                     timing=TRACE_BOUND)
    assert given.options["attribution"].input_invariance is True
    assert "input_invariance" not in {d.setting for d in given.dropped.get("attribution", [])}
    assert not plan_for(MODULES, {}, facts, 3000, timing=TRACE_BOUND).dropped
    # traces cheap: nothing left out under `standard` (under `quick` the fixed work off the
    # model, concepts' four NMF fits of 600 kernels each, is a quarter of its 10,000 kernels)
    assert not plan_for(MODULES, {}, facts, "standard", timing=TIMED).dropped


def test_a_card_method_the_plan_drops_is_counted_by_the_sections_taking_their_method_from_it():
    """Once the plan leaves Grad-CAM off the card, Clever Hans traces Grad-CAM's pass itself
    (the card no longer did): counted by the card's methods as the plan chose them, not as
    the spec gave them (one trace short before)."""
    import auditor.sections.clever_hans as clever_hans

    facts = dataclasses.replace(SMALL, sections=tuple(SECTION_NAMES))
    dear = dataclasses.replace(TRACE_BOUND, trace=2 * TRACE_BOUND.trace)  # DenseNet121-like
    tables = {"clever_hans": {"shortcuts": ["patch"], "control": True}}  # its copies stay
    plan = plan_for(MODULES, tables, facts, "quick", timing=dear)
    kept = tuple(plan.options["attribution"].methods)
    assert "gradcam" not in kept
    options = plan.options["clever_hans"]
    informed = dataclasses.replace(facts, card_methods=kept)
    assert plan.passes["clever_hans"].traces == clever_hans.passes(options, informed).traces
    assert plan.passes["clever_hans"].traces == clever_hans.passes(options, facts).traces + 1


def test_every_drop_a_section_declares_saves_time_and_names_a_setting_it_has():
    """Each section's drops, taken in order on its lowest settings, make it cheaper at the
    timing of a model whose traces are dear (a drop that saves nothing would leave work out for
    nothing), and each is a setting of its Options, the spec key the report names; the card,
    the Clever Hans copies and robustness declare theirs."""
    from auditor.predict.plan import _resolved, _scaled, planned_settings

    facts = dataclasses.replace(SMALL, sections=tuple(SECTION_NAMES))
    kernels = TRACE_BOUND.in_kernels()
    options = make_config({}, model="demo").options
    declaring = set()
    for name, module in MODULES.items():
        drops = getattr(module, "DROPS", ())
        declaring |= {name} if drops else set()
        current = _resolved(module, options[name], facts)
        current = _scaled(current, planned_settings(module, facts, current), 0.0)

        def cost(opts, module=module):
            step = getattr(module, "STEP", None)
            passes = module.passes(opts, facts) + (step[1](opts, facts) if step else
                                                    type(module.passes(opts, facts))())
            return kernels.seconds(passes)

        for drop in drops:
            assert drop.setting in {f.name for f in dataclasses.fields(current)}, (name, drop)
            cheaper = drop.applied(current)
            assert cost(cheaper) < cost(current), (name, drop.what)
            current = cheaper
    assert {"attribution", "clever_hans", "robustness", "concepts", "featureviz"} <= declaring


def test_a_model_too_dear_for_the_floors_runs_fewer_rows_and_its_checks_say_not_measured():
    """Under a named budget, a model whose pass costs 16 times the timed 48 px model's is over
    the budget at the floors with every drop taken: the floors each section declares thinnable
    (THIN) are lowered, never below their least, which costs less; the plan lists them, and
    every judged check of such a section is skipped, never a pass from too few images. The
    model the floors fit is not thinned."""
    import jsonschema

    from auditor.checks.check import Check
    from auditor.pipeline import below_floors
    from auditor.predict.plan import planned_settings, setting
    from auditor.report.summary import SCHEMA_FILE
    from auditor.sections.base import SectionResult

    assert not plan_for(MODULES, {}, SMALL, "quick", timing=TIMED).below_floor
    dear = plan_for(MODULES, {}, SMALL, "quick", timing=times(TIMED, 16))
    assert {"robustness", "counterfactuals", "attribution"} <= set(dear.below_floor)
    for name, floors in dear.below_floor.items():
        thin = MODULES[name].THIN
        for key, floor in floors.items():
            assert floor == planned_settings(MODULES[name], SMALL, dear.options[name])[key]
            assert thin[key] <= setting(dear.options[name], key) < floor
    for name, module in MODULES.items():  # every thinnable setting is a planned one, lowered
        planned = planned_settings(module, SMALL, make_config({"model": "demo"}).options[name])
        for key, least in getattr(module, "THIN", {}).items():
            assert 1 <= least < planned[key], (name, key)
    with pytest.MonkeyPatch.context() as patch:  # the same plan with nothing thinnable
        for module in MODULES.values():
            if hasattr(module, "THIN"):
                patch.setattr(module, "THIN", {})
        floors = plan_for(MODULES, {}, SMALL, "quick", timing=times(TIMED, 16))
    assert not floors.below_floor and dear.total_kernels < floors.total_kernels
    block = dear.to_summary()["below_floor"]
    assert block["robustness"]["samples"] == {"value": dear.options["robustness"].samples,
                                              "floor": 30}
    schema = json.loads(SCHEMA_FILE.read_text())["properties"]["plan"]["properties"]
    jsonschema.validate(block, schema["below_floor"])
    assert any("below its floor" in line and "not measured" in line for line in dear.describe())
    result = SectionResult(name="robustness", title="t", intro="i", checks=[
        Check("robustness.accuracy", "pass", 0.9, section="robustness"),
        Check("robustness.run", "error", None, section="robustness")])
    other = SectionResult(name="performance", title="t", intro="i",
                          checks=[Check("accuracy", "pass", 0.9)])
    marked, kept = below_floors([result, other], dear)
    assert [c.status for c in marked.checks] == ["skipped", "error"]
    assert "not measured" in marked.checks[0].message and "--budget" in marked.checks[0].message
    assert kept is other


def test_without_input_invariance_the_card_makes_no_shifted_copy_and_says_why():
    """The card's input-invariance column, once dropped, costs no copy and no trace on it, and
    its cells say it was not measured (skipped, never a pass)."""
    from auditor.methods.attribution.reliability import build_card
    from auditor.steps.card import invariance_part
    from auditor.steps.card import passes as card_passes

    attribution = make_config({}, model="demo").options["attribution"]
    off = dataclasses.replace(attribution, input_invariance=False)
    full, dropped = card_passes(attribution, SMALL), card_passes(off, SMALL)
    assert (full.copies, dropped.copies) == (2, 1)
    assert dropped.traces < full.traces and dropped.total < full.total
    changes, reason = invariance_part(None, off, ["gradient"])
    assert changes == {} and "attribution.input_invariance" in reason
    card = build_card(["gradient"], randomisation={"gradient": 0.1}, sanity_degenerate={},
                      invariance=changes, invariance_reason=reason,
                      faithfulness={"gradient": 0.2}, faithfulness_degenerate={})
    assert card["gradient"]["input_invariance"]["status"] == "skipped"
    assert card["gradient"]["trusted"]


def test_triage_off_the_model_is_counted_by_its_images_and_the_width_of_the_features():
    """Triage's neighbours, Mahalanobis and slices read the penultimate features, and all of
    its work grows with the images: bench/triage_cost.py measured 176 and 1,877 kernels for
    200 and 2,000 images of 1,024 features, 78 and 419 with 10 features (CPU time against the
    kernel's). The plan counts each within 25% (it once charged 200 images of 1,024 features
    1,750 kernels, where a quiet machine took about 230)."""
    import auditor.sections.triage as triage

    options = make_config({}, model="demo").options["triage"]
    for images, features, measured in ((200, 10, 78), (2000, 10, 419), (200, 1024, 176),
                                       (2000, 1024, 1877)):
        facts = dataclasses.replace(SMALL, images=images, features=features)
        assert triage.passes(options, facts).kernels == pytest.approx(measured, rel=0.25)


def test_a_working_copy_that_is_not_the_models_twin_is_counted_tracing_its_own_passes():
    """A copy whose structure differs (a keras-hub rebuild) calls none of the model's traces:
    the card traces its methods' passes once more for it, Clever Hans its logits, the
    search's pass and its methods', the survival test its pass."""
    facts = dataclasses.replace(SMALL, sections=tuple(SECTION_NAMES))
    twin = plan_for(MODULES, {}, facts, 10 ** 9, timing=TIMED).passes
    other = plan_for(MODULES, {}, facts, 10 ** 9,
                     timing=dataclasses.replace(TIMED, twin=False)).passes
    extra = {name: other[name].traces - twin[name].traces for name in twin}
    assert extra["card"] >= 4 and extra["clever_hans"] >= 3 and extra["concepts"] == 1
    assert not {name for name, more in extra.items() if more} - {"card", "clever_hans",
                                                                  "concepts"}


def test_the_report_says_what_the_plan_left_out_and_how_to_bring_it_back(demo_report,
                                                                         tmp_path):
    from auditor.pipeline import write_page

    summary = json.loads(json.dumps(demo_report.summary))
    summary["plan"]["dropped"] = {"featureviz": [{
        "setting": "compare", "value": False, "spec_key": "featureviz.compare",
        "what": "the comparisons (other starts, the other objective, the unregularised images)"}]}
    summary["plan"]["below_floor"] = {"robustness": {"samples": {"value": 12, "floor": 30}}}
    write_page(tmp_path, summary, summary, [], None)
    page = (tmp_path / "report.html").read_text()
    assert "Left out because the budget cannot hold the fixed costs" in page
    assert "<code>featureviz.compare</code> in the spec" in page
    assert "Run below their floors" in page and "samples 12 (floor 30)" in page


def test_a_call_is_split_into_its_fixed_cost_and_its_rows_and_a_loop_pays_rows_and_steps(
        digits_handle):
    """Two timed calls give the line through them: its slope is the time per row a compiled
    loop's rows cost, its intercept the fixed cost each step (and each call) pays; a slope the
    noise made non-positive counts every second per row (never free rows). The demo CNN,
    timed: its fixed cost per call is a share of the 24-row call's time, so a loop's rows cost
    less than the timed time per image."""
    from auditor.predict.plan import (
        Passes,
        backward_seconds,
        forward_at,
        measure_timing,
        split_call,
        timed_rows,
    )

    row, call = split_call((24, 0.010), (96, 0.022))
    assert row == pytest.approx(0.012 / 72) and call == pytest.approx(0.010 - 24 * row)
    assert split_call((24, 0.010), (96, 0.009)) == (0.010 / 24, 0.0)
    assert timed_rows(24, 10_000) == (24, 96) and timed_rows(11, 11) == (2, 5)
    assert timed_rows(1, 1) == (1, 1)
    assert timed_rows(24, 10_000, call_seconds=3.0) == (6, 12)  # a large model's: fewer rows
    # a large model's price at 24 rows is the line's through its calls of 6 and 12
    large = backward_seconds(24, (6, 0.6 + 6 * 0.2), (12, 0.6 + 12 * 0.2))
    assert large["row"] == pytest.approx(0.2) and large["call"] == pytest.approx(0.6)
    assert large["backward"] == pytest.approx(0.2 + 0.6 / 24)
    noisy = backward_seconds(24, (6, 1.2), (12, 1.1))  # noise: the small call's per image
    assert noisy["call"] == 0.0 and noisy["backward"] == noisy["row"] == pytest.approx(0.2)
    # a forward call of 64 rows timed at twice this measure's load, moved to 24 rows along
    # the forward-backward call's split
    moved = forward_at((6.4, 64, 0.02), 24, large, 0.01)
    assert moved == pytest.approx(0.05 * (0.2 + 0.6 / 24) / (0.2 + 0.6 / 64))
    timing = Timing(forward=0.001, backward=0.002, trace=0.1, row=0.0005, call=0.036)
    loop = Passes(looped=1000, loop_steps=10)
    assert timing.seconds(loop) == pytest.approx(1000 * 0.0005 + 10 * 0.036)
    assert Timing(forward=0.001, backward=0.002, trace=0.1).seconds(loop) == 2.0  # untimed
    measured = measure_timing(digits_handle)
    assert 0 < measured.row <= measured.backward and measured.call >= 0
    assert measured.row + measured.call / 24 == pytest.approx(measured.backward, rel=1e-6)


def test_a_forward_call_a_section_counts_pays_its_fixed_cost_once_and_each_row_its_share():
    """The forward pass is timed on one number of rows: its call splits in the share the
    forward-backward call's did (a row ``forward * row / backward``, a call ``forward * call /
    backward``), so rows in the calls a section counts cost rows plus calls, and the timed
    call itself costs what it was timed at; rows whose calls are not counted cost the timed
    call's time per image; without a split every second is per row."""
    from auditor.predict.plan import Passes

    timing = Timing(forward=0.002, backward=0.004, trace=0.1, row=0.001, call=0.072)
    row, call = timing.forward_split()
    assert row == pytest.approx(0.0005) and call == pytest.approx(0.036)
    assert timing.seconds(Passes(called=24, calls=1)) == pytest.approx(24 * 0.002)
    assert timing.seconds(Passes(called=200, calls=1)) == pytest.approx(200 * 0.0005 + 0.036)
    assert timing.seconds(Passes(forward=200)) == pytest.approx(200 * 0.002)
    unsplit = Timing(forward=0.002, backward=0.004, trace=0.1)
    assert unsplit.seconds(Passes(called=200, calls=3)) == pytest.approx(200 * 0.002)
    assert Passes(forward=10, called=30).total == pytest.approx(0.5 * 40)


def test_featureviz_and_concepts_count_the_calls_of_their_forward_rows():
    """Featureviz's pass over the audit images runs in batches of at most 64 (each shown
    layer's) and concepts' removal tests in one call per group: with a call's rows known both
    declare their forward rows in counted calls, the same rows as before, and featureviz's
    200 images cost 4 calls' fixed cost per layer, not 200 twenty-fourths of one."""
    import auditor.sections.concepts as concepts
    import auditor.sections.featureviz as featureviz
    from auditor.predict.plan import Passes

    options = make_config({}, model="demo").options
    known = Facts(images=200, input_shape=(48, 48, 3), classes=10, call_rows=300,
                  concept_layers=2)
    unknown = dataclasses.replace(known, call_rows=None)
    viz, viz_unknown = (featureviz.passes(options["featureviz"], f) for f in (known, unknown))
    layers = viz.called // 200
    assert layers >= 1 and viz.forward == 0 and viz.calls == 4 * layers
    assert viz_unknown.forward == viz.called and viz_unknown.calls == 0
    timing = Timing(forward=0.002, backward=0.004, trace=0.1, row=0.001, call=0.072)
    real = Passes(called=viz.called, calls=viz.calls)
    assert timing.seconds(real) < timing.seconds(Passes(forward=viz_unknown.forward))
    concept = options["concepts"]
    groups, rows = concept.groups, (2 + concept.random_directions) * concept.removal_images
    counted, uncounted = (concepts.passes(concept, f) for f in (known, unknown))
    assert counted.called == uncounted.forward - counted.forward == 2 * groups * rows
    assert counted.calls == 2 * groups * -(-rows // 300)


def test_clever_hans_counts_one_call_per_re_prediction_and_per_intervention():
    """Clever Hans's re-predictions of the held-out images (each copy's, clean and with each
    shortcut) and its interventions run one forward call each: the plan counts those calls
    (1 + 2 re-predictions of a planted shortcut with its control, the interventions at their
    shares) and prices them as such, below the timed call's time per image for their rows."""
    import auditor.sections.clever_hans as clever_hans
    from auditor.methods.shortcuts.properties import MAX_CANDIDATES
    from auditor.predict.plan import Passes

    options = make_config({}, model="demo").options["clever_hans"]
    options = dataclasses.replace(options, shortcuts=options.shortcuts[:1], control=True,
                                  discovery=False, copy_classes=3)
    facts = dataclasses.replace(SMALL, card_methods=())
    passes = clever_hans.passes(options, facts)
    copy_calls = clever_hans.intervention_calls(10 ** 6, 10, options.copy_classes)
    assert copy_calls == pytest.approx(clever_hans.SEARCH_SHARE * 7 * 3
                                       + clever_hans.PROPERTY_SHARE * MAX_CANDIDATES)
    assert clever_hans.intervention_calls(200, 10, discovery=False) == pytest.approx(
        clever_hans.PROPERTY_SHARE * MAX_CANDIDATES)
    measures = 2  # the planted copy and the control, each measured on the shortcut
    sample = clever_hans.passes(options, dataclasses.replace(facts, images=10 ** 6))
    assert sample.calls == pytest.approx(measures + 2 + measures * copy_calls
                                         + clever_hans.PROPERTY_SHARE * MAX_CANDIDATES)
    timing = Timing(forward=0.002, backward=0.004, trace=0.0, row=0.001, call=0.072)
    assert timing.seconds(Passes(called=passes.called, calls=passes.calls)) < (
        timing.seconds(Passes(forward=passes.called)))


def test_the_cards_curves_count_the_forward_calls_that_hold_them():
    """The deletion and insertion curves run as many images' inner steps per forward call as
    the call's rows hold, and the ends every map shares once (faithfulness.curves_of): the
    card counts those calls when the rows a call takes are known, the same rows either way."""
    from auditor.steps.card import _applying
    from auditor.steps.card import passes as card_passes

    attribution = make_config({}, model="demo").options["attribution"]
    unknown = card_passes(attribution, SMALL)
    known = card_passes(attribution, dataclasses.replace(SMALL, call_rows=1024))
    maps = len(_applying(attribution, SMALL)) + 1  # each method's and a random map's
    samples = min(attribution.faithfulness_samples, SMALL.images)
    per_image = 2 * (attribution.faithfulness_steps - 1)
    assert unknown.called == 0 and known.called == 3 * samples + maps * samples * per_image
    assert known.forward_rows == unknown.forward_rows
    assert known.calls == 1 + maps * -(-samples // (1024 // per_image))
    tiny = card_passes(attribution, dataclasses.replace(SMALL, call_rows=per_image // 2))
    # each image's inner steps in two calls; the ends in calls of as many rows
    assert tiny.calls == -(-3 * samples // (per_image // 2)) + maps * samples * 2


def test_the_plan_counts_only_what_runs_and_prices_each_trace_and_fit_by_its_measure():
    """Attention rollout on a model without attention says so in one line and runs nothing,
    so the card counts neither its rows nor its trace; the LRP composite's trace counts
    COMPOSITE_TRACE input-gradient traces (on the model and the shifted copy); concepts counts
    an NMF fit per layer on the sample and one per layer on the randomised copy."""
    import auditor.sections.concepts as concepts
    from auditor.methods.attribution.lrp import COMPOSITE_TRACE
    from auditor.steps.card import passes as card_passes

    options = make_config({}, model="demo").options
    attribution = options["attribution"]
    cnn = dataclasses.replace(SMALL, attention=False)
    rolled = dataclasses.replace(attribution, methods=[*attribution.methods, "rollout",
                                                       "gradient_rollout"])
    assert card_passes(rolled, cnn) == card_passes(attribution, cnn)
    vit = dataclasses.replace(SMALL, attention=True)
    more = card_passes(rolled, vit) - card_passes(attribution, vit)
    assert more.traces == 2 * 2 and more.forward > 0  # each on the model and the shifted copy
    lrp = card_passes(dataclasses.replace(attribution, methods=["gradient", "lrp"]), cnn)
    assert lrp.trace_extra == pytest.approx(2 * (COMPOSITE_TRACE - 1))
    assert card_passes(dataclasses.replace(attribution, methods=["gradient", "lrp_epsilon"]),
                       cnn).trace_extra == 0
    one_layer = dataclasses.replace(SMALL, concept_layers=1)
    fits = concepts.passes(options["concepts"], one_layer).kernels
    assert fits == 2 * concepts.NMF_FIT_KERNELS
    assert concepts.passes(dataclasses.replace(options["concepts"], survival_images=0),
                           dataclasses.replace(SMALL, concept_layers=2)).kernels == fits
