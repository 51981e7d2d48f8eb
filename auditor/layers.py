"""Find layers by name (also inside nested models) and tap their activations.

Grad-CAM, layer attribution and feature visualisation all need a hidden layer's activation of a
display-space image, often together with the logits, and often for a layer that lives inside a
nested backbone (a keras.applications model inside a Sequential). This module hides how.

    find_layer(model, "out_relu")           # a layer, searched depth-first through nested models
    last_conv_layer(model)                  # the name of the last layer with a spatial output
    stage_ends(model)                       # the last layer at each spatial resolution
    activation_model(handle, name)(x)       # display-space images -> that layer's activation
    activation_and_logits(handle, name)(x)  # -> (activation, logits), one differentiable pass

Names may be plain (``"conv3"``, the first match depth-first) or a path through nested models
(``"mobilenetv2_1.00_224/out_relu"``). The taps share the model's weights, so they follow any
change to them (the sanity check relies on that). Tapping a layer inside a nested model of a
*functional* outer model rebuilds the outer graph with the same layers; that adds call nodes to
them, so read shapes with ``output_shape(layer)`` rather than ``layer.output``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from auditor.errors import ModelError


def is_model(layer) -> bool:
    """Whether a layer is itself a model with sub-layers (a nested backbone)."""
    return bool(getattr(layer, "layers", None)) and hasattr(layer, "inputs")


def walk(model, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Every layer in forward order as (path, layer), descending into nested models.

    A nested model is listed itself, then its layers (``"outer/inner"`` paths).
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        yield path, layer
        if is_model(layer):
            yield from walk(layer, prefix=f"{path}/")


def layer_chain(model, name: str) -> list:
    """The layers from the top model down to the one named ``name``: [outer, ..., target]."""
    for path, _ in walk(model):
        if path == name or path.rsplit("/", 1)[-1] == name:
            chain, current = [], model
            for part in path.split("/"):
                current = next(la for la in current.layers if la.name == part)
                chain.append(current)
            return chain
    names = [path for path, _ in walk(model)]
    shown = ", ".join(names[-12:])
    raise ModelError(f"model '{model.name}' has no layer named '{name}'; its last layers are: "
                     f"{shown} ({len(names)} in all, nested ones as 'outer/inner')")


def find_layer(model, name: str):
    """The layer named ``name`` (or ``"outer/inner"`` path), also inside nested models."""
    return layer_chain(model, name)[-1]


def output_shape(layer) -> tuple | None:
    """The shape of a layer's (first) output, batch dimension included, or None if unknown."""
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):
        nodes = getattr(layer, "_inbound_nodes", None)
        if nodes:
            outputs = nodes[0].output_tensors
            return tuple(outputs[0].shape) if outputs else None
        return None


def last_conv_layer(model) -> str:
    """Path of the last layer whose output is a spatial map (N, H, W, C) with H, W > 1.

    That is Grad-CAM's default (Selvaraju et al.): the final convolutional block's activation,
    e.g. ``conv3`` in the demo CNN or ``.../out_relu`` in MobileNetV2.
    """
    found = None
    for path, layer in walk(model):
        if is_model(layer):
            continue
        shape = output_shape(layer)
        if shape is not None and len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1:
            found = path
    if found is None:
        raise ModelError(f"model '{model.name}' has no layer with a spatial (N, H, W, C) output; "
                         "Grad-CAM and layer attribution need a convolutional model")
    return found


def stage_ends(model) -> list[str]:
    """Paths of the last layer at each spatial resolution, shallow to deep (padding skipped).

    These end the network's stages (``conv1``, ``conv2``, ``conv3`` in the demo CNN): a short,
    representative list of layers to compare.
    """
    import keras

    last_at: dict[tuple, str] = {}
    for path, layer in walk(model):
        if is_model(layer) or isinstance(layer, keras.layers.ZeroPadding2D):
            continue
        shape = output_shape(layer)
        if shape is not None and len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1:
            last_at.pop(shape[1:3], None)
            last_at[shape[1:3]] = path
    return list(last_at.values())


def activation_floats(model) -> int:
    """Floats of all layer outputs for one sample: what a backward pass keeps alive."""
    total = 0
    for _, layer in walk(model):
        shape = None if is_model(layer) else output_shape(layer)
        if shape:
            total += int(np.prod([d or 1 for d in shape[1:]]))
    return total


def tap(model, chain: list, with_output: bool = True) -> Callable:
    """A callable ``f(x, training=False)`` giving (activation, output), or the activation only.

    ``chain`` is ``layer_chain(model, name)``. Sequential models are run layer by layer; a
    functional model with the target at its top level becomes a two-output Model over its own
    graph; one whose target lies in a nested model is rebuilt with that nested model tapped.
    """
    import keras

    head, rest = chain[0], chain[1:]
    if isinstance(model, keras.Sequential):
        inner = tap(head, rest, with_output) if rest else None

        def run(x, training=False):
            h = x
            for layer in model.layers:
                if layer is head:
                    if inner is None:
                        h = activation = layer(h, training=training)
                    elif with_output:
                        activation, h = inner(h, training=training)
                    else:
                        return inner(h, training=training)
                    if not with_output:
                        return activation
                else:
                    h = layer(h, training=training)
            return activation, h

        return run
    if not hasattr(model, "_run_through_graph") or not getattr(model, "inputs", None):
        raise ModelError(f"layer '{head.name}' is inside '{model.name}', a subclassed model whose "
                         "graph cannot be tapped; use a functional or Sequential model")
    if not rest:
        outputs = [head.output, model.output] if with_output else head.output
        return keras.Model(model.input, outputs)
    full = tap(head, rest, with_output=True)
    captured = []

    def call(layer, *args, **kwargs):
        if layer is not head:
            return layer(*args, **kwargs)
        activation, out = full(*args, **kwargs)
        captured.append(activation)
        return out

    inputs = keras.Input(batch_shape=tuple(model.input.shape), dtype=model.input.dtype)
    rebuilt = keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda la: la,
                                       call_function=call)
    outputs = [captured[0], rebuilt.output] if with_output else captured[0]
    return keras.Model(inputs, outputs)


def _display_tap(handle, layer_name: str, with_output: bool) -> Callable:
    key = ("tap", layer_name, with_output)
    if key not in handle.compiled:
        handle.compiled[key] = tap(handle.logits_model,
                                   layer_chain(handle.logits_model, layer_name), with_output)
    return handle.compiled[key]


def activation_model(handle, layer_name: str) -> Callable:
    """A function from display-space images to the named layer's activation (not compiled)."""
    inner = _display_tap(handle, layer_name, with_output=False)

    def activation(x, training=False):
        return inner(handle.transform.to_model(x), training=training)

    return activation


def activation_and_logits(handle, layer_name: str) -> Callable:
    """A function from display-space images to (activation, logits) in one pass.

    Gradients of the logits with respect to the activation are exact even when other paths
    (skip connections) bypass the layer, because the logits are computed from that activation.
    """
    import tensorflow as tf

    inner = _display_tap(handle, layer_name, with_output=True)

    def activation_logits(x, training=False):
        activation, out = inner(handle.transform.to_model(x), training=training)
        if handle.output == "log-probabilities":
            out = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
        return activation, out

    return activation_logits
