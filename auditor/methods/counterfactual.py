"""Counterfactual explanations by input optimisation: the smallest change that fixes a mistake.

For each misclassified image, optimise a change ``delta`` of the display-space input so that the
model predicts the true class, while a penalty keeps the change small (L1 or L2) and shaped
(total variation, so that it reads as strokes and blobs rather than noise). Pixels stay in
[0, 1] by projection after every step. All mistakes are optimised together in one batch, a step
at a time, each step two calls of passes the plan's timing has already traced (the logits, and
the input gradient of one logit minus another), so the search traces nothing: a compiled loop of
its own cost a trace of the model's forward and backward pass (7 CPU-seconds on ConvNeXtTiny at
48 px) for a few dozen steps of a few images (docs/scale.md). Adam is written out on the arrays.
Every sample runs all steps: once the true class wins, the penalty keeps shrinking the change
towards the decision boundary, and the smallest successful change seen is the one returned. A
signal stops the search after the step in which it came.

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
from auditor.predict.batched import forward, rows_per_pass
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
    counterfactual, trace, before = _search(handle, "class", x, aim,
                                            np.zeros(len(x), np.float32), penalty,
                                            (weight, tv_weight, learning_rate, margin), steps,
                                            batch_size)
    after = _probs(handle, counterfactual)
    success = after.argmax(axis=1) == labels if len(x) else np.zeros(0, bool)
    return Counterfactuals(x, counterfactual, labels, success, _softmax(before), after, *trace)


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
    counterfactual, trace, logits = _search(handle, "label", x, aim, -signs * cuts[labels],
                                            penalty, (weight, tv_weight, learning_rate, margin),
                                            steps, batch_size)
    logits_after = forward(handle, counterfactual)
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
            batch_size: int | None) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """The search over ``x``, a step at a time (a signal stops it after the step in which it
    came): the counterfactuals, each search's trace (its margin before it, after its first
    step, and the highest it reached), and the logits of ``x`` (its first step's)."""
    from auditor.errors import Interrupted

    if not len(x):
        return (x.copy(), tuple(np.zeros(0, np.float32) for _ in range(3)),
                np.zeros((0, handle.num_classes), np.float32))
    state = _Search(x, aim, bias, penalty, *hyper)
    rows = batch_size or rows_per_pass(handle, backward=True)
    for step in range(1, steps + 1):
        state.step(handle, goal, step, rows)
        Interrupted.raise_if_pending()
    return (np.clip(x + state.best, 0.0, 1.0), (state.start, state.stepped, state.reached),
            state.before)


class _Search:
    """The state of the searches (the change, Adam's moments, the best change and its size,
    the trace) and one step of them: the margin and the model's input gradient at the current
    change, through the two passes the plan's timing traced (the logits, and the gradient of
    one logit minus another: ``attacks.gradient_rows``), so the search traces nothing; the
    penalties' gradients and Adam's update (written out) are a few array operations."""

    def __init__(self, x, aim, bias, penalty, weight, tv_weight, learning_rate, margin):
        self.x, self.aim, self.bias, self.penalty = x, aim, bias, penalty
        self.weight, self.tv_weight = weight, tv_weight
        self.learning_rate, self.margin = learning_rate, margin
        self.delta, self.m, self.v, self.best = (np.zeros_like(x) for _ in range(4))
        n = len(x)
        self.best_size = np.full(n, np.inf, np.float32)  # no success yet
        self.before = None  # the logits of x, read at the first step
        self.start, self.stepped, self.reached = (np.full(n, -np.inf, np.float32)
                                                  for _ in range(3))

    def step(self, handle, goal: str, step: int, rows: int) -> None:
        from auditor.methods.attacks import best_other, forward_rows, gradient_rows

        logits = forward_rows(handle, self.x + self.delta, rows)
        past = _goal_margin(goal, logits, self.aim, self.bias)
        size = _size(self.delta, self.penalty)
        # The current delta is judged before it moves: keep it if it is the smallest success.
        better = (past > 0) & (size < self.best_size)
        self.best[better], self.best_size[better] = self.delta[better], size[better]
        if step == 1:
            self.start, self.before = past, logits  # no change yet
        elif step == 2:
            self.stepped = past  # the change after the first step
        self.reached = np.maximum(self.reached, past)
        classes = self.aim.argmax(axis=1) if goal == "class" else np.abs(self.aim).argmax(axis=1)
        other = best_other(logits, classes) if goal == "class" else np.full(len(past), -1)
        hinge = (past < self.margin).astype(np.float32)  # relu(margin - past)'s slope is -1
        direction = hinge * (1.0 if goal == "class" else self.aim.sum(axis=1))
        grad = self.weight * _size_gradient(self.delta, self.penalty) \
            + self.tv_weight * _tv_gradient(self.delta)
        if hinge.any():
            grad -= _rows(direction) * gradient_rows(handle, self.x + self.delta, classes,
                                                     other, rows)
        self._adam(grad, step)

    def _adam(self, grad, step: int) -> None:
        beta1, beta2, tiny = 0.9, 0.999, 1e-8
        self.m = beta1 * self.m + (1 - beta1) * grad
        self.v = beta2 * self.v + (1 - beta2) * np.square(grad)
        update = (self.m / (1 - beta1 ** step)) / (np.sqrt(self.v / (1 - beta2 ** step)) + tiny)
        self.delta = np.clip(self.x + self.delta - self.learning_rate * update, 0.0,
                             1.0) - self.x


def _rows(values) -> np.ndarray:
    """Per-row values broadcast over images."""
    return np.asarray(values, np.float32).reshape(-1, 1, 1, 1)


def _probs(handle, x: np.ndarray) -> np.ndarray:
    if not len(x):
        return np.zeros((0, handle.num_classes), np.float32)
    return _softmax(forward(handle, x))


def _softmax(logits: np.ndarray) -> np.ndarray:
    return softmax(logits.astype(np.float64)).astype(np.float32)


def _sigmoids(logits: np.ndarray) -> np.ndarray:
    return sigmoid(logits.astype(np.float64)).astype(np.float32)


def _goal_margin(goal: str, logits, aim, bias) -> np.ndarray:
    """How far each image is past its goal (> 0: reached). "class": the aimed class's logit
    minus the best other; "label": the aimed label's logit beyond its threshold, signed by
    the direction (``aim`` is +-1 at the label, ``bias`` minus the signed threshold)."""
    aimed = (logits * aim).sum(axis=1)
    if goal == "label":
        return aimed + bias
    return aimed - (logits - 1e9 * aim).max(axis=1)


def _size(delta, penalty: str) -> np.ndarray:
    if penalty == "l1":
        return np.abs(delta).sum(axis=(1, 2, 3))
    return np.square(delta).sum(axis=(1, 2, 3))


def _size_gradient(delta, penalty: str) -> np.ndarray:
    """The size penalty's gradient (the absolute value's slope at 0 taken as 0)."""
    return np.sign(delta) if penalty == "l1" else 2.0 * delta


def _tv_gradient(delta) -> np.ndarray:
    """The gradient of the summed total variation (featureviz/objectives.py
    ``image_total_variation`` with ``total``): each difference's sign, added to the later pixel
    and taken from the earlier, down and right."""
    grad = np.zeros_like(delta)
    for axis in (1, 2):
        sign = np.sign(np.diff(delta, axis=axis))
        later = [slice(None)] * 4
        earlier = [slice(None)] * 4
        later[axis], earlier[axis] = slice(1, None), slice(None, -1)
        grad[tuple(later)] += sign
        grad[tuple(earlier)] -= sign
    return grad
