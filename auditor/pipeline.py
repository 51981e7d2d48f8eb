"""Orchestration of one audit: load, predict once, run the sections, write the outputs.

The flow goes one way (docs/design.md): inputs are loaded and checked before anything is written;
sections run on the shared predictions; the outputs are written to a staging folder that moves
into place only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import importlib.metadata
import json
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from auditor import __version__
from auditor.checks.check import Check, exit_code
from auditor.checks.data import data_checks
from auditor.checks.declared import spec_bounds
from auditor.checks.weights import weight_checks
from auditor.config.spec import AuditConfig
from auditor.errors import AuditorError, ConfigError, Interrupted
from auditor.failures import LOG_FILE, log_failure
from auditor.progress import SectionLog, duration, progress_enabled
from auditor.runs.baseline import (
    annotate_checks,
    class_difference,
    compare_runs,
    load_run,
    prediction_record,
    regression_checks,
    save_predictions,
    task_difference,
)
from auditor.runs.disk import full_disk_is_an_error
from auditor.runs.leftovers import sweep_dead_runs
from auditor.runs.staging import check_out, staged_folder
from auditor.sections import section_module, section_names, stamp_run_checks
from auditor.sections.base import Context, ResolvedOptions, RunInputs, SectionResult
from auditor.steps.shared import Shared, plain

REPORT_FILES = ("report.html", "summary.json", "summary.md", "junit.xml", "predictions.npz")
CHANGED_EXAMPLES_SHOWN = 12  # thumbnails of examples that became wrong (or right) in the report
LIBRARIES = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "matplotlib",
             "jinja2")


@dataclass
class AuditOutcome:
    out: Path
    summary: dict
    exit_code: int
    written: bool = True  # False on a multiworker run's other workers: only the chief writes

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
    skipped = not_applicable(module, ctx)
    if skipped is not None:
        return skipped.frozen()
    try:
        result = module.run(ctx, ctx.options[name])
    except AuditorError:
        raise
    except Exception as exc:  # a section's bug must not sink the other sections
        line = log_failure(ctx.workdir, f"section '{name}'", exc)  # the traceback: audit.log
        result = SectionResult(
            name=name, title=module.TITLE, intro="This section failed to run.",
            error=f"{line} (the traceback is in {LOG_FILE})",
            checks=[Check(f"{name}.run", "error", None, {}, None,
                          f"section '{name}' failed: {line}", name)])
    return dataclasses.replace(result.frozen(), seconds=time.perf_counter() - started)


def run_steps(names, inputs: RunInputs, options: ResolvedOptions, log: SectionLog,
              timings: dict) -> Shared:
    """The shared steps (``steps.STEPS``, in order) that the sections ``names`` declare in
    their ``STEPS``, each made once before them. A step that fails on this model is kept as
    ``Failed``: the sections that read it then fail with its reason, the others run."""
    from auditor.steps import STEPS
    from auditor.steps.shared import Failed

    shared = Shared()
    for step in STEPS:
        needing = {name: section_module(name) for name in names
                   if step.NAME in getattr(section_module(name), "STEPS", ())
                   and why_not_applicable(section_module(name), inputs.handle) is None}
        if not needing:
            continue
        log.say(f"making {step.TITLE}")
        started = time.perf_counter()
        try:
            made = step.make(inputs, options, shared, needing)
        except AuditorError:
            raise
        except Exception as exc:  # the sections that read it report it as their failure
            made = Failed(step.NAME, log_failure(inputs.workdir, step.TITLE, exc))
        timings[step.NAME] = time.perf_counter() - started
        shared = dataclasses.replace(shared, **{step.NAME: made})
    return shared


def context_for(inputs: RunInputs, names, plan=None, log: SectionLog | None = None,
                timings: dict | None = None) -> Context:
    """What the sections ``names`` run with: ``inputs``, the steps they declare made once
    (``run_steps``), and every section's options resolved with what the ``plan`` lowered."""
    options = ResolvedOptions.of(inputs.config, plan)
    shared = run_steps(names, inputs, options, log or SectionLog(False, {}),
                       {} if timings is None else timings)
    return Context.of(inputs, shared, options)


