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
