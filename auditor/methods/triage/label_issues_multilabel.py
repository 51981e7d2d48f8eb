"""Likely label errors of a multi-label model, label by label: cleanlab's multi-label confident
learning (``find_multilabel_issues_per_class``, one-vs-rest on each label's sigmoid), under the
same two safeguards as the single-label finder (``label_issues.py``), taken per label.

Each label is a yes/no decision of its own, so each is a two-class problem: cleanlab sets that
label's thresholds from its own positives and negatives, and flags the images whose given value
(carried or not) the model contradicts. A flag counts only when the image's nearest neighbours
in the penultimate features mostly hold the other value of that label and the model gives the
other value a probability of ``CONFIDENT`` or more; and a label's count is reported only when a
self-test finds flips planted in that label (``PLANTED`` of its values, ``DRAWS`` draws) with
``MIN_RECALL``. The constants are the single-label finder's, measured there on a two-to-ten-
class problem, and measured again per label on multi-label models other than the tests'
(``python bench/multilabel.py``: two architectures with four sigmoid labels on RGB digit
composites, 719 audit images, read after 1, 3 and 12 epochs, labels 36% to 99% right):
- ``CONFIDENT``: where the model is weakest and still measured (82-89% per label), the
  neighbours alone left 7 to 34 of a label's clean values flagged, with p >= 0.9 too 0 to 13;
  at 92-99% the two differ by at most 2.
- ``MIN_RECALL``: the self-test's recall was 0 to 0.43 on every label of the models at 36-70%
  (nothing measured), 0.28 to 0.71 at 82-89% (two labels measured, at 0.58 and 0.71, whose
  clean values gave expected shares of 1.3% and 0.4%), 0.72 to 0.97 at 92-99%.
- the bounds of ``triage.label_errors.LABEL`` (sections/triage.py): on clean labels, every
  measured label's expected share was at most 1.3%, below the warning's 3%; with 10% of one
  label's values flipped, that label's share read 6.5% to 9.3% (81-94% of the flips found) and
  the other labels' did not move.
So the single-label constants hold per label; none was changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.methods.triage.label_issues import CONFIDENT, DRAWS, MIN_PER_CLASS, MIN_RECALL, PLANTED


@dataclass
class LabelSetIssues:
    """Flags per image and label, cleanlab's quality score per image, and per label the
    expected count of wrong values, the self-test's recall and why a label was not measured.

    ``flagged[i, k]``: image i's given value of label k is likely wrong (confirmed as above);
    ``quality``: cleanlab's multi-label label quality of each image (low: likely wrong);
    ``expected[k]``: cleanlab's estimate of label k's wrong values (its one-vs-rest confident
    joint's off-diagonal) scaled by the share of its flags confirmed; ``recall[k]`` the
    self-test's (None without neighbours); ``skipped[k]``: why label k has no count (too few
    images on one side, or the self-test found too few planted flips). ``images``: cleanlab's
    estimate of the images with at least one wrong value among the measured labels (its
    multi-label ``num_label_issues``), scaled by the share of its flagged images confirmed:
    the figure a single-label run's expected label errors counts (images whose label is
    wrong), where the sum of ``expected`` counts image-label values; None when no label was
    measured.
    """

    flagged: np.ndarray
    quality: np.ndarray
    expected: dict[int, int]
    recall: dict[int, float | None]
    skipped: dict[int, str]
    images_expected: int | None = None

    @property
    def measured(self) -> list[int]:
        return sorted(self.expected)

    @property
    def values_expected(self) -> int | None:
        """Wrong image-label values expected over the measured labels."""
        return int(sum(self.expected.values())) if self.expected else None

    @property
    def images(self) -> np.ndarray:
        """Positions of the images with any flagged label, lowest quality first."""
        rows = np.flatnonzero(self.flagged.any(axis=1))
        return rows[np.argsort(self.quality[rows], kind="stable")]


def _lists(labels: np.ndarray) -> list[list[int]]:
    return [np.flatnonzero(row).tolist() for row in labels]


def _flags(labels: np.ndarray, probs: np.ndarray, votes: np.ndarray | None):
    """(confirmed flags (N, K), expected per column, cleanlab's flags (N, K)) by cleanlab on
    every column at once, each flag confirmed by the neighbours' votes (``votes``: (N, k, K)
    their values of each label) and the model's confidence in the other value."""
    from cleanlab.count import num_label_issues
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    flagged = np.asarray(find_multilabel_issues_per_class(
        _lists(labels), probs, filter_by="prune_by_noise_rate", n_jobs=1), bool)
    other = np.where(labels == 1, 1 - probs, probs)  # the probability of the other value
    confirmed = flagged & (other >= CONFIDENT)
    if votes is not None:
        confirmed &= (votes == labels[:, None, :]).mean(axis=1) < 0.5
    expected = []
    for k in range(labels.shape[1]):
        binary = np.stack([1 - probs[:, k], probs[:, k]], axis=1)
        share = confirmed[:, k].sum() / flagged[:, k].sum() if flagged[:, k].any() else 1.0
        expected.append(num_label_issues(labels[:, k], binary) * share)
    return confirmed, np.round(expected).astype(int), flagged


