"""What to maximise: small objectives that add, subtract and scale like numbers (after Lucid).

An objective maps the render state to one score per image, so that one batch can hold a
different target in every image: ``class_logit([0, 1, 2]) - 0.05 * total_variation()``.
The state is a dict with ``"image"`` (the display-space images before transforms),
``"logits"`` and ``"layers"``: one entry per hidden layer that some objective asked for, by
layer name (apart, since a layer may be named "logits": MobileNetV3's last convolution is).

What differs from image to image (targets, channels, weights) is not baked into the objective
but held in ``arrays``, one row per image, and handed to it at every call: the render loop
passes them as inputs, so one compiled loop serves every objective of the same form (``key``),
and a batch splits across replicas with its rows.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Callable, Sequence

import numpy as np

CLASS_OBJECTIVES = ("logit", "probability", "log_probability")


class Objective:
    """A per-image score to maximise, with the hidden layers it reads and its per-image arrays.

    ``fn(state, arrays)`` computes the score from the state and this objective's arrays (in the
    order of ``arrays``); ``key`` names its form, everything but the arrays' values.
    """

    __array_ufunc__ = None  # ``weights_array * objective`` comes here, not to numpy

    def __init__(self, fn: Callable, name: str, layers: Sequence[str] = (),
                 arrays: Sequence[np.ndarray] = (), key: str | None = None):
        self.fn = fn
        self.name = name
        self.layers = tuple(dict.fromkeys(layers))
        self.arrays = tuple(np.asarray(a) for a in arrays)
        self.key = key or name

    def __call__(self, state: dict, arrays=None):
        return self.fn(state, self.arrays if arrays is None else arrays)

    def _join(self, other: Objective, combine: Callable, name: str, key: str) -> Objective:
        """Both objectives on the same state, their scores combined; each reads its own arrays."""
        split = len(self.arrays)
        return Objective(lambda s, a: combine(self(s, a[:split]), other(s, a[split:])), name,
                         self.layers + other.layers, self.arrays + other.arrays, key)

    def __add__(self, other):
        other = as_objective(other)
        return self._join(other, lambda a, b: a + b, f"{self.name} + {other.name}",
                          f"({self.key} + {other.key})")

    __radd__ = __add__

    def __neg__(self):
        return -1.0 * self

    def __sub__(self, other):
        return self + (-as_objective(other))

    def __rsub__(self, other):
        return as_objective(other) + (-self)

    def __mul__(self, factor):
        """Scale by a number, by one weight per image (a sequence), or by another objective."""
        if isinstance(factor, Objective):
            return self._join(factor, lambda a, b: a * b, f"({self.name}) * ({factor.name})",
                              f"({self.key} * {factor.key})")
        if isinstance(factor, numbers.Real):
            return Objective(lambda s, a: float(factor) * self(s, a), f"{factor:g} * {self.name}",
                             self.layers, self.arrays, f"{factor!r} * {self.key}")
        weights = np.asarray(list(factor), np.float32)
        return Objective(lambda s, a: a[0] * self(s, a[1:]), f"w * {self.name}", self.layers,
                         (weights, *self.arrays), f"w * {self.key}")

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def as_objective(value) -> Objective:
    """Numbers become constant objectives, so that ``objective + 1`` works."""
    if isinstance(value, Objective):
        return value
    import tensorflow as tf

    return Objective(lambda s, a: tf.fill(tf.shape(s["image"])[:1], float(value)), f"{value:g}",
                     key=repr(float(value)))


def _per_image(targets) -> tuple[np.ndarray]:
    return (np.asarray(list(targets), np.int32),)


def class_logit(targets: Sequence[int]) -> Objective:
    """The logit of ``targets[i]`` in image i (Simonyan et al. 2013)."""
    import tensorflow as tf

    return Objective(lambda s, a: tf.gather(s["logits"], a[0], batch_dims=1), "logit",
                     arrays=_per_image(targets))


def class_probability(targets: Sequence[int]) -> Objective:
    """The softmax probability of ``targets[i]``: other classes must lose for it to rise."""
    import tensorflow as tf

    return Objective(lambda s, a: tf.gather(tf.nn.softmax(s["logits"]), a[0], batch_dims=1),
                     "probability", arrays=_per_image(targets))


def class_log_probability(targets: Sequence[int]) -> Objective:
    """The log-softmax of ``targets[i]``: like the probability, but it never saturates."""
    import tensorflow as tf

    return Objective(lambda s, a: tf.gather(tf.nn.log_softmax(s["logits"]), a[0], batch_dims=1),
                     "log-probability", arrays=_per_image(targets))


def class_objective(kind: str, targets: Sequence[int]) -> Objective:
    """One of CLASS_OBJECTIVES by name, as the spec names it."""
    makers = {"logit": class_logit, "probability": class_probability,
              "log_probability": class_log_probability}
    if kind not in makers:
        from auditor.errors import ConfigError

        raise ConfigError(f"unknown class objective '{kind}'; use one of: "
                          f"{', '.join(CLASS_OBJECTIVES)}")
    return makers[kind](targets)


def label_probability(targets: Sequence[int]) -> Objective:
    """The sigmoid of label ``targets[i]`` of a multi-label model: its own probability, which
    no other label's needs to lose for (they are independent), and which saturates."""
    import tensorflow as tf

    return Objective(lambda s, a: tf.sigmoid(tf.gather(s["logits"], a[0], batch_dims=1)),
                     "sigmoid", arrays=_per_image(targets))


