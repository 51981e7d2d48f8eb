"""Clever Hans figures: examples and an overview of the injection test, a mosaic per class of
the discovery's clusters, and the penultimate features in two dimensions."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import SEQUENTIAL, figure_uri, montage, show_image

EXAMPLES = 3  # examples shown per injected shortcut
MEMBERS = 4  # members shown per discovered cluster
TILE = 40  # pixels per thumbnail in the discovery mosaics
LEVELS = 16  # grey levels per channel in the mosaics: smooth maps compress 2.5x smaller


def heat_tile(heat: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """An RGB thumbnail of a relevance map on the sequential colormap, over a faded image."""
    import cv2
    import matplotlib

    heat = cv2.resize(np.asarray(heat, np.float32), (TILE, TILE), interpolation=cv2.INTER_LINEAR)
    peak = heat.max()
    rgb = matplotlib.colormaps[SEQUENTIAL](heat / peak if peak > 0 else heat)[..., :3]
    if image is None:
        return rgb.astype(np.float32)
    grey = cv2.resize(np.clip(image, 0, 1).mean(axis=-1), (TILE, TILE),
                      interpolation=cv2.INTER_AREA)[..., None]
    return (0.45 * grey + 0.55 * rgb).astype(np.float32)


def mosaic(rows: list[list[np.ndarray]], columns: int, gap: int = 3) -> np.ndarray:
    """The tiles' montage in LEVELS grey levels per channel."""
    return np.round(montage(rows, gap, columns=columns) * (LEVELS - 1)) / (LEVELS - 1)


def cluster_rows(found, maps: np.ndarray, images: np.ndarray, index_of: dict) -> list:
    rows = []
    for c in range(found.k):
        members = found.positions[found.clusters == c][:MEMBERS]
        rows.append([heat_tile(found.means[c])] + [
            heat_tile(maps[index_of[p]], images[index_of[p]]) for p in members])
    return rows


def class_figure(found, maps: np.ndarray, images: np.ndarray, index_of: dict,
                 points: np.ndarray | None) -> str:
    """One class: per cluster (one row) its mean map and a few members with their maps; beside
    it, when there are clusters to tell apart, the t-SNE of the class's maps by cluster."""
    import matplotlib.pyplot as plt

    height = 0.75 + 0.62 * max(found.k, 2)
    if found.k > 1:
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, height),
                                          gridspec_kw={"width_ratios": [MEMBERS + 1, 3.2]})
    else:
        fig, left = plt.subplots(figsize=(4.3, height))
    left.imshow(mosaic(cluster_rows(found, maps, images, index_of), MEMBERS + 1),
                interpolation="nearest")
    left.set_xticks([TILE / 2], ["cluster mean"], fontsize=7)
    left.xaxis.tick_top()
    left.set_yticks([(TILE + 3) * c + TILE / 2 for c in range(found.k)],
                    [f"{c}: {int((found.clusters == c).sum())}"
                     + (" *" if found.flagged and c == found.suspect else "")
                     for c in range(found.k)], fontsize=7)
    left.tick_params(length=0)
    for side in left.spines.values():
        side.set_visible(False)
    if found.k > 1:
        for c in range(found.k):
            at = found.clusters == c
            right.scatter(points[at, 0], points[at, 1], s=8, label=f"cluster {c}")
        right.set_xticks([])
        right.set_yticks([])
        right.set_title("t-SNE of the class's maps", fontsize=8)
        right.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return figure_uri(fig)


