"""L-infinity adversarial attacks in display space: FGSM and PGD, untargeted or targeted.

Both are one loop (FGSM is PGD with one full step and no random start), batched with a
per-sample epsilon and a per-sample target, so that one call attacks many images at once: every
epsilon of a curve and both its untargeted and targeted rows go through the loop together.
Each step is two calls of passes the plan's timing has already traced on the model (its
logits, and the input gradient of a logit minus another: ``gradient_pass``), so an attack
traces nothing: a trace of a loop of its own cost ConvNeXtTiny at 48 px 11 CPU-seconds, more
than its few steps (docs/scale.md). The loss is the logit margin (Carlini and Wagner 2017)
rather than the cross-entropy: its gradient never vanishes on a saturated softmax; it is the
gradient of one logit minus another, the best wrong class against the true one (untargeted) or
the target against the best other (targeted), chosen from the logits at the same point. A
sample stops moving once the attack has succeeded, so that the later steps of PGD can never
undo a success, and the images the model already gets wrong (or already sends to their target)
are not attacked at all when their clean logits are given. A signal stops the loop after the
step in which it came. Every adversarial image lies in the epsilon ball around its clean image
and in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.errors import AuditorError
from auditor.predict.batched import chunked, forward, rows_per_pass

ATTACKS = ("fgsm", "pgd")
TARGETS = ("runner_up", "least_likely")


def fgsm(handle, x, labels, epsilon, *, targets=None, batch_size: int | None = None):
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size epsilon."""
    return _attack(handle, x, labels, epsilon, targets, steps=1, step_ratio=1.0,
                   random_start=False, seed=0, batch_size=batch_size)[0]


def pgd(handle, x, labels, epsilon, *, targets=None, steps: int = 10, step_ratio: float = 2.5,
        random_start: bool = True, seed: int = 0, batch_size: int | None = None):
    """Projected gradient descent (Madry et al. 2018): ``steps`` signed steps of
    ``step_ratio * epsilon / steps``, from a uniform random start in the epsilon ball."""
    if steps < 1:
        raise AuditorError(f"PGD needs at least 1 step, got steps={steps}")
    return _attack(handle, x, labels, epsilon, targets, steps=steps, step_ratio=step_ratio,
                   random_start=random_start, seed=seed, batch_size=batch_size)[0]


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
            batch_size, clean=None, noise=None):
    """The attack's images and the logits of each (the last point the loop evaluated, so no
    caller predicts them again). ``clean``: the clean logits, when known: rows that already
    succeed on them are returned as they are. ``noise``: the random start's draw in [-1, 1]
    (None: drawn from ``seed``)."""
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
    eps = epsilon.reshape(-1, *[1] * (x.ndim - 1))
    low, high = np.maximum(x - eps, 0.0), np.minimum(x + eps, 1.0)
    logits = np.zeros((n, handle.num_classes), np.float32)
    todo = np.ones(n, bool)
    if clean is not None:  # already wrong (or at the target): nothing to attack
        logits[:] = clean
        todo = ~_succeeded(clean, labels, targets)
    adv = x.copy()
    if random_start:
        if noise is None:
            noise = np.random.default_rng(seed).uniform(-1, 1, x.shape)
        adv[todo] = np.clip(x + noise.astype(np.float32) * eps, low, high)[todo]
    loop = _Loop(handle, labels, targets, step_ratio / steps * eps, low, high,
                 batch_size or rows_per_pass(handle, backward=True))
    # the clean logits are the first point's when the attack starts from the clean image
    loop.run(adv, logits, np.flatnonzero(todo), steps, known=clean is not None
             and not random_start)
    return adv, logits


