"""A multi-label model's figures: each label a yes/no classifier of its own, scored with
scikit-learn (precision, recall, F1 and average precision per label, micro and macro averages),
and its mistakes counted per label as missed labels (false negatives) and false alarms (false
positives)."""

from __future__ import annotations

import numpy as np

FLOAT64_EPS = float(np.finfo(np.float64).eps)


def skill_rounding(row: dict) -> float:
    """How far a label's skill (average precision minus prevalence) can be from 0 by float64
    rounding alone: both are sums over the label's N images, each rounded by at most about N
    epsilons (the bound of recursive summation, Higham 2002, "Accuracy and Stability of
    Numerical Algorithms", section 4.2). N is the row's support over its prevalence."""
    images = round(row["support"] / row["prevalence"]) if row["prevalence"] else 1
    return max(images, 1) * FLOAT64_EPS


def label_metrics(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray,
                  names: list[str], thresholds: np.ndarray) -> dict[str, dict]:
    """Per label: precision, recall, F1 at its threshold, average precision over every
    threshold (None for a label no image carries: a ranking of no positives has none), its
    prevalence (the average precision of a random ranking), support, missed labels and false
    alarms."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, average=None, zero_division=0)
    missed = ((labels == 1) & (preds == 0)).sum(axis=0)
    alarms = ((labels == 0) & (preds == 1)).sum(axis=0)
    table = {}
    for k, name in enumerate(names):
        ap = (float(average_precision_score(labels[:, k], probs[:, k]))
              if support[k] else None)
        table[name] = {"precision": float(precision[k]), "recall": float(recall[k]),
                       "f1": float(f1[k]), "average_precision": ap,
                       "prevalence": float(labels[:, k].mean()) if len(labels) else 0.0,
                       "support": int(support[k]), "missed": int(missed[k]),
                       "false_alarms": int(alarms[k]), "threshold": float(thresholds[k])}
    return table


def averages(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray,
             per_label: dict[str, dict]) -> dict[str, dict]:
    """Micro averages (every image-label decision pooled) and macro averages (the mean over
    labels; average precision over the labels that have one)."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    out = {}
    for kind in ("micro", "macro"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, preds, average=kind, zero_division=0)
        out[kind] = {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
    present = labels.sum() > 0
    out["micro"]["average_precision"] = (float(average_precision_score(
        labels.ravel(), probs.ravel())) if present else None)
    aps = [m["average_precision"] for m in per_label.values()
           if m["average_precision"] is not None]
    out["macro"]["average_precision"] = float(np.mean(aps)) if aps else None
    return out


def set_metrics(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """Whole label sets: the share of images whose set is exactly right (subset accuracy) and
    the share of wrong image-label decisions (Hamming loss)."""
    from sklearn.metrics import accuracy_score, hamming_loss

    if not len(labels):
        return {"subset_accuracy": float("nan"), "hamming_loss": float("nan")}
    return {"subset_accuracy": float(accuracy_score(labels, preds)),
            "hamming_loss": float(hamming_loss(labels, preds))}


def worst_mistakes(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray,
                   thresholds: np.ndarray, limit: int) -> np.ndarray:
    """Positions of the images with the most confident wrong decision, worst first: how far a
    missed label's probability fell below its threshold, or a false alarm's rose above it
    (relative to the room on that side), the largest over the image's labels."""
    wrong = labels != preds
    below = (thresholds - probs) / thresholds  # a missed label: 1 at probability 0
    above = (probs - thresholds) / (1 - thresholds)  # a false alarm: 1 at probability 1
    badness = np.where(wrong, np.where(labels == 1, below, above), -np.inf).max(axis=1)
    candidates = np.flatnonzero(wrong.any(axis=1))
    order = np.lexsort((candidates, -badness[candidates]))
    return candidates[order][:limit]


def label_set(row: np.ndarray, names: list[str]) -> list[str]:
    return [names[k] for k in np.flatnonzero(row)]


def contrast_pairs(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For each image (rows of one sample): its most confidently missed label (the lowest
    probability among the labels it carries but was not given) and its most confident false
    alarm (the highest among those given but not carried), -1 where it has none. Where an image
    has both, its contrast is the missed label's logit minus the false alarm's."""
    missed = (labels == 1) & (preds == 0)
    alarms = (labels == 0) & (preds == 1)
    worst_missed = np.where(missed, probs, np.inf).argmin(axis=1)
    worst_alarm = np.where(alarms, probs, -np.inf).argmax(axis=1)
    return (np.where(missed.any(axis=1), worst_missed, -1),
            np.where(alarms.any(axis=1), worst_alarm, -1))


def label_confusions(labels: np.ndarray, preds: np.ndarray, names: list[str],
                     limit: int) -> list[dict]:
    """(missed label, false alarm) pairs by the number of images that have both, most first:
    a multi-label model's "X taken for Y"."""
    missed = ((labels == 1) & (preds == 0)).astype(np.int64)
    alarms = ((labels == 0) & (preds == 1)).astype(np.int64)
    counts = missed.T @ alarms  # [m, a]: images missing m and raising a
    pairs = sorted(np.argwhere(counts > 0).tolist(), key=lambda p: (-counts[p[0], p[1]], *p))
    return [{"true": names[m], "pred": names[a], "count": int(counts[m, a])}
            for m, a in pairs[:limit]]


def wrong_decisions(labels: np.ndarray, probs: np.ndarray, preds: np.ndarray,
                    thresholds: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(image positions, labels) of up to ``limit`` wrong decisions, taken from the labels in
    turn, each label's most confident first (as ``worst_mistakes`` ranks them), so that every
    label with mistakes gets its share before any gets a second: per-label figures need
    every label, and one label's many mistakes would otherwise fill the list."""
    wrong = labels != preds
    below = (thresholds - probs) / thresholds
    above = (probs - thresholds) / (1 - thresholds)
    badness = np.where(labels == 1, below, above)
    rows, cols = np.nonzero(wrong)
    rank = np.empty(len(rows), np.int64)
    for k in np.unique(cols):
        at = np.flatnonzero(cols == k)
        rank[at[np.lexsort((rows[at], -badness[rows[at], k]))]] = np.arange(len(at))
    order = np.lexsort((cols, rank))[:limit]
    return rows[order], cols[order]
