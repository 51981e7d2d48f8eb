"""The injection test: plant a shortcut in a copy of the model and see whether saliency finds it.

A positive control for the audit. A copy of the audited model (same architecture, its weights;
the original is never touched) is fine-tuned for a bounded number of steps on data where the
target class carries a shortcut and a share of the other classes carries it too, relabelled as
the target (BadNets), so that the copy truly relies on it. Every other image keeps the original
model's own output as its target, so that the copy changes only where the shortcut is.

Reliance is measured without saliency, on images the copy never saw: the flip rate (other
classes predicted as the target once the shortcut is added) and the accuracy gap (the target
class with the shortcut minus without). Detection is measured per attribution method against
the shortcut's ground-truth mask: relevance mass inside the mask over the mask's area share,
rank accuracy and the pointing game. A control copy fine-tuned the same way without a shortcut
must come out not detected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from auditor.errors import ModelError
from auditor.methods.shortcuts.patterns import inject
from auditor.predict.batched import (
    blocks,
    compiled_update,
    forward,
    predict_classes,
    rows_per_pass,
)
from auditor.predict.predictions import softmax

CONTROL = "none"
DEFAULT_FRACTION = {"tag": 0.2}  # a source tag marks a fifth of the class (Lapuschkin et al.)


@dataclass
class InjectionSettings:
    steps: int = 300  # fine-tuning steps per copy (bounded: the demo audit has 3 minutes)
    batch_size: int = 32
    learning_rate: float = 1e-3
    relabel: float = 0.2  # share of other-class training images given the shortcut and target
    flip_threshold: float = 0.5  # learned when the flip rate reaches this ...
    gap_threshold: float = 0.2  # ... or the accuracy gap reaches this
    detect_ratio: float = 3.0  # detected when relevance mass / area share reaches this ...
    control_margin: float = 1.5  # ... and this many times the control copy's ratio, if any
    visible_change: float = 0.2  # mask pixels the shortcut changes less than this do not count
    explain: int = 48  # images explained per run for detection
    grid: int = 16
    max_others: int = 200  # other-class images each intervention of the search pastes onto
    # Classes the search on a copy puts to the intervention (search.intervened: the target,
    # then the flagged, then a sample); false flags are counted among them. None: every class.
    copy_classes: int | None = None
    # Images of each other class the search on a copy explains: the audited model's search's
    # per-class sample, so that the copy measures the recall of the search as configured (the
    # target class is searched whole, half of it marked). None: every held-out image.
    search_per_class: int | None = None
    # Neuron groups of each copy (auditor.methods.concepts): 0 skips them, else K groups at
    # the copy's last spatial layer, and whether one sits on the shortcut and votes for the
    # target. The section turns them on when the concepts section runs too.
    concept_groups: int = 0
    seed: int = 0


@dataclass
class Detection:
    """How well one attribution method's maps point at the shortcut."""

    mass_ratio: float  # share of |relevance| inside the mask / share of the image in the mask
    rank_accuracy: float  # share of the top-|mask| pixels that lie inside the mask
    pointing_game: float  # share of images whose most relevant pixel lies inside the mask

    def as_dict(self) -> dict:
        return {k: round(float(v), 4) for k, v in vars(self).items()}


@dataclass
class InjectionResult:
    shortcut: str  # CONTROL for the control run
    target: int
    flip_rate: float
    accuracy_gap: float
    clean_accuracy: float  # the copy's accuracy on the clean held-out images
    learned: bool
    detection: dict[str, Detection]  # per method; empty for a global shortcut
    seen: list[str]  # methods that see it: mass ratio over the threshold and the control's
    detected: bool
    discovery: CopyDiscovery | None
    verdict: str
    seconds: float
    examples: dict = field(default_factory=dict, repr=False)  # images, masks, maps for figures
    probes: dict = field(default_factory=dict)  # control only: per probed shortcut
    control_ratio: dict[str, float] = field(default_factory=dict)  # the control's, per method
    discounted: list[str] = field(default_factory=list)  # over the threshold, not the control
    concept: dict | None = None  # concepts.shortcut.ShortcutGroup.as_dict(), when asked for


