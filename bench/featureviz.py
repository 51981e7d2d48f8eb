"""Feature-visualisation speed, measured side by side in one run.

1. All classes in one batch vs one class at a time (the demo digits CNN, 32 px): wall clock
   (each render traces its step function once) and steady-state time per step.
2. Optimisation steps per second at 32 px (the demo CNN) and 224 px (MobileNetV2, random
   weights), with the section's default regularisation (Fourier, transforms, L2 and TV).

    PYTHONPATH=. python bench/featureviz.py [--steps 64] [--big-steps 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def render(handle, classes, recipe, steps: int):
    """A render whose first chunk is one step, so that later chunks time the steady state."""
    from auditor.methods.featureviz.recipes import visualise_classes

    return visualise_classes(handle, classes,
                             dataclasses.replace(recipe, steps=1 + steps, snapshots=(1,)))


def mobilenet_handle(folder: str):
    import keras

    from auditor.inputs.models import load_model

    path = os.path.join(folder, "mobilenetv2.keras")
    keras.applications.MobileNetV2(weights=None).save(path)
    return load_model(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="steps per run at 32 px")
    parser.add_argument("--big-steps", type=int, default=4, help="steps per run at 224 px")
    parser.add_argument("--big-batch", type=int, default=4, help="classes at 224 px")
    args = parser.parse_args()

    from auditor.inputs.models import load_model
    from auditor.methods.featureviz.recipes import Recipe

    recipe = Recipe(l2=30.0, tv=8.0)
    digits = load_model("demo")
    classes = list(range(digits.num_classes))
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    render(digits, classes, recipe, 2)  # warm-up: first-use costs of TensorFlow and Keras

    batch = render(digits, classes, recipe, args.steps)
    single = [render(digits, [c], recipe, args.steps) for c in classes]
    single_wall = sum(r.seconds for r in single)
    single_step = sum(r.seconds_per_step() for r in single)
    print(f"\n{len(classes)} classes x {1 + args.steps} steps at 32 px")
    print(f"  one batch:           {batch.seconds:6.2f} s wall, "
          f"{1000 * batch.seconds_per_step():6.1f} ms/step")
    print(f"  one class at a time: {single_wall:6.2f} s wall, {1000 * single_step:6.1f} ms/step "
          "(summed over classes)")
    print(f"  ratio (one at a time / one batch): {single_wall / batch.seconds:.1f}x wall, "
          f"{single_step / batch.seconds_per_step():.1f}x per step")

    print("\nsteps per second (default regularisation, after tracing)")
    print(f"  32 px  demo CNN,    batch {len(classes):2d}: {1 / batch.seconds_per_step():7.1f} "
          f"steps/s ({len(classes) / batch.seconds_per_step():.0f} images/s)")
    with tempfile.TemporaryDirectory() as folder:
        big = mobilenet_handle(folder)
        big_classes = list(range(args.big_batch))
        result = render(big, big_classes, recipe, args.big_steps)
        print(f"  224 px MobileNetV2, batch {len(big_classes):2d}: "
              f"{1 / result.seconds_per_step():7.2f} steps/s "
              f"({len(big_classes) / result.seconds_per_step():.1f} images/s); tracing and "
              f"first step {result.chunks[0][1]:.1f} s")


if __name__ == "__main__":
    main()
