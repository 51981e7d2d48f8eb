"""Attribution methods side by side, and whether to trust them.

The methods explain the most confident mistakes; the sanity check (Adebayo et al. 2018) tests
that each method's maps depend on the model's weights; deletion and insertion curves (Petsiuk
et al. 2018) test that the pixels a method ranks first are the ones the prediction needs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from auditor.checks.check import Check, evaluate, judged, worst_status
from auditor.errors import AuditorError, ConfigError
from auditor.methods.attribution.reliability import BOUNDS as RELIABILITY_BOUNDS
from auditor.methods.attribution.reliability import RANDOMISATION_BOUNDS
from auditor.predict.plan import Coarsest, Facts, Passes
from auditor.sections.base import (
    Context,
    KeyFigure,
    SectionResult,
    at_least,
    known_methods,
    one_of,
)
from auditor.sections.performance import most_confident_mistakes

NAME = "attribution"
TITLE = "Attribution methods"
CHECKS = ("attribution.faithfulness", "attribution.sanity.*")
DEFAULT_METHODS = ["gradient", "saliency", "gradient_x_input", "smoothgrad",
                   "integrated_gradients", "gradcam", "gradcam_pp", "occlusion", "lrp"]
REFERENCES = 16  # audit images gradient_shap draws its references from
# Rank correlation with the original maps once every layer is random: bounds from Adebayo et
# al. 2018 (see methods/attribution/reliability.py). Maps multiplied by the input keep its
# outline (about 0.85 on the digits) and fail: on such a model they mostly show the input.
SANITY_DEFAULTS = RANDOMISATION_BOUNDS
FAITHFULNESS_DEFAULTS = {"warn_below": 0.0}
RELIABILITY = "attribution.reliability"  # ctx.cache key of the card


def _sanity(summary: dict) -> dict[str, bool] | None:
    """{method: passed} of the weight-randomisation check; None when it did not run."""
    block = (summary.get(NAME) or {}).get("sanity")
    return None if not block else {m: r["passed"] for m, r in block.items()}


def _sanity_passed(summary: dict) -> int | None:
    verdicts = _sanity(summary)
    return None if verdicts is None else sum(verdicts.values())


def _sanity_detail(summary: dict) -> str:
    failed = [method for method, ok in _sanity(summary).items() if not ok]
    if not failed:
        return "every method depends on the weights"
    return f"ignore the weights: {', '.join(failed[:4])}" + (" …" if len(failed) > 4 else "")


def _sanity_status(summary: dict, status: str) -> str:
    """The sanity checks' worst status (not the faithfulness check's)."""
    checks = [c for c in summary["checks"] if c["id"].startswith(f"{NAME}.sanity.")]
    return worst_status(judged(checks)) or ("pass" if all(_sanity(summary).values()) else "warn")


KEY_FIGURES = (KeyFigure(
    "sanity_passed", "Saliency sanity", "methods passing the saliency sanity check", NAME,
    _sanity_passed, text=lambda summary, passed: f"{passed} of {len(_sanity(summary))}",
    detail=_sanity_detail, status=_sanity_status, trend=False, rank=50),)


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
# randomised; 8 samples and 8 steps a deletion curve. The methods' own costs are planned too:
# 8 path steps of Integrated Gradients (the completeness error the section reports shows what a
# coarse path costs; Sundararajan et al. 2017 find 20 to 300 steps within 5%), 8 noisy copies
# of SmoothGrad, SquareGrad and VarGrad and 8 GradientSHAP draws (Smilkov et al. 2017: the
# maps sharpen up to about 50, and 8 already average out most of the noise), 256 RISE masks
# (Petsiuk et al. 2018 use 4,000-8,000; fewer leave grid noise, visible in the figure), and an
# occlusion patch of at most a quarter of the image's side (a 7 x 7 grid of half-overlapping
# patches still says which part of the image the score needs).
PLANNED = {"sanity_samples": 4, "sanity_stages": 2, "faithfulness_samples": 8,
           "faithfulness_steps": 8, "integrated_gradients.steps": 8, "smoothgrad.samples": 8,
           "squaregrad.samples": 8, "vargrad.samples": 8, "gradient_shap.samples": 8,
           "rise.masks": 256}


def planned(facts: Facts) -> dict:
    """PLANNED, and the occlusion patch's largest side for this input."""
    return PLANNED | {"occlusion.patch": Coarsest(max(2, min(facts.input_shape[:2]) // 4))}


def resolve(options: Options, facts: Facts) -> Options:
    """The options with each planned method option's default written out (the occlusion
    patch's 0 as the side it stands for), so that the plan can scale it."""
    from auditor.methods.attribution.occlusion import patch_geometry
    from auditor.methods.attribution.registry import METHODS

    method_options = {m: dict(v) for m, v in options.method_options.items()}
    for key in planned(facts):
        method, _, option = key.partition(".")
        if option and method in options.methods and method in METHODS:
            given = method_options.setdefault(method, {})
            given.setdefault(option, METHODS[method].options[option][0])
    if "occlusion" in method_options and "patch" in method_options["occlusion"]:
        patch = method_options["occlusion"]["patch"]
        method_options["occlusion"]["patch"] = patch_geometry((1, *facts.input_shape), patch, 1)[0]
    return dataclasses.replace(options, method_options=method_options)


def _explain(options: Options, facts: Facts, count: int, times: int = 1) -> Passes:
    from auditor.methods.attribution.registry import attribution_rows

    forward, backward = attribution_rows(options.methods, count, facts.input_shape,
                                         options.method_options)
    return Passes(forward=forward * times, backward=backward * times)


def passes(options: Options, facts: Facts) -> Passes:
    """The reliability card (``shared``) and every method and layer on the examples."""
    examples = min(options.examples, facts.wrong)
    return (shared(options, facts) + _explain(options, facts, examples)
            + Passes(backward=examples * options.compare_layers, traces=options.compare_layers))


def shared(options: Options, facts: Facts) -> Passes:
    """The reliability card, made by the first section that needs it (SHARED_BY): every method
    on the sanity samples for the original and at each randomisation stage, twice more for
    input invariance (the model and its shifted copy, counted whenever the copy can be made,
    which methods/attribution/shifted.py does for most models), and on the faithfulness
    samples, whose deletion and insertion curves (for each method and a random map) and
    Integrated Gradients' completeness are forward passes. Each method is traced on the model,
    on the randomised copy and on the shifted copy."""
    samples = min(options.faithfulness_samples, facts.images)
    curves = (len(options.methods) + 1) * samples * 2 * (options.faithfulness_steps + 1)
    completeness = 2 * samples * ("integrated_gradients" in options.methods)
    sanity = min(options.sanity_samples, facts.images)
    check = 3 * sanity  # the shifted copy's logits checked against the model's
    return (_explain(options, facts, samples)
            + Passes(forward=curves + completeness + check, traces=3 * len(options.methods) + 2)
            + _explain(options, facts, sanity, options.sanity_stages + 1 + 2))


# The sections that ask for the card (trusted_method) when their spec names no method: the
# first of them in the run's order makes it, so the plan charges the card's time to that one.
SHARED_BY = {"contrastive": lambda options: options.method is None,
             "clever_hans": lambda options: options.discovery and options.discovery_method is None}


def card_candidates(config, sections) -> tuple[str, ...]:
    """The methods this run's card chooses from (``Facts.card_methods``): attribution.methods,
    or none when ``sections`` leave the attribution section out (trusted_method then gives
    the caller's fallback)."""
    if NAME not in sections:
        return ()
    return tuple(config.section_options.get(NAME, {}).get("methods", DEFAULT_METHODS))


def passes_per_map(method: str, shape: tuple) -> float:
    """Passes one map of ``method`` costs on an image of ``shape``, at the method's default
    options (those a section taking the card's method runs it with)."""
    from auditor.methods.attribution.registry import attribution_rows

    forward, backward = attribution_rows([method], 1, shape)
    return Passes(forward=forward, backward=backward).total


def card_map_cost(facts: Facts, fallback: str) -> int:
    """The default allowance per map of a section taking the card's method: what the dearest
    method the card may choose (or the fallback) costs here, so that unplanned, whichever the
    card trusts most is used."""
    methods = (*_candidates(facts), fallback)
    return math.ceil(max(passes_per_map(m, facts.input_shape) for m in methods))


def affordable(facts: Facts, max_cost: float | None, fallback: str) -> list[str]:
    """The methods a section taking the card's choice within ``max_cost`` passes per map (None:
    any) may run: the card's methods that fit, and the fallback. Its plan counts the dearest."""
    return [m for m in _candidates(facts) if _fits(m, facts.input_shape, max_cost)] + [fallback]


def _fits(method: str, shape: tuple, max_cost: float | None) -> bool:
    return max_cost is None or passes_per_map(method, shape) <= max_cost


def _candidates(facts: Facts) -> tuple[str, ...]:
    return tuple(DEFAULT_METHODS) if facts.card_methods is None else facts.card_methods


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
    reliability_bounds: dict = field(default_factory=dict)  # column -> its default bounds
    examples: list[dict] = field(default_factory=list)
    images: np.ndarray | None = None
    maps: dict = field(default_factory=dict)  # method -> maps of the examples
    boxes: list = field(default_factory=list)
    row_labels: list[str] = field(default_factory=list)
    layer_heats: list = field(default_factory=list)  # per layer (N, H, W), at image size
    layer_shapes: list = field(default_factory=list)  # per layer (name, its map's (h, w))
    layer_names: list[str] = field(default_factory=list)


def sample_positions(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def compute_maps(handle, x, targets, methods, score, method_options, ctx=None, positions=None):
    """Maps of every method that applies to this model, and the reason for each that does not
    (e.g. Grad-CAM on a model without convolutions). With the run's ``ctx`` and the images'
    ``positions``, maps are shared with the other sections through ``ctx.saliency``."""
    from auditor.methods.attribution import attribute

    maps, unavailable = {}, {}
    for method in methods:
        options = method_options.get(method, {})
        try:
            maps[method] = (attribute(handle, x, targets, method, score=score, **options)
                            if ctx is None else
                            ctx.saliency(method, positions, targets, images=x, score=score,
                                         options=options))
        except AuditorError as exc:
            unavailable[method] = str(exc)
    return maps, unavailable


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


def sanity_section(ctx, options, methods):
    from auditor.methods.attribution.reliability import RANDOMISED
    from auditor.methods.attribution.sanity import cascading_randomisation

    p = ctx.predictions
    positions = sample_positions(len(p.labels), options.sanity_samples, ctx.config.seed + 1)
    result = cascading_randomisation(
        ctx.handle, ctx.dataset.images(positions), p.preds[positions], methods,
        max_stages=options.sanity_stages, seed=ctx.config.seed, score=options.score,
        method_options=options.method_options)
    checks, rows, summary = [], [], {}
    for method in methods:
        correlation, similarity = result.final(method)
        check = evaluate(f"attribution.sanity.{method}", correlation, section=NAME,
                         message=f"{method}: rank correlation of its maps with the original "
                                 "ones once every layer is randomised",
                         defaults=SANITY_DEFAULTS,
                         spec=ctx.thresholds(f"attribution.sanity.{method}"))
        if result.degenerate[method]:  # dead maps on the random copy alone: not an error
            on_copy = result.degenerate[method].startswith(RANDOMISED)
            check = dataclasses.replace(
                check, status="skipped" if on_copy else "error",
                message=f"{method}: not measurable, {result.degenerate[method]}")
        checks.append(check)
        rows.append({"method": method, "rank_correlation": correlation, "ssim": similarity,
                     "status": check.status})
        summary[method] = {"rank_correlation": result.rank_correlation[method],
                           "ssim": result.ssim[method], "final_rank_correlation": correlation,
                           "final_ssim": similarity, "status": check.status,
                           "passed": check.status == "pass"}
    return summary, {"rows": rows, "samples": len(positions), "result": result}, checks, \
        result.stages


def faithfulness_section(ctx, options, methods):
    from auditor.methods.attribution.faithfulness import deletion_insertion, random_maps
    from auditor.methods.attribution.integrated_gradients import completeness
    from auditor.methods.attribution.reliability import degenerate_reason

    p = ctx.predictions
    positions = sample_positions(len(p.labels), options.faithfulness_samples, ctx.config.seed)
    x, targets = ctx.dataset.images(positions), p.preds[positions]
    maps, unavailable = compute_maps(ctx.handle, x, targets, methods, options.score,
                                     options.method_options, ctx, positions)
    maps["random"] = random_maps(x, ctx.config.seed)
    curves = {m: deletion_insertion(ctx.handle, x, targets, a, steps=options.faithfulness_steps,
                                    seed=ctx.config.seed) for m, a in maps.items()}
    summary = {m: {"deletion_auc": c.deletion_auc, "insertion_auc": c.insertion_auc,
                   "score": c.score} for m, c in curves.items()}
    degenerate = {m: degenerate_reason(a) for m, a in maps.items() if m != "random"}
    complete = None
    if "integrated_gradients" in maps:
        ig = options.method_options.get("integrated_gradients", {})
        errors, gaps = completeness(
            ctx.handle, x, targets, maps["integrated_gradients"], score=options.score,
            **{k: v for k, v in ig.items() if k in ("baseline", "blur_sigma")})
        measured = np.isfinite(errors)
        complete = {"error": float(errors[measured].mean()) if measured.any() else None,
                    "gap": float(np.abs(gaps).mean()), "measured": int(measured.sum()),
                    "samples": len(errors)}
    reference = options.reference_method if options.reference_method in curves else None
    margin = curves[reference].score - curves["random"].score if reference else None
    check = evaluate("attribution.faithfulness", margin, section=NAME,
                     message=f"{reference}: insertion minus deletion area, above a random map's",
                     defaults=FAITHFULNESS_DEFAULTS,
                     spec=ctx.thresholds("attribution.faithfulness"))
    if reference and degenerate.get(reference):
        check = dataclasses.replace(
            check, status="error", message=f"{reference}: not measurable, {degenerate[reference]}")
    margins = {m: c.score - curves["random"].score for m, c in curves.items() if m != "random"}
    data = {"rows": [{"method": m, **summary[m]} for m in curves], "samples": len(positions),
            "steps": options.faithfulness_steps, "curves": curves,
            "completeness": complete, "unavailable": unavailable,
            "margins": margins, "degenerate": degenerate}
    return summary, data, [check], complete, unavailable


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
    maps, _ = compute_maps(ctx.handle, images, preds, methods, options.score,
                           options.method_options, ctx, positions)
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


def resolved_options(ctx, options) -> dict:
    """The methods' options, with gradient_shap's references drawn from the audit's images."""
    method_options = {m: dict(v) for m, v in options.method_options.items()}
    if "gradient_shap" in options.methods:
        shap = method_options.setdefault("gradient_shap", {})
        if "references" not in shap:
            positions = sample_positions(len(ctx.predictions.labels), REFERENCES,
                                         ctx.config.seed + 2)
            shap["references"] = ctx.dataset.images(positions)
    return method_options


def invariance_part(ctx, options, methods):
    """Each method's change on a copy of the model that absorbs a constant input shift."""
    from auditor.methods.attribution.reliability import input_invariance

    p = ctx.predictions
    positions = sample_positions(len(p.labels), options.sanity_samples, ctx.config.seed + 1)
    return input_invariance(ctx.handle, ctx.dataset.images(positions), p.preds[positions],
                            methods, method_options=options.method_options, score=options.score)


def reliability_parts(ctx: Context, options: Options | None = None) -> dict:
    """The card and the measurements behind it, computed once per run on first need (the
    contrastive section asks before this section runs) and cached on the context."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.reliability import build_card

    if RELIABILITY in ctx.cache:
        return ctx.cache[RELIABILITY]
    options = dataclasses.replace(options or ctx.options(NAME, Options))
    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise AuditorError(f"'attribution.methods' names unknown method '{unknown[0]}'; choose "
                           f"from: {', '.join(sorted(METHODS))} (see 'auditor methods')")
    options.method_options = resolved_options(ctx, options)
    faithfulness = faithfulness_section(ctx, options, options.methods)
    methods = [m for m in options.methods if m not in faithfulness[4]]
    sanity = sanity_section(ctx, options, methods)
    invariance, invariance_reason = invariance_part(ctx, options, methods)
    result = sanity[1]["result"]
    card = build_card(
        methods, randomisation={m: result.final(m)[0] for m in methods},
        sanity_degenerate=result.degenerate, invariance=invariance,
        invariance_reason=invariance_reason, faithfulness=faithfulness[1]["margins"],
        faithfulness_degenerate=faithfulness[1]["degenerate"],
        thresholds=lambda column: ctx.thresholds(f"attribution.reliability.{column}"))
    ctx.cache[RELIABILITY] = {"card": card, "faithfulness": faithfulness, "sanity": sanity,
                              "methods": methods, "invariance_reason": invariance_reason,
                              "options": options, "used_by": {}}
    return ctx.cache[RELIABILITY]


def trusted_method(ctx: Context, section: str, fallback: str | None = None,
                   max_cost: float | None = None) -> str | None:
    """The method ``section`` uses when its spec names none: the card's best trusted one
    (largest faithfulness margin) among those whose maps cost at most ``max_cost`` passes each
    on this model (None: any cost), so the next trusted one when the best costs more than the
    plan allows. ``fallback`` when no trusted method fits, or when this audit does not run the
    attribution section (the card is its work: it is not paid for silently). Recorded, with
    the card's best and why it was not taken, in summary.json's ``attribution.used_by``."""
    from auditor.methods.attribution.reliability import trusted_ranking

    if ctx.config.sections is not None and NAME not in ctx.config.sections:
        return fallback
    parts = reliability_parts(ctx)
    shape = ctx.handle.input_shape
    ranked = trusted_ranking(parts["card"])
    chosen = next((m for m in ranked if _fits(m, shape, max_cost)), fallback)
    best = ranked[0] if ranked else None
    if best is None:
        reason = "the reliability card trusts no method on this model"
    elif chosen != best:
        reason = (f"{best} costs {_passes_text(passes_per_map(best, shape))} per map on this "
                  f"model; the allowance is {_passes_text(max_cost)}")
    else:
        reason = None
    parts["used_by"][section] = {
        "method": chosen, "trusted": chosen in ranked, "best": best,
        "cost": None if chosen is None else passes_per_map(chosen, shape), "allowed": max_cost,
        "reason": reason}
    return chosen


def _passes_text(passes: float) -> str:
    return f"{passes:g} pass" + ("" if passes == 1 else "es")


def choice_note(ctx: Context, section: str) -> str:
    """Words for the report on how ``trusted_method`` chose ``section``'s method."""
    used = ctx.cache.get(RELIABILITY, {}).get("used_by", {}).get(section)
    if used is None:
        return " (the default: this audit does not run the attribution section's reliability card)"
    if used["best"] is None:
        return " (the default: the reliability card trusts no method on this model)"
    if used["method"] == used["best"]:
        return " (the reliability card's best trusted method)"
    best = (f"its best, {used['best']}, costs "
            f"{_passes_text(passes_per_map(used['best'], ctx.handle.input_shape))}")
    allowed = _passes_text(used["allowed"])
    if used["trusted"]:
        return f" (the reliability card's best trusted method within {allowed} per map; {best})"
    return (f" (the default: no method the reliability card trusts costs at most {allowed} per "
            f"map on this model; {best})")


def run(ctx: Context, options: Options) -> SectionResult:
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.layer import method_layers
    from auditor.methods.attribution.reliability import best_trusted

    parts = reliability_parts(ctx, options)
    faithfulness, faith_data, faith_checks, completeness, unavailable = parts["faithfulness"]
    sanity, sanity_data, sanity_checks, stages = parts["sanity"]
    methods, card = parts["methods"], parts["card"]
    options = parts["options"]
    skipped = [Check(f"attribution.sanity.{m}", "skipped", None, message=f"{m}: {why}",
                     section=NAME) for m, why in unavailable.items()]
    smoothing = (f"Maps are smoothed for display (Gaussian, sigma {options.display_smoothing:g} "
                 "px); the tables use raw maps." if options.display_smoothing > 0
                 else "Maps are shown raw, not smoothed.")
    data = AttributionData(signed={m: METHODS[m].signed for m in methods},
                           display_smoothing=options.display_smoothing, smoothing=smoothing,
                           sanity=sanity_data, faithfulness=faith_data, reliability=card,
                           invariance_reason=parts["invariance_reason"],
                           reliability_bounds=RELIABILITY_BOUNDS)
    examples, box_source = examples_section(ctx, options, methods, data)
    summary = {NAME: {
        "methods": methods, "score": options.score, "unavailable": unavailable,
        "examples": [{k: e[k] for k in ("index", "true", "pred", "confidence", "box")}
                     for e in examples],
        "compared_layers": data.layer_names, "sanity_stages": stages, "sanity": sanity,
        "faithfulness": faithfulness,
        "completeness_error": completeness["error"] if completeness else None,
        "completeness_gap": completeness["gap"] if completeness else None,
        "completeness_measured": completeness["measured"] if completeness else None,
        "samples": {"sanity": sanity_data["samples"], "faithfulness": faith_data["samples"]},
        "reliability": card, "trusted_method": best_trusted(card),
        "used_by": parts["used_by"], "reliability_bounds": RELIABILITY_BOUNDS,
        "cam_layers": method_layers(ctx.handle, methods, options.method_options),
    }}
    return SectionResult(
        name=NAME, title=TITLE,
        intro=("Each method's map of the predicted class's "
               f"{options.score} on the most confident mistakes: red raises the score, blue "
               "lowers it; unsigned methods (saliency, Grad-CAM) show importance from dark to "
               "bright. The box is a GrabCut localisation seeded by the "
               f"{box_source or 'saliency'} map. Below, whether to trust each method: its maps "
               "must change when the model's weights are randomised, and removing its top "
               f"pixels first must hurt the prediction more than a random order. {smoothing}"),
        summary=summary, data=data, checks=sanity_checks + skipped + faith_checks,
    )


def complete_reliability(results: list) -> None:
    """After every section ran: the Clever Hans injection's shortcut and control masses join
    the card (the attribution section ran before it), and the trusted method is re-read."""
    from auditor.methods.attribution.reliability import add_shortcut_columns, best_trusted
    from auditor.methods.shortcuts.injection import CONTROL

    by_name = {r.name: r for r in results if r.error is None}
    attribution, hans = by_name.get(NAME), by_name.get("clever_hans")
    if attribution is None or hans is None or not hans.summary.get("clever_hans", {}).get(
            "injection"):
        return
    card = attribution.summary[NAME]["reliability"]
    add_shortcut_columns(card, hans.summary["clever_hans"]["injection"], CONTROL)
    attribution.summary[NAME]["trusted_method"] = best_trusted(card)
