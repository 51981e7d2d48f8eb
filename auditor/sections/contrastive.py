"""Contrastive saliency for the most confident mistakes: why the predicted class, why not the true
one, and the difference (predicted minus true), on one symmetric diverging scale per example.

A multi-label model's mistakes are missed labels and false alarms (``run_multilabel``): on an
image with both, the contrast is the missed label's logit minus the false alarm's (what would
have turned the decision the right way); an image with only one kind of mistake is explained for
that label alone."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from auditor.checks.declared import Declared
from auditor.methods.attribution.trust import TRUST_BOUNDS, trust_check
from auditor.methods.topk import most_confident_mistakes
from auditor.predict.plan import Facts, Passes
from auditor.sections.base import Context, SectionResult, at_least, known_methods, one_of
from auditor.steps import saliency as saliency_step
from auditor.steps.saliency import Request

NAME = "contrastive"
TITLE = "Contrastive saliency"
MULTI_LABEL = True  # missed label against false alarm (run_multilabel)
# No silent blessing: the maps are only as good as their method (methods/attribution/trust.py).
METHOD_TRUSTED = Declared("contrastive.method_trusted", bounds=TRUST_BOUNDS,
                          what="the contrastive maps rest on a trusted method")
CHECKS = (METHOD_TRUSTED,)
DIFFERENCE_OF_MAPS = "map for predicted minus map for true"  # equal for linear methods
MAP_OF_DIFFERENCE = "map of (score predicted minus score true)"
LABEL_DIFFERENCE_OF_MAPS = "map for the missed label minus map for the false alarm"
LABEL_MAP_OF_DIFFERENCE = "map of (logit of the missed label minus logit of the false alarm)"


# The method when the spec names none and the reliability card trusts none (or none within
# map_cost), or when the attribution section does not run.
FALLBACK = "gradient"


@dataclass
class Options:
    examples: int = 8
    method: str | None = None  # None: the card's best trusted method (attribution runs too)
    # The most passes one map may cost when the method comes from the card (None: any); the
    # plan writes out its default and may lower it (PLANNED).
    map_cost: int | None = None
    score: str = "logit"
    smooth_sigma: float = 0.0  # Gaussian smoothing for display only; 0 shows raw maps

    def __post_init__(self):
        from auditor.methods.attribution.registry import SCORES

        at_least(NAME, self, 0, "examples", "smooth_sigma")
        at_least(NAME, self, 1, "map_cost")
        known_methods(NAME, "method", self.method)
        one_of(NAME, "score", self.score, SCORES)


# The compute plan (auditor.predict.plan) may lower map_cost, never below 1 pass: the
# fallback's (gradient's) cost per map, which the section runs whatever the allowance.
PLANNED = {"map_cost": 1}


def resolve(options: Options, facts: Facts) -> Options:
    """map_cost's default written out when the method comes from the card: the most any
    method the card may choose costs per map here, so that unplanned, its best is used."""
    from auditor.steps.card import card_map_cost

    if options.method is not None or options.map_cost is not None:
        return options
    return dataclasses.replace(options, map_cost=card_map_cost(facts, FALLBACK))


# Its maps are the saliency of the mistakes, made by that step before the sections
# (steps/saliency.py, asked for by ``saliency_requests``); the plan charges them to the step.
STEPS = (saliency_step.NAME,)


def map_passes(options: Options, facts: Facts) -> Passes:
    """Each example explained for its predicted and its true class (and, by a method not
    linear in the score, for their difference): by the spec's method, else as the dearest
    method the card may choose within map_cost would (the card itself is the attribution
    section's)."""
    from auditor.steps.card import affordable

    examples = min(options.examples, facts.wrong)
    methods = ([options.method] if options.method is not None
               else affordable(facts, options.map_cost, FALLBACK))
    return max((_explained(m, examples, facts, options.score) for m in methods),
               key=lambda p: p.total)


STEP = (saliency_step.NAME, map_passes)


def _explained(method: str, examples: int, facts: Facts, score: str) -> Passes:
    """The maps' rows, and a trace of the method's pass unless the card or the plan's timing
    traced it (a card's method at the card's score)."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.registry import attribution_rows, compiled_passes
    from auditor.steps.card import DEFAULT_METHODS

    maps = examples * (2 if METHODS[method].linear else 3)
    forward, backward = attribution_rows([method], maps, facts.input_shape)
    carded = compiled_passes(DEFAULT_METHODS if facts.card_methods is None
                             else facts.card_methods, facts.card_score)
    traced = not compiled_passes([method], score) <= carded
    return Passes(forward=forward, backward=backward, traces=int(traced))


def contrastive_maps(handle, images, preds, labels, method="gradient", score="logit", *,
                     saliency=None):
    """Saliency of the predicted class, of the true class, and of the difference of scores
    (predicted minus true), with how that difference was obtained.

    For a method linear in the score (gradients, Integrated Gradients, occlusion), the map of
    score_pred - score_true is the difference of the two maps; for the others (rectified or
    absolute maps) it is computed from the difference of scores itself. ``saliency(targets,
    contrast=None)`` gives the maps of ``images``, one target each; by default they are
    computed here, and the section passes the saliency step's maps (``ctx.steps.saliency``).
    """
    from auditor.methods.attribution import METHODS, attribute

    if saliency is None:
        def saliency(targets, contrast=None):
            return attribute(handle, images, targets, method=method, score=score,
                             contrast=contrast)

    for_pred, for_true = saliency(preds), saliency(labels)
    if METHODS[method].linear:
        return for_pred, for_true, for_pred - for_true, DIFFERENCE_OF_MAPS
    return for_pred, for_true, saliency(preds, labels), MAP_OF_DIFFERENCE


@dataclass
class ContrastiveData:
    """What the contrastive figures are drawn from, one row per example."""

    images: np.ndarray
    for_pred: np.ndarray
    for_true: np.ndarray
    diff: np.ndarray
    examples: list[dict]
    smooth_sigma: float
    of_difference: bool = False  # ``diff`` explains the difference of scores (not linear)


def chosen_method(card, shape: tuple, options: Options):
    """The method of the maps, and the card's choice when the card chose it."""
    from auditor.steps.card import choose

    if options.method is not None:
        return options.method, None
    return choose(card, shape, fallback=FALLBACK, max_cost=options.map_cost)


def saliency_requests(inputs, options: Options, shared) -> tuple[Request, ...]:
    """The maps ``run`` reads from the saliency step: the examples' for their predicted and
    their true class and, by a method not linear in the score, for their difference."""
    from auditor.methods.attribution import METHODS

    p = inputs.predictions
    if p.multilabel:  # its maps depend on the label sets: made by run_multilabel itself
        return ()
    method, _ = chosen_method(shared.card, inputs.handle.input_shape, options)
    positions = most_confident_mistakes(p, options.examples)
    preds, labels = p.preds[positions], p.labels[positions]
    asked = [Request.of(method, positions, targets, score=options.score)
             for targets in (preds, labels)]
    if not METHODS[method].linear:
        asked.append(Request.of(method, positions, preds, labels, score=options.score))
    return tuple(asked)


def run(ctx: Context, options: Options) -> SectionResult:
    if ctx.predictions.multilabel:
        return run_multilabel(ctx, options)
    p, names = ctx.predictions, ctx.dataset.class_names
    positions = most_confident_mistakes(p, options.examples)
    images = ctx.dataset.images(positions)
    preds, labels = p.preds[positions], p.labels[positions]
    from auditor.steps.card import card_of, choice_note

    method, choice = chosen_method(ctx.steps.card, ctx.handle.input_shape, options)
    note = "" if options.method is not None else choice_note(choice, ctx.handle.input_shape)

    def shared(targets, contrast=None):  # the saliency step's maps (steps/saliency.py)
        return ctx.steps.saliency.maps(ctx, method, positions, targets, contrast=contrast,
                                        images=images, score=options.score)

    for_pred, for_true, diff, difference = contrastive_maps(
        ctx.handle, images, preds, labels, method, options.score, saliency=shared)
    probs = p.probs_at(positions)
    examples = [{"index": int(pos), "true": names[labels[i]], "pred": names[preds[i]],
                 "p_pred": float(probs[i, preds[i]]), "p_true": float(probs[i, labels[i]])}
                for i, pos in enumerate(positions)]
    smoothing = (f"Maps are smoothed for display (Gaussian, sigma {options.smooth_sigma:g} px)."
                 if options.smooth_sigma > 0 else "Maps are raw, not smoothed.")
    return SectionResult(
        name=NAME, title=TITLE,
        intro=f"For each mistake: the {method}{note} saliency "
              "of the predicted class's "
              f"{options.score}, of the true class's, and their difference. Red means the pixel "
              "raised the score (in the difference: pushed towards the wrong class); blue lowered "
              f"it. The difference is the {difference}. The three maps of an example share one "
              f"symmetric scale. {smoothing}",
        summary={NAME: {"method": method, "method_from_card": options.method is None,
                        "score": options.score, "difference": difference,
                        "examples": examples}},
        data=ContrastiveData(images, for_pred, for_true, diff, examples, options.smooth_sigma,
                             difference == MAP_OF_DIFFERENCE),
        checks=[trust_check(METHOD_TRUSTED, card_of(ctx.steps.card),
                            {"the contrastive maps": [method]}, checks=ctx.config.checks,
                            section=NAME)],
        method_choice=choice,
    )


@dataclass
class LabelContrastData:
    """A multi-label model's figures, one row per example: the map of its first wrong label
    (the missed one, else the false alarm), of its false alarm and of their difference where
    it has both (``paired``; zeros elsewhere)."""

    images: np.ndarray
    for_first: np.ndarray
    for_alarm: np.ndarray
    diff: np.ndarray
    paired: np.ndarray  # bool per example
    examples: list[dict]
    smooth_sigma: float
    of_difference: bool = False


def label_maps(ctx: Context, method: str, positions, images, missed, alarms):
    """(for the first wrong label, for the false alarm, difference, paired, how): each
    image's missed label's map (its false alarm's when nothing was missed); where it has both,
    the false alarm's map and the difference missed minus false alarm, by the maps' difference
    for a method linear in the score, else the map of the difference of the logits."""
    from auditor.methods.attribution import METHODS

    def maps(at, targets, contrast=None):  # made for this section (not in the step)
        return ctx.steps.saliency.maps(ctx, method, positions[at], targets, contrast=contrast,
                                       images=images[at], score="logit")

    first = np.where(missed >= 0, missed, alarms)
    for_first = maps(slice(None), first)
    paired = (missed >= 0) & (alarms >= 0)
    for_alarm, diff = np.zeros_like(for_first), np.zeros_like(for_first)
    linear = METHODS[method].linear
    if paired.any():
        pair = np.flatnonzero(paired)
        for_alarm[pair] = maps(pair, alarms[pair])
        diff[pair] = (for_first[pair] - for_alarm[pair] if linear
                      else maps(pair, missed[pair], contrast=alarms[pair]))
    how = LABEL_DIFFERENCE_OF_MAPS if linear else LABEL_MAP_OF_DIFFERENCE
    return for_first, for_alarm, diff, paired, how


def run_multilabel(ctx: Context, options: Options) -> SectionResult:
    """Missed labels against false alarms, on the images with the most confident wrong
    decisions; the maps explain logits (a softmax probability over labels means nothing)."""
    from auditor.methods import multilabel as ml
    from auditor.steps.card import card_of, choice_note

    p, names = ctx.predictions, ctx.dataset.class_names
    probs = p.probs
    positions = ml.worst_mistakes(p.labels, probs, p.preds, p.thresholds, options.examples)
    images = ctx.dataset.images(positions)
    missed, alarms = ml.contrast_pairs(p.labels[positions], probs[positions],
                                       p.preds[positions])
    method, choice = chosen_method(ctx.steps.card, ctx.handle.input_shape, options)
    note = "" if options.method is not None else choice_note(choice, ctx.handle.input_shape)
    for_first, for_alarm, diff, paired, how = label_maps(ctx, method, positions, images,
                                                         missed, alarms)

    def named(k: int) -> tuple[str | None, float | None]:
        return (names[k], float(probs[pos, k])) if k >= 0 else (None, None)

    examples = []
    for i, pos in enumerate(positions):
        (miss, p_miss), (alarm, p_alarm) = named(missed[i]), named(alarms[i])
        examples.append({"index": int(pos), "true": ml.label_set(p.labels[pos], names),
                         "pred": ml.label_set(p.preds[pos], names), "missed": miss,
                         "p_missed": p_miss, "false_alarm": alarm, "p_false_alarm": p_alarm})
    return SectionResult(
        name=NAME, title=TITLE,
        intro=f"For each image with a wrong label: the {method}{note} saliency of the logit of its "
              "most confidently missed label and of its most confident false alarm, and, where "
              f"it has both, their difference ({how}): red pixels pushed towards the right "
              "decision (the missed label up, the false alarm down). An image with only one "
              "kind of mistake is explained for that label alone. The maps of an example share "
              "one symmetric scale.",
        summary={NAME: {"method": method, "method_from_card": options.method is None,
                        "score": "logit",
                        "difference": how, "examples": examples}},
        data=LabelContrastData(images, for_first, for_alarm, diff, paired, examples,
                               options.smooth_sigma, how == LABEL_MAP_OF_DIFFERENCE),
        checks=[trust_check(METHOD_TRUSTED, card_of(ctx.steps.card),
                            {"the contrastive maps": [method]}, checks=ctx.config.checks,
                            section=NAME)],
        method_choice=choice)
