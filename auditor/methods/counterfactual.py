"""Counterfactual explanations by input optimisation: the smallest change that fixes a mistake.

For each misclassified image, optimise a change ``delta`` of the display-space input so that the
model predicts the true class, while a penalty keeps the change small (L1 or L2) and shaped
(total variation, so that it reads as strokes and blobs rather than noise). Pixels stay in
[0, 1] by projection after every step. All mistakes are optimised together in one batch by one
compiled loop (Adam written out functionally so that it lives inside the tf.function). Every
sample runs all steps: once the true class wins, the penalty keeps shrinking the change towards
the decision boundary, and the smallest successful change seen is the one returned.

A multi-label model's counterfactual (``label_counterfactuals``) aims at one label's decision
instead: the change that carries that label's logit across its threshold (off to on, or on to
off); the same loop, with the hinge on that one logit's distance from its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.featureviz.objectives import image_total_variation
from auditor.predict.batched import chunked, forward, rows_per_pass
from auditor.predict.predictions import sigmoid, softmax

PENALTIES = ("l1", "l2")


@dataclass
class Counterfactuals:
    """Originals, their counterfactuals, and the model's probabilities before and after."""

    original: np.ndarray  # (N, H, W, C) display space
    counterfactual: np.ndarray  # (N, H, W, C); equals the original where no success was found
    labels: np.ndarray  # (N,) the class the change aims for (the true class), or the label
    success: np.ndarray  # (N,) bool: the model predicts the true class (the label's decision
    #                       crossed) on the counterfactual
    probs_before: np.ndarray  # (N, classes): softmax, or each label's sigmoid
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
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    _check(penalty, steps, x, labels)
    aim = np.eye(handle.num_classes, dtype=np.float32)[labels]
    counterfactual = _search(handle, "class", x, aim, np.zeros(len(x), np.float32), penalty,
                             (weight, tv_weight, learning_rate, margin), steps, batch_size)
    before = _probs(handle, x)
    after = _probs(handle, counterfactual)
    success = after.argmax(axis=1) == labels if len(x) else np.zeros(0, bool)
    return Counterfactuals(x, counterfactual, labels, success, before, after)


def label_counterfactuals(handle, x, labels, turn_on, cuts, *, penalty: str = "l1",
                          weight: float = 0.05, tv_weight: float = 0.05, steps: int = 200,
                          learning_rate: float = 0.01, margin: float = 1.0,
                          batch_size: int | None = None) -> Counterfactuals:
    """Counterfactuals of a multi-label model: for each image ``x[i]``, the smallest change
    that turns label ``labels[i]`` on (``turn_on[i]``: its logit above its threshold's logit
    ``cuts[labels[i]]``) or off (below it), wanted ``margin`` logits beyond the threshold.
    ``probs_before`` and ``probs_after`` are the sigmoids of every label; ``success`` that the
    aimed label's decision crossed (whatever the others did)."""
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    _check(penalty, steps, x, labels)
    signs = np.where(np.asarray(turn_on, bool).reshape(-1), 1.0, -1.0).astype(np.float32)
    if len(signs) != len(x):
        raise AuditorError(f"counterfactuals got {len(x)} images but {len(signs)} directions")
    cuts = np.asarray(cuts, np.float32)
    aim = np.eye(handle.num_classes, dtype=np.float32)[labels] * signs[:, None]
    counterfactual = _search(handle, "label", x, aim, -signs * cuts[labels], penalty,
                             (weight, tv_weight, learning_rate, margin), steps, batch_size)
    logits_after = forward(handle, counterfactual)
    rows = np.arange(len(x))
    success = signs * (logits_after[rows, labels] - cuts[labels]) > 0
    return Counterfactuals(x, counterfactual, labels, success,
                           _sigmoids(forward(handle, x)), _sigmoids(logits_after))


def _check(penalty: str, steps: int, x, labels) -> None:
    if penalty not in PENALTIES:
        raise AuditorError(f"unknown counterfactual penalty '{penalty}'; use l1 or l2")
    if steps < 1:
        raise AuditorError(f"counterfactuals need at least 1 step, got steps={steps}")
    if len(labels) != len(x):
        raise AuditorError(f"counterfactuals got {len(x)} images but {len(labels)} labels")


