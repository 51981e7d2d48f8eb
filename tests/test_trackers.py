"""``--mlflow`` and ``--tensorboard``: a run read back with MLflow's own client and TensorBoard's
own event reader equals its summary.json."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import tensorflow as tf

from auditor.cli import main


def run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["auditor", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def logged(tmp_path_factory, digits_model_path):
    """One audit (performance and contrastive, 80 images) logged to both trackers."""
    root = tmp_path_factory.mktemp("trackers")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)  # MLflow's local artifact store is ./mlruns
        patch.setattr(sys, "argv", [
            "auditor", "audit", "--model", str(digits_model_path), "--data",
            "sklearn:digits:test", "--sections", "performance,contrastive", "--max-samples",
            "80", "--out", str(root / "run"), "--mlflow", "--tensorboard", str(root / "tb"),
            "--quiet"])
        with pytest.raises(SystemExit) as stop:
            main()
    assert stop.value.code in (0, 1)
    summary = json.loads((root / "run" / "summary.json").read_text())
    return {"root": root, "uri": uri, "summary": summary}


def test_the_audit_is_an_mlflow_run_equal_to_its_summary(logged):
    from mlflow.tracking import MlflowClient

    summary, client = logged["summary"], MlflowClient(tracking_uri=logged["uri"])
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["sections"] == "performance,contrastive"
    assert run.data.params["max_samples"] == "80"
    assert run.data.tags["auditor.verdict"] == summary["verdict"]
    for check in summary["checks"]:
        assert run.data.tags[f"check.{check['id']}"] == check["status"]
        if isinstance(check["value"], (int, float)):
            assert run.data.metrics[f"check.{check['id']}"] == pytest.approx(check["value"])
    assert run.data.metrics["audit_accuracy"] == summary["metrics"]["accuracy"]
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "summary.json", "summary.md", "junit.xml"} <= files
    local = client.download_artifacts(run.info.run_id, "summary.json", str(logged["root"]))
    assert json.loads(open(local).read()) == summary


def test_the_audit_is_in_tensorboard_with_its_panels(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged["root"] / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()["tensors"]
    accuracy = tf.make_ndarray(events.Tensors("audit/accuracy")[0].tensor_proto)
    assert accuracy == pytest.approx(logged["summary"]["metrics"]["accuracy"])
    kappa = next(c for c in logged["summary"]["checks"] if c["id"] == "kappa")
    assert tf.make_ndarray(events.Tensors("checks/kappa")[0].tensor_proto) == pytest.approx(
        kappa["value"])
    panels = [tag for tag in tags if tag.startswith("audit/contrastive/")]
    mistakes = logged["summary"]["misclassifications"]["count"]
    assert len(panels) == min(8, mistakes) > 0
    width, height, png = tf.make_ndarray(events.Tensors(panels[0])[0].tensor_proto)[:3]
    assert int(width) > int(height) > 0 and png.startswith(b"\x89PNG")


def test_mlflow_missing_is_one_line_naming_the_extra(monkeypatch, capsys, digits_model_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    code, err = run_main(monkeypatch, capsys, "audit", "--model", digits_model_path, "--mlflow")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --mlflow needs MLflow, which is not installed; pip install 'auditor[mlflow]'"]



def test_watch_logs_each_checkpoint_at_its_number(tmp_path, monkeypatch, capsys,
                                                  digits_model_path):
    import shutil

    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(digits_model_path, tmp_path / "checkpoints" / "model.keras")
    code, _ = run_main(monkeypatch, capsys, "watch", tmp_path / "checkpoints", "--once",
                       "--settle", "0", "--out", tmp_path / "reports", "--data",
                       "sklearn:digits:test", "--sections", "performance", "--max-samples",
                       "60", "--format", "json", "--mlflow-uri", uri, "--tensorboard",
                       tmp_path / "tb", "--quiet")
    assert code in (0, 1)
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "audit_accuracy")] == [1]
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    assert [e.step for e in events.Tensors("audit/accuracy")] == [1]


def test_class_visualisations_are_one_image_in_tensorboard(tmp_path):
    """The featureviz section's array file (images, classes) becomes one sheet at the step."""
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from auditor.trackers.tensorboard_log import CLASS_VISUALIZATION, TensorBoardWriter

    run = tmp_path / "run"
    run.mkdir()
    images = np.random.default_rng(0).random((12, 8, 8, 1)).astype(np.float32)
    np.savez(run / CLASS_VISUALIZATION, images=images, classes=np.array(list("abcdefghijkl")))
    with TensorBoardWriter(tmp_path / "tb") as writer:
        writer.log_audit(run, {"verdict": "pass", "checks": []}, step=3)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("audit/class_visualization")
    width, height = (int(v) for v in tf.make_ndarray(event.tensor_proto)[:2])
    assert event.step == 3 and (width, height) == (10 * (8 + 2), 2 * (8 + 2))
