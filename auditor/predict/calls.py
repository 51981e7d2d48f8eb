"""Long compiled loops run in calls of about a second, so that a signal stops them within one.

A Python signal handler (SIGTERM from a CI runner's timeout, Ctrl-C) runs only between
compiled calls, never inside one: a loop of hundreds of steps compiled as one call let SIGTERM
wait 25 s on ConvNeXt (issue 26). So a compiled iterative method (the feature visualisation's
render loop) compiles its loop to run ``count`` steps from a state it is given and returns the
state, and ``in_calls`` calls it a stretch of steps at a time: one step first (the call that
also traces), then as many as the steps measured so far fit in ``CALL_SECONDS``. A signal
noted during a call stops the loop right after it. (PGD, FGSM and the counterfactual search
are Python loops of the model's traced passes, two calls per step: a signal stops them after
the step.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from auditor.errors import Interrupted

# One compiled call runs at most about this long: SIGTERM acted only after 25 s on ConvNeXt
# when a call ran a whole stretch between snapshots (issue 26).
CALL_SECONDS = 1.0
MAX_STEPS_PER_CALL = 1024  # when the steps are too fast for the clock to time


def steps_per_call(chunks: list[tuple[int, float]]) -> int:
    """How many steps the next compiled call runs, from the (steps, seconds) of the calls so
    far: one while none has run (the first call also traces), then as many as the steps
    measured after it fit in ``CALL_SECONDS``."""
    if not chunks:
        return 1
    later = chunks[1:] or chunks
    per_step = sum(s for _, s in later) / max(sum(n for n, _ in later), 1)
    return max(1, int(CALL_SECONDS / per_step)) if per_step > 0 else MAX_STEPS_PER_CALL


def in_calls(state, first: int, last: int, call: Callable, chunks: list[tuple[int, float]]):
    """Steps ``first`` to ``last`` of a loop: ``call(state, start, count)`` runs ``count`` steps
    from step ``start`` and returns the new state. Each call's (steps, seconds) is appended to
    ``chunks`` (kept by the caller across stretches, so that later calls are sized by the
    earlier ones); a signal noted during a call raises ``Interrupted`` after it."""
    while first < last:
        count = min(last - first, steps_per_call(chunks))
        tick = time.perf_counter()
        state = call(state, first, count)
        chunks.append((count, time.perf_counter() - tick))
        first += count
        Interrupted.raise_if_pending()
    return state
