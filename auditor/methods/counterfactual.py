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
and its size, and the highest margin any step reached) goes from one call to the next.

The search keeps its own trace: the margin past the goal before the search (``start``), after
its first step (``stepped``) and the highest any step reached (``reached``). The size penalty
and the total variation have no slope at no change, so the first step follows the margin's
gradient alone; a margin that never rose past where that step left it is a search the penalty
held from then on (a random net's input gradient is tiny beside it, docs/scale.md), which says
nothing about the model; one that did not rise even then met a zero gradient.

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
from auditor.predict.calls import in_calls
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
    start: np.ndarray  # (N,) the margin past the goal before the search (< 0: not reached)
    stepped: np.ndarray  # (N,) the margin after the first step (-inf with a single step)
    reached: np.ndarray  # (N,) the highest margin any step of the search reached

    @property
    def started(self) -> np.ndarray:
        """Per search, whether its first step (the margin's gradient alone) raised the margin."""
        return _rose(self.stepped, self.start)

    @property
    def moved(self) -> np.ndarray:
        """Per search, whether the margin ever rose past where the first step left it: the size
        penalty did not hold the change from the second step on."""
        return _rose(self.reached, np.maximum(self.start, self.stepped))

    @property
    def delta(self) -> np.ndarray:
        return self.counterfactual - self.original

    @property
    def l2(self) -> np.ndarray:
        return np.sqrt((self.delta ** 2).sum(axis=(1, 2, 3)))

    @property
    def l1(self) -> np.ndarray:
        return np.abs(self.delta).sum(axis=(1, 2, 3))


# float32 carries about 7 significant digits: a margin (logits of about 1, the hinge's scale)
# that changes by less than a millionth of itself has not moved, it was rounded. (A random
# MobileNetV2 at 32 px, whose logits are all about 1e-11, "rises" by 1e-12.)
RESOLUTION = 1e-6


def _rose(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Whether a margin rose from ``before`` to ``after`` by more than rounding."""
    with np.errstate(invalid="ignore"):
        scale = np.maximum(1.0, np.maximum(np.abs(after), np.abs(before)))
        return after - before > RESOLUTION * scale


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
    counterfactual, trace = _search(handle, "class", x, aim, np.zeros(len(x), np.float32),
                                      penalty, (weight, tv_weight, learning_rate, margin),
                                      steps, batch_size)
    after = _probs(handle, counterfactual)
    success = after.argmax(axis=1) == labels if len(x) else np.zeros(0, bool)
    return Counterfactuals(x, counterfactual, labels, success, _probs(handle, x), after, *trace)


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
    counterfactual, trace = _search(handle, "label", x, aim, -signs * cuts[labels], penalty,
                                      (weight, tv_weight, learning_rate, margin), steps,
                                      batch_size)
    logits, logits_after = forward(handle, x), forward(handle, counterfactual)
    rows = np.arange(len(x))
    success = signs * (logits_after[rows, labels] - cuts[labels]) > 0
    return Counterfactuals(x, counterfactual, labels, success, _sigmoids(logits),
                           _sigmoids(logits_after), *trace)


def _check(penalty: str, steps: int, x, labels) -> None:
    if penalty not in PENALTIES:
        raise AuditorError(f"unknown counterfactual penalty '{penalty}'; use l1 or l2")
    if steps < 1:
        raise AuditorError(f"counterfactuals need at least 1 step, got steps={steps}")
    if len(labels) != len(x):
        raise AuditorError(f"counterfactuals got {len(x)} images but {len(labels)} labels")


def _search(handle, goal: str, x, aim, bias, penalty: str, hyper, steps: int,
            batch_size: int | None) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The compiled search over ``x`` in blocks of the memory budget's rows, a stretch of
    steps per call: the counterfactuals, and each search's trace (its margin before it,
    after its first step, and the highest it reached)."""
    import tensorflow as tf

    if not len(x):
        return x.copy(), tuple(np.zeros(0, np.float32) for _ in range(TRACE - 1))
    search = _compiled_search(handle, penalty, goal)
    hyper = [tf.constant(v, tf.float32) for v in hyper]
    # one forward-backward pass per step; Adam's moments and the best change so far are a few
    # input-sized copies per image, small beside the activations the row budget counts
    rows = batch_size or rows_per_pass(handle, backward=True)

    def call(state, first, count):  # ``count`` steps of every block
        def run(images, state, aims, biases):  # one block of one replica
            return search(images, state, aims, biases, tf.constant(first), tf.constant(count),
                          *hyper)

        return chunked(handle, run, x, state, aim, bias, rows=rows)

    size = x[0].size
    start = np.zeros((len(x), STATE * size + TRACE), np.float32)
    start[:, -TRACE] = np.inf  # no success yet
    start[:, 1 - TRACE:] = -np.inf  # no step taken, no margin reached yet
    state = in_calls(start, 0, steps, call, [])
    best = state[:, (STATE - 1) * size:STATE * size].reshape(x.shape)
    return np.clip(x + best, 0.0, 1.0), tuple(state[:, i] for i in range(1 - TRACE, 0))


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


STATE = 4  # images per row of the search's state: the change, Adam's m and v, the best change
TRACE = 4  # and numbers: the best change's size; the margin before the search, after its first
#            step, and the highest reached


def _compiled_search(handle, penalty: str, goal: str):
    """The optimisation as one compiled loop for one model, penalty and goal (a class or a
    label's decision), traced once for every batch size and cached: steps ``first + 1`` to
    ``first + count`` from a state of one row per image (the change, Adam's moments, the best
    change, each flattened, the best change's size, the margin before the search, after its
    first step and the highest reached), the new state returned."""
    import tensorflow as tf

    key = ("counterfactual", penalty, goal)
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
                                  tf.TensorSpec([None, STATE * flat + TRACE], tf.float32),
                                  tf.TensorSpec([None, handle.num_classes], tf.float32),
                                  tf.TensorSpec([None], tf.float32), count, count,
                                  scalar, scalar, scalar, scalar])
    def search(x, state, aim, bias, first, steps, weight, tv_weight, learning_rate, margin):
        parts = tf.reshape(state[:, :STATE * flat], [-1, STATE, *shape])

        def body(step, delta, m, v, best, best_size, start, stepped, reached):
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
            start = tf.where(step == 1, past, start)  # no change yet
            stepped = tf.where(step == 2, past, stepped)  # the change after the first step
            reached = tf.maximum(reached, past)
            grad = tape.gradient(loss, delta)
            m = beta1 * m + (1 - beta1) * grad
            v = beta2 * v + (1 - beta2) * tf.square(grad)
            t = tf.cast(step, tf.float32)
            update = (m / (1 - beta1 ** t)) / (tf.sqrt(v / (1 - beta2 ** t)) + tiny)
            delta = tf.clip_by_value(x + delta - learning_rate * update, 0.0, 1.0) - x
            return step + 1, delta, m, v, best, best_size, start, stepped, reached

        _, delta, m, v, best, *trace = tf.while_loop(
            lambda step, *_: step <= first + steps, body,
            (first + 1, *(parts[:, i] for i in range(STATE)),
             *(state[:, i] for i in range(-TRACE, 0))))
        rows = tf.reshape(tf.stack([delta, m, v, best], axis=1), [-1, STATE * flat])
        return tf.concat([rows, tf.stack(trace, axis=1)], axis=1)

    handle.compiled[key] = search
    return search
