"""The data-side shortcut check: simple image properties that predict the label on their own.

After Deepchecks' property-label correlation: if the brightness of an image, its colour or the
statistics of its border tell the class better than chance, any model can learn that shortcut.
Each property's predictive power score (PPS, as in ppscore: cross-validated weighted F1 of a
shallow decision tree on the one property, scaled so that the naive baseline is 0 and perfect
prediction 1) is reported overall, and per class as the one-versus-rest ROC AUC of the raw
property, which catches a shortcut confined to one class.
"""

from __future__ import annotations

import numpy as np

BORDER = 0.125  # share of the side that counts as the border band


def image_properties(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image scalar properties of display-space images (N, H, W, C)."""
    x = np.asarray(images, np.float32)
    grey = x.mean(axis=-1)
    height, width = grey.shape[1:]
    band = max(1, round(BORDER * min(height, width)))
    border = np.ones((height, width), bool)
    border[band:height - band, band:width - band] = False
    properties = {
        "brightness": grey.mean(axis=(1, 2)),
        "contrast": grey.std(axis=(1, 2)),
        "border brightness": grey[:, border].mean(axis=1),
        "border contrast": grey[:, border].std(axis=1),
        "brightest corner": np.stack([grey[:, r, c].mean(axis=(1, 2)) for r, c in _corner_slices(
            height, width, band)], axis=1).max(axis=1),
    }
    if x.shape[-1] == 3:
        for i, colour in enumerate(("red", "green", "blue")):
            properties[f"{colour} mean"] = x[..., i].mean(axis=(1, 2))
        properties["saturation"] = (x.max(axis=-1) - x.min(axis=-1)).mean(axis=(1, 2))
    return properties


def _corner_slices(height: int, width: int, band: int):
    for rows in (slice(0, band), slice(height - band, height)):
        for cols in (slice(0, band), slice(width - band, width)):
            yield rows, cols


def predictive_power(values: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ppscore's classification score of one property for the labels, in [0, 1]."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    counts = np.bincount(labels)
    folds = int(min(4, counts[counts > 0].min()))
    if folds < 2 or len(np.unique(labels)) < 2:
        return 0.0
    tree = DecisionTreeClassifier(max_depth=4, min_samples_leaf=5, random_state=seed)
    predicted = cross_val_predict(tree, values.reshape(-1, 1), labels,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    score = f1_score(labels, predicted, average="weighted")
    naive_common = f1_score(labels, np.full_like(labels, np.argmax(counts)), average="weighted",
                            zero_division=0)
    naive_random = f1_score(labels, np.random.default_rng(seed).permutation(labels),
                            average="weighted")
    naive = max(naive_common, naive_random)
    return float(max(0.0, (score - naive) / (1 - naive))) if naive < 1 else 0.0


def class_separation(values: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Per class, how well the property alone separates it from the rest: max(AUC, 1 - AUC)."""
    from scipy.stats import rankdata

    ranks = rankdata(values)
    separation = np.full(classes, 0.5)
    for c in range(classes):
        inside = labels == c
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        if n_in and n_out:
            auc = (ranks[inside].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)
            separation[c] = max(auc, 1 - auc)
    return separation


def property_table(images: np.ndarray, labels: np.ndarray, class_names: list[str], *,
                   pps_threshold: float, auc_threshold: float, seed: int = 0) -> list[dict]:
    """One row per property: PPS, the class it separates best and how well, and the flag."""
    rows = []
    for name, values in image_properties(images).items():
        pps = predictive_power(values, labels, seed)
        separation = class_separation(values, labels, len(class_names))
        best = int(np.argmax(separation))
        rows.append({"property": name, "pps": round(pps, 4), "class": class_names[best],
                     "auc": round(float(separation[best]), 4),
                     "flagged": bool(pps >= pps_threshold or separation[best] >= auc_threshold)})
    return sorted(rows, key=lambda r: (not r["flagged"], -r["pps"], -r["auc"]))
