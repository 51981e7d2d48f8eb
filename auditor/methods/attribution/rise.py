"""RISE (Petsiuk et al. 2018): randomised input sampling, a black-box explanation.

The image is multiplied by random smooth masks (a coarse random binary grid, upsampled
bilinearly with a random sub-cell shift, as in the paper); each pixel's importance is the mean
score of the masked images weighted by how much the mask kept it, divided by the keep
probability. Scores are centred on their mean over the masks first, so that the map does not
carry the mean score as an offset (and a pixel the masks happened to keep more often is not
favoured for it): positive where keeping the pixel raised the score. Only forward passes: it
explains models whose gradients are unavailable. The masks are drawn once from ``seed`` and
shared by every image.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.registry import Planned, blocks, register, run_scores


def random_masks(count: int, height: int, width: int, cells: int, keep: float,
                 seed: int) -> np.ndarray:
    """(count, H, W, 1) smooth masks in [0, 1]."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    grid = (rng.uniform(size=(count, cells, cells)) < keep).astype(np.float32)
    cell_h, cell_w = -(-height // cells), -(-width // cells)
    up = zoom(grid, (1, (cells + 1) * cell_h / cells, (cells + 1) * cell_w / cells), order=1)
    shifts = rng.integers(0, [cell_h, cell_w], size=(count, 2))
    masks = np.stack([up[i, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(shifts)])
    return np.clip(masks, 0, 1)[..., None].astype(np.float32)


@register(
    "rise",
    "RISE: the mean score of randomly masked copies, weighted by each pixel's mask (black box, "
    "forward passes only).",
    options={
        "masks": (512, "random masks per image"),
        "cells": (7, "side of the coarse random grid"),
        "keep": (0.5, "probability that a grid cell is kept"),
        "seed": (0, "seed of the masks"),
    },
    cost=lambda options, shape: options["masks"],
    forward_only=True,
    linear=True,
    # The compute plan may lower the masks to 256 (Petsiuk et al. 2018 use 4,000 to 8,000;
    # fewer leave grid noise, visible in the figure).
    planned={"masks": Planned(floor=256)},
)
def rise(handle, x, targets, contrast, score, budget, masks, cells, keep, seed):
    if masks < 1 or cells < 1 or not 0 < keep <= 1:
        raise AuditorError(f"rise needs masks >= 1, cells >= 1 and 0 < keep <= 1, got "
                           f"masks={masks}, cells={cells}, keep={keep}")
    drawn = random_masks(masks, x.shape[1], x.shape[2], cells, keep, seed)
    saliency = np.zeros(x.shape[:3] + (1,), np.float32)
    total = np.zeros(len(x), np.float32)
    for part in blocks(masks, budget.forward // len(x)):
        block = drawn[part]
        k = len(block)
        masked = (x[:, None] * block[None]).reshape(-1, *x.shape[1:])
        scores = run_scores(handle, masked, np.repeat(targets, k), np.repeat(contrast, k),
                            score, budget.forward).reshape(len(x), k)
        saliency += np.einsum("nk,khwc->nhwc", scores, block)
        total += scores.sum(axis=1)
    saliency -= (total / masks).reshape(-1, 1, 1, 1) * drawn.sum(axis=0)[None]
    return np.broadcast_to(saliency / (masks * keep), x.shape).astype(np.float32)