def step_names() -> tuple[str, ...]:
    from auditor.steps import STEPS

    return tuple(step.NAME for step in STEPS)


def joined(results: list[SectionResult], checks: dict) -> list[SectionResult]:
    """After every section ran: each section that declares ``join`` gets a new result with what
    later sections found (the card's shortcut columns, which section used which method)."""
    return [section_module(r.name).join(r, results, checks).frozen()
            if r.error is None and r.not_applicable is None
            and hasattr(section_module(r.name), "join") else r
            for r in results]


def below_floors(results: list[SectionResult], plan) -> list[SectionResult]:
    """Each section the ``plan`` ran below its floors (``Plan.below_floor``: the budget could
    not hold them on this model) with every judged check skipped and saying why
    (predict/plan.py ``unmeasured_below_floor``)."""
    from auditor.predict.plan import unmeasured_below_floor

    block = plan.to_summary()
    return [dataclasses.replace(r, checks=[unmeasured_below_floor(c, block)
                                           for c in r.checks]).frozen()
            if r.name in plan.below_floor else r for r in results]


@functools.cache  # read once per process: the Keras callback audits many times in one
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
    # (positions, rows) the probe ran through the forward pass under the range chosen
    # (predict/input_range.py ``ProbeResult.known``), which the prediction pass takes as made
    probed: tuple | None = None


def input_paths(config: AuditConfig) -> dict[str, str]:
    """The files a run reads, which its --out must never hold (label -> path as given)."""
    given = {"model": config.model, "data": config.data, "training data": config.train_data,
             "compare model": config.compare_model}
    return {label: path for label, path in given.items() if path}


def seed_keeping_kernels(seed: int) -> None:
    """The seeds ``keras.utils.set_random_seed`` sets (Python's, NumPy's, TensorFlow's global
    seed, Keras's seed generator), without the clearing of TensorFlow's kernel caches that
    ``tf.random.set_seed`` does, for an audit of a handle loaded earlier: inside ``model.fit``
    (the Keras callback), that clear discards the compiled training step, and re-making it
    slowed the next epoch by 1 to 2 s on the demo CNN (epochs of 0.6 s) and made training 48%
    slower on MobileNetV2 224 px (bench/callback.py). The clear only restarts stateful random
    ops run eagerly, and an audit draws from none (its generators are seeded explicitly), so
    the audit is the same (tests/test_keras_callback.py compares it with a fresh CLI audit's).
    TensorFlow's seed is set as ``context.set_global_seed`` sets it, less the clear."""
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    from tensorflow.python.eager import context

    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)  # made again from the seed
    random.seed(seed)
    np.random.seed(seed)
    eager = context.context()
    eager._seed, eager._rng = seed, random.Random(seed)


