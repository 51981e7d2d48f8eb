"""Performance views: the confusion matrix and thumbnails of the most confident mistakes."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import image_uri


def confusion_table(labels, preds, class_names, shown: np.ndarray) -> dict:
    """Counts of true (rows) against predicted (columns) classes, over the ``shown`` ones, as
    an HTML table whose cells are shaded on matplotlib's ``Blues`` by their count. A table, not
    a figure: the counts are text a reader can select and a screen reader can read, and
    drawing the same matrix with matplotlib (a hundred text artists for ten classes) took 0.6
    to 2.2 s, the largest part of an audit of the demo CNN through the Keras callback
    (bench/callback.py); the table takes milliseconds."""
    import matplotlib
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, preds, labels=shown)
    shade = matplotlib.colormaps["Blues"]
    top = max(int(matrix.max()), 1)
    names = [class_names[i] for i in shown]
    rows = [{"name": name,
             "cells": [{"count": int(count), "colour": matplotlib.colors.to_hex(shade(count / top)),
                        "dark": count > top / 2}  # white text on the darker half, as sklearn's
                       for count in row]}
            for name, row in zip(names, matrix, strict=True)]
    note = (f"the {len(shown)} of {len(class_names)} classes in the most mistakes"
            if len(shown) < len(class_names) else None)
    return {"classes": names, "rows": rows, "note": note}


def view(result, dataset) -> dict:
    d = result.data
    if not hasattr(d, "labels"):  # a multi-label model's (sections.performance.MultiLabelData)
        return {**d.facts, "multilabel": True,
                "gallery": [{"image": image_uri(img), **e}
                            for img, e in zip(d.images, d.examples, strict=True)]}
    return {**d.facts,
            "gallery": [{"image": image_uri(img), **e}
                        for img, e in zip(d.images, d.examples, strict=True)],
            "confusion_matrix": confusion_table(d.labels, d.preds, dataset.class_names,
                                                d.matrix_classes)}
