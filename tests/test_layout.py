"""The house rules, read from the source: which package may import which, and no long function.

Rules (docs/layout.md):
- ``auditor.methods`` is pure computation: it imports nothing from sections, report, runs,
  config or the pipeline.
- ``auditor.sections`` computes and never draws: nothing from report (or matplotlib/PIL).
- ``auditor.report`` draws and writes: nothing from sections' run code (only the registry
  ``auditor.sections`` and the protocol ``auditor.sections.base``) and, from methods, only the
  display helpers in REPORT_MAY_USE.
- matplotlib is imported under ``auditor.report`` only (Pillow also reads and hashes images,
  so it may appear elsewhere; tests/test_format.py counts its encodes).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "auditor"
MAX_LINES = 60
REPORT_MAY_USE = {"auditor.methods.attribution.smoothing"}  # display-only smoothing of maps


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def broken_rules(module: str, imported: set[str]) -> list[str]:
    wrong = []
    if under(module, "auditor.methods"):
        wrong += [n for n in imported if any(under(n, p) for p in (
            "auditor.sections", "auditor.report", "auditor.runs", "auditor.config",
            "auditor.pipeline"))]
    if under(module, "auditor.sections"):
        wrong += [n for n in imported if under(n, "auditor.report")]
    if under(module, "auditor.report"):
        wrong += [n for n in imported if under(n, "auditor.sections")
                  and n not in ("auditor.sections", "auditor.sections.key_figures",
                                "auditor.sections.declared_checks", "auditor.sections.base")
                  and not n.startswith("auditor.sections.base.")]
        wrong += [n for n in imported if under(n, "auditor.methods")
                  and not any(under(n, allowed) for allowed in REPORT_MAY_USE)]
    if not under(module, "auditor.report"):
        wrong += [n for n in imported if under(n, "matplotlib")]
    return sorted(wrong)


# The packages from the bottom up: a module may import from its own floor and the floors below,
# never from a floor above, so that a new back arrow fails here. Packages that share a floor
# still call each other: predict and methods (the batched path runs methods' steps, methods run
# through the batched path), pipeline and runs (a watch runs audits; an audit writes run
# folders; the trackers read a finished run folder and an audit logs to them). The config knows
# no section: ``configure`` passes it the sections' registry.
FLOORS = (
    ("auditor", "auditor.errors", "auditor.failures", "auditor.resources", "auditor.progress",
     "auditor.options"),
    ("auditor.checks",),
    ("auditor.inputs",),
    ("auditor.predict", "auditor.methods"),
    ("auditor.config",),
    ("auditor.steps",),
    ("auditor.sections",),
    ("auditor.configure", "auditor.report"),
    ("auditor.pipeline", "auditor.runs", "auditor.trackers"),
    ("auditor.cli", "auditor.__main__", "auditor.attribution", "auditor.models",
     "auditor.concepts", "auditor.keras"),
)


def floor(name: str) -> int | None:
    """The floor of a module (its package's), None outside the package."""
    parts = name.split(".")
    package = ".".join(parts[:2])
    return next((i for i, names in enumerate(FLOORS) if package in names), None)


def back_arrows(module: str, imported: set[str]) -> list[str]:
    mine = floor(module)
    return sorted(n for n in imported if n.startswith("auditor")
                  and (theirs := floor(n)) is not None and theirs > mine)


def test_every_module_sits_on_a_floor():
    assert all(floor(module) is not None for module in modules())


def test_no_module_imports_from_a_floor_above():
    problems = {module: wrong for module, path in modules().items()
                if (wrong := back_arrows(module, imports(path)))}
    assert not problems, problems
    assert back_arrows("auditor.checks.declared", {"auditor.methods.attribution"})
    assert back_arrows("auditor.methods.attacks", {"auditor.sections.base"})
    assert not back_arrows("auditor.sections.triage", {"auditor.methods.topk"})


def section_imports(module: str, imported: set[str]) -> set[tuple[str, str]]:
    """(module, section) for each other section module ``module`` imports."""
    from auditor.sections import ORDER

    sections = [f"auditor.sections.{name}" for name in ORDER]
    return {(module, s) for n in imported for s in sections
            if under(n, s) and not under(module, s)}


def test_sections_do_not_import_each_other():
    """Helpers two sections share live below them (methods/, checks/) or in the protocol."""
    found = set()
    for module, path in modules().items():
        if under(module, "auditor.sections"):
            found |= section_imports(module, imports(path))
    assert not found, found
    assert section_imports("auditor.sections.triage", {"auditor.sections.performance.x"})


def test_the_import_graph_flows_one_way():
    problems = {module: wrong for module, path in modules().items()
                if (wrong := broken_rules(module, imports(path)))}
    assert not problems, problems


def test_the_rules_catch_what_they_forbid():
    assert broken_rules("auditor.methods.attacks", {"auditor.sections.base"})
    assert broken_rules("auditor.sections.robustness", {"auditor.report.figures"})
    assert broken_rules("auditor.report.views.attribution", {"auditor.methods.attribution"})
    assert broken_rules("auditor.report.headline", {"auditor.sections.robustness"})
    assert broken_rules("auditor.runs.history", {"matplotlib.pyplot"})
    assert not broken_rules("auditor.report.views.contrastive",
                            {"auditor.methods.attribution.smoothing"})


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} "
            f"({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]


@pytest.mark.parametrize("folder", ["auditor", "tests", "bench"])
def test_no_function_is_longer_than_sixty_lines(folder):
    root = PACKAGE.parent / folder
    found = [line for path in sorted(root.rglob("*.py")) for line in long_functions(path)]
    assert not found, found
