"""Layers whose relevance flows through one factor, the other held constant.

    Multiply             a gated product ``signal * gate`` (squeeze-excitation in MobileNetV3
                         and EfficientNet, GLU-style gates): the signal takes all the relevance,
                         the gate none, as Arras et al. (2017, "Explaining Recurrent Neural
                         Network Predictions in Sentiment Analysis", the LSTM's gates) propose.
                         The gate is the operand that comes from a sigmoid, or from operations
                         LRP does not cover (MobileNetV3's hard sigmoid is ``relu6(x + 3) / 6``
                         written as raw ops), or the smaller one under broadcasting.
    LayerNormalization   ``(x - mean) / std``, with the normaliser ``std`` held constant (Ali et
                         al. 2022, "XAI for Transformers: Better Explanations through
                         Conservative Propagation", the LN-rule): what remains is linear, and
                         relevance passes through it as LRP-0 (gradient times input).
    RmsNorm2d            keras-hub MobileNetV5's ``x / rms(x)`` over channels, its ``rms`` held
                         constant likewise (the LN-rule without the mean).
    MultiHeadAttention   the attention weights held constant (Ali et al. 2022, the AH-rule):
                         relevance flows through the values, none through queries and keys
                         (and none through a gated attention's gate).

In each, holding a factor constant is ``tf.stop_gradient`` on it in the modified forward pass.
"""

from __future__ import annotations

import math

from auditor.errors import AuditorError

GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "hard_silu_gate")


def is_gate_activation(op) -> bool:
    return getattr(getattr(op, "activation", None), "__name__", "") in GATE_ACTIVATIONS


def _size(tensor) -> int:
    return math.prod(d or 1 for d in tensor.shape[1:])


def gated_product(op, operands: list, is_gate) -> object:
    """``signal * const(gates)``: ``is_gate(tensor)`` says which operands are gates."""
    import tensorflow as tf

    signals = [t for t in operands if not is_gate(t)]
    if len(signals) > 1:  # the broadcast operand is the gate (squeeze-excitation's (1, 1, C))
        largest = max(_size(t) for t in signals)
        signals = [t for t in signals if _size(t) == largest]
    if len(signals) != 1:
        raise AuditorError(f"LRP cannot tell the gate from the signal in layer '{op.name}' "
                           f"(Multiply); use a gradient-based method for this model")
    signal = signals[0]
    out = signal
    for t in operands:
        if t is not signal:
            out = out * tf.stop_gradient(t)
    return out


def layer_norm(layer, x):
    """Keras' LayerNormalization with the normaliser held constant."""
    import tensorflow as tf

    axes = [a % len(x.shape) for a in (layer.axis if isinstance(layer.axis, list | tuple)
                                       else [layer.axis])]
    shape = [x.shape[a] if a in axes else 1 for a in range(len(x.shape))]
    if getattr(layer, "rms_scaling", False):
        inv = tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=axes, keepdims=True)
                            + layer.epsilon)
        y = x * tf.stop_gradient(inv)
    else:
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        inv = tf.math.rsqrt(tf.reduce_mean(tf.square(x - mean), axis=axes, keepdims=True)
                            + layer.epsilon)
        y = (x - mean) * tf.stop_gradient(inv)
    if layer.scale:
        y = y * tf.reshape(layer.gamma, shape[1:])
    if layer.center and not getattr(layer, "rms_scaling", False):
        y = y + tf.reshape(layer.beta, shape[1:])
    return y


def rms_norm(layer, x):
    """keras-hub's RmsNorm2d with the normaliser held constant."""
    import tensorflow as tf

    axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
    inv = tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=axis, keepdims=True) + layer.eps)
    gamma = layer.gamma if axis == -1 else tf.reshape(layer.gamma, (-1, 1, 1))
    return x * tf.stop_gradient(inv) * gamma


def attention(layer, *args, **kwargs):
    """Keras' MultiHeadAttention with the attention weights held constant (Ali et al. 2022,
    the AH-rule): relevance flows through the value and output projections only (LRP-0 on
    those linear maps), none through the queries and keys that only set the weights.

    The layer runs its own public ``call``, its query and key projections (and the sigmoid gate
    of a gated attention, held as any gate is) made constant while it runs
    (``layers.edited_calls``, as rollout reads the weights): weights from constant queries and
    keys are constant. It is asked for its weights (``return_attention_scores``), so that it
    computes them as an explicit softmax rather than in a fused kernel, and gives its caller
    what it asked for."""
    import tensorflow as tf

    from auditor.inputs.layers import edited_calls, sub_layers
    from auditor.methods.attribution.tokens import asking_for_scores, gives_scores

    held = [layer.query_dense, layer.key_dense,
            *(sub for sub in sub_layers(layer) if sub.name == "gate")]
    ask = gives_scores(layer)
    if ask:
        args, kwargs, asked = asking_for_scores(layer, args, kwargs)
    with edited_calls(held, lambda sub, y, *_: tf.stop_gradient(y)):
        output = layer(*args, **kwargs)
    return output[0] if ask and not asked else output
