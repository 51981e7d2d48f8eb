"""How an image batch is represented while it is optimised (after Lucid's ``param``).

A parameterisation owns trainable variables and maps them to display-space images in [0, 1].
Plain pixels follow the gradient wherever it points, which favours high-frequency patterns;
the Fourier parameterisation scales every frequency by 1/f (natural images have that spectrum),
so that equal steps in every parameter give an image whose energy sits at low frequencies, and
it decorrelates colour the way Lucid does, so steps move brightness and colour separately.
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
    """One variable per pixel, kept in [0, 1] by clipping after each step or by a sigmoid."""

    def __init__(self, shape: tuple[int, int, int, int], valid: str = "sigmoid"):
        import tensorflow as tf

        if valid not in VALID_RANGES:
            raise ConfigError(f"unknown valid range '{valid}'; use one of: "
                              f"{', '.join(VALID_RANGES)}")
        self.valid = valid
        self.pixels = tf.Variable(tf.zeros(shape), name="pixels")
        self.variables = [self.pixels]

    def __call__(self):
        import tensorflow as tf

        return tf.sigmoid(self.pixels) if self.valid == "sigmoid" else self.pixels

    def project(self) -> None:
        """Clip back into [0, 1] after an optimiser step (a no-op behind a sigmoid)."""
        import tensorflow as tf

        if self.valid == "clip":
            self.pixels.assign(tf.clip_by_value(self.pixels, 0.0, 1.0))

    def set_images(self, images) -> None:
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        self.pixels.assign(_logit(images) if self.valid == "sigmoid"
                           else tf.clip_by_value(images, 0.0, 1.0))


class Fourier:
    """Images as 1/f-scaled spectra, colour decorrelated (RGB), squashed by a sigmoid."""

    def __init__(self, shape: tuple[int, int, int, int], decay_power: float = 1.0,
                 decorrelate: bool = True):
        import tensorflow as tf

        batch, height, width, channels = shape
        freqs = np.sqrt(np.fft.fftfreq(height)[:, None] ** 2 + np.fft.rfftfreq(width)[None] ** 2)
        scale = np.maximum(freqs, 1.0 / max(height, width)) ** -decay_power
        self.scale = tf.constant(scale * np.sqrt(height * width), tf.float32)
        self.size = (height, width)
        self.decorrelate = decorrelate and channels == 3
        self.spectrum = tf.Variable(tf.zeros((2, batch, channels, *freqs.shape)), name="spectrum")
        self.variables = [self.spectrum]

    def __call__(self):
        import tensorflow as tf

        spectrum = tf.complex(self.spectrum[0] * self.scale, self.spectrum[1] * self.scale)
        signal = tf.signal.irfft2d(spectrum, fft_length=self.size)
        signal = tf.transpose(signal, (0, 2, 3, 1)) / 4.0  # Lucid's constant: a gentle start
        if self.decorrelate:
            signal = tf.einsum("nhwc,dc->nhwd", signal, COLOR_DECORRELATION)
        return tf.sigmoid(signal)

    def project(self) -> None:
        """Every spectrum gives a valid image: nothing to do."""
        return None

    def set_images(self, images) -> None:
        """The exact spectrum of given images (inverse of ``__call__``), e.g. to start from data."""
        import tensorflow as tf

        signal = _logit(images)
        if self.decorrelate:
            signal = tf.einsum("nhwd,cd->nhwc", signal,
                               np.linalg.inv(COLOR_DECORRELATION).astype(np.float32))
        spectrum = tf.signal.rfft2d(tf.transpose(signal * 4.0, (0, 3, 1, 2)),
                                    fft_length=self.size)
        scale = tf.cast(self.scale, tf.complex64)
        spectrum = spectrum / scale
        self.spectrum.assign(tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)]))


def make_param(kind: str, shape: tuple[int, int, int, int], *, valid: str = "sigmoid",
               decay_power: float = 1.0, decorrelate: bool = True):
    """A parameterisation by the name the spec uses."""
    if kind == "fourier":
        return Fourier(shape, decay_power=decay_power, decorrelate=decorrelate)
    if kind == "pixels":
        return Pixels(shape, valid=valid)
    raise ConfigError(f"unknown parameterisation '{kind}'; use one of: "
                      f"{', '.join(PARAMETERISATIONS)}")
