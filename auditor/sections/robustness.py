"""Adversarial robustness: accuracy under FGSM and PGD as epsilon grows, targeted attacks, what
an attack changes in the image and in the saliency, and (with --compare-model) how a second
model's saliency agrees with this one's on the same images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from auditor.checks.declared import Declared
from auditor.errors import ConfigError
from auditor.predict.batched import forward
from auditor.predict.plan import Drop, Facts, Passes
from auditor.predict.predictions import softmax
from auditor.sections.base import Context, KeyFigure, SectionResult

NAME = "robustness"
TITLE = "Adversarial robustness"
MULTI_LABEL = True  # label-set flips under PGD (run_multilabel)
# Robust accuracy may drop 5 points from the baseline run's before it warns.
ROBUST_ACCURACY = Declared("robustness.accuracy", what="accuracy under attack",
                           bounds={"warn_drop": 0.05}, figure="robust_accuracy")
CHECKS = (ROBUST_ACCURACY,)
MAIN_ATTACK = "pgd"


def robust_accuracy_at(summary: dict) -> tuple[float, float] | None:
    """(epsilon, accuracy under attack) at the budget the robustness check holds
    (``robustness.check_epsilon``, always among ``robustness.epsilons``); None without."""
    block = summary.get(NAME)
    if block is None:
        return None
    for epsilon, accuracy in zip(block["epsilons"], block["accuracy"], strict=True):
        if np.isclose(epsilon, block["check_epsilon"]):
            return epsilon, accuracy
    return None


def epsilon_text(epsilon: float) -> str:
    """8/255 rather than 0.0314 when the budget is a whole number of grey levels."""
    levels = epsilon * 255
    if epsilon > 0 and abs(levels - round(levels)) < 1e-6:
        return f"{round(levels)}/255"
    return f"{Fraction(epsilon).limit_denominator(1000)}" if epsilon else "0"


def _robust_accuracy(summary: dict) -> float | None:
    found = robust_accuracy_at(summary)
    return None if found is None else found[1]


def _robust_detail(summary: dict) -> str:
    epsilon, _ = robust_accuracy_at(summary)
    return f"at ε = {epsilon_text(epsilon)} ({summary[NAME]['attack'].upper()})"


KEY_FIGURES = (KeyFigure("robust_accuracy", "Robust accuracy",
                         "robust accuracy (checked epsilon)", NAME, _robust_accuracy,
                         percent=True, detail=_robust_detail, rank=40),)


@dataclass
class Options:
    samples: int = 200  # audit images attacked: a stratified subset keeps the section fast
    epsilons: list[float] = field(
        default_factory=lambda: [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255])
    check_epsilon: float = 8 / 255  # robustness.accuracy is PGD's accuracy here; also the gallery's
    steps: int = 10  # PGD steps
    step_ratio: float = 2.5  # PGD step size = step_ratio * epsilon / steps (Madry et al.)
    random_start: bool = True
    target: str = "runner_up"  # targeted attacks: runner_up, least_likely, or a class name
    saliency_method: str = "gradient"  # any method of 'auditor methods', on clean and attacked
    gallery: int = 6
    # Non-zero epsilons of the curve that are attacked (None: every one of ``epsilons``); fewer
    # keep the check's, the smallest and the largest, then evenly spread ones (epsilon_grid).
    curve_points: int | None = None

    def __post_init__(self):
        _validate(self)


# The compute plan (auditor.predict.plan) may lower these settings, never below the floor: 30
# images keep a stratified sample of 10 classes at 3 per class (the accuracy is then known to
# about +-0.09, its binomial standard error at 0.5); 5 PGD steps still take the 2.5-epsilon path
# of Madry et al. in steps of half epsilon; 3 points of the curve are its two ends and the
# check's epsilon, whose accuracy (the check, the key figure) is the same on any curve.
PLANNED = {"samples": 30, "steps": 5, "curve_points": 3}
# Given up when a named budget cannot hold the section at the floors (predict/plan.py): the
# gallery (its images attacked at the check's epsilon predicted again and explained clean and
# attacked, and its method's trace when the card did not make it); the curve and the check,
# which the key figure reads, stay.
DROPS = (Drop("gallery", 0, "the gallery of attacked images and their maps"),)
# Lowered below their floors, down to these, when a named budget cannot hold the floors on
# this model (predict/plan.py ``_thinned``; every check then says it was not measured): 10
# images still draw every point of the curve (the attacks' steps over them were the section's
# cost at its floors: 125 of 425 s on ConvNeXtTiny at 48 px, before the images the model gets
# wrong were left out of the attacks and the compiled loop's own trace went).
THIN = {"samples": 10}


def resolve(options: Options, facts: Facts) -> Options:
    """``curve_points``'s default (every non-zero epsilon) written out, for the plan, when the
    curve has more points than the plan's floor."""
    attacked = sum(e > 0 for e in epsilon_grid(options))
    if options.curve_points is not None or attacked <= PLANNED["curve_points"]:
        return options
    return dataclasses.replace(options, curve_points=attacked)


