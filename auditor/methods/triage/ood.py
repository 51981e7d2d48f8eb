"""Out-of-distribution scores of each image, and thresholds calibrated on reference data.

Three detectors, each higher-is-stranger: the energy of the logits (Liu et al. 2020, -logsumexp
at temperature 1), the distance to the k-th nearest reference image in the normalised
penultimate features (Sun et al. 2022), and the Mahalanobis distance to the closest class mean
under one shared covariance (Lee et al. 2018; Ledoit-Wolf shrinkage keeps it invertible when
there are fewer images than feature dimensions). The reference is the training data when given,
else the audit data itself. Each threshold is the reference's 95th percentile: the usual
operating point of these papers (95% of in-distribution images pass, FPR at 95% TPR).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

REFERENCE_QUANTILE = 0.95
CONSTANT = 1e-6  # a detector whose reference scores spread less than this measures nothing


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits): high for inputs the logits do not commit to."""
    return -logsumexp(np.asarray(logits, np.float64), axis=1)


def joint_energy(logits: np.ndarray) -> np.ndarray:
    """A multi-label model's energy: minus the sum over labels of log(1 + e^z) (Wang et al.
    2021, JointEnergy, negated so that higher is stranger): each label's evidence adds up,
    where logsumexp would read the sigmoids as one softmax."""
    return -np.logaddexp(0.0, np.asarray(logits, np.float64)).sum(axis=1)


def knn_distance(distances: np.ndarray) -> np.ndarray:
    """The distance to the k-th nearest neighbour, from ``neighbours.nearest``'s distances."""
    return distances[:, -1].astype(np.float64)


def mahalanobis(query: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each query row to its nearest class mean, under the
    reference's Ledoit-Wolf covariance (sklearn's shrinkage coefficient)."""
    from sklearn.covariance import ledoit_wolf_shrinkage
    from sklearn.metrics import pairwise_distances

    from auditor.methods.triage.neighbours import unit_rows

    reference, query = unit_rows(reference).astype(np.float64), unit_rows(query).astype(np.float64)
    classes = np.unique(labels)
    means = np.stack([reference[labels == c].mean(axis=0) for c in classes])
    centred = reference - means[np.searchsorted(classes, labels)]
    whiten = shrunk_whitening(centred, ledoit_wolf_shrinkage(centred, assume_centered=True))
    return pairwise_distances(whiten(query), whiten(means), metric="sqeuclidean").min(axis=1)


def shrunk_whitening(centred: np.ndarray, shrinkage: float):
    """``x -> P^(1/2) x`` for the precision P of the shrunk covariance
    ``(1 - shrinkage) C'C / n + shrinkage * mu * I`` (mu: the mean variance; sklearn's
    LedoitWolf), from the SVD of the n x d ``centred`` rows: exact, in O(n d) a row, never a
    d x d matrix (VGG16's 4096 features: inverting the 4096 x 4096 covariance took most of a
    minute of a 24-image triage). Off the rows' span the covariance is ``shrinkage * mu``; a
    direction of zero variance is dropped, as a pseudo-inverse drops it."""
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variances = singular ** 2 / len(centred)
    floor = shrinkage * variances.sum() / centred.shape[1]  # the shrinkage target's variance
    spans = floor + (1 - shrinkage) * variances
    tolerance = spans.max(initial=0.0) * max(centred.shape) * np.finfo(np.float64).eps

    def inverse_root(v):
        return np.where(v > tolerance, 1 / np.sqrt(np.maximum(v, tolerance)), 0.0)

    off_span = float(inverse_root(np.array(floor)))
    return lambda x: x * off_span + (x @ vt.T) * (inverse_root(spans) - off_span) @ vt


@dataclass
class Detector:
    """One detector's scores on the audit images and its threshold from the reference."""

    name: str
    scores: np.ndarray | None
    threshold: float | None = None
    skipped: str | None = None  # why it could not be measured

    @property
    def flags(self) -> np.ndarray | None:
        return None if self.scores is None else self.scores > self.threshold


def calibrated(name: str, scores, reference_scores) -> Detector:
    """A detector with its 95th-percentile threshold; skipped when the reference is constant
    (e.g. log-probabilities as logits: every energy is 0)."""
    reference_scores = np.asarray(reference_scores, np.float64)
    if reference_scores.size < 2 or np.ptp(reference_scores) < CONSTANT:
        return Detector(name, None, skipped="its scores are constant on the reference data")
    threshold = float(np.quantile(reference_scores, REFERENCE_QUANTILE))
    return Detector(name, np.asarray(scores, np.float64), threshold)


@dataclass
class OodVotes:
    """Per image, how many measurable detectors call it out of distribution, and the verdict:
    all of the measured ones must agree. An OOD verdict excuses the model from a mistake, so it
    asks for every kind of evidence there is: logits that commit to nothing and features far
    from the reference images."""

    detectors: list[Detector] = field(default_factory=list)

    @property
    def measured(self) -> list[Detector]:
        return [d for d in self.detectors if d.scores is not None]

    def votes(self, n: int) -> np.ndarray:
        return sum((d.flags.astype(int) for d in self.measured), np.zeros(n, int))

    def flags(self, n: int) -> np.ndarray:
        measured = len(self.measured)
        if measured == 0:
            return np.zeros(n, bool)
        return self.votes(n) == measured
