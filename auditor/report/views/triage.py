"""Triage figures: the reliability diagram, each shown mistake beside its contrastive saliency
with its verdict, the likely label errors, the failure slices with their mean saliency, and the
duplicate and leaked images."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import (
    SEQUENTIAL,
    colorbar_uri,
    figure_uri,
    image_uri,
    show_image,
    show_signed,
    signed_map,
    symmetric_limit,
)

VERDICT_WORDS = {"label_error": "likely label error", "ambiguous": "ambiguous",
                 "out_of_distribution": "out of distribution", "model_error": "model error"}


def reliability_figure(triage: dict) -> str:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), with the
    share of images in each bin below."""
    import matplotlib.pyplot as plt

    rel, bins = triage["reliability"], triage["ece_bins"]
    edges = np.linspace(0, 1, bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1 / bins
    accuracy = np.array([np.nan if a is None else a for a in rel["accuracy"]], float)
    count = np.asarray(rel["count"], float)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.2, 4.0), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres, np.nan_to_num(accuracy), width=width * 0.92, color="#0969da",
            label="accuracy")
    top.plot([0, 1], [0, 1], color="#59636e", linestyle="--", linewidth=1, label="calibrated")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(fontsize=7, loc="upper left")
    top.set_title(f"ECE {triage['ece']:.3f} ({bins} bins) · after T={triage['temperature']:.2f}: "
                  f"{triage['ece_after_temperature']:.3f}", fontsize=9)
    bottom.bar(centres, count / max(count.sum(), 1), width=width * 0.92, color="#8c959f")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("share", fontsize=8)
    bottom.set_xlim(0, 1)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return figure_uri(fig)


def mistake_figure(image, diff) -> str:
    """The image and its (predicted minus true) saliency over it, one symmetric scale."""
    import matplotlib.pyplot as plt

    heat = signed_map(diff)
    limit = symmetric_limit(heat)
    fig, axes = plt.subplots(1, 2, figsize=(2.6, 1.35))
    show_image(axes[0], image)
    show_signed(axes[1], heat, limit, image=image)
    return figure_uri(fig)


def slice_figure(images: np.ndarray, saliency: np.ndarray) -> str:
    """A grid of the slice's images, then their mean absolute saliency."""
    import matplotlib.pyplot as plt

    count = len(images) + 1
    columns = min(count, 5)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.35 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, image in zip(axes.ravel(), images, strict=False):
        show_image(ax, image)
    last = axes.ravel()[len(images)]
    last.imshow(saliency, cmap=SEQUENTIAL, interpolation="nearest")
    last.set_title("mean |saliency|", fontsize=7)
    return figure_uri(fig)


def legend(triage: dict) -> str:
    if triage.get("multilabel"):  # each map is of one label's logit, signed
        return colorbar_uri("0", low="towards the right decision",
                            high="towards the wrong decision")
    return colorbar_uri("0", low="towards the true class", high="towards the predicted class")


def view(result, dataset) -> dict:
    d = result.data
    triage = d.summary
    mistakes = [{**m, "words": VERDICT_WORDS[m["verdict"]],
                 "figure": mistake_figure(d.mistake_images[i], d.mistake_diffs[i])}
                for i, m in enumerate(d.mistakes)]
    label_errors = [{**e, "image": image_uri(d.label_error_images[i])}
                    for i, e in enumerate(d.label_errors)]
    slices = [{**s, "figure": slice_figure(pic["images"], pic["saliency"])}
              for s, pic in zip(d.slices, d.slice_pictures, strict=False)]
    groups = [{**g, "images": [image_uri(img) for img in images]}
              for g, images in zip(triage["duplicate_groups"], d.duplicate_images, strict=False)]
    leaks = [{**leak, "image": image_uri(d.leak_images[i]),
              "train_image": image_uri(d.leak_train_images[i])}
             for i, leak in enumerate(triage["leakage"][: len(d.leak_images)])]
    table = [{**r, "words": VERDICT_WORDS[r["verdict"]]} for r in triage["verdicts"]]
    return {"triage": triage, "reliability": reliability_figure(triage), "mistakes": mistakes,
            "table": table, "label_errors": label_errors, "slices": slices, "groups": groups,
            "leaks": leaks, "legend": legend(triage),
            "verdict_words": VERDICT_WORDS}
