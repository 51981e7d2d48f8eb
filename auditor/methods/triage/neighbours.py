"""Nearest neighbours in the model's penultimate features, by cosine distance.

Features are L2-normalised first, as in Sun et al. 2022 (deep nearest neighbours for OOD): the
Euclidean distance of unit vectors orders neighbours like the cosine similarity.
"""

from __future__ import annotations

import numpy as np


def unit_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32).reshape(len(features), -1)
    return features / np.clip(np.linalg.norm(features, axis=1, keepdims=True), 1e-12, None)


def nearest(query: np.ndarray, reference: np.ndarray, k: int, same_set: bool = False):
    """(distances, indices) of the ``k`` nearest reference rows of every query row, nearest
    first; with ``same_set`` (query is the reference) each row's own entry is left out."""
    from sklearn.neighbors import NearestNeighbors

    reference = unit_rows(reference)
    extra = 1 if same_set else 0
    k = min(k, len(reference) - extra)
    if k < 1:
        return np.zeros((len(query), 0), np.float32), np.zeros((len(query), 0), np.int64)
    search = NearestNeighbors(n_neighbors=k + extra, algorithm="brute").fit(reference)
    distances, indices = search.kneighbors(reference if same_set else unit_rows(query))
    if same_set:  # drop each row itself (wherever a duplicate put it among its ties)
        own = indices == np.arange(len(indices))[:, None]
        own[~own.any(axis=1), -1] = True
        keep = ~own
        distances = distances[keep].reshape(len(indices), k)
        indices = indices[keep].reshape(len(indices), k)
    return distances.astype(np.float32), indices.astype(np.int64)
