"""The run's store of saliency maps: each map (method, score, options, image, target and, for
a difference of scores, the contrast class) is made once and handed to every section that asks,
so that, e.g., the contrastive section takes the triage section's maps of their common mistakes.
"""

from __future__ import annotations

import json

import numpy as np


class SaliencyStore:
    """Maps kept per (method, score, options), keyed by image position and target class."""

    def __init__(self):
        self._maps: dict[tuple, dict] = {}

    def maps(self, handle, dataset, method: str, positions, targets, *, contrast=None,
             images=None, score: str = "logit", options: dict | None = None) -> np.ndarray:
        """Maps of ``method`` for the audit images at ``positions``, one target class each.
        ``contrast`` (one class per image) explains the target's score minus the contrast's: for
        a method linear in the score that is the difference of the two shared maps, else the
        map of the difference of scores, kept under the pair. ``images`` are those positions'
        images when the caller has them (else they are read from ``dataset``)."""
        from auditor.methods.attribution import METHODS, attribute

        positions = np.asarray(positions, dtype=int).reshape(-1)
        targets = np.asarray(targets, dtype=int).reshape(-1)
        if contrast is not None and METHODS[method].linear:
            n, twice = len(positions), None if images is None else np.concatenate([images, images])
            both = self.maps(handle, dataset, method, np.concatenate([positions, positions]),
                             np.concatenate([targets, np.asarray(contrast).reshape(-1)]),
                             images=twice, score=score, options=options)
            return both[:n] - both[n:]
        pairs = (np.full(len(targets), -1) if contrast is None
                 else np.asarray(contrast, dtype=int).reshape(-1))
        key = (method, score, json.dumps(options or {}, sort_keys=True, default=str))
        store = self._maps.setdefault(key, {})
        wanted = [_map_key(*w) for w in zip(positions.tolist(), targets.tolist(), pairs.tolist(),
                                            strict=True)]
        missing = [i for i, w in enumerate(wanted) if w not in store]
        if missing:
            x = (dataset.images(positions[missing]) if images is None
                 else np.asarray(images)[missing])
            made = attribute(handle, x, targets[missing], method, score=score,
                             contrast=None if contrast is None else pairs[missing],
                             **(options or {}))
            store.update(zip((wanted[i] for i in missing), made, strict=True))
        if not wanted:
            return np.zeros((0, *handle.input_shape), np.float32)
        return np.stack([store[w] for w in wanted])

    def __len__(self) -> int:
        """How many maps are kept."""
        return sum(len(maps) for maps in self._maps.values())


def _map_key(position: int, target: int, contrast: int) -> tuple:
    """Where a map is kept: (position, target), with the contrast class when the map explains
    target minus contrast."""
    return (position, target) if contrast < 0 else (position, target, contrast)
