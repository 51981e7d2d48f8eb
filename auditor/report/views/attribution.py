"""Attribution figures: each method's maps of the mistakes, the layers' maps, the sanity
cascade and the deletion and insertion curves, drawn as mosaics of RGB tiles."""

from __future__ import annotations

import numpy as np

from auditor.methods.attribution.smoothing import smooth_map
from auditor.report.figures import (
    DIVERGING,
    DPI,
    SEQUENTIAL,
    colorbar_uri,
    figure_uri,
    line_plot_uri,
    montage,
    signed_map,
    symmetric_limit,
)


def coloured(heat: np.ndarray, signed: bool) -> np.ndarray:
    """An (H, W) map as RGB: signed maps on the shared diverging colormap with a symmetric
    scale, unsigned ones on the sequential colormap from zero to their maximum."""
    from matplotlib import colormaps

    if signed:
        limit = symmetric_limit(heat)
        return colormaps[DIVERGING](np.clip(heat / limit, -1, 1) * 0.5 + 0.5)[..., :3]
    peak = float(heat.max()) or 1.0
    return colormaps[SEQUENTIAL](np.clip(heat / peak, 0, 1))[..., :3]


def grey_rgb(image: np.ndarray) -> np.ndarray:
    image = np.clip(image, 0, 1)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


LABEL_PT = 7  # the mosaics' label size
# A label character's mean width as a share of the font size (DejaVu Sans, matplotlib's default,
# runs about 0.55 to 0.6 em a lower-case letter): how many characters one column holds.
CHAR_EM = 0.6


def column_lines(label: str, tile_px: float) -> str:
    """``label`` wrapped onto lines as wide as its column (at spaces, and after the underscores
    of a layer name), so that neighbouring columns' labels never overlap."""
    import textwrap

    fit = max(4, int(tile_px / (CHAR_EM * LABEL_PT * DPI / 72)))
    return textwrap.fill(label.replace("_", "_ "), fit).replace("_ ", "_")


def mosaic_figure(tiles: list[list[np.ndarray]], row_labels: list[str],
                  column_labels: list[str], boxes: list | None = None, tile_px: int = 80):
    """RGB tiles of one size drawn as one image (fast: one imshow, not one axes per tile), with
    labelled rows and columns (each column's label wrapped to its width) and optional boxes on
    the first column."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    height, width = tiles[0][0].shape[:2]
    gap = max(1, width // 16)
    picture = montage(tiles, gap)
    scale = tile_px / width
    column_labels = [column_lines(label, (width + gap) * scale) for label in column_labels]
    top = 0.18 + 0.11 * max(label.count("\n") + 1 for label in column_labels)
    fig = plt.figure(figsize=(picture.shape[1] * scale / DPI + 1.3,
                              picture.shape[0] * scale / DPI + top), dpi=DPI)
    ax = fig.add_axes((1.3 / fig.get_figwidth(), 0, 1 - 1.3 / fig.get_figwidth(),
                       1 - top / fig.get_figheight()))
    ax.imshow(picture, interpolation="nearest" if width <= 64 else "antialiased")
    ax.set_xticks([(width + gap) * (i + 0.5) for i in range(len(column_labels))],
                  column_labels, fontsize=LABEL_PT)
    ax.xaxis.tick_top()
    ax.set_yticks([(height + gap) * (i + 0.5) for i in range(len(row_labels))], row_labels,
                  fontsize=LABEL_PT)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    for row, box in enumerate(boxes or []):
        if box is not None:
            left, upper, right, bottom = box
            ax.add_patch(Rectangle((left - .5, row * (height + gap) + upper - .5), right - left,
                                   bottom - upper, fill=False, edgecolor="#f0a000", linewidth=1.5))
    return fig


def mosaic_uri(tiles: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str],
               boxes: list | None = None, tile_px: int = 80) -> str:
    return figure_uri(mosaic_figure(tiles, row_labels, column_labels, boxes, tile_px))


def examples_figure(images, maps: dict, signed: dict, boxes, row_labels, sigma: float) -> str:
    """One row per image: the image with its saliency box, then each method's map."""
    tiles = [[grey_rgb(image)] + [coloured(smooth_map(signed_map(a[i]), sigma), signed[m])
                                  for m, a in maps.items()]
             for i, image in enumerate(images)]
    columns = ["image"] + [m.replace("_", " ") for m in maps]
    return mosaic_uri(tiles, row_labels, columns, boxes)


