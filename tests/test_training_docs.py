"""The README's section on audits during training, in MLflow and in TensorBoard: its callback,
its command line and its ``mlflow.models.evaluate`` call run as written.

The names the snippets take as given (a compiled model, its training and validation arrays, a
logged model's URI, an audit spec) are made here from the digits; the tracking URI is a
SQLite file in the test's folder.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
from pathlib import Path

import keras
import pytest
from click.testing import CliRunner

from auditor.cli import cli
from auditor.inputs.demo import build_digits_cnn, digits_images

ROOT = Path(__file__).resolve().parents[1]


def section_blocks(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index("## During training, in MLflow and in TensorBoard")
    section = text[start:text.index("\n## ", start + 3)]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.fixture
def project(tmp_path, monkeypatch, digits_test):
    """A training script's namespace, run from an empty folder with its own MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    x, y = digits_images("train")
    x_val, y_val = digits_test
    keras.utils.set_random_seed(0)
    model = build_digits_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return {"model": model, "x_train": x[:400], "y_train": y[:400], "x_val": x_val[:100],
            "y_val": y_val[:100]}


def runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_the_callback_example_runs_as_written(project, tmp_path):
    callback_example = section_blocks("python")[0]
    exec(callback_example, dict(project))
    reports = tmp_path / "reports" / "training"
    audited = [json.loads(p.read_text()) for p in sorted(reports.glob("*/summary.json"))]
    assert len(audited) == 2 and (reports / "index.html").is_file()
    header = (tmp_path / "training.csv").read_text().splitlines()[0].split(",")
    assert {"audit_accuracy", "audit_verdict", "val_accuracy"} <= set(header)
    assert list((tmp_path / "logs" / "audit").glob("events.out.tfevents.*"))


def test_the_command_line_example_runs_as_written(project, tmp_path, digits_model_path):
    (line,) = [line for block in section_blocks("bash") for line in block.splitlines()
               if line.startswith("auditor ")]
    (tmp_path / "audits").mkdir()
    (tmp_path / "audits" / "model.toml").write_text(
        f'model = "{digits_model_path}"\ndata = "sklearn:digits:test"\n'
        'sections = ["performance"]\nmax_samples = 60\n')
    result = CliRunner().invoke(cli, shlex.split(line)[1:])
    assert result.exit_code in (0, 1), result.output
    (run,) = runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.data.tags["auditor.verdict"] in ("pass", "warn", "fail")
    assert list((tmp_path / "logs" / "audit").glob("events.out.tfevents.*"))


def test_the_mlflow_evaluate_example_runs_as_written(project, tmp_path):
    import mlflow

    plugins = importlib.metadata.entry_points(group="mlflow.model_evaluator")
    assert "auditor" in {plugin.name for plugin in plugins}  # how MLflow finds it by name
    evaluate_example = section_blocks("python")[1]
    with mlflow.start_run() as run:
        logged = mlflow.keras.log_model(project["model"], name="model",
                                        pip_requirements=["keras"])  # no environment probing
        exec(evaluate_example, {**project, "model_uri": logged.model_uri})
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    summary = json.loads(Path(client.download_artifacts(
        run.info.run_id, "auditor/summary.json", str(tmp_path))).read_text())
    assert summary["data"]["n"] == 100 and summary["config"]["sections"] == ["performance"]
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["audit_accuracy"] == summary["metrics"]["accuracy"]