def load_inputs(config: AuditConfig, distribution, handle=None) -> Inputs:
    """The model (``handle``: already loaded, see ``run_audit``), the data and, when given, the
    training data and the model to compare with. The seed is set once the model is in hand,
    so that a handle loaded earlier audits exactly as the same model loaded here (loading
    draws from the global generators: Keras builds layers before it reads their weights)."""
    import keras

    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model, reused

    if handle is None:
        with distribution.scope():  # the model's variables are mirrored on every replica
            handle = load_model(config.model, config.input_range, config.unsafe_load,
                                config.output)
        keras.utils.set_random_seed(config.seed)
    else:
        handle = reused(handle, config.model, config.input_range)
        seed_keeping_kernels(config.seed)
    handle.distribution = distribution
    check_sections(config, handle)
    check_threshold(config, handle)
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes,
                           class_names=config.class_names, max_samples=config.max_samples,
                           seed=config.seed, data_range=config.data_range,
                           strict_data=config.strict_data, multilabel=handle.multilabel)
    started = time.perf_counter()
    probe_checks, probed = probe_range(handle, dataset, config)
    probe_seconds = time.perf_counter() - started
    train_dataset = None
    if config.train_data:
        train_dataset = load_dataset(config.train_data, handle.input_shape, handle.num_classes,
                                     class_names=config.class_names, seed=config.seed,
                                     data_range=config.data_range,
                                     strict_data=config.strict_data,
                                     multilabel=handle.multilabel)
    compare_handle = None
    if config.compare_model:
        with distribution.scope():
            compare_handle = load_model(config.compare_model, config.input_range,
                                        config.unsafe_load, config.output)
        compare_handle.distribution = distribution
        if (compare_handle.input_shape, compare_handle.num_classes, compare_handle.task) != (
                handle.input_shape, handle.num_classes, handle.task):
            raise ConfigError(
                f"--compare-model '{config.compare_model}' takes {compare_handle.input_shape} "
                f"with {compare_handle.num_classes} classes ({compare_handle.task}), but the "
                f"audited model takes {handle.input_shape} with {handle.num_classes} "
                f"({handle.task}); compare models of one task")
        probe_range(compare_handle, dataset, config)  # its predictions are its section's
    return Inputs(handle, dataset, train_dataset, compare_handle, probe_checks, probe_seconds,
                  probed)


def check_sections(config: AuditConfig, handle) -> None:
    """Options that need the model (a layer name), checked as soon as it is loaded: a section's
    ``check_model(model, options)`` (and ``check_task(task, options)``, options that depend on
    whether it is multi-label) raises ConfigError before the data is read; a section that
    does not apply to a multi-label model is not asked (it will not run)."""
    for name in config.sections or list(section_names()):
        module = section_module(name)
        if why_not_applicable(module, handle) is not None:
            continue
        check = getattr(module, "check_model", None)
        if check is not None:
            check(handle.logits_model, config.options[name])
        check = getattr(module, "check_task", None)  # options a multi-label model refuses
        if check is not None:
            check(handle.task, config.options[name])


def mistakes_to_explain(predictions) -> int:
    """The mistakes a section may explain, for the plan: wrong images, or a multi-label
    model's wrong decisions (image and label), which its attribution and counterfactuals
    take one by one (never fewer than its wrong images)."""
    if predictions.multilabel:
        return int((predictions.labels != predictions.preds).sum())
    return int((~predictions.correct).sum())


def check_threshold(config: AuditConfig, handle) -> None:
    """The spec's ``threshold`` belongs to a multi-label model and gives one value or one per
    label: checked as soon as the model is loaded, before the data is read."""
    from auditor.predict.predictions import label_thresholds

    if config.threshold is not None and not handle.multilabel:
        raise ConfigError(f"'threshold' is set, but model '{config.model}' is single-label "
                          "(softmax or logits over its classes): its answer is its top class; "
                          "drop 'threshold' from the spec")
    if handle.multilabel:
        label_thresholds(config.threshold, handle.num_classes)


def applicable(names, handle) -> list[str]:
    """The sections of ``names`` that apply to this model (``why_not_applicable``): those the
    plan sizes; the others are skipped, at no cost."""
    return [name for name in names if why_not_applicable(section_module(name), handle) is None]


def why_not_applicable(module, handle) -> str | None:
    """Why a section does not apply to this model, or None when it does: a section not made
    for a multi-label model says so in its ``MULTI_LABEL`` string (True: it handles one)."""
    support = getattr(module, "MULTI_LABEL", "it reads the model as a softmax classifier")
    if not getattr(handle, "multilabel", False) or support is True:
        return None
    return support


