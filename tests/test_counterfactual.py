"""Counterfactuals on the demo CNN's real mistakes, the rank agreement, and the section."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from auditor.errors import AuditorError
from auditor.methods.agreement import rank_correlation
from auditor.methods.counterfactual import counterfactuals
from auditor.methods.featureviz.objectives import image_total_variation


@pytest.fixture(scope="module")
def mistakes(digits_handle, digits_test):
    """Every test image the demo model gets wrong, with its true class."""
    x, y = digits_test
    wrong = np.asarray(digits_handle.logits_fn(x)).argmax(axis=1) != y
    assert wrong.sum() >= 10  # enough mistakes for the rates below to mean something
    return x[wrong], y[wrong]


@pytest.fixture(scope="module")
def found(digits_handle, mistakes):
    x, y = mistakes
    return counterfactuals(digits_handle, x, y)


def test_counterfactuals_fix_at_least_90_percent_of_the_demo_models_mistakes(found, mistakes):
    assert found.success.mean() >= 0.9
    after = found.probs_after.argmax(axis=1)
    assert np.array_equal(after == mistakes[1], found.success)
    assert np.all(found.probs_before.argmax(axis=1) != mistakes[1])


def test_counterfactuals_are_closer_than_the_nearest_training_image_of_the_true_class(
        found, mistakes, digits_train):
    x, y = mistakes
    train_x, train_y = digits_train
    flat = train_x.reshape(len(train_x), -1)
    nearest = np.array([np.sqrt(((flat[train_y == c] - image.ravel()) ** 2).sum(axis=1)).min()
                        for image, c in zip(x, y, strict=True)])
    ok = found.success
    assert np.all(found.l2[ok] < nearest[ok])
    assert found.l2[ok].mean() < 0.5 * nearest[ok].mean()


def test_counterfactual_pixels_stay_valid_and_failures_leave_the_image_unchanged(found):
    assert found.counterfactual.min() >= 0.0 and found.counterfactual.max() <= 1.0
    unchanged = np.all(found.delta.reshape(len(found.delta), -1) == 0, axis=1)
    assert np.all(unchanged[~found.success])
    assert not np.any(unchanged[found.success])


def test_total_variation_makes_the_change_a_compact_shape(digits_handle, mistakes, found):
    x, y = mistakes
    without = counterfactuals(digits_handle, x, y, tv_weight=0.0)
    both = found.success & without.success

    def roughness(result):  # total variation per unit of change
        tv = np.asarray(image_total_variation(result.delta[both], total=True))
        return tv / result.l1[both]

    assert np.median(roughness(found)) < 0.8 * np.median(roughness(without))


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_both_penalties_find_counterfactuals(digits_handle, mistakes, penalty):
    x, y = mistakes
    result = counterfactuals(digits_handle, x[:6], y[:6], penalty=penalty, steps=150)
    assert result.success.mean() >= 0.8


def test_bad_counterfactual_options_are_clear_errors(digits_handle, mistakes):
    x, y = mistakes
    with pytest.raises(AuditorError, match="penalty 'l3'"):
        counterfactuals(digits_handle, x[:1], y[:1], penalty="l3")
    with pytest.raises(AuditorError, match="at least 1 step"):
        counterfactuals(digits_handle, x[:1], y[:1], steps=0)


def test_rank_correlation_matches_scipy_row_by_row():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8, 8))
    b = a + rng.normal(size=a.shape)
    b[0, :4] = 0  # ties
    expected = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(5)]
    assert np.allclose(rank_correlation(a, b), expected)
    assert np.allclose(rank_correlation(a, a), 1.0)
    assert np.isnan(rank_correlation(a[:1], np.zeros_like(a[:1])))[0]


@pytest.fixture(scope="module")
def context(digits_handle, digits_test):
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context

    config = make_config(model="demo", data="sklearn:digits:test")
    dataset = load_dataset(config.data, digits_handle.input_shape, digits_handle.num_classes)
    return Context(config, digits_handle, dataset, predict(digits_handle, dataset), Path("."))


def test_section_reports_the_contract_keys_and_reuses_the_contrastive_maps(context):
    from auditor.report.views import build_view
    from auditor.sections import counterfactuals as section

    options = section.Options(mistakes=6, steps=150, gallery=2)
    fresh = section.run(context, options)
    summary = fresh.summary["counterfactuals"]
    assert summary["count"] == 6 and summary["success_rate"] >= 0.8
    assert summary["mean_l2"] > 0 and summary["mean_l1"] > summary["mean_l2"]
    assert -1 <= summary["saliency_agreement"] <= 1
    shown = build_view(fresh, context.dataset)["examples"]
    assert len(shown) == 2 and shown[0]["figure"].startswith("data:image/png;base64,")
    assert fresh.checks[0].id == "counterfactuals.success_rate"
    assert fresh.checks[0].kind == "model"


def test_the_mistakes_maps_are_computed_once_per_run(context, monkeypatch):
    """Triage, contrastive and counterfactuals explain the same mistakes: the saliency step
    makes the maps the last two declare once, before them, and every section reads them."""
    import auditor.methods.attribution as attribution
    from auditor.configure import make_config
    from auditor.methods.topk import most_confident_mistakes
    from auditor.pipeline import context_for
    from auditor.sections import contrastive, counterfactuals, triage

    made, real = [], attribution.attribute

    def counted(handle, x, targets, method="gradient", **options):
        contrast = options.get("contrast")
        made.extend((method, hashlib.sha1(image.tobytes()).hexdigest(), int(targets[i]),
                     -1 if contrast is None else int(contrast[i]))
                    for i, image in enumerate(np.asarray(x, np.float32)))
        return real(handle, x, targets, method, **options)

    monkeypatch.setattr(attribution, "attribute", counted)
    config = make_config({"contrastive": {"examples": 6, "method": "gradient"},
                          "counterfactuals": {"mistakes": 6, "steps": 20, "gallery": 1}},
                         model="demo")
    ctx = context_for(replace(context, config=config), ["triage", "contrastive",
                                                        "counterfactuals"])
    # predicted and true class of each (contrastive), the gradient of their difference
    # (counterfactuals: one backward pass each)
    assert len(made) == len(set(made)) == 18
    mistakes = most_confident_mistakes(ctx.predictions, 6)
    triage.figure_saliency(ctx, mistakes, ctx.dataset.images(mistakes), [], [], "gradient")
    contrastive.run(ctx, ctx.options["contrastive"])
    counterfactuals.run(ctx, ctx.options["counterfactuals"])
    assert len(made) == 18  # every section read them


def test_a_model_without_mistakes_gets_an_empty_section_that_still_renders(context):
    from dataclasses import replace

    from auditor.predict.predictions import Predictions
    from auditor.report.render import environment
    from auditor.report.views import build_view
    from auditor.sections import counterfactuals as section

    labels = context.predictions.labels
    perfect = Predictions(logits=np.eye(10, dtype=np.float32)[labels] * 10, labels=labels)
    result = section.run(replace(context, predictions=perfect), section.Options())
    assert result.summary["counterfactuals"]["count"] == 0
    assert result.summary["counterfactuals"]["success_rate"] is None and not result.checks
    result = replace(result, view=build_view(result, context.dataset))
    html = environment().get_template("sections/counterfactuals.html").render(section=result)
    assert "no mistakes" in html


def test_a_signal_noted_during_the_search_stops_it_after_that_step(digits_handle, mistakes,
                                                                   signal_in_gradient):
    """SIGTERM's handler runs only between compiled calls: the search stops after the step in
    which the signal came (its gradient call)."""
    from auditor.errors import Interrupted

    x, y = mistakes[0][:3], mistakes[1][:3]
    steps = signal_in_gradient(digits_handle)
    with pytest.raises(Interrupted):
        counterfactuals(digits_handle, x, y, steps=500)
    assert steps == [3]


def only(found, rows):
    """The searches ``rows`` of ``found``, as if only they had been run."""
    from dataclasses import fields

    return type(found)(*(getattr(found, f.name)[rows] for f in fields(found)))


@pytest.fixture(scope="module")
def random_cnn(tmp_path_factory):
    """A tiny CNN of the digits' shape with its random initial weights, saved as a user's."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([keras.Input((32, 32, 1)), layers.Conv2D(8, 3, activation="relu"),
                              layers.MaxPooling2D(), layers.Conv2D(16, 3, activation="relu"),
                              layers.GlobalAveragePooling2D(), layers.Dense(10)])
    path = tmp_path_factory.mktemp("random") / "random.keras"
    model.save(path)
    return path


