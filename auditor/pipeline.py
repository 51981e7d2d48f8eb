"""Orchestration of one audit: load, predict once, run the sections, write the outputs.

The flow goes one way (DESIGN.md): inputs are loaded and checked before anything is written;
sections run on the shared predictions; the outputs are written to a staging folder that moves
into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from auditor import __version__
from auditor.checks.check import Check, exit_code
from auditor.checks.data import data_checks
from auditor.config.spec import AuditConfig
from auditor.errors import AuditorError, ConfigError, Interrupted
from auditor.failures import LOG_FILE, log_failure
from auditor.progress import SectionLog, duration, progress_enabled
from auditor.runs.baseline import (
    annotate_checks,
    compare_runs,
    load_run,
    prediction_record,
    regression_checks,
    save_predictions,
)
from auditor.runs.staging import check_out, staged_folder
from auditor.sections import SECTION_NAMES, section_module
from auditor.sections.attribution import complete_reliability
from auditor.sections.base import Context, SectionResult

REPORT_FILES = ("report.html", "summary.json", "summary.md", "junit.xml", "predictions.npz")
CHANGED_EXAMPLES_SHOWN = 12  # thumbnails of examples that became wrong (or right) in the report
LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "matplotlib",
             "jinja2")


@dataclass
class AuditOutcome:
    out: Path
    summary: dict
    exit_code: int

    @property
    def page(self) -> Path:
        """The file to open: report.html when it was written, else summary.json."""
        html = "html" in self.summary["config"]["format"]
        return self.out / ("report.html" if html else "summary.json")


def default_out(model_name: str, now: dt.datetime) -> Path:
    return Path("reports") / f"{model_name}-{now.strftime('%Y%m%d-%H%M%S')}"


def run_section(name: str, ctx: Context) -> SectionResult:
    """Run one section; an unexpected failure becomes an 'error' check, never a silent pass."""
    module = section_module(name)
    started = time.perf_counter()
    try:
        result = module.run(ctx, ctx.options(name, module.Options))
    except AuditorError:
        raise
    except Exception as exc:  # a section's bug must not sink the other sections
        line = log_failure(ctx.workdir, f"section '{name}'", exc)  # the traceback: audit.log
        result = SectionResult(
            name=name, title=module.TITLE, intro="This section failed to run.",
            error=f"{line} (the traceback is in {LOG_FILE})",
            checks=[Check(f"{name}.run", "error", None, {}, None,
                          f"section '{name}' failed: {line}", name)])
    result.seconds = time.perf_counter() - started
    return result


def library_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "auditor": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@contextlib.contextmanager
def output_folder(out: Path, distribution) -> Iterator[Path]:
    """The staging folder of ``out``; in a multiworker run, every worker computes the whole
    audit but only the chief writes: the others get a scratch folder that is thrown away."""
    if distribution.is_chief:
        with staged_folder(out) as work:
            yield work
    else:
        with tempfile.TemporaryDirectory(prefix="auditor-worker-") as scratch:
            yield Path(scratch)


@dataclass
class Inputs:
    """What an audit loads before any expensive work: any bad input fails here (exit 2)."""

    handle: object  # inputs.models.ModelHandle
    dataset: object  # inputs.datasets.Dataset
    train_dataset: object = None
    compare_handle: object = None
    probe_checks: list = field(default_factory=list)  # the input-range probe's check, if run
    probe_seconds: float = 0.0


def input_paths(config: AuditConfig) -> dict[str, str]:
    """The files a run reads, which its --out must never hold (label -> path as given)."""
    given = {"model": config.model, "data": config.data, "training data": config.train_data,
             "compare model": config.compare_model}
    return {label: path for label, path in given.items() if path}


def load_inputs(config: AuditConfig, distribution) -> Inputs:
    """The model, the data and, when given, the training data and the model to compare with."""
    import keras

    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model

    keras.utils.set_random_seed(config.seed)
    with distribution.scope():  # the model's variables are mirrored on every replica
        handle = load_model(config.model, config.input_range, config.unsafe_load, config.output)
    handle.distribution = distribution
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes,
                           class_names=config.class_names, max_samples=config.max_samples,
                           seed=config.seed, data_range=config.data_range,
                           strict_data=config.strict_data)
    started = time.perf_counter()
    probe_checks = probe_range(handle, dataset, config)
    probe_seconds = time.perf_counter() - started
    train_dataset = None
    if config.train_data:
        train_dataset = load_dataset(config.train_data, handle.input_shape, handle.num_classes,
                                     class_names=config.class_names, seed=config.seed,
                                     data_range=config.data_range,
                                     strict_data=config.strict_data)
    compare_handle = None
    if config.compare_model:
        with distribution.scope():
            compare_handle = load_model(config.compare_model, config.input_range,
                                        config.unsafe_load, config.output)
        compare_handle.distribution = distribution
        if (compare_handle.input_shape, compare_handle.num_classes) != (
                handle.input_shape, handle.num_classes):
            raise ConfigError(
                f"--compare-model '{config.compare_model}' takes {compare_handle.input_shape} "
                f"with {compare_handle.num_classes} classes, but the audited model takes "
                f"{handle.input_shape} with {handle.num_classes}; compare models of one task")
        probe_range(compare_handle, dataset, config)
    return Inputs(handle, dataset, train_dataset, compare_handle, probe_checks, probe_seconds)


def run_audit(config: AuditConfig) -> AuditOutcome:
    """Run the audit that ``config`` describes and write its folder; returns the exit code."""
    from auditor.predict.distribute import make_distribution
    from auditor.predict.predictions import predict

    started = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    if config.out:  # an output path it may not write is refused before any work
        check_out(Path(config.out), input_paths(config))
    bars = progress_enabled(config.progress)  # bars on a terminal; log lines everywhere
    log = SectionLog(config.progress, {})
    distribution = make_distribution(config.strategy)  # before any other TensorFlow work
    loaded = load_inputs(config, distribution)
    handle, dataset = loaded.handle, loaded.dataset
    baseline_run = load_run(config.baseline) if config.baseline else None
    baseline = baseline_run.summary if baseline_run else None
    out = Path(config.out) if config.out else default_out(handle.name, now)
    check_out(out, input_paths(config))
    names = config.sections or list(SECTION_NAMES)
    timings: dict[str, float] = {"load": time.perf_counter() - started - loaded.probe_seconds}
    if loaded.probe_checks:
        timings["input_range"] = loaded.probe_seconds

    with output_folder(out, distribution) as work:
        log.say(f"predicting {dataset.n} images")
        tick = time.perf_counter()
        predictions = predict(handle, dataset, config.batch_size, show_progress=bars)
        timings["predict"] = time.perf_counter() - tick
        record = prediction_record(predictions, dataset)
        save_predictions(work, record)
        tick = time.perf_counter()
        plan = plan_sections(config, names, loaded, predictions)
        timings["plan"] = time.perf_counter() - tick
        ctx = Context(config=config, handle=handle, dataset=dataset, predictions=predictions,
                      workdir=work, show_progress=bars, baseline=baseline,
                      train_dataset=loaded.train_dataset,
                      compare_handle=loaded.compare_handle, plan=plan)
        results = run_sections(names, ctx, log)
        complete_reliability(results)  # the Clever Hans masses join the attribution card
        timings.update({result.name: result.seconds for result in results})
        if "html" in config.format:  # figures only for the page that shows them
            tick = time.perf_counter()
            draw_views(results, dataset, work)
            timings["figures"] = time.perf_counter() - tick
        checks = loaded.probe_checks + data_checks(dataset, predictions)
        checks += [check for result in results for check in result.checks]
        sections_summary = {k: v for result in results for k, v in result.summary.items()}
        checks += regression_checks(sections_summary, baseline, config.checks)
        timings["total"] = time.perf_counter() - started
        spent = sum(result.seconds for result in results)
        write_outputs(work, config, handle, dataset, results, checks, timings, now,
                      baseline=baseline_run, record=record, plan=plan.to_summary(spent))
        summary = json.loads((work / "summary.json").read_text())
    return AuditOutcome(out=out, summary=summary, exit_code=exit_code(checks, config.fail_on))


def probe_range(handle, dataset, config: AuditConfig) -> list[Check]:
    """With input_range 'auto', the range the data says the model expects (set on the handle),
    and the check that warns when the choice is unclear; an explicit range is taken as given."""
    from auditor.predict.input_range import CHECK, input_range_check, probe_input_range

    if config.input_range != "auto" or handle.input_range_source == "model":
        return []  # a range given, or stated by the model's own keras-hub preprocessor
    result = probe_input_range(handle, dataset, config.batch_size, config.seed)
    return [input_range_check(result, handle.hint_overridden, config.checks.get(CHECK))]


def plan_sections(config, names, loaded, predictions):
    """The compute plan of this run's sections (predict.plan), timed on this model."""
    from auditor.predict.plan import Facts, forward_flops, make_plan, measure_timing
    from auditor.sections.attribution import card_candidates

    handle, train = loaded.handle, loaded.train_dataset
    facts = Facts(images=loaded.dataset.n, input_shape=handle.input_shape,
                  classes=handle.num_classes, train_images=train.n if train is not None else None,
                  compare=loaded.compare_handle is not None,
                  mistakes=int((~predictions.correct).sum()),
                  card_methods=card_candidates(config, names))
    plan = make_plan({name: section_module(name) for name in names}, config.section_options,
                     facts, config.budget, forward_flops(handle))
    if plan.total_passes > 0:
        plan.timing = measure_timing(handle)
    return plan


