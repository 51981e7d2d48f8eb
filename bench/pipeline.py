"""Pipeline benchmark: throughput of the prediction pass and of a whole audit, and peak memory.

    PYTHONPATH=. python bench/pipeline.py [--digits-n 2000] [--mobilenet-n 64]

For the demo digits CNN (32x32 grey) and MobileNetV2(weights=None) at 224x224 it prints, measured
side by side in this run:

- images per second of auditor's prediction pass (streamed from an .npz on disk) against plain
  ``model.predict`` on the same images already in memory (target: ratio at least 0.9);
- images per second of a whole audit (``--sections``, default performance,contrastive);
- peak resident memory of an audit of N and of 10 N images, each in its own process (target:
  the 10 N peak less than 1.3 times the N peak).

Synthetic data is written to a temporary folder (uncompressed .npz, 0-255 bytes); nothing is
downloaded. Run by hand: it takes a few minutes on two cores.
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
BATCH = 64


def child(args: argparse.Namespace) -> dict:
    """One measurement in this fresh process; peak memory is this process's own."""
    if args.child == "throughput":
        result = throughput(args.model, args.data, args.repeats)
    else:
        result = audit(args.model, args.data, args.out, args.sections)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def throughput(model_path: str, data: str, repeats: int) -> dict:
    """Best of ``repeats`` timings of the prediction pass and of model.predict, interleaved.

    Wall-clock time is what users see; the process's CPU time is also kept, because it is what
    each method costs even when other jobs share the cores."""
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.predict.predictions import predict

    handle = load_model(model_path)
    dataset = load_dataset(data, handle.input_shape, handle.num_classes)
    in_memory = handle.transform.to_model(dataset.images(np.arange(dataset.n))).numpy()
    warm = load_dataset(data, handle.input_shape, handle.num_classes, max_samples=2 * BATCH)
    predict(handle, warm, BATCH)
    handle.model.predict(in_memory[: 2 * BATCH], batch_size=BATCH, verbose=0)
    timings = {"predict": [], "model_predict": []}
    for _ in range(repeats):
        for name, step in (("predict", lambda: predict(handle, dataset, BATCH)),
                           ("model_predict", lambda: handle.model.predict(
                               in_memory, batch_size=BATCH, verbose=0))):
            wall, cpu = time.perf_counter(), time.process_time()
            result = step()
            timings[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            if name == "predict":
                predicted = result
            else:
                reference = result
    gap = float(np.abs(predicted.probs - reference).max())
    best = {f"{name}_{kind}": min(t[i] for t in runs)
            for name, runs in timings.items() for i, kind in enumerate(("s", "cpu_s"))}
    return {"n": dataset.n, **best, "probability_gap": gap}


def audit(model_path: str, data: str, out: str, sections: str) -> dict:
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    config = make_config(model=model_path, data=data, out=out, progress=False,
                         sections=sections.split(","))
    summary = run_audit(config).summary
    return {"n": summary["data"]["n"], "timings": summary["timings"]}


def run_child(kind: str, model: str, data: str, **extra) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--model", model, "--data", data]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CI": "true"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"benchmark child failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def synthetic_images(n: int, size: int, channels: int, seed: int) -> np.ndarray:
    """Smooth random images (blurred noise blown up), 0-255 bytes."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, 8, 8, channels), dtype=np.uint8)
    images = np.stack([cv2.resize(img, (size, size), interpolation=cv2.INTER_CUBIC)
                       for img in small])
    return images.reshape(n, size, size, channels)


def digits_images(n: int, seed: int) -> np.ndarray:
    """The digits at 32x32, repeated with a little noise so that no two images are the same."""
    from auditor.inputs.demo import digits_images as load

    x, y = load("all")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(x), n)
    noisy = np.clip(x[pick] + rng.normal(0, 0.03, (n, *x.shape[1:])), 0, 1)
    return (noisy * 255).round().astype(np.uint8), y[pick]


def prepare(root: Path, digits_n: int, mobilenet_n: int, throughput_n: dict) -> list[dict]:
    """Models and the N and 10 N image files for each, written to ``root``."""
    import keras

    from auditor.inputs.demo import demo_model_path

    cases = []
    x, y = digits_images(10 * digits_n, seed=0)
    cases.append({"name": "digits CNN 32x32x1", "model": str(demo_model_path()), "x": x, "y": y,
                  "n": digits_n, "throughput_n": throughput_n["digits"]})
    if mobilenet_n:
        path = root / "mobilenet_v2.keras"
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(path)
        x = synthetic_images(10 * mobilenet_n, 224, 3, seed=1)
        y = np.random.default_rng(1).integers(0, 1000, len(x))
        cases.append({"name": "MobileNetV2 224x224x3", "model": str(path), "x": x, "y": y,
                      "n": mobilenet_n, "throughput_n": throughput_n["mobilenet"]})
    for i, case in enumerate(cases):
        case["data"] = {}
        for label, count in (("n", case["n"]), ("10n", 10 * case["n"]),
                             ("throughput", case["throughput_n"])):
            file = root / f"case{i}-{label}.npz"
            np.savez(file, x=case["x"][:count], y=case["y"][:count])  # uncompressed: streamed
            case["data"][label] = f"npz:{file}"
        case["float_mb"] = 10 * case["n"] * int(np.prod(case["x"].shape[1:])) * 4 / 2**20
        del case["x"], case["y"]
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits-n", type=int, default=2000, help="N for the digits CNN")
    parser.add_argument("--mobilenet-n", type=int, default=64,
                        help="N for MobileNetV2 at 224 px (0 skips it); at least one batch, "
                             "so that N and 10 N run the same batch size")
    parser.add_argument("--digits-throughput-n", type=int, default=20000)
    parser.add_argument("--mobilenet-throughput-n", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3, help="timings per method; best kept")
    parser.add_argument("--sections", default="performance,contrastive")
    parser.add_argument("--child", choices=["throughput", "audit"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    import tensorflow as tf

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="auditor-bench-") as tmp:
        root = Path(tmp)
        cases = prepare(root, args.digits_n, args.mobilenet_n,
                        {"digits": args.digits_throughput_n,
                         "mobilenet": args.mobilenet_throughput_n})
        for case in cases:
            case["speed"] = run_child("throughput", case["model"], case["data"]["throughput"],
                                      repeats=args.repeats)
            for size in ("n", "10n"):
                case[size + "_audit"] = run_child("audit", case["model"], case["data"][size],
                                                  out=root / f"out-{size}",
                                                  sections=args.sections)
    report(cases, args.sections, tf.__version__, time.perf_counter() - started)


def report(cases: list[dict], sections: str, tf_version: str, seconds: float) -> None:
    print(f"auditor pipeline benchmark: {os.cpu_count()} CPU cores, TensorFlow {tf_version}, "
          f"batch {BATCH}")
    print("\nPrediction pass (streamed from .npz on disk) vs model.predict (same images in "
          "memory), best of repeats")
    print(f"{'model':24} {'images':>7} {'pass img/s':>11} {'predict img/s':>14} "
          f"{'ratio':>6}  {'target >= 0.9':14} {'CPU-time ratio':>14}")
    for case in cases:
        speed = case["speed"]
        ours, theirs = speed["n"] / speed["predict_s"], speed["n"] / speed["model_predict_s"]
        verdict = "ok" if ours / theirs >= 0.9 else "MISSED"
        cpu = speed["model_predict_cpu_s"] / speed["predict_cpu_s"]
        print(f"{case['name']:24} {speed['n']:>7} {ours:>11.1f} {theirs:>14.1f} "
              f"{ours / theirs:>6.2f}  {verdict:14} {cpu:>14.2f}   "
              f"(max |p - p_ref| {speed['probability_gap']:.1e})")
    print(f"\nWhole audit of 10 N images (sections {sections}), from load to written report")
    print(f"{'model':24} {'images':>7} {'seconds':>8} {'img/s':>7} {'vs predict':>11}  "
          "where the time goes (s)")
    for case in cases:
        timings = case["10n_audit"]["timings"]
        n = case["10n_audit"]["n"]
        theirs = case["speed"]["n"] / case["speed"]["model_predict_s"]
        steps = ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k != "total")
        print(f"{case['name']:24} {n:>7} {timings['total']:>8.1f} {n / timings['total']:>7.1f} "
              f"{n / timings['total'] / theirs:>11.2f}  {steps}")
    print("\nPeak resident memory of a whole audit, one process per size")
    print(f"{'model':24} {'N':>6} {'10 N':>6} {'peak N':>9} {'peak 10 N':>10} {'ratio':>6}  "
          "target < 1.3   (10 N images as float32)")
    for case in cases:
        low, high = case["n_audit"]["peak_mb"], case["10n_audit"]["peak_mb"]
        verdict = "ok" if high / low < 1.3 else "MISSED"
        print(f"{case['name']:24} {case['n']:>6} {10 * case['n']:>6} {low:>7.0f}MB "
              f"{high:>8.0f}MB {high / low:>6.2f}  {verdict:13} ({case['float_mb']:.0f} MB)")
    print(f"\n(benchmark took {seconds:.0f} s)")


if __name__ == "__main__":
    main()
