"""The compute plan counts what the sections run: every image through the model, counted in the
model's own graph (a forward counter, and a backward counter in the logits' gradient), equals
the plan's forward and forward-backward passes of each section."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import plan_for

from auditor.configure import make_config

# Sections whose work does not depend on the data: their count is exact. The shortcut search's
# interventions depend on the groups it finds, so the Clever Hans plan is an upper bound.
# Grad-CAM and the layers' maps run through a model cut at a layer, not through the handle's
# logits, so the counters would miss them: they are left out here. Contrastive takes its method
# from the card (a step made before the sections) within one pass per map, so whichever method
# the card trusts, only gradient fits; its softmax maps are shared with no other section.
EXACT = ("contrastive", "attribution")
SPEC = {
    "contrastive": {"examples": 3, "score": "softmax", "map_cost": 1},
    "attribution": {"methods": ["gradient", "integrated_gradients", "occlusion", "smoothgrad"],
                    "examples": 2, "sanity_samples": 2, "sanity_stages": 2,
                    "faithfulness_samples": 3, "faithfulness_steps": 4, "compare_layers": 0,
                    "method_options": {"integrated_gradients": {"steps": 4},
                                       "smoothgrad": {"samples": 3}}},
    "robustness": {"samples": 6, "steps": 2, "epsilons": [0.0, 0.05], "check_epsilon": 0.05,
                   "gallery": 2},
    "counterfactuals": {"mistakes": 3, "steps": 4, "gallery": 2},
    "clever_hans": {"steps": 2, "batch_size": 8, "max_train": 30, "max_eval": 30,
                    "explain": 4, "max_discovery": 30, "shortcuts": ["patch"],
                    "methods": ["gradient"], "discovery_map_cost": 1},
}


@pytest.fixture
def counted(monkeypatch):
    """Counters of the rows every ModelHandle's logits take forward, and backward."""
    import tensorflow as tf

    import auditor.inputs.models as models
    from auditor.inputs.models import ModelHandle

    forward = tf.Variable(0, dtype=tf.int64, trainable=False)
    backward = tf.Variable(0, dtype=tf.int64, trainable=False)
    logits = ModelHandle.logits

    def counting(self, x, training: bool = False):
        @tf.custom_gradient
        def mark(out):
            forward.assign_add(tf.cast(tf.shape(out)[0], tf.int64))

            def gradient(upstream):
                backward.assign_add(tf.cast(tf.shape(upstream)[0], tf.int64))
                return upstream

            return tf.identity(out), gradient

        return mark(logits(self, x, training))

    def counting_both(handle):  # the forward pass of logits and features (ModelHandle.forward_pass)
        both = logits_and_features(handle)

        def counted_both(x):
            out = both(x)
            forward.assign_add(tf.cast(tf.shape(out)[0], tf.int64))
            return tf.identity(out)

        return counted_both

    logits_and_features = models._logits_and_features
    monkeypatch.setattr(ModelHandle, "logits", counting)
    monkeypatch.setattr(models, "_logits_and_features", counting_both)
    return forward, backward


@pytest.fixture
def counted_audit(monkeypatch, counted, tmp_path, digits_model_path):
    """run(spec, sections) audits the demo on 80 digits with no budget to speak of, and gives
    its plan's passes per section, the (forward-only, forward-backward) rows each section ran
    and the summary."""
    import auditor.pipeline as pipeline
    from auditor.steps import STEPS

    forward, backward = counted
    plans, used = [], {}
    plan_sections, run_section = pipeline.plan_sections, pipeline.run_section

    def keep_plan(*args):
        plans.append(plan_sections(*args))
        return plans[-1]

    def count_section(name, ctx):
        before = int(forward.numpy()), int(backward.numpy())
        result = run_section(name, ctx)
        ran = int(forward.numpy()) - before[0], int(backward.numpy()) - before[1]
        used[name] = (ran[0] - ran[1], ran[1])
        return result

    def counting(step):
        def make(*args):
            before = int(forward.numpy()), int(backward.numpy())
            made = real[step.NAME](*args)
            ran = int(forward.numpy()) - before[0], int(backward.numpy()) - before[1]
            used[step.NAME] = (ran[0] - ran[1], ran[1])
            return made
        return make

    real = {step.NAME: step.make for step in STEPS}
    for step in STEPS:
        monkeypatch.setattr(step, "make", counting(step))
    monkeypatch.setattr(pipeline, "plan_sections", keep_plan)
    monkeypatch.setattr(pipeline, "run_section", count_section)

    def run(spec: dict, sections: list[str]):
        config = make_config({**spec, "model": str(digits_model_path),
                              "data": "sklearn:digits:test", "max_samples": 80,
                              "out": str(tmp_path / "run"), "format": "json",
                              "sections": sections, "budget": 10 ** 9, "progress": False})
        summary = pipeline.run_audit(config).summary
        return plans[-1].passes, used, summary

    return run


