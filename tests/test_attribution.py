"""The attribution engine: every method batched with per-sample targets, on every model shape.

Property tests after Captum and Xplique: batched equals one-at-a-time, Integrated Gradients is
complete, contrastive maps are differences, and a model trained on a planted patch is caught
looking at it.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BACKDOOR_TARGET

from auditor.errors import AuditorError
from auditor.methods.attribution import METHODS, attribute, attribute_layer, completeness_error
from auditor.methods.attribution.registry import describe_methods

# Every registered method is tested by what it declares (registry.Method): registering one is
# enough for these property tests to cover it.
# methods that read attention run on vision transformers: tests/test_vit.py holds them to the
# same promises (batched equals one at a time, empty maps for a class minus itself, sign)
ALL_METHODS = sorted(m for m in METHODS if not METHODS[m].needs_attention)
LINEAR_METHODS = [m for m in ALL_METHODS if METHODS[m].linear]
COMPLETE_METHODS = [m for m in ALL_METHODS if METHODS[m].complete]
CLASSES = 5


def tiny_sequential(channels: int):
    import keras

    return keras.Sequential([
        keras.Input((16, 16, channels)),
        keras.layers.Conv2D(6, 3, activation="relu", name="conv_a"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b"),
        keras.layers.Flatten(),
        keras.layers.Dense(CLASSES, activation="softmax"),
    ])


def tiny_functional(channels: int, name: str = "functional"):
    """A residual block: a skip connection bypasses the last conv layer."""
    import keras

    inputs = keras.Input((16, 16, channels))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    skip = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")(h)
    h = keras.layers.Add(name="add")([h, skip])
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h), name=name)


def tiny_nested(channels: int):
    """A Sequential whose first layer is a functional backbone, as in transfer learning."""
    import keras

    inputs = keras.Input((16, 16, channels))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv_a")(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="conv_b")(h)
    backbone = keras.Model(inputs, h, name="backbone")
    return keras.Sequential([keras.Input((16, 16, channels)), backbone,
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(CLASSES, activation="softmax")])


def mobilenet_nested(size: int = 32, functional_outer: bool = False):
    """MobileNetV2(weights=None) as the backbone of a small classifier."""
    import keras

    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), include_top=False,
                                              weights=None, alpha=0.35)
    if functional_outer:
        inputs = keras.Input((size, size, 3))
        h = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
        return keras.Model(inputs, keras.layers.Dense(CLASSES)(h), name="classifier")
    return keras.Sequential([keras.Input((size, size, 3)), backbone,
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(CLASSES, activation="softmax")])


BUILDERS = {
    "sequential-grey": lambda: tiny_sequential(1),
    "sequential-rgb": lambda: tiny_sequential(3),
    "functional-grey": lambda: tiny_functional(1),
    "functional-rgb": lambda: tiny_functional(3),
    "nested-grey": lambda: tiny_nested(1),
    "nested-mobilenetv2-rgb": lambda: mobilenet_nested(32),
}


def saved_handle(model, folder, name: str):
    """A handle loaded from a saved file, exactly as the CLI would load it."""
    from auditor.inputs.models import load_model

    path = folder / f"{name}.keras"
    model.save(path)
    return load_model(str(path), input_range="0-1")


@pytest.fixture(scope="module", params=list(BUILDERS))
def model_handle(request, tmp_path_factory):
    import keras

    keras.utils.set_random_seed(1)
    return saved_handle(BUILDERS[request.param](), tmp_path_factory.mktemp("models"),
                        request.param)


def images_for(handle, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *handle.input_shape)).astype(np.float32)


def fast_options(method: str) -> dict:
    return {"smoothgrad": {"samples": 6}, "integrated_gradients": {"steps": 8},
            "occlusion": {"patch": 8, "stride": 4}, "vargrad": {"samples": 6},
            "squaregrad": {"samples": 6}, "gradient_shap": {"samples": 6},
            "rise": {"masks": 40, "cells": 4},
            "lrp_alpha_beta": {"alpha": 2.0, "beta": 1.0}}.get(method, {})  # beta 0: >= 0


@pytest.mark.parametrize("method", ALL_METHODS)
def test_batched_attribution_with_per_sample_targets_equals_one_sample_at_a_time(model_handle,
                                                                                  method):
    x = images_for(model_handle, 33)
    targets = np.random.default_rng(1).integers(0, CLASSES, 33)
    maps = attribute(model_handle, x, targets, method, **fast_options(method))
    assert maps.shape == x.shape and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    # LRP's stabilisers can absorb all of an untrained MobileNetV2's tiny (1e-12) logits: all-
    # zero maps, which the reliability card reports as unmeasurable
    untrained_lrp = method.startswith("lrp") and "mobilenet" in model_handle.name
    if not METHODS[method].needs_layer and not untrained_lrp:  # a ReLU can zero a layer map
        assert np.abs(maps).max() > 0
    if not METHODS[method].signed:
        assert maps.min() >= 0, f"{method} declares unsigned maps"
    scale = np.abs(maps).max() + 1e-12
    for i in (0, 17, 32):
        single = attribute(model_handle, x[i:i + 1], targets[i:i + 1], method,
                           **fast_options(method))
        np.testing.assert_allclose(single[0], maps[i], atol=2e-4 * scale, rtol=1e-3)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_explaining_target_minus_itself_gives_empty_maps(model_handle, method):
    x = images_for(model_handle, 3, seed=2)
    targets = np.array([0, 3, 4])
    maps = attribute(model_handle, x, targets, method, contrast=targets, **fast_options(method))
    assert np.abs(maps).max() < 1e-5


def test_a_small_memory_budget_splits_work_without_changing_results(digits_handle, digits_test):
    from auditor.methods.attribution.registry import budget_for, row_bytes

    x, y = digits_test[0][:10], digits_test[1][:10]
    small = 3 * row_bytes(digits_handle)
    assert budget_for(digits_handle, small).backward == 3
    for method in ("gradient", "smoothgrad", "integrated_gradients", "occlusion"):
        whole = attribute(digits_handle, x, y, method, **fast_options(method))
        squeezed = attribute(digits_handle, x, y, method, memory_budget=small,
                             **fast_options(method))
        np.testing.assert_allclose(squeezed, whole, atol=1e-5 * np.abs(whole).max())


@pytest.mark.parametrize("method", LINEAR_METHODS)
def test_contrastive_attribution_is_target_minus_contrast(digits_handle, digits_test, method):
    x, y = digits_test[0][:6], digits_test[1][:6]
    other = (y + 3) % 10
    options = fast_options(method)
    both = attribute(digits_handle, x, y, method, contrast=other, **options)
    apart = (attribute(digits_handle, x, y, method, **options)
             - attribute(digits_handle, x, other, method, **options))
    np.testing.assert_allclose(both, apart, atol=1e-4 * np.abs(apart).max())


def test_absolute_methods_take_the_absolute_value_of_the_contrastive_gradient(digits_handle,
                                                                              digits_test):
    x, y = digits_test[0][:6], digits_test[1][:6]
    other = (y + 1) % 10
    signed = attribute(digits_handle, x, y, "gradient", contrast=other)
    np.testing.assert_allclose(attribute(digits_handle, x, y, "gradient_abs", contrast=other),
                               np.abs(signed), atol=1e-7)


def test_saliency_is_the_channel_maximum_of_the_absolute_gradient(model_handle):
    x = images_for(model_handle, 4)
    targets = np.arange(4) % CLASSES
    grads = attribute(model_handle, x, targets, "gradient")
    saliency = attribute(model_handle, x, targets, "saliency")
    expected = np.broadcast_to(np.abs(grads).max(axis=-1, keepdims=True), x.shape)
    np.testing.assert_allclose(saliency, expected, atol=1e-7)


def test_softmax_and_log_softmax_scores_match_the_models_own_probabilities(digits_handle,
                                                                           digits_test):
    import tensorflow as tf

    x, y = digits_test[0][:5], digits_test[1][:5]
    images = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(images)
        probs = digits_handle.model(images)  # the saved model ends in softmax
        picked = tf.gather(probs, y, batch_dims=1)
        total = tf.reduce_sum(picked)
    expected = tape.gradient(total, images).numpy()
    got = attribute(digits_handle, x, y, "gradient", score="softmax")
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    log_grad = attribute(digits_handle, x, y, "gradient", score="log_softmax")
    ratio = expected / picked.numpy().reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(log_grad, ratio, atol=1e-4 * np.abs(ratio).max())


def test_integrated_gradients_is_complete_within_five_percent(digits_handle, digits_test):
    x, y = digits_test[0][:24], digits_test[1][:24]
    for baseline in ("zeros", "blur", np.full(x.shape[1:], 0.5, np.float32)):
        maps = attribute(digits_handle, x, y, "integrated_gradients", steps=64, baseline=baseline)
        errors = completeness_error(digits_handle, x, y, maps, baseline=baseline)
        assert errors.max() < 0.05, (baseline if isinstance(baseline, str) else "grey", errors)


@pytest.mark.parametrize("method", COMPLETE_METHODS)
def test_complete_methods_sum_to_the_score_difference_from_black(digits_handle, digits_test,
                                                               method):
    x, y = digits_test[0][:8], digits_test[1][:8]
    maps = attribute(digits_handle, x, y, method, **{"integrated_gradients": {"steps": 64}}.get(
        method, {}))
    logits = np.asarray(digits_handle.logits(np.concatenate([x, np.zeros_like(x)])))
    difference = logits[np.arange(8), y] - logits[8 + np.arange(8), y]
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), difference,
                               atol=0.05 * np.abs(difference).max())


def test_registered_facts_match_the_maps(digits_handle, digits_test):
    """The facts the report reads (signed) are the maps' own: unsigned methods are never
    negative, and the signed ones are on these digits."""
    x, y = digits_test[0][:4], digits_test[1][:4]
    for method in ALL_METHODS:
        maps = attribute(digits_handle, x, y, method, **fast_options(method))
        assert (maps.min() < 0) == METHODS[method].signed, method


def test_completeness_error_exposes_maps_that_do_not_add_up(digits_handle, digits_test):
    x, y = digits_test[0][:24], digits_test[1][:24]
    maps = attribute(digits_handle, x, y, "gradient")
    assert np.median(completeness_error(digits_handle, x, y, maps)) > 0.2


def test_integrated_gradients_takes_one_baseline_per_image(digits_handle, digits_test):
    x, y = digits_test[0][:5], digits_test[1][:5]
    baselines = np.stack([np.full(x.shape[1:], v, np.float32) for v in (0, .1, .2, .3, .4)])
    maps = attribute(digits_handle, x, y, "integrated_gradients", steps=16, baseline=baselines,
                     batch_size=2)
    for i in (0, 4):
        alone = attribute(digits_handle, x[i:i + 1], y[i:i + 1], "integrated_gradients",
                          steps=16, baseline=baselines[i])
        np.testing.assert_allclose(maps[i], alone[0], atol=1e-5 * np.abs(alone).max())


def test_gradcam_passes_over_padding_and_cropping_at_the_end():
    """NASNet's factorised reduction ends a small input's spatial maps on a padded, cropped
    shift of one branch: Grad-CAM takes the layer that shift reads, and so do the stage ends
    the layers' maps and concepts read (NASNetMobile's three compared layers were its
    cropping2d_1 to _3 after Grad-CAM had been fixed)."""
    import keras

    L = keras.layers
    from auditor.inputs.layers import last_conv_layer, stage_ends

    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, activation="relu", name="cell")(inputs)
    shifted = L.Cropping2D(((1, 0), (1, 0)))(L.ZeroPadding2D(((0, 1), (0, 1)))(h))
    pooled = L.Concatenate()([L.GlobalAveragePooling2D()(h),
                              L.GlobalAveragePooling2D()(shifted)])
    model = keras.Model(inputs, L.Dense(2)(pooled))
    assert last_conv_layer(model) == "cell"
    assert stage_ends(model) == ["cell"]


def test_gradcam_and_the_stage_ends_stay_on_the_trunk():
    """A layer on one branch is no layer to explain the logit by: NASNetMobile's last spatial
    layer, past the crops, was ``adjust_relu_1_9``, read only by the next cell's subsampled skip
    path (Grad-CAM all zero on 12 of 12 images), InceptionV3's a branch of its last reduction.
    Grad-CAM and the stage ends take the last layer nothing goes around, or a join (the cell's
    concatenation); inside a nested backbone too."""
    import keras

    L = keras.layers
    from auditor.inputs.layers import last_conv_layer, stage_ends, trunk_layers

    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, activation="relu", name="cell")(inputs)
    skip = L.AveragePooling2D(1, strides=2, name="skip_pool")(L.ReLU(name="skip_relu")(h))
    reduced = L.Conv2D(4, 3, strides=2, padding="same", name="reduce")(h)
    joined = L.Concatenate(name="joined")([reduced, skip])
    side = L.Conv2D(4, 3, strides=2, padding="same", name="side")(L.ReLU(name="side_relu")(h))
    pooled = L.Concatenate()([L.GlobalAveragePooling2D()(joined),
                              L.GlobalAveragePooling2D()(side)])
    model = keras.Model(inputs, L.Dense(2)(pooled), name="backbone")
    names = [layer.name for layer in model.layers]  # the last 6 x 6 and 3 x 3 are branches
    assert names.index("side_relu") > names.index("skip_relu") > names.index("cell")
    assert names.index("side") > names.index("joined")
    trunk = {layer.name for layer in model.layers if id(layer) in trunk_layers(model)}
    assert {"cell", "joined"} <= trunk and not trunk & {"skip_relu", "side_relu", "side"}
    assert last_conv_layer(model) == "joined"
    assert stage_ends(model) == ["cell", "joined"]
    outer_inputs = keras.Input((8, 8, 3))
    outer = keras.Model(outer_inputs, L.Dense(2)(model(outer_inputs)))
    assert last_conv_layer(outer) == "backbone/joined"


def test_gradcam_finds_the_last_conv_layer_inside_a_nested_backbone(tmp_path):
    from auditor.inputs.layers import find_layer, last_conv_layer

    handle = saved_handle(tiny_nested(1), tmp_path, "nested")
    assert last_conv_layer(handle.logits_model) == "backbone/conv_b"
    assert find_layer(handle.logits_model, "conv_b").name == "conv_b"
    x = images_for(handle, 4)
    targets = np.arange(4)
    auto = attribute(handle, x, targets, "gradcam")
    np.testing.assert_allclose(attribute(handle, x, targets, "gradcam", layer="conv_b"), auto)
    earlier = attribute(handle, x, targets, "gradcam", layer="backbone/conv_a")
    assert not np.allclose(earlier, auto)


def test_gradcam_equals_cam_on_a_global_average_pooling_head(tmp_path):
    """Selvaraju et al.: behind global average pooling and a dense layer, Grad-CAM is CAM
    (Zhou et al.), the layer's channels weighted by the class's dense weights."""
    from auditor.inputs.layers import activation_model
    from auditor.methods.attribution.gradcam import upsample

    handle = saved_handle(tiny_functional(1), tmp_path, "gap")
    x = images_for(handle, 3)
    targets = np.array([0, 2, 4])
    activation = activation_model(handle, "add")(x).numpy()
    weights = handle.logits_model.layers[-1].kernel.numpy()[:, targets]
    positions = activation.shape[1] * activation.shape[2]
    cam = np.maximum(np.einsum("nhwc,cn->nhw", activation, weights), 0) / positions
    np.testing.assert_allclose(attribute(handle, x, targets, "gradcam"), upsample(cam, x.shape),
                               atol=1e-5 * cam.max())


def test_layer_taps_work_for_a_backbone_nested_in_a_functional_model(tmp_path):
    import tensorflow as tf

    from auditor.inputs.layers import activation_and_logits, activation_model, last_conv_layer

    handle = saved_handle(mobilenet_nested(64, functional_outer=True), tmp_path, "outer")
    layer = last_conv_layer(handle.logits_model)
    assert layer.endswith("/out_relu")
    x = tf.constant(images_for(handle, 2))
    with tf.GradientTape() as tape:
        activation, logits = activation_and_logits(handle, layer)(x)
        score = tf.reduce_sum(logits[:, 1])
    grads = tape.gradient(score, activation)
    np.testing.assert_allclose(logits.numpy(), handle.logits(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(activation_model(handle, layer)(x).numpy(), activation.numpy(),
                               atol=1e-6)
    assert activation.shape == (2, 2, 2, 1280) and np.abs(grads.numpy()).max() > 0


def test_layer_taps_reach_a_block_inside_a_backbone_made_from_a_list_of_inputs(tmp_path):
    """ConvNeXt keeps its downsampling in Sequential blocks; under a head, made as users make a
    backbone (``keras.Model(base.inputs, ...)``, inputs a list of one), Grad-CAM's layer is two
    models down, and rebuilding the backbone tapped crashed on the list (nested ConvNeXtTiny's
    attribution, concepts and Clever Hans)."""
    import keras
    import tensorflow as tf

    from auditor.inputs.layers import activation_and_logits, last_conv_layer

    L = keras.layers
    keras.utils.set_random_seed(0)
    block = keras.Sequential([L.LayerNormalization(name="norm"), L.Conv2D(4, 6)],  # to 1 x 1
                             name="down")
    inputs = keras.Input((8, 8, 3))
    base = keras.Model(inputs, L.GlobalAveragePooling2D()(block(L.Conv2D(4, 3)(inputs))))
    backbone = keras.Model(base.inputs, base.output, name="backbone")
    outer_inputs = keras.Input((8, 8, 3))
    handle = saved_handle(keras.Model(outer_inputs, L.Dense(3)(backbone(outer_inputs))),
                          tmp_path, "listed")
    layer = last_conv_layer(handle.logits_model)
    assert layer == "backbone/down/norm"
    x = tf.constant(images_for(handle, 2))
    activation, logits = activation_and_logits(handle, layer)(x)
    np.testing.assert_allclose(logits.numpy(), handle.logits(x).numpy(), atol=1e-5)
    assert activation.shape == (2, 6, 6, 4)
    assert np.isfinite(attribute(handle, x.numpy(), np.array([0, 1]), "gradcam")).all()


def tiny_convnext(seed: int = 0):
    """ConvNeXt's shape in miniature: a patchify stem, a residual block (depthwise conv,
    LayerNorm, GELU expansion), and a downsampling LayerNorm before a strided conv to 1 x 1, so
    the last spatial layer on the trunk, Grad-CAM's default, is that LayerNorm."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    h = L.Conv2D(16, 4, strides=4, name="stem")(inputs)
    r = L.LayerNormalization(epsilon=1e-6)(L.DepthwiseConv2D(3, padding="same")(h))
    r = L.Dense(16)(L.Dense(32, activation="gelu", name="expand")(r))
    h = L.LayerNormalization(epsilon=1e-6, name="down_norm")(L.Add(name="block")([h, r]))
    h = L.Conv2D(32, 4, strides=4, name="down")(h)
    return keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(h)))


