"""LRP on Keras 3: the rules' promises (conservation, LRP-0 = gradient x input),
BatchNormalization folding, nested MobileNetV2, and a clear error for a layer it cannot pass.
Batched = one at a time and contrast = difference: the registry's property tests."""

from __future__ import annotations

import numpy as np
import pytest
from test_attribution import images_for, saved_handle

from auditor.errors import AuditorError
from auditor.methods.attribution import attribute

LRP_METHODS = ["lrp_epsilon", "lrp_gamma", "lrp_alpha_beta", "lrp"]


def bias_free_net(separable: bool = True):
    """A bias-free ReLU net with every kind of layer the walk handles: a nested block, Add,
    Concatenate, max and average pooling, shape layers and Dense. A separable convolution's
    inner depthwise step has no ReLU: its negative outputs with no positive part carry
    relevance that LRP-alpha1-beta0 drops by design, so that rule is tested without it."""
    import keras

    L = keras.layers
    inputs = keras.Input((12, 12, 3))
    h = L.Conv2D(6, 3, padding="same", use_bias=False, activation="relu")(inputs)
    inner_in = keras.Input((12, 12, 6))
    inner = L.DepthwiseConv2D(3, padding="same", use_bias=False, activation="relu")(inner_in)
    inner = L.ReLU(6.0)(L.Conv2D(6, 1, use_bias=False)(inner))
    h = L.Add()([h, keras.Model(inner_in, inner, name="block")(h)])
    h = L.MaxPooling2D()(L.ZeroPadding2D(1)(h))
    side = (L.SeparableConv2D(4, 3, padding="same", use_bias=False, activation="relu")(h)
            if separable else L.Conv2D(4, 3, padding="same", use_bias=False,
                                       activation="relu")(h))
    h = L.Concatenate()([L.AveragePooling2D(2)(h), L.AveragePooling2D(2)(side)])
    h = L.Dropout(0.5)(L.Flatten()(h))
    h = L.Dense(16, use_bias=False, activation="relu")(h)
    return keras.Model(inputs, L.Dense(4, use_bias=False)(h))


@pytest.fixture(scope="module")
def bias_free_handles(tmp_path_factory):
    import keras

    folder = tmp_path_factory.mktemp("lrp")
    handles = {}
    for separable in (True, False):
        keras.utils.set_random_seed(3)
        handles[separable] = saved_handle(bias_free_net(separable), folder, f"free{separable}")
    return handles


@pytest.fixture(scope="module")
def bias_free_handle(bias_free_handles):
    return bias_free_handles[True]


@pytest.mark.parametrize("method, options", [
    ("lrp_epsilon", {"epsilon": 1e-9}), ("lrp_gamma", {}), ("lrp_alpha_beta", {}), ("lrp", {})])
def test_relevance_sums_to_the_logit_on_a_bias_free_network(bias_free_handles, method, options):
    bias_free_handle = bias_free_handles[method != "lrp_alpha_beta"]
    x = images_for(bias_free_handle, 6)
    logits = bias_free_handle.logits(x).numpy()
    targets = logits.argmax(axis=1)  # a positive logit (the rules' stabilisers assume z != 0)
    maps = attribute(bias_free_handle, x, targets, method, **options)
    totals = maps.reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(totals, logits[np.arange(len(x)), targets], rtol=1e-3)


def test_epsilon_leaks_relevance_and_alpha_beta_keeps_only_positive_evidence(bias_free_handle):
    x = images_for(bias_free_handle, 6, seed=1)
    logits = bias_free_handle.logits(x).numpy()
    targets = logits.argmax(axis=1)
    leaky = attribute(bias_free_handle, x, targets, "lrp_epsilon", epsilon=1.0)
    picked = logits[np.arange(len(x)), targets]
    assert (leaky.reshape(len(x), -1).sum(axis=1) < picked).all()
    positive = attribute(bias_free_handle, x, targets, "lrp_alpha_beta", input_rule="zbox")
    assert positive.min() >= -1e-6 * np.abs(positive).max()


def test_lrp_zero_equals_gradient_x_input_on_a_relu_network(digits_handle, digits_test):
    x, y = digits_test[0][:12], digits_test[1][:12]
    lrp0 = attribute(digits_handle, x, y, "lrp_epsilon", epsilon=0.0)
    gxi = attribute(digits_handle, x, y, "gradient_x_input")
    np.testing.assert_allclose(lrp0, gxi, atol=1e-5 * np.abs(gxi).max())


def conv_bn_net():
    import keras

    L = keras.layers
    inputs = keras.Input((10, 10, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(5, 3, use_bias=False)(inputs)))
    h = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(h)))
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, L.Dense(3)(L.BatchNormalization()(L.Dense(6)(h))))