def not_applicable(module, ctx: Context) -> SectionResult | None:
    """A section that does not apply to the model says why in one line instead of auditing a
    multi-label model as a softmax classifier; its ``run`` check is skipped, outside the
    verdict's failures."""
    support = why_not_applicable(module, ctx.handle)
    if support is None:
        return None
    reason = f"Does not apply to a multi-label model: {support}."
    check = Check(f"{module.NAME}.run", "skipped", None, {}, None,
                  f"section '{module.NAME}' skipped on a multi-label model: {support}",
                  module.NAME)
    return SectionResult(name=module.NAME, title=module.TITLE, intro=reason, checks=[check],
                         not_applicable=support)


def run_audit(config: AuditConfig, not_run: dict | None = None, handle=None,
              baseline_run=None) -> AuditOutcome:
    """Run the audit ``config`` describes, write its folder. ``not_run``: sections its caller
    left out (skipped ``SECTION.run`` checks); ``handle``, ``baseline_run``: the model (holding
    ``config.model``'s weights) and the baseline run, already loaded (the Keras callback's)."""
    from auditor.predict.distribute import make_distribution
    from auditor.predict.plan import PassClock
    from auditor.predict.predictions import predict

    started = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    if config.out:  # an output path it may not write is refused before any work
        check_out(Path(config.out), input_paths(config))
    baseline_run = baseline_run or (load_run(config.baseline) if config.baseline else None)
    bars = progress_enabled(config.progress and not config.quiet)  # bars on a terminal only
    log = SectionLog(not config.quiet, {})  # log lines everywhere, unless quiet
    distribution = make_distribution(config.strategy)  # before any other TensorFlow work
    loaded = load_inputs(config, distribution, handle)
    handle, dataset, baseline = loaded.handle, loaded.dataset, baseline_run and baseline_run.summary
    out = output_path(config, loaded, baseline_run, now, distribution.is_chief)
    names = config.sections or list(section_names())
    timings: dict[str, float] = {"load": time.perf_counter() - started - loaded.probe_seconds}
    if loaded.probe_checks:
        timings["input_range"] = loaded.probe_seconds
    with full_disk_is_an_error(out), output_folder(out, distribution) as work:
        log.say(f"predicting {dataset.n} images")
        tick, clock = time.perf_counter(), PassClock()
        predictions = predict(handle, dataset, config.batch_size, show_progress=bars,
                              threshold=config.threshold, clock=clock, known=loaded.probed)
        timings["predict"] = time.perf_counter() - tick
        record = prediction_record(predictions, dataset)
        save_predictions(work, record)
        tick = time.perf_counter()
        plan = plan_sections(config, names, loaded, predictions, clock)
        timings["plan"] = time.perf_counter() - tick
        inputs = RunInputs(config=config, handle=handle, dataset=dataset,
                           predictions=predictions, workdir=work, show_progress=bars,
                           baseline=baseline, train_dataset=loaded.train_dataset,
                           compare_handle=loaded.compare_handle)
        ctx = context_for(inputs, names, plan, log, timings)
        steps_seconds = sum(timings.get(step, 0.0) for step in step_names())
        results = joined(run_sections(names, ctx, plan, log, steps_seconds), config.checks)
        timings.update({result.name: result.seconds for result in results})
        if "html" in config.format:  # figures only for the page that shows them
            tick = time.perf_counter()
            results = draw_views(results, dataset, work, timings)
            timings["figures"] = time.perf_counter() - tick
        checks = run_checks(config, loaded, predictions, results, baseline, plan, not_run)
        timings["total"] = time.perf_counter() - started
        spent = sum(result.seconds for result in results) + steps_seconds
        write_outputs(work, RunOutputs(config, handle, dataset, results, checks, timings, now,
                                       baseline=baseline_run, record=record,
                                       plan=plan.to_summary(spent)))
        summary = json.loads((work / "summary.json").read_text())
    if distribution.is_chief and (config.mlflow or config.tensorboard):
        from auditor.trackers import log_trackers

        log_trackers(config, out, summary)  # the run folder as written, now in place
    return AuditOutcome(out=out, summary=summary, exit_code=exit_code(checks, config.fail_on),
                        written=distribution.is_chief)


