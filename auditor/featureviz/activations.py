"""Hidden activations of any named layer, also inside nested models, next to the logits.

Keras 3 cannot wire a nested model's inner tensors into the outer graph, so the outer graph is
run again on a fresh input with the nested models expanded in place, capturing the named
layers' outputs on the way. The new model shares every layer (and weight) with the original.
"""

from __future__ import annotations

from auditor.errors import ConfigError

CONV_LAYER_TYPES = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
                    "Conv2DTranspose")


def _graph(model):
    """The functional graph behind a model (a built Sequential keeps one inside)."""
    return getattr(model, "_functional", None) or model


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def conv_layers(model) -> list[tuple[str, int]]:
    """(name, channels) of every convolutional layer, nested models included, in order."""
    return [(layer.name, int(layer.output.shape[-1])) for layer in _all_layers(model)
            if type(layer).__name__ in CONV_LAYER_TYPES]


def _contains(model, names: set[str]) -> bool:
    return any(layer.name in names for layer in _all_layers(model))


def _run_capturing(model, inputs, names: set[str], captured: dict):
    graph = _graph(model)
    if not hasattr(graph, "_run_through_graph"):
        raise ConfigError(f"model '{model.name}' is subclassed, so its hidden layers cannot be "
                          "read; visualise output classes only, or save a functional model")

    def operation(op):
        if op.name in names:
            def record(*args, **kwargs):
                captured[op.name] = op(*args, **kwargs)
                return captured[op.name]

            return record
        if hasattr(op, "layers") and _contains(op, names):
            return lambda *args, **kwargs: _run_capturing(op, args[0], names, captured)
        return op

    return graph._run_through_graph(inputs, operation_fn=operation)


def activation_model(handle, layer_names):
    """A Keras model from model-space input to ``[activation per layer name..., logits]``."""
    import keras

    names = list(dict.fromkeys(layer_names))
    known = {layer.name for layer in _all_layers(handle.logits_model)}
    for name in names:
        if name not in known:
            convs = ", ".join(n for n, _ in conv_layers(handle.logits_model)) or "none"
            raise ConfigError(f"model '{handle.name}' has no layer named '{name}'; "
                              f"convolutional layers: {convs}")
    if not names:
        return keras.Model(handle.logits_model.inputs, [handle.logits_model.outputs[0]])
    inputs = keras.Input(handle.input_shape)
    captured: dict = {}
    logits = _run_capturing(handle.logits_model, inputs, set(names), captured)
    return keras.Model(inputs, [captured[name] for name in names] + [logits])


def features_function(handle, layer_names):
    """``f(display images) -> {"logits": ..., name: activation}``, differentiable.

    Logits follow ``handle.logits``: when the softmax could not be stripped, its log is taken.
    """
    import tensorflow as tf

    names = list(dict.fromkeys(layer_names))
    model = activation_model(handle, names)

    def features(images):
        outputs = model(handle.transform.to_model(images), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        logits = outputs[-1]
        if handle.output == "log-probabilities":
            logits = tf.math.log(tf.clip_by_value(logits, 1e-12, 1.0))
        return {"logits": logits, **dict(zip(names, outputs[:-1], strict=True))}

    return features
