"""Contrastive saliency for the most confident mistakes: why the predicted class, why not the true
one, and the difference (predicted minus true), on one symmetric diverging scale per example."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from auditor.checks.declared import Declared
from auditor.methods.attribution.trust import TRUST_BOUNDS, trust_check
from auditor.methods.topk import most_confident_mistakes
from auditor.predict.plan import Facts, Passes
from auditor.sections.base import Context, SectionResult, at_least, known_methods, one_of

NAME = "contrastive"
TITLE = "Contrastive saliency"
# Why the section does not apply to a multi-label model (pipeline.not_applicable).
MULTI_LABEL = ("it contrasts each mistake's predicted class with its true class; the contrast of a"
               " missed label with a false alarm is not built yet")
# No silent blessing: the maps are only as good as their method (methods/attribution/trust.py).
METHOD_TRUSTED = Declared("contrastive.method_trusted", bounds=TRUST_BOUNDS,
                          what="the contrastive maps rest on a trusted method")
CHECKS = (METHOD_TRUSTED,)
DIFFERENCE_OF_MAPS = "map for predicted minus map for true"  # equal for linear methods
MAP_OF_DIFFERENCE = "map of (score predicted minus score true)"


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


def passes(options: Options, facts: Facts) -> Passes:
    """Each example explained for its predicted and its true class (and, by a method not
    linear in the score, for their difference): by the spec's method, else as the dearest
    method the card may choose within map_cost would (the card itself is the attribution
    section's, charged to the first section that asks for it)."""
    from auditor.steps.card import affordable

    examples = min(options.examples, facts.wrong)
    methods = ([options.method] if options.method is not None
               else affordable(facts, options.map_cost, FALLBACK))
    return max((_explained(m, examples, facts) for m in methods), key=lambda p: p.total)


def _explained(method: str, examples: int, facts: Facts) -> Passes:
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.registry import attribution_rows

    maps = examples * (2 if METHODS[method].linear else 3)
    forward, backward = attribution_rows([method], maps, facts.input_shape)
    return Passes(forward=forward, backward=backward, traces=1)


def contrastive_maps(handle, images, preds, labels, method="gradient", score="logit", *,
                     saliency=None):
    """Saliency of the predicted class, of the true class, and of the difference of scores
    (predicted minus true), with how that difference was obtained.

    For a method linear in the score (gradients, Integrated Gradients, occlusion), the map of
    score_pred - score_true is the difference of the two maps; for the others (rectified or
    absolute maps) it is computed from the difference of scores itself. ``saliency(targets,
    contrast=None)`` gives the maps of ``images``, one target each; by default they are
    computed here, and the section passes the run's shared maps (``Context.saliency``).
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


def run(ctx: Context, options: Options) -> SectionResult:
    p, names = ctx.predictions, ctx.dataset.class_names
    positions = most_confident_mistakes(p, options.examples)
    images = ctx.dataset.images(positions)
    preds, labels = p.preds[positions], p.labels[positions]
    from auditor.steps.card import card_of, choice_note, choose

    method, note, choice = options.method, "", None
    if method is None:
        method, choice = choose(ctx.card, ctx.handle.input_shape, fallback=FALLBACK,
                                max_cost=options.map_cost)
        note = choice_note(choice, ctx.handle.input_shape)

    def shared(targets, contrast=None):  # maps made once per run, whichever section asks first
        return ctx.saliency(method, positions, targets, contrast=contrast, images=images,
                            score=options.score)

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
        checks=[trust_check(METHOD_TRUSTED, card_of(ctx.card), {"the contrastive maps": [method]},
                            checks=ctx.config.checks, section=NAME)],
        method_choice=choice,
    )
