"""Shortcut injectors: spurious signals planted in images to test whether an audit can see them.

Each injector takes a batch of display-space images (N, H, W, C) in [0, 1], grey or RGB, and
returns the poisoned batch (pixels kept in [0, 1]) and a ground-truth mask (N, H, W) of the
pixels it changed when the shortcut is local, or None when it touches the whole image (tint,
lightness) or most of it (a background: a relevance mass ratio over a mask that covers most of
the image cannot reach the detection bound, so, as for a tint, discovery judges it).
Parameters are keyword arguments with defaults, so a spec can set any of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from auditor.errors import ConfigError

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def patch(images, *, size: float = 0.2, position: str = "bottom_right", value=1.0,
          margin: float = 0.03):
    """A solid square in a corner (BadNets); ``size`` is its side as a share of the image's."""
    x = _as_batch(images)
    height, width = x.shape[1:3]
    side = max(2, round(size * min(height, width)))
    mask = _corner_box(height, width, side, side, position, margin)
    return _paint(x, mask, _colour(value, x.shape[-1]), 1.0), _batch_mask(mask, len(x))


def watermark(images, *, text: str = "SAMPLE", opacity: float = 0.5, value=1.0,
              width: float = 0.9, row: float = 0.5, boldness: float = 2.2):
    """Semi-transparent text across the image (the ImageNet-W recipe: white, opacity 0.5)."""
    x = _as_batch(images)
    height, full_width = x.shape[1:3]
    alpha = _text_alpha(text, height, full_width, round(width * full_width), (row, 0.5), boldness)
    return _blend(x, alpha, _colour(value, x.shape[-1]), opacity)