def expected_images(labels: np.ndarray, probs: np.ndarray, confirmed: np.ndarray,
                    flagged: np.ndarray, values: int) -> int:
    """cleanlab's estimate of the images with a wrong value among these labels, scaled by
    the share of the images it flags (any label) whose flags are confirmed, and at most
    ``values`` (the wrong values expected: an image with one has at least one). The estimate
    is what cleanlab's ``num_label_issues(multi_label=True)`` counts, called through the
    multi-label filter it defers to (the other path is deprecated)."""
    from cleanlab.multilabel_classification.filter import find_label_issues

    raw = find_label_issues(_lists(labels), probs, filter_by="confident_learning",
                            n_jobs=1).sum()
    any_flagged = flagged.any(axis=1).sum()
    share = confirmed.any(axis=1).sum() / any_flagged if any_flagged else 1.0
    return min(int(round(raw * share)), values)


def detection_recall(labels, probs, neighbours, reference_labels=None, seed: int = 0):
    """Per column, the mean recall of ``PLANTED`` of its values flipped (every column at once,
    independently) over ``DRAWS`` draws. ``reference_labels`` None: the neighbours are audit
    images, so their votes carry the flips too."""
    rng = np.random.default_rng(seed)
    n, labels_count = labels.shape
    size = max(1, round(PLANTED * n))
    found = np.zeros((DRAWS, labels_count))
    for draw in range(DRAWS):
        flipped = np.stack([rng.choice(n, size, replace=False) for _ in range(labels_count)], 1)
        noisy = labels.copy()
        columns = np.arange(labels_count)
        noisy[flipped, columns] = 1 - noisy[flipped, columns]
        votes = (noisy if reference_labels is None else reference_labels)[neighbours]
        flags = _flags(noisy, probs, votes)[0]
        found[draw] = flags[flipped, columns].mean(axis=0)
    return found.mean(axis=0)


def find_label_set_issues(labels: np.ndarray, probs: np.ndarray,
                          neighbours: np.ndarray | None = None,
                          reference_labels: np.ndarray | None = None,
                          seed: int = 0) -> LabelSetIssues:
    """Label issues of multi-hot ``labels`` (N, K) under sigmoid ``probs`` (N, K). Labels
    with fewer than ``MIN_PER_CLASS`` images carrying them, or not carrying them, are left
    out (cleanlab's thresholds come from each side's own images); with ``neighbours``
    (indices into ``reference_labels``' rows, or into the audit's when None) flags need their
    confirmation, and a label whose self-test recall is below ``MIN_RECALL`` is not measured."""
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    labels, probs = np.asarray(labels, np.int64), np.asarray(probs, np.float64)
    n, count = labels.shape
    sides = np.minimum(labels.sum(axis=0), n - labels.sum(axis=0))
    skipped = {int(k): (f"{int(sides[k])} images on its rarer side (carrying it or not): "
                        f"confident learning needs at least {MIN_PER_CLASS}")
               for k in np.flatnonzero(sides < MIN_PER_CLASS)}
    columns = np.flatnonzero(sides >= MIN_PER_CLASS)
    flagged = np.zeros((n, count), bool)
    quality = np.ones(n)
    if not len(columns):
        return LabelSetIssues(flagged, quality, {}, {}, skipped)
    votes = None
    if neighbours is not None and neighbours.shape[1]:
        votes = (labels if reference_labels is None else reference_labels)[neighbours][..., columns]
    sub, subprobs = labels[:, columns], probs[:, columns]
    flags, expected, raw = _flags(sub, subprobs, votes)
    recall = (detection_recall(sub, subprobs, neighbours,
                               None if reference_labels is None else reference_labels[:, columns],
                               seed) if votes is not None else [None] * len(columns))
    counts, recalls, kept = {}, {}, []
    for j, k in enumerate(columns):
        recalls[int(k)] = None if recall[j] is None else float(recall[j])
        if recall[j] is not None and recall[j] < MIN_RECALL:
            skipped[int(k)] = (f"not measurable: flips planted at {PLANTED:.1%} of its values "
                               f"were found at {recall[j]:.0%} (at least {MIN_RECALL:.0%} needed)")
            continue
        flagged[:, k], counts[int(k)] = flags[:, j], int(expected[j])
        kept.append(j)
    quality = get_label_quality_scores(_lists(sub), subprobs)
    images = (expected_images(sub[:, kept], subprobs[:, kept], flags[:, kept], raw[:, kept],
                              sum(counts.values())) if kept else None)
    return LabelSetIssues(flagged, np.asarray(quality, float), counts, recalls, skipped, images)