@dataclass
class _Loop:
    """The steps of one attack over rows of one batch: each step evaluates the rows still
    attacked, freezes those that succeeded, and moves the others one signed gradient step.

    The rows of a call shrink only to half their number or fewer: the batch's shape is kept
    between, because a model whose layers are compiled by XLA per shape compiles its passes
    again for every new number of rows (ConvNeXtTiny's gradient at 48 px, under a load of 8,
    before its grouped convolutions ran depthwise (inputs/depthwise.py): 4 CPU-seconds against
    0.15 a row; a keras-hub layer on ``ops.dot_product_attention`` still compiles so)."""

    handle: object
    labels: np.ndarray
    targets: np.ndarray
    step: np.ndarray  # per row, the step's size (a share of its epsilon), broadcast to images
    low: np.ndarray
    high: np.ndarray
    rows: int  # rows per call

    def run(self, adv, logits, todo, steps: int, known: bool) -> None:
        """``steps`` steps of the rows ``todo`` of ``adv`` (in place), their logits kept in
        ``logits`` (``known``: they already hold the first point's)."""
        from auditor.errors import Interrupted

        batch, live = todo, np.ones(len(todo), bool)
        for taken in range(steps + 1):
            if not live.any():
                return
            if taken or not known:
                logits[batch] = forward_rows(self.handle, adv[batch], self.rows)
            live &= ~_succeeded(logits[batch], self.labels[batch], self.targets[batch])
            if taken == steps or not live.any():
                return
            if 2 * live.sum() <= len(batch):
                batch, live = batch[live], live[live]
            wanted, other = _margin_classes(logits[batch], self.labels[batch],
                                            self.targets[batch])
            grad = gradient_rows(self.handle, adv[batch], wanted, other, self.rows)
            moved = adv[batch] + live.reshape(-1, *[1] * (adv.ndim - 1)) * self.step[batch] \
                * np.sign(grad)
            adv[batch] = np.clip(moved, self.low[batch], self.high[batch])
            Interrupted.raise_if_pending()


def forward_rows(handle, x, rows: int) -> np.ndarray:
    """Logits of ``x``, in blocks of ``rows``, through the model's traced logits pass."""
    return chunked(handle, handle.logits_fn, np.asarray(x, np.float32), rows=rows)


def gradient_rows(handle, x, wanted, other, rows: int) -> np.ndarray:
    """Per row, the input gradient of logit ``wanted`` minus logit ``other`` (-1: none), in
    blocks of ``rows``, through the input gradient the plan's timing traced (every
    gradient-based attribution calls it too)."""
    from auditor.methods.attribution.gradient import gradient_pass

    return chunked(handle, gradient_pass(handle, "logit"), np.asarray(x, np.float32),
                   np.asarray(wanted, np.int32), np.asarray(other, np.int32), rows=rows)


def _succeeded(logits, labels, targets) -> np.ndarray:
    """Per-sample success: the target class wins when there is one (>= 0), else any wrong
    class wins."""
    pred = np.asarray(logits).argmax(axis=1)
    return np.where(targets >= 0, pred == targets, pred != labels)


def best_other(logits, wanted) -> np.ndarray:
    """Per row, the class with the highest logit other than ``wanted``."""
    masked = np.array(logits, dtype=np.float64)
    masked[np.arange(len(masked)), wanted] = -np.inf
    return masked.argmax(axis=1).astype(np.int32)


def _margin_classes(logits, labels, targets) -> tuple[np.ndarray, np.ndarray]:
    """The two logits whose difference the attack ascends (the margin of Carlini and Wagner):
    the best wrong class minus the true one (untargeted), or the target minus the best other
    class (targeted)."""
    targeted = targets >= 0
    wanted = np.where(targeted, targets, labels)
    rival = best_other(logits, wanted)
    return np.where(targeted, wanted, rival), np.where(targeted, rival, wanted)


@dataclass
class AttackCurves:
    """Accuracy and targeted success per epsilon for each attack, on one set of images."""

    epsilons: list[float]
    accuracy: dict[str, list[float]]  # attack -> accuracy under the untargeted attack
    targeted_success: dict[str, list[float]]  # attack -> share of images sent to their target
    kept: np.ndarray | None = None  # PGD's untargeted adversarial images at ``keep_epsilon``
    kept_logits: np.ndarray | None = None  # the model's logits of ``kept``


