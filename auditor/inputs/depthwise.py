"""Grouped convolutions that are depthwise, run as the depthwise convolutions they are.

ConvNeXt (and any model written the same way) makes its 7 x 7 depthwise convolutions as
``Conv2D(groups=channels)``. Keras's TensorFlow backend runs a grouped convolution through XLA
on a CPU (keras/src/backend/tensorflow/nn.py ``conv``: TensorFlow has no grouped convolution
kernel there), and XLA compiles it again for every batch shape. Measured on ConvNeXtTiny at
48 px (6 December 2026, load 8 to 13): one such convolution's forward pass and input gradient
took 21.9 ms of CPU at 2 rows as grouped XLA against 0.8 ms as ``ops.depthwise_conv`` (298
against 3.3 ms at 24 rows), and each new batch size of the whole model's input gradient took 4
to 5 CPU-seconds more than its next call. The same arithmetic as a depthwise convolution (each
group's one input channel times its ``filters / groups`` kernels, the outputs in the same
order) needs neither.

So the audit's logits model (never the model as loaded) is rebuilt with each such layer as a
``DepthwiseGroupedConv2D``: a ``Conv2D`` with the same config, weights, name and place whose
convolution is ``ops.depthwise_conv``. Every method reads it as the ``Conv2D`` it is (LRP's
rules call the layer's own ``convolution_op``). The rebuilt model is kept only when its outputs
match the model's; otherwise, and for a model Keras cannot rebuild layer by layer (a keras-hub
backbone has its own config), the model is audited as it is, only slower.
"""

from __future__ import annotations

import keras
import numpy as np

# Outputs of the rebuilt model against the model's, on random images, as a share of their
# largest (at least 1): float32 convolutions summed in another order differ by rounding. On
# ConvNeXtTiny at 48 px (random weights, 8 images in 0-255) the largest difference was 6e-8
# of outputs up to 0.61; the same bound as the logits heads' check (models.py ``_verified``).
TOLERANCE = 1e-4


class DepthwiseGroupedConv2D(keras.layers.Conv2D):
    """A ``Conv2D`` whose groups read one input channel each, convolved depthwise."""

    def convolution_op(self, inputs, kernel):
        rows, cols, _, filters = kernel.shape
        depthwise = keras.ops.reshape(kernel, (rows, cols, self.groups, filters // self.groups))
        return keras.ops.depthwise_conv(inputs, depthwise, strides=self.strides,
                                        padding=self.padding, data_format=self.data_format,
                                        dilation_rate=self.dilation_rate)


def is_depthwise_grouped(layer) -> bool:
    """A plain ``Conv2D`` with one input channel per group (and more than one group)."""
    return (type(layer) is keras.layers.Conv2D and layer.groups > 1
            and layer.kernel.shape[-2] == 1)


def run_depthwise(model, shape: tuple[int, ...]):
    """``model`` rebuilt with its depthwise grouped convolutions as ``DepthwiseGroupedConv2D``
    (the model itself when it has none, or when the rebuilt one cannot be made or computes
    anything else)."""
    from auditor.inputs.layers import walk

    if not any(is_depthwise_grouped(layer) for _, layer in walk(model)):
        return model
    try:
        rebuilt = keras.models.clone_model(model, clone_function=_rebuilt_layer)
        rebuilt.set_weights(model.get_weights())
    except (ValueError, TypeError, NotImplementedError, KeyError, AttributeError):
        return model
    if not any(isinstance(layer, DepthwiseGroupedConv2D) for _, layer in walk(rebuilt)):
        return model  # its grouped convolutions sit in a model rebuilt from its own config
    probe = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    expected = np.asarray(model(probe, training=False))
    got = np.asarray(rebuilt(probe, training=False))
    scale = max(float(np.abs(expected).max()), 1.0)
    return rebuilt if np.allclose(got, expected, rtol=0, atol=TOLERANCE * scale) else model


def _rebuilt_layer(layer):
    from auditor.inputs.copies import plain_model, rebuild

    if plain_model(layer):
        return keras.models.clone_model(layer, clone_function=_rebuilt_layer)
    if is_depthwise_grouped(layer):
        return DepthwiseGroupedConv2D.from_config(layer.get_config())
    return rebuild(layer)
