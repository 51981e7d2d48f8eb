"""The model's input range, probed on labelled data rather than guessed from its layers.

A checkpoint trained elsewhere says little about the pixels it was trained on: a leading
``Rescaling`` layer or a keras.applications name is a hint, not an answer (a fine-tuned
MobileNetV2 may well have been trained on 0-1 inputs). The probe runs one forward pass per
candidate range over a stratified sample and keeps the range with the best accuracy; the hint
only breaks ties. The sample is read in a random order and the probe stops at the end of a batch
once one range leads every other by more than chance could make it (``clear_margin``): a right
range beats a wrong one by tens of points, which a batch or two shows, and a pass of a large
model (ConvNeXtTiny at 48 px: 50 ms an image) makes every image of every candidate count. An
explicit ``--input-range`` skips it. A multi-label model is scored by its accuracy
per decision (each image's yes/no on each label at the sigmoid's 0.5), against the chance of
always answering each label's more frequent side.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np

from auditor.checks.check import Check, evaluate
from auditor.errors import ModelError
from auditor.inputs.models import NO_HINT, input_transform
from auditor.methods.prediction_health import best_relabelling

CANDIDATES = ("0-1", "0-255", "-1-1", "caffe", "torch")
RGB_ONLY = ("caffe", "torch")
# Images probed: the standard error of an accuracy on 320 images is at most 2.8 points, small
# against the gap between a right range and a wrong one (tens of points on every model tried).
PROBE_SAMPLES = 320
# Accuracy up to a relabelling of the classes is used only with this many images per class:
# with fewer, a best matching finds agreement in noise.
MATCHED_IMAGES_PER_CLASS = 10
Z95 = 1.96  # two-sided 95% normal quantile, for the sampling error of an accuracy
# The chance that the probe stops early on a range that is not the best: 5%, the level of the
# sampling error above (``clear_margin``).
STOP_RISK = 0.05
CHECK = "model.input_range"


@dataclass
class ProbeResult:
    """The candidates' scores on the probe sample and the range chosen."""

    chosen: str
    hint: str
    hint_reason: str
    rows: list[dict]  # {range, accuracy, matched_accuracy, hint}, in candidate order
    samples: int
    chance: float  # accuracy of always answering the sample's most frequent class
    score_key: str  # "accuracy" or "matched_accuracy": what the choice ranked by
    # (positions, rows): the images the probe ran through the handle's forward pass under the
    # range chosen, when it is the transform the handle had, and their rows of logits and
    # features, which the prediction pass takes as made; None otherwise
    known: tuple[np.ndarray, np.ndarray] | None = None

    def score(self, name: str) -> float:
        return next(row[self.score_key] for row in self.rows if row["range"] == name)

    @property
    def runner_up(self) -> dict | None:
        others = [row for row in self.rows if row["range"] != self.chosen]
        return max(others, key=lambda row: row[self.score_key]) if others else None


def candidates(hint: str, channels: int) -> list[tuple[str, bool]]:
    """(range, is the hint) for every candidate the model can take; a backbone's own mode is
    merged with the generic range it equals (mobilenet_v2 is -1-1) or added when it is new."""
    names = [c for c in CANDIDATES if channels == 3 or c not in RGB_ONLY]
    transforms = {name: input_transform(name, channels) for name in names}
    try:
        hinted = input_transform(hint, channels)
    except ModelError:  # a hint the model's channels cannot take (caffe on grey) is no hint
        return [(name, False) for name in names]
    same = [n for n, t in transforms.items()
            if (t.scale, t.offset, t.reverse_channels)
            == (hinted.scale, hinted.offset, hinted.reverse_channels)]
    if same:
        return [(name, name == same[0]) for name in names]
    return [(name, False) for name in names] + [(hint, True)]