def run_sections(names, ctx: Context, log: SectionLog) -> list[SectionResult]:
    """Every section in order, with a log line when each starts and ends (the plan's estimate
    for the rest), and the plan's estimate against the actual time at the end."""
    plan = ctx.plan
    log.estimates = {name: plan.estimate(name) for name in names}
    for line in plan.describe():
        log.say(f"plan: {line}")
    results = []
    for index, name in enumerate(names, 1):
        Interrupted.raise_if_pending()
        log.start(name, index, len(names))
        results.append(run_section(name, ctx))
        log.done(name, results[-1].seconds)
    spent = sum(result.seconds for result in results)
    if plan.estimated_seconds() > 0 and spent > 0:
        log.say(f"sections took {duration(spent)}; the plan estimated "
                f"{duration(plan.estimated_seconds())} (estimate / actual "
                f"{plan.estimated_seconds() / spent:.2f})")
    return results


def draw_views(results, dataset, folder: Path | None = None) -> None:
    """Each section's figures and tables for its template partial (``result.view``); a view
    that fails marks its section failed with an 'error' check, as a failing section would
    (its traceback goes to ``folder``'s audit.log)."""
    from auditor.report.views import build_view

    for result in results:
        try:
            result.view = build_view(result, dataset)
        except Exception as exc:  # a figure's bug must not sink the report
            line = log_failure(folder, f"figures of section '{result.name}'", exc)
            result.error = f"{line} (the traceback is in {LOG_FILE})"
            result.checks.append(Check(f"{result.name}.view", "error", None, {}, None,
                                       f"figures of section '{result.name}' failed: {line}",
                                       result.name))


