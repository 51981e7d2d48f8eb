"""Labelled image sources streamed as display-space batches that fit the model.

Sources (the ``--data`` SOURCE): ``sklearn:digits[:train|test|all]``, ``npz:PATH`` (arrays ``x``,
``y``, optional ``class_names``), a folder with one sub-folder of images per class (read as
classes by name, by index, or by sorted position: ``folder_classes``), and
``tfds:NAME[:SPLIT]`` when the dataset is already on disk; inside a Python process, arrays named
``memory:NAME`` (``inputs/memory.py``). A multi-label model (several sigmoid outputs) reads
multi-hot labels, (N, labels) of 0s and 1s: an npz ``y`` of that shape, or a CSV manifest
(``PATH.csv``: a header ``path,labels``, then each image's path inside the manifest's folder and
its labels separated by ``|``; ``_open_manifest``). Every image leaves here as float32
in [0, 1] with the model's height, width and channels; the audit never holds more than a batch
of images unless a section asks for a few.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from auditor.errors import DataError, Interrupted
from auditor.inputs.images import headers_read_by_size, oversized, pixel_budget
from auditor.inputs.npz import READ_ERRORS, NpzArray, array_chunks

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF8": "GIF"}
DATA_RANGES = ("auto", "0-1", "0-255")
DIGITS_TEST_FRACTION = 0.4
READ_CHUNK_BYTES = 4 << 20  # bytes of stored images scanned at once when an npz is opened
NON_FINITE = "NaN or infinite pixel values"
# The largest label row read without question: one-hot float64 rows of 8,192 classes. A larger
# row must still be no larger than its image, so that labels never cost more than the images.
LABEL_ROW_BYTES = 8 * 8192


@dataclass
class Dataset:
    """A labelled image source, possibly a stratified sample of it.

    ``labels[i]`` is the class of sample ``i`` (for a multi-label source, its multi-hot row of
    0s and 1s, one column per label); ``source_index[i]`` its position in the source.
    """

    source: str
    class_names: list[str]
    labels: np.ndarray
    source_index: np.ndarray
    image_shape: tuple[int, int, int]
    # source indices -> tf.data.Dataset of display-space images (H, W, C), not yet fitted to the
    # model; or a RowReader, whose rows are read, scaled and fitted a batch at a time
    _read: Callable[[np.ndarray], object]
    skipped: list[dict] = field(default_factory=list)  # files left out: [{path, reason}]
    class_mapping: dict | None = None  # folder sources: {by: name|index|position, folders}

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Stream (images, labels, sample positions) in order, a batch at a time."""
        for images, labels, positions in self.tensor_batches(batch_size):
            yield images.numpy(), labels, positions

    def tensor_batches(self, batch_size: int) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
        """``batches`` with the images left as tensors, for steps that feed them straight back
        to TensorFlow (a copy to numpy and back costs as much as a small model's pass)."""
        import tensorflow as tf

        batches = iter(self._fitted(self.source_index, batch_size))
        for start in range(0, self.n, batch_size):
            try:
                images = next(batches)
            except (tf.errors.OpError, *READ_ERRORS) as exc:  # files were checked: one changed
                Interrupted.raise_if_pending()  # or a signal landed in tf.data's Python code
                if NON_FINITE in getattr(exc, "message", ""):
                    raise DataError(f"dataset '{self.source}' has NaN or infinite pixel values "
                                    f"near sample {start}; clean or drop those images") from None
                raise DataError(f"an image of '{self.source}' near sample {start} could no "
                                "longer be read during the audit (changed or removed?); leave "
                                "the data as it is while it is audited") from None
            stop = min(start + batch_size, self.n)
            yield images, self.labels[start:stop], np.arange(start, stop)

    def images(self, positions) -> np.ndarray:
        """Re-read a few samples by position (for figures and per-example analyses)."""
        positions = np.asarray(positions, dtype=int)
        if positions.size == 0:
            return np.zeros((0, *self.image_shape), np.float32)
        order = np.argsort(positions, kind="stable")  # sources read fastest in order
        images = np.empty((len(positions), *self.image_shape), np.float32)
        start, index = 0, self.source_index[positions[order]]
        for batch in self._fitted(index, 256):
            images[order[start:start + len(batch)]] = batch.numpy()  # one batch held at a time
            start += len(batch)
        return images

    def _fitted(self, source_index: np.ndarray, batch_size: int):
        """Batches fitted to the model. Rows of one shape (arrays, npz members) are read in
        place and fitted here, a batch at a time: building a tf.data pipeline traces its
        functions, which cost 0.1 to 0.2 s at every pass and every figure of every audit (a
        quarter of an audit of the demo CNN through the Keras callback), more than reading
        and fitting the rows of most audits; files go through tf.data's parallel decoding."""
        if isinstance(self._read, RowReader):
            return (self._fit(rows, self._read.divisor)
                    for rows in self._read.rows(source_index, batch_size))
        return self._pipeline(source_index, batch_size)

    def _fit(self, images, divisor=1.0):
        """Raw images as the model takes them (checked finite where they are read, not in
        the model's pass)."""
        import tensorflow as tf

        images = tf.cast(images, tf.float32) / divisor
        images = tf.debugging.assert_all_finite(images, NON_FINITE)
        return fit_image(images, *self.image_shape)

    def _pipeline(self, source_index: np.ndarray, batch_size: int):
        """Image files decoded and fitted in parallel by tf.data, then batched."""
        import tensorflow as tf

        return self._read(source_index).map(
            self._fit, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(
            tf.data.AUTOTUNE)


def fit_image(image, height: int, width: int, channels: int):
    """Display-space images, one (H, W, C) or a batch (N, H, W, C), converted to the model's
    size and channels."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image, tf.float32)
    if image.shape[-1] == 4:
        image = image[..., :3]
    if image.shape[-1] == 3 and channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    elif image.shape[-1] == 1 and channels == 3:
        image = tf.image.grayscale_to_rgb(image)
    if tuple(image.shape[-3:-1]) != (height, width):
        image = tf.image.resize(image, (height, width), antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


class Opened(NamedTuple):
    """What a source's opener found: labels, a reader, class names if it has them, the files it
    skipped ({path, reason}) and, for folders, which class each folder holds."""

    labels: np.ndarray
    read: Callable
    names: list[str] | None
    skipped: list[dict] = []
    class_mapping: dict | None = None


def load_dataset(source: str, image_shape: tuple[int, int, int], num_classes: int, *,
                 class_names: list[str] | None = None, max_samples: int | None = None,
                 seed: int = 0, data_range: str = "auto", strict_data: bool = False,
                 multilabel: bool = False) -> Dataset:
    """Open a data source, check it against the model, and take a stratified sample if asked.

    ``multilabel``: the model is a multi-label head, so the labels must be multi-hot rows with
    one column per output (and a single-label model refuses them). Files that cannot be read
    are skipped and listed (``Dataset.skipped``), or refused with ``strict_data``; the sample is
    decode-checked before the audit, never failing mid-stream."""
    if data_range not in DATA_RANGES:
        raise DataError(f"unknown data_range '{data_range}'; use one of: {', '.join(DATA_RANGES)}")
    opened = _open_source(source, num_classes, class_names, data_range, multilabel)
    labels, read, names, skipped = opened.labels, opened.read, opened.names, list(opened.skipped)
    if len(labels) == 0 and not skipped:
        raise DataError(f"dataset '{source}' is empty; point --data at labelled images")
    _check_label_kind(source, labels, num_classes, multilabel)
    if not multilabel and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"dataset '{source}' has labels from {labels.min()} to {labels.max()}, "
                        f"but the model has {num_classes} classes (0 to {num_classes - 1}); "
                        "check that the data and the model belong together")
    labels = _match_by_name(labels, names, class_names)
    names = _class_names(class_names, names, num_classes)
    index = sample_indices(labels, max_samples, seed) if len(labels) else np.arange(0)
    if isinstance(read, ImageFiles):
        broken = read.oversized(index)
        too_big = {entry["path"] for entry in broken}
        broken += read.undecodable(np.array([i for i in index if read.paths[i] not in too_big],
                                            dtype=int))
        skipped += broken
        bad = {entry["path"] for entry in broken}
        index = np.array([i for i in index if read.paths[i] not in bad], dtype=int)
    _check_skipped(source, skipped, len(index), strict_data)
    kept = labels[index].astype(np.int8 if multilabel else np.int64)
    return Dataset(source=source, class_names=names, labels=kept,
                   source_index=index, image_shape=tuple(image_shape), _read=read,
                   skipped=skipped, class_mapping=opened.class_mapping)


def _open_source(source: str, num_classes: int, class_names: list[str] | None, data_range: str,
                 multilabel: bool) -> Opened:
    """The opener of ``source``'s scheme; a multi-label model is refused sources that hold one
    class per image before they are read."""
    scheme, sep, rest = source.partition(":")
    single = (sep and scheme in ("sklearn", "tfds")
              or not sep and not source.lower().endswith(".csv"))
    if multilabel and single:
        raise DataError(f"dataset '{source}' gives one class per image, but the model ends in "
                        f"{num_classes} sigmoid outputs (a multi-label head); give multi-hot "
                        "labels: npz:PATH with y of shape (N, labels) of 0s and 1s, or a CSV "
                        "manifest PATH.csv (path,labels)")
    if sep and scheme == "sklearn":
        return _open_sklearn(rest)
    if sep and scheme == "npz":
        opened = _open_npz(rest, data_range, multilabel)
        if opened.names is not None and class_names is None and len(opened.names) != num_classes:
            raise DataError(f"npz file '{rest}' has {len(opened.names)} class_names but the "
                            f"model has {num_classes} classes; save one name per model output")
        return opened
    if sep and scheme == "tfds":
        return _open_tfds(rest)
    if sep and scheme == "memory":  # arrays a Python caller holds (inputs/memory.py)
        from auditor.inputs.memory import open_memory

        return open_memory(source, data_range, multilabel)
    if sep and len(scheme) > 1:
        raise DataError(f"unknown data scheme '{scheme}:'; use sklearn:digits, npz:PATH, "
                        "tfds:NAME[:SPLIT], a folder of class sub-folders or a CSV manifest")
    if source.lower().endswith(".csv"):
        if not multilabel:
            raise DataError(f"'{source}' is a CSV manifest of label lists, which is read for a "
                            "multi-label model (several sigmoid outputs), but the model is "
                            "single-label; give a folder of class sub-folders or npz:PATH")
        from auditor.inputs.manifest import open_manifest

        return open_manifest(source, num_classes, class_names)
    return _open_folder(source, num_classes, class_names)


def _check_label_kind(source: str, labels: np.ndarray, outputs: int, multilabel: bool) -> None:
    """Multi-hot labels go with a multi-label model, one class per image with a single-label
    one, and a label row has one column per output: anything else is one line, never a
    silent softmax audit of multi-label data (or the reverse)."""
    if multilabel and labels.ndim != 2:
        raise DataError(f"dataset '{source}' gives one class per image, but the model ends in "
                        f"{outputs} sigmoid outputs (a multi-label head); give multi-hot labels: "
                        "an npz with y of shape (N, labels) of 0s and 1s, or a CSV manifest "
                        "(path,labels)")
    if not multilabel and labels.ndim == 2:
        raise DataError(f"dataset '{source}' gives several labels per image, but the model is "
                        "single-label (softmax or logits over its classes); a multi-label model "
                        "ends in one sigmoid per label (Dense(K, activation='sigmoid'))")
    if multilabel and labels.shape[1] != outputs:
        raise DataError(f"dataset '{source}' has {labels.shape[1]} labels per image, but the "
                        f"model has {outputs} sigmoid outputs; give one column per output")


def _check_skipped(source: str, skipped: list[dict], kept: int, strict: bool) -> None:
    if not skipped:
        return
    first = f"'{skipped[0]['path']}': {skipped[0]['reason']}"
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    if kept == 0:
        raise DataError(f"no image of '{source}' can be read ({first}{more}); fix or replace "
                        "the files")
    if strict:
        raise DataError(f"'{source}' has {len(skipped)} unreadable file(s) ({first}{more}); "
                        "fix or remove them, or drop --strict-data to skip and list them")


def sample_indices(labels: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    """All indices, or a stratified sample of ``max_samples`` of them (sorted)."""
    everything = np.arange(len(labels))
    if max_samples is None or max_samples >= len(labels):
        return everything
    from sklearn.model_selection import train_test_split

    try:
        chosen, _ = train_test_split(everything, train_size=max_samples, stratify=labels,
                                     random_state=seed)
    except ValueError:  # a class too small to stratify, or fewer samples than classes
        chosen = np.random.default_rng(seed).choice(everything, max_samples, replace=False)
    return np.sort(chosen)


def _match_by_name(labels: np.ndarray, found: list[str] | None,
                   given: list[str] | None) -> np.ndarray:
    """Labels in the order of ``class_names`` (the model's outputs) when the data names the
    same classes in another order (sorted folders, an npz class_names array): class_names
    then says which output is which class, and fixes a class order that does not match."""
    if not given or not found or list(map(str, given)) == list(map(str, found)):
        return labels
    if sorted(map(str, given)) != sorted(map(str, found)):
        return labels
    order = np.array([list(map(str, given)).index(str(name)) for name in found])
    if labels.ndim == 2:  # multi-hot: column j of the data is output order[j]
        moved = np.zeros_like(labels)
        moved[:, order] = labels
        return moved
    return order[labels]


def _class_names(given: list[str] | None, found: list[str] | None, num_classes: int) -> list[str]:
    if given is not None:
        if len(given) != num_classes:
            raise DataError(f"class_names has {len(given)} names but the model has {num_classes} "
                            "classes; give one name per model output")
        return [str(n) for n in given]
    if found is not None and len(found) == num_classes:
        return [str(n) for n in found]
    return [str(i) for i in range(num_classes)]


@dataclass
class RowReader:
    """A reader over images stored as rows of one shape (an array, an npz member).

    ``read_rows(index, chunk_rows)`` yields the rows at ``index`` in order, in their stored
    dtype; only one chunk of them is in memory at once, whatever the size of the source.
    Dividing by ``divisor`` brings them to display space, [0, 1].
    """

    read_rows: Callable
    row_shape: tuple[int, ...]
    dtype: np.dtype
    divisor: float = 1.0

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (*self.row_shape, 1) if len(self.row_shape) == 2 else tuple(self.row_shape)

    def rows(self, index: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
        """The raw rows at ``index``, ``chunk_rows`` at a time (N, H, W, C)."""
        for chunk in self.read_rows(index, chunk_rows):
            yield chunk.reshape(len(chunk), *self.image_shape)


def _array_reader(x: np.ndarray) -> Callable:
    """Reader over an in-memory array of display-space images (N, H, W, C)."""
    return RowReader(functools.partial(array_chunks, x), x.shape[1:], x.dtype)


def _check_image_shape(shape: tuple[int, ...], where: str) -> None:
    if len(shape) not in (3, 4) or (len(shape) == 4 and shape[-1] not in (1, 3, 4)):
        raise DataError(f"{where} holds arrays of shape {shape}; images must be (N, H, W) or "
                        "(N, H, W, C) with 1, 3 or 4 channels")


def _open_sklearn(name: str):
    dataset, _, split = name.partition(":")
    if dataset != "digits":
        raise DataError(f"unknown scikit-learn dataset '{dataset}'; only sklearn:digits ships "
                        "with scikit-learn")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    if split:
        train, test = digits_split(y)
        splits = {"train": train, "test": test, "all": np.arange(len(y))}
        if split not in splits:
            raise DataError(f"unknown split '{split}' of sklearn:digits; use train, test or all")
        x, y = x[splits[split]], y[splits[split]]
    return Opened(y, _array_reader(x), [str(i) for i in range(10)])


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified train/test split of the digits that the demo model is trained on."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                            stratify=labels, random_state=0)


def _open_npz(path: str, data_range: str, multilabel: bool = False):
    """Labels and class names are read at once; images stay on disk and stream by rows."""
    file = Path(path)
    where = f"npz file '{path}'"
    if not file.is_file():
        raise DataError(f"npz file '{path}' does not exist; pass --data npz:PATH to an .npz with "
                        "arrays x and y")
    _check_npz_magic(file, where)
    try:
        arrays = np.load(file, allow_pickle=False)  # a pickle would run code: never loaded
        members = set(arrays.files)
    except READ_ERRORS as exc:
        raise DataError(f"cannot read '{path}' as .npz ({exc}); save it with "
                        "np.savez(path, x=images, y=labels)") from None
    missing = [k for k in ("x", "y") if k not in members]
    if missing:
        raise DataError(f"{where} has no array {' or '.join(repr(m) for m in missing)} "
                        f"(it has: {', '.join(sorted(members)) or 'nothing'}); save it with "
                        "np.savez(path, x=images, y=labels)")
    x, y_header = _npz_header(file, "x", where), _npz_header(file, "y", where)
    _check_image_shape(x.shape, where)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where} stores images as {x.dtype}; save pixel values as numbers")
    _check_npz_sizes(x, y_header, where)
    try:
        y = _labels(_member(arrays, "y", where), where, multilabel)
        read_rows = x.read if x.readable_by_rows else functools.partial(array_chunks,
                                                                        arrays["x"])
        divisor = _range_divisor(read_rows, x.shape, x.dtype, data_range, where)
        names = _npz_class_names(arrays, where) if "class_names" in members else None
    except READ_ERRORS as exc:
        raise DataError(f"cannot read {where} ({exc}); save it again with "
                        "np.savez(path, x=images, y=labels)") from None
    return Opened(y, RowReader(read_rows, x.shape[1:], x.dtype, divisor), names)


def _npz_header(file: Path, name: str, where: str) -> NpzArray:
    """A member's declared shape and dtype, from its header alone (nothing is loaded)."""
    try:
        return NpzArray(file, name)
    except READ_ERRORS as exc:
        raise DataError(f"cannot read array '{name}' of {where} ({exc}); save it with "
                        "np.savez(path, x=images, y=labels)") from None


def _check_npz_sizes(x: NpzArray, y: NpzArray, where: str) -> None:
    """Sizes from the headers, before anything is read: one label row per image, no larger
    than the image, and images within the pixel budget (``inputs/images.py``)."""
    height, width = x.shape[1], x.shape[2]
    if height * width > pixel_budget():
        raise DataError(f"{where} declares images of {height} x {width} pixels, over the budget "
                        f"of {pixel_budget():,} pixels per image; shrink them to be audited")
    if not y.shape or y.shape[0] != len(x):
        raise DataError(f"{where} has {len(x)} images but {y.shape[0] if y.shape else 1} "
                        "labels; give one label per image")
    if len(y.shape) > 2 or y.row_bytes > max(x.row_bytes, LABEL_ROW_BYTES):
        raise DataError(f"{where} has labels of shape {y.shape}; give one class index per "
                        "image (N,), one-hot rows (N, classes), or multi-hot rows (N, labels) "
                        "for a multi-label model")


def _check_npz_magic(file: Path, where: str) -> None:
    """An .npz is a zip archive: say what the file is instead, before numpy guesses 'pickle'."""
    with open(file, "rb") as stream:
        head = stream.read(6)
    if head.startswith(b"PK"):
        return
    if head == b"\x93NUMPY":
        raise DataError(f"{where} is a single .npy array, not an .npz archive; save images and "
                        "labels together with np.savez(path, x=images, y=labels)")
    raise DataError(f"{where} is not an .npz archive (it does not start like a zip file); save "
                    "it with np.savez(path, x=images, y=labels)")


def _member(arrays, name: str, where: str) -> np.ndarray:
    """One small member (labels, class names); object arrays need pickle, which is refused."""
    try:
        return np.asarray(arrays[name])
    except ValueError:
        raise DataError(f"{where} stores '{name}' as Python objects (pickled), which auditor does "
                        f"not load; save '{name}' as " + (
                            "integers: np.asarray(y, dtype=np.int64)" if name == "y" else
                            "strings: np.array([str(n) for n in names])")) from None


def _npz_class_names(arrays, where: str) -> list[str]:
    names = _member(arrays, "class_names", where)
    if names.ndim != 1:
        raise DataError(f"{where} has class_names of shape {names.shape}; save one name per "
                        "class: np.array(['cat', 'dog', ...])")
    return [str(n) for n in names]


def _labels(y: np.ndarray, where: str, multilabel: bool = False) -> np.ndarray:
    if multilabel:
        return _multi_hot(y, where)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot (or soft labels); multi-hot is refused
        _refuse_multi_hot(y, where)
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.dtype.kind in "USO":
        shown = ", ".join(repr(str(v)) for v in y[:3])
        raise DataError(f"{where} has labels that are text ({shown}, ...); save class indices "
                        "and the names apart: names = sorted(set(y)); np.savez(path, x=x, "
                        "y=[names.index(v) for v in y], class_names=names)")
    if y.size and not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise DataError(f"{where} stores labels as {y.dtype}; labels must be integers "
                        "0..classes-1")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where} has labels that are not whole class indices; labels must "
                            "be integers 0..classes-1")
    return y.astype(np.int64)


