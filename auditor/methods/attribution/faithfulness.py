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
    return curves_of(handle, x, targets, {"maps": maps}, steps=steps, fill=fill,
                     blur_sigma=blur_sigma, seed=seed, probability=probability)["maps"]


def curves_of(handle, x, targets, maps: dict, *, steps: int = 20, fill: float = 0.0,
              blur_sigma: float = 0.5, seed: int = 0,
              probability: str = "softmax") -> dict[str, Curves]:
    """``deletion_insertion`` of each of ``maps`` ({name: maps}) on the same images. The ends
    of every curve are the same images whatever the map (nothing changed: the image itself,
    which deletion starts from and insertion ends at; everything changed: the filled image and
    the blurred canvas), scored once for all maps; each map's rows are its inner steps."""
    score = "softmax" if probability == "softmax" else "logit"
    x, targets, contrast = prepare(handle, x, targets, None, score)
    rows = budget_for(handle).forward
    canvas = blurred(x, blur_sigma)
    ends = _scores(handle, np.concatenate([x, np.full_like(x, fill), canvas]),
                   np.tile(targets, 3), score, probability, rows).reshape(3, len(x))
    counts = np.round(np.linspace(0, x[0, ..., 0].size, steps + 1)).astype(int)
    inner = counts[1:-1]
    per_chunk = max(1, rows // max(1, 2 * len(inner)))
    curves = {}
    for name, order in maps.items():
        ranks = pixel_order(order, seed)[..., None]
        middle = []
        for i in range(0, len(x) if len(inner) else 0, per_chunk):
            images, rank = x[i:i + per_chunk], ranks[i:i + per_chunk]
            changed = rank[:, None] < inner.reshape(1, -1, 1, 1, 1)  # (B, steps - 1, H, W, 1)
            deleted = np.where(changed, np.float32(fill), images[:, None])
            inserted = np.where(changed, images[:, None], canvas[i:i + per_chunk][:, None])
            batch = np.concatenate([deleted, inserted]).reshape(-1, *x.shape[1:])
            repeat = np.tile(np.repeat(targets[i:i + per_chunk], len(inner)), 2)
            middle.append(_scores(handle, batch, repeat, score, probability, rows).reshape(
                2, len(images), len(inner)))
        middle = np.concatenate(middle, axis=1) if middle else np.zeros((2, len(x), 0))
        deletion = np.concatenate([ends[0][:, None], middle[0], ends[1][:, None]], axis=1)
        insertion = np.concatenate([ends[2][:, None], middle[1], ends[0][:, None]], axis=1)
        curves[name] = Curves(counts / counts[-1], deletion.mean(axis=0),
                              insertion.mean(axis=0))
    return curves


def _scores(handle, batch, targets, score: str, probability: str, rows: int) -> np.ndarray:
    """The targets' probabilities of ``batch``: a softmax, or a label's sigmoid."""
    from scipy.special import expit

    probs = run_scores(handle, batch, targets, np.full(len(batch), -1, np.int32), score, rows)
    return expit(probs) if probability == "sigmoid" else probs