def _search(handle, goal: str, x, aim, bias, penalty: str, hyper, steps: int,
            batch_size: int | None) -> np.ndarray:
    """The compiled search over ``x`` in blocks of the memory budget's rows."""
    import tensorflow as tf

    search = _compiled_search(handle, penalty, goal)
    hyper = [tf.constant(v, tf.float32) for v in hyper]

    def run(images, aims, biases):  # one block of one replica
        return search(images, aims, biases, tf.constant(steps), *hyper)

    # one forward-backward pass per step; Adam's moments and the best change so far are a few
    # input-sized copies per image, small beside the activations the row budget counts
    rows = batch_size or rows_per_pass(handle, backward=True)
    return chunked(handle, run, x, aim, bias, rows=rows) if len(x) else x.copy()


def _probs(handle, x: np.ndarray) -> np.ndarray:
    if not len(x):
        return np.zeros((0, handle.num_classes), np.float32)
    return softmax(forward(handle, x).astype(np.float64)).astype(np.float32)


def _sigmoids(logits: np.ndarray) -> np.ndarray:
    return sigmoid(logits.astype(np.float64)).astype(np.float32)


def _goal_margin(goal: str, logits, aim, bias):
    """How far each image is past its goal (> 0: reached). "class": the aimed class's logit
    minus the best other; "label": the aimed label's logit beyond its threshold, signed by
    the direction (``aim`` is +-1 at the label, ``bias`` minus the signed threshold)."""
    import tensorflow as tf

    aimed = tf.reduce_sum(logits * aim, axis=1)
    if goal == "label":
        return aimed + bias
    return aimed - tf.reduce_max(logits - 1e9 * aim, axis=1)


def _size(delta, penalty: str):
    import tensorflow as tf

    if penalty == "l1":
        return tf.reduce_sum(tf.abs(delta), axis=[1, 2, 3])
    return tf.reduce_sum(tf.square(delta), axis=[1, 2, 3])


def _compiled_search(handle, penalty: str, goal: str):
    """The whole optimisation as one compiled loop for one model, penalty and goal (a class
    or a label's decision), traced once for every batch size and cached."""
    import tensorflow as tf

    key = ("counterfactual", penalty, goal)
    if key in handle.compiled:
        return handle.compiled[key]
    beta1, beta2, tiny = 0.9, 0.999, 1e-8

    scalar = tf.TensorSpec([], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, *handle.input_shape], tf.float32),
                                  tf.TensorSpec([None, handle.num_classes], tf.float32),
                                  tf.TensorSpec([None], tf.float32), tf.TensorSpec([], tf.int32),
                                  scalar, scalar, scalar, scalar])
    def search(x, aim, bias, steps, weight, tv_weight, learning_rate, margin):
        delta = tf.zeros_like(x)
        m, v = tf.zeros_like(x), tf.zeros_like(x)
        best = tf.zeros_like(x)
        best_size = tf.fill(tf.shape(bias), np.float32(np.inf))
        for step in tf.range(1, steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(delta)
                past = _goal_margin(goal, handle.logits(x + delta), aim, bias)
                size = _size(delta, penalty)
                loss = tf.reduce_sum(tf.nn.relu(margin - past) + weight * size
                                     + tv_weight * image_total_variation(delta, total=True))
            # The current delta is judged before it moves: keep it if it is the smallest success.
            better = (past > 0) & (size < best_size)
            best = tf.where(tf.reshape(better, [-1, 1, 1, 1]), delta, best)
            best_size = tf.where(better, size, best_size)
            grad = tape.gradient(loss, delta)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * tf.square(grad)
            t = tf.cast(step, tf.float32)
            update = (m / (1 - beta1 ** t)) / (tf.sqrt(v / (1 - beta2 ** t)) + tiny)
            delta = tf.clip_by_value(x + delta - learning_rate * update, 0.0, 1.0) - x
        return tf.clip_by_value(x + best, 0.0, 1.0)

    handle.compiled[key] = search
    return search
