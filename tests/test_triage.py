"""Mistake triage, measured on seeded self-tests: flipped labels are found by confident learning,
copied training images are found as leakage, a planted failure group is the top slice, a clean
audit flags few label errors and no leakage, and what cannot be measured says so."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits

from auditor.inputs.datasets import digits_split
from auditor.methods.triage.duplicates import _pixels, perceptual_hashes
from auditor.methods.triage.label_issues import find_label_issues
from auditor.methods.triage.slices import failure_slices
from auditor.predict.predictions import softmax

FLIP_SHARE = 0.03
COPIES = 20


@pytest.fixture(scope="module")
def digits_outputs(digits_handle, digits_test):
    """Logits and penultimate features of the demo model on the digits test split."""
    from auditor.inputs.layers import final_layer_input

    x, y = digits_test
    return np.asarray(digits_handle.logits(x)), final_layer_input(digits_handle)(x).numpy(), y


def _imagehash_phash(pixels) -> np.ndarray:
    import imagehash
    from PIL import Image

    return np.array([np.packbits(imagehash.phash(Image.fromarray(p)).hash.ravel()).view(">u8")[0]
                     for p in pixels], np.uint64)


def test_phash_is_imagehash_phash(digits_test):
    """imagehash's bits exactly: at the hash's own 32x32, and resized from RGB 64x48."""
    import tensorflow as tf

    grey = _pixels(digits_test[0][:200])
    assert np.array_equal(perceptual_hashes(grey), _imagehash_phash(grey))
    rgb = _pixels(tf.image.resize(np.repeat(digits_test[0][:100], 3, axis=-1), (64, 48)).numpy())
    assert np.array_equal(perceptual_hashes(rgb), _imagehash_phash(rgb))


@pytest.mark.parametrize(("images", "dims"), [(24, 300), (200, 30), (12, 12)])
def test_mahalanobis_is_ledoit_wolfs_without_a_features_by_features_inverse(images, dims):
    """The distances equal those under sklearn's LedoitWolf precision (its d x d pseudo-inverse,
    what triage computed before: most of a minute on VGG16's 4096 features), with fewer images
    than features, more, and a class of one image (a zero-variance direction)."""
    from sklearn.covariance import LedoitWolf

    from auditor.methods.triage.neighbours import unit_rows
    from auditor.methods.triage.ood import mahalanobis

    rng = np.random.default_rng(images)
    reference, query = rng.normal(size=(images, dims)), rng.normal(size=(7, dims))
    labels = np.r_[rng.integers(0, 3, images - 1), 3]
    unit, classes = unit_rows(reference), np.unique(labels)
    means = np.stack([unit[labels == c].mean(axis=0) for c in classes])
    centred = unit - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf(assume_centered=True).fit(centred).precision_
    gaps = unit_rows(query)[:, None] - means[None]
    expected = np.einsum("qcd,de,qce->qc", gaps, precision, gaps).min(axis=1)
    np.testing.assert_allclose(mahalanobis(query, reference, labels), expected, rtol=1e-6)



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_labels_are_found_by_confident_learning(digits_outputs, seed):
    logits, _, y = digits_outputs
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), round(FLIP_SHARE * len(y)), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    issues = find_label_issues(noisy, softmax(logits))
    hits = np.isin(issues.positions, flipped).sum()
    recall, precision = hits / len(flipped), hits / max(len(issues.positions), 1)
    print(f"seed {seed}: recall {recall:.2f}, precision {precision:.2f} "
          f"({len(issues.positions)} flagged, {len(flipped)} flipped)")
    assert recall >= 0.6 and precision >= 0.5
    assert abs(issues.expected - len(flipped)) <= len(flipped) // 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_labels_are_still_found_when_the_neighbours_must_confirm_them(digits_outputs,
                                                                              seed):
    """The same flips and the same bounds as above, with the neighbour vote and the model's
    confidence required, and the self-test run: a good model loses nothing."""
    from auditor.methods.triage.neighbours import nearest

    logits, features, y = digits_outputs
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(y), round(FLIP_SHARE * len(y)), replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    neighbours = nearest(features, features, 10, same_set=True)[1]
    issues = find_label_issues(noisy, softmax(logits), neighbours)
    hits = np.isin(issues.positions, flipped).sum()
    recall, precision = hits / len(flipped), hits / max(len(issues.positions), 1)
    print(f"seed {seed}: recall {recall:.2f}, precision {precision:.2f}, self-test recall "
          f"{issues.recall:.2f}")
    assert recall >= 0.6 and precision >= 0.5 and issues.measurable
    assert abs(issues.expected - len(flipped)) <= len(flipped) // 2


def test_a_weak_model_on_clean_labels_is_not_told_its_labels_are_wrong(tmp_path, digits_train):
    """The demo CNN after a fraction of an epoch (about 74% on the digits, whose labels are
    right): confident learning alone expects dozens of label errors; the triage says the count
    is not measurable at this accuracy, and calls no mistake a label error."""
    import keras

    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.demo import build_digits_cnn
    from auditor.inputs.models import load_model
    from auditor.pipeline import context_for
    from auditor.predict.predictions import predict
    from auditor.sections import triage
    from auditor.sections.base import Context

    keras.utils.set_random_seed(0)
    model = build_digits_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(digits_train[0][:400], digits_train[1][:400], batch_size=32, verbose=0)
    model.save(tmp_path / "weak.keras")
    handle = load_model(str(tmp_path / "weak.keras"), input_range="0-1")
    config = make_config({"model": handle.path, "data": "sklearn:digits:test"})
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes)
    p = predict(handle, dataset)
    assert 0.65 <= p.accuracy <= 0.8
    assert find_label_issues(p.labels, p.probs).expected > 0.03 * len(p.labels)  # as before
    ctx = context_for(Context(config=config, handle=handle, dataset=dataset, predictions=p,
                              workdir=tmp_path), ["triage"])
    result = triage.run(ctx, triage.Options(examples=0, gallery=0, slices_shown=0))
    check = next(c for c in result.checks if c.id == "triage.label_errors")
    assert check.status == "skipped", check.message
    assert "not measurable at this accuracy" in check.message and f"{p.accuracy:.1%}" in (
        check.message)
    summary = result.summary["triage"]
    assert summary["label_issues"] == [] and summary["verdict_counts"]["label_error"] == 0


def test_a_planted_failure_group_is_the_top_slice(digits_handle, digits_test):
    """A tenth of the 3s inverted: the model fails on them, and they make the top slice."""
    from auditor.inputs.layers import final_layer_input

    x, y = digits_test
    rng = np.random.default_rng(0)
    threes = np.flatnonzero(y == 3)
    planted = rng.choice(threes, len(threes) // 10, replace=False)
    x = x.copy()
    x[planted] = 1 - x[planted]
    correct = np.asarray(digits_handle.logits(x)).argmax(axis=1) == y
    features = final_layer_input(digits_handle)(x).numpy()
    top = failure_slices(features, y, correct)[0]
    assert top.label == 3
    assert np.isin(planted, top.indices).mean() >= 0.8
    assert np.isin(top.indices, planted).mean() >= 0.5
    assert top.ci[0] > 0.3


def _slices_of(handle, x, y):
    from auditor.inputs.layers import final_layer_input
    from auditor.methods.shortcuts.properties import image_properties
    from auditor.methods.triage.slices import all_slices

    correct = np.asarray(handle.logits(x)).argmax(axis=1) == y
    properties = image_properties(x)
    features = final_layer_input(handle)(x).numpy()
    found = all_slices(features, np.stack(list(properties.values()), axis=1), y, correct)
    return found, correct, properties


def test_a_planted_group_across_classes_is_the_top_slice_and_covers_most_of_it(digits_handle,
                                                                               digits_test):
    """40 inverted digits, 4 of every class, under a model trained on upright ones: the top
    slice lies across classes, holds most of them, and their brightness sets it apart."""
    from auditor.methods.triage.slices import distinct_properties

    x, y = digits_test
    rng = np.random.default_rng(0)
    planted = np.concatenate([rng.choice(np.flatnonzero(y == c), 4, replace=False)
                              for c in range(10)])
    x = x.copy()
    x[planted] = 1 - x[planted]
    found, correct, properties = _slices_of(digits_handle, x, y)
    assert correct[planted].mean() < 0.2
    top = found[0]
    print(f"top: {len(top.indices)} images, covers {np.isin(planted, top.indices).mean():.2f}, "
          f"pure {np.isin(top.indices, planted).mean():.2f}")
    assert top.label is None and len(np.unique(y[top.indices])) >= 8
    assert np.isin(planted, top.indices).mean() >= 0.8
    assert np.isin(top.indices, planted).mean() >= 0.8
    rest = np.setdiff1d(np.arange(len(y)), top.indices)
    described = distinct_properties(properties, top.indices, rest)
    assert described[0]["effect"] > 3 and described[0]["slice"] > described[0]["rest"]


def test_a_clean_dataset_gets_no_significant_large_slice_across_classes(digits_handle,
                                                                        digits_test):
    """The demo model on its clean test digits: no slice across classes whose gap's interval
    lies above 0 holds more than 5% of the images."""
    x, y = digits_test
    found, _, _ = _slices_of(digits_handle, x, y)
    across = [s for s in found if s.label is None]
    print([(len(s.indices), round(s.ci[0], 3)) for s in across])
    assert not [s for s in across if s.ci[0] > 0 and len(s.indices) > 0.05 * len(y)]


def _digits_npz(path, positions, extra=None):
    digits = load_digits()
    x = (digits.images / 16 * 255).round().astype(np.uint8)
    index = positions if extra is None else np.concatenate([positions, extra])
    np.savez(path, x=x[index], y=digits.target[index])
    return f"npz:{path}"


def _audit(monkeypatch, capsys, model, data, train, out):
    """`auditor audit` with --train-data, through the console entry point in this process (the
    command line's parsing and exit code are what it tests, not a fresh process: that costs a
    TensorFlow import, and tests/test_cli_audit.py runs one): (exit code, stderr, summary)."""
    from auditor.cli import main

    monkeypatch.setattr(sys, "argv", [
        "auditor", "audit", "--model", str(model), "--data", data, "--train-data", train,
        "--out", str(out), "--sections", "performance,triage", "--no-progress"])
    with pytest.raises(SystemExit) as stop:
        main()
    code = stop.value.code
    return code, capsys.readouterr().err, (json.loads((out / "summary.json").read_text())
                                           if code < 2 else None)


@pytest.fixture(scope="module")
def digits_splits():
    return digits_split(load_digits().target)


def test_copied_training_images_are_all_found_as_leakage(tmp_path, digits_model_path,
                                                         digits_splits, monkeypatch, capsys):
    train, test = digits_splits
    copied = np.random.default_rng(0).choice(len(train), COPIES, replace=False)
    data = _digits_npz(tmp_path / "audit.npz", test, extra=train[copied])
    code, stderr, summary = _audit(monkeypatch, capsys, digits_model_path, data,
                                   _digits_npz(tmp_path / "train.npz", train), tmp_path / "leaky")
    assert code == 1, stderr  # leakage past 1% of the audit fails
    found = {(leak["index"], leak["train_index"]) for leak in summary["triage"]["leakage"]}
    planted = {(len(test) + i, int(c)) for i, c in enumerate(copied)}
    assert planted <= found
    print(f"leakage: {len(planted & found)} of {COPIES} copies found, "
          f"{len(found - planted)} other pairs")
    check = next(c for c in summary["checks"] if c["id"] == "triage.leakage")
    assert check["status"] == "fail"


def test_a_clean_demo_audit_flags_few_label_errors_and_no_leakage(tmp_path, digits_model_path):
    """The demo's own data, with its training split as --train-data (in this process: the
    leakage test above goes through the CLI)."""
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    outcome = run_audit(make_config(
        {"model": str(digits_model_path), "data": "sklearn:digits:test"},
        train_data="sklearn:digits:train", sections=["performance", "triage"],
        out=str(tmp_path / "clean"), progress=False))
    assert outcome.exit_code == 0
    summary = outcome.summary
    triage = summary["triage"]
    assert triage["leakage"] == [] and triage["train_compared"] == 1078
    assert len(triage["label_issues"]) <= 0.01 * summary["data"]["n"]
    assert triage["ood"]["reference"] == "train"
    counts = triage["verdict_counts"]
    assert sum(counts.values()) == summary["misclassifications"]["count"] == len(
        triage["verdicts"])
    statuses = {c["id"]: c["status"] for c in summary["checks"] if c["section"] == "triage"}
    assert statuses["triage.leakage"] == "pass" and statuses["triage.label_errors"] == "pass"
    html = (tmp_path / "clean" / "report.html").read_text()
    for record in triage["verdicts"]:
        assert f'id="triage-{record["index"]}"' in html


def test_the_demo_report_shows_the_triage(demo_report):
    """The shared demo report (every section, 120 images) has the section and its keys."""
    summary = demo_report.summary
    triage = summary["triage"]
    for key in ("verdicts", "label_issues", "ece", "temperature", "duplicates", "leakage",
                "slices"):
        assert key in triage
    assert {r["verdict"] for r in triage["verdicts"]} <= {
        "label_error", "ambiguous", "out_of_distribution", "model_error"}
    html = (demo_report.out / "report.html").read_text()
    assert '<section id="triage"' in html and "Reliability diagram" in html
    assert html.index('id="performance"') < html.index('id="triage"') < html.index(
        'id="contrastive"')
    leakage = next(c for c in summary["checks"] if c["id"] == "triage.leakage")
    assert leakage["status"] == "skipped" and "--train-data" in leakage["message"]


def test_without_penultimate_features_the_feature_parts_are_skipped(tmp_path, digits_handle):
    """A model that cannot be split before its last layer: kNN, Mahalanobis, neighbour votes
    and slices are skipped with the reason, never passed; the rest still runs."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.predict.predictions import predict
    from auditor.sections import triage
    from auditor.sections.base import Context
    from auditor.steps.features import Features
    from auditor.steps.shared import Shared

    config = make_config({"model": digits_handle.path, "data": "sklearn:digits:test"},
                         max_samples=150)
    dataset = load_dataset(config.data, digits_handle.input_shape, digits_handle.num_classes,
                           max_samples=150)
    ctx = Context(config=config, handle=digits_handle, dataset=dataset,
                  predictions=predict(digits_handle, dataset), workdir=tmp_path,
                  steps=Shared(features=Features(None)))  # a model that cannot be split
    result = triage.run(ctx, triage.Options())
    skipped = result.summary["triage"]["skipped"]
    assert {"knn", "mahalanobis", "neighbours", "slices"} <= set(skipped)
    checks = {c.id: c for c in result.checks}
    assert checks["triage.slices"].status == "skipped"
    assert "penultimate" in checks["triage.slices"].message
    assert checks["triage.ece"].status in ("pass", "warn", "fail")
    detectors = result.summary["triage"]["ood"]["detectors"]
    assert detectors["energy"]["skipped"] is None and detectors["knn"]["skipped"]