def probe_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Positions of a stratified sample of the audit images."""
    from auditor.inputs.datasets import sample_indices

    return sample_indices(labels, size, seed)


def probe_input_range(handle, dataset, batch_size: int = 64, seed: int = 0,
                      samples: int = PROBE_SAMPLES, budgeted: bool = False) -> ProbeResult:
    """Score every candidate range on a stratified sample (each batch read once, one forward
    pass per candidate), stopping after a batch once one range clearly leads (``clear_margin``)
    or, under a named budget (``budgeted``), once the next batch would cost more than the
    probe costs on the reference model (``probe_kernels``), and set the winner as the
    handle's transform."""

    from auditor.predict.batched import rows_per_pass

    hint, reason = handle.input_range_hint
    options = candidates(hint, handle.input_shape[-1])
    if reason == NO_HINT:  # 0-1 is where the probe starts, not what the model said
        options = [(name, False) for name, _ in options]
    transforms = [input_transform(name, handle.input_shape[-1]) for name, _ in options]
    sample = probe_sample(dataset.labels, samples, seed)
    multilabel = getattr(handle, "multilabel", False)
    # ranked by accuracy up to class order when the whole sample allows it, and then not
    # stopped before it does: the key does not change with where the probe stops (that
    # relabelling is fitted on the images scored, so the stopping bound is approximate there)
    matched = not multilabel and len(sample) >= MATCHED_IMAGES_PER_CLASS * handle.num_classes
    first_look = MATCHED_IMAGES_PER_CLASS * handle.num_classes if matched else 1
    batch_size = look_batch(min(batch_size, rows_per_pass(handle, backward=False)), first_look)
    positions = _in_random_order(sample, batch_size, seed)
    key = "matched_accuracy" if matched else "accuracy"
    cap = (kernel_seconds(handle) * probe_kernels(len(options))) if budgeted else math.inf
    labels, preds, own_rows = _read(handle, dataset, positions, options,
                                    _decisions(handle, transforms, multilabel), batch_size,
                                    matched, cap)
    rows = _scored(options, labels, preds, handle.num_classes, matched)
    order = {name: i for i, (name, _) in enumerate(options)}
    best = max(rows, key=lambda r: (round(r[key], 9), r["accuracy"], r["hint"],
                                    -order[r["range"]]))
    chosen = input_transform(best["range"], handle.input_shape[-1])
    known = ((positions[:len(labels)], own_rows)
             if own_rows is not None and same_map(handle.transform, chosen) else None)
    handle.set_transform(chosen)
    handle.input_range_source = "probe"
    handle.input_range_probe = [dict(r) for r in rows]
    handle.input_range_probe_samples = len(labels)
    chance = _chance(labels)
    return ProbeResult(best["range"], hint, reason, rows, len(labels), chance, key, known)