def layers_figure(images, heats: list[np.ndarray], layer_names: list[str], row_labels) -> str:
    """Gradient x activation of each layer, channels summed and enlarged to the image."""
    labels = ["image"] + [f"{name.rsplit('/', 1)[-1]} ({shape[0]}x{shape[1]})"
                          for name, shape in layer_names]
    tiles = [[grey_rgb(image)] + [coloured(heat[i], signed=True) for heat in heats]
             for i, image in enumerate(images)]
    return mosaic_uri(tiles, row_labels, labels)


def sanity_figure(result) -> str:
    """Sample 0's importance map per method (rows) as layers are randomised (columns)."""
    tiles = [[coloured(heat, signed=False) for heat in result.examples[m]]
             for m in result.examples]
    columns = ["original"] + [f"-{stage.rsplit('/', 1)[-1]}" for stage in result.stages]
    return mosaic_uri(tiles, [m.replace("_", " ") for m in result.examples], columns,
                      tile_px=48)


def sanity_view(sanity: dict) -> dict:
    result = sanity["result"]
    return {"rows": sanity["rows"], "stages": result.stages, "samples": sanity["samples"],
            "maps": sanity_figure(result),
            "curve": line_plot_uri(result.randomised, result.rank_correlation,
                                   "layers randomised, from the top", "rank correlation",
                                   "Maps vs the original model")}


def faithfulness_view(faith: dict) -> dict:
    curves = faith["curves"]
    fractions = next(iter(curves.values())).fractions
    return {
        "rows": faith["rows"], "samples": faith["samples"], "steps": faith["steps"],
        "deletion": line_plot_uri(fractions, {m: c.deletion for m, c in curves.items()},
                                  "fraction of pixels removed", "probability of the class",
                                  "Deletion (lower is better)"),
        "insertion": line_plot_uri(fractions, {m: c.insertion for m, c in curves.items()},
                                   "fraction of pixels inserted", "probability of the class",
                                   "Insertion (higher is better)"),
        "completeness": faith["completeness"], "unavailable": faith["unavailable"],
    }


def bound_text(bounds: dict) -> str:
    """'pass < 0.5, fail > 0.7'-style text of a column's bounds."""
    parts = []
    for level in ("warn", "fail"):
        for side, sign in (("above", ">"), ("below", "<")):
            if f"{level}_{side}" in bounds:
                parts.append(f"{level} {sign} {bounds[f'{level}_{side}']:g}")
    return ", ".join(parts)


def reliability_view(d, trusted_method: str | None) -> dict:
    """The card as table rows, the bound of each column, and the untrusted methods (not those
    the card did not judge: below its floors it judges none)."""
    card, judged = d.reliability, not d.unmeasured
    return {"rows": [{"method": m, **entry, "judged": judged} for m, entry in card.items()],
            "columns": [{"name": name, "bounds": bound_text(b)}
                        for name, b in d.reliability_bounds.items()],
            "untrusted": [m for m, entry in card.items() if not entry["trusted"] and judged],
            "trusted_method": trusted_method, "invariance_reason": d.invariance_reason,
            "unmeasured": d.unmeasured}


def view(result, dataset) -> dict:
    d = result.data
    figure = layers = None
    if d.examples:
        figure = examples_figure(d.images, d.maps, d.signed, d.boxes, d.row_labels,
                                 d.display_smoothing)
        if d.layer_heats:
            layers = layers_figure(d.images, d.layer_heats, d.layer_shapes, d.row_labels)
    return {"examples": d.examples, "figure": figure, "layers": layers,
            "sanity": sanity_view(d.sanity), "faithfulness": faithfulness_view(d.faithfulness),
            "legend": colorbar_uri("0"), "smoothing": d.smoothing,
            "reliability": reliability_view(
                d, result.summary["attribution"]["trusted_method"])}
