"""Multi-label models: several sigmoid outputs and multi-hot labels, audited per label.

The model is a small seeded MLP trained in a few seconds on the packaged digits, each image
labelled with three attributes of its digit (even, at least 5, written with a loop), so that an
image carries none, one or several labels. Noise planted on one label of the audited data
shows on that label and on no other.
"""

from __future__ import annotations

import html
import json

import numpy as np
import pytest

from auditor.sections import section_module

LABELS = ("even", "big", "round")
ROUND = (0, 6, 8, 9)
NOISY = "round"
NOISE = 0.3  # share of the audited images whose 'round' label is flipped


def attributes(digits: np.ndarray) -> np.ndarray:
    """Multi-hot rows (N, 3): even, at least 5, written with a loop."""
    return np.stack([digits % 2 == 0, digits >= 5, np.isin(digits, ROUND)], axis=1).astype(
        np.int8)


@pytest.fixture(scope="session")
def multilabel_model_path(tmp_path_factory, digits_train):
    """Dense(3, sigmoid) over the 32x32 digits, 40 epochs (a few CPU-seconds)."""
    import keras

    x, y = digits_train
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(x.shape[1:]), keras.layers.Flatten(),
                              keras.layers.Dense(48, activation="relu"),
                              keras.layers.Dense(len(LABELS), activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, attributes(y), epochs=40, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("multilabel") / "attributes.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def multilabel_npz(tmp_path_factory, digits_test):
    """The digits test split with clean multi-hot labels, and with 'round' flipped on 30%."""
    x, y = digits_test
    folder = tmp_path_factory.mktemp("multilabel-data")
    clean, noisy = attributes(y), attributes(y)
    flipped = np.random.default_rng(0).random(len(y)) < NOISE
    column = LABELS.index(NOISY)
    noisy[flipped, column] = 1 - noisy[flipped, column]
    paths = {}
    for name, labels in (("clean", clean), ("noisy", noisy)):
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], x=(x * 255).round().astype(np.uint8), y=labels,
                 class_names=np.array(LABELS))
    return paths


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console entry point in-process, as `auditor ARGS...` would run."""
    import sys

    from auditor.cli import main

    monkeypatch.setattr(sys, "argv", ["auditor", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def audit(model, data, out, **spec):
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    spec = {"model": str(model), "data": data, "input_range": "0-1", **spec}
    return run_audit(make_config(spec, out=str(out),
                                 progress=False, quiet=True))


@pytest.fixture(scope="session")
def noisy_audit(tmp_path_factory, multilabel_model_path, multilabel_npz):
    """The performance section on the noisy labels, with the clean run as its baseline."""
    folder = tmp_path_factory.mktemp("multilabel-audits")
    clean = audit(multilabel_model_path, f"npz:{multilabel_npz['clean']}", folder / "clean",
                  sections=["performance"], format="json")
    noisy = audit(multilabel_model_path, f"npz:{multilabel_npz['noisy']}", folder / "noisy",
                  sections=["performance"], format="json", baseline=str(clean.out))
    return clean, noisy


def test_the_model_is_read_as_multi_label(multilabel_model_path):
    from auditor.inputs.models import load_model

    handle = load_model(str(multilabel_model_path))
    assert handle.multilabel and handle.num_classes == 3
    assert handle.output == "sigmoid stripped"
    x = np.random.default_rng(0).uniform(0, 1, (4, *handle.input_shape)).astype("float32")
    probs = np.asarray(handle.model(x))
    assert np.allclose(1 / (1 + np.exp(-np.asarray(handle.logits(x)))), probs, atol=1e-5)


def test_label_noise_shows_on_its_label(noisy_audit):
    clean, noisy = noisy_audit
    before, after = clean.summary["multilabel"], noisy.summary["multilabel"]
    assert before["micro"]["f1"] > 0.9  # the model learned the attributes
    drops = {name: before["labels"][name]["f1"] - after["labels"][name]["f1"]
             for name in LABELS}
    assert drops[NOISY] > 0.15
    assert all(abs(drops[name]) < 1e-9 for name in LABELS if name != NOISY)
    mistakes = {name: m["missed"] + m["false_alarms"] for name, m in after["labels"].items()}
    assert max(mistakes, key=mistakes.get) == NOISY
    checks = {c["id"]: c for c in noisy.summary["checks"]}
    assert checks[f"multilabel.label_f1.{NOISY}"]["status"] == "fail"
    assert all(checks[f"multilabel.label_f1.{name}"]["status"] == "pass"
               for name in LABELS if name != NOISY)
    assert all(checks[f"multilabel.label_skill.{name}"]["status"] == "pass" for name in LABELS)
    assert noisy.exit_code == 1 and clean.exit_code == 0
    from auditor.runs.compare import reevaluate  # `auditor compare` judges them alike

    again = {c.id: c.status for c in reevaluate(noisy.summary, clean.summary)}
    assert again[f"multilabel.label_f1.{NOISY}"] == again["multilabel.micro_f1"] == "fail"
    assert noisy.summary["metrics"]["accuracy"] == after["subset_accuracy"]
    confusions = noisy.summary["misclassifications"]["top_confusions"]
    assert sum(c["count"] for c in confusions) <= after["mistakes"]["missed"]
    example = after["mistakes"]["examples"][0]
    assert set(example["true"]) ^ set(example["pred"]) == (
        set(example["missed"]) | set(example["false_alarms"]))


def test_cli_writes_the_per_label_table(tmp_path, multilabel_model_path, multilabel_npz,
                                        monkeypatch, capsys):
    """End to end through the CLI, every section: the per-label table in the report, and every
    section applies to the label set, per label and without error."""
    from auditor.sections import SECTION_NAMES

    out = tmp_path / "run"
    code, _, stderr = run_cli(monkeypatch, capsys, "audit", "--model",
                              str(multilabel_model_path), "--data",
                              f"npz:{multilabel_npz['clean']}", "--out", str(out),
                              "--input-range", "0-1", "--budget", "quick", "--quiet")
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["task"] == "multi-label"
    page = (out / "report.html").read_text()
    assert "Per label, at its threshold" in page and "false alarms" in page
    assert not summary.get("not_applicable")  # the key is written only when a section is skipped
    assert summary["contrastive"]["examples"]
    # concepts needs a spatial layer, which this dense model has not (it says so in its checks;
    # tests/test_multilabel_sections.py runs it per label on a CNN)
    for name in ("attribution", "triage", "counterfactuals", "featureviz"):
        assert summary[name]["multilabel"], name
    assert not [c["id"] for c in summary["checks"]
                if c["section"] in SECTION_NAMES and c["status"] == "error"]
    assert {f"triage.label_errors.{name}" for name in LABELS} <= {
        c["id"] for c in summary["checks"]}


def write_images(folder, digits_test, count: int) -> list[str]:
    from PIL import Image

    x, _ = digits_test
    names = []
    for i in range(count):
        names.append(f"img/{i}.png")
        (folder / "img").mkdir(exist_ok=True)
        Image.fromarray((x[i, ..., 0] * 255).astype(np.uint8)).save(folder / names[-1])
    return names


def test_csv_manifest(tmp_path, multilabel_model_path, digits_test):
    """A manifest of label names beside the images; classes.txt gives the output order."""
    _, y = digits_test
    names = write_images(tmp_path, digits_test, 40)
    rows = ["path,labels"] + [
        f"{name},{'|'.join(LABELS[k] for k in np.flatnonzero(attributes(y[i:i + 1])[0]))}"
        for i, name in enumerate(names)]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "classes.txt").write_text("\n".join(LABELS) + "\n")
    done = audit(multilabel_model_path, str(tmp_path / "labels.csv"), tmp_path / "run",
                 sections=["performance"], format="json")
    block = done.summary["multilabel"]
    assert done.summary["data"]["class_names"] == list(LABELS)
    assert sum(m["support"] for m in block["labels"].values()) == int(
        attributes(y[:40]).sum())
    assert block["micro"]["f1"] > 0.8


MISMATCHES = {
    "single-class labels": ("npz-single", "one class per image, but the model ends in several"),
    "wrong label count": ("npz-four", "has 4 labels per image, but the model has 3"),
    "values not 0/1": ("npz-two", "other than 0 or 1"),
    "a class-folder source": ("sklearn:digits", "gives one class per image"),
    "a path outside the folder": ("csv-outside", "outside the manifest's folder"),
    "an unknown label": ("csv-unknown", "which is none of the model's labels"),
    "a bad header": ("csv-header", "must start with the header 'path,labels'"),
    "a threshold per label of the wrong length": ("threshold", "lists 2 values"),
    "a threshold out of range": ("threshold-range", "between 0 and 1"),
    "a softmax score for the maps": ("attribution-score", "'attribution.score' is 'softmax'"),
}


def mismatch_args(kind: str, folder, digits_test) -> list[str]:
    """The CLI arguments of one mismatched input (the model is added by the test)."""
    x, y = digits_test
    pixels = (x[:20] * 255).round().astype(np.uint8)
    labels = {"npz-single": y[:20], "npz-four": np.ones((20, 4), np.int8),
              "npz-two": np.full((20, 3), 2, np.int8)}
    if kind in labels:
        np.savez(folder / "d.npz", x=pixels, y=labels[kind])
        return ["--data", f"npz:{folder / 'd.npz'}"]
    if kind.startswith("csv"):
        names = write_images(folder, digits_test, 2)
        body = {"csv-outside": ["path,labels", "../elsewhere.png,even"],
                "csv-unknown": ["path,labels", f"{names[0]},even|striped"],
                "csv-header": ["file,tags", f"{names[0]},even"]}[kind]
        (folder / "classes.txt").write_text("\n".join(LABELS))
        (folder / "m.csv").write_text("\n".join(body) + "\n")
        return ["--data", str(folder / "m.csv")]
    if kind.startswith("threshold") or kind == "attribution-score":
        value = "[0.5, 0.5]" if kind == "threshold" else "1.0"
        (folder / "spec.toml").write_text(f"threshold = {value}\n" if kind != "attribution-score"
                                          else '[attribution]\nscore = "softmax"\n')
        np.savez(folder / "d.npz", x=pixels, y=attributes(y[:20]))
        return [str(folder / "spec.toml"), "--data", f"npz:{folder / 'd.npz'}"]
    return ["--data", kind]


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_each_mismatch_is_one_line_and_exit_2(case, tmp_path, multilabel_model_path,
                                              digits_test, monkeypatch, capsys):
    kind, words = MISMATCHES[case]
    args = mismatch_args(kind, tmp_path, digits_test)
    code, stdout, stderr = run_cli(monkeypatch, capsys, "audit", "--model",
                                   str(multilabel_model_path), *args,
                                   "--out", str(tmp_path / "run"), "--quiet")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], stderr
    assert "Traceback" not in stderr and stdout == ""
    assert not (tmp_path / "run").exists()


def test_a_softmax_model_refuses_multi_hot_labels(tmp_path, digits_model_path, digits_test,
                                                  monkeypatch, capsys):
    x, y = digits_test
    np.savez(tmp_path / "d.npz", x=(x[:20] * 255).astype(np.uint8), y=attributes(y[:20]))
    code, _, stderr = run_cli(monkeypatch, capsys, "audit", "--model", str(digits_model_path),
                              "--data", f"npz:{tmp_path / 'd.npz'}", "--out",
                              str(tmp_path / "run"), "--quiet")
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "the model is single-label" in lines[0], stderr


def test_contrast_of_a_missed_label_and_a_false_alarm(tmp_path, multilabel_model_path,
                                                     multilabel_npz):
    """The contrastive section on a multi-label model: each paired example's difference map
    is the gradient of (missed label's logit minus false alarm's), computed here apart; its
    labels are the image's missed label and false alarm; the view draws."""
    import tensorflow as tf

    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.predict.predictions import predict
    from auditor.report.views.contrastive import view
    from auditor.sections import contrastive
    from auditor.sections.base import Context

    data = f"npz:{multilabel_npz['clean']}"  # a misread digit: labels missed and raised
    config = make_config({"model": str(multilabel_model_path), "data": data,
                          "input_range": "0-1"})
    handle = load_model(str(multilabel_model_path), "0-1")
    dataset = load_dataset(data, handle.input_shape, 3, multilabel=True)
    predictions = predict(handle, dataset)
    ctx = Context(config=config, handle=handle, dataset=dataset, predictions=predictions,
                  workdir=tmp_path)
    result = contrastive.run(ctx, contrastive.Options(examples=60))
    d = result.data
    assert d.paired.any() and not d.paired.all()
    for i in np.flatnonzero(d.paired)[:3]:
        e = d.examples[i]
        assert e["missed"] in e["true"] and e["missed"] not in e["pred"]
        assert e["false_alarm"] in e["pred"] and e["false_alarm"] not in e["true"]
        m, a = LABELS.index(e["missed"]), LABELS.index(e["false_alarm"])
        x = tf.constant(d.images[i:i + 1])
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = handle.logits(x)
            score = logits[0, m] - logits[0, a]
        expected = tape.gradient(score, x).numpy()[0]
        assert np.allclose(d.diff[i], expected, atol=1e-5 * np.abs(expected).max())
    single = int(np.flatnonzero(~d.paired)[0])
    assert not d.diff[single].any()
    assert result.summary["contrastive"]["difference"] == contrastive.LABEL_DIFFERENCE_OF_MAPS
    assert len(view(result, dataset)["examples"]) == len(d.examples)


