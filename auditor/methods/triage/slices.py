"""Underperforming slices found without slice labels: per-class failure directions, and groups
across classes from an error-aware mixture.

Per class, after Jain et al. 2022 (distilling model failures as directions in latent space): a
linear SVM on the normalised penultimate features separates the images of the class the model
gets wrong from those it gets right (classes balanced). Each image's side of that direction is
decided out-of-fold (cross-validated), so a slice's accuracy is measured on images that did not
shape it: the gap is not built in by the search.

Across classes, after Domino (Eyuboglu et al. 2022, an error-aware mixture model): a subgroup
that spans classes (inverted or washed-out images, one camera) is only found in per-class pieces
above. So one failure direction is found across all classes (as above, without the class), and
the images on its failure side (decided out-of-fold: never by an image's own correctness, so
here too the gap is not built in) are split by a Gaussian mixture (scikit-learn, its size chosen
by BIC) on the penultimate features and the image properties the Clever Hans screen uses
(brightness, ramps, bands, corners), each whitened by PCA, and the direction's error signal,
weighted as Domino weighs its error terms so that the components follow the model's failures.
Components that hold several classes are the cross-class slices.

All slices are ranked on one scale, the lower end of a bootstrap 95% interval of their accuracy
gap against the whole data (Efron's percentile interval), so small lucky slices do not outrank
large certain ones; each is described by the properties that set it apart (Cohen's d against the
rest of its class, or of the data for a slice across classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FOLDS = 5
BOOTSTRAP = 1000
SVM_C = 0.1  # a strong margin: a direction, not a memorised boundary
# The mixture's inputs and size. Tried on the demo CNN with 40 inverted test digits (4 per
# class) and on its clean test digits: diagonal covariances split the inverted group into 2-4
# components (covering 53-72% of it); full ones with the component count chosen by BIC keep it
# whole (93-97%, all pure) at 4, 8 or 16 feature dimensions, and with 8 feature and 4 property
# dimensions no cross-class slice on the clean digits has a gap whose interval is above 0.
FEATURE_DIMS = 8  # PCA components of the features the mixture sees
PROPERTY_DIMS = 4  # PCA components of the image properties
# Domino's gamma weighs the error terms against the embedding's likelihood (10 by default, over
# a 128-dimensional embedding); here the error column's scale is its weight: sqrt(FEATURE_DIMS)
# gives it the pull of all feature dimensions together.
ERROR_WEIGHT = FEATURE_DIMS ** 0.5
COMPONENTS = (1, 2, 3, 4, 6, 8, 12, 16)  # the counts BIC chooses from (a 1000-class model's
#                                          failures need no 1000 full-covariance components)
MIN_CLASSES = 2  # a component within one class is the per-class search's business


@dataclass
class Slice:
    label: int | None  # the class the slice lies in; None for a slice across classes
    indices: np.ndarray
    accuracy: float
    gap: float  # overall accuracy minus the slice's
    ci: tuple[float, float]  # bootstrap 95% interval of the gap


def failure_score(features: np.ndarray, wrong: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold decision values of the failure direction (> 0: the failure side); None when
    there are too few right or wrong images to cross-validate."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    folds = int(min(FOLDS, wrong.sum(), (~wrong).sum()))
    if folds < 2:
        return None
    svm = make_pipeline(StandardScaler(), LinearSVC(C=SVM_C, class_weight="balanced",
                                                    dual=False))
    return cross_val_predict(svm, features, wrong, method="decision_function",
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed))


def failure_side(features: np.ndarray, wrong: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Out-of-fold: whether each image lies on the failure side of the direction."""
    score = failure_score(features, wrong, seed)
    return None if score is None else score > 0