def attack_curves(handle, x, labels, targets, epsilons, *, attacks=ATTACKS, steps: int = 10,
                  step_ratio: float = 2.5, random_start: bool = True, seed: int = 0,
                  keep_epsilon: float | None = None, logits=None) -> AttackCurves:
    """Every attack at every epsilon, each attack's epsilons and its untargeted and targeted
    rows together in one batched loop. ``logits``: the clean images' (the prediction pass's;
    None: predicted here, once).

    Targeted success counts only images with a target (>= 0). At epsilon 0 nothing can move,
    so the clean images are scored without running an attack; an image already wrong (or at
    its target) is so at every epsilon, the clean image its own adversarial example.
    """
    x = np.asarray(x, dtype=np.float32)
    labels, targets = np.asarray(labels), np.asarray(targets)
    clean = forward(handle, x) if logits is None else np.asarray(logits, np.float32)
    aimed = np.flatnonzero(targets >= 0)
    n = len(x)
    both = (np.concatenate([x, x[aimed]]), np.concatenate([labels, labels[aimed]]),
            np.concatenate([np.full(n, -1), targets[aimed]]), np.concatenate([clean, clean[aimed]]))
    moving = [e for e in epsilons if e != 0]
    tiled = [np.concatenate([a] * len(moving)) if moving else a[:0] for a in both]
    eps = np.repeat(np.asarray(moving, np.float32), len(both[0]))
    options = {"fgsm": {"steps": 1, "step_ratio": 1.0, "random_start": False, "seed": 0},
               "pgd": {"steps": steps, "step_ratio": step_ratio, "random_start": random_start,
                       "seed": seed}}
    if random_start:  # each epsilon starts from the noise a lone attack at it would draw
        options["pgd"]["noise"] = np.random.default_rng(seed).uniform(-1, 1, both[0].shape)
    accuracy = {name: [] for name in attacks}
    targeted = {name: [] for name in attacks}
    kept = kept_logits = None
    for name in attacks:
        if name not in options:
            raise AuditorError(f"unknown attack '{name}'; use one of: {', '.join(ATTACKS)}")
        adv, adv_logits = _curve_attack(handle, tiled, eps, len(moving), **options[name])
        for epsilon in epsilons:
            at = moving.index(epsilon) * len(both[0]) if epsilon != 0 else None
            rows = slice(at, None if at is None else at + len(both[0]))
            pred = (both[3] if at is None else adv_logits[rows]).argmax(axis=1)
            accuracy[name].append(float((pred[:n] == labels).mean()))
            hits = pred[n:] == targets[aimed]
            targeted[name].append(float(hits.mean()) if len(aimed) else float("nan"))
            if name == "pgd" and keep_epsilon is not None and np.isclose(epsilon, keep_epsilon):
                kept, kept_logits = ((x, clean) if at is None else
                                     (adv[rows][:n], adv_logits[rows][:n]))
    return AttackCurves([float(e) for e in epsilons], accuracy, targeted, kept, kept_logits)


def _curve_attack(handle, tiled, eps, copies: int, *, steps, step_ratio, random_start, seed,
                  noise=None):
    """One attack over ``tiled`` (images, labels, targets, clean logits, each repeated once
    per attacked epsilon ``eps``), the start's ``noise`` the same for every epsilon."""
    x, labels, targets, clean = tiled
    if noise is not None:
        noise = np.concatenate([noise] * copies) if copies else noise[:0]
    return _attack(handle, x, labels, eps, targets, steps=steps, step_ratio=step_ratio,
                   random_start=random_start, seed=seed, batch_size=None, clean=clean,
                   noise=noise)


def label_set_pgd(handle, x, labels, cuts, epsilon, *, steps: int = 10, step_ratio: float = 2.5,
                  random_start: bool = True, seed: int = 0):
    """PGD on a multi-label model's label set: each step ascends the margin of the decision
    nearest to flipping (each label's logit against its threshold's, signed so that it is
    positive while the decision is right), and an image stops moving once any of its
    decisions is wrong. ``labels`` are multi-hot rows, ``cuts`` each label's logit threshold.
    Each step is a prediction and a gradient call of the passes the plan's timing traced, as
    the single-label attacks' (``_Loop``, whose batch shapes it keeps the same way)."""
    from auditor.errors import Interrupted

    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    signs = (2.0 * np.asarray(labels, np.float32) - 1.0).reshape(n, -1)
    eps = np.broadcast_to(np.asarray(epsilon, dtype=np.float32), (n,)).reshape(-1, 1, 1, 1)
    low, high = np.maximum(x - eps, 0.0), np.minimum(x + eps, 1.0)
    noise = (np.random.default_rng(seed).uniform(-1, 1, x.shape) if random_start
             else np.zeros_like(x))
    adv = np.clip(x + noise.astype(np.float32) * eps, low, high)
    step, rows = step_ratio / steps * eps, rows_per_pass(handle, backward=True)
    batch, live = np.arange(n), np.ones(n, bool)
    for _ in range(steps):
        margins = signs[batch] * (forward_rows(handle, adv[batch], rows) - cuts)  # > 0: right
        live &= ~(margins < 0).any(axis=1)  # frozen from here on
        if not live.any():
            break
        if 2 * live.sum() <= len(batch):
            batch, live, margins = batch[live], live[live], margins[live]
        nearest = margins.argmin(axis=1)  # the decision nearest to flipping, pushed across
        toward = -signs[batch, nearest].reshape(-1, 1, 1, 1) * gradient_rows(
            handle, adv[batch], nearest, np.full(len(batch), -1), rows)
        adv[batch] = np.clip(adv[batch] + live.reshape(-1, 1, 1, 1) * step[batch]
                             * np.sign(toward), low[batch], high[batch])
        Interrupted.raise_if_pending()
    return adv
