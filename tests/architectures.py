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
    bias-free net, on which LRP's relevance must sum to the logit (DeiT's distillation token and
    position table, Swin's relative position table too)."""
    import numpy as np

    constants = ("bias", "beta", "moving_mean", "mean", "class_token", "embeddings",
                 "distillation_token", "position_embedding")
    for weight in model.weights:
        if weight.path.rsplit("/", 1)[-1] in constants:
            weight.assign(np.zeros(weight.shape, weight.dtype))
    return model


# keras-hub image classifiers, each built from its backbone class with small hand-written
# arguments (random weights, nothing downloaded) and the task's own preprocessor, whose image
# converter states the input range: the families keras-hub 0.32 ships an ImageClassifier for.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# Each family's backbone arguments: two stages or blocks, a few channels (ResNet's first stage
# must have 64 filters; EfficientNet keeps its 1280 features: keras-hub 0.32 leaves
# ``num_features`` out of the backbone's config, so another value does not load back).
HUB_BACKBONES = {
    "ViT": dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                name="vit_backbone"),  # named: Keras numbers a second one otherwise
    "DeiT": dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64),
    "MiT": dict(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3],
                layerwise_strides=[4, 2], hidden_dims=[16, 32]),
    "ResNet": dict(input_conv_filters=[64], input_conv_kernel_sizes=[7],
                   stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
                   stackwise_num_strides=[1, 2], block_type="basic_block"),
    "EfficientNet": dict(
        stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[16, 16], stackwise_output_filters=[16, 24],
        stackwise_expansion_ratios=[1, 4], stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
        stackwise_strides=[1, 2], stackwise_block_types=["fused", "unfused"],
        stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False]),
    "SwinTransformer": dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                            patch_size=4, drop_path=0.0),
    "CSPNet": dict(stem_filters=16, stem_kernel_size=3, stem_strides=2, stackwise_depth=[1, 1],
                   stackwise_strides=[1, 2], stackwise_num_filters=[16, 32],
                   block_type="dark_block", stage_type="dark"),
    "DenseNet": dict(stackwise_num_repeats=[2, 2], growth_rate=8),
    "MobileNet": dict(
        stackwise_expansion=[[16], [32, 48]], stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[16], [24, 24]], stackwise_kernel_size=[[3], [5, 5]],
        stackwise_num_strides=[[2], [2, 1]], stackwise_se_ratio=[[None], [0.25, 0.25]],
        stackwise_activation=[["relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1], [2, 2]], output_num_filters=48, depthwise_filters=8,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=96,
        squeeze_and_excite=0.5),
    "VGG": dict(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16]),
    "Xception": dict(stackwise_conv_filters=[[16, 32], [32, 64]],
                     stackwise_pooling=[True, False]),
    "HGNetV2": dict(
        depths=[1, 1], embedding_size=16, hidden_sizes=[32, 64], stem_channels=[3, 8, 16],
        hidden_act="relu", use_learnable_affine_block=False,
        stackwise_stage_filters=[(16, 8, 32, 1, 1, 3), (32, 16, 64, 1, 1, 3)],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False]),
    "MobileNetV5": dict(
        stackwise_block_types=[["er"], ["uir", "uir"]], stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[16], [32, 32]], stackwise_strides=[[2], [2, 1]],
        stackwise_act_layers=[["relu"], ["relu", "relu"]],
        stackwise_exp_ratios=[[4.0], [4.0, 4.0]], stackwise_se_ratios=[[0.0], [0.0, 0.0]],
        stackwise_dw_kernel_sizes=[[0], [5, 5]], stackwise_dw_start_kernel_sizes=[[0], [0, 0]],
        stackwise_dw_end_kernel_sizes=[[0], [0, 0]], stackwise_exp_kernel_sizes=[[3], [0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0]], stackwise_num_heads=[[0], [0, 0]],
        stackwise_key_dims=[[0], [0, 0]], stackwise_value_dims=[[0], [0, 0]],
        stackwise_kv_strides=[[0], [0, 0]], stackwise_use_cpe=[[False], [False, False]],
        stem_size=16, num_features=64, use_msfa=False),
}


def _hub_backbone(family: str, size: int):
    """A tiny ``<family>Backbone`` at ``size`` px (EfficientNet's names its shape
    ``input_shape``)."""
    import keras_hub

    shape = "input_shape" if family == "EfficientNet" else "image_shape"
    build = getattr(keras_hub.models, f"{family}Backbone")
    return build(**HUB_BACKBONES[family], **{shape: (size, size, 3)})


