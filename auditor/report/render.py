"""Render the HTML report from the Jinja templates: data in, one self-contained page out."""

from __future__ import annotations

from pathlib import Path

import jinja2


def template_root() -> Path:
    """The templates: inside the installed package, or beside it in a source checkout."""
    installed = Path(__file__).resolve().parent.parent / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_root())),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v, digits=1: "n/a" if v is None else f"{100 * v:.{digits}f}%"
    env.filters["num"] = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}g}"
    env.globals["stylesheet"] = (template_root() / "style.css").read_text()
    return env


def render_report(page: dict, template: str = "report.html") -> str:
    """The report page for a run: ``page`` holds the summary, the sections and the footer."""
    return environment().get_template(template).render(**page)