def test_clever_hans_plants_a_patch_tied_to_one_label(tmp_path, multilabel_model_path,
                                                      multilabel_npz):
    """The positive control per label: a patch tied to 'big' on a fine-tuned copy is learned,
    and the maps of that label's logit sit on it more than a control copy's do (on this MLP,
    gradient x input by a ratio near 5 against the control's 3, the gradient's near 1.5
    against 1); the discovery runs per label, and what does not apply says why in one line."""
    done = audit(multilabel_model_path, f"npz:{multilabel_npz['clean']}", tmp_path / "run",
                 sections=["clever_hans"],
                 clever_hans={"shortcuts": ["patch", "tint"],
                              "methods": ["gradient", "gradient_x_input"], "target_class": "big",
                              "steps": 150, "explain": 16, "max_train": 400, "max_eval": 300})
    block = done.summary["clever_hans"]
    (patch,) = block["injection"]
    assert patch["target_class"] == "big" and patch["learned"] and patch["flip_rate"] > 0.5
    for method, ratio in patch["relevance_mass_ratio"].items():
        assert ratio > patch["control_mass_ratio"][method]
    assert set(block["skipped"]) == {"features and properties", "tint"}
    assert block["discovery"]["per_label"] and set(block["discovery"]["per_class"]) == set(LABELS)
    checks = {c["id"]: c["status"] for c in done.summary["checks"]}
    best = max(patch["relevance_mass_ratio"].values())
    assert checks["clever_hans.injection.patch"] == ("pass" if best >= 3 else "warn")
    page = (done.out / "report.html").read_text()
    assert "Injection test per label" in page and "Discovery per label" in page


