"""One streaming prediction pass over the dataset, shared by every section."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.errors import DataError, ModelError
from auditor.progress import track


@dataclass
class Predictions:
    """Per-sample logits and labels: the compact record the whole audit works from."""

    logits: np.ndarray  # (N, classes) float32
    labels: np.ndarray  # (N,) int64

    @property
    def probs(self) -> np.ndarray:
        shifted = self.logits - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class."""
        return self.probs.max(axis=1)

    @property
    def correct(self) -> np.ndarray:
        return self.preds == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.labels) else float("nan")


def predict(handle, dataset, batch_size: int = 64, show_progress: bool = False) -> Predictions:
    """Logits for every sample, a batch at a time; non-finite inputs or outputs are errors."""
    fn = handle.logits_fn
    chunks = []
    batches = track(dataset.batches(batch_size), length=-(-dataset.n // batch_size),
                    label="predicting", enabled=show_progress)
    for images, _, positions in batches:
        if not np.isfinite(images).all():
            raise DataError(f"dataset '{dataset.source}' has NaN or infinite pixel values near "
                            f"sample {int(positions[0])}; clean or drop those images")
        logits = np.asarray(fn(images), dtype=np.float32)
        if not np.isfinite(logits).all():
            raise ModelError(f"model '{handle.path}' produced NaN or infinite outputs; check its "
                             "weights and the input_range it expects")
        chunks.append(logits)
    return Predictions(logits=np.concatenate(chunks), labels=dataset.labels.copy())
