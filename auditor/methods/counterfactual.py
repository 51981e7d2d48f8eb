"""Counterfactual explanations by input optimisation: the smallest change that fixes a mistake.

For each misclassified image, optimise a change ``delta`` of the display-space input so that the
model predicts the true class, while a penalty keeps the change small (L1 or L2) and shaped
(total variation, so that it reads as strokes and blobs rather than noise). Pixels stay in
[0, 1] by projection after every step. All mistakes are optimised together in one batch by one
compiled loop (Adam written out functionally so that it lives inside the tf.function). Every
sample runs all steps: once the true class wins, the penalty keeps shrinking the change towards
the decision boundary, and the smallest successful change seen is the one returned. The loop
runs a stretch of steps per call (``auditor.predict.calls``: about a second), so that SIGTERM
stops the search within one; the search's state (the change, Adam's moments, the best change
and its size) goes from one call to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.featureviz.objectives import image_total_variation
from auditor.predict.batched import chunked, forward, rows_per_pass
from auditor.predict.calls import in_calls
from auditor.predict.predictions import softmax

PENALTIES = ("l1", "l2")


@dataclass
class Counterfactuals:
    """Originals, their counterfactuals, and the model's probabilities before and after."""

    original: np.ndarray  # (N, H, W, C) display space
    counterfactual: np.ndarray  # (N, H, W, C); equals the original where no success was found
    labels: np.ndarray  # (N,) the class the change aims for (the true class)
    success: np.ndarray  # (N,) bool: the model predicts the true class on the counterfactual
    probs_before: np.ndarray  # (N, classes)
    probs_after: np.ndarray  # (N, classes)

    @property
    def delta(self) -> np.ndarray:
        return self.counterfactual - self.original

    @property
    def l2(self) -> np.ndarray:
        return np.sqrt((self.delta ** 2).sum(axis=(1, 2, 3)))

    @property
    def l1(self) -> np.ndarray:
        return np.abs(self.delta).sum(axis=(1, 2, 3))


def counterfactuals(handle, x, labels, *, penalty: str = "l1", weight: float = 0.05,
                    tv_weight: float = 0.05, steps: int = 200, learning_rate: float = 0.01,
                    margin: float = 1.0, batch_size: int | None = None) -> Counterfactuals:
    """Counterfactuals for images ``x`` towards classes ``labels`` (the true classes).

    ``weight`` and ``tv_weight`` scale the size penalty and the total variation against the
    hinge on the logit margin (true logit minus the best other, wanted above ``margin``).
    """
    import tensorflow as tf

    if penalty not in PENALTIES:
        raise AuditorError(f"unknown counterfactual penalty '{penalty}'; use l1 or l2")
    if steps < 1:
        raise AuditorError(f"counterfactuals need at least 1 step, got steps={steps}")
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    if len(labels) != len(x):
        raise AuditorError(f"counterfactuals got {len(x)} images but {len(labels)} labels")
    search = _compiled_search(handle, penalty)
    hyper = [tf.constant(v, tf.float32) for v in (weight, tv_weight, learning_rate, margin)]
    # one forward-backward pass per step; Adam's moments and the best change so far are a few
    # input-sized copies per image, small beside the activations the row budget counts
    rows = batch_size or rows_per_pass(handle, backward=True)

    def call(state, first, count):  # ``count`` steps of every block
        def run(images, state, classes):  # one block of one replica
            return search(images, state, classes, tf.constant(first), tf.constant(count),
                          *hyper)

        return chunked(handle, run, x, state, labels, rows=rows)

    counterfactual = x.copy()
    if len(x):
        size = x[0].size
        start = np.zeros((len(x), STATE * size + 1), np.float32)
        start[:, -1] = np.inf  # no success yet
        state = in_calls(start, 0, steps, call, [])
        best = state[:, (STATE - 1) * size:STATE * size].reshape(x.shape)
        counterfactual = np.clip(x + best, 0.0, 1.0)
    before = _probs(handle, x)
    after = _probs(handle, counterfactual)
    success = after.argmax(axis=1) == labels if len(x) else np.zeros(0, bool)
    return Counterfactuals(x, counterfactual, labels, success, before, after)


def _probs(handle, x: np.ndarray) -> np.ndarray:
    if not len(x):
        return np.zeros((0, handle.num_classes), np.float32)
    return softmax(forward(handle, x).astype(np.float64)).astype(np.float32)


def _size(delta, penalty: str):
    import tensorflow as tf

    if penalty == "l1":
        return tf.reduce_sum(tf.abs(delta), axis=[1, 2, 3])
    return tf.reduce_sum(tf.square(delta), axis=[1, 2, 3])


STATE = 4  # images per row of the search's state: the change, Adam's m and v, the best change


def _compiled_search(handle, penalty: str):
    """The optimisation as one compiled loop for one model and penalty, traced once for every
    batch size and cached: steps ``first + 1`` to ``first + count`` from a state of one row
    per image (the change, Adam's moments, the best change, each flattened, and the best
    change's size), the new state returned."""
    import tensorflow as tf

    key = ("counterfactual", penalty)
    if key in handle.compiled:
        return handle.compiled[key]
    beta1, beta2, tiny = 0.9, 0.999, 1e-8
    shape = tuple(handle.input_shape)
    flat = int(np.prod(shape))
    scalar, count = tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)

    # No autograph: the loop is a tf.while_loop, and converting the model's Python cost a
    # third of a trace (featureviz/render.py)
    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([None, *shape], tf.float32),
                                  tf.TensorSpec([None, STATE * flat + 1], tf.float32),
                                  tf.TensorSpec([None], tf.int32), count, count,
                                  scalar, scalar, scalar, scalar])
    def search(x, state, labels, first, steps, weight, tv_weight, learning_rate, margin):
        classes = handle.num_classes
        wanted = tf.one_hot(labels, classes)
        parts = tf.reshape(state[:, :STATE * flat], [-1, STATE, *shape])

        def body(step, delta, m, v, best, best_size):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                logits = handle.logits(x + delta)
                true_logit = tf.reduce_sum(logits * wanted, axis=1)
                other = tf.reduce_max(logits - 1e9 * wanted, axis=1)
                size = _size(delta, penalty)
                loss = tf.reduce_sum(tf.nn.relu(other - true_logit + margin) + weight * size
                                     + tv_weight * image_total_variation(delta, total=True))
            # The current delta is judged before it moves: keep it if it is the smallest success.
            better = (true_logit > other) & (size < best_size)
            best = tf.where(tf.reshape(better, [-1, 1, 1, 1]), delta, best)
            best_size = tf.where(better, size, best_size)
            grad = tape.gradient(loss, delta)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * tf.square(grad)
            t = tf.cast(step, tf.float32)
            update = (m / (1 - beta1 ** t)) / (tf.sqrt(v / (1 - beta2 ** t)) + tiny)
            delta = tf.clip_by_value(x + delta - learning_rate * update, 0.0, 1.0) - x
            return step + 1, delta, m, v, best, best_size

        _, delta, m, v, best, best_size = tf.while_loop(
            lambda step, *_: step <= first + steps, body,
            (first + 1, *(parts[:, i] for i in range(STATE)), state[:, -1]))
        rows = tf.reshape(tf.stack([delta, m, v, best], axis=1), [-1, STATE * flat])
        return tf.concat([rows, best_size[:, None]], axis=1)

    handle.compiled[key] = search
    return search
