"""Everything the concepts section shows about one layer's groups, computed from images.

The groups are fitted on a stratified sample of the audit images and applied to the images
shown (the sample, the mistakes); this module turns their weights and attributions into the
figures' data: each group's top images and crops, the classes each group carries (a concept
bank, after CRAFT, Fel et al. 2023), the mistakes explained by parts, the semantic dictionary
(Olah et al. 2018, figure 1) and the groups' feature visualisations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.methods.concepts.groups import Attribution, Factors


@dataclass
class Examples:
    """Per group, the sample images that excite it most and a crop around the peak of each."""

    rows: np.ndarray  # (K, k) rows of the sample, most excited first
    peaks: np.ndarray  # (K, k) the group's largest weight on that image
    crops: np.ndarray  # (K, k, s, s, C)


def crop_side(input_size: int, grid: int) -> int:
    """A crop around one position: three cells of the layer's grid (a cell and its
    neighbours), at least an eighth and at most half of the image."""
    return int(np.clip(3 * input_size // grid, max(input_size // 8, 2), input_size // 2))


def crop_at(image: np.ndarray, cell: tuple[int, int], grid: tuple[int, int], side: int):
    """The square of ``side`` pixels centred on the layer cell, kept inside the image."""
    size = image.shape[:2]
    centre = [int((c + 0.5) * s / g) for c, s, g in zip(cell, size, grid, strict=True)]
    top, left = (int(np.clip(c - side // 2, 0, s - side)) for c, s in zip(centre, size,
                                                                           strict=True))
    return image[top:top + side, left:left + side]


def top_examples(images: np.ndarray, weights: np.ndarray, k: int,
                 rows: np.ndarray | None = None) -> Examples:
    """The ``k`` images (among ``rows``, default all) where each group peaks highest."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    grid = weights.shape[1:3]
    side = crop_side(images.shape[1], grid[0])
    peak = weights[rows].max(axis=(1, 2))  # (n, K)
    order = np.argsort(-peak, axis=0, kind="stable")[:k].T  # (K, k)
    chosen = rows[order]
    crops = np.zeros((*chosen.shape, side, side, images.shape[-1]), np.float32)
    for g, picks in enumerate(chosen):
        for j, row in enumerate(picks):
            cell = np.unravel_index(np.argmax(weights[row, :, :, g]), grid)
            crops[g, j] = crop_at(images[row], cell, grid, side)
    return Examples(chosen, np.take_along_axis(peak.T, order, axis=1), crops)


def class_importance(contributions: np.ndarray, labels: np.ndarray,
                     classes: int) -> np.ndarray:
    """(classes, K): each group's mean contribution to the class's logit over the class's
    images (0 for a class without images): CRAFT's importance, by the linear attribution."""
    out = np.zeros((classes, contributions.shape[1]), np.float32)
    for c in np.unique(labels):
        out[c] = contributions[labels == c].mean(axis=0)
    return out


def concept_bank(images, weights, contributions, labels, classes: int, per_class: int = 3,
                 crops: int = 3) -> list[dict]:
    """Per class with images: its groups by importance (positive ones, at most ``per_class``),
    each with its share of the groups' positive total and its top crops on the class's
    images."""
    importance = class_importance(contributions, labels, classes)
    bank = []
    for c in np.unique(labels):
        positive = np.clip(importance[c], 0, None)
        total = float(positive.sum())
        groups = [int(g) for g in np.argsort(-importance[c], kind="stable")[:per_class]
                  if importance[c, g] > 0]
        own = np.flatnonzero(labels == c)
        examples = top_examples(images, weights, crops, rows=own)
        bank.append({"class": int(c), "images": int(len(own)), "groups": [
            {"group": g, "importance": float(importance[c, g]),
             "share": float(positive[g] / total) if total > 0 else 0.0,
             "crops": examples.crops[g]} for g in groups]})
    return bank


def dictionary(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The semantic dictionary's grid: at each position the dominant group and its weight
    relative to the image's largest (for the icon's opacity)."""
    dominant = weights.argmax(axis=-1)
    strength = weights.max(axis=-1)
    peak = strength.reshape(len(strength), -1).max(axis=1).reshape(-1, 1, 1)
    return dominant, strength / np.where(peak > 0, peak, 1.0)


def mistake_parts(attribution_pred: Attribution, attribution_true: Attribution,
                  count: int = 2) -> list[dict]:
    """Per mistake: the groups that pushed most towards the predicted class over the true one
    (largest contribution to pred minus contribution to true) and those that pushed most
    towards the true class, with the residuals."""
    pred, true = attribution_pred.contributions, attribution_true.contributions
    rows = []
    for i, diff in enumerate(pred - true):
        order = np.argsort(-diff, kind="stable")
        rows.append({
            "towards_pred": [int(g) for g in order[:count] if diff[g] > 0],
            "towards_true": [int(g) for g in order[::-1][:count] if diff[g] < 0],
            "difference": [float(v) for v in diff],
            "to_pred": [float(v) for v in pred[i]], "to_true": [float(v) for v in true[i]],
            "residual_pred": float(attribution_pred.residual[i]),
            "residual_true": float(attribution_true.residual[i]),
            "total_pred": float(attribution_pred.total[i]),
            "total_true": float(attribution_true.total[i])})
    return rows


@dataclass
class IconSettings:
    steps: int = 128
    seed: int = 0


def icons(handle, factors: list[Factors], settings: IconSettings) -> list[np.ndarray]:
    """A feature visualisation of every group's direction, every layer's in one batch (the
    featureviz loop and its Fourier parameterisation with decorrelated colour and transforms);
    per layer (K, H, W, C)."""
    from auditor.methods.featureviz import objectives
    from auditor.methods.featureviz.recipes import Recipe, optimise

    counts = [len(f.components) for f in factors]
    total = sum(counts)
    objective = None
    start = 0
    for f, count in zip(factors, counts, strict=True):
        dirs = np.zeros((total, f.directions.shape[1]), np.float32)
        dirs[start:start + count] = f.directions / np.maximum(
            np.linalg.norm(f.directions, axis=1, keepdims=True), 1e-12)
        mask = np.zeros(total, np.float32)
        mask[start:start + count] = 1.0
        term = objectives.direction(f.layer, dirs) * mask
        objective = term if objective is None else objective + term
        start += count
    recipe = Recipe(steps=settings.steps, seed=settings.seed, snapshots=())
    images = optimise(handle, objective, recipe, total).images
    return np.split(images, np.cumsum(counts)[:-1])


@dataclass
class LayerConcepts:
    """One layer's groups and what the figures need of them."""

    layer: str
    reason: str
    factors: Factors
    grid: tuple[int, int]
    sample_weights: np.ndarray  # (n, h, w, K) on the sample
    sample_contributions: np.ndarray  # (n, K) to each sample image's label
    sample_residual: np.ndarray  # (n,)
    examples: Examples
    bank: list[dict]
    mistakes: list[dict] = field(default_factory=list)
    mistake_weights: np.ndarray | None = None  # (m, h, w, K)
    dictionary: tuple | None = None  # (dominant, strength), each (d, h, w)
    dictionary_rows: np.ndarray | None = None  # rows of the sample shown
    removal: list = field(default_factory=list)  # faithful.Removal per group
    removal_skipped: str | None = None  # why the removal test could not run
    # A multi-label sample's: per label, the removal test of the group that carries it most,
    # on the label's images (faithful.Removal, its target the label)
    label_removal: list = field(default_factory=list)
    survival: np.ndarray | None = None  # (K,) best rank correlation with a random model's
    icons: np.ndarray | None = None  # (K, H, W, C)