def test_the_plan_counts_every_pass_each_section_runs(monkeypatch, counted_audit):
    import auditor.sections.clever_hans as clever_hans

    monkeypatch.setattr(clever_hans, "SEARCH_SHARE", 1.0)  # the searches' bound, not expected
    monkeypatch.setattr(clever_hans, "PROPERTY_SHARE", 1.0)
    planned, used, summary = counted_audit(SPEC, [*EXACT, "robustness", "counterfactuals",
                                                  "clever_hans", "triage"])
    choice = summary["attribution"]["used_by"]["contrastive"]  # the card's, within 1 pass
    assert summary["contrastive"]["method_from_card"] and choice["allowed"] == 1
    assert summary["contrastive"]["method"] == choice["method"] == "gradient"
    for name in (*EXACT, "card", "saliency"):
        assert used[name] == (planned[name].forward_rows,
                              planned[name].backward + planned[name].looped), name
    # robustness attacks the sampled images the model gets right (two rows each per attacked
    # epsilon), FGSM one step and PGD up to ``steps``, a row stopping once broken; the gallery's
    # maps besides: the plan prices the whole run's share of right images and every step
    block = summary["robustness"]
    rows = 2 * round(block["samples"] * block["clean_accuracy"]) * sum(
        e > 0 for e in block["epsilons"])
    ran_forward, ran_backward = used["robustness"]
    assert rows <= ran_backward <= rows * (1 + block["steps"]) + planned["robustness"].backward
    assert rows <= ran_forward <= rows * (2 + block["steps"])
    assert planned["robustness"].looped <= rows * (1 + block["steps"]) * 1.5
    # the counterfactual search predicts every step and after; its gradient call is left out
    # at a step where every search is past the margin (the hinge has no slope), never the first
    ran_forward, ran_backward = used["counterfactuals"]
    assert ran_forward == planned["counterfactuals"].forward_rows
    assert summary["counterfactuals"]["count"] <= ran_backward <= planned["counterfactuals"].looped
    ran_forward, ran_backward = used["clever_hans"]  # the fine-tuning steps are not counted
    assert ran_backward == planned["clever_hans"].backward  # (they call the copy directly)
    assert (0.3 * planned["clever_hans"].forward_rows <= ran_forward
            <= planned["clever_hans"].forward_rows)
    # triage's maps of the shown mistakes and slices: a bound (the slices found may be fewer)
    assert 0 < used["triage"][1] <= planned["triage"].backward
    assert used["triage"][0] <= planned["triage"].forward


def test_an_expensive_method_from_the_card_is_counted_as_it_runs(counted_audit):
    """SmoothGrad is the card's one trusted method here (occlusion with a black patch moves
    with a constant input shift, so it fails input invariance), 16 passes per map: within
    map_cost 16 the plan counts it, and the maps it runs are those counted."""
    spec = {"attribution": {**SPEC["attribution"], "methods": ["smoothgrad", "occlusion"]},
            "contrastive": {**SPEC["contrastive"], "map_cost": 16}}
    planned, used, summary = counted_audit(spec, ["contrastive", "attribution"])
    assert summary["attribution"]["trusted_method"] == "smoothgrad"
    assert summary["contrastive"]["method"] == "smoothgrad" and summary["contrastive"]["examples"]
    for name in ("card", "saliency", "contrastive", "attribution"):
        assert used[name] == (planned[name].forward_rows,
                              planned[name].backward + planned[name].looped), name


