"""The report's sections, one module each, in report order.

A section module defines ``NAME``, ``TITLE``, an ``Options`` dataclass (its spec table),
``run(ctx, options) -> SectionResult`` and optionally ``KEY_FIGURES``; its figures are drawn by
``auditor/report/views/NAME.py`` and shown by ``templates/sections/NAME.html``.
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


def key_figures() -> list:
    """Every section's KeyFigure declarations, in rank order."""
    declared = [figure for name in SECTION_NAMES
                for figure in getattr(section_module(name), "KEY_FIGURES", ())]
    return sorted(declared, key=lambda figure: figure.rank)
