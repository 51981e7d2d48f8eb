"""The whole audit, every section, on models of three sizes: its time as a multiple of its own
prediction pass, per section, the compute plan's estimate against the actual time, and the
peak memory of the audit's process.

    PYTHONPATH=. python bench/audit.py                    # every model, 300 and 1,000 images
    PYTHONPATH=. python bench/audit.py --only mobilenet_v2 --images 1000 [--budget standard]
    PYTHONPATH=. python bench/audit.py --only cifar_cnn --images 300 --sections robustness

Models: the digits demo CNN (8x8 digits upscaled to 32 px), a CIFAR-size CNN (32 px RGB, about
970k parameters) and MobileNetV2 at 224 px (weights=None, 10 classes). Data ships with the
libraries: digits from scikit-learn; for the RGB models, crops of scikit-learn's two sample
photographs, one class per (photo, region) pair, so that no download is needed. The RGB models
get one short epoch of training so that their predictions are not collapsed. Each audit runs
in its own process (so its peak memory is its own). Targets: MobileNetV2 with 1,000 images,
every section, within 10 minutes under the default budget; the estimate within 30% of the
actual time; peak memory under 4 GB. Absolute times depend on the machine and its load: read
the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = ("digits_cnn", "cifar_cnn", "mobilenet_v2")
CHILD = """
import json, sys, threading, time
import auditor.pipeline as pipeline
from auditor.configure import make_config
model, data, out, images, budget, sections = sys.argv[1:7]
peaks, current = {}, ["load"]

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS")) / 1024

def sample():  # the resident memory every 0.2 s, its peak kept per running step
    while True:
        peaks[current[0]] = max(peaks.get(current[0], 0.0), rss_mb())
        time.sleep(0.2)

threading.Thread(target=sample, daemon=True).start()
run_section, draw_views = pipeline.run_section, pipeline.draw_views

def section(name, ctx):
    current[0] = name
    try:
        return run_section(name, ctx)
    finally:
        current[0] = "between sections"

def views(results, dataset, folder=None, timings=None):
    current[0] = "figures"
    return draw_views(results, dataset, folder, timings)

pipeline.run_section, pipeline.draw_views = section, views
config = make_config(model=model, data=data, out=out, max_samples=int(images), progress=True,
                     budget=int(budget) if budget.isdigit() else budget,
                     sections=sections.split(",") if sections else None)
started = time.perf_counter()
summary = pipeline.run_audit(config).summary
print(json.dumps({"seconds": time.perf_counter() - started, "timings": summary["timings"],
                  "plan": summary.get("plan", {}), "peaks_mb": peaks,
                  "peak_mb": max(peaks.values())}))
