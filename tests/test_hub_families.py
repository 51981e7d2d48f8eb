"""keras-hub's image classifiers from the CLI: each family's ``<family>ImageClassifier``, saved
to .keras with its own preprocessor, loads without --unsafe-load (its classes come from the
installed keras_hub package), is audited through its preprocessor's input range (not probed),
and copies (the randomised and fine-tuned copies start from ``copy_model``) with its logits.

The backbones are tiny and random (tests/architectures.py ``HUB_BACKBONES``, 32 px): what is
tested is that the audit's loading and copying handle each family's classes. Every section on
each family is the slow test in tests/test_zoo.py and ``bench/zoo_sections.py``.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import pytest
from architectures import HUB_FAMILIES, hub_classifier
from conservation import assert_relevance_sums_to_the_logit

from auditor.inputs.copies import copy_model
from auditor.inputs.layers import walk
from auditor.inputs.models import load_model

# ViT has its own CLI test (tests/test_architectures.py). About 55 CPU-seconds for the eleven
# others on the shared 2-core machine (3 to 10 each); Swin's build and first trace alone cost
# about 28, so it runs with the slow tests.
FAMILIES = [pytest.param(family, marks=pytest.mark.slow) if family == "SwinTransformer"
            else family for family in HUB_FAMILIES if family != "ViT"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_keras_hub_classifier_audits_from_the_cli_with_its_preprocessor(
        tmp_path, monkeypatch, capsys, family):
    from auditor.cli import main

    task = hub_classifier(family, classes=10)
    path = tmp_path / f"{family}.keras"
    task.save(path)
    handle = load_model(str(path))
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    expected = task.predict(x * 255.0, verbose=0)  # the task's preprocessor, then the model
    logits = handle.logits(x).numpy()
    got = logits if handle.output == "logits" else np.asarray(keras.ops.softmax(logits))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    copy = copy_model(handle.logits_model)  # stays on logits: the head's softmax stays off
    np.testing.assert_allclose(np.asarray(copy(handle.transform.to_model(x))), logits,
                               atol=1e-4)
    # layers found by path on the model are found on the copy (VGG's backbone is renumbered)
    assert [p for p, _ in walk(copy)] == [p for p, _ in walk(handle.logits_model)]
    monkeypatch.setattr(sys, "argv", [
        "auditor", "audit", "--model", str(path), "--data", "sklearn:digits:test",
        "--max-samples", "40", "--sections", "performance", "--out", str(tmp_path / "run"),
        "--format", "json"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code in (0, 1), capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["model"]["input_range"], summary["model"]["input_range_source"]) == (
        "keras-hub preprocessor", "model")
    assert not [c for c in summary["checks"] if c["status"] == "error"], summary["checks"]


def test_rollout_on_a_hierarchical_transformer_says_in_one_line_what_applies_instead():
    """keras-hub's MiT attends in its own layer class, over token grids its stages coarsen:
    rollout, defined over one token sequence, says in one line that it is not defined there,
    names the class and the methods that explain it instead."""
    from auditor.errors import AuditorError
    from auditor.methods.attribution.tokens import required_attention

    with pytest.raises(AuditorError, match=r"not defined .* \(SegFormerMultiheadAttention\) "
                                           r"is that of a hierarchical transformer") as info:
        required_attention(hub_classifier("MiT"))
    assert "'lrp'" in str(info.value) and "'gradcam'" in str(info.value)
    assert "\n" not in str(info.value)


def test_rollout_on_dinov3_says_its_attention_gives_no_weights_not_that_it_is_hierarchical():
    """keras-hub's DINOv3 is one token sequence (no merging), but its own ``DINOV3Attention``
    computes its weights inside ``ops.nn.dot_product_attention`` and its call gives none:
    rollout says that in one line, naming the class, and not the hierarchical reason; LRP,
    which holds no DINOv3 weights constant, is not offered instead."""
    import keras_hub

    from auditor.errors import AuditorError
    from auditor.methods.attribution.tokens import required_attention

    backbone = keras_hub.models.DINOV3Backbone(
        patch_size=8, num_layers=1, hidden_dim=16, num_heads=2, intermediate_dim=32,
        num_register_tokens=4, image_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling1D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    with pytest.raises(AuditorError, match=r"cannot read the attention weights .* "
                                           r"\(DINOV3Attention\) is computed in its own "
                                           r"layers, whose calls have no") as info:
        required_attention(model)
    message = str(info.value)
    assert "hierarchical" not in message and "'gradcam'" in message and "'lrp'" not in message
    assert "\n" not in message


def test_rollout_on_mobilenetv5_names_lrp_which_walks_its_attention():
    """MobileNetV5 attends in its own layers between convolutional stages: rollout cannot read
    their weights, says so, and names LRP, which walks through them, beside Grad-CAM."""
    from architectures import mobilenetv5_attention_blocks

    from auditor.errors import AuditorError
    from auditor.methods.attribution.tokens import required_attention

    with pytest.raises(AuditorError, match=r"cannot read .* \(Attention2d, MobileAttention, "
                                           r"MultiQueryAttention2d\)") as info:
        required_attention(mobilenetv5_attention_blocks())
    assert "hierarchical" not in str(info.value) and "'lrp'" in str(info.value)


def test_clever_hans_default_methods_leave_out_grad_cam_where_no_layer_takes_it(tmp_path):
    """A model with no layer Grad-CAM can explain (no spatial layer, no grid of tokens, here a
    Dense one): the injection test runs with the gradient instead of being skipped whole; a
    convolutional model keeps both."""
    from auditor.sections.clever_hans import PREFERRED_METHODS, applicable

    dense = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    conv = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    for name, model in (("dense", dense), ("conv", conv)):
        model.save(tmp_path / f"{name}.keras")
    assert applicable(load_model(str(tmp_path / "dense.keras"), "0-1"),
                      list(PREFERRED_METHODS)) == ["gradient"]
    assert applicable(load_model(str(tmp_path / "conv.keras"), "0-1"),
                      list(PREFERRED_METHODS)) == ["gradient", "gradcam"]


# LRP walks into each family's own blocks (auditor/methods/attribution/lrp/custom.py). Measured
# with lrp_epsilon alone on the shared machine under load: MobileNetV5 14 s (its RmsNorm2d rule
# and walked blocks, in the fast set), EfficientNet 28, HGNetV2 19, DeiT, MobileNet, MiT and
# Swin 25 to 60 (the bigger first traces): those run with the slow tests.
LRP_FAMILIES = [pytest.param(family, marks=pytest.mark.slow) if family != "MobileNetV5"
                else family for family in ("DeiT", "MiT", "SwinTransformer", "EfficientNet",
                                           "MobileNet", "MobileNetV5", "HGNetV2")]


@pytest.mark.parametrize("family", LRP_FAMILIES)
def test_lrp_walks_through_a_keras_hub_familys_blocks_and_conserves_relevance(tmp_path, family):
    """On the bias-free classifier (every additive constant zeroed: biases, BatchNormalization's
    means, DeiT's tokens and position table) LRP-epsilon's relevance sums to the logit: through
    DeiT's and MiT's and Swin's attention with the weights held constant, MiT's MixFFN and
    Swin's Mlp GELUs passed, squeeze-excitation gates held constant (EfficientNet, MobileNet),
    MobileNetV5's RmsNorm2d and HGNetV2's affine blocks."""
    assert_relevance_sums_to_the_logit(hub_classifier(family), tmp_path, ("lrp_epsilon",),
                                       input_range="auto")


def test_lrp_walks_through_mobilenetv5_attention_and_condconv_and_conserves_relevance(tmp_path):
    """MobileNetV5's ``MultiQueryAttention2d`` and ``Attention2d`` (weights from raw matmuls
    and softmax) with their queries and keys held constant where they are made (Ali et al.
    2022; through ``Attention2d`` passes all the signal: its gradient through the softmax put
    the sums 54 % off the logit, measured), ``MobileAttention``'s
    position convolution, norm and layer scale, and ``CondConvResidual`` with its routing held
    constant (a gate) and the rule applied to each image's mixed kernel: on the bias-free model
    relevance sums to the logit under LRP-epsilon and the composite (gamma on the mixed
    kernels, z-box on the pixels)."""
    from architectures import mobilenetv5_attention_blocks

    assert_relevance_sums_to_the_logit(mobilenetv5_attention_blocks(), tmp_path)
