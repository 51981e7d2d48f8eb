"""The Python API and the Keras callback on a multi-label model: multi-hot arrays and a
tf.data.Dataset of multi-hot batches are audited per label, and single-class labels for a
sigmoid head are refused with the CLI's one line, before any work (or training step).

The model is test_multilabel.py's MLP (three attributes of the digit), fitted here for one
epoch inside ``model.fit`` with the callback."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_multilabel import LABELS, attributes

from auditor.errors import DataError
from auditor.keras import AuditCallback

# The CLI's line for single-class labels on a sigmoid head (inputs/datasets.py), as
# test_multilabel.py's MISMATCHES reads it.
ONE_CLASS = "one class per image, but the model ends in several sigmoid outputs"


def sigmoid_mlp():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(48, activation="relu"),
                              keras.layers.Dense(len(LABELS), activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    return model


def fit(digits_train, *callbacks, epochs=1):
    x, y = digits_train
    model = sigmoid_mlp()
    history = model.fit(x[:600], attributes(y[:600]), epochs=epochs, batch_size=32, verbose=0,
                        callbacks=list(callbacks))
    return model, history


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, digits_train, digits_test):
    """One epoch with the callback on multi-hot arrays, and one on a tf.data.Dataset of
    multi-hot batches; the arrays' model is kept for run_audit."""
    root = tmp_path_factory.mktemp("multilabel-callback")
    x, y = digits_test
    arrays = AuditCallback((x[:120], attributes(y[:120])), root / "arrays",
                           sections=["performance"], overhead=None,
                           spec={"format": "json", "class_names": list(LABELS)})
    model, history = fit(digits_train, arrays)
    batches = tf.data.Dataset.from_tensor_slices(
        (x[:120], attributes(y[:120]).astype(np.float32))).batch(32)
    dataset = AuditCallback(batches, root / "dataset", sections=["performance"],
                            spec={"format": "json", "class_names": list(LABELS)})
    _, dataset_history = fit(digits_train, dataset)
    model.save(root / "model.keras")
    return {"root": root, "arrays": (arrays, history), "dataset": (dataset, dataset_history),
            "model": root / "model.keras", "labels": attributes(y[:120])}


def read_summary(audit: dict) -> dict:
    import json

    return json.loads((audit["folder"] / "summary.json").read_text())


@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_the_callback_audits_multi_hot_data_per_label(fitted, source):
    callback, history = fitted[source]
    (audit,) = callback.audits
    summary = read_summary(audit)
    assert summary["model"]["task"] == "multi-label"
    block = summary["multilabel"]
    assert set(block["labels"]) == set(LABELS)
    assert [block["labels"][name]["support"] for name in LABELS] == (
        fitted["labels"].sum(axis=0).tolist())
    logs = history.history
    assert logs["audit_accuracy"] == [block["subset_accuracy"]]
    assert logs["audit_micro_f1"] == [pytest.approx(block["micro"]["f1"])]
    assert logs["audit_mistakes"] == [float(block["mistakes"]["images"])]
    assert math.isnan(logs["audit_label_errors"][0])  # triage did not run: NaN, not 0
    ids = {c["id"] for c in summary["checks"]}
    assert {f"multilabel.label_f1.{name}" for name in LABELS} <= ids


def test_run_audit_on_multi_hot_arrays_audits_per_label(fitted, tmp_path, digits_test):
    from auditor.configure import make_config
    from auditor.inputs.memory import memory_source
    from auditor.pipeline import run_audit

    x, y = digits_test
    with memory_source("multi-hot", x[:80], attributes(y[:80]), list(LABELS)) as source:
        done = run_audit(make_config({"model": str(fitted["model"]), "data": source,
                                      "input_range": "0-1", "sections": ["performance"],
                                      "format": ["json"]},
                                     out=str(tmp_path / "run"), progress=False, quiet=True))
    block = done.summary["multilabel"]
    assert done.summary["data"]["class_names"] == list(LABELS)
    assert sum(m["support"] for m in block["labels"].values()) == int(attributes(y[:80]).sum())


def test_run_audit_refuses_single_class_labels_for_a_sigmoid_head(fitted, tmp_path,
                                                                  digits_test):
    from auditor.configure import make_config
    from auditor.inputs.memory import memory_source
    from auditor.pipeline import run_audit

    x, y = digits_test
    with memory_source("one-class", x[:40], y[:40] % 3) as source:
        with pytest.raises(DataError) as refused:
            run_audit(make_config({"model": str(fitted["model"]), "data": source,
                                   "sections": ["performance"]},
                                  out=str(tmp_path / "run"), progress=False, quiet=True))
    assert ONE_CLASS in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("source", ["arrays", "dataset"])
def test_the_callback_refuses_single_class_labels_before_the_first_step(
        source, tmp_path, digits_train, digits_test):
    x, y = digits_test
    labels = y[:40] % 3  # class indices a 3-output head could take for classes
    data = ((x[:40], labels) if source == "arrays"
            else tf.data.Dataset.from_tensor_slices((x[:40], labels)).batch(16))
    steps = []
    counting = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *a: steps.append(1))
    callback = AuditCallback(data, tmp_path / "r", sections=["performance"])
    with pytest.raises(DataError) as refused:
        fit(digits_train, callback, counting)
    assert ONE_CLASS in str(refused.value) and "\n" not in str(refused.value)
    assert steps == [] and not (tmp_path / "r" / "checkpoints").exists()
