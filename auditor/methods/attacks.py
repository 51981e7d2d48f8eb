"""L-infinity adversarial attacks in display space: FGSM and PGD, untargeted or targeted.

Both are one compiled loop (FGSM is PGD with one full step and no random start), batched with a
per-sample epsilon and a per-sample target, so that one call attacks many images at once. The
loop runs a stretch of steps per call (``auditor.predict.calls``: about a second), so that
SIGTERM stops an attack within one; a call starts from the images the last one left. The
loss is the logit margin (Carlini and Wagner 2017) rather than the cross-entropy: its gradient
never vanishes on a saturated softmax. A sample stops moving once the attack has succeeded, so
that the later steps of PGD can never undo a success. Every adversarial image lies in the
epsilon ball around its clean image and in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.errors import AuditorError
from auditor.predict.batched import chunked, predict_classes, rows_per_pass
from auditor.predict.calls import in_calls

ATTACKS = ("fgsm", "pgd")
TARGETS = ("runner_up", "least_likely")


def fgsm(handle, x, labels, epsilon, *, targets=None, batch_size: int | None = None):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size epsilon."""
    return _attack(handle, x, labels, epsilon, targets, steps=1, step_ratio=1.0,
                   random_start=False, seed=0, batch_size=batch_size)


def pgd(handle, x, labels, epsilon, *, targets=None, steps: int = 10, step_ratio: float = 2.5,
        random_start: bool = True, seed: int = 0, batch_size: int | None = None):
    """Projected gradient descent (Madry et al. 2018): ``steps`` signed steps of
    ``step_ratio * epsilon / steps``, from a uniform random start in the epsilon ball."""
    if steps < 1:
        raise AuditorError(f"PGD needs at least 1 step, got steps={steps}")
    return _attack(handle, x, labels, epsilon, targets, steps=steps, step_ratio=step_ratio,
                   random_start=random_start, seed=seed, batch_size=batch_size)


def run_attack(name: str, handle, x, labels, epsilon, *, targets=None, **pgd_options):
    """``fgsm`` or ``pgd`` by name; ``pgd_options`` go to PGD only."""
    if name == "fgsm":
        return fgsm(handle, x, labels, epsilon, targets=targets)
    if name == "pgd":
        return pgd(handle, x, labels, epsilon, targets=targets, **pgd_options)
    raise AuditorError(f"unknown attack '{name}'; use one of: {', '.join(ATTACKS)}")