def passes(options: Options, facts: Facts) -> Passes:
    """Each image the model gets right is attacked untargeted and targeted (two rows; an image
    it gets wrong is its own adversarial example, never attacked) at every non-zero epsilon,
    by FGSM and by PGD, each attack one batch of every epsilon's rows: FGSM one gradient call
    and one prediction of its images, PGD a prediction of its start and ``steps`` calls of
    both, at most (a row stops once it succeeded). The calls are of the passes the plan's
    timing traced; the gallery explains up to ``gallery`` images clean and attacked."""
    grid = epsilon_grid(options)
    attacked = sum(e > 0 for e in grid)
    samples = min(options.samples, facts.images)
    wrong = 0 if facts.mistakes is None else min(facts.mistakes, facts.images)  # None: unknown
    rows = 2 * samples * (1 - wrong / max(facts.images, 1)) * attacked
    calls = (1 + options.steps) * (rows > 0)  # gradient calls: FGSM's one and PGD's
    looped, loop_steps, forward = rows * calls, calls, rows * (calls + 1)
    if facts.compare:  # the compared model's untargeted PGD curve, each image attacked
        other = samples * attacked
        looped, loop_steps = looped + other * options.steps, loop_steps + options.steps
        forward += samples + other * (options.steps + 1)
    return Passes(forward=forward, backward=2 * options.gallery, looped=looped,
                  loop_steps=loop_steps,
                  traces=_gallery_traced(options, facts) + 2 * facts.compare)


def _gallery_traced(options: Options, facts: Facts) -> int:
    """The gallery's maps trace their method's pass unless the reliability card did (the
    re-predictions are the model's logits, traced when the plan timed the model)."""
    from auditor.methods.attribution.registry import compiled_passes
    from auditor.steps.card import DEFAULT_METHODS

    if not options.gallery:
        return 0
    carded = DEFAULT_METHODS if facts.card_methods is None else facts.card_methods
    return int(not compiled_passes([options.saliency_method], "logit")
               <= compiled_passes(carded, facts.card_score))


def resolve_target(rule: str, class_names: list[str]) -> str | int:
    from auditor.methods.attacks import TARGETS

    if rule in TARGETS:
        return rule
    if rule in class_names:
        return class_names.index(rule)
    raise ConfigError(f"'{NAME}.target' is '{rule}'; use {', '.join(TARGETS)} or a class name "
                      f"({', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''})")


def _validate(options: Options) -> None:
    from auditor.methods.attribution import METHODS

    if options.saliency_method not in METHODS:
        raise ConfigError(f"'{NAME}.saliency_method' is '{options.saliency_method}'; choose from: "
                          f"{', '.join(sorted(METHODS))} (see 'auditor methods')")
    if options.samples < 1 or options.steps < 1:
        raise ConfigError(f"'{NAME}.samples' and '{NAME}.steps' must be at least 1")
    if options.curve_points is not None and options.curve_points < 1:
        raise ConfigError(f"'{NAME}.curve_points' must be at least 1, got {options.curve_points}")
    if not options.epsilons or min(options.epsilons) < 0 or max(options.epsilons) > 1:
        raise ConfigError(f"'{NAME}.epsilons' must be a non-empty list of values in [0, 1] "
                          "(display space: 8/255 is 0.0314)")


