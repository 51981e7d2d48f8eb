"""How far two sets of maps agree: Spearman rank correlation, one value per pair of maps."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``a[i]`` and ``b[i]`` over all their values, for every i at once.

    Ties get average ranks; a constant map has no ranking, so its correlation is NaN.
    """
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"rank_correlation needs maps of one shape, got {a.shape} and {b.shape}")
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, (ra * rb).sum(axis=1) / norm, np.nan)