def test_gradcam_pp_says_why_it_does_not_apply_on_a_layer_norm(tmp_path):
    """Nested ConvNeXtTiny's Grad-CAM++ was all zero on 12 of 12 images at its default layer, a
    downsampling LayerNorm: its channels sum to zero at every position, Grad-CAM++'s weights
    are never negative, and its alphas (derived for rectified maps) favour the channels whose
    sum is negative. Reproduced here, then the method says so in one line; Grad-CAM (signed
    weights) still applies there, and Grad-CAM++ on a rectified layer (GELU's) runs."""
    from auditor.methods.attribution.gradcam import gradcam_pp_weights
    from auditor.methods.attribution.layer import layer_gradients, resolve_layer
    from auditor.methods.attribution.reliability import degenerate_reason
    from auditor.steps.card import compute_maps

    handle = saved_handle(tiny_convnext(), tmp_path, "convnext")
    x = images_for(handle, 8)
    targets = handle.logits(x).numpy().argmax(axis=1)
    assert resolve_layer(handle, None) == resolve_layer(handle, None, rectified=True) == "down_norm"
    activation, grads = layer_gradients(handle, x, targets, np.full(8, -1), "logit", "down_norm")
    assert np.abs(activation.sum(axis=-1)).max() < 1e-4  # the channels cancel at each position
    cams = np.einsum("nhwc,nc->nhw", activation, gradcam_pp_weights(activation, grads))
    # the paper's formula, unguarded, rectified: the card's "not measurable" (3 of 8 here)
    assert degenerate_reason(np.maximum(cams, 0)).startswith("maps all zero")

    maps, unavailable = compute_maps(handle, x, targets, ["gradcam", "gradcam_pp"], "logit", {})
    why = unavailable["gradcam_pp"]
    assert why.startswith("Grad-CAM++ does not apply at layer 'down_norm'") and "\n" not in why
    assert why.endswith("read Grad-CAM")  # whole, not cut at the report's 400 characters
    assert "gradcam" in maps and (maps["gradcam"].reshape(8, -1).max(axis=1) > 0).all()
    rectified = attribute(handle, x, targets, "gradcam_pp", layer="expand")
    assert np.isfinite(rectified).all() and rectified.max() > 0


