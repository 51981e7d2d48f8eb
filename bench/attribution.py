"""Attribution throughput, and each method's cost against a plain batched GradientTape gradient.

    python bench/attribution.py                 # digits CNN and MobileNetV2(weights=None) 224 px
    python bench/attribution.py --models digits
    python bench/attribution.py --ig-stress     # IG 50 steps, 32 MobileNetV2 images: time, RSS
    python bench/attribution.py --card          # the reliability card's cost in the section
    python bench/attribution.py --card --max-samples 60   # the same, on fewer images

For each model, on one batch, measured side by side in one run (round-robin repeats; the
fastest repeat counts, as timeit advises, since other load only ever adds time):
inference throughput, each method's throughput, and its cost as a ratio to the floor (one
GradientTape gradient of the batch's target logits, straight through the Keras model). Targets:
gradient <= 1.15x the floor; SmoothGrad and Integrated Gradients with n samples <= 1.15 x n x the
gradient; every LRP method <= 1.5x the gradient (one modified forward and backward pass).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from timing import timed  # noqa: E402  (bench/timing.py)

GRADIENT_TARGET = 1.15
PER_SAMPLE_TARGET = 1.15
LRP_TARGET = 1.5
LRP_METHODS = ("lrp_epsilon", "lrp_gamma", "lrp_alpha_beta", "lrp")


def digits_handle():
    from auditor.inputs.models import load_model

    return load_model("demo")


def mobilenet_handle(folder: Path):
    import keras

    from auditor.inputs.models import load_model

    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False,
                                              weights=None)
    model = keras.Sequential([keras.Input((224, 224, 3)), backbone,
                              keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10, activation="softmax")])
    path = folder / "mobilenetv2.keras"
    model.save(path)
    return load_model(str(path), input_range="mobilenet_v2")


def floor_function(handle):
    """The floor: one tape over the Keras model, per-sample target logits, nothing else."""
    import tensorflow as tf

    model = handle.logits_model

    @tf.function(input_signature=(tf.TensorSpec((None, *handle.input_shape), tf.float32),
                                  tf.TensorSpec((None,), tf.int32)))
    def floor(x, targets):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(tf.gather(model(x, training=False), targets, batch_dims=1))
        return tape.gradient(total, x)

    return lambda x, t: floor(x, t).numpy()


def bench_model(name, handle, batch: int, n: int, repeats: int, occlusion: dict,
                inner: int) -> list[str]:
    """One table; single-pass runs are repeated ``inner`` times per round (they are short, so
    they need more tries to catch a quiet moment on a shared machine)."""
    from auditor.methods.attribution import attribute

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, *handle.input_shape)).astype(np.float32)
    targets = rng.integers(0, handle.num_classes, batch).astype(np.int32)
    model_x = handle.transform.to_model(x).numpy()
    floor = floor_function(handle)
    runs = {
        "inference": lambda: handle.logits_fn(x).numpy(),
        "floor (GradientTape)": lambda: floor(model_x, targets),
        "gradient": lambda: attribute(handle, x, targets, "gradient"),
        "gradient_abs": lambda: attribute(handle, x, targets, "gradient_abs"),
        "saliency": lambda: attribute(handle, x, targets, "saliency"),
        "gradient_x_input": lambda: attribute(handle, x, targets, "gradient_x_input"),
        "gradcam": lambda: attribute(handle, x, targets, "gradcam"),
        "gradcam_pp": lambda: attribute(handle, x, targets, "gradcam_pp"),
        f"smoothgrad (n={n})": lambda: attribute(handle, x, targets, "smoothgrad", samples=n),
        f"integrated_gradients (n={n})": lambda: attribute(handle, x, targets,
                                                           "integrated_gradients", steps=n),
        "occlusion": lambda: attribute(handle, x, targets, "occlusion", **occlusion),
        **{m: (lambda m=m: attribute(handle, x, targets, m)) for m in LRP_METHODS},
        # n gradient calls in a row: as long as the n-sample methods, so equally exposed to
        # whatever else the machine is doing while they run
        f"{n} x gradient": lambda: [attribute(handle, x, targets, "gradient") for _ in range(n)],
    }
    for fn in runs.values():  # trace everything first
        fn()
    single_pass = {"inference", "floor (GradientTape)", "gradient", "gradient_abs", "saliency",
                   "gradient_x_input", "gradcam", "gradcam_pp", *LRP_METHODS}
    seconds = {key: [] for key in runs}
    cpu = {key: [] for key in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            for _ in range(inner if key in single_pass else 1):
                wall, used = timed(fn)  # LRP's ratios are given in CPU time too
                seconds[key].append(wall)
                cpu[key].append(used)
    best = {key: min(values) for key, values in seconds.items()}
    best_cpu = {key: min(values) for key, values in cpu.items()}
    floor_s, n_gradients_s = best["floor (GradientTape)"], best.pop(f"{n} x gradient")
    lines = [f"{name}: batch {batch}, input {'x'.join(map(str, handle.input_shape))}, "
             f"best of {repeats} repeats ({repeats * inner} for single-pass runs); "
             f"load {os.getloadavg()[0]:.1f}",
             f"  {'':32}{'images/s':>10}{'x floor':>10}{'x n*gradient':>14}  target"]
    for key, value in best.items():
        per_n, target = target_text(key, value, best, n_gradients_s, x.shape, occlusion)
        if key in LRP_METHODS:
            ratio = best_cpu[key] / best_cpu["gradient"]
            target += f"; CPU time {ratio:.2f}x: " + ("met" if ratio <= LRP_TARGET else "MISSED")
        lines.append(f"  {key:32}{batch / value:10.1f}{value / floor_s:10.2f}"
                     f"{per_n or '':>14}  {target}")
    return lines


def target_text(key: str, value: float, best: dict, n_gradients_s: float, shape: tuple,
                occlusion: dict) -> tuple[str, str]:
    """The 'x n*gradient' column and the target note of one row."""
    from auditor.methods.attribution.occlusion import positions

    floor_s = best["floor (GradientTape)"]
    if key == "gradient":
        return "", f"<= {GRADIENT_TARGET}x floor: " + (
            "met" if value / floor_s <= GRADIENT_TARGET else "MISSED")
    if "(n=" in key:
        ratio = value / n_gradients_s
        return f"{ratio:14.2f}", f"<= {PER_SAMPLE_TARGET} x n x gradient: " + (
            "met" if ratio <= PER_SAMPLE_TARGET else "MISSED")
    if key in LRP_METHODS:
        ratio = value / best["gradient"]
        return "", f"{ratio:.2f}x gradient, <= {LRP_TARGET}x: " + (
            "met" if ratio <= LRP_TARGET else "MISSED")
    if key == "occlusion":
        count = positions({"patch": 0, "stride": 0} | occlusion, shape)
        return "", f"{count} forward passes per image"
    return "", ""


def ig_stress(folder: Path) -> None:
    """The issue's memory case: IG, 50 steps, 32 MobileNetV2 images at 224 px."""
    from auditor.methods.attribution import attribute, completeness_error
    from auditor.methods.attribution.registry import budget_for

    handle = mobilenet_handle(folder)
    x = np.random.default_rng(0).uniform(0, 1, (32, 224, 224, 3)).astype(np.float32)
    targets = np.arange(32) % 10
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    maps = []
    took, _ = timed(lambda: maps.append(attribute(handle, x, targets, "integrated_gradients",
                                                  steps=50)))
    maps = maps[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    error = completeness_error(handle, x, targets, maps)
    print(f"IG 50 steps x 32 images, MobileNetV2 224 px: {took:.0f} s, "
          f"{budget_for(handle).backward} rows per pass, peak RSS {peak:.2f} GB "
          f"(before: {before:.2f} GB), completeness error median {np.median(error):.3f}")


def card_cost(max_samples: int) -> None:
    """The reliability card (faithfulness, randomisation, input invariance: the parts of the
    card step, steps/card.py) against the rest of the attribution section (the mistakes' maps
    and the layers'), on a demo audit of ``max_samples`` images (300 by default)."""
    import dataclasses

    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.predict.predictions import predict
    from auditor.sections import attribution
    from auditor.sections.base import Context
    from auditor.steps import card as card_step

    handle = digits_handle()
    config = make_config({}, model="demo", data="sklearn:digits:test", max_samples=max_samples,
                         sections=["attribution"], progress=False)
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes,
                           max_samples=max_samples, seed=0)
    # no steps made: the section's maps of the mistakes are made when it asks, for it alone
    ctx = Context(config=config, handle=handle, dataset=dataset,
                  predictions=predict(handle, dataset, 64), workdir=Path("."),
                  show_progress=False)
    options = ctx.options[attribution.NAME]
    options = dataclasses.replace(options,
                                  method_options=card_step.resolved_options(ctx, options))
    methods = options.methods
    parts = {
        "faithfulness": lambda: card_step.faithfulness_part(ctx, options, methods),
        "randomisation": lambda: card_step.sanity_part(ctx, options, methods),
        "input invariance": lambda: card_step.invariance_part(ctx, options, methods),
        "section without the card": lambda: attribution.examples_section(
            ctx, options, methods, attribution.AttributionData({}, 0.0, "", {}, {})),
    }
    parts["section without the card"]()  # trace the methods once, as the section would
    seconds = {name: timed(fn)[0] for name, fn in parts.items()}
    rest = seconds.pop("section without the card")
    card = sum(seconds.values())
    print(f"reliability card on the demo ({len(methods)} methods, "
          f"{options.sanity_samples} sanity images, {options.faithfulness_samples} faithfulness "
          f"images): " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    print(f"card {card:.1f} s = {card / rest:.1f}x the section without it ({rest:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mobilenetv2")
    parser.add_argument("--repeats", type=int, default=0, help="default: 5 digits, 3 mobilenet")
    parser.add_argument("--ig-stress", action="store_true")
    parser.add_argument("--card", action="store_true")
    parser.add_argument("--max-samples", type=int, default=300,
                        help="--card: the demo audit's images")
    args = parser.parse_args()
    if args.card:
        card_cost(args.max_samples)
        return
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        if args.ig_stress:
            ig_stress(Path(folder))
            return
        lines = []
        for name in args.models.split(","):
            if name == "digits":
                lines += bench_model("digits CNN", digits_handle(), batch=128, n=16,
                                     repeats=args.repeats or 5, occlusion={}, inner=8)
            elif name == "mobilenetv2":
                lines += bench_model("MobileNetV2(weights=None)", mobilenet_handle(Path(folder)),
                                     batch=8, n=8, repeats=args.repeats or 3,
                                     occlusion={"patch": 56, "stride": 56}, inner=2)
            else:
                parser.error(f"unknown model '{name}'; use digits, mobilenetv2")
            lines.append("")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
