"""What a trace of each attribution method's compiled pass costs against a trace of the input
gradient's, on the same model: the ratio the compute plan prices a method's trace at
(``Method.trace_cost``, auditor/methods/attribution/registry.py).

    PYTHONPATH=.:tests python bench/trace_ratio.py ResNet50 MobileNetV2 --size 48 \\
        --methods lrp lrp_epsilon

Each family is built with ``weights=None`` (tests/architectures.py, 10 classes) and explained
on 2 RGB digit composites. Per method, on a fresh handle (nothing traced): the first call less
the median of three calls after it, the part of a first call that is tracing (the Python
tracing, grappler's optimisation, the kernels' creation). The input gradient is timed first
and again last (a process's first trace pays for warming TensorFlow's caches); its mean is the
unit. Wall seconds: run it on a quiet machine, or read the ratios only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def traced_seconds(handle, x, method: str) -> float:
    """The first call of ``method`` on a fresh handle less the median of three calls after."""
    from auditor.methods.attribution import attribute

    fresh = dataclasses.replace(handle, compiled={})
    targets = np.zeros(len(x), int)
    tick = time.perf_counter()
    attribute(fresh, x, targets, method)
    first = time.perf_counter() - tick
    calls = []
    for _ in range(3):
        tick = time.perf_counter()
        attribute(fresh, x, targets, method)
        calls.append(time.perf_counter() - tick)
    return first - float(np.median(calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("families", nargs="+")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--methods", nargs="+", default=["lrp"])
    args = parser.parse_args()
    from architectures import application
    from rgb_composites import composites

    from auditor.inputs.models import load_model

    for family in args.families:
        with tempfile.TemporaryDirectory(prefix="auditor-trace-ratio-") as scratch:
            built = application(family, size=args.size, classes=10)
            built.save(Path(scratch) / "model.keras")
            side = int(built.inputs[0].shape[1])
            x = composites("test", seed=0, size=side)[0][:2].astype(np.float32)
            handle = load_model(str(Path(scratch) / "model.keras"), input_range="0-1")
            first = traced_seconds(handle, x, "gradient")
            seconds = {m: traced_seconds(handle, x, m) for m in args.methods}
            again = traced_seconds(handle, x, "gradient")
            unit = (first + again) / 2
            with open("/proc/loadavg") as load:
                print(f"{family} at {side} px, load {load.read().split()[0]}: gradient "
                      f"{first:.2f} s then {again:.2f} s; " + ", ".join(
                          f"{m} {s:.2f} s ({s / unit:.2f} gradient traces)"
                          for m, s in seconds.items()), flush=True)


if __name__ == "__main__":
    main()
