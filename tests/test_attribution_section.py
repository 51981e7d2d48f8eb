"""The attribution section in a real audit, and `auditor methods`."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def audit(tmp_path_factory, digits_model_path, edge_detector):
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    spec = {"attribution": {
        "methods": ["gradient", "saliency", "integrated_gradients", edge_detector],
        "examples": 2, "sanity_samples": 4, "sanity_stages": 2, "faithfulness_samples": 8,
        "faithfulness_steps": 8, "display_smoothing": 1.0,
        "method_options": {"integrated_gradients": {"steps": 16}}},
        # an explanation check is not part of the verdict unless the spec gates it
        "checks": {f"attribution.sanity.{edge_detector}": {"gate": True}}}
    config = make_config(spec, model=str(digits_model_path), data="sklearn:digits:test",
                         max_samples=150, sections=["attribution"],
                         out=str(tmp_path_factory.mktemp("runs") / "run"), progress=False)
    return run_audit(config)


def test_section_fails_a_weight_blind_method_and_passes_the_gradient(audit):
    summary = json.loads((audit.out / "summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["attribution.sanity.edge_detector"]["status"] == "fail"
    assert checks["attribution.sanity.edge_detector"]["value"] == pytest.approx(1.0)
    assert checks["attribution.sanity.gradient"]["status"] == "pass"
    assert checks["attribution.faithfulness"]["status"] == "pass"
    assert all(c["kind"] == "explanation" for i, c in checks.items() if ".sanity." in i)
    assert checks["attribution.sanity.gradient"]["in_verdict"] is False  # the default
    assert checks["attribution.sanity.edge_detector"]["in_verdict"] is True  # gated by the spec
    assert summary["verdict"] == "fail" and audit.exit_code == 1
    assert checks["attribution.trusted"]["status"] == "pass"
    block = summary["attribution"]
    assert block["sanity_stages"] == ["predictions", "conv1"]
    assert set(block["sanity"]) == {"gradient", "saliency", "integrated_gradients",
                                    "edge_detector"}
    assert set(block["faithfulness"]) == set(block["sanity"]) | {"random"}
    assert (block["faithfulness"]["gradient"]["deletion_auc"]
            < block["faithfulness"]["random"]["deletion_auc"])
    assert block["completeness_error"] < 0.05
    assert len(block["examples"]) == 2 and len(block["examples"][0]["box"]) == 4


def test_the_reliability_card_distrusts_the_weight_blind_method(audit):
    card = json.loads((audit.out / "summary.json").read_text())["attribution"]["reliability"]
    assert set(card) == {"gradient", "saliency", "integrated_gradients", "edge_detector"}
    for entry in card.values():
        assert set(entry) == {"randomisation", "input_invariance", "faithfulness",
                              "shortcut_mass", "control_mass", "trusted"}
    assert card["edge_detector"]["randomisation"]["status"] == "fail"
    assert card["edge_detector"]["trusted"] is False
    assert card["gradient"]["randomisation"]["status"] == "pass"
    # the demo's first layer pads ('same'): the shifted copy pads with the shifted background
    assert card["gradient"]["input_invariance"]["status"] == "pass"
    assert card["gradient"]["input_invariance"]["value"] < 1e-4
    html = (audit.out / "report.html").read_text()
    section = html[html.index('id="attribution"'):]
    assert "Reliability card" in section and "Untrustworthy on this model" in section
    note = section.index("Untrustworthy on this model")
    assert "edge_detector" in section[note:note + 300]
    assert note < section.index("misclassified images (rows)")


def test_report_shows_the_tables_and_labels_smoothed_maps(audit):
    html = (audit.out / "report.html").read_text()
    section = html[html.index('id="attribution"'):]
    for text in ("Attribution methods", "Sanity check", "Faithfulness", "edge_detector",
                 "smoothed for display (Gaussian, sigma 1 px)"):
        assert text in section
    assert section.count("<img") == section.count('alt="')


def test_methods_that_do_not_apply_to_a_model_are_reported_not_fatal(tmp_path):
    import keras

    from auditor.inputs.models import load_model
    from auditor.steps.card import compute_maps

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.save(tmp_path / "dense.keras")
    handle = load_model(str(tmp_path / "dense.keras"))
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    maps, unavailable = compute_maps(handle, x, np.arange(3), ["gradient", "gradcam"], "logit",
                                     {})
    assert list(maps) == ["gradient"]
    assert "no layer with a spatial" in unavailable["gradcam"]


def test_auditor_methods_prints_every_method_and_its_options():
    from click.testing import CliRunner

    from auditor.cli import cli

    result = CliRunner().invoke(cli, ["methods"])
    assert result.exit_code == 0
    for name in ("gradient", "smoothgrad", "integrated_gradients", "gradcam_pp", "occlusion"):
        assert f"\n{name}\n" in result.output
    assert "samples = 16" in result.output


def test_a_model_whose_every_method_fails_the_card_warns_naming_why(tmp_path, digits_model_path,
                                                                    edge_detector):
    """No silent blessing: with only a weight-blind method on the card, nothing is trusted, so
    the model check warns (the verdict is not a pass), and the contrastive maps, drawn with the
    fallback the card never measured, are not measurable."""
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    spec = {"attribution": {"methods": [edge_detector], "examples": 1, "sanity_samples": 4,
                            "sanity_stages": 2, "faithfulness_samples": 4,
                            "faithfulness_steps": 4, "compare_layers": 0},
            "contrastive": {"examples": 2}}
    outcome = run_audit(make_config(
        spec, model=str(digits_model_path), data="sklearn:digits:test", max_samples=60,
        sections=["contrastive", "attribution"], out=str(tmp_path / "run"), progress=False))
    summary = outcome.summary
    checks = {c["id"]: c for c in summary["checks"]}
    trusted = checks["attribution.trusted"]
    assert (trusted["status"], trusted["kind"], trusted["in_verdict"]) == ("warn", "model", True)
    assert f"{edge_detector}: randomisation fail" in trusted["message"]
    assert "not measurable" in trusted["message"]
    contrastive = checks["contrastive.method_trusted"]
    assert contrastive["status"] == "warn" and "gradient: not on the reliability card" in (
        contrastive["message"])
    assert checks[f"attribution.sanity.{edge_detector}"]["status"] == "fail"
    assert summary["verdict"] == "warn" and outcome.exit_code == 0


def test_a_method_that_breaks_on_an_architecture_is_a_finding_not_a_failed_audit(digits_handle):
    """An exception inside one method leaves it off the card with the reason; the others run."""
    from auditor.methods.attribution import METHODS, register
    from auditor.steps.card import compute_maps

    @register("broken_for_test", "raises on every model (test only)")
    def broken(handle, x, targets, contrast, score, budget):
        raise FloatingPointError("non-finite relevance in layer conv1")

    try:
        x = np.zeros((2, *digits_handle.input_shape), np.float32)
        maps, unavailable = compute_maps(digits_handle, x, np.arange(2),
                                         ["gradient", "broken_for_test"], "logit", {})
    finally:
        METHODS.pop("broken_for_test")
    assert list(maps) == ["gradient"]
    assert unavailable["broken_for_test"].startswith("failed on this model (FloatingPointError")


@pytest.mark.parametrize("tile_px", [48, 80])
def test_the_mosaics_column_labels_never_overlap(tile_px):
    """Every method's name over its column (80 px tiles) and the randomisation stages' layer
    names (48 px): 'integrated gradients' ran into 'gradient x input', '-block1_conv1' into
    '-predictions' on VGG16's card before the labels were wrapped to their column."""
    import matplotlib.pyplot as plt

    from auditor.methods.attribution import METHODS
    from auditor.report.views.attribution import mosaic_figure

    labels = ["image", *(m.replace("_", " ") for m in sorted(METHODS)), "-block1_conv1",
              "-predictions", "-expanded_conv_depthwise_BN"]
    tiles = [[np.zeros((32, 32, 3))] * len(labels)]
    figure = mosaic_figure(tiles, ["#0"], labels, tile_px=tile_px)
    figure.canvas.draw()
    boxes = [label.get_window_extent() for label in figure.axes[0].get_xticklabels()]
    plt.close(figure)
    assert [b for b in boxes if b.y1 > figure.bbox.y1] == []  # inside the figure
    assert all(left.x1 <= right.x0 for left, right in itertools.pairwise(boxes))