def test_gradcam_pp_defaults_to_the_last_rectified_layer_on_the_trunk(tmp_path):
    """DenseNet ends its trunk at 2 x 2 in a ReLU and a linear 1 x 1 convolution (``pool4_relu``,
    ``pool4_conv``): Grad-CAM reads the convolution, Grad-CAM++ the ReLU before it, and the
    report names each one's layer."""
    import keras

    from auditor.methods.attribution.layer import method_layers, resolve_layer

    L = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = L.ReLU(name="pool_relu")(L.Conv2D(8, 3, padding="same", name="block")(inputs))
    h = L.Conv2D(4, 1, name="pool_conv")(h)
    handle = saved_handle(keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(h))),
                          tmp_path, "densenet")
    assert resolve_layer(handle, None) == "pool_conv"
    assert method_layers(handle, ["gradcam", "gradcam_pp"], {}) == {
        "gradcam": {"layer": "pool_conv", "kind": "spatial"},
        "gradcam_pp": {"layer": "pool_relu", "kind": "spatial"}}
    x = images_for(handle, 2)
    np.testing.assert_allclose(attribute(handle, x, [0, 1], "gradcam_pp"),
                               attribute(handle, x, [0, 1], "gradcam_pp", layer="pool_relu"))
    residual = saved_handle(tiny_functional(3), tmp_path, "residual")  # a sum of ReLUs stays
    assert method_layers(residual, ["gradcam_pp"], {})["gradcam_pp"]["layer"] == "add"
    # two layers, two traces of the layer gradient: the card's plan counts the second
    import dataclasses

    from auditor.predict.plan import Facts
    from auditor.sections import attribution
    from auditor.steps.card import traced

    options = attribution.Options(methods=["gradcam", "gradcam_pp"], input_invariance=False)
    facts = attribution.model_facts(handle, options, Facts(200, (8, 8, 3), 3))
    assert facts.cam_layers == 2
    one = dataclasses.replace(facts, cam_layers=1)
    assert traced(options, facts) == traced(options, one) + 1
    assert (traced(options, dataclasses.replace(facts, twin_copy=False))
            == traced(options, dataclasses.replace(one, twin_copy=False)) + 2)


