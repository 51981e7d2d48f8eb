"""Mistake triage and data health: for every mistake, is it the model's fault or the data's?

Joins confident learning (likely label errors), out-of-distribution scores, the neighbours of
each image in the model's penultimate features, calibration, duplicates and leakage, and
underperforming slices. The computation lives in ``auditor.methods.triage``; this module picks
the reference data, runs the parts, and states what could not be measured and why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from auditor.checks.check import Check
from auditor.checks.declared import Declared, spec_bounds
from auditor.errors import ConfigError
from auditor.methods import multilabel as ml
from auditor.methods.triage import calibration, duplicates, ood, slices
from auditor.methods.triage.label_issues import (
    MIN_PER_CLASS,
    MIN_RECALL,
    PLANTED,
    find_label_issues,
)
from auditor.methods.triage.neighbours import nearest
from auditor.methods.triage.verdicts import (
    MARGIN,
    VERDICTS,
    decision_margin,
    neighbour_tie,
    verdict_of,
)
from auditor.predict.plan import Facts, Passes
from auditor.sections.base import Context, KeyFigure, SectionResult

NAME = "triage"
TITLE = "Mistake triage"
MULTI_LABEL = True  # label issues, verdicts, calibration and slices per label (run_multilabel)
# Northcutt et al. 2021 measured 3.3% label errors on average over ten benchmark test sets (up
# to 10.1% on QuickDraw): above the average, review the labels; above the worst, fail.
LABEL_ERROR_BOUNDS = {"warn_above": 0.03, "fail_above": 0.10}
# Guo et al. 2017 (15 bins): temperature scaling leaves ECE near 1-2%, uncalibrated CIFAR-10
# ResNets sit near 5%, CIFAR-100 ones near 15%.
ECE_BOUNDS = {"warn_above": 0.05, "fail_above": 0.15}
# Extra copies weigh some images twice; past 1% they can move accuracy by more than the
# accuracy check's 1-point tolerance (performance.ACCURACY_BOUNDS).
DUPLICATE_BOUNDS = {"warn_above": 0.01}
# Any training image in the audit inflates accuracy; past the same 1 point, accuracy is not
# trustworthy (Barz and Denzler 2020 found 3.3% of CIFAR-10's test images in its training set).
LEAKAGE_BOUNDS = {"warn_above": 0.0, "fail_above": 0.01}
LABEL_ERRORS = Declared("triage.label_errors", what="share of the labels expected wrong",
                        bounds=LABEL_ERROR_BOUNDS, figure="label_errors")
# A multi-label model's labels, each held to the same bounds: one value per image of each
# label, so the share of a label's values that are wrong is read against the benchmarks' share
# of wrong labels per image (Northcutt et al. measured single-label test sets). Measured per
# label on multi-label models other than the tests' (label_issues_multilabel.py, python
# bench/multilabel.py): clean labels gave at most 1.3%, a label with 10% of its values flipped
# 6.5% to 9.3%.
LABEL_ERRORS_PER_LABEL = Declared("triage.label_errors.*", bounds=LABEL_ERROR_BOUNDS,
                                  what="share of one label's values expected wrong")
ECE = Declared("triage.ece", what="expected calibration error", bounds=ECE_BOUNDS,
               figure="ece")
# A multi-label model's labels, each its own decisions' ECE held to Guo et al.'s bounds above:
# the pooled figure averages one badly calibrated label away among good ones. Measured per
# label on multi-label models other than the tests' (python bench/multilabel.py --parts
# triage: two RGB CNNs, four labels, after 1, 3 and 12 epochs; 6 Dec 2026): the labels of the
# models that learned them (accuracy 0.82 to 0.99) gave 0.013 to 0.045; the residual CNN after
# 1 and 3 epochs, near chance (0.36 to 0.70), 0.108 to 0.356; one label's logits divided by 3,
# 0.090 to 0.153 (times 3: 0.022 to 0.050 on the 12-epoch models, which make too few mistakes
# to be over-confident about, 0.133 and more on the weaker ones).
LABEL_ECE = Declared("triage.label_ece.*", bounds=ECE_BOUNDS,
                     what="one label's expected calibration error")
# A label's ECE is pooled over all its decisions, so a label few images carry (or few do not)
# is mostly its easy decisions and its miscalibration on the rest is averaged away: measured by
# bench/label_ece_floor.py (a label calibrated by construction, and the same label with its
# logits times 3, 300 draws each; 6 Dec 2026), among 200 images with 10, 15 and 30 carrying it
# the over-confident label crossed the 0.05 warn bound in 1%, 4% and 12% of draws (42% at 50,
# 91% at 100), among 100 images in 13%, 21% and 58%. Below 30 images on a side the check cannot
# see what it is for: skipped, not measurable. (The dilution grows with the images too: among
# 1,000, 100 carrying it are not enough either, which no count fixes; the floor below is
# the check against noise.) And where the label's own noise floor (calibration.noise_floor:
# what a calibrated label of these decisions scores) reaches the warn bound, it is skipped too.
# Other figures were weighed for the rare label (bench/label_ece_floor.py --alternatives, 40
# draws each, every figure under this same noise-floor rule; 6 Dec 2026): the class-wise ECE of
# the label's own probability (Kull et al. 2019) over the predictions above 1e-3 (the
# thresholding of Nixon et al. 2019, against tiny predictions washing the rest out), and the
# ECE of the positive decisions alone. Among 1,000 images with 10, 30 and 100 carrying the
# label, they flagged the over-confident label in 10%, 10% and 8% (class-wise) and 5%, 2% and
# 20% (positives) of draws, this figure in none; among 200 with 100 carrying it, 0% and 10%
# against this figure's 92%. What a rare label's calibration shows lives in its few positives,
# which no binned estimator measures above its noise floor: the figure stays, and a rare label
# stays not measurable (no calibrated label was flagged by any of them above 2%).
MIN_LABEL_SIDE = 30
DUPLICATES = Declared("triage.duplicates", what="share of extra copies",
                      bounds=DUPLICATE_BOUNDS)
LEAKAGE = Declared("triage.leakage", what="share of audit images also in training",
                   bounds=LEAKAGE_BOUNDS)
SLICES = Declared("triage.slices", what="accuracy gap of the worst slice")
CHECKS = (LABEL_ERRORS, LABEL_ERRORS_PER_LABEL, ECE, LABEL_ECE, DUPLICATES, LEAKAGE, SLICES)
STEPS = ("features",)  # the neighbours and detectors read them (steps/features.py)
# Triage's work off the model (confident learning and its self-test, the neighbours, the
# detectors with Mahalanobis's whitening, calibration, hashing for duplicates, the slices'
# mixture), in reference kernels (plan.reference_kernel): a fixed part, a part per image (audit
# and training sample) and a part per image and penultimate feature (the neighbours' distances,
# Mahalanobis's SVD of the centred features, the slices' PCA read every feature). Measured by
# bench/triage_cost.py, triage's own ``measure`` on synthetic predictions (10 classes), in
# process CPU seconds against the kernel's CPU seconds (wall time under a load of 8 to 11
# slowed this work 1.0 to 4.8 times more than the kernel, which made the former constants,
# measured in wall time under load, 3 to 10 times what a quiet machine takes): 78, 262 and
# 419 kernels for 200, 800 and 2,000 images of 10 features; 176, 890 and 1,877 with 1,024
# features; the image side (8 or 48 px) made no difference. Fitted to the six (least squares
# of the relative error, each within 20%): 30 fixed, 0.22 an image and 6.5e-4 an image and
# feature (0.88 an image at 1,024 features). DenseNet121's triage (200 images, 1,024
# features) took 2 s on a quiet machine and the digits demo's (719 images) 2.3 s at a load of
# 2 to 7, where the former constants (2.7 an image and 5.9e-3 an image and feature, measured
# in wall time under a load of 8 to 9) charged 14 s and 21 s; these charge about 2 s each.
TRIAGE_FIXED_KERNELS = 30
TRIAGE_KERNELS = 0.22
TRIAGE_FEATURE_KERNELS = 6.5e-4


def passes(options: Options, facts: Facts) -> Passes:
    """The maps of the shown mistakes (predicted and true class) and of the shown slices'
    images, made here when the saliency step did not (counted as made here: a bound), with one
    trace of the method's pass unless the reliability card traced it; with --train-data the
    training sample's logits and features; and the work off the model (TRIAGE_FIXED_KERNELS,
    and per image TRIAGE_KERNELS and TRIAGE_FEATURE_KERNELS per penultimate feature)."""
    from auditor.methods.attribution.registry import attribution_rows, compiled_passes
    from auditor.steps.card import DEFAULT_METHODS

    shown = min(options.examples, facts.wrong)
    rows = attribution_rows([options.method], 2 * shown + options.slices_shown
                            * options.slice_images, facts.input_shape)
    carded = DEFAULT_METHODS if facts.card_methods is None else facts.card_methods
    traced = not compiled_passes([options.method], "logit") <= compiled_passes(
        carded, facts.card_score)
    train = min(options.train_samples, facts.train_images or 0)
    per_image = TRIAGE_KERNELS + TRIAGE_FEATURE_KERNELS * (facts.features or 0)
    return Passes(forward=rows[0] + 2 * train, backward=rows[1], traces=int(traced),
                  kernels=TRIAGE_FIXED_KERNELS + per_image * (facts.images + train))



def _triage(summary: dict, key: str):
    block = summary.get(NAME)
    return block.get(key) if isinstance(block, dict) else None


def _label_errors_detail(summary: dict) -> str:
    accuracy = _triage(summary, "accuracy_without_label_issues")
    return "" if accuracy is None else f"accuracy {accuracy:.1%} without the flagged"


# In summary.md, the baseline comparison and the index trends; the top of the report keeps its
# five, and this section shows both figures first.
KEY_FIGURES = (
    KeyFigure("label_errors", "Label errors", "expected label errors", NAME,
              lambda summary: _triage(summary, "expected_label_errors"),
              detail=_label_errors_detail, rank=25, headline=False),
    KeyFigure("ece", "Calibration error", "expected calibration error (ECE)", NAME,
              lambda summary: _triage(summary, "ece"), text=lambda _, v: f"{v:.3f}", rank=45,
              headline=False),
)


@dataclass
class Options:
    neighbours: int = 10  # k for kNN distances and neighbour votes (Sun et al. 2022 use 50 on
    #                       50,000 images; results are stable over a wide range of k)
    examples: int = 8  # mistakes shown beside their contrastive saliency
    gallery: int = 12  # likely label errors shown with their given and suggested labels
    slices_shown: int = 3
    slice_images: int = 8
    min_slice: int = 5  # images; smaller failure groups are not reported as slices
    near_duplicate_bits: int = 0  # pHash Hamming distance of near duplicates (0: cleanvision's)
    train_samples: int = 20000  # --train-data images compared (a stratified sample beyond)
    method: str = "gradient"  # saliency of the mistakes and slices

    def __post_init__(self):
        for key in ("neighbours", "min_slice", "train_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"'triage.{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("examples", "gallery", "slices_shown", "slice_images"):
            if getattr(self, key) < 0:
                raise ConfigError(f"'triage.{key}' must be at least 0, got {getattr(self, key)}")
        if not 0 <= self.near_duplicate_bits <= 32:
            raise ConfigError("'triage.near_duplicate_bits' must be from 0 to 32 (of 64 bits), "
                              f"got {self.near_duplicate_bits}")


@dataclass
class Reference:
    """What the OOD thresholds and neighbour votes are calibrated on: the training data
    (a sample of it) or the audit data itself."""

    name: str  # "train" or "audit"
    logits: np.ndarray
    labels: np.ndarray
    features: np.ndarray | None
    dataset: object = None  # the training sample, when it is the training data
    positions: np.ndarray | None = None  # its rows' positions in the training data


def training_reference(ctx: Context, options: Options) -> Reference | None:
    """The --train-data sample, through the model once for logits and once for features."""
    from auditor.inputs.datasets import sample_indices
    from auditor.predict.predictions import penultimate_features, predict

    train = ctx.train_dataset
    if train is None:
        return None
    positions = sample_indices(train.labels, options.train_samples, ctx.config.seed)
    sample = dataclasses.replace(train, labels=train.labels[positions],
                                 source_index=train.source_index[positions])
    logits = predict(ctx.handle, sample, ctx.config.batch_size).logits
    features = (penultimate_features(ctx.handle, sample, ctx.config.batch_size)
                if ctx.steps.features.values is not None else None)
    return Reference("train", logits, sample.labels, features, sample, positions)


def ood_detectors(logits, features, reference: Reference, k: int, output: str = "logits",
                  multilabel: bool = False):
    """The three detectors on the audit images, and the audit's neighbours in the reference.
    A multi-label model's energy is the joint energy over its labels, and it has no
    Mahalanobis detector (its class means need one class per image)."""
    if multilabel:
        detectors = [ood.calibrated("energy", ood.joint_energy(logits),
                                    ood.joint_energy(reference.logits))]
    elif output == "log-probabilities":  # logsumexp(log p) = log 1: the same energy everywhere
        detectors = [ood.Detector("energy", None, skipped="the model's softmax could not be "
                                  "stripped, and log-probabilities have an energy of 0")]
    else:
        detectors = [ood.calibrated("energy", ood.energy(logits), ood.energy(reference.logits))]
    if features is None:
        return ood.OodVotes(detectors + [
            ood.Detector(name, None, skipped="the model has no penultimate layer to read")
            for name in ("knn", "mahalanobis")]), None
    own = reference.name == "audit"
    distances, indices = nearest(features, reference.features, k, same_set=own)
    ref_knn = distances if own else nearest(reference.features, reference.features, k, True)[0]
    detectors.append(ood.calibrated("knn", ood.knn_distance(distances),
                                    ood.knn_distance(ref_knn)))
    if multilabel:
        detectors.append(ood.Detector("mahalanobis", None, skipped="its class-conditional means "
                                      "need one class per image, and a label set is not one"))
    elif len(np.unique(reference.labels)) < 2:
        detectors.append(ood.Detector("mahalanobis", None, skipped="fewer than two classes"))
    else:
        scores = ood.mahalanobis(features, reference.features, reference.labels)
        ref_scores = scores if own else ood.mahalanobis(reference.features, reference.features,
                                                        reference.labels)
        detectors.append(ood.calibrated("mahalanobis", scores, ref_scores))
    return ood.OodVotes(detectors), indices


def mistake_verdicts(p, names, issues, ood_flags, votes, ref_labels, neighbours, k):
    """One record per mistake, by the rules of ``verdicts``."""
    probs = p.probs
    top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.ones((len(probs), 2))
    margin = top2[:, 1] - top2[:, 0]
    flagged = np.zeros(len(p.labels), bool)
    if issues is not None:
        flagged[issues.positions] = True
    records = []
    for i in np.flatnonzero(~p.correct):
        given_votes = pred_votes = None
        tie = False
        if neighbours is not None and neighbours.shape[1]:
            near = ref_labels[neighbours[i]]
            given_votes = int((near == p.labels[i]).sum())
            pred_votes = int((near == p.preds[i]).sum())
            tie = bool(neighbour_tie(np.array(given_votes), np.array(pred_votes), k))
        verdict, reason = verdict_of(bool(ood_flags[i]), bool(flagged[i]), float(margin[i]), tie)
        records.append({
            "index": int(i), "true": names[p.labels[i]], "pred": names[p.preds[i]],
            "verdict": verdict, "reason": reason, "confidence": float(p.confidence[i]),
            "margin": float(margin[i]), "ood_votes": int(votes[i]),
            "label_score": None if issues is None else float(issues.scores[i]),
            "suggested": None if issues is None else names[issues.suggested[i]],
            "neighbours_given": given_votes, "neighbours_pred": pred_votes})
    return records


def fingerprint_all(dataset, batch_size: int = 256):
    parts = [duplicates.fingerprints(images) for images, _, _ in dataset.batches(batch_size)]
    return (np.concatenate([e for e, _ in parts]), np.concatenate([h for _, h in parts]))


def _fingerprints_and_properties(images) -> tuple:
    from auditor.methods.shortcuts.properties import image_properties

    images = np.asarray(images)
    return duplicates.fingerprints(images), image_properties(images)


def _joined(parts: list) -> tuple:
    """(exact, perceptual) fingerprints and {property: values} of batches, concatenated."""
    return ((np.concatenate([e for (e, _), _ in parts]),
             np.concatenate([h for (_, h), _ in parts])),
            {name: np.concatenate([p[name] for _, p in parts]) for name in parts[0][1]})


def features_and_fingerprints(ctx: Context):
    """The shared penultimate features (the features step's), the audit images' fingerprints
    and their image properties (for the slices)."""
    parts = [_fingerprints_and_properties(images) for images, _, _ in ctx.dataset.batches(256)]
    return (ctx.steps.features.values, *_joined(parts))


def label_keys(labels: np.ndarray) -> np.ndarray:
    """One integer per distinct label (a multi-label model's: per distinct label set), so that
    duplicates with different labels read as conflicting."""
    if labels.ndim == 1:
        return labels
    return np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)


def data_health(ctx, options, fingerprints, reference, self_neighbours, audit_neighbours):
    """Duplicate groups inside the audit data and, with training data, leaked images."""
    labels = label_keys(ctx.predictions.labels)
    exact, perceptual = fingerprints
    pairs = None
    if self_neighbours is not None:
        pairs = np.stack([np.repeat(np.arange(len(labels)), self_neighbours.shape[1]),
                          self_neighbours.ravel()], axis=1)
    groups = duplicates.duplicate_groups(exact, perceptual, labels, pairs,
                                         options.near_duplicate_bits)
    leaks = None
    if reference is not None and reference.name == "train":
        train_exact, train_perceptual = fingerprint_all(reference.dataset)
        found = duplicates.leaked(exact, perceptual, train_exact, train_perceptual,
                                  audit_neighbours, options.near_duplicate_bits)
        leaks = [{**leak, "train_index": int(reference.positions[leak["train_index"]])}
                 for leak in found]
    return groups, leaks


def slice_summary(found, names, labels, properties: dict) -> list[dict]:
    """Slices as summary.json lists them; ``significant`` when the gap's interval is above 0;
    a slice across classes has no ``class`` but the classes it holds, most images first; the
    properties that set each apart from the rest of its class (or of the data)."""
    every = np.arange(len(labels))
    rows = []
    for s in found:
        within = s.label is not None
        rest = np.setdiff1d(np.flatnonzero(labels == s.label) if within else every, s.indices)
        counts = np.bincount(labels[s.indices], minlength=len(names))
        rows.append({"indices": s.indices.tolist(), "size": int(len(s.indices)),
                     "accuracy": s.accuracy, "gap": s.gap, "ci": list(s.ci),
                     "kind": "class" if within else "across_classes",
                     "class": names[s.label] if within else None,
                     "classes": {names[c]: int(counts[c])
                                 for c in np.argsort(-counts, kind="stable") if counts[c]},
                     "significant": bool(s.ci[0] > 0),
                     "properties": slices.distinct_properties(properties, s.indices, rest)})
    return rows


def shown_mistakes(records: list[dict], limit: int) -> list[dict]:
    """Up to ``limit`` mistakes, taking each verdict in turn (most confident first), so the
    page shows every kind of mistake there is."""
    queues = {v: sorted((r for r in records if r["verdict"] == v),
                        key=lambda r: (-r["confidence"], r["index"])) for v in VERDICTS}
    chosen: list[dict] = []
    while len(chosen) < limit and any(queues.values()):
        for verdict in VERDICTS:
            if queues[verdict] and len(chosen) < limit:
                chosen.append(queues[verdict].pop(0))
    return chosen


def read_images(dataset, groups: list) -> list[np.ndarray]:
    """The images of several lists of positions in one read (each read builds a pipeline)."""
    groups = [np.asarray(g, dtype=int) for g in groups]
    images = dataset.images(np.concatenate(groups) if groups else np.zeros(0, int))
    return np.split(images, np.cumsum([len(g) for g in groups])[:-1])


def figure_saliency(ctx: Context, mistakes: np.ndarray, mistake_images, slice_shown,
                    slice_images, method: str):
    """(Predicted minus true class) saliency of the shown mistakes and each shown slice's
    saliency for the predicted class: the saliency step's maps where it made them (the
    contrastive section's of the same mistakes), the others made for this section alone:
    (differences, [maps per slice])."""
    p = ctx.predictions
    diffs = ctx.steps.saliency.maps(ctx, method, mistakes, p.preds[mistakes],
                                     contrast=p.labels[mistakes], images=mistake_images)
    members = np.concatenate([np.zeros(0, int), *slice_shown]).astype(int)
    maps = ctx.steps.saliency.maps(
        ctx, method, members, p.preds[members],
        images=np.concatenate([np.zeros((0, *ctx.handle.input_shape)), *slice_images]))
    return diffs, np.split(maps, np.cumsum([len(m) for m in slice_shown]))


def label_figure_saliency(ctx: Context, records: list[dict], mistake_images, slice_rows,
                          slice_shown, slice_images, method: str):
    """A multi-label model's ``figure_saliency``: each shown wrong decision's map of its
    label's logit, signed so that red pushed towards the wrong decision (up for a false
    alarm, down for a missed label), and each shown slice's map of its label's logit."""
    names = ctx.dataset.class_names
    positions = np.array([r["index"] for r in records], dtype=int)
    labels = np.array([names.index(r["label"]) for r in records], dtype=int)
    sign = np.array([1.0 if r["mistake"] == "false_alarm" else -1.0 for r in records],
                    np.float32).reshape(-1, 1, 1, 1)
    diffs = sign * ctx.steps.saliency.maps(ctx, method, positions, labels,
                                           images=mistake_images)
    members = np.concatenate([np.zeros(0, int), *slice_shown]).astype(int)
    targets = np.concatenate([np.zeros(0, int)] + [np.full(len(m), names.index(row["class"]))
                                                   for m, row in zip(slice_shown, slice_rows,
                                                                     strict=True)])
    maps = ctx.steps.saliency.maps(
        ctx, method, members, targets,
        images=np.concatenate([np.zeros((0, *ctx.handle.input_shape)), *slice_images]))
    return diffs, np.split(maps, np.cumsum([len(m) for m in slice_shown]))


def triage_checks(ctx: Context, n: int, issues, ece, groups, leaks, found, skipped) -> list[Check]:
    return (label_error_checks(ctx.config.checks, n, issues, skipped)
            + health_checks(ctx.config.checks, ctx.predictions.labels, n, ece, groups, leaks,
                            found, skipped))


def label_error_checks(spec: dict, n: int, issues, skipped: dict) -> list[Check]:
    if issues is None or issues.per_class < MIN_PER_CLASS:
        return [LABEL_ERRORS.outcome(
            "skipped", None, checks=spec, threshold=LABEL_ERROR_BOUNDS, section=NAME,
            message=skipped.get("label_issues", "too few images per class"))]
    rate = issues.expected / n
    tested = ("" if issues.recall is None else
              f"; flips planted at {PLANTED:.1%} found at {issues.recall:.0%}")
    return [LABEL_ERRORS.judge(rate, checks=spec, section=NAME,
                               message=f"about {issues.expected} label errors "
                                       f"expected ({rate:.1%} of {n} images{tested})")]


def health_checks(spec: dict, labels, n: int, ece, groups, leaks, found, skipped,
                  label_names: list[str] | None = None, ece_detail: str = "") -> list[Check]:
    """Calibration, duplicates, leakage and the worst slice (``label_names``: a multi-label
    model's, whose slices lie on one label's decisions; ``ece_detail`` its labels' own ECE)."""
    checks = [ECE.judge(ece, checks=spec, section=NAME,
                        message=f"expected calibration error {ece:.3f} "
                                f"({calibration.BINS} bins{ece_detail})")]
    share = duplicates.redundant_share(groups, n)
    conflicting = sum(g.conflicting for g in groups)
    checks.append(DUPLICATES.judge(share, checks=spec, section=NAME,
                                   message=f"{len(groups)} duplicate groups, {conflicting} with "
                                           f"conflicting labels; {share:.1%} of images are "
                                           "extra copies"))
    if leaks is None:
        checks.append(LEAKAGE.outcome(
            "skipped", None, checks=spec, threshold=LEAKAGE_BOUNDS, section=NAME,
            message="no --train-data given: leakage from training data not checked"))
    else:
        checks.append(LEAKAGE.judge(len(leaks) / n, checks=spec, section=NAME,
                                    message=f"{len(leaks)} audit images are also training "
                                            "images"))
    if found is None:
        checks.append(SLICES.outcome("skipped", None, checks=spec, message=skipped["slices"],
                                     section=NAME))
        return checks
    worst = found[0].ci[0] if found else 0.0
    where = (f"deciding label '{label_names[found[0].label]}'" if found and label_names
             else "of one class" if found and found[0].label is not None else
             f"across {len(np.unique(labels[found[0].indices]))} classes" if found else "")
    what = (f"worst slice: {len(found[0].indices)} images {where}, accuracy gap "
            f"{found[0].gap:.1%} (95% CI from {found[0].ci[0]:.1%})" if found
            else "no underperforming slice found")
    checks.append(SLICES.judge(worst, checks=spec, message=what, section=NAME))
    return checks


@dataclass
class Findings:
    """Everything the triage measured on one run, before it is summarised or drawn."""

    reference: Reference
    issues: object  # label_issues.LabelIssues (or None); a multi-label model's LabelSetIssues
    reliability: calibration.Reliability
    temperature: float
    ece_after: float
    per_class: dict
    votes: ood.OodVotes
    ood_flags: np.ndarray
    records: list[dict]
    groups: list
    leaks: list[dict] | None
    slices: list | None
    skipped: dict[str, str]
    properties: dict  # name -> every audit image's value (methods/shortcuts/properties.py)
    label_calibration: list[dict] | None = None  # a multi-label model's, per label


def observe(ctx: Context, options: Options, skipped: dict):
    """What both kinds of model's triage start from: the penultimate features, fingerprints
    and image properties, the reference, the OOD detectors and each image's neighbours."""
    p = ctx.predictions
    features, fingerprints, properties = features_and_fingerprints(ctx)
    if features is None:
        skipped.update({part: "the model cannot be split before its final layer (no "
                        "penultimate features)" for part in ("knn", "mahalanobis", "neighbours",
                                                            "slices")})
    reference = training_reference(ctx, options) or Reference("audit", p.logits, p.labels,
                                                              features)
    votes, neighbours = ood_detectors(p.logits, features, reference, options.neighbours,
                                      ctx.handle.output, p.multilabel)
    return features, fingerprints, properties, reference, votes, neighbours


def health(ctx: Context, options: Options, features, fingerprints, reference, neighbours):
    """Duplicates (the neighbours as candidate pairs of near duplicates) and leakage."""
    own = reference.name == "audit"
    self_neighbours = neighbours if own else (
        nearest(features, features, options.neighbours, same_set=True)[1]
        if features is not None and options.near_duplicate_bits > 0 else None)
    return data_health(ctx, options, fingerprints, reference, self_neighbours,
                       None if own else neighbours)


def measure(ctx: Context, options: Options) -> Findings:
    p, names, k = ctx.predictions, ctx.dataset.class_names, options.neighbours
    n = len(p.labels)
    skipped: dict[str, str] = {}
    features, fingerprints, properties, reference, votes, neighbours = observe(ctx, options,
                                                                               skipped)
    issues = find_label_issues(p.labels, p.probs, neighbours,
                               None if reference.name == "audit" else reference.labels,
                               ctx.config.seed)
    if issues is None:
        skipped["label_issues"] = "fewer than two classes in the audit labels"
    elif issues.per_class < MIN_PER_CLASS:
        skipped["label_issues"] = (f"only {issues.per_class:.1f} images per class: confident "
                                   f"learning needs at least {MIN_PER_CLASS} to set each "
                                   "class's threshold")
    elif not issues.measurable:
        skipped["label_issues"] = (
            f"not measurable at this accuracy ({p.accuracy:.1%}): with label flips planted at "
            f"{PLANTED:.1%}, the model and its neighbours found only {issues.recall:.0%} of them "
            f"(at least {MIN_RECALL:.0%} needed), so its own mistakes cannot be told from label "
            "errors")
        issues = None
    skipped.update({d.name: d.skipped for d in votes.detectors if d.skipped})
    ood_flags = votes.flags(n)
    records = mistake_verdicts(p, names, issues, ood_flags, votes.votes(n), reference.labels,
                               neighbours, k)
    groups, leaks = health(ctx, options, features, fingerprints, reference, neighbours)
    found = (slices.all_slices(features, np.stack(list(properties.values()), axis=1), p.labels,
                               p.correct, options.min_slice, ctx.config.seed)
             if features is not None else None)
    rel = calibration.reliability(p.confidence, p.correct)
    return Findings(reference, issues, rel, calibration.fit_temperature(p.logits, p.labels),
                    calibration.cross_fitted_ece(p.logits, p.labels, ctx.config.seed),
                    calibration.per_class_confidence_gap(p.probs, p.labels), votes, ood_flags,
                    records, groups, leaks, found, skipped, properties)


def triage_summary(found: Findings, p, names) -> dict:
    """The ``triage`` block of summary.json (keys in docs/summary.md)."""
    n, issues = len(p.labels), found.issues
    flagged = np.zeros(n, bool)
    label_issues = []
    if issues is not None:
        flagged[issues.positions] = True
        label_issues = [{"index": int(i), "given": names[p.labels[i]],
                         "suggested": names[issues.suggested[i]],
                         "score": float(issues.scores[i])} for i in issues.positions]
    counts = {v: sum(r["verdict"] == v for r in found.records) for v in VERDICTS}
    kept = ~flagged
    return {
        "verdicts": found.records, "verdict_counts": counts,
        "label_issues": label_issues,
        "expected_label_errors": None if issues is None else issues.expected,
        "accuracy": p.accuracy,
        "accuracy_without_label_issues": float(p.correct[kept].mean()) if kept.any() else None,
        "mistakes_from_label_errors": counts["label_error"] / max(len(found.records), 1),
        **health_summary(found, names, [[names[c] for c in g.labels] for g in found.groups]),
        "slices": [] if found.slices is None else slice_summary(found.slices, names, p.labels,
                                                                found.properties),
    }


def health_summary(found: Findings, names, group_labels: list[list[str]]) -> dict:
    """Calibration, OOD, duplicates (each group's labels as ``group_labels`` names them),
    leakage and what was skipped: the part of the ``triage`` block both kinds share."""
    return {
        "ece": found.reliability.ece, "ece_bins": calibration.BINS,
        "temperature": found.temperature, "ece_after_temperature": found.ece_after,
        "temperature_at_bound": bool(np.isclose(found.temperature,
                                                calibration.TEMPERATURE_RANGE, rtol=1e-3).any()),
        "reliability": {"confidence": _floats(found.reliability.confidence),
                        "accuracy": _floats(found.reliability.accuracy),
                        "count": found.reliability.count.tolist()},
        "per_class_calibration": {names[c]: v for c, v in found.per_class.items()},
        "ood": {"reference": found.reference.name, "reference_n": len(found.reference.labels),
                "quantile": ood.REFERENCE_QUANTILE, "flagged": int(found.ood_flags.sum()),
                "detectors": {d.name: {"threshold": d.threshold, "skipped": d.skipped}
                              for d in found.votes.detectors}},
        "duplicates": [g.indices for g in found.groups],
        "duplicate_groups": [{"indices": g.indices, "kind": g.kind, "conflicting": g.conflicting,
                              "labels": shown} for g, shown in zip(found.groups, group_labels,
                                                                   strict=True)],
        "leakage": found.leaks or [],
        "train_compared": len(found.reference.labels) if found.reference.name == "train" else None,
        "skipped": found.skipped,
    }


def _floats(values: np.ndarray) -> list:
    """A float array as JSON numbers, NaN (an empty bin) as null."""
    return [None if not np.isfinite(v) else float(v) for v in values]


def label_verdicts(p, names, issues, ood_flags, votes, ref_labels, neighbours, k):
    """A multi-label model's verdicts: one record per wrong decision (an image and a label it
    missed or raised), by the rules of ``verdicts`` read on that label: its flag, the
    decision's top-2 margin (``decision_margin``: twice its probability's distance from the
    threshold, held to the single-label ``MARGIN``), its neighbours' values of that label for
    the given and the predicted value."""
    probs = p.probs
    rows, cols = np.nonzero(p.labels != p.preds)
    records = []
    for i, label in zip(rows, cols, strict=True):
        given, prob = int(p.labels[i, label]), float(probs[i, label])
        margin = float(decision_margin(prob, float(p.thresholds[label])))
        given_votes = pred_votes = None
        tie = False
        if neighbours is not None and neighbours.shape[1]:
            near = ref_labels[neighbours[i], label]
            given_votes, pred_votes = int((near == given).sum()), int((near != given).sum())
            tie = bool(neighbour_tie(np.array(given_votes), np.array(pred_votes), k))
        flagged = issues is not None and bool(issues.flagged[i, label])
        verdict, reason = verdict_of(bool(ood_flags[i]), flagged, margin, tie)
        if verdict == "ambiguous" and margin < MARGIN:
            reason = (f"probability {prob:.2f} within {MARGIN / 2:g} of the threshold "
                      f"{float(p.thresholds[label]):g} (yes/no margin {margin:.2f} < {MARGIN:g})")
        records.append({
            "index": int(i), "true": "|".join(ml.label_set(p.labels[i], names)),
            "pred": "|".join(ml.label_set(p.preds[i], names)), "label": names[label],
            "mistake": "missed" if given else "false_alarm", "verdict": verdict,
            "reason": reason, "confidence": prob if not given else 1 - prob, "margin": margin,
            "ood_votes": int(votes[i]), "label_score": 1 - prob if not given else prob,
            "suggested": ("|".join(ml.label_set(p.labels[i] ^ issues.flagged[i], names))
                          if flagged else None),
            "neighbours_given": given_votes, "neighbours_pred": pred_votes})
    return records


def label_issue_skips(issues, names) -> dict[str, str]:
    return {f"label_issues.{names[k]}": why for k, why in sorted(issues.skipped.items())}


def measure_multilabel(ctx: Context, options: Options) -> Findings:
    """``measure`` for a multi-label model: label issues per label, verdicts per wrong
    decision, calibration of the pooled decisions and of each label's, slices per label."""
    from auditor.methods.triage.label_issues_multilabel import find_label_set_issues

    p, names, n = ctx.predictions, ctx.dataset.class_names, len(ctx.predictions.labels)
    skipped: dict[str, str] = {}
    features, fingerprints, properties, reference, votes, neighbours = observe(ctx, options,
                                                                               skipped)
    issues = find_label_set_issues(p.labels, p.probs, neighbours,
                                   None if reference.name == "audit" else reference.labels,
                                   ctx.config.seed)
    skipped.update(label_issue_skips(issues, names))
    skipped.update({d.name: d.skipped for d in votes.detectors if d.skipped})
    skipped["slices_across_classes"] = ("a label's failure direction already spans every "
                                        "image; the mixture across classes reads one class "
                                        "per image")
    ood_flags = votes.flags(n)
    records = label_verdicts(p, names, issues, ood_flags, votes.votes(n), reference.labels,
                             neighbours, options.neighbours)
    groups, leaks = health(ctx, options, features, fingerprints, reference, neighbours)
    found = (slices.label_slices(features, p.labels == p.preds, options.min_slice,
                                 ctx.config.seed) if features is not None else None)
    cuts = np.log(p.thresholds) - np.log1p(-p.thresholds)
    rel = calibration.reliability(*calibration.decisions(p.logits, p.labels, cuts))
    return Findings(reference, issues, rel,
                    calibration.fit_label_temperature(p.logits, p.labels),
                    calibration.cross_fitted_label_ece(p.logits, p.labels, cuts,
                                                       ctx.config.seed),
                    calibration.per_label_confidence_gap(p.probs, p.labels, p.preds), votes,
                    ood_flags, records, groups, leaks, found, skipped, properties,
                    calibration.label_calibration(p.logits, p.labels, cuts, ctx.config.seed))


def label_slice_summary(found, names, labels, right, properties: dict) -> list[dict]:
    """A multi-label model's slices as summary.json lists them: ``kind`` ``label``, ``class``
    the label whose decisions fail there, ``classes`` how many of its images carry each label,
    the properties that set it apart from the rest of the data."""
    rows = []
    for s in found:
        rest = np.setdiff1d(np.arange(len(labels)), s.indices)
        carried = labels[s.indices].sum(axis=0)
        rows.append({"indices": s.indices.tolist(), "size": int(len(s.indices)),
                     "accuracy": s.accuracy, "gap": s.gap, "ci": list(s.ci), "kind": "label",
                     "class": names[s.label],
                     "classes": {names[c]: int(carried[c])
                                 for c in np.argsort(-carried, kind="stable") if carried[c]},
                     "significant": bool(s.ci[0] > 0),
                     "label_accuracy": float(right[:, s.label].mean()),
                     "properties": slices.distinct_properties(properties, s.indices, rest)})
    return rows


def label_error_figures(issues, p, names) -> dict[str, dict]:
    """Per label: cleanlab's expected wrong values (null where not measured), the flags, their
    share of the images and the self-test's recall."""
    n = len(p.labels)
    return {name: {"expected_label_errors": issues.expected.get(k),
                   "rate": None if k not in issues.expected else issues.expected[k] / n,
                   "flagged": int(issues.flagged[:, k].sum()),
                   "recall": issues.recall.get(k)}
            for k, name in enumerate(names)}


def label_set_summary(found: Findings, p, names) -> dict:
    """The ``triage`` block of a multi-label model (keys in docs/summary.md)."""
    issues, n = found.issues, len(p.labels)
    flagged = issues.flagged.any(axis=1)
    label_issues = [{"index": int(i), "given": "|".join(ml.label_set(p.labels[i], names)),
                     "suggested": "|".join(ml.label_set(p.labels[i] ^ issues.flagged[i], names)),
                     "score": float(np.clip(issues.quality[i], 0, 1)),
                     "labels": ml.label_set(issues.flagged[i], names)} for i in issues.images]
    counts = {v: sum(r["verdict"] == v for r in found.records) for v in VERDICTS}
    kept = ~flagged
    return {
        "multilabel": True, "verdicts": found.records, "verdict_counts": counts,
        "label_issues": label_issues,
        "expected_label_errors": issues.images_expected,
        "expected_label_value_errors": issues.values_expected,
        "labels": label_error_figures(issues, p, names),
        "label_calibration": {name: row for name, row in zip(names, found.label_calibration,
                                                             strict=True)},
        "accuracy": p.accuracy,
        "accuracy_without_label_issues": float(p.correct[kept].mean()) if kept.any() else None,
        "mistakes_from_label_errors": counts["label_error"] / max(len(found.records), 1),
        **health_summary(found, names, [["|".join(ml.label_set(p.labels[i], names))
                                         for i in g.indices] for g in found.groups]),
        "slices": [] if found.slices is None else label_slice_summary(
            found.slices, names, p.labels, p.labels == p.preds, found.properties),
        "decisions": int(n * len(names)),
    }


def label_set_checks(ctx: Context, found: Findings, summary: dict) -> list[Check]:
    """Per label, the share of its values expected wrong (skipped, with why, where not
    measured) and its own calibration; then the pooled calibration, duplicates, leakage and
    the worst slice as for any model."""
    spec, names, n = ctx.config.checks, ctx.dataset.class_names, len(ctx.predictions.labels)
    checks = []
    for name, row in summary["labels"].items():
        if row["rate"] is None:
            checks.append(LABEL_ERRORS_PER_LABEL.outcome(
                "skipped", None, checks=spec, threshold=LABEL_ERROR_BOUNDS, section=NAME,
                name=name, message=f"label '{name}': "
                                   f"{found.skipped.get(f'label_issues.{name}', 'not measured')}"))
            continue
        checks.append(LABEL_ERRORS_PER_LABEL.judge(
            row["rate"], checks=spec, section=NAME, name=name,
            message=f"label '{name}': about {row['expected_label_errors']} of {n} images "
                    f"expected to carry it wrongly ({row['rate']:.1%}"
                    + ("" if row["recall"] is None else
                       f"; flips planted at {PLANTED:.1%} found at {row['recall']:.0%}") + ")"))
    checks += label_ece_checks(spec, summary["label_calibration"], n)
    return checks + health_checks(spec, ctx.predictions.labels, n, summary["ece"], found.groups,
                                  found.leaks, found.slices, found.skipped, names,
                                  label_ece_detail(summary["label_calibration"]))


def label_ece_checks(spec: dict, rows: dict[str, dict], n: int) -> list[Check]:
    """Each label's own ECE against the bounds, with the temperature that would fix it; skipped,
    not measurable, where too few images are on one side of the label (MIN_LABEL_SIDE) or a
    calibrated label of its decisions would score the warn bound (its noise floor)."""
    checks = []
    for name, row in rows.items():
        why = unmeasurable_ece(spec, name, row, n)
        if why:
            checks.append(LABEL_ECE.outcome("skipped", None, checks=spec, section=NAME, name=name,
                                            threshold=ECE_BOUNDS,
                                            message=f"label '{name}': not measurable: {why}"))
            continue
        after = row["ece_after_temperature"]
        fix = ("" if after is None else
               f"; its own temperature {row['temperature']:.3g} leaves {after:.3f}")
        checks.append(LABEL_ECE.judge(
            row["ece"], checks=spec, section=NAME, name=name,
            message=f"label '{name}': expected calibration error {row['ece']:.3f} over its "
                    f"{n} decisions ({calibration.BINS} bins{fix})"))
    return checks


def unmeasurable_ece(spec: dict, name: str, row: dict, n: int) -> str | None:
    """Why one label's ECE cannot be judged (None: it can)."""
    side = min(row["carrying"], n - row["carrying"])
    if side < MIN_LABEL_SIDE:
        which = "carry" if row["carrying"] == side else "do not carry"
        return (f"{side} of {n} images {which} it (at least {MIN_LABEL_SIDE} on each side: "
                "fewer, and its miscalibration is averaged away by its easy decisions)")
    warn = {**ECE_BOUNDS, **spec_bounds(spec, LABEL_ECE.check_id(name))}.get("warn_above")
    if warn is not None and row["noise_floor"] >= warn:
        return (f"a perfectly calibrated label of its {n} decisions scores up to "
                f"{row['noise_floor']:.3f} (95th percentile, its outcomes redrawn from its own "
                f"probabilities), above the warn bound {warn:g}: more images would measure it")
    return None


def label_ece_detail(rows: dict[str, dict]) -> str:
    """' over every image-label decision; per label from 0.010 (even) to 0.080 (round)': the
    labels' own ECE, which the pooled figure averages away."""
    order = sorted(rows, key=lambda name: rows[name]["ece"])
    low, high = order[0], order[-1]
    return (f" over every image-label decision; per label from {rows[low]['ece']:.3f} ({low}) "
            f"to {rows[high]['ece']:.3f} ({high})")


@dataclass
class TriageData:
    """What the triage figures are drawn from (see report/views/triage.py)."""

    summary: dict
    mistakes: list[dict]
    mistake_images: np.ndarray
    mistake_diffs: np.ndarray
    label_errors: list[dict]
    label_error_images: np.ndarray
    slices: list[dict]
    slice_pictures: list[dict]
    duplicate_images: list[np.ndarray]
    leak_images: np.ndarray
    leak_train_images: np.ndarray


def figure_data(ctx: Context, options: Options, found: Findings, summary: dict) -> TriageData:
    """The images and saliency the figures show, read in one pass over the chosen positions."""
    mistakes = shown_mistakes(found.records, options.examples)
    positions = np.array([m["index"] for m in mistakes], dtype=int)
    label_errors = summary["label_issues"][: options.gallery]
    shown_slices = (found.slices or [])[: options.slices_shown]
    slice_shown = [s.indices[: options.slice_images] for s in shown_slices]
    groups, leaks = found.groups[:6], (found.leaks or [])[:8]
    images = read_images(ctx.dataset, [positions, [e["index"] for e in label_errors],
                                       [leak["index"] for leak in leaks]]
                         + slice_shown + [g.indices[:4] for g in groups])
    mistake_images, error_images, leak_images = images[:3]
    slice_images = images[3: 3 + len(slice_shown)]
    group_images = images[3 + len(slice_shown):]
    if ctx.predictions.multilabel:
        diffs, slice_maps = label_figure_saliency(
            ctx, mistakes, mistake_images, summary["slices"][: options.slices_shown],
            slice_shown, slice_images, options.method)
    else:
        diffs, slice_maps = figure_saliency(ctx, positions, mistake_images, slice_shown,
                                            slice_images, options.method)
    pictures = [{"images": shown, "saliency": np.abs(maps.sum(axis=-1)).mean(axis=0)}
                for shown, maps in zip(slice_images, slice_maps, strict=False)]
    train = found.reference.dataset
    rows = [int(np.searchsorted(found.reference.positions, leak["train_index"]))
            for leak in leaks]
    return TriageData(summary, mistakes, mistake_images, diffs, label_errors, error_images,
                      summary["slices"][: options.slices_shown], pictures, group_images,
                      leak_images, train.images(rows) if train is not None else leak_images)


def run(ctx: Context, options: Options) -> SectionResult:
    if ctx.predictions.multilabel:
        return run_multilabel(ctx, options)
    p, names = ctx.predictions, ctx.dataset.class_names
    found = measure(ctx, options)
    summary = triage_summary(found, p, names)
    checks = triage_checks(ctx, len(p.labels), found.issues, summary["ece"], found.groups,
                           found.leaks, found.slices, found.skipped)
    reference = ("the training data" if found.reference.name == "train"
                 else "the audit data itself (pass --train-data to calibrate on training data)")
    return SectionResult(
        name=NAME, title=TITLE,
        intro="Whose fault is each mistake? Likely label errors come from confident learning on "
              "the model's out-of-sample probabilities; out-of-distribution images from energy "
              "and distances in the model's penultimate features, calibrated on "
              f"{reference}; ambiguous ones from a small top-2 margin or neighbours split "
              "between the two labels; the rest are the model's own errors. Below: calibration, "
              "duplicates and leakage, and groups of images the model fails on.",
        summary={NAME: summary}, checks=checks,
        data=figure_data(ctx, options, found, summary))


def run_multilabel(ctx: Context, options: Options) -> SectionResult:
    """Triage of a multi-label model: whose fault is each wrong decision (a missed label, a
    false alarm), label by label."""
    p, names = ctx.predictions, ctx.dataset.class_names
    found = measure_multilabel(ctx, options)
    summary = label_set_summary(found, p, names)
    reference = ("the training data" if found.reference.name == "train"
                 else "the audit data itself (pass --train-data to calibrate on training data)")
    return SectionResult(
        name=NAME, title=TITLE,
        intro="Whose fault is each wrong decision (a label missed or raised)? Likely label "
              "errors come from cleanlab's multi-label confident learning, one label at a time "
              "on the model's sigmoids, confirmed by the image's neighbours' values of that "
              "label; out-of-distribution images from the joint energy of the labels and "
              f"distances in the model's penultimate features, calibrated on {reference}; "
              "ambiguous ones from a probability near the label's threshold or neighbours "
              "split on the label; the rest are the model's own errors. Below: calibration of "
              "every image-label decision, duplicates and leakage, and groups of images on "
              "which one label's decisions fail.",
        summary={NAME: summary}, checks=label_set_checks(ctx, found, summary),
        data=figure_data(ctx, options, found, summary))
