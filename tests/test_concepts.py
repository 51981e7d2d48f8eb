"""Neuron groups: the parts add up to the whole, the same seed gives the same groups, a planted
patch becomes a group on the patch that votes for its class, a meaningless direction is called
real no more often than the stated error rate, bad options stop before any work, and the
report shows the mistakes' rows and the dictionary."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import BACKDOOR_TARGET as TARGET  # the class the backdoor's patch points to

from auditor.concepts import neuron_groups
from auditor.methods.shortcuts import patterns as shortcuts


@pytest.fixture(scope="module")
def digits_sample(digits_test, digits_handle):
    x, y = digits_test
    return x[:96], y[:96]


@pytest.fixture(scope="module")
def backdoored_handle(backdoored_model_path):
    """The demo architecture trained BadNets-style (conftest's ``backdoored_model_path``)."""
    from auditor.inputs.models import load_model

    return load_model(backdoored_model_path)


def test_groups_and_residual_add_up_to_gradient_x_activation(digits_handle, digits_sample):
    from auditor.methods.attribution import attribute_layer

    x, y = digits_sample
    groups = neuron_groups(digits_handle, x, layer="conv2", groups=5, seed=0)
    assert groups.directions.shape == (5, 32) and groups.maps.shape == (len(x), 32, 32, 5)
    contributions, residual = groups.contributions(y), groups.residual(y)
    whole = attribute_layer(digits_handle, x, y, layer="conv2").sum(axis=(1, 2, 3))
    scale = np.abs(whole).max()
    np.testing.assert_allclose(contributions.sum(axis=1) + residual, whole, atol=1e-4 * scale)
    np.testing.assert_allclose(groups.attribution_maps(y).sum(axis=(1, 2)), contributions,
                               atol=1e-4 * scale)
    assert np.abs(residual).mean() < np.abs(whole).mean()  # the groups explain most of it


def test_the_same_seed_gives_the_same_groups(digits_handle, digits_sample):
    x, _ = digits_sample
    first = neuron_groups(digits_handle, x, groups=4, seed=3)
    again = neuron_groups(digits_handle, x, groups=4, seed=3)
    np.testing.assert_array_equal(first.directions, again.directions)
    np.testing.assert_array_equal(first.maps, again.maps)


def test_a_planted_patch_is_a_group_on_the_patch_voting_for_its_class(backdoored_handle,
                                                                      digits_test):
    from auditor.methods.concepts.shortcut import ON_MASK, planted_group

    x, y = digits_test
    others = np.flatnonzero(y != TARGET)[:48]
    marked, masks = shortcuts.patch(x[others[:24]])
    found = planted_group(backdoored_handle, marked, masks, TARGET, unmarked=x[others[24:]])
    assert found.found, found
    assert found.mass_ratio >= ON_MASK and found.votes_for == TARGET and found.contribution > 0


def test_a_meaningless_direction_is_called_real_at_the_stated_error_rate(digits_handle,
                                                                         digits_sample):
    """On the clean model, directions with their channels shuffled go through the same removal
    test as the groups: such a direction means nothing, so at most the error rate of them (one
    of twelve at 2.5%: binomial tail 4%) may be called real; the groups themselves are."""
    from auditor.methods.concepts.faithful import removal_tests

    x, y = digits_sample
    groups = neuron_groups(digits_handle, x, layer="conv3", groups=6, seed=0)
    rng = np.random.default_rng(7)
    targets = [(int(c), np.flatnonzero(y == c)[:8]) for c in (0, 1, 2, 3, 5, 7)]
    real = removal_tests(digits_handle, "conv3", groups.directions, x, groups.weights, targets)
    nulls = []
    for round_ in range(2):
        shuffled = np.stack([d[rng.permutation(len(d))] for d in groups.directions])
        nulls += removal_tests(digits_handle, "conv3", shuffled, x, groups.weights, targets,
                               seed=round_)
    assert sum(bool(m.real) for m in nulls) <= 1
    assert sum(bool(m.real) for m in real) >= 4


@pytest.mark.parametrize("table, words", [
    ('groups = 1', "'concepts.groups' must be an integer of at least 2"),
    ('layers = ["no_such_layer"]', "names layer 'no_such_layer', which model"),
    ('layers = ["features"]', "is not a spatial map"),
])
def test_bad_options_are_one_line_exit_2_before_any_work(tmp_path, monkeypatch, capsys,
                                                         digits_model_path, table, words):
    from auditor.cli import main

    def no_data(*args, **kwargs):
        raise AssertionError("the data was read before the options were checked")

    monkeypatch.setattr("auditor.inputs.datasets.load_dataset", no_data)
    spec = tmp_path / "spec.toml"
    spec.write_text(f'model = "{digits_model_path}"\ndata = "sklearn:digits:test"\n'
                    f'sections = ["concepts"]\n[concepts]\n{table}\n')
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["auditor", "audit", str(spec), "--out", str(out)])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and words in err, err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.slow
def test_the_report_shows_each_mistake_by_parts_the_dictionary_and_the_planted_copy(
        tmp_path, digits_model_path):
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    config = make_config({"concepts": {"sample": 60, "icon_steps": 8, "removal_images": 4,
                                       "survival_images": 8, "mistakes": 3},
                          "clever_hans": {"shortcuts": ["patch"], "control": False,
                                          "discovery": False, "methods": ["gradient"],
                                          "steps": 60}},
                         model=str(digits_model_path), data="sklearn:digits:test",
                         sections=["performance", "concepts", "clever_hans"],
                         out=str(tmp_path / "run"))
    outcome = run_audit(config)
    summary = json.loads((outcome.out / "summary.json").read_text())
    block = summary["concepts"]
    html = (outcome.out / "report.html").read_text()
    assert [layer["layer"] for layer in block["layers"]] == ["conv2", "conv3"]
    assert len(block["mistakes"]) == 3
    assert html.count('class="panel concepts-mistake"') == 3 * len(block["layers"])
    assert html.count("the picture of its dominant group") == 3 * len(block["layers"])
    for mistake in block["mistakes"]:
        assert f"#{mistake['index']}: predicted <strong>{mistake['pred']}</strong>" in html
    assert {c["id"] for c in summary["checks"]} >= {"concepts.reconstruction", "concepts.removal"}
    (patch,) = summary["clever_hans"]["injection"]  # its copy audited by the same method
    assert set(patch["concept_group"]) >= {"layer", "group", "mass_ratio", "votes_for", "found"}
    assert "a neuron group found it" in html


