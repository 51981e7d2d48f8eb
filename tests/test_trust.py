"""Checkpoints trained elsewhere: probed input range, the heads users have, and degenerate
results reported as findings, never as passes (issue 12)."""

from __future__ import annotations

import html
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from auditor.configure import make_config
from auditor.errors import ModelError
from auditor.inputs.models import load_model
from auditor.pipeline import run_audit


def digits_8px(split: str):
    """The digits at their own 8x8 size, 0-1, split as the demo splits them."""
    from sklearn.datasets import load_digits

    from auditor.inputs.datasets import digits_split

    digits = load_digits()
    train, test = digits_split(digits.target)
    index = train if split == "train" else test
    return (digits.images[index] / 16.0).astype("float32")[..., None], digits.target[index]


def train_mlp(x, y, head, scale: float = 1.0, front=(), seed: int = 0, epochs: int = 5):
    """A small MLP with batch normalisation on 8x8 digits, fed ``x * scale`` (255: a model
    trained on raw pixels). Batch normalisation makes the scale matter, as in most CNNs: its
    statistics are those of the training pixels."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((8, 8, 1)), *front, keras.layers.Flatten(),
                              keras.layers.Dense(32), keras.layers.BatchNormalization(momentum=0.9),
                              keras.layers.ReLU(), *head])
    binary = head[-1].get_config().get("units") == 1
    loss = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    model.fit(x * scale, y, epochs=epochs, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def raw_pixel_model(tmp_path_factory):
    """Trained on 0-255 pixels with no Rescaling layer: nothing in the file says so."""
    x, y = digits_8px("train")
    model = train_mlp(x, y, [keras.layers.Dense(10, activation="softmax")], scale=255.0)
    path = tmp_path_factory.mktemp("raw") / "raw255.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def digit_mlp(tmp_path_factory):
    """A fair model of the 8x8 digits, trained on 0-1 pixels."""
    x, y = digits_8px("train")
    path = tmp_path_factory.mktemp("mlp") / "mlp.keras"
    train_mlp(x, y, [keras.layers.Dense(10, activation="softmax")]).save(path)
    return path


WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def word_folders(root):
    """The digits test split as PNG folders named in words: sorted, they are not in the
    model's output order (eight, five, four, ...)."""
    from PIL import Image

    x, y = digits_8px("test")
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / WORDS[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[..., 0] * 255).round().astype("uint8")).save(folder / f"{i}.png")
    return root


def audit(tmp_path, **spec):
    spec.setdefault("data", "sklearn:digits:test")
    spec.setdefault("sections", ["performance"])
    return run_audit(make_config(spec, out=str(tmp_path / "run"), progress=False))


def test_probe_finds_the_0_255_range_the_file_does_not_mention(raw_pixel_model, tmp_path):
    outcome = audit(tmp_path, model=str(raw_pixel_model))
    model = outcome.summary["model"]
    assert model["input_range"] == "0-255" and model["input_range_source"] == "probe"
    probe = {row["range"]: row["accuracy"] for row in model["input_range_probe"]}
    assert set(probe) == {"0-1", "0-255", "-1-1"}  # caffe and torch need RGB
    assert probe["0-255"] > 0.85 > probe["0-1"]
    assert outcome.summary["metrics"]["accuracy"] > 0.85
    check = next(c for c in outcome.summary["checks"] if c["id"] == "model.input_range")
    assert check["status"] == "pass"
    html = (outcome.out / "report.html").read_text()
    assert "Input range probe" in html and "0-255" in html
    written = json.loads((outcome.out / "summary.json").read_text())
    assert written["model"]["input_range_probe"] == model["input_range_probe"]
    # the right range led clearly at the first look allowed (100 images for a relabelling of
    # 10 classes, read in two batches of 50), so the probe stopped there, not at its 320 images
    assert written["model"]["input_range_probe_samples"] == 100
    assert check["message"].startswith("input range 0-255 chosen by probing 100 images")


