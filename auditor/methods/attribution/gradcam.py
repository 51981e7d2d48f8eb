"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

A layer's channels weighted by the score's gradient, summed, rectified, and upsampled
bilinearly to the input; returned repeated over the input's channels. The layer defaults to the
last one with a spatial output, found also inside a nested backbone; in a vision transformer to
the tokens its last attention attends from (the graph layer feeding it; inside a custom
encoder such as keras-hub's, the sub-layer giving them, read during the pass as neuron groups
read it, or the attention's own input, ``PATH:query``), whose patch tokens are reshaped to
their grid and whose class or register tokens are set aside (``tokens.py``).

Grad-CAM++ applies only where its layer's activations are rectified: its alphas are derived
for the last convolution after its ReLU, and its channel weights are never negative. On signed
activations, a LayerNorm's (ConvNeXt's downsampling, a transformer's tokens), a residual sum's
or a linear convolution's, the non-negative weights cancel channels against each other (a
LayerNorm's sum to zero at every position) and the alphas favour the channels whose sum is
negative: nested ConvNeXtTiny's maps were all zero on 12 of 12 images. Its default layer is
the last rectified one on the trunk at Grad-CAM's grid (DenseNet's ``pool4_relu`` before its
linear ``pool4_conv``); where there is none (ConvNeXt, a transformer's tokens) it says so in
one line instead of giving maps (Grad-CAM's weights are signed and still apply).
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


# The lowest value a rectifier Keras ships can output: hard-swish's minimum, x = -1.5 (swish's
# is -0.278, mish's -0.309, GELU's -0.170, ReLU's and ReLU6's 0). A layer going below it on the
# audited images is not rectified, whatever its scale.
RECTIFIED_FLOOR = -0.375


def gradcam_pp_weights(activation, grads) -> np.ndarray:
    """Grad-CAM++: positive gradients weighted by the closed-form alphas of the paper
    (Chattopadhay et al. 2018, eq. 19), derived for non-negative activations: the denominator
    2 g^2 + sum(A) g^3 is then positive wherever the gradient g is."""
    squared = grads * grads
    denominator = 2 * squared + activation.sum(axis=(1, 2), keepdims=True) * squared * grads
    alphas = np.divide(squared, denominator, out=np.zeros_like(squared),
                       where=denominator != 0)
    return (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))


def check_rectified(activation: np.ndarray, layer: str) -> None:
    """Raise, in one line, where Grad-CAM++'s layer is not rectified (module docstring).

    The lowest value over every image of the batch, not image by image: RECTIFIED_FLOOR is the
    lowest any rectifier can output, so one image below it proves the layer signed for all;
    maps of the other images on it would rest on the alphas' false premise. Whichever chunk
    holds that image, ``attribute`` raises for the whole batch (tests/test_attribution.py)."""
    low = float(activation.min()) if activation.size else 0.0
    if low < RECTIFIED_FLOOR:
        raise AuditorError(
            f"Grad-CAM++ does not apply at layer '{layer}': its activations go down to "
            f"{low:.3g}, its weights assume rectified ones (Chattopadhay et al. 2018) and "
            "signed channels cancel under them; set its 'layer' option to a ReLU's layer, or "
            "read Grad-CAM")


def class_activation_maps(handle, x, targets, contrast, score, layer, weighting,
                          rectified: bool = False) -> np.ndarray:
    layer = resolve_layer(handle, layer, rectified)
    activation, grads = layer_gradients(handle, x, targets, contrast, score, layer)
    if rectified:
        check_rectified(activation, layer)
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
                        "weights, better for several instances of a class; on a rectified layer "
                        "only.", options=LAYER_OPTION,
          signed=False, needs_layer=True, needs_rectified=True)
def gradcam_pp(handle, x, targets, contrast, score, budget, layer):
    return class_activation_maps(handle, x, targets, contrast, score, layer, gradcam_pp_weights,
                                 rectified=True)