def feature_figure(points: np.ndarray, labels: np.ndarray, wrong: np.ndarray,
                   class_names: list[str]) -> str:
    """Penultimate features in 2-D (t-SNE), coloured by true class, mistakes as black crosses."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c in np.unique(labels):
        at = labels == c
        ax.scatter(points[at, 0], points[at, 1], s=7, color=cmap(c % cmap.N),
                   label=class_names[c] if len(class_names) <= 20 else None)
    ax.scatter(points[wrong, 0], points[wrong, 1], s=26, marker="x", color="black",
               linewidths=0.9, label="mistake")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return figure_uri(fig)


def example_figure(result, methods: list[str]) -> str | None:
    """Rows of examples: clean, with the shortcut, its mask, and |relevance| per method."""
    import matplotlib.pyplot as plt

    shown = result.examples
    if not shown or not len(shown.get("poisoned", [])):
        return None
    count = min(EXAMPLES, len(shown["poisoned"]))
    # half the explained images are of the target class: show one of those and the others
    rows = sorted({0, len(shown["poisoned"]) // 2, len(shown["poisoned"]) - 1})[:count]
    masks = shown["masks"]
    columns = 2 + (masks is not None) + len(methods)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns, 1.1 * len(rows) + 0.2),
                             squeeze=False)
    fig.subplots_adjust(wspace=0.06, hspace=0.06)
    for r, i in enumerate(rows):
        show_image(axes[r, 0], shown["clean"][i])
        show_image(axes[r, 1], shown["poisoned"][i])
        col = 2
        if masks is not None:
            axes[r, col].imshow(masks[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, col].set_axis_off()
            col += 1
        for method in methods:
            heat = np.abs(shown["maps"][method][i]).sum(axis=-1)
            axes[r, col].imshow(heat, cmap=SEQUENTIAL, interpolation="nearest")
            if masks is not None:
                axes[r, col].contour(masks[i], levels=[0.5], colors="cyan", linewidths=0.6)
            axes[r, col].set_axis_off()
            col += 1
    titles = ["clean", "with shortcut"] + (["mask"] if masks is not None else []) + [
        f"|{m}|" for m in methods]
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=7)
    return figure_uri(fig)


def overview_figure(results, methods: list[str], flip_threshold: float,
                    detect_ratio: float) -> str:
    """Flip rate per run, and mass ratio per run and method, against their thresholds."""
    import matplotlib.pyplot as plt

    names = [r.shortcut for r in results]
    x = np.arange(len(results))
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 2.6))
    left.bar(x, [r.flip_rate for r in results], color="#888")
    left.axhline(flip_threshold, ls="--", lw=0.8, color="black")
    left.set_xticks(x, names, fontsize=7)
    left.set_ylim(0, 1)
    left.set_title("reliance: flip rate (dashed: learned)", fontsize=8)
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        values = [r.detection[method].mass_ratio if method in r.detection else 0 for r in results]
        right.bar(x + (j - (len(methods) - 1) / 2) * width, values, width, label=method)
    right.axhline(detect_ratio, ls="--", lw=0.8, color="black")
    right.axhline(1.0, ls=":", lw=0.8, color="grey")
    right.set_xticks(x, names, fontsize=7)
    right.set_title("detection: mass in mask / mask area (dashed: detected)", fontsize=8)
    right.legend(fontsize=6)
    fig.tight_layout()
    return figure_uri(fig)


def intervention_figure(finding, class_names: list[str]) -> str:
    """The intervention beside the cluster: members before and after the suspect difference is
    removed, other classes' images before and after it is pasted, with the class's
    probability under each."""
    import matplotlib.pyplot as plt

    shown = finding.effect.examples
    rows = [("member", "member_p", 0, "member"), ("removed", "member_p", 1, "removed"),
            ("other", "other_p", 0, "other class"), ("pasted", "other_p", 1, "pasted")]
    columns = max(len(shown["member"]), len(shown["other"]), 1)
    fig, axes = plt.subplots(4, columns, figsize=(1.0 * columns + 0.4, 4.8), squeeze=False)
    for r, (key, probs, which, label) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(shown[key]):
                show_image(ax, shown[key][c])
                title = f"p({finding.name})={shown[probs][which][c]:.2f}"
                ax.set_title(f"{label}\n{title}" if c == 0 else title, fontsize=6)
    fig.suptitle(f"class {finding.name}: {finding.effect.region}", fontsize=8)
    fig.tight_layout()
    return figure_uri(fig)


def label_discovery(search) -> list[dict]:
    """A multi-label model's search: per label, its map clusters (the maps of its own logit on
    the images carrying it) and, for a candidate, its intervention."""
    rows = []
    for f in search.findings:
        pairs = np.flatnonzero(search.pairs.label == f.label)
        index_of = {int(search.positions[search.pairs.image[r]]): i
                    for i, r in enumerate(pairs)}
        figure = class_figure(f.maps, search.pairs.pooled[pairs],
                              search.images[search.pairs.image[pairs]], index_of,
                              search.cluster_points.get(f.label))
        rows.append({**f.summary(), "name": f.name, "figure": figure,
                     "intervention": intervention_figure(f, [])
                     if f.effect is not None and f.candidate else None})
    return rows


def view(result, dataset) -> dict:
    d = result.data
    if hasattr(d, "label"):  # a multi-label model's (sections.clever_hans.LabelHansData)
        return {"multilabel": True, "label": d.label, "label_injection": d.injection,
                "skipped": d.skipped,
                **({} if d.search is None else {"discovery": label_discovery(d.search)})}
    injected, search = d.injected, d.discovered.search
    out: dict = {"methods": d.methods, "target": d.target}
    if injected.skipped is not None:
        out["injection_skipped"] = injected.skipped
    if injected.entries:
        out["injection"] = [{**entry, "figure": example_figure(r, d.methods)}
                            for entry, r in zip(injected.entries, injected.results, strict=True)]
        out["overview"] = overview_figure(injected.results, d.methods, d.flip_threshold,
                                          d.detect_ratio)
        out["fine_tuning"] = injected.fine_tuning
    if search is not None:
        out["discovery"] = [{**f.summary(), "name": f.name,
                             "sentence": search.sentences.get(f.name),
                             "figure": class_figure(f.maps, search.maps, search.images,
                                                    search.index_of,
                                                    search.cluster_points.get(f.label)),
                             "intervention": intervention_figure(f, d.class_names)
                             if f.effect is not None and f.candidate else None}
                            for f in search.shown]
        out["discovery_hidden"] = search.hidden
    out["properties"] = d.discovered.properties.table
    embedding = d.discovered.embedding
    if embedding.points is not None:
        out["features"] = feature_figure(embedding.points, embedding.labels, embedding.wrong,
                                         d.class_names)
    out["features_n"] = embedding.count
    return out
