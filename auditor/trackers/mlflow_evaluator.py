"""The audit as an MLflow model evaluator: ``mlflow.models.evaluate(model_uri, images, targets=
labels, model_type="classifier", evaluators=["auditor"])`` audits a logged Keras model.

Registered through MLflow's plugin entry point ``mlflow.model_evaluator`` (setup.cfg). MLflow
hands the evaluator a pyfunc model and a 2-D feature table, so the Keras model is taken from the
pyfunc (``get_raw_model``) and each row is reshaped to the model's input. ``evaluator_config``
takes ``spec`` (a TOML path or a dict of spec keys), ``sections``, ``budget`` (default
``quick``) and ``out`` (the run folder; default a temporary one, removed once it is logged).
The audit logs into MLflow's evaluation run like ``--mlflow`` (artifacts under ``auditor/``) and
returns the key figures and check values as the evaluation's metrics.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from mlflow.models.evaluation import EvaluationResult, ModelEvaluator

from auditor.errors import ConfigError
from auditor.trackers import check_values, key_figures

OPTIONS = ("spec", "sections", "budget", "out")


class AuditEvaluator(ModelEvaluator):
    """Audits Keras image classifiers logged to MLflow (``mlflow.keras``/``mlflow.tensorflow``)."""

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type == "classifier"

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None,
                 **kwargs) -> EvaluationResult | None:
        keras_model = _keras_model(model)
        if keras_model is None:  # not a Keras model: leave it to the other evaluators
            return None
        unknown = sorted(set(evaluator_config) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"unknown evaluator_config key '{unknown[0]}' for the auditor "
                              f"evaluator; use: {', '.join(OPTIONS)}")
        features = dataset.features_data
        x = np.asarray(features.to_numpy() if hasattr(features, "to_numpy") else features)
        x = x.reshape(len(x), *keras_model.input_shape[1:])
        scratch = Path(tempfile.mkdtemp(prefix="auditor-mlflow-"))
        try:
            out = Path(evaluator_config.get("out") or scratch / "run")
            summary = _audit(keras_model, x, np.asarray(dataset.labels_data), scratch, out,
                             evaluator_config)
            from mlflow.tracking import MlflowClient

            from auditor.trackers.mlflow_log import MlflowRun

            MlflowRun(MlflowClient(), run_id).log_audit(out, summary, 0, artifact_path="auditor")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        metrics = {k: v for k, v in key_figures(summary).items() if v == v}
        metrics.update({f"check.{k}": v for k, v in check_values(summary).items()})
        return EvaluationResult(metrics=metrics, artifacts={}, run_id=run_id)


def _keras_model(model):
    import keras

    try:
        raw = model.get_raw_model() if model is not None else None
    except NotImplementedError:
        return None
    return raw if isinstance(raw, keras.Model) else None


def _audit(keras_model, x, y, scratch: Path, out: Path, options: dict) -> dict:
    """Save the model, name the arrays as a data source, and run the audit into ``out``."""
    from auditor.config.spec import read_spec
    from auditor.configure import make_config
    from auditor.inputs.memory import memory_source
    from auditor.pipeline import run_audit

    spec = options.get("spec")
    spec = dict(read_spec(spec) if isinstance(spec, (str, Path)) else spec or {})
    path = scratch / "model.keras"
    keras_model.save(path)
    with memory_source("mlflow.evaluate", x, y) as source:
        config = make_config(spec, model=str(path), data=source, out=str(out),
                             sections=options.get("sections"),
                             budget=options.get("budget", "quick"), progress=False,
                             mlflow=False)
        return run_audit(config).summary
