"""Shortcut discovery per label of a multi-label model: SpRAy on each label's own maps.

A multi-label model's labels are independent sigmoids, so a shortcut is tied to one label: a
tag that raises "sofa" whatever else the image holds. Per label, the maps of that label's logit
on the images that carry it are pooled, clustered and scored exactly as a class's are
(``discovery.py``: the eigengap's clusters, twins merged, shift x concentration of the most
suspicious group), each label calibrated against the other labels (the fallback bound with
fewer than ``discovery.MIN_NULL`` + 1 labels). Each suspect group is then put to the
intervention of ``intervention.py``, read per label: its difference from the rest of the label's
images is removed from its members (does the label's sigmoid fall?) and pasted onto images that
do not carry the label and are not given it (does the model now give it: the sigmoid at its
threshold?), each beside the control that pastes the rest of the label's images' own look.

The bounds were measured on multi-label models other than the tests' (``python
bench/multilabel.py``: two architectures, RGB digit composites, four labels, each model also
trained with a corner patch tied to one label; 14 label searches with nothing planted per
method, gradient, Grad-CAM and gradient x input). The flip-rate excess's lower 95% end under
that null reached at most 0.04 (the planted patch, where found: 0.92 to 1.00), so the single-
label search's ``FLIP_BOUND`` (0.20) holds for a label's sigmoid. The local drop excess did not:
its lower end reached 0.48 (gradient), 0.31 (Grad-CAM) and 0.76 (gradient x input, two false
confirmations at the single-label ``DROP_BOUND``, 0.50) with nothing planted, while no planted
patch was confirmed by the drop alone (at most 0.19). Twice the chance maximum, the single-label
rule, is beyond a sigmoid's reach, so a label is confirmed by the flips alone
(``LABEL_DROP_BOUND`` None). The map score's bound gates nothing here (every label's suspect
group goes to the intervention) and only lists unconfirmed candidates: the single-label
fallback bound (``FALLBACK_MAP_BOUND``, below ``discovery.MIN_NULL`` + 1 labels) was passed
with nothing planted by 2, 10 and 5 of the 14 searches (gradient, Grad-CAM, gradient x input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.methods.shortcuts.discovery import (
    FALLBACK_MAP_BOUND,
    ClassDiscovery,
    SpraySettings,
    calibrated,
    discover_class,
    pooled_maps,
)
from auditor.methods.shortcuts.intervention import (
    EXAMPLES,
    Effect,
    image_region,
    intervened,
    judged,
)
from auditor.predict.predictions import sigmoid

LABEL_DROP_BOUND = None  # a label's shortcut is confirmed by the flips alone (measured above)


def label_sample(labels: np.ndarray, per_label: int, seed: int) -> np.ndarray:
    """Positions of at most ``per_label`` images carrying each label (an image may be drawn for
    several), sorted and distinct."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels[:, k]))[:per_label]
              for k in range(labels.shape[1])]
    return np.unique(np.concatenate(chosen)).astype(int) if chosen else np.zeros(0, int)


@dataclass(frozen=True)
class LabelMaps:
    """Each (image, label) pair of a sample, the label's map on it pooled to the grid: rows of
    ``pooled`` are the pairs, ``image`` their rows in the sample, ``label`` their labels."""

    pooled: np.ndarray
    image: np.ndarray
    label: np.ndarray


def discover_labels(handle, images: np.ndarray, labels: np.ndarray, positions: np.ndarray,
                    names: list[str], settings: SpraySettings
                    ) -> tuple[list[ClassDiscovery], LabelMaps]:
    """SpRAy per label on the maps of each label's logit on the images carrying it (one
    batched backward pass over every (image, label) pair, each with its own target),
    calibrated against the other labels. ``positions``: the images' dataset positions, which
    a discovery's ``positions`` and ``members`` are."""
    from auditor.methods.attribution import attribute

    image, label = np.nonzero(labels)
    maps = attribute(handle, images[image], label, settings.method)
    pairs = LabelMaps(pooled_maps(maps, settings.grid), image, label)
    found = [discover_class(pairs.pooled[label == k], positions[image[label == k]], int(k),
                            names[k],
                            k_max=settings.k_max, seed=settings.seed)
             for k in np.unique(label) if (label == k).sum() >= 2]
    return calibrated(found, FALLBACK_MAP_BOUND), pairs


def measure_label_effect(logits_fn, label: int, threshold: float, members: np.ndarray,
                         rest: np.ndarray, others: np.ndarray, clean: tuple, mask,
                         region: str, seed: int = 0) -> Effect:
    """``intervention.measure_effect`` for one label: the drop of its sigmoid on the members
    when the difference is removed, and the share of ``others`` (images without the label,
    not given it) given it once the difference is pasted, each beside its control.
    ``clean``: the label's sigmoid on members, rest and others as they are."""
    local, parts, p = intervened(
        lambda x: sigmoid(np.asarray(logits_fn(x)))[:, label], members, rest, others, mask)
    drops = clean[0] - p[0]
    rest_drops = clean[1] - p[1] if local else np.zeros(1)
    eligible = clean[2] < threshold
    flipped = p[2][eligible] >= threshold
    flipped_control = (p[3][eligible] >= threshold if local
                       else np.zeros(int(eligible.sum()), bool))
    shown = np.flatnonzero(eligible)[:EXAMPLES]
    examples = {"member": members[:EXAMPLES], "removed": parts[0][:EXAMPLES],
                "member_p": (clean[0][:EXAMPLES], p[0][:EXAMPLES]),
                "other": others[shown], "pasted": parts[2][shown],
                "other_p": (clean[2][shown], p[2][shown])}
    return judged(flipped, flipped_control, drops, rest_drops, examples, region, local,
                  len(members), seed, drop_bound=LABEL_DROP_BOUND)


def confirm_label(logits_fn, found: ClassDiscovery, threshold: float, images: np.ndarray,
                  labels: np.ndarray, positions: np.ndarray, scores: np.ndarray,
                  grid: int = 16, seed: int = 0, max_others: int = 200) -> Effect:
    """The strongest intervention on one label's suspect group: in the maps' region, in the
    region the pixels suggest, and on the whole image. ``images``, ``labels`` (multi-hot),
    ``positions`` (in the dataset) and ``scores`` (the model's sigmoids) are the sample's."""
    label = found.label
    members = np.searchsorted(positions, found.members)  # positions are sorted
    own = np.flatnonzero(labels[:, label])
    rest = np.setdiff1d(own, members)
    rng = np.random.default_rng(seed)
    others = rng.permutation(np.flatnonzero(labels[:, label] == 0))[:max_others]
    height, width = images.shape[1:3]
    clean = (scores[members, label], scores[rest, label], scores[others, label])
    regions = {"whole image": None}
    for candidate in (found.region, image_region(images[members], images[rest], grid,
                                                 free=True)):
        if candidate is not None and candidate.name not in regions:
            regions[candidate.name] = candidate.pixels(height, width)
    tried = [measure_label_effect(logits_fn, label, threshold, images[members], images[rest],
                                  images[others], clean, mask, name, seed)
             for name, mask in regions.items()]
    return max(tried, key=lambda e: e.strength)
