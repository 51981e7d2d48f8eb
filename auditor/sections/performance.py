"""Errors: accuracy, per-class precision/recall/F1, confusion matrix, top confusions, and the
most confident mistakes. A multi-label model's (``run_multilabel``): precision, recall, F1 and
average precision per label at its threshold, micro and macro averages, the mistakes as missed
labels and false alarms per label, and the images with the most confident wrong decisions."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from auditor.checks.check import Check, evaluate_each
from auditor.checks.declared import Declared, spec_bounds
from auditor.methods.multilabel import FLOAT64_EPS, skill_rounding
from auditor.methods.prediction_health import FLOAT32_RESOLUTION
from auditor.methods.topk import most_confident_mistakes
from auditor.sections.base import Context, KeyFigure, SectionResult, at_least

NAME = "performance"
TITLE = "Errors"
MULTI_LABEL = True  # a multi-label model is scored per label (run_multilabel)
ACCURACY_BOUNDS = {"fail_drop": 0.01}  # accuracy must not drop more than 1 point
RECALL_BOUNDS = {"warn_drop": 0.05, "fail_drop": 0.15}  # per class: noisier, so looser
# Cohen's kappa: Landis & Koch (1977) call agreement below 0.2 "slight" and below 0.4 "fair";
# a classifier that slight is at chance level for any use, one that fair is suspect.
KAPPA_BOUNDS = {"warn_below": 0.4, "fail_below": 0.2}
# Effective predicted classes over effective data classes (exp-entropy of each). A model whose
# errors spread like its labels keeps it near 1 (measured on the digits: the demo CNN 1.0, a
# softmax regression at 37% accuracy 0.77, near-chance ones at 14-17% accuracy 0.41-0.50); 0.25
# means predictions sit on two or three of ten classes.
SPREAD_BOUNDS = {"warn_below": 0.5, "fail_below": 0.25}
# How far the largest predicted share has gone from the data's largest class share towards one
# class for everything (prediction_health.excess_share; 1 = a constant model, on any number of
# classes). Measured with scikit-learn logistic regressions on the digits (halves of 2-, 3- and
# 10-class subsets, not the CNNs the tests audit): at 83-100% accuracy 0.34 at most (0.06 for all
# but one), at 62-66% 0.21-0.51, collapsed ones (one class for nearly all images) 0.93-1.0.
# Past half-way the model answers its favourite class far beyond the data's; past 0.8 it has
# collapsed (on two balanced classes: 90% of the answers).
SHARE_BOUNDS = {"warn_above": 0.5, "fail_above": 0.8}
# Accuracy gained by the best relabelling of the outputs. With the right class order the
# identity is the best matching (gain 0 for the demo CNN, an RGB CNN and an untrained
# MobileNetV2; 0.008 for a 37% softmax regression); matching noise gives near-chance models
# 0.13-0.15 on 72 images per class, so 0.2 is above noise; a shuffled class order gains 0.7-0.9.
CLASS_ORDER_BOUNDS = {"warn_above": 0.2, "fail_above": 0.4}
# The logits' spread between classes (each image's largest minus smallest, the median over the
# images) below float32's resolution at 1, its machine epsilon (FLOAT32_RESOLUTION, where it
# is defined): there the softmax is uniform to rounding, so no figure read from the logits or
# their gradients means anything. No warn band: above it the classes are resolved.
LOGIT_SPREAD_BOUNDS = {"fail_below": FLOAT32_RESOLUTION}
# The relabelling is judged only with this many images per class (else noise matches more).
RELABEL_IMAGES_PER_CLASS = 20
MATRIX_CLASSES = 20  # the confusion table shows at most this many classes


def _accuracy(summary: dict) -> float | None:
    return (summary.get("metrics") or {}).get("accuracy")


def _labels_block(summary: dict) -> dict:
    return summary.get("multilabel") or {}


def _mistakes(summary: dict) -> int | None:
    return (summary.get("misclassifications") or {}).get("count")


def _most_confused(summary: dict) -> str:
    top = summary["misclassifications"]["top_confusions"]
    if not top:
        return "none" if summary["misclassifications"]["count"] == 0 else ""
    return f"most often {top[0]['true']} taken for {top[0]['pred']} ({top[0]['count']}×)"


def _spread_words(summary: dict, check: dict) -> str:
    top = (((summary.get("metrics") or {}).get("prediction_spread") or {}).get("top")
           or [{}])[0]
    if not top:
        return "The predictions have collapsed onto a few classes."
    return (f"The model answers '{top['class']}' for {top['share']:.0%} of the images: its "
            "predictions have collapsed, so the figures below show that collapse, not skill.")


def _order_words(summary: dict, check: dict) -> str:
    order = (summary.get("metrics") or {}).get("class_order") or {}
    return ("The model's class order does not match the data's: relabelled, its accuracy "
            f"would be {order.get('matched_accuracy', 0):.0%} instead of "
            f"{order.get('accuracy', 0):.0%}; the class_order check gives the class_names "
            "that fix it.")


def _rounding_words(summary: dict, check: dict) -> str:
    spread = (summary.get("metrics") or {}).get("logit_spread") or {}
    return (f"The model's logits differ between classes by only {spread.get('median', 0):.1g} "
            f"(median image), below float32's rounding ({spread.get('resolution', 0):.1g}): its "
            "probabilities are uniform to rounding, and the maps and figures below rest on "
            "differences float32 cannot hold: read them as noise (an untrained model, or "
            "outputs scaled to nothing?).")


def _chance_words(summary: dict, check: dict) -> str | None:
    """Words when the accuracy (or kappa) says the predictions hardly follow the labels: kappa
    below its bound, or an accuracy no better than answering the most frequent class."""
    metrics = summary.get("metrics") or {}
    accuracy, chance = metrics.get("accuracy"), metrics.get("chance_accuracy")
    if check["id"] == "accuracy" and not (isinstance(accuracy, (int, float))
                                          and chance is not None and accuracy <= chance):
        return None  # a missed accuracy bound is no degenerate result
    shown = f"Accuracy {accuracy:.0%}" if isinstance(accuracy, (int, float)) else "Accuracy"
    level = "at chance level" if check["status"] != "warn" else "barely above chance level"
    return (f"{shown} is {level}: the predictions hardly follow the labels (a wrong input "
            "range, other data, or an untrained model?).")


ACCURACY = Declared("accuracy", what="accuracy", bounds=ACCURACY_BOUNDS, figure="accuracy",
                    finding=_chance_words, finding_rank=30)
RECALL = Declared("per_class_recall", what="recall per class", bounds=RECALL_BOUNDS,
                  figure="accuracy")
KAPPA = Declared("kappa", what="agreement beyond chance (Cohen's kappa)", bounds=KAPPA_BOUNDS,
                 figure="accuracy", finding=_chance_words, finding_rank=30)
SPREAD = Declared("prediction_spread", what="spread of the predictions over the classes",
                  bounds=SPREAD_BOUNDS, figure="accuracy", finding=_spread_words,
                  finding_rank=10)
SHARE = Declared("prediction_share",
                  what="the largest predicted share against the data's largest class share",
                  bounds=SHARE_BOUNDS, figure="accuracy", finding=_spread_words,
                  finding_rank=10)
LOGITS = Declared("logit_spread", what="the logits' spread between classes against float32's "
                  "rounding", bounds=LOGIT_SPREAD_BOUNDS, figure="accuracy",
                  finding=_rounding_words, finding_rank=5)
ORDER = Declared("class_order", what="the model's class order against the data's",
                 bounds=CLASS_ORDER_BOUNDS, figure="accuracy", finding=_order_words,
                 finding_rank=20)
# A multi-label model's checks. Its overall figure, micro-averaged F1, takes the accuracy's
# bound (it is what accuracy is to one class per image: every decision pooled); each label's F1
# takes the per-class recall's (a figure over fewer images, so noisier); each label's skill is
# its average precision above its prevalence, which is the average precision a random ranking
# has in expectation (Saito & Rehmsmeier 2015, PLoS ONE 10(3)): at or below it the model ranks
# that label no better than chance, whatever the threshold. A label scored the same on every
# image has exactly its prevalence: no skill, which fails. So the bound is float64's rounding
# of the two figures, not 0 (a skill within rounding of 0 is 0): the epsilon at one image
# declared, each label judged at its own number of images (multilabel.skill_rounding).
MICRO_F1 = Declared("multilabel.micro_f1", what="micro-averaged F1 over every label",
                    bounds=ACCURACY_BOUNDS, figure="micro_f1")
LABEL_F1 = Declared("multilabel.label_f1.*", what="F1 of one label", bounds=RECALL_BOUNDS,
                    figure="micro_f1")
LABEL_SKILL = Declared("multilabel.label_skill.*",
                       what="a label's average precision above its prevalence (chance)",
                       bounds={"fail_below": FLOAT64_EPS}, figure="micro_f1")


def _dead_label_words(summary: dict, check: dict) -> str:
    label = check["id"].removeprefix("multilabel.logit_spread.")
    return (f"Label '{label}': its logit is the same number on every image to float32's "
            "rounding: the model does not look at the image for it, and its ranking, its "
            "maps and every figure read from its gradients are noise (a dead unit, or a "
            "label it never learned?).")


# A multi-label model's logit_spread, per label (prediction_health.label_logit_spread): a
# spread between independent sigmoids means nothing, but a label whose logit does not move
# across the images by float32's resolution at its size is constant. The declared bound is
# the resolution at 1 (LOGIT_SPREAD_BOUNDS); each label is judged at its own logit's size.
LABEL_LOGITS = Declared("multilabel.logit_spread.*",
                        what="a label's logit spread across images against float32's rounding",
                        bounds=LOGIT_SPREAD_BOUNDS, figure="micro_f1",
                        finding=_dead_label_words, finding_rank=5)
CHECKS = (ACCURACY, RECALL, KAPPA, SPREAD, SHARE, LOGITS, ORDER, MICRO_F1, LABEL_F1, LABEL_SKILL,
          LABEL_LOGITS)

KEY_FIGURES = (
    KeyFigure("accuracy", "Accuracy", "accuracy", NAME, _accuracy, percent=True,
              detail=lambda summary: f"on {summary['data']['n']} images", rank=10),
    KeyFigure("mistakes", "Mistakes", "mistakes", NAME, _mistakes, detail=_most_confused,
              judged=False, trend=False, rank=20),
    KeyFigure("micro_f1", "Micro F1", "micro-averaged F1 (multi-label)", NAME,
              lambda s: (_labels_block(s).get("micro") or {}).get("f1"), percent=True,
              detail=lambda s: f"over {len(_labels_block(s).get('labels') or {})} labels",
              rank=11, headline=False),  # the top's five are fixed; summary.md lists it
)


@dataclass
class Options:
    top_confusions: int = 10
    gallery: int = 16  # most confident mistakes shown

    def __post_init__(self):
        at_least(NAME, self, 0, "top_confusions", "gallery")


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


def health_metrics(labels, preds, class_names, logits=None) -> dict:
    """Whether the predictions carry information: chance accuracy, kappa, spread, order, and
    with the ``logits`` their spread between classes."""
    from auditor.methods import prediction_health as health

    classes = len(class_names)
    metrics = {"chance_accuracy": health.chance_accuracy(labels, classes),
               "kappa": health.kappa(labels, preds, classes),
               "prediction_spread": health.prediction_spread(labels, preds, class_names)}
    spread = health.logit_spread(logits) if logits is not None else None
    if spread is not None:
        metrics["logit_spread"] = spread
    if len(labels) >= RELABEL_IMAGES_PER_CLASS * classes:
        metrics["class_order"] = health.best_relabelling(labels, preds, class_names)
    return metrics


def accuracy_check(metrics: dict, before: dict, spec: dict) -> Check:
    """Accuracy against its bounds and baseline; with no absolute bound set, an accuracy no
    better than always answering the most frequent class fails rather than passing ungated."""
    accuracy, chance = metrics["accuracy"], metrics.get("chance_accuracy")
    check = ACCURACY.judge(accuracy, checks=spec, message=f"accuracy {accuracy:.2%}",
                           section=NAME, baseline=before.get("accuracy"))
    absolute = any(k.endswith(("below", "above")) for k in check.threshold)
    if chance is not None and not absolute and check.status == "pass" and accuracy <= chance:
        top = (metrics.get("prediction_spread") or {}).get("top") or [{}]
        message = (f"accuracy {accuracy:.2%} is no better than chance: always answering "
                   f"the most frequent class gets {chance:.2%}"
                   + (f" (the model answers '{top[0]['class']}' for {top[0]['share']:.0%} "
                      "of the images)" if top[0] else ""))
        return dataclasses.replace(check, status="fail", gated=True, message=message)
    return check


def share_check(spread: dict, spec: dict) -> Check:
    """The largest predicted share against the data's largest class share; skipped when the
    data holds one class (any model answering it is right)."""
    top = spread["top"][0]["class"] if spread["top"] else "?"
    words = (f"the most predicted class ('{top}') takes {spread['largest_share']:.0%} of the "
             f"answers; the data's largest class {spread['data_largest_share']:.0%}")
    if spread["excess_share"] is None:
        return SHARE.outcome("skipped", None, checks=spec, section=NAME, threshold=SHARE_BOUNDS,
                             message=f"{words}: the data holds one class, so any share is "
                                     "its share")
    check = SHARE.judge(spread["excess_share"], checks=spec, section=NAME,
                        message=f"{words} (excess {spread['excess_share']:.2f} of the way to one "
                                "class for everything)")
    return check.noted(": the predictions have collapsed onto one class")


def health_checks(metrics: dict, spec: dict) -> list[Check]:
    """Kappa, spread of the predictions, the logits' spread and class order, when the summary
    has them."""
    checks = []
    if metrics.get("kappa") is not None:
        value = metrics["kappa"]
        checks.append(KAPPA.judge(
            value, checks=spec, section=NAME,
            message=f"agreement with the labels beyond chance (Cohen's kappa) {value:.2f}",
        ).noted(": the predictions are close to chance level"))
    spread = metrics.get("prediction_spread")
    if spread:
        top = ", ".join(f"'{t['class']}' {t['share']:.0%}" for t in spread["top"][:2])
        checks.append(SPREAD.judge(
            spread["ratio"], checks=spec, section=NAME,
            message=f"predictions use {spread['predicted_classes']:.1f} of the data's "
                    f"{spread['data_classes']:.1f} classes (effective numbers; most predicted: "
                    f"{top})").noted(": the predictions have collapsed onto a few classes"))
        if "excess_share" in spread:
            checks.append(share_check(spread, spec))
    logits = metrics.get("logit_spread")
    if logits:
        checks.append(LOGITS.judge(
            logits["median"], checks=spec, section=NAME,
            message=f"the logits' spread between classes (each image's largest minus smallest, "
                    f"median over the images) {logits['median']:.2g}; float32 resolves "
                    f"{logits['resolution']:.2g} at 1").noted(
            f": on {logits['share_at_rounding']:.0%} of the images the softmax is uniform to "
            "rounding, and every gradient and map is rounding noise"))
    order = metrics.get("class_order")
    if order:
        gain = order["matched_accuracy"] - order["accuracy"]
        check = ORDER.judge(gain, checks=spec, section=NAME,
                            message=f"relabelling the model's outputs would raise accuracy from "
                                 f"{order['accuracy']:.1%} to {order['matched_accuracy']:.1%}")
        if check.status != "pass":
            moved = ", ".join(f"output {m['output']} behaves as '{m['is']}'"
                              for m in order["moved"][:4])
            check = dataclasses.replace(check, message=check.message + (
                f": the model's class order does not match the data's ({moved}"
                f"{', ...' if len(order['moved']) > 4 else ''}); set class_names = "
                f"{json.dumps(order['class_names'])} in the spec"))
        checks.append(check)
    return checks


def summary_checks(summary: dict, baseline: dict | None, spec: dict[str, dict]) -> list[Check]:
    """Accuracy, per-class recall and the health of the predictions, held to their bounds and
    to the baseline run.

    Computed from summary.json data alone, so that ``auditor compare`` re-evaluates them on two
    saved runs exactly as the audit did (a multi-label run's: ``multilabel_checks``).
    """
    if "multilabel" in summary:  # its metrics are read per label: no class-level checks
        return multilabel_checks(summary["multilabel"], baseline, spec)
    metrics, before = summary["metrics"], (baseline or {}).get("metrics") or {}
    recalls = {name: m["recall"] for name, m in metrics["per_class"].items() if m["support"]}
    old_recalls = {name: m["recall"] for name, m in (before.get("per_class") or {}).items()
                   if m.get("support")}
    return [
        accuracy_check(metrics, before, spec),
        RECALL.stamp(evaluate_each(RECALL.id, recalls, what="recall", section=NAME,
                                   defaults=RECALL_BOUNDS, spec=spec_bounds(spec, RECALL.id),
                                   baselines=old_recalls), spec),
        *health_checks(metrics, spec),
    ]


def run(ctx: Context, options: Options) -> SectionResult:
    if ctx.predictions.multilabel:
        return run_multilabel(ctx, options)
    p, names = ctx.predictions, ctx.dataset.class_names
    preds = p.preds
    accuracy = p.accuracy
    mistakes = most_confident_mistakes(p, options.gallery)
    images = ctx.dataset.images(mistakes)
    gallery = [{"index": int(i), "true": names[p.labels[i]], "pred": names[preds[i]],
                "confidence": float(p.confidence[i])} for i in mistakes]
    confusions = top_confusions(p.labels, preds, names, options.top_confusions)
    per_class = per_class_metrics(p.labels, preds, names)
    metrics = {"accuracy": accuracy, "per_class": per_class,
               **health_metrics(p.labels, preds, names, p.logits)}
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


@dataclass
class MultiLabelData:
    """What a multi-label model's figures are drawn from: the summary's tables and the images
    of the worst mistakes."""

    facts: dict
    examples: list[dict]
    images: np.ndarray


def multilabel_summary(p, names: list[str], gallery: int) -> dict:
    """The ``multilabel`` block of summary.json (methods/multilabel.py's figures)."""
    from auditor.methods import multilabel as ml
    from auditor.methods.prediction_health import label_logit_spread

    probs = p.probs
    per_label = ml.label_metrics(p.labels, probs, p.preds, names, p.thresholds)
    for row, spread in zip(per_label.values(), label_logit_spread(p.logits), strict=True):
        row.update(spread)
    worst = ml.worst_mistakes(p.labels, probs, p.preds, p.thresholds, gallery)
    examples = [{"index": int(i), "true": ml.label_set(p.labels[i], names),
                 "pred": ml.label_set(p.preds[i], names),
                 "missed": ml.label_set((p.labels[i] == 1) & (p.preds[i] == 0), names),
                 "false_alarms": ml.label_set((p.labels[i] == 0) & (p.preds[i] == 1), names)}
                for i in worst]
    return {"labels": per_label, **ml.averages(p.labels, probs, p.preds, per_label),
            **ml.set_metrics(p.labels, p.preds),
            "mistakes": {"images": int((~p.correct).sum()),
                         "missed": int(sum(m["missed"] for m in per_label.values())),
                         "false_alarms": int(sum(m["false_alarms"] for m in per_label.values())),
                         "examples": examples}}


def multilabel_checks(block: dict, baseline: dict | None, spec: dict) -> list[Check]:
    """Micro F1 against the baseline run's; per label, its F1 against the baseline's and its
    average precision against chance (its prevalence). A label no image carries has no
    average precision: its skill is not measurable, said as skipped. A skill at or below 0
    (within float64's rounding of it: ``LABEL_SKILL``) fails."""
    before = (baseline or {}).get("multilabel") or {}
    micro = block["micro"]["f1"]
    checks = [MICRO_F1.judge(micro, checks=spec, section=NAME, message=f"micro F1 {micro:.2%}",
                             baseline=(before.get("micro") or {}).get("f1"))]
    old = before.get("labels") or {}
    for name, m in block["labels"].items():
        checks.append(LABEL_F1.judge(
            m["f1"], checks=spec, section=NAME, name=name,
            baseline=(old.get(name) or {}).get("f1"),
            message=f"label '{name}': F1 {m['f1']:.2%} ({m['missed']} missed, "
                    f"{m['false_alarms']} false alarms, support {m['support']})"))
        if m["average_precision"] is None:
            checks.append(LABEL_SKILL.outcome(
                "skipped", None, checks=spec, section=NAME, name=name,
                message=f"label '{name}' is carried by no image: its ranking cannot be scored"))
            continue
        lift = m["average_precision"] - m["prevalence"]
        check = LABEL_SKILL.judge(
            lift, checks=spec, section=NAME, name=name,
            bounds={"fail_below": skill_rounding(m)},
            message=f"label '{name}': average precision {m['average_precision']:.2f} against "
                    f"{m['prevalence']:.2f} for a random ranking")
        checks.append(check.noted(": the model ranks this label no better than chance"))
    checks += [label_logit_check(name, m, spec) for name, m in block["labels"].items()
               if "logit_spread" in m]  # a run from before the check has none
    return checks


def label_logit_check(name: str, m: dict, spec: dict) -> Check:
    """One label's logit spread across the images against float32's resolution at its size;
    skipped, not measurable, with fewer than two images whose logit is finite."""
    if m["logit_spread"] is None:
        return LABEL_LOGITS.outcome(
            "skipped", None, checks=spec, section=NAME, name=name,
            message=f"label '{name}': not measurable: fewer than two images with a finite "
                    "logit to spread over")
    check = LABEL_LOGITS.judge(
        m["logit_spread"], checks=spec, section=NAME, name=name,
        bounds={"fail_below": m["logit_resolution"]},
        message=f"label '{name}': its logit moves by {m['logit_spread']:.2g} across the images "
                f"(largest minus smallest); float32 resolves {m['logit_resolution']:.2g} at "
                "its size")
    return check.noted(": it is constant to rounding, so its ranking and maps are noise")


def contract_keys(p, names: list[str], block: dict, limit: int) -> dict:
    """``metrics`` and ``misclassifications`` as the contract has them, read for a multi-label
    model: accuracy is the share of images whose whole label set is right (scikit-learn's
    accuracy on multi-hot rows), ``per_class`` each label's figures, a confusion an image that
    missed one label and raised another, an example's ``true`` and ``pred`` its label sets
    joined by '|'."""
    from auditor.methods.multilabel import label_confusions

    return {
        "metrics": {"accuracy": block["subset_accuracy"],
                    "per_class": {name: {k: m[k] for k in ("precision", "recall", "f1",
                                                           "support")}
                                  for name, m in block["labels"].items()}},
        "misclassifications": {
            "count": block["mistakes"]["images"],
            "top_confusions": label_confusions(p.labels, p.preds, names, limit),
            "examples": [{"index": e["index"], "true": "|".join(e["true"]),
                          "pred": "|".join(e["pred"]),
                          "confidence": float(p.confidence[e["index"]])}
                         for e in block["mistakes"]["examples"]]}}


def run_multilabel(ctx: Context, options: Options) -> SectionResult:
    """The section for a multi-label model: each label scored as its own yes/no classifier."""
    p, names = ctx.predictions, ctx.dataset.class_names
    block = multilabel_summary(p, names, options.gallery)
    examples = block["mistakes"]["examples"]
    images = ctx.dataset.images([e["index"] for e in examples])
    return SectionResult(
        name=NAME, title=TITLE,
        intro="Each label is its own yes/no decision: a label is predicted when its sigmoid "
              "reaches its threshold. A missed label is one the image carries but the model "
              "did not predict (a false negative); a false alarm one it predicted but the "
              "image does not carry (a false positive). Average precision scores the ranking "
              "over every threshold; a random ranking scores the label's prevalence.",
        summary={"multilabel": block,
                 **contract_keys(p, names, block, options.top_confusions)},
        data=MultiLabelData(facts={"n": len(p.labels), **block}, examples=examples,
                            images=images),
        checks=multilabel_checks(block, ctx.baseline, ctx.config.checks))