def test_a_threshold_per_label_decides_each_label():
    from auditor.predict.predictions import Predictions, label_thresholds

    logits = np.log(np.array([[0.6, 0.6, 0.6], [0.95, 0.2, 0.8]]) /
                    (1 - np.array([[0.6, 0.6, 0.6], [0.95, 0.2, 0.8]])))
    labels = np.array([[1, 0, 1], [1, 0, 1]], np.int8)
    at_half = Predictions(logits, labels, thresholds=label_thresholds(None, 3))
    strict = Predictions(logits, labels, thresholds=label_thresholds([0.5, 0.5, 0.9], 3))
    assert at_half.preds.tolist() == [[1, 1, 1], [1, 0, 1]]
    assert strict.preds.tolist() == [[1, 1, 0], [1, 0, 0]]
    assert at_half.correct.tolist() == [False, True] and strict.accuracy == 0.0
    assert np.allclose(at_half.probs, [[0.6, 0.6, 0.6], [0.95, 0.2, 0.8]])


def test_a_manifest_of_output_indices_skips_missing_files(tmp_path, digits_test):
    """Without names the labels are output indices; a listed file that is missing is skipped
    and listed, as in a class folder."""
    from auditor.inputs.manifest import open_manifest

    names = write_images(tmp_path, digits_test, 2)
    (tmp_path / "m.csv").write_text("path,labels\n" + f"{names[0]},0|2\n{names[1]},\n"
                                    "img/gone.png,1\n")
    opened = open_manifest(str(tmp_path / "m.csv"), 3, None)
    assert opened.labels.tolist() == [[1, 0, 1], [0, 0, 0]]
    assert opened.names is None and len(opened.read.paths) == 2
    assert [s["reason"] for s in opened.skipped] == ["no such file"]


