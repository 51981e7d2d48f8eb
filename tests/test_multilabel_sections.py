"""featureviz, concepts and Clever Hans discovery on a multi-label model, per label.

The model is a small seeded CNN (three sigmoid labels of the digit: even, at least 5, written
with a loop, as in test_multilabel.py), trained in a few seconds on the packaged digits with a
corner patch that gives the label 'big'; the sections that need hidden channels or spatial
layers read its convolutions."""

from __future__ import annotations

import numpy as np
import pytest
from test_multilabel import LABELS, attributes, audit

SHORTCUT_LABEL = "big"


def train_cnn(x, labels, path):
    """Three 3x3 convolutions and a Dense(3, sigmoid) over global pooling, 25 epochs."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv_a"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv_b"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv_c"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(LABELS), activation="sigmoid")])
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    model.fit(x, labels, epochs=25, batch_size=64, verbose=0)
    model.save(path)
    return path


def save_npz(path, x, labels):
    np.savez(path, x=(x * 255).round().astype(np.uint8), y=labels, class_names=np.array(LABELS))
    return f"npz:{path}"


def with_patch(x, labels, seed):
    """A white corner patch on half of the images carrying SHORTCUT_LABEL and, in training,
    on a fifth of the others, which are then labelled with it: the patch alone gives it."""
    from auditor.methods.shortcuts.patterns import inject

    rng = np.random.default_rng(seed)
    column = LABELS.index(SHORTCUT_LABEL)
    marked = (labels[:, column] == 1) & (rng.random(len(x)) < 0.5)
    x, labels = x.copy(), labels.copy()
    x[marked] = inject("patch", x[marked])[0]
    return x, labels, marked


@pytest.fixture(scope="module")
def label_cnn(tmp_path_factory, digits_train, digits_test):
    """The CNN trained with a patch that gives the label 'big' (planted on half of its
    positives and on a fifth of the other images, relabelled), one model for every test here
    (the patch is the discovery test's; the others read any multi-label CNN); the test split
    as an npz of multi-hot labels with the patch on half of the 'big' images, none on the
    others, and which images carry it."""
    from auditor.methods.shortcuts.patterns import inject

    x, y = digits_train
    x, labels, _ = with_patch(x, attributes(y), 0)
    column = LABELS.index(SHORTCUT_LABEL)
    others = (labels[:, column] == 0) & (np.random.default_rng(1).random(len(x)) < 0.2)
    x[others] = inject("patch", x[others])[0]
    labels[others, column] = 1
    folder = tmp_path_factory.mktemp("shortcut-cnn")
    tx, ty = digits_test
    tx, tlabels, marked = with_patch(tx, attributes(ty), 2)
    return (train_cnn(x, labels, folder / "cnn.keras"),
            save_npz(folder / "test.npz", tx, tlabels), marked)


def test_featureviz_renders_each_label_s_logit_and_judges_it_per_label(label_cnn, tmp_path):
    """Each label's image maximises that label's logit: it raises its own logit above what
    the other labels' images give it, its reported sigmoid is the model's on the saved image,
    the per-label checks follow the label's threshold, and the report shows the label's top
    real images beside it."""
    import tensorflow as tf

    from auditor.inputs.models import load_model

    model, data, _ = label_cnn
    done = audit(model, data, tmp_path / "run", sections=["featureviz"],
                 featureviz={"steps": 96, "compare": False, "max_channels": 2, "top_k": 3})
    block = done.summary["featureviz"]
    assert "featureviz" not in done.summary.get("not_applicable", {})
    assert block["multilabel"] and list(block["labels"]) == list(LABELS)
    saved = np.load(done.out / "class_visualization.npz")
    assert saved["classes"].tolist() == list(LABELS)
    handle = load_model(str(model), "0-1")
    logits = np.asarray(handle.logits(tf.constant(saved["images"])))
    own = np.diag(logits)
    assert all(own[i] > np.delete(logits[:, i], i).max() for i in range(len(LABELS)))
    checks = {c["id"]: c for c in done.summary["checks"]}
    for i, name in enumerate(LABELS):
        row = block["labels"][name]
        assert row["confidence"] == pytest.approx(1 / (1 + np.exp(-own[i])), abs=1e-4)
        assert row["threshold"] == 0.5 and 0 <= row["judge_probability"] <= 1
        assert (name in row["raised"]) == row["model_agrees"] == (row["confidence"] >= 0.5)
        status = checks[f"featureviz.label_raised.{name}"]["status"]
        assert status == ("pass" if row["model_agrees"] else "warn")
        top = row["top_positions"]
        assert len(top) == 3 and len(set(top)) == 3
        assert 0 <= row["top_judge_probability"] <= 1
    assert block["recognisable"] == np.mean([r["model_agrees"] for r in block["labels"].values()])
    seen = sum(r["top_judge_probability"] >= 0.5 for r in block["labels"].values())
    assert f"for {seen} of 3 labels" in checks["featureviz.judge_agreement"]["message"]
    page = (done.out / "report.html").read_text()
    assert "beside the real images with the label's highest logit" in page
    assert "does not apply to a multi-label model" not in page


def label_context(label_cnn, tmp_path, sections):
    """The context the sections run in on the label CNN, its steps made."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.pipeline import context_for
    from auditor.predict.predictions import predict
    from auditor.sections.base import RunInputs

    model, data, _ = label_cnn
    config = make_config({"model": str(model), "data": data, "input_range": "0-1"})
    handle = load_model(str(model), "0-1")
    dataset = load_dataset(data, handle.input_shape, 3, multilabel=True)
    inputs = RunInputs(config=config, handle=handle, dataset=dataset,
                       predictions=predict(handle, dataset), workdir=tmp_path)
    return context_for(inputs, sections)


def one_sided(mistakes: list[dict], p) -> set[str]:
    """The sides ("true": nothing missed, "pred": no false alarm) left empty on some of the
    explained mistakes, each mistake's labels checked against the predictions, and an empty
    side's contributions checked to be 0 (its label against nothing)."""
    empty = set()
    for m in mistakes:
        i, parts = m["index"], m["layers"]["conv_c"]
        for side, given, wrong in (("true", 1, "pred"), ("pred", 0, "true")):
            if m[side] is not None:  # a missed label (given 1), a false alarm (given 0)
                k = LABELS.index(m[side])
                assert p.labels[i, k] == given and p.preds[i, k] == 1 - given
            else:  # nothing of this kind on the image
                assert not ((p.labels[i] == given) & (p.preds[i] != given)).any()
                assert not any(parts[f"to_{side}"]) and parts[f"total_{side}"] == 0
                assert parts[f"total_{wrong}"] != 0
                empty.add(side)
    return empty


def test_concepts_explain_each_image_towards_each_label_it_carries(label_cnn, tmp_path):
    """Each sampled image is a pair per label it carries; its groups' contributions and the
    residual add up to gradient x activation of that label's logit, computed here apart; the
    bank and the removal tests name labels; each mistake is a missed label against a false
    alarm of the same image, or, on an image with one of them only, that label against
    nothing (a contribution of 0); the view draws."""
    import tensorflow as tf

    from auditor.inputs.layers import activation_and_logits
    from auditor.report.render import environment
    from auditor.report.views.concepts import view
    from auditor.sections import concepts

    ctx = label_context(label_cnn, tmp_path, ["concepts"])
    options = concepts.Options(sample=45, icon_steps=0, survival_images=0, removal_images=4,
                               random_directions=4, mistakes=12, layers=["conv_c"])
    result = concepts.run(ctx, options)
    block, layer = result.summary["concepts"], result.data.layers[0]
    positions, targets = concepts.label_pairs(ctx.predictions.labels, 45, ctx.config.seed)
    assert block["multilabel"] and block["pairs"] == len(positions) == 45
    assert (ctx.predictions.labels[positions, targets] == 1).all()
    assert block["sample"] == len(np.unique(positions))
    x = tf.constant(ctx.dataset.images(positions[:6]))
    with tf.GradientTape() as tape:
        acts, logits = activation_and_logits(ctx.handle, "conv_c")(x)
        score = tf.gather(logits, targets[:6], batch_dims=1)
    expected = tf.reduce_sum(acts * tape.gradient(score, acts), axis=[1, 2, 3]).numpy()
    total = layer.sample_contributions[:6].sum(axis=1) + layer.sample_residual[:6]
    assert np.allclose(total, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    summary = block["layers"][0]
    assert {b["class"] for b in summary["bank"]} == set(LABELS)
    assert all(b["images"] == 15 for b in summary["bank"])
    assert {g["removal"]["class"] for g in summary["groups"]} <= set(LABELS)
    tests = {t["label"]: t for t in summary["labels"]}  # the removal test per label
    assert set(tests) == set(LABELS)
    for bank in summary["bank"]:
        if bank["groups"]:  # the group that carries the label most is the one tested on it
            assert tests[bank["class"]]["group"] == bank["groups"][0]["group"]
        assert 0 < tests[bank["class"]]["images"] <= options.removal_images
    assert len(block["mistakes"]) == options.mistakes
    assert one_sided(block["mistakes"], ctx.predictions) == {"true", "pred"}  # both kinds
    shown = view(result, ctx.dataset)
    assert shown["multilabel"] and len(shown["layers"][0]["mistakes"]) == len(block["mistakes"])
    page = environment().get_template("sections/concepts.html").render(
        section={"view": shown, "summary": result.summary})
    assert "Per label: the group that carries it most" in page
    assert "the groups that carry each label" in page
    assert "no false alarm" in page and "nothing missed" in page


def test_discovery_per_label_finds_and_confirms_a_patch_tied_to_one_label(label_cnn, tmp_path):
    """SpRAy on the maps of each label's logit on its positives, by the method a multi-label
    discovery takes when no reliability card is made and the spec names none (gradient x
    input; on this CNN the gradient's maps do not separate the patched images): the label the
    patch gives splits into a cluster of patched images, and pasting that cluster's look onto
    images without the label gives it to them beyond the control; the other labels, which the
    patch does not give, are not confirmed; the view draws."""
    from auditor.report.views.clever_hans import view
    from auditor.sections import clever_hans

    model, data, marked = label_cnn
    ctx = label_context(label_cnn, tmp_path, ["clever_hans"])
    assert ctx.steps.card is None  # no card to choose the method
    options = clever_hans.Options(shortcuts=[], control=False, max_per_class=80, max_others=60)
    result = clever_hans.run(ctx, options)
    block = result.summary["clever_hans"]["discovery"]
    assert block["method"] == clever_hans.LABEL_DISCOVERY_METHOD == "gradient_x_input"
    assert result.method_choice is None and block["drop_bound"] is None
    assert block["per_label"] and set(block["per_class"]) == set(LABELS)
    assert block["flagged_classes"] == [SHORTCUT_LABEL], block
    (sentence,) = block["findings"]
    assert sentence.startswith(f"label {SHORTCUT_LABEL} relies on")
    found = next(f for f in result.data.search.findings if f.name == SHORTCUT_LABEL)
    assert marked[ctx.dataset.source_index[found.maps.members]].mean() > 0.8  # the patched
    assert found.effect.flip_rate > found.effect.flip_control + 0.2
    checks = {c.id: c.status for c in result.checks}
    assert checks["clever_hans.flagged_classes"] == "warn"
    shown = view(result, ctx.dataset)
    assert [d["name"] for d in shown["discovery"]] == list(LABELS)
    assert shown["discovery"][LABELS.index(SHORTCUT_LABEL)]["intervention"]