def test_a_224_px_plan_lowers_the_methods_own_settings_and_the_spec_s_win(digits_handle):
    from pathlib import Path

    from auditor.predict.plan import REFERENCE_FLOPS, Facts
    from auditor.sections import SECTION_NAMES, section_module
    from auditor.sections.base import Context, ResolvedOptions

    modules = {name: section_module(name) for name in SECTION_NAMES}
    facts = Facts(images=1000, input_shape=(224, 224, 3), classes=10)
    plan = plan_for(modules, {}, facts, "standard", REFERENCE_FLOPS)
    lowered, default = plan.settings["attribution"], plan.defaults["attribution"]
    assert lowered["integrated_gradients.steps"] < default["integrated_gradients.steps"] == 32
    assert lowered["occlusion.patch"] > default["occlusion.patch"] == 28  # 1/8 of the side
    assert lowered["occlusion.patch"] <= 56  # never above a quarter of it
    assert "max_others" in plan.settings["clever_hans"]
    assert plan.settings["clever_hans"]["copy_classes"] == 3  # of 10: at its floor
    assert any("integrated_gradients.steps 8 instead of 32" in line for line in plan.describe())
    given = {"attribution": {"method_options": {"integrated_gradients": {"steps": 64}}}}
    fixed = plan_for(modules, given, facts, "standard", REFERENCE_FLOPS)
    assert "integrated_gradients.steps" not in fixed.settings["attribution"]
    config = make_config({**given, "model": "demo"})
    ctx = Context(config=config, handle=digits_handle, dataset=None, predictions=None,
                  workdir=Path("."), options=ResolvedOptions.of(config, fixed))
    options = ctx.options["attribution"]
    assert options.method_options["integrated_gradients"]["steps"] == 64
    assert options.method_options["occlusion"]["patch"] == \
        fixed.settings["attribution"]["occlusion.patch"]
    # the card and the saliency of the mistakes are steps of their own, made before the
    # sections: the plan charges them there
    assert set(list(fixed.passes)[:2]) == {"card", "saliency"}
    assert fixed.passes["card"].total > fixed.passes["attribution"].total


def test_a_method_registered_with_a_planned_option_is_lowered_by_the_plan(monkeypatch):
    from auditor.methods.attribution.registry import METHODS, Method, Planned
    from auditor.predict.plan import REFERENCE_FLOPS, Facts
    from auditor.sections import SECTION_NAMES, section_module

    def repeated(handle, x, targets, contrast, score, budget, repeats):
        return x  # never run: the plan only reads the facts

    monkeypatch.setitem(METHODS, "repeated", Method(
        "repeated", "a method whose cost is its repeats", repeated,
        {"repeats": (64, "passes per image")}, cost=lambda options, shape: options["repeats"],
        planned={"repeats": Planned(floor=4)}))
    modules = {name: section_module(name) for name in SECTION_NAMES}
    methods = ["gradient", "repeated", "smoothgrad:integrated_gradients"]
    tables = {"attribution": {"methods": methods}}
    facts = Facts(images=1000, input_shape=(224, 224, 3), classes=10)
    plan = plan_for(modules, tables, facts, "standard", REFERENCE_FLOPS)
    lowered = plan.settings["attribution"]
    assert 4 <= lowered["repeated.repeats"] < plan.defaults["attribution"]["repeated.repeats"]
    # a noise tunnel over a method: its copies, and the method's own planned option, lowered
    assert 8 <= lowered["smoothgrad:integrated_gradients.samples"] < 16
    assert 8 <= lowered["smoothgrad:integrated_gradients.steps"] < 32
    options = plan.options["attribution"]
    assert options.method_options["repeated"]["repeats"] == lowered["repeated.repeats"]
    assert options.method_options["smoothgrad:integrated_gradients"]["samples"] == \
        lowered["smoothgrad:integrated_gradients.samples"]


