"""The Keras callback: audits inside model.fit, in the tools users already look in, and training
unchanged. One small digits CNN trained twice (with and without the callback, same seed), on
the performance section and 100 test images, serves most tests."""

from __future__ import annotations

import json
import logging
import math
import random
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from auditor.errors import AuditorError, ConfigError, DataError
from auditor.inputs.demo import build_digits_cnn, digits_images
from auditor.inputs.models import weights_sha256
from auditor.keras import AUDIT_LOGS, AuditCallback


@keras.saving.register_keras_serializable(package="auditor_tests")
class TracedCNN(keras.Model):
    """A model that keeps the graph each trace of its training step builds (the training
    graph, which nothing of the audit may join)."""

    def train_step(self, data):
        self.__dict__.setdefault("step_graphs", []).append(tf.compat.v1.get_default_graph())
        return super().train_step(data)


def train(callbacks, epochs=4, images=400):
    """The demo CNN, seeded, with shuffling and dropout: anything that moved a random state
    would change its weights."""
    x, y = digits_images("train")
    keras.utils.set_random_seed(0)
    tf.random.set_global_generator(tf.random.Generator.from_seed(0))
    base = build_digits_cnn()
    model = TracedCNN(base.inputs, base.outputs, name=base.name)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:images], y[:images], epochs=epochs, batch_size=32, shuffle=True,
                        validation_split=0.2, verbose=0, callbacks=callbacks)
    draws = (random.random(), float(np.random.rand()), float(tf.random.uniform(())),
             float(keras.random.uniform(())),
             float(tf.random.get_global_generator().uniform(())))  # what the user draws next
    return model, history, draws


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_test):
    """A fit with the callback every 2 of 4 epochs (a tf.data source, MLflow and TensorBoard),
    and the same fit without it."""
    root = tmp_path_factory.mktemp("callback")
    x, y = digits_test
    data = tf.data.Dataset.from_tensor_slices((x[:100], y[:100])).batch(32)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    callback = AuditCallback(data, root / "reports", every=2, sections=["performance"],
                             spec={"format": "json,html", "mlflow_uri": uri}, mlflow=True,
                             tensorboard=str(root / "tb"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow's local artifact store is ./mlruns
        audited = train([callback, keras.callbacks.CSVLogger(str(root / "log.csv"))])
    plain = train([])
    return {"root": root, "callback": callback, "audited": audited, "plain": plain, "uri": uri}


def test_training_is_unchanged_by_the_callback(trained):
    (model, history, draws), (plain, plain_history, plain_draws) = (trained["audited"],
                                                                     trained["plain"])
    for mine, theirs in zip(model.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    for mine, theirs in zip(model.optimizer.variables, plain.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history.history[key] == plain_history.history[key]
    assert draws == plain_draws  # every global random generator is where training left it


def test_nothing_of_the_audit_joins_the_training_graph(trained):
    """The training step is traced as often, into graphs of the same operations, and the
    model has the same layers, variables, losses and metrics, with and without the callback."""
    model, plain = trained["audited"][0], trained["plain"][0]
    assert len(model.step_graphs) == len(plain.step_graphs) >= 1  # no retrace

    def operations(graph):
        return sorted(op.type for op in graph.get_operations())

    for mine, theirs in zip(model.step_graphs, plain.step_graphs, strict=True):
        assert operations(mine) == operations(theirs)
    assert [type(layer) for layer in model.layers] == [type(layer) for layer in plain.layers]

    def variables(variables):  # without Keras's process-wide counters in unnamed objects' names
        return [(re.sub(r"_\d+(?=/|$)", "", v.path), v.shape) for v in variables]

    assert variables(model.variables) == variables(plain.variables)
    assert variables(model.optimizer.variables) == variables(plain.optimizer.variables)
    assert len(model.losses) == len(plain.losses)
    assert [m.name for m in model.metrics] == [m.name for m in plain.metrics]


def test_two_audited_epochs_write_two_runs_an_index_and_the_audit_logs(trained):
    root = trained["root"] / "reports"
    runs = sorted(p.name for p in root.iterdir() if (p / "summary.json").is_file())
    assert [name[:10] for name in runs] == ["epoch-0002", "epoch-0004"]
    assert (root / "index.html").is_file()
    ledger = json.loads((root / "watch.json").read_text())["checkpoints"]
    assert [entry["epoch"] for entry in ledger] == [2, 4]
    later = json.loads((root / runs[1] / "summary.json").read_text())
    assert later["model"]["input_range"] == "0-1"  # the data's range, as the model is fed it
    assert "model.input_range" not in {c["id"] for c in later["checks"]}  # not probed
    assert runs[0] in later["baseline"]["path"]  # the previous audited epoch
    # no file is saved: the run knows the model by the hash of its weights in memory
    assert not (root / "checkpoints").exists()
    assert (later["model"]["path"], later["model"]["name"]) == ("memory:epoch-0004",
                                                                "epoch-0004")
    assert [entry["file"] for entry in ledger] == ["memory:epoch-0002", "memory:epoch-0004"]
    model = trained["audited"][0]  # the last audited epoch's weights are the final ones
    assert later["model"]["sha256"] == weights_sha256(model.to_json(), model.get_weights())
    assert runs[1].endswith(later["model"]["sha256"][:12])
    assert ledger[0]["sha256"] != ledger[1]["sha256"]
    history = trained["audited"][1].history
    assert set(AUDIT_LOGS) <= set(history)
    accuracy = history["audit_accuracy"]
    assert math.isnan(accuracy[0]) and math.isnan(accuracy[2])
    assert accuracy[3] == later["metrics"]["accuracy"]
    assert history["audit_failed_checks"][3] == sum(
        c["status"] in ("fail", "error") for c in later["checks"])
    header = (trained["root"] / "log.csv").read_text().splitlines()[0]
    assert "audit_accuracy" in header and "audit_verdict" in header


def test_each_audit_is_in_mlflow_at_its_epoch(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained["uri"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    root = trained["root"] / "reports"
    folders = sorted(p for p in root.iterdir() if (p / "summary.json").is_file())
    last = json.loads((folders[-1] / "summary.json").read_text())
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "audit_accuracy")]
    assert steps == [2, 4]
    for check in last["checks"]:
        assert run.data.tags[f"check.{check['id']}"] == check["status"]
        if isinstance(check["value"], float):
            assert run.data.metrics[f"check.{check['id']}"] == pytest.approx(check["value"])
    assert run.data.tags["auditor.verdict"] == last["verdict"]
    assert run.data.params["sections"] == "performance"
    local = client.download_artifacts(run.info.run_id, f"{folders[-1].name}/summary.json",
                                      str(trained["root"] / "download"))
    assert json.loads(open(local).read()) == last


def test_each_audit_is_in_tensorboard_at_its_epoch(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained["root"] / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    accuracy = events.Tensors("audit/accuracy")
    history = trained["audited"][1].history["audit_accuracy"]
    assert [e.step for e in accuracy] == [2, 4]
    assert tf.make_ndarray(accuracy[-1].tensor_proto) == pytest.approx(history[3])
    verdict = tf.make_ndarray(events.Tensors("audit/verdict")[-1].tensor_proto)
    assert verdict.item().decode().startswith("**")
    assert "checks/accuracy" in events.Tags()["tensors"]


def test_stop_on_fail_stops_training_at_the_first_failing_audit(tmp_path, digits_test):
    x, y = digits_test
    callback = AuditCallback((x[:100], y[:100]), tmp_path / "reports", every=1,
                             sections=["performance"], stop_on="fail",
                             spec={"format": "json", "checks": {"accuracy": {"fail_below": 1.01}}})
    _, history, _ = train([callback], epochs=4, images=200)
    assert len(history.epoch) == 1
    assert history.history["audit_verdict"] == [2.0]
    assert [audit["epoch"] for audit in callback.audits] == [1]


def test_bad_input_fails_before_the_first_step(tmp_path, digits_test):
    x, y = digits_test
    with pytest.raises(ConfigError, match="unknown key 'sectoins'"):
        AuditCallback((x, y), tmp_path / "r", spec={"sectoins": ["performance"]})
    with pytest.raises(ConfigError, match="'stop_on' must be"):
        AuditCallback((x, y), tmp_path / "r", stop_on="always")
    with pytest.raises(ConfigError, match="baseline"):
        AuditCallback((x, y), tmp_path / "r", baseline=tmp_path / "no-such-run")
    steps = []
    counting = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda *a: steps.append(1))
    wrong = AuditCallback((x[:50], y[:50] + 10), tmp_path / "r", sections=["performance"])
    with pytest.raises(DataError, match="labels from 10"):
        train([wrong, counting], epochs=1, images=64)
    assert steps == [] and not (tmp_path / "r" / "checkpoints").exists()


def test_the_first_or_the_previous_audited_epoch_is_the_baseline(tmp_path, digits_test):
    x, y = digits_test
    first = AuditCallback((x, y), tmp_path, baseline="first")
    previous = AuditCallback((x, y), tmp_path)
    assert first._baseline() is None and previous._baseline() is None  # nothing audited yet
    for callback in (first, previous):
        callback.audits = [{"epoch": 2, "folder": tmp_path / "a"},
                           {"epoch": 4, "folder": tmp_path / "b"}]
    assert first._baseline() == str(tmp_path / "a")
    assert previous._baseline() == str(tmp_path / "b")


def test_each_audit_runs_under_the_strategy_in_scope_at_its_time():
    """The callback audits inside fit, under the user's strategy when they train with one;
    the strategy of the first audit's scope must not stay for the later audits."""
    from auditor.predict.distribute import make_distribution

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0"])
    with mirrored.scope():
        assert make_distribution("default").strategy is mirrored
    outside = make_distribution("default")
    assert outside.strategy is tf.distribute.get_strategy() is not mirrored
    assert make_distribution("default") is outside  # each strategy wrapped once
    with mirrored.scope():
        assert make_distribution("default").strategy is mirrored


def mlflow_runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_failing_audit_ends_its_mlflow_run_failed(tmp_path, monkeypatch, digits_test):
    """An audit that raises mid-fit (here: its ledger spoilt after the first epoch) stops
    training with its error and leaves the MLflow run FAILED, not RUNNING."""
    x, y = digits_test
    monkeypatch.chdir(tmp_path)  # the local artifact store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store (file stores are deprecated)
    root = tmp_path / "reports"
    spoil = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch and (root / "watch.json").write_text("{"))
    callback = AuditCallback((x[:50], y[:50]), root, sections=["performance"],
                             spec={"format": "json", "mlflow_uri": uri})
    with pytest.raises(AuditorError, match="not valid JSON"):
        train([spoil, callback], epochs=3, images=64)
    (run,) = mlflow_runs(uri)
    assert run.info.status == "FAILED"
    assert [audit["epoch"] for audit in callback.audits] == [1]


CRASH = """
import keras, sys
from auditor.inputs.demo import build_digits_cnn, digits_images
from auditor.inputs.models import weights_sha256
from auditor.keras import AuditCallback

x, y = digits_images("test")
model = build_digits_cnn()
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

def crash(epoch, logs):
    raise RuntimeError("training crashed")

audit = AuditCallback((x[:40], y[:40]), sys.argv[1], sections=["performance"],
                      spec={"format": "json", "mlflow_uri": sys.argv[2]})
model.fit(x[:64], y[:64], epochs=3, verbose=0,
          callbacks=[audit, keras.callbacks.LambdaCallback(on_epoch_end=crash)])
"""


def test_a_crash_in_training_ends_the_mlflow_run_failed(tmp_path):
    """Keras calls no callback when fit raises: the process that ends with training under
    way ends the run FAILED (at exit), as MLflow's autolog ends its own."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-c", CRASH, str(tmp_path / "reports"), uri],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1 and "training crashed" in done.stderr
    (run,) = mlflow_runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.metrics["audit_accuracy"] >= 0  # the first epoch's audit is there


def test_overhead_must_be_a_positive_share_or_none(tmp_path, digits_test):
    x, y = digits_test
    for wrong in (0, -0.1, True, "0.3", math.inf):
        with pytest.raises(ConfigError, match="'overhead' must be"):
            AuditCallback((x, y), tmp_path, overhead=wrong)
    assert AuditCallback((x, y), tmp_path, overhead=None).overhead is None


def test_sections_over_the_overhead_budget_are_listed_as_not_run(tmp_path, digits_test):
    """With almost no budget, the cheapest section runs and the other is a skipped check
    that says why (never a pass, never left out in silence)."""
    x, y = digits_test
    callback = AuditCallback((x[:60], y[:60]), tmp_path, sections=["robustness", "performance"],
                             spec={"format": "json"}, overhead=1e-6)
    train([callback], epochs=1, images=64)
    (audit,) = callback.audits
    assert audit["not_run"] == ["robustness"]
    summary = json.loads((audit["folder"] / "summary.json").read_text())
    assert summary["config"]["sections"] == ["performance"]
    (check,) = [c for c in summary["checks"] if c["id"] == "robustness.run"]
    assert check["status"] == "skipped"
    assert re.fullmatch(r"not run: over the callback's overhead budget \(0\.0 s available, "
                        r"at least [\d.]+ s needed, its figures guessed, the timing of the "
                        r"model's passes guessed\); raise overhead= or every=",
                        check["message"])
    assert not math.isnan(audit["figures"]["audit_accuracy"])
    assert "setup" in callback.fit_seconds  # the once-per-fit work, apart from the audit's
    assert "timing" not in callback.fit_seconds  # no section that runs passes could fit


def test_each_audit_measures_one_new_section_and_times_passes_when_one_fits(tmp_path,
                                                                           digits_test):
    """The first audit runs the cheapest section alone (the others wait to be measured) and
    times no pass of the model; the next runs one more, and the model's passes are timed
    then, once, because that section runs them. Each section's figures are timed apart."""
    x, y = digits_test
    callback = AuditCallback((x[:60], y[:60]), tmp_path, sections=["performance", "contrastive"],
                             overhead=1e6, budget=200)
    train([callback], epochs=2, images=64)
    first, second = callback.audits
    assert first["not_run"] == ["contrastive"] and second["not_run"] == []
    summary = json.loads((first["folder"] / "summary.json").read_text())
    (check,) = [c for c in summary["checks"] if c["id"] == "contrastive.run"]
    assert check["message"].startswith("not run: its cost is not measured yet")
    assert "figures.performance" in summary["timings"]
    assert set(callback.fit_seconds) == {"setup", "timing", "index", "close"}


def test_audit_checkpoint_records_the_checkpoint_as_it_is(tmp_path, digits_model_path):
    """The glue watch and the callback share: an entry's facts never replace what it records
    of the checkpoint; sections left out are skipped checks; the callback writes the index
    itself (once per fit)."""
    import functools

    from auditor.configure import make_config
    from auditor.inputs.models import file_sha256
    from auditor.runs.watch import audit_checkpoint

    configure = functools.partial(make_config, {}, data="sklearn:digits:test", max_samples=50,
                                  sections=["performance"], format="json", quiet=True)
    sha = file_sha256(digits_model_path)
    done = audit_checkpoint(digits_model_path, tmp_path, configure, sha=sha, baseline=None,
                            say=lambda line: None, facts={"epoch": 3, "sha256": "forged"},
                            not_run={"robustness": "not run: over budget"}, index=False)
    (entry,) = json.loads((tmp_path / "watch.json").read_text())["checkpoints"]
    assert (entry["sha256"], entry["file"], entry["epoch"]) == (sha, str(digits_model_path), 3)
    assert entry["folder"] == done.folder.name and not (tmp_path / "index.html").exists()
    (check,) = [c for c in done.summary["checks"] if c["id"] == "robustness.run"]
    assert (check["status"], check["message"]) == ("skipped", "not run: over budget")


class Traces(logging.Handler):
    """The graphs TensorFlow builds while attached (its own debug line for each new one),
    without tf.data's: a pipeline traces its map functions whenever it is built."""

    def __init__(self):
        super().__init__(level=1)
        self.traced: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if (message.startswith("Creating new FuncGraph")
                and "StructuredFunctionWrapper" not in message):
            self.traced.append(message)


def test_the_second_audit_traces_nothing_and_audits_as_a_fresh_cli_audit(tmp_path,
                                                                           digits_test):
    """The callback's one copy of the model, given each epoch's weights: the second audit
    traces no function of the model, and its run is the one a fresh CLI audit of the epoch's
    checkpoint writes (summary.json key by key, measured times apart). The input range is
    probed, on both."""
    from click.testing import CliRunner

    from auditor.cli import cli

    x, y = digits_test
    np.savez(tmp_path / "data.npz", x=x[:60], y=y[:60])
    data = f"npz:{tmp_path / 'data.npz'}"
    logger, level, per_epoch = tf.get_logger(), tf.get_logger().level, []

    def attach(epoch, logs):
        per_epoch.append(Traces())
        logger.addHandler(per_epoch[-1])
        logger.setLevel(1)

    def detach(epoch, logs):
        logger.removeHandler(per_epoch[-1])
        logger.setLevel(level)

    callback = AuditCallback(data, tmp_path / "reports", every=1, budget=3000,
                             sections=["performance", "contrastive"], spec={"format": "json"},
                             overhead=None, checkpoints=True)
    train([keras.callbacks.LambdaCallback(on_epoch_end=attach), callback,
           keras.callbacks.LambdaCallback(on_epoch_end=detach)], epochs=2, images=64)
    assert per_epoch[0].traced and per_epoch[1].traced == []
    first, second = callback.audits
    checkpoint = next((tmp_path / "reports" / "checkpoints").glob("*/epoch-0002.keras"))
    done = CliRunner().invoke(cli, [
        "audit", "--model", str(checkpoint), "--data", data, "--budget", "3000",
        "--sections", "performance,contrastive", "--format", "json", "--no-progress",
        "--baseline", str(first["folder"]), "--out", str(tmp_path / "fresh")])
    assert done.exit_code in (0, 1), done.output
    fresh = json.loads((tmp_path / "fresh" / "summary.json").read_text())
    mine = json.loads((second["folder"] / "summary.json").read_text())
    assert "model.input_range" in {c["id"] for c in mine["checks"]}  # probed
    assert unmeasured(mine) == unmeasured(fresh)


MEASURED = re.compile(r"timing|seconds|estimate")  # times, and the plan's estimates of them


def unmeasured(summary: dict) -> dict:
    """A summary without what is measured (times) or names the run itself (when it was made,
    its folder, its step in the trackers)."""
    def drop(value):
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if not MEASURED.search(str(k))}
        return [drop(v) for v in value] if isinstance(value, list) else value

    kept = drop(summary)
    kept.pop("created")
    for key in ("out", "tracker_step"):
        kept["config"].pop(key)
    return kept


@pytest.mark.parametrize("head", ["softmax", "separate sigmoid", "one sigmoid unit"])
def test_assigned_weights_give_the_logits_of_a_fresh_load(tmp_path, head):
    """Each way a handle's logits model is made from the model (a stripped copy, a cut, a
    binary head's two logits): weights assigned to the handle give what loading a file saved
    with them gives."""
    from auditor.inputs.models import load_model

    def build(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((6, 6, 1))
        hidden = keras.layers.Dense(4, activation="relu")(keras.layers.Flatten()(inputs))
        if head == "softmax":
            outputs = keras.layers.Dense(3, activation="softmax")(hidden)
        elif head == "separate sigmoid":
            outputs = keras.layers.Activation("sigmoid")(keras.layers.Dense(1)(hidden))
        else:
            outputs = keras.layers.Dense(1, activation="sigmoid")(hidden)
        return keras.Model(inputs, outputs)

    old, new = build(0), build(1)
    old.save(tmp_path / "old.keras")
    new.save(tmp_path / "new.keras")
    handle = load_model(str(tmp_path / "old.keras"), input_range="0-1")
    x = np.random.default_rng(0).uniform(0, 1, (5, 6, 6, 1)).astype("float32")
    before = np.asarray(handle.logits_fn(x))
    handle.assign_weights(new.get_weights())
    fresh = load_model(str(tmp_path / "new.keras"), input_range="0-1")
    assert handle.output == fresh.output
    np.testing.assert_allclose(handle.logits_fn(x), fresh.logits(x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, fresh.logits(x))


def test_an_audit_of_a_reused_handle_seeds_without_clearing_tensorflows_kernels():
    """The callback's audits seed what keras.utils.set_random_seed seeds, but keep TensorFlow's
    kernels (the compiled training step among them): a stateful op's stream goes on."""
    from auditor.pipeline import seed_keeping_kernels

    tf.random.set_seed(1)
    first = float(tf.random.uniform([], seed=1))
    seed_keeping_kernels(1)
    kept = float(tf.random.uniform([], seed=1))  # set_seed(1) would draw ``first`` again
    drawn = (random.random(), float(np.random.rand()), float(keras.random.uniform(())))
    tf.random.set_seed(1)
    assert float(tf.random.uniform([], seed=1)) == first
    assert float(tf.random.uniform([], seed=1)) == kept != first  # the kernel was kept
    keras.utils.set_random_seed(1)
    assert drawn == (random.random(), float(np.random.rand()), float(keras.random.uniform(())))
