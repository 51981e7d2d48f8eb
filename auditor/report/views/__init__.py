"""Figures and tables for each section's template partial, drawn from the section's result.

``auditor/report/views/NAME.py`` defines ``view(result, dataset) -> dict``; the pipeline calls it
only when the HTML report is written, so a run without HTML draws no figure at all.
"""

from __future__ import annotations

import importlib


def build_view(result, dataset) -> dict:
    """The template context of one section's partial; a section that failed shows none."""
    if result.error is not None or result.not_applicable is not None:
        return {}
    return importlib.import_module(f"auditor.report.views.{result.name}").view(result, dataset)
