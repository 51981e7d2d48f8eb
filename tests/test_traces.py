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
    # the card: 1 pass on the model (the layer gradient; the input gradient and the logits,
    # which occlusion and the curves' and completeness' scores read, the plan's timing traced),
    # whose traces the working copy calls with its weights, and up to 3 on the shifted copy
    # (the input gradient, the layer gradient, the logits), each traced unless the plan runs it
    # eagerly (predict/eager.py: on this small model a trace costs more than a few calls); two
    # copies
    assert len(model_traces(counts, card)) == declared["card"].traces
    assert 1 <= declared["card"].traces <= 4
    assert counts.copies[card] == declared["card"].copies == 2
    # Clever Hans: the training step on the working copy the card made; its re-predictions
    # are the model's logits (traced when the plan timed the model), the search's logits and
    # features the prediction pass's trace, its methods' passes the card's
    assert declared["clever_hans"].train_traces == 1 and declared["clever_hans"].traces == 0
    assert model_traces(counts, hans) == ["step"]
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
    assert len(model_traces(counts, hans)) == declared.traces + declared.train_traces == 3
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


def two_layer_cnn(folder) -> str:
    """A small saved CNN with two named convolutions and a BatchNormalization between."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="first")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="second")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inputs, keras.layers.Dense(3)(h)).save(folder / "model.keras")
    return str(folder / "model.keras")


def test_the_copies_re_predictions_and_neuron_groups_pass_are_the_models_traces(tmp_path):
    """The Clever Hans copies' re-predictions (``logits_fn``) and the concepts' pass of every
    layer's activations and gradients (the groups of each copy, the survival test's randomised
    copy) call the model's traces with the copy's weights: nothing traced for the copy, and
    the copy's own logits, activations and gradients, as an independent copy tracing its own
    computes them."""
    import dataclasses

    import numpy as np

    from auditor.inputs.copies import copy_model, scratch_copy
    from auditor.inputs.models import load_model
    from auditor.methods.attribution.sanity import reinitialise, weighted_layers
    from auditor.methods.concepts.faithful import randomised_activations
    from auditor.methods.concepts.groups import activations, activations_and_gradients

    handle = load_model(two_layer_cnn(tmp_path), input_range="0-1")
    x = np.random.default_rng(0).uniform(0, 1, (5, 10, 10, 3)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1])
    layers = ["first", "second"]
    logits = handle.logits_fn(x).numpy()
    groups = activations_and_gradients(handle, layers, x, targets)
    first = activations(handle, "first", x)

    copy = scratch_copy(handle)
    for index, (_, layer) in enumerate(weighted_layers(copy.logits_model)):
        reinitialise(layer, 10 + index)
    with counting() as counts:
        shared = (copy.logits_fn(x).numpy(), activations_and_gradients(copy, layers, x, targets),
                  activations(copy, "first", x))
    assert not counts.traces
    alone_model = copy_model(copy.logits_model)
    alone = dataclasses.replace(handle, model=alone_model, logits_model=alone_model, compiled={})
    expected = (alone.logits_fn(x).numpy(), activations_and_gradients(alone, layers, x, targets),
                activations(alone, "first", x))
    np.testing.assert_allclose(shared[0], expected[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(shared[0], logits, atol=1e-3)
    for layer in layers:
        for mine, theirs, model in zip(shared[1][layer], expected[1][layer], groups[layer],
                                       strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
            assert not np.allclose(mine, model, atol=1e-4)
    np.testing.assert_allclose(shared[2], expected[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(shared[2], first, atol=1e-4)
    np.testing.assert_array_equal(handle.logits_fn(x).numpy(), logits)

    with counting() as counts:  # the survival test's randomised copy: no trace of its own
        random = randomised_activations(handle, layers, x, seed=3)
    assert not counts.traces
    for index, (_, layer) in enumerate(weighted_layers(alone_model)):
        reinitialise(layer, 3 + index)
    for layer in layers:
        np.testing.assert_allclose(random[layer], activations(alone, layer, x), rtol=1e-5,
                                   atol=1e-6)


def test_a_pass_run_eagerly_gives_the_compiled_passs_maps(tmp_path):
    """The plan may run a pass eagerly when it is called too few times to repay its trace
    (inputs/traces.py ``run_eagerly``): the same function on the same weights, so the same maps
    within float tolerance, on the model and on its randomised working copy, with nothing
    traced."""
    import dataclasses

    import keras
    import numpy as np

    from auditor.inputs.copies import scratch_copy
    from auditor.inputs.models import load_model
    from auditor.inputs.traces import pass_name, run_eagerly
    from auditor.methods.attribution import METHODS, attribute
    from auditor.methods.attribution.sanity import reinitialise, weighted_layers

    keras.utils.set_random_seed(1)
    inputs = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="last_conv")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inputs, keras.layers.Dense(3)(h)).save(tmp_path / "model.keras")
    handle = load_model(str(tmp_path / "model.keras"), input_range="0-1")
    x = np.random.default_rng(1).uniform(0, 1, (3, 10, 10, 3)).astype(np.float32)
    targets = np.array([0, 2, 1])
    methods = ("gradient", "gradcam", "lrp", "occlusion")
    compiled = {m: attribute(handle, x, targets, m) for m in methods}
    copy = scratch_copy(handle)
    for index, (_, layer) in enumerate(weighted_layers(copy.logits_model)):
        reinitialise(layer, index)
    compiled_copy = {m: attribute(copy, x, targets, m) for m in methods}

    eager = dataclasses.replace(handle, compiled={})
    run_eagerly(eager, {pass_name(METHODS[m].compiled) for m in methods})
    eager_copy = scratch_copy(eager)
    for index, (_, layer) in enumerate(weighted_layers(eager_copy.logits_model)):
        reinitialise(layer, index)
    with counting() as counts:
        for m in methods:
            for mine, theirs in ((attribute(eager, x, targets, m), compiled[m]),
                                 (attribute(eager_copy, x, targets, m), compiled_copy[m])):
                np.testing.assert_allclose(mine, theirs, rtol=1e-4,
                                           atol=1e-5 * np.abs(theirs).max())
    assert not counts.traces


def test_the_plan_runs_a_pass_eagerly_when_its_calls_would_not_repay_its_trace():
    """A pass is traced when its eager calls would cost more beyond the compiled ones than the
    trace (predict/eager.py), and the card's shifted copy runs each pass once per method: with
    a dear trace its lone passes run eagerly (no trace declared, their extra charged as
    kernels), with a cheap one they are traced."""
    import dataclasses

    from auditor.configure import make_config
    from auditor.predict.eager import EagerCost
    from auditor.predict.plan import Facts
    from auditor.steps import card

    cost = EagerCost(trace=10.0, call=2.5, row=0.0)
    assert cost.worth_tracing(5, 0) and not cost.worth_tracing(3, 0)
    assert not cost.worth_tracing(0, 0)
    options = make_config({"attribution": {"methods": ["gradient", "saliency", "lrp"]}},
                          model="demo", data="sklearn:digits:test").options["attribution"]
    facts = Facts(images=50, input_shape=(8, 8, 1), classes=10)
    traced = card.shifted_passes(options, options.methods, 4, (8, 8, 1), cost)
    assert traced == {"input_gradients": False, "lrp": False}
    dear, cheap = (dataclasses.replace(facts, eager=EagerCost(trace, 2.5, 0.01))
                   for trace in (100.0, 0.1))
    assert card.passes(options, dear).traces == card.passes(options, facts).traces - 2
    assert card.passes(options, dear).kernels > card.passes(options, facts).kernels
    assert card.passes(options, cheap).traces == card.passes(options, facts).traces
