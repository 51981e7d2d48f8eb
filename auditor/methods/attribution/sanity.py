"""Sanity check for saliency methods (Adebayo et al. 2018): cascading weight randomisation.

On a copy of the model, layers are re-initialised from the top down, each with its own
initializer; after each stage every method's maps are compared with the original ones. A method
that explains the model must change as the model is destroyed; one whose maps survive (high rank
correlation, high SSIM) shows the input, not the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.errors import AuditorError
from auditor.inputs.layers import is_model, walk
from auditor.methods.attribution.registry import shared_gradient


@dataclass
class SanityResult:
    """Per method, the mean rank correlation and SSIM with the original maps at each stage.

    Stage ``i`` has the top ``randomised[i]`` weighted layers re-initialised, down to
    ``stages[i]``; the last stage has every weighted layer re-initialised.
    """

    stages: list[str]
    randomised: list[int]
    rank_correlation: dict[str, list[float]] = field(default_factory=dict)
    ssim: dict[str, list[float]] = field(default_factory=dict)
    examples: dict[str, np.ndarray] = field(default_factory=dict)  # (1 + stages, H, W), sample 0
    # why a method's original or fully randomised maps cannot be compared (None: they can)
    degenerate: dict[str, str | None] = field(default_factory=dict)

    def final(self, method: str) -> tuple[float, float]:
        """Rank correlation and SSIM once every layer is randomised."""
        return self.rank_correlation[method][-1], self.ssim[method][-1]


def importance(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) importance: absolute values summed over channels."""
    maps = np.abs(np.asarray(maps, dtype=np.float32))
    return maps.sum(axis=-1) if maps.ndim == 4 else maps


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation per sample of two (N, ...) arrays; 0 where one is constant:
    a map that randomisation flattened has changed, which is what the sanity check asks."""
    from auditor.methods.agreement import rank_correlation as spearman

    return np.nan_to_num(spearman(a, b), nan=0.0)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, data_range: float = 1.0) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) per sample of (N, H, W) maps in [0, data_range].

    Gaussian-weighted 11x11 windows (sigma 1.5, as in the paper), K1 = 0.01, K2 = 0.03, averaged
    over the positions where the window fits (as tf.image.ssim does), or over all of a small map.
    """
    from scipy.ndimage import gaussian_filter

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def window(z):
        return gaussian_filter(z, sigma=(0, sigma, sigma), truncate=3.5, mode="reflect")

    mu_a, mu_b = window(a), window(b)
    var_a = window(a * a) - mu_a ** 2
    var_b = window(b * b) - mu_b ** 2
    cov = window(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    radius = int(3.5 * sigma + 0.5)
    if min(index.shape[1:]) > 2 * radius:
        index = index[:, radius:-radius, radius:-radius]
    return index.mean(axis=(1, 2))


def normalised(maps: np.ndarray) -> np.ndarray:
    """Each (H, W) importance map scaled to [0, 1] by its maximum."""
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return maps / np.where(peak > 0, peak, 1.0)


def _initializer(layer, variable):
    """The initializer ``layer`` drew ``variable`` from, as an object (keras-hub's MobileNetV5
    layers keep theirs as a name, 'he_normal'), or None."""
    import keras

    name = variable.name.split("/")[-1].split(":")[0]
    for candidate in (f"{name}_initializer", f"{name.removesuffix('_kernel')}_initializer",
                      "depthwise_initializer" if name == "kernel" else ""):
        if candidate and getattr(layer, candidate, None) is not None:
            return keras.initializers.get(getattr(layer, candidate))
    return None


def weighted_layers(model) -> list[tuple[str, object]]:
    """Layers with initialised weights, top (output) first, nested models included, and the
    sublayers of a composite layer whose weights are its sublayers' (keras-hub's ViT encoder
    holds every block: without them only the head would be randomised)."""
    found = []
    for path, layer in walk(model):
        if is_model(layer):
            continue
        if any(_initializer(layer, v) is not None for v in layer.weights):
            found.append((path, layer))
            continue
        outer = path[:len(path) - len(layer.name)]  # the nested models it sits in
        found += [(outer + (getattr(inner, "path", None) or f"{layer.name}/{inner.name}"), inner)
                  for inner in layer._flatten_layers(include_self=False, recursive=True)
                  if any(_initializer(inner, v) is not None for v in inner.weights)]
    return found[::-1]


def reinitialise(layer, seed: int) -> None:
    """Re-draw every weight of ``layer`` from its own initializer; check that it changed."""
    random_changed = []
    for variable in layer.weights:
        init = _initializer(layer, variable)
        if init is None:
            continue
        config = init.get_config()
        if "seed" in config:
            init = type(init).from_config({**config, "seed": seed})
        before = np.asarray(variable.numpy())
        variable.assign(np.asarray(init(shape=variable.shape, dtype=variable.dtype)))
        if "seed" in config:
            random_changed.append(not np.array_equal(before, variable.numpy()))
    if random_changed and not any(random_changed):
        raise AuditorError(f"re-initialising layer '{layer.name}' left its weights unchanged; the "
                           "sanity check cannot randomise this model")


def randomisable_copy(handle):
    """A handle on a deep copy of the logits model (nested models copied too), same weights:
    the audit's working copy (inputs/copies.py), whose compiled attribution passes are the
    model's traces, called with the copy's weights, for every randomised stage and every other
    use of the copy (inputs/traces.py)."""
    from auditor.inputs.copies import scratch_copy

    return scratch_copy(handle)


def stage_indices(count: int, max_stages: int | None) -> list[int]:
    """Which cumulative stages to measure: all, or ``max_stages`` spread evenly, the last kept
    (one stage: every layer randomised, the one the check reads, not the top layer alone)."""
    if not max_stages or count <= max_stages:
        return list(range(count))
    if max_stages == 1:
        return [count - 1]
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, max_stages)})


