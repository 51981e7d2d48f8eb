"""The wait before the sections: the input-range probe, the prediction pass and the compute
plan's own timing, in CPU and wall seconds and in prediction passes, with the functions each
traced and the images the probe read.

    PYTHONPATH=.:tests python bench/before_sections.py ConvNeXtTiny --size 48 --images 200

The family is built once with ``weights=None`` (tests/architectures.py, 10 classes) and saved
under ``--keep`` (reused when already there), and audited as bench/zoo.py audits it (RGB digit
composites, ``--budget quick``), in this process up to the plan: no section runs. One pass of
ConvNeXtTiny at 48 px is seconds; this costs about the wait it measures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tracecount import counting, model_traces  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def saved(family: str, size: int, images: int, keep: Path) -> tuple[str, str]:
    """(model, data) sources, built and saved once under ``keep``."""
    import numpy as np

    keep.mkdir(parents=True, exist_ok=True)
    model, data = keep / f"{family}{size}.keras", keep / f"data{size}-{images}.npz"
    if not model.exists():
        from architectures import application

        application(family, size=size, classes=10).save(model)
    if not data.exists():
        from rgb_composites import composites

        x, y = composites("test", seed=0, size=size)
        np.savez(data, x=(x[:images] * 255).astype(np.uint8), y=y[:images])
    return str(model), f"npz:{data}"


def timed(parts: dict, name: str, run, *args):
    """``run(*args)``, its wall and CPU seconds kept under ``name``."""
    wall, used = time.perf_counter(), cpu()
    result = run(*args)
    parts[name] = (time.perf_counter() - wall, cpu() - used)
    return result


def instrumented(parts: dict) -> None:
    """Wrap the plan's and the probe's pieces so that each one's seconds land in ``parts``
    (name -> [wall, CPU-s, calls]): what the wait is made of."""
    import auditor.predict.eager as eager
    import auditor.predict.input_range as probing
    import auditor.predict.plan as planning

    def wrap(module, attribute: str, name) -> None:
        original = getattr(module, attribute)

        def run(*args, **kwargs):
            wall, used = time.perf_counter(), cpu()
            try:
                return original(*args, **kwargs)
            finally:
                label = name(*args) if callable(name) else name
                entry = parts.setdefault(label, [0.0, 0.0, 0])
                entry[0] += time.perf_counter() - wall
                entry[1] += cpu() - used
                entry[2] += 1

        setattr(module, attribute, run)

    def rows(*args) -> str:
        fn = getattr(args[1], "__name__", "pass")
        return f"plan timed calls: {fn} on {len(args[2])} rows"

    wrap(planning, "_timed_calls", rows)
    wrap(planning, "_copy_seconds", "plan: copy")
    wrap(planning, "reference_kernel", "reference kernel made")
    wrap(eager, "measure_eager", "plan: eager measure")
    wrap(probing, "_read", "probe: batches read")
    wrap(probing, "kernel_seconds", "probe: kernel seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("family")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--keep", default="/tmp/auditor-before-sections")
    parser.add_argument("--budget", default="quick")
    args = parser.parse_args()
    from auditor.configure import make_config
    from auditor.pipeline import load_inputs, plan_sections
    from auditor.predict.distribute import make_distribution
    from auditor.predict.plan import PassClock
    from auditor.predict.predictions import predict
    from auditor.sections import section_names

    model, data = saved(args.family, args.size, args.images, Path(args.keep))
    config = make_config(model=model, data=data, budget=args.budget, format=["json"],
                         seed=0)
    load = os.getloadavg()[0]
    parts: dict = {}
    pieces: dict = {}
    instrumented(pieces)
    names = config.sections or list(section_names())
    with counting() as counts:
        loaded = timed(parts, "load and probe", load_inputs, config,
                       make_distribution(config.strategy))
        clock = PassClock()
        predictions = timed(parts, "predict", predict, loaded.handle, loaded.dataset,
                            config.batch_size, False, None, clock, loaded.probed)
        plan = timed(parts, "plan", plan_sections, config, names, loaded, predictions, clock)
    report(args, load, loaded, parts, pieces, counts, plan)


def report(args, load: float, loaded, parts: dict, pieces: dict, counts, plan) -> None:
    """Each part's seconds in prediction passes, the pieces of the probe and the plan, the
    functions traced and the plan's timing."""
    # a pass is the prediction pass of every image: the rows the probe handed it were not run
    known = 0 if loaded.probed is None else len(loaded.probed[0])
    share = args.images / max(args.images - known, 1)
    passes, passes_cpu = (seconds * share for seconds in parts["predict"])
    print(f"  the prediction pass ran {args.images - known} images ({known} the probe's); "
          f"a pass of {args.images}: {passes:.1f} s wall, {passes_cpu:.1f} CPU-s")
    print(f"{args.family} {args.size} px, {args.images} images, load {load:.1f} to "
          f"{os.getloadavg()[0]:.1f}; probe {loaded.probe_seconds:.1f} s wall "
          f"({loaded.handle.input_range_probe_samples} images probed, range "
          f"{loaded.handle.transform})")
    for name, (wall, used) in parts.items():
        print(f"  {name:16s} {wall:6.1f} s wall {used:6.1f} CPU-s  {wall / passes:5.2f} "
              f"passes ({used / passes_cpu:5.2f} in CPU-s)")
    probe = pieces.get("probe: batches read", [0.0, 0.0])
    print(f"  probe + plan: {(loaded.probe_seconds + parts['plan'][0]) / passes:.2f} prediction "
          f"passes wall, {(probe[1] + parts['plan'][1]) / passes_cpu:.2f} in CPU-s (the probe's "
          f"batches only)")
    for name, (wall, used, calls) in pieces.items():
        print(f"    {name:45s} {calls:2d} calls {wall:6.1f} s wall {used:6.1f} CPU-s")
    for part in sorted(counts.traces):
        print(f"  {part:40s} traces {len(model_traces(counts, part, outermost=True)):3d} "
              f"copies {counts.copies[part]:2d} {counts.seconds[part]:6.1f} s")
    for (part, name), n in sorted(counts.functions.items()):
        print(f"    {part:40s} {name:50s} {n:3d} {counts.function_seconds[part, name]:6.1f} s")
    timing = plan.timing
    if timing is not None:
        print(f"  timing: forward {timing.forward * 1e3:.1f} ms/image, backward "
              f"{timing.backward * 1e3:.1f}, trace {timing.trace:.2f} s, copy "
              f"{timing.copy or 0:.2f} s, kernel {timing.kernel * 1e3:.1f} ms, row "
              f"{(timing.row or 0) * 1e3:.1f} ms, call {(timing.call or 0) * 1e3:.1f} ms; "
              f"estimated sections {plan.estimated_seconds():.0f} s")


if __name__ == "__main__":
    main()
