"""What triage's work off the model costs, in reference kernels, as the number of images, the
width of the penultimate features and the images' pixels grow: the constants the compute plan
prices it at (``TRIAGE_*`` in auditor/sections/triage.py).

    PYTHONPATH=. python bench/triage_cost.py [--images 200 800] [--features 10 1024]
                                             [--sides 8 48] [--repeats 2]

Triage's own ``measure`` (the whole off-model part of the section: fingerprints and image
properties, the neighbours, the detectors with Mahalanobis's whitening, cleanlab and its
self-test, duplicates, the slices' mixture, calibration) runs on synthetic predictions, 10
classes, logits that agree with the labels on about 80% of the images, features whose class
means differ, RGB images of ``side`` pixels; each run is timed in process CPU seconds and in
wall seconds beside the reference kernel (predict/plan.py ``reference_kernel``, in CPU seconds
too), the median of ``repeats`` runs, after one untimed run that imports what it needs.
No model is run.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
from timing import timed  # bench/timing.py (the script's folder is on the path)


class Images:
    """The few members of a dataset ``triage.measure`` reads: its images in batches."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: int):
        self.images, self.labels, self.n = images, labels, len(images)
        self.class_names = [str(c) for c in range(classes)]

    def batches(self, size: int):
        for start in range(0, self.n, size):
            part = slice(start, start + size)
            yield self.images[part], self.labels[part], np.arange(self.n)[part]


def context(images: int, features: int, side: int, classes: int = 10, seed: int = 0):
    """A context of ``images`` synthetic predictions: what triage reads, and nothing else."""
    from auditor.predict.predictions import Predictions

    draws = np.random.default_rng(seed)
    labels = draws.integers(0, classes, images)
    shown = np.where(draws.uniform(size=images) < 0.8, labels, draws.integers(0, classes, images))
    logits = draws.normal(0, 1, (images, classes)).astype(np.float32)
    logits[np.arange(images), shown] += 4
    means = draws.normal(0, 1, (classes, features))
    feats = (means[labels] + draws.normal(0, 1, (images, features))).astype(np.float32)
    pixels = draws.uniform(0, 1, (images, side, side, 3)).astype(np.float32)
    return SimpleNamespace(
        predictions=Predictions(logits=logits, labels=labels, features=feats),
        dataset=Images(pixels, labels, classes), train_dataset=None,
        steps=SimpleNamespace(features=SimpleNamespace(values=feats)),
        config=SimpleNamespace(seed=0, batch_size=64), handle=SimpleNamespace(output="logits"))


def main() -> None:
    from auditor.predict.plan import reference_kernel
    from auditor.sections.triage import Options, measure

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[200, 800])
    parser.add_argument("--features", type=int, nargs="+", default=[10, 1024])
    parser.add_argument("--sides", type=int, nargs="+", default=[8, 48])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    kernel = reference_kernel()
    measure(context(50, 4, 8), Options())  # the imports (scikit-learn, cleanlab) once, untimed
    for images in args.images:
        for features in args.features:
            for side in args.sides:
                ctx = context(images, features, side)
                runs, kernels = [], []
                for _ in range(args.repeats):
                    kernels.append(timed(kernel))
                    runs.append(timed(lambda ctx=ctx: measure(ctx, Options())))
                kernels.append(timed(kernel))
                wall, cpu = np.median(runs, axis=0)
                unit_wall, unit_cpu = np.median(kernels, axis=0)
                print(f"images {images:5d} features {features:5d} side {side:3d}: "
                      f"{cpu:6.2f} CPU-s {wall:6.2f} s; kernel {unit_cpu * 1e3:5.1f} CPU-ms "
                      f"{unit_wall * 1e3:5.1f} ms; {cpu / unit_cpu:7.1f} kernels (CPU), "
                      f"{wall / unit_wall:7.1f} (wall)", flush=True)


if __name__ == "__main__":
    main()
