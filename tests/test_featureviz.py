"""Feature visualisation: composable pieces behave, and the demo's class images are recognisable
to an independent judge and as smooth as real digits, while unregularised ones are not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from auditor.errors import ConfigError
from auditor.methods.featureviz import objectives, transforms
from auditor.methods.featureviz.objectives import image_total_variation
from auditor.methods.featureviz.param import Fourier, Pixels
from auditor.methods.featureviz.recipes import Recipe, visualise_classes
from auditor.methods.featureviz.render import Loop
from auditor.methods.featureviz.top_images import merge_top_k, top_activating


def total_variation(images):
    return image_total_variation(images).numpy()


@pytest.fixture(scope="module")
def audit(digits_model_path, tmp_path_factory):
    """The featureviz section of the demo audit, run through the real orchestration."""
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    out = tmp_path_factory.mktemp("featureviz") / "run"
    config = make_config(model=str(digits_model_path), data="sklearn:digits:test",
                         sections=["featureviz"], out=str(out), progress=False,
                         featureviz={"max_channels": 4, "top_k": 3})
    outcome = run_audit(config)
    return outcome, out


@pytest.fixture(scope="module")
def sklearn_judge():
    """A judge that never saw the audited model: logistic regression on scikit-learn's 8x8
    digits (pixel values 0..16)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    return LogisticRegression(max_iter=3000).fit(digits.data, digits.target)


