"""Attribution to a hidden layer: how much each position and channel of a layer matters.

``attribute_layer(handle, x, targets, layer=NAME)`` returns maps with the layer's shape, so the
report can compare layers. Grad-CAM builds on the same compiled pass (``layer_gradients``).
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.inputs.layers import (
    activation_and_logits,
    last_conv_layer,
    last_rectified_layer,
)
from auditor.methods.attribution.registry import (
    budget_for,
    check_score,
    pick_scores,
    prepare,
    signature,
)

LAYER_METHODS = ("gradient", "gradient_x_activation")


def resolve_layer(handle, layer: str | None, rectified: bool = False) -> str:
    """The layer's name as given; when None, in a model with attention layers (a vision
    transformer) the tokens its last attention attends from (``tokens.last_token_layer``),
    else the last convolutional layer (``rectified``: the last rectified one on the trunk at
    its grid where there is one, Grad-CAM++'s); in a transformer attending in its own layers
    with no spatial layer (keras-hub's Swin), the grid of tokens its last attention reads
    (``tokens.tapped_token_layer``)."""
    from auditor.errors import ModelError
    from auditor.methods.attribution.tokens import (
        attention_layers,
        last_token_layer,
        own_attention,
        tapped_token_layer,
    )

    if layer:
        return layer
    model = handle.logits_model
    tokens = last_token_layer(model, handle.input_shape) if attention_layers(model) else None
    if tokens:
        return tokens
    try:
        return (rectified and last_rectified_layer(model)) or last_conv_layer(model)
    except ModelError:
        grid = tapped_token_layer(model, handle.input_shape) if own_attention(model) else None
        if grid is None:
            raise
        return grid


def layer_gradients(handle, x, targets, contrast, score: str, layer: str):
    """(activation, d score / d activation) of the named layer for a batch, in one pass.

    Traced once per model, layer and score, for the model and its working copy together
    (inputs/traces.py).
    """
    import tensorflow as tf

    from auditor.inputs.traces import compiled
    from auditor.methods.attribution.tokens import QUERY, query_and_logits

    check_score(score)

    def make(origin):
        forward = (query_and_logits(origin, layer) if layer.endswith(QUERY)
                   else activation_and_logits(origin, layer))

        def gradients(images, target, other):
            with tf.GradientTape() as tape:
                # the weights are arguments, not variables the tape watches: the images are
                tape.watch(images)
                activation, logits = forward(images)
                total = tf.reduce_sum(pick_scores(logits, target, other, score))
            return activation, tape.gradient(total, activation)

        return gradients

    fn = compiled(handle, ("layer_gradients", layer, score), make, signature(handle),
                  autograph=False)
    activation, grads = fn(x, targets, contrast)
    return activation.numpy(), grads.numpy()


def attribute_layer(handle, x, targets, layer: str | None = None,
                    method: str = "gradient_x_activation", *, contrast=None,
                    score: str = "logit", batch_size: int | None = None) -> np.ndarray:
    """Maps with the shape of ``layer``'s output (the last conv layer when None).

    'gradient' is d score / d activation; 'gradient_x_activation' multiplies it by the
    activation (each unit's first-order contribution to the score).
    """
    if method not in LAYER_METHODS:
        raise AuditorError(f"unknown layer attribution method '{method}'; use one of: "
                           f"{', '.join(LAYER_METHODS)}")
    x, targets, contrast = prepare(handle, x, targets, contrast, score)
    name = resolve_layer(handle, layer)
    size = batch_size or budget_for(handle).backward
    maps = []
    for i in range(0, len(x), size):
        activation, grads = layer_gradients(handle, x[i:i + size], targets[i:i + size],
                                            contrast[i:i + size], score, name)
        maps.append(grads * activation if method == "gradient_x_activation" else grads)
    return np.concatenate(maps).astype(np.float32)


def method_layers(handle, methods, method_options: dict) -> dict[str, dict]:
    """For each method that works on a layer (Grad-CAM, Grad-CAM++), the layer it explains and
    whether that layer holds a transformer's tokens or a spatial map: what the report names."""
    from auditor.errors import ModelError
    from auditor.inputs.layers import find_layer, output_shape
    from auditor.methods.attribution.registry import METHODS
    from auditor.methods.attribution.tokens import QUERY

    named = {}
    for method in methods:
        if method not in METHODS or not METHODS[method].needs_layer:
            continue
        try:
            layer = resolve_layer(handle, method_options.get(method, {}).get("layer"),
                                  METHODS[method].needs_rectified)
            shape = (None if layer.endswith(QUERY)
                     else output_shape(find_layer(handle.logits_model, layer)))
        except (AuditorError, ModelError):
            named[method] = {"layer": None, "kind": None}
            continue
        tokens = layer.endswith(QUERY) or bool(shape and len(shape) == 3)
        named[method] = {"layer": layer, "kind": "tokens" if tokens else "spatial"}
    return named
