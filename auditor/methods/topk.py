"""Selecting examples while streaming: the k best of a pass in memory that does not grow with it.

A section that scores every image in a batched pass (a margin, a relevance mass, a loss) and shows
the top few pushes each batch's scores into a ``TopK`` and asks for the winners at the end,
instead of keeping a score per image and sorting them all.
"""

from __future__ import annotations

import numpy as np


class TopK:
    """The ``k`` highest scores pushed so far and their positions, ties broken by position.

    Holds at most ``2 k`` candidates plus one batch: the buffer is cut back to ``k`` with a
    partial sort whenever it grows past ``2 k``, so each push costs O(batch + k).
    """

    def __init__(self, k: int):
        if k < 0:
            raise ValueError(f"k must be at least 0, got {k}")
        self.k = k
        self._scores = np.zeros(0, np.float64)
        self._positions = np.zeros(0, np.int64)

    def push(self, scores, positions) -> TopK:
        """Add one batch of candidates; NaN scores never win."""
        scores = np.asarray(scores, np.float64).reshape(-1)
        positions = np.asarray(positions, np.int64).reshape(-1)
        if len(scores) != len(positions):
            raise ValueError(f"got {len(scores)} scores but {len(positions)} positions")
        keep = ~np.isnan(scores)
        self._scores = np.concatenate([self._scores, scores[keep]])
        self._positions = np.concatenate([self._positions, positions[keep]])
        if len(self._scores) > 2 * self.k:
            self._trim()
        return self

    def _trim(self) -> None:
        order = self._order()[: self.k]
        self._scores, self._positions = self._scores[order], self._positions[order]

    def _order(self) -> np.ndarray:
        """Candidates best first: a partial sort to the k-th score, then a full sort of the rest."""
        if len(self._scores) > self.k:
            # Everything scoring at least the k-th best is kept, so that ties at the cut are
            # decided by position below, never by where argpartition happened to put them.
            cut = np.partition(-self._scores, self.k - 1)[self.k - 1] if self.k else -np.inf
            candidates = np.flatnonzero(-self._scores <= cut)
        else:
            candidates = np.arange(len(self._scores))
        ranked = np.lexsort((self._positions[candidates], -self._scores[candidates]))
        return candidates[ranked]

    def positions(self) -> np.ndarray:
        """Positions of the winners, highest score first."""
        return self._positions[self._order()[: self.k]]

    def scores(self) -> np.ndarray:
        """The winners' scores, highest first."""
        return self._scores[self._order()[: self.k]]


def most_confident_mistakes(predictions, limit: int) -> np.ndarray:
    """Positions of the wrong predictions (``predictions.correct``), most confident first
    (ties: lowest position): the examples several sections explain."""
    wrong = np.flatnonzero(~predictions.correct)
    return TopK(limit).push(predictions.confidence[wrong], wrong).positions()