def test_featureviz_concepts_and_triage_trace_what_their_plan_declares(monkeypatch, tmp_path,
                                                                        digits_model_path):
    """Each function TensorFlow traces for a section, counted as it traces (tests/tracecount.py),
    is one the section declares in ``Passes.traces``: a trace of a large model costs seconds,
    and featureviz and concepts once traced 12 and 13 against 3 and 9 declared. Featureviz's
    one render loop (its class, variant, channel and unregularised images) is declared as a
    loop. tf.data's own functions (the dataset's pipeline, milliseconds each) are not traces
    of the model."""
    from tracecount import counting, model_traces, recorded_plans

    import auditor.pipeline as pipeline

    plans = recorded_plans(monkeypatch)
    config = make_config({
        "model": str(digits_model_path), "data": "sklearn:digits:test", "max_samples": 80,
        "out": str(tmp_path / "run"), "format": "json", "budget": 10 ** 9, "progress": False,
        "sections": ["featureviz", "concepts", "triage"],
        "featureviz": {"steps": 3, "snapshots": [0, 3], "max_classes": 3, "max_channels": 2},
        "concepts": {"sample": 30, "mistakes": 2, "removal_images": 2, "random_directions": 2,
                     "survival_images": 4, "icon_steps": 2}})
    with counting() as counts:
        summary = pipeline.run_audit(config).summary
    assert not [c for c in summary["checks"] if c["status"] == "error"]
    assert summary["featureviz"]["comparison"]["unregularised"]  # compare ran, in the loop
    assert plans[-1].passes["featureviz"].loops == 1
    for name in ("featureviz", "concepts", "triage"):
        seen = model_traces(counts, f"auditor/sections/{name}.py", outermost=True)
        assert len(seen) == plans[-1].passes[name].traces, (name, seen)


def test_a_multi_label_clever_hans_plan_counts_what_its_label_audit_runs(
        monkeypatch, counted, tmp_path):
    """A multi-label model's Clever Hans runs no shortcut search on its copies: the plan counts
    its control and poisoned copies and its discovery per label, not the single-label search
    (which it once charged, several times what ran)."""
    import keras
    from tracecount import recorded_plans

    import auditor.pipeline as pipeline
    import auditor.sections.clever_hans as clever_hans

    monkeypatch.setattr(clever_hans, "SEARCH_SHARE", 1.0)  # the interventions' bound
    forward, backward = counted
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="sigmoid")])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(0, 1, (60, 12, 12, 3)).astype(np.float32),
             y=(rng.random((60, 3)) < 0.5).astype(np.int8))
    plans, used = recorded_plans(monkeypatch), {}
    run_section = pipeline.run_section

    def count_section(name, ctx):
        before = int(forward.numpy()), int(backward.numpy())
        result = run_section(name, ctx)
        used[name] = (int(forward.numpy()) - before[0], int(backward.numpy()) - before[1])
        return result

    monkeypatch.setattr(pipeline, "run_section", count_section)
    spec = {"clever_hans": {**SPEC["clever_hans"], "max_others": 10}}
    pipeline.run_audit(make_config({**spec, "model": str(tmp_path / "m.keras"),
                                    "data": f"npz:{tmp_path / 'd.npz'}", "input_range": "0-1",
                                    "sections": ["clever_hans"], "budget": 10 ** 9,
                                    "format": ["json"]}, out=str(tmp_path / "run"),
                                   progress=False, quiet=True))
    planned = plans[-1].passes["clever_hans"]
    ran_backward = used["clever_hans"][1]  # the copies' training steps go through the handle
    ran_forward = used["clever_hans"][0] - ran_backward
    # the discovery's maps are each label's sample; images drawn for one label that carry
    # another are explained for it too, so the count is near, not at, the plan's
    assert 0.7 <= ran_backward / (planned.backward + planned.train) <= 1.3
    assert 0.7 <= ran_forward / planned.forward <= 1.0
