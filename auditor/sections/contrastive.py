"""Contrastive saliency for the most confident mistakes: why the predicted class, why not the true
one, and the difference (predicted minus true), on one symmetric diverging scale per example."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.sections.base import Context, SectionResult
from auditor.sections.performance import most_confident_mistakes

NAME = "contrastive"
TITLE = "Contrastive saliency"


@dataclass
class Options:
    examples: int = 8
    method: str = "gradient"
    score: str = "logit"
    smooth_sigma: float = 0.0  # Gaussian smoothing for display only; 0 shows raw maps


def contrastive_maps(handle, images, preds, labels, method="gradient", score="logit"):
    """Saliency of the predicted class, of the true class, and their difference.

    Both classes are explained in one batched call (the images stacked twice, one target per
    row); the difference is the attribution of (score_pred - score_true).
    """
    from auditor.methods.attribution import attribute

    stacked = np.concatenate([images, images])
    targets = np.concatenate([preds, labels])
    maps = attribute(handle, stacked, targets, method=method, score=score)
    for_pred, for_true = maps[: len(images)], maps[len(images):]
    return for_pred, for_true, for_pred - for_true


def example_figure(image, pred_map, true_map, diff_map, pred_name, true_name, p_pred, p_true,
                   sigma: float) -> str:
    """Image, the three signed maps on one shared scale, and the difference over the image."""
    import matplotlib.pyplot as plt

    from auditor.methods.attribution.smoothing import smooth_map
    from auditor.report.figures import figure_uri, show_image, show_signed, signed_map

    heats = [smooth_map(signed_map(m), sigma) for m in (pred_map, true_map, diff_map)]
    limit = float(np.max(np.abs(np.stack(heats)))) or 1.0
    fig, axes = plt.subplots(1, 5, figsize=(8.2, 1.9))
    show_image(axes[0], image)
    axes[0].set_title(f"true {true_name}\npredicted {pred_name}", fontsize=8)
    titles = [f"for {pred_name} (p={p_pred:.2f})", f"for {true_name} (p={p_true:.2f})",
              f"{pred_name} minus {true_name}"]
    for ax, heat, title in zip(axes[1:4], heats, titles, strict=True):
        show_signed(ax, heat, limit)
        ax.set_title(title, fontsize=8)
    show_signed(axes[4], heats[2], limit, image=image)
    axes[4].set_title("difference over image", fontsize=8)
    return figure_uri(fig)


def run(ctx: Context, options: Options) -> SectionResult:
    from auditor.report.figures import colorbar_uri

    p, names = ctx.predictions, ctx.dataset.class_names
    positions = most_confident_mistakes(p, options.examples)
    images = ctx.dataset.images(positions)
    preds, labels = p.preds[positions], p.labels[positions]
    for_pred, for_true, diff = contrastive_maps(ctx.handle, images, preds, labels,
                                                options.method, options.score)
    ctx.cache[NAME] = {"positions": positions, "pred": for_pred, "true": for_true, "diff": diff}
    probs = p.probs_at(positions)
    examples = []
    for i, pos in enumerate(positions):
        p_pred, p_true = float(probs[i, preds[i]]), float(probs[i, labels[i]])
        examples.append({
            "index": int(pos), "true": names[labels[i]], "pred": names[preds[i]],
            "p_pred": p_pred, "p_true": p_true,
            "figure": example_figure(images[i], for_pred[i], for_true[i], diff[i],
                                     names[preds[i]], names[labels[i]], p_pred, p_true,
                                     options.smooth_sigma)})
    smoothing = (f"Maps are smoothed for display (Gaussian, sigma {options.smooth_sigma:g} px)."
                 if options.smooth_sigma > 0 else "Maps are raw, not smoothed.")
    return SectionResult(
        name=NAME, title=TITLE,
        intro=f"For each mistake: the {options.method} saliency of the predicted class's "
              f"{options.score}, of the true class's, and their difference. Red means the pixel "
              "raised the score (in the difference: pushed towards the wrong class); blue lowered "
              f"it. The three maps of an example share one symmetric scale. {smoothing}",
        summary={NAME: {"method": options.method, "score": options.score,
                        "examples": [{k: e[k] for k in ("index", "true", "pred", "p_pred",
                                                         "p_true")} for e in examples]}},
        view={"examples": examples, "legend": colorbar_uri("0")},
    )
