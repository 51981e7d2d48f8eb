"""The attribution registry and ``attribute``: every method behind one batched call.

A method is a function ``(handle, x, targets, contrast, score, **options) -> maps`` for one
chunk of samples; ``attribute`` validates, chunks to a memory budget, and concatenates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from auditor.errors import AuditorError

SCORES = ("logit", "softmax", "log_softmax")
# Floats of activations kept alive per chunk; sized so that a 224 px MobileNetV2 fits easily.
DEFAULT_MEMORY_BUDGET = 2_000_000_000


@dataclass
class Method:
    name: str
    description: str
    fn: Callable
    options: dict[str, tuple[object, str]] = field(default_factory=dict)  # name: (default, help)
    cost: int = 1  # forward-backward passes per sample with default options


METHODS: dict[str, Method] = {}


def register(name: str, description: str, options: dict[str, tuple[object, str]] | None = None,
             cost: int = 1):
    """Decorator that adds a method to the registry under ``name``."""

    def add(fn: Callable) -> Callable:
        METHODS[name] = Method(name, description, fn, options or {}, cost)
        return fn

    return add


def score_function(handle, score: str):
    """Per-sample scalar scores of the target class, minus the contrast class where given."""
    import tensorflow as tf

    if score not in SCORES:
        raise AuditorError(f"unknown score '{score}'; use one of: {', '.join(SCORES)}")

    def scores(x, targets, contrast):
        logits = handle.logits(x)
        if score == "softmax":
            values = tf.nn.softmax(logits)
        elif score == "log_softmax":
            values = tf.nn.log_softmax(logits)
        else:
            values = logits
        picked = tf.gather(values, targets, batch_dims=1)
        has_contrast = tf.cast(contrast >= 0, values.dtype)  # -1: no contrast class
        return picked - tf.gather(values, tf.maximum(contrast, 0), batch_dims=1) * has_contrast

    return scores


def chunk_size(x_shape: tuple[int, ...], cost: int, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Samples per chunk so that ``cost`` copies of each sample's activations fit the budget."""
    per_sample = int(np.prod(x_shape[1:])) * 64 * max(cost, 1)  # ~64x the input in activations
    return int(max(1, min(256, budget // (4 * per_sample))))


def attribute(handle, x, targets, method: str = "gradient", *, contrast=None,
              score: str = "logit", batch_size: int | None = None, **options) -> np.ndarray:
    """Attribution maps with the shape of ``x``, one target class per sample.

    ``contrast`` (optional, one class per sample, -1 for none) explains target minus contrast in
    the same backward pass. ``score`` is 'logit' (default), 'softmax' or 'log_softmax'.
    """
    if method not in METHODS:
        raise AuditorError(f"unknown attribution method '{method}'; choose from: "
                           f"{', '.join(sorted(METHODS))} (see 'auditor methods')")
    entry = METHODS[method]
    unknown = set(options) - set(entry.options)
    if unknown:
        raise AuditorError(f"method '{method}' has no option '{sorted(unknown)[0]}'; it takes: "
                           f"{', '.join(entry.options) or 'no options'}")
    x = np.asarray(x, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int32).reshape(-1)
    if len(targets) != len(x):
        raise AuditorError(f"attribute got {len(x)} images but {len(targets)} targets; give one "
                           "target class per image")
    contrast = (np.full_like(targets, -1) if contrast is None
                else np.asarray(contrast, dtype=np.int32).reshape(-1))
    merged = {k: v[0] for k, v in entry.options.items()} | options
    size = batch_size or chunk_size(x.shape, entry.cost)
    maps = [entry.fn(handle, x[i:i + size], targets[i:i + size], contrast[i:i + size],
                     score, **merged)
            for i in range(0, len(x), size)]
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros_like(x)
