"""Custom layers LRP walks into: their own ``call`` runs with every sub-layer it reads swapped
for that sub-layer's LRP counterpart.

That is right only for a layer whose ``call`` does nothing else than call its sub-layers and
apply linear operations to their outputs and its own constants: sums, concatenations, slices,
reshapes, transposes, rolls, padding, tiling, means and average pooling, products with a
weight. A linear map without a bias passes relevance by contribution through its gradient
(``R_x = x * A^T c`` sums to ``c^T A x``), as ``layers.Add`` does, and a constant added
absorbs its share, as a bias does. So the layers are listed by class, each read for that
(keras-hub 0.32):

    ViT          patch embedding (the conv rule, z-box on the pixels; a class token concatenated
                 and a position embedding added: constants), encoder, block (LayerNormalization,
                 MultiHeadAttention, residual sums), MLP (Dense with GELU)
    DeiT         the same, with a distillation token and an encoder returning a tuple
    MiT          overlapping patch embedding (padding, conv, reshape, LayerNormalization),
                 encoder block (residual sums), DropPath (the identity at inference), and
                 SegFormerMultiheadAttention with its queries and keys held constant (below);
                 MixFFN's raw ``ops.nn.gelu`` is not a sub-layer: its rule is ``mix_ffn``
    Swin         patch embedding, stage, block (a roll, window partition and reverse: index
                 moves), patch merging (strided slices, concatenation, LayerNormalization,
                 Dense), Mlp (its activation is a function attribute, swapped for the pass
                 rule), DropPath, and WindowAttention with its queries and keys held constant
    EfficientNet fused, unfused and conv-BN-activation blocks (squeeze-excitation's
                 ``layers.multiply`` is built inside ``call``: its sigmoid gate is held constant)
    MobileNet    depthwise, inverted-residual and conv-BN-activation blocks, squeeze-excitation
                 (``inputs * gate``: the hard-sigmoid gate held constant)
    MobileNetV5  ConvNormAct, the universal inverted-residual and edge-residual blocks,
                 LayerScale2d (a product with a weight), DropPath, SEModule, the head's pooling;
                 RmsNorm2d's raw normaliser is not a sub-layer: its rule is ``rms_norm``
                 (``constant.py``); MobileAttention (a position depthwise convolution added,
                 norm, attention, LayerScale2d, the residual), MultiQueryAttention2d with
                 its query and key chains (pooling or strided depthwise convolution, norm,
                 1x1 convolution: lists of sub-layers) held constant (below), its values
                 through their chain, the output projection, and Attention2d ("mha": one
                 1x1 convolution ``qkv`` whose channel thirds are the queries, keys and
                 values, the first two held constant; the output projection; its Dropout
                 layers, the identity at inference); CondConvResidual mixes its
                 experts' kernels per image in raw ops: its rule is ``condconv.py``
    HGNetV2      embeddings, encoder (a tuple of stage outputs), stage, basic layer, conv
                 layers, learnable affine block (a weight times the input plus a bias)

Inside a walked layer every gate (the output of a sigmoid or hard sigmoid, ``constant.py``) is
held constant, so its product with the signal, written as ``*`` or as a layer made inside
``call``, passes all relevance to the signal (Arras et al. 2017), as ``layers.Multiply`` does.
In the four attention classes whose weights are computed in raw ops, the queries and keys
are held constant where they are made (a Dense, the first two thirds of Swin's joint ``qkv``
Dense and of Attention2d's joint ``qkv`` convolution, each layer of MultiQueryAttention2d's
query and key chains): the softmax of constants
is a constant, and ``weights @ values`` passes relevance to the values alone (Ali et al.
2022's AH-rule, as for MultiHeadAttention). An ``Embedding`` read
inside them looks up constant positions (``position_ids``): it is a constant. Any other
custom layer stays an error naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_HUB = "keras_hub.src.models."
WALKED = {  # module: class names, read as the module's docstring says
    _HUB + "vit.vit_layers": ("ViTPatchingAndEmbedding", "ViTEncoder", "ViTEncoderBlock", "MLP"),
    _HUB + "deit.deit_layers": ("DeiTEmbeddings", "DeiTEncoder", "DeiTEncoderBlock",
                                "DeiTIntermediate", "DeiTOutput"),
    _HUB + "mit.mit_layers": ("OverlappingPatchingAndEmbedding", "HierarchicalTransformerEncoder",
                              "DropPath", "SegFormerMultiheadAttention", "MixFFN"),
    _HUB + "swin_transformer.swin_transformer_layers": (
        "PatchEmbedding", "SwinTransformerStage", "SwinTransformerBlock", "PatchMerging", "Mlp",
        "DropPath", "WindowAttention"),
    _HUB + "efficientnet.fusedmbconv": ("FusedMBConvBlock",),
    _HUB + "efficientnet.mbconv": ("MBConvBlock",),
    _HUB + "efficientnet.cba": ("CBABlock",),
    _HUB + "mobilenet.mobilenet_backbone": ("SqueezeAndExcite2D", "DepthwiseConvBlock",
                                           "InvertedResidualBlock", "ConvBnActBlock"),
    _HUB + "mobilenetv5.mobilenetv5_layers": ("ConvNormAct", "LayerScale2d", "DropPath",
                                             "SEModule"),
    _HUB + "mobilenetv5.mobilenetv5_blocks": ("UniversalInvertedResidual", "EdgeResidual"),
    _HUB + "mobilenetv5.mobilenetv5_attention": ("MobileAttention", "MultiQueryAttention2d",
                                                 "Attention2d"),
    _HUB + "mobilenetv5.mobilenetv5_utils": ("SelectAdaptivePool2d",),
    _HUB + "hgnetv2.hgnetv2_layers": ("HGNetV2LearnableAffineBlock", "HGNetV2ConvLayer",
                                      "HGNetV2ConvLayerLight", "HGNetV2Embeddings",
                                      "HGNetV2BasicLayer", "HGNetV2Stage"),
    _HUB + "hgnetv2.hgnetv2_encoder": ("HGNetV2Encoder",),
}
# Attention computed in raw ops: {(module, class): {sub-layer attribute: parts of its output
# (thirds of the last axis) held constant}}; None holds the whole output.
HELD = {
    (_HUB + "mit.mit_layers", "SegFormerMultiheadAttention"): {"q": None, "k": None},
    (_HUB + "swin_transformer.swin_transformer_layers", "WindowAttention"): {"qkv": (0, 1)},
    (_HUB + "mobilenetv5.mobilenetv5_attention", "MultiQueryAttention2d"): {
        "query_layers": None, "key_layers": None},
    (_HUB + "mobilenetv5.mobilenetv5_attention", "Attention2d"): {"qkv": (0, 1)},
}


def _key(layer) -> tuple[str, str]:
    return type(layer).__module__, type(layer).__name__


def is_walked(layer) -> bool:
    """Whether LRP walks into the layer's own ``call`` (a class listed in ``WALKED``)."""
    module, name = _key(layer)
    return name in WALKED.get(module, ())


