"""A copy of a model that takes inputs shifted by a constant and computes exactly the same
logits (Kindermans et al. 2019, "The (Un)reliability of Saliency Methods"): each linear layer
that reads the input absorbs the shift through its bias.

A first layer that pads with zeros ('same', or a ZeroPadding layer before it) would see the
shift inside the image but zeros at the borders, so no bias could absorb it there. The copy
pads explicitly with the shifted background instead, then convolves 'valid':

    x + d  ->  Rescaling(offset=-d) -> ZeroPadding (TF's 'same' amounts) -> Rescaling(offset=+d)
           ->  the layer with padding 'valid' and bias ``b - W d``

so the layer reads ``pad(x) + d`` everywhere and its output is the original's on ``x``
(tested to float tolerance on the demo and on MobileNetV2). ``d`` is the shift as the layer sees
it: a leading Rescaling or Normalization scales it, shape layers reshape it. Rescaling layers
are what LRP and the gradient treat as element-wise, so every method runs on the copy.
"""

from __future__ import annotations

import math

import numpy as np

from auditor.errors import AuditorError
from auditor.inputs.copies import copy_model
from auditor.inputs.layers import is_model
from auditor.methods.attribution.lrp.canonize import is_linear_layer, linear_steps


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TF's 'same' padding (before, after) of one spatial axis: the odd pixel goes after, which
    is the asymmetric case of a stride-2 layer on an even input."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _padding_of(layer, spatial: tuple[int, ...]) -> tuple | None:
    """Per spatial axis (before, after) that the layer's 'same' padding adds, or None."""
    import keras

    if getattr(layer, "padding", "valid") != "same":
        return None
    if isinstance(layer, keras.layers.Conv1DTranspose | keras.layers.Conv2DTranspose
                  | keras.layers.Conv3DTranspose):
        raise AuditorError(f"the first layer '{layer.name}' is a transposed convolution with "
                           "'same' padding, whose borders no bias can absorb a shift at")
    kernel = np.shape(getattr(layer, "kernel", getattr(layer, "depthwise_kernel", None)))
    pads = tuple(same_padding(n, k, s, d) for n, k, s, d in zip(
        spatial, kernel[:len(spatial)], layer.strides, layer.dilation_rate, strict=True))
    return pads if any(any(p) for p in pads) else None


def _shift_padding(x, delta: np.ndarray, pads: tuple, name: str):
    """``x + d`` padded with ``d``: Rescaling(-d), ZeroPadding, Rescaling(+d), named after the
    layer they serve (names must stay unique in the new model)."""
    import keras

    channel = _constant(delta, "padding")
    pad = {1: keras.layers.ZeroPadding1D, 2: keras.layers.ZeroPadding2D,
           3: keras.layers.ZeroPadding3D}[len(pads)]
    h = keras.layers.Rescaling(1.0, offset=-channel, name=f"{name}_unshift")(x)
    h = pad(pads, name=f"{name}_shift_pad")(h)
    return keras.layers.Rescaling(1.0, offset=channel, name=f"{name}_shift")(h)


def _pad_delta(delta: np.ndarray, pads: tuple) -> np.ndarray:
    return np.pad(delta, [*pads, (0, 0)], mode="edge")


def _constant(delta: np.ndarray, name: str) -> np.ndarray:
    """The shift per channel; it must not depend on the position, or no bias can absorb it."""
    flat = delta.reshape(-1, delta.shape[-1])
    if np.abs(flat - flat[:1]).max() > 1e-6 * (np.abs(flat).max() + 1e-12):
        raise AuditorError(f"the input shift is not constant where layer '{name}' reads it")
    return flat[0]


def _absorbing_copy(layer, x, delta: np.ndarray):
    """The layer from its config with padding 'valid', called on ``x``, and its weights with a
    bias that absorbs the layer's response to ``delta`` (the same at every position)."""
    config = layer.get_config() | {"use_bias": True, "name": f"{layer.name}_shifted"}
    if "padding" in config:
        config["padding"] = "valid"
    copy = type(layer).from_config(config)
    y = copy(x)
    weights = layer.get_weights()
    bias = weights.pop() if getattr(layer, "use_bias", False) else 0.0
    copy.set_weights([*weights, np.zeros(copy.get_weights()[-1].shape, np.float32)])
    response = delta[None].astype(np.float32)
    for step in linear_steps(copy):  # the pre-activation, bias excluded
        response = step.apply(response, step.kernel, None)
    response = _constant(np.asarray(response)[0], layer.name)
    return y, copy, [*weights, (bias - response).astype(np.float32)]