def test_batchnorm_is_folded_so_lrp_zero_still_equals_gradient_x_input(tmp_path):
    """Unfolded, BatchNormalization's shift would take relevance; folded, the network is a plain
    ReLU network of affine layers again, where LRP-0 and gradient x input agree."""
    import keras

    keras.utils.set_random_seed(4)
    model = conv_bn_net()
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.3, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.3, 3, layer.moving_variance.shape))
    handle = saved_handle(model, tmp_path, "conv_bn")
    x = images_for(handle, 5)
    targets = np.arange(5) % 3
    lrp0 = attribute(handle, x, targets, "lrp_epsilon", epsilon=0.0)
    gxi = attribute(handle, x, targets, "gradient_x_input")
    np.testing.assert_allclose(lrp0, gxi, atol=1e-5 * np.abs(gxi).max())


@pytest.mark.slow  # 27 s; the nested backbones of every family are in the slow zoo tests too
def test_lrp_runs_on_a_mobilenetv2_backbone_nested_in_a_head(tmp_path):
    """MobileNetV2 (weights=None): ReLU6, depthwise convolutions, BatchNormalization folded,
    residual Adds, nested in a functional head."""
    import keras
    from test_attribution import mobilenet_nested

    from auditor.methods.attribution.lrp.graph import Walk
    from auditor.methods.attribution.lrp.rules import Composite, Epsilon

    keras.utils.set_random_seed(2)
    handle = saved_handle(mobilenet_nested(32, functional_outer=True), tmp_path, "mnv2")
    x = images_for(handle, 3)
    walked = Walk(Composite(Epsilon(0.0), Epsilon(0.0)), None).run(
        handle.logits_model, handle.transform.to_model(x))
    np.testing.assert_allclose(walked.numpy(), handle.logits(x).numpy(), atol=1e-5)
    for method in LRP_METHODS:  # an untrained net's tiny logits: relative stabilisers cope
        maps = attribute(handle, x, np.array([0, 1, 2]), method)
        assert maps.shape == x.shape and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_a_layer_lrp_cannot_pass_is_an_error_naming_it(tmp_path, digits_handle, digits_test):
    import keras

    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = keras.layers.GroupNormalization(2, name="odd_norm")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    handle = saved_handle(model, tmp_path, "odd")
    with pytest.raises(AuditorError, match="odd_norm.*GroupNormalization"):
        attribute(handle, images_for(handle, 2), [0, 1], "lrp")
    x = digits_test[0][:2]
    with pytest.raises(AuditorError, match="logit"):
        attribute(digits_handle, x, [0, 1], "lrp", score="softmax")
    with pytest.raises(AuditorError, match="input_rule"):
        attribute(digits_handle, x, [0, 1], "lrp", input_rule="flat")


def gated_net():
    """Squeeze-excitation (a sigmoid gate on a broadcast Multiply), as in EfficientNet."""
    import keras

    L = keras.layers
    inputs = keras.Input((10, 10, 3))
    h = L.Conv2D(6, 3, use_bias=False, activation="relu")(inputs)
    gate = L.GlobalAveragePooling2D(keepdims=True)(h)
    gate = L.Conv2D(3, 1, use_bias=False, activation="relu")(gate)
    gate = L.Conv2D(6, 1, use_bias=False, activation="sigmoid")(gate)
    h = L.Conv2D(6, 3, use_bias=False, activation="relu")(L.Multiply()([h, gate]))
    return keras.Model(inputs, L.Dense(3, use_bias=False)(L.GlobalAveragePooling2D()(h)))


def normalised_net():
    """LayerNormalization (no beta: bias-free) between convolutions."""
    import keras

    L = keras.layers
    inputs = keras.Input((10, 10, 3))
    h = L.Conv2D(6, 3, use_bias=False)(inputs)
    h = L.ReLU()(L.LayerNormalization(center=False)(h))
    h = L.Conv2D(6, 3, use_bias=False, activation="relu")(h)
    return keras.Model(inputs, L.Dense(3, use_bias=False)(L.Flatten()(h)))


def transposed_net():
    import keras

    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(6, 3, strides=2, padding="same", use_bias=False, activation="relu")(inputs)
    h = L.Conv2DTranspose(4, 3, strides=2, padding="same", use_bias=False,
                          activation="relu")(h)
    return keras.Model(inputs, L.Dense(3, use_bias=False)(L.Flatten()(h)))


def scaled_residual_net():
    """Inception-ResNet's residual ``x + scale * r``, Keras's own unexported layer."""
    import keras
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", use_bias=False, activation="relu")(inputs)
    r = L.Conv2D(4, 3, padding="same", use_bias=False)(h)
    h = L.Activation("relu")(CustomScaleLayer(0.17)([h, r]))
    return keras.Model(inputs, L.Dense(3, use_bias=False)(L.Flatten()(h)))


@pytest.mark.parametrize("build", [gated_net, normalised_net, transposed_net,
                                   scaled_residual_net])