def epsilon_grid(options: Options) -> list[float]:
    """The configured epsilons, sorted, with the check's epsilon among them; with
    ``curve_points``, only that many non-zero ones: the check's, the smallest, the largest,
    then those nearest an even spread over the rest (0 is always kept: the clean accuracy)."""
    grid = sorted(set(options.epsilons))
    if not any(np.isclose(options.check_epsilon, e) for e in grid):
        grid = sorted([*grid, options.check_epsilon])
    attacked = [e for e in grid if e > 0]
    if options.curve_points is None or options.curve_points >= len(attacked):
        return grid
    check = next(e for e in attacked if np.isclose(e, options.check_epsilon)) \
        if options.check_epsilon > 0 else None
    kept = [e for e in (check, attacked[0], attacked[-1]) if e is not None]
    spread = np.linspace(0, len(attacked) - 1, max(options.curve_points, 2)).round().astype(int)
    kept += [attacked[i] for i in spread]
    kept = list(dict.fromkeys(kept))[:max(1, options.curve_points)]
    return sorted({*(e for e in grid if e <= 0), *kept})


def _in_255(epsilon: float) -> str:
    return f"{epsilon * 255:.3g}/255"


@dataclass
class RobustnessData:
    """What the figures are drawn from: the curves, the attacked examples and, with
    --compare-model, the two models' maps of one image per class."""

    facts: dict  # numbers and rows the partial shows as they are
    epsilons_255: list[float]
    accuracy: dict[str, list[float]]  # curve label -> accuracy per epsilon
    targeted: dict[str, list[float]]  # curve label -> targeted success per epsilon
    plot_title: str
    target: str
    gallery: list[dict] = field(default_factory=list)
    gallery_arrays: list[tuple] = field(default_factory=list)  # per example: adversarial_figure's
    comparison: dict | None = None  # shown (per_class, names) and arrays of comparison_figure


def _gallery(ctx, options, images, labels, curves, epsilon, positions):
    """The first images that PGD flips at the check's epsilon, with clean and attacked maps:
    their entries, and per entry (clean, attacked, epsilon, clean map, attacked map, titles)."""
    from auditor.methods.attribution import attribute

    names = ctx.dataset.class_names
    kept = curves.kept
    if kept is None or not options.gallery:
        return [], []
    clean_pred = ctx.predictions.preds[positions]
    adv_logits = curves.kept_logits.astype(np.float64)  # the attack's last look at each
    adv_pred = adv_logits.argmax(axis=1)
    chosen = np.flatnonzero((clean_pred == labels) & (adv_pred != labels))[:options.gallery]
    if not chosen.size:
        return [], []
    both = np.concatenate([images[chosen], kept[chosen]])
    maps = attribute(ctx.handle, both, np.concatenate([labels[chosen], adv_pred[chosen]]),
                     method=options.saliency_method)
    clean_maps, adv_maps = maps[:len(chosen)], maps[len(chosen):]
    clean_probs = ctx.predictions.probs[positions[chosen]]
    adv_probs = softmax(adv_logits[chosen])
    gallery, arrays = [], []
    for k, i in enumerate(chosen):
        true, wrong = names[labels[i]], names[adv_pred[i]]
        p_clean, p_adv = float(clean_probs[k, labels[i]]), float(adv_probs[k, adv_pred[i]])
        titles = [f"clean: {true} ({p_clean:.2f})", f"attacked: {wrong} ({p_adv:.2f})",
                  f"perturbation ±{_in_255(epsilon)}", f"{options.saliency_method}, {true}",
                  f"{options.saliency_method}, {wrong}"]
        gallery.append({"index": int(positions[i]), "true": true, "adversarial": wrong,
                        "p_clean": p_clean, "p_adversarial": p_adv})
        arrays.append((images[i], kept[i], epsilon, clean_maps[k], adv_maps[k], titles))
    return gallery, arrays


