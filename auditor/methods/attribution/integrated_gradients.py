"""Integrated Gradients (Sundararajan et al. 2017): gradients summed along a straight path.

The path runs from a baseline (black, a blurred copy of the input, or a given image) to the
input; the integral is taken with the midpoint rule over ``steps`` points. Steps of a chunk's
images run together, as many per pass as the memory budget allows. ``completeness_error`` tells
how far the maps are from adding up to f(input) - f(baseline), the method's own promise.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.gradient import input_gradients
from auditor.methods.attribution.registry import blocks, budget_for, prepare, register, run_scores

BASELINES = ("zeros", "blur")


def blurred(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each image Gaussian-blurred over height and width, ``sigma`` a fraction of its side."""
    from scipy.ndimage import gaussian_filter

    pixels = sigma * max(x.shape[1:3])
    return gaussian_filter(x, sigma=(0, pixels, pixels, 0), mode="nearest").astype(np.float32)


def path_baseline(x: np.ndarray, baseline, blur_sigma: float) -> np.ndarray:
    """The baseline images for ``x``: 'zeros', 'blur', one image, or one image per sample."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return np.zeros_like(x)
        if baseline == "blur":
            return blurred(x, blur_sigma)
        raise AuditorError(f"unknown baseline '{baseline}'; use {', '.join(BASELINES)} or an "
                           "image array")
    baseline = np.asarray(baseline, dtype=np.float32)
    if baseline.shape == x.shape[1:]:
        return np.broadcast_to(baseline, x.shape)
    if baseline.shape == x.shape:
        return baseline
    raise AuditorError(f"an integrated_gradients baseline must have shape {x.shape[1:]} (one "
                       f"image) or {x.shape} (one per image), got {baseline.shape}")


@register(
    "integrated_gradients",
    "Integrated Gradients: (input - baseline) times the mean gradient along the straight path.",
    options={
        "steps": (32, "points on the path (midpoint rule)"),
        "baseline": ("zeros", "'zeros' (black), 'blur', or an image array"),
        "blur_sigma": (0.1, "Gaussian sigma of the 'blur' baseline, as a fraction of the side"),
    },
    cost=lambda options, shape: options["steps"],
    per_sample=("baseline",),
    linear=True,
    complete=True,
)
def integrated_gradients(handle, x, targets, contrast, score, budget, steps, baseline,
                         blur_sigma):
    if steps < 1:
        raise AuditorError(f"integrated_gradients needs steps >= 1, got {steps}")
    start = path_baseline(x, baseline, blur_sigma)
    delta = x - start
    alphas = ((np.arange(steps) + 0.5) / steps).astype(np.float32)
    total = np.zeros_like(x)
    for part in blocks(steps, budget.backward // len(x)):
        block = alphas[part].reshape(1, -1, 1, 1, 1)
        points = (start[:, None] + block * delta[:, None]).reshape(-1, *x.shape[1:])
        k = block.shape[1]
        grads = input_gradients(handle, points, np.repeat(targets, k), np.repeat(contrast, k),
                                score)
        total += grads.reshape(len(x), k, *x.shape[1:]).sum(axis=1)
    return delta * total / steps


def completeness_error(handle, x, targets, maps, *, baseline="zeros", blur_sigma: float = 0.1,
                       contrast=None, score: str = "logit") -> np.ndarray:
    """Per image, |sum(maps) - (f(x) - f(baseline))| / |f(x) - f(baseline)|.

    Zero for exact Integrated Gradients; a large value means too few steps.
    """
    x, targets, contrast = prepare(handle, x, targets, contrast, score)
    start = path_baseline(x, baseline, blur_sigma)
    rows = budget_for(handle).forward
    gap = (run_scores(handle, x, targets, contrast, score, rows)
           - run_scores(handle, np.ascontiguousarray(start), targets, contrast, score, rows))
    total = np.asarray(maps, dtype=np.float64).reshape(len(x), -1).sum(axis=1)
    return (np.abs(total - gap) / np.maximum(np.abs(gap), 1e-6)).astype(np.float32)
