"""Occlusion (Zeiler and Fergus 2014): how much the score drops when a patch is covered.

Each pixel gets the mean score drop over the patches that cover it. All occluded copies of a
chunk's images are scored in large forward-only batches.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.registry import Planned, blocks, register, run_scores


def patch_geometry(shape: tuple, patch: int, stride: int) -> tuple[int, int]:
    """The patch side and stride, defaults resolved: 1/8 of the shorter side, half-overlapping."""
    side = min(shape[1:3])
    patch = patch or max(2, side // 8)
    stride = stride or max(1, patch // 2)
    if not 0 < patch <= side or stride < 1:
        raise AuditorError(f"occlusion needs 0 < patch <= {side} and stride >= 1, got "
                           f"patch={patch}, stride={stride}")
    return patch, stride


def _starts(length: int, patch: int, stride: int) -> list[int]:
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)  # cover the far edge too
    return starts


def patch_masks(shape: tuple, patch: int, stride: int) -> np.ndarray:
    """Boolean masks (P, H, W, 1), one per patch position."""
    height, width = shape[1:3]
    tops, lefts = _starts(height, patch, stride), _starts(width, patch, stride)
    masks = np.zeros((len(tops) * len(lefts), height, width, 1), bool)
    for i, (top, left) in enumerate((t, s) for t in tops for s in lefts):
        masks[i, top:top + patch, left:left + patch] = True
    return masks


def positions(options: dict, shape: tuple) -> int:
    patch, stride = patch_geometry(shape, options["patch"], options["stride"])
    height, width = shape[1:3]
    return len(_starts(height, patch, stride)) * len(_starts(width, patch, stride)) + 1


@register(
    "occlusion",
    "Occlusion: the mean drop of the score when square patches covering a pixel are filled.",
    options={
        "patch": (0, "patch side in pixels; 0 = 1/8 of the shorter image side"),
        "stride": (0, "step between patches in pixels; 0 = half the patch"),
        "fill": (0.0, "display-space value the patch is filled with"),
    },
    cost=positions,
    forward_only=True,
    linear=True,
    # The compute plan may coarsen the patch to a quarter of the image's shorter side at most:
    # a 7 x 7 grid of half-overlapping patches still says which part of the image the score
    # needs.
    planned={"patch": Planned(most=lambda shape: max(2, min(shape[:2]) // 4),
                              written=lambda patch, shape: patch_geometry((1, *shape), patch,
                                                                          1)[0])},
)
def occlusion(handle, x, targets, contrast, score, budget, patch, stride, fill):
    patch, stride = patch_geometry(x.shape, patch, stride)
    masks = patch_masks(x.shape, patch, stride)
    base = run_scores(handle, x, targets, contrast, score, budget.forward)
    drops = np.zeros(x.shape[:3] + (1,), np.float32)
    for part in blocks(len(masks), budget.forward // len(x)):
        block = masks[part]
        k = len(block)
        covered = np.where(block[None], np.float32(fill), x[:, None]).reshape(-1, *x.shape[1:])
        scores = run_scores(handle, covered, np.repeat(targets, k), np.repeat(contrast, k),
                            score, budget.forward).reshape(len(x), k)
        drops += np.einsum("nk,khwc->nhwc", base[:, None] - scores, block.astype(np.float32))
    coverage = masks.sum(axis=0).astype(np.float32)
    return np.broadcast_to(drops / coverage, x.shape).astype(np.float32)
