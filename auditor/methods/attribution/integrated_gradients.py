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
from auditor.methods.attribution.registry import (
    Planned,
    blocks,
    budget_for,
    prepare,
    register,
    run_scores,
)

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
    # The compute plan may lower the path to 8 steps: the completeness error the attribution
    # section reports shows what a coarse path costs (Sundararajan et al. 2017 find 20 to 300
    # steps within 5%).
    planned={"steps": Planned(floor=8)},
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


# The score gap f(x) - f(baseline) is too small to measure completeness against when it is under
# this fraction of the scores' own size: float32 rounding in the summed maps (1e-7 relative per
# term, grown by the square root of ~1e5 terms) then reaches the gap itself. An absolute floor
# cannot know the model's scale: untrained or saturated models have gaps of 1e-12.
RELATIVE_GAP_FLOOR = 1e-3


def completeness(handle, x, targets, maps, *, baseline="zeros", blur_sigma: float = 0.1,
                 contrast=None, score: str = "logit") -> tuple[np.ndarray, np.ndarray]:
    """Per image, the completeness error |sum(maps) - gap| / |gap| and the gap f(x) -
    f(baseline) itself. The error is NaN (not measurable) where the gap is below
    RELATIVE_GAP_FLOOR times the mean size of the scores: all-zero maps must not score as
    complete because the score barely changes."""
    x, targets, contrast = prepare(handle, x, targets, contrast, score)
    start = path_baseline(x, baseline, blur_sigma)
    rows = budget_for(handle).forward
    at_x = run_scores(handle, x, targets, contrast, score, rows).astype(np.float64)
    at_start = run_scores(handle, np.ascontiguousarray(start), targets, contrast, score,
                          rows).astype(np.float64)
    gap = at_x - at_start
    scale = float(np.mean(np.abs(at_x) + np.abs(at_start)) / 2) if len(x) else 0.0
    total = np.asarray(maps, dtype=np.float64).reshape(len(x), -1).sum(axis=1)
    measurable = np.abs(gap) > RELATIVE_GAP_FLOOR * scale
    error = np.full(len(x), np.nan)
    error[measurable] = np.abs(total - gap)[measurable] / np.abs(gap[measurable])
    return error.astype(np.float32), gap.astype(np.float32)


def completeness_error(handle, x, targets, maps, *, baseline="zeros", blur_sigma: float = 0.1,
                       contrast=None, score: str = "logit") -> np.ndarray:
    """Per image, |sum(maps) - (f(x) - f(baseline))| / |f(x) - f(baseline)|; NaN where the
    score gap is too small to measure against (see ``completeness``).

    Zero for exact Integrated Gradients; a large value means too few steps.
    """
    return completeness(handle, x, targets, maps, baseline=baseline, blur_sigma=blur_sigma,
                        contrast=contrast, score=score)[0]
