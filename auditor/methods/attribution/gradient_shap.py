"""Expected gradients / GradientSHAP (Erion et al. 2021; Lundberg and Lee 2017).

Integrated Gradients with the baseline drawn from the data instead of fixed: each of ``samples``
draws picks a reference image and a point on the straight path from it to the input, and the
map is the mean of ``(input - reference) * gradient``; in expectation it adds up to the score
minus its mean over the references. The draws (which reference, how far along the path) are
common to every image, so a map does not depend on the images that share its batch. The audit
passes references drawn from its own data; without them, black and uniform-noise images stand in.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.gradient import input_gradients
from auditor.methods.attribution.registry import Planned, blocks, register


def default_references(shape: tuple, seed: int) -> np.ndarray:
    """Black plus seeded uniform-noise images: a data-free stand-in for reference images."""
    noise = np.random.default_rng(seed).uniform(size=(7, *shape)).astype(np.float32)
    return np.concatenate([np.zeros((1, *shape), np.float32), noise])


@register(
    "gradient_shap",
    "Expected gradients (GradientSHAP): (input - reference) x gradient at random points between "
    "references drawn from the data and the input, averaged.",
    options={
        "samples": (32, "reference and path-point draws per image"),
        "references": (None, "reference images (M, H, W, C); the audit draws them from its data"),
        "seed": (0, "seed of the draws"),
    },
    cost=lambda options, shape: options["samples"],
    linear=True,
    # The compute plan may lower the draws to 8: as SmoothGrad's noisy copies (Smilkov et al.
    # 2017: the maps sharpen up to about 50), 8 already average out most of the noise.
    planned={"samples": Planned(floor=8)},
)
def gradient_shap(handle, x, targets, contrast, score, budget, samples, references, seed):
    if samples < 1:
        raise AuditorError(f"gradient_shap needs samples >= 1, got {samples}")
    refs = (default_references(x.shape[1:], seed) if references is None
            else np.asarray(references, dtype=np.float32))
    if refs.ndim != 4 or refs.shape[1:] != x.shape[1:] or not len(refs):
        raise AuditorError(f"gradient_shap references must have shape (M, "
                           f"{', '.join(map(str, x.shape[1:]))}), got {refs.shape}")
    rng = np.random.default_rng(seed)
    picks = refs[rng.integers(0, len(refs), samples)]  # (S, H, W, C)
    alphas = rng.uniform(size=samples).astype(np.float32).reshape(-1, 1, 1, 1)
    total = np.zeros_like(x)
    for part in blocks(samples, budget.backward // len(x)):
        start, alpha = picks[part][None], alphas[part][None]
        delta = x[:, None] - start  # (N, k, H, W, C)
        points = (start + alpha * delta).reshape(-1, *x.shape[1:])
        k = len(alphas[part])
        grads = input_gradients(handle, points, np.repeat(targets, k), np.repeat(contrast, k),
                                score)
        total += (delta * grads.reshape(len(x), k, *x.shape[1:])).sum(axis=1)
    return total / samples
