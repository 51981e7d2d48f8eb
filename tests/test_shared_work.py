"""Work not done twice: one function gives the penultimate features of a streamed dataset and of
images already in memory, compiled once per model."""

from __future__ import annotations

import numpy as np


def test_features_of_a_dataset_and_of_its_images_in_memory_are_the_same(digits_handle,
                                                                        digits_npz):
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.layers import final_layer_input
    from auditor.predict.predictions import penultimate_features

    dataset = load_dataset(f"npz:{digits_npz}", digits_handle.input_shape, 10, max_samples=50)
    images = dataset.images(np.arange(dataset.n))
    streamed = penultimate_features(digits_handle, dataset, batch_size=16)
    in_memory = penultimate_features(digits_handle, images, batch_size=7)
    eager = np.asarray(final_layer_input(digits_handle)(images, training=False))
    # batches of 16, 7 and 50 take other oneDNN kernels: float32 sums differ in the last bits
    # (1e-6 relative was seen on a feature of 11.7), so the comparison is relative as well
    np.testing.assert_allclose(in_memory, streamed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(in_memory, eager.reshape(len(images), -1), rtol=1e-5, atol=1e-5)
    traced = digits_handle.compiled["final_layer_input"].experimental_get_tracing_count()
    penultimate_features(digits_handle, images[:9], batch_size=4)
    assert digits_handle.compiled["final_layer_input"].experimental_get_tracing_count() == traced


SMALL_CARD = {"methods": ["gradient", "saliency"], "examples": 2, "sanity_samples": 2,
              "sanity_stages": 2, "faithfulness_samples": 2, "faithfulness_steps": 4,
              "compare_layers": 0}


def assert_read_only(result) -> None:
    """A section's result as the pipeline holds it: its summary, its figures' data and its
    checks cannot be changed, down to the nested values."""
    from dataclasses import FrozenInstanceError

    import pytest

    with pytest.raises(TypeError):
        result.summary["contrastive"] = {}
    block = result.summary["contrastive"]  # read-only all the way down, not only at the top
    with pytest.raises(TypeError):
        block["method"] = "occlusion"
    with pytest.raises(TypeError):
        block["examples"][0]["true"] = "someone else"
    with pytest.raises(AttributeError):
        block["examples"].append({})
    with pytest.raises(ValueError, match="read-only"):
        result.data.for_pred[0, 0, 0, 0] = 0.0
    with pytest.raises(FrozenInstanceError):  # its figures' data is sealed too
        result.data.for_pred = None
    check = result.checks[0]  # and its verdicts: a changed verdict is a new check
    with pytest.raises(FrozenInstanceError):
        check.status = "pass"
    with pytest.raises(TypeError):
        check.threshold["warn_below"] = 0.0


def test_a_section_can_change_neither_a_step_s_result_nor_another_section_s(digits_handle,
                                                                          tmp_path):
    """The steps' results are read-only all the way down (arrays, mappings), and so is what a
    section returned once the pipeline holds it; the sections read them, never write."""
    from dataclasses import FrozenInstanceError

    import pytest

    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.pipeline import context_for, run_section
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context
    from auditor.steps.shared import plain

    config = make_config({"attribution": SMALL_CARD, "contrastive": {"examples": 3}},
                         model="demo", data="sklearn:digits:test", max_samples=120)
    dataset = load_dataset(config.data, digits_handle.input_shape, 10, max_samples=120)
    predictions = predict(digits_handle, dataset)
    ctx = context_for(Context(config=config, handle=digits_handle, dataset=dataset,
                              predictions=predictions, workdir=tmp_path),
                      ["triage", "contrastive", "attribution"])
    with pytest.raises(ValueError, match="read-only"):
        ctx.steps.features.values[0, 0] = 1.0
    assert predictions.features.flags.writeable  # the prediction pass's own array is its own
    made = ctx.steps.saliency.made
    shown = min(3, int((~predictions.correct).sum()))
    assert shown and len(ctx.steps.saliency) == 2 * shown  # the contrastive maps, 2 classes each
    group = next(iter(made.values()))
    with pytest.raises(TypeError):
        group[(0, 0)] = None
    with pytest.raises(ValueError, match="read-only"):
        next(iter(group.values()))[0, 0, 0] = 1.0
    card = ctx.steps.card
    with pytest.raises(TypeError):
        card.card["gradient"] = {}
    with pytest.raises(TypeError):
        card.faithfulness["gradient"]["score"] = 1.0
    with pytest.raises(FrozenInstanceError):
        ctx.steps.card = None
    result = run_section("contrastive", ctx)
    assert result.error is None and result.summary["contrastive"]["method_from_card"]
    assert_read_only(result)
    drawn = run_section("attribution", ctx)  # its own copy of the card, the step's unchanged
    assert drawn.error is None
    assert drawn.summary["attribution"]["reliability"] == plain(card.card)


def test_a_step_that_breaks_fails_the_sections_that_read_it_with_its_reason(
        digits_handle, tmp_path, monkeypatch):
    """A step that raises on this model is kept as Failed: the section reading it becomes an
    error with the step's reason (its traceback in audit.log), the audit goes on."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.pipeline import context_for, run_section
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context
    from auditor.steps import features
    from auditor.steps.shared import Failed

    def broken(*args):
        raise ValueError("this model hides its last layer")

    monkeypatch.setattr(features, "make", broken)
    config = make_config(model="demo", data="sklearn:digits:test", max_samples=60)
    dataset = load_dataset(config.data, digits_handle.input_shape, 10, max_samples=60)
    ctx = context_for(Context(config=config, handle=digits_handle, dataset=dataset,
                              predictions=predict(digits_handle, dataset), workdir=tmp_path),
                      ["performance", "triage"])
    assert isinstance(ctx.steps.features, Failed)
    result = run_section("triage", ctx)
    assert "features step failed" in result.error and "hides its last layer" in result.error
    assert [c.status for c in result.checks] == ["error"]
    assert run_section("performance", ctx).error is None  # a section that does not read it
    assert "hides its last layer" in (tmp_path / "audit.log").read_text()
