"""An audit as an MLflow run: the configuration as params, every check's value as a metric and
its status as a tag, the verdict as a tag, the key figures as metrics at a step (the epoch, from
the Keras callback), and the run folder as artifacts.

Runs are made and written through ``MlflowClient`` on the tracking URI (``--mlflow-uri``, else
MLflow's own: ``MLFLOW_TRACKING_URI``), never through the fluent API's stack of active runs: a
user's active run becomes the parent of the audit's run, and stays the run their own
``mlflow.log_*`` calls write to while training goes on.
"""

from __future__ import annotations

import re
from pathlib import Path

from auditor.errors import ConfigError
from auditor.trackers import check_values, key_figures

EXTRA = "pip install 'auditor[mlflow]'"
PER_RUN_KEYS = {"model", "out", "baseline", "tracker_step", "progress", "quiet", "mlflow",
                "mlflow_uri", "tensorboard"}  # change per checkpoint or say nothing of the audit
PARAM_LIMIT = 500  # characters of a param value: the limit of older MLflow servers (now 6000)
BATCH = 100  # params or tags per log_batch call (MLflow's limit; 1000 for metrics)


def require_mlflow():
    """The mlflow module, or one line naming the extra to install."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(f"--mlflow needs MLflow, which is not installed; {EXTRA}") from None
    return mlflow


def metric_name(name: str) -> str:
    """A name MLflow accepts for a metric, param or tag (letters, digits, _ - . / space)."""
    return re.sub(r"[^/\w.\- ]", "_", name)


def config_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The resolved spec as flat params (``contrastive.method``, ``checks.accuracy.fail_below``),
    without the keys that change from one checkpoint to the next."""
    params: dict[str, str] = {}
    for key, value in config.items():
        if not prefix and key in PER_RUN_KEYS:
            continue
        if key == "section_options" and not prefix:
            params.update(config_params(value, ""))
        elif isinstance(value, dict):
            params.update(config_params(value, f"{prefix}{key}."))
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            params[metric_name(prefix + key)] = text[:PARAM_LIMIT]
    return params


class MlflowRun:
    """One MLflow run that audits are logged into, ended (FINISHED or FAILED) on exit."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        self.logged_params: set[str] = set()

    @classmethod
    def start(cls, uri: str | None, name: str) -> MlflowRun:
        """A new run on ``uri``, nested in the user's active run when there is one there."""
        mlflow = require_mlflow()
        from mlflow.tracking import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        uri = uri or mlflow.get_tracking_uri()
        client = MlflowClient(tracking_uri=uri)
        tags = {MLFLOW_RUN_NAME: name}
        parent = mlflow.active_run()
        if parent is not None and uri == mlflow.get_tracking_uri():
            experiment = parent.info.experiment_id
            tags[MLFLOW_PARENT_RUN_ID] = parent.info.run_id
        else:
            experiment = _experiment_id(client, uri == mlflow.get_tracking_uri())
        run = client.create_run(experiment, tags=tags, run_name=name)
        return cls(client, run.info.run_id)

    def __enter__(self) -> MlflowRun:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.end("FINISHED" if kind is None else "FAILED")

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)

    def end_if_running(self, status: str) -> None:
        """End the run with ``status`` unless it has ended (the Keras callback's run, at exit
        or on an exception: it must not stay RUNNING)."""
        if self.client.get_run(self.run_id).info.status == "RUNNING":
            self.end(status)

    close = end

    def log_audit(self, folder: Path, summary: dict, step: int,
                  artifact_path: str | None = None) -> None:
        """One finished audit: params (the first time each is seen), metrics at ``step``, tags
        (the latest audit's), and the run folder's files as artifacts."""
        from mlflow.entities import Metric, Param, RunTag

        params = {k: v for k, v in config_params(summary.get("config", {})).items()
                  if k not in self.logged_params}
        self.logged_params |= set(params)
        metrics = {**key_figures(summary),
                   **{f"check.{k}": v for k, v in check_values(summary).items()}}
        tags = {"auditor.verdict": summary.get("verdict", ""),
                "auditor.model_sha256": summary.get("model", {}).get("sha256", ""),
                **{f"check.{c['id']}": c["status"] for c in summary.get("checks", [])}}
        stamp = _milliseconds(summary)
        metric_rows = [Metric(metric_name(k), v, stamp, step) for k, v in metrics.items()
                       if v == v]  # NaN: the run has no such figure
        param_rows = [Param(k, v) for k, v in params.items()]
        tag_rows = [RunTag(metric_name(k), str(v)) for k, v in tags.items()]
        for start in range(0, max(len(metric_rows), len(param_rows), len(tag_rows)), BATCH):
            self.client.log_batch(self.run_id, metrics=metric_rows[start:start + BATCH],
                                  params=param_rows[start:start + BATCH],
                                  tags=tag_rows[start:start + BATCH])
        for file in sorted(Path(folder).iterdir()):
            if file.is_file() and not file.name.startswith("."):
                self.client.log_artifact(self.run_id, str(file), artifact_path)


def _experiment_id(client, fluent_uri: bool) -> str:
    """The experiment the user chose (``mlflow.set_experiment`` or MLFLOW_EXPERIMENT_NAME/ID),
    else MLflow's default one."""
    if fluent_uri:
        from mlflow.tracking.fluent import _get_experiment_id  # what mlflow.start_run uses

        return _get_experiment_id()
    import os

    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found else client.create_experiment(name)
    return os.environ.get("MLFLOW_EXPERIMENT_ID", "0")


def _milliseconds(summary: dict) -> int:
    import datetime as dt
    import time

    try:
        return int(dt.datetime.fromisoformat(summary["created"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return int(time.time() * 1000)