def output_path(config: AuditConfig, loaded: Inputs, baseline_run, now, chief: bool) -> Path:
    """The run folder, once the inputs are known good: a baseline of other classes is refused,
    the folder is checked against the data's size, and the leftovers of dead runs beside it are
    removed (said on stderr)."""
    if baseline_run is not None:
        check_baseline_classes(baseline_run, loaded.dataset.class_names, loaded.handle.task)
    out = Path(config.out) if config.out else default_out(loaded.handle.name, now)
    check_out(out, input_paths(config), loaded.dataset.n)
    for name in sweep_dead_runs(out.parent) if chief else []:
        print(f"auditor: removed {name}, left by a run that is gone", file=sys.stderr)
    return out


def run_checks(config: AuditConfig, loaded: Inputs, predictions, results, baseline,
               plan=None, not_run: dict[str, str] | None = None) -> list:
    """Every check of the run, each with its declared kind: the input-range probe's, the
    weights', the data's, the sections', those against the baseline (its data and the
    settings its ``plan`` chose), and a skipped one per section its caller left ``not_run``."""
    dataset = loaded.dataset
    checks = (loaded.probe_checks + weight_checks(loaded.handle)
              + data_checks(dataset, predictions))
    checks += [check for result in results for check in result.checks]
    sections_summary = {k: plain(v) for result in results for k, v in result.summary.items()}
    sections_summary["data"] = {"source": dataset.source, "n": dataset.n}
    if plan is not None:
        sections_summary["plan"] = plan.to_summary()
    checks += regression_checks(sections_summary, baseline, config.checks)
    checks += [Check(f"{name}.run", "skipped", None, {}, None, reason, name)  # never a pass
               for name, reason in (not_run or {}).items()]
    return stamp_run_checks(checks, config.checks)


def check_baseline_classes(baseline_run, class_names: list[str], task: str) -> None:
    """A baseline of other classes, or of the other task (single- or multi-label), is refused
    before any work: its figures would be matched against ones that count something else."""
    other_task = task_difference(task, baseline_run.summary)
    if other_task:
        raise ConfigError(f"baseline '{baseline_run.path}' is not comparable: {other_task}; "
                          "compare runs of one task, or drop --baseline")
    difference = class_difference(class_names, baseline_run.summary)
    if difference:
        raise ConfigError(f"baseline '{baseline_run.path}' was measured on other classes "
                          f"({difference}); compare runs of one task, or drop --baseline")


def probe_range(handle, dataset, config: AuditConfig) -> tuple[list[Check], tuple | None]:
    """With input_range 'auto', the range the data says the model expects (set on the handle),
    and the check that warns when the choice is unclear; an explicit range is taken as given.
    With the check, the rows of the images the probe ran under the range chosen
    (``ProbeResult.known``), for the prediction pass."""
    from auditor.predict.input_range import CHECK, input_range_check, probe_input_range

    if config.input_range != "auto" or handle.input_range_source == "model":
        return [], None  # a range given, or stated by the model's own keras-hub preprocessor
    result = probe_input_range(handle, dataset, config.batch_size, config.seed,
                               budgeted=isinstance(config.budget, str))
    check = input_range_check(result, handle.hint_overridden, spec_bounds(config.checks, CHECK))
    return [check], result.known


