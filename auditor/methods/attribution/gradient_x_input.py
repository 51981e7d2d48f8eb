"""Gradient times input (Shrikumar et al. 2016): the first-order share of each pixel."""

from __future__ import annotations

from auditor.methods.attribution.gradient import input_gradients
from auditor.methods.attribution.registry import register


def _times_input(grads, x):
    return grads * x


@register("gradient_x_input", "Gradient times the display-space input (black pixels get zero).",
          linear=True, from_gradient=_times_input)
def gradient_x_input(handle, x, targets, contrast, score, budget):
    return _times_input(input_gradients(handle, x, targets, contrast, score), x)
