"""Labelled image sources streamed as display-space batches that fit the model.

Sources (the ``--data`` SOURCE): ``sklearn:digits[:train|test|all]``, ``npz:PATH`` (arrays ``x``,
``y``, optional ``class_names``), a folder with one sub-folder of images per class (Keras's
convention: class names from sorted folder names), and ``tfds:NAME[:SPLIT]`` when the dataset is
already on disk. Every image leaves here as float32 in [0, 1] with the model's height, width and
channels; the audit never holds more than a batch of images unless a section asks for a few.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.errors import DataError
from auditor.inputs.npz import NpzArray, array_chunks

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
DATA_RANGES = ("auto", "0-1", "0-255")
DIGITS_TEST_FRACTION = 0.4
READ_CHUNK_BYTES = 4 << 20  # bytes of stored images scanned at once when an npz is opened
NON_FINITE = "NaN or infinite pixel values"


@dataclass
class Dataset:
    """A labelled image source, possibly a stratified sample of it.

    ``labels[i]`` is the class of sample ``i``; ``source_index[i]`` its position in the source.
    """

    source: str
    class_names: list[str]
    labels: np.ndarray
    source_index: np.ndarray
    image_shape: tuple[int, int, int]
    # source indices -> tf.data.Dataset of display-space images (H, W, C), not yet fitted to the
    # model; or a RowReader, whose rows are read, scaled and fitted a batch at a time
    _read: Callable[[np.ndarray], object]

    @property
    def n(self) -> int:
        return int(len(self.labels))

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Stream (images, labels, sample positions) in order, a batch at a time."""
        for images, labels, positions in self.tensor_batches(batch_size):
            yield images.numpy(), labels, positions

    def tensor_batches(self, batch_size: int) -> Iterator[tuple[object, np.ndarray, np.ndarray]]:
        """``batches`` with the images left as tensors, for steps that feed them straight back
        to TensorFlow (a copy to numpy and back costs as much as a small model's pass)."""
        import tensorflow as tf

        batches = iter(self._pipeline(self.source_index, batch_size))
        for start in range(0, self.n, batch_size):
            try:
                images = next(batches)
            except tf.errors.OpError as exc:  # a corrupt file in the middle of a folder
                if NON_FINITE in exc.message:
                    raise DataError(f"dataset '{self.source}' has NaN or infinite pixel values "
                                    f"near sample {start}; clean or drop those images") from None
                raise DataError(f"cannot read an image of '{self.source}' near sample {start}: "
                                f"{exc.message.splitlines()[0]}; remove or re-save that "
                                "file") from None
            stop = min(start + batch_size, self.n)
            yield images, self.labels[start:stop], np.arange(start, stop)

    def images(self, positions) -> np.ndarray:
        """Re-read a few samples by position (for figures and per-example analyses)."""
        positions = np.asarray(positions, dtype=int)
        if positions.size == 0:
            return np.zeros((0, *self.image_shape), np.float32)
        order = np.argsort(positions, kind="stable")  # sources read fastest in order
        chunks = [b.numpy() for b in self._pipeline(self.source_index[positions[order]], 256)]
        images = np.empty((len(positions), *self.image_shape), np.float32)
        images[order] = np.concatenate(chunks)
        return images

    def _pipeline(self, source_index: np.ndarray, batch_size: int):
        """Batches fitted to the model. Rows of one shape are read and fitted a batch at a
        time: per-image steps would cost more than a small model's forward pass."""
        import tensorflow as tf

        def fit(images, divisor=1.0):  # checked here, in tf.data's threads, not in the model's
            images = tf.cast(images, tf.float32) / divisor
            images = tf.debugging.assert_all_finite(images, NON_FINITE)
            return fit_image(images, *self.image_shape)

        if isinstance(self._read, RowReader):
            reader = self._read
            batched = reader.chunks(source_index, batch_size).map(
                lambda rows: fit(rows, reader.divisor))
        else:
            batched = self._read(source_index).map(
                fit, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
        return batched.prefetch(tf.data.AUTOTUNE)


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


def load_dataset(source: str, image_shape: tuple[int, int, int], num_classes: int, *,
                 class_names: list[str] | None = None, max_samples: int | None = None,
                 seed: int = 0, data_range: str = "auto") -> Dataset:
    """Open a data source, check it against the model, and take a stratified sample if asked."""
    if data_range not in DATA_RANGES:
        raise DataError(f"unknown data_range '{data_range}'; use one of: {', '.join(DATA_RANGES)}")
    scheme, sep, rest = source.partition(":")
    if sep and scheme == "sklearn":
        opened = _open_sklearn(rest)
    elif sep and scheme == "npz":
        opened = _open_npz(rest, data_range)
    elif sep and scheme == "tfds":
        opened = _open_tfds(rest)
    elif sep and len(scheme) > 1:
        raise DataError(f"unknown data scheme '{scheme}:'; use sklearn:digits, npz:PATH, "
                        "tfds:NAME[:SPLIT] or a folder of class sub-folders")
    else:
        opened = _open_folder(source)
    labels, read, names = opened
    if len(labels) == 0:
        raise DataError(f"dataset '{source}' is empty; point --data at labelled images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"dataset '{source}' has labels from {labels.min()} to {labels.max()}, "
                        f"but the model has {num_classes} classes (0 to {num_classes - 1}); "
                        "check that the data and the model belong together")
    labels = _match_by_name(labels, names, class_names)
    names = _class_names(class_names, names, num_classes)
    index = sample_indices(labels, max_samples, seed)
    return Dataset(source=source, class_names=names, labels=labels[index].astype(np.int64),
                   source_index=index, image_shape=tuple(image_shape), _read=read)


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

    def chunks(self, index: np.ndarray, chunk_rows: int):
        """tf.data.Dataset of the raw rows at ``index``, ``chunk_rows`` at a time (N, H, W, C)."""
        import tensorflow as tf

        image_shape = (*self.row_shape, 1) if len(self.row_shape) == 2 else self.row_shape

        def rows():
            for chunk in self.read_rows(index, chunk_rows):
                yield chunk.reshape(len(chunk), *image_shape)

        spec = tf.TensorSpec((None, *image_shape), tf.as_dtype(np.dtype(self.dtype)))
        return tf.data.Dataset.from_generator(rows, output_signature=spec)


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
    return y, _array_reader(x), [str(i) for i in range(10)]


def digits_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified train/test split of the digits that the demo model is trained on."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION,
                            stratify=labels, random_state=0)


