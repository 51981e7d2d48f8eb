"""Cost of the triage section as a multiple of the prediction pass, on 10,000 images.

    PYTHONPATH=. python bench/triage.py [--n 10000]

The data: scikit-learn's 1797 digits tiled to N images, every copy after the first given seeded
Gaussian noise (sigma 0.03 of the range), so that the copies are not exact duplicates (a shift
of one of the digits' 8x8 pixels would be 4 pixels at the model's 32x32, a different task);
saved as an uncompressed 0-255 .npz in a temporary folder and streamed like a user's data.
The model: the demo CNN. Measured side by side in this run: the prediction pass (after a
warm-up run, which traces the model), then the triage section three times: first in a fresh
process state (its imports and the saliency function's tracing included, costs a run pays once
and shares with the other sections), then on a fresh context as the steady cost (its own pass
for the penultimate features included), and with the features already computed (as when
another section asked for them first). Target: the steady cost at most 3x the prediction pass.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

TARGET = 3.0
NOISE = 0.03


def tiled_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images / 16.0, digits.target
    reps = -(-n // len(x))
    rng = np.random.default_rng(seed)
    tiles = [x]
    for _ in range(reps - 1):
        tiles.append(np.clip(x + rng.normal(0, NOISE, x.shape), 0, 1))
    images = (np.concatenate(tiles)[:n] * 255).round().astype(np.uint8)
    return images, np.tile(y, reps)[:n]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()

    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.pipeline import context_for, run_section
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context

    with tempfile.TemporaryDirectory() as folder:
        x, y = tiled_digits(args.n)
        path = Path(folder) / "digits.npz"
        np.savez(path, x=x, y=y)
        handle = load_model("demo")
        config = make_config(model="demo", data=f"npz:{path}", sections=["triage"])
        dataset = load_dataset(config.data, handle.input_shape, handle.num_classes)
        predict(handle, dataset, config.batch_size)  # warm-up: trace the logits once
        started = time.perf_counter()
        predictions = predict(handle, dataset, config.batch_size)
        pass_seconds = time.perf_counter() - started
        def context() -> Context:  # with the features step made, as an audit makes it
            return context_for(Context(config=config, handle=handle, dataset=dataset,
                                       predictions=predictions, workdir=Path(folder)),
                               ["triage"])

        first = run_section("triage", context())
        steady = run_section("triage", ctx := context())
        shared = run_section("triage", ctx)  # the same context, its steps already made
    for result in (first, steady, shared):
        if result.error:
            raise SystemExit(result.error)
    ratio = steady.seconds / pass_seconds
    print(f"{args.n} images: prediction pass {pass_seconds:.2f} s; triage {steady.seconds:.2f} s "
          f"= {ratio:.2f}x the pass (target <= {TARGET:g}x)")
    print(f"first run in the process (imports, tracing) {first.seconds:.2f} s "
          f"({first.seconds / pass_seconds:.2f}x); with the features already computed "
          f"{shared.seconds:.2f} s ({shared.seconds / pass_seconds:.2f}x)")
    counts = steady.summary["triage"]["verdict_counts"]
    print(f"mistakes {sum(counts.values())}: {counts}; duplicate groups "
          f"{len(steady.summary['triage']['duplicates'])}")


if __name__ == "__main__":
    main()