def test_a_label_logit_constant_to_rounding_is_read_at_its_own_size():
    """Per label, the logit's spread across the images against float32's resolution at its
    size: a logit of 3 moving by one float32 step (2.4e-7, above the epsilon at 1) is constant;
    one that moves is not; a label with one finite logit has nothing to spread over."""
    from auditor.methods.prediction_health import FLOAT32_RESOLUTION, label_logit_spread

    step = float(np.spacing(np.float32(3.0)))
    logits = np.array([[3.0, 0.2, np.nan], [3.0 + step, -0.4, np.inf], [3.0, 0.1, 1.0]],
                      np.float32)
    stuck, moving, alone = label_logit_spread(logits)
    assert FLOAT32_RESOLUTION < stuck["logit_spread"] < stuck["logit_resolution"]
    assert moving["logit_spread"] == pytest.approx(0.6)
    assert moving["logit_resolution"] == FLOAT32_RESOLUTION
    assert alone == {"logit_spread": None, "logit_resolution": None}


def test_a_label_whose_logit_does_not_move_fails_its_own_logit_spread(
        tmp_path, multilabel_model_path, multilabel_npz):
    """The trained model with the weights into one label's unit zeroed (its logit is its bias
    on every image): that label's logit_spread check fails and names it in the verdict's words;
    the other labels pass; ``auditor compare`` judges the saved run alike."""
    import keras

    from auditor.report.headline import first_finding
    from auditor.runs.compare import reevaluate

    model = keras.models.load_model(multilabel_model_path)
    kernel, bias = model.layers[-1].get_weights()
    kernel[:, LABELS.index("big")] = 0.0
    model.layers[-1].set_weights([kernel, bias])
    model.save(tmp_path / "dead.keras")
    run = audit(tmp_path / "dead.keras", f"npz:{multilabel_npz['clean']}", tmp_path / "out",
                sections=["performance"], format="json")
    checks = {c["id"]: c for c in run.summary["checks"]}
    assert checks["multilabel.logit_spread.big"]["status"] == "fail"
    assert run.summary["multilabel"]["labels"]["big"]["logit_spread"] == 0.0
    assert all(checks[f"multilabel.logit_spread.{name}"]["status"] == "pass"
               for name in LABELS if name != "big")
    assert run.exit_code == 1 and "Label 'big'" in first_finding(run.summary)
    again = {c.id: c.status for c in reevaluate(run.summary, None)}
    assert again["multilabel.logit_spread.big"] == "fail"
    assert "logit_spread" not in checks  # the softmax check means nothing here


