"""The reliability card's parts: unmeasurable maps are skipped (not measurable), input
invariance (Kindermans et al.) on a copy that absorbs the shift, a dead head fails every sanity
check, and the card's trust and Clever Hans columns."""

from __future__ import annotations

import numpy as np
import pytest
from test_attribution import images_for, saved_handle

from auditor.methods.attribution.reliability import (
    add_shortcut_columns,
    best_trusted,
    build_card,
    degenerate_reason,
    input_invariance,
    shifted_copy,
)


def test_zero_constant_and_non_finite_maps_are_not_measurable():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(8, 6, 6, 1))
    assert degenerate_reason(good) is None
    zero = good.copy()
    zero[:2] = 0
    assert degenerate_reason(zero) == "maps all zero on 2 of 8 images"
    constant = good.copy()
    constant[:3] = 0.5
    assert "constant on 3 of 8" in degenerate_reason(constant)
    broken = good.copy()
    broken[:2, 0, 0] = np.nan
    assert "non-finite" in degenerate_reason(broken)
    zero[1] = good[1]
    assert degenerate_reason(zero) is None  # one image in eight is below the share


def valid_net(batchnorm: bool):
    import keras

    L = keras.layers
    inputs = keras.Input((12, 12, 3))
    if batchnorm:
        h = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, use_bias=False)(inputs)))
    else:
        h = L.Conv2D(6, 3, activation="relu")(inputs)
    h = L.Conv2D(8, 3, padding="same", activation="relu")(L.MaxPooling2D()(h))
    return keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(h)))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_gradient_is_input_invariant_and_gradient_x_input_is_not(tmp_path, batchnorm):
    """Kindermans et al. 2019: the shifted copy is the same function; the gradient is
    unchanged, gradient x input (and LRP-0 with it) moves with the input."""
    import keras

    keras.utils.set_random_seed(5)
    handle = saved_handle(valid_net(batchnorm), tmp_path, f"valid{batchnorm}")
    x = images_for(handle, 6)
    copy = shifted_copy(handle, -1.0)
    np.testing.assert_allclose(copy.logits(x - 1).numpy(), handle.logits(x).numpy(), atol=1e-4)
    targets = handle.logits(x).numpy().argmax(axis=1)
    changes, reason = input_invariance(handle, x, targets, ["gradient", "gradient_x_input"],
                                       method_options={})
    assert reason is None
    assert changes["gradient"] < 1e-3
    assert changes["gradient_x_input"] > 0.1


def test_same_padding_is_absorbed_by_explicit_padding_with_the_shift(digits_handle, digits_test):
    """The demo pads 'same': the copy pads with the shifted background and convolves 'valid',
    so it computes the same logits; the gradient and LRP's z-box (whose bounds move with the
    images) are then exactly invariant, gradient x input is not (Kindermans et al. 2019)."""
    x = digits_test[0][:4]
    copy = shifted_copy(digits_handle, -1.0)
    logits = digits_handle.logits(x).numpy()
    np.testing.assert_allclose(copy.logits(x - 1).numpy(), logits, atol=1e-5 * np.abs(logits).max())
    changes, reason = input_invariance(digits_handle, x, logits.argmax(axis=1),
                                       ["gradient", "gradient_x_input", "lrp", "gradcam"],
                                       method_options={})
    assert reason is None
    assert changes["gradient"] < 1e-5 and changes["lrp"] < 1e-5
    assert changes["gradcam"] < 1e-5  # a layer tapped by name is found in the copy too
    assert changes["gradient_x_input"] > 0.1


@pytest.mark.parametrize("size", [32, 33])
def test_the_shifted_copy_of_a_nested_mobilenetv2_computes_the_same_logits(tmp_path, size):
    """Stride-2 'same' padding pads one pixel more after than before on an even input (32)
    and equally on an odd one (33); the shift passes the head into the nested backbone. The
    untrained logits are tiny (1e-11), hence a tolerance relative to them: a border padded
    wrongly changes them by their own order."""
    import keras
    from test_attribution import mobilenet_nested

    keras.utils.set_random_seed(1)
    model = mobilenet_nested(size, functional_outer=True)
    handle = saved_handle(model, tmp_path, f"mnv2_{size}")
    x = images_for(handle, 3)
    logits = handle.logits(x).numpy()
    shifted = shifted_copy(handle, -1.0).logits(x - 1).numpy()
    np.testing.assert_allclose(shifted, logits, atol=1e-4 * np.abs(logits).max())


