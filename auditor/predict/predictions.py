"""One streaming prediction pass over the dataset, shared by every section.

Only the logits of each image are kept (plus its label and its penultimate features, which the
same pass computes): images stream through a batch at a time and are re-read from the source when
a section needs a few of them for figures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from auditor.errors import ModelError
from auditor.predict.distribute import run_batch
from auditor.progress import track

SOFTMAX_CHUNK_ROWS = 4096  # rows of logits turned into probabilities at once


@dataclass
class Predictions:
    """Per-sample logits and labels: the compact record the whole audit works from.

    ``preds`` and ``confidence`` are computed once, a chunk of rows at a time, so that asking
    for them never holds a second copy of the (N, classes) array; ``probs`` builds the full
    table on each call, so prefer ``probs_at(positions)`` for a few samples.

    A multi-label model's (``thresholds`` set, one per label): ``labels`` and ``preds`` are
    multi-hot rows (N, labels), ``probs`` each label's sigmoid, a label is predicted when its
    sigmoid reaches its threshold, and an image is ``correct`` when its whole label set is.
    """

    logits: np.ndarray  # (N, classes) float32
    labels: np.ndarray  # (N,) int64; multi-label: (N, labels) int8 of 0s and 1s
    features: np.ndarray | None = None  # (N, D) penultimate features, from the same pass
    thresholds: np.ndarray | None = None  # (labels,) for a multi-label model, else None

    @property
    def multilabel(self) -> bool:
        return self.thresholds is not None

    @property
    def probs(self) -> np.ndarray:
        return sigmoid(self.logits) if self.multilabel else softmax(self.logits)

    def probs_at(self, positions) -> np.ndarray:
        """Class probabilities of the samples at ``positions`` only."""
        rows = self.logits[np.asarray(positions, dtype=int)]
        return sigmoid(rows) if self.multilabel else softmax(rows)

    @functools.cached_property
    def preds(self) -> np.ndarray:
        if self.multilabel:  # sigmoid(z) >= t exactly when z >= logit(t)
            cut = np.log(self.thresholds) - np.log1p(-self.thresholds)
            return (self.logits >= cut).astype(np.int8)
        return self.logits.argmax(axis=1)

    @functools.cached_property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class; multi-label: the mean over the labels of the
        probability of each label's decision (p when predicted, 1 - p when not)."""
        confidence = np.empty(len(self.logits), np.float32)
        for i in range(0, len(self.logits), SOFTMAX_CHUNK_ROWS):
            rows = self.logits[i:i + SOFTMAX_CHUNK_ROWS]
            if self.multilabel:
                p = sigmoid(rows)
                confidence[i:i + SOFTMAX_CHUNK_ROWS] = np.where(
                    self.preds[i:i + SOFTMAX_CHUNK_ROWS] == 1, p, 1 - p).mean(axis=1)
            else:
                confidence[i:i + SOFTMAX_CHUNK_ROWS] = softmax(rows).max(axis=1)
        return confidence

    @property
    def correct(self) -> np.ndarray:
        if self.multilabel:
            return (self.preds == self.labels).all(axis=1)
        return self.preds == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.labels) else float("nan")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, np.float64)))  # no overflow


