"""Which compiled passes run eagerly: those called too few times to repay their trace.

A trace of a large model's pass costs seconds (DenseNet121's input gradient at 48 px: 3.4
CPU-seconds, LRP's 6.7), and a pass called once or twice never earns it back: one eager call
of the same pass (inputs/traces.py ``run_eagerly``: the same function on the same weights, so
the same maps) cost 0.6 to 1.1 CPU-seconds there against 0.1 to 0.3 compiled, and on
MobileNetV3Small 0.28 to 0.30 against 0.04 to 0.07 with a trace of 1.3
(``bench/eager_cost.py``, 6 December 2026, load 6): an eager call costs a fifth of a trace
more than a compiled one, so a pass called fewer than about five times is cheaper run eagerly;
on ConvNeXtTiny an eager gradient cost 3.2 CPU-seconds more against a trace of 5.3, so only a
lone call is. Hence the measure on the model at hand.
``measure_eager`` times that on the model at hand, beside the plan's timing (its trace), and
``worth_tracing`` decides per pass from its expected calls and rows. The plan charges what it
decides (a trace, or the eager calls' extra time as kernels), and the section that owns the
pass runs it that way (today the shifted copy of the card's input-invariance test, whose
passes are each called once per method: steps/card.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

EAGER_COST = "eager cost"  # handle.compiled[EAGER_COST]: the EagerCost measured on the model
# Rows of the larger eager call (its slope per row against one image's call): the shifted
# copy's calls are a few sanity samples times a method's rows per sample (8 to 32 rows); an
# eager call of 24 rows of ConvNeXtTiny at 48 px costs seconds, a third of it at 8.
EAGER_ROWS = 8
# A forward-only row run eagerly costs about half a forward-backward row's extra, as a
# compiled forward row costs half a forward-backward one (plan.FORWARD_SHARE); on
# DenseNet121 at 48 px the eager logits of 24 rows cost 0.49 CPU-s against the gradient's 1.07.
FORWARD_ROW_SHARE = 0.5


@dataclass(frozen=True)
class EagerCost:
    """In reference kernels (the plan's unit, predict/plan.py): one trace of the input gradient
    (``Timing.trace``), and what a call of a pass run eagerly costs beyond the same call
    compiled, per call and per forward-backward row."""

    trace: float
    call: float
    row: float

    def extra(self, calls: int, backward: float, forward: float = 0.0) -> float:
        """Kernels ``calls`` eager calls of these rows cost beyond the compiled ones."""
        return calls * self.call + (backward + FORWARD_ROW_SHARE * forward) * self.row

    def worth_tracing(self, calls: int, backward: float, forward: float = 0.0) -> bool:
        """Whether the compiled pass's calls save more than its trace costs."""
        return calls > 0 and self.extra(calls, backward, forward) > self.trace


def measure_eager(handle, timing) -> EagerCost | None:
    """An eager call of the input gradient on one image and on ``EAGER_ROWS`` images, beside
    a compiled call on one image (the pass is traced by the plan's timing), against ``timing``
    (predict/plan.py ``Timing``: its per-image backward time and its trace), in its reference
    kernels. None without a timed kernel or trace."""
    import dataclasses

    from auditor.inputs.traces import run_eagerly
    from auditor.methods.attribution.gradient import input_gradients
    if not timing.kernel or not timing.trace:
        return None
    rows = EAGER_ROWS
    x = np.random.default_rng(0).uniform(0, 1, (rows, *handle.input_shape)).astype(np.float32)
    targets, contrast = np.zeros(rows, np.int32), np.full(rows, -1, np.int32)
    eager = dataclasses.replace(handle, compiled={})
    run_eagerly(eager, {"input_gradients"})

    def seconds(on, count: int) -> float:
        tick = time.perf_counter()
        input_gradients(on, x[:count], targets[:count], contrast[:count], "logit")
        return time.perf_counter() - tick

    compiled_one = min(seconds(handle, 1) for _ in range(2))
    eager_one, eager_many = seconds(eager, 1), seconds(eager, rows)
    call = max(eager_one - compiled_one, 0.0)
    row = max((eager_many - eager_one) / (rows - 1) - timing.backward, 0.0)
    return EagerCost(trace=timing.trace / timing.kernel, call=call / timing.kernel,
                     row=row / timing.kernel)


def model_eager(handle, timing) -> EagerCost | None:
    """``measure_eager``, once per model handle (kept with its compiled functions, as the
    plan's timing is)."""
    if EAGER_COST not in handle.compiled:
        handle.compiled[EAGER_COST] = measure_eager(handle, timing)
    return handle.compiled[EAGER_COST]
