"""Counterfactual figures: per mistake the original, the counterfactual, the change and the
contrastive gradient that should point the same way."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import colorbar_uri, figure_uri, show_image, show_signed, signed_map


def example_figure(original, counterfactual, delta, toward_true, title_original,
                   title_after, title_map: str = "gradient: true − predicted") -> str:
    """Original, counterfactual, the change, and the saliency that points the same way."""
    import matplotlib.pyplot as plt

    change, saliency = signed_map(delta), signed_map(toward_true)
    fig, axes = plt.subplots(1, 4, figsize=(7.4, 1.95))
    show_image(axes[0], original)
    axes[0].set_title(title_original, fontsize=8)
    show_image(axes[1], counterfactual)
    axes[1].set_title(title_after, fontsize=8)
    show_signed(axes[2], change, float(np.abs(change).max()) or 1.0)
    axes[2].set_title("change", fontsize=8)
    show_signed(axes[3], saliency, float(np.abs(saliency).max()) or 1.0)
    axes[3].set_title(title_map, fontsize=8)
    return figure_uri(fig)


def titles(e: dict) -> tuple[str, str, str]:
    """The panel titles: a class's mistake, or a multi-label model's wrong decision on one
    label (turned on or off)."""
    if "label" in e:
        state = "on" if e["change"] == "on" else "off"
        done = "now" if e["success"] else "not yet"
        return (f"{e['label']} p={e['p_before']:.2f}", f"{done} {state} (p={e['p_after']:.2f})",
                f"gradient: {'+' if state == 'on' else '−'}{e['label']}")
    return (f"predicted {e['pred']} (p={e['p_pred_before']:.2f})",
            f"{'now' if e['success'] else 'not yet'} {e['true']} (p={e['p_true_after']:.2f})",
            "gradient: true − predicted")


def view(result, dataset) -> dict:
    d = result.data
    summary = result.summary["counterfactuals"]
    if summary.get("multilabel"):
        legend = colorbar_uri("0", low="darker / against the right decision",
                              high="brighter / towards the right decision")
    else:
        legend = colorbar_uri("0", low="darker / favours the prediction",
                              high="brighter / favours the true class")
    examples = [{**e, "figure": example_figure(
        d.original[i], d.counterfactual[i], d.delta[i], d.toward_true[i], *titles(e))}
        for i, e in enumerate(d.examples)]
    return {"summary": summary, "mistakes_total": d.mistakes_total, "examples": examples,
            "legend": legend}