def _read(handle, dataset, positions, options, decide, batch_size: int, matched: bool,
          cap: float) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels, each candidate's predictions, the rows of the handle's own forward pass or
    None: ``_decisions``) of the images read: batch after batch until one candidate leads
    clearly or the next batch would bring the seconds spent over ``cap``, looking only once
    the key can be computed (``matched``: 10 images per class)."""
    labels = dataset.labels[positions]
    key = "matched_accuracy" if matched else "accuracy"
    first_look = MATCHED_IMAGES_PER_CLASS * handle.num_classes if matched else 1
    looks = math.ceil(len(positions) / batch_size)
    preds = np.empty((len(options), *labels.shape), np.int64)
    spent, own = 0.0, []
    for start in range(0, len(positions), batch_size):
        part = slice(start, start + batch_size)
        tick = time.perf_counter()
        preds[:, part], rows = decide(dataset.images(positions[part]))
        own.append(rows)
        spent += time.perf_counter() - tick  # the first batch's trace included: an upper bound
        seen = min(start + batch_size, len(positions))
        if seen == len(positions) or seen < first_look:
            continue
        scores = [row[key] for row in _scored(options, labels[:seen], preds[:, :seen],
                                              handle.num_classes, matched)]
        next_batch = min(batch_size, len(positions) - seen) * spent / seen
        if _leads_clearly(scores, seen, looks) or spent + next_batch > cap:
            return labels[:seen], preds[:, :seen], _joined(own)
    return labels, preds, _joined(own)


def _joined(rows: list) -> np.ndarray | None:
    return None if not rows or rows[0] is None else np.concatenate(rows)


def probe_kernels(candidates: int) -> float:
    """Reference kernels the probe may spend under a named budget: what it costs on the
    reference model of the named budgets (PROBE_SAMPLES images under ``candidates`` ranges,
    each a forward pass of FORWARD_SHARE of REFERENCE_PASS kernels: predict/plan.py), so that
    a named budget's wait before the plan is no longer on a dearer model (ConvNeXtTiny at 48
    px, a pass of 16 kernels: about 100 images under five ranges)."""
    from auditor.predict.plan import FORWARD_SHARE, REFERENCE_PASS

    return PROBE_SAMPLES * candidates * FORWARD_SHARE * REFERENCE_PASS


def kernel_seconds(handle) -> float:
    """Seconds of the reference kernel now (``predict/plan.py`` ``reference_kernel``), the
    median of three calls after its trace (kept on the handle: the Keras callback's copy is
    probed at every audited epoch)."""
    from auditor.predict.plan import reference_kernel

    run = handle.compiled.get("reference kernel") or reference_kernel()
    handle.compiled["reference kernel"] = run
    seconds = []
    for _ in range(3):
        tick = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - tick)
    return float(np.median(seconds))


def _in_random_order(positions: np.ndarray, batch_size: int, seed: int) -> np.ndarray:
    """The sample's positions shuffled, so that the images read before the probe stops are a
    random part of the stratified sample (a folder's images come class by class), each batch's
    sorted (a file read in place is read forward)."""
    shuffled = np.random.default_rng(seed).permutation(positions)
    return np.concatenate([np.sort(shuffled[i:i + batch_size])
                           for i in range(0, len(shuffled), batch_size)] or [shuffled])


def _scored(options, labels: np.ndarray, preds: np.ndarray, classes: int,
            matched: bool) -> list[dict]:
    """Each candidate's row: its accuracy on these images and, when ``matched``, its
    accuracy up to a relabelling of the classes."""
    names = [str(i) for i in range(classes)]
    return [{"range": name, "accuracy": float((p == labels).mean()),
             "matched_accuracy": (best_relabelling(labels, p, names)["matched_accuracy"]
                                  if matched else None),
             "hint": is_hint}
            for (name, is_hint), p in zip(options, preds, strict=True)]


def clear_margin(images: int, candidates: int, looks: int, risk: float = STOP_RISK) -> float:
    """The lead over every other candidate, on ``images`` images, past which the leader is
    the best range but with chance ``risk``: Hoeffding's inequality (Hoeffding 1963, Theorem
    2) on the mean of each image's difference between two candidates (a number in [-1, 1]),
    P(mean - its expectation >= t) <= exp(-n t^2 / 2), made to hold at once for every ordered
    pair of candidates and every one of the ``looks`` the probe may take (a union bound: the
    looks are many tests of one sample, each of which could stop it)."""
    pairs = max(candidates * (candidates - 1), 1)
    return math.sqrt(2 * math.log(pairs * max(looks, 1) / risk) / max(images, 1))


def _leads_clearly(scores: list[float], images: int, looks: int) -> bool:
    """Whether the best score leads every other by more than ``clear_margin``."""
    if len(scores) < 2:
        return True
    ranked = sorted(scores, reverse=True)
    return ranked[0] - ranked[1] > clear_margin(images, len(scores), looks)


def look_batch(most: int, first_look: int) -> int:
    """Rows of the probe's batches: at most ``most``, and an even share of the images the
    first look needs (``first_look``), so that the look falls on them: 10 images per class of
    10 classes are read in two batches of 50, not of 64 (128 images under five ranges were 28
    images of every range more than the look needed)."""
    if first_look <= 1:
        return most
    return -(-first_look // -(-first_look // max(1, most)))


def _decisions(handle, transforms, multilabel: bool):
    """``decide(images) -> (decisions, rows)``: each candidate's class of display-space images
    (candidates, images) (multi-label: each label's yes/no at the sigmoid's 0.5), through the
    handle's own forward pass (``ModelHandle.forward_pass``, traced once for the prediction
    pass and every later forward pass), a candidate's images mapped into the handle's display
    space first (``through_own``), so that the pass the handle's transform compiled sees the
    candidate's model inputs; and the pass's rows (logits and features) of the candidate that
    is the handle's own transform (None when none is). No trace of the probe's own
    (ConvNeXtTiny's at 48 px: seconds); when the range chosen is the handle's, the prediction
    pass finds its trace made and these images' rows computed (``ProbeResult.known``)."""
    from auditor.predict.distribute import run_batch

    own, (fn, _) = handle.transform, handle.forward_pass

    def decide(images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        decided, kept = [], None
        for transform in transforms:
            rows = np.asarray(run_batch(handle, fn, through_own(own, transform, images)))
            logits = rows[:, :handle.num_classes]
            decided.append((logits > 0).astype(np.int64) if multilabel
                           else logits.argmax(axis=-1))
            if kept is None and same_map(own, transform):
                kept = rows
        return np.stack(decided), kept

    return decide


def same_map(transform, other) -> bool:
    """Whether two input transforms give the model the same inputs (names aside)."""
    return (transform.scale, transform.offset, transform.reverse_channels) == (
        other.scale, other.offset, other.reverse_channels)


def through_own(own, transform, images: np.ndarray) -> np.ndarray:
    """Display-space ``images`` as the transform ``own`` must see them to give the model what
    ``transform`` gives it (the images themselves when the two are the same map)."""
    if same_map(own, transform):
        return images
    x = images[..., ::-1] if transform.reverse_channels else images
    model = x * np.float32(transform.scale) + np.float32(transform.offset)
    back = (model - np.float32(own.offset)) / np.float32(own.scale)
    return np.ascontiguousarray(back[..., ::-1] if own.reverse_channels else back, np.float32)


def _chance(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class; multi-label: of answering
    each label's more frequent side (present or absent)."""
    if not len(labels):
        return 0.0
    if labels.ndim == 2:
        prevalence = labels.mean(axis=0)
        return float(np.maximum(prevalence, 1 - prevalence).mean())
    return float(np.bincount(labels).max() / len(labels))


def sampling_error(accuracy: float, n: int) -> float:
    """Half-width of the normal (Wald) 95% interval of an accuracy measured on n images."""
    return Z95 * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def input_range_check(result: ProbeResult, overrides_hint: bool, spec: dict | None) -> Check:
    """Warn when the choice is not clear: the runner-up is within the sampling error of the
    winner, or the winner is no better than guessing the most frequent class."""
    best = result.score(result.chosen)
    runner = result.runner_up
    margin = best - runner[result.score_key] if runner else 1.0
    flag = "--input-range (spec key 'input_range')"
    what = "accuracy" if result.score_key == "accuracy" else "accuracy up to class order"
    message = (f"input range {result.chosen} chosen by probing {result.samples} images "
               f"({what} {best:.1%}"
               + (f"; next best {runner['range']} {runner[result.score_key]:.1%})" if runner
                  else ")"))
    if overrides_hint:
        message += f"; the model's hint ({result.hint_reason}) said {result.hint}"
    defaults = {"warn_below": round(sampling_error(best, result.samples), 4)}
    check = evaluate(CHECK, margin, message=message, section="run", defaults=defaults,
                     spec=spec)
    if check.status == "warn":
        return dataclasses.replace(check, message=check.message + (
            f": the ranges cannot be told apart on this data; set {flag}"))
    at_chance = best <= result.chance + sampling_error(result.chance, result.samples)
    if at_chance and check.status == "pass":
        return dataclasses.replace(
            check, status="warn",
            message=(f"{message}: even the best range is no better than always answering "
                     f"the most frequent class ({result.chance:.1%}); the model may not "
                     f"fit this data, or it expects a range not tried: set {flag}"))
    return check