def test_a_multi_label_baseline_is_compared_label_by_label():
    from auditor.runs.baseline import same_data

    summary = {"data": {"source": "npz:x.npz", "n": 2}}
    record = {"source_index": np.arange(2), "labels": np.ones((2, 3), np.int32),
              "preds": np.ones((2, 3), np.int32)}
    comparable, why = same_data(summary, record, summary, None)
    assert not comparable and "label by label" in why


def test_robustness_counts_label_sets_that_survive_pgd(tmp_path, multilabel_model_path,
                                                       multilabel_npz):
    """Under PGD on the most fragile decision the share of intact label sets falls with
    epsilon, never above any one label's accuracy; the attacked images stay in the ball."""
    from auditor.inputs.models import load_model
    from auditor.methods.attacks import label_set_pgd

    done = audit(multilabel_model_path, f"npz:{multilabel_npz['clean']}", tmp_path / "run",
                 sections=["robustness"], format="json",
                 robustness={"samples": 60, "epsilons": [0.0, 8 / 255, 32 / 255], "steps": 5})
    block = done.summary["robustness"]
    assert block["accuracy"][0] == block["clean_accuracy"] > 0.8
    assert block["accuracy"][-1] < block["accuracy"][0]
    for k, value in enumerate(block["accuracy"]):
        assert value <= min(curve[k] for curve in block["label_accuracy"].values()) + 1e-9
    handle = load_model(str(multilabel_model_path), "0-1")
    x = np.load(multilabel_npz["clean"])["x"][:8].astype(np.float32) / 255
    y = np.load(multilabel_npz["clean"])["y"][:8]
    adversarial = label_set_pgd(handle, x, y, np.zeros(3), 8 / 255, steps=5)
    assert np.abs(adversarial - x).max() <= 8 / 255 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1


def test_a_section_that_does_not_apply_is_not_asked_about_the_model(
        tmp_path, monkeypatch, multilabel_model_path, multilabel_npz):
    """A section's options are checked against the model only where it runs: concepts,
    declared here not to apply (as a section without label-set support says why), does not
    stop the audit for a layer name it would refuse."""
    monkeypatch.setattr(section_module("concepts"), "MULTI_LABEL", "declared unsupported here")
    done = audit(multilabel_model_path, f"npz:{multilabel_npz['clean']}", tmp_path / "run",
                 sections=["performance", "concepts"], format="json,html",
                 concepts={"layers": ["no_such_layer"]})
    assert done.summary["not_applicable"] == {"concepts": "declared unsupported here"}
    page = (done.out / "report.html").read_text()
    assert "does not apply to a multi-label model: declared unsupported here" in page
    runs = {c["id"]: c["status"] for c in done.summary["checks"]}
    assert runs["concepts.run"] == "skipped"



def test_a_label_counterfactual_carries_its_logit_across_the_threshold(multilabel_model_path,
                                                                       multilabel_npz):
    """Each searched change turns its label the asked way: the logit of the changed image,
    computed here apart, lies on the other side of the label's threshold (0.7, set apart
    from the default's 0.5), pixels stay in range, and a change that failed is no change."""
    import tensorflow as tf

    from auditor.inputs.models import load_model
    from auditor.methods.counterfactual import label_counterfactuals

    handle = load_model(str(multilabel_model_path), "0-1")
    x = np.load(multilabel_npz["clean"])["x"][:12].astype(np.float32) / 255
    labels = np.arange(12) % 3
    before = np.asarray(handle.logits(tf.constant(x)))
    cuts = np.full(3, np.log(0.7 / 0.3), np.float32)
    turn_on = before[np.arange(12), labels] < cuts[labels]  # each the other way from now
    found = label_counterfactuals(handle, x, labels, turn_on, cuts, steps=100)
    after = np.asarray(handle.logits(tf.constant(found.counterfactual)))[np.arange(12), labels]
    crossed = np.where(turn_on, after > cuts[labels], after < cuts[labels])
    assert found.success.mean() > 0.8 and (crossed == found.success).all()
    assert found.counterfactual.min() >= 0 and found.counterfactual.max() <= 1
    assert not found.delta[~found.success].any()
    assert np.allclose(found.probs_after[:, 0], 1 / (1 + np.exp(-np.asarray(
        handle.logits(tf.constant(found.counterfactual)))[:, 0])), atol=1e-5)
    # the search's trace starts at the label's signed distance past its threshold
    signed = np.where(turn_on, 1, -1) * (before[np.arange(12), labels] - cuts[labels])
    assert np.allclose(found.start, signed, atol=1e-4) and (found.reached >= found.start).all()