def _refuse_multi_hot(y: np.ndarray, where: str) -> None:
    """Rows of 0s and 1s with several 1s (or none) are multi-label targets, and rows that do not
    sum to 1 are not soft labels: read as one class per image (their argmax) every figure would
    be wrong, so they are refused in one line."""
    if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        return
    binary = np.isin(y, (0, 1)).all()
    counts = (y == 1).sum(axis=1) if binary else None
    if binary and (counts != 1).any():
        raise DataError(f"{where} has multi-hot labels ({int((counts != 1).sum())} of {len(y)} "
                        "rows of y have several 1s or none), but the model is single-label "
                        "(softmax or logits over its classes); a multi-label model ends in one "
                        "sigmoid per label (Dense(K, activation='sigmoid')), or give one class "
                        "per image (y of shape (N,) or one-hot)")
    rows = y.astype(np.float64).sum(axis=1)
    if not binary and not ((y >= 0).all() and np.allclose(rows, 1.0, atol=1e-3)):
        raise DataError(f"{where} has label rows that are neither one-hot nor soft labels (each "
                        "row non-negative and summing to 1), e.g. counts or scores; give one "
                        "class per image (y of shape (N,)) or one-hot rows")


def _multi_hot(y: np.ndarray, where: str) -> np.ndarray:
    """Multi-hot rows (N, labels) of 0s and 1s (integers, booleans or floats), as int8."""
    if y.ndim != 2:
        raise DataError(f"{where} has y of shape {y.shape}, one class per image, but the model "
                        "ends in several sigmoid outputs (a multi-label head); save multi-hot "
                        "rows: y of shape (N, labels) of 0s and 1s")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise DataError(f"{where} stores labels as {y.dtype}; multi-hot labels must be 0s and "
                        "1s (integers or booleans)")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(f"{where} has {int(bad.sum())} multi-hot label value(s) other than 0 or "
                        f"1 (first: row {row}, label {column}: {y[row, column]!r}); give 0 "
                        "(absent) or 1 (present) for every label")
    return y.astype(np.int8)


