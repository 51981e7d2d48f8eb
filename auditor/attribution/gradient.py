"""Vanilla gradients (Simonyan et al. 2013): signed, absolute, and max over channels."""

from __future__ import annotations

import numpy as np

from auditor.attribution.registry import register, score_function


def input_gradients(handle, x, targets, contrast, score: str) -> np.ndarray:
    """d score / d input for a batch, per-sample targets, in one compiled backward pass."""
    import tensorflow as tf

    key = ("input_gradients", score)
    if key not in handle.compiled:
        scores = score_function(handle, score)

        @tf.function(reduce_retracing=True)
        def gradients(images, target, other):
            with tf.GradientTape() as tape:
                tape.watch(images)
                total = tf.reduce_sum(scores(images, target, other))
            return tape.gradient(total, images)

        handle.compiled[key] = gradients
    return handle.compiled[key](tf.constant(x), tf.constant(targets), tf.constant(contrast)).numpy()


@register("gradient", "Signed gradient of the score with respect to each input pixel.")
def gradient(handle, x, targets, contrast, score):
    return input_gradients(handle, x, targets, contrast, score)
