"""The reliability card as a declared step: made once per run, before the sections, when the
audit runs the attribution section (the card is configured by its ``[attribution]`` table).

The attribution section shows the card and its checks; the sections that take their method
from the card (contrastive maps, shortcut discovery) read the same result with ``choose``
and report their choice in their own result. The sanity check (Adebayo et al. 2018) tests that
each method's maps depend on the model's weights; deletion and insertion curves (Petsiuk et
al. 2018) that the pixels a method ranks first are the ones the prediction needs; input
invariance (Kindermans et al. 2019) that a model absorbing a constant shift keeps its maps.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.checks.check import Check
from auditor.checks.declared import EXPLANATION, Declared, spec_bounds
from auditor.errors import AuditorError
from auditor.methods.attribution.reliability import RANDOMISATION_BOUNDS
from auditor.predict.plan import Facts, Passes, floors_reason, not_measured

NAME = "card"
TITLE = "the reliability card"
SECTION = "attribution"  # the section whose options configure the card, and which shows it
DEFAULT_METHODS = ["gradient", "saliency", "gradient_x_input", "smoothgrad",
                   "integrated_gradients", "gradcam", "gradcam_pp", "occlusion", "lrp"]
REFERENCES = 16  # audit images gradient_shap draws its references from
# Rank correlation with the original maps once every layer is random: bounds from Adebayo et
# al. 2018 (see methods/attribution/reliability.py). Maps multiplied by the input keep its
# outline (about 0.85 on the digits) and fail: on such a model they mostly show the input.
SANITY = Declared("attribution.sanity.*", EXPLANATION, bounds=RANDOMISATION_BOUNDS,
                  what="rank correlation with the original maps once every layer is randomised")
# The reference method must beat a random ranking of the pixels (Petsiuk et al. 2018).
FAITHFULNESS = Declared("attribution.faithfulness", EXPLANATION, bounds={"warn_below": 0.0},
                        what="the reference method's insertion minus deletion area above a "
                             "random map's")
CARD_COLUMN = Declared("attribution.reliability.*", EXPLANATION, listed=False,
                       what="a column of the reliability card (bounds in "
                            "methods/attribution/reliability.py)")


@dataclass(frozen=True)
class ReliabilityCard:
    """The card and the measurements behind it, as the attribution section shows them."""

    card: dict  # {method: {column: {value, status, reason}, trusted}}
    methods: list[str]  # the methods that could run on this model
    unavailable: dict[str, str]  # method -> why it does not apply to this model
    options: Any  # the attribution options the card was made with (method options resolved)
    sanity: dict  # per method: its correlations and status (summary.json's attribution.sanity)
    sanity_data: dict  # rows, samples, result (the cascade's SanityResult)
    sanity_checks: list[Check]
    stages: list[str]
    faithfulness: dict  # per method and the random map: deletion, insertion, score
    faithfulness_data: dict  # rows, samples, steps, curves, completeness, margins, degenerate
    faithfulness_checks: list[Check]
    completeness: dict | None  # the complete method's completeness error, when one ran
    invariance_reason: str | None  # why input invariance was not measured
    # why no cell is judged: the card ran below its floors (None: it did not)
    unmeasured: str | None = None

    @property
    def ranked(self) -> list[str]:
        from auditor.methods.attribution.reliability import trusted_ranking

        return trusted_ranking(self.card)


@dataclass(frozen=True)
class MethodChoice:
    """Which method a section took from the card, and why (summary.json's
    ``attribution.used_by.SECTION``)."""

    method: str | None
    trusted: bool
    best: str | None
    cost: float | None
    allowed: float | None
    reason: str | None

    def to_summary(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- the plan's cost

def _explain(options, facts: Facts, count: int, times: int = 1) -> Passes:
    """Every method's maps of ``count`` images, ``times`` over (those derived from the input
    gradient from one pass: ``registry.shared_gradient``). Their forward-backward rows run
    in as many calls as a backward call holds (a third of a forward call's rows:
    predict/batched.py), at least one per method each time: each call pays its fixed cost
    (``Timing.call``) however few rows it takes (the sanity cascade's four images), counted as
    the rows of a loop whose steps are the calls (``Passes.looped``, ``loop_steps``). Without
    ``Facts.call_rows`` each row is priced as the timed call's."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.registry import attribution_rows, with_shared_gradient
    from auditor.predict.batched import FORWARD_FACTOR

    methods = with_shared_gradient(_applying(options, facts), options.method_options)
    forward, backward = attribution_rows(methods, count, facts.input_shape,
                                         options.method_options)
    if facts.call_rows is None:
        return Passes(forward=forward * times, backward=backward * times)
    held = max(1, facts.call_rows // FORWARD_FACTOR)
    calls = 0
    for method in methods:
        if method in METHODS and not METHODS[method].forward_only:
            _, rows = attribution_rows([method], 1, facts.input_shape, options.method_options)
            calls += math.ceil(count / max(1, held // max(1, rows)))
    return Passes(forward=forward * times, looped=backward * times, loop_steps=calls * times)


COPIES = 2  # the audit's working copy (randomised stage by stage) and the shifted copy


def passes(options, facts: Facts) -> Passes:
    """The card: every method on the sanity samples for the original and at each randomisation
    stage, twice more for input invariance (the model and its shifted copy, counted whenever the
    copy can be made, which methods/attribution/shifted.py does for most models, unless
    ``input_invariance`` is off), and on the faithfulness samples, whose deletion and insertion
    curves (for each method and a random map) and the complete methods' completeness are forward
    passes. Its traces (``traced``) and its two copies: the audit's working copy, made here (the
    card is the first to use it), and the shifted copy made from it (none without input
    invariance)."""
    from auditor.methods.attribution import METHODS

    methods = _applying(options, facts)
    samples = min(options.faithfulness_samples, facts.images)
    complete = [m for m in methods if m in METHODS and METHODS[m].complete][:1]
    completeness = 2 * samples * len(complete)
    sanity = min(options.sanity_samples, facts.images)
    shifted = options.input_invariance
    check = 3 * sanity * shifted  # the shifted copy's logits checked against the model's
    return (_explain(options, facts, samples) + _curves(options, facts, len(methods) + 1)
            + Passes(forward=completeness + check, traces=traced(options, facts),
                     copies=COPIES - (not shifted), trace_extra=trace_extra(options, facts),
                     kernels=_eager_kernels(options, facts))
            + _explain(options, facts, sanity, options.sanity_stages + 1 + 2 * shifted))


def _curves(options, facts: Facts, maps: int) -> Passes:
    """The deletion and insertion curves of ``maps`` maps per faithfulness sample: the ends
    every map shares (the image, the filled image, the blurred canvas) once per sample, and
    each map's inner steps, forward rows in calls of as many images' inner steps as one
    forward call holds (methods/attribution/faithfulness.py ``curves_of``), counted when that
    is known (``Facts.call_rows``)."""
    samples = min(options.faithfulness_samples, facts.images)
    inner = 2 * (options.faithfulness_steps - 1)
    ends = 3 * samples
    rows = ends + maps * samples * inner
    if facts.call_rows is None:
        return Passes(forward=rows)
    per_call = max(1, facts.call_rows // max(1, inner))  # images' inner steps a call holds
    calls = math.ceil(ends / facts.call_rows) + (
        maps * math.ceil(samples / per_call) * math.ceil(per_call * inner / facts.call_rows)
        if inner else 0)
    return Passes(called=rows, calls=calls)


def shifted_passes(options, methods, images: int, shape: tuple, cost) -> dict[str, bool]:
    """{compiled pass: whether it is traced} on the shifted copy of the input-invariance test,
    which runs each of ``methods`` once, on ``images`` sanity samples: a pass that its few
    calls would not repay runs eagerly (predict/eager.py; ``cost`` its EagerCost, None: every
    pass traced). The same maps either way (tests/test_traces.py)."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.registry import attribution_rows, with_shared_gradient

    users: dict[str, list[str]] = {}
    for method in with_shared_gradient(list(methods), options.method_options):
        if method in METHODS:
            users.setdefault(METHODS[method].compiled, []).append(method)
    traced = {}
    for name, named in users.items():
        forward, backward = attribution_rows(named, images, shape, options.method_options)
        traced[name] = cost is None or cost.worth_tracing(len(named), backward, forward)
    return traced


def _applying(options, facts: Facts) -> list[str]:
    """The card's methods that run on this model (the rollouts need attention layers)."""
    from auditor.methods.attribution.registry import that_apply

    return that_apply(options.methods, facts.attention)


def _shifted(options, facts: Facts) -> dict[str, bool]:
    if not options.input_invariance:
        return {}
    return shifted_passes(options, _applying(options, facts),
                          min(options.sanity_samples, facts.images), facts.input_shape,
                          facts.eager)


def _eager_kernels(options, facts: Facts) -> float:
    """The extra kernels of the shifted copy's passes run eagerly."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.registry import attribution_rows, with_shared_gradient

    eager = [name for name, traced in _shifted(options, facts).items() if not traced]
    images = min(options.sanity_samples, facts.images)
    running = with_shared_gradient(_applying(options, facts), options.method_options)
    total = 0.0
    for name in eager:
        methods = [m for m in running if m in METHODS and METHODS[m].compiled == name]
        forward, backward = attribution_rows(methods, images, facts.input_shape,
                                             options.method_options)
        total += facts.eager.extra(len(methods), backward, forward)
    return total


def traced(options, facts: Facts) -> int:
    """The functions the card traces: the compiled passes its methods run (those that share one
    share its trace: every gradient method the input gradient, Grad-CAM and Grad-CAM++ the
    layer's, once per layer they read: ``Facts.cam_layers``, every forward-only method the
    logits) once for the model and the working copy
    (which calls the model's traces with its randomised weights: inputs/traces.py; when it is
    not the model's twin, once more for it), but for those the plan's timing traced already
    (the logits, the input gradient of the logit: ``registry.TIMED``), and again on the shifted
    copy for input invariance, whose structure differs (its first layer pads with the shifted
    background: no weights make the model's graph compute it, so it cannot call the model's
    traces), unless its few calls would not repay the trace: then it runs eagerly
    (``shifted_passes``). The faithfulness curves and the completeness of a complete method are
    scores picked from the model's logits pass (``registry.run_scores``): no trace of their
    own."""
    from auditor.methods.attribution.registry import compiled_passes

    methods = _applying(options, facts)
    own = compiled_passes(methods, options.score, fresh=True)
    model = compiled_passes(methods, options.score)
    layers = _more_layers(methods, facts)
    return (len(model) + layers + (len(own) + layers) * (not facts.twin_copy)
            + sum(_shifted(options, facts).values())
            + layers * _shifted(options, facts).get("layer_gradients", False))


def _more_layers(methods, facts: Facts) -> int:
    """The layer gradient's traces beyond one: Grad-CAM++ on a layer other than Grad-CAM's
    (``Facts.cam_layers``) is traced for that layer too."""
    from auditor.methods.attribution import METHODS

    layered = [m for m in methods if m in METHODS and METHODS[m].needs_layer]
    return max(0, min(len(layered), facts.cam_layers or 1) - 1) if layered else 0


def trace_extra(options, facts: Facts) -> float:
    """What the traces ``traced`` counts cost beyond one input-gradient trace each: a method's
    pass dearer to trace (``Method.trace_cost``: the LRP composite's), as often as it is
    traced (the model, a working copy that is not its twin, the shifted copy unless it runs
    the pass eagerly)."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.registry import trace_excess

    methods = _applying(options, facts)
    on_shifted = _shifted(options, facts)
    shifted = [m for m in methods if m in METHODS and on_shifted.get(METHODS[m].compiled)]
    return (trace_excess(methods, options.score) * (1 + (not facts.twin_copy))
            + trace_excess(shifted, options.score))


def makes_card(facts: Facts) -> bool:
    """Whether the run makes the reliability card, which makes the audit's working copy
    first (the copy later sections reuse: inputs/copies.py)."""
    return facts.card_methods is None or bool(facts.card_methods)


def card_candidates(config, sections) -> tuple[str, ...]:
    """The methods this run's card chooses from (``Facts.card_methods``): attribution.methods,
    or none when ``sections`` leave the attribution section out (``choose`` then gives the
    caller's fallback)."""
    if SECTION not in sections:
        return ()
    return tuple(config.options[SECTION].methods)


def card_score(config) -> str:
    """The score the card's maps explain (``Facts.card_score``): attribution.score."""
    return getattr(config.options.get(SECTION), "score", "logit")


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


# --------------------------------------------------------------------------- making the card

def sample_positions(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(size, n), replace=False))


def explained(p, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The images the card explains (a seeded random sample of ``size``) and the output each
    map is of: a single-label model's predicted class; a multi-label model's most confident
    given label, among the images given at least one (all images when none is given).

    Why that label: one map per image keeps the card's cost what the plan charges for any
    model (a card per label would cost K times more); a label the model gives has evidence in
    the image, which deletion removes and insertion restores, while a label it does not give
    sits near probability 0, where both curves are flat and measure nothing; and sampling
    images brings in each label as often as the model gives it, the labels the report
    explains most. Its score is that label's logit (its sigmoid in the curves): a softmax
    over independent labels means nothing."""
    if not p.multilabel:
        positions = sample_positions(len(p.labels), size, seed)
        return positions, p.preds[positions]
    margins = p.logits - (np.log(p.thresholds) - np.log1p(-p.thresholds))
    given = np.flatnonzero(p.preds.any(axis=1))
    pool = given if len(given) else np.arange(len(p.labels))
    positions = pool[sample_positions(len(pool), size, seed)]
    return positions, margins[positions].argmax(axis=1)


def compute_maps(handle, x, targets, methods, score, method_options, maps_of=None,
                 workdir=None):
    """Maps of every method that applies to this model, and the reason for each that does not
    (e.g. Grad-CAM on a model without convolutions, or a method that raises on this
    architecture: a finding on the card, never a failed audit, in one line; its traceback goes
    to ``workdir``'s audit.log). ``maps_of(method, options)`` gives them instead of
    ``attribute`` (a section reading the saliency step's maps); by default the methods derived
    from the input gradient share one pass (``registry.shared_gradient``)."""
    from auditor.failures import log_failure
    from auditor.methods.attribution.registry import shared_gradient

    maps, unavailable = {}, {}
    maps_of = maps_of or shared_gradient(handle, x, targets, score)
    for method in methods:
        options = method_options.get(method, {})
        try:
            maps[method] = maps_of(method, options)
        except AuditorError as exc:  # e.g. Grad-CAM without a convolution: does not apply
            unavailable[method] = str(exc)
        except Exception as exc:  # a method that breaks on this architecture is a finding
            line = log_failure(workdir, f"method '{method}'", exc)
            unavailable[method] = f"failed on this model ({line})"
    return maps, unavailable


def sanity_part(ctx, options, methods, unmeasured: str | None = None):
    """The cascading randomisation of every method, and its explanation checks (skipped, not
    measured, below the card's floors: ``unmeasured``)."""
    from auditor.methods.attribution.sanity import cascading_randomisation

    positions, targets = explained(ctx.predictions, options.sanity_samples, ctx.config.seed + 1)
    result = cascading_randomisation(
        ctx.handle, ctx.dataset.images(positions), targets, methods,
        max_stages=options.sanity_stages, seed=ctx.config.seed, score=options.score,
        method_options=options.method_options)
    checks, rows, summary = [], [], {}
    for method in methods:
        correlation, similarity = result.final(method)
        check = SANITY.judge(correlation, checks=ctx.config.checks, section=SECTION, name=method,
                             message=f"{method}: rank correlation of its maps with the "
                                     "original ones once every layer is randomised")
        if result.degenerate[method]:  # dead maps, on the model or its copy: not measurable
            check = SANITY.outcome("skipped", None, checks=ctx.config.checks, section=SECTION,
                                   name=method, threshold=check.threshold,
                                   message=f"{method}: not measurable: "
                                           f"{result.degenerate[method]}")
        check = not_measured(check, unmeasured)
        checks.append(check)
        rows.append({"method": method, "rank_correlation": correlation, "ssim": similarity,
                     "status": check.status})
        summary[method] = {"rank_correlation": result.rank_correlation[method],
                           "ssim": result.ssim[method], "final_rank_correlation": correlation,
                           "final_ssim": similarity, "status": check.status,
                           "passed": check.status == "pass"}
    return summary, {"rows": rows, "samples": len(positions), "result": result}, checks, \
        result.stages


def completeness_part(ctx, options, x, targets, maps) -> dict | None:
    """How far the maps of the first method the registry declares complete (they sum to the
    score's difference from the baseline) are from it, when one ran."""
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.integrated_gradients import completeness

    method = next((m for m in maps if m in METHODS and METHODS[m].complete), None)
    if method is None:
        return None
    given = options.method_options.get(method, {})
    errors, gaps = completeness(
        ctx.handle, x, targets, maps[method], score=options.score,
        **{k: v for k, v in given.items() if k in ("baseline", "blur_sigma")})
    measured = np.isfinite(errors)
    return {"error": float(errors[measured].mean()) if measured.any() else None,
            "gap": float(np.abs(gaps).mean()), "measured": int(measured.sum()),
            "samples": len(errors)}


def faithfulness_part(ctx, options, methods, unmeasured: str | None = None):
    from auditor.methods.attribution.faithfulness import curves_of, random_maps
    from auditor.methods.attribution.reliability import degenerate_reason

    p = ctx.predictions
    positions, targets = explained(p, options.faithfulness_samples, ctx.config.seed)
    x = ctx.dataset.images(positions)
    maps, unavailable = compute_maps(ctx.handle, x, targets, methods, options.score,
                                     options.method_options, workdir=ctx.workdir)
    maps["random"] = random_maps(x, ctx.config.seed)
    probability = "sigmoid" if p.multilabel else "softmax"
    curves = curves_of(ctx.handle, x, targets, maps, steps=options.faithfulness_steps,
                       seed=ctx.config.seed, probability=probability)
    summary = {m: {"deletion_auc": c.deletion_auc, "insertion_auc": c.insertion_auc,
                   "score": c.score} for m, c in curves.items()}
    degenerate = {m: degenerate_reason(a) for m, a in maps.items() if m != "random"}
    complete = completeness_part(ctx, options, x, targets, maps)
    reference = options.reference_method if options.reference_method in curves else None
    margin = curves[reference].score - curves["random"].score if reference else None
    check = FAITHFULNESS.judge(margin, checks=ctx.config.checks, section=SECTION,
                               message=f"{reference}: insertion minus deletion area, above a "
                                       "random map's")
    if reference and degenerate.get(reference):  # not measurable: neither pass nor error
        check = FAITHFULNESS.outcome("skipped", None, checks=ctx.config.checks, section=SECTION,
                                     threshold=check.threshold,
                                     message=f"{reference}: not measurable: "
                                             f"{degenerate[reference]}")
    check = not_measured(check, unmeasured)
    margins = {m: c.score - curves["random"].score for m, c in curves.items() if m != "random"}
    data = {"rows": [{"method": m, **summary[m]} for m in curves], "samples": len(positions),
            "steps": options.faithfulness_steps, "curves": curves,
            "completeness": complete, "unavailable": unavailable,
            "margins": margins, "degenerate": degenerate}
    return summary, data, [check], complete, unavailable


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
    """Each method's change on a copy of the model that absorbs a constant input shift; none,
    with the reason, when ``attribution.input_invariance`` is off (the plan's drop)."""
    from auditor.methods.attribution.reliability import input_invariance

    if not options.input_invariance:
        return {}, "not measured ('attribution.input_invariance' is off)"

    from auditor.predict.eager import EAGER_COST

    positions, targets = explained(ctx.predictions, options.sanity_samples, ctx.config.seed + 1)
    traced = shifted_passes(options, methods, len(positions), ctx.handle.input_shape,
                            ctx.handle.compiled.get(EAGER_COST))
    return input_invariance(ctx.handle, ctx.dataset.images(positions), targets, methods,
                            method_options=options.method_options, score=options.score,
                            eager={name for name, t in traced.items() if not t})


def make(inputs, options, shared, sections) -> ReliabilityCard:
    """The step: the card for the attribution section's options (``options``: every section's,
    resolved; ``inputs``: sections.base.RunInputs)."""
    lowered = options.below_floor.get(SECTION)
    return make_card(inputs, options[SECTION],
                     floors_reason("the card", lowered, inputs.config.budget))


def make_card(ctx, options, unmeasured: str | None = None) -> ReliabilityCard:
    """The card for the attribution ``options``: faithfulness first (it finds the methods that
    do not apply to this model), then the sanity cascade and input invariance of the rest.
    ``ctx``: the run's inputs (sections.base.RunInputs); ``unmeasured``: why no cell is judged
    (the plan ran the card below its floors). Read-only once made."""
    from auditor.steps.shared import read_only

    return read_only(_make_card(ctx, options, unmeasured))


def _make_card(ctx, options, unmeasured: str | None) -> ReliabilityCard:
    from auditor.methods.attribution import METHODS
    from auditor.methods.attribution.reliability import build_card

    unknown = [m for m in options.methods if m not in METHODS]
    if unknown:
        raise AuditorError(f"'attribution.methods' names unknown method '{unknown[0]}'; choose "
                           f"from: {', '.join(sorted(METHODS))} (see 'auditor methods')")
    options = dataclasses.replace(options, method_options=resolved_options(ctx, options))
    faithfulness, faith_data, faith_checks, complete, unavailable = faithfulness_part(
        ctx, options, options.methods, unmeasured)
    methods = [m for m in options.methods if m not in unavailable]
    sanity, sanity_data, sanity_checks, stages = sanity_part(ctx, options, methods, unmeasured)
    invariance, invariance_reason = invariance_part(ctx, options, methods)
    result = sanity_data["result"]
    card = build_card(
        methods, randomisation={m: result.final(m)[0] for m in methods},
        sanity_degenerate=result.degenerate, invariance=invariance,
        invariance_reason=invariance_reason, faithfulness=faith_data["margins"],
        faithfulness_degenerate=faith_data["degenerate"],
        thresholds=lambda column: spec_bounds(ctx.config.checks, CARD_COLUMN.check_id(column)),
        unmeasured=unmeasured)
    return ReliabilityCard(card, methods, unavailable, options, sanity, sanity_data,
                           sanity_checks, stages, faithfulness, faith_data, faith_checks,
                           complete, invariance_reason, unmeasured)


# --------------------------------------------------------------------------- using the card

def choose(card: ReliabilityCard | None, shape: tuple, fallback: str | None = None,
           max_cost: float | None = None) -> tuple[str | None, MethodChoice | None]:
    """The method a section uses when its spec names none: the card's best trusted one (largest
    faithfulness margin) among those whose maps cost at most ``max_cost`` passes each on this
    model (None: any cost), so the next trusted one when the best costs more than the plan
    allows. ``fallback`` when no trusted method fits, or when the audit makes no card (it is
    the attribution section's work: it is not paid for silently; the choice is then None)."""
    if not isinstance(card, ReliabilityCard):
        return fallback, None
    ranked = card.ranked
    chosen = next((m for m in ranked if _fits(m, shape, max_cost)), fallback)
    best = ranked[0] if ranked else None
    if best is None and card.unmeasured:
        reason = f"the reliability card judged no method: {card.unmeasured}"
    elif best is None:
        reason = "the reliability card trusts no method on this model"
    elif chosen != best:
        reason = (f"{best} costs {_passes_text(passes_per_map(best, shape))} per map on this "
                  f"model; the allowance is {_passes_text(max_cost)}")
    else:
        reason = None
    return chosen, MethodChoice(
        method=chosen, trusted=chosen in ranked, best=best,
        cost=None if chosen is None else passes_per_map(chosen, shape), allowed=max_cost,
        reason=reason)


def _passes_text(passes: float) -> str:
    return f"{passes:g} pass" + ("" if passes == 1 else "es")


def choice_note(used: MethodChoice | None, shape: tuple) -> str:
    """Words for the report on how ``choose`` chose."""
    if used is None:
        return " (the default: this audit does not run the attribution section's reliability card)"
    if used.best is None:
        return f" (the default: {used.reason or 'the reliability card trusts no method'})"
    if used.method == used.best:
        return " (the reliability card's best trusted method)"
    best = f"its best, {used.best}, costs {_passes_text(passes_per_map(used.best, shape))}"
    allowed = _passes_text(used.allowed)
    if used.trusted:
        return f" (the reliability card's best trusted method within {allowed} per map; {best})"
    return (f" (the default: no method the reliability card trusts costs at most {allowed} per "
            f"map on this model; {best})")


def card_of(card: ReliabilityCard | None) -> dict | None:
    """The card's table, or None without a card (for the checks that read it)."""
    return card.card if isinstance(card, ReliabilityCard) else None