def plan_sections(config, names, loaded, predictions, clock=None):
    """The compute plan of this run's sections (predict.plan), sized by the time a pass of this
    model takes, measured here (when the sections run any pass) unless the handle holds it;
    ``clock``: the prediction pass's calls, timed (``PassClock``), read for its forward pass."""
    from auditor.methods.attribution.tokens import attention_layers
    from auditor.predict.batched import rows_per_pass
    from auditor.predict.plan import Facts, make_plan, model_timing, runs_passes
    from auditor.predict.predictions import pass_function
    from auditor.steps.card import card_candidates, card_score

    handle, train = loaded.handle, loaded.train_dataset
    names = applicable(names, handle)  # a section skipped as not applicable costs nothing
    facts = Facts(images=loaded.dataset.n, input_shape=handle.input_shape,
                  classes=handle.num_classes, train_images=train.n if train is not None else None,
                  compare=loaded.compare_handle is not None,
                  mistakes=mistakes_to_explain(predictions),
                  card_methods=card_candidates(config, names), card_score=card_score(config),
                  sections=tuple(names), multilabel=handle.multilabel,
                  features=pass_function(handle)[1] or None,
                  attention=bool(attention_layers(handle.logits_model)),
                  call_rows=rows_per_pass(handle, backward=False))
    modules = {name: section_module(name) for name in names}
    for name, module in modules.items():  # what a section's cost reads in the model itself
        told = getattr(module, "model_facts", None)
        facts = told(handle, config.options[name], facts) if told else facts
    # the training pass priced, not timed: its trace alone is seconds on a large model, and
    # a named budget often leaves out the fine-tuning that runs it
    timing = (model_timing(handle, train=False, clock=clock)
              if runs_passes(modules, config.options, facts) else None)

    def planned(facts, timing):
        return make_plan(modules, config.options, config.section_options, facts,
                         config.budget, timing=timing)

    plan, facts = with_eager(handle, planned, facts, timing, config)
    if timing is not None and plan.trains and timing.train_priced:  # kept: timed, replanned
        plan = planned(facts, model_timing(handle))
    return plan


def with_eager(handle, planned, facts, timing, config):
    """(the plan, its facts) with the shifted copy's passes priced as they will run: each
    compiled, or eagerly when too few calls repay its trace (predict/eager.py), which is
    measured on the model only when the plan can keep the copy at all: at no extra cost
    for its eager calls, the least it can cost (a plan that leaves it out even then has
    nothing to run eagerly; the measure was 1.6 prediction passes of ConvNeXtTiny at 48 px,
    whose plan under ``quick`` leaves the copy out)."""
    from auditor.predict.eager import EagerCost, model_eager
    from auditor.steps.card import makes_card

    plan = planned(facts, timing)
    shifted = getattr(config.options.get("attribution"), "input_invariance", False)
    if timing is None or not timing.kernel or not makes_card(facts) or not shifted:
        return plan, facts

    def keeps_copy(plan) -> bool:
        return getattr(plan.options.get("attribution"), "input_invariance", False)

    free = EagerCost(trace=timing.trace / timing.kernel, call=0.0, row=0.0)
    if keeps_copy(plan) or keeps_copy(planned(dataclasses.replace(facts, eager=free), timing)):
        facts = dataclasses.replace(facts, eager=model_eager(handle, timing))
        plan = planned(facts, timing)
    return plan, facts


def run_sections(names, ctx: Context, plan, log: SectionLog,
                 steps_seconds: float = 0.0) -> list[SectionResult]:
    """Every section in order, with a log line when each starts and ends (the ``plan``'s
    estimate for the rest), and the plan's estimate (steps included) against the actual time
    at the end; a section the plan ran below its floors has its checks skipped
    (``below_floors``)."""
    log.estimates = {name: plan.estimate(name) for name in names}
    for line in plan.describe():
        log.say(f"plan: {line}")
    results = []
    for index, name in enumerate(names, 1):
        Interrupted.raise_if_pending()
        log.start(name, index, len(names))
        results.append(run_section(name, ctx))
        log.done(name, results[-1].seconds)
    spent = sum(result.seconds for result in results) + steps_seconds
    if plan.estimated_seconds() > 0 and spent > 0:
        log.say(f"sections took {duration(spent)}; the plan estimated "
                f"{duration(plan.estimated_seconds())} (estimate / actual "
                f"{plan.estimated_seconds() / spent:.2f})")
    return below_floors(results, plan)