def _comparison(ctx, options, images, labels, epsilons, positions) -> tuple[dict, dict]:
    """The compare model on the same images: its PGD curve and its saliency agreement."""
    from auditor.methods.attacks import attack_curves
    from auditor.methods.model_comparison import compare_saliency

    other = ctx.compare_handle
    names = ctx.dataset.class_names
    curves = attack_curves(other, images, labels, np.full(len(labels), -1), epsilons,
                           attacks=(MAIN_ATTACK,), steps=options.steps,
                           step_ratio=options.step_ratio, random_start=options.random_start,
                           seed=ctx.config.seed)
    compared = compare_saliency(ctx.handle, other, images, labels,
                                method=options.saliency_method)
    per_class = compared.per_class(labels, names)
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:10]
    arrays = (images[firsts], compared.maps_a[firsts], compared.maps_b[firsts],
              compared.agreement[firsts], [f"#{positions[i]}: {names[labels[i]]}" for i in firsts])
    summary = {"model": {"path": other.path, "name": other.name, "sha256": other.sha256},
               "method": options.saliency_method,
               "agreement": float(np.nanmean(compared.agreement)),
               "per_class": per_class, "accuracy": curves.accuracy[MAIN_ATTACK]}
    return summary, {"shown": {"per_class": per_class, "name": other.name,
                               "audited": ctx.handle.name}, "arrays": arrays}


def _baseline_accuracy(baseline: dict | None, epsilon: float) -> float | None:
    block = (baseline or {}).get(NAME) or {}
    for e, value in zip(block.get("epsilons", []), block.get("accuracy", []), strict=False):
        if np.isclose(e, epsilon):
            return value
    return None


def run(ctx: Context, options: Options) -> SectionResult:
    from auditor.inputs.datasets import sample_indices
    from auditor.methods.attacks import attack_curves, choose_targets

    if ctx.predictions.multilabel:
        return run_multilabel(ctx, options)
    _validate(options)
    p, names, epsilons = ctx.predictions, ctx.dataset.class_names, epsilon_grid(options)
    rule = resolve_target(options.target, names)
    positions = sample_indices(p.labels, options.samples, ctx.config.seed)
    images, labels = ctx.dataset.images(positions), p.labels[positions]
    targets = choose_targets(p.logits[positions], labels, rule)
    curves = attack_curves(ctx.handle, images, labels, targets, epsilons, steps=options.steps,
                           step_ratio=options.step_ratio, random_start=options.random_start,
                           seed=ctx.config.seed, keep_epsilon=options.check_epsilon,
                           logits=p.logits[positions])
    at = int(np.argmin(np.abs(np.asarray(epsilons) - options.check_epsilon)))
    robust = curves.accuracy[MAIN_ATTACK][at]
    summary = {
        "attack": MAIN_ATTACK, "epsilons": epsilons,
        "accuracy": curves.accuracy[MAIN_ATTACK],
        "targeted_success": curves.targeted_success[MAIN_ATTACK],
        "target": options.target, "samples": len(positions),
        "clean_accuracy": float(p.correct[positions].mean()),
        "check_epsilon": epsilons[at], "steps": options.steps,
        "per_attack": {name: {"accuracy": curves.accuracy[name],
                              "targeted_success": curves.targeted_success[name]}
                       for name in curves.accuracy},
    }
    x255 = [e * 255 for e in epsilons]
    series = {name.upper(): values for name, values in curves.accuracy.items()}
    data = RobustnessData(
        facts={"summary": summary, "check_epsilon_255": _in_255(epsilons[at]),
               "check_accuracy": robust,
               "rows": [{"epsilon": _in_255(e),
                         "values": [(curves.accuracy[name][k], curves.targeted_success[name][k])
                                    for name in curves.accuracy]}
                        for k, e in enumerate(epsilons)]},
        epsilons_255=x255, accuracy=series,
        targeted={name.upper(): values for name, values in curves.targeted_success.items()},
        plot_title=f"{len(positions)} images, {options.steps}-step PGD", target=options.target)
    if ctx.compare_handle is not None:
        summary["comparison"], data.comparison = _comparison(ctx, options, images, labels,
                                                             epsilons, positions)
        series[f"PGD, {ctx.compare_handle.name}"] = summary["comparison"]["accuracy"]
    data.gallery, data.gallery_arrays = _gallery(ctx, options, images, labels, curves,
                                                 epsilons[at], positions)
    check = ROBUST_ACCURACY.judge(robust, checks=ctx.config.checks, section=NAME,
                                  message=f"accuracy under {options.steps}-step PGD at epsilon "
                                          f"{_in_255(epsilons[at])}: {robust:.2%}",
                                  baseline=_baseline_accuracy(ctx.baseline, epsilons[at]))
    return SectionResult(
        name=NAME, title=TITLE,
        intro="How accuracy falls when every pixel may move by at most epsilon (display space, "
              "0-1 images) to fool the model: FGSM takes one signed gradient step, PGD several "
              "from a random start, so PGD's curve is the more honest one; an image the model "
              "already gets wrong is its own adversarial example at every epsilon. Targeted "
              f"attacks aim at a chosen wrong class ({options.target}). In the gallery the "
              "perturbation is magnified to the full colour scale.",
        summary={NAME: summary}, data=data, checks=[check])


