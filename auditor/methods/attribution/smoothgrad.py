"""SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input.

The noise is a fraction of each image's value range, as in the paper. Every image sees the same
noise draws (common random numbers from ``seed``), so an image's map does not depend on which
other images share its batch. Copies of a chunk's images run together, as many per pass as the
memory budget allows, and the mean is kept as a running sum.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.gradient import input_gradients
from auditor.methods.attribution.registry import blocks, register


@register(
    "smoothgrad",
    "Gradient averaged over noisy copies of the input (SmoothGrad).",
    options={
        "samples": (16, "noisy copies per image"),
        "noise": (0.15, "noise standard deviation as a fraction of the image's value range"),
        "seed": (0, "seed of the noise draws"),
    },
    cost=lambda options, shape: options["samples"],
    linear=True,
)
def smoothgrad(handle, x, targets, contrast, score, budget, samples, noise, seed):
    if samples < 1 or noise < 0:
        raise AuditorError(f"smoothgrad needs samples >= 1 and noise >= 0, got samples={samples}, "
                           f"noise={noise}")
    draws = np.random.default_rng(seed).standard_normal((samples, *x.shape[1:]), np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    sigma = sigma.reshape(-1, 1, 1, 1, 1).astype(np.float32)
    total = np.zeros_like(x)
    for part in blocks(samples, budget.backward // len(x)):
        block = draws[part]
        noisy = (x[:, None] + sigma * block[None]).reshape(-1, *x.shape[1:])
        k = len(block)
        grads = input_gradients(handle, noisy, np.repeat(targets, k), np.repeat(contrast, k),
                                score)
        total += grads.reshape(len(x), k, *x.shape[1:]).sum(axis=1)
    return total / samples
