"""Every keras.applications family loads, copies and predicts, and LRP's relevance is conserved
on each; a representative family runs Grad-CAM++ and LRP maps; keras-hub's
ViTImageClassifier and every other keras-hub ImageClassifier (with its own preprocessor) go
through every section and every attribution method, each section running or saying in one line
why not.

The families are built with ``weights=None`` at their smallest input (32 px, 71 or 75 px where
the architecture needs it) and random weights: what is tested is that the audit's machinery
handles each architecture's layers, not what a trained model learned. Every keras.applications
family, whole and nested under a head, also goes through every section here (4 to 20
CPU-minutes each, most of it the reliability card: hours for the 28, so run them a few at a
time with ``-k``; ``bench/zoo_sections.py`` runs the same audits and prints their lines and
CPU time, recorded in docs/scale.md); the keras-hub ViT's maps are tested on trained models in
tests/test_vit.py. All of this module is marked slow: about 1 CPU-minute a family-wide test,
1 to 20 an audit.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from architectures import (
    FAMILIES,
    HUB_FAMILIES,
    application,
    hub_classifier,
    hub_vit_classifier,
    nested,
    without_biases,
)

from auditor.inputs.copies import copy_model
from auditor.inputs.models import load_model
from auditor.methods.attribution import attribute


def saved(model, tmp_path, name: str):
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return load_model(str(path), "0-1")


def images(handle, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *handle.input_shape)).astype("float32")


@pytest.mark.slow  # 10 to 60 s a family on the shared 2-core machine, mostly Keras building it
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_loads_copies_and_predicts(tmp_path, family):
    """Load from .keras, copy (the randomised and fine-tuned copies start here) and predict as
    Keras does, for every family Keras ships."""
    model = application(family)
    handle = saved(model, tmp_path, family)
    x = images(handle)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(keras.ops.softmax(handle.logits(x))), expected,
                               atol=1e-4)
    copy = copy_model(handle.logits_model)
    np.testing.assert_allclose(np.asarray(copy(x)), handle.logits(x).numpy(), atol=1e-4)


@pytest.mark.slow  # 30 to 65 CPU-s a family (about 9 CPU-minutes for the 14): two LRP traces
@pytest.mark.parametrize("family", list(FAMILIES))
def test_lrp_conserves_relevance_on_a_family(tmp_path, family):
    """On every family's bias-free net, LRP's relevance sums to the logit: through LayerScale
    and the ops.add residuals (ConvNeXt), layer norms, swish and squeeze-excitation gates
    (EfficientNet, V2, MobileNetV3), concatenations (DenseNet, Inception, NASNet), the scaled
    residual sums of Inception-ResNet, separable convolutions (Xception, NASNet), max pooling
    (VGG, Inception). EfficientNetV2's maps summed to 1e8 times the logit before the gamma rule
    favoured z's sign on signed inputs. LRP-epsilon (epsilon 1e-9) is exact; the composite's
    gamma stabiliser (1e-6, absolute) absorbs about 1 % at these random nets' small
    pre-activations, so it is held to 3 %."""
    handle = saved(without_biases(application(family, preprocessing=False)), tmp_path, family)
    x = images(handle, 2)
    logits = handle.logits(x).numpy()
    targets = logits.argmax(axis=1)
    expected = logits[np.arange(len(x)), targets]
    for method, rtol in (("lrp_epsilon", 1e-3), ("lrp", 3e-2)):
        maps = attribute(handle, x, targets, method, epsilon=1e-9)
        assert np.isfinite(maps).all()
        np.testing.assert_allclose(maps.reshape(len(x), -1).sum(axis=1), expected, rtol=rtol,
                                   err_msg=method)


@pytest.mark.slow  # about 30 s; test_lrp and test_featureviz cover MobileNetV3's parts quickly
@pytest.mark.parametrize("family", ["MobileNetV3Small"])
def test_grad_cam_and_lrp_maps_on_a_family(tmp_path, family):
    """MobileNetV3's hard-swish, squeeze-excitation and a last convolution named 'logits'."""
    handle = saved(application(family), tmp_path, family)
    x = images(handle, 2)
    for method in ("gradcam_pp", "lrp"):
        maps = attribute(handle, x, np.array([0, 1]), method)
        assert maps.shape == x.shape and np.isfinite(maps).all(), method


# The slow set audits keras-hub's ViT whole, the architecture furthest from the CNNs the other
# tests audit (about a CPU-minute), every other keras-hub ImageClassifier with its own
# preprocessor (1 to 2.5 CPU-minutes each at a load of 9; about 20 in all), and every
# keras.applications family whole and as a backbone nested under a Dense head (4 CPU-minutes
# for MobileNetV3Small to 20 for nested InceptionResNetV2; docs/scale.md records each).
EVERY_SECTION = {
    "keras-hub ViTImageClassifier": lambda: hub_vit_classifier(),
    **{f"keras-hub {family}ImageClassifier": functools.partial(hub_classifier, family)
       for family in HUB_FAMILIES if family != "ViT"},
    **{family: functools.partial(application, family) for family in FAMILIES},
    **{f"nested {family}": functools.partial(nested, family) for family in FAMILIES},
}


@pytest.mark.slow  # a whole audit at the smallest settings
@pytest.mark.parametrize("name", list(EVERY_SECTION))
def test_every_section_runs_or_says_in_one_line_why_not(tmp_path, name):
    """Every section of the registry reports, none crashes, and every check that could not be
    measured or every method that could not run says why in one line, with no traceback (that
    goes to the run's audit.log)."""
    from zoo_audit import audit_everything, outcomes

    from auditor.sections import SECTION_NAMES

    summary = audit_everything(EVERY_SECTION[name](), tmp_path)
    found = outcomes(summary)
    crashed = [c["message"] for c in summary["checks"] if c["id"].endswith(".run")]
    assert not crashed, crashed
    for section in SECTION_NAMES:
        assert section in found, f"{section} left no check"
    for lines in found.values():
        for line in lines:
            assert "\n" not in line and "Traceback" not in line and 'File "' not in line, line
