"""Errors: accuracy, per-class precision/recall/F1, confusion matrix, top confusions, and the
most confident mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.checks.check import Check, evaluate, evaluate_each
from auditor.methods.topk import TopK
from auditor.sections.base import Context, KeyFigure, SectionResult

NAME = "performance"
TITLE = "Errors"
ACCURACY_BOUNDS = {"fail_drop": 0.01}  # accuracy must not drop more than 1 point
RECALL_BOUNDS = {"warn_drop": 0.05, "fail_drop": 0.15}  # per class: noisier, so looser
MATRIX_CLASSES = 20  # the confusion figure shows at most this many classes


def _accuracy(summary: dict) -> float | None:
    return (summary.get("metrics") or {}).get("accuracy")


def _mistakes(summary: dict) -> int | None:
    return (summary.get("misclassifications") or {}).get("count")


def _most_confused(summary: dict) -> str:
    top = summary["misclassifications"]["top_confusions"]
    if not top:
        return "none" if summary["misclassifications"]["count"] == 0 else ""
    return f"most often {top[0]['true']} taken for {top[0]['pred']} ({top[0]['count']}×)"


KEY_FIGURES = (
    KeyFigure("accuracy", "Accuracy", "accuracy", NAME, _accuracy, percent=True,
              detail=lambda summary: f"on {summary['data']['n']} images", rank=10),
    KeyFigure("mistakes", "Mistakes", "mistakes", NAME, _mistakes, detail=_most_confused,
              judged=False, trend=False, rank=20),
)


@dataclass
class Options:
    top_confusions: int = 10
    gallery: int = 16  # most confident mistakes shown


def most_confident_mistakes(predictions, limit: int) -> np.ndarray:
    """Positions of the wrong predictions, most confident first (ties: lowest position)."""
    wrong = np.flatnonzero(~predictions.correct)
    return TopK(limit).push(predictions.confidence[wrong], wrong).positions()


def top_confusions(labels, preds, class_names, limit: int) -> list[dict]:
    """(true, predicted) pairs by count, most frequent first."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, preds, labels=np.arange(len(class_names)))
    np.fill_diagonal(matrix, 0)
    pairs = np.argwhere(matrix > 0)
    pairs = sorted(pairs.tolist(), key=lambda p: (-matrix[p[0], p[1]], p[0], p[1]))[:limit]
    return [{"true": class_names[t], "pred": class_names[p], "count": int(matrix[t, p])}
            for t, p in pairs]


def per_class_metrics(labels, preds, class_names) -> dict[str, dict[str, float]]:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=np.arange(len(class_names)), zero_division=0)
    return {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(class_names)}


def matrix_classes(labels, preds, num_classes: int, limit: int = MATRIX_CLASSES) -> np.ndarray:
    """Every class, or the ``limit`` classes in the most mistakes (as true or as predicted
    class; then the most frequent): a 1000-class matrix is unreadable and slow to draw."""
    if num_classes <= limit:
        return np.arange(num_classes)
    wrong = labels != preds
    involved = (np.bincount(labels[wrong], minlength=num_classes)
                + np.bincount(preds[wrong], minlength=num_classes))
    frequency = np.bincount(labels, minlength=num_classes)
    return np.sort(np.lexsort((np.arange(num_classes), -frequency, -involved))[:limit])


@dataclass
class PerformanceData:
    """What the figures are drawn from: the labels and predictions, the classes the confusion
    matrix shows, and the most confident mistakes with their images."""

    facts: dict  # numbers and tables the partial shows as they are
    labels: np.ndarray
    preds: np.ndarray
    matrix_classes: np.ndarray
    examples: list[dict]
    images: np.ndarray


def summary_checks(summary: dict, baseline: dict | None, spec: dict[str, dict]) -> list[Check]:
    """Accuracy and per-class recall, held to their bounds and to the baseline run.

    Computed from summary.json data alone, so that ``auditor compare`` re-evaluates them on two
    saved runs exactly as the audit did.
    """
    metrics, before = summary["metrics"], (baseline or {}).get("metrics") or {}
    accuracy = metrics["accuracy"]
    recalls = {name: m["recall"] for name, m in metrics["per_class"].items() if m["support"]}
    old_recalls = {name: m["recall"] for name, m in (before.get("per_class") or {}).items()
                   if m.get("support")}
    return [
        evaluate("accuracy", accuracy, message=f"accuracy {accuracy:.2%}", section=NAME,
                 defaults=ACCURACY_BOUNDS, spec=spec.get("accuracy"),
                 baseline=before.get("accuracy")),
        evaluate_each("per_class_recall", recalls, what="recall", section=NAME,
                      defaults=RECALL_BOUNDS, spec=spec.get("per_class_recall"),
                      baselines=old_recalls),
    ]


def run(ctx: Context, options: Options) -> SectionResult:
    p, names = ctx.predictions, ctx.dataset.class_names
    preds = p.preds
    accuracy = p.accuracy
    mistakes = most_confident_mistakes(p, options.gallery)
    images = ctx.dataset.images(mistakes)
    gallery = [{"index": int(i), "true": names[p.labels[i]], "pred": names[preds[i]],
                "confidence": float(p.confidence[i])} for i in mistakes]
    confusions = top_confusions(p.labels, preds, names, options.top_confusions)
    per_class = per_class_metrics(p.labels, preds, names)
    metrics = {"accuracy": accuracy, "per_class": per_class}
    checks = summary_checks({"metrics": metrics}, ctx.baseline, ctx.config.checks)
    n_wrong = int((~p.correct).sum())
    return SectionResult(
        name=NAME, title=TITLE,
        intro="How often the model is wrong, on which classes, and which mistakes it makes with "
              "the most confidence. Rows of the confusion matrix are true classes, columns "
              "predicted ones; off-diagonal cells are mistakes.",
        summary={
            "metrics": metrics,
            "misclassifications": {
                "count": n_wrong,
                "top_confusions": confusions,
                "examples": gallery,
            },
        },
        data=PerformanceData(
            facts={"accuracy": accuracy, "n": len(p.labels), "mistakes": n_wrong,
                   "per_class": per_class, "confusions": confusions},
            labels=p.labels, preds=preds, examples=gallery, images=images,
            matrix_classes=matrix_classes(p.labels, preds, len(names))),
        checks=checks,
    )
