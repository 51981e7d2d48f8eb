"""Concepts figures: each group's icon and top crops, the mistakes explained by parts, the
concept bank per class and the semantic dictionary."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import (
    colorbar_uri,
    figure_uri,
    image_uri,
    montage,
    show_image,
    show_signed,
)

GRID_PIXELS = 320  # side of the semantic dictionary's grid, whatever the layer's grid


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.clip(np.asarray(image, np.float32), 0, 1)
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]


def _resized(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    from PIL import Image

    pixels = (_rgb(image) * 255).round().astype(np.uint8)
    size = (width or height, height)
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR),
                      np.float32) / 255


def _enlarged(maps: np.ndarray, size) -> np.ndarray:
    """(h, w, K) maps at the image's (H, W), each pixel taking its cell's value (for display)."""
    h, w = maps.shape[:2]
    rows = np.minimum(np.arange(size[0]) * h // size[0], h - 1)
    cols = np.minimum(np.arange(size[1]) * w // size[1], w - 1)
    return maps[rows][:, cols]


def with_map(image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The image in grey with the group's map over it in orange (brighter: more of the
    group), so that a top image shows where the group fired."""
    grey = _rgb(image).mean(axis=-1, keepdims=True)
    heat = _enlarged(weights[..., None], image.shape[:2])
    heat = heat / (heat.max() or 1.0)
    return (1 - 0.6 * heat) * grey + 0.6 * heat * np.array([1.0, 0.55, 0.0], np.float32)


def group_rows(layer, shown: dict, names: list[str], summary: dict) -> list[dict]:
    rows = []
    for g, info in enumerate(summary["groups"]):
        crops = list(layer.examples.crops[g])
        tops = [with_map(shown[int(r)], layer.sample_weights[int(r), :, :, g])
                for r in layer.examples.rows[g]]
        rows.append({
            "group": g, "icon": image_uri(layer.icons[g]) if layer.icons is not None else None,
            "crops": image_uri(montage([crops], 2), size=64 * len(crops)),
            "images": image_uri(montage([tops], 2), size=64 * len(tops)),
            "classes": info["classes"], "real": info["real"], "removal": info["removal"],
            "survives": info["survives_randomisation"],
            "survival": info["survival_correlation"]})
    return rows


def mistake_figure(image, weights: np.ndarray, parts: dict, groups: list[int]) -> str:
    """The image and, for each chosen group, where it sits over it: red when it pushed towards
    the predicted class (over the true one), blue towards the true class."""
    import matplotlib.pyplot as plt

    maps = _enlarged(weights, image.shape[:2])
    fig, axes = plt.subplots(1, 1 + len(groups), figsize=(1.7 * (1 + len(groups)), 1.9))
    axes = np.atleast_1d(axes)
    show_image(axes[0], image)
    axes[0].set_title("image", fontsize=8)
    for ax, g in zip(axes[1:], groups, strict=True):
        diff = parts["difference"][g]
        heat = maps[..., g] / (maps[..., g].max() or 1.0) * np.sign(diff)
        show_signed(ax, heat, 1.0, image=image)
        ax.set_title(f"group {g}: {diff:+.2f}", fontsize=8)
    return figure_uri(fig)


def mistake_rows(data, layer) -> list[dict]:
    rows = []
    for i, m in enumerate(data.mistakes):
        parts = layer.mistakes[i]
        groups = parts["towards_pred"] + parts["towards_true"]
        icons = {g: image_uri(layer.icons[g], size=40) for g in groups} \
            if layer.icons is not None else {}
        rows.append({**m, "figure": mistake_figure(data.mistake_images[i],
                                                   layer.mistake_weights[i], parts, groups),
                     "towards_pred": parts["towards_pred"], "towards_true": parts["towards_true"],
                     "icons": icons, "residual": parts["residual_pred"] - parts["residual_true"],
                     "total": parts["total_pred"] - parts["total_true"]})
    return rows