def label_thresholds(threshold: float | list[float] | None, labels: int) -> np.ndarray:
    """A multi-label model's threshold per label from the spec's ``threshold`` (validated as
    probabilities by the config): None is 0.5, one number holds for every label, a list must
    give one per label."""
    from auditor.errors import ConfigError

    if isinstance(threshold, list):
        if len(threshold) != labels:
            raise ConfigError(f"'threshold' lists {len(threshold)} values, but the model has "
                              f"{labels} sigmoid outputs; give one number or one per label")
        return np.asarray(threshold, np.float64)
    return np.full(labels, 0.5 if threshold is None else float(threshold))


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def predict(handle, dataset, batch_size: int = 64, show_progress: bool = False,
            threshold: float | list[float] | None = None, clock=None,
            known: tuple | None = None) -> Predictions:
    """Logits for every sample, a batch at a time, and in the same pass the penultimate features
    (the input of the final layer) when the model can be split there; non-finite inputs (found
    while streaming) or outputs are errors. Batches are at most ``batch_size`` and at most
    what the memory budget allows this model (a 224 px network takes fewer). A multi-label
    model's predictions carry its thresholds (``label_thresholds`` of the spec's
    ``threshold``). ``clock`` (predict/plan.py ``PassClock``) times the first batches' calls,
    which the compute plan then reads instead of timing forward calls of its own. ``known``:
    (positions, rows) of this pass already computed (the input-range probe's, under the range
    chosen: predict/input_range.py ``ProbeResult.known``), taken as they are."""
    from auditor.predict.batched import blocks, rows_per_pass

    batch_size = min(batch_size, rows_per_pass(handle, backward=False))
    fn, width = pass_function(handle)
    logits = np.empty((dataset.n, handle.num_classes), np.float32)
    features = np.empty((dataset.n, width), np.float32) if width else None
    done = np.zeros(dataset.n, bool)
    if known is not None:
        _kept(handle, known[1], known[0], logits, features)
        done[known[0]] = True
    batches = track(dataset.tensor_batches(batch_size), length=-(-dataset.n // batch_size),
                    label="predicting", enabled=show_progress)
    calls = _Calls(blocks(int((~done).sum()), batch_size), handle, fn, clock)
    for images, _, positions in batches:  # every image read: each is checked finite there
        left = np.flatnonzero(~done[positions])
        if len(left):
            calls.add(images if len(left) == len(positions) else _rows_of(images, left),
                      positions[left], logits, features)
    thresholds = (label_thresholds(threshold, handle.num_classes)
                  if getattr(handle, "multilabel", False) else None)
    return Predictions(logits=logits, labels=dataset.labels.copy(), features=features,
                       thresholds=thresholds)


class _Calls:
    """The pass's calls over the images left to run, in the near-equal blocks ``sizes``
    (batched.py ``blocks``): rows are gathered across the dataset's batches until a block is
    full, so that the probe's images, left out here, leave no batch of odd size (a new batch
    shape compiles a model's XLA-compiled layers again: ConvNeXt's grouped convolutions did,
    before they ran depthwise, inputs/depthwise.py)."""

    def __init__(self, sizes: list[slice], handle, fn, clock):
        self.sizes = [part.stop - part.start for part in sizes]
        self.handle, self.fn, self.clock = handle, fn, clock
        self.images, self.positions = [], []

    def add(self, images, positions, logits, features) -> None:
        import tensorflow as tf

        self.images.append(images)
        self.positions.append(positions)
        while self.sizes and sum(len(p) for p in self.positions) >= self.sizes[0]:
            size = self.sizes.pop(0)
            pooled = tf.concat(self.images, 0) if len(self.images) > 1 else self.images[0]
            where = np.concatenate(self.positions)
            self.images = [pooled[size:]] if len(where) > size else []
            self.positions = [where[size:]] if len(where) > size else []
            batch = (run_batch(self.handle, self.fn, pooled[:size]) if self.clock is None
                     else self.clock(run_batch, size, self.handle, self.fn, pooled[:size]))
            _kept(self.handle, batch, where[:size], logits, features)


def _kept(handle, batch: np.ndarray, positions, logits: np.ndarray, features) -> None:
    """A batch of the forward pass's rows into ``logits`` and ``features`` at ``positions``;
    non-finite logits are the model's error."""
    if not np.isfinite(batch[:, :handle.num_classes]).all():
        raise ModelError(f"model '{handle.path}' produced NaN or infinite outputs; check its "
                         "weights and the input_range it expects")
    logits[positions] = batch[:, :handle.num_classes]
    if features is not None:
        features[positions] = batch[:, handle.num_classes:]


def _rows_of(images, rows: np.ndarray):
    import tensorflow as tf

    return tf.gather(images, rows)


def logits_and_features(handle, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The logits and the penultimate features (None when the model cannot be split) of
    display-space images in memory, in one memory-budgeted pass."""
    from auditor.predict.batched import chunked, rows_per_pass

    if not len(images):
        return np.zeros((0, handle.num_classes), np.float32), None
    fn, width = pass_function(handle)
    both = chunked(handle, fn, np.asarray(images, np.float32),
                   rows=rows_per_pass(handle, backward=False))
    return both[:, :handle.num_classes], (both[:, handle.num_classes:] if width else None)


def pass_function(handle):
    """(fn, feature width): ``fn`` maps a batch to its logits and, after them in the same row,
    its flattened penultimate features, in one pass of one model with two outputs (so that
    the features cost no second pass); width 0 and plain logits when the model cannot be split
    before its final layer (a subclassed model, a SavedModel wrapper). The handle's one forward
    pass (``ModelHandle.forward_pass``): the model's logits are its first columns, so it is
    traced once for the prediction pass and every later forward pass, for the model and its
    working copy together (inputs/traces.py: the Clever Hans search on a fine-tuned copy calls
    the prediction pass's trace)."""
    return handle.forward_pass


def penultimate_features(handle, source, batch_size: int = 64) -> np.ndarray | None:
    """The input of the model's final layer for every image of ``source``: a dataset, streamed
    a batch at a time, or display-space images already in memory (e.g. the held-out images of a
    fine-tuned copy). None when the model cannot be split there (a subclassed model, a
    SavedModel wrapper). Compiled once per model, like the logits (run eagerly it costs twice
    the prediction pass), and each batch split across the replicas. Batches are at most
    what the memory budget allows a forward pass (256 images at once took MobileNetV2 224 px
    from 2.9 to 5.7 GB of resident memory)."""
    import tensorflow as tf

    from auditor.inputs.layers import final_layer_input
    from auditor.predict.batched import rows_per_pass

    batch_size = min(batch_size, rows_per_pass(handle, backward=False))

    if "final_layer_input" not in handle.compiled:
        fn = final_layer_input(handle)
        handle.compiled["final_layer_input"] = (None if fn is None
                                                else tf.function(fn, reduce_retracing=True))
    fn = handle.compiled["final_layer_input"]
    if fn is None:
        return None
    rows = []
    for images, _, _ in _batches(source, batch_size):
        batch = run_batch(handle, fn, images)
        rows.append(batch.reshape(len(batch), -1).astype(np.float32))
    return np.concatenate(rows) if rows else None


def _batches(source, batch_size: int):
    """(images, labels or None, positions) of a dataset's tensor batches or an array's rows."""
    if not isinstance(source, np.ndarray):
        yield from source.tensor_batches(batch_size)
        return
    for start in range(0, len(source), batch_size):
        part = np.asarray(source[start:start + batch_size], np.float32)
        yield part, None, np.arange(start, start + len(part))