def test_counterfactuals_per_label_on_the_wrong_decisions(tmp_path, multilabel_model_path,
                                                          multilabel_npz):
    """The section on a multi-label model: one row per wrong decision, every label with
    mistakes searched, each row's label really wrong before, per-label figures that add up,
    and the gallery drawn."""
    done = audit(multilabel_model_path, f"npz:{multilabel_npz['noisy']}", tmp_path / "run",
                 sections=["counterfactuals"], format="json,html",
                 counterfactuals={"mistakes": 30, "steps": 100, "gallery": 3})
    block = done.summary["counterfactuals"]
    y = np.load(multilabel_npz["noisy"])["y"]
    assert block["multilabel"] and block["count"] == 30
    assert set(block["labels"]) == set(LABELS)  # every label had a share
    assert sum(row["count"] for row in block["labels"].values()) == block["count"]
    for e in block["examples"]:
        carried = bool(y[e["index"], LABELS.index(e["label"])])
        assert e["change"] == ("on" if carried else "off")
        assert (e["label"] in e["true"]) == carried and (e["label"] in e["pred"]) != carried
        if e["success"]:
            assert (e["p_after"] >= e["threshold"]) == carried
    turned = sum(row["success_rate"] * row["count"] for row in block["labels"].values())
    assert turned == pytest.approx(block["success_rate"] * block["count"])
    checks = {c["id"]: c for c in done.summary["checks"]}
    assert checks["counterfactuals.success_rate"]["status"] == "pass"
    assert "wrong decisions turned the right way" in (done.out / "report.html").read_text()


def test_triage_finds_the_planted_label_noise_on_its_label(tmp_path, multilabel_model_path,
                                                           multilabel_npz):
    """Triage on the labels with 'round' flipped on 30% of the images: cleanlab's multi-label
    finder flags that label's values and those of no other, mostly on the flipped images, and
    the per-label check fails on it alone; verdicts are per wrong decision; the report draws."""
    done = audit(multilabel_model_path, f"npz:{multilabel_npz['noisy']}", tmp_path / "run",
                 sections=["triage"], format="json,html")
    block = done.summary["triage"]
    assert block["multilabel"]
    rates = {name: row["rate"] for name, row in block["labels"].items()}
    assert rates[NOISY] > 0.15 and all(rates[name] < 0.03 for name in LABELS if name != NOISY)
    column = LABELS.index(NOISY)
    flipped = np.flatnonzero(np.load(multilabel_npz["noisy"])["y"][:, column]
                             != np.load(multilabel_npz["clean"])["y"][:, column])
    on_noisy = [e["index"] for e in block["label_issues"] if NOISY in e["labels"]]
    assert len(on_noisy) > 0.5 * len(flipped) and np.isin(on_noisy, flipped).mean() > 0.9
    checks = {c["id"]: c["status"] for c in done.summary["checks"]}
    assert checks[f"triage.label_errors.{NOISY}"] == "fail"
    assert all(checks[f"triage.label_errors.{name}"] == "pass" for name in LABELS
               if name != NOISY)
    assert {r["label"] for r in block["verdicts"]} <= set(LABELS)
    # expected_label_errors counts images (as a single-label run's does), the values apart:
    # the noise is on one label, so about as many images as values, each near the flips
    values = block["expected_label_value_errors"]
    assert values == sum(row["expected_label_errors"] for row in block["labels"].values())
    assert 0.6 * len(flipped) < block["expected_label_errors"] <= values
    assert "images expected to carry a wrong label" in (done.out / "report.html").read_text()
    assert "Whose fault is each wrong decision" in (done.out / "report.html").read_text()