HUB_FAMILIES = tuple(HUB_BACKBONES)
# The head's options: a softmax, and the sizes a tiny backbone needs (VGG's two hidden Dense
# layers default to 4096 units); MobileNet's and MobileNetV5's heads end in logits, no option.
_HUB_HEADS = {"VGG": {"pooling_hidden_dim": 32, "activation": "softmax"},
              "MobileNet": {"num_features": 64}, "MobileNetV5": {"head_hidden_size": 64}}


def hub_classifier(family: str, size: int = 32, classes: int = 3, seed: int = 0):
    """keras-hub's ``<family>ImageClassifier`` over a tiny random backbone, with its own
    preprocessor: an image converter of pixels in 0-255 to the ImageNet mean and deviation per
    channel (ViT and DeiT: to -1..1, as their presets), softmax outputs (logits where the
    task has no activation option)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = _hub_backbone(family, size)
    if family in ("ViT", "DeiT"):
        scale, offset = 1 / 127.5, -1.0
    else:
        scale = [1 / (255 * s) for s in _IMAGENET_STD]
        offset = [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD, strict=True)]
    converter = getattr(keras_hub.layers, f"{family}ImageConverter")(
        image_size=(size, size), scale=scale, offset=offset)
    preprocessor = getattr(keras_hub.models, f"{family}ImageClassifierPreprocessor")(
        image_converter=converter)
    task = getattr(keras_hub.models, f"{family}ImageClassifier")
    return task(backbone=backbone, num_classes=classes, preprocessor=preprocessor,
                **_HUB_HEADS.get(family, {"activation": "softmax"}))


def mobilenetv5_attention_blocks(size: int = 32, classes: int = 3, seed: int = 0):
    """A tiny keras-hub MobileNetV5 with its attention and CondConv blocks: the backbone's
    edge-residual and inverted-residual blocks, two multi-query attention blocks
    (``MobileAttention`` over ``MultiQueryAttention2d``: keys and values strided by 2 with a
    position convolution in the first, neither in the second) with layer scale, then a
    ``CondConvResidual`` of three experts (the backbone's arguments cannot make one: it never
    passes ``num_experts``), pooled under a Dense head of logits. Between them a
    ``MobileAttention`` over keras-hub's non-query ``Attention2d`` ("mha"), without its skip,
    so that all the signal passes its attention: keras-hub 0.32 reshapes there with the batch
    size, which a symbolic input leaves unknown ("Could not automatically infer the output
    shape / dtype of 'attention2d'"; its backbone cannot build an "mha" block), so the input
    has a fixed batch of one; run, it takes any batch."""
    import keras
    import keras_hub
    from keras_hub.src.models.mobilenetv5.mobilenetv5_attention import MobileAttention
    from keras_hub.src.models.mobilenetv5.mobilenetv5_blocks import CondConvResidual

    keras.utils.set_random_seed(seed)
    blocks = [["er"], ["uir", "mqa", "mqa"]]
    zeros = [[0], [0, 0, 0]]
    backbone = keras_hub.models.MobileNetV5Backbone(
        stackwise_block_types=blocks, stackwise_num_blocks=[1, 3],
        stackwise_num_filters=[[16], [32, 32, 32]], stackwise_strides=[[2], [2, 1, 1]],
        stackwise_act_layers=[["relu"], ["relu"] * 3],
        stackwise_exp_ratios=[[4.0], [4.0, 0, 0]], stackwise_se_ratios=zeros,
        stackwise_dw_kernel_sizes=[[0], [5, 0, 0]], stackwise_dw_start_kernel_sizes=zeros,
        stackwise_dw_end_kernel_sizes=zeros, stackwise_exp_kernel_sizes=[[3], [0, 0, 0]],
        stackwise_pw_kernel_sizes=[[1], [0, 0, 0]], stackwise_num_heads=[[0], [0, 2, 2]],
        stackwise_key_dims=[[0], [0, 8, 16]], stackwise_value_dims=[[0], [0, 8, 16]],
        stackwise_kv_strides=[[0], [0, 2, 1]],
        stackwise_use_cpe=[[False], [False, True, False]], stem_size=16, num_features=64,
        use_msfa=False, layer_scale_init_value=0.1, image_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3), batch_size=1)
    x = MobileAttention(32, num_heads=2, use_multi_query=False, noskip=True, use_cpe=True,
                        norm_layer="rms_norm", use_bias=True, layer_scale_init_value=0.1,
                        channel_axis=-1, data_format="channels_last", name="mha")(backbone(inputs))
    x = CondConvResidual(32, num_experts=3, exp_ratio=2.0, channel_axis=-1,
                         data_format="channels_last", name="condconv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x), name="mobilenetv5_attention")
