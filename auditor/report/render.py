"""Render the HTML report from the Jinja templates: data in, one self-contained page out."""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from auditor.checks.check import judged, worst_status
from auditor.report.headline import sorted_checks
from auditor.report.summary import capitalize_first, shown, signed
from auditor.resources import resource_dir

BOUND_WORDS = {"below": "< {}", "above": "> {}", "drop": "drop > {} vs baseline",
               "rise": "rise > {} vs baseline"}


def template_root() -> Path:
    return resource_dir("templates")


def bounds_text(threshold: dict) -> list[str]:
    """A check's thresholds in words, bounds on the value first: {'warn_drop': 0.02,
    'fail_below': 0.9} -> ['fail < 0.9', 'warn drop > 0.02 vs baseline']."""
    parts = []
    for key, bound in sorted((threshold or {}).items(),
                             key=lambda item: item[0].endswith(("drop", "rise"))):
        level, _, kind = key.partition("_")
        parts.append(f"{level} {BOUND_WORDS.get(kind, kind + ' {}').format(f'{bound:g}')}")
    return parts


def section_status(checks) -> str | None:
    """The worst status of a section's judged checks (Check objects or dicts); None without."""
    return worst_status(judged([c if isinstance(c, dict) else c.to_dict() for c in checks]))


def declared_figures():
    from auditor.sections import key_figures

    return key_figures()


@functools.cache
def environment() -> jinja2.Environment:
    """One per process: its compiled templates are reused by every report a process renders
    (the Keras callback's and watch's audits; compiling them took 1.4 s a report on the demo
    CNN, measured under load). Jinja reloads a template whose file changed."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_root())),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, digits=1: "n/a" if v is None else f"{100 * v:.{digits}f}%"
    env.filters["num"] = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}g}"
    env.filters["shown"] = shown
    env.filters["signed"] = signed
    env.filters["bounds"] = bounds_text
    env.filters["capitalize_first"] = capitalize_first
    env.filters["section_status"] = section_status
    env.filters["worst_first"] = sorted_checks
    env.globals["key_figures"] = {figure.name: figure for figure in declared_figures()}
    env.globals["stylesheet"] = (template_root() / "style.css").read_text()
    env.globals["script"] = (template_root() / "report.js").read_text()
    return env


def render_report(page: dict, template: str = "report.html") -> str:
    """The report page for a run: ``page`` holds the summary, the sections and the footer."""
    return environment().get_template(template).render(**page)
