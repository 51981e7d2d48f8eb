"""What the model sees, in parts: neuron groups at two layers, their attribution to classes, and
the mistakes explained by them (Olah et al., "The Building Blocks of Interpretability", 2018).

A thin section: the method is ``auditor.methods.concepts`` (also ``auditor.concepts``); this
module picks the images (a stratified sample the plan sizes, the most confident mistakes),
turns the result into summary.json keys and checks.

A multi-label model's labels are independent: each sampled image is explained once towards each
label it carries (an (image, label) pair, the gradient of that label's logit), so that the
concept bank, the groups' removal tests and the mistakes (a missed label against a false alarm)
are all per label."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from auditor.checks.check import Check
from auditor.checks.declared import EXPLANATION, Declared
from auditor.errors import ModelError
from auditor.methods.concepts.groups import DEFAULT_GROUPS
from auditor.predict.plan import Drop, Facts, Passes
from auditor.sections.base import Context, SectionResult, at_least

NAME = "concepts"
TITLE = "What the model sees, in parts"
MULTI_LABEL = True  # (image, present label) pairs, label logits (label_images)
# The groups should reconstruct more than half of the activations' sum of squares: a majority
# convention, not tuned on any model; below it, most of what the layer carries is in the
# residual, and the parts do not explain the decision. The spec may set its own bound.
RECONSTRUCTION = {"warn_below": 0.5}
# A group whose removal does not lower its class's score more than random directions is not
# what the model uses; one such group is worth a look, not a failure.
REMOVAL = {"warn_above": 0}
# Both are about the instrument (whether the parts can be believed), not about the model.
RECONSTRUCTED = Declared(f"{NAME}.reconstruction", EXPLANATION, bounds=RECONSTRUCTION,
                         what="share of the activations the neuron groups reconstruct")
REMOVED = Declared(f"{NAME}.removal", EXPLANATION, bounds=REMOVAL,
                   what="neuron groups whose removal moves the score no more than random")
CHECKS = (RECONSTRUCTED, REMOVED)


@dataclass
class Options:
    layers: list[str] = field(default_factory=list)  # empty: a middle and the last spatial one
    groups: int = DEFAULT_GROUPS  # K, the paper's choice
    sample: int = 200  # stratified audit images the groups are fitted on (planned)
    mistakes: int = 8  # most confident mistakes explained by parts
    top: int = 6  # top images and crops per group
    removal_images: int = 8  # per group, for its removal test (planned)
    random_directions: int = 8  # shuffled directions: the null the removal is held to
    survival_images: int = 32  # factorised again on the randomised copy (planned; 0: skip)
    dictionary_images: int = 3
    icon_steps: int = 128  # feature visualisation steps per group (planned; 0: none)

    def __post_init__(self):
        from auditor.methods.concepts.groups import check_groups

        check_groups(self.groups, f"{NAME}.groups")
        at_least(NAME, self, 2, "sample")
        at_least(NAME, self, 1, "top")
        at_least(NAME, self, 2, "random_directions")
        at_least(NAME, self, 0, "mistakes", "removal_images", "survival_images",
                 "dictionary_images", "icon_steps")


# The plan may lower these, never below: 30 images (three per class of a 10-class task) to fit
# on; 4 images per removal test (each direction's drop is a mean over them); 8 images for the
# randomised copy; 16 visualisation steps (a blurred but placed picture).
PLANNED = {"sample": 30, "removal_images": 4, "survival_images": 8, "icon_steps": 16}
# Given up when a named budget cannot hold the section at the floors (predict/plan.py): the
# icons (a render loop's trace) and the survival test (a copy of the model).
DROPS = (Drop("icon_steps", 0, "the neuron groups' icons"),
         Drop("survival_images", 0, "the groups' survival of weight randomisation"))
# Lowered below their floors, down to these, when a named budget cannot hold the floors on
# this model (predict/plan.py ``_thinned``; every check then says it was not measured): the
# groups are fitted on every position of each image's feature map, so 10 images still give
# the factorisation rows; 2 images still give each removal's drop a mean.
THIN = {"sample": 10, "removal_images": 2}


# One fit of scikit-learn's NMF (coordinate descent, at most 500 iterations), in reference
# kernels (plan.reference_kernel): 200, the mean of the twelve fits of bench/nmf_cost.py on the
# digits demo, MobileNetV3Small and DenseNet121 at 48 px (each model's two default layers on
# 200 images and on the survival test's 32 on the randomised copy; 6 December 2026), each fit's
# process CPU seconds against the kernel's CPU seconds: 15 to 590 kernels a fit, 587, 483 and
# 1,417 for each model's four; the mean, not the median, because the plan sums fits. Their
# iterations (22 to 500, a quarter of the fits stopping at 500) weigh more than the matrix's
# size (0.8 to 31 million cells of rows x channels x groups), so a fit is counted whole. The
# former 600, the median of eight fits on MobileNetV2 and ResNet50 timed in wall seconds under a
# load of 5 to 6, was three times their mean: under load this work slows more than the kernel
# does (the same twelve fits, wall seconds against the kernel's, at a load of 7 to 10: 1.0 to
# 2.9 times their kernels in CPU time).
NMF_FIT_KERNELS = 200


def model_facts(handle, options: Options, facts: Facts) -> Facts:
    """``Facts.concept_layers``: how many layers the section factorises in this model (left
    unknown when none applies: the section says why)."""
    from auditor.methods.concepts.layers import resolve_layers

    try:
        layers = resolve_layers(handle.logits_model, options.layers or None)
    except Exception:  # the section says why, in one line, when it runs
        return facts
    return dataclasses.replace(facts, concept_layers=len(layers))


def passes(options: Options, facts: Facts) -> Passes:
    """The sample and each mistake twice (predicted, true) forward-backward, every layer's
    activation and gradient from one pass and one trace. Per layer: each group's removal and
    random removals forward, in one call per group of their rows (``Passes.called``: a call's
    fixed cost once, when a call's rows are known), one trace (the network run on with a
    group removed). The randomised
    copy: the audit's working copy (made here unless the card made it), the survival images
    through the pass of every layer's activations and gradients, whose trace the copy shares
    (inputs/traces.py; one trace of its own when it is not the model's twin,
    ``Facts.twin_copy``). The icons: one forward-backward per group per step, one trace of a
    loop, each step a row of the loop (``Passes.looped``). The NMF fits off the model: one per
    layer on the sample, one more per layer with the survival test (NMF_FIT_KERNELS each).
    tests/test_plan_accounting.py counts the traces."""
    from auditor.steps.card import makes_card

    layers = facts.concept_layers or max(1, len(options.layers) or 2)
    sample = min(options.sample, facts.images)
    mistakes = min(options.mistakes, facts.wrong)
    per_group = (2 + options.random_directions) * options.removal_images  # one call's rows
    removal = options.groups * per_group
    calls = options.groups * (-(-per_group // facts.call_rows) if facts.call_rows else 0)
    per_layer = (Passes(called=removal, calls=calls, traces=1) if facts.call_rows
                 else Passes(forward=removal, traces=1))
    gradients = Passes(backward=sample + 2 * mistakes, traces=1)
    survival = (Passes(backward=options.survival_images, copies=int(not makes_card(facts)),
                       traces=0 if facts.twin_copy else 1)
                if options.survival_images else Passes())
    icons = (Passes(looped=options.icon_steps * options.groups * layers,
                    loop_steps=options.icon_steps, traces=1, loops=1)
             if options.icon_steps else Passes())
    fits = layers * (1 + bool(options.survival_images))  # the sample's, the randomised copy's
    return Passes(per_layer.forward * layers, traces=per_layer.traces * layers,
                  called=per_layer.called * layers, calls=per_layer.calls * layers,
                  kernels=NMF_FIT_KERNELS * fits) + gradients + survival + icons


def check_model(model, options: Options) -> None:
    """The named layers exist and are spatial: checked as soon as the model is loaded."""
    from auditor.methods.concepts.layers import check_layers

    check_layers(model, options.layers, f"{NAME}.layers")


@dataclass
class ConceptsData:
    """What the figures are drawn from."""

    layers: list  # methods.concepts.analysis.LayerConcepts
    class_names: list[str]
    shown: dict[int, np.ndarray]  # sample row -> image, for the rows the figures show
    shown_labels: dict[int, int]  # ... and its label
    mistakes: list[dict]  # index, true, pred, p_pred
    mistake_images: np.ndarray


def stratified(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Positions of about ``count`` images, the same number from each class where it can."""
    from auditor.methods.shortcuts.search import per_class_sample

    classes = max(len(np.unique(labels)), 1)
    return per_class_sample(labels, math.ceil(count / classes), seed)[:count] \
        if count < len(labels) else np.arange(len(labels))