"""


def photo_crops(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB crops of scikit-learn's two sample photographs, resized to ``size``: class =
    photo x 5 regions, with jittered positions, scales and flips."""
    import tensorflow as tf
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p, np.float32) / 255 for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    x = np.empty((n, size, size, 3), np.uint8)
    y = rng.integers(0, 10, n)
    for i, label in enumerate(y):
        photo = photos[label // 5]
        h, w = photo.shape[:2]
        side = int(rng.uniform(0.35, 0.5) * h)
        left = int((label % 5) / 5 * (w - side) + rng.integers(0, max(1, (w - side) // 8)))
        top = int(rng.integers(0, h - side))
        crop = photo[top:top + side, left:left + side]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        x[i] = np.clip(tf.image.resize(crop, (size, size)).numpy() * 255, 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


def cifar_cnn():
    import keras

    return keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(110, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])


def prepare(name: str, images: int, folder: Path) -> tuple[str, str]:
    """(model path, data source) for one benchmark model, written into ``folder``."""
    import keras

    if name == "digits_cnn":
        return "demo", "sklearn:digits"
    size = 32 if name == "cifar_cnn" else 224
    x, y = photo_crops(images, size)
    data = folder / f"{name}-{images}.npz"
    np.savez(data, x=x, y=y)
    keras.utils.set_random_seed(0)
    if name == "cifar_cnn":
        model = cifar_cnn()
        inputs = x / 255.0
    else:
        model = keras.applications.MobileNetV2(weights=None, classes=10,
                                               input_shape=(224, 224, 3))
        inputs = x / 127.5 - 1.0
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(inputs[:256], y[:256], epochs=1, batch_size=32, verbose=0)
    path = folder / f"{name}.keras"
    model.save(path)
    return str(path), f"npz:{data}"


def audit(model: str, data: str, images: int, budget: str, out: Path,
          sections: str = "") -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CI": "true"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, model, data, str(out), str(images),
                              budget, sections], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    log, errors = [], []
    for line in child.stderr:  # the audit's own log lines, as they come
        if line.startswith("auditor:"):
            log.append(line.rstrip())
            print(f"    {line.rstrip()}", flush=True)
        else:
            errors.append(line)
    stdout = child.stdout.read()
    if child.wait() != 0:
        raise RuntimeError(f"the audit exited with {child.returncode} (a negative code is the "
                           f"signal that ended it):\n" + "".join(errors[-40:]))
    return {**json.loads(stdout.strip().splitlines()[-1]), "log": log}


def report(name: str, images: int, got: dict) -> None:
    timings, plan, peaks = got["timings"], got["plan"], got["peaks_mb"]
    predict = timings["predict"]
    sections = {k: v for k, v in timings.items()
                if k not in ("load", "predict", "plan", "total", "input_range")}
    estimates = plan.get("estimates", {})
    spent = sum(v for k, v in sections.items() if k in estimates)
    print(f"\n{name}, {images} images: audit {timings['total']:.0f} s = "
          f"{timings['total'] / predict:.0f}x its prediction pass ({predict:.1f} s); "
          f"peak memory {got['peak_mb']:.0f} MB")
    print(f"  plan: budget {plan.get('budget')} = {plan.get('budget_passes')} passes, planned "
          f"{plan.get('passes')}; estimated {plan.get('estimated_seconds', 0):.0f} s for the "
          f"sections, actual {spent:.0f} s (estimate / actual "
          f"{plan.get('estimated_seconds', 0) / max(spent, 1e-9):.2f})")
    print(f"  {'step':<16}{'seconds':>8}{'x pass':>8}{'estimate':>9}{'est/act':>8}"
          f"{'peak MB':>9}")
    for step, seconds in sections.items():
        estimate = estimates.get(step)
        ratio = f"{estimate / seconds:8.2f}" if estimate is not None and seconds > 0 else " " * 8
        print(f"  {step:<16}{seconds:8.1f}{seconds / predict:8.1f}"
              + (f"{estimate:9.1f}" if estimate is not None else " " * 9) + ratio
              + f"{peaks.get(step, 0):9.0f}")
    reduced = {section: plan[section] for section in plan.get("instead_of", {})}
    for section, settings in reduced.items():
        print(f"  planned {section}: " + ", ".join(
            f"{key} {value} instead of {plan['instead_of'][section][key]}"
            for key, value in settings.items()))


def load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=MODELS, action="append")
    parser.add_argument("--images", type=int, action="append")
    parser.add_argument("--budget", default="standard")
    parser.add_argument("--sections", default="", help="comma-separated; default: every one")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {load()} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="auditor-bench-") as scratch:
        folder = Path(scratch)
        for name in args.only or MODELS:
            for images in args.images or (300, 1000):
                model, data = prepare(name, images, folder)
                print(f"{name}, {images} images: {load()} at the start", flush=True)
                tick = time.perf_counter()
                got = audit(model, data, images, args.budget, folder / f"{name}-{images}",
                            args.sections)
                report(name, images, got)
                print(f"  (wall {time.perf_counter() - tick:.0f} s, {load()} at the end)",
                      flush=True)


if __name__ == "__main__":
    main()