@pytest.mark.parametrize("first", ["rescaling", "normalization"])
def test_a_leading_rescaling_or_normalization_scales_the_shift(tmp_path, first):
    import keras

    keras.utils.set_random_seed(8)
    L = keras.layers
    inputs = keras.Input((9, 9, 3))
    h = (L.Rescaling(2.0, offset=-1.0)(inputs) if first == "rescaling"
         else L.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.01])(inputs))
    h = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(h)
    handle = saved_handle(keras.Model(inputs, L.Dense(3)(L.Flatten()(h))), tmp_path, first)
    x = images_for(handle, 3)
    logits = handle.logits(x).numpy()
    shifted = shifted_copy(handle, -1.0).logits(x - 1).numpy()
    np.testing.assert_allclose(shifted, logits, atol=1e-4 * np.abs(logits).max())


def test_a_layer_that_no_bias_can_absorb_the_shift_through_is_reported(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    h = keras.layers.LayerNormalization(name="first_norm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(
        keras.layers.Conv2D(3, 3)(h))))
    handle = saved_handle(model, tmp_path, "norm_first")
    changes, reason = input_invariance(handle, images_for(handle, 2), [0, 1], ["gradient"],
                                       method_options={})
    assert changes == {} and "first_norm" in reason


def test_a_dead_head_fails_no_sanity_check_silently(tmp_path):
    """A ReLU layer that is dead on the data: every gradient is zero, every map is empty, and
    the sanity check says 'not measurable' instead of passing on rank correlation 0."""
    import keras

    from auditor.methods.attribution.sanity import cascading_randomisation

    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dense(6, activation="relu", bias_initializer=keras.initializers.Constant(
        -100.0))(keras.layers.Flatten()(inputs))
    handle = saved_handle(keras.Model(inputs, keras.layers.Dense(3)(hidden)), tmp_path, "dead")
    x = images_for(handle, 6)
    result = cascading_randomisation(handle, x, np.zeros(6, int), ["gradient", "saliency"])
    for method in ("gradient", "saliency"):
        assert "all zero" in result.degenerate[method]


def card_for(randomisation, faithfulness, invariance=None, reason=None):
    methods = list(randomisation)
    return build_card(methods, randomisation=randomisation, sanity_degenerate={},
                      invariance=invariance or {}, invariance_reason=reason,
                      faithfulness=faithfulness, faithfulness_degenerate={})