@dataclass
class LabelSetData:
    """A multi-label model's curve: label-set accuracy and each label's accuracy per epsilon."""

    facts: dict


def label_set_curve(ctx: Context, options: Options, images, labels, epsilons):
    """(label-set accuracy per epsilon, {label: accuracy per epsilon}) under PGD on the label
    set: at epsilon 0 the clean decisions."""
    from auditor.methods.attacks import label_set_pgd

    p = ctx.predictions
    cuts = np.log(p.thresholds) - np.log1p(-p.thresholds)
    sets, per_label = [], []
    for epsilon in epsilons:
        attacked = images if epsilon == 0 else label_set_pgd(
            ctx.handle, images, labels, cuts, epsilon, steps=options.steps,
            step_ratio=options.step_ratio, random_start=options.random_start,
            seed=ctx.config.seed)
        decided = (forward(ctx.handle, attacked) >= cuts).astype(np.int8)
        sets.append(float((decided == labels).all(axis=1).mean()))
        per_label.append((decided == labels).mean(axis=0))
    names = ctx.dataset.class_names
    return sets, {name: [float(row[k]) for row in per_label] for k, name in enumerate(names)}


def run_multilabel(ctx: Context, options: Options) -> SectionResult:
    """Robustness of a multi-label model: the share of images whose whole label set survives
    PGD on their most fragile decision, per epsilon (targeted attacks and the gallery are a
    single-label model's: a label set has no runner-up class)."""
    from auditor.inputs.datasets import sample_indices

    _validate(options)
    p = ctx.predictions
    positions = sample_indices(p.labels, options.samples, ctx.config.seed)
    images, labels = ctx.dataset.images(positions), p.labels[positions]
    epsilons = epsilon_grid(options)
    sets, per_label = label_set_curve(ctx, options, images, labels, epsilons)
    at = int(np.argmin(np.abs(np.asarray(epsilons) - options.check_epsilon)))
    summary = {"attack": MAIN_ATTACK, "epsilons": epsilons, "accuracy": sets,
               "targeted_success": [], "samples": len(positions), "multilabel": True,
               "clean_accuracy": float(p.correct[positions].mean()),
               "check_epsilon": epsilons[at], "steps": options.steps,
               "label_accuracy": per_label}
    check = ROBUST_ACCURACY.judge(
        sets[at], checks=ctx.config.checks, section=NAME,
        message=f"images whose whole label set survives {options.steps}-step PGD at epsilon "
                f"{_in_255(epsilons[at])}: {sets[at]:.2%}",
        baseline=_baseline_accuracy(ctx.baseline, epsilons[at]))
    rows = [{"epsilon": _in_255(e), "sets": sets[k],
             "labels": [per_label[name][k] for name in per_label]}
            for k, e in enumerate(epsilons)]
    return SectionResult(
        name=NAME, title=TITLE,
        intro="How a multi-label model's decisions hold when every pixel may move by at most "
              "epsilon (display space, 0-1 images): PGD pushes each image's most fragile "
              "decision (the label whose logit is nearest its threshold) across its threshold, "
              "from a random start; accuracy is the share of images whose whole label set is "
              "still right, and each label's column the share of its decisions still right. "
              "Targeted attacks aim at one class and have no meaning for a label set.",
        summary={NAME: summary}, checks=[check],
        data=LabelSetData({"multilabel": True, "summary": summary, "rows": rows,
                           "names": list(per_label), "check_epsilon_255": _in_255(epsilons[at]),
                           "check_accuracy": sets[at]}))