def test_probe_reads_on_when_the_ranges_cannot_be_told_apart(tmp_path):
    """Each image standardised first: every candidate range gives (nearly) the same answers,
    so no range leads and the probe reads its whole sample, then warns."""
    x, y = digits_8px("train")
    front = [keras.layers.LayerNormalization(axis=(1, 2, 3))]
    path = tmp_path / "standardised.keras"
    train_mlp(x, y, [keras.layers.Dense(10, activation="softmax")], front=front).save(path)
    outcome = audit(tmp_path, model=str(path))
    assert outcome.summary["model"]["input_range_probe_samples"] == 320
    check = next(c for c in outcome.summary["checks"] if c["id"] == "model.input_range")
    assert check["status"] == "warn" and "cannot be told apart" in check["message"]
    # under a named budget the probe spends at most what it costs on the reference model: with
    # that cap made tiny (as on a model far dearer than the reference), it reads on only to its
    # first look (10 images per class, two batches of 50), and says it could not tell
    import auditor.predict.input_range as probing
    from auditor.inputs.datasets import load_dataset

    handle = load_model(str(path))
    data = load_dataset("sklearn:digits:test", handle.input_shape, handle.num_classes)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probing, "probe_kernels", lambda candidates: 1e-9)
        capped = probing.probe_input_range(handle, data, budgeted=True)
    assert capped.samples == 100
    assert probing.input_range_check(capped, False, None).status == "warn"
    assert probing.probe_kernels(5) == 320 * 5 * 0.5 * 5.0  # the reference model's probe


def test_the_clear_margin_narrows_with_images_and_widens_with_looks():
    from auditor.predict.input_range import _leads_clearly, clear_margin

    # 5 RGB candidates, 4 looks: a lead of half the images after 64, a third after 128
    assert clear_margin(64, 5, 4) == pytest.approx(0.48, abs=0.01)
    assert clear_margin(128, 5, 4) == pytest.approx(0.34, abs=0.01)
    assert clear_margin(128, 5, 8) > clear_margin(128, 5, 4) > clear_margin(128, 3, 4)
    assert _leads_clearly([0.95, 0.12, 0.10], 128, 5)  # right against wrong ranges
    assert not _leads_clearly([0.95, 0.80, 0.10], 128, 5)  # two close ranges: read on


def test_the_probe_runs_the_forward_pass_and_the_prediction_pass_takes_its_rows(digits_handle):
    """The probe calls the handle's own forward pass (each candidate's images mapped into the
    handle's display space: no trace of its own) and, its range being the handle's, hands the
    rows of the images it read to the prediction pass, which computes only the others: the
    same logits and features as a whole pass, and the same decisions as each candidate's own
    transform would give."""
    import dataclasses

    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import input_transform
    from auditor.predict.input_range import probe_input_range, through_own
    from auditor.predict.predictions import predict

    handle = dataclasses.replace(digits_handle, compiled=dict(digits_handle.compiled))
    data = load_dataset("sklearn:digits:test", handle.input_shape, handle.num_classes,
                        max_samples=150, seed=0)
    whole = predict(handle, data)
    result = probe_input_range(handle, data, samples=100)  # a part of the data
    assert result.chosen == "0-1" and result.known is not None
    positions, rows = result.known
    assert 0 < len(positions) == result.samples < data.n
    reused = predict(handle, data, known=result.known)
    np.testing.assert_allclose(reused.logits, whole.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reused.features, whole.features, rtol=1e-5, atol=1e-4)
    # a candidate's images seen through the handle's transform give the model its inputs
    own, other = handle.transform, input_transform("0-255", 1)
    x = data.images(positions[:4])
    np.testing.assert_allclose(own.to_model(through_own(own, other, x)), other.to_model(x),
                               rtol=1e-5)


def test_an_explicit_range_skips_the_probe_and_a_wrong_one_is_a_finding(raw_pixel_model,
                                                                         tmp_path):
    outcome = audit(tmp_path, model=str(raw_pixel_model), input_range="0-1")
    model = outcome.summary["model"]
    assert model["input_range_source"] == "flag" and model["input_range_probe"] is None
    ids = {c["id"]: c for c in outcome.summary["checks"]}
    assert "model.input_range" not in ids
    assert outcome.summary["verdict"] == "fail"  # at 0-1 the model is at chance


def test_probe_overrides_a_backbone_name_hint_and_says_so(tmp_path):
    """The name says MobileNetV2 (whose own mode is -1-1), but the model was trained on 0-1."""
    x, y = digits_8px("train")
    model = train_mlp(x, y, [keras.layers.Dense(10, activation="softmax")])
    model.name = "mobilenetv2_finetuned"
    path = tmp_path / "named.keras"
    model.save(path)
    outcome = audit(tmp_path, model=str(path))
    block = outcome.summary["model"]
    assert block["input_range_hint"]["range"] == "mobilenet_v2"
    assert block["input_range"] == "0-1" and block["input_range_hint"]["overridden"]
    assert [row["range"] for row in block["input_range_probe"] if row["hint"]] == ["-1-1"]
    check = next(c for c in outcome.summary["checks"] if c["id"] == "model.input_range")
    assert "mobilenetv2_finetuned" in check["message"] and "said mobilenet_v2" in check["message"]
    assert "The probe overrides the model's hint" in (outcome.out / "report.html").read_text()


