"""What an image file declares about itself, read from its header before anything is decoded.

A PNG of 49 kB can declare 20,000 x 20,000 pixels: decoded to float32 RGB it is 4.8 GB. The
size is in the first bytes of every format auditor reads, and Pillow's ``Image.open`` reads only
those (it decodes nothing until asked), so each file is held against a pixel budget first; a
file over it is skipped and listed with its size (or refused with ``--strict-data``).
"""

from __future__ import annotations

import contextlib
import warnings

from PIL import Image

# Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89,478,485 pixels: 256 MB as
# 24-bit RGB; Pillow warns above it and refuses above twice it), when Pillow sets one. A
# 100-megapixel camera frame is above it: shrink such images before an audit, which resizes
# every image to the model's input anyway.
DEFAULT_PIXEL_BUDGET = 89_478_485


def pixel_budget() -> int:
    """The most pixels one image may declare: Pillow's limit, as the user's Pillow sets it."""
    return int(Image.MAX_IMAGE_PIXELS or DEFAULT_PIXEL_BUDGET)


@contextlib.contextmanager
def headers_read_by_size():
    """Pillow's own bomb check set aside while headers are read (each size is held against the
    budget here, which can then name it); the budget is taken first, as the user's Pillow sets
    it. Headers are read in one thread, before any decoding starts."""
    budget, limit = pixel_budget(), Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield budget
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def oversized(path: str, budget: int) -> str | None:
    """Why ``path`` is not decoded (its header declares more than ``budget`` pixels), or None
    (within the budget, or not an image Pillow knows: the decoder's check will say)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
    except Exception:  # noqa: BLE001 - a hostile header can raise anything from a plugin
        return None  # not readable as an image: left to the decoding check, which lists it
    if width * height <= budget:
        return None
    return (f"declares {width} x {height} pixels ({width * height:,}) in its header, over the "
            f"budget of {budget:,} pixels per image (a decompression bomb?); shrink it to be "
            "audited")
