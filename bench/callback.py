"""What the Keras callback costs: ``model.fit`` with ``AuditCallback`` at ``every`` = a tenth of
the epochs, over the same fit without it, on the demo CNN and on a 224 px MobileNetV2.

    PYTHONPATH=. python bench/callback.py [--only demo|mobilenet_v2] [--sections a,b]
                                          [--epochs N] [--budget quick] [--overhead 0.3]

Every fit starts from the same seed: one without the callback, one with it, one without it
again (tracing warm-up is paid by each: each builds its own model); the ratio is to the mean
of the two without, whose difference shows how much two identical fits spread. Defaults are
the callback's own (every section, budget quick, overhead 0.3; ``--overhead none`` audits the
named budget in full). It prints per
model the seconds of each fit, their ratio, the same ratio from the callback's own time (the fit
without the callback plus the seconds the callback timed: its audits, and its once-per-fit work,
``AuditCallback.fit_seconds``: the copy of the model and the first prediction pass when
training starts, the model's passes timed if an audit needed them, the index and the end of the
trackers when it ends;
what the ratio would be if the machine's load did not change between the two fits), the seconds
per audit and per epoch, and per audit the sections run and not run and where its time went
(the fixed part: loading, predicting, planning, writing; each section and its figures), with the
load average before and after.
Nothing is downloaded (``weights=None``; the digits ship with scikit-learn; the 224 px images
are the digits, enlarged, in RGB).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TARGET = 1.3
MODELS = {  # images trained on, images audited, default epochs, batch size
    "demo": (1078, 200, 20, 32),
    "mobilenet_v2": (128, 32, 10, 16),
}


def data(name: str):
    """Training and audit images for the model: digits at 32 px grey, or 224 px RGB."""
    import tensorflow as tf

    from auditor.inputs.demo import digits_images

    train, audited, _, _ = MODELS[name]
    (x, y), (xt, yt) = digits_images("train"), digits_images("test")
    if name == "mobilenet_v2":
        def grow(images):
            return tf.image.grayscale_to_rgb(tf.image.resize(images, (224, 224))).numpy()

        return grow(x[:train]), y[:train], grow(xt[:audited]), yt[:audited]
    return x[:train], y[:train], xt[:audited], yt[:audited]


def build(name: str):
    import keras

    from auditor.inputs.demo import build_digits_cnn

    if name == "demo":
        return build_digits_cnn()
    return keras.applications.MobileNetV2(weights=None, classes=10,
                                          input_shape=(224, 224, 3))


def fit(name: str, epochs: int, callbacks: list) -> float:
    import keras

    x, y, _, _ = data(name)
    keras.utils.set_random_seed(0)
    model = build(name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=MODELS[name][3], verbose=0,
              callbacks=callbacks)
    return time.perf_counter() - started


def bench(name: str, epochs: int, sections, budget: str, overhead, root: Path) -> None:
    from auditor.keras import AuditCallback

    every = max(1, epochs // 10)
    _, _, xt, yt = data(name)
    load = os.getloadavg()[0]
    before = fit(name, epochs, [])
    callback = AuditCallback((xt, yt), root / name, every=every, sections=sections,
                             budget=budget, spec={"quiet": True}, overhead=overhead)
    audited = fit(name, epochs, [callback])
    after = fit(name, epochs, [])  # the same fit twice shows how much fits spread
    plain = (before + after) / 2
    audits = len(callback.audits)
    per_audit = (audited - plain) / max(audits, 1)
    own = sum(audit["seconds"] for audit in callback.audits)  # timed inside the fit
    once = sum(callback.fit_seconds.values())
    print(f"{name}: {epochs} epochs, every={every}, {audits} audits "
          f"({', '.join(sections) if sections else 'every section'}, budget {budget}, "
          f"overhead {overhead}): fit {before:.1f} s and {after:.1f} s without (before and "
          f"after), {audited:.1f} s with: ratio to their mean "
          f"{audited / plain:.2f} (target {TARGET}); by the callback's own time "
          f"{(plain + own + once) / plain:.2f}: {own:.1f} s of audits "
          f"({own / max(audits, 1):.2f} s each) and {once:.1f} s once per fit ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in callback.fit_seconds.items())
          + f"); {per_audit:.1f} s per audit by wall time, {plain / epochs:.2f} s per epoch; "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after", flush=True)
    for audit in callback.audits:
        summary = json.loads((Path(audit["folder"]) / "summary.json").read_text())
        timings = {k: round(v, 1) for k, v in summary["timings"].items()}
        print(f"  epoch {audit['epoch']}: {audit['seconds']:.1f} s; ran "
              f"{','.join(summary['config']['sections'] or ['every section'])} at budget "
              f"{summary['config']['budget']}; not run {','.join(audit['not_run']) or '-'}; "
              f"timings {timings}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(MODELS))
    parser.add_argument("--sections", help="comma-separated (default: every section)")
    parser.add_argument("--epochs", type=int, help="default: 20 (demo), 10 (mobilenet_v2)")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--overhead", default="0.3", help="a share, or none")
    args = parser.parse_args()
    overhead = None if args.overhead == "none" else float(args.overhead)
    sections = args.sections.split(",") if args.sections else None
    with tempfile.TemporaryDirectory(prefix="auditor-bench-callback-") as tmp:
        for name in [args.only] if args.only else list(MODELS):
            epochs = args.epochs or MODELS[name][2]
            bench(name, epochs, sections, args.budget, overhead, Path(tmp))


if __name__ == "__main__":
    main()