def test_binary_sigmoid_model_is_audited_as_two_classes(tmp_path):
    from sklearn.metrics import accuracy_score

    x, y = digits_8px("train")
    model = train_mlp(x, (y >= 5).astype(int), [keras.layers.Dense(1, activation="sigmoid")])
    path = tmp_path / "binary.keras"
    model.save(path)
    xt, yt = digits_8px("test")
    data = tmp_path / "binary.npz"
    np.savez(data, x=xt, y=(yt >= 5).astype(int), class_names=np.array(["low", "high"]))
    outcome = audit(tmp_path, model=str(path), data=f"npz:{data}",
                    sections=["performance", "contrastive"])
    summary = outcome.summary
    assert summary["model"]["output"] == "binary logit" and summary["model"]["num_classes"] == 2
    expected = accuracy_score((yt >= 5).astype(int),
                              (model.predict(xt, verbose=0)[:, 0] > 0.5).astype(int))
    assert summary["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert set(summary["metrics"]["per_class"]) == {"low", "high"}
    handle = load_model(str(path))
    probs = keras.ops.softmax(handle.logits(xt[:8])).numpy()[:, 1]
    np.testing.assert_allclose(probs, model(xt[:8]).numpy()[:, 0], atol=1e-6)


@pytest.mark.parametrize("head, output", [
    ([keras.layers.Dense(10), keras.layers.Softmax()], "softmax stripped"),
    ([keras.layers.Dense(10, activation="relu")], "relu outputs"),
    ([keras.layers.Dense(10)], "logits"),
])
def test_heads_load_with_their_logits(tmp_path, head, output):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), *head])
    path = tmp_path / "head.keras"
    model.save(path)
    handle = load_model(str(path))
    x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype("float32")
    assert handle.output == output
    logits = handle.logits(x).numpy()
    if output == "softmax stripped":
        assert not np.allclose(logits.sum(axis=1), 1.0)  # logits, not probabilities
        np.testing.assert_allclose(keras.ops.softmax(logits).numpy(), model(x).numpy(),
                                   atol=1e-6)
    else:
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-6)


def test_multi_output_model_needs_output_named(tmp_path):
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(10, name="digit")(flat),
                                 keras.layers.Dense(4, name="box")(flat)])
    path = tmp_path / "two.keras"
    model.save(path)
    with pytest.raises(ModelError, match=r"2 outputs \(digit, box\).*--output NAME"):
        load_model(str(path))
    with pytest.raises(ModelError, match="no output 'label'"):
        load_model(str(path), output="label")
    assert load_model(str(path), output="digit").num_classes == 10


TF_KERAS_SCRIPT = """
import sys
import numpy as np
import tf_keras
model = tf_keras.Sequential([tf_keras.Input((8, 8, 1)), tf_keras.layers.Conv2D(4, 3,
    activation="relu"), tf_keras.layers.Flatten(), tf_keras.layers.Dense(10,
    activation="softmax")])
model.save(sys.argv[1])
x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 1)).astype("float32")
np.save(sys.argv[2], model(x).numpy())
"""


def test_keras2_h5_written_by_tf_keras_loads(tmp_path):
    """tf-keras and Keras 3 do not share a process cleanly: the file is written in another."""
    pytest.importorskip("tf_keras")
    path, expected = tmp_path / "keras2.h5", tmp_path / "expected.npy"
    subprocess.run([sys.executable, "-c", TF_KERAS_SCRIPT, str(path), str(expected)],
                   check=True, capture_output=True, timeout=120)
    handle = load_model(str(path))
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 1)).astype("float32")
    assert handle.output == "softmax stripped"
    np.testing.assert_allclose(keras.ops.softmax(handle.logits(x)).numpy(), np.load(expected),
                               atol=1e-5)


