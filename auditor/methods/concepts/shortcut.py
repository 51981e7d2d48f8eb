"""Does a planted shortcut appear as a neuron group? For the Clever Hans section's fine-tuned
copies, or any model and images with a known shortcut mask.

A learned shortcut should be a part the model sees: a group whose map sits on the shortcut's
mask on the marked images and whose attribution goes to the shortcut's target class. The groups
are fitted on the marked images together with as many unmarked ones (so that the shortcut is
one part among the others), at the last spatial layer by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.methods.concepts.groups import attribute_groups
from auditor.methods.concepts.neuron_groups import neuron_groups

# A group "sits on" the mask when the share of its map inside the mask is at least three times
# the mask's share of the image: the attribution card's bound for seeing a planted shortcut
# (reliability.SHORTCUT_BOUNDS, warn below 3), applied to a group's map instead of a saliency
# map.
ON_MASK = 3.0


@dataclass
class ShortcutGroup:
    """The group that sits most on the shortcut, and whether it is the shortcut."""

    layer: str
    group: int
    mass_ratio: float  # share of its map inside the mask / the mask's share of the image
    contribution: float  # its mean contribution to the target on the marked images
    votes_for: int  # the class it contributes most to on the marked images
    found: bool

    def as_dict(self) -> dict:
        return {"layer": self.layer, "group": self.group,
                "mass_ratio": round(self.mass_ratio, 4),
                "contribution": round(self.contribution, 4), "votes_for": self.votes_for,
                "found": self.found}


def mass_ratios(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(K,) per group, the mean over images of (map inside the mask / whole map) over (mask
    area / image area); images where a group is silent count as 0."""
    masks = masks.astype(np.float32)[..., None]
    inside = (maps * masks).sum(axis=(1, 2))
    whole = maps.sum(axis=(1, 2))
    share = np.where(whole > 0, inside / np.where(whole > 0, whole, 1), 0.0)
    area = masks.mean(axis=(1, 2))
    return (share / np.maximum(area, 1e-12)).mean(axis=0)


def planted_group(handle, marked: np.ndarray, masks: np.ndarray, target: int,
                  unmarked: np.ndarray | None = None, layer: str | None = None,
                  groups: int = 6, seed: int = 0) -> ShortcutGroup:
    """The group of ``marked`` images (with the shortcut, its ``masks`` (n, H, W)) and
    ``unmarked`` ones that sits most on the mask; found when it sits on it (ON_MASK) and is
    its attribution on the marked images goes to ``target`` (its largest contribution of all
    classes' logits)."""
    x = marked if unmarked is None or not len(unmarked) else np.concatenate([marked, unmarked])
    fitted = neuron_groups(handle, x, layer=layer, groups=groups, seed=seed)
    n = len(marked)
    ratios = mass_ratios(fitted.maps[:n], masks)
    best = int(np.argmax(ratios))
    per_class = np.array([  # one backward pass of the marked images per class
        attribute_groups(handle, fitted.factors, marked, np.full(n, c)).contributions[:, best]
        .mean() for c in range(handle.num_classes)])
    votes = int(np.argmax(per_class))
    return ShortcutGroup(fitted.layer, best, float(ratios[best]), float(per_class[target]),
                         votes, bool(ratios[best] >= ON_MASK and votes == target
                                     and per_class[target] > 0))
