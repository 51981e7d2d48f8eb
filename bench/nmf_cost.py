"""What the concepts section's scikit-learn NMF costs, in reference kernels per million
(row x channel x group) cells of the matrix it factorises: the constant the compute plan
prices the fits at (``NMF_KERNELS`` in auditor/sections/concepts.py).

    PYTHONPATH=.:tests python bench/nmf_cost.py MobileNetV2 ResNet50 --size 48 [--images 200]
    PYTHONPATH=.:tests python bench/nmf_cost.py demo

Per model, its default concepts layers (methods/concepts/layers.py), the activations of
``images`` images (RGB digit composites; the digits test split for ``demo``) factorised as the
section does (``fit_factors``: at most FIT_ROWS positions), then the activations of the survival
test's 32 images on the randomised copy; each fit timed beside the reference kernel
(predict/plan.py ``reference_kernel``), with the iterations scikit-learn ran.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from timing import timed  # noqa: E402  (bench/timing.py, in the script's folder)


def handle_and_images(name: str, size: int, images: int, work: Path):
    from auditor.inputs.models import load_model

    if name == "demo":
        from sklearn.datasets import load_digits

        from auditor.inputs.demo import demo_model_path

        handle = load_model(str(demo_model_path(seed=0)), input_range="0-1")
        digits = load_digits()
        x = (digits.images[:images] / 16.0).astype(np.float32)[..., None]
        side = handle.input_shape[0]
        import tensorflow as tf

        return handle, tf.image.resize(x, (side, side)).numpy()
    from architectures import application
    from rgb_composites import composites

    built = application(name, size=size, classes=10)
    built.save(work / "model.keras")
    side = int(built.inputs[0].shape[1])
    return (load_model(str(work / "model.keras"), input_range="0-1"),
            composites("test", seed=0, size=side)[0][:images].astype(np.float32))


def timed_fit(layer: str, acts: np.ndarray, kernel) -> str:
    from auditor.methods.concepts.groups import DEFAULT_GROUPS, FIT_ROWS, fit_factors

    rows = min(int(np.prod(acts.shape[:-1])), FIT_ROWS)
    signed = bool((acts < 0).any())
    cols = acts.shape[-1] * (2 if signed else 1)
    before = timed(kernel)
    fitted = []
    seconds, cpu = timed(lambda: fitted.append(fit_factors(layer, acts, DEFAULT_GROUPS)))
    factors = fitted[0]
    after = timed(kernel)
    unit, unit_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    cells = rows * cols * DEFAULT_GROUPS / 1e6
    iterations = factors.nmf.n_iter_
    return (f"{rows} rows x {cols} channels, {iterations} iterations: {seconds:.2f} s, "
            f"{seconds / unit:.1f} kernels, {cpu:.2f} CPU-s, {cpu / unit_cpu:.1f} kernels in "
            f"CPU time, {cpu / unit_cpu / cells / iterations:.3f} CPU kernels per million "
            "cell-iterations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    import warnings

    from auditor.methods.concepts.faithful import randomised_activations
    from auditor.methods.concepts.groups import activations_and_gradients
    from auditor.methods.concepts.layers import resolve_layers
    from auditor.predict.plan import reference_kernel

    warnings.filterwarnings("ignore", message="Maximum number of iterations")
    kernel = reference_kernel()
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix="auditor-nmf-") as scratch:
            handle, x = handle_and_images(name, args.size, args.images, Path(scratch))
            layers = [layer for layer, _ in resolve_layers(handle.logits_model)]
            found = activations_and_gradients(handle, layers, x, np.zeros(len(x), np.int32))
            random = randomised_activations(handle, layers, x[:32], 0)
            with open("/proc/loadavg") as load:
                print(f"{name}, {len(x)} images, load {load.read().split()[0]}", flush=True)
            for layer in layers:
                print(f"  {layer}: {timed_fit(layer, found[layer][0], kernel)}", flush=True)
                print(f"  {layer}, randomised: {timed_fit(layer, random[layer], kernel)}",
                      flush=True)


if __name__ == "__main__":
    main()