def decision_ece(probs: np.ndarray, labels: np.ndarray) -> float:
    """ECE of yes/no decisions at 0.5 in 15 equal bins of the confidence of the answer given,
    written out here apart from auditor.methods.triage.calibration."""
    given = probs >= 0.5
    confidence = np.where(given, probs, 1 - probs)
    right = given == (labels == 1)
    bins = np.minimum((confidence * 15).astype(int), 14)
    return sum(abs(right[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).mean()
               for b in np.unique(bins))


def test_triage_reports_each_label_s_own_calibration(tmp_path, multilabel_model_path,
                                                     multilabel_npz):
    """Per label its own ECE (as computed here from the model's sigmoids), a temperature fitted
    on it, and the ECE left after it; the check names the labels' range beside the pooled
    figure; the report shows the table."""
    import tensorflow as tf

    from auditor.inputs.models import load_model

    done = audit(multilabel_model_path, f"npz:{multilabel_npz['noisy']}", tmp_path / "run",
                 sections=["triage"], format="json,html")
    block = done.summary["triage"]["label_calibration"]
    data = np.load(multilabel_npz["noisy"])
    x = data["x"].astype(np.float32) / 255
    probs = 1 / (1 + np.exp(-np.asarray(load_model(str(multilabel_model_path), "0-1").logits(
        tf.constant(x)), np.float64)))
    assert list(block) == list(LABELS)
    for k, name in enumerate(LABELS):
        assert block[name]["ece"] == pytest.approx(decision_ece(probs[:, k], data["y"][:, k]),
                                                   abs=1e-4)
        assert block[name]["temperature"] > 0 and block[name]["ece_after_temperature"] >= 0
    worst = max(LABELS, key=lambda name: block[name]["ece"])
    assert block[worst]["ece"] > done.summary["triage"]["ece"]  # the pooled figure hides it
    (check,) = [c for c in done.summary["checks"] if c["id"] == "triage.ece"]
    assert f"{block[worst]['ece']:.3f} ({worst})" in check["message"]
    assert "Each label's own decisions" in (done.out / "report.html").read_text()


def test_a_label_made_under_confident_warns_on_its_own_calibration(tmp_path,
                                                                    multilabel_model_path,
                                                                    multilabel_npz):
    """The model with one label's logits divided by 3 (its sigmoid's weights scaled): its
    decisions are unchanged but its probabilities crowd towards 0.5. Its own ECE check warns,
    its message gives the temperature that fixes it (about 1/3), the other labels pass."""
    import keras

    model = keras.models.load_model(multilabel_model_path)
    kernel, bias = model.layers[-1].get_weights()
    column = LABELS.index("big")
    kernel[:, column] /= 3
    bias[column] /= 3
    model.layers[-1].set_weights([kernel, bias])
    path = tmp_path / "under-confident.keras"
    model.save(path)
    done = audit(path, f"npz:{multilabel_npz['clean']}", tmp_path / "run", sections=["triage"],
                 format="json,html")
    checks = {c["id"]: c for c in done.summary["checks"]}
    planted = checks["triage.label_ece.big"]
    assert planted["status"] == "warn", planted["message"]
    assert planted["value"] == done.summary["triage"]["label_calibration"]["big"]["ece"]
    temperature = done.summary["triage"]["label_calibration"]["big"]["temperature"]
    assert 0.25 < temperature < 0.42 and f"temperature {temperature:.3g}" in planted["message"]
    for name in ("even", "round"):
        assert checks[f"triage.label_ece.{name}"]["status"] == "pass"
    page = html.unescape((done.out / "report.html").read_text())
    assert "label 'big': expected calibration error" in page


def test_a_baseline_of_the_other_task_is_refused_in_one_line(tmp_path, noisy_audit,
                                                             multilabel_model_path,
                                                             multilabel_npz, monkeypatch,
                                                             capsys):
    """A single-label run as the baseline of a multi-label one (their figures count images
    and label values) is one line and exit 2 before any work, and `auditor compare` refuses
    the pair alike."""
    from auditor.errors import ConfigError
    from auditor.runs.compare import compare

    clean, _ = noisy_audit
    summary = json.loads((clean.out / "summary.json").read_text())
    summary["model"]["task"] = "single-label"
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "summary.json").write_text(json.dumps(summary))
    code, _, stderr = run_cli(monkeypatch, capsys, "audit", "--model",
                              str(multilabel_model_path), "--data",
                              f"npz:{multilabel_npz['clean']}", "--out", str(tmp_path / "run"),
                              "--input-range", "0-1", "--sections", "performance",
                              "--baseline", str(tmp_path / "single"), "--quiet")
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "the baseline is a single-label run and this one multi-label" in stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="OLD is a single-label run and NEW multi-label"):
        compare(str(tmp_path / "single"), str(clean.out))