def _open_npz(path: str, data_range: str):
    """Labels and class names are read at once; images stay on disk and stream by rows."""
    file = Path(path)
    where = f"npz file '{path}'"
    if not file.is_file():
        raise DataError(f"npz file '{path}' does not exist; pass --data npz:PATH to an .npz with "
                        "arrays x and y")
    try:
        arrays = np.load(file, allow_pickle=False)
        members = set(arrays.files)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read '{path}' as .npz ({exc}); save it with "
                        "np.savez(path, x=images, y=labels)") from None
    missing = [k for k in ("x", "y") if k not in members]
    if missing:
        raise DataError(f"{where} has no array {' or '.join(repr(m) for m in missing)} "
                        f"(it has: {', '.join(sorted(members)) or 'nothing'}); save it with "
                        "np.savez(path, x=images, y=labels)")
    try:
        x = NpzArray(file, "x")
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read array 'x' of '{path}' ({exc}); save it with "
                        "np.savez(path, x=images, y=labels)") from None
    _check_image_shape(x.shape, where)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where} stores images as {x.dtype}; save pixel values as numbers")
    y = _labels(np.asarray(arrays["y"]), where)
    if len(x) != len(y):
        raise DataError(f"{where} has {len(x)} images but {len(y)} labels; give one "
                        "label per image")
    read_rows = x.read if x.readable_by_rows else functools.partial(array_chunks, arrays["x"])
    divisor = _range_divisor(read_rows, x.shape, x.dtype, data_range, where)
    names = [str(n) for n in arrays["class_names"]] if "class_names" in members else None
    return y, RowReader(read_rows, x.shape[1:], x.dtype, divisor), names


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where} has labels that are not whole class indices; labels must "
                            "be integers 0..classes-1")
    return y.astype(np.int64)


def _range_divisor(read_rows: Callable, shape: tuple[int, ...], dtype: np.dtype,
                   data_range: str, where: str) -> float:
    """How to bring raw pixel values to [0, 1]: given by the spec or guessed from the maximum.

    Floating-point images are scanned once, a chunk at a time, for NaN and infinite values.
    """
    floating = np.issubdtype(dtype, np.floating)
    if not floating and data_range != "auto":
        return 255.0 if data_range == "0-255" else 1.0
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
    if data_range == "0-1":
        return 1.0
    if data_range == "0-255":
        return 255.0
    if n == 0 or low > high:
        return 1.0
    if low < 0 or high > 255:
        raise DataError(f"{where} has pixel values from {low:g} to {high:g}; store images in "
                        "0-1 or 0-255 (set data_range in the spec)")
    return 255.0 if high > 1.0 else 1.0


def _open_folder(path: str):
    root = Path(path)
    if not root.exists():
        raise DataError(f"data folder '{path}' does not exist; pass --data with a folder of "
                        "class sub-folders, npz:PATH or sklearn:digits")
    if not root.is_dir():
        raise DataError(f"'{path}' is not a folder; pass a folder with one sub-folder of images "
                        "per class, or npz:PATH for an .npz file")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"data folder '{path}' has no class sub-folders; put each class's "
                        "images in a sub-folder named after the class")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(str(f) for f in (root / name).iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise DataError(f"class folder '{root / name}' has no images "
                            f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        files += found
        labels += [label] * len(found)
    paths = np.array(files)

    def read(index: np.ndarray):
        import tensorflow as tf

        def decode(file):
            # Three channels always (grey is copied, alpha dropped) so the shape is static;
            # fit_image turns them into what the model takes.
            image = tf.io.decode_image(tf.io.read_file(file), channels=3,
                                       expand_animations=False)
            image.set_shape((None, None, 3))
            return tf.cast(image, tf.float32) / 255.0

        return tf.data.Dataset.from_tensor_slices(paths[index]).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE)

    _check_readable(paths[0], path)
    return np.array(labels, dtype=np.int64), read, classes


def _check_readable(file: str, folder: str) -> None:
    import tensorflow as tf

    try:
        tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        raise DataError(f"cannot decode image '{file}' in '{folder}'; use PNG, JPEG, BMP or "
                        "GIF files") from None


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

    return labels, read, names
