"""Time of the Clever Hans injection test per shortcut on the demo model, against its budget.

    python bench/clever_hans.py                  # every shortcut and the control
    python bench/clever_hans.py --shortcuts patch,watermark --steps 300
    python bench/clever_hans.py --discovery      # the shortcut search on every copy
    python bench/clever_hans.py --discovery --model other   # the model bounds are derived on
    python bench/clever_hans.py --discovery --model rgb     # RGB composites (also rgb-other)

Measured side by side in one run on the digits demo CNN and its test split (half for
fine-tuning, half for measurement), with the section's defaults: per shortcut the seconds spent
fine-tuning and measuring, the total as a ratio to the 60 s budget, and the outcome (flip rate,
gradient mass ratio, verdict). Then the whole section with its defaults (patch, watermark,
control, discovery, properties, feature embedding) as the demo audit runs it.
Target: every ratio <= 1.0, and the whole demo audit (all sections) under 3 minutes.

With --discovery: per shortcut (and the control), a copy fine-tuned with it planted is searched
by the section's discovery (maps and features on every class, the target class's held-out
images half marked, each candidate put to the intervention): whether the copy learned it, was
the target a candidate, was it confirmed (flip rate and score drop with their intervals), and
which other classes were confirmed (false flags); then the detection rate and confirmed rate
over the learned shortcuts, the false flags over all copies, and the search's seconds.
``--model other`` runs it on a different architecture and seed (a wider CNN with global
average pooling, seed 1), the model the discovery and confirmation bounds were derived on.
``--model rgb`` and ``rgb-other``: RGB models of two architectures on the digits coloured and
composited on photo crops (tests/rgb_composites.py). Discovery clusters the reliability card's
best trusted method on each model (``--method`` names one instead), as the section does.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # rgb_composites

import numpy as np  # noqa: E402

BUDGET = 60.0  # seconds per injected shortcut


def main() -> None:
    from auditor.configure import make_config
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
    from auditor.pipeline import context_for
    from auditor.predict.predictions import predict
    from auditor.sections import clever_hans
    from auditor.sections.base import Context

    args = parse_args(",".join(INJECTORS), clever_hans.Options.steps)
    path, data = model_and_data(args.model)
    handle = load_model(path)
    dataset = load_dataset(data, handle.input_shape, handle.num_classes)
    images, labels = dataset.images(np.arange(dataset.n)), dataset.labels
    target = int(np.argmax(np.bincount(labels)))
    methods = [m for m in clever_hans.PREFERRED_METHODS if m in METHODS]
    settings = InjectionSettings(steps=args.steps)

    tick = time.perf_counter()
    split = make_split(handle, images, labels, seed=0)
    tuner = FineTuner(handle, settings.learning_rate)
    setup = time.perf_counter() - tick
    if args.discovery:
        shortcuts = [s for s in args.shortcuts.split(",") if s]
        method = card_method(handle, dataset, path, data) if args.method == "card" \
            else args.method
        print(f"{args.model}: {path}, data {data}, target class {dataset.class_names[target]}, "
              f"discovery method {method}; load {os.getloadavg()[0]:.1f} at start")
        discovery_benchmark(tuner, split, target, shortcuts, method, settings, args.verbose)
        print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
        return
    print(f"demo CNN, target class {dataset.class_names[target]}, {len(split.train_labels)} "
          f"fine-tuning / {len(split.eval_labels)} held-out images, {args.steps} steps of "
          f"{settings.batch_size}; methods {', '.join(methods)}; setup {setup:.1f} s")
    print(f"{'shortcut':<10} {'seconds':>8} {'ratio':>6} {'flip':>6} {'mass':>6}  verdict")
    shortcuts = [s for s in args.shortcuts.split(",") if s]
    local = {s: {} for s in shortcuts if s not in ("tint", "lightness", "background")} \
        or {"patch": {}}
    control = run_control(tuner, split, target, local, methods, settings)
    print(row("control", control))
    for name in shortcuts:
        print(row(name, run_injection(tuner, split, target, name, {}, methods, settings,
                                      control)))

    with tempfile.TemporaryDirectory() as work:
        config = make_config(model=path, data=data, sections=["clever_hans"])
        tick = time.perf_counter()
        ctx = context_for(Context(config, handle, dataset, predict(handle, dataset),
                                  Path(work)), ["clever_hans"])
        clever_hans.run(ctx, clever_hans.Options())
        print(f"whole section with defaults: {time.perf_counter() - tick:.1f} s")


def parse_args(shortcuts: str, steps: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shortcuts", default=shortcuts)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--discovery", action="store_true")
    parser.add_argument("--model", default="demo",
                        help="demo, other, rgb, rgb-other, or a model path (digits data)")
    parser.add_argument("--method", default="card",
                        help="discovery's attribution method; 'card': the reliability card's "
                             "best trusted method on this model, as the section picks it")
    parser.add_argument("--verbose", action="store_true", help="every class's scores")
    return parser.parse_args()


def model_and_data(name: str) -> tuple[str, str]:
    """The model file and the data source (held-out images) a --model name stands for."""
    if name in ("rgb", "rgb-other"):
        return rgb_model(name), rgb_data()
    return (other_model() if name == "other" else name), "sklearn:digits:test"


def rgb_model(name: str) -> str:
    """The RGB CNN (the demo's architecture on 3 channels, seed 0) or the other RGB model (batch
    norm, a residual block, global average pooling, seed 1), trained on the composites of the
    digits train split once and cached beside the demo model."""
    from rgb_composites import rgb_cnn, rgb_resnet, train_rgb

    from auditor.inputs.demo import cache_dir

    path = cache_dir() / f"bench-{name}.keras"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train_rgb(rgb_cnn() if name == "rgb" else rgb_resnet(), path)
    return str(path)


def rgb_data() -> str:
    """The composites of the digits test split as an npz file (0-255), cached."""
    from rgb_composites import composites

    from auditor.inputs.demo import cache_dir

    path = cache_dir() / "bench-rgb-composites-test.npz"
    if not path.exists():
        x, y = composites("test", seed=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=(x * 255).round().astype(np.uint8), y=y,
                 class_names=np.array([str(i) for i in range(10)]))
    return f"npz:{path}"


def card_method(handle, dataset, path: str, data: str) -> str:
    """The method the section would cluster: the reliability card's best trusted method on
    this model and data (gradient when the card trusts none), measured as an audit runs it."""
    from auditor.configure import make_config
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context
    from auditor.steps.card import choose, make_card

    tick = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        config = make_config(model=path, data=data, sections=["attribution", "clever_hans"])
        ctx = Context(config=config, handle=handle, dataset=dataset,
                      predictions=predict(handle, dataset), workdir=Path(work))
        card = make_card(ctx, ctx.options["attribution"])
        method, _ = choose(card, handle.input_shape, fallback="gradient")
    print(f"reliability card: {method} ({time.perf_counter() - tick:.0f} s)")
    return method


def other_model() -> str:
    """A different architecture and seed than the demo (wider, global average pooling,
    seed 1), trained on the digits train split once and cached beside the demo model."""
    import keras

    from auditor.inputs.demo import cache_dir, digits_images

    path = cache_dir() / "bench-other-gap-seed1.keras"
    if not path.exists():
        x, y = digits_images("train")
        keras.utils.set_random_seed(1)
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            keras.layers.Conv2D(24, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(48, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(96, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(2e-3),
                      loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=15, batch_size=32, verbose=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    return str(path)


def discovery_benchmark(tuner, split, target: int, shortcuts: list[str], method: str,
                        settings, verbose: bool = False) -> None:
    """Per copy: learned, candidate, confirmed, effect and false flags; then the rates."""
    from auditor.methods.shortcuts.injection import (
        CONTROL,
        DEFAULT_FRACTION,
        discover_copy,
        poison,
        reliance,
    )

    print(f"{'copy':<10} {'flip':>5} {'learned':>7} {'cand':>5} {'conf':>5} "
          f"{'flip excess [95%]':>18} {'drop excess':>18} {'region':<20} {'false flags':<12} s")
    learned = detected = confirmed = false_flags = 0
    null_flip, null_drop = [], []
    for name in [CONTROL, *shortcuts]:
        tick = time.perf_counter()
        tuner.reset()
        if name == CONTROL:
            tuner.train(split.train_images, split.train_targets, settings.steps,
                        settings.batch_size, settings.seed)
        else:
            images, targets = poison(split.train_images, split.train_labels,
                                     split.train_targets, target, name, {},
                                     DEFAULT_FRACTION.get(name, 1.0), settings.relabel,
                                     np.random.default_rng(settings.seed))
            tuner.train(images, targets, settings.steps, settings.batch_size, settings.seed)
        flip, gap, _ = reliance(tuner, split, target, name if name != CONTROL else "patch", {})
        was_learned = name != CONTROL and (flip >= settings.flip_threshold
                                           or gap >= settings.gap_threshold)
        search_tick = time.perf_counter()
        found = discover_copy(tuner, split, target, name if name != CONTROL else "patch", {},
                              method, settings)
        seconds = time.perf_counter() - search_tick
        effect = found.target.effect if found.target is not None else None
        wrong = found.false_flags + ([found.target.name] if name == CONTROL and found.flagged
                                     else [])
        for f in found.findings:  # the null: every class nothing was planted in
            if f.effect is not None and (name == CONTROL or f.label != target):
                null_flip.append(f.effect.flip_excess[1])
                null_drop += [f.effect.drop_excess[1]] if f.effect.local else []
        learned += was_learned
        detected += was_learned and found.candidate
        confirmed += was_learned and found.flagged
        false_flags += len(wrong)
        print(f"{name:<10} {flip:>5.2f} {str(was_learned):>7} {str(found.candidate):>5} "
              f"{str(found.flagged):>5} {interval(effect, 'flip'):>18} "
              f"{interval(effect, 'drop'):>18} {effect.region if effect else '-':<20} "
              f"{','.join(wrong) or '-':<12} {seconds:.1f} (copy {search_tick - tick:.1f})")
        if verbose:
            for f in found.findings:
                print("   ", f.name, diagnostics(f, found.marked))
    print(f"chance maxima over the {len(null_flip)} class searches with nothing planted in the "
          f"class: flip-excess lower end {max(null_flip, default=0):.2f}, local drop-excess "
          f"lower end {max(null_drop, default=0):.2f}")
    print(f"learned {learned}/{len(shortcuts)}; of those discovered {detected}, confirmed "
          f"{confirmed}; false flags over {len(shortcuts) + 1} copies: {false_flags}")


def diagnostics(finding, marked: np.ndarray) -> str:
    """Each signal's score against its bound (and, on the target, the share of its suspect
    group that carries the shortcut), and the effect: what the bounds are read from."""
    parts = []
    for d in (finding.maps, finding.features):
        if d is None:
            continue
        purity = np.isin(d.members, marked).mean() if len(d.members) else 0.0
        parts.append(f"{d.signal} {d.score:.3f}/{d.bound:.3f}{' *' if d.flagged else ''}"
                     f" ({len(d.members)}, {purity:.0%} marked)")
    if finding.effect is not None:
        parts.append(f"via {finding.signal}: flip {interval(finding.effect, 'flip')} drop "
                     f"{interval(finding.effect, 'drop')} {finding.effect.region}")
    return "; ".join(parts)


def interval(effect, which: str) -> str:
    if effect is None:
        return "-"
    value, low, high = effect.flip_excess if which == "flip" else effect.drop_excess
    return f"{value:.2f} [{low:.2f},{high:.2f}]"


def row(name: str, result) -> str:
    mass = result.detection["gradient"].mass_ratio if "gradient" in result.detection else None
    return (f"{name:<10} {result.seconds:>8.1f} {result.seconds / BUDGET:>6.2f} "
            f"{result.flip_rate:>6.2f} {'n/a' if mass is None else f'{mass:.2f}':>6}  "
            f"{result.verdict}")


if __name__ == "__main__":
    main()