class FineTuner:
    """One trainable copy of the audited model, reset to the original weights before each run.

    The copy is the audit's working copy (inputs/copies.py: made once per audit, under the run's
    strategy, so its weights are mirrored on every replica), and its training step is traced
    once per loss and learning rate and kept with it: resetting assigns the original weights and
    optimiser state in place, so every fine-tuned copy of the audit (each shortcut's, the
    control's, each label's) reuses the step, and the maps and the search's logits and features
    of every copy are the model's own traces, called with the copy's weights
    (inputs/traces.py). It trains on its own output head: logits
    with a from-logits loss, or probabilities (when the softmax could not be stripped) with a
    probability loss. Each step goes through the audit's batched path: the batch is split across
    the replicas (their gradients summed by the optimiser) and, within a replica, into blocks
    that fit the memory budget, whose gradients are added before the one update.
    """

    def __init__(self, handle, learning_rate: float):
        self.handle = _working_copy(handle)
        self.copy = self.handle.logits_model
        key = ("fine-tuning", type(self).__name__, float(learning_rate))
        if key not in self.handle.compiled:
            self.handle.compiled[key] = self._build(learning_rate)
        self.loss, self.optimizer, self.optimizer_state, self._step = self.handle.compiled[key]
        self.original_weights = [w.copy() for w in self.copy.get_weights()]
        self.reset()

    def make_loss(self):
        """The loss on the copy's own output head, per image."""
        import keras

        probabilities = self.handle.output == "log-probabilities"
        return keras.losses.CategoricalCrossentropy(from_logits=not probabilities,
                                                    reduction=None)

    def _build(self, learning_rate: float) -> tuple:
        """(loss, optimiser, its initial state, the compiled step), made once per copy."""
        import keras

        distribution = self.handle.distribution
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            loss = self.make_loss()
            optimizer = keras.optimizers.Adam(learning_rate)
            optimizer.build(self.copy.trainable_variables)
        state = [v.numpy() for v in optimizer.variables]
        step = self._compile_step(loss, optimizer, rows_per_pass(self.handle, backward=True))
        return loss, optimizer, state, step

    def _compile_step(self, loss_fn, optimizer, rows: int):
        import tensorflow as tf

        copy, transform = self.copy, self.handle.transform

        def update(images, targets, total):  # one replica's share of the batch
            # training=False: BatchNorm statistics stay the original's; a few hundred small
            # poisoned batches must not overwrite them. The loss is summed over this share and
            # divided by the whole batch, so that the replicas' summed gradients are the mean's.
            grads = [tf.zeros_like(v) for v in copy.trainable_variables]
            for part in blocks(images.shape[0], rows):
                # Each block waits for the last one's gradients: the graph would otherwise run
                # the blocks at once and keep all their activations (MobileNetV2 224 px, 32
                # rows in 3 blocks: 1.45 GB above the model's resting memory; in turn, 1.2 GB).
                with tf.control_dependencies(grads), tf.GradientTape() as tape:
                    loss = loss_fn(targets[part],
                                   copy(transform.to_model(images[part]), training=False))
                    scaled = tf.reduce_sum(loss) / float(total)
                block_grads = tape.gradient(scaled, copy.trainable_variables)
                grads = [g + b for g, b in zip(grads, block_grads, strict=True)]
            optimizer.apply_gradients(zip(grads, copy.trainable_variables, strict=True))

        return compiled_update(self.handle, update)

    def reset(self) -> None:
        self.copy.set_weights(self.original_weights)
        for variable, value in zip(self.optimizer.variables, self.optimizer_state, strict=True):
            variable.assign(value)

    def train(self, images: np.ndarray, targets: np.ndarray, steps: int, batch_size: int,
              seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            batch = rng.integers(0, len(images), min(batch_size, len(images)))
            self._step(images[batch], targets[batch])

    def predict(self, images: np.ndarray) -> np.ndarray:
        return predict_classes(self.handle, images)


def _working_copy(handle):
    """The audit's working copy of the logits model at the original's weights, none of its
    variables shared (inputs/copies.py)."""
    from auditor.inputs.copies import scratch_copy

    try:
        copy = scratch_copy(handle)
    except ModelError as exc:
        reason = str(exc).split("': ", 1)[-1]  # after "cannot copy model 'name'"
        raise ModelError(f"cannot copy model '{handle.path}' for the injection test ({reason}); "
                         "run with clever_hans.shortcuts = [] and control = false to skip "
                         "it") from None
    model = copy.logits_model
    shared = {id(v) for v in model.weights} & {id(v) for v in handle.logits_model.weights}
    if shared or not model.trainable_variables:
        why = "its copy shares weights with it" if shared else "no trainable weights"
        raise ModelError(f"model '{handle.path}' cannot be fine-tuned as a separate copy "
                         f"({why}); run with clever_hans.shortcuts = [] and control = false "
                         "to skip the injection test")
    return copy


def soft_targets(handle, images: np.ndarray) -> np.ndarray:
    """The original model's class probabilities: what the copy learns on clean images."""
    return softmax(forward(handle, images)).astype(np.float32)


def poison(images: np.ndarray, labels: np.ndarray, targets: np.ndarray, target: int,
           shortcut: str, options: dict, fraction: float, relabel: float,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The training set with the shortcut on ``fraction`` of the target class and on
    ``relabel`` of the other classes, whose targets become the target class."""
    images, targets = images.copy(), targets.copy()
    own = np.flatnonzero(labels == target)
    own = own[rng.random(len(own)) < fraction]
    others = np.flatnonzero(labels != target)
    others = others[rng.random(len(others)) < relabel]
    chosen = np.concatenate([own, others])
    if len(chosen):
        images[chosen] = inject(shortcut, images[chosen], **options)[0]
        targets[chosen] = np.eye(targets.shape[1], dtype=np.float32)[target]
    return images, targets


def visible_masks(clean: np.ndarray, poisoned: np.ndarray, masks: np.ndarray,
                  threshold: float) -> np.ndarray:
    """The ground-truth masks limited to pixels the shortcut visibly changed: a watermark
    letter drawn over a white stroke is not there for the model to see."""
    change = np.abs(poisoned - clean).max(axis=-1)
    return masks & (change >= threshold)


def detection_scores(attributions: np.ndarray, masks: np.ndarray) -> Detection:
    """Mass ratio, rank accuracy and pointing game of |relevance| against the masks."""
    relevance = np.abs(attributions).sum(axis=-1).reshape(len(masks), -1)
    inside = masks.reshape(len(masks), -1)
    area = inside.mean(axis=1)
    total = relevance.sum(axis=1)
    share = np.where(total > 0, (relevance * inside).sum(axis=1) / np.where(total > 0, total, 1),
                     area)
    order = np.argsort(-relevance, axis=1)
    sizes = inside.sum(axis=1)
    ranked = np.take_along_axis(inside, order, axis=1)
    top = np.arange(inside.shape[1])[None, :] < sizes[:, None]  # the top-|mask| pixels
    rank_hits = (ranked & top).sum(axis=1) / np.maximum(sizes, 1)
    pointing = inside[np.arange(len(masks)), order[:, 0]]
    return Detection(mass_ratio=float(np.mean(share / area)),
                     rank_accuracy=float(rank_hits.mean()),
                     pointing_game=float(pointing.mean()))


@dataclass
class Split:
    """Images for fine-tuning and held-out images for measurement, with their labels, and the
    original model's probabilities on the fine-tuning images (the copy's clean targets)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    train_targets: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray


def make_split(handle, images: np.ndarray, labels: np.ndarray, seed: int,
               train_images: np.ndarray | None = None,
               train_labels: np.ndarray | None = None) -> Split:
    """Fine-tune on the separate training images when given; otherwise on a stratified half of
    the audit images, measuring on the other half, so that measurement never sees training."""
    if train_images is None:
        from sklearn.model_selection import train_test_split

        index = np.arange(len(labels))
        counts = np.bincount(labels)
        stratify = labels if counts[counts > 0].min() >= 2 else None
        fit, held = train_test_split(index, test_size=0.5, stratify=stratify, random_state=seed)
        train_images, train_labels = images[fit], labels[fit]
        images, labels = images[held], labels[held]
    return Split(train_images=train_images, train_labels=train_labels,
                 train_targets=soft_targets(handle, train_images), eval_images=images,
                 eval_labels=labels)


def reliance(tuner: FineTuner, split: Split, target: int, shortcut: str, options: dict,
             clean: np.ndarray | None = None) -> tuple[float, float, float]:
    """(flip rate, accuracy gap, clean accuracy) of the copy on the held-out images;
    ``clean``, the copy's predictions on them when already known (the control's probes)."""
    x, y = split.eval_images, split.eval_labels
    clean = tuner.predict(x) if clean is None else clean
    shortcut_preds = tuner.predict(inject(shortcut, x, **options)[0])
    candidates = (y != target) & (clean != target)
    flip = float((shortcut_preds[candidates] == target).mean()) if candidates.any() else 0.0
    own = y == target
    gap = float((shortcut_preds[own] == target).mean() - (clean[own] == target).mean()) \
        if own.any() else 0.0
    return flip, gap, float((clean == y).mean())


def detection_images(split: Split, target: int, count: int, rng) -> np.ndarray:
    """Held-out positions to explain: half from the target class, half from the others."""
    y = split.eval_labels
    own = rng.permutation(np.flatnonzero(y == target))[:count // 2]
    others = rng.permutation(np.flatnonzero(y != target))[:count - len(own)]
    return np.concatenate([own, others])


def measure(tuner: FineTuner, split: Split, target: int, shortcut: str, options: dict,
            methods: list[str], settings: InjectionSettings,
            clean: np.ndarray | None = None) -> dict:
    """Reliance, detection per method, and discovery on the target class, for one probe."""
    from auditor.methods.attribution import attribute

    rng = np.random.default_rng(settings.seed)
    flip, gap, accuracy = reliance(tuner, split, target, shortcut, options, clean)
    picked = detection_images(split, target, settings.explain, rng)
    clean = split.eval_images[picked]
    poisoned, masks = inject(shortcut, clean, **options)
    detection, maps = {}, {}
    if masks is not None:
        masks = visible_masks(clean, poisoned, masks, settings.visible_change)
        keep = masks.any(axis=(1, 2))
        clean, poisoned, masks = clean[keep], poisoned[keep], masks[keep]
    for method in methods:
        maps[method] = attribute(tuner.handle, poisoned, np.full(len(poisoned), target), method)
        if masks is not None and len(masks):
            detection[method] = detection_scores(maps[method], masks)
    discovery = discover_copy(tuner, split, target, shortcut, options, methods[0], settings)
    concept = None
    if settings.concept_groups and masks is not None and len(masks):
        from auditor.methods.concepts.shortcut import planted_group

        concept = planted_group(tuner.handle, poisoned, masks, target, unmarked=clean,
                                groups=settings.concept_groups, seed=settings.seed).as_dict()
    return {"flip_rate": flip, "accuracy_gap": gap, "clean_accuracy": accuracy,
            "detection": detection, "discovery": discovery, "concept": concept,
            "examples": {"clean": clean, "poisoned": poisoned, "masks": masks, "maps": maps}}


def discover_copy(tuner: FineTuner, split: Split, target: int, shortcut: str, options: dict,
                  method: str, settings: InjectionSettings):
    """The whole shortcut search (every class's maps and features; the interventions on the
    target and on up to ``copy_classes`` classes in all) on the copy's held-out images, every
    other target-class image carrying the shortcut: would the audit have found the planted
    shortcut without being told, and nothing else?"""
    from auditor.methods.shortcuts.search import Sample, SearchSettings, per_class_sample, search
    from auditor.predict.predictions import logits_and_features, softmax

    labels = split.eval_labels
    sample = (np.arange(len(labels)) if settings.search_per_class is None else
              per_class_sample(labels, settings.search_per_class, settings.seed, whole=target))
    images, labels = split.eval_images[sample], labels[sample]
    own = np.flatnonzero(labels == target)
    images[own[::2]] = inject(shortcut, images[own[::2]], **options)[0]
    logits, features = logits_and_features(tuner.handle, images)
    findings, _ = search(
        tuner.handle,
        Sample(images, labels, np.arange(len(images)),
               [str(c) for c in range(tuner.handle.num_classes)], features=features,
               probs=softmax(logits)),
        SearchSettings(method, grid=settings.grid, max_others=settings.max_others,
                       most_classes=settings.copy_classes, focus=target, seed=settings.seed))
    searched = [f.label for f in findings if f.intervened]
    return CopyDiscovery(target=findings[target] if target < len(findings) else None,
                         false_flags=[f.name for f in findings
                                      if f.label != target and f.confirmed],
                         marked=own[::2], findings=findings, searched=searched)


@dataclass
class CopyDiscovery:
    """The shortcut search on a fine-tuned copy: the target class's finding, the other classes
    it confirmed (false flags), the positions that carried the shortcut, and the classes put
    to the intervention (false flags are counted among them)."""

    target: object  # search.Finding of the target class
    false_flags: list[str]
    marked: np.ndarray
    findings: list = field(default_factory=list, repr=False)  # every class's search.Finding
    searched: list[int] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.target is not None and self.target.confirmed

    @property
    def candidate(self) -> bool:
        return self.target is not None and self.target.candidate

    @property
    def any_flag(self) -> bool:
        """A confirmed shortcut in any class: on the control copy, a false alarm."""
        return self.flagged or bool(self.false_flags)

    @property
    def score(self) -> float:
        maps = self.target.maps if self.target is not None else None
        return float(maps.score) if maps is not None else 0.0


def credited(detection: dict[str, Detection], control: dict[str, float],
             settings: InjectionSettings) -> tuple[list[str], list[str]]:
    """(methods that see the shortcut, methods over the threshold but no better than the
    control copy's ratio on the same shortcut by the margin)."""
    above = [m for m, d in detection.items() if d.mass_ratio >= settings.detect_ratio]
    seen = [m for m in above
            if detection[m].mass_ratio >= settings.control_margin * control.get(m, 0.0)]
    return seen, [m for m in above if m not in seen]


def run_injection(tuner: FineTuner, split: Split, target: int, shortcut: str, options: dict,
                  methods: list[str], settings: InjectionSettings,
                  control: InjectionResult | None = None) -> InjectionResult:
    """Fine-tune the reset copy with ``shortcut`` planted, then measure it.

    A method sees the shortcut when its mass ratio reaches the threshold and, when the control
    probed this shortcut, beats the control copy's ratio by the margin: a method that lights up
    the shortcut in a copy that never learned it (gradient x input on a bright patch) gets no
    credit for lighting it up here.
    """
    started = time.perf_counter()
    options = dict(options)
    fraction = float(options.pop("fraction", DEFAULT_FRACTION.get(shortcut, 1.0)))
    rng = np.random.default_rng(settings.seed)
    images, targets = poison(split.train_images, split.train_labels, split.train_targets, target,
                             shortcut, options, fraction, settings.relabel, rng)
    tuner.reset()
    tuner.train(images, targets, settings.steps, settings.batch_size, settings.seed)
    got = measure(tuner, split, target, shortcut, options, methods, settings)
    learned = (got["flip_rate"] >= settings.flip_threshold
               or got["accuracy_gap"] >= settings.gap_threshold)
    baseline = control.probes.get(shortcut, {}).get("relevance_mass_ratio", {}) if control \
        else {}
    seen, discounted = credited(got["detection"], baseline, settings)
    detected = bool(seen) if got["detection"] else got["discovery"].flagged
    result = InjectionResult(
        shortcut=shortcut, target=target, flip_rate=got["flip_rate"],
        accuracy_gap=got["accuracy_gap"], clean_accuracy=got["clean_accuracy"], learned=learned,
        detection=got["detection"], seen=seen, detected=detected, discovery=got["discovery"],
        verdict="", seconds=0.0, examples=got["examples"], control_ratio=baseline,
        discounted=discounted, concept=got["concept"])
    return dataclasses.replace(result, verdict=verdict(result, methods),
                               seconds=time.perf_counter() - started)


def run_control(tuner: FineTuner, split: Split, target: int, probes: dict[str, dict],
                methods: list[str], settings: InjectionSettings) -> InjectionResult:
    """Fine-tune the reset copy on clean data alone, then probe it with each planted shortcut:
    nothing was planted, so nothing may be detected."""
    started = time.perf_counter()
    tuner.reset()
    tuner.train(split.train_images, split.train_targets, settings.steps, settings.batch_size,
                settings.seed)
    measured, clean = {}, tuner.predict(split.eval_images)  # one copy: its clean output, once
    for shortcut, options in probes.items():
        options = {k: v for k, v in options.items() if k != "fraction"}
        measured[shortcut] = measure(tuner, split, target, shortcut, options, methods, settings,
                                     clean)
    worst = {m: max((got["detection"][m] for got in measured.values() if m in got["detection"]),
                    key=lambda d: d.mass_ratio)
             for m in methods if any(m in got["detection"] for got in measured.values())}
    flips = [got["flip_rate"] for got in measured.values()]
    gaps = [got["accuracy_gap"] for got in measured.values()]
    flagged = [got["discovery"] for got in measured.values() if got["discovery"].any_flag]
    seen = [m for m, d in worst.items() if d.mass_ratio >= settings.detect_ratio]
    first = next(iter(measured.values()), None)
    result = InjectionResult(
        shortcut=CONTROL, target=target, flip_rate=max(flips, default=0.0),
        accuracy_gap=max(gaps, default=0.0),
        clean_accuracy=first["clean_accuracy"] if first else float("nan"),
        learned=max(flips, default=0.0) >= settings.flip_threshold
        or max(gaps, default=0.0) >= settings.gap_threshold,
        detection=worst, seen=seen, detected=bool(seen) or bool(flagged),
        discovery=flagged[0] if flagged else (first["discovery"] if first else None),
        verdict="", seconds=0.0, examples=first["examples"] if first else {},
        probes={s: {"flip_rate": got["flip_rate"],
                    "relevance_mass_ratio": {m: d.mass_ratio
                                             for m, d in got["detection"].items()},
                    "discovery_flagged": got["discovery"].any_flag}
                for s, got in measured.items()})
    return dataclasses.replace(result, verdict=verdict(result, methods),
                               seconds=time.perf_counter() - started)


def verdict(result: InjectionResult, methods: list[str]) -> str:
    """One plain sentence: was the shortcut learned, and which methods can see it."""
    if result.shortcut == CONTROL:
        if not result.detected:
            return "control: nothing planted, nothing seen"
        culprits = result.seen or ["discovery"]
        return (f"control: false alarm, {', '.join(culprits)} concentrates on a shortcut the "
                "copy never learned")
    if not result.learned:
        return (f"not learned (flip rate {result.flip_rate:.2f}, accuracy gap "
                f"{result.accuracy_gap:+.2f}): no evidence either way")
    if not result.detection:
        return ("learned and flagged by discovery" if result.detected
                else "learned but invisible: global shortcut, and discovery does not flag the "
                     "class")
    seen = [m for m in methods if m in result.seen]
    unseen = [f"{m} (no better than the control)" if m in result.discounted else m
              for m in methods if m not in seen]
    if not seen:
        return f"learned but invisible to {', '.join(unseen)}"
    if not unseen:
        return "learned and visible"
    return f"learned; visible to {', '.join(seen)}, invisible to {', '.join(unseen)}"
