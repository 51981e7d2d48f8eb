"""Vanilla gradients (Simonyan et al. 2013): signed, absolute, and max over channels."""

from __future__ import annotations

import numpy as np

from auditor.methods.attribution.registry import register, score_function, signature


def input_gradients(handle, x, targets, contrast, score: str) -> np.ndarray:
    """d score / d input for a batch, per-sample targets, in one compiled backward pass.

    Traced once per model and score (fixed input signature, any batch size), for the model and
    its working copy together (inputs/traces.py); every gradient-based method runs its rows
    through this one function.
    """
    return gradient_pass(handle, score)(x, targets, contrast).numpy()


def gradient_pass(handle, score: str):
    """The compiled input gradient (images, targets, contrast) -> gradients of ``score``: the
    pass the plan's timing traces and times (predict/plan.py, ``registry.TIMED``)."""
    from auditor.inputs.traces import compiled

    return compiled(handle, ("input_gradients", score),
                    lambda origin: _gradients(origin, score), signature(handle),
                    autograph=False)


def _gradients(handle, score: str):
    import tensorflow as tf

    scores = score_function(handle, score)

    def gradients(images, target, other):
        with tf.GradientTape() as tape:
            tape.watch(images)
            total = tf.reduce_sum(scores(images, target, other))
        return tape.gradient(total, images)

    return gradients


def _itself(grads, x):
    return grads


def _absolute(grads, x):
    return np.abs(grads)


def _largest_channel(grads, x):
    return np.broadcast_to(np.abs(grads).max(axis=-1, keepdims=True), x.shape)


@register("gradient", "Signed gradient of the score with respect to each input pixel.",
          linear=True, from_gradient=_itself)
def gradient(handle, x, targets, contrast, score, budget):
    return input_gradients(handle, x, targets, contrast, score)


@register("gradient_abs", "Absolute gradient of the score per pixel and channel.", signed=False,
          from_gradient=_absolute)
def gradient_abs(handle, x, targets, contrast, score, budget):
    return _absolute(input_gradients(handle, x, targets, contrast, score), x)


@register("saliency", "Simonyan et al.'s saliency map: the maximum over channels of the absolute "
                      "gradient, repeated over the channels.", signed=False,
          from_gradient=_largest_channel)
def saliency(handle, x, targets, contrast, score, budget):
    return _largest_channel(input_gradients(handle, x, targets, contrast, score), x)
