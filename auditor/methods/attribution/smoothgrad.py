"""The noise tunnel: gradients over noisy copies of the input, summarised three ways.

SmoothGrad (Smilkov et al. 2017) averages them; SquareGrad (Hooker et al. 2019) averages their
squares; VarGrad (Adebayo et al. 2018) takes their variance. The noise is a fraction of each
image's value range, as in SmoothGrad. Every image sees the same noise draws (common random
numbers from ``seed``), so an image's map does not depend on which other images share its batch.
Copies of a chunk's images run together, as many per pass as the memory budget allows, and the
statistics are kept as running sums.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.gradient import input_gradients
from auditor.methods.attribution.registry import blocks, register

NOISE_OPTIONS = {
    "samples": (16, "noisy copies per image"),
    "noise": (0.15, "noise standard deviation as a fraction of the image's value range"),
    "seed": (0, "seed of the noise draws"),
}


def noisy_gradient_moments(handle, x, targets, contrast, score, budget, samples, noise, seed):
    """Mean and mean square of the gradient over ``samples`` noisy copies of each image."""
    if samples < 1 or noise < 0:
        raise AuditorError(f"the noise tunnel needs samples >= 1 and noise >= 0, got "
                           f"samples={samples}, noise={noise}")
    draws = np.random.default_rng(seed).standard_normal((samples, *x.shape[1:]), np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    sigma = sigma.reshape(-1, 1, 1, 1, 1).astype(np.float32)
    total, squares = np.zeros_like(x), np.zeros_like(x)
    for part in blocks(samples, budget.backward // len(x)):
        block = draws[part]
        noisy = (x[:, None] + sigma * block[None]).reshape(-1, *x.shape[1:])
        k = len(block)
        grads = input_gradients(handle, noisy, np.repeat(targets, k), np.repeat(contrast, k),
                                score).reshape(len(x), k, *x.shape[1:])
        total += grads.sum(axis=1)
        squares += (grads ** 2).sum(axis=1)
    return total / samples, squares / samples


def _rows(options, shape):
    return options["samples"]


@register("smoothgrad", "Gradient averaged over noisy copies of the input (SmoothGrad).",
          options=NOISE_OPTIONS, cost=_rows, linear=True)
def smoothgrad(handle, x, targets, contrast, score, budget, **options):
    return noisy_gradient_moments(handle, x, targets, contrast, score, budget, **options)[0]


@register("squaregrad", "Mean square of the gradient over noisy copies of the input "
                        "(SquareGrad; unsigned).", options=NOISE_OPTIONS, cost=_rows,
          signed=False)
def squaregrad(handle, x, targets, contrast, score, budget, **options):
    return noisy_gradient_moments(handle, x, targets, contrast, score, budget, **options)[1]


@register("vargrad", "Variance of the gradient over noisy copies of the input (VarGrad; "
                     "unsigned).", options=NOISE_OPTIONS, cost=_rows, signed=False)
def vargrad(handle, x, targets, contrast, score, budget, **options):
    mean, square = noisy_gradient_moments(handle, x, targets, contrast, score, budget, **options)
    return np.maximum(square - mean ** 2, 0.0)