@pytest.mark.parametrize("method, options", [("lrp_epsilon", {"epsilon": 1e-9}), ("lrp", {})])
def test_gates_layer_norm_and_transposed_convolutions_conserve_relevance(tmp_path, build,
                                                                          method, options):
    """A gate takes no relevance (Arras et al. 2017), LayerNormalization's normaliser is held
    constant (Ali et al. 2022), a transposed convolution is linear: relevance still sums to the
    logit on bias-free nets."""
    import keras

    keras.utils.set_random_seed(6)
    handle = saved_handle(build(), tmp_path, build.__name__)
    x = images_for(handle, 5)
    logits = handle.logits(x).numpy()
    targets = logits.argmax(axis=1)
    maps = attribute(handle, x, targets, method, **options)
    np.testing.assert_allclose(maps.reshape(len(x), -1).sum(axis=1),
                               logits[np.arange(len(x)), targets], rtol=1e-3)


def crossing_net():
    """A linear layer on a ReLU's output with no ReLU after it (a MobileNetV2 bottleneck),
    planted so that W + gamma W+ cancels: two equal channels a, weights 1 and -1.25, so
    z = -0.25 a and the textbook gamma's z_m = z + 0.25 a = 0."""
    import keras

    L = keras.layers
    inputs = keras.Input((6, 6, 3))
    stem = L.Conv2D(2, 3, use_bias=False, activation="relu")
    h = L.Conv2D(1, 1, use_bias=False)(stem(inputs))
    head = L.Dense(3, use_bias=False)
    model = keras.Model(inputs, head(L.Flatten()(h)))
    stem.kernel.assign(np.ones((3, 3, 3, 2), "float32") / 27)  # a > 0 on positive images
    model.layers[2].kernel.assign(np.array([[[[1.0], [-1.25]]]], "float32"))
    head.kernel.assign(np.random.default_rng(0).normal(size=(16, 3)).astype("float32"))
    return model


@pytest.mark.parametrize("method", ["lrp_gamma", "lrp"])
def test_gamma_conserves_where_a_layer_after_a_relu_has_a_negative_output(tmp_path, method):
    """Gamma favours the contributions of z's sign on a non-negative input too: with
    W + gamma W+ the planted unit's z_m was 0 and its relevance was lost (a bias-free
    MobileNetV2's maps summed to -4 to -8 times the logit)."""
    handle = saved_handle(crossing_net(), tmp_path, "crossing")
    x = images_for(handle, 3)
    logits = handle.logits(x).numpy()
    targets = logits.argmax(axis=1)
    maps = attribute(handle, x, targets, method)
    np.testing.assert_allclose(maps.reshape(len(x), -1).sum(axis=1),
                               logits[np.arange(len(x)), targets], rtol=1e-3)


def test_lrp_runs_on_mobilenetv3_with_its_squeeze_excitation_and_preprocessing(tmp_path):
    """MobileNetV3Small (weights=None): a Rescaling at the input, hard-swish, and SE gates
    whose hard sigmoid is written as raw ops (relu6(x + 3) / 6) that LRP does not cover but
    that only feed the gates."""
    import keras

    from auditor.inputs.models import load_model
    from auditor.methods.attribution.lrp.graph import Walk
    from auditor.methods.attribution.lrp.rules import Composite, Epsilon

    keras.utils.set_random_seed(2)
    backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False,
                                                   weights=None, include_preprocessing=True)
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(backbone(inputs))))
    model.save(tmp_path / "mnv3.keras")
    handle = load_model(str(tmp_path / "mnv3.keras"), input_range="0-255")
    x = images_for(handle, 3)
    walked = Walk(Composite(Epsilon(0.0), Epsilon(0.0)), None).run(
        handle.logits_model, handle.transform.to_model(x))
    logits = handle.logits(x).numpy()
    np.testing.assert_allclose(walked.numpy(), logits, atol=1e-5 * np.abs(logits).max())
    maps = attribute(handle, x, np.array([0, 1, 2]), "lrp")
    assert maps.shape == x.shape and np.isfinite(maps).all() and np.abs(maps).max() > 0


def test_alpha_beta_shortcut_on_non_negative_inputs_is_exact():
    """On an input >= 0 (after a ReLU) alpha-beta's convolutions of the negative part are
    dropped: the modified pre-activations are the same as with them."""
    import tensorflow as tf

    from auditor.methods.attribution.lrp.rules import AlphaBeta

    rng = np.random.default_rng(0)
    a = tf.constant(np.maximum(rng.normal(size=(2, 6, 6, 3)), 0), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 4)), tf.float32)
    bias = tf.constant(rng.normal(size=4), tf.float32)

    def apply(x, k, b):
        z = tf.nn.conv2d(x, k, 1, "SAME")
        return z if b is None else z + b

    for rule in (AlphaBeta(), AlphaBeta(2.0, 1.0)):
        full, short = rule(apply, a, kernel, bias), rule(apply, a, kernel, bias, nonneg=True)
        for (_, m, _), (_, n, _) in zip(full[1], short[1], strict=True):
            np.testing.assert_allclose(n.numpy(), m.numpy(), atol=1e-5)
