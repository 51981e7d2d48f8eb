"""Feature-visualisation speed, measured side by side in one run.

1. The section's three renders (40 class images in four variants, 10 unregularised, 8
   channels; the demo digits CNN, 32 px), twice, as two audits of one model would: the old loop
   (kept here only, to compare: a new tf.function per render, Keras's Adam on variables, one
   device) against the package's (one compiled loop per form of request, cached on the model,
   through the chunked and distributed path). Wall time, traces, and the largest difference
   between their images.
2. All classes in one batch vs one class at a time, and steps per second at 32 px (the demo CNN)
   and 224 px (MobileNetV2, random weights), with the section's default regularisation.

    PYTHONPATH=. python bench/featureviz.py [--steps 64] [--big-steps 4] [--replicas 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class VariableParam:
    """The old loop's view of a parameterisation: variables it owns and updates in place."""

    def __init__(self, param, start):
        import tensorflow as tf

        self.param, self.values = param, tf.Variable(start)
        self.variables = [self.values]

    def __call__(self):
        return self.param.images(self.values)

    def project(self):
        self.values.assign(self.param.project(self.values))

    def set_images(self, images):
        self.values.assign(self.param.values_of(images))


def old_render(handle, objective, param, transforms, *, start, steps, learning_rate, snapshots,
               blur_every, blur_sigma, seed):
    """The render loop as it was before it went through the batched path (session 2)."""
    import keras
    import tensorflow as tf

    from auditor.inputs.layers import activations_and_logits
    from auditor.methods.featureviz.render import Rendering
    from auditor.methods.featureviz.transforms import compose, gaussian_blur

    started = time.perf_counter()
    param = VariableParam(param, start)
    tapped = activations_and_logits(handle, objective.layers)
    transform, rng = compose(transforms), tf.random.Generator.from_seed(seed)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(param.variables)

    def step(index):
        with tf.GradientTape() as tape:
            image = param()
            activations, logits = tapped(transform(image, rng))
            state = {"logits": logits, "image": image,
                     **dict(zip(objective.layers, activations, strict=True))}
            loss = -tf.reduce_sum(objective(state))
        optimizer.apply_gradients(zip(tape.gradient(loss, param.variables), param.variables,
                                      strict=True))
        param.project()
        if blur_every > 0 and (index + 1) % blur_every == 0:
            param.set_images(gaussian_blur(param(), blur_sigma))

    @tf.function
    def run(first, count):
        for index in tf.range(first, first + count):
            step(index)

    stops = sorted({s for s in snapshots if 0 <= s <= steps} | {steps})
    kept, done = {}, 0
    for stop in stops:
        if stop > done:
            run(tf.constant(done), tf.constant(stop - done))
            done = stop
        if stop in snapshots or stop == steps:
            kept[stop] = param().numpy()
    return Rendering(images=param().numpy(), snapshots=kept, steps=steps,
                     seconds=time.perf_counter() - started), run.experimental_get_tracing_count()


def optimise(handle, objective, recipe, count, inits="zeros", real_image=None, old=False):
    """recipes.optimise, with the old loop or the package's."""
    from auditor.methods.featureviz import recipes

    if not old:
        return recipes.optimise(handle, objective, recipe, count, inits, real_image), 0
    param, start, transforms = recipes.prepare(handle, recipe, count, inits, real_image)
    return old_render(handle, recipe.penalised(objective), param, transforms, start=start,
                      **dataclasses.asdict(recipe.loop()))


def section_renders(handle, real_image, mean_image, steps: int, old: bool, scale: float = 1.0):
    """The featureviz section's three renders as it made them before (its default variants on
    the demo), with the old loop or the package's: images, seconds and traces."""
    from auditor.methods.featureviz import objectives
    from auditor.methods.featureviz.recipes import Recipe

    recipe = Recipe(steps=steps, l2_center=mean_image, snapshots=(0, 16, 64, 256))
    classes = list(range(10))
    kinds = ["logit"] * 30 + ["probability"] * 10
    inits = ["zeros"] * 10 + ["noise"] * 10 + ["image"] * 10 + ["zeros"] * 10
    objective = sum(objectives.class_objective(kind, classes * 4)
                    * [float(k == kind) for k in kinds] for kind in ("logit", "probability"))
    weighted = dataclasses.replace(recipe, l2=np.full(40, 30.0), tv=np.full(40, 8.0))
    channel = objectives.channel("conv3", list(range(8)))
    channels = dataclasses.replace(recipe, l2=np.full(8, 30.0), tv=np.full(8, 8.0))
    started, images, traces = time.perf_counter(), [], traced(handle)
    def scaled(goal):  # the same form unless nudged
        return goal if scale == 1 else scale * goal

    for args in ((scaled(objective), weighted, 40, inits, real_image),
                 (scaled(objectives.class_logit(classes)), recipe.unregularised(), 10),
                 (scaled(channel), channels, 8)):
        rendering, count = optimise(handle, *args, old=old)
        images.append(rendering.images)
        traces += count
    traces = traces if old else traced(handle) - traces
    return np.concatenate([i.ravel() for i in images]), time.perf_counter() - started, traces


def traced(handle) -> int:
    """Traces of the package's render loops cached on the handle so far."""
    return sum(f.experimental_get_tracing_count() for key, f in handle.compiled.items()
               if key[0] == "featureviz")