def is_constant_lookup(layer) -> bool:
    """An ``Embedding`` inside a walked layer: a table read at constant positions."""
    import keras

    return isinstance(layer, keras.layers.Embedding)


def held(layer, name: str, counterpart: Callable) -> Callable:
    """``counterpart`` of the sub-layer ``name`` of ``layer``, with the parts ``HELD`` names
    held constant (the queries and keys of an attention computed in raw ops)."""
    import tensorflow as tf

    parts = HELD.get(_key(layer), {})
    if name not in parts:
        return counterpart
    if parts[name] is None:
        return lambda *args, **kwargs: tf.stop_gradient(counterpart(*args, **kwargs))

    def thirds(*args, **kwargs):
        pieces = tf.split(counterpart(*args, **kwargs), 3, axis=-1)
        return tf.concat([tf.stop_gradient(p) if i in parts[name] else p
                          for i, p in enumerate(pieces)], axis=-1)

    return thirds


def mix_ffn(layer, x):
    """MiT's ``MixFFN.call`` with its raw GELU passed on unchanged (Zennit's ``Pass``, as a
    Dense's GELU is): Dense, the tokens on their square grid through a depthwise convolution,
    GELU, Dense."""
    import math

    from keras import ops

    from auditor.methods.attribution.lrp.graph import passed

    x = layer.fc1(x)
    side, channels = int(math.sqrt(x.shape[1])), x.shape[2]
    x = ops.reshape(layer.dwconv(ops.reshape(x, (-1, side, side, channels))),
                    (-1, side * side, channels))
    return layer.fc2(passed(x, ops.nn.gelu(x)))


CALLS = {(_HUB + "mit.mit_layers", "MixFFN"): mix_ffn}  # a call rewritten where it must be


def own_call(layer) -> Callable:
    """The ``call`` LRP runs for a walked layer: its own, or its rewritten one (``CALLS``)."""
    rewritten = CALLS.get(_key(layer))
    return layer.call if rewritten is None else lambda *args, **kwargs: rewritten(layer, *args)


def is_rms_norm(layer) -> bool:
    """MobileNetV5's ``RmsNorm2d``: its rule is ``constant.rms_norm``."""
    return _key(layer) == (_HUB + "mobilenetv5.mobilenetv5_layers", "RmsNorm2d")


def _is_activation(value) -> bool:
    """A Keras activation function kept as an attribute (Swin's ``Mlp.act_layer``)."""
    return callable(value) and getattr(value, "__module__", "").startswith(
        "keras.src.activations")


def _passed_activation(function: Callable) -> Callable:
    from auditor.methods.attribution.lrp.graph import passed

    return lambda x, *args, **kwargs: passed(x, function(x, *args, **kwargs))


@contextlib.contextmanager
def swapped(layer, counterpart: Callable) -> Iterator[None]:
    """While open, every attribute of ``layer`` holding a sub-layer (or a list of them) holds
    ``counterpart(sublayer)`` instead (with ``HELD``'s parts held constant), and every
    activation function attribute its pass rule; set past Keras's tracking, restored after."""
    import keras

    def is_layer(value):
        return isinstance(value, keras.layers.Layer)

    originals = {}
    for name, value in list(vars(layer).items()):
        if is_layer(value):
            originals[name] = value
            object.__setattr__(layer, name, held(layer, name, counterpart(value)))
        elif isinstance(value, list | tuple) and value and all(map(is_layer, value)):
            originals[name] = value
            object.__setattr__(layer, name, [held(layer, name, counterpart(v)) for v in value])
        elif _is_activation(value):
            originals[name] = value
            object.__setattr__(layer, name, _passed_activation(value))
    try:
        yield
    finally:
        for name, value in originals.items():
            object.__setattr__(layer, name, value)
