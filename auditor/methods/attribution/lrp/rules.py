"""LRP rules as modified forward passes (the "gradient trick", Montavon et al. 2019, sec. 10.2.2).

A linear layer ``z = f(a, W, b)`` keeps its forward value ``z``, but its gradient is routed
through the rule's modified pre-activation ``z_m = f_m(a)``, scaled by ``z / stab(z_m)``: the
gradient that reaches ``a`` is ``W_m^T (c * z / z_m)``, so relevance ``R = a * gradient`` is
propagated by the rule's modified weights ``W_m`` in the same backward pass that autodiff takes
anyway (one custom gradient, a multiplication, per layer). Every rule is called with
``(apply, a, kernel, bias, nonneg, rectified)`` (``nonneg``: the walk knows ``a >= 0``, e.g.
after a ReLU; ``rectified``: a ReLU follows, so only ``z > 0`` matters) and returns
``(z, z_m, eps)``: ``z_m`` None for "z itself", else a list of ``(weight, z_m, sign)`` with the
sign of ``z_m`` when the rule knows it (alpha-beta's parts, z-box's) or 0; ``linear_output``
joins them.

Stabiliser as in Zennit, ``z + eps * sign(z)`` with sign(0) = +1, but with ``eps`` relative:
each rule's epsilon is multiplied by the root mean square of the layer's pre-activations ``z``,
per image (``relative``), as in Montavon et al.'s LRP tutorial (heatmapping.org, "epsilon =
0.25 std"). An absolute epsilon swamps every layer of a model whose activations are small (an
untrained MobileNetV2's logits are near 1e-12, and its maps came out all zero); a relative one
leaves the maps unchanged when a layer's weights are scaled. The ratio is cheap where the
sign is known: ``|z| / (|z| + eps)`` for epsilon (z's own), ``z / (z_m +- eps)`` for a part of
known sign. Of unknown sign (gamma), ``z_m + eps * sign(z_m)`` with 0 where ``z_m`` is exactly
0, which differs from Zennit only there (where Zennit gives ``z / eps``). These ratios are
elementwise passes over every layer's output, the main cost beyond the gradient's, so the
fewer the better (a select per layer cost about a quarter of a gradient pass on the digits CNN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

STABILISER = 1e-6  # Zennit's default for the gamma, alpha-beta and z-box rules (relative here)
TINY = float(np.finfo(np.float32).tiny)  # keeps 0 / eps at 0 on a layer whose z are all 0


def relative(z, eps: float, scaled: bool = True):
    """``eps`` times the root mean square of each image's pre-activations ``z`` (shaped to
    broadcast against ``z``), plus ``TINY``; 0 when ``eps`` is 0 (LRP-0). ``scaled`` False:
    ``eps`` itself, absolute as in Zennit (kept to compare with it)."""
    import tensorflow as tf

    if not eps or not scaled:
        return eps
    axes = list(range(1, z.shape.rank))
    size = tf.sqrt(tf.reduce_mean(tf.square(tf.stop_gradient(z)), axis=axes, keepdims=True))
    return eps * size + TINY
ABOVE_Z = 2  # a z_m's "sign": z_m >= z, so z_m > 0 wherever z > 0 (gamma on inputs >= 0)


def ratio(z, zm, eps, sign: int = 0, rectified: bool = False):
    """``z / stab(z_m)`` (see the module's docstring); ``rectified``: ``z`` is a ReLU's output,
    so only where it is > 0 matters."""
    import tensorflow as tf

    if sign == ABOVE_Z:
        if not rectified:
            sign = 0
        else:  # z_m > 0 wherever z > 0; 0 elsewhere, whatever z_m is there
            return tf.math.divide_no_nan(z, zm + eps)
    if sign:
        return z / (zm + sign * eps)
    return tf.math.divide_no_nan(z, zm + eps * tf.sign(zm))


def _pos(w):
    import tensorflow as tf

    return None if w is None else tf.nn.relu(w)


def _neg(w):
    import tensorflow as tf

    return None if w is None else tf.minimum(w, 0.0)


def linear_output(z, zm, eps: float, y=None, scaled: bool = True):
    """``z`` in the forward pass; backward, the incoming gradient times ``z / stab(z_m)`` goes
    into ``z_m`` (into ``z`` itself when ``zm`` is None; untouched when eps is 0 there). The
    stabiliser is ``eps`` relative to ``z`` (``relative``; absolute when not ``scaled``).

    ``y``: a ReLU or ReLU6 of ``z`` that passes relevance on unchanged. Then ``y`` is the
    output, and the ratio is ``y / stab(z_m)``: the Pass rule's ``y / z`` times the layer's
    ``z / stab(z_m)``, and 0 where ``z <= 0`` as the ReLU's gradient would make it. Exact, and
    no ReLU gradient or Pass ratio of its own."""
    import tensorflow as tf

    if zm is None and not eps and y is None:
        return z
    stab = relative(z, eps, scaled)
    if zm is None:

        @tf.custom_gradient
        def scaled(value):
            def backward(c):
                if y is not None:  # z > 0 wherever y > 0
                    return c * tf.math.divide_no_nan(y, value + stab)
                size = tf.abs(value)
                return c * size / (size + stab)  # = z / (z + eps sign z), 0 at z = 0

            return tf.identity(value if y is None else y), backward

        return scaled(z)
    value = z if y is None else y

    weights = [w for w, _, _ in zm]
    signs = [sign for _, _, sign in zm]

    @tf.custom_gradient
    def routed(value, *modified):
        def backward(c):
            scaled = [c * ratio(value, m, stab, sign, y is not None)
                      for m, sign in zip(modified, signs, strict=True)]
            return (None, *(g if w == 1 else w * g for w, g in zip(weights, scaled, strict=True)))

        return tf.identity(value), backward

    return routed(tf.stop_gradient(value), *(m for _, m, _ in zm))


@dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon (Bach et al. 2015): W_m = W, stabiliser epsilon absorbs weak relevance.
    epsilon = 0 is LRP-0, which equals gradient x input on a ReLU network."""

    epsilon: float = 1e-6

    def __call__(self, apply: Callable, a, kernel, bias, nonneg=False, rectified=False):
        return apply(a, kernel, bias), None, self.epsilon


@dataclass(frozen=True)
class Gamma:
    """LRP-gamma (Montavon et al. 2019): contributions of the output's sign favoured by gamma;
    suited to convolutions.

    W + gamma W+ (bias likewise) lets z_m cross zero where z does not: on a signed input (after
    swish, GELU or a normalisation) |z / z_m| reached 1e4 on 1-2 % of the units of every
    convolution of EfficientNetV2B0, and compounded over 90 layers the maps summed to 1e8 times
    the logit, then overflowed; on a non-negative input read by a layer no ReLU follows (a
    MobileNetV2 linear bottleneck, the last convolution of a ResNet block before its sum) a
    negative z met a z_m near zero, and the maps of a bias-free MobileNetV2 summed to -4 to -8
    times the logit. So the contributions that share z's sign are favoured, as in Zennit's
    Gamma: z_m = z + gamma (P + b+) where z > 0 and z + gamma (N + b-) elsewhere, with
    P = W+ a+ + W- a- (the positive contributions; W+ a on a non-negative input) and
    N = W a - P, so z_m has z's sign and |z / z_m| <= 1. Where z > 0 that is W a + gamma W+ a,
    the textbook rule on a non-negative input, the only part a following ReLU keeps: a layer a
    ReLU follows (``rectified``) takes the textbook form, one convolution and one backward."""

    gamma: float = 0.25

    def __call__(self, apply, a, kernel, bias, nonneg=False, rectified=False):
        import tensorflow as tf

        z = apply(a, kernel, bias)
        if nonneg and rectified:
            zm = apply(a, kernel + self.gamma * _pos(kernel),
                       None if bias is None else bias + self.gamma * _pos(bias))
            return z, [(1.0, zm, ABOVE_Z)], STABILISER  # z_m - z = gamma z+
        if nonneg:
            positive = apply(a, _pos(kernel), None)
        else:
            positive = apply(_pos(a), _pos(kernel), None) + apply(_neg(a), _neg(kernel), None)
        linear = z if bias is None else z - bias
        up = positive if bias is None else positive + _pos(bias)
        down = linear - positive if bias is None else linear - positive + _neg(bias)
        zm = z + self.gamma * tf.where(z > 0, up, down)
        return z, [(1.0, zm, ABOVE_Z if nonneg else 0)], STABILISER  # z_m > 0 where z > 0


@dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta (Bach et al. 2015): positive and negative contributions propagated apart,
    weighted alpha and -beta (alpha - beta = 1). Inputs are split by sign as in Zennit; on an
    input known to be non-negative (after a ReLU) its negative part is zero, so the convolutions
    of it are dropped: exact, and half the work."""

    alpha: float = 1.0
    beta: float = 0.0

    def __call__(self, apply, a, kernel, bias, nonneg=False, rectified=False):
        z = apply(a, kernel, bias)
        kp, kn = _pos(kernel), _neg(kernel)
        ap, an = (a, None) if nonneg else (_pos(a), _neg(a))
        positive = _sum(apply(ap, kp, _pos(bias)), an, lambda: apply(an, kn, None))  # >= 0
        if not self.beta:
            return z, [(1.0, positive, 1)], STABILISER
        negative = _sum(apply(ap, kn, _neg(bias)), an, lambda: apply(an, kp, None))  # <= 0
        return z, [(self.alpha, positive, 1), (-self.beta, negative, -1)], STABILISER


def _sum(part, negative_input, other):
    """``part`` plus the negative input's share, when the input has a negative part."""
    return part if negative_input is None else part + other()


@dataclass(frozen=True)
class ZBox:
    """The z^B rule for the first layer (Montavon et al. 2017): inputs bounded by ``low`` and
    ``high``; relevance ``a * g_a + low * g_low + high * g_high``, so low and high are
    inputs of the modified pass too (the walker watches them). The bias takes no relevance:
    ``z_m = W a - W+ low - W- high``, as in Montavon's tutorial code and Zennit's ``ZBox``.
    Where the layer mixes channels (``stacked``: a Dense or a full convolution), the three terms
    are one convolution of ``[a, low, high]`` stacked on the channel axis with
    ``[W, -W+, -W-]``: one forward and one backward op instead of three each."""

    low: object
    high: object
    stacked: bool = False

    def __call__(self, apply, a, kernel, bias, nonneg=False, rectified=False):
        import tensorflow as tf

        z = apply(a, kernel, bias)
        if self.stacked:
            zm = apply(tf.concat([a, self.low, self.high], axis=-1),
                       tf.concat([kernel, -_pos(kernel), -_neg(kernel)], axis=-2), None)
        else:
            zm = (apply(a, kernel, None) - apply(self.low, _pos(kernel), None)
                  - apply(self.high, _neg(kernel), None))
        return z, [(1.0, zm, 0)], STABILISER  # >= 0 only while low <= a <= high


@dataclass(frozen=True)
class Composite:
    """Which rule each layer gets: dense layers, convolutions, and the first layer (``zbox`` or
    ``None`` for the layer's own rule); ``relative``: stabilisers scaled to each layer's
    pre-activations (``relative``), else absolute as in Zennit."""

    dense: Callable
    conv: Callable
    first: str | None = None
    relative: bool = True