def test_layer_attribution_returns_maps_with_the_layers_shape(digits_handle, digits_test):
    x, y = digits_test[0][:7], digits_test[1][:7]
    maps = attribute_layer(digits_handle, x, y, layer="conv2")
    assert maps.shape == (7, 16, 16, 32)
    grads = attribute_layer(digits_handle, x, y, layer="conv2", method="gradient")
    assert np.abs(grads).max() > 0 and not np.allclose(maps, grads)
    assert attribute_layer(digits_handle, x, y).shape == (7, 8, 8, 64)  # conv3, the last


def test_unknown_methods_options_layers_and_bad_targets_are_clear_errors(digits_handle,
                                                                         digits_test):
    x, y = digits_test[0][:2], digits_test[1][:2]
    with pytest.raises(AuditorError, match="unknown attribution method 'nope'"):
        attribute(digits_handle, x, y, "nope")
    with pytest.raises(AuditorError, match="has no option 'steps'"):
        attribute(digits_handle, x, y, "gradient", steps=3)
    with pytest.raises(AuditorError, match="no layer named 'conv9'"):
        attribute(digits_handle, x, y, "gradcam", layer="conv9")
    with pytest.raises(AuditorError, match="target classes must lie in 0..9"):
        attribute(digits_handle, x, [0, 10], "gradient")
    with pytest.raises(AuditorError, match="2 images but 1 targets"):
        attribute(digits_handle, x, [0], "gradient")
    with pytest.raises(AuditorError, match="unknown score"):
        attribute(digits_handle, x, y, "gradient", score="probability")