def test_folders_in_another_class_order_are_named_with_the_fix(digit_mlp, tmp_path):
    folders = word_folders(tmp_path / "words")
    outcome = audit(tmp_path / "a", model=str(digit_mlp), data=str(folders))
    checks = {c["id"]: c for c in outcome.summary["checks"]}
    assert checks["class_order"]["status"] == "fail"
    assert json.dumps(WORDS) in checks["class_order"]["message"]
    assert outcome.summary["metrics"]["class_order"]["class_names"] == WORDS
    html = (outcome.out / "report.html").read_text()
    assert "class order does not match" in html.split('class="banner-sentence"')[1][:600]
    fixed = audit(tmp_path / "b", model=str(digit_mlp), data=str(folders), class_names=WORDS)
    checks = {c["id"]: c for c in fixed.summary["checks"]}
    assert checks["class_order"]["status"] == "pass" and checks["kappa"]["status"] == "pass"
    assert fixed.summary["metrics"]["accuracy"] > 0.85


def test_a_fair_model_raises_no_health_finding_and_its_check_ids_are_declared(digit_mlp,
                                                                               tmp_path):
    from auditor.sections import check_patterns, is_known_check

    outcome = audit(tmp_path, model=str(digit_mlp), sections=["performance", "counterfactuals"],
                    counterfactuals={"mistakes": 4, "steps": 10})
    checks = {c["id"]: c for c in outcome.summary["checks"]}
    for check_id in ("accuracy", "kappa", "prediction_spread", "logit_spread", "class_order",
                     "model.input_range"):
        assert checks[check_id]["status"] == "pass", checks[check_id]["message"]
    assert all(is_known_check(check_id, check_patterns()) for check_id in checks)


def test_logits_apart_by_less_than_float32_rounding_are_the_first_finding(digit_mlp, tmp_path):
    """The fair model's head scaled by 1e-9: the same answers, but logits that differ between
    classes by about 1e-8, below float32's epsilon (a random MobileNetV2 at 32 px: 1.7e-12).
    The reader is told first that every map and figure is noise; the fair model's logits pass
    (the test above)."""
    model = keras.models.load_model(digit_mlp)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 1e-9, bias * 1e-9])
    model.save(tmp_path / "faint.keras")
    outcome = audit(tmp_path, model=str(tmp_path / "faint.keras"), input_range="0-1")
    checks = {c["id"]: c for c in outcome.summary["checks"]}
    spread = outcome.summary["metrics"]["logit_spread"]
    assert 0 < spread["median"] < spread["resolution"] and spread["share_at_rounding"] > 0.9
    assert checks["logit_spread"]["status"] == "fail" and outcome.exit_code == 1
    assert checks["kappa"]["status"] == "pass"  # the answers are the fair model's
    page = html.unescape((outcome.out / "report.html").read_text())
    banner = page.split('class="banner-sentence"')[1][:900]
    assert "below float32's rounding" in banner and "read them as noise" in banner


def test_dead_relu_head_is_audited_and_its_collapse_is_a_finding(digit_mlp, tmp_path):
    """A ReLU head whose units are all dead on the data: every score is 0, so every prediction
    is the first class. The audit runs; nothing it measures reads as a pass, and the
    counterfactual search, which no gradient leads, says it measured nothing."""
    model = keras.models.load_model(digit_mlp)
    head = keras.Sequential([keras.Input((8, 8, 1)), *model.layers[:-1],
                             keras.layers.Dense(10, activation="relu")])
    kernel, _ = model.layers[-1].get_weights()
    head.layers[-1].set_weights([kernel, np.full(10, -1e3, "float32")])
    path = tmp_path / "dead.keras"
    head.save(path)
    outcome = audit(tmp_path, model=str(path), input_range="0-1", max_samples=100,
                    sections=["performance", "contrastive", "counterfactuals"],
                    counterfactuals={"mistakes": 4, "steps": 10})
    summary = outcome.summary
    assert summary["model"]["output"] == "relu outputs"
    checks = {c["id"]: c for c in summary["checks"]}
    for check_id in ("accuracy", "kappa", "prediction_spread"):
        assert checks[check_id]["status"] == "fail", check_id
    counterfactual = checks["counterfactuals.success_rate"]  # no gradient: nothing measured
    assert counterfactual["status"] == "skipped", counterfactual["message"]
    assert "not measurable" in counterfactual["message"]
    assert summary["verdict"] == "fail" and outcome.exit_code == 1


