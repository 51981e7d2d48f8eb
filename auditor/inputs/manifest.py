"""A CSV manifest of a multi-label image folder: each image's path and the labels it carries.

The format (README, "Multi-label models"): a header ``path,labels``, then one row per image: its
path relative to the manifest's folder (it must stay inside that folder) and its labels
separated by ``|`` (an empty field: no label). Labels are names when the label order is known,
from the spec's ``class_names`` or a ``classes.txt`` beside the manifest (one name per line, in
the order of the model's outputs); without names they are output indices ``0..K-1``. The
manifest is untrusted: every row is checked before an image is decoded, and a bad row is one
line naming its line number.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from auditor.errors import DataError
from auditor.inputs.datasets import (
    IMAGE_EXTENSIONS,
    ImageFiles,
    Opened,
    _check_name,
    _unusable,
)

HEADER = ["path", "labels"]
SEPARATOR = "|"
CLASSES_FILE = "classes.txt"


def open_manifest(path: str, num_classes: int, class_names: list[str] | None) -> Opened:
    """Multi-hot labels (N, K) and the image files of a manifest; files that are missing or
    empty are skipped and listed, as in a class-folder source."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"manifest '{path}' does not exist; pass --data with a CSV of "
                        "path,labels rows beside the images")
    root = file.parent.resolve()
    names = class_names if class_names is not None else _classes_file(root, num_classes)
    lookup = _label_lookup(names, num_classes)
    try:
        with open(file, newline="", encoding="utf-8") as stream:
            rows = list(csv.reader(stream))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"manifest '{path}' is not a UTF-8 CSV file ({exc}); save it as "
                        "UTF-8 with a header path,labels") from None
    if not rows or [cell.strip().lower() for cell in rows[0]] != HEADER:
        raise DataError(f"manifest '{path}' must start with the header 'path,labels' (got "
                        f"{','.join(rows[0]) if rows else 'an empty file'!r}); then one row "
                        "per image: its path and its labels separated by '|'")
    files, labels, skipped = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        target, present = _row(row, line, path, root, lookup)
        reason = "no such file" if not target.exists() and not target.is_symlink() else (
            _unusable(target))
        if reason:
            skipped.append({"path": str(target), "reason": reason})
            continue
        files.append(str(target))
        hot = np.zeros(num_classes, np.int8)
        hot[present] = 1
        labels.append(hot)
    multi_hot = np.array(labels, np.int8).reshape(len(labels), num_classes)
    return Opened(multi_hot, ImageFiles(np.array(files, dtype=str)), names, skipped)


def _row(row: list[str], line: int, path: str, root: Path,
         lookup: dict[str, int]) -> tuple[Path, list[int]]:
    """One row's image file (resolved, inside ``root``) and its label indices."""
    where = f"line {line} of manifest '{path}'"
    if len(row) != 2:
        raise DataError(f"{where} has {len(row)} fields; give 'path,labels' (quote a path that "
                        "holds a comma)")
    given = row[0].strip()
    if not given:
        raise DataError(f"{where} has no path; give the image's path relative to the manifest")
    target = (root / given).resolve()
    if not target.is_relative_to(root):
        raise DataError(f"{where} names '{given}', outside the manifest's folder '{root}'; "
                        "give paths inside that folder")
    if target.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{where} names '{given}', not an image file "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    _check_name(target)
    present = []
    for token in (t.strip() for t in row[1].split(SEPARATOR)):
        if not token:
            continue
        if token not in lookup:
            known = ", ".join(list(lookup)[:8]) + (", ..." if len(lookup) > 8 else "")
            raise DataError(f"{where} has the label {token!r}, which is none of the model's "
                            f"labels ({known}); fix the row, or set class_names in the spec")
        present.append(lookup[token])
    return target, present


def _classes_file(root: Path, num_classes: int) -> list[str] | None:
    """The label names of ``classes.txt`` beside the manifest, one per line, or None."""
    file = root / CLASSES_FILE
    if not file.is_file():
        return None
    try:
        names = [n.strip() for n in file.read_text(encoding="utf-8").splitlines() if n.strip()]
    except UnicodeDecodeError:
        raise DataError(f"'{file}' is not UTF-8 text; save one label name per line") from None
    if len(names) != num_classes or len(set(names)) != len(names):
        raise DataError(f"'{file}' lists {len(names)} label names ({len(set(names))} distinct), "
                        f"but the model has {num_classes} sigmoid outputs; give one distinct "
                        "name per output, in output order")
    return names


def _label_lookup(names: list[str] | None, num_classes: int) -> dict[str, int]:
    """Label token -> output index: the names when known, else the indices as text."""
    if names is None:
        return {str(i): i for i in range(num_classes)}
    return {str(name): i for i, name in enumerate(names)}
