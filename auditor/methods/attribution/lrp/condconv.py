"""keras-hub MobileNetV5's ``CondConvResidual`` (CondConv, Yang et al. 2019): each image's
routing weights ``r = sigmoid(Dense(mean(x)))`` mix the experts' kernels, ``sum_e r_e (W_e x +
b_e)`` being one convolution with the image's own kernel ``sum_e r_e W_e`` and bias.

The routing is a gate: held constant, as squeeze-excitation's is (``constant.py``), so no
relevance flows through the pooled input that sets it. What remains is, per image, a linear
layer, and the composite's rule is applied to it as to any convolution: to the mixed kernel
(with the BatchNormalization after it folded in), not to each expert apart, since the rules
that split weights by sign (gamma, alpha-beta, z-box) do not distribute over a sum of kernels.
A convolution with a kernel per image is a product of each image's patches with its kernel
(``tf.image.extract_patches``, then one ``einsum``).

The block's ``call`` (keras-hub 0.32), followed step for step: pointwise experts, BN1, act1,
depthwise experts, BN2, act2, squeeze-excitation, pointwise-linear experts, BN3, the residual.
Its squeeze-excitation is built from ``se_layer(filters=, bottleneck_filters=,
squeeze_activation=, excite_activation=, data_format=, channel_axis=, dtype=)``, which neither
keras-hub SE class accepts (``SqueezeAndExcite2D``: "Unrecognized keyword arguments ...
data_format, channel_axis"; ``SEModule`` takes ``channels``), and keras-hub's backbone never
makes the block (it passes no ``num_experts``): only a user's own SE class gives it one, which
the walker passes as any sub-layer, one line naming it unless it is a walked class.
"""

from __future__ import annotations

from auditor.errors import AuditorError
from auditor.methods.attribution.lrp.canonize import (
    Step,
    batchnorm_affine,
    is_rectifier,
    linear_steps,
    linear_types,
)

MODULE = "keras_hub.src.models.mobilenetv5.mobilenetv5_blocks"


def is_cond_conv(layer) -> bool:
    return (type(layer).__module__, type(layer).__name__) == (MODULE, "CondConvResidual")


def cond_conv(walk, layer, x):
    """The block's output through LRP layers (``walk``: the graph walker), routing constant."""
    import tensorflow as tf

    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise AuditorError(f"LRP supports channels_last layers only; layer '{layer.name}' is "
                           f"{layer.data_format}")
    routing = tf.stop_gradient(tf.sigmoid(layer.routing_fn(layer.pool(x))))
    shortcut = x
    for experts, bn, act in ((layer.conv_pw_experts, layer.bn1, layer.act1),
                             (layer.conv_dw_experts, layer.bn2, layer.act2)):
        fused = act if is_rectifier(act) else None
        x = walk.linear(experts[0], x, None, fused, [mixed_step(experts, routing, bn)])
        if fused is None:
            x = walk.elementwise(act, x)
    x = _sub_layer(walk, layer.se, x)
    x = walk.linear(layer.conv_pwl_experts[0], x, None, None,
                    [mixed_step(layer.conv_pwl_experts, routing, layer.bn3)])
    if layer.has_skip:
        x = _sub_layer(walk, layer.drop_path, x) + shortcut
    return x


def _sub_layer(walk, sub, x):
    """A sub-layer through its LRP counterpart; the block's identity lambdas as they are."""
    import keras

    if isinstance(sub, keras.layers.Layer):
        return walk.guarded(sub, {}, {}, set())(x)
    return sub(x)


def mixed_step(experts: list, routing, bn) -> Step:
    """The experts' convolution with each image's mixed kernel (n, kh, kw, in, out) and bias
    (n, 1, 1, out), ``bn`` folded in."""
    import tensorflow as tf

    def stacked(tensors):
        return tf.stack([tf.convert_to_tensor(t) for t in tensors])

    steps = [linear_steps(expert)[0] for expert in experts]
    kernel = tf.einsum("ne,e...->n...", routing, stacked([s.kernel for s in steps]))
    bias = None
    if steps[0].bias is not None:
        bias = tf.matmul(routing, stacked([s.bias for s in steps]))
    depthwise = isinstance(experts[0], linear_types()[2])
    if depthwise and kernel.shape[-1] != 1:
        raise AuditorError(f"LRP supports CondConv depthwise experts with depth multiplier 1; "
                           f"layer '{experts[0].name}' has {kernel.shape[-1]}")
    if bn is not None:
        scale, shift = batchnorm_affine(bn)
        kernel = kernel * (tf.reshape(scale, (-1, 1)) if depthwise else scale)
        bias = shift if bias is None else bias * scale + shift
    if bias is not None:
        bias = tf.reshape(bias, (-1, 1, 1, bias.shape[-1]))
    return Step(_per_image(experts[0], depthwise), kernel, bias, "conv", not depthwise)


def _per_image(expert, depthwise: bool):
    """``apply(a, kernel, bias)`` of a convolution shaped as ``expert``, with a kernel per
    image: each image's patches times its own kernel."""
    import tensorflow as tf

    def apply(a, kernel, bias):
        rows, columns, channels = kernel.shape[1], kernel.shape[2], kernel.shape[3]
        patches = tf.image.extract_patches(
            a, sizes=[1, rows, columns, 1], strides=[1, *expert.strides, 1],
            rates=[1, *expert.dilation_rate, 1], padding=expert.padding.upper())
        if depthwise:  # patches hold (row, column, channel) flattened
            grid = tf.shape(patches)[:3]
            patches = tf.reshape(patches, tf.concat([grid, [rows * columns, channels]], 0))
            z = tf.einsum("nhwkc,nkc->nhwc", patches,
                          tf.reshape(kernel, (-1, rows * columns, channels)))
        else:
            z = tf.einsum("nhwk,nko->nhwo", patches,
                          tf.reshape(kernel, (-1, rows * columns * channels, kernel.shape[4])))
        return z if bias is None else z + bias

    return apply
