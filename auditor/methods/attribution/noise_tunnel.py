"""The noise tunnel: any method's maps over noisy copies of the input, summarised three ways.

As Captum's NoiseTunnel, it wraps a registered method instead of being one: SmoothGrad (Smilkov
et al. 2017) averages the maps, SquareGrad (Hooker et al. 2019) averages their squares, VarGrad
(Adebayo et al. 2018) takes their variance. ``smoothgrad``, ``squaregrad`` and ``vargrad`` are the
three modes over the gradient; ``MODE:METHOD`` (``smoothgrad:integrated_gradients``) is a mode
over any registered method, built by the registry on lookup from the facts of that method.

The noise is a fraction of each image's value range, as in SmoothGrad. Every image sees the same
noise draws (common random numbers from ``seed``), so an image's map does not depend on which
other images share its batch. Copies of a chunk's images run together, as many per call of the
wrapped method as the memory budget allows, and the statistics are kept as running sums.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution import gradient  # noqa: F401  (registers the default base)
from auditor.methods.attribution.registry import (
    METHODS,
    Method,
    Planned,
    blocks,
    register_wrapper,
)

NOISE_OPTIONS = {
    "samples": (16, "noisy copies per image"),
    "noise": (0.15, "noise standard deviation as a fraction of the image's value range"),
    "seed": (0, "seed of the noise draws"),
}

# The compute plan may lower the noisy copies to 8 (Smilkov et al. 2017: the maps sharpen up to
# about 50, and 8 already average out most of the noise); the wrapped method's own planned
# options are planned as its.
PLANNED_NOISE = {"samples": Planned(floor=8)}

# mode: (how the maps of the copies are summarised, the gradient version's description)
MODES = {
    "smoothgrad": ("mean", "Gradient averaged over noisy copies of the input (SmoothGrad)."),
    "squaregrad": ("mean square", "Mean square of the gradient over noisy copies of the input "
                                  "(SquareGrad; unsigned)."),
    "vargrad": ("variance", "Variance of the gradient over noisy copies of the input (VarGrad; "
                            "unsigned)."),
}


def base_option_names(base: Method) -> dict[str, str]:
    """{the tunnel's name for an option of ``base``: the base's own name}: the base's options keep
    their names, except those a noise option already takes (rise's ``seed``), which become
    ``base_NAME``."""
    return {(f"base_{name}" if name in NOISE_OPTIONS else name): name for name in base.options}


def noisy_moments(base: Method, handle, x, targets, contrast, score, budget, samples, noise,
                  seed, options: dict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and mean square of ``base``'s maps over ``samples`` noisy copies of each image."""
    if samples < 1 or noise < 0:
        raise AuditorError(f"the noise tunnel needs samples >= 1 and noise >= 0, got "
                           f"samples={samples}, noise={noise}")
    draws = np.random.default_rng(seed).standard_normal((samples, *x.shape[1:]), np.float32)
    sigma = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    sigma = sigma.reshape(-1, 1, 1, 1, 1).astype(np.float32)
    rows = budget.forward if base.forward_only else budget.backward
    per_copy = max(1, base.rows_per_sample(options, x.shape))
    total, squares = np.zeros_like(x), np.zeros_like(x)
    for part in blocks(samples, rows // (len(x) * per_copy)):
        block = draws[part]
        noisy = (x[:, None] + sigma * block[None]).reshape(-1, *x.shape[1:])
        k = len(block)
        copied = {name: (np.repeat(value, k, axis=0) if name in base.per_sample
                         and isinstance(value, np.ndarray) and value.shape == x.shape else value)
                  for name, value in options.items()}
        maps = base.fn(handle, noisy, np.repeat(targets, k), np.repeat(contrast, k), score,
                       budget, **copied).reshape(len(x), k, *x.shape[1:])
        total += maps.sum(axis=1)
        squares += (maps ** 2).sum(axis=1)
    return total / samples, squares / samples


def summarise(mode: str, mean: np.ndarray, square: np.ndarray) -> np.ndarray:
    if mode == "smoothgrad":
        return mean
    if mode == "squaregrad":
        return square
    return np.maximum(square - mean ** 2, 0.0)


def tunnel(mode: str, base: Method, name: str, description: str | None = None) -> Method:
    """The method ``mode`` over ``base``: the noise options plus the base's; its facts follow
    from the base's (a mean of linear maps is linear; squares and variances carry no sign; the
    plan may lower the copies and what it may change of the base)."""
    names = base_option_names(base)

    def own(options: dict) -> dict:
        return {names[key]: value for key, value in options.items() if key in names}

    def run(handle, x, targets, contrast, score, budget, samples, noise, seed, **options):
        return summarise(mode, *noisy_moments(base, handle, x, targets, contrast, score, budget,
                                              samples, noise, seed, own(options)))

    def cost(options: dict, shape: tuple) -> int:
        return options["samples"] * base.rows_per_sample(own(options), shape)

    summary = MODES[mode][0]
    return Method(name, description or f"The {summary} of {base.name}'s maps over noisy copies "
                                       f"of the input ({mode} over {base.name}).",
                  run, NOISE_OPTIONS | {new: base.options[old] for new, old in names.items()},
                  cost=cost, forward_only=base.forward_only,
                  per_sample=tuple(new for new, old in names.items() if old in base.per_sample),
                  signed=mode == "smoothgrad" and base.signed,
                  linear=mode == "smoothgrad" and base.linear, needs_layer=base.needs_layer,
                  compiled=base.compiled, trace_cost=base.trace_cost,
                  needs_attention=base.needs_attention, needs_rectified=base.needs_rectified,
                  planned=PLANNED_NOISE | {new: base.planned[old] for new, old in names.items()
                                           if old in base.planned})


def register_modes() -> None:
    """Each mode as a wrapper of any method, and over the gradient under the mode's own name."""
    for mode, (_, description) in MODES.items():
        register_wrapper(mode, partial(tunnel, mode))
        METHODS[mode] = tunnel(mode, METHODS["gradient"], mode, description)


register_modes()
