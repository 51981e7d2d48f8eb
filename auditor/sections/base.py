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
from auditor.config.spec import AuditConfig
from auditor.errors import ConfigError
from auditor.steps.saliency import SaliencyStore


@dataclass(frozen=True)
class Context:
    """What the sections of one run share: the run's inputs (frozen), the options resolved
    once per section, and the stores of shared results (the steps' and the saliency maps).

    Inputs: ``config``, ``handle``, ``dataset``, ``predictions``, ``workdir`` (the staging
    output folder; sections may add files to it), ``baseline`` (the baseline run's summary),
    ``train_dataset`` (--train-data), ``compare_handle`` (--compare-model), ``plan`` (the
    settings the compute plan lowered). Stores: ``card`` (steps.card.ReliabilityCard, made
    before the sections when the audit runs the attribution section, else None) and
    ``store`` (steps.saliency.SaliencyStore); ``feature_store`` keeps the penultimate
    features once read (``features()``).
    """

    config: AuditConfig
    handle: Any  # models.ModelHandle
    dataset: Any  # datasets.Dataset
    predictions: Any  # predict.Predictions
    workdir: Path
    show_progress: bool = False
    baseline: dict | None = None
    train_dataset: Any = None
    compare_handle: Any = None
    plan: Any = None  # predict.plan.Plan
    card: Any = None  # steps.card.ReliabilityCard, or None when the audit makes no card
    store: SaliencyStore = field(default_factory=SaliencyStore)
    feature_store: dict = field(default_factory=dict, repr=False)  # {"features": (N, D) or None}

    def options(self, name: str) -> Any:
        """The section's options, typed once by the config (its spec table over the defaults)
        with the settings the compute plan lowered (the plan never touches a key the spec
        gives)."""
        if self.plan is not None and name in self.plan.options:
            return self.plan.options[name]
        return self.config.options[name]

    def features(self, visit=None):
        """Penultimate features (N, D) of every audit image, computed in the prediction pass
        itself and shared by the sections that need them (triage, discovery, embeddings); None
        when the model cannot be split before its final layer. ``visit(images, positions)``
        sees each batch on the way when the features are computed now (never when they were
        made before)."""
        if "features" not in self.feature_store:
            made = getattr(self.predictions, "features", None)
            if made is None:
                from auditor.predict.predictions import penultimate_features

                made = penultimate_features(self.handle, self.dataset, self.config.batch_size,
                                            visit=visit)
            self.feature_store["features"] = made
        return self.feature_store["features"]

    def saliency(self, method: str, positions, targets, *, contrast=None, images=None,
                 score: str = "logit", options: dict | None = None):
        """Maps of ``method`` for the audit images at ``positions``, made once per run
        (steps.saliency.SaliencyStore.maps)."""
        return self.store.maps(self.handle, self.dataset, method, positions, targets,
                               contrast=contrast, images=images, score=score, options=options)


@dataclass(frozen=True)
class SectionResult:
    """One section's outcome.

    ``summary`` holds the top-level summary.json keys this section owns; ``data`` the arrays
    and tables its figures are drawn from (read by ``auditor.report.views``, never by
    summary.json); ``view`` what its template partial shows (figures as data URIs, tables),
    filled by the report layer; ``intro`` one or two sentences on how to read its figures.
    Frozen: the pipeline adds the time and the view to a copy (``dataclasses.replace``), and
    a section that joins later sections' findings declares ``join`` (the attribution card).
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
    method_choice: Any = None  # steps.card.MethodChoice: the method it took from the card
    not_applicable: str | None = None  # why the section does not apply to this model (one line)


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
    """Every name is a registered attribution method (``auditor methods`` lists them); None
    leaves the choice to the reliability card."""
    from auditor.methods.attribution import METHODS

    if methods is None:
        return
    for method in [methods] if isinstance(methods, str) else list(methods):
        if method not in METHODS:
            raise ConfigError(f"'{section}.{name}' names unknown method '{method}'; choose from: "
                              f"{', '.join(sorted(METHODS))} (see 'auditor methods')")
