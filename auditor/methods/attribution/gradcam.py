"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

A layer's channels weighted by the score's gradient, summed, rectified, and upsampled
bilinearly to the input; returned repeated over the input's channels. The layer defaults to the
last one with a spatial output, found also inside a nested backbone; in a vision transformer to
the tokens its last attention attends from (the graph layer feeding it; inside a custom
encoder such as keras-hub's, the sub-layer giving them, read during the pass as neuron groups
read it, or the attention's own input, ``PATH:query``), whose patch tokens are reshaped to
their grid and whose class or register tokens are set aside (``tokens.py``).
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.layer import layer_gradients, resolve_layer
from auditor.methods.attribution.registry import register
from auditor.methods.attribution.tokens import as_grid

LAYER_OPTION = {"layer": (None, "layer name or 'outer/inner' path ('PATH:query': the tokens an "
                                "attention layer attends from); default: last conv layer, in "
                                "a vision transformer the last attention's input")}


def upsample(cams: np.ndarray, shape: tuple) -> np.ndarray:
    """(N, h, w) maps resized bilinearly to (N, H, W) and repeated over C channels."""
    import tensorflow as tf

    resized = tf.image.resize(cams[..., None], shape[1:3], method="bilinear").numpy()
    return np.broadcast_to(resized, shape).astype(np.float32)


def gradcam_weights(activation, grads) -> np.ndarray:
    """Grad-CAM: each channel's mean gradient over positions."""
    return grads.mean(axis=(1, 2))


def gradcam_pp_weights(activation, grads) -> np.ndarray:
    """Grad-CAM++: positive gradients weighted by the closed-form alphas of the paper."""
    squared = grads * grads
    denominator = 2 * squared + activation.sum(axis=(1, 2), keepdims=True) * squared * grads
    alphas = np.divide(squared, denominator, out=np.zeros_like(squared),
                       where=denominator != 0)
    return (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))


def class_activation_maps(handle, x, targets, contrast, score, layer, weighting) -> np.ndarray:
    layer = resolve_layer(handle, layer)
    activation, grads = layer_gradients(handle, x, targets, contrast, score, layer)
    if activation.ndim == 3:  # a transformer's tokens: the patch tokens on their grid
        activation = as_grid(activation, x.shape[1:], layer)
        grads = as_grid(grads, x.shape[1:], layer)
    if activation.ndim != 4:
        raise AuditorError(f"layer '{layer}' has output shape {activation.shape[1:]}; Grad-CAM "
                           "needs a spatial (H, W, C) layer or (tokens, D) patch tokens")
    weights = weighting(activation, grads)
    cams = np.maximum(np.einsum("nhwc,nc->nhw", activation, weights), 0)
    return upsample(cams, x.shape)


@register("gradcam", "Grad-CAM: the layer's channels weighted by their mean gradient, "
                     "rectified and upsampled to the input.", options=LAYER_OPTION,
          signed=False, needs_layer=True)
def gradcam(handle, x, targets, contrast, score, budget, layer):
    return class_activation_maps(handle, x, targets, contrast, score, layer, gradcam_weights)


@register("gradcam_pp", "Grad-CAM++: channels weighted by positive gradients with per-position "
                        "weights, better for several instances of a class.", options=LAYER_OPTION,
          signed=False, needs_layer=True)
def gradcam_pp(handle, x, targets, contrast, score, budget, layer):
    return class_activation_maps(handle, x, targets, contrast, score, layer, gradcam_pp_weights)