def bank_rows(layer, names: list[str]) -> list[dict]:
    return [{"class": names[b["class"]], "images": b["images"], "groups": [
        {"group": x["group"], "share": x["share"], "importance": x["importance"],
         "icon": image_uri(layer.icons[x["group"]], size=40) if layer.icons is not None
         else None,
         "crops": image_uri(montage([list(x["crops"])], 2), size=48 * len(x["crops"]))}
        for x in b["groups"]]} for b in layer.bank]


def group_colours(count: int) -> np.ndarray:
    """One colour per group (matplotlib's tab10), so that a cell of the dictionary can be
    told apart even where the pictures are small."""
    import matplotlib

    return np.asarray([matplotlib.colormaps["tab10"](k % 10)[:3] for k in range(count)],
                      np.float32)


def palette(icons: np.ndarray | None, count: int, cell: int) -> list[np.ndarray]:
    """Each group's picture at ``cell`` pixels, tinted half-way to its colour."""
    colours = group_colours(count)
    if icons is None:
        return [np.broadcast_to(c, (cell, cell, 3)).copy() for c in colours]
    return [0.5 * _resized(icon, cell) + 0.5 * c for icon, c in zip(icons, colours,
                                                                    strict=True)]


def dictionary_figure(image, dominant: np.ndarray, strength: np.ndarray, tiles: list) -> str:
    """At each position of the layer's grid, the dominant group's tinted picture, faded by how
    strongly it fires there (white: nothing), beside the image (Olah et al. 2018, figure 1)."""
    h, w = dominant.shape
    cell = tiles[0].shape[0]
    grid = np.ones((h * cell, w * cell, 3), np.float32)
    for y in range(h):
        for x in range(w):
            a = float(strength[y, x])
            grid[y * cell:(y + 1) * cell, x * cell:(x + 1) * cell] = \
                a * tiles[dominant[y, x]] + (1 - a)
    return image_uri(montage([[_resized(image, h * cell, w * cell), grid]], 8),
                     size=GRID_PIXELS)


def dictionary_part(data, layer) -> dict:
    """The dictionary's figures and its legend: every group's tinted picture, in order."""
    dominant, strength = layer.dictionary
    count = len(layer.factors.components)
    cell = max(4, GRID_PIXELS // max(dominant.shape[1:]))
    tiles = palette(layer.icons, count, cell)
    legend = palette(layer.icons, count, 32)
    return {"legend": image_uri(montage([legend], 4), size=36 * count),
            "figures": [{"figure": dictionary_figure(data.shown[int(r)], dominant[i],
                                                     strength[i], tiles),
                         "label": data.class_names[data.shown_labels[int(r)]]}
                        for i, r in enumerate(layer.dictionary_rows)]}


def layer_view(data, layer, summary: dict) -> dict:
    names = data.class_names
    return {**{k: summary[k] for k in ("layer", "reason", "transform", "grid", "channels",
                                       "explained", "residual_share")},
            "groups": group_rows(layer, data.shown, names, summary),
            "labels": summary.get("labels", []),
            "mistakes": mistake_rows(data, layer) if layer.mistakes else [],
            "bank": bank_rows(layer, names),
            "dictionary": dictionary_part(data, layer)}


def view(result, dataset) -> dict:
    d = result.data
    if d is None:  # skipped: the model's layers could not be read
        return {"layers": [], "skipped": result.summary["concepts"].get("skipped")}
    layers = result.summary["concepts"]["layers"]
    labels = bool(result.summary["concepts"].get("multilabel"))
    return {"layers": [layer_view(d, layer, s) for layer, s in zip(d.layers, layers,
                                                                     strict=True)],
            "legend": colorbar_uri("0", low="towards the missed label" if labels
                                   else "towards the true class",
                                   high="towards the false alarm" if labels
                                   else "towards the predicted class"),
            "multilabel": labels, "skipped": None}
