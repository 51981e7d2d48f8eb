"""``neuron_groups``: the method as a Python call, for use outside the report (as ``attribute``).

    groups = neuron_groups(handle, x, layer=None, groups=6, seed=0)
    groups.directions                  # (K, C)
    groups.maps                        # (N, H, W, K), at the input's height and width
    groups.contributions(targets)      # (N, K): each group's share of the target's logit
    groups.residual(targets)           # (N,): what the groups do not explain
    groups.attribution_maps(targets)   # (N, H, W, K): per pixel; sums to contributions
"""

from __future__ import annotations

import numpy as np

from auditor.methods.concepts.groups import (
    DEFAULT_GROUPS,
    Attribution,
    Factors,
    activations,
    attribute_groups,
    check_groups,
    fit_factors,
    spread,
    upsample,
)
from auditor.methods.concepts.layers import default_layers, resolve_layers


class NeuronGroups:
    """Groups fitted on images ``x`` at one layer; attribution computed per set of targets."""

    def __init__(self, handle, x: np.ndarray, factors: Factors, weights: np.ndarray):
        self.handle, self.x, self.factors = handle, x, factors
        self.weights = weights  # (N, h, w, K) at the layer's own grid
        self._attributions: dict[bytes, Attribution] = {}

    @property
    def layer(self) -> str:
        return self.factors.layer

    @property
    def directions(self) -> np.ndarray:
        return self.factors.directions

    @property
    def reconstruction_error(self) -> float:
        return self.factors.error

    @property
    def maps(self) -> np.ndarray:
        return upsample(self.weights, tuple(self.x.shape[1:3]))

    def attribution(self, targets) -> Attribution:
        targets = np.asarray(targets, np.int32).reshape(-1)
        if len(targets) != len(self.x):
            raise ValueError(f"give one target per image: {len(targets)} for {len(self.x)}")
        key = targets.tobytes()
        if key not in self._attributions:
            self._attributions[key] = attribute_groups(self.handle, self.factors, self.x, targets)
        return self._attributions[key]

    def contributions(self, targets) -> np.ndarray:
        return self.attribution(targets).contributions

    def residual(self, targets) -> np.ndarray:
        return self.attribution(targets).residual

    def total(self, targets) -> np.ndarray:
        """Gradient x activation summed over the layer: the groups' and residual's sum."""
        return self.attribution(targets).total

    def attribution_maps(self, targets) -> np.ndarray:
        return spread(self.attribution(targets).per_position, tuple(self.x.shape[1:3]))


def neuron_groups(handle, x, layer: str | None = None, groups: int = DEFAULT_GROUPS,
                  seed: int = 0) -> NeuronGroups:
    """Fit ``groups`` neuron groups at ``layer`` (None: the last layer with a spatial map) on
    display-space images ``x`` (N, H, W, C)."""
    check_groups(groups)
    model = handle.logits_model
    name = resolve_layers(model, [layer])[0][0] if layer else default_layers(model)[-1][0]
    x = np.asarray(x, np.float32)
    acts = activations(handle, name, x)
    factors = fit_factors(name, acts, groups, seed)
    return NeuronGroups(handle, x, factors, factors.coefficients(acts))
