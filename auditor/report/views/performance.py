"""Performance figures: the confusion matrix and thumbnails of the most confident mistakes."""

from __future__ import annotations

import numpy as np

from auditor.report.figures import figure_uri, image_uri


def confusion_figure(labels, preds, class_names, shown: np.ndarray) -> str:
    """Counts of true (rows) against predicted (columns) classes, over the ``shown`` ones."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = min(9.0, 2.5 + 0.45 * len(shown))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ConfusionMatrixDisplay.from_predictions(
        labels, preds, labels=shown, display_labels=[class_names[i] for i in shown],
        cmap="Blues", colorbar=False, ax=ax, text_kw={"fontsize": 7})
    title = "rows: true class · columns: predicted class"
    if len(shown) < len(class_names):
        title += f"\nthe {len(shown)} of {len(class_names)} classes in the most mistakes"
    ax.set_title(title, fontsize=9)
    plt.setp(ax.get_xticklabels(), rotation=45 if len(shown) > 10 else 0, ha="right")
    return figure_uri(fig)


def view(result, dataset) -> dict:
    d = result.data
    if not hasattr(d, "labels"):  # a multi-label model's (sections.performance.MultiLabelData)
        return {**d.facts, "multilabel": True,
                "gallery": [{"image": image_uri(img), **e}
                            for img, e in zip(d.images, d.examples, strict=True)]}
    return {**d.facts,
            "gallery": [{"image": image_uri(img), **e}
                        for img, e in zip(d.images, d.examples, strict=True)],
            "confusion_matrix": confusion_figure(d.labels, d.preds, dataset.class_names,
                                                 d.matrix_classes)}
