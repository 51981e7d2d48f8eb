"""Linear views of Keras layers, with BatchNormalization folded into the layer before it.

LRP rules act on ``z = f(a, W, b)``. A convolution followed by BatchNormalization is one affine
map, and LRP is only well defined on it as one ("canonization", Guillemot et al. 2020; Zennit's
``SequentialMergeBatchNorm``): the folded kernel is ``W * s`` and the bias ``b * s + shift`` with
``s = gamma / sqrt(var + eps)`` and ``shift = beta - mean * s``. Folding is done with tensor ops
on the layers' variables inside the traced pass, so a copy whose weights are re-drawn (the sanity
check) is folded anew without retracing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from auditor.errors import AuditorError


@dataclass(frozen=True)
class Step:
    """One linear map: ``apply(a, kernel, bias)``, its kernel and bias (None for no bias),
    ``kind`` ('dense' or 'conv') choosing the composite's rule, and ``mixes_channels`` (every
    output reads every input channel, so inputs may be stacked on the channel axis)."""

    apply: Callable
    kernel: object
    bias: object
    kind: str
    mixes_channels: bool = False


def linear_types():
    import keras
    from keras.src.layers.convolutional.base_conv import BaseConv
    from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
    from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
    from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv

    return keras.layers.Dense, BaseConv | BaseConvTranspose, BaseDepthwiseConv, BaseSeparableConv


def is_linear_layer(layer) -> bool:
    return isinstance(layer, linear_types())


def has_activation(layer) -> bool:
    import keras

    act = getattr(layer, "activation", None)
    return act is not None and act is not keras.activations.linear


def _add_bias(z, bias):
    return z if bias is None else z + bias


def _check_layout(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise AuditorError(f"LRP supports channels_last layers only; layer '{layer.name}' is "
                           f"{layer.data_format}")
    if getattr(layer, "padding", "valid") == "causal":
        raise AuditorError(f"LRP does not support causal padding (layer '{layer.name}')")


def _steps(layer) -> list[Step]:
    from keras import ops

    dense, conv, depthwise, separable = linear_types()
    bias = layer.bias if getattr(layer, "use_bias", False) else None
    if isinstance(layer, dense):
        return [Step(lambda a, k, b: _add_bias(ops.matmul(a, k), b), layer.kernel, bias, "dense",
                     True)]
    _check_layout(layer)
    geometry = {"strides": layer.strides, "padding": layer.padding,
                "dilation_rate": layer.dilation_rate, "data_format": "channels_last"}
    if isinstance(layer, separable):
        return [Step(lambda a, k, b: ops.depthwise_conv(a, k, **geometry),
                     layer.depthwise_kernel, None, "conv"),
                Step(lambda a, k, b: _add_bias(ops.conv(a, k, padding="valid"), b),
                     layer.pointwise_kernel, bias, "conv", True)]
    if isinstance(layer, depthwise):
        return [Step(lambda a, k, b: _add_bias(ops.depthwise_conv(a, k, **geometry), b),
                     layer.kernel, bias, "conv")]
    if isinstance(layer, _transposed()):  # linear in a like any convolution: the same rules
        transposed = geometry | {"output_padding": layer.output_padding}
        return [Step(lambda a, k, b: _add_bias(ops.conv_transpose(a, k, **transposed), b),
                     layer.kernel, bias, "conv", True)]
    if isinstance(layer, conv):
        return [Step(lambda a, k, b: _add_bias(layer.convolution_op(a, k), b), layer.kernel,
                     bias, "conv", getattr(layer, "groups", 1) == 1)]
    raise AuditorError(f"LRP cannot propagate through layer '{layer.name}' "
                       f"({type(layer).__name__})")


def _transposed():
    import keras

    L = keras.layers
    return L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose


def batchnorm_affine(bn):
    """(scale, shift) of an inference-mode BatchNormalization, per channel."""
    from keras import ops

    scale = ops.rsqrt(bn.moving_variance + bn.epsilon)
    if bn.scale:
        scale = scale * bn.gamma
    shift = -bn.moving_mean * scale
    if bn.center:
        shift = shift + bn.beta
    return scale, shift


def linear_steps(layer, bn=None) -> list[Step]:
    """The layer's linear steps, the last one with ``bn`` (a BatchNormalization after it)
    folded in."""
    from keras import ops

    steps = _steps(layer)
    if bn is None:
        return steps
    last = steps[-1]
    scale, shift = batchnorm_affine(bn)
    # a depthwise kernel is (h, w, in, multiplier); output channel i * multiplier + m
    kernel_scale = scale
    if _is_depthwise(layer):
        kernel_scale = ops.reshape(scale, last.kernel.shape[-2:])
    elif isinstance(layer, _transposed()):  # a transposed kernel is (..., out, in)
        kernel_scale = ops.reshape(scale, (-1, 1))
    bias = shift if last.bias is None else last.bias * scale + shift
    return steps[:-1] + [Step(last.apply, last.kernel * kernel_scale, bias, last.kind,
                              last.mixes_channels)]


def _is_depthwise(layer) -> bool:
    _, _, depthwise, _ = linear_types()
    return isinstance(layer, depthwise)


def fold_plan(graph) -> dict[int, object]:
    """{id(linear layer): the BatchNormalization it absorbs} for every BatchNormalization on the
    last axis whose only input is a linear layer without activation that feeds nothing else."""
    import keras

    folds = {}
    for op in graph.operations:
        if not isinstance(op, keras.layers.BatchNormalization) or len(op._inbound_nodes) != 1:
            continue
        inputs = op._inbound_nodes[0].input_tensors
        if len(inputs) != 1 or op.axis not in (-1, len(inputs[0].shape) - 1):
            continue
        producer = inputs[0]._keras_history.operation
        if (is_linear_layer(producer) and not has_activation(producer)
                and len(producer._outbound_nodes) == 1):
            folds[id(producer)] = op
    return folds


def is_rectifier(op) -> bool:
    """A ReLU or ReLU6 (any cap): ``y >= 0``, ``y = 0`` exactly where ``z <= 0``, so relevance
    passed through it unchanged (Zennit's ``Pass``) joins the linear rule before it as one
    ratio ``y / stab(z_m)`` (see ``rules.linear_output``)."""
    import keras

    if isinstance(op, keras.layers.ReLU):
        return not op.negative_slope and not op.threshold
    if isinstance(op, keras.layers.Activation) or is_linear_layer(op):
        return getattr(getattr(op, "activation", None), "__name__", "") in ("relu", "relu6")
    return False


def _only_consumer(layer):
    """The one operation reading ``layer``'s output, or None."""
    nodes = layer._outbound_nodes
    return nodes[0].operation if len(nodes) == 1 else None


def activation_plan(graph, folds: dict) -> dict[int, object]:
    """{id(linear layer): the ReLU/ReLU6 layer right after it (or after the BatchNormalization
    folded into it)}, when nothing else reads what lies between: the walk applies it inside the
    linear layer, which saves two elementwise passes per layer."""
    plan = {}
    for op in graph.operations:
        if not is_linear_layer(op) or has_activation(op):
            continue
        after = _only_consumer(op)
        if after is not None and after is folds.get(id(op)):
            after = _only_consumer(after)
        if (after is not None and not is_linear_layer(after) and is_rectifier(after)
                and len(after._inbound_nodes) == 1):
            plan[id(op)] = after
    return plan
