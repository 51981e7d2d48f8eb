"""The dataset images that excite each channel of a layer most, found in one streaming pass.

A visualised channel is easier to read next to the real images it responds to (Olah et al.
2017, "dataset examples"). Only a bounded top-k per channel is kept while the dataset streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ChannelExamples:
    """Per channel of one layer: its mean activation over the data and its top-k images."""

    layer: str
    mean_activation: np.ndarray  # (channels,) over all images
    std_activation: np.ndarray  # (channels,) its spread across images
    top_values: np.ndarray  # (channels, k) spatial-mean activation, highest first
    top_positions: np.ndarray  # (channels, k) dataset positions of those images


def merge_top_k(values: np.ndarray, positions: np.ndarray, new_values: np.ndarray,
                new_positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the k highest of (channels, m) old and (channels, b) new values, highest first."""
    values = np.concatenate([values, new_values], axis=1)
    positions = np.concatenate([positions, new_positions], axis=1)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(values, order, 1), np.take_along_axis(positions, order, 1)


def top_activating(handle, dataset, layer: str, k: int = 6,
                   batch_size: int = 64) -> ChannelExamples:
    """Stream the dataset through ``layer`` and keep each channel's k most activating images;
    each batch is split across the replicas of the handle's strategy."""
    import tensorflow as tf

    from auditor.inputs.layers import activation_model
    from auditor.predict.batched import rows_per_pass
    from auditor.predict.distribute import run_batch

    key = ("featureviz.channel_means", layer)
    if key not in handle.compiled:
        activation = activation_model(handle, layer)

        # one trace whatever the batch: the last, smaller batch of the data traced it again
        @tf.function(autograph=False,  # straight-line code: as render.py's loop
                     input_signature=[tf.TensorSpec([None, *handle.input_shape], tf.float32)])
        def channel_means(images):
            acts = activation(images)
            return tf.reduce_mean(acts, axis=list(range(1, len(acts.shape) - 1)))

        handle.compiled[key] = channel_means
    channel_means = handle.compiled[key]
    values = positions = total = squares = None
    batch_size = min(batch_size, rows_per_pass(handle, backward=False))  # the memory budget
    for images, _, batch_positions in dataset.batches(batch_size):
        means = run_batch(handle, channel_means, images).astype(np.float64).T  # (ch, batch)
        if values is None:
            values, positions = np.zeros((len(means), 0)), np.zeros((len(means), 0), int)
            total, squares = np.zeros(len(means)), np.zeros(len(means))
        total += means.sum(axis=1)
        squares += (means ** 2).sum(axis=1)
        tiled = np.broadcast_to(batch_positions, means.shape)
        values, positions = merge_top_k(values, positions, means, tiled, k)
    mean = total / dataset.n
    return ChannelExamples(layer=layer, mean_activation=mean,
                           std_activation=np.sqrt(np.maximum(squares / dataset.n - mean ** 2, 0)),
                           top_values=values, top_positions=positions)
