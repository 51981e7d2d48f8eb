"""Architectures beyond small CNNs: copies of keras-hub, ConvNeXt and custom-class models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from architectures import application, hub_vit

from auditor.errors import ModelError
from auditor.inputs.copies import copy_model
from auditor.inputs.models import load_model


def _same_outputs_separate_variables(model, copy, size):
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(model(x)), atol=1e-6)
    assert not {id(v) for v in copy.weights} & {id(v) for v in model.weights}
    copy.weights[0].assign(copy.weights[0] + 1.0)
    assert not np.allclose(copy.weights[0].numpy(), model.weights[0].numpy())


@pytest.mark.parametrize("build", [hub_vit, lambda: application("ConvNeXtTiny")],
                         ids=["keras-hub ViT", "ConvNeXt (LayerScale)"])
def test_copies_of_keras_hub_and_layerscale_models(build):
    """keras-hub's patching layer cannot be rebuilt from its own config: its backbone is copied
    from the backbone's config, as saving does (recursive clone_model fails here)."""
    model = build()
    _same_outputs_separate_variables(model, copy_model(model), 32)


@keras.saving.register_keras_serializable("auditor_tests")
class Doubling(keras.layers.Layer):
    """A registered custom layer."""

    def call(self, x):
        return x * 2.0


class Halving(keras.layers.Layer):
    """A custom layer that is not registered (a Python API user's own class)."""

    def call(self, x):
        return x * 0.5


def test_copies_of_custom_classes_registered_or_not():
    inputs = keras.Input((8, 8, 3))
    h = Halving()(Doubling()(keras.layers.Conv2D(4, 3)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    _same_outputs_separate_variables(model, copy_model(model), 8)


def test_a_copy_that_cannot_be_rebuilt_is_one_line_naming_the_layer():
    class Broken(keras.layers.Layer):
        """Its constructor takes an object Keras cannot write into a config."""

        def __init__(self, scale, **kwargs):
            super().__init__(**kwargs)
            self.scale = scale

        def call(self, x):
            return x * self.scale.factor

    class Scale:
        factor = 3.0

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Broken(Scale(), name="broken")(inputs)))
    with pytest.raises(ModelError, match=r"cannot copy model .*: layer 'broken' \(Broken") as info:
        copy_model(model)
    assert "\n" not in str(info.value)


def test_keras_hub_vit_randomised_and_fine_tuned_copies(tmp_path):
    from auditor.methods.attribution.sanity import randomisable_copy, weighted_layers
    from auditor.methods.shortcuts.injection import _working_copy

    path = tmp_path / "vit.keras"
    hub_vit().save(path)
    handle = load_model(str(path), "0-1")
    assert handle.output == "softmax stripped"
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    copy = randomisable_copy(handle)
    np.testing.assert_allclose(copy.logits(x).numpy(), handle.logits(x).numpy(), atol=1e-5)
    # the encoder's blocks are randomised too, not only the head
    stages = [path for path, _ in weighted_layers(copy.logits_model)]
    queries = [path for path in stages if "/vit_encoder" in path and path.endswith("mha/query")]
    assert len(queries) == 2, stages  # one per encoder block
    tuned = _working_copy(handle)
    assert tuned.logits_model.trainable_variables


def test_failures_are_one_line_and_their_tracebacks_go_to_the_log(tmp_path):
    """A TensorFlow graph error and an error autograph wrapped in its frames come out as the
    root cause's one line, without file paths; the log keeps the whole traceback."""
    import tensorflow as tf

    from auditor.errors import AuditorError
    from auditor.failures import LOG_FILE, log_failure, one_line

    @tf.function
    def gather(x, i):
        return tf.gather(x, i)

    with pytest.raises(tf.errors.InvalidArgumentError) as graph:
        gather(tf.zeros(4), tf.constant([7]))
    line = log_failure(tmp_path, "section 'x'", graph.value)
    assert line == "InvalidArgumentError: indices[0] = 7 is not in [0, 4)"
    logged = (tmp_path / LOG_FILE).read_text()
    assert "Traceback" in logged and "GatherV2" in logged

    @tf.function
    def refuse(x):
        raise AuditorError("LRP cannot propagate relevance through layer 'a' (MultiHeadAttention)")

    with pytest.raises(AuditorError) as wrapped:
        refuse(tf.zeros(1))
    assert "File" in str(wrapped.value)  # autograph's frames: what the report must not show
    assert one_line(wrapped.value) == ("LRP cannot propagate relevance through layer 'a' "
                                       "(MultiHeadAttention)")
    assert one_line(ValueError("bad\nsecond")) == "ValueError: second"

    class Reads(keras.layers.Layer):
        """Reads its input's shape in Python, as keras-hub's MiT patch embedding does."""

        def call(self, x):
            return keras.ops.reshape(x, (-1, x.shape[1] * x.shape[2], x.shape[3]))

    traced = tf.function(Reads(name="reads"), input_signature=[tf.TensorSpec((None,) * 3 + (3,))])
    with pytest.raises(TypeError) as keras_call:  # Keras frames the cause with the arguments
        traced.get_concrete_function()
    assert one_line(keras_call.value) == ("TypeError: unsupported operand type(s) for *: "
                                          "'NoneType' and 'NoneType' (in Reads.call())")