def test_contrastive_difference_of_a_nonlinear_method_is_the_map_of_the_difference(
        digits_handle, digits_test):
    """Saliency is |gradient|: |grad(a - b)| is not |grad a| - |grad b|, so the panel must
    explain the difference of scores itself, and say so."""
    from auditor.methods.attribution import attribute
    from auditor.sections.contrastive import MAP_OF_DIFFERENCE, contrastive_maps

    x, y = digits_test[0][:12], digits_test[1][:12]
    preds = (y + 1) % 10
    for_pred, for_true, diff, how = contrastive_maps(digits_handle, x, preds, y, "saliency")
    assert how == MAP_OF_DIFFERENCE
    np.testing.assert_allclose(diff, attribute(digits_handle, x, preds, "saliency", contrast=y),
                               atol=1e-6)
    assert not np.allclose(diff, for_pred - for_true, atol=1e-3)
    assert (diff >= 0).all()  # a rectified map of the difference, not a signed subtraction


def test_completeness_is_not_measurable_when_the_score_barely_moves(tmp_path):
    """Tiny weights against the biases: the score gap is 3e-4 of the scores' size. All-zero
    maps used to score as complete within 3% against the absolute floor of 1e-6."""
    from auditor.methods.attribution.integrated_gradients import completeness

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.layers[-1].set_weights([np.full((64, 3), 1e-9, "float32"),
                                  np.array([1e-4, 2e-4, 3e-4], "float32")])
    model.save(tmp_path / "flat.keras")
    handle = load_model(str(tmp_path / "flat.keras"), input_range="0-1")
    x = np.random.default_rng(0).uniform(0, 1, (6, 8, 8, 1)).astype("float32")
    errors, gaps = completeness(handle, x, np.zeros(6, int), np.zeros_like(x))
    assert np.isnan(errors).all()
    assert 0 < np.abs(gaps).max() < 1e-6


@pytest.mark.parametrize("table, words", [
    ({"robustness": {"steps": 0}}, "'robustness.samples' and 'robustness.steps'"),
    ({"contrastive": {"examples": -3}}, "'contrastive.examples' must be at least 0"),
    ({"attribution": {"methods": ["gradient", "gradcamm"]}}, "unknown method 'gradcamm'"),
    ({"attribution": {"method_options": {"smoothgrad": {"sample": 4}}}}, "no option 'sample'"),
    ({"featureviz": {"objective": "logits"}}, "'featureviz.objective' must be one of"),
    ({"counterfactuals": {"penalty": "l3"}}, "'counterfactuals.penalty' must be one of"),
    ({"clever_hans": {"shortcuts": ["pach"]}}, "unknown shortcut 'pach'"),
    ({"checks": {"robustnes": {"accuracy": {"warn_below": 0.5}}}},
     "unknown check '[checks.robustnes.accuracy]'"),
    ({"checks": {"accuracy": {"warn_belwo": 0.5}}}, "unknown key 'checks.accuracy.warn_belwo'"),
    ({"input_range": "0-256"}, "unknown input_range '0-256'"),
])
def test_spec_errors_are_config_errors_before_any_work(table, words):
    """The model path does not exist: the error must come from the spec, not from loading."""
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_config({"model": "/nowhere/model.keras", **table})
    assert words in str(caught.value)


def test_cli_fails_on_the_last_sections_table_before_reading_the_model(tmp_path):
    spec = tmp_path / "audit.toml"
    spec.write_text('model = "missing.keras"\ndata = "sklearn:digits:test"\n\n'
                    "[robustness]\nepsilons = []\n")
    done = subprocess.run([sys.executable, "-m", "auditor", "audit", str(spec), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: 'robustness.epsilons'")
    assert "missing.keras" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("classes", [(3, 8), (1, 7, 9)])
def test_a_constant_model_on_few_classes_fails_the_share_check_and_a_healthy_one_passes(
        digits_handle, digits_test, classes):
    """On two or three classes the effective-number ratio lets a model that answers one class
    for everything pass or only warn; the largest predicted share against the data's fails it.
    The healthy model is the demo CNN restricted to the same classes."""
    from auditor.sections.performance import health_checks, health_metrics

    x, y = digits_test
    keep = np.isin(y, classes)
    labels = np.searchsorted(classes, y[keep])
    healthy = np.asarray(digits_handle.logits(x[keep]))[:, list(classes)].argmax(axis=1)
    names = [str(c) for c in classes]
    for preds, status in ((np.zeros_like(labels), "fail"), (healthy, "pass")):
        checks = {c.id: c for c in health_checks(health_metrics(labels, preds, names), {})}
        assert checks["prediction_share"].status == status, checks["prediction_share"].message
    assert checks["prediction_spread"].status == "pass"
