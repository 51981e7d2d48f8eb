"""Contrastive figures: the image, the three signed maps on one shared scale, and the difference
over the image."""

from __future__ import annotations

import numpy as np

from auditor.methods.attribution.smoothing import smooth_map
from auditor.report.figures import colorbar_uri, figure_uri, show_image, show_signed, signed_map


def example_figure(image, pred_map, true_map, diff_map, pred_name, true_name, p_pred, p_true,
                   sigma: float, of_difference: bool = False) -> str:
    import matplotlib.pyplot as plt

    heats = [smooth_map(signed_map(m), sigma) for m in (pred_map, true_map, diff_map)]
    limit = float(np.max(np.abs(np.stack(heats)))) or 1.0
    fig, axes = plt.subplots(1, 5, figsize=(8.2, 1.9))
    show_image(axes[0], image)
    axes[0].set_title(f"true {true_name}\npredicted {pred_name}", fontsize=8)
    titles = [f"for {pred_name} (p={p_pred:.2f})", f"for {true_name} (p={p_true:.2f})",
              f"map of ({pred_name} − {true_name})" if of_difference
              else f"{pred_name} minus {true_name}"]
    for ax, heat, title in zip(axes[1:4], heats, titles, strict=True):
        show_signed(ax, heat, limit)
        ax.set_title(title, fontsize=8)
    show_signed(axes[4], heats[2], limit, image=image)
    axes[4].set_title("difference over image", fontsize=8)
    return figure_uri(fig)


def label_figure(image, first_map, alarm_map, diff_map, e: dict, paired: bool,
                 sigma: float) -> str:
    """A multi-label model's example: the map of its missed label (else its false alarm) and,
    where it has both, of the false alarm and of missed minus false alarm."""
    import matplotlib.pyplot as plt

    maps = (first_map, alarm_map, diff_map) if paired else (first_map,)
    heats = [smooth_map(signed_map(m), sigma) for m in maps]
    limit = float(np.max(np.abs(np.stack(heats)))) or 1.0
    fig, axes = plt.subplots(1, len(heats) + 2, figsize=(1.65 * (len(heats) + 2), 1.9))
    show_image(axes[0], image)
    axes[0].set_title(f"#{e['index']}", fontsize=8)
    first = (f"missed {e['missed']} (p={e['p_missed']:.2f})" if e["missed"] is not None
             else f"false alarm {e['false_alarm']} (p={e['p_false_alarm']:.2f})")
    titles = [first]
    if paired:
        titles += [f"false alarm {e['false_alarm']} (p={e['p_false_alarm']:.2f})",
                   f"{e['missed']} minus {e['false_alarm']}"]
    for ax, heat, title in zip(axes[1:-1], heats, titles, strict=True):
        show_signed(ax, heat, limit)
        ax.set_title(title, fontsize=7)
    show_signed(axes[-1], heats[-1], limit, image=image)
    axes[-1].set_title("over image", fontsize=8)
    return figure_uri(fig)


def view(result, dataset) -> dict:
    d = result.data
    if hasattr(d, "paired"):  # a multi-label model's (sections.contrastive.LabelContrastData)
        examples = [{**e, "figure": label_figure(d.images[i], d.for_first[i], d.for_alarm[i],
                                                 d.diff[i], e, bool(d.paired[i]),
                                                 d.smooth_sigma)}
                    for i, e in enumerate(d.examples)]
        return {"examples": examples, "legend": colorbar_uri("0"), "multilabel": True}
    examples = [{**e, "figure": example_figure(d.images[i], d.for_pred[i], d.for_true[i],
                                               d.diff[i], e["pred"], e["true"], e["p_pred"],
                                               e["p_true"], d.smooth_sigma,
                                               d.of_difference)}
                for i, e in enumerate(d.examples)]
    return {"examples": examples, "legend": colorbar_uri("0")}