def test_a_model_whose_layers_cannot_be_read_is_skipped_not_failed(tmp_path):
    """A SavedModel folder has no layers to tap: the section says so, and the audit goes on."""
    from auditor.configure import make_config
    from auditor.inputs.demo import build_digits_cnn
    from auditor.pipeline import run_audit

    build_digits_cnn().export(str(tmp_path / "saved"), verbose=False)
    outcome = run_audit(make_config({"concepts": {"sample": 20}}, model=str(tmp_path / "saved"),
                                    data="sklearn:digits:test", sections=["concepts"],
                                    max_samples=40, out=str(tmp_path / "run"), progress=False))
    statuses = {c["id"]: c["status"] for c in outcome.summary["checks"]}
    assert statuses["concepts.reconstruction"] == statuses["concepts.removal"] == "skipped"
    assert "no layer with a spatial" in outcome.summary["concepts"]["skipped"]
    assert "Neuron groups were not computed" in (outcome.out / "report.html").read_text()


def test_a_layer_inside_keras_hubs_encoder_is_read_and_offset_during_the_pass(tmp_path):
    """keras-hub's ViT keeps its blocks inside one encoder layer, which no graph reaches: its
    last block's first LayerNorm is read while the pass runs (the groups' activations and
    their gradient) and offset there (the removal test), and the two agree: a small step
    added to its tokens moves the logit by the gradient's dot product with the step."""
    import tensorflow as tf
    from architectures import hub_vit_classifier

    from auditor.inputs.layers import activations_and_logits
    from auditor.inputs.models import load_model
    from auditor.methods.concepts.faithful import offset_logits

    hub_vit_classifier(classes=2).save(tmp_path / "vit.keras")
    handle = load_model(str(tmp_path / "vit.keras"), "0-1")
    layer = "vit_backbone/vit_encoder/transformer_block_2/ln_1"
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32))
    with tf.GradientTape() as tape:
        (tokens,), logits = activations_and_logits(handle, [layer])(x)
        score = tf.reduce_sum(logits[:, 0])
    grad = tape.gradient(score, tokens).numpy()
    assert tokens.shape == (2, 17, 32)  # the class token and 16 patch tokens
    np.testing.assert_allclose(logits.numpy(), handle.logits(x).numpy(), atol=1e-5)
    step = 1e-2 * rng.standard_normal(tokens.shape).astype(np.float32)
    moved = offset_logits(handle, layer)(x, -step).numpy()[:, 0]  # the offset is subtracted
    np.testing.assert_allclose(moved - logits.numpy()[:, 0], (grad * step).sum(axis=(1, 2)),
                               rtol=0.05, atol=1e-4)


def test_a_vision_transformer_gets_its_patch_tokens_grid_and_a_model_without_one_one_line():
    """keras-hub's ViT keeps its blocks inside one encoder layer: the groups are read inside
    it, at the tokens its last attention reads (the last block's first LayerNorm), on their
    grid with the class token set aside; a token model whose tokens tile no grid of the image
    says in one line that no 'concepts.layers' setting applies."""
    import keras
    from architectures import hub_vit

    from auditor.errors import ModelError
    from auditor.methods.concepts.layers import default_layers

    [(layer, reason)] = default_layers(hub_vit())
    assert layer.endswith("vit_encoder/transformer_block_2/ln_1") and "4x4 grid" in reason
    assert "inside the layer that holds its blocks" in reason
    assert "1 class or register token(s) set aside" in reason
    inputs = keras.Input((6, 10, 3))  # 7 tokens tile no grid of a 6 x 10 image
    tokens = keras.layers.Reshape((7, 4))(keras.layers.Dense(28)(keras.layers.Flatten()(inputs)))
    attended = keras.layers.MultiHeadAttention(1, 4)(tokens, tokens)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(attended)))
    with pytest.raises(ModelError) as info:
        default_layers(model)
    line = str(info.value)
    assert "\n" not in line and "no layer with a spatial" in line
    assert "no 'concepts.layers' setting applies" in line and "'rollout'" in line