def choose_targets(logits: np.ndarray, labels: np.ndarray, rule: str | int) -> np.ndarray:
    """A wrong class per sample for targeted attacks: the runner-up (the most likely wrong
    class), the least likely class, or one fixed class index (samples of that class get -1,
    meaning 'not attacked')."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    if isinstance(rule, (int, np.integer)):
        if not 0 <= rule < logits.shape[1]:
            raise AuditorError(f"target class {rule} is outside the model's classes "
                               f"0..{logits.shape[1] - 1}")
        return np.where(labels == rule, -1, rule).astype(np.int32)
    masked = logits.copy()
    if rule == "runner_up":
        masked[rows, labels] = -np.inf
        return masked.argmax(axis=1).astype(np.int32)
    if rule == "least_likely":
        masked[rows, labels] = np.inf
        return masked.argmin(axis=1).astype(np.int32)
    raise AuditorError(f"unknown target rule '{rule}'; use {', '.join(TARGETS)} or a class name")


def _attack(handle, x, labels, epsilon, targets, *, steps, step_ratio, random_start, seed,
            batch_size):
    import tensorflow as tf

    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    labels = np.asarray(labels, dtype=np.int32).reshape(-1)
    epsilon = np.broadcast_to(np.asarray(epsilon, dtype=np.float32), (n,)).copy()
    if (epsilon < 0).any():
        raise AuditorError(f"epsilon must be at least 0, got {float(epsilon.min()):g}")
    targets = (np.full(n, -1, np.int32) if targets is None
               else np.asarray(targets, dtype=np.int32).reshape(-1))
    if len(labels) != n or len(targets) != n:
        raise AuditorError(f"attack got {n} images, {len(labels)} labels and {len(targets)} "
                           "targets; give one of each per image")
    if random_start:
        noise = np.random.default_rng(seed).uniform(-1, 1, x.shape).astype(np.float32)
    else:
        noise = np.zeros_like(x)
    attack = _compiled_attack(handle)
    fraction = tf.constant(step_ratio / steps, tf.float32)
    if not n:
        return x.copy()
    # one forward-backward pass per step; the loop's own tensors (box, noise, gradient) are a
    # few input-sized copies, small beside the activations the row budget counts
    rows = batch_size or rows_per_pass(handle, backward=True)

    def call(adv, first, count):  # ``count`` steps of every block
        def run(x, adv, labels, targets, epsilon, noise):  # one block of one replica
            return attack(x, adv, labels, targets, epsilon, noise, tf.constant(first),
                          tf.constant(count), fraction)

        return chunked(handle, run, x, adv, labels, targets, epsilon, noise, rows=rows)

    return in_calls(x, 0, steps, call, [])



def linf_start(x, epsilon, noise):
    """The L-infinity ball of radius ``epsilon`` (one per image) around ``x``, clipped to the
    valid range, and a random start inside it: (eps broadcast to the images, low, high, start)."""
    import tensorflow as tf

    eps = tf.reshape(epsilon, [-1] + [1] * (len(x.shape) - 1))
    low, high = tf.maximum(x - eps, 0.0), tf.minimum(x + eps, 1.0)
    return eps, low, high, tf.clip_by_value(x + noise * eps, low, high)

def succeeded(logits, labels, targets):
    """Per-sample success: the target class wins when there is one (>= 0), else any wrong
    class wins."""
    import tensorflow as tf

    pred = tf.argmax(logits, axis=1, output_type=tf.int32)
    return tf.where(targets >= 0, tf.equal(pred, targets), tf.not_equal(pred, labels))


def margin_loss(logits, labels, targets):
    """What the attack ascends: best wrong logit minus the true logit (untargeted), or the
    target logit minus the best other logit (targeted)."""
    import tensorflow as tf

    classes = tf.shape(logits)[1]
    targeted = targets >= 0
    wanted = tf.where(targeted, targets, labels)
    chosen = tf.gather(logits, wanted, batch_dims=1)
    others = tf.reduce_max(logits - 1e9 * tf.one_hot(wanted, classes), axis=1)
    return tf.where(targeted, chosen - others, others - chosen)


def _compiled_attack(handle):
    """The attack loop for one model, traced once for every batch size and cached."""
    import tensorflow as tf

    if "attack" in handle.compiled:
        return handle.compiled["attack"]

    images = tf.TensorSpec([None, *handle.input_shape], tf.float32)
    per_sample = tf.TensorSpec([None], tf.int32)
    scalar = tf.TensorSpec([], tf.float32)

    count = tf.TensorSpec([], tf.int32)

    # No autograph: the loop is a tf.while_loop, and converting the model's Python cost a
    # third of a trace (featureviz/render.py)
    @tf.function(autograph=False,
                 input_signature=[images, images, per_sample, per_sample,
                                  tf.TensorSpec([None], tf.float32), images, count, count, scalar])
    def attack(x, adv, labels, targets, epsilon, noise, first, steps, step_fraction):
        eps, low, high, start = linf_start(x, epsilon, noise)

        def step(i, adv, done):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                logits = handle.logits(adv)
                loss = tf.reduce_sum(margin_loss(logits, labels, targets))
            done = done | succeeded(logits, labels, targets)  # frozen from here on
            grad = tape.gradient(loss, adv)
            active = tf.reshape(tf.cast(~done, adv.dtype), tf.shape(eps))
            return (i + 1, tf.clip_by_value(adv + active * step_fraction * eps * tf.sign(grad),
                                            low, high), done)

        adv = tf.where(first == 0, start, adv)  # later calls go on from where the last left
        # An image that succeeded is frozen, so it still succeeds where the last call left it:
        # its first step here marks it done again, as a loop in one call kept it.
        done = tf.zeros(tf.shape(labels), tf.bool)
        return tf.while_loop(lambda i, *_: i < steps, step, (tf.constant(0), adv, done))[1]

    handle.compiled["attack"] = attack
    return attack


@dataclass
class AttackCurves:
    """Accuracy and targeted success per epsilon for each attack, on one set of images."""

    epsilons: list[float]
    accuracy: dict[str, list[float]]  # attack -> accuracy under the untargeted attack
    targeted_success: dict[str, list[float]]  # attack -> share of images sent to their target
    kept: np.ndarray | None = None  # PGD's untargeted adversarial images at ``keep_epsilon``


def attack_curves(handle, x, labels, targets, epsilons, *, attacks=ATTACKS, steps: int = 10,
                  step_ratio: float = 2.5, random_start: bool = True, seed: int = 0,
                  keep_epsilon: float | None = None) -> AttackCurves:
    """Every attack at every epsilon, untargeted and targeted together in one batched call.

    Targeted success counts only images with a target (>= 0). At epsilon 0 nothing can move,
    so the clean images are scored without running an attack.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels)
    targets = np.asarray(targets)
    aimed = np.flatnonzero(targets >= 0)
    n = len(x)
    both_x = np.concatenate([x, x[aimed]])
    both_labels = np.concatenate([labels, labels[aimed]])
    both_targets = np.concatenate([np.full(n, -1), targets[aimed]])
    accuracy = {name: [] for name in attacks}
    targeted = {name: [] for name in attacks}
    kept = None
    pgd_options = {"steps": steps, "step_ratio": step_ratio, "random_start": random_start,
                   "seed": seed}
    for epsilon in epsilons:
        for name in attacks:
            if epsilon == 0:
                adversarial = both_x
            else:
                adversarial = run_attack(name, handle, both_x, both_labels, epsilon,
                                         targets=both_targets, **pgd_options)
            pred = predict_classes(handle, adversarial)
            accuracy[name].append(float((pred[:n] == labels).mean()))
            hits = pred[n:] == targets[aimed]
            targeted[name].append(float(hits.mean()) if len(aimed) else float("nan"))
            if name == "pgd" and keep_epsilon is not None and np.isclose(epsilon, keep_epsilon):
                kept = adversarial[:n]
    return AttackCurves([float(e) for e in epsilons], accuracy, targeted, kept)


