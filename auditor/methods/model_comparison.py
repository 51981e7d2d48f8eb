"""Two models' saliency on the same images: where each looks, and how far they agree per class.

Both models explain the same class of the same image (the true class), with the same method, so
that a difference in the maps is a difference between the models. Agreement is the Spearman rank
correlation of the saliency magnitudes (summed over channels): 1 when the two models rank the
pixels alike, near 0 when their maps are unrelated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.errors import ModelError
from auditor.methods.agreement import rank_correlation


@dataclass
class SaliencyComparison:
    maps_a: np.ndarray  # (N, H, W, C) the audited model's maps
    maps_b: np.ndarray  # (N, H, W, C) the compared model's maps
    agreement: np.ndarray  # (N,) rank correlation per image

    def per_class(self, labels: np.ndarray, class_names: list[str]) -> dict[str, float]:
        """Mean agreement over the images of each class present."""
        return {class_names[c]: float(np.nanmean(self.agreement[labels == c]))
                for c in np.unique(labels)}


def check_comparable(handle_a, handle_b) -> None:
    """The second model must read the same images and name the same classes."""
    if tuple(handle_a.input_shape) != tuple(handle_b.input_shape):
        raise ModelError(f"compare model '{handle_b.path}' takes inputs of shape "
                         f"{handle_b.input_shape}, the audited model {handle_a.input_shape}; "
                         "compare models that read the same images")
    if handle_a.num_classes != handle_b.num_classes:
        raise ModelError(f"compare model '{handle_b.path}' has {handle_b.num_classes} classes, "
                         f"the audited model {handle_a.num_classes}; compare models of one task")


def compare_saliency(handle_a, handle_b, x, labels, method: str = "gradient",
                     **options) -> SaliencyComparison:
    """Both models' maps of the true class, and their rank agreement per image."""
    from auditor.methods.attribution import attribute

    check_comparable(handle_a, handle_b)
    maps_a = attribute(handle_a, x, labels, method=method, **options)
    maps_b = attribute(handle_b, x, labels, method=method, **options)
    agreement = rank_correlation(np.abs(maps_a).sum(axis=-1), np.abs(maps_b).sum(axis=-1))
    return SaliencyComparison(maps_a, maps_b, agreement)
