"""Robustness figures: accuracy and targeted success against epsilon, the attacked examples with
their perturbation and maps, and the compared model's maps beside the audited one's."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import (
    colorbar_uri,
    figure_uri,
    line_plot_uri,
    show_image,
    show_signed,
    signed_map,
    symmetric_limit,
)


def adversarial_figure(clean, adversarial, epsilon, clean_map, adv_map, titles) -> str:
    """Clean image, attacked image, the perturbation at full colour scale, and both maps."""
    import matplotlib.pyplot as plt

    heats = [signed_map(clean_map), signed_map(adv_map)]
    limit = symmetric_limit(*heats)
    fig, axes = plt.subplots(1, 5, figsize=(8.2, 1.95))
    show_image(axes[0], clean)
    show_image(axes[1], adversarial)
    show_signed(axes[2], signed_map(adversarial - clean), max(epsilon, 1e-12))
    show_signed(axes[3], heats[0], limit)
    show_signed(axes[4], heats[1], limit)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=8)
    return figure_uri(fig)


def comparison_figure(images, maps_a, maps_b, agreement, titles) -> str:
    """One column per class: the image, then the audited and the compared model's maps on one
    scale per column."""
    import matplotlib.pyplot as plt

    columns = len(images)
    fig, axes = plt.subplots(3, columns, figsize=(0.95 * columns + 0.5, 3.2), squeeze=False)
    for c in range(columns):
        heat_a, heat_b = signed_map(maps_a[c]), signed_map(maps_b[c])
        limit = float(max(np.abs(heat_a).max(), np.abs(heat_b).max())) or 1.0
        show_image(axes[0, c], images[c])
        axes[0, c].set_title(titles[c], fontsize=7)
        show_signed(axes[1, c], heat_a, limit)
        show_signed(axes[2, c], heat_b, limit)
        axes[2, c].set_title(f"ρ = {agreement[c]:.2f}", fontsize=7, y=-0.28)
    for row, label in ((1, "audited"), (2, "compared")):
        axes[row, 0].text(-0.15, 0.5, label, fontsize=7, rotation=90, ha="right", va="center",
                          transform=axes[row, 0].transAxes)
    return figure_uri(fig)


def view(result, dataset) -> dict:
    d = result.data
    if d.facts.get("multilabel"):  # sections.robustness.LabelSetData: a table, no figure
        return dict(d.facts)
    out = dict(d.facts)
    out["comparison"] = None
    if d.comparison is not None:
        out["comparison"] = {**d.comparison["shown"],
                             "figure": comparison_figure(*d.comparison["arrays"])}
    out["accuracy_plot"] = line_plot_uri(d.epsilons_255, d.accuracy, "epsilon (× 1/255)",
                                         "accuracy", title=d.plot_title)
    out["targeted_plot"] = line_plot_uri(d.epsilons_255, d.targeted, "epsilon (× 1/255)",
                                         f"reached target ({d.target})")
    out["gallery"] = [{**entry, "figure": adversarial_figure(*arrays)}
                      for entry, arrays in zip(d.gallery, d.gallery_arrays, strict=True)]
    out["legend"] = colorbar_uri("0", low="darker · lowers the score",
                                 high="brighter · raises the score")
    return out
