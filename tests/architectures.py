"""Tiny models of the architectures users ship beyond small CNNs, built in a second or two.

Shared by tests/test_architectures.py, tests/test_zoo.py and bench/zoo.py: a keras-hub ViT
backbone under a Dense head, a plain-Keras ViT (MultiHeadAttention, LayerNormalization, a
position Embedding), and keras.applications families with ``weights=None`` at small inputs.
"""

from __future__ import annotations

import numpy as np


def hub_vit(size: int = 32, classes: int = 3, seed: int = 0):
    """keras-hub's ViTBackbone (patch 8, 2 layers, hidden 32) with a mean-pooled Dense head."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64)
    inputs = keras.Input((size, size, 3))
    tokens = backbone(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(tokens)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(pooled),
                       name="hub_vit")


def hub_vit_classifier(size: int = 32, classes: int = 3, seed: int = 0):
    """keras-hub's own ViTImageClassifier (class-token pooling, as its presets) over a
    ViTBackbone (patch 8, 2 layers, hidden 32), random weights, no preprocessor."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, 3), patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
        mlp_dim=64, name="vit_backbone")  # named: Keras numbers a second one otherwise
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=classes,
                                               activation="softmax")


def plain_vit(size: int = 32, patch: int = 8, classes: int = 3, dim: int = 32, seed: int = 0,
              positions: bool = True):
    """A two-block ViT in plain Keras layers: patch convolution, position embedding added as a
    weight layer, pre-norm attention and MLP blocks, mean-pooled tokens, Dense head.
    ``positions=False`` leaves out the position embedding (an additive constant, as a bias)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(seed)
    grid = size // patch
    inputs = keras.Input((size, size, 3))
    h = L.Conv2D(dim, patch, strides=patch, name="patches")(inputs)
    h = L.Reshape((grid * grid, dim), name="tokens")(h)
    if positions:
        table = L.Embedding(grid * grid, dim, name="positions")(np.arange(grid * grid)[None])
        h = L.Add(name="position_add")([h, table])
    for block in range(2):
        a = L.LayerNormalization(name=f"norm{block}a")(h)
        a = L.MultiHeadAttention(2, dim // 2, name=f"attention{block}")(a, a)
        h = L.Add(name=f"residual{block}a")([h, a])
        m = L.LayerNormalization(name=f"norm{block}b")(h)
        m = L.Dense(dim * 2, activation="gelu", name=f"mlp{block}_1")(m)
        m = L.Dense(dim, name=f"mlp{block}_2")(m)
        h = L.Add(name=f"residual{block}b")([h, m])
    h = L.LayerNormalization(name="final_norm")(h)
    h = L.GlobalAveragePooling1D(name="pool")(h)
    return keras.Model(inputs, L.Dense(classes, activation="softmax", name="head")(h),
                       name="plain_vit")


# keras.applications families, each with its smallest member: (constructor, smallest input).
FAMILIES = {
    "ConvNeXtTiny": ("ConvNeXtTiny", 32),
    "DenseNet121": ("DenseNet121", 32),
    "EfficientNetB0": ("EfficientNetB0", 32),
    "EfficientNetV2B0": ("EfficientNetV2B0", 32),
    "InceptionV3": ("InceptionV3", 75),
    "InceptionResNetV2": ("InceptionResNetV2", 75),
    "MobileNet": ("MobileNet", 32),
    "MobileNetV2": ("MobileNetV2", 32),
    "MobileNetV3Small": ("MobileNetV3Small", 32),
    "NASNetMobile": ("NASNetMobile", 32),
    "ResNet50": ("ResNet50", 32),
    "ResNet50V2": ("ResNet50V2", 32),
    "VGG16": ("VGG16", 32),
    "Xception": ("Xception", 71),
}


def application(family: str, size: int | None = None, classes: int = 3, seed: int = 0,
                preprocessing: bool = True):
    """A keras.applications family as a whole classifier, ``weights=None``, random weights;
    ``preprocessing=False`` leaves out the preprocessing layers of the families that have them
    (an input offset is a bias: relevance conservation is tested without it)."""
    import inspect

    import keras

    name, smallest = FAMILIES[family]
    size = max(size or smallest, smallest)
    keras.utils.set_random_seed(seed)
    build = getattr(keras.applications, name)
    options = {}
    if "include_preprocessing" in inspect.signature(build).parameters:
        options["include_preprocessing"] = preprocessing
    return build(input_shape=(size, size, 3), weights=None, classes=classes, **options)


def nested(family: str, classes: int = 3):
    """The family as a backbone (no top, average-pooled) nested under a Dense head, as a model
    is fine-tuned on new classes."""
    import keras

    backbone = application(family, classes=classes)
    backbone = keras.Model(backbone.inputs, backbone.layers[-2].output, name="backbone")
    inputs = keras.Input(backbone.inputs[0].shape[1:])
    head = keras.layers.Dense(classes, activation="softmax", name="head")
    return keras.Model(inputs, head(backbone(inputs)), name=f"nested_{family}")


def without_biases(model):
    """``model`` with every additive constant zeroed in place (biases, BatchNormalization's and
    LayerNormalization's shifts, moving means, a ViT's class token and position embedding): a
    bias-free net, on which LRP's relevance must sum to the logit."""
    import numpy as np

    constants = ("bias", "beta", "moving_mean", "mean", "class_token", "embeddings")
    for weight in model.weights:
        if weight.path.rsplit("/", 1)[-1] in constants:
            weight.assign(np.zeros(weight.shape, weight.dtype))
    return model