def test_describe_methods_lists_every_method_with_its_options_and_defaults():
    text = describe_methods()
    for name in METHODS:
        assert f"\n{name}\n  {METHODS[name].description}\n" in text
    for option in ("steps = 32", "samples = 16", "patch = 0", "layer = None"):
        assert f"  {option} " in text


# A model trained to rely on a planted patch must be caught looking at it: conftest's
# backdoored demo CNN (a white 6x6 square in the lower right corner, 3.5 % of a 32x32 image, on
# 15 % of its training digits, all labelled BACKDOOR_TARGET), the one test_clever_hans.py and
# test_concepts.py audit. Measured on 60 test digits of other classes with the patch pasted,
# explaining BACKDOOR_TARGET: the backdoored model puts 9.6 times the patch's share of the
# |gradient| (and of the saliency) inside it and 16.4 times of Integrated Gradients'; the clean
# demo CNN 1.7 and 4.1 times. RELIES lies between the two, CLEAN above the clean gradient's.
RELIES = 6
CLEAN = 3


@pytest.fixture(scope="module")
def backdoored_handle(backdoored_model_path):
    from auditor.inputs.models import load_model

    return load_model(backdoored_model_path, input_range="0-1")


def patched_others(digits_test) -> tuple[np.ndarray, np.ndarray]:
    """The first 60 test digits of other classes than BACKDOOR_TARGET with the backdoor's
    patch pasted, and the patch's (H, W) mask."""
    from auditor.methods.shortcuts.patterns import patch

    x, y = digits_test
    others, mask = patch(x[y != BACKDOOR_TARGET][:60])
    return others, mask[0]


