"""Loading: every model kind and data source the CLI accepts, fitted to the model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from auditor.errors import DataError, ModelError
from auditor.inputs.datasets import load_dataset
from auditor.inputs.models import load_model


def small_rgb_classifier(rescale: bool = True) -> keras.Model:
    layers = [keras.Input((16, 16, 3))]
    if rescale:
        layers.append(keras.layers.Rescaling(1 / 255.0))
    layers += [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
               keras.layers.Dense(3, activation="softmax")]
    return keras.Sequential(layers)


def functional_classifier() -> keras.Model:
    inputs = keras.Input((16, 16, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    b = keras.layers.Conv2D(4, 1, padding="same", activation="relu")(inputs)
    merged = keras.layers.Concatenate()([a, b])
    pooled = keras.layers.GlobalAveragePooling2D()(merged)
    return keras.Model(inputs, keras.layers.Dense(4)(pooled))


def random_images(n, shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype("float32")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_softmax_models_are_audited_on_their_logits(tmp_path, suffix):
    model = small_rgb_classifier()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    handle = load_model(str(path))
    x = random_images(4, (16, 16, 3))
    assert handle.output == "softmax stripped"
    assert handle.transform.name == "0-255"  # guessed from the Rescaling layer
    probs = tf.nn.softmax(handle.logits(x)).numpy()
    np.testing.assert_allclose(probs, model(x * 255.0).numpy(), atol=1e-5)
    assert handle.model.layers[-1].activation.__name__ == "softmax"  # the original is untouched


def test_functional_model_with_logits_is_used_as_is(tmp_path):
    model = functional_classifier()
    path = tmp_path / "functional.keras"
    model.save(path)
    handle = load_model(str(path))
    x = random_images(3, (16, 16, 1))
    assert handle.output == "logits" and handle.num_classes == 4
    np.testing.assert_allclose(handle.logits(x).numpy(), model(x).numpy(), atol=1e-5)


def test_saved_model_folder_with_hidden_softmax_yields_log_probabilities(tmp_path):
    model = small_rgb_classifier()
    model.export(str(tmp_path / "saved"), verbose=False)
    handle = load_model(str(tmp_path / "saved"), input_range="0-255")
    x = random_images(3, (16, 16, 3))
    assert handle.output == "log-probabilities"
    np.testing.assert_allclose(tf.nn.softmax(handle.logits(x)).numpy(), model(x * 255).numpy(),
                               atol=1e-5)


def test_nested_mobilenet_backbone_loads_with_its_preprocessing(tmp_path):
    backbone = keras.applications.MobileNetV2(weights=None, include_top=False,
                                              input_shape=(32, 32, 3))
    model = keras.Sequential([keras.Input((32, 32, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5, activation="softmax")])
    path = tmp_path / "nested.keras"
    model.save(path)
    handle = load_model(str(path))
    x = random_images(2, (32, 32, 3))
    assert handle.transform.name == "mobilenet_v2"
    assert handle.output == "softmax stripped"
    expected = model(keras.applications.mobilenet_v2.preprocess_input(x * 255.0)).numpy()
    np.testing.assert_allclose(tf.nn.softmax(handle.logits(x)).numpy(), expected, atol=1e-4)


def test_lambda_layers_need_unsafe_load(tmp_path):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(3)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelError, match="--unsafe-load"):
        load_model(str(path))
    assert load_model(str(path), unsafe_load=True).num_classes == 3


def test_digits_source_is_resized_to_the_model(digits_handle):
    data = load_dataset("sklearn:digits:test", (24, 24, 3), 10, max_samples=50, seed=1)
    (images, labels, _), = list(data.batches(64))
    assert images.shape == (50, 24, 24, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert np.bincount(labels, minlength=10).min() >= 4  # stratified


def test_npz_source_scales_0_255_data_and_reads_class_names(digits_npz):
    data = load_dataset(f"npz:{digits_npz}", (32, 32, 1), 10)
    images = data.images([0, 5, 2])
    raw = np.load(digits_npz)
    np.testing.assert_allclose(images[1], raw["x"][5] / 255.0, atol=1e-6)
    assert data.class_names == [str(i) for i in range(10)]
    assert data.n == len(raw["y"])


def test_image_folder_source_streams_files_grey_to_rgb(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (20, 12, 1), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / name / f"{i}.png"), tf.io.encode_png(pixels))
    data = load_dataset(str(tmp_path), (16, 16, 3), 2)
    assert data.class_names == ["cat", "dog"]
    assert list(data.labels) == [0, 0, 0, 1, 1, 1]
    batches = list(data.batches(4))
    assert [b[0].shape for b in batches] == [(4, 16, 16, 3), (2, 16, 16, 3)]
    np.testing.assert_allclose(batches[0][0][..., 0], batches[0][0][..., 2])  # grey copied


def test_stratified_sample_is_reproducible():
    a = load_dataset("sklearn:digits", (8, 8, 1), 10, max_samples=100, seed=3)
    b = load_dataset("sklearn:digits", (8, 8, 1), 10, max_samples=100, seed=3)
    c = load_dataset("sklearn:digits", (8, 8, 1), 10, max_samples=100, seed=4)
    assert (a.source_index == b.source_index).all()
    assert not (a.source_index == c.source_index).all()


def test_one_hot_npz_labels_are_accepted(tmp_path):
    path = tmp_path / "onehot.npz"
    np.savez(path, x=random_images(4, (8, 8)), y=np.eye(3)[[0, 1, 2, 1]])
    assert list(load_dataset(f"npz:{path}", (8, 8, 1), 3).labels) == [0, 1, 2, 1]


def test_class_names_must_match_the_model(tmp_path):
    with pytest.raises(DataError, match="class_names has 2 names"):
        load_dataset("sklearn:digits", (8, 8, 1), 10, class_names=["a", "b"])


def test_a_corrupt_image_in_a_folder_is_skipped_or_with_strict_data_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        pixels = np.zeros((8, 8, 3), np.uint8)
        tf.io.write_file(str(tmp_path / name / "0.png"), tf.io.encode_png(pixels))
    (tmp_path / "b" / "1.png").write_bytes(b"not a png at all")
    data = load_dataset(str(tmp_path), (8, 8, 3), 2)
    assert data.n == 2 and [s["path"] for s in data.skipped] == [str(tmp_path / "b" / "1.png")]
    assert sum(len(batch) for batch, _, _ in data.batches(2)) == 2  # streams without failing
    with pytest.raises(DataError, match="1 unreadable file"):
        load_dataset(str(tmp_path), (8, 8, 3), 2, strict_data=True)


def test_tfds_sources_say_how_to_get_the_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tfds(name, *args, **kwargs):
        if name == "tensorflow_datasets":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tfds)
    with pytest.raises(DataError, match="pip install tensorflow-datasets"):
        load_dataset("tfds:mnist:test", (28, 28, 1), 10)
