"""Trust in saliency: the randomisation sanity check, faithfulness curves, localisation."""

from __future__ import annotations

import numpy as np
import pytest

from auditor.errors import AuditorError
from auditor.methods.attribution import attribute
from auditor.methods.attribution.faithfulness import deletion_insertion, pixel_order, random_maps
from auditor.methods.attribution.localisation import saliency_box
from auditor.methods.attribution.sanity import (
    cascading_randomisation,
    rank_correlation,
    reinitialise,
    ssim,
    stage_indices,
    weighted_layers,
)
from auditor.methods.attribution.smoothing import smooth_map


def test_sanity_check_flags_a_method_that_ignores_the_weights(digits_handle, digits_test,
                                                             edge_detector):
    x, y = digits_test[0][:6], digits_test[1][:6]
    before = [w.copy() for w in digits_handle.model.get_weights()]
    result = cascading_randomisation(digits_handle, x, y, [edge_detector, "gradient"],
                                     max_stages=3)
    assert result.stages == ["predictions", "conv3", "conv1"]
    assert result.randomised == [1, 3, 5]
    assert np.allclose(result.rank_correlation[edge_detector], 1.0)
    assert np.allclose(result.ssim[edge_detector], 1.0)
    correlation, similarity = result.final("gradient")
    assert correlation < 0.6 and similarity < 0.6
    assert result.examples["gradient"].shape == (4, 32, 32)
    for old, new in zip(before, digits_handle.model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)  # only the copy was randomised


def test_reinitialising_changes_every_weighted_layer_of_a_nested_model():
    import keras

    from auditor.inputs.models import ModelHandle, input_transform
    from auditor.methods.attribution.sanity import randomisable_copy

    backbone = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False,
                                              weights=None, alpha=0.35)
    model = keras.Sequential([keras.Input((32, 32, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, name="head")])
    handle = ModelHandle(model, model, "mem", "m", "", (32, 32, 3), 3, input_transform("0-1", 3),
                         "logits")
    copy = randomisable_copy(handle)
    layers = weighted_layers(copy.logits_model)
    assert layers[0][0] == "head" and layers[-1][0].endswith("/Conv1")
    assert any(path.endswith("_depthwise") for path, _ in layers)
    randomly_initialised = [layer for path, layer in layers
                            if path == "head" or path.endswith(("/Conv_1", "_depthwise"))]
    for seed, layer in enumerate(randomly_initialised[:4]):
        kernels = [w.numpy().copy() for w in layer.weights]
        reinitialise(layer, seed)
        assert any(not np.array_equal(k, w.numpy()) for k, w in zip(kernels, layer.weights,
                                                                     strict=True))
    np.testing.assert_array_equal(model.layers[-1].kernel.numpy(),
                                  handle.model.layers[-1].kernel.numpy())


def test_reinitialising_refuses_to_pass_off_unchanged_weights_as_random():
    import keras

    layer = keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(seed=7))
    layer.build((None, 3))
    with pytest.raises(AuditorError, match="left its weights unchanged"):
        reinitialise(layer, seed=7)  # the same seed draws the very same weights


def test_stage_indices_spread_evenly_and_keep_the_last():
    assert stage_indices(5, None) == [0, 1, 2, 3, 4]
    assert stage_indices(52, 4) == [0, 17, 34, 51]
    assert stage_indices(52, 1) == [51]  # every layer randomised, not the top one alone


def test_rank_correlation_and_ssim_behave_as_defined():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.uniform(size=(3, 20, 20)), rng.uniform(size=(3, 20, 20))
    expected = [spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(3)]
    np.testing.assert_allclose(rank_correlation(a, b), expected, atol=1e-10)
    np.testing.assert_allclose(rank_correlation(a, a), 1.0)
    assert rank_correlation(a, np.zeros_like(a)).tolist() == [0, 0, 0]
    np.testing.assert_allclose(ssim(a, a), 1.0)
    blurred = smooth_map(a[..., None], 2.0)[..., 0]
    assert (ssim(a, blurred) < 0.5).all() and (ssim(blurred, smooth_map(blurred[..., None],
                                                                        0.5)[..., 0]) > 0.8).all()


def test_ssim_agrees_with_tensorflows(digits_test):
    import tensorflow as tf

    a = digits_test[0][:4, ..., 0].astype(np.float64)
    b = np.clip(a + np.random.default_rng(1).normal(0, 0.1, a.shape), 0, 1)
    ours = ssim(a, b)
    theirs = tf.image.ssim(tf.constant(a[..., None]), tf.constant(b[..., None]), max_val=1.0)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=0.05)


def test_gradient_is_more_faithful_than_a_random_map_and_an_inverted_one(digits_handle,
                                                                         digits_test):
    x, y = digits_test[0][:32], digits_test[1][:32]
    maps = attribute(digits_handle, x, y, "gradient_x_input")
    good = deletion_insertion(digits_handle, x, y, maps, steps=10)
    chance = deletion_insertion(digits_handle, x, y, random_maps(x), steps=10)
    inverted = deletion_insertion(digits_handle, x, y, -maps, steps=10)
    assert good.deletion_auc < chance.deletion_auc < inverted.deletion_auc
    assert good.score > chance.score + 0.2
    assert good.fractions[0] == 0 and good.fractions[-1] == 1
    assert good.deletion[0] == pytest.approx(good.insertion[-1], abs=1e-5)  # the intact images


def test_pixel_order_ranks_the_largest_value_first_and_breaks_ties_at_random():
    maps = np.zeros((1, 4, 4, 1), np.float32)
    maps[0, 2, 3] = 5.0
    ranks = pixel_order(maps, seed=0)
    assert ranks[0, 2, 3] == 0 and sorted(ranks.ravel()) == list(range(16))
    assert not np.array_equal(pixel_order(maps, seed=1), ranks)


def test_grabcut_box_encloses_the_salient_object():
    image = np.full((48, 48, 3), 0.1, np.float32)
    image[10:30, 20:40] = (0.9, 0.4, 0.1)
    saliency = np.random.default_rng(0).uniform(0, 0.05, (48, 48)).astype(np.float32)
    saliency[10:30, 20:40] = 0.2  # the object's rim is faintly salient,
    saliency[14:26, 24:36] = 1.0  # its middle strongly: GrabCut grows the seed along colour
    left, top, right, bottom = saliency_box(image, saliency)
    assert abs(left - 20) <= 2 and abs(top - 10) <= 2 and abs(right - 40) <= 2
    assert abs(bottom - 30) <= 2
    assert saliency_box(image, np.ones((48, 48))) == (0, 0, 48, 48)


def test_smooth_map_blurs_only_height_and_width():
    maps = np.zeros((2, 9, 9, 3), np.float32)
    maps[0, 4, 4, 1] = 1.0
    smoothed = smooth_map(maps, 1.0)
    assert smoothed[0, 4, 4, 1] < 1 and smoothed[0, 4, 5, 1] > 0
    assert smoothed[0, ..., 0].max() == 0 and smoothed[1].max() == 0
    assert smoothed.sum() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(smooth_map(maps, 0), maps)