def test_trusted_needs_passing_randomisation_and_faithfulness():
    card = card_for({"a": 0.2, "b": 0.85, "c": 0.3, "d": 0.1},
                    {"a": 0.3, "b": 0.6, "c": -0.1, "d": 0.4},
                    invariance={"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.5})
    assert card["a"]["trusted"] and not card["b"]["trusted"]  # b shows the input
    assert not card["c"]["trusted"]  # c is worse than random
    assert card["d"]["input_invariance"]["status"] == "fail" and not card["d"]["trusted"]
    assert best_trusted(card) == "a"
    skipped = card_for({"a": 0.2}, {"a": 0.3}, reason="the first layer pads")
    assert skipped["a"]["input_invariance"]["status"] == "skipped" and skipped["a"]["trusted"]


def test_clever_hans_columns_join_the_card_afterwards():
    card = card_for({"a": 0.2, "b": 0.2}, {"a": 0.3, "b": 0.4})
    injection = [
        {"shortcut": "patch", "learned": True, "relevance_mass_ratio": {"a": 5.0, "b": 1.2},
         "control_mass_ratio": {"a": 1.0, "b": 3.5}},
        {"shortcut": "control", "learned": False, "relevance_mass_ratio": {"a": 9.0},
         "control_mass_ratio": {"a": 1.1, "b": 3.2}},
    ]
    add_shortcut_columns(card, injection, "control")
    assert card["a"]["shortcut_mass"] == {"value": 5.0, "status": "pass", "reason": None}
    assert card["b"]["shortcut_mass"]["status"] == "fail"
    assert card["b"]["control_mass"]["status"] == "fail"  # a false alarm on the control
    assert card["a"]["trusted"] and not card["b"]["trusted"]


def test_dead_maps_are_not_measurable_not_an_error_on_the_model_as_on_its_copy():
    """Grad-CAM++ all zero on ConvNeXt's randomised copy (a), or a method all zero on the
    model itself (b): the randomisation test cannot be measured, which is neither a pass nor
    an error (that is for a crash), and neither method is trusted. On the model itself its
    input invariance cannot be measured either; on the copy it still can."""
    from auditor.methods.attribution.reliability import RANDOMISED

    card = build_card(["a", "b"], randomisation={"a": 0.0, "b": 0.1},
                      sanity_degenerate={"a": f"maps all zero on 4 of 4 images {RANDOMISED}",
                                         "b": "maps all zero on 4 of 4 images"},
                      invariance={"a": 0.0, "b": 0.0}, invariance_reason=None,
                      faithfulness={"a": 0.3, "b": 0.3}, faithfulness_degenerate={})
    assert card["a"]["randomisation"] == {
        "value": None, "status": "skipped",
        "reason": f"not measurable: maps all zero on 4 of 4 images {RANDOMISED}"}
    assert card["b"]["randomisation"] == {
        "value": None, "status": "skipped",
        "reason": "not measurable: maps all zero on 4 of 4 images"}
    assert card["a"]["input_invariance"]["status"] == "pass"
    assert card["b"]["input_invariance"]["status"] == "skipped"
    assert not card["a"]["trusted"] and not card["b"]["trusted"]


def test_a_method_dead_on_the_model_is_skipped_in_the_checks_summary_md_and_headline(tmp_path):
    """A CNN whose ReLUs are dead on the data: every gradient and Grad-CAM map is zero. The
    sanity and faithfulness checks are skipped, 'not measurable: maps all zero on N of M
    images', explanation checks outside the verdict, and none is an error; summary.md lists
    them as skipped and the headline says they could not be measured, not that all passed."""
    import keras

    from auditor.configure import make_config
    from auditor.pipeline import run_audit
    from auditor.report.headline import verdict_sentence

    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = keras.Input((32, 32, 1))
    h = L.Conv2D(4, 3, activation="relu", bias_initializer=keras.initializers.Constant(-100.0),
                 name="dead")(inputs)
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(h)))
    model.save(tmp_path / "dead.keras")
    spec = {"model": str(tmp_path / "dead.keras"), "data": "sklearn:digits:test",
            "input_range": "0-1", "sections": ["attribution"],
            "attribution": {"methods": ["gradient", "gradcam"], "examples": 1,
                            "sanity_samples": 2, "sanity_stages": 1, "faithfulness_samples": 4,
                            "faithfulness_steps": 4, "compare_layers": 1,
                            "input_invariance": False, "reference_method": "gradient"}}
    outcome = run_audit(make_config(spec, out=str(tmp_path / "run"), max_samples=40,
                                    progress=False, format="json,md"))
    checks = {c["id"]: c for c in outcome.summary["checks"]}
    for check_id, method, images in (("attribution.sanity.gradient", "gradient", 2),
                                     ("attribution.sanity.gradcam", "gradcam", 2),
                                     ("attribution.faithfulness", "gradient", 4)):
        check = checks[check_id]
        assert check["status"] == "skipped" and check["kind"] == "explanation", check
        assert not check["in_verdict"] and not check["gated"]
        assert check["message"] == (f"{method}: not measurable: maps all zero on {images} of "
                                    f"{images} images")
    assert not [c for c in checks.values() if c["status"] == "error"]
    card = outcome.summary["attribution"]["reliability"]["gradient"]
    assert card["randomisation"]["status"] == "skipped" and not card["trusted"]
    markdown = (tmp_path / "run" / "summary.md").read_text()
    assert "⏭️ skipped | `attribution.sanity.gradient`" in markdown
    assert "could not be measured" in verdict_sentence(outcome.summary)


