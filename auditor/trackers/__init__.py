"""The tools users already look in: MLflow runs and TensorBoard event files.

Each logger reads a finished run folder as written (summary.json is the contract; the report's
figures and the run's arrays for images), so nothing here depends on how a section computes.
``log_trackers`` is the one call at the end of an audit that asked for them (``--mlflow``,
``--tensorboard``); the Keras callback calls the loggers itself, once per audited epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

VERDICT_LEVEL = {"pass": 0, "warn": 1, "fail": 2}  # audit_verdict as a number (logs, metrics)


def key_figures(summary: dict) -> dict[str, float]:
    """The figures a tracker shows first, by their stable names (``audit_*``): every key figure
    the sections declare (NaN when the run has none), the failed and warned checks, and the
    verdict as 0 (pass), 1 (warn) or 2 (fail). The counts are of the checks of the verdict
    (model checks, and explanation checks a spec gates), as the verdict is."""
    from auditor.runs.baseline import key_figures as declared

    figures = {f"audit_{name}": float(value) if isinstance(value, (int, float)) else math.nan
               for name, value in declared(summary).items()}
    checks = [c for c in summary.get("checks", []) if c.get("in_verdict", True)]
    figures["audit_failed_checks"] = float(sum(c["status"] in ("fail", "error") for c in checks))
    figures["audit_warned_checks"] = float(sum(c["status"] == "warn" for c in checks))
    figures["audit_verdict"] = float(VERDICT_LEVEL.get(summary.get("verdict"), 2))
    return figures


def check_values(summary: dict) -> dict[str, float]:
    """Every check's numeric value by its id (checks without a number are left out)."""
    return {c["id"]: float(c["value"]) for c in summary.get("checks", [])
            if isinstance(c.get("value"), (int, float)) and not isinstance(c["value"], bool)
            and math.isfinite(c["value"])}


def log_trackers(config, folder: Path, summary: dict) -> None:
    """Log a finished run to the trackers its config names (step ``config.tracker_step``)."""
    step = config.tracker_step or 0
    if config.mlflow:
        from auditor.trackers.mlflow_log import MlflowRun

        with MlflowRun.start(config.mlflow_uri, name=Path(folder).name) as run:
            run.log_audit(folder, summary, step)
    if config.tensorboard:
        from auditor.trackers.tensorboard_log import TensorBoardWriter

        with TensorBoardWriter(config.tensorboard) as writer:
            writer.log_audit(folder, summary, step)
