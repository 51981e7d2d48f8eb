"""Counting what an audit's fixed costs are made of: every function TensorFlow traces (a new
concrete function of a ``tf.function``) and every copy of a model (``auditor.inputs.copies``),
each credited to the part of the audit that asked for it (the outermost module of ``auditor/``
on the stack below the pipeline: a step, a section, the input-range probe, the plan).

    with counting() as counts:
        ...
    counts.traces["auditor/steps/card.py"], counts.copies["auditor/sections/clever_hans.py"]

Used by tests/test_traces.py (the plan declares what happens) and bench/traces.py.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1] / "auditor")
# the modules that only dispatch: the work is credited to what they call
DISPATCH = ("pipeline.py", "cli.py", "__main__.py", "configure.py", "attribution.py",
            "models.py", "keras.py")


@dataclass
class Counts:
    traces: Counter = field(default_factory=Counter)  # part -> concrete functions traced
    copies: Counter = field(default_factory=Counter)  # part -> models copied
    seconds: Counter = field(default_factory=Counter)  # part -> seconds tracing and copying
    functions: Counter = field(default_factory=Counter)  # (part, function name) -> traces
    # (part, function name) -> traces made inside another's trace (part of that trace's cost)
    nested: Counter = field(default_factory=Counter)
    function_seconds: Counter = field(default_factory=Counter)  # (part, function name) -> s


def part_of_audit() -> str:
    """The outermost auditor module on the stack that is not a dispatcher, relative to the
    repository ('auditor/steps/card.py'); 'outside' when none is."""
    frame, found = sys._getframe(1), "outside"
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(ROOT) and name[len(ROOT) + 1:] not in DISPATCH:
            found = "auditor/" + name[len(ROOT) + 1:]
        frame = frame.f_back
    return found


def model_traces(counts: Counts, part: str, outermost: bool = False) -> list[str]:
    """The functions of the model ``part`` traced (tf.data's own small pipeline functions left
    out), once per trace; ``outermost``: without those traced inside another's trace."""
    return [name for (where, name), n in counts.functions.items()
            if where == part and not name.startswith("Dataset_")
            for _ in range(n - (counts.nested[where, name] if outermost else 0))]


def recorded_plans(monkeypatch) -> list:
    """The compute plans the runs make from now on, in order (``pipeline.plan_sections``
    wrapped): what a test holds the counts to."""
    import auditor.pipeline as pipeline

    plans, plan_sections = [], pipeline.plan_sections

    def keep(*args):
        plans.append(plan_sections(*args))
        return plans[-1]

    monkeypatch.setattr(pipeline, "plan_sections", keep)
    return plans


@contextlib.contextmanager
def counting():
    """Count traces and copies while the block runs."""
    from tensorflow.python.eager.polymorphic_function import tracing_compilation as tracing
    from tensorflow.python.framework import ops

    import auditor.inputs.copies as copies

    counts = Counts()
    trace, rebuild = tracing._create_concrete_function, copies.rebuild
    depth = [0]

    def traced(function_type, type_context, func_graph, tracing_options):
        part, started, inside = part_of_audit(), time.perf_counter(), ops.inside_function()
        try:
            return trace(function_type, type_context, func_graph, tracing_options)
        finally:
            counts.traces[part] += 1
            counts.functions[part, tracing_options.name] += 1
            counts.nested[part, tracing_options.name] += inside
            counts.function_seconds[part, tracing_options.name] += time.perf_counter() - started
            counts.seconds[part] += time.perf_counter() - started

    def copied(layer):  # rebuild calls itself on nested models: count the outermost call
        depth[0] += 1
        started = time.perf_counter()
        try:
            return rebuild(layer)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                part = part_of_audit()
                counts.copies[part] += 1
                counts.seconds[part] += time.perf_counter() - started

    tracing._create_concrete_function, copies.rebuild = traced, copied
    try:
        yield counts
    finally:
        tracing._create_concrete_function, copies.rebuild = trace, rebuild
