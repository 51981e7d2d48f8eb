"""Weakly supervised localisation (Simonyan et al. 2013): a box from a saliency map.

GrabCut is seeded with the most salient pixels as foreground and the least salient as
background; it grows the object along colour edges, and the box encloses the largest connected
foreground region.
"""

from __future__ import annotations

import numpy as np


def saliency_box(image: np.ndarray, saliency: np.ndarray, foreground_quantile: float = 0.95,
                 background_quantile: float = 0.3,
                 iterations: int = 5) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), right/bottom exclusive, of the object the saliency points at.

    ``image`` is display-space (H, W, C); ``saliency`` (H, W) or (H, W, C), larger = more salient
    (channels are collapsed by their maximum absolute value).
    """
    import cv2

    heat = np.abs(np.asarray(saliency, dtype=np.float32))
    heat = heat.max(axis=-1) if heat.ndim == 3 else heat
    height, width = heat.shape
    high, low = np.quantile(heat, foreground_quantile), np.quantile(heat, background_quantile)
    if high <= low:  # a flat map points nowhere in particular
        return 0, 0, width, height
    mask = np.where(heat > np.median(heat), cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[heat >= high] = cv2.GC_FGD
    mask[heat <= low] = cv2.GC_BGD
    pixels = np.clip(np.asarray(image, dtype=np.float32) * 255, 0, 255).astype(np.uint8)
    pixels = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(pixels), mask, None, background, foreground,
                    iterations, cv2.GC_INIT_WITH_MASK)
        region = np.isin(mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
    except cv2.error:  # too few distinct colours to fit GrabCut's colour models
        region = heat >= high
    if not region.any():
        region = heat >= high
    _, _, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    left, top = stats[largest, cv2.CC_STAT_LEFT], stats[largest, cv2.CC_STAT_TOP]
    return (int(left), int(top), int(left + stats[largest, cv2.CC_STAT_WIDTH]),
            int(top + stats[largest, cv2.CC_STAT_HEIGHT]))
