"""LRP's stabilisers are relative to each layer's pre-activations, so the maps do not depend on
the scale of the logits: a model and the same model with its last layer scaled by 1e-6 give maps
of the same shape (docs/lrp.md), for every registered LRP method, with and without a contrast."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from test_attribution import images_for, mobilenet_nested, saved_handle

from auditor.methods.attribution import attribute
from auditor.methods.attribution.registry import METHODS

LRP_METHODS = sorted(name for name in METHODS if name.startswith("lrp"))
SCALE = 1e-6


def scaled_copy(model, folder, name: str):
    """A copy of ``model`` whose last layer's kernel and bias are multiplied by ``SCALE``."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    last = copy.layers[-1]
    last.set_weights([w * SCALE for w in last.get_weights()])
    return saved_handle(copy, folder, name)


def assert_same_shape(handle, small, x, targets, contrast):
    for method in LRP_METHODS:
        for other in (None, contrast):
            maps = attribute(handle, x, targets, method, contrast=other)
            tiny = attribute(small, x, targets, method, contrast=other)
            assert np.abs(tiny).max() > 0, method
            for a, b in zip(maps.reshape(len(x), -1), tiny.reshape(len(x), -1), strict=True):
                rho = spearmanr(a, b).statistic
                assert rho > 0.99, f"{method} (contrast {other is not None}): {rho:.4f}"


def test_lrp_maps_of_the_digits_cnn_keep_their_shape_when_its_logits_shrink(
        tmp_path, digits_handle, digits_test):
    import keras

    model = keras.models.load_model(digits_handle.path)
    small = scaled_copy(model, tmp_path, "small")
    x, y = digits_test[0][:6], digits_test[1][:6]
    assert_same_shape(digits_handle, small, x, y, (y + 1) % 10)


@pytest.mark.slow
def test_lrp_maps_of_an_untrained_mobilenetv2_keep_their_shape_when_its_logits_shrink(tmp_path):
    import keras

    keras.utils.set_random_seed(2)
    model = mobilenet_nested(32, functional_outer=True)
    handle, small = saved_handle(model, tmp_path, "mnv2"), scaled_copy(model, tmp_path, "tiny")
    x = images_for(handle, 3)
    assert_same_shape(handle, small, x, np.array([0, 1, 2]), np.array([1, 2, 0]))
