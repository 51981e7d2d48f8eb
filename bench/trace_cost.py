"""Where the first call of a compiled pass goes: Python tracing, TensorFlow's graph optimisation
(grappler) and the kernels' first execution, against the calls after it; and what grappler's
documented switches (``tf.config.optimizer.set_experimental_options``) do to each part and to
the maps.

    PYTHONPATH=.:tests python bench/trace_cost.py MobileNetV3Small --size 48 [--method lrp]

The model is built with ``weights=None`` (tests/architectures.py, 10 classes) and explained on
2 RGB digit composites, as bench/zoo.py audits them. Per setting, on a fresh handle (nothing
traced): the first call of the method's pass, split into the Python tracing of its function
(timed inside TensorFlow's ``_create_concrete_function`` by tests/tracecount.py) and the rest
(optimisation, kernel creation, execution), then the median of three calls after it (execution
alone); and the largest difference of its maps from the default setting's, relative to their
largest value. CPU seconds of this process beside wall seconds: a loaded machine stretches wall
time, not CPU time. The default runs first and again last (the kernels' caches warm up).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tracecount import counting  # noqa: E402

# grappler's switches (tf.config.optimizer.set_experimental_options, documented in TensorFlow's
# API): the whole meta-optimiser off, and the passes that rewrite a large graph's arithmetic off
# while the fusions of convolutions with their bias and activation (remapping) stay
SETTINGS = {
    "default": {},
    "no meta-optimizer": {"disable_meta_optimizer": True},
    "fusions only": {"constant_folding": False, "arithmetic_optimization": False,
                     "dependency_optimization": False, "loop_optimization": False,
                     "shape_optimization": False, "debug_stripper": False,
                     "function_optimization": False, "layout_optimizer": False},
    "default again": {},
}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def handle_for(model: str, size: int, work: Path):
    from architectures import application
    from rgb_composites import composites

    from auditor.inputs.models import load_model

    built = application(model, size=size, classes=10)
    built.save(work / "model.keras")
    side = int(built.inputs[0].shape[1])
    x, _ = composites("test", seed=0, size=side)
    return load_model(str(work / "model.keras"), input_range="0-1"), x[:2].astype(np.float32)


def measure(handle, x, method: str) -> dict:
    from auditor.methods.attribution import attribute

    fresh = dataclasses.replace(handle, compiled={})
    targets = np.zeros(len(x), int)
    wall, spent = time.perf_counter(), cpu()
    with counting() as counts:
        maps = attribute(fresh, x, targets, method)
    first_wall, first_cpu = time.perf_counter() - wall, cpu() - spent
    tracing = sum(counts.function_seconds.values())
    calls = []
    for _ in range(3):
        wall, spent = time.perf_counter(), cpu()
        attribute(fresh, x, targets, method)
        calls.append((time.perf_counter() - wall, cpu() - spent))
    call_wall, call_cpu = np.median(calls, axis=0)
    return {"maps": maps, "first wall": first_wall, "first CPU": first_cpu,
            "tracing wall": tracing, "rest wall": first_wall - tracing - call_wall,
            "call wall": call_wall, "call CPU": call_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--method", default="lrp")
    args = parser.parse_args()
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="auditor-trace-cost-") as scratch:
        handle, x = handle_for(args.model, args.size, Path(scratch))
        reference = None
        with open("/proc/loadavg") as load:
            print(f"{args.model} at {args.size} px, {args.method} on 2 images, load "
                  f"{load.read().split()[0]}")
        for name, options in SETTINGS.items():
            tf.config.optimizer.set_experimental_options(
                {**{k: True for k in SETTINGS["fusions only"]}, "disable_meta_optimizer": False,
                 **options} if options else {"disable_meta_optimizer": False})
            found = measure(handle, x, args.method)
            maps = found.pop("maps")
            reference = maps if reference is None else reference
            change = float(np.abs(maps - reference).max() / (np.abs(reference).max() + 1e-30))
            print(f"  {name:18s} " + "  ".join(f"{k} {v:6.2f} s" for k, v in found.items())
                  + f"  maps' change {change:.1e}")


if __name__ == "__main__":
    main()
