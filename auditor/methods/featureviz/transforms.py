"""Random transforms applied before the model sees the image (Lucid's transformation robustness).

An image that still excites the model after a random shift, zoom and tilt cannot rely on one
exact arrangement of pixels, so the optimiser stops painting adversarial high-frequency noise.
Each transform is a small function ``(images, rng) -> images`` of the same shape, drawing one
random setting per image from ``rng`` (a ``tf.random.Generator``, or anything with its
``uniform``); ``compose`` chains a list. Each transform carries a ``key`` (its kind and
settings), by which the render loop knows it has already compiled a step for that chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Transform = Callable  # (images (N, H, W, C), tf.random.Generator) -> images


def _warp(images, matrices):
    """Resample each image through its own (N, 3, 3) affine map from output to input pixels;
    the images keep their static shape (the op forgets it, and a layer that reads its input's
    shape in Python, as keras-hub's MiT patch embedding does, fails on an unknown one)."""
    import tensorflow as tf

    flat = tf.reshape(matrices, (-1, 9))[:, :8]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return tf.ensure_shape(warped, images.shape)


def _affine(sample, key: tuple) -> Transform:
    """A geometric transform from ``sample(images, rng) -> (N, 3, 3)`` matrices.

    ``compose`` multiplies the matrices of consecutive geometric transforms, so that a chain of
    shift, zoom and tilt costs one resampling (and one blur from interpolation), not four.
    """

    def apply(images, rng):
        return _warp(images, sample(images, rng))

    apply.sample = sample
    apply.key = key
    return apply


def _matrices(rows):
    """(N, 3, 3) from nine per-image entries in row-major order."""
    import tensorflow as tf

    return tf.reshape(tf.stack(rows, axis=1), (-1, 3, 3))


def jitter(pixels: float) -> Transform:
    """Shift each image by up to ``pixels`` in x and y."""
    import tensorflow as tf

    def sample(images, rng):
        n = tf.shape(images)[0]
        dx, dy = (rng.uniform([n], -pixels, pixels) for _ in range(2))
        one, zero = tf.ones([n]), tf.zeros([n])
        return _matrices([one, zero, dx, zero, one, dy, zero, zero, one])

    return _affine(sample, ("jitter", float(pixels)))


def _about_centre(images, angle, zoom):
    """Matrices that rotate by ``angle`` (radians) and zoom by ``zoom`` about the centre."""
    import tensorflow as tf

    cy = (tf.cast(tf.shape(images)[1], tf.float32) - 1) / 2
    cx = (tf.cast(tf.shape(images)[2], tf.float32) - 1) / 2
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # input = centre + R(-angle) / zoom * (output - centre)
    one, zero = tf.ones_like(angle), tf.zeros_like(angle)
    return _matrices([cos, sin, cx - cos * cx - sin * cy,
                      -sin, cos, cy + sin * cx - cos * cy,
                      zero, zero, one])


def scale(amount: float) -> Transform:
    """Zoom each image by a factor drawn from [1 - amount, 1 + amount]."""
    import tensorflow as tf

    def sample(images, rng):
        n = tf.shape(images)[0]
        return _about_centre(images, tf.zeros([n]), rng.uniform([n], 1 - amount, 1 + amount))

    return _affine(sample, ("scale", float(amount)))


def rotate(degrees: float) -> Transform:
    """Rotate each image by an angle drawn from [-degrees, degrees]."""
    import tensorflow as tf

    limit = math.radians(degrees)

    def sample(images, rng):
        n = tf.shape(images)[0]
        return _about_centre(images, rng.uniform([n], -limit, limit), tf.ones([n]))

    return _affine(sample, ("rotate", float(degrees)))


def gaussian_blur(images, sigma: float):
    """Blur each channel with a Gaussian of ``sigma`` pixels (edges reflected)."""
    import numpy as np
    import tensorflow as tf

    radius = max(1, int(math.ceil(2 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = tf.constant(taps / taps.sum(), tf.float32)
    channels = images.shape[-1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.tile(tf.reshape(taps, (-1, 1, 1, 1)), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(taps, (1, -1, 1, 1)), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "VALID")


def blur(sigma: float) -> Transform:
    """Gaussian blur as a transform (the loop also blurs the image itself every few steps)."""
    def apply(images, rng):
        return gaussian_blur(images, sigma)

    apply.key = ("blur", float(sigma))
    return apply


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply transforms in order; consecutive geometric ones are fused into one resampling."""

    def apply(images, rng):
        pending = None  # product of the geometric maps not applied yet (output -> input)
        for transform in transforms:
            sample = getattr(transform, "sample", None)
            if sample is not None:
                matrices = sample(images, rng)
                pending = matrices if pending is None else pending @ matrices
                continue
            if pending is not None:
                images, pending = _warp(images, pending), None
            images = transform(images, rng)
        return images if pending is None else _warp(images, pending)

    # a transform without a key (one a caller wrote) is known only by its identity
    apply.key = tuple(getattr(t, "key", ("id", id(t))) for t in transforms)
    return apply


def standard_transforms(size: int, jitter_pixels: float | None = None,
                        scale_amount: float | None = None,
                        rotate_degrees: float | None = None) -> list[Transform]:
    """Lucid's recipe sized to the input: jitter, zoom, tilt, and a finer jitter.

    At 224 px this is close to Lucid's defaults (jitter 8 px, zoom 5%, tilt 10 degrees);
    small inputs get jitter in proportion but more zoom, since a pixel there is a stroke.
    """
    jitter_pixels = max(1.0, size / 28) if jitter_pixels is None else jitter_pixels
    scale_amount = (0.1 if size < 64 else 0.05) if scale_amount is None else scale_amount
    rotate_degrees = 10.0 if rotate_degrees is None else rotate_degrees
    chosen = []
    if jitter_pixels > 0:
        chosen.append(jitter(jitter_pixels))
    if scale_amount > 0:
        chosen.append(scale(scale_amount))
    if rotate_degrees > 0:
        chosen.append(rotate(rotate_degrees))
    if jitter_pixels > 0:
        chosen.append(jitter(max(0.5, jitter_pixels / 2)))
    return chosen
