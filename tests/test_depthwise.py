"""ConvNeXt's depthwise convolutions are Conv2D(groups=channels), which Keras runs through XLA on a
CPU, compiled again for every batch shape; the audit's logits model runs them depthwise
(auditor/inputs/depthwise.py). The rebuilt model must compute what the model computes, keep
every layer's name and weights, leave the model as loaded alone, and be what every method reads."""

from __future__ import annotations

import numpy as np
import pytest


def grouped_model(seed: int = 0, bias: bool = True):
    """A nested backbone with a depthwise grouped convolution (one kernel a channel), one with
    two kernels a channel, and a grouped convolution of two channels a group (not depthwise)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=bias, name="stem")(inputs)
    h = L.Conv2D(8, 5, padding="same", groups=8, use_bias=bias, name="depthwise")(h)
    h = L.Conv2D(16, 3, strides=2, groups=8, use_bias=bias, name="two_each")(h)
    h = L.Conv2D(16, 1, groups=4, use_bias=bias, name="four_channels_a_group")(h)
    backbone = keras.Model(inputs, L.GlobalAveragePooling2D()(h), name="backbone")
    outer = keras.Input((12, 12, 3))
    head = L.Dense(3, activation="softmax", use_bias=bias, name="head")(backbone(outer))
    return keras.Model(outer, head)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from auditor.inputs.models import load_model

    model = grouped_model()
    path = tmp_path_factory.mktemp("depthwise") / "grouped.keras"
    model.save(path)
    return model, load_model(str(path), input_range="0-1")


def layer_types(model) -> dict[str, str]:
    from auditor.inputs.layers import walk

    return {path: type(layer).__name__ for path, layer in walk(model)}


def test_depthwise_grouped_convolutions_run_depthwise_and_nothing_else_changes(loaded):
    model, handle = loaded
    rebuilt = layer_types(handle.logits_model)
    assert rebuilt["backbone/depthwise"] == rebuilt["backbone/two_each"] == "DepthwiseGroupedConv2D"
    assert rebuilt["backbone/four_channels_a_group"] == "Conv2D"  # not depthwise: left as is
    assert set(rebuilt) == set(layer_types(model))  # every layer, by the same path
    assert set(layer_types(handle.model).values()) <= {"Conv2D", "Functional",
                                                       "GlobalAveragePooling2D", "Dense"}
    for old, new in zip(model.weights, handle.logits_model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))


def test_the_rebuilt_model_computes_the_model_and_its_gradients(loaded):
    import keras
    import tensorflow as tf

    model, handle = loaded
    x = tf.constant(np.random.default_rng(1).uniform(0, 1, (5, 12, 12, 3)).astype("float32"))
    np.testing.assert_allclose(keras.ops.softmax(handle.logits(x)).numpy(),
                               np.asarray(model(x)), atol=1e-6)
    stripped = keras.Model(model.inputs, model.get_layer("backbone")(model.inputs[0]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ours = handle.logits_model.get_layer("backbone")(x)
        theirs = stripped(x)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours, x).numpy(), tape.gradient(theirs, x).numpy(),
                               atol=1e-5)


def test_copies_keep_the_depthwise_layers_and_share_the_traces(loaded):
    from auditor.inputs.copies import scratch_copy
    from auditor.inputs.traces import ORIGIN

    _, handle = loaded
    scratch = scratch_copy(handle)
    assert layer_types(scratch.logits_model) == layer_types(handle.logits_model)
    assert scratch.compiled.get(ORIGIN) is handle


def test_lrp_conserves_relevance_through_the_depthwise_layers(tmp_path):
    """LRP's rules call a convolution's own ``convolution_op``: the depthwise one here."""
    from auditor.attribution import attribute
    from auditor.inputs.models import load_model

    path = tmp_path / "bias_free.keras"
    grouped_model(seed=2, bias=False).save(path)
    handle = load_model(str(path), input_range="0-1")
    assert "DepthwiseGroupedConv2D" in layer_types(handle.logits_model).values()
    x = np.random.default_rng(3).uniform(0, 1, (2, 12, 12, 3)).astype("float32")
    logits = handle.logits(x).numpy()
    targets = logits.argmax(axis=1)
    maps = attribute(handle, x, targets, "lrp_epsilon", epsilon=1e-9)
    np.testing.assert_allclose(maps.reshape(2, -1).sum(axis=1),
                               logits[np.arange(2), targets], rtol=1e-3)


def test_a_model_without_depthwise_grouped_convolutions_is_left_as_it_is():
    import keras

    from auditor.inputs.depthwise import run_depthwise

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    assert run_depthwise(model, (8, 8, 3)) is model
