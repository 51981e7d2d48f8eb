"""The section protocol: what a section receives (Context) and returns (SectionResult).

A section module (``auditor/sections/NAME.py``) defines ``NAME``, ``TITLE``, an ``Options``
dataclass (its spec table; a ``__post_init__`` that raises ConfigError runs when the config is
made, before any work) and ``run(ctx, options) -> SectionResult``. It computes with
``auditor.methods`` and never draws: the arrays its figures need go into ``SectionResult.data``,
and ``auditor/report/views/NAME.py`` turns them into the template's ``view`` only when the HTML
report is written. Its template partial is ``templates/sections/NAME.html``. A section may
declare ``KEY_FIGURES``, a tuple of KeyFigure: the top of the report, summary.md, baseline
comparisons and the index all read them (``auditor.sections.key_figures()``), and ``STEPS``,
the shared steps it reads (``ctx.steps``, made before the sections: ``auditor.steps``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from auditor.checks.check import Check
from auditor.config.spec import AuditConfig
from auditor.errors import ConfigError
from auditor.steps.shared import Shared, read_only


@dataclass(frozen=True)
class RunInputs:
    """The run's inputs, frozen: what the steps are made from and every section reads.

    ``config``, ``handle`` (inputs.models.ModelHandle), ``dataset`` (inputs.datasets.Dataset),
    ``predictions`` (predict.Predictions), ``workdir`` (the staging output folder; sections may
    add files to it), ``baseline`` (the baseline run's summary), ``train_dataset``
    (--train-data), ``compare_handle`` (--compare-model).
    """

    config: AuditConfig
    handle: Any
    dataset: Any
    predictions: Any
    workdir: Path
    show_progress: bool = False
    baseline: dict | None = None
    train_dataset: Any = None
    compare_handle: Any = None


@dataclass(frozen=True)
class ResolvedOptions:
    """Every section's options, typed once by the config (its spec table over the defaults)
    with the settings the compute plan lowered (the plan never touches a key the spec gives):
    ``ctx.options[NAME]``. Nothing rebuilds them."""

    by_section: MappingProxyType
    # {section: {setting: {value, floor}}}: the settings the plan ran below their floors
    # (``Plan.below_floor``), for a step a section configures (the reliability card), whose
    # figures must then say they were not measured
    below_floor: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, config: AuditConfig, plan=None) -> ResolvedOptions:
        lowered = plan.options if plan is not None else {}
        below = plan.to_summary().get("below_floor", {}) if plan is not None else {}
        return cls(MappingProxyType({name: lowered.get(name, options)
                                     for name, options in config.options.items()}),
                   read_only(below))

    def __getitem__(self, name: str) -> Any:
        return self.by_section[name]


@dataclass(frozen=True)
class Context(RunInputs):
    """What a section receives: three objects, none of which it changes.

    - the run's inputs: ``Context`` is a ``RunInputs`` (``ctx.config``, ``ctx.handle``,
      ``ctx.dataset``, ``ctx.predictions``...);
    - ``steps``: the steps' results (``steps.shared.Shared``: ``ctx.steps.card``,
      ``ctx.steps.features``, ``ctx.steps.saliency``), made before the sections that
      declare them in ``STEPS``, read-only;
    - ``options``: every section's options, resolved and typed (``ResolvedOptions``;
      ``ctx.options[NAME]``; by default the config's, without a plan).
    """

    steps: Shared = field(default_factory=Shared)
    options: ResolvedOptions | None = None

    def __post_init__(self):
        if self.options is None:
            object.__setattr__(self, "options", ResolvedOptions.of(self.config))

    @classmethod
    def of(cls, inputs: RunInputs, shared: Shared, options: ResolvedOptions) -> Context:
        return cls(**{f.name: getattr(inputs, f.name) for f in dataclasses.fields(RunInputs)},
                   steps=shared, options=options)


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

    def frozen(self) -> SectionResult:
        """This result as the pipeline keeps it once the section returned, read-only all the
        way down (``steps.shared.read_only``): ``summary`` and ``data`` with every mapping a
        MappingProxyType, every list a tuple, every array read-only and every dataclass
        sealed; ``checks`` a tuple. No later section (nor ``join``) changes
        what it said; summary.json is written from a plain copy (``steps.shared.plain``)."""
        return dataclasses.replace(self, summary=read_only(dict(self.summary)),
                                   data=read_only(self.data), checks=tuple(self.checks))


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
