"""Exact and near-duplicate images inside the audit data, and copies of training images in it.

Exact duplicates have the same pixels at 8-bit depth (a BLAKE2 digest of the quantised image).
Near duplicates have the same perceptual hash, the rule cleanvision applies. The hash is
imagehash's pHash (64 bits: the grey image at 32x32, its 2-D DCT, the top-left 8x8 block against
its median), computed here for a whole batch at once: imagehash's per-image version costs about
0.3 ms an image, more than the demo model's whole forward pass. The bits are imagehash's
exactly, at any image size (tests/test_triage.py compares them). A looser
``bits`` > 0 also joins pairs within that Hamming distance, among the candidate pairs given
(nearest neighbours in the model's features), so the cost stays linear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

HASH_SIDE = 32  # pHash's grey image side (hash_size 8 x highfreq_factor 4, imagehash's default)
HASH_BITS = 8  # the low-frequency block's side: 64 bits


def _pixels(images: np.ndarray) -> np.ndarray:
    """Display-space images (N, H, W, C) as 8-bit pixels, grey ones without a channel axis."""
    pixels = (np.clip(np.asarray(images, np.float32), 0, 1) * 255).round().astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def grey_levels(pixels: np.ndarray) -> np.ndarray:
    """8-bit grey as Pillow's ``convert("L")`` computes it (ITU-R 601-2 luma, fixed point)."""
    if pixels.ndim == 3:
        return pixels
    red, green, blue = (pixels[..., c].astype(np.uint32) for c in range(3))  # < 2**24: fits
    return ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).astype(np.uint8)


def perceptual_hashes(pixels: np.ndarray) -> np.ndarray:
    """pHash of each 8-bit image (N, H, W[, C]) as a uint64, as ``imagehash.phash`` has it."""
    from scipy.fft import dct

    grey = grey_levels(pixels)
    if grey.shape[1:] != (HASH_SIDE, HASH_SIDE):  # Pillow's Lanczos, as imagehash resizes
        from PIL import Image

        grey = np.stack([np.asarray(Image.fromarray(g).resize((HASH_SIDE, HASH_SIDE),
                                                              Image.Resampling.LANCZOS))
                         for g in grey])
    spectrum = dct(dct(grey.astype(np.float64), axis=1), axis=2)
    low = spectrum[:, :HASH_BITS, :HASH_BITS].reshape(len(grey), -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def fingerprints(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(exact digests as 16-byte strings, pHashes as uint64) of display-space images."""
    pixels = _pixels(images)
    exact = [hashlib.blake2b(p.tobytes(), digest_size=16).digest() for p in pixels]
    return np.array(exact, dtype="S16"), perceptual_hashes(pixels)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between two arrays of 64-bit hashes, element by element."""
    xor = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.unpackbits(xor.reshape(-1, 1).view(np.uint8), axis=1).sum(axis=1)


def _same_value_edges(values: np.ndarray) -> np.ndarray:
    """Pairs (i, j) linking each image to the next one with the same value."""
    order = np.argsort(values, kind="stable")
    same = values[order][1:] == values[order][:-1]
    return np.stack([order[:-1][same], order[1:][same]], axis=1)


@dataclass
class DuplicateGroup:
    indices: list[int]
    kind: str  # "exact" (same pixels) or "near" (same perceptual hash)
    labels: list[int]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1


def duplicate_groups(exact, perceptual, labels, pairs=None, bits: int = 0) -> list[DuplicateGroup]:
    """Groups of duplicate images, conflicting labels first, then the largest."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(exact)
    edges = [_same_value_edges(exact), _same_value_edges(perceptual)]
    if bits > 0 and pairs is not None and len(pairs):
        pairs = np.asarray(pairs)
        edges.append(pairs[hamming(perceptual[pairs[:, 0]], perceptual[pairs[:, 1]]) <= bits])
    edges = np.concatenate([e.reshape(-1, 2) for e in edges])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    groups = []
    for c in np.flatnonzero(sizes > 1):
        members = np.flatnonzero(component == c)
        kind = "exact" if len(set(exact[members])) == 1 else "near"
        groups.append(DuplicateGroup(members.tolist(), kind, [int(labels[i]) for i in members]))
    return sorted(groups, key=lambda g: (not g.conflicting, -len(g.indices), g.indices[0]))


def redundant_share(groups: list[DuplicateGroup], n: int) -> float:
    """The share of images that are extra copies (a group of k counts k - 1)."""
    return sum(len(g.indices) - 1 for g in groups) / n if n else 0.0


def leaked(exact, perceptual, train_exact, train_perceptual, candidates=None,
           bits: int = 0) -> list[dict]:
    """Audit images that are also training images: same pixels, same perceptual hash, or (with
    ``bits`` > 0) within ``bits`` of one of the ``candidates`` (N, k) training rows."""
    by_exact = {key: i for i, key in reversed(list(enumerate(train_exact)))}
    by_hash = {key: i for i, key in reversed(list(enumerate(train_perceptual)))}
    found = []
    for i, (key, phash) in enumerate(zip(exact, perceptual, strict=True)):
        if key in by_exact:
            found.append({"index": i, "train_index": by_exact[key], "kind": "exact"})
        elif phash in by_hash:
            found.append({"index": i, "train_index": by_hash[phash], "kind": "near"})
        elif bits > 0 and candidates is not None and candidates.shape[1]:
            distance = hamming(np.repeat(phash, candidates.shape[1]),
                               train_perceptual[candidates[i]])
            if distance.min() <= bits:
                found.append({"index": i, "train_index": int(candidates[i][distance.argmin()]),
                              "kind": "near"})
    return found
