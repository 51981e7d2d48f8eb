"""Likely label errors by confident learning (Northcutt et al. 2021), with cleanlab.

The audited model did not train on the audit data, so its probabilities are out-of-sample, which
is what confident learning needs. Classes absent from the audit labels are dropped (their columns
renormalised away): cleanlab estimates one threshold per class from that class's own examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PER_CLASS = 5  # below this many images per class the per-class thresholds are guesses


@dataclass
class LabelIssues:
    """Flagged images (most likely errors first), every image's label quality and the estimate.

    ``scores`` is cleanlab's self-confidence label quality (the probability of the given label,
    low means likely wrong); ``suggested`` the most probable present class of every image;
    ``expected`` cleanlab's estimate of how many labels are wrong (from the confident joint's
    off-diagonal), which can differ from ``len(positions)``.
    """

    positions: np.ndarray
    scores: np.ndarray
    suggested: np.ndarray
    expected: int
    per_class: float  # images per present class: below MIN_PER_CLASS the estimate is unreliable


def present_class_probs(labels: np.ndarray, probs: np.ndarray):
    """Labels re-indexed over the classes present, probabilities renormalised over them."""
    classes = np.unique(labels)
    remap = np.full(probs.shape[1], -1)
    remap[classes] = np.arange(len(classes))
    kept = probs[:, classes].astype(np.float64)
    kept /= np.clip(kept.sum(axis=1, keepdims=True), 1e-12, None)
    return classes, remap[labels], kept


def find_label_issues(labels: np.ndarray, probs: np.ndarray) -> LabelIssues | None:
    """cleanlab's label issues (pruned by noise rate, ranked by self-confidence); None when
    fewer than two classes are present, so that there is nothing to confuse."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues as cleanlab_issues
    from cleanlab.rank import get_label_quality_scores

    classes, given, kept = present_class_probs(np.asarray(labels), np.asarray(probs))
    if len(classes) < 2:
        return None
    positions = cleanlab_issues(given, kept, filter_by="prune_by_noise_rate",
                                return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(given, kept, method="self_confidence")
    return LabelIssues(positions=np.asarray(positions, dtype=np.int64), scores=scores,
                       suggested=classes[kept.argmax(axis=1)],
                       expected=int(num_label_issues(given, kept)),
                       per_class=len(labels) / len(classes))