class _Rebuild:
    """Runs a model's graph on a new input, replacing every linear layer that reads the input
    (and zero padding on the way there) as the module's docstring says."""

    def __init__(self):
        self.delta = {}  # id(tensor) -> (tensor, the shift at that tensor, full shape)
        self.weights = []  # (new layer, its weights), set once the new graph is built

    def run(self, model, x):
        graph = model._functional if hasattr(model, "_functional") else model
        if graph is None or not hasattr(graph, "_run_through_graph") or len(graph.inputs) != 1:
            raise AuditorError(f"a shifted copy needs a functional or Sequential model with one "
                               f"input; '{model.name}' is not one")
        out = graph._run_through_graph([x], operation_fn=self.wrap)
        return out[0] if isinstance(out, list | tuple) and len(out) == 1 else out

    def _shift_at(self, x):
        entry = self.delta.get(id(x))
        return entry[1] if entry is not None and entry[0] is x else None

    def _mark(self, y, delta):
        self.delta[id(y)] = (y, delta)
        return y

    def wrap(self, op):
        if is_model(op):
            return lambda x, *args, **kwargs: self.run(op, x)
        return lambda *args, **kwargs: self.call(op, args, kwargs)

    def call(self, op, args, kwargs):
        import keras

        L = keras.layers
        x = args[0] if len(args) == 1 else None
        delta = self._shift_at(x) if x is not None else None
        if delta is None:
            self._refuse_mixed(op, args)
            return op(*args, **kwargs)
        if is_linear_layer(op):
            return self.linear(op, x, delta)
        if isinstance(op, L.ZeroPadding1D | L.ZeroPadding2D | L.ZeroPadding3D):
            pads = tuple(tuple(p) for p in op.padding)
            return self._mark(_shift_padding(x, delta, pads, op.name), _pad_delta(delta, pads))
        y = op(x, **kwargs)
        return self._mark(y, self._through(op, delta, tuple(y.shape[1:])))

    def _refuse_mixed(self, op, args):
        import tensorflow as tf

        if any(self._shift_at(t) is not None for t in tf.nest.flatten(args)):
            raise AuditorError(f"layer '{op.name}' ({type(op).__name__}) reads the input "
                               "beside other tensors; no bias can absorb a shift there")

    def _through(self, op, delta: np.ndarray, shape: tuple) -> np.ndarray:
        """The shift after an element-wise affine or shape layer."""
        import keras

        L = keras.layers
        if isinstance(op, L.Rescaling):
            return delta * np.asarray(op.scale, np.float32)
        if isinstance(op, L.Normalization):
            std = np.maximum(np.sqrt(np.asarray(op.variance)), keras.config.epsilon())
            std = std.reshape(std.shape[-1:]) if std.size == delta.shape[-1] else std
            return delta * std if op.invert else delta / std
        if isinstance(op, L.Reshape | L.Flatten | L.Dropout | L.SpatialDropout2D | L.Identity
                      | L.GaussianNoise | L.GaussianDropout | L.ActivityRegularization):
            return np.broadcast_to(delta, shape) if delta.shape == shape else (
                delta.reshape(shape))
        raise AuditorError(f"layer '{op.name}' ({type(op).__name__}) comes before the first "
                           "linear layer and is not affine per channel, so no bias can absorb "
                           "a constant input shift after it")

    def linear(self, layer, x, delta: np.ndarray):
        spatial = tuple(x.shape[1:-1])
        pads = _padding_of(layer, spatial) if spatial else None
        if pads is not None:
            x, delta = _shift_padding(x, delta, pads, layer.name), _pad_delta(delta, pads)
        y, copy, weights = _absorbing_copy(layer, x, delta)
        self.weights.append((copy, weights))
        return y


def shifted_model(model, input_shape: tuple, delta: np.ndarray):
    """A new functional model that maps ``x + delta`` to what ``model`` gives on ``x``;
    ``delta`` per channel of the model-space input."""
    import keras

    rebuild = _Rebuild()
    inputs = keras.Input(input_shape, name=f"{model.name}_shifted_input")
    rebuild.delta[id(inputs)] = (inputs, np.broadcast_to(
        np.asarray(delta, np.float32), input_shape).copy())
    outputs = rebuild.run(model, inputs)
    if not rebuild.weights:
        raise AuditorError("the model has no Dense or convolutional layer reading the input "
                           "to absorb an input shift")
    for layer, weights in rebuild.weights:
        layer.set_weights(weights)
    shared = keras.Model(inputs, outputs, name=f"{model.name}_shifted")
    # its layers also sit in the copy's graph; a clone owns them, so methods that tap a layer
    # by name (Grad-CAM) find it in this graph (nested models come out flattened)
    return copy_model(shared)
