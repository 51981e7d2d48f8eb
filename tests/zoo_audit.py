"""Every section and every attribution method on one model, at the smallest settings: what
each section did, in one line each. Shared by tests/test_zoo.py and bench/zoo_sections.py.

The audit is tiny on purpose (a few RGB digit composites, a budget of a few model passes):
what is asked is whether each section runs on the architecture or says in one line why it
cannot apply, not what it finds on random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGES = 24  # enough for each section to have mistakes and classes to look at
BUDGET = 4  # model passes: the plan's smallest settings for every section


def audit_everything(model, folder: Path, images: int = IMAGES, budget: int = BUDGET,
                     sections: list[str] | None = None) -> dict:
    """Save ``model``, audit it with every section (or ``sections``) and every attribution
    method on ``images`` RGB composites of its input size, and return its summary."""
    from rgb_composites import composites

    from auditor.configure import make_config
    from auditor.methods.attribution import METHODS
    from auditor.pipeline import run_audit

    folder.mkdir(parents=True, exist_ok=True)
    size, classes = int(model.inputs[0].shape[1]), int(model.outputs[0].shape[-1])
    x, y = composites("test", seed=0, size=size)
    keep = y < classes
    np.savez(folder / "data.npz", x=(x[keep][:images] * 255).astype(np.uint8),
             y=y[keep][:images])
    model.save(folder / "model.keras")
    spec = {"attribution": {"methods": sorted(METHODS)}}
    config = make_config(spec, model=str(folder / "model.keras"),
                         data=f"npz:{folder / 'data.npz'}", out=str(folder / "run"),
                         progress=False, budget=budget, sections=sections)
    return run_audit(config).summary


def outcomes(summary: dict) -> dict[str, list[str]]:
    """Per section, one line per check that errored or was skipped, and per attribution method
    that could not run: ``"<status> <check id>: <message>"``; an empty list when all ran."""
    found: dict[str, list[str]] = {}
    for check in summary["checks"]:
        lines = found.setdefault(check.get("section") or check["id"].split(".")[0], [])
        if check["status"] in ("error", "skipped"):
            lines.append(f"{check['status']} {check['id']}: {check['message']}")
    for method, why in (summary.get("attribution") or {}).get("unavailable", {}).items():
        found.setdefault("attribution", []).append(f"unavailable {method}: {why}")
    return found
