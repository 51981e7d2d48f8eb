"""Whether predictions carry information at all: agreement beyond chance, how many classes the
model really uses, whether its class order matches the data's, and whether its logits differ
between classes by more than float32 rounding.

A wrong input range, a dead head or a shuffled class order does not crash anything: it yields
predictions that look like numbers and make every later figure meaningless. These measures say
so from the labels and predictions alone; the logits' spread from the logits.
"""

from __future__ import annotations

import numpy as np

# float32's machine epsilon, 2**-23 (1.2e-7): the spacing of float32 numbers at 1. Two classes'
# probabilities stand in the ratio exp(z_i - z_j) = 1 + (z_i - z_j) + ..., which float32 rounds
# to 1 when the logits differ by less: below it the softmax is uniform to rounding, and the
# gradients and maps read from such logits are of the size of the rounding of the activations
# that make them (measured: a random MobileNetV2 at 32 px spreads its logits over 1.7e-12).
FLOAT32_RESOLUTION = float(np.finfo(np.float32).eps)


def chance_accuracy(labels: np.ndarray, classes: int) -> float:
    """Accuracy of always answering the most frequent class of the data."""
    counts = np.bincount(labels, minlength=classes)
    return float(counts.max() / max(1, counts.sum()))


def kappa(labels: np.ndarray, preds: np.ndarray, classes: int) -> float:
    """Cohen's kappa: agreement with the labels beyond what the two marginals give by chance
    (0 for a model that ignores its input, 1 for perfect agreement)."""
    from sklearn.metrics import cohen_kappa_score

    if len(labels) == 0:
        return float("nan")
    if len(np.unique(labels)) == 1 and np.array_equal(labels, preds):
        return 1.0  # one class in the data, all predicted right: kappa is 0/0
    return float(cohen_kappa_score(labels, preds, labels=np.arange(classes)))


def effective_classes(values: np.ndarray, classes: int) -> float:
    """exp(entropy) of the class frequencies: the number of equally used classes they amount
    to (1 when everything is one class, ``classes`` when all are used equally)."""
    counts = np.bincount(values, minlength=classes).astype(np.float64)
    shares = counts[counts > 0] / max(1.0, counts.sum())
    return float(np.exp(-(shares * np.log(shares)).sum())) if shares.size else 0.0


def excess_share(predicted: float, data: float) -> float | None:
    """How far the largest predicted share has gone from the data's largest class share
    towards one class for everything: 0 at the data's share (below it, negative), 1 when a
    single class takes every prediction; None when the data holds a single class.

    Unlike the effective number of classes, this does not depend on how many classes there
    are: a constant model scores 1 on two classes as on a thousand.
    """
    return (predicted - data) / (1 - data) if data < 1 else None


def prediction_spread(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> dict:
    """How many classes the predictions effectively use against how many the data holds, the
    most predicted classes with their shares, and the largest predicted share against the
    data's largest class share."""
    classes = len(class_names)
    counts = np.bincount(preds, minlength=classes)
    top = np.argsort(-counts, kind="stable")[:3]
    predicted, held = effective_classes(preds, classes), effective_classes(labels, classes)
    n = max(1, len(preds))
    largest, data_largest = float(counts.max() / n), float(
        np.bincount(labels, minlength=classes).max() / max(1, len(labels)))
    return {"predicted_classes": predicted, "data_classes": held,
            "ratio": predicted / held if held else float("nan"),
            "top": [{"class": class_names[i], "share": float(counts[i] / n)}
                    for i in top if counts[i]],
            "largest_share": largest, "data_largest_share": data_largest,
            "excess_share": excess_share(largest, data_largest)}


def logit_spread(logits: np.ndarray) -> dict | None:
    """Each image's largest logit minus its smallest (how far apart the model puts its classes
    at all): the median over the images, the smallest, and the share of images whose spread is
    below float32's resolution (``FLOAT32_RESOLUTION``), over the images whose logits are all
    finite (non-finite ones are the weights check's); None without such images."""
    logits = logits[np.isfinite(logits).all(axis=1)]
    if len(logits) == 0:
        return None
    spread = logits.max(axis=1).astype(np.float64) - logits.min(axis=1)
    return {"median": float(np.median(spread)), "smallest": float(spread.min()),
            "share_at_rounding": float((spread < FLOAT32_RESOLUTION).mean()),
            "resolution": FLOAT32_RESOLUTION}


def label_logit_spread(logits: np.ndarray) -> list[dict]:
    """A multi-label model's per-label equivalent of ``logit_spread``: a spread between
    independent sigmoids says nothing, but one label's logit may not move with the image.
    Per label (a column): its logit's spread across the images (largest minus smallest, over
    the images where it is finite) and float32's resolution at the logit's size, machine
    epsilon times the largest magnitude (at least 1, where ``logit_spread`` reads it): below
    it the label's logit is one number to float32 rounding on every image (a dead unit, a
    bias alone), so its ranking, its gradients and its maps are rounding noise. A logit of 3
    whose images differ by one float32 step (2.4e-7) is constant, which the resolution at 1
    would not see. Both None with fewer than two such images (nothing to spread over)."""
    table = []
    for column in np.asarray(logits, np.float64).T:
        column = column[np.isfinite(column)]
        if len(column) < 2:
            table.append({"logit_spread": None, "logit_resolution": None})
            continue
        size = max(1.0, float(np.abs(column).max()))
        table.append({"logit_spread": float(column.max() - column.min()),
                      "logit_resolution": FLOAT32_RESOLUTION * size})
    return table


def best_relabelling(labels: np.ndarray, preds: np.ndarray, class_names: list[str]) -> dict:
    """The one-to-one relabelling of the model's outputs that agrees most with the labels (the
    Hungarian method on the confusion matrix), the accuracy it would give, and the class_names
    list, in the model's output order, that applies it."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import confusion_matrix

    classes = len(class_names)
    matrix = confusion_matrix(labels, preds, labels=np.arange(classes))
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    names = list(class_names)
    for true, output in zip(rows, cols, strict=True):
        names[output] = class_names[true]
    n = max(1, len(labels))
    moved = [{"output": int(o), "was": class_names[o], "is": class_names[t]}
             for t, o in zip(rows, cols, strict=True) if t != o and matrix[t, o] > 0]
    return {"matched_accuracy": float(matrix[rows, cols].sum() / n),
            "accuracy": float(np.trace(matrix) / n), "class_names": names, "moved": moved}
