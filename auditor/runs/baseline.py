"""A run against an earlier one: what changed in every metric and check, in the classes, and (on
the same data) in the examples that became wrong or right.

Per-example results live beside summary.json in ``predictions.npz`` (arrays ``source_index``,
``labels``, ``preds``, ``confidence``): small, and what makes the example-level comparison
possible. Two runs are on the same data when their data source, size, sampled source indices and
labels all match.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auditor.checks.check import Check, change, evaluate_new_items
from auditor.checks.declared import spec_bounds
from auditor.errors import ConfigError
from auditor.inputs.npz import READ_ERRORS
from auditor.predict.plan import unmeasured_below_floor
from auditor.sections import NEWLY_FLAGGED
from auditor.sections.clever_hans import flagged_classes

PREDICTIONS_FILE = "predictions.npz"
NOT_METRICS = frozenset({"schema", "tool", "created", "config", "model", "data", "checks",
                         "timings", "verdict", "gated", "baseline"})
EXAMPLES_LISTED = 100  # examples that became wrong (or right) listed in summary.json


@dataclass
class Run:
    """An earlier run as read back from its folder: its summary and, if saved, its predictions."""

    summary: dict
    path: Path  # its summary.json
    predictions: dict[str, np.ndarray] | None

    @property
    def folder(self) -> Path:
        return self.path.parent


def summary_file(path: str | Path) -> Path:
    file = Path(path)
    return file / "summary.json" if file.is_dir() else file


def read_baseline(path: str | Path, role: str = "baseline", schema: bool = False) -> dict:
    """A previous run's summary.json, from its folder or the file itself; ``role`` names the
    run in error messages. The keys a comparison reads are checked, and with ``schema`` the
    whole file against the package's JSON Schema (where jsonschema is installed)."""
    file = summary_file(path)
    if not file.is_file():
        raise ConfigError(f"{role} '{path}' has no summary.json; pass an earlier run's output "
                          "folder or its summary.json")
    try:
        summary = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{role} '{file}' is not valid JSON ({exc}); pass an auditor "
                          "summary.json") from None
    if not isinstance(summary, dict) or not str(summary.get("schema", "")).startswith(
            "auditor.summary/"):
        raise ConfigError(f"{role} '{file}' is not an auditor summary (no 'schema' key "
                          "auditor.summary/1)")
    problem = summary_problem(summary, schema)
    if problem:
        raise ConfigError(f"{role} '{file}' is not a complete auditor summary ({problem}); pass "
                          "the summary.json of a finished run, as auditor wrote it")
    return summary


# What a comparison reads from a run's summary.json: (path, type); checked on load, so that a
# damaged or hand-edited file is refused before any work instead of failing after the audit.
NEEDED = (("created", str), ("verdict", str), ("model", dict), ("model.name", str),
          ("model.sha256", str), ("data", dict), ("data.source", str), ("data.n", int),
          ("data.class_names", list), ("checks", list))


def summary_problem(summary: dict, schema: bool = False) -> str | None:
    """What is missing or of the wrong type in a summary: the keys the comparison needs, then
    with ``schema`` the package's JSON Schema where jsonschema is installed; None when it is
    whole."""
    for path, kind in NEEDED:
        node: Any = summary
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return f"no '{path}'"
        if not isinstance(node, kind) or isinstance(node, bool):
            return f"'{path}' is {type(node).__name__}, not {kind.__name__}"
    if not all(isinstance(name, str) for name in summary["data"]["class_names"]):
        return "'data.class_names' holds something other than names"
    if not all(isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(
            c.get("status"), str) for c in summary["checks"]):
        return "a check without a text 'id' and 'status'"
    return _schema_problem(summary) if schema else None


def _schema_problem(summary: dict) -> str | None:
    validator = _summary_validator()
    if validator is None:  # a dev extra: the keys above are what the comparison needs
        return None
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(summary))
    if error is None:
        return None
    where = ".".join(str(part) for part in error.absolute_path) or "the top level"
    return f"at {where}: {error.message[:160]}"


