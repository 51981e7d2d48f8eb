"""What to maximise: small objectives that add, subtract and scale like numbers (after Lucid).

An objective maps the render state to one score per image, so that one batch can hold a
different target in every image: ``class_logit([0, 1, 2]) - 0.05 * total_variation()``.
The state is a dict with ``"image"`` (the display-space images before transforms),
``"logits"`` and one entry per hidden layer that some objective asked for.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

CLASS_OBJECTIVES = ("logit", "probability", "log_probability")


class Objective:
    """A per-image score to maximise, with the hidden layers it reads."""

    __array_ufunc__ = None  # ``weights_array * objective`` comes here, not to numpy

    def __init__(self, fn: Callable, name: str, layers: Sequence[str] = ()):
        self.fn = fn
        self.name = name
        self.layers = tuple(dict.fromkeys(layers))

    def __call__(self, state: dict):
        return self.fn(state)

    def __add__(self, other):
        other = as_objective(other)
        return Objective(lambda s: self(s) + other(s), f"{self.name} + {other.name}",
                         self.layers + other.layers)

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
            return Objective(lambda s: self(s) * factor(s), f"({self.name}) * ({factor.name})",
                             self.layers + factor.layers)
        if isinstance(factor, numbers.Real):
            return Objective(lambda s: float(factor) * self(s), f"{factor:g} * {self.name}",
                             self.layers)
        import tensorflow as tf

        weights = tf.constant(list(factor), tf.float32)
        return Objective(lambda s: weights * self(s), f"w * {self.name}", self.layers)

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name})"


def as_objective(value) -> Objective:
    """Numbers become constant objectives, so that ``objective + 1`` works."""
    if isinstance(value, Objective):
        return value
    import tensorflow as tf

    return Objective(lambda s: tf.fill(tf.shape(s["image"])[:1], float(value)), f"{value:g}")


def _per_image(targets):
    import tensorflow as tf

    return tf.constant(list(targets), tf.int32)


def class_logit(targets: Sequence[int]) -> Objective:
    """The logit of ``targets[i]`` in image i (Simonyan et al. 2013)."""
    import tensorflow as tf

    index = _per_image(targets)
    return Objective(lambda s: tf.gather(s["logits"], index, batch_dims=1), "logit")


def class_probability(targets: Sequence[int]) -> Objective:
    """The softmax probability of ``targets[i]``: other classes must lose for it to rise."""
    import tensorflow as tf

    index = _per_image(targets)
    return Objective(lambda s: tf.gather(tf.nn.softmax(s["logits"]), index, batch_dims=1),
                     "probability")


def class_log_probability(targets: Sequence[int]) -> Objective:
    """The log-softmax of ``targets[i]``: like the probability, but it never saturates."""
    import tensorflow as tf

    index = _per_image(targets)
    return Objective(lambda s: tf.gather(tf.nn.log_softmax(s["logits"]), index, batch_dims=1),
                     "log-probability")


def class_objective(kind: str, targets: Sequence[int]) -> Objective:
    """One of CLASS_OBJECTIVES by name, as the spec names it."""
    makers = {"logit": class_logit, "probability": class_probability,
              "log_probability": class_log_probability}
    if kind not in makers:
        from auditor.errors import ConfigError

        raise ConfigError(f"unknown class objective '{kind}'; use one of: "
                          f"{', '.join(CLASS_OBJECTIVES)}")
    return makers[kind](targets)


def channel(layer: str, channels: Sequence[int]) -> Objective:
    """The mean activation of channel ``channels[i]`` of ``layer`` in image i."""
    import tensorflow as tf

    index = _per_image(channels)

    def mean_activation(s):
        acts = s[layer]
        spatial = tf.reduce_mean(acts, axis=list(range(1, len(acts.shape) - 1)))
        return tf.gather(spatial, index, batch_dims=1)

    return Objective(mean_activation, f"{layer}:channel", layers=[layer])


def l2(center: float = 0.0) -> Objective:
    """Mean squared distance of the pixels from ``center`` (the L2 decay of Simonyan et al.)."""
    import tensorflow as tf

    return Objective(lambda s: tf.reduce_mean(tf.square(s["image"] - center), axis=[1, 2, 3]),
                     "L2")


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels: high for noise, low for shapes."""
    return Objective(lambda s: image_total_variation(s["image"]), "TV")


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