def judge_says(judge, images: np.ndarray) -> np.ndarray:
    """32x32 display-space images averaged down to 8x8 on the judge's 0..16 scale."""
    n, size = len(images), images.shape[1]
    blocks = images[..., 0].reshape(n, 8, size // 8, 8, size // 8).mean(axis=(2, 4))
    return judge.predict(blocks.reshape(n, 64) * 16)


def test_demo_class_images_are_recognised_by_an_independent_judge_and_natural(
        audit, sklearn_judge, digits_test):
    outcome, out = audit
    saved = np.load(out / "class_visualization.npz")
    images, classes = saved["images"], [int(c) for c in saved["classes"]]
    assert images.shape == (10, 32, 32, 1) and classes == list(range(10))
    assert 0.0 <= images.min() and images.max() <= 1.0
    recognised = judge_says(sklearn_judge, images) == np.arange(10)
    real_p95 = np.percentile(total_variation(digits_test[0]), 95)
    natural = total_variation(images) <= real_p95
    assert recognised.sum() >= 8, recognised
    assert natural.sum() >= 8, total_variation(images)
    assert (recognised & natural).sum() >= 8


def test_unregularised_images_fool_the_model_but_fail_the_natural_statistics(audit):
    summary = audit[0].summary["featureviz"]
    plain, regular = summary["comparison"]["unregularised"], summary["comparison"]["regularised"]
    assert plain["recognisable"] >= 0.8  # the model is fooled...
    assert plain["natural"] <= 0.2  # ...by images far rougher than any real digit
    limit = summary["natural_statistics"]["real_total_variation"]["p95"]
    assert plain["mean_total_variation"] > 2 * limit > 2 * regular["mean_total_variation"]


def test_summary_reports_confidence_judge_and_naturalness_per_class_with_checks(audit):
    outcome, out = audit
    summary = json.loads((out / "summary.json").read_text())["featureviz"]
    assert set(summary["classes"]) == {str(i) for i in range(10)}
    for row in summary["classes"].values():
        assert {"confidence", "judge", "judge_agrees", "total_variation", "natural"} <= set(row)
    assert summary["recognisable"] >= 0.8 and summary["judge_agreement"] >= 0.8
    assert summary["judge"]["held_out_accuracy"] > 0.85
    assert set(summary["comparison"]) == {"regularised", "start: noise", "start: image",
                                          "objective: probability", "unregularised"}
    checks = {c["id"]: c for c in outcome.summary["checks"]}
    assert checks["featureviz.recognisable"]["status"] == "pass"
    assert checks["featureviz.natural"]["status"] == "pass"
    assert len(summary["channels"]["conv3"]) == 4


def test_report_shows_the_class_images_comparisons_and_channels(audit):
    html = (audit[1] / "report.html").read_text()
    section = html[html.index('id="featureviz"'):]
    assert "Class visualisations" in section and "unregularised" in section
    assert "Evolution over the optimisation steps" in section
    assert "conv3 #" in section
    assert section.count("<img") >= 10 + 4 * 4
    assert 'alt=""' not in section


def test_one_batch_gives_each_image_the_result_it_gets_alone(digits_handle):
    recipe = Recipe(steps=8, snapshots=(0,)).unregularised()
    together = visualise_classes(digits_handle, [3, 5], recipe).images
    alone = [visualise_classes(digits_handle, [c], recipe).images[0] for c in (3, 5)]
    np.testing.assert_allclose(together, np.stack(alone), atol=1e-5)


def test_two_forms_in_one_loop_give_each_group_the_images_it_gets_alone(digits_handle):
    """The regularised images (Fourier, transforms) and the unregularised ones (clipped pixels,
    no transforms, another learning rate) rendered in one compiled loop are those each group
    gets in a loop of its own."""
    from auditor.methods.featureviz.recipes import group
    from auditor.methods.featureviz.render import render_forms

    recipe = Recipe(steps=4, snapshots=(0,))
    plain = recipe.unregularised()
    objective = objectives.class_logit([3, 5, 3, 5])
    together = render_forms(digits_handle, objective, [group(digits_handle, recipe, 2),
                                                       group(digits_handle, plain, 2)],
                            recipe.loop()).images
    alone = [visualise_classes(digits_handle, [3, 5], r).images for r in (recipe, plain)]
    np.testing.assert_allclose(together, np.concatenate(alone), atol=1e-4)


def test_snapshots_start_from_the_requested_image(digits_handle, digits_test):
    start = digits_test[0][0]
    rendering = visualise_classes(digits_handle, [1, 2], Recipe(steps=4, snapshots=(0, 2)),
                                  inits=["image", "zeros"], real_image=start)
    assert sorted(rendering.snapshots) == [0, 2, 4]
    np.testing.assert_allclose(rendering.snapshots[0][0], np.clip(start, 0.02, 0.98), atol=1e-4)
    np.testing.assert_allclose(rendering.snapshots[0][1], 0.5, atol=1e-6)
    assert not np.allclose(rendering.images[0], rendering.snapshots[0][0])


def test_objectives_add_scale_and_weigh_each_image():
    import tensorflow as tf

    state = {"logits": tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
             "image": tf.zeros((2, 4, 4, 1))}
    logit = objectives.class_logit([2, 0])
    np.testing.assert_allclose(logit(state), [3.0, 4.0])
    combined = 2 * logit - 1 + logit * np.array([1.0, 0.0])
    np.testing.assert_allclose(combined(state), [2 * 3 - 1 + 3, 2 * 4 - 1])
    probability = objectives.class_probability([2, 0])(state).numpy()
    np.testing.assert_allclose(probability, tf.nn.softmax(state["logits"]).numpy()[[0, 1],
                                                                                  [2, 0]])
    with pytest.raises(ConfigError, match="logit, probability, log_probability"):
        objectives.class_objective("softmax", [0])


@pytest.mark.parametrize("channels", [1, 3])
def test_fourier_parameterisation_reproduces_the_images_it_is_set_to(channels):
    images = np.random.default_rng(0).uniform(0.05, 0.95, (2, 12, 10, channels))
    param = Fourier((12, 10, channels))
    zeros = np.zeros((2, *param.value_shape), np.float32)
    np.testing.assert_allclose(param.images(zeros).numpy(), 0.5, atol=1e-6)  # zeros: mid-grey
    np.testing.assert_allclose(param.images(param.values_of(images)).numpy(), images, atol=1e-4)


def test_fourier_steps_favour_low_frequencies_over_pixels():
    """Equal random parameter steps give smooth images in Fourier space, noise in pixels:
    less total variation per unit of contrast."""
    rng = np.random.default_rng(0)
    fourier, pixels = Fourier((32, 32, 1)), Pixels((32, 32, 1))

    def roughness(param):
        values = rng.normal(0, 0.1, (4, *param.value_shape)).astype(np.float32)
        images = param.images(values).numpy()
        return total_variation(images).mean() / images.std()

    assert roughness(fourier) < 0.7 * roughness(pixels)


def test_clipped_pixels_stay_in_range():
    param = Pixels((4, 4, 1), valid="clip")
    projected = param.project(np.full((1, 4, 4, 1), 1.7, np.float32))
    assert param.images(projected).numpy().max() == 1.0


def test_a_quarter_turn_rotates_like_numpy_and_fused_transforms_match_sequential():
    import tensorflow as tf

    image = np.zeros((1, 5, 5, 1), np.float32)
    image[0, 0, 1:4, 0] = 1.0  # a bar along the top edge
    turned = transforms._warp(tf.constant(image), transforms._about_centre(
        tf.constant(image), tf.constant([np.pi / 2], tf.float32), tf.constant([1.0])))
    expected = np.rot90(image[0, ..., 0], k=-1)  # positive angles turn clockwise on screen
    np.testing.assert_allclose(turned.numpy()[0, ..., 0], expected, atol=1e-5)
    batch = tf.constant(np.random.default_rng(1).uniform(size=(3, 16, 16, 1)), tf.float32)
    chain = [transforms.jitter(2.0), transforms.scale(0.1), transforms.rotate(10)]
    fused = transforms.compose(chain)(batch, tf.random.Generator.from_seed(3))
    rng = tf.random.Generator.from_seed(3)
    matrices = [t.sample(batch, rng) for t in chain]
    single = transforms._warp(batch, matrices[0] @ matrices[1] @ matrices[2])
    np.testing.assert_allclose(fused.numpy(), single.numpy(), atol=1e-5)
    assert fused.shape == batch.shape


def test_hidden_layers_are_reached_inside_nested_models(tmp_path):
    import keras

    from auditor.inputs.layers import activations_and_logits, conv_layers
    from auditor.inputs.models import load_model
    from auditor.sections.featureviz import chosen_layers

    backbone_in = keras.Input((8, 8, 1))
    inner = keras.layers.Conv2D(3, 3, padding="same", name="inner_conv")(backbone_in)
    backbone = keras.Model(backbone_in, keras.layers.ReLU()(inner), name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 1)), backbone, keras.layers.Flatten(),
                              keras.layers.Dense(2, name="head")])
    model.save(tmp_path / "nested.keras")
    handle = load_model(str(tmp_path / "nested.keras"), input_range="0-1")

    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    (acts, relu), logits = activations_and_logits(handle, ["inner_conv", "backbone"])(x)
    np.testing.assert_allclose(acts, keras.Model(backbone_in, inner)(x), atol=1e-5)
    np.testing.assert_allclose(relu, backbone(x), atol=1e-5)
    np.testing.assert_allclose(logits, model(x), atol=1e-5)
    assert conv_layers(handle.logits_model) == [("inner_conv", 3)]
    assert chosen_layers(handle.logits_model, [], "nested") == ["inner_conv"]
    with pytest.raises(ConfigError, match="no layer named 'nope'.*inner_conv"):
        chosen_layers(handle.logits_model, ["nope"], "nested")


