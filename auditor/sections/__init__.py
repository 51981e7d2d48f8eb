"""The report's sections, one module each, in report order.

A section module defines ``NAME``, ``TITLE``, an ``Options`` dataclass (its spec table) and
``run(ctx, options) -> SectionResult``; its template partial is ``templates/sections/NAME.html``.
"""

from __future__ import annotations

import importlib
import importlib.util

ORDER = ("performance", "triage", "contrastive", "attribution", "clever_hans", "featureviz",
         "counterfactuals", "robustness")
SECTION_NAMES = tuple(n for n in ORDER if importlib.util.find_spec(f"auditor.sections.{n}"))


def section_module(name: str):
    return importlib.import_module(f"auditor.sections.{name}")


def section_options_class(name: str) -> type:
    return section_module(name).Options
