"""Data a Python caller holds, as a ``--data`` source: ``memory:NAME``.

The pipeline's sources are strings (the config and summary.json record them); a caller inside a
Python process (the Keras callback, the MLflow evaluator) holds arrays or a ``tf.data.Dataset``
instead. ``memory_source`` names its arrays ``memory:NAME`` while an audit runs; they then stream a
chunk at a time like an npz file's rows. A ``tf.data.Dataset`` is first written, one batch at a
time, to a file on disk (``spill_dataset``): its pipeline runs once, and every audit reads the
same images in the same order, whatever the dataset shuffles or augments.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from auditor.errors import DataError

SCHEME = "memory"
_SOURCES: dict[str, tuple[np.ndarray, np.ndarray, list[str] | None]] = {}


@contextlib.contextmanager
def memory_source(name: str, x, y, class_names: list[str] | None = None) -> Iterator[str]:
    """``x`` (images (N, H, W) or (N, H, W, C), values in 0-1 or 0-255) and ``y`` (class
    indices or one-hot rows) readable as the source ``memory:NAME`` inside the block."""
    source = f"{SCHEME}:{name}"
    if source in _SOURCES:
        raise DataError(f"data source '{source}' is already in use; give each in-memory "
                        "source its own name")
    _SOURCES[source] = (x, y, class_names)
    try:
        yield source
    finally:
        del _SOURCES[source]


def open_memory(source: str, data_range: str, multilabel: bool = False):
    """The ``Opened`` of an in-memory source (read in place, a chunk at a time)."""
    from auditor.inputs.datasets import (
        Opened,
        RowReader,
        _check_image_shape,
        _labels,
        _range_divisor,
    )
    from auditor.inputs.npz import array_chunks

    if source not in _SOURCES:
        raise DataError(f"no in-memory data named '{source}'; memory: sources exist only inside "
                        "a Python process (auditor.keras.AuditCallback); pass a folder, "
                        "npz:PATH or sklearn:digits")
    x, y, names = _SOURCES[source]
    where = f"data '{source}'"
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    _check_image_shape(x.shape, where)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{where} holds images as {x.dtype}; pass pixel values as numbers")
    y = _labels(np.asarray(y), where, multilabel)
    if len(x) != len(y):
        raise DataError(f"{where} has {len(x)} images but {len(y)} labels; give one label per "
                        "image")
    read_rows = functools.partial(array_chunks, x)
    divisor = _range_divisor(read_rows, x.shape, x.dtype, data_range, where)
    return Opened(y, RowReader(read_rows, x.shape[1:], x.dtype, divisor), names)


def value_range(x: np.ndarray, data_range: str = "auto") -> str:
    """'0-1' or '0-255': the range of the images, as this source reads them. Arrays a model is
    trained on are the model's own input, so this is also the range the model expects."""
    from auditor.inputs.datasets import _range_divisor
    from auditor.inputs.npz import array_chunks

    divisor = _range_divisor(functools.partial(array_chunks, x), x.shape, x.dtype, data_range,
                             f"data of shape {x.shape}")
    return "0-255" if divisor == 255.0 else "0-1"


def spill_dataset(dataset, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of a ``tf.data.Dataset`` of (image, label) pairs or batches of
    them (a third element, sample weights, is ignored), the images written to ``folder`` a
    batch at a time and mapped back read-only (np.memmap): never all in memory at once."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2 or not all(
            isinstance(s, tf.TensorSpec) for s in spec[:2]):
        raise DataError(f"the tf.data.Dataset yields {spec}; pass one of (image, label) pairs "
                        "or batches, as Keras's validation_data takes")
    batched = spec[0].shape.rank == 4 or (spec[0].shape.rank == 3 and spec[1].shape.rank == 1
                                          and spec[0].shape[-1] not in (1, 3, 4))
    if not batched:
        dataset = dataset.batch(256)
    path = Path(folder) / "images.raw"
    labels, rows, dtype, shape = [], 0, None, None
    with open(path, "wb") as file:
        for element in dataset.as_numpy_iterator():
            images, label = np.asarray(element[0]), np.asarray(element[1])
            if shape is None:
                dtype, shape = images.dtype, images.shape[1:]
            elif images.shape[1:] != shape:
                raise DataError(f"the tf.data.Dataset yields images of shape {images.shape[1:]} "
                                f"after {shape}; resize them to one shape in the dataset")
            file.write(np.ascontiguousarray(images, dtype=dtype).tobytes())
            # Rows of several columns are kept as they are: one-hot rows are read as their
            # class and multi-hot rows as label sets when the source is opened against the
            # model (``open_memory``), never taken for their argmax here.
            labels.append(label if label.ndim == 2 and label.shape[1] > 1
                          else label.reshape(-1))
            rows += len(images)
    if rows == 0:
        raise DataError("the tf.data.Dataset is empty; pass the labelled images to audit")
    x = np.memmap(path, dtype=dtype, mode="r", shape=(rows, *shape))
    return x, np.concatenate(labels)
