"""The section protocol: what a section receives (Context) and returns (SectionResult).

A section module (``auditor/sections/NAME.py``) defines ``NAME``, ``TITLE``, an ``Options``
dataclass (its spec table; a ``__post_init__`` that raises ConfigError runs when the config is
made, before any work) and ``run(ctx, options) -> SectionResult``. It computes with
``auditor.methods`` and never draws: the arrays its figures need go into ``SectionResult.data``,
and ``auditor/report/views/NAME.py`` turns them into the template's ``view`` only when the HTML
report is written. Its template partial is ``templates/sections/NAME.html``. A section may
declare ``KEY_FIGURES``, a tuple of KeyFigure: the top of the report, summary.md, baseline
comparisons and the index all read them (``auditor.sections.key_figures()``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.checks.check import Check
from auditor.config.spec import AuditConfig, build_dataclass
from auditor.errors import ConfigError


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

    def features(self):
        """Penultimate features (N, D) of every audit image, computed once per run and shared
        by the sections that need them (triage, discovery, embeddings); None when the model
        cannot be split before its final layer."""
        if "features" not in self.cache:
            from auditor.predict.predictions import penultimate_features

            self.cache["features"] = penultimate_features(self.handle, self.dataset,
                                                          self.config.batch_size)
        return self.cache["features"]

    def thresholds(self, check_id: str) -> dict[str, Any]:
        return self.config.checks.get(check_id, {})


@dataclass
class SectionResult:
    """One section's outcome.

    ``summary`` holds the top-level summary.json keys this section owns; ``data`` the arrays
    and tables its figures are drawn from (read by ``auditor.report.views``, never by
    summary.json); ``view`` what its template partial shows (figures as data URIs, tables),
    filled by the report layer; ``intro`` one or two sentences on how to read its figures.
    """

    name: str
    title: str
    intro: str
    summary: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    view: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def _no_detail(summary: dict) -> str:
    return ""


@dataclass(frozen=True)
class KeyFigure:
    """One figure a section puts first: read from summary.json as written, so that it works
    on any run folder (baselines, the index) and not only on the run at hand.

    ``value(summary)`` is the number (None when the run has none); ``text(summary, value)``
    how the headline reads it (default: a percentage or a count); ``detail`` the line under
    it; ``status(summary, status)`` may change the status its section's checks give it
    (``judged=False``: never coloured by them). ``rank`` orders the figures; ``trend``: the
    index draws it over time; ``headline=False``: only in summary.md, baseline comparisons
    and the index, not among the top of the report's five.
    """

    name: str  # its key in summary.json's baseline.key_figures
    label: str  # at the top of the report
    caption: str  # in tables and trends (summary.md, baseline comparison, index)
    section: str
    value: Callable[[dict], Any]
    percent: bool = False
    text: Callable[[dict, Any], str] | None = None
    detail: Callable[[dict], str] = _no_detail
    status: Callable[[dict, str], str] | None = None
    judged: bool = True
    trend: bool = True
    rank: int = 50
    headline: bool = True

    def shown(self, summary: dict, value: Any) -> str:
        if self.text is not None:
            return self.text(summary, value)
        return f"{value:.1%}" if self.percent else f"{value:,}"


# Checks of option values, for sections' ``Options.__post_init__``: they run when the config is
# made, so that a bad value fails before the model is read.

def at_least(section: str, options: Any, minimum: float, *names: str) -> None:
    """Each named option is None or at least ``minimum``."""
    for name in names:
        value = getattr(options, name)
        if value is not None and value < minimum:
            raise ConfigError(f"'{section}.{name}' must be at least {minimum:g}, got {value!r}")


def one_of(section: str, name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ConfigError(f"'{section}.{name}' must be one of: {', '.join(map(str, choices))}; "
                          f"got {value!r}")


def known_methods(section: str, name: str, methods) -> None:
    """Every name is a registered attribution method (``auditor methods`` lists them)."""
    from auditor.methods.attribution import METHODS

    for method in [methods] if isinstance(methods, str) else list(methods):
        if method not in METHODS:
            raise ConfigError(f"'{section}.{name}' names unknown method '{method}'; choose from: "
                              f"{', '.join(sorted(METHODS))} (see 'auditor methods')")
