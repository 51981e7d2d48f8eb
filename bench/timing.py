"""The benchmarks' one timer (bench/attribution.py, nmf_cost.py, triage_cost.py): the wall and
the CPU seconds of a call."""

from __future__ import annotations

import time


def timed(run) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all its threads) of ``run()``: the CPU time,
    which other processes on a loaded machine do not inflate, is the one to compare there."""
    tick, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - tick, time.process_time() - cpu