def bootstrap_gap(correct: np.ndarray, overall: float, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of overall accuracy minus the slice's, resampling the slice."""
    rng = np.random.default_rng(seed)
    draws = correct[rng.integers(0, len(correct), (BOOTSTRAP, len(correct)))].mean(axis=1)
    low, high = np.quantile(overall - draws, [0.025, 0.975])
    return float(low), float(high)


def _slice(label, inside, correct, overall, seed) -> Slice:
    accuracy = float(correct[inside].mean())
    return Slice(label, inside, accuracy, overall - accuracy,
                 bootstrap_gap(correct[inside], overall, seed))


def ranked(found: list[Slice]) -> list[Slice]:
    """Worst first by the interval's lower end (then the gap, per-class before cross-class)."""
    return sorted(found, key=lambda s: (-s.ci[0], -s.gap, -len(s.indices), s.label is None,
                                        s.label or 0))


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
        found.append(_slice(int(label), members[side], correct, overall, seed))
    return ranked(found)


def label_slices(features, right: np.ndarray, min_size: int = 5,
                 seed: int = 0) -> list[Slice]:
    """A multi-label model's slices: per label, the images on the failure side of that label's
    direction (its decisions wrong against right, over every image, out-of-fold), with the
    accuracy of that label's decisions; ``right`` (N, labels) whether each decision is right.
    ``Slice.label`` is the label; worst first on the same scale as the class slices."""
    from auditor.methods.triage.neighbours import unit_rows

    features, right = unit_rows(features), np.asarray(right, bool)
    found = []
    for label in range(right.shape[1]):
        side = failure_side(features, ~right[:, label], seed)
        if side is None or side.sum() < min_size:
            continue
        found.append(_slice(label, np.flatnonzero(side), right[:, label],
                            float(right[:, label].mean()), seed))
    return ranked(found)


def _whitened(values: np.ndarray, dims: int, seed: int) -> np.ndarray:
    """The first ``dims`` principal components, each scaled to unit variance."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    values = StandardScaler().fit_transform(np.asarray(values, np.float64))
    dims = min(dims, values.shape[1], len(values) - 1)
    return PCA(dims, whiten=True, random_state=seed).fit_transform(values)


def mixture_inputs(features, properties, score, seed: int = 0) -> np.ndarray:
    """What the mixture sees: whitened features and properties, and the weighted error signal."""
    from auditor.methods.triage.neighbours import unit_rows

    parts = [_whitened(unit_rows(features), FEATURE_DIMS, seed)]
    if properties is not None and properties.shape[1]:
        parts.append(_whitened(properties, PROPERTY_DIMS, seed))
    spread = score.std() or 1.0
    parts.append(ERROR_WEIGHT * ((score - score.mean()) / spread)[:, None])
    return np.concatenate(parts, axis=1)


def fit_mixture(inputs: np.ndarray, labels: np.ndarray, min_size: int, seed: int):
    """The full-covariance mixture with the lowest BIC over ``COMPONENTS``, up to one per class
    and no more than the images fill with two slices of ``min_size`` each (a fixed count splits
    a large group in pieces, as the per-class search does)."""
    from sklearn.mixture import GaussianMixture

    most = min(len(labels) // (2 * min_size), len(np.unique(labels)))
    best = None
    for count in [c for c in COMPONENTS if c <= max(1, most)]:
        mixture = GaussianMixture(count, covariance_type="full", reg_covar=1e-3,
                                  init_params="k-means++", random_state=seed).fit(inputs)
        if best is None or mixture.bic(inputs) < best.bic(inputs):
            best = mixture
    return best


def cross_class_slices(features, properties, labels, correct, min_size: int = 5,
                       seed: int = 0) -> list[Slice]:
    """Components of the error-aware mixture on the failure side (mean out-of-fold score > 0)
    that hold at least ``min_size`` images of ``MIN_CLASSES`` classes or more, worst first."""
    from auditor.methods.triage.neighbours import unit_rows

    correct = np.asarray(correct, bool)
    score = failure_score(unit_rows(features), ~correct, seed)
    if score is None or len(labels) < 2 * min_size:
        return []
    side = np.flatnonzero(score > 0)
    if len(side) < min_size:
        return []
    inputs = mixture_inputs(features, properties, score, seed)[side]
    assigned = fit_mixture(inputs, labels[side], min_size, seed).predict(inputs)
    overall, found = float(correct.mean()), []
    for component in np.unique(assigned):
        inside = side[assigned == component]
        if len(inside) >= min_size and len(np.unique(labels[inside])) >= MIN_CLASSES:
            found.append(_slice(None, inside, correct, overall, seed))
    return ranked(found)


def all_slices(features, properties, labels, correct, min_size: int = 5,
               seed: int = 0) -> list[Slice]:
    """Per-class and cross-class slices on one scale, worst first."""
    return ranked(failure_slices(features, labels, correct, min_size, seed)
                  + cross_class_slices(features, properties, labels, correct, min_size, seed))


def distinct_properties(properties: dict[str, np.ndarray], inside: np.ndarray,
                        rest: np.ndarray, top: int = 2) -> list[dict]:
    """Properties whose mean over ``inside`` differs most from that over ``rest`` (positions),
    by Cohen's d; none when the rest has fewer than two images."""
    if len(rest) < 2:
        return []
    rows = []
    for name, values in properties.items():
        a, b = values[inside], values[rest]
        pooled = np.sqrt((a.var() + b.var()) / 2) or 1e-12
        rows.append({"property": name, "slice": float(a.mean()), "rest": float(b.mean()),
                     "effect": float((a.mean() - b.mean()) / pooled)})
    return sorted(rows, key=lambda r: -abs(r["effect"]))[:top]
