"""Underperforming slices found without slice labels: per-class failure directions.

After Jain et al. 2022 (distilling model failures as directions in latent space): for each class,
a linear SVM on the normalised penultimate features separates the images the model gets wrong
from those it gets right (classes balanced). Each image's side of that direction is decided
out-of-fold (cross-validated), so a slice's accuracy is measured on images that did not shape
it: the gap is not built in by the search. Slices are ranked by the lower end of a bootstrap
95% interval of their accuracy gap (Efron's percentile interval), so small lucky slices do not
outrank large certain ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOLDS = 5
BOOTSTRAP = 1000
SVM_C = 0.1  # a strong margin: a direction, not a memorised boundary


@dataclass
class Slice:
    label: int  # the class the slice lies in
    indices: np.ndarray
    accuracy: float
    gap: float  # overall accuracy minus the slice's
    ci: tuple[float, float]  # bootstrap 95% interval of the gap


def failure_side(features: np.ndarray, wrong: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold: whether each image lies on the failure side of its class's direction;
    None when the class has too few right or wrong images to cross-validate."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    folds = int(min(FOLDS, wrong.sum(), (~wrong).sum()))
    if folds < 2:
        return None
    svm = make_pipeline(StandardScaler(), LinearSVC(C=SVM_C, class_weight="balanced",
                                                    dual=False))
    decision = cross_val_predict(svm, features, wrong, method="decision_function",
                                 cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return decision > 0


def bootstrap_gap(correct: np.ndarray, overall: float, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of overall accuracy minus the slice's, resampling the slice."""
    rng = np.random.default_rng(seed)
    draws = correct[rng.integers(0, len(correct), (BOOTSTRAP, len(correct)))].mean(axis=1)
    low, high = np.quantile(overall - draws, [0.025, 0.975])
    return float(low), float(high)


def failure_slices(features, labels, correct, min_size: int = 5, seed: int = 0) -> list[Slice]:
    """One candidate slice per class (its failure side), worst first by the interval's lower
    end; slices smaller than ``min_size`` are left out (a bootstrap of a few images says
    little)."""
    from auditor.methods.triage.neighbours import unit_rows

    features, correct = unit_rows(features), np.asarray(correct, bool)
    overall = float(correct.mean())
    found = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        side = failure_side(features[members], ~correct[members], seed)
        if side is None or side.sum() < min_size:
            continue
        inside = members[side]
        accuracy = float(correct[inside].mean())
        found.append(Slice(int(label), inside, accuracy, overall - accuracy,
                           bootstrap_gap(correct[inside], overall, seed)))
    return sorted(found, key=lambda s: (-s.ci[0], -s.gap, s.label))
