"""The compute plan declares the functions the reliability card and the Clever Hans section trace
and the model copies they make, and what it declares is what happens: a trace of a large
model's gradient takes tens of seconds and a copy several, so an undercount is a budget
broken. tests/tracecount.py counts them while a real audit of a freshly loaded demo model runs
(tf.data's own small functions are not model traces and are left out)."""

from __future__ import annotations

import pytest
from tracecount import counting, model_traces, recorded_plans

from auditor.configure import make_config
from auditor.pipeline import run_audit

CARD_METHODS = ["gradient", "saliency", "gradcam", "occlusion", "integrated_gradients"]
SPEC = {
    "attribution": {"methods": CARD_METHODS, "sanity_samples": 2, "sanity_stages": 2,
                    "faithfulness_samples": 4, "faithfulness_steps": 4, "examples": 2},
    "clever_hans": {"shortcuts": ["patch"], "steps": 4, "explain": 8, "max_train": 40,
                    "max_eval": 40, "max_discovery": 40, "max_others": 10, "max_embedding": 40},
}


def test_the_card_and_clever_hans_trace_and_copy_what_the_plan_declares(
        digits_model_path, tmp_path, monkeypatch):
    plans = recorded_plans(monkeypatch)
    config = make_config(dict(SPEC), model=str(digits_model_path), data="sklearn:digits:test",
                         sections=["attribution", "clever_hans"], max_samples=60,
                         budget=10**9, format=["json"], out=str(tmp_path / "run"),
                         progress=False, quiet=True)
    with counting() as counts:
        run_audit(config)
    declared = plans[0].passes
    card, hans = "auditor/steps/card.py", "auditor/sections/clever_hans.py"
    # the card: 4 passes on the model (input gradient, layer gradient, logit scores, the
    # curves' softmax scores), whose traces the working copy calls with its weights, and 3 on
    # the shifted copy; two copies
    assert len(model_traces(counts, card)) == declared["card"].traces == 7
    assert counts.copies[card] == declared["card"].copies == 2
    # Clever Hans: the training step and the logits on the working copy the card made; the
    # search's logits and features are the prediction pass's trace, its methods' passes the
    # card's
    assert len(model_traces(counts, hans)) == declared["clever_hans"].traces == 2
    assert counts.copies[hans] == declared["clever_hans"].copies == 0


@pytest.mark.slow  # a second audit; the first test holds the same declaration with the card
def test_without_the_card_clever_hans_makes_the_working_copy_and_traces_its_methods(
        digits_model_path, tmp_path, monkeypatch):
    plans = recorded_plans(monkeypatch)
    config = make_config({"clever_hans": SPEC["clever_hans"]}, model=str(digits_model_path),
                         data="sklearn:digits:test", sections=["clever_hans"], max_samples=60,
                         budget=10**9, format=["json"], out=str(tmp_path / "run"),
                         progress=False, quiet=True)
    with counting() as counts:
        run_audit(config)
    declared = plans[0].passes["clever_hans"]
    hans = "auditor/sections/clever_hans.py"
    # + gradient's and Grad-CAM's passes, traced once for the copy and the model (the
    # discovery's, gradient with no card, is the copy's input gradient)
    assert len(model_traces(counts, hans)) == declared.traces == 4
    assert counts.copies[hans] == declared.copies == 1


def test_the_working_copy_calls_the_models_traces_with_its_own_weights(tmp_path):
    """The randomised working copy's maps are those of its randomised weights, computed by the
    model's own traces (none traced for the copy): the same as an independent copy of the
    randomised model that traces its own, and unlike the model's. A BatchNormalization's
    moving statistics (non-trainable) and a Dropout's seed generator are among the variables
    passed; the shifted copy, whose structure differs, is not a twin."""
    import dataclasses

    import keras
    import numpy as np

    from auditor.inputs.copies import copy_model, scratch_copy
    from auditor.inputs.models import load_model
    from auditor.inputs.traces import ORIGIN, twins
    from auditor.methods.attribution import attribute
    from auditor.methods.attribution.reliability import shifted_copy
    from auditor.methods.attribution.sanity import reinitialise, weighted_layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    norm = model.layers[2]
    norm.moving_mean.assign(np.full(6, 0.3, np.float32))
    norm.moving_variance.assign(np.full(6, 2.0, np.float32))
    model.save(tmp_path / "model.keras")
    handle = load_model(str(tmp_path / "model.keras"), input_range="0-1")
    x = np.random.default_rng(0).uniform(0, 1, (4, 12, 12, 3)).astype(np.float32)
    targets = np.array([0, 1, 2, 0])
    methods = ("gradient", "gradcam", "lrp", "occlusion")
    own = {m: attribute(handle, x, targets, m) for m in methods}

    copy = scratch_copy(handle)
    assert copy.compiled[ORIGIN] is handle
    for index, (_, layer) in enumerate(weighted_layers(copy.logits_model)):
        reinitialise(layer, index)
    copy.logits_model.layers[2].moving_mean.assign(np.full(6, -0.5, np.float32))
    with counting() as counts:
        shared = {m: attribute(copy, x, targets, m) for m in methods}
    assert not counts.traces
    alone_model = copy_model(copy.logits_model)
    alone = dataclasses.replace(handle, model=alone_model, logits_model=alone_model, compiled={})
    for m in methods:
        expected = attribute(alone, x, targets, m)
        np.testing.assert_allclose(shared[m], expected, rtol=1e-4, atol=1e-6 * np.abs(
            expected).max())
        assert not np.allclose(shared[m], own[m], rtol=1e-2, atol=1e-6), m
        np.testing.assert_array_equal(attribute(handle, x, targets, m), own[m])
    assert not twins(handle.logits_model, shifted_copy(handle).logits_model)