def class_images(ctx: Context, options: Options):
    """A stratified sample explained towards each image's class, and the most confident
    mistakes (predicted against true class): (sample positions, Images, mistake rows)."""
    from auditor.methods.concepts.audit import Images
    from auditor.methods.topk import most_confident_mistakes

    p, names = ctx.predictions, ctx.dataset.class_names
    sample = np.sort(stratified(p.labels, options.sample, ctx.config.seed))
    wrong = most_confident_mistakes(p, options.mistakes)
    images = Images(ctx.dataset.images(sample), p.labels[sample],
                    ctx.dataset.images(wrong), p.preds[wrong], p.labels[wrong])
    probs = p.probs_at(wrong)
    mistakes = [{"index": int(pos), "true": names[p.labels[pos]], "pred": names[p.preds[pos]],
                 "p_pred": float(probs[i, p.preds[pos]])} for i, pos in enumerate(wrong)]
    return sample, images, mistakes


def label_pairs(labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """About ``count`` (image position, present label) pairs, the same number per label where
    it can, sorted by position: a multi-label image is explained once towards each label it
    carries; an image that carries none has no label to explain."""
    rng = np.random.default_rng(seed)
    per = math.ceil(count / max(labels.shape[1], 1))
    picked = [rng.permutation(np.flatnonzero(labels[:, k]))[:per] for k in range(labels.shape[1])]
    positions = np.concatenate(picked).astype(int)
    targets = np.concatenate([np.full(len(own), k) for k, own in enumerate(picked)]).astype(int)
    order = np.lexsort((targets, positions))
    return positions[order], targets[order]


def label_images(ctx: Context, options: Options):
    """A multi-label model's: (image, present label) pairs explained towards the label's logit,
    and the images with the most confident wrong decisions (``options.mistakes``, worst first),
    the false alarm in the place of the predicted class and the missed label in the true
    one's; an image with one kind of mistake only sets that label against nothing (-1)."""
    from auditor.methods.concepts.audit import Images
    from auditor.methods.multilabel import contrast_pairs, worst_mistakes

    p, names = ctx.predictions, ctx.dataset.class_names
    sample, targets = label_pairs(p.labels, options.sample, ctx.config.seed)
    wrong = worst_mistakes(p.labels, p.probs, p.preds, p.thresholds, options.mistakes)
    missed, alarm = contrast_pairs(p.labels[wrong], p.probs[wrong], p.preds[wrong])
    images = Images(ctx.dataset.images(sample), targets, ctx.dataset.images(wrong), alarm, missed,
                    distinct=np.unique(sample, return_index=True)[1])
    mistakes = [{"index": int(pos), "true": names[m] if m >= 0 else None,
                 "pred": names[a] if a >= 0 else None,
                 "p_pred": float(p.probs[pos, a]) if a >= 0 else None,
                 "p_true": float(p.probs[pos, m]) if m >= 0 else None}
                for pos, m, a in zip(wrong, missed, alarm, strict=True)]
    return sample, images, mistakes


def run(ctx: Context, options: Options) -> SectionResult:
    from auditor.methods.concepts.audit import Settings, analyse
    from auditor.methods.concepts.layers import resolve_layers

    names, multilabel = ctx.dataset.class_names, ctx.predictions.multilabel
    try:
        layers = resolve_layers(ctx.handle.logits_model, options.layers)
    except ModelError as exc:  # no spatial layer, or a graph that cannot be tapped
        return skipped(str(exc), ctx.config.checks)
    sample, images, mistakes = (label_images if multilabel else class_images)(ctx, options)
    settings = Settings(**{k: getattr(options, k) for k in (
        "groups", "top", "removal_images", "random_directions", "survival_images",
        "dictionary_images", "icon_steps")}, seed=ctx.config.seed)
    try:
        results = analyse(ctx.handle, layers, images, settings, ctx.handle.num_classes)
    except ModelError as exc:
        return skipped(str(exc), ctx.config.checks)
    rows = {int(r) for res in results for r in np.concatenate(
        [res.examples.rows.ravel(), res.dictionary_rows])}
    shown = {r: images.sample[r] for r in sorted(rows)}
    shown_labels = {r: int(images.labels[r]) for r in shown}
    summary = {"sample": len(np.unique(sample)), "groups": options.groups,
               "layers": [layer_summary(r, names) for r in results],
               "mistakes": [{**m, "layers": {r.layer: r.mistakes[i] for r in results}}
                            for i, m in enumerate(mistakes)]}
    if multilabel:
        summary.update(multilabel=True, pairs=len(sample))
    intro = (LABEL_INTRO if multilabel else INTRO).format(k=options.groups, n=len(sample))
    return SectionResult(
        name=NAME, title=TITLE, intro=intro,
        summary={NAME: _finite(summary)}, checks=checks(ctx.config.checks, results, names),
        data=ConceptsData(_without_estimators(results), names, shown, shown_labels, mistakes,
                          images.mistakes))


def _without_estimators(results: list) -> list:
    """The layers' results without their fitted NMF (scikit-learn's estimator, a mutable
    object that only the apply pass above needs): the figures read the components, and a
    section's data is read-only once it returned (SectionResult.frozen)."""
    return [dataclasses.replace(r, factors=dataclasses.replace(r.factors, nmf=None))
            for r in results]


def skipped(reason: str, spec: dict) -> SectionResult:
    """A model whose layers cannot be read (a SavedModel, a subclassed model): nothing is
    measured, which is neither a pass nor an accusation."""
    return SectionResult(
        name=NAME, title=TITLE, intro=f"Neuron groups could not be computed: {reason}",
        summary={NAME: {"sample": 0, "groups": 0, "layers": [], "mistakes": [],
                        "skipped": reason}},
        checks=[declared.outcome("skipped", None, checks=spec, section=NAME,
                                 threshold=declared.bounds,
                                 message=f"neuron groups not computed: {reason}")
                for declared in CHECKS])


INTRO = ("At each layer the activations of {n} audit images (a stratified sample) are "
         "factorised into {k} neuron groups (non-negative matrix factorisation): each group is a "
         "direction in the layer's channels (its picture: a feature visualisation), with a map "
         "of where it sits in each image. A group's contribution to a class is its direction "
         "times the gradient of the class's logit at the layer, summed over positions; with the "
         "residual the groups do not reconstruct it adds up to gradient x activation at that "
         "layer. Red raised the class's score, blue lowered it.")


LABEL_INTRO = ("At each layer the activations of {n} (image, label) pairs (each sampled image once "
               "per label it carries, about as many per label) are factorised into {k} neuron "
               "groups (non-negative matrix factorisation): each group is a direction in the "
               "layer's channels (its picture: a feature visualisation), with a map of where it "
               "sits in each image. A group's contribution to a label is its direction times the "
               "gradient of that label's logit at the layer, summed over positions; with the "
               "residual it adds up to gradient x activation at that layer. A group is real for "
               "the label it carries most when removing it lowers that label's logit on the "
               "label's images more than removing random directions of the same norm. The "
               "mistakes are the images with the most confident wrong decisions: which groups "
               "pushed towards the false alarm's logit over the missed label's (an image with "
               "only one of them: towards giving the false alarm, or towards leaving the missed "
               "label out). Red raised the score, blue lowered it.")


def layer_summary(result, names: list[str]) -> dict:
    """One layer's groups for summary.json."""
    from auditor.methods.concepts.faithful import SURVIVES_ABOVE

    f = result.factors
    groups = []
    for g in range(len(f.components)):
        removal = result.removal[g] if result.removal else None
        survival = None if result.survival is None else float(result.survival[g])
        groups.append({
            "group": g,
            "classes": [{"class": names[b["class"]], "importance": x["importance"],
                         "share": x["share"]}
                        for b in result.bank for x in b["groups"] if x["group"] == g],
            "real": None if removal is None else removal.real,
            "removal": None if removal is None else {
                "class": names[removal.target], "images": removal.images,
                "drop": removal.drop, "random_drop": removal.random_drop,
                "interval": [removal.low, removal.high]},
            "survival_correlation": survival,
            "survives_randomisation": None if survival is None else survival >= SURVIVES_ABOVE,
        })
    labels = [{"label": names[r.target], "group": r.group, "real": r.real, "images": r.images,
               "drop": r.drop, "random_drop": r.random_drop, "interval": [r.low, r.high]}
              for r in result.label_removal]
    return {**({"labels": labels} if labels else {}),
            "layer": result.layer, "reason": result.reason, "transform": f.transform_text,
            "grid": list(result.grid), "channels": int(f.directions.shape[1]),
            "reconstruction_error": f.error, "explained": f.explained,
            "residual_share": _residual_share(result), "groups": groups,
            "bank": [{"class": names[b["class"]], "images": b["images"],
                      "groups": [{"group": x["group"], "importance": x["importance"],
                                  "share": x["share"]} for x in b["groups"]]}
                     for b in result.bank]}


def _residual_share(result) -> float:
    """Mean |residual| over mean |total|: how much of the layer's attribution the groups miss."""
    total = np.abs(result.sample_contributions.sum(axis=1) + result.sample_residual).mean()
    return float(np.abs(result.sample_residual).mean() / total) if total > 0 else 0.0


def checks(spec: dict, results, names: list[str]) -> list[Check]:
    worst = min(results, key=lambda r: r.factors.explained)
    explained = "; ".join(f"{r.layer}: {r.factors.explained:.0%}" for r in results)
    out = [RECONSTRUCTED.judge(worst.factors.explained, checks=spec, section=NAME,
                               message=f"the neuron groups reconstruct {explained} of the "
                                       "activations' sum of squares")]
    tested = [(r.layer, m) for r in results for m in r.removal if m.real is not None]
    if not tested:
        why = next((r.removal_skipped for r in results if r.removal_skipped),
                   "too few images of its class")
        out.append(REMOVED.outcome("skipped", None, checks=spec, section=NAME, threshold=REMOVAL,
                                   message=f"no group could be tested by removal ({why})"))
        return out
    failing = [f"{layer} group {m.group}" for layer, m in tested if not m.real]
    listed = f" ({', '.join(failing[:8])})" if failing else ""
    per_label = [f"{r.layer} {names[m.target]}: group {m.group} "
                 + ("real" if m.real else "not shown real" if m.real is not None
                    else "not measurable") for r in results for m in r.label_removal]
    out.append(REMOVED.judge(len(failing), checks=spec, section=NAME,
                             message=f"{len(failing)} of {len(tested)} groups lower their "
                                     "class's score no more than random directions when "
                                     f"removed{listed}" + (
                                         "; per label, the group that carries it most: "
                                         + "; ".join(per_label) if per_label else "")))
    return out


def _finite(value):
    """NaN and infinities (a test on too few images) as null: summary.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