def label_log_probability(targets: Sequence[int]) -> Objective:
    """The log-sigmoid of label ``targets[i]``: like its probability, but it never saturates."""
    import tensorflow as tf

    return Objective(
        lambda s, a: tf.math.log_sigmoid(tf.gather(s["logits"], a[0], batch_dims=1)),
        "log-sigmoid", arrays=_per_image(targets))


def label_objective(kind: str, targets: Sequence[int]) -> Objective:
    """A multi-label model's objective by the spec's name: its label's logit, or that label's
    own sigmoid (``probability``) or log-sigmoid, never a softmax over labels that are not
    exclusive."""
    if kind == "logit":
        return class_logit(targets)
    makers = {"probability": label_probability, "log_probability": label_log_probability}
    if kind not in makers:
        return class_objective(kind, targets)  # the one line naming the allowed kinds
    return makers[kind](targets)


def channel(layer: str, channels: Sequence[int]) -> Objective:
    """The mean activation of channel ``channels[i]`` of ``layer`` in image i."""
    import tensorflow as tf

    def mean_activation(s, a):
        acts = s["layers"][layer]
        spatial = tf.reduce_mean(acts, axis=list(range(1, len(acts.shape) - 1)))
        return tf.gather(spatial, a[0], batch_dims=1)

    return Objective(mean_activation, f"{layer}:channel", layers=[layer],
                     arrays=_per_image(channels), key=f"channel({layer!r})")


def l2(center: float = 0.0) -> Objective:
    """Mean squared distance of the pixels from ``center`` (the L2 decay of Simonyan et al.)."""
    import tensorflow as tf

    center = np.asarray(center, np.float32)  # one value, or an image shared by every image
    digest = hashlib.sha1(center.tobytes() + str(center.shape).encode()).hexdigest()[:12]
    return Objective(lambda s, a: tf.reduce_mean(tf.square(s["image"] - center),
                                                 axis=[1, 2, 3]), "L2", key=f"L2({digest})")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels: high for noise, low for shapes."""
    return Objective(lambda s, a: image_total_variation(s["image"]), "TV")


def image_total_variation(images, total: bool = False):
    """Per-image total variation of a (N, H, W, C) tensor or array: the absolute differences
    between neighbouring pixels (down plus right), averaged per pixel and channel, or summed
    with ``total`` (the counterfactual's penalty).

    The same figure serves as a penalty (tf) and as the natural-statistics measure (numpy).
    """
    import tensorflow as tf

    reduce = tf.reduce_sum if total else tf.reduce_mean
    images = tf.convert_to_tensor(images, tf.float32)
    down = reduce(tf.abs(images[:, 1:] - images[:, :-1]), axis=[1, 2, 3])
    right = reduce(tf.abs(images[:, :, 1:] - images[:, :, :-1]), axis=[1, 2, 3])
    return down + right


def direction(layer: str, directions) -> Objective:
    """The mean over positions of ``layer``'s activation along ``directions[i]`` (a vector of
    the layer's channels) in image i: what a neuron group looks for (Olah et al. 2018)."""
    import tensorflow as tf

    def along(s, a):
        acts = s["layers"][layer]
        spatial = tf.reduce_mean(acts, axis=list(range(1, len(acts.shape) - 1)))
        return tf.reduce_sum(spatial * a[0], axis=-1)

    return Objective(along, f"{layer}:direction", layers=[layer],
                     arrays=(np.asarray(directions, np.float32),), key=f"direction({layer!r})")
