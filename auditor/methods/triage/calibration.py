"""Calibration: expected calibration error, the reliability diagram's bins, over- and
under-confidence per class, and the temperature that fixes it (Guo et al. 2017).

ECE uses 15 equal-width confidence bins, as Guo et al. do. The temperature is fitted by
minimising the negative log-likelihood; the ECE it leaves is measured by 2-fold cross-fitting
(fit on one half, measure on the other, and back), so that it is not the fit's own optimism.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax, softmax

BINS = 15
TEMPERATURE_RANGE = (0.05, 20.0)


@dataclass
class Reliability:
    """Per confidence bin: its edges, mean confidence, accuracy and count."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        total = self.count.sum()
        if total == 0:
            return float("nan")
        gaps = np.abs(np.nan_to_num(self.accuracy - self.confidence))
        return float((self.count * gaps).sum() / total)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> Reliability:
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(which, confidence, bins) / count
        accuracy = np.bincount(which, correct.astype(float), bins) / count
    return Reliability(edges, mean_conf, accuracy, count)


def ece(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    probs = softmax(np.asarray(logits, np.float64) / temperature, axis=1)
    return reliability(probs.max(axis=1), probs.argmax(axis=1) == labels).ece


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of softmax(logits / T), searched on log T."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)
    rows = np.arange(len(labels))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, labels].mean())

    low, high = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


def cross_fitted_ece(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ECE after temperature scaling, each half scaled by the temperature fitted on the other."""
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    if min(len(h) for h in halves) < 2:
        return float("nan")
    scaled = np.empty_like(logits, dtype=np.float64)
    for fit, apply in (halves, halves[::-1]):
        scaled[apply] = logits[apply] / fit_temperature(logits[fit], labels[fit])
    return ece(scaled, labels)


def per_class_confidence_gap(probs: np.ndarray, labels: np.ndarray) -> dict[int, dict]:
    """For each predicted class: mean confidence minus precision (positive: over-confident)."""
    preds, confidence = probs.argmax(axis=1), probs.max(axis=1)
    gaps = {}
    for c in np.unique(preds):
        chosen = preds == c
        precision = float((labels[chosen] == c).mean())
        gaps[int(c)] = {"predicted": int(chosen.sum()), "confidence":
                        float(confidence[chosen].mean()), "precision": precision,
                        "gap": float(confidence[chosen].mean()) - precision}
    return gaps


# A multi-label model's calibration: each image-label decision is a yes/no answer whose
# confidence is the probability of the answer given (p when the label is predicted, 1 - p when
# not), all decisions pooled into the same 15 bins; its temperature divides every logit before
# the sigmoid, fitted by the binary cross-entropy (Guo et al.'s NLL, per decision).


def decisions(logits: np.ndarray, labels: np.ndarray, cuts: np.ndarray,
              temperature=1.0) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of every image-label decision, flattened; ``cuts`` each label's
    threshold as a logit. The decisions are the model's (unscaled logits against the cuts):
    a temperature (one, or one per image: a column) changes the confidence, not the answer."""
    from scipy.special import expit

    logits = np.asarray(logits, np.float64)
    given = logits >= np.asarray(cuts)
    p = expit(logits / temperature)
    return np.where(given, p, 1 - p).ravel(), (given == (labels == 1)).ravel()


def label_ece(logits, labels, cuts, temperature=1.0) -> float:
    return reliability(*decisions(logits, labels, cuts, temperature)).ece


def fit_label_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the binary cross-entropy of sigmoid(logits / T)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_expit

    logits = np.asarray(logits, np.float64)
    signs = np.where(labels == 1, 1.0, -1.0)

    def nll(log_t: float) -> float:
        return float(-log_expit(signs * logits / np.exp(log_t)).mean())

    low, high = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


def cross_fitted_label_ece(logits, labels, cuts, seed: int = 0) -> float:
    """The pooled decisions' ECE after temperature scaling, 2-fold cross-fitted: each half's
    confidences scaled by the temperature fitted on the other half."""
    order = np.random.default_rng(seed).permutation(len(labels))
    halves = [order[: len(order) // 2], order[len(order) // 2:]]
    if min(len(h) for h in halves) < 2:
        return float("nan")
    temperature = np.empty((len(labels), 1))
    for fit, apply in (halves, halves[::-1]):
        temperature[apply] = fit_label_temperature(logits[fit], labels[fit])
    return label_ece(logits, labels, cuts, temperature)


def per_label_confidence_gap(probs: np.ndarray, labels: np.ndarray,
                             preds: np.ndarray) -> dict[int, dict]:
    """For each label given to some image: the mean probability of the images given it minus
    the share of them that carry it (positive: over-confident)."""
    gaps = {}
    for k in np.flatnonzero(preds.any(axis=0)):
        chosen = preds[:, k] == 1
        confidence, precision = float(probs[chosen, k].mean()), float(labels[chosen, k].mean())
        gaps[int(k)] = {"predicted": int(chosen.sum()), "confidence": confidence,
                        "precision": precision, "gap": confidence - precision}
    return gaps


# One label's ECE is noise where a perfectly calibrated label would score as much: its outcomes
# redrawn from its own probabilities (consistency resampling, Broecker and Smith 2007,
# "Increasing the reliability of reliability diagrams"), over FLOOR_DRAWS draws, give the ECE
# that calibration alone reaches at this label's sample size; its 95th percentile is the
# label's noise floor (the binned estimator is biased upward on few decisions: Kumar et al.
# 2019, Roelofs et al. 2022). Measured by bench/label_ece_floor.py on calibrated labels by
# construction: 100 images carrying a label half the time score a median 0.054 (62% over the
# 0.05 warn bound), 200 images 0.040 (17% over), 400 images 0.028 (none over).
FLOOR_DRAWS = 200
FLOOR_QUANTILE = 95


def noise_floor(column: np.ndarray, cut: np.ndarray, seed: int = 0) -> float:
    """The 95th percentile of the ECE this label's decisions (``column``: its logits) score
    when their outcomes are drawn from their own probabilities: what calibration alone gives."""
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    p = expit(np.asarray(column, np.float64))
    draws = [label_ece(column, (rng.random(p.shape) < p).astype(int), cut)
             for _ in range(FLOOR_DRAWS)]
    return float(np.percentile(draws, FLOOR_QUANTILE))


def label_calibration(logits: np.ndarray, labels: np.ndarray, cuts: np.ndarray,
                      seed: int = 0) -> list[dict]:
    """Each label's own calibration, its decisions alone: ECE, the temperature fitted on them,
    the ECE it leaves (cross-fitted), whether the fit stopped at the range's edge, how many
    images carry the label and its noise floor (``noise_floor``). The
    pooled figures can hide a label: one over-confident label among well calibrated ones is
    diluted by them, and one temperature for every label cannot fix it."""
    logits = np.asarray(logits, np.float64)
    rows = []
    for k in range(logits.shape[1]):
        column, given, cut = logits[:, k:k + 1], labels[:, k:k + 1], cuts[k:k + 1]
        temperature = fit_label_temperature(column, given)
        after = cross_fitted_label_ece(column, given, cut, seed)  # NaN: too few to halve
        rows.append({"ece": label_ece(column, given, cut), "temperature": temperature,
                     "ece_after_temperature": float(after) if np.isfinite(after) else None,
                     "temperature_at_bound": bool(np.isclose(temperature, TEMPERATURE_RANGE,
                                                             rtol=1e-3).any()),
                     "carrying": int(given.sum()),
                     "noise_floor": noise_floor(column, cut, seed + k)})
    return rows