def _range_divisor(read_rows: Callable, shape: tuple[int, ...], dtype: np.dtype,
                   data_range: str, where: str) -> float:
    """How to bring raw pixel values to [0, 1]: given by the spec or guessed from the maximum.

    The images are scanned once, a chunk at a time: NaN and infinite values, values outside
    0-255, and a stated range that the values contradict (0-255 pixels said to be 0-1: the
    audit would see white images) are refused.
    """
    floating = np.issubdtype(dtype, np.floating)
    n, row_bytes = shape[0], int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
    low, high, bad = np.inf, -np.inf, 0
    for rows in read_rows(np.arange(n), max(1, READ_CHUNK_BYTES // max(row_bytes, 1))):
        rows = rows.reshape(len(rows), -1)
        if floating:
            finite = np.isfinite(rows)
            bad += int((~finite).any(axis=1).sum())
            rows = np.where(finite, rows, 0)
        if rows.size:
            low, high = min(low, float(rows.min())), max(high, float(rows.max()))
    if bad:
        raise DataError(f"{where} has NaN or infinite pixel values in {bad} image(s); "
                        "clean or drop those images")
    if n == 0 or low > high:
        return 255.0 if data_range == "0-255" else 1.0
    if low < 0 or high > 255:
        fix = ("save them as (x + 1) / 2" if low >= -1 and high <= 1 else
               "rescale them to 0-1 or 0-255")
        raise DataError(f"{where} has pixel values from {low:g} to {high:g}; auditor reads "
                        f"images in 0-1 or 0-255 (--data-range): {fix}")
    if data_range == "0-1" and high > 1:
        raise DataError(f"{where} has pixel values up to {high:g}, but --data-range 0-1 says "
                        "they stop at 1; use --data-range 0-255 (or auto)")
    if data_range == "0-255" and 0 < high <= 1:
        raise DataError(f"{where} has pixel values that stop at {high:g}, but --data-range "
                        "0-255 says they go up to 255; use --data-range 0-1 (or auto)")
    if data_range != "auto":
        return 255.0 if data_range == "0-255" else 1.0
    return 255.0 if high > 1.0 else 1.0


def _open_folder(path: str, num_classes: int, class_names: list[str] | None):
    """Image files by class folder. Hidden files (``.DS_Store``, macOS's AppleDouble
    ``._name.png``) and ``__MACOSX`` folders are ignored; broken links and empty files are
    listed as skipped here, files that cannot be decoded later (``ImageFiles.undecodable``)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"data folder '{path}' does not exist; pass --data with a folder of "
                        "class sub-folders, npz:PATH or sklearn:digits")
    if not root.is_dir():
        raise DataError(f"'{path}' is not a folder; pass a folder with one sub-folder of images "
                        "per class, or npz:PATH for an .npz file")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not _ignored(p))
    for name in classes:
        _check_name(root / name)
    if not classes:
        raise DataError(f"data folder '{path}' has no class sub-folders; put each class's "
                        "images in a sub-folder named after the class")
    listed = {}
    for name in classes:
        listed[name] = sorted(f for f in (root / name).iterdir()
                              if f.suffix.lower() in IMAGE_EXTENSIONS and not _ignored(f))
        if not listed[name]:
            raise DataError(f"class folder '{root / name}' has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
    for found in listed.values():
        for file in found:
            _check_name(file)
    mapping = folder_classes(classes, num_classes, class_names, path)
    files, labels, skipped = [], [], []
    for name, found in listed.items():
        for file in found:
            reason = _unusable(file)
            if reason:
                skipped.append({"path": str(file), "reason": reason})
            else:
                files.append(str(file))
                labels.append(mapping["folders"][name])
    names = classes if mapping["by"] == "position" else None
    return Opened(np.array(labels, dtype=np.int64), ImageFiles(np.array(files, dtype=str)),
                  names, skipped, mapping)


def _check_name(path: Path) -> None:
    """A file or folder name that is not valid UTF-8 (Python holds its bytes as surrogates)
    cannot be written to summary.json or the report: refused, naming its bytes."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path.name)
        where = str(path.parent).encode("utf-8", "backslashreplace").decode("utf-8")
        raise DataError(f"the name {raw!r} in '{where}' is not valid UTF-8; rename it (for "
                        "example with convmv -f latin1 -t utf-8) so that the report can name "
                        "it") from None


def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"


def _unusable(file: Path) -> str | None:
    """Why a listed file cannot be an image, from the file system alone (no decoding)."""
    if file.is_symlink() and not file.exists():
        return f"broken link to '{file.readlink()}'"
    if not file.is_file():
        return "not a regular file"
    if file.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def folder_classes(folders: list[str], num_classes: int, class_names: list[str] | None,
                   where: str) -> dict:
    """Which class each folder holds: by name when the folders are the class names, by index
    when they are integers, else by sorted position (Keras's convention) when there is one folder
    per class. Anything else is ambiguous and refused: a lone folder '7' is class 7, never 0."""
    if class_names is not None and set(folders) <= set(class_names):
        return {"by": "name", "folders": {f: class_names.index(f) for f in folders}}
    if all(f.isdigit() for f in folders):
        outside = [f for f in folders if int(f) >= num_classes]
        if outside:
            raise DataError(f"class folder '{outside[0]}' of '{where}' names class {outside[0]}, "
                            f"but the model has {num_classes} classes (0 to {num_classes - 1}); "
                            "check that the data and the model belong together")
        return {"by": "index", "folders": {f: int(f) for f in folders}}
    if len(folders) == num_classes:
        return {"by": "position", "folders": {f: i for i, f in enumerate(folders)}}
    shown = ", ".join(folders[:4]) + (", ..." if len(folders) > 4 else "")
    raise DataError(f"data folder '{where}' has {len(folders)} class folders ({shown}) for a "
                    f"model with {num_classes} classes, and they are neither class indices nor "
                    "the class_names; name each folder after its class index (0, 1, ...) or "
                    "set class_names in the spec")


@dataclass
class ImageFiles:
    """The image files of a folder source, decoded by tf.data a batch at a time."""

    paths: np.ndarray

    def __call__(self, index: np.ndarray):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self.paths[index]).map(
            _decode, num_parallel_calls=tf.data.AUTOTUNE)

    def oversized(self, index: np.ndarray) -> list[dict]:
        """The files at ``index`` whose header declares more pixels than the budget: never
        decoded (``inputs/images.py``)."""
        with headers_read_by_size() as budget:
            found = [(str(self.paths[i]), oversized(str(self.paths[i]), budget)) for i in index]
        return [{"path": path, "reason": reason} for path, reason in found if reason]

    def undecodable(self, index: np.ndarray) -> list[dict]:
        """The files at ``index`` that TensorFlow cannot decode, each with a reason. The same
        decoder as the audit's, in parallel, keeping only the positions of the files that
        decoded: no image is held, and 10,000 small files take seconds."""
        import tensorflow as tf

        files = tf.data.Dataset.from_tensor_slices((np.arange(len(index)), self.paths[index]))
        decoded = files.map(lambda i, file: (i, tf.shape(_decode(file))[0]),
                            num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        ok = np.zeros(len(index), bool)
        with _c_stderr_muted():  # libjpeg prints "Improper call to JPEG library" per bad file
            for positions, _ in decoded.batch(4096).as_numpy_iterator():
                ok[positions] = True
        return [{"path": str(self.paths[index[i]]), "reason": _decode_failure(self.paths[index[i]])}
                for i in np.flatnonzero(~ok)]


@contextlib.contextmanager
def _c_stderr_muted():
    """File descriptor 2 sent to /dev/null: C libraries write there directly, past Python."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode(file):
    """Three channels always (grey is copied, alpha dropped) so that the shape is static;
    fit_image turns them into what the model takes."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return tf.cast(image, tf.float32) / 255.0


def _decode_failure(file: str) -> str:
    """Why a file did not decode, from its first bytes (TensorFlow's message names its own
    internals, not the file's problem)."""
    with open(file, "rb") as stream:
        head = stream.read(8)
    kind = next((name for magic, name in IMAGE_MAGIC.items() if head.startswith(magic)), None)
    if kind is None:
        return "not a PNG, JPEG, BMP or GIF image"
    return f"corrupt or truncated {kind} data"


def _open_tfds(spec: str):
    name, _, split = spec.partition(":")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("tfds: sources need tensorflow-datasets; pip install tensorflow-datasets "
                        "and prepare the dataset on disk first") from None
    try:
        builder = tfds.builder(name)
        if not builder.info.splits:
            raise DataError(f"tfds dataset '{name}' is not prepared on disk; run "
                            f"tfds.builder('{name}').download_and_prepare() where a network is "
                            "available")
        ds = builder.as_dataset(split=split or "test", as_supervised=True)
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, ValueError) as exc:
        raise DataError(f"cannot open tfds dataset '{spec}': {str(exc).splitlines()[0]}") from None
    labels = np.array([int(label) for _, label in ds], dtype=np.int64)
    names = builder.info.features["label"].names if "label" in builder.info.features else None

    def read(index: np.ndarray):
        import tensorflow as tf

        wanted = np.zeros(len(labels), bool)
        wanted[index] = True  # a lookup per element: comparing with every index is O(N^2)
        mask = tf.constant(wanted)
        picked = ds.enumerate().filter(lambda i, _: tf.gather(mask, i)).map(
            lambda i, pair: pair[0])
        return picked.map(lambda image: tf.cast(image, tf.float32) / 255.0)

    return Opened(labels, read, names)
