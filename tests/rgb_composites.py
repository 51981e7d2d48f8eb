"""RGB test data and models for Clever Hans: digits coloured and composited on photo crops.

Shared by tests/test_clever_hans.py and bench/clever_hans.py (which puts tests/ on its path). A
digit's grey level is its opacity: each is painted in a random bright colour over a random
crop of one of scikit-learn's sample photos (china, flower), dimmed so that the digit stands
out, at 32 x 32 pixels. Nothing is downloaded. The models are small and seeded, trained in
seconds on the composites of the digits train split.
"""

from __future__ import annotations

import numpy as np

SIZE = 32
DIM = 0.45  # photo crops are scaled into [0, DIM]; digits are painted at full brightness


def composites(split: str = "train", seed: int = 0, copies: int = 1,
               size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) float32 in [0, 1] and labels: each digit of ``split`` ``copies``
    times, each time on another crop and in another colour."""
    import cv2
    from matplotlib.colors import hsv_to_rgb
    from sklearn.datasets import load_sample_image

    from auditor.inputs.demo import digits_images

    digits, labels = digits_images(split, size)
    photos = [load_sample_image(f"{n}.jpg").astype(np.float32) / 255.0
              for n in ("china", "flower")]
    rng = np.random.default_rng(seed)
    out = np.empty((copies * len(digits), size, size, 3), np.float32)
    for i in range(len(out)):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(64, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side))
        left = int(rng.integers(0, photo.shape[1] - side))
        crop = cv2.resize(photo[top:top + side, left:left + side], (size, size),
                          interpolation=cv2.INTER_AREA) * DIM
        colour = hsv_to_rgb([rng.uniform(), rng.uniform(0.6, 1.0), 1.0]).astype(np.float32)
        alpha = digits[i % len(digits)]
        out[i] = crop * (1 - alpha) + colour * alpha
    return out, np.tile(labels, copies)


def rgb_cnn(seed: int = 0):
    """The RGB twin of the demo CNN (three conv blocks, softmax head)."""
    import keras

    from auditor.inputs.demo import build_digits_cnn

    keras.utils.set_random_seed(seed)
    return build_digits_cnn(SIZE, channels=3)


def rgb_resnet(seed: int = 1):
    """Another architecture: strided convolutions with batch normalisation, a residual block and
    global average pooling (keras.applications' MobileNetV2 at 32 px, width 0.35, stayed at
    chance after 12 epochs here: its batch-norm statistics, momentum 0.999, lag far behind)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)

    def conv(x, filters, stride=1):
        x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    inputs = keras.Input((SIZE, SIZE, 3))
    x = conv(conv(inputs, 24), 48, stride=2)
    x = layers.Add()([x, conv(conv(x, 48), 48)])
    x = conv(x, 96, stride=2)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x), name="rgb_resnet")


def train_rgb(model, path, epochs: int = 12, seed: int = 0) -> str:
    """Fit ``model`` on two composites of every training digit and save it to ``path``."""
    import keras

    x, y = composites("train", seed=seed, copies=2)
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    model.save(path)
    return str(path)
