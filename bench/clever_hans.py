"""Time of the Clever Hans injection test per shortcut on the demo model, against its budget.

    python bench/clever_hans.py                  # every shortcut and the control
    python bench/clever_hans.py --shortcuts patch,watermark --steps 300

Measured side by side in one run on the digits demo CNN and its test split (half for
fine-tuning, half for measurement), with the section's defaults: per shortcut the seconds spent
fine-tuning and measuring, the total as a ratio to the 60 s budget, and the outcome (flip rate,
gradient mass ratio, verdict). Then the whole section with its defaults (patch, watermark,
control, discovery, properties, feature embedding) as the demo audit runs it.
Target: every ratio <= 1.0, and the whole demo audit (all sections) under 3 minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

BUDGET = 60.0  # seconds per injected shortcut


def main() -> None:
    from auditor.config.spec import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.methods.attribution import METHODS
    from auditor.methods.shortcuts.injection import (
        FineTuner,
        InjectionSettings,
        make_split,
        run_control,
        run_injection,
    )
    from auditor.methods.shortcuts.patterns import INJECTORS
    from auditor.predict.predictions import predict
    from auditor.sections import clever_hans
    from auditor.sections.base import Context

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shortcuts", default=",".join(INJECTORS))
    parser.add_argument("--steps", type=int, default=clever_hans.Options.steps)
    args = parser.parse_args()

    handle = load_model("demo")
    dataset = load_dataset("sklearn:digits:test", handle.input_shape, handle.num_classes)
    images, labels = dataset.images(np.arange(dataset.n)), dataset.labels
    target = int(np.argmax(np.bincount(labels)))
    methods = [m for m in clever_hans.PREFERRED_METHODS if m in METHODS]
    settings = InjectionSettings(steps=args.steps)

    tick = time.perf_counter()
    split = make_split(handle, images, labels, seed=0)
    tuner = FineTuner(handle, settings.learning_rate)
    setup = time.perf_counter() - tick
    print(f"demo CNN, target class {dataset.class_names[target]}, {len(split.train_labels)} "
          f"fine-tuning / {len(split.eval_labels)} held-out images, {args.steps} steps of "
          f"{settings.batch_size}; methods {', '.join(methods)}; setup {setup:.1f} s")
    print(f"{'shortcut':<10} {'seconds':>8} {'ratio':>6} {'flip':>6} {'mass':>6}  verdict")
    shortcuts = [s for s in args.shortcuts.split(",") if s]
    local = {s: {} for s in shortcuts if s not in ("tint", "lightness")} or {"patch": {}}
    control = run_control(tuner, split, target, local, methods, settings)
    print(row("control", control))
    for name in shortcuts:
        print(row(name, run_injection(tuner, split, target, name, {}, methods, settings,
                                      control)))

    with tempfile.TemporaryDirectory() as work:
        config = make_config(model="demo", data="sklearn:digits:test",
                             sections=["clever_hans"])
        ctx = Context(config=config, handle=handle, dataset=dataset,
                      predictions=predict(handle, dataset), workdir=Path(work))
        tick = time.perf_counter()
        clever_hans.run(ctx, clever_hans.Options())
        print(f"whole section with defaults: {time.perf_counter() - tick:.1f} s")


def row(name: str, result) -> str:
    mass = result.detection["gradient"].mass_ratio if "gradient" in result.detection else None
    return (f"{name:<10} {result.seconds:>8.1f} {result.seconds / BUDGET:>6.2f} "
            f"{result.flip_rate:>6.2f} {'n/a' if mass is None else f'{mass:.2f}':>6}  "
            f"{result.verdict}")


if __name__ == "__main__":
    main()