def draw_views(results, dataset, folder: Path | None = None,
               timings: dict | None = None) -> list[SectionResult]:
    """Each section's result with the figures and tables of its template partial (``view``),
    the seconds each took in ``timings`` as ``figures.SECTION`` (what the Keras callback
    charges a section beyond its own time); a view that fails marks its section failed with
    an 'error' check, as a failing section would (its traceback goes to ``folder``'s
    audit.log)."""
    from auditor.report.views import build_view

    drawn = []
    timings = {} if timings is None else timings
    for result in results:
        tick = time.perf_counter()
        try:
            drawn.append(dataclasses.replace(result, view=build_view(result, dataset)))
        except Exception as exc:  # a figure's bug must not sink the report
            line = log_failure(folder, f"figures of section '{result.name}'", exc)
            failed = Check(f"{result.name}.view", "error", None, {}, None,
                           f"figures of section '{result.name}' failed: {line}", result.name)
            drawn.append(dataclasses.replace(
                result, error=f"{line} (the traceback is in {LOG_FILE})",
                checks=[*result.checks, failed]))
        timings[f"figures.{result.name}"] = time.perf_counter() - tick
    return drawn


@dataclass(frozen=True)
class RunOutputs:
    """Everything a run's outputs are written from, once every section and check is done."""

    config: AuditConfig
    handle: object  # inputs.models.ModelHandle
    dataset: object  # inputs.datasets.Dataset
    results: list  # SectionResult, in report order
    checks: list  # every Check of the run
    timings: dict
    created: dt.datetime
    baseline: object = None  # runs.baseline's loaded run, with --baseline
    record: object = None  # this run's prediction record (runs.baseline.prediction_record)
    plan: dict | None = None  # the plan's summary block

    def summary(self) -> dict:
        from auditor.report.summary import build_summary

        summary = build_summary(self.config, self.handle, self.dataset, self.results,
                                self.checks, self.timings, self.created)
        if self.plan is not None:
            summary["plan"] = self.plan
        if self.baseline is not None:
            summary["baseline"] = compare_runs(summary, self.record, self.baseline)
            annotate_checks(summary["checks"], self.baseline.summary.get("checks", []))
        return summary


def write_outputs(work: Path, outcome: RunOutputs) -> None:
    """summary.json, and of report.html, summary.md and junit.xml those ``config.format``
    names, into the staging folder; with a baseline run, each says what changed since (the
    ``baseline`` block of summary.json), and with a plan what it lowered (``plan``). The views
    are drawn before (``draw_views``)."""
    from auditor.report.summary import render_junit, render_markdown

    summary, formats = outcome.summary(), outcome.config.format
    text = json.dumps(summary, indent=2, default=_json_default)
    (work / "summary.json").write_text(text)
    if "md" in formats:
        (work / "summary.md").write_text(render_markdown(summary))
    if "junit" in formats:
        (work / "junit.xml").write_text(render_junit(summary))
    if "html" in formats:
        write_page(work, summary, json.loads(text), outcome.results, outcome.dataset)


def write_page(work: Path, summary: dict, written: dict, results, dataset) -> None:
    """report.html from the summary (its headline read from ``written``, the summary as
    summary.json has it) and the sections' views."""
    from auditor.report.headline import headline
    from auditor.report.render import render_report

    ran = {result.name: result.error is None and result.not_applicable is None
           for result in results}
    page = {"summary": summary, "sections": results, "checks": summary["checks"],
            "headline": headline(written, ran),
            "comparison": summary.get("baseline"),
            "changed_examples": changed_examples(summary.get("baseline"), dataset),
            "libraries": dict(library_versions()), "report_size": "@@REPORT_SIZE@@"}
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
    if isinstance(value, types.MappingProxyType):  # a read-only mapping of a shared result
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
