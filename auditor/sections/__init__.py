"""The report's sections, one module each, in report order.

A section module defines ``NAME``, ``TITLE``, an ``Options`` dataclass (its spec table),
``CHECKS`` (the ids of the checks it can emit, ``*`` standing for a name such as a method's),
``run(ctx, options) -> SectionResult`` and optionally ``KEY_FIGURES``; its figures are drawn by
``auditor/report/views/NAME.py`` and shown by ``templates/sections/NAME.html``.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util

# concepts sits after attribution (a reader who has seen where the model looks reads next
# which parts it saw there) and before clever_hans (the planted copies it audits with the same
# method follow the model's own groups).
ORDER = ("performance", "triage", "contrastive", "attribution", "concepts", "clever_hans",
         "featureviz", "counterfactuals", "robustness")
SECTION_NAMES = tuple(n for n in ORDER if importlib.util.find_spec(f"auditor.sections.{n}"))


def section_module(name: str):
    return importlib.import_module(f"auditor.sections.{name}")


def section_options_class(name: str) -> type:
    return section_module(name).Options


def key_figures() -> list:
    """Every section's KeyFigure declarations, in rank order."""
    declared = [figure for name in SECTION_NAMES
                for figure in getattr(section_module(name), "KEY_FIGURES", ())]
    return sorted(declared, key=lambda figure: figure.rank)


# Checks of the run itself: the input-range probe, skipped files and the folder mapping
# (checks/data.py), a section or its figures that crashed, and the baseline
# comparison of Clever Hans suspects (runs/baseline.py).
RUN_CHECKS = ("model.input_range", "data.skipped", "data.class_mapping", "*.run", "*.view",
              "newly_flagged_classes")


def check_patterns() -> tuple[str, ...]:
    """Every check id a run can emit, as patterns; a section that declares no CHECKS may emit
    any id under its name."""
    patterns = list(RUN_CHECKS)
    for name in SECTION_NAMES:
        patterns += getattr(section_module(name), "CHECKS", (f"{name}.*",))
    return tuple(patterns)


def is_known_check(check_id: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(check_id, pattern) for pattern in patterns)