def test_a_multi_label_temperature_undoes_a_known_overconfidence():
    """Labels drawn from sigmoid(z / 2) with logits z: the binary cross-entropy temperature
    is near 2, it lowers the pooled decisions' ECE, and it changes confidence, never the
    decisions (a threshold of 0.7 stays where it was)."""
    from auditor.methods.triage import calibration

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 3))
    labels = (rng.random(logits.shape) < 1 / (1 + np.exp(-logits / 2))).astype(np.int8)
    temperature = calibration.fit_label_temperature(logits, labels)
    assert 1.8 < temperature < 2.2
    cuts = np.full(3, np.log(0.7 / 0.3))
    assert (calibration.cross_fitted_label_ece(logits, labels, cuts)
            < calibration.label_ece(logits, labels, cuts) / 2)
    _, right_before = calibration.decisions(logits, labels, cuts)
    _, right_after = calibration.decisions(logits, labels, cuts, temperature)
    assert (right_before == right_after).all()


def test_a_sigmoid_label_and_a_two_class_softmax_of_the_same_probabilities_agree_on_verdicts():
    """One label at the 0.5 threshold is a yes/no decision: its verdicts and margins are those
    of a two-class softmax model giving the same probabilities (logits 0 and z), so
    'ambiguous' means the same top-2 margin for both: of 0.44, 0.47, 0.53 and 0.56, only 0.47
    and 0.53 are within a top-2 margin of 0.1 (|2p - 1| < 0.1); the distance from the
    threshold alone (|p - 0.5| < 0.1) took all four."""
    from auditor.predict.predictions import Predictions
    from auditor.sections.triage import label_verdicts, mistake_verdicts

    probs = np.array([0.44, 0.47, 0.53, 0.56, 0.2, 0.9])
    z = np.log(probs / (1 - probs)).astype(np.float32)
    given = (probs < 0.5).astype(np.int64)  # every answer wrong
    single = Predictions(np.stack([np.zeros_like(z), z], axis=1), given)
    multi = Predictions(z[:, None], given[:, None].astype(np.int8),
                        thresholds=np.array([0.5], np.float32))
    none = np.zeros(len(z), bool)
    args = (None, none, np.zeros(len(z), int), None, None, 5)
    by_class = mistake_verdicts(single, ["no", "yes"], *args)
    by_label = label_verdicts(multi, ["yes"], *args)
    assert [r["verdict"] for r in by_label] == [r["verdict"] for r in by_class] == [
        "model_error", "ambiguous", "ambiguous", "model_error", "model_error", "model_error"]
    assert np.allclose([r["margin"] for r in by_label], [r["margin"] for r in by_class])
    assert "within 0.05 of the threshold 0.5" in by_label[1]["reason"]


