"""The embedded demo: a small CNN trained on scikit-learn's digits, cached after the first run.

Nothing is downloaded: the digits ship with scikit-learn. The model is trained on the fixed train
split (``sklearn:digits:train``) and audited on the test split, upsampled to 32x32 grey.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DEMO_SIZE = 32
DEMO_VERSION = 1


def demo_spec_path() -> Path:
    """audits/digits.toml: the demo's spec, shipped with the package so `auditor demo` and
    `auditor audit audits/digits.toml` run the same audit."""
    from auditor.resources import resource_dir

    return resource_dir("audits") / "digits.toml"


def cache_dir() -> Path:
    """Where trained demo models live: $AUDITOR_CACHE, else the user's cache folder."""
    root = os.environ.get("AUDITOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "auditor")
    return Path(root)


def digits_images(split: str = "train", size: int = DEMO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Digits of one split as (N, size, size, 1) float32 in [0, 1], and their labels."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from auditor.inputs.datasets import digits_split

    digits = load_digits()
    train, test = digits_split(digits.target)
    index = {"train": train, "test": test, "all": np.arange(len(digits.target))}[split]
    x = (digits.images[index] / 16.0).astype(np.float32)[..., None]
    x = tf.image.resize(x, (size, size), antialias=True).numpy().clip(0, 1)
    return x, digits.target[index].astype(np.int64)


def build_digits_cnn(size: int = DEMO_SIZE, channels: int = 1, classes: int = 10):
    """A small CNN ending in softmax (as most saved classifiers do)."""
    import keras

    return keras.Sequential([
        keras.Input((size, size, channels)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(name="pool1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(name="pool2"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dropout(0.3, name="dropout"),
        keras.layers.Dense(64, activation="relu", name="features"),
        keras.layers.Dense(classes, activation="softmax", name="predictions"),
    ], name="digits_cnn")


def train_digits_cnn(x: np.ndarray, y: np.ndarray, seed: int = 0, epochs: int = 12):
    """Train the demo architecture on (x, y), deterministically for a given seed."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_digits_cnn(size=x.shape[1], channels=x.shape[-1], classes=int(y.max()) + 1)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
    return model


def demo_model_path(seed: int = 0) -> Path:
    """The cached demo model, trained now if it is not there yet (a few seconds)."""
    path = cache_dir() / f"digits-cnn-v{DEMO_VERSION}-seed{seed}.keras"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y = digits_images("train")
    model = train_digits_cnn(x, y, seed=seed)
    partial = path.with_suffix(f".{os.getpid()}.keras")
    model.save(partial)
    os.replace(partial, path)
    return path