def inside_share(handle, images, mask, method: str) -> float:
    """The share of the maps' |relevance| for BACKDOOR_TARGET inside ``mask``, over its area."""
    mass = np.abs(attribute(handle, images, np.full(len(images), BACKDOOR_TARGET), method))
    return float(mass[:, mask].sum() / mass.sum() / mask.mean())


def test_gradient_mass_concentrates_on_a_planted_patch_the_model_relies_on(backdoored_handle,
                                                                           digits_test):
    others, mask = patched_others(digits_test)
    preds = backdoored_handle.logits_fn(others).numpy().argmax(axis=1)
    assert (preds == BACKDOOR_TARGET).mean() > 0.5  # the patch alone flips most digits
    for method in ("gradient", "saliency", "integrated_gradients"):
        ratio = inside_share(backdoored_handle, others, mask, method)
        assert ratio > RELIES, (method, ratio)


def test_a_clean_model_does_not_concentrate_on_the_corner(digits_handle, digits_test):
    others, mask = patched_others(digits_test)
    assert inside_share(digits_handle, others, mask, "gradient") < CLEAN


def test_gradcam_pp_refuses_a_layer_one_image_shows_signed_for_the_whole_batch(tmp_path):
    """Grad-CAM++'s rectified check reads the lowest activation over every image explained,
    not image by image: RECTIFIED_FLOOR is the lowest value any rectifier Keras ships can
    output, so one image below it proves the layer signed for all of them, and maps of the
    others on that layer would rest on the alphas' false premise. A linear convolution that
    goes below the floor on a bright image only: with it in the batch (in whichever chunk)
    the method does not apply; on dark images alone (never below 0) it runs."""
    import keras

    from auditor.methods.attribution.gradcam import RECTIFIED_FLOOR

    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(2, 3, padding="same", name="signed", bias_initializer="zeros",
                 kernel_initializer=keras.initializers.Constant(-0.1))(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(h)))
    handle = saved_handle(model, tmp_path, "signed")
    dark = np.zeros((3, 8, 8, 1), np.float32)
    bright = np.ones((1, 8, 8, 1), np.float32)  # -0.9 inside: below the floor of -0.375
    assert 9 * -0.1 < RECTIFIED_FLOOR
    targets = np.zeros(4, np.int32)
    assert np.isfinite(attribute(handle, dark, targets[:3], "gradcam_pp")).all()
    for size in (4, 1):  # the whole batch at once, or the bright image in a chunk of its own
        with pytest.raises(AuditorError, match="does not apply at layer 'signed'"):
            attribute(handle, np.concatenate([dark, bright]), targets, "gradcam_pp",
                      batch_size=size)
