"""How an image is represented while it is optimised (after Lucid's ``param``).

A parameterisation maps an array of parameter values, one row per image, to display-space
images in [0, 1], and back. It holds no variables: the render loop carries the values (and the
optimiser's moments) as plain tensors, so that one compiled loop serves every request of a model
and a batch splits across replicas like any other. Plain pixels follow the gradient wherever it
points, which favours high-frequency patterns; the Fourier parameterisation scales every
frequency by 1/f (natural images have that spectrum), so that equal steps in every parameter give
an image whose energy sits at low frequencies, and it decorrelates colour the way Lucid does, so
steps move brightness and colour separately.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import ConfigError

PARAMETERISATIONS = ("fourier", "pixels")
VALID_RANGES = ("sigmoid", "clip")
# Lucid's square root of the colour covariance of ImageNet, normalised by its largest column.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_DECORRELATION = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
_EDGE = 0.02  # display values kept this far from 0 and 1 when inverting the sigmoid


def _logit(images):
    import tensorflow as tf

    images = tf.clip_by_value(tf.convert_to_tensor(images, tf.float32), _EDGE, 1 - _EDGE)
    return tf.math.log(images) - tf.math.log1p(-images)


class Pixels:
    """One value per pixel, kept in [0, 1] by clipping after each step or by a sigmoid."""

    def __init__(self, image_shape: tuple[int, int, int], valid: str = "sigmoid"):
        if valid not in VALID_RANGES:
            raise ConfigError(f"unknown valid range '{valid}'; use one of: "
                              f"{', '.join(VALID_RANGES)}")
        self.valid = valid
        self.value_shape = tuple(image_shape)
        self.key = ("pixels", self.value_shape, valid)

    def images(self, values):
        import tensorflow as tf

        return tf.sigmoid(values) if self.valid == "sigmoid" else tf.convert_to_tensor(values)

    def project(self, values):
        """Clip back into [0, 1] after an optimiser step (nothing to do behind a sigmoid)."""
        import tensorflow as tf

        return tf.clip_by_value(values, 0.0, 1.0) if self.valid == "clip" else values

    def values_of(self, images):
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        return _logit(images) if self.valid == "sigmoid" else tf.clip_by_value(images, 0.0, 1.0)


class Fourier:
    """Images as 1/f-scaled spectra, colour decorrelated (RGB), squashed by a sigmoid."""

    def __init__(self, image_shape: tuple[int, int, int], decay_power: float = 1.0,
                 decorrelate: bool = True):
        height, width, channels = image_shape
        freqs = np.sqrt(np.fft.fftfreq(height)[:, None] ** 2 + np.fft.rfftfreq(width)[None] ** 2)
        scale = np.maximum(freqs, 1.0 / max(height, width)) ** -decay_power
        self.scale = (scale * np.sqrt(height * width)).astype(np.float32)
        self.size = (height, width)
        self.decorrelate = decorrelate and channels == 3
        self.value_shape = (2, channels, *freqs.shape)  # real and imaginary parts per channel
        self.key = ("fourier", tuple(image_shape), float(decay_power), self.decorrelate)

    def images(self, values):
        import tensorflow as tf

        values = tf.convert_to_tensor(values, tf.float32)
        spectrum = tf.complex(values[:, 0] * self.scale, values[:, 1] * self.scale)
        signal = tf.signal.irfft2d(spectrum, fft_length=self.size)
        signal = tf.transpose(signal, (0, 2, 3, 1)) / 4.0  # Lucid's constant: a gentle start
        if self.decorrelate:
            signal = tf.einsum("nhwc,dc->nhwd", signal, COLOR_DECORRELATION)
        return tf.sigmoid(signal)

    def project(self, values):
        """Every spectrum gives a valid image: nothing to do."""
        return values

    def values_of(self, images):
        """The exact spectrum of given images (inverse of ``images``), e.g. to start from data."""
        import tensorflow as tf

        signal = _logit(images)
        if self.decorrelate:
            signal = tf.einsum("nhwd,cd->nhwc", signal,
                               np.linalg.inv(COLOR_DECORRELATION).astype(np.float32))
        spectrum = tf.signal.rfft2d(tf.transpose(signal * 4.0, (0, 3, 1, 2)),
                                    fft_length=self.size)
        spectrum = spectrum / tf.cast(self.scale, tf.complex64)
        return tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)], axis=1)


def make_param(kind: str, image_shape: tuple[int, int, int], *, valid: str = "sigmoid",
               decay_power: float = 1.0, decorrelate: bool = True):
    """A parameterisation by the name the spec uses."""
    if kind == "fourier":
        return Fourier(image_shape, decay_power=decay_power, decorrelate=decorrelate)
    if kind == "pixels":
        return Pixels(image_shape, valid=valid)
    raise ConfigError(f"unknown parameterisation '{kind}'; use one of: "
                      f"{', '.join(PARAMETERISATIONS)}")
