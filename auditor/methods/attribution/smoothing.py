"""Gaussian smoothing of maps for display only: the report labels every smoothed map as such."""

from __future__ import annotations

import numpy as np


def smooth_map(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Maps (H, W), (H, W, C) or (N, H, W, C) blurred over height and width by ``sigma`` pixels.

    Only for showing maps: smoothing changes what a map claims, so analyses use raw maps.
    """
    from scipy.ndimage import gaussian_filter

    maps = np.asarray(maps, dtype=np.float32)
    if sigma <= 0:
        return maps
    spatial = {2: (sigma, sigma), 3: (sigma, sigma, 0), 4: (0, sigma, sigma, 0)}
    if maps.ndim not in spatial:
        raise ValueError(f"smooth_map takes (H, W), (H, W, C) or (N, H, W, C) maps, got "
                         f"shape {maps.shape}")
    return gaussian_filter(maps, sigma=spatial[maps.ndim], mode="nearest").astype(np.float32)
