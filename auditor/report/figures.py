"""Matplotlib figures as self-contained PNG data URIs, in the report's shared visual language.

Images are shown in display space; signed maps on one diverging colormap (red raises the score,
blue lowers it) with a symmetric scale, so that colours mean the same thing in every section.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Class names in any script: DejaVu Sans (matplotlib's own) first, then Noto Sans CJK for
# Chinese, Japanese and Korean names (Debian's fonts-noto-cjk; .ci/run installs it), each used
# by matplotlib's font fallback for the glyphs the fonts before it lack.
FONT_FAMILIES = ("DejaVu Sans", "Noto Sans CJK JP")
DIVERGING = "RdBu_r"
SEQUENTIAL = "magma"
DPI = 96


def use_font_fallback() -> None:
    """Set the font list to the families of FONT_FAMILIES that this machine has. A font
    installed after matplotlib built its font cache is not in it: it is added from its file."""
    from pathlib import Path

    from matplotlib import font_manager

    known = {font.name for font in font_manager.fontManager.ttflist}
    if not set(FONT_FAMILIES) <= known:
        for path in font_manager.findSystemFonts():
            if Path(path).name.startswith("NotoSansCJK-Regular"):
                font_manager.fontManager.addfont(path)
        known = {font.name for font in font_manager.fontManager.ttflist}
    plt.rcParams["font.family"] = [name for name in FONT_FAMILIES if name in known]


use_font_fallback()


def figure_uri(fig, dpi: int = DPI) -> str:
    """Render and close a figure; return it as a ``data:image/png;base64`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image: np.ndarray, size: int = 96) -> str:
    """A single display-space image (H, W, C) as a PNG thumbnail about ``size`` pixels wide:
    small images are enlarged by whole pixels (kept crisp), large ones shrunk smoothly so that
    the report stays small.
    Encoded with Pillow directly: a matplotlib figure per thumbnail is ten times slower."""
    from PIL import Image

    pixels = (np.clip(np.asarray(image, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    picture = Image.fromarray(pixels)
    longest = max(picture.size)
    if longest < size:
        factor = size // longest
        picture = picture.resize((picture.width * factor, picture.height * factor),
                                 Image.Resampling.NEAREST)
    elif longest > size:
        picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def montage(rows: list[list[np.ndarray]], gap_x: int, gap_y: int | None = None,
            columns: int | None = None) -> np.ndarray:
    """Tiles of one size (H, W, C in [0, 1]; grey becomes RGB) laid out in rows on a white
    sheet, ``gap_x`` / ``gap_y`` pixels after each: one image to draw instead of an axes per
    tile, many times faster. Rows may be shorter than ``columns``."""
    gap_y = gap_x if gap_y is None else gap_y
    height, width = rows[0][0].shape[:2]
    columns = columns or max(len(row) for row in rows)
    dtype = np.result_type(np.float32, *[tile.dtype for row in rows for tile in row])
    sheet = np.ones((len(rows) * (height + gap_y), columns * (width + gap_x), 3), dtype)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            tile = np.clip(np.asarray(tile, dtype), 0, 1)
            tile = np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile[..., :3]
            y, x = r * (height + gap_y), c * (width + gap_x)
            sheet[y:y + height, x:x + width] = tile
    return sheet


def show_image(ax, image: np.ndarray) -> None:
    """Draw a display-space image: grey images in grey, RGB as is, no axes."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()


def signed_map(attribution: np.ndarray) -> np.ndarray:
    """Collapse channels of a signed attribution (H, W, C) by summing, keeping the sign."""
    attribution = np.asarray(attribution, dtype=np.float32)
    return attribution.sum(axis=-1) if attribution.ndim == 3 else attribution


def symmetric_limit(*maps: np.ndarray) -> float:
    """One symmetric colour limit shared by several signed maps (99.5th percentile of |value|)."""
    values = np.concatenate([np.abs(m).ravel() for m in maps]) if maps else np.zeros(1)
    limit = float(np.percentile(values, 99.5)) if values.size else 0.0
    return limit if limit > 0 else 1.0


def show_signed(ax, heat: np.ndarray, limit: float, image: np.ndarray | None = None,
                alpha: float = 0.65):
    """A signed 2-D map on the diverging colormap; over a faded image when one is given."""
    if image is not None:
        grey = np.clip(image, 0, 1).mean(axis=-1) if image.ndim == 3 else image
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        artist = ax.imshow(heat, cmap=DIVERGING, vmin=-limit, vmax=limit, alpha=alpha,
                           interpolation="nearest")
    else:
        artist = ax.imshow(heat, cmap=DIVERGING, vmin=-limit, vmax=limit,
                           interpolation="nearest")
    ax.set_axis_off()
    return artist


def colorbar_uri(label: str, cmap: str = DIVERGING, low: str = "lowers the score",
                 high: str = "raises the score") -> str:
    """A horizontal legend for a colormap, with words at both ends."""
    fig, ax = plt.subplots(figsize=(4.2, 0.42))
    gradient = np.linspace(0, 1, 256)[None, :]
    ax.imshow(gradient, aspect="auto", cmap=cmap)
    ax.set_yticks([])
    ax.set_xticks([0, 127.5, 255], [low, label, high], fontsize=8.5)
    ax.tick_params(length=2)
    for side in ax.spines.values():
        side.set_visible(False)
    return figure_uri(fig)


def line_plot_uri(x, series: dict[str, list[float]], xlabel: str, ylabel: str,
                  title: str = "", size=(4.2, 2.8)) -> str:
    """Curves sharing one x axis (accuracy vs epsilon, deletion curves, trends)."""
    fig, ax = plt.subplots(figsize=size)
    for name, values in series.items():
        ax.plot(x, values, marker="o", markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_uri(fig)


def trend_plot_uri(points: list[tuple], percent: bool) -> str:
    """(time, value, verdict) points over time, coloured by verdict: the index's trends."""
    import matplotlib.dates as mdates

    times, values, verdicts = zip(*points, strict=True)
    values = [100 * v for v in values] if percent else list(values)
    colours = {"pass": "#1a7f37", "warn": "#9a6700", "fail": "#cf222e"}
    fig, ax = plt.subplots(figsize=(4.2, 2.6))
    ax.plot(times, values, color="#59636e", linewidth=1)
    ax.scatter(times, values, c=[colours.get(v, "#6e7781") for v in verdicts], s=18, zorder=3)
    ax.set_ylabel("%" if percent else "count", fontsize=8)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.tick_params(labelsize=7)
    if not percent:
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_uri(fig)
