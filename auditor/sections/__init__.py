"""The report's sections, one module each, in report order.

A section module defines ``NAME``, ``TITLE``, an ``Options`` dataclass (its spec table),
``CHECKS`` (a tuple of ``checks.declared.Declared``: every check it can emit, ``*`` standing for
a name such as a method's, each with its kind, bounds, key figure and headline words),
``run(ctx, options) -> SectionResult`` and optionally ``KEY_FIGURES`` and ``STEPS`` (the shared
steps it reads, made by the pipeline before the sections: ``auditor.steps``); its figures are
drawn by ``auditor/report/views/NAME.py`` and shown by ``templates/sections/NAME.html``.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util

from auditor.checks.declared import Declared

# concepts sits after attribution (a reader who has seen where the model looks reads next
# which parts it saw there) and before clever_hans (the planted copies it audits with the same
# method follow the model's own groups).
ORDER = ("performance", "triage", "contrastive", "attribution", "concepts", "clever_hans",
         "featureviz", "counterfactuals", "robustness")
SECTION_NAMES = tuple(n for n in ORDER if importlib.util.find_spec(f"auditor.sections.{n}"))


def section_names() -> tuple[str, ...]:
    """The registered sections in report order, read when asked (``SECTION_NAMES``), so that
    the pipeline, the config and the comparisons all see one list."""
    return SECTION_NAMES


def section_module(name: str):
    return importlib.import_module(f"auditor.sections.{name}")


def section_options_class(name: str) -> type:
    return section_module(name).Options


def key_figures() -> list:
    """Every section's KeyFigure declarations, in rank order."""
    declared = [figure for name in SECTION_NAMES
                for figure in getattr(section_module(name), "KEY_FIGURES", ())]
    return sorted(declared, key=lambda figure: figure.rank)


def _range_words(summary: dict, check: dict) -> str | None:
    return ("The input range the model expects could not be told from the data: set "
            "--input-range to the range it was trained on.")


# Checks of the run itself: the input-range probe, skipped files and the folder mapping
# (checks/data.py), non-finite weights (checks/weights.py), a section or its figures that
# crashed, and the baseline's data, its planned settings and the comparison of Clever Hans
# suspects (runs/baseline.py).
# All are about the model and its data.
RUN_CHECKS = (
    Declared("model.input_range", what="input range the model expects",
             finding=_range_words, finding_rank=40),
    Declared("data.skipped", what="unreadable files skipped"),
    Declared("data.class_mapping", what="folder names mapped to classes"),
    Declared("model.weights", what="every weight of the model is finite",
             bounds={"fail_above": 0}),
    Declared("baseline.data", what="the baseline was measured on the same data"),
    Declared("baseline.plan", what="the baseline ran with the same planned settings"),
    Declared("*.run", what="a section ran"),
    Declared("*.view", what="a section's figures were drawn"),
    NEWLY_FLAGGED := Declared("newly_flagged_classes", bounds={"fail_above": 0},
                              what="classes newly flagged as Clever Hans suspects"),
)


def registry():
    """The sections' options classes and declared checks, which the config validates against
    (config.spec.Registry)."""
    from auditor.config.spec import Registry

    return Registry({name: section_options_class(name) for name in SECTION_NAMES},
                    declared_checks())


def declared_checks() -> tuple[Declared, ...]:
    """Every check a run can emit: the run's own and each section's ``CHECKS``."""
    declared = list(RUN_CHECKS)
    for name in SECTION_NAMES:
        declared += section_module(name).CHECKS
    return tuple(declared)


def stamp_run_checks(checks: list, spec: dict) -> list:
    """``checks`` with the run's own (RUN_CHECKS) given their declared kind and the spec's
    ``gate``; the sections' checks are stamped by their sections."""
    from auditor.checks.declared import declaration_of

    stamped = []
    for check in checks:
        declaration = declaration_of(check.id, RUN_CHECKS)
        stamped.append(check if declaration is None else declaration.stamp(check, spec))
    return stamped


def check_patterns() -> tuple[str, ...]:
    """Every check id a run can emit, as patterns."""
    return tuple(d.id for d in declared_checks())


def is_known_check(check_id: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(check_id, pattern) for pattern in patterns)
