"""What a section receives (Context) and returns (SectionResult): plain data, no rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.checks.check import Check
from auditor.config.spec import AuditConfig, build_dataclass


@dataclass
class Context:
    """Everything loaded once and shared by the sections of one run."""

    config: AuditConfig
    handle: Any  # models.ModelHandle
    dataset: Any  # datasets.Dataset
    predictions: Any  # predict.Predictions
    workdir: Path  # the staging output folder; sections may add files to it
    show_progress: bool = False
    baseline: dict | None = None  # the baseline run's summary.json, when given
    train_dataset: Any = None  # --train-data: images for fine-tuning copies, when given
    compare_handle: Any = None  # --compare-model: a second ModelHandle, when given
    cache: dict[str, Any] = field(default_factory=dict)  # results sections share (e.g. saliency)

    def options(self, name: str, cls: type) -> Any:
        """The section's options: its spec table over the dataclass defaults."""
        return build_dataclass(cls, self.config.section_options.get(name, {}), f"{name}.")

    def thresholds(self, check_id: str) -> dict[str, Any]:
        return self.config.checks.get(check_id, {})


@dataclass
class SectionResult:
    """One section's outcome.

    ``summary`` holds the top-level summary.json keys this section owns; ``view`` what its
    template partial shows (figures as data URIs, tables); ``intro`` one or two sentences on how
    to read its figures.
    """

    name: str
    title: str
    intro: str
    summary: dict[str, Any] = field(default_factory=dict)
    view: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
