"""Scale: images stream from the source in bounded memory, examples are chosen with a bounded
top-k, and a mirrored run over two devices gives the figures of a single-device run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from auditor.errors import ConfigError, DataError
from auditor.inputs.datasets import Dataset, _array_reader, load_dataset
from auditor.methods.topk import TopK
from auditor.predict.distribute import _check_tf_config
from auditor.predict.predictions import Predictions, predict
from auditor.sections.performance import matrix_classes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (240, 12, 10, 3), dtype=np.uint8)
    return x, rng.integers(0, 4, len(x))


def streamed(dataset, batch_size=32) -> np.ndarray:
    return np.concatenate([batch for batch, _, _ in dataset.batches(batch_size)])


@pytest.mark.parametrize("save", ["savez", "savez_compressed", "fortran_order"])
def test_npz_images_stream_exactly_as_np_load_reads_them(tmp_path, images, save):
    x, y = images
    path = tmp_path / "data.npz"
    if save == "fortran_order":  # cannot be read by rows: falls back to reading it whole
        np.savez(path, x=np.asfortranarray(x), y=y)
    else:
        getattr(np, save)(path, x=x, y=y)
    dataset = load_dataset(f"npz:{path}", (12, 10, 3), 4)
    np.testing.assert_allclose(streamed(dataset), x / 255.0, atol=1e-6)
    positions = [200, 3, 3, 17]  # any order, repeats allowed
    np.testing.assert_allclose(dataset.images(positions), x[positions] / 255.0, atol=1e-6)
    sample = load_dataset(f"npz:{path}", (12, 10, 3), 4, max_samples=50, seed=1)
    np.testing.assert_allclose(streamed(sample, 7), x[sample.source_index] / 255.0, atol=1e-6)


def test_npz_float_images_are_scanned_for_range_and_bad_values(tmp_path, images):
    x, y = images
    grey = x[..., 0].astype(np.float64) / 255.0
    path = tmp_path / "grey.npz"
    np.savez(path, x=grey, y=y)
    np.testing.assert_allclose(streamed(load_dataset(f"npz:{path}", (12, 10, 1), 4))[..., 0],
                               grey, atol=1e-6)
    grey[[5, 9], 0, 0] = np.nan
    np.savez(path, x=grey, y=y)
    with pytest.raises(Exception, match="NaN or infinite pixel values in 2 image"):
        load_dataset(f"npz:{path}", (12, 10, 1), 4)


def test_a_non_finite_image_met_while_streaming_is_a_data_error_naming_where(digits_handle):
    x = np.random.default_rng(0).uniform(0, 1, (150, 32, 32, 1)).astype(np.float32)
    x[130, 3, 3] = np.nan
    dataset = Dataset(source="planted", class_names=[str(i) for i in range(10)],
                      labels=np.zeros(150, np.int64), source_index=np.arange(150),
                      image_shape=(32, 32, 1), _read=_array_reader(x))
    with pytest.raises(DataError, match="'planted' has NaN or infinite pixel values near sample "
                                        "128; clean or drop"):
        predict(digits_handle, dataset, batch_size=64)


def test_npz_audit_never_holds_the_image_array(tmp_path):
    """Opening and streaming an uncompressed npz allocates a few chunks, not the array: numpy
    allocations are traced, and the images as float32 would take 4 times the peak allowed."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6000, 32, 32, 3), dtype=np.uint8)  # 74 MB as float32
    path = tmp_path / "big.npz"
    np.savez(path, x=x, y=np.arange(len(x)) % 10)
    del x
    tracemalloc.start()
    try:
        dataset = load_dataset(f"npz:{path}", (32, 32, 3), 10)
        count = sum(len(batch) for batch, _, _ in dataset.batches(64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 6000
    assert peak < 6000 * 32 * 32 * 3 * 4 / 4


def test_top_k_matches_a_full_sort_with_ties_broken_by_position():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 1000).astype(float)  # many ties
    positions = rng.permutation(1000)
    top = TopK(25)
    for start in range(0, 1000, 64):
        top.push(scores[start:start + 64], positions[start:start + 64])
        assert len(top._scores) <= 2 * 25 + 64  # bounded, whatever the stream length
    expected = np.lexsort((positions, -scores))[:25]
    np.testing.assert_array_equal(top.positions(), positions[expected])
    np.testing.assert_array_equal(top.scores(), scores[expected])


def test_top_k_ignores_nan_and_handles_short_streams():
    top = TopK(5).push([0.5, np.nan, 0.9], [10, 11, 12])
    np.testing.assert_array_equal(top.positions(), [12, 10])
    assert TopK(0).push([1.0], [1]).positions().size == 0


def test_predictions_confidence_is_the_probability_of_the_predicted_class():
    logits = np.random.default_rng(0).normal(0, 5, (5000, 7)).astype(np.float32)
    p = Predictions(logits=logits, labels=np.zeros(5000, np.int64))
    np.testing.assert_allclose(p.confidence, p.probs.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(p.probs_at([4, 2]), p.probs[[4, 2]], rtol=1e-6)


def test_a_confusion_figure_of_many_classes_shows_those_in_the_most_mistakes():
    labels = np.repeat(np.arange(1000), 2)
    preds = labels.copy()
    preds[[0, 2, 4]] = [500, 501, 502]  # classes 0, 1, 2 mistaken for 500, 501, 502
    shown = matrix_classes(labels, preds, 1000, limit=8)
    assert len(shown) == 8
    assert {0, 1, 2, 500, 501, 502} <= set(shown.tolist())
    np.testing.assert_array_equal(matrix_classes(labels[:20], preds[:20], 10), np.arange(10))


def test_the_confusion_table_holds_every_count_shaded_by_it():
    """The confusion matrix is drawn as a table: the same counts as scikit-learn's matrix over
    the shown classes, darker cells for larger counts, and a note when classes are left out."""
    from matplotlib.colors import to_rgb
    from sklearn.metrics import confusion_matrix

    from auditor.report.views.performance import confusion_table

    labels = np.repeat(np.arange(1000), 2)
    preds = labels.copy()
    preds[[0, 2, 4, 5]] = [500, 501, 502, 502]
    names = [f"class {i}" for i in range(1000)]
    shown = matrix_classes(labels, preds, 1000, limit=8)
    table = confusion_table(labels, preds, names, shown)
    assert table["classes"] == [names[i] for i in shown] == [row["name"] for row in table["rows"]]
    counts = [[cell["count"] for cell in row["cells"]] for row in table["rows"]]
    np.testing.assert_array_equal(counts, confusion_matrix(labels, preds, labels=shown))
    cells = sorted((cell for row in table["rows"] for cell in row["cells"]),
                   key=lambda cell: cell["count"])
    brightness = [sum(to_rgb(cell["colour"])) for cell in cells]
    assert brightness == sorted(brightness, reverse=True) and brightness[0] > brightness[-1]
    assert [cell["dark"] for cell in cells] == [cell["count"] > 1 for cell in cells]
    assert table["note"] == "the 8 of 1000 classes in the most mistakes"
    assert confusion_table(labels[:20], preds[:20], names[:10], np.arange(10))["note"] is None


def test_a_malformed_tf_config_is_a_one_line_config_error():
    _check_tf_config(None)
    _check_tf_config('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
                     '"index": 1}}')
    for bad in ("not json", '{"cluster": {"worker": ["a:1"]}}',
                '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'):
        with pytest.raises(ConfigError, match="TF_CONFIG must be JSON"):
            _check_tf_config(bad)


MIRRORED_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from auditor.configure import make_config
    from auditor.predict.distribute import make_distribution, run_batch
    from auditor.inputs.models import load_model
    from auditor.pipeline import run_audit
    from auditor.sections import SECTION_NAMES
    from auditor.methods.attribution import attribute

    model, out = sys.argv[1], sys.argv[2]
    sections = [s for s in ("performance", "contrastive", "attribution") if s in SECTION_NAMES]
    # Methods of every kind (plain, path, layer, occlusion), and the demo report's small card
    # (tests/conftest.py: SMALL_SECTIONS), to keep the test short.
    spec = ({"attribution": {"methods": ["gradient", "integrated_gradients", "gradcam",
                                         "occlusion"], "sanity_samples": 4, "sanity_stages": 3,
                             "faithfulness_samples": 12, "faithfulness_steps": 8}}
            if "attribution" in sections else {})
    # Passes, not a named budget: a named one is a wait, sized by the time each run measures,
    # and the two runs must plan the same settings for their figures to be compared.
    spec["budget"] = 10 ** 9
    for strategy in ("default", "mirrored"):
        config = make_config(spec, model=model, data="sklearn:digits:test", max_samples=300,
                             sections=sections, out=f"{out}/{strategy}", strategy=strategy,
                             progress=False, format=["json"])  # the figures compared: no page
        run_audit(config)

    # The split itself: each replica sees its own contiguous share, on its own device.
    mirrored = make_distribution("mirrored")
    with mirrored.scope():
        handle = load_model(model)
    handle.distribution = mirrored
    seen = {}
    def record(x):
        replica = int(tf.distribute.get_replica_context().replica_id_in_sync_group)
        seen[replica] = (x[:, 0].tolist(), tf.constant(0.0).device)
        return x
    rows = np.arange(7, dtype=np.float32)[:, None]
    gathered = run_batch(handle, record, rows)
    single = load_model(model)
    x = np.random.default_rng(0).uniform(0, 1, (9, 32, 32, 1)).astype("float32")
    targets = np.arange(9) % 10
    maps = {"mirrored": attribute(handle, x, targets), "default": attribute(single, x, targets)}
    # A Clever Hans copy's fine-tuning: each replica trains on its share, gradients summed.
    from auditor.methods.shortcuts.injection import FineTuner
    weights = {}
    for name, h in (("mirrored", handle), ("default", single)):
        tuner = FineTuner(h, 1e-3)
        tuner.train(x, np.eye(10, dtype="float32")[targets], 3, 9, 0)
        weights[name] = np.concatenate([w.ravel() for w in tuner.copy.get_weights()])
    json.dump({"replicas": mirrored.replicas, "seen": seen,
               "tuning_gap": float(np.abs(weights["mirrored"] - weights["default"]).max()),
               "gathered": gathered[:, 0].tolist(),
               "attribution_gap": float(np.abs(maps["mirrored"] - maps["default"]).max()),
               "attribution_scale": float(np.abs(maps["default"]).max())},
              open(f"{out}/split.json", "w"))
""")

VOLATILE = {"created", "timings", "config", "distribution"}  # top-level keys about the run
MEASURED = {"seconds", "estimated_seconds", "estimates", "timing"}  # times, wherever they are


def assert_same_figures(a, b, where="summary"):
    """Equal structure and values; floats within what a different batch split can change."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            if (where != "summary" or key not in VOLATILE) and key not in MEASURED:
                assert_same_figures(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_figures(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


def test_a_mirrored_audit_over_two_devices_gives_the_single_device_figures(tmp_path,
                                                                            digits_model_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CI": "true"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_CHILD, str(digits_model_path),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["replicas"] == 2
    assert split["seen"]["0"][0] == [0, 1, 2, 3] and split["seen"]["1"][0] == [4, 5, 6]
    assert split["seen"]["0"][1].endswith("CPU:0") and split["seen"]["1"][1].endswith("CPU:1")
    assert split["gathered"] == list(range(7))
    assert split["attribution_gap"] <= 1e-4 * split["attribution_scale"]
    assert split["tuning_gap"] <= 1e-5  # Adam's steps are ~1e-3: the same training

    single = json.loads((tmp_path / "default" / "summary.json").read_text())
    mirrored = json.loads((tmp_path / "mirrored" / "summary.json").read_text())
    assert mirrored["distribution"]["replicas"] == 2
    assert single["distribution"]["replicas"] == 1
    assert single["misclassifications"]["count"] > 0  # there are mistakes to compare
    assert_same_figures(single, mirrored)
