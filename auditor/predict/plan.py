"""The compute plan: every section's samples, steps and restarts sized to a budget.

A budget is counted in passes of a model: one image through a forward and a backward pass is one
pass; a forward-only image counts ``FORWARD_SHARE`` of one. ``--budget N`` is N passes of the
audited model. A named budget (quick, standard, thorough) is a wait: that many passes of a
reference model (MobileNetV2 at 224 px), in the time a pass of the model at hand takes on this
machine. That time is measured before the sections run (``measure_timing``: the forward pass
read off the prediction pass's first batches (``PassClock``), a backward pass and its trace;
a training pass only when the plan keeps work that runs it, priced from the backward pass
until then; the backward pass on two numbers of rows, which splits a call's fixed cost from
its cost per row, so that a compiled loop's many steps over large batches are priced as they
run) and divided by the time of a fixed reference kernel
timed at the same moment, so that a loaded machine, which slows both, plans as a quiet one; the
ratios are rounded to a half-octave grid, so that the same model and spec get the same settings,
and so the same figures, run after run (a baseline comparison depends on them). The seconds the
run reports are the raw measurement's estimate.

Each section declares its cost model next to its Options: ``PLANNED`` (the settings the plan may
lower, each with the floor below which the figure would stop meaning what it says) and
``passes(options, facts) -> Passes``. When the sections' default cost is over the budget, the plan
scales every planned setting down by one common factor (never below its floor) until it fits.
A setting given in the spec is the user's and is never changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from dataclasses import dataclass, field

import numpy as np

# A forward-only image counts half a forward-backward one: measured on MobileNetV2 at 224 px on
# this 2-core CPU, 36 ms forward and 70 ms forward-backward per image in batches of 32 (the
# textbook bound for reverse mode is up to three times the forward; Griewank and Walther,
# "Evaluating Derivatives", 2008).
FORWARD_SHARE = 1 / 2
# Named budgets, in passes of a reference model: MobileNetV2 at 224 px (weights=None, 10
# classes). "standard" is sized so that the reference with 1,000 images and every section
# finishes within 10 minutes on a 2-core CPU (bench/audit.py measures it); quick is a quarter,
# thorough 4 times. A number (--budget 5000) is that many passes of the audited model itself.
BUDGETS = {"quick": 2_000, "standard": 8_000, "thorough": 32_000}
DEFAULT_BUDGET = "standard"
# A named budget is the wait of that many reference passes. A forward-backward pass of the
# reference takes REFERENCE_PASS reference kernels (``reference_kernel``), as ``measure_timing``
# times them side by side (bench/zoo.py --reference): 3.9 to 5.7 in five runs on this shared
# 2-core CPU at a load of 6 to 7 (64 to 81 ms an image; 11.6 in one run's first call).
REFERENCE_PASS = 5.0
# Without a measurement (a plan made before the model is timed), the budget is scaled by forward
# FLOPs from the reference's, counted by TensorFlow's profiler: an estimate only, which
# under-counts layer norms and 7x7 depthwise convolutions on a CPU (ConvNeXt).
REFERENCE_FLOPS = 612_751_868
# Measured times are kept in reference kernels rounded to this grid (a factor of sqrt(2)): one
# call of MobileNetV2 at 224 px varies by up to 40% from one to the next on a loaded machine,
# and the kernel absorbs what the load does to both; the rest lands in one grid step or the next.
GRID = 2 ** 0.5


# A trace of a compiled optimisation loop (the featureviz render: the model's forward and
# backward pass inside a tf.while_loop, with the Fourier parameterisation, the random
# transforms and Adam) against the trace ``measure_timing`` times (the first call of a plain
# input gradient, less a call's time). The first call of the render loop of 10 unregularised
# images at 32 steps, less its steps, against the timed trace, at 48 px under a load of 10 to
# 12: 20 s against 7.6 s on MobileNetV3Small (2.6), 46 s against 49 s on DenseNet121 (0.95);
# the loop's traces alone 0.63 s against a timed trace of 0.21 s on the digits CNN (3.0),
# counted by tests/tracecount.py. The loop's own machinery weighs most on small models; 2 is
# the middle of the three.
LOOP_TRACE = 2.0


# Rows of the batches the cost per image is timed on. A call costs a fixed overhead plus its
# rows, and the sections' calls take from a few rows (interventions, training steps) to
# hundreds (occlusion, curves): timed per image on the digits CNN (300 images, every section,
# bench/audit.py), 16 rows made the estimate 1.65 times the actual and 64 rows 0.33 of it, so
# the sections' calls average about 24 rows. On a large model the overhead is a small share
# either way (MobileNetV2 224 px fits 11 rows in the memory budget).
TIMING_ROWS = 24
# The fixed cost of a forward-backward call (``Timing.call``) is a tenth of a second or less on
# the models timed (0.12 s on MobileNetV3Small at 48 px under a load of 10): a call of over a
# second is nine tenths rows, and its split is timed on a quarter of its rows, not four times.
SPLIT_CALL_SECONDS = 1.0
# The training pass priced from the forward-backward one until a plan keeps work that runs it
# (``Timing.train_priced``): timed side by side by ``measure_timing`` at 48 px (6 December
# 2026, load 10 to 12), a training image took 1.01 of a forward-backward one on
# MobileNetV3Small and 1.13 on DenseNet121 (both carry the gradient back through every layer;
# the weights' gradients add one product per layer); a training step's trace took 3.0 and 1.62
# of the input gradient's trace (1.55 and 2.4 in Python tracing alone, docs/scale.md; 1.8 in its
# trace table's run). The middle of each: a price only decides whether the plan keeps the
# fine-tuning, and a kept one is timed and the plan made again by the measure.
TRAIN_SHARE = 1.1
TRAIN_TRACE_SHARE = 2.0
# Timed calls per pass, of which the median counts: one call of MobileNetV2 at 224 px varied by
# up to 40% from one to the next on a quiet machine (a backward pass 20 to 28 ms an image), and
# the whole audit's estimate with it (0.75 to 1.01 of the actual time in two runs).
TIMING_REPEATS = 3


@dataclass(frozen=True)
class Passes:
    """Images through the model: forward only, forward-backward (the gradient of the input),
    and through a training step (the gradient of every weight, an optimiser's update);
    ``traces`` counts the compiled functions the section traces (each about one trace of the
    model), of which ``loops`` are compiled optimisation loops (a forward and a backward pass
    inside a ``tf.while_loop`` with the loop's own work: each costs LOOP_TRACE traces), and
    ``copies`` the copies of the model it makes (randomised, shifted, fine-tuned:
    inputs/copies.py; seconds each on a large model); ``kernels`` is work off the model
    (scikit-learn fits, cleanlab, hashing) in reference kernels (``reference_kernel``), as
    measured on this machine; ``train_traces`` are traces of a training step (the gradient of
    every weight and the optimiser's update: the Clever Hans copies'), dearer than a trace of
    the input gradient. A training row counts as a forward-backward one in the budget."""

    forward: float = 0.0
    backward: float = 0.0
    traces: int = 0
    train: float = 0.0
    copies: int = 0
    loops: int = 0
    kernels: float = 0.0
    train_traces: int = 0  # traces of a training step (each at Timing.train_trace)
    # Forward-backward rows run as the steps of a compiled loop (the featureviz render, the
    # attacks, the counterfactual search, the concepts' icons): many steps per call of large
    # batches, so each row costs the time per row (Timing.row), not a share of a call's fixed
    # cost as the rows of the sections' other calls do. Counted as forward-backward passes.
    looped: float = 0.0
    # The steps of those loops (per batch): each runs the model's graph once, paying what a
    # call pays besides its rows (Timing.call: the graph's ops dispatched, their threads woken),
    # as many times as there are steps, however few rows a step takes.
    loop_steps: float = 0.0
    # The traces' cost beyond one timed trace each, in timed traces: a compiled pass dearer to
    # trace than the input gradient (the LRP composite's: ``Method.trace_cost``) adds its excess.
    trace_extra: float = 0.0
    # Forward rows whose calls the section counts (``calls``, the forward calls they run in):
    # each row costs the forward pass's time per row and each call its fixed cost
    # (``Timing.forward_split``), where an uncounted forward row costs the timed call's time
    # per image, a 24th of that call's fixed cost included: a re-prediction of 200 images in
    # one call pays one fixed cost, not 200/24 of one. Counted as forward passes. (A section
    # that counts its forward-backward calls declares them as ``looped`` rows in
    # ``loop_steps``: the same price, a row at ``Timing.row`` and a call at ``Timing.call``.)
    called: float = 0.0
    calls: float = 0.0

    def __add__(self, other: Passes) -> Passes:
        return Passes(*(a + b for a, b in zip(dataclasses.astuple(self),
                                              dataclasses.astuple(other), strict=True)))

    def __sub__(self, other: Passes) -> Passes:
        return Passes(*(a - b for a, b in zip(dataclasses.astuple(self),
                                              dataclasses.astuple(other), strict=True)))

    @property
    def forward_rows(self) -> float:
        """Every forward row, whether its calls are counted or not."""
        return self.forward + self.called

    @property
    def total(self) -> float:
        return (self.backward + self.looped + self.train
                + FORWARD_SHARE * self.forward_rows)


@dataclass(frozen=True)
class Facts:
    """What the cost models need to know about the run."""

    images: int  # audit images
    input_shape: tuple[int, int, int]
    classes: int
    train_images: int | None = None  # --train-data images, when given
    compare: bool = False  # a --compare-model is audited alongside
    mistakes: int | None = None  # audit images the model gets wrong (a multi-label model's
    #                              wrong decisions); None: count all images
    # The methods the attribution section's reliability card chooses from for the sections
    # that take their method from it: () when the run has no attribution section (they then
    # take their fallback), None for the attribution section's defaults.
    card_methods: tuple[str, ...] | None = None
    card_score: str = "logit"  # the score the card's maps explain (its compiled passes')
    sections: tuple[str, ...] = ()  # the run's sections, for work one does for another
    multilabel: bool = False  # a multi-label model (sections audit it per label)
    features: int | None = None  # width of the penultimate features (None: not known)
    # The audit's working copy is the model's twin and calls its traces (inputs/traces.py);
    # False: a copy of another structure (a keras-hub rebuild) traces every pass anew.
    twin_copy: bool = True
    # The model has attention layers (keras.layers.MultiHeadAttention) for the methods that
    # read them (the rollouts); False: they do not apply and run nothing; None: not known.
    attention: bool | None = None
    # The layers the concepts section factorises, as its ``model_facts`` finds them in the
    # model (one on a vision transformer's tokens); None: not known (counted as its default two).
    concept_layers: int | None = None
    # The layers the card's layer methods (Grad-CAM, Grad-CAM++) read on this model, as the
    # attribution section's ``model_facts`` resolves them: each is a trace of its own (a
    # Grad-CAM++ on a rectified layer before Grad-CAM's linear one); None: not known (one).
    cam_layers: int | None = None
    # Rows one forward call takes (the memory budget's, predict/batched.py ``rows_per_pass``),
    # for the sections that count the calls their forward rows run in; None: not known (their
    # rows are then priced as the timed call's per image).
    call_rows: int | None = None
    # What a pass run eagerly costs beside its trace (predict/eager.py ``EagerCost``): a
    # section whose pass is called too few times to repay a trace runs it eagerly. None: all
    # compiled.
    eager: object = None

    @property
    def wrong(self) -> int:
        """Mistakes the sections that explain mistakes can take, at most."""
        return self.images if self.mistakes is None else self.mistakes

    @property
    def size(self) -> int:
        return int(max(self.input_shape[:2]))


@dataclass(frozen=True)
class Timing:
    """Seconds per image of a forward, a forward-backward and a training pass, per trace and
    per copy of the model; ``kernel``: seconds of the reference kernel timed beside them
    (``reference_kernel``). A forward-backward call costs a fixed part (``call``: dispatch,
    the copies in and out) and a part per row (``row``); ``backward`` is their sum per image
    at the timed call's rows, the price of the sections' calls, and ``row`` alone that of a
    compiled loop's steps (``Passes.looped``)."""

    forward: float
    backward: float
    trace: float
    train: float | None = None  # None: as a forward-backward pass
    kernel: float | None = None  # None: not timed (the plan then sizes named budgets by FLOPs)
    copy: float | None = None  # None: not timed (copies then count nothing)
    twin: bool = True  # the timed copy is the model's twin (inputs/traces.py)
    # The first call of a training pass, less a call: a trace of every weight's gradient,
    # dearer than ``trace`` (Python tracing alone, counted by tests/tracecount.py: 9.0 s
    # against 5.8 s on MobileNetV3Small at 48 px, 59 s against 25 s on DenseNet121 under a
    # load of 8 to 9). None: as ``trace``.
    train_trace: float | None = None
    row: float | None = None  # seconds per forward-backward row less a call's share; None: backward
    call: float | None = None  # the fixed seconds of a forward-backward call (None: not timed)
    # ``train`` and ``train_trace`` priced from the forward-backward pass (TRAIN_SHARE,
    # TRAIN_TRACE_SHARE), not timed: the training pass is timed (``with_training``) only when
    # a plan keeps work that runs it, since its trace alone is seconds on a large model.
    train_priced: bool = False

    def seconds(self, passes: Passes) -> float:
        row, call = self.forward_split()
        return (passes.forward * self.forward + passes.backward * self.backward
                + passes.called * row + passes.calls * call
                + passes.looped * (self.backward if self.row is None else self.row)
                + passes.loop_steps * (self.call or 0.0)
                + passes.train * (self.backward if self.train is None else self.train)
                + (passes.traces + (LOOP_TRACE - 1) * passes.loops + passes.trace_extra)
                * self.trace
                + passes.train_traces * (self.trace if self.train_trace is None
                                         else self.train_trace)
                + passes.copies * (self.copy or 0.0) + passes.kernels * (self.kernel or 0.0))

    def forward_split(self) -> tuple[float, float]:
        """(seconds per forward row, fixed seconds per forward call). The forward pass is
        timed on one number of rows only, so its call is split in the share the forward-backward
        call was (``row`` and ``call``, timed on two: ``backward = row + call / rows``): a row
        ``forward * row / backward``, a call ``forward * call / backward``, which add up to the
        timed forward call. Every second per row when the forward-backward call was not split."""
        if self.row is None or self.call is None or self.backward <= 0:
            return self.forward, 0.0
        return self.forward * self.row / self.backward, self.forward * self.call / self.backward

    def in_kernels(self) -> Timing:
        """The times in reference kernels, each rounded to the GRID: what a named budget is
        sized by, the same from one run to the next as far as the grid holds."""

        def graded(value: float | None) -> float | None:
            if value is None or value <= 0:
                return value
            return float(GRID ** round(math.log(value / self.kernel, GRID)))

        return Timing(graded(self.forward), graded(self.backward), graded(self.trace),
                      graded(self.train), kernel=1.0, copy=graded(self.copy), twin=self.twin,
                      train_trace=graded(self.train_trace), row=graded(self.row),
                      call=graded(self.call), train_priced=self.train_priced)


@dataclass
class Plan:
    """The settings the plan chose, what they replaced, and what the run should cost."""

    budget: str | int
    budget_passes: int
    scale: float  # the common factor applied to every planned setting (1: nothing reduced)
    settings: dict[str, dict[str, int]] = field(default_factory=dict)  # section -> reduced
    defaults: dict[str, dict[str, int]] = field(default_factory=dict)  # ... what they replaced
    passes: dict[str, Passes] = field(default_factory=dict)  # per step and section, as planned
    timing: Timing | None = None
    options: dict = field(default_factory=dict)  # section -> its Options, as the sections run
    # A named budget sized by the measured time: the budget and the plan in reference kernels,
    # and the graded times per image they were counted with (None: sized in passes).
    budget_kernels: float | None = None
    kernels: Timing | None = None
    dropped: dict[str, list[Drop]] = field(default_factory=dict)  # section -> work left out
    # section -> {setting: its floor} for the settings run below their floor (a section's
    # THIN): the budget could not hold the floors on this model (``_thinned``)
    below_floor: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_passes(self) -> float:
        return sum(p.total for p in self.passes.values())

    @property
    def total_kernels(self) -> float | None:
        return (None if self.kernels is None
                else sum(self.kernels.seconds(p) for p in self.passes.values()))

    @property
    def trains(self) -> bool:
        """Whether the planned work runs a training step (Clever Hans's fine-tuned copies)."""
        return any(p.train > 0 or p.train_traces > 0 for p in self.passes.values())

    @property
    def over_budget(self) -> bool:
        if self.kernels is not None:
            return self.total_kernels > self.budget_kernels * (1 + 1e-9)
        return self.total_passes > self.budget_passes

    def estimate(self, section: str) -> float:
        """Estimated seconds of one section (0 without a timing, or for a section the plan
        was not asked to size: one that does not apply to the model)."""
        planned = self.passes.get(section)
        return self.timing.seconds(planned) if self.timing and planned is not None else 0.0

    def estimated_seconds(self) -> float:
        """Estimated seconds of every step and section: the raw measurement's, not the grid's."""
        return sum(self.estimate(name) for name in self.passes)

    def describe(self) -> list[str]:
        """One line per reduced section ("featureviz: steps 96 instead of 128"), and one when
        even the floors are over the budget."""
        lines = [f"{name}: " + ", ".join(f"{key} {value} instead of {self.defaults[name][key]}"
                                         for key, value in changed.items())
                 for name, changed in self.settings.items()]
        lines += [f"{name}: left out {drop.what} ({drop.setting} {self.dropped_value(name, drop)}"
                  f"): the budget cannot hold its fixed costs at the lowest settings; "
                  f"'{name}.{drop.setting}' in the spec or a larger --budget brings it back"
                  for name, drops in self.dropped.items() for drop in drops]
        lines += [f"{name}: " + ", ".join(f"{key} {setting(self.options[name], key)}"
                                         for key in floors)
                  + " below " + ("its floor" if len(floors) == 1 else "their floors") + " ("
                  + ", ".join(str(floor) for floor in floors.values())
                  + "): the budget cannot hold the floors on this model, so the section's "
                  "checks are not measured; a larger --budget measures them"
                  for name, floors in self.below_floor.items()]
        if self.over_budget and self.kernels is not None:
            lines.append(f"{self.total_kernels:.0f} reference kernels at the lowest settings, "
                         f"and with the work above given up, over the budget of "
                         f"{self.budget_kernels:.0f} (about {self.estimated_seconds():.0f} s "
                         "of sections on this model)")
        elif self.over_budget:
            lines.append(f"{self.total_passes:.0f} passes at the lowest settings, over the "
                         f"budget of {self.budget_passes}")
        return lines

    def dropped_value(self, name: str, drop: Drop):
        """The value a drop gave its setting, as the section ran with it."""
        return getattr(self.options[name], drop.setting)

    def dropped_block(self) -> dict:
        """``plan.dropped`` of summary.json: per section, each setting the plan gave up work
        with, its value, what it no longer shows and the spec key that brings it back."""
        return {name: [{"setting": drop.setting, "value": self.dropped_value(name, drop),
                        "what": drop.what, "spec_key": f"{name}.{drop.setting}"}
                       for drop in drops] for name, drops in self.dropped.items()}

    def to_summary(self, actual_seconds: float | None = None) -> dict:
        """The ``plan`` block of summary.json."""
        block: dict = {name: dict(changed) for name, changed in self.settings.items()}
        block.update({
            "budget": self.budget, "budget_passes": self.budget_passes,
            "passes": int(round(self.total_passes)), "scale": round(self.scale, 4),
            "over_budget": self.over_budget,
            "instead_of": {name: dict(d) for name, d in self.defaults.items()},
            "estimated_seconds": round(self.estimated_seconds(), 1),
            "estimates": {name: round(self.estimate(name), 1) for name in self.passes},
        })
        if self.dropped:
            block["dropped"] = self.dropped_block()
        if self.below_floor:
            block["below_floor"] = {
                name: {k: {"value": setting(self.options[name], k), "floor": floor}
                       for k, floor in floors.items()}
                for name, floors in self.below_floor.items()}
        if self.timing is not None:
            block["timing"] = self._timing_block()
        if actual_seconds is not None:
            block["seconds"] = round(actual_seconds, 1)
        return block

    def _timing_block(self) -> dict:
        """What was measured (seconds per image, and the reference kernel's seconds) and, for a
        named budget, what the plan used: the graded times and the budget in kernels."""
        kinds = ("forward", "backward", "train", "trace", "copy", "train_trace", "row", "call")
        priced = ("train", "train_trace") if self.timing.train_priced else ()
        block: dict = {"measured": {k: getattr(self.timing, k) for k in kinds
                                    if getattr(self.timing, k) is not None and k not in priced}}
        if self.timing.kernel is not None:
            block["measured"]["kernel"] = self.timing.kernel
        block["measured"] = {k: float(f"{v:.3g}") for k, v in block["measured"].items()}
        if self.kernels is not None:
            block["kernels"] = {k: getattr(self.kernels, k) for k in kinds
                                if getattr(self.kernels, k) is not None}
            block["kernels"] = {k: float(f"{v:.4g}") for k, v in block["kernels"].items()}
            block["budget_kernels"] = round(self.budget_kernels, 1)
            block["planned_kernels"] = round(self.total_kernels, 1)
        return block


def budget_passes(budget: str | int, flops: int | None = None) -> int:
    """Passes of the audited model that a budget allows: a number as given; a named budget
    scaled from the reference model by forward FLOPs (as the reference when they are unknown)."""
    if not isinstance(budget, str):
        return int(budget)
    return int(BUDGETS[budget] * (REFERENCE_FLOPS / flops if flops else 1.0))


def forward_flops(handle) -> int | None:
    """Floating-point operations of one image's forward pass, counted by TensorFlow's profiler
    on the frozen graph of the logits function; None when the graph cannot be counted."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    if "flops" not in handle.compiled:
        spec = tf.TensorSpec([1, *handle.input_shape], tf.float32)
        try:
            frozen = convert_variables_to_constants_v2(
                tf.function(handle.logits).get_concrete_function(spec))
            options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
            options["output"] = "none"
            logger, level = tf.get_logger(), tf.get_logger().level
            logger.setLevel("ERROR")  # the v1 profiler's deprecation notice is not for users
            try:  # its own stderr line on ops of unknown shape is not for users either
                with contextlib.redirect_stderr(io.StringIO()):
                    count = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
            finally:
                logger.setLevel(level)
            handle.compiled["flops"] = int(count.total_float_ops) or None
        except (ValueError, TypeError, AttributeError, tf.errors.OpError):
            handle.compiled["flops"] = None
    return handle.compiled["flops"]


@dataclass(frozen=True)
class Coarsest:
    """A planned setting whose cost falls as it grows (an occlusion patch): the plan raises it
    by the inverse of the common factor, never above ``most``."""

    most: int


@dataclass(frozen=True)
class Drop:
    """Work a section leaves out when a named budget cannot hold even its lowest settings:
    what is left then is mostly fixed (traces, copies), which no common factor lowers, and a
    named budget is a wait that must hold on every model. ``value`` is the setting's value
    without the work (or a function of the options that gives it); ``what`` names in the
    report what is no longer shown. A section lists its drops in ``DROPS``, in the order it
    gives them up; the plan takes the one that saves most first, never one the spec set."""

    setting: str
    value: object
    what: str

    def applied(self, options):
        value = self.value(options) if callable(self.value) else self.value
        return dataclasses.replace(options, **{self.setting: value})


def planned_settings(module, facts: Facts, options) -> dict:
    """{setting: floor or Coarsest} the plan may change in this section: ``planned(facts,
    options)`` when the section's bounds depend on the input or on its options (the attribution
    methods' own, from the method registry), else its ``PLANNED``. A dotted setting
    ("occlusion.patch") is an option of ``method_options``, planned when the method runs."""
    planned = getattr(module, "planned", None)
    return planned(facts, options) if planned else dict(getattr(module, "PLANNED", {}))


def make_plan(modules: dict, options: dict, tables: dict[str, dict], facts: Facts,
              budget: str | int = DEFAULT_BUDGET, flops: int | None = None,
              timing: Timing | None = None) -> Plan:
    """The plan for the sections ``modules`` ({name: module}) with their ``options``, typed
    once by the config (``AuditConfig.options``), and the spec's section ``tables`` (which
    settings the spec gave: those the plan never changes).

    A number budget is passes of the model. A named budget is, with a ``timing`` that timed the
    reference kernel, the wait of its reference passes in kernels, against which every step's
    and section's passes and traces count at the model's graded times (``Timing.in_kernels``);
    without one, passes scaled from the reference by forward ``flops``. Settings the spec gives
    are fixed; the planned ones are scaled by the largest common factor in (0, 1] whose cost
    fits the budget, found by bisection (cost grows with every setting). ``Plan.options`` are
    the sections' options with what the plan lowered.
    """
    if timing is not None and not timing.twin:
        facts = dataclasses.replace(facts, twin_copy=False)
    kernels = (timing.in_kernels() if isinstance(budget, str) and timing is not None
               and timing.kernel else None)
    limit = BUDGETS[budget] * REFERENCE_PASS if kernels else budget_passes(budget, flops)
    given = {name: options[name] for name in modules}
    free = {name: {k: bound for k, bound in planned_settings(module, facts, given[name]).items()
                   if not _given(tables.get(name, {}), k)}
            for name, module in modules.items()}
    full = {name: _resolved(module, given[name], facts) for name, module in modules.items()}

    def cost(options: dict) -> float:
        charged = _charged(modules, options, facts).values()
        return sum(kernels.seconds(p) if kernels else p.total for p in charged)

    dropped = (_dropped(modules, tables, full, free, cost, limit) if kernels
               else {name: [] for name in modules})
    base = {name: _with_drops(full[name], dropped[name]) for name in modules}

    floors = (_thinned(modules, base, free, cost, limit) if kernels
              and cost({n: _scaled(base[n], free[n], 0.0) for n in modules}) > limit else free)

    def options_at(scale: float) -> dict:
        return {name: _scaled(base[name], floors[name], scale) for name in modules}

    scale = _largest_fitting(lambda scale: cost(options_at(scale)) <= limit)
    chosen = options_at(scale)
    plan = Plan(budget=budget, scale=scale, passes=_charged(modules, chosen, facts),
                timing=timing, kernels=kernels, budget_kernels=limit if kernels else None,
                budget_passes=max(1, int(limit / kernels.backward if kernels else limit)),
                dropped={name: drops for name, drops in dropped.items() if drops},
                below_floor=_below_floor(chosen, free, floors))
    for name, options in chosen.items():
        changed = {k: setting(options, k) for k in free[name]
                   if setting(options, k) != setting(base[name], k)}
        if changed:
            plan.settings[name] = changed
            plan.defaults[name] = {k: setting(base[name], k) for k in changed}
        plan.options[name] = with_settings(_with_drops(given[name], dropped[name]),
                                           plan.settings.get(name, {}))
    return plan


def unmeasured_below_floor(check, plan_block: dict):
    """``check`` skipped, not measured, where the run's plan (summary.json's ``plan`` block)
    ran its section below its floors (``below_floor``: a named budget that could not hold them
    on this model): a figure from fewer images than its floor is shown, but neither passes nor
    accuses. Which figure a lowered setting bears on is not declared, so every judged check of
    the section is. The audit's checks (pipeline.py) and the regression checks read again by
    ``auditor compare`` (runs/baseline.py) go through here."""
    floors = plan_block.get("below_floor", {}).get(check.section)
    return not_measured(check, floors_reason(check.section, floors, plan_block.get("budget")))


def floors_reason(what: str, floors: dict | None, budget) -> str | None:
    """Why ``what`` is not measured when the plan ran it below its ``floors`` ({setting:
    {value, floor}}, a section's ``below_floor`` entry); None when it ran at its floors."""
    if not floors:
        return None
    lowered = ", ".join(f"{k} {v['value']} (floor {v['floor']})" for k, v in floors.items())
    return (f"{what} ran below its floors ({lowered}) to fit --budget {budget} on this model; "
            "a larger --budget measures it")


def not_measured(check, reason: str | None):
    """``check`` skipped, its value kept, with ``reason`` (None: ``check`` as it is); a check
    already skipped or in error stays as it is."""
    if not reason or check.status not in ("pass", "warn", "fail"):
        return check
    return dataclasses.replace(check, status="skipped",
                               message=f"{check.message}; not measured: {reason}")


def _largest_fitting(fits) -> float:
    """The largest factor in [0, 1] for which ``fits(factor)`` (1 when it fits at 1), found by
    bisection: what it sizes grows with the factor; 0 when nothing fits."""
    if fits(1.0):
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _thinned(modules: dict, base: dict, free: dict, cost, limit: float) -> dict:
    """``free`` with the floors a section declares thinnable (``THIN``: {setting: the least
    it may go to}) lowered by the largest common factor whose lowest settings fit the budget
    (to their least when none does): a named budget is the same wait on every model, and
    at the floors a model whose pass costs ten times more would wait ten times longer. What
    runs below a floor is listed (``Plan.below_floor``) and its section's checks say they
    were not measured (pipeline.py ``below_floors``), never a pass from too few images."""
    least = {name: {k: most for k, most in getattr(module, "THIN", {}).items()
                    if k in free[name] and not isinstance(free[name][k], Coarsest)}
             for name, module in modules.items()}

    def lowered(factor: float) -> dict:
        return {name: {k: (max(least[name][k], int(round(bound * factor)))
                           if k in least[name] else bound) for k, bound in free[name].items()}
                for name in modules}

    def fits(factor: float) -> bool:
        floors = lowered(factor)
        return cost({n: _scaled(base[n], floors[n], 0.0) for n in modules}) <= limit

    return lowered(_largest_fitting(fits))


def _below_floor(chosen: dict, free: dict, floors: dict) -> dict:
    """{section: {setting: its floor}} for the settings ``chosen`` below their floor."""
    below = {name: {k: bound for k, bound in free[name].items()
                    if floors[name][k] != bound and setting(options, k) is not None
                    and setting(options, k) < bound}
             for name, options in chosen.items()}
    return {name: settings for name, settings in below.items() if settings}


def _dropped(modules: dict, tables: dict, full: dict, free: dict, cost, limit: float) -> dict:
    """{section: [Drop]}: the sections' drops (``DROPS``, none the spec set) taken one at a
    time, the one that saves most at the lowest settings first, until the lowest settings fit
    the budget or no drop is left."""
    left = {name: [d for d in getattr(module, "DROPS", ()) if not _given(tables.get(name, {}),
                                                                        d.setting)]
            for name, module in modules.items()}
    taken = {name: [] for name in modules}

    def lowest(extra: tuple = ()) -> float:
        options = {name: _scaled(_with_drops(full[name], taken[name]
                                             + [d for n, d in extra if n == name]),
                                 free[name], 0.0) for name in modules}
        return cost(options)

    spent = lowest()
    while spent > limit:
        savings = {name: spent - lowest(((name, drops[0]),))
                   for name, drops in left.items() if drops}
        if not savings or max(savings.values()) <= 0:
            break
        name = max(savings, key=savings.get)
        taken[name].append(left[name].pop(0))
        spent -= savings[name]
    return taken


def _with_drops(options, drops: list[Drop]):
    for drop in drops:
        options = drop.applied(options)
    return options


def runs_passes(modules: dict, options: dict, facts: Facts) -> bool:
    """Whether the sections ``modules`` with their ``options`` run any pass of the model at
    all, at their full settings (then a pass is worth timing before the plan is made): the plan
    only lowers settings, so sections that run no pass at them run none as planned."""
    full = {name: _resolved(module, options[name], facts) for name, module in modules.items()}
    return sum(p.total for p in _charged(modules, full, facts).values()) > 0


def _informed(modules: dict, chosen: dict, facts: Facts) -> Facts:
    """``facts`` as the sections' ``chosen`` options make them for the others: a section whose
    options others read declares how (``informs(options, facts)``: the attribution section's
    methods are the card's, which Clever Hans, triage and contrastive take theirs from), so
    that what the plan drops from one is not still counted by another."""
    for name, options in chosen.items():
        informs = getattr(modules[name], "informs", None)
        if informs is not None:
            facts = informs(options, facts)
    return facts


def _charged(modules: dict, chosen: dict, facts: Facts) -> dict[str, Passes]:
    """Each step's and each section's passes, the steps first (the pipeline makes them
    before the sections): a
    section whose options configure a step declares it as ``STEP = (name, passes)``
    (the attribution section's reliability card, steps/card.py); a step several sections
    ask of (the saliency of the mistakes, steps/saliency.py) is charged what each asks."""
    steps, passes = {}, {}
    facts = _informed(modules, chosen, facts)
    for name, options in chosen.items():
        step = getattr(modules[name], "STEP", None)
        if step is not None:
            steps[step[0]] = steps.get(step[0], Passes()) + step[1](options, facts)
        passes[name] = _passes(modules[name], options, facts)
    return {**steps, **passes}


def _given(table: dict, key: str) -> bool:
    """The spec sets ``key`` (a dotted key inside ``method_options``)."""
    if "." not in key:
        return key in table
    method, option = key.split(".", 1)
    return option in (table.get("method_options", {}).get(method) or {})


def setting(options, key: str):
    """A planned setting's value; None for a method option of a method that does not run."""
    if "." not in key:
        return getattr(options, key)
    method, option = key.split(".", 1)
    if method not in (getattr(options, "methods", None) or ()):
        return None
    return (options.method_options.get(method) or {}).get(option)


def _resolved(module, options, facts: Facts):
    """The section's Options with defaults that depend on the input (such as featureviz's
    steps) filled in by the section's ``resolve`` when it has one."""
    resolve = getattr(module, "resolve", None)
    return resolve(options, facts) if resolve else options


def with_settings(options, changed: dict):
    """``options`` (as the spec gave them) with the settings the plan lowered: a dotted one
    ("occlusion.patch") goes into ``method_options``, where the spec's own value wins."""
    values = {k: v for k, v in changed.items() if "." not in k}
    nested: dict = {}
    for key, value in changed.items():
        if "." in key:
            method, option = key.split(".", 1)
            nested.setdefault(method, {})[option] = value
    if nested:
        values["method_options"] = {m: dict(o) for m, o in options.method_options.items()}
        for method, planned in nested.items():
            given = values["method_options"].setdefault(method, {})
            for option, value in planned.items():
                given.setdefault(option, value)
    return dataclasses.replace(options, **values) if values else options


def _scaled(options, free: dict, scale: float):
    values, nested = {}, {}
    for key, bound in free.items():
        value = setting(options, key)
        if value is None:
            continue
        if isinstance(bound, Coarsest):
            grown = bound.most if scale <= 0 else int(round(value / scale))
            new = max(value, min(bound.most, grown))
        else:
            new = min(value, max(bound, int(round(value * scale))))  # never raised
        if "." in key:
            method, option = key.split(".", 1)
            nested.setdefault(method, {})[option] = new
        else:
            values[key] = new
    if nested:
        values["method_options"] = {m: dict(o) for m, o in options.method_options.items()}
        for method, changed in nested.items():
            values["method_options"].setdefault(method, {}).update(changed)
    return dataclasses.replace(options, **values) if values else options


def _passes(module, options, facts: Facts) -> Passes:
    cost = getattr(module, "passes", None)
    return cost(options, facts) if cost else Passes()


def measure_timing(handle, rows: int | None = None, train: bool = True,
                   clock: PassClock | None = None) -> Timing:
    """Seconds per image of the forward pass, the forward-backward pass (gradient of the input)
    and, with ``train``, the training pass (gradient of every weight: ``with_training``), each
    the median of TIMING_REPEATS calls after a first call, whose extra time is the cost of one
    trace; one copy of the model (inputs/copies.py); and the reference kernel's seconds, the
    median of one call before each of theirs. The forward pass is read off a pass that ran
    anyway when ``clock`` timed one (the prediction pass's batches: ``PassClock``), else timed
    on ``rows`` random images.
    The forward-backward pass is timed on two numbers of rows (``timed_rows``), by the same
    trace (its signature takes any number of images), which splits its time into a fixed
    cost per call and a cost per row; its price per image is the line's at ``rows``. Without
    ``train`` the training pass is priced from the forward-backward one
    (``Timing.train_priced``). By default TIMING_ROWS rows, or fewer when one backward pass of
    that many does not fit the memory budget."""
    import tensorflow as tf

    from auditor.methods.attribution.gradient import gradient_pass

    x, rows, fits = timing_batches(handle, rows)
    gradients = gradient_pass(handle, "logit")  # traced here for every gradient method

    def gradient(images):
        count = tf.shape(images)[:1]
        return gradients(images, tf.zeros(count, tf.int32), tf.fill(count, -1))

    kernel, kernels = reference_kernel(), []
    forward = clock.forward() if clock is not None else None
    if forward is None:  # (seconds a call, rows a call, the kernel's seconds beside it)
        _, calls, _ = _timed_calls(handle, handle.logits_fn, x[:rows], kernel, kernels)
        forward = (float(np.median(calls)), rows, None)
    # a forward-backward call costs about a forward call over FORWARD_SHARE
    small, large = timed_rows(rows, fits, forward[0] / forward[1] * rows / FORWARD_SHARE)
    first, calls, others = _timed_calls(handle, gradient, x[:small], kernel, kernels, x[:large])
    seconds = backward_seconds(rows, (small, float(np.median(calls))),
                               (large, float(np.median(others))) if others else None)
    seconds["trace"] = max(first - float(np.median(calls)), 0.0)
    kernels.append(_timed(kernel))
    seconds["forward"] = forward_at(forward, rows, seconds, float(np.median(kernels)))
    seconds.update(_copy_seconds(handle))
    timing = Timing(**seconds, kernel=float(np.median(kernels)), train_priced=True,
                    train=TRAIN_SHARE * seconds["backward"],
                    train_trace=TRAIN_TRACE_SHARE * seconds["trace"])
    return with_training(handle, timing, x[:rows]) if train else timing


def backward_seconds(rows: int, timed: tuple[int, float],
                     other: tuple[int, float] | None) -> dict:
    """{"backward": seconds per image of a forward-backward call of ``rows``, and "row",
    "call" when two numbers of rows were timed (``(rows, seconds)`` each)}: the line through
    them at ``rows``; without a second, or when ``split_call`` cannot tell the fixed cost from
    the rows, the timed call's time per image."""
    if other is None or other[0] == timed[0]:
        return {"backward": timed[1] / timed[0]}
    row, call = split_call(timed, other)
    if call == 0.0:
        return {"backward": row, "row": row, "call": call}
    return {"backward": row + call / rows, "row": row, "call": call}


def forward_at(forward: tuple, rows: int, seconds: dict, kernel: float) -> float:
    """Seconds per image of a forward call of ``rows`` from ``forward`` (seconds of a call,
    its rows, and the reference kernel's seconds beside it, None when timed beside this
    measure's own): at this measure's load (the two kernels' ratio) and, when the call had other
    rows, moved to ``rows`` along the forward-backward call's split (``Timing.forward_split``
    assumes the forward call splits in the same share)."""
    call_seconds, timed, beside = forward
    per_image = call_seconds / timed * (kernel / beside if beside else 1.0)
    row, call = seconds.get("row"), seconds.get("call")
    if timed == rows or not row or call is None:
        return per_image
    return per_image * (row + call / rows) / (row + call / timed)


def with_training(handle, timing: Timing, x: np.ndarray | None = None) -> Timing:
    """``timing`` with the training pass timed (its first call, less a call, is a training
    step's trace), in place of its price: beside kernels of its own, so that its seconds count
    at ``timing``'s load (scaled by the two kernels' ratio). A model without trainable weights
    keeps the price (no training step can run on it)."""
    import tensorflow as tf

    weights = handle.logits_model.trainable_variables
    if not timing.train_priced or not weights:
        return timing
    if x is None:
        x, rows, _ = timing_batches(handle)
        x = x[:rows]

    @tf.function
    def train(images):
        with tf.GradientTape() as tape:
            score = tf.reduce_sum(tf.reduce_max(handle.logits(images), axis=1))
        total = tf.add_n([tf.reduce_sum(g) for g in tape.gradient(score, weights)
                          if g is not None])
        return tf.fill(tf.shape(images)[:1], total)  # one row per image, as replicas gather

    kernel, kernels = reference_kernel(), []
    first, calls, _ = _timed_calls(handle, train, x, kernel, kernels)
    load = timing.kernel / float(np.median(kernels)) if timing.kernel else 1.0
    per_image = float(np.median(calls)) / len(x)
    return dataclasses.replace(timing, train=per_image * load,
                               train_trace=max(first - per_image * len(x), 0.0) * load,
                               train_priced=False)


def timing_batches(handle, rows: int | None = None) -> tuple[np.ndarray, int, int]:
    """The random images the passes are timed on (as many as ``timed_rows`` may ask), the
    rows of the timed call (TIMING_ROWS, or fewer when a backward pass of that many does not
    fit the memory budget: the first of them) and the rows a backward pass fits."""
    from auditor.predict.batched import rows_per_pass

    fits = rows_per_pass(handle, backward=True)
    rows = rows or int(np.clip(fits, 1, TIMING_ROWS))
    x = np.random.default_rng(0).uniform(0, 1, (max(rows, *timed_rows(rows, fits)),
                                                 *handle.input_shape)).astype(np.float32)
    return x, rows, fits


def _timed_calls(handle, fn, x, kernel, kernels: list, x_other=None):
    """(the first call's seconds, TIMING_REPEATS calls' seconds, and as many on ``x_other``
    when given), each call beside a kernel appended to ``kernels``: both see the same load."""
    from auditor.predict.distribute import run_batch

    first = _timed(run_batch, handle, fn, x)
    calls, others = [], []
    for _ in range(TIMING_REPEATS):
        kernels.append(_timed(kernel))
        calls.append(_timed(run_batch, handle, fn, x))
        if x_other is not None and len(x_other) != len(x):
            others.append(_timed(run_batch, handle, fn, x_other))
    return first, calls, others


def timed_rows(rows: int, fits: int, call_seconds: float = 0.0) -> tuple[int, int]:
    """The two numbers of rows the forward-backward pass is timed on, the first of them also
    its first call's (its trace): ``rows`` and four times as many when that fits the memory
    budget (``fits`` rows) and a call of ``rows`` takes at most SPLIT_CALL_SECONDS
    (``call_seconds``); else a quarter and a half of ``rows`` (a large model, whose fixed cost
    per call is a small share of a call anyway: the first call, three calls of 24 rows and
    three of 6 were 30 of the 52 CPU-seconds of ConvNeXtTiny's plan at 48 px; a quarter and a
    half read the same line for under half the rows), the price at ``rows`` read off the
    line through them (``backward_seconds``). One row: once."""
    if 4 * rows <= fits and call_seconds <= SPLIT_CALL_SECONDS:
        return rows, 4 * rows
    return max(1, rows // 4), max(1, rows // 2)


def split_call(timed: tuple[int, float], other: tuple[int, float]) -> tuple[float, float]:
    """(seconds per row, fixed seconds per call) of a pass timed on two numbers of rows
    (``(rows, seconds)`` each): the line through them. A slope the noise of a loaded machine
    made non-positive, or steeper than the timed call's whole time per row, cannot be told
    from the fixed cost: then every second is counted per row (as the timed call's time per
    image), which over-counts a compiled loop's rows rather than under-counts them."""
    (rows, seconds), (rows_other, seconds_other) = sorted((timed, other))
    per_image = timed[1] / timed[0]
    slope = (seconds_other - seconds) / (rows_other - rows)
    if not 0 < slope <= per_image:
        return per_image, 0.0
    return slope, timed[1] - slope * timed[0]


def _copy_seconds(handle) -> dict:
    """The seconds one copy of the model takes (None when it cannot be copied: the sections
    that copy it say why) and whether the copy is the model's twin (inputs/traces.py). The
    copy is not kept: the sections declare the working copy they make (1.4 CPU-seconds of
    ConvNeXtTiny at 48 px, a seventh of a prediction pass)."""
    from auditor.errors import ModelError
    from auditor.inputs.copies import copy_model
    from auditor.inputs.traces import twins

    try:
        tick = time.perf_counter()
        copy = copy_model(handle.logits_model)
        return {"copy": time.perf_counter() - tick, "twin": twins(handle.logits_model, copy)}
    except ModelError:
        return {"copy": None}


class PassClock:
    """Times the first calls of a pass that runs anyway (the prediction pass's batches, which
    ``predict`` hands it), each beside a call of the reference kernel, so that the plan's
    measure reads the forward pass's seconds off them instead of timing calls of its own
    (four calls of 24 rows of ConvNeXtTiny at 48 px were 0.4 of a prediction pass). The
    first call is left out (it may trace the pass); a handful of calls after it suffice."""

    CALLS = 5  # the first and four more: the rest of a long pass is not timed

    def __init__(self):
        self.calls: list[tuple[int, float, float]] = []  # (rows, seconds, kernel's seconds)
        self.kernel = None

    def __call__(self, run, rows: int, *args):
        """``run(*args)`` on ``rows`` rows, timed while fewer than CALLS calls are."""
        if len(self.calls) >= self.CALLS:
            return run(*args)
        self.kernel = self.kernel or reference_kernel()
        beside = _timed(self.kernel)
        tick = time.perf_counter()
        result = run(*args)
        self.calls.append((rows, time.perf_counter() - tick, beside))
        return result

    def forward(self) -> tuple[float, int, float] | None:
        """(seconds of a call, its rows, the kernel's seconds beside it) over the calls after
        the first, as one call of the most rows a call took (all but the last, shorter one
        of a pass); None with fewer than two calls."""
        timed = self.calls[1:]
        if not timed:
            return None
        rows = sum(r for r, _, _ in timed)
        per_row = sum(seconds for _, seconds, _ in timed) / rows
        most = max(r for r, _, _ in timed)
        return per_row * most, most, float(np.median([k for _, _, k in timed]))


def model_timing(handle, train: bool = True, clock: PassClock | None = None) -> Timing:
    """``measure_timing(handle)``, measured once per model handle and kept with its compiled
    functions: the Keras callback's one audit copy keeps its architecture from epoch to epoch
    (only its weights change), so every audit of a fit, and the sizing of each, read the
    same measure. Without ``train`` the training pass is priced, not timed; asked with it
    later, it is timed then (``with_training``) and kept. ``clock``: the prediction pass's
    calls, timed (``PassClock``)."""
    if "timing" not in handle.compiled:
        handle.compiled["timing"] = measure_timing(handle, train=train, clock=clock)
    elif train:
        handle.compiled["timing"] = with_training(handle, handle.compiled["timing"])
    return handle.compiled["timing"]


def reference_kernel():
    """A fixed piece of work timed beside the model, whose time stands for the machine's speed
    at that moment: the gradient through three 3x3 convolutions of 32 channels on 8 images of
    32 x 32 (about 30 ms on this 2-core CPU). Returns it compiled and traced."""
    import tensorflow as tf

    draws = np.random.default_rng(0)
    x = tf.constant(draws.uniform(0, 1, (8, 32, 32, 32)).astype(np.float32))
    w = tf.constant(draws.normal(0, 0.1, (3, 3, 32, 32)).astype(np.float32))

    @tf.function
    def kernel():
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = x
            for _ in range(3):
                h = tf.nn.relu(tf.nn.conv2d(h, w, 1, "SAME"))
            score = tf.reduce_sum(h)
        return tape.gradient(score, x)

    def run():
        kernel().numpy()

    run()
    return run


def _timed(run, *args) -> float:
    tick = time.perf_counter()
    run(*args)
    return time.perf_counter() - tick
