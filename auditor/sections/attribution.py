"""Attribution methods side by side, and whether to trust them.

The methods explain the most confident mistakes; the sanity check (Adebayo et al. 2018) tests
that each method's maps depend on the model's weights; deletion and insertion curves (Petsiuk
et al. 2018) test that the pixels a method ranks first are the ones the prediction needs.

A multi-label model's maps are of label logits: the examples are its most confident wrong
decisions taken from every label in turn (``label_examples_section``), each explained for the
label it got wrong; the card explains each sampled image's most confident given label
(``steps/card.py``, ``explained``, which says why).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from auditor.checks.check import Check
from auditor.checks.declared import Declared, spec_bounds
from auditor.errors import AuditorError, ConfigError
from auditor.methods.attribution.reliability import BOUNDS as RELIABILITY_BOUNDS
from auditor.methods.topk import most_confident_mistakes
from auditor.predict.plan import Drop, Facts, Passes
from auditor.sections.base import (
    Context,
    KeyFigure,
    SectionResult,
    at_least,
    known_methods,
    one_of,
)
from auditor.steps import card as card_step
from auditor.steps.card import CARD_COLUMN, DEFAULT_METHODS, FAITHFULNESS, SANITY, compute_maps
from auditor.steps.shared import plain

NAME = "attribution"
TITLE = "Attribution methods"
MULTI_LABEL = True  # label logits: examples per label, the card on given labels
# The instruments' checks, declared with the card (steps/card.py): whether each method's maps
# can be believed on this model. They fill the reliability card and choose the methods, and are
# not part of the verdict unless gated.
# No silent blessing: a model check that warns when the card trusts no method at all, since
# every saliency map of the report then shows nothing that can be read.
TRUSTED = Declared("attribution.trusted", what="attribution methods the card trusts",
                   bounds={"warn_below": 1}, figure="trusted_methods")
CHECKS = (SANITY, FAITHFULNESS, CARD_COLUMN, TRUSTED)


def _card(summary: dict) -> dict | None:
    block = summary.get(NAME) or {}
    return block.get("reliability") if block.get("reliability") is not None else None


def _trusted(summary: dict) -> int | None:
    """The methods the card trusts; None without a card, or when it judged none (it ran below
    its floors: its cells not measured)."""
    from auditor.methods.attribution.reliability import unjudged

    card = _card(summary)
    if card is None or (card and all(unjudged(e) for e in card.values())):
        return None
    return sum(e["trusted"] for e in card.values())


def _trusted_text(summary: dict, count: int) -> str:
    used = summary[NAME].get("trusted_method")
    return f"{used} ({count} of {len(_card(summary))} trusted)" if used else (
        f"none of {len(_card(summary))} trusted")


def _trusted_detail(summary: dict) -> str:
    card = _card(summary)
    trusted = [m for m, e in card.items() if e["trusted"]]
    others = [m for m, e in card.items() if not e["trusted"]]
    lead = (f"the report uses {summary[NAME]['trusted_method']}; " if trusted else
            "no saliency map can be believed; ")
    return lead + (f"not trusted: {', '.join(others[:4])}" + (" …" if len(others) > 4 else "")
                   if others else "every method trusted")


KEY_FIGURES = (KeyFigure(
    "trusted_methods", "Explanations", "attribution methods the reliability card trusts", NAME,
    _trusted, text=_trusted_text, detail=_trusted_detail, trend=False, rank=50),)


@dataclass
class Options:
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    score: str = "logit"  # logit, softmax or log_softmax
    examples: int = 4  # most confident mistakes explained side by side
    sanity_samples: int = 8
    sanity_stages: int = 5  # cascade stages measured, spread from the top layer to the first
    faithfulness_samples: int = 32
    faithfulness_steps: int = 16
    reference_method: str = "gradient"  # the method the faithfulness check holds against random
    compare_layers: int = 3  # deepest stage-ending layers explained (gradient x activation)
    # The card's input-invariance column: a shifted copy of the model, whose first layer pads
    # with the shifted background, so every method's pass is traced again on it
    input_invariance: bool = True
    display_smoothing: float = 0.0  # Gaussian sigma in pixels for shown maps only; 0 = raw
    method_options: dict = field(default_factory=dict)  # e.g. {smoothgrad = {samples = 32}}

    def __post_init__(self):
        from auditor.methods.attribution.registry import SCORES, method_entry

        known_methods(NAME, "methods", self.methods)
        known_methods(NAME, "reference_method", self.reference_method)
        one_of(NAME, "score", self.score, SCORES)
        at_least(NAME, self, 0, "examples", "compare_layers", "display_smoothing")
        at_least(NAME, self, 1, "sanity_samples", "sanity_stages", "faithfulness_samples",
                 "faithfulness_steps")
        for method, given in self.method_options.items():
            known_methods(NAME, "method_options", method)
            try:
                method_entry(method, given if isinstance(given, dict) else {})
            except AuditorError as exc:
                raise ConfigError(f"'{NAME}.method_options.{method}': {exc}") from None


# The compute plan (auditor.predict.plan) may lower these, never below the floor: 4 samples
# still give a rank correlation per method and stage, and 2 stages the top layer and all layers
# randomised; 8 samples and 8 steps a deletion curve. The methods' own options are planned
# too, as each method declares them in the registry (``Method.planned``).
PLANNED = {"sanity_samples": 4, "sanity_stages": 2, "faithfulness_samples": 8,
           "faithfulness_steps": 8}
# Lowered below their floors, down to these, when a named budget cannot hold the floors on
# this model (predict/plan.py ``_thinned``): the card's values are still shown, but no cell is
# judged (each is skipped, not measured: steps/card.py), so no method is trusted and the
# sections taking their method from the card take their default. 2 images still give a rank
# correlation per method and stage; 4 images and 4 steps a deletion and an insertion curve of
# 5 points; 4 noisy samples and 4 integration steps a map. The two stages (the top layer and
# every layer randomised) stay: the check reads the last.
THIN = {"sanity_samples": 2, "faithfulness_samples": 4, "faithfulness_steps": 4,
        "smoothgrad.samples": 4, "integrated_gradients.steps": 4}
# Given up when a named budget cannot hold the section and the card at the floors
# (predict/plan.py): the layers' maps; the card's input-invariance column (a copy of the model
# and a trace of every method's pass on it: the card's dearest fixed cost after the model's
# own traces, while randomisation and faithfulness, which decide what is trusted, stay); then
# the card's methods with a compiled pass of their own (each traced on the model and the
# shifted copy), the dearest first.
DROPS = (Drop("compare_layers", 0, "the layers' maps"),
         Drop("input_invariance", False, "the card's input-invariance column"),
         Drop("methods", lambda options: _without(options.methods, "lrp"), "LRP on the card"),
         Drop("methods", lambda options: _without(options.methods, "occlusion"),
              "occlusion on the card"),
         Drop("methods", lambda options: _without(options.methods, "gradcam", "gradcam_pp"),
              "Grad-CAM and Grad-CAM++ on the card"))


def informs(options: Options, facts: Facts) -> Facts:
    """The card's methods are this section's, as the plan chose them (a drop leaves some out)
    and as apply to the model: the sections taking their method from the card count its
    traces by them."""
    from auditor.methods.attribution.registry import that_apply

    return dataclasses.replace(facts, card_methods=tuple(that_apply(options.methods,
                                                                    facts.attention)),
                               card_score=options.score)


def model_facts(handle, options: Options, facts: Facts) -> Facts:
    """``Facts.cam_layers``: how many layers Grad-CAM and Grad-CAM++ read on this model
    (Grad-CAM++ takes the last rectified one, which may come before Grad-CAM's): each is a
    trace of the layer gradient."""
    from auditor.methods.attribution.layer import method_layers

    try:
        named = method_layers(handle, options.methods, options.method_options)
    except Exception:  # the methods say why, in one line, when the card runs them
        return facts
    layers = {at["layer"] for at in named.values() if at["layer"]}
    return dataclasses.replace(facts, cam_layers=len(layers) or None)


def _without(methods: list[str], *left_out: str) -> list[str]:
    """``methods`` without ``left_out``, never none: the card needs one."""
    kept = [m for m in methods if m not in left_out]
    return kept or methods[:1]


def planned(facts: Facts, options: Options) -> dict:
    """PLANNED, and the planned options of the methods the section runs, for this input."""
    from auditor.methods.attribution.registry import planned_bounds

    return PLANNED | planned_bounds(options.methods, facts.input_shape)


def resolve(options: Options, facts: Facts) -> Options:
    """The options with each planned method option's default written out (the occlusion
    patch's 0 as the side it stands for), so that the plan can scale it."""
    from auditor.methods.attribution.registry import planned_written

    return dataclasses.replace(options, method_options=planned_written(
        options.methods, options.method_options, facts.input_shape))


# The reliability card is a step the pipeline runs before the sections, configured by this
# section's options; the plan charges its passes to it.
STEPS = (card_step.NAME,)
STEP = (card_step.NAME, card_step.passes)


def passes(options: Options, facts: Facts) -> Passes:
    """Every method and layer on the examples; the card is the step's (steps/card.py)."""
    from auditor.methods.attribution.registry import attribution_rows, that_apply

    examples = min(options.examples, facts.wrong)
    forward, backward = attribution_rows(that_apply(options.methods, facts.attention), examples,
                                         facts.input_shape, options.method_options)
    return (Passes(forward=forward, backward=backward)
            + Passes(backward=examples * options.compare_layers, traces=options.compare_layers))


@dataclass
class AttributionData:
    """What the figures are drawn from: the mistakes' maps per method and per layer, the
    sanity cascade and the faithfulness curves."""

    signed: dict[str, bool]  # method -> its maps carry a sign (else importance from zero)
    display_smoothing: float
    smoothing: str  # the sentence saying whether shown maps are smoothed
    sanity: dict  # rows, samples, result (the cascade's SanityResult)
    faithfulness: dict  # rows, samples, steps, curves, completeness, unavailable
    reliability: dict = field(default_factory=dict)  # the card (shared, completed later)
    invariance_reason: str | None = None  # why input invariance was not measured
    unmeasured: str | None = None  # why no cell of the card is judged (below its floors)
    reliability_bounds: dict = field(default_factory=dict)  # column -> its default bounds
    examples: list[dict] = field(default_factory=list)
    images: np.ndarray | None = None
    maps: dict = field(default_factory=dict)  # method -> maps of the examples
    boxes: list = field(default_factory=list)
    row_labels: list[str] = field(default_factory=list)
    layer_heats: list = field(default_factory=list)  # per layer (N, H, W), at image size
    layer_shapes: list = field(default_factory=list)  # per layer (name, its map's (h, w))
    layer_names: list[str] = field(default_factory=list)


def layer_maps(handle, images, targets, count: int, score: str):
    """Gradient x activation of the deepest ``count`` stage-ending layers, channels summed and
    enlarged to the image (nearest neighbour): where in each layer the evidence for the class
    sits. Returns the maps, one (N, H, W) array per layer, and (name, layer map size) pairs."""
    from auditor.inputs.layers import stage_ends
    from auditor.methods.attribution import attribute_layer

    names = stage_ends(handle.logits_model)[-count:] if count > 0 else []
    if not names or len(images) == 0:
        return [], [], names
    height, width = handle.input_shape[:2]
    heats, shapes = [], []
    for name in names:
        heat = attribute_layer(handle, images, targets, layer=name, score=score).sum(axis=-1)
        shapes.append((name, heat.shape[1:3]))
        rows = np.arange(height) * heat.shape[1] // height
        cols = np.arange(width) * heat.shape[2] // width
        heats.append(heat[:, rows][:, :, cols])
    return heats, shapes, names


def examples_section(ctx, options, methods, data: AttributionData):
    """The most confident mistakes explained by each method, with a saliency box each and the
    layers' maps, into ``data``; returns the examples and the method the boxes come from."""
    from auditor.methods.attribution.localisation import saliency_box

    p, names = ctx.predictions, ctx.dataset.class_names
    positions = most_confident_mistakes(p, options.examples)
    if len(positions) == 0:
        return [], None
    images = ctx.dataset.images(positions)
    preds, labels = p.preds[positions], p.labels[positions]
    def maps_of(method, method_options):  # the saliency step's where it made them
        return ctx.steps.saliency.maps(ctx, method, positions, preds, images=images,
                                        score=options.score, options=method_options)

    maps, _ = compute_maps(ctx.handle, images, preds, methods, options.score,
                           options.method_options, maps_of)
    box_source = "saliency" if "saliency" in maps else next(iter(maps), None)
    boxes = [saliency_box(images[i], maps[box_source][i]) if box_source else None
             for i in range(len(positions))]
    examples = [{"index": int(pos), "true": names[labels[i]], "pred": names[preds[i]],
                 "confidence": float(p.confidence[pos]),
                 "box": list(boxes[i]) if boxes[i] else None}
                for i, pos in enumerate(positions)]
    data.examples, data.images, data.maps, data.boxes = examples, images, maps, boxes
    data.row_labels = [f"#{e['index']}: {e['true']} → {e['pred']} ({e['confidence']:.2f})"
                       for e in examples]
    data.layer_heats, data.layer_shapes, data.layer_names = layer_maps(
        ctx.handle, images, preds, options.compare_layers, options.score)
    return examples, box_source


LABEL_INTRO = ("Each method's map of a label's logit on the most confident wrong decisions, "
               "taken from every label in turn (a missed label: why the model did not give "
               "it; a false alarm: why it did): ")
CARD_TARGETS = ("each sampled image given at least one label, explained for its most confident "
                "given label's logit (deletion and insertion follow that label's sigmoid)")


def check_task(task: str, options: Options) -> None:
    """A multi-label model's maps are of label logits: a softmax over independent labels
    means nothing, so another ``score`` is refused before any work."""
    from auditor.inputs.models import MULTI_LABEL as TASK

    if task == TASK and options.score != "logit":
        raise ConfigError(f"'{NAME}.score' is '{options.score}', but the model is multi-label: "
                          "its labels are independent sigmoids, explained through their logits; "
                          f"drop '{NAME}.score' or set it to 'logit'")


def label_examples_section(ctx, options, methods, data: AttributionData):
    """A multi-label model's ``examples_section``: its most confident wrong decisions, taken
    from every label in turn (``multilabel.wrong_decisions``), each explained by every method
    for the logit of the label it got wrong."""
    from auditor.methods import multilabel as ml
    from auditor.methods.attribution.localisation import saliency_box

    p, names = ctx.predictions, ctx.dataset.class_names
    positions, labels = ml.wrong_decisions(p.labels, p.probs, p.preds, p.thresholds,
                                           options.examples)
    if len(positions) == 0:
        return [], None
    images = ctx.dataset.images(positions)

    def maps_of(method, method_options):  # made for this section (the step has none)
        return ctx.steps.saliency.maps(ctx, method, positions, labels, images=images,
                                        score="logit", options=method_options)

    maps, _ = compute_maps(ctx.handle, images, labels, methods, "logit",
                           options.method_options, maps_of)
    box_source = "saliency" if "saliency" in maps else next(iter(maps), None)
    boxes = [saliency_box(images[i], maps[box_source][i]) if box_source else None
             for i in range(len(positions))]
    probs = p.probs_at(positions)
    examples = [{"index": int(pos), "label": names[k],
                 "mistake": "missed" if p.labels[pos, k] else "false_alarm",
                 "true": "|".join(ml.label_set(p.labels[pos], names)),
                 "pred": "|".join(ml.label_set(p.preds[pos], names)),
                 "confidence": float(probs[i, k]), "box": list(boxes[i]) if boxes[i] else None}
                for i, (pos, k) in enumerate(zip(positions, labels, strict=True))]
    data.examples, data.images, data.maps, data.boxes = examples, images, maps, boxes
    data.row_labels = [f"#{e['index']}: {e['label']} "
                       f"{'missed' if e['mistake'] == 'missed' else 'false alarm'} "
                       f"(p={e['confidence']:.2f})" for e in examples]
    data.layer_heats, data.layer_shapes, data.layer_names = layer_maps(
        ctx.handle, images, labels, options.compare_layers, "logit")
    return examples, box_source


def run(ctx: Context, options: Options) -> SectionResult:
    """The card (made before the sections by steps/card.py) and every method on the most
    confident mistakes."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.layer import method_layers
    from auditor.methods.attribution.reliability import best_trusted

    made = ctx.steps.card
    if not isinstance(made, card_step.ReliabilityCard):  # a failure is this section's
        raise RuntimeError("the reliability card could not be made: "
                           + (made.error if made else "not run"))
    made = plain(made)  # this section's own copy of the shared card, for its summary
    options, methods, card = made.options, made.methods, made.card
    skipped = [SANITY.outcome("skipped", None, checks=ctx.config.checks, name=m, section=NAME,
                              message=f"{m}: {why}") for m, why in made.unavailable.items()]
    smoothing = (f"Maps are smoothed for display (Gaussian, sigma {options.display_smoothing:g} "
                 "px); the tables use raw maps." if options.display_smoothing > 0
                 else "Maps are shown raw, not smoothed.")
    data = AttributionData(signed={m: METHODS[m].signed for m in methods},
                           display_smoothing=options.display_smoothing, smoothing=smoothing,
                           sanity=made.sanity_data, faithfulness=made.faithfulness_data,
                           reliability=card, invariance_reason=made.invariance_reason,
                           unmeasured=made.unmeasured,
                           reliability_bounds=RELIABILITY_BOUNDS)
    multilabel = ctx.predictions.multilabel
    examples, box_source = (label_examples_section if multilabel else examples_section)(
        ctx, options, methods, data)
    complete = made.completeness
    summary = {NAME: {
        "methods": methods, "score": options.score, "unavailable": made.unavailable,
        "examples": [{k: e[k] for k in ("index", "true", "pred", "confidence", "box", "label",
                                        "mistake") if k in e} for e in examples],
        "compared_layers": data.layer_names, "sanity_stages": made.stages,
        "sanity": made.sanity, "faithfulness": made.faithfulness,
        "completeness_error": complete["error"] if complete else None,
        "completeness_gap": complete["gap"] if complete else None,
        "completeness_measured": complete["measured"] if complete else None,
        "samples": {"sanity": made.sanity_data["samples"],
                    "faithfulness": made.faithfulness_data["samples"]},
        "reliability": card, "trusted_method": best_trusted(card),
        "used_by": {}, "reliability_bounds": RELIABILITY_BOUNDS,
        **({"multilabel": True, "card_targets": CARD_TARGETS} if multilabel else {}),
        "cam_layers": method_layers(ctx.handle, methods, options.method_options),
    }}
    return SectionResult(
        name=NAME, title=TITLE,
        intro=((LABEL_INTRO if multilabel else "Each method's map of the predicted class's "
                f"{options.score} on the most confident mistakes: ") + "red raises the score, blue "
               "lowers it; unsigned methods (saliency, Grad-CAM) show importance from dark to "
               "bright. The box is a GrabCut localisation seeded by the "
               f"{box_source or 'saliency'} map. Below, whether to trust each method: its maps "
               "must change when the model's weights are randomised, and removing its top "
               "pixels first must hurt the prediction more than a random order"
               + (f" (the card explains {CARD_TARGETS})" if multilabel else "")
               + f". {smoothing}"),
        summary=summary, data=data,
        checks=[*made.sanity_checks, *skipped, *made.faithfulness_checks,
                trusted_check(ctx, card)],
    )


def trusted_check(ctx: Context, card: dict) -> Check:
    """Pass while the card trusts a method (naming the one the report uses); warn, naming why
    each method fails, when it trusts none."""
    from auditor.methods.attribution.reliability import (
        trusted_ranking,
        unjudged,
        why_untrusted,
    )

    ranked = trusted_ranking(card)
    if not ranked and card and all(unjudged(e) for e in card.values()):
        return TRUSTED.outcome(
            "skipped", None, checks=ctx.config.checks, section=NAME, threshold=TRUSTED.bounds,
            message=f"attribution methods the card trusts: "
                    f"{unjudged(next(iter(card.values())))}")
    if ranked:
        return TRUSTED.outcome(
            "pass", len(ranked), checks=ctx.config.checks, section=NAME,
            threshold=TRUSTED.bounds,
            message=f"{len(ranked)} of {len(card)} attribution methods trusted on this model "
                    f"({', '.join(ranked)}); sections that name no method use {ranked[0]}")
    why = "; ".join(f"{m}: {why_untrusted(card, m)}" for m in card) or "no method could run"
    return TRUSTED.outcome(
        "warn", 0, checks=ctx.config.checks, section=NAME, threshold=TRUSTED.bounds,
        message="no attribution method is trusted on this model, so its saliency maps, the "
                "contrastive maps and the shortcut discovery are not measurable "
                f"({why})")


def join(result: SectionResult, results: list, checks: dict) -> SectionResult:
    """After every section ran, a new result whose card has the Clever Hans injection's
    shortcut and control masses (measured after this section ran) and whose ``used_by`` says
    which method each section took from the card (``SectionResult.method_choice``)."""

    from auditor.methods.attribution.reliability import add_shortcut_columns, best_trusted
    from auditor.methods.shortcuts.injection import CONTROL

    block = plain(result.summary[NAME])  # a copy to complete: the result is read-only
    block["used_by"] = {r.name: r.method_choice.to_summary() for r in results
                        if r.method_choice is not None}
    injection = next((r.summary.get("clever_hans", {}).get("injection") for r in results
                      if r.name == "clever_hans" and r.error is None), None)
    if injection:
        card = block["reliability"]
        add_shortcut_columns(card, injection, CONTROL,
                             lambda column: spec_bounds(checks, CARD_COLUMN.check_id(column)))
        block["reliability"], block["trusted_method"] = card, best_trusted(card)
        result = dataclasses.replace(result, data=dataclasses.replace(result.data,
                                                                      reliability=card))
    return dataclasses.replace(result, summary={**result.summary, NAME: block})
