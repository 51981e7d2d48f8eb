"""Feature-visualisation figures: thumbnails, comparison and evolution grids, the TV plot.

Grids are drawn as one montage in one axes (labels as text), which is many times faster than a
matplotlib axes per image and looks the same.
"""

from __future__ import annotations

import numpy as np

from auditor.report.figures import figure_uri, image_uri, montage

CELL = 0.9  # inches per image in the grids
GAP = 0.14  # gap between images, as a fraction of an image
TEXT_ROOM = 0.22  # room under each image for its caption, as a fraction of an image


def thumbnail(image: np.ndarray) -> str:
    return image_uri(image, size=96)


def _montage(grid: list[list[np.ndarray]]) -> tuple[np.ndarray, int, int]:
    """The images' montage with room under each for its caption, and the steps between them."""
    height, width = grid[0][0].shape[:2]
    gap_x, gap_y = int(round(GAP * width)), int(round((GAP + TEXT_ROOM) * height))
    return montage(grid, gap_x, gap_y), height + gap_y, width + gap_x


def _grid_figure(grid, titles: list[str], row_names: list[str], captions) -> str:
    """A montage with column titles, row names and a caption under every image."""
    import matplotlib.pyplot as plt

    sheet, step_y, step_x = _montage(grid)
    height, width = grid[0][0].shape[:2]
    rows, cols = len(grid), len(grid[0])
    fig = plt.figure(figsize=(CELL * cols * (1 + GAP) + 0.4,
                              CELL * rows * (1 + GAP + TEXT_ROOM) + 0.3))
    ax = fig.add_axes((0.4 / fig.get_figwidth(), 0, 1 - 0.4 / fig.get_figwidth(),
                       1 - 0.3 / fig.get_figheight()))
    ax.imshow(sheet, interpolation="nearest")
    ax.set_axis_off()
    for c, title in enumerate(titles):
        ax.text(c * step_x + width / 2, -2, title, ha="center", va="bottom", fontsize=7)
    for r, name in enumerate(row_names):
        ax.text(-2, r * step_y + height / 2, name, ha="right", va="center", fontsize=8)
        for c in range(cols):
            ax.text(c * step_x + width / 2, r * step_y + height + 0.5, captions(r, c),
                    ha="center", va="top", fontsize=5.5)
    return figure_uri(fig)


def comparison_grid(per_run: dict[str, np.ndarray], class_names: list[str],
                    verdicts: dict[str, dict]) -> str:
    """Rows: classes; columns: variants. Under each image: the model's confidence, the judge's
    verdict (a tick when it sees the class) and the total variation."""
    labels = list(per_run)
    grid = [[per_run[label][r] for label in labels] for r in range(len(class_names))]

    def caption(r, c):
        verdict = verdicts[labels[c]]
        mark = "✓" if verdict["judge_agrees"][r] else "✗"
        return (f"p {verdict['confidence'][r]:.2f} · judge {mark} · "
                f"TV {verdict['total_variation'][r]:.2f}")

    return _grid_figure(grid, labels, class_names, caption)


def contrast_strip(per_run: dict[str, np.ndarray], class_names: list[str],
                   verdicts: dict[str, dict]) -> str:
    """One row per variant (e.g. unregularised above regularised), one column per class."""
    labels = list(per_run)
    grid = [[per_run[label][c] for c in range(len(class_names))] for label in labels]

    def caption(r, c):
        verdict = verdicts[labels[r]]
        return f"p {verdict['confidence'][c]:.2f} · TV {verdict['total_variation'][c]:.2f}"

    return _grid_figure(grid, class_names, labels, caption)


def evolution_grid(snapshots: dict[int, np.ndarray], confidence: dict[int, np.ndarray],
                   class_names: list[str]) -> str:
    """Rows: classes; columns: optimisation steps, with the model's confidence at each."""
    steps = sorted(snapshots)
    grid = [[snapshots[s][r] for s in steps] for r in range(len(class_names))]
    return _grid_figure(grid, [f"step {s}" for s in steps], class_names,
                        lambda r, c: f"p {confidence[steps[c]][r]:.2f}")


def tv_histogram(real_tv: np.ndarray, natural_bound: float, marks: dict[str, np.ndarray]) -> str:
    """Total variation of the real images (histogram, ``natural_bound``, their 95th percentile,
    dashed) and of the visualisations (ticks), on one axis."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    everything = np.concatenate([real_tv, *marks.values()])
    bins = np.linspace(0, float(everything.max()) * 1.05 or 1.0, 50)
    ax.hist(real_tv, bins=bins, color="#999999", label="real images")
    ax.axvline(natural_bound, color="black", linestyle="--", linewidth=1,
               label="real 95th percentile")
    top = ax.get_ylim()[1]
    colours = {"regularised": "#1a7f37", "unregularised": "#cf222e"}
    for i, (label, values) in enumerate(marks.items()):
        ax.vlines(values, top * (0.55 + 0.2 * i), top * (0.7 + 0.2 * i),
                  color=colours.get(label, f"C{i}"), linewidth=1.5, label=f"{label} images")
    ax.set_xlabel("total variation (mean neighbour difference)")
    ax.set_ylabel("real images")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return figure_uri(fig)


def _comparison_order(per_run: dict) -> list[str]:
    first = [label for label in ("unregularised", "regularised") if label in per_run]
    return first + [label for label in per_run if label not in first]


def view(result, dataset) -> dict:
    d = result.data
    per_run, verdicts, shown = d.per_run, d.verdicts, d.class_names
    classes = [{**row, "image": thumbnail(per_run["regularised"][i])}
               for i, row in enumerate(d.class_rows)]
    if d.label_top_images is not None:  # a multi-label model: each label's top real images
        for row, images in zip(classes, d.label_top_images, strict=True):
            row["top_images"] = [thumbnail(img) for img in images]
    channels = [{**row, "image": thumbnail(d.channel_images[i]),
                 "top_images": [thumbnail(img) for img in d.top_images[i]]}
                for i, row in enumerate(d.channel_rows)]
    return {
        **d.facts, "classes": classes, "channels": channels,
        "multilabel": d.label_top_images is not None,
        "contrast_figure": contrast_strip(
            {label: per_run[label] for label in ("unregularised", "regularised")},
            shown, verdicts) if d.compare else None,
        "comparison_figure": comparison_grid(
            {label: per_run[label] for label in _comparison_order(per_run)},
            shown, verdicts) if d.compare else None,
        "evolution_figure": evolution_grid(d.evolution, d.evolution_confidence, shown),
        "tv_figure": tv_histogram(d.real_tv, d.natural_bound, {
            label: verdicts[label]["total_variation"] for label in verdicts
            if label in ("regularised", "unregularised")}),
    }