def test_the_card_explains_each_images_most_confident_given_label(tmp_path,
                                                                 multilabel_model_path,
                                                                 multilabel_npz):
    """The reliability card of a multi-label model: its images are given at least one label
    and each is explained for its most confident given one; its deletion curve starts at that
    label's sigmoid (computed here apart), so the maps and curves are of label logits; every
    method gets its columns."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.predict.predictions import predict, sigmoid
    from auditor.sections.base import Context
    from auditor.steps.card import explained, make_card

    data = f"npz:{multilabel_npz['clean']}"
    config = make_config({"model": str(multilabel_model_path), "data": data,
                          "input_range": "0-1",
                          "attribution": {"methods": ["gradient", "gradient_x_input"],
                                          "sanity_samples": 4, "faithfulness_samples": 8,
                                          "faithfulness_steps": 8}})
    handle = load_model(str(multilabel_model_path), "0-1")
    dataset = load_dataset(data, handle.input_shape, 3, multilabel=True)
    p = predict(handle, dataset)
    ctx = Context(config=config, handle=handle, dataset=dataset, predictions=p,
                  workdir=tmp_path)
    options = config.options["attribution"]
    card = make_card(ctx, options)
    positions, targets = explained(p, options.faithfulness_samples, config.seed)
    assert (p.preds[positions, targets] == 1).all()
    margins = p.logits[positions] - np.log(p.thresholds / (1 - p.thresholds))
    assert (margins.argmax(axis=1) == targets).all()
    start = sigmoid(p.logits[positions, targets]).mean()
    assert card.faithfulness_data["curves"]["gradient"].deletion[0] == pytest.approx(start,
                                                                                     rel=1e-4)
    assert set(card.card) == {"gradient", "gradient_x_input"}
    assert card.card["gradient"]["randomisation"]["status"] in ("pass", "warn", "fail")


def test_attribution_explains_label_logits_label_by_label(tmp_path, multilabel_model_path,
                                                          multilabel_npz):
    """The section on a multi-label model: its examples are wrong decisions from every label in
    turn, each the label's logit; the card and its checks are there; the report draws."""
    done = audit(multilabel_model_path, f"npz:{multilabel_npz['noisy']}", tmp_path / "run",
                 sections=["attribution"], format="json,html",
                 attribution={"methods": ["gradient", "gradient_x_input"], "examples": 3,
                              "sanity_samples": 4, "faithfulness_samples": 8,
                              "faithfulness_steps": 8})
    block = done.summary["attribution"]
    assert block["multilabel"] and block["score"] == "logit"
    assert {e["label"] for e in block["examples"]} == set(LABELS)
    y = np.load(multilabel_npz["noisy"])["y"]
    for e in block["examples"]:
        assert e["mistake"] == ("missed" if y[e["index"], LABELS.index(e["label"])]
                                else "false_alarm")
    assert set(block["reliability"]) == {"gradient", "gradient_x_input"}
    ids = {c["id"] for c in done.summary["checks"]}
    assert {"attribution.sanity.gradient", "attribution.faithfulness",
            "attribution.trusted"} <= ids
    page = (done.out / "report.html").read_text()
    assert "wrong decisions, label by label" in page and "most confident given label" in page


def test_concepts_layer_names_are_checked_on_a_multi_label_model_before_the_data(
        tmp_path, multilabel_model_path):
    """concepts applies to a multi-label model, so its layer names are checked against the
    model as soon as it is loaded, before the data is read (a source that does not exist)."""
    from auditor.errors import ConfigError

    with pytest.raises(ConfigError, match="no_such_layer"):
        audit(multilabel_model_path, "npz:does-not-exist.npz", tmp_path / "run",
              sections=["performance", "concepts"], format="json",
              concepts={"layers": ["no_such_layer"]})
    assert not (tmp_path / "run").exists()


def test_a_label_ranked_no_better_than_chance_fails_its_skill_at_0_and_within_rounding():
    """A label scored the same on every image has an average precision exactly equal to its
    prevalence: skill 0, no better than chance, which fails ("at or below 0"), as does a skill
    a float64 rounding below or above 0; one swap above a constant ranking is skill, and
    passes."""
    from auditor.methods.multilabel import averages, label_metrics, skill_rounding
    from auditor.sections.performance import multilabel_checks

    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=(200, 2)) < 0.3).astype(np.int8)
    probs = np.stack([np.full(200, 0.4), np.full(200, 0.4)], axis=1)
    probs[np.argmax(labels[:, 1]), 1] = 0.9  # one positive ranked first: some skill
    preds = (probs > 0.5).astype(np.int8)
    per_label = label_metrics(labels, probs, preds, ["flat", "one"], np.full(2, 0.5))
    assert per_label["flat"]["average_precision"] == per_label["flat"]["prevalence"]
    block = {"labels": per_label, **averages(labels, probs, preds, per_label)}
    status = {c.id: c.status for c in multilabel_checks(block, None, {})}
    assert status["multilabel.label_skill.flat"] == "fail"
    assert status["multilabel.label_skill.one"] == "pass"
    rounding = skill_rounding(per_label["flat"])
    assert 200 * np.finfo(np.float64).eps == pytest.approx(rounding)
    for nudge in (-0.5 * rounding, 0.5 * rounding):
        per_label["flat"]["average_precision"] = per_label["flat"]["prevalence"] + nudge
        status = {c.id: c.status for c in multilabel_checks(block, None, {})}
        assert status["multilabel.label_skill.flat"] == "fail", nudge