def test_top_images_stream_keeps_exactly_the_best_per_channel(digits_handle):
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.layers import activation_model

    dataset = load_dataset("sklearn:digits:test", digits_handle.input_shape, 10, max_samples=200)
    found = top_activating(digits_handle, dataset, "conv2", k=3, batch_size=32)
    images = dataset.images(np.arange(dataset.n))
    every = activation_model(digits_handle, "conv2")(images).numpy().mean(axis=(1, 2))
    best = np.argsort(-every, axis=0, kind="stable")[:3].T
    np.testing.assert_array_equal(found.top_positions, best)
    np.testing.assert_allclose(found.mean_activation, every.mean(axis=0), rtol=1e-4, atol=1e-6)
    values, positions = merge_top_k(np.array([[5.0, 1.0]]), np.array([[7, 8]]),
                                    np.array([[3.0]]), np.array([[9]]), k=2)
    assert positions.tolist() == [[7, 9]] and values.tolist() == [[5.0, 3.0]]


def test_bad_featureviz_options_are_one_line_config_errors(digits_model_path):
    from auditor.configure import make_config

    with pytest.raises(ConfigError, match="featureviz.steps' must be int"):
        make_config(model=str(digits_model_path), featureviz={"steps": "many"})


def test_section_runs_on_an_rgb_model_with_a_nested_backbone(tmp_path):
    """Colour images, a backbone nested in a Sequential, a channel chosen inside it."""
    import keras

    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    keras.utils.set_random_seed(0)
    backbone_in = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(4, 3, activation="relu", name="deep_conv")(backbone_in)
    backbone = keras.Model(backbone_in, features, name="backbone")
    model = keras.Sequential([keras.Input((16, 16, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "rgb.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.uniform(size=(30, 16, 16, 3)).astype(np.float32),
             y=np.arange(30) % 3)
    config = make_config(model=str(tmp_path / "rgb.keras"), data=f"npz:{tmp_path / 'rgb.npz'}",
                         sections=["featureviz"], out=str(tmp_path / "out"), progress=False,
                         featureviz={"steps": 4, "max_channels": 2, "top_k": 2,
                                     "init": "image", "compare": False})
    summary = run_audit(config).summary
    assert "featureviz.run" not in {c["id"] for c in summary["checks"]}
    saved = np.load(tmp_path / "out" / "class_visualization.npz")
    assert saved["images"].shape == (3, 16, 16, 3)
    assert [row["channel"] for row in summary["featureviz"]["channels"]["deep_conv"]] != []


def featureviz_traces(handle) -> dict:
    """Traces of each compiled render loop cached on the handle."""
    return {key[1]: fn.experimental_get_tracing_count() for key, fn in handle.compiled.items()
            if key[0] == "featureviz"}


def test_the_section_compiles_one_loop_per_form_and_a_second_run_traces_nothing(
        digits_model_path, tmp_path):
    """Classes, variants, channels and the unregularised images (their own form) share one
    compiled loop; a second audit of the same model reuses it."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.predict.predictions import predict
    from auditor.sections import featureviz
    from auditor.sections.base import Context

    handle = load_model(str(digits_model_path))  # its own cache of compiled functions
    config = make_config(model=str(digits_model_path), data="sklearn:digits:test",
                         max_samples=200)
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes)
    ctx = Context(config, handle, dataset, predict(handle, dataset), tmp_path)
    options = featureviz.Options(steps=6, snapshots=[0, 2], max_channels=2, top_k=2)
    first = featureviz.run(ctx, options)
    traced = featureviz_traces(handle)
    assert list(traced.values()) == [1], traced
    second = featureviz.run(ctx, options)
    assert featureviz_traces(handle) == traced
    assert set(first.summary["featureviz"]["comparison"]) == {
        "regularised", "start: noise", "start: image", "objective: probability", "unregularised"}
    np.testing.assert_allclose(second.data.channel_images, first.data.channel_images, atol=1e-5)
    assert first.data.channel_images.shape == (2, 32, 32, 1)


def test_the_split_generator_draws_what_one_generator_over_the_batch_draws():
    import tensorflow as tf

    from auditor.methods.featureviz.render import SplitRandom

    whole = tf.random.Generator.from_seed(7)
    stream = tf.random.Generator.from_seed(7).state
    expected = [whole.uniform([9], -2.0, 3.0).numpy() for _ in range(3)]
    rows = tf.constant([4, 5, 6, 7, 8])  # the second replica's share
    share = SplitRandom(stream, tf.constant(0, tf.int64), rows, tf.constant(9, tf.int64))
    for drawn in expected:
        np.testing.assert_array_equal(share.uniform([5], -2.0, 3.0).numpy(), drawn[4:])


def test_adam_on_tensors_takes_the_steps_of_keras_adam():
    import keras
    import tensorflow as tf

    from auditor.methods.featureviz.render import adam

    rng = np.random.default_rng(0)
    start = rng.normal(size=(3, 4)).astype(np.float32)
    variable, optimizer = tf.Variable(start), keras.optimizers.Adam(0.05)
    values, m, v = tf.constant(start), tf.zeros((3, 4)), tf.zeros((3, 4))
    for step in range(1, 6):
        gradient = tf.constant(rng.normal(size=(3, 4)).astype(np.float32))
        optimizer.apply_gradients([(gradient, variable)])
        values, m, v = adam(values, m, v, gradient, step, 0.05)
    np.testing.assert_allclose(values.numpy(), variable.numpy(), atol=1e-6)


def test_a_layer_named_logits_is_not_mistaken_for_the_logits(tmp_path):
    """MobileNetV3's last convolution is named 'logits': rendering a class and one of that
    layer's channels in one batch must read each from its own place (it crashed in a gather)."""
    import keras

    from auditor.inputs.models import load_model
    from auditor.methods.featureviz.render import render

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="logits")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inputs, keras.layers.Dense(3)(h)).save(tmp_path / "named.keras")
    handle = load_model(str(tmp_path / "named.keras"), "0-1")
    objective = objectives.class_logit([2, 0]) + objectives.channel("logits", [1, 3])
    rendering = render(handle, objective, Pixels((8, 8, 3)), count=2,
                       loop=Loop(steps=2, snapshots=(2,)))
    assert rendering.images.shape == (2, 8, 8, 3) and np.isfinite(rendering.images).all()


def test_steps_per_call_fill_about_a_second_after_a_first_step_alone():
    from auditor.predict.calls import MAX_STEPS_PER_CALL, steps_per_call

    assert steps_per_call([]) == 1  # the first call traces: one step
    assert steps_per_call([(1, 30.0)]) == 1  # known only with the tracing: still slow
    assert steps_per_call([(1, 30.0), (4, 2.0)]) == 2  # 0.5 s a step after it
    assert steps_per_call([(1, 9.0), (100, 0.1)]) == 1000
    assert steps_per_call([(1, 0.0)]) == MAX_STEPS_PER_CALL


def test_a_signal_noted_during_a_call_stops_the_render_after_that_call(digits_model_path,
                                                                       monkeypatch):
    """SIGTERM's Python handler runs only between compiled calls: the render stops after the
    call during which the signal came, not after the whole stretch to the next snapshot."""
    import signal

    from auditor.errors import Interrupted
    from auditor.inputs.models import load_model
    from auditor.methods.featureviz.render import render

    digits_handle = load_model(str(digits_model_path))  # its own: one compiled render loop
    objective = objectives.class_logit([1, 2])
    render(digits_handle, objective, Pixels(digits_handle.input_shape), count=2, loop=Loop(steps=1))
    key = next(k for k in digits_handle.compiled if k[0] == "featureviz")
    compiled, calls = digits_handle.compiled[key], []

    def signalled(*args):  # the real loop; the handler's flag set while it runs
        calls.append(int(args[1]))
        monkeypatch.setattr(Interrupted, "pending", signal.SIGTERM)
        return compiled(*args)

    monkeypatch.setitem(digits_handle.compiled, key, signalled)
    with pytest.raises(Interrupted):
        render(digits_handle, objective, Pixels(digits_handle.input_shape), count=2,
               loop=Loop(steps=256, snapshots=(0, 256)))
    assert calls == [1]
