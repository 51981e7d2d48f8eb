"""The injection test for a multi-label model: a shortcut planted and tied to one label.

The same positive control as ``injection.py``, with one label in place of the target class. A
copy of the audited model is fine-tuned (binary cross-entropy on its logits) on images whose
targets are the original model's own sigmoids, except that the shortcut is pasted on a share of
the images carrying the label and on a share of the others, whose target for that label becomes
1 (BadNets, per label); the other labels keep the original's outputs. Reliance is measured
without saliency on held-out images: the flip rate (images neither carrying nor given the label
that are given it once the shortcut is pasted) and the gap of the label's recall with the
shortcut and without. Visibility is measured on the label's logit, per method, against the
shortcut's mask, as for one class; a control copy fine-tuned the same way without the shortcut
gives the ratio a method reaches on the mask by chance. The bounds are InjectionSettings' (their
sources are there).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from auditor.methods.shortcuts.injection import (
    Detection,
    FineTuner,
    InjectionSettings,
    detection_scores,
    visible_masks,
)
from auditor.methods.shortcuts.patterns import inject
from auditor.predict.batched import forward

OWN_FRACTION = 0.5  # share of the label's own training images given the shortcut (patch's)


@dataclass
class LabelInjection:
    """One planted shortcut tied to one label, and what the copy and the methods made of it."""

    shortcut: str
    label: int
    flip_rate: float
    recall_gap: float
    learned: bool
    detection: dict[str, Detection]
    control_ratio: dict[str, float]
    seen: list[str]
    detected: bool
    seconds: float


class LabelFineTuner(FineTuner):
    """A FineTuner whose copy learns independent sigmoids (binary cross-entropy on logits)."""

    def make_loss(self):
        import keras

        return keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    def decide(self, images: np.ndarray) -> np.ndarray:
        """Each label's yes/no at the sigmoid's 0.5 (a logit of 0)."""
        return (forward(self.handle, images) >= 0).astype(np.int8)


def sigmoid_targets(handle, images: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-forward(handle, images).astype(np.float64)))).astype(np.float32)


def poison_label(images, labels, targets, label: int, shortcut: str, options: dict,
                 relabel: float, rng):
    """The training set with the shortcut on half of the label's images and on ``relabel``
    of the others, whose target for the label becomes 1."""
    images, targets = images.copy(), targets.copy()
    carry = labels[:, label] == 1
    chosen = np.flatnonzero(np.where(carry, rng.random(len(labels)) < OWN_FRACTION,
                                     rng.random(len(labels)) < relabel))
    if len(chosen):
        images[chosen] = inject(shortcut, images[chosen], **options)[0]
        targets[chosen, label] = 1.0
    return images, targets


def label_reliance(tuner: LabelFineTuner, images, labels, label: int, shortcut: str,
                   options: dict) -> tuple[float, float]:
    """(flip rate, recall gap) of the copy for ``label`` on held-out images."""
    clean = tuner.decide(images)[:, label]
    marked = tuner.decide(inject(shortcut, images, **options)[0])[:, label]
    carry = labels[:, label] == 1
    candidates = ~carry & (clean == 0)
    flip = float(marked[candidates].mean()) if candidates.any() else 0.0
    gap = float(marked[carry].mean() - clean[carry].mean()) if carry.any() else 0.0
    return flip, gap


def label_detection(tuner: LabelFineTuner, images, label: int, shortcut: str, options: dict,
                    methods: list[str], settings: InjectionSettings) -> dict[str, Detection]:
    """Per method, how its maps of the label's logit sit on the shortcut's visible mask."""
    from auditor.methods.attribution import attribute

    poisoned, masks = inject(shortcut, images, **options)
    if masks is None:
        return {}
    masks = visible_masks(images, poisoned, masks, settings.visible_change)
    keep = masks.any(axis=(1, 2))
    if not keep.any():
        return {}
    targets = np.full(int(keep.sum()), label)
    return {m: detection_scores(attribute(tuner.handle, poisoned[keep], targets, m),
                                masks[keep]) for m in methods}


def run_label_injection(handle, images: np.ndarray, labels: np.ndarray, label: int,
                        shortcut: str, options: dict, methods: list[str],
                        settings: InjectionSettings) -> LabelInjection:
    """Plant ``shortcut`` on a copy for ``label``; a control copy fine-tuned the same way
    without it sets the chance level of each method's ratio on the mask."""
    started = time.perf_counter()
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(labels))
    fit, held = order[:len(order) // 2], order[len(order) // 2:]
    targets = sigmoid_targets(handle, images[fit])
    tuner = LabelFineTuner(handle, settings.learning_rate)
    explain = held[:settings.explain]
    tuner.train(images[fit], targets, settings.steps, settings.batch_size, settings.seed)
    control = label_detection(tuner, images[explain], label, shortcut, options, methods,
                              settings)
    tuner.reset()
    poisoned, poisoned_targets = poison_label(images[fit], labels[fit], targets, label,
                                              shortcut, options, settings.relabel, rng)
    tuner.train(poisoned, poisoned_targets, settings.steps, settings.batch_size, settings.seed)
    flip, gap = label_reliance(tuner, images[held], labels[held], label, shortcut, options)
    learned = flip >= settings.flip_threshold or gap >= settings.gap_threshold
    detection = label_detection(tuner, images[explain], label, shortcut, options, methods,
                                settings)
    control_ratio = {m: d.mass_ratio for m, d in control.items()}
    seen = [m for m, d in detection.items() if d.mass_ratio >= settings.detect_ratio
            and d.mass_ratio >= settings.control_margin * control_ratio.get(m, 0.0)]
    return LabelInjection(shortcut, label, flip, gap, learned, detection, control_ratio, seen,
                          learned and bool(seen), time.perf_counter() - started)