def test_a_label_s_ece_is_skipped_as_not_measurable_on_too_few_images():
    """A label carried by 10 of 1,000 images (fewer than MIN_LABEL_SIDE on one side), and a
    balanced label on 60 images, whose calibrated noise floor (its outcomes redrawn from its own
    probabilities) is over the warn bound, are skipped with the reason; the same balanced label
    on 1,000 images is judged. Its floor falls with the images, and a calibrated label scores
    under its own floor."""
    from auditor.methods.triage import calibration
    from auditor.sections.triage import MIN_LABEL_SIDE, label_ece_checks

    rng = np.random.default_rng(0)

    def label(images: int, carried: int) -> tuple[np.ndarray, np.ndarray]:
        logits = np.where(np.arange(images) < carried, rng.normal(2, 2, images),
                          rng.normal(-2, 2, images))[:, None]
        return logits, (rng.random(logits.shape) < 1 / (1 + np.exp(-logits))).astype(np.int8)

    def rows(logits, labels):
        found = calibration.label_calibration(logits, labels, np.zeros(1))
        return {"a": found[0]}

    logits, _ = label(1000, 10)
    rare = rows(logits, (np.arange(1000) < 10).astype(np.int8)[:, None])  # 10 carry it
    (check,) = label_ece_checks({}, rare, 1000)
    assert 10 < MIN_LABEL_SIDE and check.status == "skipped"
    assert "10 of 1000 images carry it" in check.message and "not measurable" in check.message
    small = rows(*label(60, 30))
    (check,) = label_ece_checks({}, small, 60)
    assert small["a"]["noise_floor"] >= 0.05 and check.status == "skipped"
    assert "perfectly calibrated" in check.message
    large = rows(*label(1000, 500))
    (check,) = label_ece_checks({}, large, 1000)
    assert check.status != "skipped" and check.value == large["a"]["ece"]
    assert large["a"]["noise_floor"] < small["a"]["noise_floor"]
    assert large["a"]["ece"] < large["a"]["noise_floor"]