def test_a_method_that_cannot_pass_a_layer_says_so_in_one_line(tmp_path):
    """LRP on a layer no rule covers (GroupNormalization; keras-hub's ViT layers it now walks,
    tests/test_vit.py): the reason names the layer in one line (it arrived wrapped in an
    autograph traceback)."""
    from auditor.errors import AuditorError
    from auditor.methods.attribution import attribute

    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    h = keras.layers.GroupNormalization(2, name="groups")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.Model(inputs, keras.layers.Dense(2)(h)).save(tmp_path / "groups.keras")
    handle = load_model(str(tmp_path / "groups.keras"), "0-1")
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    with pytest.raises(AuditorError) as info:
        attribute(handle, x, np.array([0, 1]), "lrp")
    assert "\n" not in str(info.value) and "File" not in str(info.value)
    assert "'groups' (GroupNormalization)" in str(info.value)


def hub_vit_task(classes: int = 10):
    """keras-hub's ViTImageClassifier on a tiny backbone, with its own preprocessor."""
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=2,
                                            num_heads=2, hidden_dim=32, mlp_dim=64)
    converter = keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5,
                                                   offset=-1.0)
    preprocessor = keras_hub.models.ViTImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=classes,
                                               preprocessor=preprocessor)


def test_keras_hub_task_from_the_cli_with_its_own_preprocessor(tmp_path, monkeypatch, capsys):
    """A keras-hub task saved to .keras audits without --unsafe-load (its classes come from an
    installed package); its input range is its preprocessor's, not probed."""
    import json
    import sys

    from auditor.cli import main

    task = hub_vit_task()
    task.save(tmp_path / "task.keras")
    handle = load_model(str(tmp_path / "task.keras"))
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(handle.logits(x).numpy(), task.predict(x * 255.0, verbose=0),
                               atol=1e-4)
    monkeypatch.setattr(sys, "argv", [
        "auditor", "audit", "--model", str(tmp_path / "task.keras"), "--data",
        "sklearn:digits:test", "--max-samples", "40", "--sections", "performance",
        "--out", str(tmp_path / "run"), "--format", "json"])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code in (0, 1), capsys.readouterr().err
    model = json.loads((tmp_path / "run" / "summary.json").read_text())["model"]
    assert (model["input_range"], model["input_range_source"]) == ("keras-hub preprocessor",
                                                                   "model")


def test_a_class_claiming_a_known_package_that_does_not_hold_it_is_refused(tmp_path):
    import json
    import zipfile

    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    dense = config["config"]["layers"][-1]
    dense.update(module="keras_hub.src.not_there", class_name="Evil", registered_name="Evil")
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(ModelError, match="custom class 'Evil'"):
        load_model(str(tmp_path / "evil.keras"))


def test_a_layer_with_several_outputs_is_no_layer_to_tap():
    """keras-hub's HGNetV2 encoder returns a list of stage outputs and its backbone a dict:
    neither is one map, so Grad-CAM's, the stage ends' and concepts' layers pass over them
    (the attribution and concepts sections crashed on the list)."""
    from auditor.inputs.layers import output_shape, stage_ends

    class Both(keras.layers.Layer):
        def call(self, x):
            return [x, x * 2.0]

    inputs = keras.Input((8, 8, 3))
    a, b = Both(name="both")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    head = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(a + b))
    model = keras.Model(inputs, head)
    assert output_shape(model.get_layer("both")) is None
    assert output_shape(model.get_layer("conv")) == (None, 6, 6, 4)
    assert stage_ends(model) == ["conv"]
