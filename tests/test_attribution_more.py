"""VarGrad, SquareGrad, expected gradients (GradientSHAP) and RISE: each method's own promise
and their listing in ``auditor methods`` (batching and contrast: the registry's property tests
in test_attribution.py)."""

from __future__ import annotations

import numpy as np
from test_attribution import saved_handle

from auditor.methods.attribution import attribute
from auditor.methods.attribution.registry import describe_methods


def test_without_noise_vargrad_is_zero_and_squaregrad_is_the_squared_gradient(digits_handle,
                                                                             digits_test):
    x, y = digits_test[0][:6], digits_test[1][:6]
    gradient = attribute(digits_handle, x, y, "gradient")
    square = attribute(digits_handle, x, y, "squaregrad", samples=3, noise=0.0)
    variance = attribute(digits_handle, x, y, "vargrad", samples=3, noise=0.0)
    np.testing.assert_allclose(square, gradient ** 2, rtol=1e-4, atol=1e-9)
    assert np.abs(variance).max() <= 1e-6 * (gradient ** 2).max()
    noisy = attribute(digits_handle, x, y, "vargrad", samples=8)
    assert noisy.min() >= 0 and noisy.max() > 0


def test_expected_gradients_add_up_to_the_score_minus_its_mean_over_the_references(
        digits_handle, digits_test):
    x, y = digits_test[0][:4], digits_test[1][:4]
    references = digits_test[0][100:140]
    maps = attribute(digits_handle, x, y, "gradient_shap", samples=400, references=references)
    logits = digits_handle.logits(np.concatenate([x, references])).numpy()
    gap = logits[np.arange(4), y] - logits[4:][:, y].mean(axis=0)
    np.testing.assert_allclose(maps.reshape(4, -1).sum(axis=1), gap, rtol=0.15)


def test_rise_finds_the_pixels_a_linear_model_reads(tmp_path):
    import keras

    inputs = keras.Input((12, 12, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    weights = np.zeros((144, 2), np.float32)
    region = np.zeros((12, 12), bool)
    region[:5, :5] = True
    weights[region.ravel(), 0] = 1.0
    model.layers[-1].set_weights([weights, np.zeros(2, np.float32)])
    handle = saved_handle(model, tmp_path, "linear")
    maps = attribute(handle, np.ones((2, 12, 12, 1), np.float32), [0, 0], "rise", masks=300)
    for heat in maps[..., 0]:  # RISE maps carry an offset (the mean score): compare ranks
        top = np.argsort(heat.ravel())[-region.sum():]
        assert region.ravel()[top].mean() >= 0.8


def test_auditor_methods_lists_the_new_methods_with_their_options():
    text = describe_methods()
    for name, option in [("vargrad", "noise"), ("squaregrad", "samples"),
                         ("gradient_shap", "references"), ("rise", "masks"),
                         ("lrp_epsilon", "epsilon"), ("lrp_gamma", "gamma"),
                         ("lrp_alpha_beta", "beta"), ("lrp", "input_rule")]:
        block = text.split(f"\n{name}\n", 1)[1].split("\n\n", 1)[0]
        assert option in block
