"""Our maps against tf-explain's on the same model and class, and where tf-explain breaks.

tf-explain 0.3.1 under Keras 3, as these tests pin down:
- VanillaGradients and IntegratedGradients work. VanillaGradients strips the head only when the
  last layer is a separate activation layer (Softmax, Activation, ...); with
  ``Dense(activation="softmax")`` it warns and differentiates the *probability*. Its
  ``explain`` returns a rendered grid, so we compare its ``compute_gradients`` core.
  IntegratedGradients' core returns the mean path gradient (endpoints included, from a black
  baseline) without the (input - baseline) factor, and differentiates the model's output as is.
- GradCAM cannot infer its layer (``Layer.output_shape`` is gone in Keras 3) and fails on a
  Sequential model even with a layer name (``model.output`` is undefined there); with a
  functional model and a named layer it works.
- SmoothGrad fails on a Sequential model for the same reason, works on a functional one.
- OcclusionSensitivity runs, but fills patches with 127.5 (it assumes 0-255 inputs) and loops
  over images in Python.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from auditor.methods.attribution import attribute

tf_explain = pytest.importorskip("tf_explain")


def small_model(head: str):
    """Conv net on 12x12 RGB; head 'dense-softmax', 'softmax-layer' or 'logits'."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    if head == "dense-softmax":
        out = keras.layers.Dense(4, activation="softmax")(h)
    elif head == "softmax-layer":
        out = keras.layers.Softmax()(keras.layers.Dense(4)(h))
    else:
        out = keras.layers.Dense(4)(h)
    return keras.Model(inputs, out)


def handle_of(model, tmp_path):
    from auditor.inputs.models import load_model

    path = tmp_path / "model.keras"
    model.save(path)
    return load_model(str(path), input_range="0-1")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (5, 12, 12, 3)).astype(np.float32)


@pytest.mark.parametrize("head, score", [("dense-softmax", "softmax"), ("logits", "logit")])
def test_vanilla_gradients_agree_with_tf_explain(tmp_path, images, head, score):
    from tf_explain.core import VanillaGradients

    model = small_model(head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unsupported model architecture": it keeps the head
        score_model = VanillaGradients().get_score_model(model)
    theirs = VanillaGradients.compute_gradients(images, score_model, 2).numpy()
    ours = attribute(handle_of(model, tmp_path), images, [2] * 5, "gradient", score=score)
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())


def test_tf_explain_strips_a_separate_softmax_layer_so_its_gradients_are_of_logits(tmp_path,
                                                                                  images):
    from tf_explain.core import VanillaGradients

    model = small_model("softmax-layer")
    score_model = VanillaGradients().get_score_model(model)
    theirs = VanillaGradients.compute_gradients(images, score_model, 1).numpy()
    logits_model = small_model("logits")
    logits_model.set_weights(model.get_weights())
    ours = attribute(handle_of(logits_model, tmp_path), images, [1] * 5, "gradient")
    np.testing.assert_allclose(ours, theirs, atol=1e-5 * np.abs(theirs).max())


def test_integrated_gradients_agree_with_tf_explain(tmp_path, images):
    from tf_explain.core import IntegratedGradients

    model = small_model("dense-softmax")
    steps = 200
    path = IntegratedGradients.generate_interpolations(images, steps)
    mean_gradient = IntegratedGradients.get_integrated_gradients(path, model, 3, steps).numpy()
    theirs = images * mean_gradient  # their core leaves out the (input - baseline) factor
    ours = attribute(handle_of(model, tmp_path), images, [3] * 5, "integrated_gradients",
                     steps=steps, score="softmax")
    error = np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
    assert error < 0.02


def test_gradcam_agrees_with_tf_explain_where_tf_explain_works(tmp_path, images):
    import tensorflow as tf
    from tf_explain.core import GradCAM

    model = small_model("dense-softmax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conv, grads = GradCAM.get_gradients_and_filters(model, images, "conv", 0, False)
    cams = np.maximum(np.stack(GradCAM.generate_ponderated_output(conv, grads)), 0)
    theirs = tf.image.resize(cams[..., None], (12, 12)).numpy()
    ours = attribute(handle_of(model, tmp_path), images, [0] * 5, "gradcam", score="softmax")
    np.testing.assert_allclose(ours[..., :1], theirs, atol=1e-5 * np.abs(theirs).max())


def test_which_tf_explain_methods_break_under_keras_3(images):
    import keras
    from tf_explain.core import GradCAM, OcclusionSensitivity, SmoothGrad

    functional = small_model("dense-softmax")
    sequential = keras.Sequential([keras.Input((12, 12, 3)), *functional.layers[1:]])
    with pytest.raises(AttributeError, match="output_shape"):
        GradCAM().explain((images, None), functional, 0)
    with pytest.raises(AttributeError, match="never been called"):
        GradCAM().explain((images, None), sequential, 0, layer_name="conv")
    with pytest.raises(AttributeError, match="never been called"):
        SmoothGrad().explain((images, None), sequential, 0, num_samples=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert GradCAM().explain((images, None), functional, 0, layer_name="conv").ndim == 3
    assert SmoothGrad().explain((images, None), functional, 0, num_samples=2).ndim == 2
    grid = OcclusionSensitivity().explain((images, None), functional, 0, patch_size=4)
    assert grid.ndim == 3  # a rendered picture, not maps