def tag(images, *, text: str = "(c)", size: float = 0.35, position: str = "bottom_left",
        value=1.0, background=0.3, margin: float = 0.03):
    """A small source tag in a corner: light text on a dark label, as the copyright tags on a
    fifth of PASCAL VOC's horses (Lapuschkin et al. 2019); ``size`` is its width as a share of
    the image's."""
    x = _as_batch(images)
    height, width = x.shape[1:3]
    box_w = max(4, round(size * width))
    box_h = max(3, round(box_w * 0.45))
    box = _corner_box(height, width, box_h, box_w, position, margin)
    label = _paint(x, box, _colour(background, x.shape[-1]), 1.0)
    rows, cols = np.nonzero(box)
    alpha = np.zeros((height, width), np.float32)
    alpha[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = _text_alpha(
        text, rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min(), box_w, (0.5, 0.5))
    poisoned, _ = _blend(label, alpha, _colour(value, x.shape[-1]), 1.0)
    return poisoned, _batch_mask(box, len(x))


def tint(images, *, value=(1.0, 0.55, 0.15), strength: float = 0.25):
    """A colour cast over the whole image (on grey images, a shift toward ``value``'s mean)."""
    x = _as_batch(images)
    colour = _colour(value, x.shape[-1])
    return np.clip(x * (1 - strength) + colour * strength, 0, 1).astype(np.float32), None


def lightness(images, *, strength: float = 0.35, corner: str = "top_left"):
    """A lightness ramp from one corner (darker) to the opposite corner (lighter)."""
    x = _as_batch(images)
    height, width = x.shape[1:3]
    if corner not in CORNERS:
        raise ConfigError(f"lightness corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    rows = np.linspace(0, 1, height)[:, None]
    cols = np.linspace(0, 1, width)[None, :]
    if corner.startswith("bottom"):
        rows = 1 - rows
    if corner.endswith("right"):
        cols = 1 - cols
    ramp = ((rows + cols) / 2 - 0.5).astype(np.float32)  # -0.5 at ``corner``, +0.5 opposite
    return np.clip(x + strength * ramp[None, :, :, None], 0, 1).astype(np.float32), None


def frame(images, *, width: int = 1, value=1.0):
    """A thin frame ``width`` pixels wide around the border."""
    x = _as_batch(images)
    height, full_width = x.shape[1:3]
    mask = np.zeros((height, full_width), bool)
    mask[:width], mask[-width:], mask[:, :width], mask[:, -width:] = True, True, True, True
    return _paint(x, mask, _colour(value, x.shape[-1]), 1.0), _batch_mask(mask, len(x))


PHOTOS = ("china", "flower")  # the photos scikit-learn ships (sklearn.datasets.load_sample_image)
OBJECT_FLOOR = 0.1  # a pixel closer than this to the background level is background


def background(images, *, photo: str = "flower", brightness: float = 0.5):
    """A fixed photo behind the object (the same texture on every marked image, as the snowy
    backgrounds behind Ribeiro et al.'s "wolves"): the photo scikit-learn ships, resized to the
    image, grey on 1-channel images, scaled by ``brightness`` so the object stays visible, put
    wherever ``object_mask`` finds no object. The flower is the default: on digits behind it,
    ``object_mask`` still finds the strokes (recall 0.94, precision 1.0 at brightness 0.5), so
    the intervention can take the photo away again; the china photo's bright sky over dark
    trees splits the background itself (recall 0.62, precision 0.56 at 0.5)."""
    x = _as_batch(images)
    if not 0 < brightness <= 1:
        raise ConfigError(f"background brightness must be in (0, 1], got {brightness!r}")
    texture = photo_texture(photo, x.shape[1], x.shape[2], x.shape[-1]) * brightness
    keep = object_mask(x)[..., None]
    return np.where(keep, x, texture[None]).astype(np.float32), None


def object_mask(images) -> np.ndarray:
    """(N, H, W) bool: where each image's object is, read from the image alone, so that it works
    on any dataset whose object stands out from its background. The background level is the
    per-channel median of the image's outer ring of pixels (objects are framed, not cut by the
    border); a pixel's distance from it is the largest channel difference; the object is where
    that distance exceeds Otsu's threshold on the image's distances (the split of the two
    populations, background and object) and at least OBJECT_FLOOR."""
    import cv2

    x = _as_batch(images)
    ring = np.concatenate([x[:, 0], x[:, -1], x[:, 1:-1, 0], x[:, 1:-1, -1]], axis=1)
    level = np.median(ring, axis=1)[:, None, None, :]
    distance = np.abs(x - level).max(axis=-1)
    masks = np.zeros(distance.shape, bool)
    for i, d in enumerate(distance):
        otsu, _ = cv2.threshold(np.round(d * 255).astype(np.uint8), 0, 255,
                                cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        masks[i] = d > max(otsu / 255.0, OBJECT_FLOOR)
    return masks


def photo_texture(name: str, height: int, width: int, channels: int) -> np.ndarray:
    """One of scikit-learn's sample photos as (height, width, channels) float32 in [0, 1]."""
    import cv2

    if name not in PHOTOS:
        raise ConfigError(f"background photo must be one of {', '.join(PHOTOS)}, got {name!r}")
    rgb = _sample_photo(name)
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return small.mean(axis=-1, keepdims=True) if channels == 1 else small


_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _sample_photo(name: str) -> np.ndarray:
    if name not in _PHOTO_CACHE:
        from sklearn.datasets import load_sample_image

        _PHOTO_CACHE[name] = load_sample_image(f"{name}.jpg").astype(np.float32) / 255.0
    return _PHOTO_CACHE[name]


INJECTORS: dict[str, Callable] = {f.__name__: f for f in (patch, watermark, tag, tint,
                                                          lightness, frame, background)}


def inject(name: str, images, **options):
    """Apply injector ``name`` with spec ``options``; unknown names or options are errors."""
    if name not in INJECTORS:
        raise ConfigError(f"unknown shortcut '{name}'; choose from: {', '.join(INJECTORS)}")
    known = injector_options(name)
    unknown = set(options) - set(known)
    if unknown:
        raise ConfigError(f"shortcut '{name}' has no option '{sorted(unknown)[0]}'; it takes: "
                          f"{', '.join(known)}")
    return INJECTORS[name](images, **options)


def injector_options(name: str) -> dict[str, object]:
    """An injector's options and their defaults."""
    parameters = inspect.signature(INJECTORS[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}


def _as_batch(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"shortcut injectors take images (N, H, W, 1 or 3), got {x.shape}")
    return x


def _colour(value, channels: int) -> np.ndarray:
    colour = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if colour.size not in (1, 3) or colour.min() < 0 or colour.max() > 1:
        raise ConfigError(f"a shortcut colour must be one value or three (R, G, B) in [0, 1], "
                          f"got {value!r}")
    if channels == 1:
        return colour.mean(keepdims=True)
    return np.broadcast_to(colour, (3,)).copy()


def _corner_box(height: int, width: int, box_h: int, box_w: int, position: str,
                margin: float) -> np.ndarray:
    if position not in CORNERS:
        raise ConfigError(f"shortcut position must be one of {', '.join(CORNERS)}, got "
                          f"{position!r}")
    gap = round(margin * min(height, width))
    top = gap if position.startswith("top") else height - gap - box_h
    left = gap if position.endswith("left") else width - gap - box_w
    mask = np.zeros((height, width), bool)
    mask[max(top, 0):top + box_h, max(left, 0):left + box_w] = True
    return mask


def _text_alpha(text: str, height: int, width: int, text_width: int,
                centre: tuple[float, float], boldness: float = 2.2) -> np.ndarray:
    """Antialiased coverage (H, W) of ``text`` spanning ``text_width`` pixels, drawn with
    OpenCV's built-in Hershey font at 8x resolution and averaged down (no font files)."""
    import cv2

    scale_up = 8
    canvas = np.zeros((height * scale_up, width * scale_up), np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), _ = cv2.getTextSize(text, font, 1.0, 1)
    font_scale = min(text_width * scale_up / text_w, 0.8 * height * scale_up / text_h)
    thickness = max(1, round(font_scale * boldness))
    (text_w, text_h), _ = cv2.getTextSize(text, font, font_scale, thickness)
    origin = (round(centre[1] * width * scale_up - text_w / 2),
              round(centre[0] * height * scale_up + text_h / 2))
    cv2.putText(canvas, text, origin, font, font_scale, 255, thickness, cv2.LINE_AA)
    small = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _blend(x: np.ndarray, alpha: np.ndarray, colour: np.ndarray, opacity: float):
    """Paint ``colour`` over ``x`` with per-pixel coverage ``alpha`` times ``opacity``."""
    weight = (opacity * alpha)[None, :, :, None]
    poisoned = np.clip(x * (1 - weight) + colour * weight, 0, 1).astype(np.float32)
    return poisoned, _batch_mask(alpha > 0.25, len(x))


def _paint(x: np.ndarray, mask: np.ndarray, colour: np.ndarray, opacity: float) -> np.ndarray:
    return _blend(x, mask.astype(np.float32), colour, opacity)[0]


def _batch_mask(mask: np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(mask, (n, *mask.shape)).copy()