def test_a_random_nets_search_held_by_the_penalty_is_not_measurable_and_shows_in_the_report(
        random_cnn, tmp_path):
    """A random net's input gradient is tiny beside the size penalty: each search's first step
    raises the margin, then the penalty holds it. That says nothing about the model: skipped,
    never a failing verdict; with no penalty the same searches do move."""
    from click.testing import CliRunner

    from auditor.cli import cli
    from auditor.inputs.models import load_model
    from auditor.sections import counterfactuals as section

    out = tmp_path / "run"
    done = CliRunner().invoke(cli, [
        "audit", "--model", str(random_cnn), "--data", "sklearn:digits:test", "--out", str(out),
        "--sections", "counterfactuals", "--input-range", "0-1", "--max-samples", "60",
        "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    check = next(c for c in summary["checks"] if c["id"] == "counterfactuals.success_rate")
    assert check["status"] == "skipped", check["message"]
    assert "found for 0 of" in check["message"] and "not measurable" in check["message"]
    assert summary["counterfactuals"]["moved"] == 0
    assert "not measurable, the size penalty held every search" in (
        out / "report.html").read_text()
    assert done.exit_code == 0, done.output

    handle = load_model(str(random_cnn), input_range="0-1")
    x, y = digits_images_wrong(handle, 6)
    free = counterfactuals(handle, x, y, steps=50, weight=0.0, tv_weight=0.0)
    assert free.moved.all()  # without the penalty, the gradient leads on
    assert section.success_check(free, {}, section.Options()).status != "skipped"


def digits_images_wrong(handle, count):
    from auditor.inputs.demo import digits_images

    x, y = digits_images("test")
    wrong = np.asarray(handle.logits_fn(x)).argmax(axis=1) != y
    return x[wrong][:count], y[wrong][:count]


def test_on_the_trained_model_a_search_that_moved_and_fell_short_is_judged_by_its_bounds(
        digits_handle, mistakes, found):
    """The trained demo CNN: the default search passes; searches stopped after three steps
    rose past their first step and still fell short: that measured the model (not a search
    the penalty held, not a crash), so none found warns by the check's default bound and
    fails by a spec's."""
    from auditor.sections import counterfactuals as section

    options = section.Options()
    assert section.success_check(found, {}, options).status == "pass"
    assert found.moved.all()
    x, y = mistakes
    logits = np.asarray(digits_handle.logits_fn(x))
    rows = np.arange(len(y))
    others = np.where(np.eye(10, dtype=bool)[y], -np.inf, logits).max(axis=1)
    assert np.allclose(found.start, logits[rows, y] - others, atol=1e-4)  # the trace's start
    short = counterfactuals(digits_handle, x, y, steps=3)
    failed = only(short, ~short.success)
    assert len(failed.success) >= 2 and failed.moved.any()
    check = section.success_check(failed, {}, options)
    assert check.status == "warn" and "moved towards the true class" in check.message
    assert check.value == 0.0 and check.gated
    spec = {"counterfactuals.success_rate": {"fail_below": 0.2}}
    assert section.success_check(failed, spec, options).status == "fail"


@pytest.mark.parametrize("start, stepped, reached, status", [
    (-1.0, -0.99, -0.99, "skipped"),  # held by the penalty after a first step that rose
    (-1.0, -0.99, -0.5, "warn"),  # moved past its first step and fell short: measured
    (0.0, 0.0, 0.0, "skipped"),  # a dead head: nothing rose, not measurable
    (-8e-12, -8e-12, -6e-12, "skipped"),  # logits of 1e-11: a rise of 1e-12 is rounding
    (-1.0, -np.inf, -1.0, "skipped"),  # a single step leaves no trace
])
def test_no_counterfactual_found_is_judged_from_the_search_trace(start, stepped, reached,
                                                                 status):
    from auditor.methods.counterfactual import Counterfactuals
    from auditor.sections import counterfactuals as section

    images = np.zeros((2, 4, 4, 1), np.float32)
    probs = np.full((2, 2), 0.5, np.float32)
    trace = [np.full(2, v, np.float32) for v in (start, stepped, reached)]
    found = Counterfactuals(images, images, np.zeros(2, int), np.zeros(2, bool), probs, probs,
                            *trace)
    check = section.success_check(found, {}, section.Options())
    assert check.status == status
    assert ("not measurable" in check.message) == (status == "skipped")
    assert not check.gated if status == "skipped" else check.gated
