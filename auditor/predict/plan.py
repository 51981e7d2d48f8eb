"""The compute plan: every section's samples, steps and restarts sized to a budget of model passes.

A budget is counted in passes of the audited model: one image through a forward and a backward
pass is one pass; a forward-only image counts ``FORWARD_SHARE`` of one. Because the plan counts
passes, not seconds, the same spec and model give the same settings, and so the same figures, on
any machine; the seconds are only an estimate, from one forward and one backward pass timed
before the sections run.

Each section declares its cost model next to its Options: ``PLANNED`` (the settings the plan may
lower, each with the floor below which the figure would stop meaning what it says) and
``passes(options, facts) -> Passes``. When the sections' default cost is over the budget, the plan
scales every planned setting down by one common factor (never below its floor) until it fits.
A setting given in the spec is the user's and is never changed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

# A forward-only image counts half a forward-backward one: measured on MobileNetV2 at 224 px on
# this 2-core CPU, 36 ms forward and 70 ms forward-backward per image in batches of 32 (the
# textbook bound for reverse mode is up to three times the forward; Griewank and Walther,
# "Evaluating Derivatives", 2008).
FORWARD_SHARE = 1 / 2
# Named budgets, in passes of a reference model: MobileNetV2 at 224 px (weights=None, 10
# classes), whose forward pass TensorFlow's profiler counts at REFERENCE_FLOPS. A model of F
# floating-point operations per forward pass gets budget * REFERENCE_FLOPS / F passes of its own,
# so a named budget is the same amount of compute for any model: the 32 px demo keeps its full
# settings, a 224 px network is sized down, and the same model gets the same plan on any machine.
# "standard" is sized so that the reference with 1,000 images and every section finishes within
# 10 minutes on a 2-core CPU (bench/audit.py measures it); quick is a quarter, thorough 4 times.
# A number (--budget 5000) is that many passes of the audited model itself.
BUDGETS = {"quick": 2_000, "standard": 8_000, "thorough": 32_000}
DEFAULT_BUDGET = "standard"
REFERENCE_FLOPS = 612_751_868


@dataclass(frozen=True)
class Passes:
    """Images through the model: forward only, and forward-backward; ``traces`` counts the
    compiled functions the section traces (each costs about one trace of the model)."""

    forward: float = 0.0
    backward: float = 0.0
    traces: int = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.forward + other.forward, self.backward + other.backward,
                      self.traces + other.traces)

    @property
    def total(self) -> float:
        return self.backward + FORWARD_SHARE * self.forward


@dataclass(frozen=True)
class Facts:
    """What the cost models need to know about the run."""

    images: int  # audit images
    input_shape: tuple[int, int, int]
    classes: int
    train_images: int | None = None  # --train-data images, when given
    compare: bool = False  # a --compare-model is audited alongside

    @property
    def size(self) -> int:
        return int(max(self.input_shape[:2]))


@dataclass(frozen=True)
class Timing:
    """Seconds per image of a forward and a forward-backward pass, and per trace."""

    forward: float
    backward: float
    trace: float

    def seconds(self, passes: Passes) -> float:
        return (passes.forward * self.forward + passes.backward * self.backward
                + passes.traces * self.trace)


@dataclass
class Plan:
    """The settings the plan chose, what they replaced, and what the run should cost."""

    budget: str | int
    budget_passes: int
    scale: float  # the common factor applied to every planned setting (1: nothing reduced)
    settings: dict[str, dict[str, int]] = field(default_factory=dict)  # section -> reduced
    defaults: dict[str, dict[str, int]] = field(default_factory=dict)  # ... what they replaced
    passes: dict[str, Passes] = field(default_factory=dict)  # per section, as planned
    timing: Timing | None = None

    @property
    def total_passes(self) -> float:
        return sum(p.total for p in self.passes.values())

    def estimate(self, section: str) -> float:
        """Estimated seconds of one section (0 without a timing)."""
        return self.timing.seconds(self.passes[section]) if self.timing else 0.0

    def estimated_seconds(self) -> float:
        return sum(self.estimate(name) for name in self.passes)

    def describe(self) -> list[str]:
        """One line per reduced section ("featureviz: steps 96 instead of 128"), and one when
        even the floors are over the budget."""
        lines = [f"{name}: " + ", ".join(f"{key} {value} instead of {self.defaults[name][key]}"
                                         for key, value in changed.items())
                 for name, changed in self.settings.items()]
        if self.total_passes > self.budget_passes:
            lines.append(f"{self.total_passes:.0f} passes at the lowest settings, over the "
                         f"budget of {self.budget_passes}")
        return lines

    def to_summary(self, actual_seconds: float | None = None) -> dict:
        """The ``plan`` block of summary.json."""
        block: dict = {name: dict(changed) for name, changed in self.settings.items()}
        block.update({
            "budget": self.budget, "budget_passes": self.budget_passes,
            "passes": int(round(self.total_passes)), "scale": round(self.scale, 4),
            "over_budget": self.total_passes > self.budget_passes,
            "instead_of": {name: dict(d) for name, d in self.defaults.items()},
            "estimated_seconds": round(self.estimated_seconds(), 1),
        })
        if actual_seconds is not None:
            block["seconds"] = round(actual_seconds, 1)
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
            try:
                count = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
            finally:
                logger.setLevel(level)
            handle.compiled["flops"] = int(count.total_float_ops) or None
        except (ValueError, TypeError, AttributeError, tf.errors.OpError):
            handle.compiled["flops"] = None
    return handle.compiled["flops"]


def make_plan(modules: dict, tables: dict[str, dict], facts: Facts,
              budget: str | int = DEFAULT_BUDGET, flops: int | None = None) -> Plan:
    """The plan for the sections ``modules`` ({name: module}) with the spec's section tables.

    Settings the spec gives are fixed; the planned ones are scaled by the largest common factor
    in (0, 1] whose total fits the budget, found by bisection (cost grows with every setting).
    """
    limit = budget_passes(budget, flops)
    free = {name: {k: floor for k, floor in getattr(module, "PLANNED", {}).items()
                   if k not in tables.get(name, {})}
            for name, module in modules.items()}
    full = {name: _resolved(module, tables.get(name, {}), facts)
            for name, module in modules.items()}

    def options_at(scale: float) -> dict:
        return {name: _scaled(full[name], free[name], scale) for name in modules}

    def cost(options: dict) -> float:
        return sum(_passes(modules[n], o, facts).total for n, o in options.items())

    scale = 1.0
    if cost(options_at(1.0)) > limit:
        low, high = 0.0, 1.0
        for _ in range(30):
            middle = (low + high) / 2
            low, high = (middle, high) if cost(options_at(middle)) <= limit else (low, middle)
        scale = low
    chosen = options_at(scale)
    plan = Plan(budget=budget, budget_passes=limit, scale=scale,
                passes={n: _passes(modules[n], o, facts) for n, o in chosen.items()})
    for name, options in chosen.items():
        changed = {k: getattr(options, k) for k in free[name]
                   if getattr(options, k) != getattr(full[name], k)}
        if changed:
            plan.settings[name] = changed
            plan.defaults[name] = {k: getattr(full[name], k) for k in changed}
    return plan


def _resolved(module, table: dict, facts: Facts):
    """The section's Options from its spec table, with defaults that depend on the input (such
    as featureviz's steps) filled in by the section's ``resolve`` when it has one."""
    from auditor.config.spec import build_dataclass

    options = build_dataclass(module.Options, table, f"{module.NAME}.")
    resolve = getattr(module, "resolve", None)
    return resolve(options, facts) if resolve else options


def _scaled(options, free: dict[str, int], scale: float):
    values = {k: max(floor, min(getattr(options, k), int(round(getattr(options, k) * scale))))
              for k, floor in free.items() if getattr(options, k) is not None}
    return dataclasses.replace(options, **values) if values else options


def _passes(module, options, facts: Facts) -> Passes:
    cost = getattr(module, "passes", None)
    return cost(options, facts) if cost else Passes()


def measure_timing(handle, rows: int = 8) -> Timing:
    """Seconds per image of the forward and of the forward-backward pass, each timed on one
    batch of random images after a first call, whose extra time is the cost of one trace."""
    import tensorflow as tf

    from auditor.predict.distribute import run_batch

    x = np.random.default_rng(0).uniform(0, 1, (rows, *handle.input_shape)).astype(np.float32)

    @tf.function
    def gradient(images):
        with tf.GradientTape() as tape:
            tape.watch(images)
            score = tf.reduce_sum(tf.reduce_max(handle.logits(images), axis=1))
        return tape.gradient(score, images)

    seconds = {}
    for name, fn in (("forward", handle.logits_fn), ("backward", gradient)):
        tick = time.perf_counter()
        run_batch(handle, fn, x)
        first = time.perf_counter() - tick
        tick = time.perf_counter()
        run_batch(handle, fn, x)
        seconds[name] = (time.perf_counter() - tick) / rows
        seconds["trace"] = max(first - seconds[name] * rows, 0.0)  # the backward's, kept
    return Timing(**seconds)
