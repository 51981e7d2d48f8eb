"""Are visualisations recognisable and natural? Two yardsticks from the real images alone.

A model's own confidence says little (an adversarial pattern also scores 100%), so the images
are judged by a classifier that never saw the audited model: a logistic regression on small
thumbnails of the dataset (for multi-hot labels, one per label, each with balanced class
weights, so that its probability 0.5 weighs a missed label and a false alarm alike).
Naturalness is measured by total variation, the mean jump between neighbouring pixels, which
is low for real photographs and digits and high for the high-frequency noise that
unregularised optimisation paints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.methods.featureviz.objectives import image_total_variation

MAX_JUDGE_SAMPLES = 10_000  # thumbnails kept in memory to train the judge


@dataclass
class RealImages:
    """What the dataset's images look like: their mean, their total variation, a judge."""

    mean_image: np.ndarray  # (H, W, C)
    total_variation: np.ndarray  # (N,) one figure per real image
    judge: object  # a fitted scikit-learn classifier over flattened thumbnails
    judge_size: int  # thumbnails are judge_size x judge_size
    judge_accuracy: float  # on held-out real images
    judge_classes: np.ndarray  # the labels the judge knows

    def tv_percentiles(self) -> dict[str, float]:
        p5, p50, p95 = np.percentile(self.total_variation, [5, 50, 95])
        return {"p5": float(p5), "p50": float(p50), "p95": float(p95)}

    def is_natural(self, tv: np.ndarray) -> np.ndarray:
        """Within the real images' range: total variation at most their 95th percentile."""
        return np.asarray(tv) <= self.tv_percentiles()["p95"]

    def tv_rank(self, tv: np.ndarray) -> np.ndarray:
        """The fraction of real images with a lower total variation (0..1)."""
        ordered = np.sort(self.total_variation)
        return np.searchsorted(ordered, np.asarray(tv)) / len(ordered)

    def judge_predict(self, images: np.ndarray) -> np.ndarray:
        return self.judge.predict(thumbnails(images, self.judge_size))

    def judge_label_probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, labels): the multi-label judge's probability of each label on each image."""
        return self.judge.predict_proba(thumbnails(images, self.judge_size))


def thumbnails(images: np.ndarray, size: int) -> np.ndarray:
    """Images shrunk by area averaging to size x size, flattened: the judge's input."""
    import tensorflow as tf

    small = tf.image.resize(np.asarray(images, np.float32), (size, size), antialias=True)
    return small.numpy().reshape(len(images), -1)


def default_judge_size(height: int) -> int:
    """8 px for digit-sized inputs (the resolution of scikit-learn's digits), else 16 px."""
    return min(height, 8 if height <= 32 else 16)


def study_real_images(dataset, batch_size: int = 64, judge_size: int | None = None,
                      seed: int = 0) -> RealImages:
    """One streaming pass: mean image, total variation of each image, thumbnails for the judge.

    The judge is a multinomial logistic regression fitted on 75% of the thumbnails (at most
    MAX_JUDGE_SAMPLES) and scored on the rest.
    """
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    height = dataset.image_shape[0]
    judge_size = judge_size or default_judge_size(height)
    keep = np.zeros(dataset.n, bool)
    rng = np.random.default_rng(seed)
    keep[rng.permutation(dataset.n)[:MAX_JUDGE_SAMPLES]] = True
    total = np.zeros(dataset.image_shape, np.float64)
    tv, small, labels = [], [], []
    for images, batch_labels, positions in dataset.batches(batch_size):
        total += images.sum(axis=0)
        tv.append(image_total_variation(images).numpy())
        chosen = keep[positions]
        if chosen.any():
            small.append(thumbnails(images[chosen], judge_size))
            labels.append(batch_labels[chosen])
    small, labels = np.concatenate(small), np.concatenate(labels)
    mean_image = (total / dataset.n).astype(np.float32)
    tv = np.concatenate(tv)
    if labels.ndim == 2:  # multi-hot rows: a judge per label
        judge, accuracy = label_judge(small, labels, seed)
        return RealImages(mean_image=mean_image, total_variation=tv, judge=judge,
                          judge_size=judge_size, judge_accuracy=accuracy,
                          judge_classes=np.arange(labels.shape[1]))
    classes, counts = np.unique(labels, return_counts=True)
    judge = LogisticRegression(max_iter=2000) if len(classes) > 1 else DummyClassifier()
    if len(classes) > 1 and counts.min() >= 2 and len(labels) >= 4 * len(classes):
        fit_x, test_x, fit_y, test_y = train_test_split(
            small, labels, test_size=0.25, stratify=labels, random_state=seed)
        accuracy = float(judge.fit(fit_x, fit_y).score(test_x, test_y))
    else:  # too few images to hold some out: fitted on all of them, not scored
        judge.fit(small, labels)
        accuracy = float("nan")
    return RealImages(mean_image=mean_image, total_variation=tv, judge=judge,
                      judge_size=judge_size, judge_accuracy=accuracy, judge_classes=classes)


def label_judge(small: np.ndarray, labels: np.ndarray, seed: int) -> tuple[object, float]:
    """One balanced logistic regression per label (scikit-learn's one-vs-rest on multi-hot
    rows), fitted on 75% of the thumbnails; its held-out balanced accuracy, averaged over the
    labels that have both answers among the held-out images (NaN when none has, or when too
    few images to hold some out: then fitted on all of them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.multiclass import OneVsRestClassifier

    judge = OneVsRestClassifier(LogisticRegression(max_iter=2000, class_weight="balanced"))
    if len(labels) < 8:
        return judge.fit(small, labels), float("nan")
    fit_x, test_x, fit_y, test_y = train_test_split(small, labels, test_size=0.25,
                                                    random_state=seed)
    judge.fit(fit_x, fit_y)
    said = judge.predict(test_x)
    scores = [balanced_accuracy_score(test_y[:, k], said[:, k]) for k in range(labels.shape[1])
              if 0 < test_y[:, k].sum() < len(test_y)]
    return judge, float(np.mean(scores)) if scores else float("nan")