def label_set_pgd(handle, x, labels, cuts, epsilon, *, steps: int = 10, step_ratio: float = 2.5,
                  random_start: bool = True, seed: int = 0):
    """PGD on a multi-label model's label set: each step ascends the margin of the decision
    nearest to flipping (each label's logit against its threshold's, signed so that it is
    positive while the decision is right), and an image stops moving once any of its
    decisions is wrong. ``labels`` are multi-hot rows, ``cuts`` each label's logit threshold."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    if not n:
        return x.copy()
    signs = (2.0 * np.asarray(labels, np.float32) - 1.0).reshape(n, -1)
    epsilon = np.broadcast_to(np.asarray(epsilon, dtype=np.float32), (n,)).copy()
    noise = (np.random.default_rng(seed).uniform(-1, 1, x.shape).astype(np.float32)
             if random_start else np.zeros_like(x))
    key = ("label_set_pgd", steps, float(step_ratio), tuple(np.asarray(cuts, float).round(6)))
    if key not in handle.compiled:
        handle.compiled[key] = _label_set_loop(handle, cuts, steps, step_ratio)
    loop, rows = handle.compiled[key], rows_per_pass(handle, backward=True)

    def call(adv, first, count):  # ``count`` steps of every block, as ``_attack``'s
        def run(x, adv, signs, epsilon, noise):  # one block of one replica
            return loop(x, adv, signs, epsilon, noise, np.int32(first), np.int32(count))

        return chunked(handle, run, x, adv, signs, epsilon, noise, rows=rows)

    return in_calls(x, 0, steps, call, [])


def _label_set_loop(handle, cuts, steps: int, step_ratio: float):
    """label_set_pgd's loop for one model and one setting, traced once: ``count`` steps from
    step ``first`` (the first starts in the ball, later ones from ``adv``)."""
    import tensorflow as tf

    cut = tf.constant(np.asarray(cuts, np.float32))
    fraction = tf.constant(step_ratio / steps, tf.float32)

    @tf.function(reduce_retracing=True, autograph=False)  # a tf.while_loop, as _attack's
    def run(x, adv, signs, epsilon, noise, first, count):  # one block of one replica
        eps, low, high, start = linf_start(x, epsilon, noise)

        def step(i, adv, done):
            with tf.GradientTape() as tape:
                tape.watch(adv)
                margins = signs * (handle.logits(adv) - cut)  # > 0: the decision is right
                loss = -tf.reduce_sum(tf.reduce_min(margins, axis=1))
            done = done | tf.reduce_any(margins < 0, axis=1)  # frozen from here on
            active = tf.reshape(tf.cast(~done, adv.dtype), tf.shape(eps))
            grad = tape.gradient(loss, adv)
            return (i + 1, tf.clip_by_value(adv + active * fraction * eps * tf.sign(grad),
                                            low, high), done)

        adv = tf.where(first == 0, start, adv)
        done = tf.zeros(tf.shape(epsilon), tf.bool)  # a frozen image is found wrong again
        return tf.while_loop(lambda i, *_: i < count, step, (tf.constant(0), adv, done))[1]

    return run
