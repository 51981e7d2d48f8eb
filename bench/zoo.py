"""The whole audit under ``--budget quick`` on keras.applications families (and a keras-hub ViT):
time per family beside its prediction pass and the plan's own estimate.

    PYTHONPATH=.:tests python bench/zoo.py ConvNeXtTiny MobileNetV2 [--size 48] [--images 200]

Each family is built with ``weights=None`` at ``--size`` pixels (or its smallest input) with 10
classes and random weights (timing, not accuracy, is measured), saved, and audited in a fresh
process (``auditor audit --budget quick --format json``) on ``--images`` RGB digit composites
(tests/rgb_composites.py: scikit-learn's digits painted on its sample photos; nothing is
downloaded). It prints per family: the audit's wall and CPU seconds, the prediction pass
(``timings.predict``), the seconds per image of that pass, the sections' time, and the plan's
estimate of the sections (``plan.estimated_seconds``) with its ratio to the actual time. The
issue's target is a whole audit under 5 minutes per family at 48 to 96 px and 200 images on
this 2-core machine. Several minutes per family: run it by hand, on a few families at a time.
The load average before and after each audit is printed with it: the machine is shared.

    PYTHONPATH=.:tests python bench/zoo.py --reference

times a pass of the reference model of the named budgets (MobileNetV2 at 224 px, weights=None,
10 classes) in reference kernels, three times, as auditor.predict.plan times every audited
model: the median is plan.REFERENCE_PASS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from architectures import FAMILIES, application, hub_vit  # noqa: E402
from rgb_composites import composites  # noqa: E402


def build(family: str, size: int):
    """The model to audit: a keras.applications family, or 'hub_vit' (keras-hub ViTBackbone,
    patch 8, under a Dense head)."""
    if family == "hub_vit":
        return hub_vit(size=size, classes=10)
    return application(family, size=size, classes=10)


def audit(model_path: Path, data: str, out: Path) -> dict:
    """One audit in a fresh process: wall and CPU seconds and its summary."""
    command = [sys.executable, "-m", "auditor", "audit", "--model", str(model_path), "--data",
               data, "--budget", "quick", "--format", "json", "--no-progress", "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = f"{load:.1f} to {os.getloadavg()[0]:.1f}"
    if done.returncode not in (0, 1):
        return {"wall_s": wall, "failed": done.stderr.strip().splitlines()[-1:], "load": load}
    summary = json.loads((out / "summary.json").read_text())
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime)
            + (after.ru_stime - before.ru_stime), "summary": summary, "load": load}


def row(family: str, size: int, images: int, result: dict) -> str:
    if "failed" in result:
        return (f"{family:18s} {size:4d} px  failed after {result['wall_s']:.0f} s: "
                f"{result['failed']} (load {result['load']})")
    summary = result["summary"]
    timings, plan = summary["timings"], summary.get("plan", {})
    sections = sum(v for k, v in timings.items()
                   if k not in ("load", "input_range", "predict", "plan", "figures", "total"))
    estimate = plan.get("estimated_seconds", 0.0)
    errors = [c["id"] for c in summary["checks"] if c["status"] == "error"]
    kernels = plan.get("timing", {}).get("kernels", {})
    return (f"{family:18s} {size:4d} px  audit {result['wall_s']:6.0f} s wall "
            f"{result['cpu_s']:6.0f} s CPU  predict {timings['predict']:5.1f} s "
            f"({1000 * timings['predict'] / images:5.1f} ms/image)  sections {sections:6.0f} s  "
            f"plan {estimate:6.0f} s (x{estimate / sections if sections else 0:.2f}; "
            f"a pass {kernels.get('backward', 0):.3g} kernels, "
            f"{plan.get('budget_passes', 0)} passes)  load {result['load']}  "
            f"errors: {', '.join(errors) or 'none'}\n    " + detail(summary))


def detail(summary: dict) -> str:
    """Each step's and section's seconds beside the plan's estimate, and the work before the
    plan (the input-range probe, the plan's own timing): where the estimate is off."""
    timings, plan = summary["timings"], summary.get("plan", {})
    estimates = plan.get("estimates", {})
    parts = [f"{name} {timings.get(name, 0):.0f}/{estimate:.0f}"
             for name, estimate in estimates.items() if timings.get(name, 0) >= 1]
    before = [f"{name} {timings[name]:.0f}" for name in ("load", "input_range", "predict", "plan")
              if name in timings]
    trace = plan.get("timing", {}).get("measured", {}).get("trace")
    dropped = [entry["spec_key"] for entries in plan.get("dropped", {}).values()
               for entry in entries]
    thinned = [f"{name}.{key} {v['value']} (floor {v['floor']})"
               for name, floors in plan.get("below_floor", {}).items()
               for key, v in floors.items()]
    probed = summary.get("model", {}).get("input_range_probe_samples")
    trained = "train" in plan.get("timing", {}).get("measured", {})
    return (f"seconds actual/estimate: {', '.join(parts)}; before the sections: "
            f"{', '.join(before)} (images probed {probed}; training pass "
            f"{'timed' if trained else 'priced'}); a trace "
            f"{trace if trace is not None else '-'} s; "
            f"left out: {', '.join(dropped) or 'nothing'}; below the floors: "
            f"{', '.join(thinned) or 'nothing'}"
            f"{'; over the budget even so' if plan.get('over_budget') else ''}")


def reference() -> None:
    """The reference model's forward-backward pass in reference kernels, timed three times."""
    from auditor.inputs.models import load_model
    from auditor.predict.plan import measure_timing

    with tempfile.TemporaryDirectory(prefix="auditor-zoo-") as scratch:
        path = Path(scratch) / "reference.keras"
        build("MobileNetV2", 224).save(path)
        handle = load_model(str(path))
        ratios = []
        for _ in range(3):
            timing = measure_timing(handle)
            ratios.append(timing.backward / timing.kernel)
            print(f"backward {1000 * timing.backward:.1f} ms/image, forward "
                  f"{1000 * timing.forward:.1f}, kernel {1000 * timing.kernel:.1f} ms: "
                  f"{ratios[-1]:.3f} kernels a pass  load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"REFERENCE_PASS = {float(np.median(ratios)):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("families", nargs="*", help=f"of: {', '.join([*FAMILIES, 'hub_vit'])}")
    parser.add_argument("--reference", action="store_true",
                        help="time the reference model's pass in kernels (plan.REFERENCE_PASS)")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    if args.reference:
        reference()
        return
    unknown = sorted(set(args.families) - {*FAMILIES, "hub_vit"})
    if unknown or not args.families:
        parser.error(f"name families from: {', '.join([*FAMILIES, 'hub_vit'])}")
    with tempfile.TemporaryDirectory(prefix="auditor-zoo-") as scratch:
        work = Path(scratch)
        for family in args.families:
            model = build(family, args.size)
            size = int(model.inputs[0].shape[1])
            x, y = composites("test", seed=0, size=size)
            np.savez(work / f"data{size}.npz", x=(x[:args.images] * 255).astype(np.uint8),
                     y=y[:args.images])
            model.save(work / f"{family}.keras")
            result = audit(work / f"{family}.keras", f"npz:{work / f'data{size}.npz'}",
                           work / f"{family}-run")
            print(row(family, size, args.images, result), flush=True)


if __name__ == "__main__":
    main()
