"""What a compiled pass's trace buys: its first call (the trace) and its calls after, against the
same pass run eagerly (inputs/traces.py ``run_eagerly``), per batch size, in CPU and wall
seconds.

    PYTHONPATH=.:tests python bench/eager_cost.py DenseNet121 --size 48 [--rows 1 8 24]

The model is built with ``weights=None`` (tests/architectures.py, 10 classes) and run on RGB
digit composites, as bench/zoo.py audits them. Per pass (the logits, the input gradient, LRP's
composite, Grad-CAM's layer gradient), on a fresh handle each way: compiled, the first call at
the first batch size (its trace) and the median of three calls at each size; eagerly, the same.
A pass is worth tracing when its calls save more than the trace costs: calls x (eager -
compiled) > trace. The load average is printed before and after: the machine is shared, and
CPU seconds are the measure that load stretches least.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run) -> tuple[float, float]:
    """(wall, CPU) seconds of ``run()``."""
    wall, spent = time.perf_counter(), cpu()
    run()
    return time.perf_counter() - wall, cpu() - spent


def handle_for(model: str, size: int, work: Path):
    from architectures import application
    from rgb_composites import composites

    from auditor.inputs.models import load_model

    built = application(model, size=size, classes=10)
    built.save(work / "model.keras")
    side = int(built.inputs[0].shape[1])
    x, _ = composites("test", seed=0, size=side)
    return load_model(str(work / "model.keras"), input_range="0-1"), x.astype(np.float32)


def passes(handle) -> dict:
    """{name: (pass name in inputs/traces.py, run(x))}: the passes measured."""
    from auditor.methods.attribution import attribute
    from auditor.methods.attribution.layer import resolve_layer

    layer = resolve_layer(handle, None)

    def method(name, **options):
        def run(fresh, x):
            attribute(fresh, x, np.zeros(len(x), int), name, **options)
        return run

    return {"logits": ("logits", lambda fresh, x: fresh.logits_fn(x).numpy()),
            "gradient": ("input_gradients", method("gradient")),
            "lrp": ("lrp", method("lrp")),
            "gradcam": ("layer_gradients", method("gradcam", layer=layer))}


def measure(handle, x, run, name: str, eager: bool, rows: list[int]) -> tuple:
    """((first wall, first CPU), {rows: (wall, CPU) median of three calls}) on a fresh handle."""
    from auditor.inputs.traces import run_eagerly

    fresh = dataclasses.replace(handle, compiled={})
    if eager:
        run_eagerly(fresh, {name})
    first = timed(lambda: run(fresh, x[:rows[0]]))
    calls = {n: tuple(np.median([timed(lambda n=n: run(fresh, x[:n])) for _ in range(3)],
                                axis=0)) for n in rows}
    return first, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--rows", type=int, nargs="*", default=[1, 8, 24])
    parser.add_argument("--passes", nargs="*", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditor-eager-cost-") as scratch:
        handle, x = handle_for(args.model, args.size, Path(scratch))
        print(f"{args.model} at {args.size} px, load {os.getloadavg()[0]:.1f}; wall (CPU) s")
        for label, (name, run) in passes(handle).items():
            if args.passes and label not in args.passes:
                continue
            for eager in (False, True):
                (wall, spent), calls = measure(handle, x, run, name, eager, args.rows)
                per = "  ".join(f"{n} rows {w:.3f} ({c:.3f})" for n, (w, c) in calls.items())
                print(f"  {label:9s} {'eager' if eager else 'compiled':8s} first call "
                      f"{wall:6.2f} ({spent:6.2f})  then {per}", flush=True)
        print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
