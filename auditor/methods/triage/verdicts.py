"""The verdict on each mistake: is the label wrong, the image strange, the case unclear, or is
the model simply wrong?

Rules, first match wins:

1. ``out_of_distribution``: every OOD detector that could be measured calls the image unlike
   the reference data (then its probabilities cannot vouch for any label, so this goes first);
2. ``label_error``: confident learning lists the image as a likely label error;
3. ``ambiguous``: the model's top two probabilities are within ``MARGIN`` of each other (a
   multi-label model's decision: ``decision_margin``), or the
   image's nearest neighbours (in the penultimate features) carry the given label about as
   often as the predicted one: both counts within a factor of two, together at least half of
   the neighbours;
4. ``model_error``: none of these; the data gives no excuse, so fix the model.
"""

from __future__ import annotations

import numpy as np

VERDICTS = ("label_error", "ambiguous", "out_of_distribution", "model_error")
MARGIN = 0.1  # a definition: probabilities within 10 points barely prefer the model's answer


def decision_margin(prob, threshold):
    """A yes/no decision's top-2 margin, so that ``MARGIN`` means the same for one label of a
    multi-label model as for a single-label model: the probabilities of yes and no, p and
    1 - p, differ by 2|p - 0.5|, twice the distance from a 0.5 threshold; at another
    threshold t, the same distance from it, 2|p - t|. (The distance alone, |p - t| < 0.1, made
    a sigmoid at 0.5 ambiguous where a two-class softmax with the same probabilities was not.)"""
    return 2 * np.abs(np.asarray(prob, float) - threshold)


def neighbour_tie(given_votes: np.ndarray, pred_votes: np.ndarray, k: int) -> np.ndarray:
    """Whether neighbours back the given label as often as the prediction (within 2x)."""
    low, high = np.minimum(given_votes, pred_votes), np.maximum(given_votes, pred_votes)
    return (given_votes + pred_votes >= k / 2) & (low >= 1) & (2 * low >= high)


def verdict_of(ood: bool, label_issue: bool, margin: float, tie: bool) -> tuple[str, str]:
    """(verdict, the reason in words) for one mistake."""
    if ood:
        return "out_of_distribution", "unlike the reference images (energy and feature distance)"
    if label_issue:
        return "label_error", "confident learning: the given label is likely wrong"
    if margin < MARGIN:
        return "ambiguous", f"top-2 margin {margin:.2f} < {MARGIN:g}"
    if tie:
        return "ambiguous", "its neighbours carry the given label as often as the predicted one"
    return "model_error", "an in-distribution image with a trusted label"
