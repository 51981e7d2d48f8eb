"""Rows of an array inside an .npz file, read on demand instead of loading the whole array.

``np.load`` reads a whole member into memory, which does not scale to tens of thousands of
224 px images. An uncompressed member (``np.savez``) is a plain .npy file stored inside the zip:
its rows are read straight from the file at their offsets. A compressed member
(``np.savez_compressed``) can only be decompressed front to back, so each request is one forward
pass over it. Either way only the rows asked for are held in memory.
"""

from __future__ import annotations

import contextlib
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, before name and extra field
# zlib's deflate expands at most 1032:1 (its technical details, "Maximum compression factor"):
# a member declaring more than that of its compressed size is lying about its size.
DEFLATE_MAX_RATIO = 1032
# What a damaged or hostile .npz raises on the way in: zip, .npy header and decompression errors.
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, NotImplementedError, RuntimeError,
               zipfile.BadZipFile, zlib.error, struct.error)


class NpzArray:
    """One array of an .npz file: its shape and dtype, and its rows by index."""

    def __init__(self, path: str | Path, name: str):
        self.path = Path(path)
        self.member = f"{name}.npy"
        with zipfile.ZipFile(self.path) as archive:
            info = archive.getinfo(self.member)
            with archive.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(stream)
                self.header_size = stream.tell()
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.fortran_order = bool(fortran_order) and len(self.shape) > 1
        self.compressed = info.compress_type != zipfile.ZIP_STORED
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.nbytes = int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize
        self._check_declared(info)
        self.data_offset = None if self.compressed else self._stored_data_offset(info)

    def _check_declared(self, info: zipfile.ZipInfo) -> None:
        """The array's header is untrusted: the size it declares must be what the zip member
        holds, and a compressed member cannot hold more than deflate's best ratio of its
        compressed bytes, so no declared shape makes a reader allocate beyond the file."""
        if self.dtype.hasobject:
            return  # pickled objects: never read (allow_pickle=False), refused by the caller
        held = info.file_size - self.header_size
        if self.nbytes != held:
            raise ValueError(f"its header declares {self.member} of shape {self.shape} "
                             f"({self.nbytes:,} bytes) but the member holds {max(held, 0):,}")
        deflated = info.compress_type == zipfile.ZIP_DEFLATED
        if deflated and info.file_size > DEFLATE_MAX_RATIO * max(info.compress_size, 1):
            raise ValueError(f"{self.member} declares {info.file_size:,} bytes from "
                             f"{info.compress_size:,} compressed, more than deflate can expand")

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def readable_by_rows(self) -> bool:
        """Rows can be read one by one unless they hold Python objects or are Fortran-ordered."""
        return not self.dtype.hasobject and not self.fortran_order and len(self.shape) >= 1

    def _stored_data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where the .npy data starts in the zip file (after the local header and .npy header)."""
        with open(self.path, "rb") as file:
            file.seek(info.header_offset)
            fields = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
        name_length, extra_length = fields[-2], fields[-1]
        return (info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
                + self.header_size)

    def read(self, index: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
        """The rows at ``index`` (in that order), ``chunk_rows`` at a time, from one open file.

        Rows are fastest read in increasing order: a compressed member seeks backwards only by
        decompressing again from its start.
        """
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"row index out of range for {self.member} with {len(self)} rows")
        with self._open() as read_into:
            for start in range(0, len(index), chunk_rows):
                yield self._rows(index[start:start + chunk_rows], read_into)

    @contextlib.contextmanager
    def _open(self):
        """A function filling a buffer from ``offset`` bytes into the array's data."""
        if self.compressed:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as member:
                def read_into(offset: int, buffer: np.ndarray) -> int:
                    member.seek(self.header_size + offset)  # forward: decompresses up to there
                    return member.readinto(buffer)

                yield read_into
        else:
            with open(self.path, "rb") as file:  # stored rows are read in place
                def read_into(offset: int, buffer: np.ndarray) -> int:
                    file.seek(self.data_offset + offset)
                    return file.readinto(buffer)

                yield read_into

    def _rows(self, index: np.ndarray, read_into) -> np.ndarray:
        """One chunk of rows, read in increasing order straight into the result; runs of
        consecutive indices are read with one call each."""
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        rows = np.empty((len(index), *self.shape[1:]), self.dtype)
        flat = rows.reshape(-1).view(np.uint8)
        for run in np.split(np.arange(len(ordered)), np.flatnonzero(np.diff(ordered) != 1) + 1):
            target = flat[run[0] * self.row_bytes:(run[-1] + 1) * self.row_bytes]
            if read_into(int(ordered[run[0]]) * self.row_bytes, target) != len(target):
                raise OSError(f"{self.path} ends early inside {self.member}; the file is "
                              "truncated")
        if np.all(order[:-1] < order[1:]):
            return rows
        out = np.empty_like(rows)
        out[order] = rows
        return out


def array_chunks(x: np.ndarray, index: np.ndarray, chunk_rows: int) -> Iterator[np.ndarray]:
    """The same chunked reading over an array already in memory."""
    for start in range(0, len(index), chunk_rows):
        yield x[index[start:start + chunk_rows]]
