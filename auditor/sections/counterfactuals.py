"""Counterfactuals: for the most confident mistakes, the smallest change to the image that makes
the model right, and whether that change lies where the contrastive saliency map points.

A multi-label model's mistakes are wrong decisions on one label (``run_multilabel``): for each,
the smallest change that carries that label across its threshold the right way (a missed label
turned on, a false alarm turned off), with success rate and size per label."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from auditor.checks.declared import Declared
from auditor.errors import ConfigError
from auditor.methods.topk import most_confident_mistakes
from auditor.predict.plan import Facts, Passes
from auditor.sections.base import Context, SectionResult, at_least, one_of
from auditor.steps import saliency as saliency_step
from auditor.steps.saliency import Request

NAME = "counterfactuals"
TITLE = "Counterfactuals"
MULTI_LABEL = True  # one label's wrong decision turned the right way (run_multilabel)
# Pixels are free to change (Wachter et al. 2017): on a differentiable model the search finds a
# counterfactual for nearly every mistake (measured: the demo CNN 100%), so finding one for
# under half means the gradients do not lead anywhere (a dead or saturated head) or the steps
# are too few. Finding none is judged from the searches' trace (``success_check``).
SUCCESS_BOUNDS = {"warn_below": 0.5}


def _counterfactual_words(summary: dict, check: dict) -> str:
    return ("Counterfactuals were found for too few mistakes: the model's gradients do not "
            "lead anywhere, so gradient-based explanations of it are suspect.")


SUCCESS = Declared("counterfactuals.success_rate", what="mistakes with a counterfactual",
                   bounds=SUCCESS_BOUNDS, finding=_counterfactual_words, finding_rank=50)
CHECKS = (SUCCESS,)


@dataclass
class Options:
    mistakes: int = 64  # most confident mistakes optimised together in one batch
    gallery: int = 8  # of them shown
    penalty: str = "l1"  # size of the change: l1 (sparse) or l2 (spread)
    weight: float = 0.05  # of the size penalty against the class margin
    tv_weight: float = 0.05  # of total variation: a readable shape rather than noise
    steps: int = 200
    learning_rate: float = 0.01
    margin: float = 1.0  # how far (in logits) the true class should win

    def __post_init__(self):
        at_least(NAME, self, 0, "mistakes", "gallery", "weight", "tv_weight", "margin")
        at_least(NAME, self, 1, "steps")
        one_of(NAME, "penalty", self.penalty, ("l1", "l2"))
        if self.learning_rate <= 0:
            raise ConfigError(f"'{NAME}.learning_rate' must be above 0, got {self.learning_rate}")


# The compute plan (auditor.predict.plan) may lower these, never below the floor: 8 mistakes
# fill the gallery; 50 Adam steps at the default rate move a pixel by up to 0.5.
PLANNED = {"mistakes": 8, "steps": 50}
# Lowered below the floor, down to this, when a named budget cannot hold the floors on this
# model (predict/plan.py ``_thinned``; the check then says it was not measured): two mistakes
# still make the search and the gallery, and the search's rows are the section's cost.
THIN = {"mistakes": 2}


def passes(options: Options, facts: Facts) -> Passes:
    """Every mistake optimised (at most ``mistakes``, together) takes ``steps`` steps, each a
    prediction and a gradient call of the passes the plan's timing traced (none traced
    here), and is predicted once more after. The predictions are priced by the row, not by
    the call (``called``, ``calls``): a forward call's fixed cost is priced at the share the
    backward call's is of its time, and on ConvNeXt that share was XLA's grouped convolutions'
    backward (docs/scale.md), far dearer than their forward: with it, the estimate was 198 s
    against 116 in the whole quick audit of ConvNeXtTiny, without it 108 against 128 alone
    (measured before those convolutions ran depthwise, inputs/depthwise.py)."""
    mistakes = min(options.mistakes, facts.wrong)
    return Passes(forward=mistakes * (options.steps + 1), looped=mistakes * options.steps,
                  loop_steps=options.steps if mistakes else 0)


def map_passes(options: Options, facts: Facts) -> Passes:
    """Each mistake's contrastive gradient, one backward pass: the saliency step's."""
    return Passes(backward=min(options.mistakes, facts.wrong))


# The contrastive gradient of the mistakes is made by the saliency step (steps/saliency.py),
# which the plan charges with it.
STEPS = (saliency_step.NAME,)
STEP = (saliency_step.NAME, map_passes)


def saliency_requests(inputs, options: Options, shared) -> tuple[Request, ...]:
    """The gradient of (predicted minus true) logit of the mistakes ``run`` optimises."""
    p = inputs.predictions
    if p.multilabel:  # one label's logit per decision: made by run_multilabel itself
        return ()
    positions = most_confident_mistakes(p, options.mistakes)
    return (Request.of("gradient", positions, p.preds[positions], p.labels[positions],
                       paired=True),)


@dataclass
class CounterfactualsData:
    """What the gallery is drawn from: its examples and their arrays, row for row."""

    examples: list[dict]
    original: np.ndarray
    counterfactual: np.ndarray
    delta: np.ndarray
    toward_true: np.ndarray  # minus the contrastive map: where the change should go
    mistakes_total: int


def _mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _figures(found, agreement: np.ndarray, count: int, options: Options) -> dict:
    """summary.json's figures of the searches, for mistakes and for a label's wrong decisions
    alike: how many succeeded, their sizes, how well the saliency map foresaw them, and how
    many the size penalty did not hold after their first step (``moved``)."""
    ok = found.success
    return {"count": count, "success_rate": float(ok.mean()) if count else None,
            "mean_l2": _mean(found.l2[ok]), "mean_l1": _mean(found.l1[ok]),
            "saliency_agreement": _mean(agreement), "penalty": options.penalty,
            "steps": options.steps, "moved": int(found.moved.sum())}


def _result(options: Options, intro: str, figures: dict, found, toward: np.ndarray,
            wrong: int, checks: list) -> SectionResult:
    """The section's result: ``figures`` in summary.json and the gallery's first
    ``options.gallery`` searches beside the map they should follow (``toward``)."""
    shown = options.gallery
    return SectionResult(
        name=NAME, title=TITLE, intro=intro, summary={NAME: figures},
        data=CounterfactualsData(figures["examples"][:shown], found.original[:shown],
                                 found.counterfactual[:shown], found.delta[:shown],
                                 toward[:shown], wrong),
        checks=checks)


def success_check(found, spec: dict, options: Options, noun: str = "mistakes",
                  goal: str = "the true class"):
    """The share of mistakes (a multi-label model's: wrong decisions) with a counterfactual.

    None found is read from the searches' own trace (``methods.counterfactual``): a search
    that rose past its first step and still fell short measured the model (its gradients led
    part of the way and no further), so the share found, none, is judged by the check's bounds
    like any other (a warning by default; error is for a crash); one the
    size penalty held from its second step on, after the first (which follows the margin's
    gradient alone) raised the margin, measured nothing about the model: a random net's input
    gradient is that small beside the penalty, and with no penalty the same searches succeed
    (docs/scale.md), so it is skipped as not measurable; a first step that raised no margin
    beyond rounding met a zero or vanishing gradient (a dead head; a random MobileNetV2 at
    32 px, whose logits are all about 1e-11, which no setting of the penalty lets move): a
    gradient search measures nothing there either, so it is skipped as not measurable (error
    is for a crash; the dead head itself is the model's finding, which the performance
    section's logit_spread checks measure)."""
    count, hits = len(found.success), int(found.success.sum())
    check = SUCCESS.judge(hits / count, checks=spec, section=NAME,
                          message=f"counterfactuals found for {hits} of {count} {noun}")
    if hits:
        return check.noted(": far fewer than the mistakes, the gradients lead nowhere for most")
    needed = float(np.max(options.margin - found.start))
    if found.moved.any():  # measured: judged by the check's bounds, as any share found
        return dataclasses.replace(check, message=check.message + (
            f": the search moved towards {goal} (the margin rose up to "
            f"{np.max(found.reached - found.start):.3g} of the {needed:.3g} logits needed) but "
            "never reached it: the gradients lead nowhere (a saturated head), or the steps are "
            "too few ('counterfactuals.steps')"))
    if found.started.any():
        return SUCCESS.outcome("skipped", check.value, checks=spec, section=NAME,
                               threshold=check.threshold, message=check.message + (
            f": not measurable, the size penalty held every search from its second step on "
            f"(the first step, the margin's gradient alone, raised the margin by at most "
            f"{np.max(found.stepped - found.start):.2g} of the {needed:.3g} logits needed): the "
            "model's input gradient is too small beside 'counterfactuals.weight' "
            f"({options.weight:g}) and 'tv_weight' ({options.tv_weight:g}), as a random net's "
            "is; lower them to measure it"))
    if np.all(np.isneginf(found.stepped)):
        return SUCCESS.outcome("skipped", check.value, checks=spec, section=NAME,
                               threshold=check.threshold, message=check.message + (
            ": not measurable, a single step leaves no trace; raise 'counterfactuals.steps'"))
    return SUCCESS.outcome("skipped", check.value, checks=spec, section=NAME,
                           threshold=check.threshold, message=check.message + (
        f": not measurable, the search never moved towards {goal}: its first step, the "
        "margin's gradient alone, raised no margin beyond rounding: the model's input gradient "
        "is zero or vanishing (a dead or saturated head: the performance section's "
        "logit_spread checks say whether its logits move at all)"))


def agreement_of(found, toward) -> np.ndarray:
    """Per row, the rank correlation of the change with the map that points the same way
    (NaN where no counterfactual was found)."""
    from auditor.methods.agreement import rank_correlation

    agreement = np.full(len(found.success), np.nan)
    if found.success.any():
        agreement[found.success] = rank_correlation(found.delta[found.success].sum(axis=-1),
                                                    toward[found.success].sum(axis=-1))
    return agreement


def run(ctx: Context, options: Options) -> SectionResult:
    from auditor.methods.counterfactual import counterfactuals

    if ctx.predictions.multilabel:
        return run_multilabel(ctx, options)
    p, names = ctx.predictions, ctx.dataset.class_names
    positions = most_confident_mistakes(p, options.mistakes)
    images = ctx.dataset.images(positions)
    preds, labels = p.preds[positions], p.labels[positions]
    found = counterfactuals(ctx.handle, images, labels, penalty=options.penalty,
                            weight=options.weight, tv_weight=options.tv_weight,
                            steps=options.steps, learning_rate=options.learning_rate,
                            margin=options.margin)
    # The change moves towards the true class, so it should follow minus the contrastive map:
    # the gradient of (predicted minus true) logit, made by the saliency step.
    toward_true = -ctx.steps.saliency.maps(ctx, "gradient", positions, preds, contrast=labels,
                                            images=images, paired=True)
    agreement = agreement_of(found, toward_true)
    ok = found.success
    rows = np.arange(len(positions))
    examples = [{
        "index": int(pos), "true": names[labels[i]], "pred": names[preds[i]],
        "success": bool(ok[i]), "l2": float(found.l2[i]), "l1": float(found.l1[i]),
        "p_pred_before": float(found.probs_before[i, preds[i]]),
        "p_true_before": float(found.probs_before[i, labels[i]]),
        "p_pred_after": float(found.probs_after[i, preds[i]]),
        "p_true_after": float(found.probs_after[i, labels[i]]),
        "agreement": None if np.isnan(agreement[i]) else float(agreement[i]),
    } for i, pos in zip(rows, positions, strict=True)]
    count = len(positions)
    return _result(
        options,
        "For each mistake, the smallest change to the image (an "
        f"{options.penalty.upper()} penalty plus total variation, pixels kept in range) "
        "that makes the model predict the true class. Red adds brightness, blue removes "
        "it. The last map is the contrastive gradient (true minus predicted logit): where "
        "it matches the change, the saliency map explains the mistake.",
        {**_figures(found, agreement, count, options), "examples": examples},
        found, toward_true, int((~p.correct).sum()),
        [success_check(found, ctx.config.checks, options)] if count else [])


def label_figures(labels: np.ndarray, success: np.ndarray, found, names: list[str],
                  turn_on: np.ndarray) -> dict[str, dict]:
    """Per label with a wrong decision searched: how many, the share turned the right way,
    the mean size of the successful changes, and how many were missed labels (turned on)."""
    table = {}
    for k in np.unique(labels):
        rows = labels == k
        ok = success & rows
        table[names[k]] = {"count": int(rows.sum()), "success_rate": float(ok.sum() / rows.sum()),
                           "mean_l2": _mean(found.l2[ok]), "mean_l1": _mean(found.l1[ok]),
                           "turned_on": int((rows & turn_on).sum()),
                           "turned_off": int((rows & ~turn_on).sum())}
    return table


def label_examples(p, names, positions, labels, found, agreement) -> list[dict]:
    """One record per searched decision: the label, which way it had to go, the image's label
    sets, the label's probability before and after, the other labels whose decision the
    change also flipped, and the change's size and agreement with the label's gradient."""
    from auditor.methods import multilabel as ml

    cut = p.thresholds
    before = found.probs_before >= cut
    after = found.probs_after >= cut
    examples = []
    for i, (pos, k) in enumerate(zip(positions, labels, strict=True)):
        flipped = np.flatnonzero(before[i] != after[i])
        examples.append({
            "index": int(pos), "label": names[k],
            "change": "on" if p.labels[pos, k] else "off",
            "true": ml.label_set(p.labels[pos], names), "pred": ml.label_set(p.preds[pos], names),
            "success": bool(found.success[i]), "l2": float(found.l2[i]),
            "l1": float(found.l1[i]), "p_before": float(found.probs_before[i, k]),
            "p_after": float(found.probs_after[i, k]), "threshold": float(cut[k]),
            "others_flipped": [names[j] for j in flipped if j != k],
            "agreement": None if np.isnan(agreement[i]) else float(agreement[i])})
    return examples


def run_multilabel(ctx: Context, options: Options) -> SectionResult:
    """The smallest change that corrects one wrong decision of a multi-label model: a missed
    label turned on, a false alarm turned off, across its threshold (the spec's
    ``threshold``). Decisions are taken from every label in turn (``wrong_decisions``)."""
    from auditor.methods import multilabel as ml
    from auditor.methods.counterfactual import label_counterfactuals

    p, names = ctx.predictions, ctx.dataset.class_names
    positions, labels = ml.wrong_decisions(p.labels, p.probs, p.preds, p.thresholds,
                                           options.mistakes)
    images = ctx.dataset.images(positions)
    turn_on = p.labels[positions, labels] == 1
    cuts = np.log(p.thresholds) - np.log1p(-p.thresholds)
    found = label_counterfactuals(ctx.handle, images, labels, turn_on, cuts,
                                  penalty=options.penalty, weight=options.weight,
                                  tv_weight=options.tv_weight, steps=options.steps,
                                  learning_rate=options.learning_rate, margin=options.margin)
    # The change should follow the gradient of the label's logit, signed the way it must go.
    sign = np.where(turn_on, 1.0, -1.0).reshape(-1, 1, 1, 1).astype(np.float32)
    toward = sign * ctx.steps.saliency.maps(ctx, "gradient", positions, labels, images=images)
    agreement = agreement_of(found, toward)
    ok, count = found.success, len(positions)
    examples = label_examples(p, names, positions, labels, found, agreement)
    return _result(
        options,
        "For each wrong decision of a label (taken from every label in turn, most "
        "confident first): the smallest change to the image (an "
        f"{options.penalty.upper()} penalty plus total variation, pixels kept in range) "
        "that carries that label across its threshold the right way: a missed label "
        "turned on, a false alarm turned off. Red adds brightness, blue removes it. The "
        "last map is the gradient of the label's logit, signed the way it had to go: "
        "where it matches the change, the saliency map explains the mistake.",
        {**_figures(found, agreement, count, options), "multilabel": True,
         "labels": label_figures(labels, ok, found, names, turn_on), "examples": examples},
        found, toward, int((p.labels != p.preds).sum()),
        [success_check(found, ctx.config.checks, options, "wrong decisions",
                       "the other side of a threshold")] if count else [])