def test_a_card_below_its_floors_shows_its_values_and_judges_none(digits_handle, tmp_path):
    """The plan ran the card below its floors (``plan.below_floor.attribution``): each measured
    cell keeps its value but is skipped, not measured, saying which settings and floors; its
    sanity and faithfulness checks and the model checks that read the card (attribution.trusted,
    the contrastive maps' trust) are skipped, never a pass or a warning; no method is trusted,
    and the section taking its method from the card takes its default and says why."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.pipeline import context_for, run_section
    from auditor.predict.plan import Plan
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context

    small = {"methods": ["gradient", "saliency"], "examples": 2, "sanity_samples": 2,
             "sanity_stages": 2, "faithfulness_samples": 4, "faithfulness_steps": 4,
             "compare_layers": 0, "input_invariance": False}
    config = make_config({"attribution": small, "contrastive": {"examples": 2}}, model="demo",
                         data="sklearn:digits:test", max_samples=60, budget="quick")
    plan = Plan(budget="quick", budget_passes=1, scale=0.0,
                options={"attribution": config.options["attribution"]},
                below_floor={"attribution": {"sanity_samples": 4, "faithfulness_samples": 8}})
    dataset = load_dataset(config.data, digits_handle.input_shape, 10, max_samples=60)
    ctx = context_for(Context(config=config, handle=digits_handle, dataset=dataset,
                              predictions=predict(digits_handle, dataset), workdir=tmp_path),
                      ["contrastive", "attribution"], plan)
    card = ctx.steps.card
    assert card.unmeasured.startswith("the card ran below its floors (sanity_samples 2 (floor "
                                      "4), faithfulness_samples 4 (floor 8)) to fit --budget "
                                      "quick")
    for entry in card.card.values():
        for column in ("randomisation", "faithfulness"):
            cell = entry[column]
            assert cell["value"] is not None and cell["status"] == "skipped"
            assert cell["reason"] == f"not measured: {card.unmeasured}"
        assert not entry["trusted"]
    attribution, contrastive = (run_section(name, ctx) for name in ("attribution",
                                                                    "contrastive"))
    statuses = {c.id: c for c in attribution.checks}
    assert {c.status for c in statuses.values()} == {"skipped"}, statuses
    assert all("not measured" in c.message for c in statuses.values())
    assert attribution.summary["attribution"]["sanity"]["gradient"]["status"] == "skipped"
    trust = contrastive.checks[0]
    assert trust.status == "skipped" and "did not judge" in trust.message
    choice = contrastive.method_choice
    assert choice.best is None and not choice.trusted
    assert choice.reason == f"the reliability card judged no method: {card.unmeasured}"


def test_methods_derived_from_the_input_gradient_share_one_pass(digits_handle, digits_test,
                                                                monkeypatch):
    """Gradient, saliency and gradient x input on the same images are one gradient pass
    (``shared_gradient``), with the maps ``attribute`` gives each; a method with options of
    its own runs its own; the card's plan counts the family once."""
    import auditor.methods.attribution.gradient as gradient
    import auditor.methods.attribution.gradient_x_input as gxi
    from auditor.methods.attribution import attribute
    from auditor.methods.attribution.registry import shared_gradient
    from auditor.predict.plan import Facts
    from auditor.sections.attribution import Options
    from auditor.steps.card import passes

    x, _ = digits_test
    x, targets = x[:6], np.arange(6) % 10
    family = ["gradient", "saliency", "gradient_x_input", "gradient_abs"]
    alone = {m: attribute(digits_handle, x, targets, m) for m in family}
    calls = []
    for module in (gradient, gxi):
        real = module.input_gradients
        monkeypatch.setattr(module, "input_gradients",
                            lambda *a, real=real: calls.append(len(a[1])) or real(*a))
    maps_of = shared_gradient(digits_handle, x, targets)
    for m in family:
        np.testing.assert_allclose(maps_of(m), alone[m], rtol=1e-5, atol=1e-7)
    assert calls == [6]
    maps_of("smoothgrad", {"samples": 2})
    assert len(calls) > 1  # a method of its own runs its own pass
    facts = Facts(images=60, input_shape=(8, 8, 1), classes=10, call_rows=300)
    one, three = (passes(Options(methods=methods, input_invariance=False), facts)
                  for methods in (["gradient"], family))
    assert (three.looped, three.loop_steps) == (one.looped, one.loop_steps)