def merged_section(handle, steps: int) -> tuple[float, int]:
    """The section's renders as it makes them now (classes, variants and channels in one batch,
    the unregularised run beside): seconds and traces, through the section's own code."""
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.methods.featureviz.objectives import class_objective
    from auditor.methods.featureviz.realism import study_real_images
    from auditor.methods.featureviz.recipes import optimise as package_optimise
    from auditor.predict.predictions import predict
    from auditor.sections import featureviz
    from auditor.sections.base import Context

    config = make_config(model="demo", data="sklearn:digits:test")
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes)
    with tempfile.TemporaryDirectory() as folder:
        ctx = Context(config, handle, dataset, predict(handle, dataset), folder)
        options = featureviz.Options(steps=steps, snapshots=[0, 16, 64, 256])
        real = study_real_images(dataset, 64, None, 0)
        recipe = featureviz.make_recipe(options, steps, real, 0)
        layers = featureviz.chosen_layers(handle.logits_model, [], handle.name)
        picks = featureviz.channel_picks(ctx, options, layers)
        before, started = traced(handle), time.perf_counter()
        featureviz.renders(ctx, options, list(range(10)), recipe, True, picks, layers)
        package_optimise(handle, class_objective("logit", list(range(10))),
                         recipe.unregularised(), 10)
        return time.perf_counter() - started, traced(handle) - before


def compare_loops(handle, digits_x, steps: int) -> None:
    """Part 1: the old loop and the package's, two audits each, side by side."""
    mean = digits_x.mean(axis=0)
    print(f"\nthe section's renders, {steps} steps, two audits of one model")
    seen = {}
    for name, old in (("old loop, 3 renders", True), ("one path, 3 renders", False)):
        first = section_renders(handle, digits_x[0], mean, steps, old)
        second = section_renders(handle, digits_x[0], mean, steps, old)
        seen[name] = first
        print(f"  {name}: {first[1]:6.2f} s + {second[1]:6.2f} s; traces {first[2]} + "
              f"{second[2]}")
    fresh = [merged_section(handle, steps) for _ in range(2)]
    print(f"  one path, merged (the section now): {fresh[0][0]:6.2f} s + {fresh[1][0]:6.2f} s; "
          f"traces {fresh[0][1]} + {fresh[1][1]} (the unregularised form was traced above)")
    old, new = seen["old loop, 3 renders"][0], seen["one path, 3 renders"][0]
    nudged = section_renders(handle, digits_x[0], mean, steps, True, scale=1 + 1e-6)[0]
    print(f"  ratio (old / one path), first audit: "
          f"{seen['old loop, 3 renders'][1] / seen['one path, 3 renders'][1]:.2f}x")
    print(f"  pixels, old vs one path:            largest difference {np.abs(old - new).max():.3f},"
          f" mean {np.abs(old - new).mean():.5f}")
    print(f"  pixels, old vs old with the loss x (1 + 1e-6): largest "
          f"{np.abs(old - nudged).max():.3f}, mean {np.abs(old - nudged).mean():.5f} "
          "(the loop's own sensitivity to rounding)")


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


def batch_and_speed(digits, args) -> None:
    """Part 2: one batch against one class at a time, and steps per second."""
    from auditor.methods.featureviz.recipes import Recipe

    recipe = Recipe(l2=30.0, tv=8.0)
    classes = list(range(digits.num_classes))
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
        big = attach(lambda: mobilenet_handle(folder), args.replicas)
        big_classes = list(range(args.big_batch))
        result = render(big, big_classes, recipe, args.big_steps)
        print(f"  224 px MobileNetV2, batch {len(big_classes):2d}: "
              f"{1 / result.seconds_per_step():7.2f} steps/s "
              f"({len(big_classes) / result.seconds_per_step():.1f} images/s); tracing and "
              f"first step {result.chunks[0][1]:.1f} s")


def attach(load, replicas: int):
    """``load()``'s handle under a mirrored strategy over ``replicas`` logical CPUs (1: none),
    its variables made in the strategy's scope as the pipeline makes them."""
    if replicas == 1:
        return load()
    from auditor.predict.distribute import make_distribution

    distribution = make_distribution("mirrored")
    with distribution.scope():
        handle = load()
    handle.distribution = distribution
    return handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64, help="steps per run at 32 px")
    parser.add_argument("--big-steps", type=int, default=4, help="steps per run at 224 px")
    parser.add_argument("--big-batch", type=int, default=4, help="classes at 224 px")
    parser.add_argument("--replicas", type=int, default=1,
                        help="logical CPUs to mirror the new loop over (the old has one)")
    args = parser.parse_args()

    import tensorflow as tf

    if args.replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.replicas)
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.methods.featureviz.recipes import Recipe

    digits = attach(lambda: load_model("demo"), args.replicas)
    x = load_dataset("sklearn:digits:test", digits.input_shape,
                     digits.num_classes).images(np.arange(64))
    print(f"uptime: {open('/proc/loadavg').read().split()[:3]} (load over 1, 5, 15 min) on "
          f"{os.cpu_count()} cores; replicas: {args.replicas}")
    render(digits, list(range(10)), Recipe(), 2)  # warm-up: TensorFlow's first-use costs
    compare_loops(digits, x, args.steps)
    batch_and_speed(digits, args)
    print(f"\nuptime at the end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
