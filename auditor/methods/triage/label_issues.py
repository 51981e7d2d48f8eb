"""Likely label errors by confident learning (Northcutt et al. 2021), with cleanlab, confirmed by
the image's neighbours, and only where the model can tell label errors from its own mistakes.

The audited model did not train on the audit data, so its probabilities are out-of-sample, which
is what confident learning needs. Classes absent from the audit labels are dropped (their columns
renormalised away): cleanlab estimates one threshold per class from that class's own examples.

Confident learning assumes the model is good: a weak one's confident mistakes read as label
errors. So a flagged image counts only when its nearest neighbours in the penultimate features
also vote against its given label, for the suggested class (as cleanlab's Datalab does with
features: the kNN vote of the features is a second, independent witness). And before any count is
reported, the detector is tested on this model and data: a share of the labels is flipped
(``PLANTED``), and the flips must be found with ``MIN_RECALL``; a model too weak for that gets "not
measurable", never an accusation of the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PER_CLASS = 5  # below this many images per class the per-class thresholds are guesses
# The self-test's flips: 3.3% is the average label error rate Northcutt et al. 2021 measured over
# ten benchmark test sets, so the test asks whether errors at the usual rate would be seen.
PLANTED = 0.033
DRAWS = 5  # seeded draws of flips, averaged (one draw of 24 flips on 719 images is noisy)
# Measured on the digits (32 px, 719 clean test images) with a one-hidden-layer MLP, not the CNN
# the tests audit, at checkpoints from 38% to 95% accuracy (10 neighbours in its hidden layer):
# - CONFIDENT, the probability of the suggested class a flag needs: with neighbours alone, 6-14
#   images of the clean labels stay flagged at every checkpoint up to 86%; with p >= 0.9 too,
#   0-2, while at 95% the self-test still finds 89% of the planted flips.
# - MIN_RECALL, the self-test's recall needed to report anything: 0-0.38 at 38-86% accuracy,
#   0.67-0.89 at 92-95%; 0.5 lies between (half the errors at the usual rate are found).
CONFIDENT = 0.9
MIN_RECALL = 0.5


@dataclass
class LabelIssues:
    """Flagged images (most likely errors first), every image's label quality and the estimate.

    ``scores`` is cleanlab's self-confidence label quality (the probability of the given label,
    low means likely wrong); ``suggested`` the most probable present class of every image;
    ``expected`` cleanlab's estimate of how many labels are wrong (from the confident joint's
    off-diagonal), scaled by the share of its flags the neighbours confirm, which can differ
    from ``len(positions)``; ``recall`` the self-test's recall of planted flips (None when no
    neighbours were given, so none was run).
    """

    positions: np.ndarray
    scores: np.ndarray
    suggested: np.ndarray
    expected: int
    per_class: float  # images per present class: below MIN_PER_CLASS the estimate is unreliable
    recall: float | None = None

    @property
    def measurable(self) -> bool:
        return self.recall is None or self.recall >= MIN_RECALL


def present_class_probs(labels: np.ndarray, probs: np.ndarray):
    """Labels re-indexed over the classes present, probabilities renormalised over them."""
    classes = np.unique(labels)
    remap = np.full(probs.shape[1], -1)
    remap[classes] = np.arange(len(classes))
    kept = probs[:, classes].astype(np.float64)
    kept /= np.clip(kept.sum(axis=1, keepdims=True), 1e-12, None)
    return classes, remap[labels], kept


def neighbours_disagree(labels, suggested, votes: np.ndarray) -> np.ndarray:
    """Whether fewer than half of each image's neighbours (``votes``: their labels, one row per
    image) carry its given label, and more carry the suggested one."""
    given = (votes == labels[:, None]).mean(axis=1)
    return (given < 0.5) & ((votes == suggested[:, None]).mean(axis=1) > given)


def _confident_learning(labels, probs, votes=None):
    """(flagged positions, cleanlab's expected count scaled by the confirmed share, the present
    classes and the re-indexed probabilities), or None with fewer than two classes."""
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues as cleanlab_issues

    classes, given, kept = present_class_probs(labels, probs)
    if len(classes) < 2:
        return None
    positions = np.asarray(cleanlab_issues(given, kept, filter_by="prune_by_noise_rate",
                                           return_indices_ranked_by="self_confidence",
                                           n_jobs=1), dtype=np.int64)
    expected = float(num_label_issues(given, kept))
    if votes is not None and len(positions):
        suggested = classes[kept.argmax(axis=1)]
        confirmed = neighbours_disagree(labels[positions], suggested[positions],
                                        votes[positions]) & (
            kept[positions].max(axis=1) >= CONFIDENT)
        expected *= confirmed.mean()
        positions = positions[confirmed]
    return positions, int(round(expected)), classes, kept


def detection_recall(labels, probs, neighbours, reference_labels=None, seed: int = 0) -> float:
    """Mean recall of ``PLANTED`` flipped labels over ``DRAWS`` draws: how well this model and
    these neighbours would find label errors at the usual rate. ``reference_labels`` None: the
    neighbours are audit images, so their votes carry the flips too."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    size = max(1, round(PLANTED * len(labels)))
    recalls = []
    for _ in range(DRAWS):
        flipped = rng.choice(len(labels), size, replace=False)
        noisy = labels.copy()
        shift = rng.integers(1, len(classes), size)
        noisy[flipped] = classes[(np.searchsorted(classes, labels[flipped]) + shift)
                                 % len(classes)]
        votes = (noisy if reference_labels is None else reference_labels)[neighbours]
        found = _confident_learning(noisy, probs, votes)  # None: the flips emptied a class
        recalls.append(np.isin(flipped, found[0]).mean() if found is not None else 0.0)
    return float(np.mean(recalls))


def find_label_issues(labels: np.ndarray, probs: np.ndarray, neighbours: np.ndarray | None = None,
                      reference_labels: np.ndarray | None = None,
                      seed: int = 0) -> LabelIssues | None:
    """cleanlab's label issues (pruned by noise rate, ranked by self-confidence); None when
    fewer than two classes are present, so that there is nothing to confuse.

    With ``neighbours`` (each image's nearest neighbours in the penultimate features, indices
    into ``reference_labels``, or into the audit images when that is None), a flag counts only
    when the neighbours confirm it, and the self-test sets ``recall``."""
    from cleanlab.rank import get_label_quality_scores

    labels, probs = np.asarray(labels), np.asarray(probs)
    votes = None
    if neighbours is not None and neighbours.shape[1]:
        votes = (labels if reference_labels is None else reference_labels)[neighbours]
    found = _confident_learning(labels, probs, votes)
    if found is None:
        return None
    positions, expected, classes, kept = found
    given = present_class_probs(labels, probs)[1]
    recall = None if votes is None else detection_recall(labels, probs, neighbours,
                                                         reference_labels, seed)
    return LabelIssues(positions=positions,
                       scores=get_label_quality_scores(given, kept, method="self_confidence"),
                       suggested=classes[kept.argmax(axis=1)], expected=expected,
                       per_class=len(labels) / len(classes), recall=recall)
