"""Faithfulness of maps: deletion and insertion curves (Petsiuk et al. 2018, RISE).

Deletion removes pixels from the most to the least important and follows the target's
probability: a faithful map makes it fall fast (small area under the curve). Insertion adds
pixels in the same order to a heavily blurred copy: a faithful map makes it rise fast (large
area). A random ranking is the yardstick. All steps of a chunk's images are scored in large
batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.methods.attribution.integrated_gradients import blurred
from auditor.methods.attribution.registry import budget_for, prepare, run_scores


@dataclass
class Curves:
    """Mean target probability after each step, over ``fractions`` of pixels changed."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return float(np.trapezoid(self.deletion, self.fractions))

    @property
    def insertion_auc(self) -> float:
        return float(np.trapezoid(self.insertion, self.fractions))

    @property
    def score(self) -> float:
        """Insertion minus deletion area: higher is more faithful (at most 1)."""
        return self.insertion_auc - self.deletion_auc


def random_maps(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random attribution, the yardstick every method must beat."""
    return np.random.default_rng(seed).uniform(size=x.shape).astype(np.float32)


def pixel_order(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, H, W) rank of each pixel, 0 = most important (channels summed, ties broken at
    random so that flat regions are not taken in scan order)."""
    maps = np.asarray(maps, dtype=np.float32)
    values = (maps.sum(axis=-1) if maps.ndim == 4 else maps).reshape(len(maps), -1)
    jitter = np.random.default_rng(seed).uniform(size=values.shape)
    order = np.lexsort((jitter, -values), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(values.shape[1])[None], axis=1)
    return ranks.reshape(maps.shape[:3])


def deletion_insertion(handle, x, targets, maps, *, steps: int = 20, fill: float = 0.0,
                       blur_sigma: float = 0.5, seed: int = 0,
                       probability: str = "softmax") -> Curves:
    """Deletion (pixels set to ``fill``) and insertion (pixels put back into a blurred copy)
    curves of the target's probability, averaged over images: its softmax, or (``probability``
    "sigmoid", a multi-label model's) the target label's own sigmoid.

    The insertion canvas is blurred heavily (``blur_sigma`` x the side) so that the class is no
    longer recognisable there; a light blur keeps digits readable and every ranking looks good.
    """
    from scipy.special import expit

    score = "softmax" if probability == "softmax" else "logit"
    x, targets, contrast = prepare(handle, x, targets, None, score)
    ranks = pixel_order(maps, seed)[..., None]
    pixels = ranks[0].size
    counts = np.round(np.linspace(0, pixels, steps + 1)).astype(int)
    rows = budget_for(handle).forward
    per_chunk = max(1, rows // (2 * (steps + 1)))
    deletion, insertion = [], []
    for i in range(0, len(x), per_chunk):
        images, rank = x[i:i + per_chunk], ranks[i:i + per_chunk]
        changed = rank[:, None] < counts.reshape(1, -1, 1, 1, 1)  # (B, steps + 1, H, W, 1)
        deleted = np.where(changed, np.float32(fill), images[:, None])
        inserted = np.where(changed, images[:, None], blurred(images, blur_sigma)[:, None])
        batch = np.concatenate([deleted, inserted]).reshape(-1, *x.shape[1:])
        k = 2 * (steps + 1) * len(images)
        repeat = np.tile(np.repeat(targets[i:i + per_chunk], steps + 1), 2)
        probs = run_scores(handle, batch, repeat, np.full(k, -1, np.int32), score, rows)
        if probability == "sigmoid":
            probs = expit(probs)
        probs = probs.reshape(2, len(images), steps + 1)
        deletion.append(probs[0])
        insertion.append(probs[1])
    return Curves(counts / pixels, np.concatenate(deletion).mean(axis=0),
                  np.concatenate(insertion).mean(axis=0))
