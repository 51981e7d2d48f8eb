"""The report's sections, one module each, in report order.

A section module defines ``NAME``, ``TITLE``, an ``Options`` dataclass (its spec table),
``CHECKS`` (the ids of the checks it can emit, ``*`` standing for a name such as a method's) and
``run(ctx, options) -> SectionResult``; its template partial is ``templates/sections/NAME.html``.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util

ORDER = ("performance", "contrastive", "attribution", "clever_hans", "featureviz",
         "counterfactuals", "robustness")
SECTION_NAMES = tuple(n for n in ORDER if importlib.util.find_spec(f"auditor.sections.{n}"))


def section_module(name: str):
    return importlib.import_module(f"auditor.sections.{name}")


def section_options_class(name: str) -> type:
    return section_module(name).Options


# Checks of the run itself: the input-range probe, a section that crashed, and the baseline
# comparison of Clever Hans suspects (runs/baseline.py).
RUN_CHECKS = ("model.input_range", "*.run", "newly_flagged_classes")


def check_patterns() -> tuple[str, ...]:
    """Every check id a run can emit, as patterns; a section that declares no CHECKS may emit
    any id under its name."""
    patterns = list(RUN_CHECKS)
    for name in SECTION_NAMES:
        patterns += getattr(section_module(name), "CHECKS", (f"{name}.*",))
    return tuple(patterns)


def is_known_check(check_id: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(check_id, pattern) for pattern in patterns)