@functools.cache  # made once per process: the Keras callback reads a baseline per audit
def _summary_validator():
    """The package's summary.json schema as a validator, or None without jsonschema."""
    try:
        import jsonschema
    except ImportError:
        return None
    from importlib import resources

    schema = json.loads(resources.files("auditor.report").joinpath(
        "summary.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def class_difference(new_names: list[str], baseline: dict) -> str | None:
    """How the classes of a run differ from its baseline's (None when they are the same, in
    the same order): a comparison across other classes would match the wrong figures."""
    old_names = [str(name) for name in baseline["data"]["class_names"]]
    new_names = [str(name) for name in new_names]
    if new_names == old_names:
        return None
    gone = [n for n in old_names if n not in new_names]
    added = [n for n in new_names if n not in old_names]
    if not gone and not added:
        return "the same classes in another order"
    parts = ([f"only the baseline has {', '.join(map(repr, gone[:3]))}"] if gone else []) + (
        [f"only this run has {', '.join(map(repr, added[:3]))}"] if added else [])
    return "; ".join(parts)


def task_difference(new_task: str, baseline: dict) -> str | None:
    """How the task of a run differs from its baseline's (None when they are the same): a
    single-label run's figures count images and classes, a multi-label run's label values,
    so nothing of one compares with the other. A summary without a task is single-label."""
    old_task = (baseline.get("model") or {}).get("task") or "single-label"
    if new_task == old_task:
        return None
    return f"the baseline is a {old_task} run and this one {new_task}"


def load_run(path: str | Path, role: str = "baseline") -> Run:
    """A run folder (or its summary.json) with the predictions saved beside it, if any."""
    file = summary_file(path)
    return Run(read_baseline(path, role, schema=True), file.resolve(),
               read_predictions(file.parent))


def prediction_record(predictions, dataset) -> dict[str, np.ndarray]:
    """What predictions.npz holds: enough to compare two runs example by example."""
    return {"source_index": np.asarray(dataset.source_index, dtype=np.int64),
            "labels": np.asarray(predictions.labels, dtype=np.int32),
            "preds": np.asarray(predictions.preds, dtype=np.int32),
            "confidence": np.asarray(predictions.confidence, dtype=np.float16)}


def save_predictions(folder: Path, record: dict[str, np.ndarray]) -> None:
    np.savez_compressed(folder / PREDICTIONS_FILE, **record)


def read_predictions(folder: Path) -> dict[str, np.ndarray] | None:
    """The saved predictions of a run folder; None when absent or unreadable (an older run)."""
    file = folder / PREDICTIONS_FILE
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            record = {key: data[key] for key in data.files}
    except READ_ERRORS:
        return None
    needed = ("source_index", "labels", "preds")
    if not set(needed) <= set(record):
        return None
    arrays = [record[key] for key in needed]
    if any(a.ndim != 1 or a.dtype.kind not in "iu" or len(a) != len(arrays[0]) or
           (a.size and a.min() < 0) for a in arrays):
        return None  # not what auditor writes: the examples are not compared
    return record


# --- figures of a run ---------------------------------------------------------------------

def key_figures(summary: dict) -> dict[str, Any]:
    """The figures the sections declare (auditor.sections.key_figures), by name; None where
    the run has no such figure."""
    from auditor.sections import key_figures as declared

    return {figure.name: figure.value(summary) for figure in declared()}


def flatten_metrics(summary: dict) -> dict[str, float]:
    """Every numeric leaf of the sections' summary keys, by dotted path (lists are skipped:
    they hold examples, not metrics)."""
    flat: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            if math.isfinite(node):
                flat[path] = node

    for key, value in summary.items():
        if key not in NOT_METRICS:
            walk(value, key)
    return flat


# --- what changed -------------------------------------------------------------------------

def _delta(value: Any, baseline: Any) -> dict[str, Any]:
    return {"value": value, "baseline": baseline, "change": change(value, baseline)}


def metric_deltas(new: dict, old: dict) -> dict[str, dict[str, Any]]:
    """Each metric of either run with its baseline value and the change."""
    now, before = flatten_metrics(new), flatten_metrics(old)
    paths = list(now) + [path for path in before if path not in now]
    return {path: _delta(now.get(path), before.get(path)) for path in paths}


def class_changes(new: dict, old: dict) -> dict[str, list[dict]]:
    """Classes whose recall fell or rose against the baseline, largest change first."""
    now = (new.get("metrics") or {}).get("per_class") or {}
    before = (old.get("metrics") or {}).get("per_class") or {}
    moves = []
    for name, metrics in now.items():
        if name in before and metrics.get("support") and before[name].get("support"):
            moved = change(metrics.get("recall"), before[name].get("recall"))
            if moved:
                moves.append({"class": name, "recall": metrics["recall"],
                              "baseline": before[name]["recall"], "change": moved})
    return {"worse": sorted((m for m in moves if m["change"] < 0), key=lambda m: m["change"]),
            "better": sorted((m for m in moves if m["change"] > 0), key=lambda m: -m["change"])}


def same_data(new: dict, new_record, old: dict, old_record) -> tuple[bool, str]:
    """Whether two runs saw the same examples in the same order, and if not, why not."""
    if new["data"].get("source") != old["data"].get("source"):
        return False, (f"different data: '{new['data'].get('source')}' against the baseline's "
                       f"'{old['data'].get('source')}'")
    if new["data"].get("n") != old["data"].get("n"):
        return False, (f"different sample sizes: {new['data'].get('n')} images against the "
                       f"baseline's {old['data'].get('n')}")
    if new_record is not None and np.ndim(new_record["labels"]) == 2:
        return False, ("a multi-label run is compared label by label (multilabel.labels), not "
                       "example by example")
    if new_record is None or old_record is None:
        return False, f"the {'baseline' if old_record is None else 'run'} has no {PREDICTIONS_FILE}"
    for key in ("source_index", "labels"):
        if not np.array_equal(new_record[key], old_record[key]):
            return False, "the same source, but sampled differently (different images or labels)"
    if old_record["preds"].size and old_record["preds"].max() >= len(new["data"]["class_names"]):
        return False, f"the baseline's {PREDICTIONS_FILE} predicts classes this run does not have"
    return True, ""


def example_changes(new_record, old_record, class_names: list[str]) -> dict[str, Any]:
    """Examples that became wrong or right (same data only), per class and listed."""
    labels, preds, before = new_record["labels"], new_record["preds"], old_record["preds"]
    now_right, was_right = preds == labels, before == labels
    result: dict[str, Any] = {"comparable": True,
                              "changed_prediction": int((preds != before).sum())}
    per_class: dict[str, dict[str, int]] = {}
    for kind, mask in (("became_wrong", was_right & ~now_right),
                       ("became_right", ~was_right & now_right)):
        positions = np.flatnonzero(mask)
        result[kind] = {"count": int(positions.size), "examples": [
            {"index": int(i), "true": class_names[labels[i]], "pred": class_names[preds[i]],
             "baseline_pred": class_names[before[i]]} for i in positions[:EXAMPLES_LISTED]]}
        for label, count in zip(*np.unique(labels[positions], return_counts=True), strict=True):
            per_class.setdefault(class_names[label], {"became_wrong": 0, "became_right": 0})
            per_class[class_names[label]][kind] = int(count)
    result["per_class"] = dict(sorted(per_class.items(), key=lambda kv: -kv[1]["became_wrong"]))
    return result


def compare_runs(new: dict, new_record, old: Run) -> dict[str, Any]:
    """The ``baseline`` block of summary.json: which run, and what changed since."""
    before = old.summary
    comparable, reason = same_data(new, new_record, before, old.predictions)
    examples = (example_changes(new_record, old.predictions, new["data"]["class_names"])
                if comparable else {"comparable": False, "reason": reason})
    now_figures, old_figures = key_figures(new), key_figures(before)
    return {
        "path": str(old.path),
        "created": before.get("created"),
        "verdict": before.get("verdict"),
        "model": {k: before.get("model", {}).get(k) for k in ("name", "path", "sha256")},
        "data": {k: before.get("data", {}).get(k) for k in ("source", "n")},
        "same_model": before.get("model", {}).get("sha256") == new["model"].get("sha256"),
        "same_data": comparable,
        "key_figures": {name: _delta(now_figures[name], old_figures[name])
                        for name in now_figures
                        if now_figures[name] is not None or old_figures[name] is not None},
        "flagged_classes": _list_delta(flagged_classes(new), flagged_classes(before)),
        "metrics": metric_deltas(new, before),
        "classes": class_changes(new, before),
        "examples": examples,
    }


def _list_delta(now: list | None, before: list | None) -> dict[str, Any] | None:
    if now is None and before is None:
        return None
    now, before = now or [], before or []
    return {"value": now, "baseline": before, "new": [c for c in now if c not in before],
            "gone": [c for c in before if c not in now]}


def annotate_checks(checks: list[dict], old_checks: list[dict]) -> None:
    """Give each check the baseline run's value (where its section did not set one) and its
    status there, so that every check shows where it came from."""
    before = {check["id"]: check for check in old_checks}
    for check in checks:
        old = before.get(check["id"])
        check["baseline_status"] = old["status"] if old else None
        if old and check.get("baseline") is None:
            check["baseline"] = old.get("value")
        check["change"] = change(check.get("value"), check.get("baseline"))


def regression_checks(summary: dict, baseline: dict | None, spec: dict[str, dict]) -> list[Check]:
    """Checks that hold a whole run against its baseline: no class newly flagged as a Clever
    Hans suspect (once both runs have ``clever_hans.discovery.flagged_classes``)."""
    if baseline is None:
        return []
    checks = [data_check(summary, baseline)] if "data" in summary else []
    checks.append(plan_check(summary, baseline))
    checks = [check for check in checks if check is not None]
    flagged = flagged_classes(summary)
    if flagged is None:
        return checks
    check = evaluate_new_items(
        NEWLY_FLAGGED.id, flagged, flagged_classes(baseline), what=NEWLY_FLAGGED.what,
        section="clever_hans", defaults=dict(NEWLY_FLAGGED.bounds),
        spec=spec_bounds(spec, NEWLY_FLAGGED.id))
    # a search run below its floors (a named budget on a dear model) flags nothing for sure
    check = unmeasured_below_floor(check, summary.get("plan", {}))
    return checks + [NEWLY_FLAGGED.stamp(check, spec)]


def plan_check(summary: dict, baseline: dict) -> Check | None:
    """``baseline.plan``: a run whose compute plan chose other settings than the baseline's
    (another budget, or a named budget sized on a model that now takes another time per pass),
    or left out work the baseline did (``plan.dropped``: a named budget that could not hold a
    section's fixed costs), or did work the baseline left out, warns, naming them: the figures
    that depend on samples and steps, or on the work left out, may change for that alone.
    None (no check) when the plans are the same, or either run has no plan."""
    if not summary.get("plan") or not baseline.get("plan"):
        return None
    now, before = _planned(summary["plan"]), _planned(baseline["plan"])
    differences = _drop_differences(summary["plan"], baseline["plan"]) + [
        f"{name}.{key} {now.get(name, {}).get(key, 'default')} against the "
        f"baseline's {before.get(name, {}).get(key, 'default')}"
        for name in sorted({*now, *before})
        for key in sorted({*now.get(name, {}), *before.get(name, {})})
        if now.get(name, {}).get(key) != before.get(name, {}).get(key)]
    if not differences:
        return None
    shown = "; ".join(differences[:4]) + (f"; {len(differences) - 4} more"
                                          if len(differences) > 4 else "")
    return Check("baseline.plan", "warn", False, {}, None,
                 f"the compute plan chose other settings than the baseline's ({shown}): the "
                 "changes against it mix the model's with the settings'; give both runs the "
                 "same --budget, or set these in the spec", "", gated=True)


def _planned(block: dict) -> dict[str, dict]:
    """{section: {setting: value}} the plan lowered (the sections ``instead_of`` names)."""
    return {name: block.get(name, {}) for name in block.get("instead_of", {})}


def _drop_differences(now: dict, before: dict) -> list[str]:
    """The work one run's plan left out (``plan.dropped``) and the other's did not, each way.
    A drop is its spec key and what it no longer shows: several drops share a key (LRP,
    occlusion and Grad-CAM are each left out of ``attribution.methods``)."""
    def drops(block: dict) -> dict[tuple, dict]:
        return {(drop["spec_key"], drop["what"]): drop
                for entries in (block.get("dropped") or {}).values() for drop in entries}

    mine, theirs = drops(now), drops(before)
    left = [f"left out {what} ('{key}' {mine[key, what]['value']!r}), which the baseline ran"
            for key, what in mine if (key, what) not in theirs]
    return left + [f"ran {what}, which the baseline left out ('{key}' "
                   f"{theirs[key, what]['value']!r})"
                   for key, what in theirs if (key, what) not in mine]


def data_check(summary: dict, baseline: dict) -> Check | None:
    """``baseline.data``: a run compared with a baseline measured on other data (another source
    or another number of images) warns, naming the difference: its changes mix the model's with
    the data's. None (no check) on the same data."""
    now, before = summary.get("data") or {}, baseline.get("data") or {}
    differences = [f"{key} {now.get(key)!r} against the baseline's {before.get(key)!r}"
                   for key in ("source", "n") if now.get(key) != before.get(key)]
    if not differences:
        return None
    return Check("baseline.data", "warn", False, {}, None,
                 f"the baseline was measured on other data ({'; '.join(differences)}): the "
                 "changes against it mix the model's with the data's", "", gated=True)