def write_outputs(work: Path, config, handle, dataset, results, checks, timings, now,
                  baseline=None, record=None, plan=None) -> None:
    """summary.json, and of report.html, summary.md and junit.xml those ``config.format``
    names, into the staging folder; with a baseline run, each says what changed since (the
    ``baseline`` block of summary.json), and with a plan what it lowered (``plan``). The views
    are drawn before (``draw_views``)."""
    from auditor.report.summary import build_summary, render_junit, render_markdown

    summary = build_summary(config, handle, dataset, results, checks, timings, now)
    if plan is not None:
        summary["plan"] = plan
    if baseline is not None:
        summary["baseline"] = compare_runs(summary, record, baseline)
        annotate_checks(summary["checks"], baseline.summary.get("checks", []))
    text = json.dumps(summary, indent=2, default=_json_default)
    (work / "summary.json").write_text(text)
    if "md" in config.format:
        (work / "summary.md").write_text(render_markdown(summary))
    if "junit" in config.format:
        (work / "junit.xml").write_text(render_junit(summary))
    if "html" in config.format:
        write_page(work, summary, json.loads(text), results, dataset)


def write_page(work: Path, summary: dict, written: dict, results, dataset) -> None:
    """report.html from the summary (its headline read from ``written``, the summary as
    summary.json has it) and the sections' views."""
    from auditor.report.headline import headline
    from auditor.report.render import render_report

    ran = {result.name: result.error is None for result in results}
    page = {"summary": summary, "sections": results, "checks": summary["checks"],
            "headline": headline(written, ran),
            "comparison": summary.get("baseline"),
            "changed_examples": changed_examples(summary.get("baseline"), dataset),
            "libraries": library_versions(), "report_size": "@@REPORT_SIZE@@"}
    html = render_report(page)
    size = len(html.encode("utf-8"))
    html = html.replace("@@REPORT_SIZE@@", f"{size / 1e6:.2f} MB" if size >= 1e6
                        else f"{size / 1e3:.0f} kB")
    (work / "report.html").write_text(html, encoding="utf-8")


def changed_examples(comparison: dict | None, dataset) -> dict[str, list[dict]]:
    """Thumbnails of the first examples that became wrong or right since the baseline."""
    from auditor.report.figures import image_uri

    shown: dict[str, list[dict]] = {}
    if not comparison or not comparison["examples"].get("comparable"):
        return shown
    for kind in ("became_wrong", "became_right"):
        examples = comparison["examples"][kind]["examples"][:CHANGED_EXAMPLES_SHOWN]
        images = dataset.images([e["index"] for e in examples])
        shown[kind] = [{**e, "image": image_uri(img)}
                       for e, img in zip(examples, images, strict=True)]
    return shown


def _json_default(value):
    """numpy scalars and arrays in section summaries become plain JSON."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
