"""The whole concepts audit of a model: every layer's groups fitted on a sample, applied to the
mistakes, tested for removal and randomisation, and visualised. Pure computation: the section
chooses the images and turns this into its summary and checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from auditor.methods.concepts.analysis import (
    IconSettings,
    LayerConcepts,
    concept_bank,
    dictionary,
    icons,
    mistake_parts,
    top_examples,
)
from auditor.methods.concepts.faithful import (
    randomisation_survival,
    randomised_activations,
    removal_tests,
)
from auditor.methods.concepts.groups import (
    activations_and_gradients,
    attribution_of,
    fit_factors,
    split_attribution,
)


@dataclass
class Settings:
    groups: int = 6
    top: int = 6  # top images and crops per group
    removal_images: int = 8  # images of its class each group's removal is tested on
    random_directions: int = 8
    survival_images: int = 32  # images the randomised copy is factorised on (0: skip)
    dictionary_images: int = 3
    icon_steps: int = 128  # 0: no feature visualisation
    seed: int = 0


@dataclass
class Images:
    """The images the audit works on: the stratified sample (x, labels) and the mistakes
    (x, predicted, true). A multi-label sample holds an image once per label it carries (its
    ``labels`` the label each row is explained towards); ``distinct`` then names one row per
    image, among which the groups' top images are chosen."""

    sample: np.ndarray
    labels: np.ndarray
    mistakes: np.ndarray
    predicted: np.ndarray  # -1: nothing (a multi-label image missing a label, no false alarm)
    true: np.ndarray  # -1: nothing (a multi-label image with a false alarm, nothing missed)
    distinct: np.ndarray | None = None  # None: every row is a different image

    @property
    def per_label(self) -> bool:
        """A multi-label sample: (image, label) pairs."""
        return self.distinct is not None


def analyse_layer(handle, layer: str, reason: str, sample: tuple[np.ndarray, np.ndarray],
                  images: Images, settings: Settings, classes: int) -> LayerConcepts:
    """One layer's groups, fitted on the sample (its activations and gradients at the layer,
    ``sample``), and their removal tested."""
    acts, grads = sample
    factors = fit_factors(layer, acts, settings.groups, settings.seed)
    own = split_attribution(factors, acts, grads)
    weights = own.weights
    result = LayerConcepts(
        layer=layer, reason=reason, factors=factors, grid=tuple(weights.shape[1:3]),
        sample_weights=weights, sample_contributions=own.contributions,
        sample_residual=own.residual,
        examples=top_examples(images.sample, weights, settings.top, rows=images.distinct),
        bank=concept_bank(images.sample, weights, own.contributions, images.labels, classes))
    rows = dictionary_rows(images.labels, settings.dictionary_images)
    result.dictionary, result.dictionary_rows = dictionary(weights[rows]), rows
    try:
        result.removal = removal_tests(handle, layer, factors.directions, images.sample,
                                       weights, removal_targets(result, images.labels, settings),
                                       settings.seed, settings.random_directions)
        if images.per_label:
            result.label_removal = label_removals(handle, result, images, settings)
    except ValueError as exc:  # a subclassed model inside: its layers cannot be edited
        result.removal_skipped = str(exc)
    return result


def dictionary_rows(labels: np.ndarray, count: int) -> np.ndarray:
    """The first sample image of each of the first ``count`` classes: different things."""
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
    return np.asarray(firsts[:count], int)


def survival_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(len(labels))[:count])


def removal_targets(result: LayerConcepts, labels: np.ndarray,
                    settings: Settings) -> list[tuple[int, np.ndarray]]:
    """Per group: the class it carries most (its largest importance in the concept bank's
    terms) and that class's sample images where the group is strongest."""
    from auditor.methods.concepts.analysis import class_importance

    classes = int(labels.max()) + 1
    importance = class_importance(result.sample_contributions, labels, classes)
    targets = []
    for g in range(importance.shape[1]):
        c = int(np.argmax(importance[:, g]))
        own = np.flatnonzero(labels == c)
        strength = result.sample_weights[own, :, :, g].sum(axis=(1, 2))
        targets.append((c, own[np.argsort(-strength, kind="stable")[:settings.removal_images]]))
    return targets


def label_removals(handle, result: LayerConcepts, images: Images, settings: Settings) -> list:
    """A multi-label sample's test per label: the group that carries the label most (its
    largest importance) removed on the label's images where it is strongest, against random
    directions of the same norm, as each group is tested on the label it carries most."""
    from auditor.methods.concepts.analysis import class_importance

    labels = images.labels
    importance = class_importance(result.sample_contributions, labels, int(labels.max()) + 1)
    directions, tests = result.factors.directions, []
    for label in np.unique(labels):
        group = int(np.argmax(importance[label]))
        own = np.flatnonzero(labels == label)
        strength = result.sample_weights[own, :, :, group].sum(axis=(1, 2))
        rows = own[np.argsort(-strength, kind="stable")[:settings.removal_images]]
        (removal,) = removal_tests(handle, result.layer, directions[[group]],
                                   images.sample, result.sample_weights[..., [group]],
                                   [(int(label), rows)], settings.seed,
                                   settings.random_directions)
        tests.append(dataclasses.replace(removal, group=group))
    return tests


def towards(factors: dict, handle, images: np.ndarray, targets: np.ndarray) -> dict:
    """``attribution_of`` each image's target, where a target of -1 (nothing) contributes 0:
    a multi-label mistake with one side only (a missed label and no false alarm, or the
    reverse) is its one label's logit against nothing. The groups' weights do not depend on
    the target, so those rows keep them."""
    found = attribution_of(factors, handle, images, np.maximum(targets, 0))
    nothing = np.asarray(targets) < 0
    for attribution in found.values():
        attribution.per_position[nothing] = 0
        attribution.total[nothing] = 0
    return found


def analyse(handle, layers: list[tuple[str, str]], images: Images, settings: Settings,
            classes: int) -> list[LayerConcepts]:
    """Every layer (the activations and gradients of all of them from one pass), the
    mistakes explained by every layer's groups (one pass per target), every layer's survival
    of randomisation (one copy), then every group's icon in one batch."""
    names = [layer for layer, _ in layers]
    sample = activations_and_gradients(handle, names, images.sample, images.labels)
    results = [analyse_layer(handle, layer, reason, sample.pop(layer), images, settings,
                             classes) for layer, reason in layers]
    if len(images.mistakes):
        factors = {result.layer: result.factors for result in results}
        pred = towards(factors, handle, images.mistakes, images.predicted)
        true = towards(factors, handle, images.mistakes, images.true)
        for result in results:
            result.mistakes = mistake_parts(pred[result.layer], true[result.layer])
            result.mistake_weights = pred[result.layer].weights
    if settings.survival_images > 0:  # one randomised copy and one pass for every layer
        picked = survival_rows(images.labels, settings.survival_images, settings.seed)
        random = randomised_activations(handle, [r.layer for r in results],
                                        images.sample[picked], settings.seed)
        for result in results:
            result.survival = randomisation_survival(result.factors, random[result.layer],
                                                     result.sample_weights[picked],
                                                     settings.seed)
    if settings.icon_steps > 0:
        drawn = icons(handle, [r.factors for r in results],
                      IconSettings(settings.icon_steps, settings.seed))
        for result, pictures in zip(results, drawn, strict=True):
            result.icons = pictures
    return results