def cascading_randomisation(handle, x, targets, methods: list[str], *,
                            max_stages: int | None = None, seed: int = 0,
                            method_options: dict[str, dict] | None = None,
                            score: str = "logit") -> SanityResult:
    """Compare each method's maps on the model and on copies randomised from the top down.

    The original model is never touched: randomisation happens on the audit's working copy,
    whose weights are re-drawn stage by stage (the compiled passes follow the copy's variables,
    so each is traced once for every stage: the model's own trace, called with the copy's
    weights, inputs/traces.py).
    """
    from auditor.methods.attribution.reliability import RANDOMISED, degenerate_reason

    options = method_options or {}
    maps_of = shared_gradient(handle, x, targets, score)  # gradient, saliency...: one pass
    original = {m: importance(maps_of(m, options.get(m))) for m in methods}
    copy = randomisable_copy(handle)
    layers = weighted_layers(copy.logits_model)
    if not layers:
        raise AuditorError(f"model '{handle.name}' has no layers with initialisers to randomise")
    measured = stage_indices(len(layers), max_stages)
    result = SanityResult(stages=[layers[i][0] for i in measured],
                          randomised=[i + 1 for i in measured])
    for m in methods:
        result.rank_correlation[m], result.ssim[m] = [], []
        result.examples[m] = [original[m][0]]
        result.degenerate[m] = degenerate_reason(original[m])
    for index, (_, layer) in enumerate(layers):
        reinitialise(layer, seed + index)
        if index not in measured:
            continue
        maps_of = shared_gradient(copy, x, targets, score)
        for m in methods:
            maps = importance(maps_of(m, options.get(m)))
            result.rank_correlation[m].append(float(rank_correlation(original[m], maps).mean()))
            result.ssim[m].append(float(ssim(normalised(original[m]), normalised(maps)).mean()))
            result.examples[m].append(maps[0])
            if index == len(layers) - 1 and result.degenerate[m] is None:
                why = degenerate_reason(maps)
                result.degenerate[m] = why and f"{why} {RANDOMISED}"
    result.examples = {m: np.stack(v) for m, v in result.examples.items()}
    return result
