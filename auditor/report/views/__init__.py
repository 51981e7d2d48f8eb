"""Figures and tables for each section's template partial, drawn from the section's result.

``auditor/report/views/NAME.py`` defines ``view(result, dataset) -> dict``; the pipeline calls it
only when the HTML report is written, so a run without HTML draws no figure at all. A section
without a view module of its own gets ``figures_table``: its summary's figures as a table, which
``templates/sections/_figures.html`` shows when it has no partial of its own either (so a new
section reaches the report from its module alone; a view and a partial draw it better).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

FIGURES_ROWS = 60  # rows of the default table: a summary's figures, not its examples


def build_view(result, dataset) -> dict:
    """The template context of one section's partial; a section that failed shows none."""
    if result.error is not None or result.not_applicable is not None:
        return {}
    name = f"auditor.report.views.{result.name}"
    if importlib.util.find_spec(name) is None:
        return figures_table(result)
    return importlib.import_module(name).view(result, dataset)


def figures_table(result) -> dict:
    """Every number, word and flag of the section's summary, by its dotted path (lists are
    examples, not figures: counted only)."""
    rows: list[dict[str, Any]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list | tuple):
            rows.append({"key": path, "value": f"{len(node)} items"})
        else:
            rows.append({"key": path, "value": "n/a" if node is None else node})

    walk(result.summary, "")
    return {"rows": rows[:FIGURES_ROWS], "more": max(0, len(rows) - FIGURES_ROWS)}
