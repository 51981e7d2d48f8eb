"""What the model looks for: class and channel visualisations by input optimisation.

Each class gets the image that maximises its score (Simonyan et al. 2013), made natural by the
priors of the Distill feature-visualisation work: a 1/f Fourier parameterisation, an L2 pull
towards the dataset's mean image, a total-variation penalty and transformation robustness.
The images are then judged from outside the model: by a classifier trained on the dataset's
pixels alone, and by their total variation against the real images'. Unregularised images,
other starting points and the softmax objective are shown next to them for contrast.

A multi-label model's labels are independent sigmoids: each label's image maximises that
label's logit (its sigmoid, not a softmax, is the other objective), is read by the model as
recognisable when it raises the label's own sigmoid to the label's threshold (other labels may
rise with it: they are not exclusive), and by the judge when a per-label judge gives the label
a probability of at least 0.5; it is shown beside the real images with the highest logit for
the label.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from auditor.checks.declared import EXPLANATION, Declared
from auditor.errors import ConfigError, ModelError
from auditor.inputs.layers import conv_layers, find_layer
from auditor.methods.featureviz import objectives
from auditor.methods.featureviz.layers import no_channels_reason
from auditor.methods.featureviz.objectives import image_total_variation
from auditor.methods.featureviz.realism import default_judge_size, study_real_images
from auditor.methods.featureviz.recipes import INITS, Recipe, group
from auditor.methods.featureviz.render import render_forms
from auditor.methods.featureviz.top_images import top_activating
from auditor.predict.plan import Drop, Facts, Passes
from auditor.predict.predictions import logits_and_features
from auditor.sections.base import Context, SectionResult

NAME = "featureviz"
TITLE = "What the model looks for"
MULTI_LABEL = True  # each label's logit, judged per label (_label_verdicts)
NPZ_NAME = "class_visualization.npz"
# The class visualisations are an explanation of the model: these checks say how far they can
# be read (assigned to their class, recognised by an independent judge, natural-looking).
RECOGNISABLE = Declared("featureviz.recognisable", EXPLANATION, bounds={"warn_below": 0.8},
                        what="class visualisations the model assigns to their class")
JUDGE_AGREEMENT = Declared("featureviz.judge_agreement", EXPLANATION,
                           bounds={"warn_below": 0.5},
                           what="class visualisations an independent judge recognises")
NATURAL = Declared("featureviz.natural", EXPLANATION, bounds={"warn_below": 0.5},
                   what="class visualisations with the total variation of real images")
# A multi-label model's, per label: its image raises the label's sigmoid to the label's own
# decision threshold (the spec's ``threshold``, 0.5 by default: the bound is the model's own
# line between "label" and "no label", not a number of ours).
LABEL_RAISED = Declared("featureviz.label_raised.*", EXPLANATION, bounds={"warn_below": 0.5},
                        what="a label's visualisation raises its sigmoid to its threshold")
CHECKS = (RECOGNISABLE, JUDGE_AGREEMENT, NATURAL, LABEL_RAISED)
# The multi-label judge's bound: each label's logistic regression is fitted with balanced class
# weights, so its probability 0.5 is where a missed label and a false alarm cost the same.
JUDGE_SAYS_LABEL = 0.5


@dataclass
class Options:
    classes: list[str] = field(default_factory=list)  # class names; empty: the first max_classes
    max_classes: int = 10
    objective: str = "logit"  # logit (Simonyan et al.), probability or log_probability
    init: str = "zeros"  # zeros (all parameters zero), noise, or image (a dataset image)
    init_image: int = 0  # dataset position of the starting image for init "image"
    param: str = "fourier"  # fourier (1/f spectrum, decorrelated colour) or pixels
    valid: str = "sigmoid"  # pixels only: kept in [0, 1] by a sigmoid or by clipping
    decay_power: float = 1.0  # fourier: spectrum falls as 1/f**decay_power
    decorrelate: bool = True  # fourier, RGB: optimise decorrelated colour (Lucid)
    steps: int | None = None  # None: 256 up to 64 px, 128 above
    learning_rate: float = 0.05
    snapshots: list[int] = field(default_factory=lambda: [0, 16, 64, 256, 1024])
    # Penalty weights in units of the objective's spread over the real images, so that the
    # same numbers fit any model: l2 pulls towards l2_center ("mean" image of the data, the
    # zero of Simonyan et al.'s mean-subtracted input, or "zero"); tv is total variation.
    l2: float = 30.0
    l2_center: str = "mean"
    tv: float = 8.0
    jitter: float | None = None  # pixels; None: sized to the input (Lucid's 8 px at 224)
    scale: float | None = None  # zoom range +-; None: 10% up to 64 px, 5% above
    rotate: float | None = None  # degrees +-; None: 10
    blur_every: int = 0  # blur the images every N steps (0: never)
    blur_sigma: float = 0.5
    compare: bool | None = None  # also unregularised, other starts, the other objective;
    # None: on up to 64 px (the comparisons triple the cost, which large inputs feel)
    layers: list[str] = field(default_factory=list)  # conv layers; empty: the last one
    channels: list[int] = field(default_factory=list)  # empty: the most active channels
    max_channels: int = 8
    top_k: int = 5  # dataset images shown per channel
    judge_size: int | None = None  # judge thumbnails; None: 8 px up to 32 px inputs, else 16

    def __post_init__(self):  # the values that need no data (init_image is checked on it)
        validate(self, dataset_size=None)


# The compute plan (auditor.predict.plan) may lower these, never below the floor: 32 steps
# (the images' outline is there by 16-64 steps in the demo's snapshots) and 2 channels.
PLANNED = {"steps": 32, "max_channels": 2}
# What the section gives up when a named budget cannot hold it at the floors (predict/plan.py):
# the comparisons first (four of every five class images), then the channels (a trace and a
# pass over the data per layer), then the classes beyond three.
DROPS = (Drop("compare", False, "the comparisons (other starts, the other objective, the "
                                "unregularised images)"),
         Drop("max_channels", 0, "the channel visualisations"),
         Drop("max_classes", 3, "the class visualisations beyond the first three"))


def resolve(options: Options, facts: Facts) -> Options:
    """The options with the input-dependent default of ``steps`` filled in, for the plan."""
    if options.steps is not None:
        return options
    return dataclasses.replace(options, steps=default_steps(facts.size))


# A step of the render loop costs more than the gradient pass inside it: the random
# transforms, the Fourier parametrisation and the penalties run on every image too. Counted as
# one pass, the section took 1/0.46, 1/0.86 and 1/0.62 times its estimate on the digits CNN,
# the CIFAR-size CNN (300 images) and MobileNetV2 224 px (300 images) in bench/audit.py, so a
# step counts as two.
STEP_PASSES = 2
# The judge's work per real image, in reference kernels (plan.reference_kernel): a streaming
# pass for the mean image, total variation and thumbnails, and a logistic regression fitted on
# the thumbnails. Measured on 200 RGB digit composites at 48 px (16 px thumbnails, 10 classes):
# 17.4 s against a kernel of 24.5 ms under a load of 10 (MobileNetV3Small's audit), 3.5
# kernels an image. Its logistic regression (lbfgs) costs images x thumbnail values per
# iteration, and takes more iterations on more values: on MobileNetV2 at 32 px (8 px RGB
# thumbnails, 192 values against 768) the judge did not reach 0.9 s of the section's 53 s for
# 200 images (bench/traces.py --profile 80, kernel 11.1 ms: under 0.4 kernels an image, under
# a ninth for a quarter of the values), so the count grows with the square of the values
# (JUDGE_VALUES, the measurement's). The digits demo (8 px grey thumbnails, 64 values) is then
# 0.024 kernels an image; its featureviz section's time less its render was 1 to 2 s.
JUDGE_KERNELS = 3.5
JUDGE_VALUES = 16 * 16 * 3


def passes(options: Options, facts: Facts) -> Passes:
    """Every class image of every variant, every channel image and the unregularised class
    images take STEP_PASSES passes per step, in one compiled loop (one trace, of a loop:
    ``Passes.loops``; its rows at the time per row, each of its steps a call's fixed cost:
    ``Passes.looped``, ``Passes.loop_steps``); the top images of each layer's channels take a
    forward pass over the data, one trace per layer (none when no channel is shown). The
    judge's passes go through the prediction pass's function, traced already; its fit on the
    real images' thumbnails is work off the model (``JUDGE_KERNELS``, by the square of the
    thumbnails' values). tests/test_plan_accounting.py counts the traces."""
    steps = options.steps or default_steps(facts.size)
    compare = options.compare if options.compare is not None else facts.size <= 64
    classes = len(options.classes) or min(options.max_classes, facts.classes)
    runs = len(variants(options, compare)) + compare  # + the unregularised images
    shown = len(options.channels) or options.max_channels
    layers = max(1, len(options.layers)) if shown else 0
    side = options.judge_size or default_judge_size(facts.input_shape[0])
    values = side * side * facts.input_shape[-1]
    judge = JUDGE_KERNELS * (values / JUDGE_VALUES) ** 2 * facts.images
    return Passes(**real_images(facts, layers),
                  looped=STEP_PASSES * (classes * runs + layers * shown) * steps,
                  loop_steps=steps,
                  traces=1 + layers, loops=1, kernels=judge)


# Rows of the real images' batches before the memory budget: the CLI's --batch-size default
# (config/spec.py), which the section passes to ``top_activating``.
BATCH_ROWS = 64


def real_images(facts: Facts, layers: int) -> dict:
    """The forward rows of each shown layer's pass over the audit images, in the calls they
    run in (``Passes.called``, ``Passes.calls``: batches of BATCH_ROWS, or fewer when the
    memory budget's call holds fewer) when a call's rows are known: 200 images are 4 calls
    per layer, each paying a call's fixed cost once, not 200 rows at the timed 24-row call's
    time per image (a twenty-fourth of that cost each). Uncounted rows without it."""
    rows = facts.images * layers
    if facts.call_rows is None:
        return {"forward": rows}
    per_call = max(1, min(BATCH_ROWS, facts.call_rows))
    return {"called": rows, "calls": layers * -(-facts.images // per_call)}


def default_steps(size: int) -> int:
    """Enough for the digits demo to converge (its images barely change after 128 steps);
    large inputs cost far more per step."""
    return 256 if size <= 64 else 128


def chosen_classes(options: Options, class_names: list[str], labels: np.ndarray) -> list[int]:
    """The classes asked for, else the first ``max_classes`` that the data has (a multi-label
    model's: the labels some image carries)."""
    if options.classes:
        unknown = [c for c in options.classes if c not in class_names]
        if unknown:
            raise ConfigError(f"'featureviz.classes' names unknown class '{unknown[0]}'; "
                              f"classes: {', '.join(class_names[:20])}")
        return [class_names.index(c) for c in options.classes]
    present = np.flatnonzero(labels.sum(axis=0)) if labels.ndim == 2 else np.unique(labels)
    return [int(c) for c in present[: options.max_classes]]


def objective_spread(logits: np.ndarray, kind: str, multilabel: bool = False) -> float:
    """How much an objective varies over the real images: the unit of the penalty weights."""
    import tensorflow as tf

    values = ({"logit": lambda x: x, "probability": tf.sigmoid,
               "log_probability": tf.math.log_sigmoid} if multilabel else
              {"logit": lambda x: x, "probability": tf.nn.softmax,
               "log_probability": tf.nn.log_softmax})[kind](tf.constant(logits))
    spread = float(np.std(np.asarray(values)))
    return spread if spread > 0 else 1.0


def validate(options: Options, dataset_size: int | None) -> None:
    if options.objective not in objectives.CLASS_OBJECTIVES:
        raise ConfigError(f"'featureviz.objective' must be one of "
                          f"{', '.join(objectives.CLASS_OBJECTIVES)}, got {options.objective!r}")
    if options.init not in INITS:
        raise ConfigError(f"'featureviz.init' must be one of {', '.join(INITS)}, "
                          f"got {options.init!r}")
    if options.l2_center not in ("mean", "zero"):
        raise ConfigError(f"'featureviz.l2_center' must be 'mean' or 'zero', "
                          f"got {options.l2_center!r}")
    if dataset_size is not None and not 0 <= options.init_image < dataset_size:
        raise ConfigError(f"'featureviz.init_image' must be a dataset position from 0 to "
                          f"{dataset_size - 1}, got {options.init_image}")
    if options.steps is not None and options.steps < 1:
        raise ConfigError(f"'featureviz.steps' must be at least 1, got {options.steps}")


def variants(options: Options, compare: bool) -> list[tuple[str, str, str]]:
    """(label, init, objective) of the class runs; the first is the visualisation itself."""
    runs = [("regularised", options.init, options.objective)]
    if compare:
        runs += [(f"start: {init}", init, options.objective) for init in INITS
                 if init != options.init]
        other = "probability" if options.objective != "probability" else "logit"
        runs.append((f"objective: {other}", options.init, other))
    return runs


def renders(ctx: Context, options: Options, classes: list[int], recipe: Recipe, compare: bool,
            picks: list, layers: list[str]):
    """Every class image of every variant, every chosen channel's image and, with ``compare``,
    the unregularised class images (their own form: plain pixels, no transforms, no penalty,
    another learning rate), in one batch: one compiled loop and one forward and backward pass
    per step for all of them. A row's weights are zero for the terms of the other kind, so
    each image follows its own objective. Returns the runs (``variants``) and the rendering,
    whose images are the runs' classes in order, then the channels', then the unregularised."""
    runs = variants(options, compare)
    plain = classes if compare else []
    targets = classes * len(runs)
    kinds = ([kind for _, _, kind in runs for _ in classes] + [None] * len(picks)
             + [options.objective] * len(plain))
    multilabel = ctx.handle.multilabel
    spread = {k: objective_spread(ctx.predictions.logits, k, multilabel)
              for k in set(kinds) - {None}}
    padded = targets + [0] * len(picks) + plain
    objective = sum(target_objective(ctx.handle, kind, padded) * [float(k == kind) for k in kinds]
                    for kind in sorted(spread))
    if picks:
        pad, after = [0] * len(targets), [0] * len(plain)
        objective = objective + sum(
            objectives.channel(layer, pad + [c if name == layer else 0 for name, c, _ in picks]
                               + after)
            * (pad + [float(name == layer) for name, _, _ in picks] + after) for layer in layers)
    weights = np.array([spread[k] for k in kinds[:len(targets)]]
                       + [max(float(ex.std_activation[c]), 1e-6) for _, c, ex in picks]
                       + [0.0] * len(plain))  # the unregularised images have no penalty
    weighted = dataclasses.replace(recipe, l2=options.l2 * weights, tv=options.tv * weights)
    inits = [init for _, init, _ in runs for _ in classes] + ["zeros"] * len(picks)
    start = ctx.dataset.images([options.init_image])[0] if "image" in inits else None
    groups = [group(ctx.handle, recipe, len(inits), inits, start)]
    if plain:
        groups.append(group(ctx.handle, recipe.unregularised(), len(plain)))
    return runs, render_forms(ctx.handle, weighted.penalised(objective), groups, recipe.loop())


def target_objective(handle, kind: str, targets: list[int]) -> objectives.Objective:
    """The class objective ``kind`` of ``targets``: over the softmax, or for a multi-label
    model over each label's own sigmoid."""
    maker = objectives.label_objective if handle.multilabel else objectives.class_objective
    return maker(kind, targets)


def judge_images(ctx: Context, images: np.ndarray, targets: list[int], real) -> dict:
    """The model's and the judge's verdicts and the total variation, per image."""
    if ctx.handle.multilabel:
        return _label_verdicts(ctx, images, targets, real)
    probs = _probabilities(ctx.handle, images)
    judged = real.judge_predict(images)
    tv = image_total_variation(images).numpy()
    targets = np.asarray(targets)
    return {"confidence": probs[np.arange(len(targets)), targets],
            "predicted": probs.argmax(axis=1), "model_agrees": probs.argmax(axis=1) == targets,
            "judge": judged, "judge_agrees": judged == targets, "total_variation": tv,
            "natural": real.is_natural(tv), "tv_rank": real.tv_rank(tv)}


def _label_verdicts(ctx: Context, images: np.ndarray, targets: list[int], real) -> dict:
    """Per image, for its own label: the model's sigmoid against the label's threshold, the
    labels it raises (any may rise with it), the per-label judge's probability of the label
    (JUDGE_SAYS_LABEL), and the total variation."""
    probs = _probabilities(ctx.handle, images)
    rows, targets = np.arange(len(targets)), np.asarray(targets)
    thresholds = ctx.predictions.thresholds[targets]
    judged = real.judge_label_probabilities(images)[rows, targets]
    tv = image_total_variation(images).numpy()
    own = probs[rows, targets]
    return {"confidence": own, "threshold": thresholds, "model_agrees": own >= thresholds,
            "raised": probs >= ctx.predictions.thresholds, "judge": judged,
            "judge_agrees": judged >= JUDGE_SAYS_LABEL, "total_variation": tv,
            "natural": real.is_natural(tv), "tv_rank": real.tv_rank(tv)}


def _probabilities(handle, images: np.ndarray) -> np.ndarray:
    """The softmax over the classes, or a multi-label model's sigmoid of each label, through
    the prediction pass's compiled function, traced already: a function of its own would cost
    one more trace of the model for a few images."""
    import tensorflow as tf

    logits = logits_and_features(handle, images)[0]
    return (tf.sigmoid(logits) if handle.multilabel else tf.nn.softmax(logits)).numpy()


def _fractions(verdict: dict) -> dict[str, float]:
    return {"recognisable": float(np.mean(verdict["model_agrees"])),
            "judge_agreement": float(np.mean(verdict["judge_agrees"])),
            "natural": float(np.mean(verdict["natural"])),
            "mean_total_variation": float(np.mean(verdict["total_variation"]))}


def chosen_layers(model, wanted: list[str], model_name: str) -> list[str]:
    """The layers whose channels to show: those asked for, else the last convolutional one."""
    convs = [name for name, _ in conv_layers(model)]
    for layer in wanted:
        try:
            find_layer(model, layer)
        except ModelError:
            raise ConfigError(f"'featureviz.layers': model '{model_name}' has no layer named "
                              f"'{layer}'; convolutional layers: {', '.join(convs) or 'none'}"
                              ) from None
    return list(wanted) or convs[-1:]


def channel_picks(ctx: Context, options: Options, layers: list[str]) -> list[tuple]:
    """(layer, channel, top images of the layer) for the chosen channels of every layer: the
    channels asked for, else the most active ones over the data."""
    picks = []
    if not options.channels and options.max_channels == 0:
        return picks  # no channel shown: no top images to find
    for layer in layers:
        examples = top_activating(ctx.handle, ctx.dataset, layer, options.top_k,
                                  ctx.config.batch_size)
        if options.channels:
            bad = [c for c in options.channels if not 0 <= c < len(examples.mean_activation)]
            if bad:
                raise ConfigError(f"'featureviz.channels' has channel {bad[0]}, but layer "
                                  f"'{layer}' has {len(examples.mean_activation)} channels")
            channels = list(options.channels)
        else:
            channels = [int(c) for c in np.argsort(-examples.mean_activation,
                                                   kind="stable")[: options.max_channels]]
        picks += [(layer, c, examples) for c in channels]
    return picks


@dataclass
class FeaturevizData:
    """What the figures are drawn from: every run's images with their verdicts, the
    optimisation's snapshots, the real images' total variation and the channels' images."""

    facts: dict  # the tables and numbers the partial shows as they are
    class_rows: list[dict]
    class_names: list[str]  # of the visualised classes, in order
    per_run: dict  # variant label -> its class images
    verdicts: dict  # variant label -> judge_images() verdicts
    compare: bool
    evolution: dict  # step -> class images at that step
    evolution_confidence: dict  # step -> the model's probability of each class
    real_tv: np.ndarray  # total variation of every real image
    natural_bound: float  # their 95th percentile: an image at most this is natural (realism.py)
    channel_rows: list[dict]
    channel_images: np.ndarray | None  # each chosen channel's visualisation
    top_images: np.ndarray | None  # (channels, top_k, H, W, C) dataset images exciting it
    # A multi-label model's: (labels, top_k, H, W, C) the images with the label's highest logit
    label_top_images: np.ndarray | None = None


def run(ctx: Context, options: Options) -> SectionResult:
    validate(options, ctx.dataset.n)
    timings = {}
    tick = time.perf_counter()
    handle, names = ctx.handle, ctx.dataset.class_names
    layers = chosen_layers(handle.logits_model, options.layers, handle.name)
    classes = chosen_classes(options, names, ctx.predictions.labels)
    real = study_real_images(ctx.dataset, ctx.config.batch_size, options.judge_size,
                             ctx.config.seed)
    timings["real images"] = time.perf_counter() - tick
    steps = options.steps or default_steps(handle.input_shape[0])
    recipe = make_recipe(options, steps, real, ctx.config.seed)
    tick = time.perf_counter()
    picks = channel_picks(ctx, options, layers)
    timings["top images"] = time.perf_counter() - tick

    tick = time.perf_counter()
    compare = options.compare if options.compare is not None else handle.input_shape[0] <= 64
    runs, rendering = renders(ctx, options, classes, recipe, compare, picks, layers)
    timings["classes and channels"] = time.perf_counter() - tick
    k = len(classes)
    per_run = {label: rendering.images[i * k:(i + 1) * k] for i, (label, _, _) in enumerate(runs)}
    channel_images = rendering.images[len(runs) * k:len(runs) * k + len(picks)]
    if compare:
        per_run["unregularised"] = rendering.images[len(runs) * k + len(picks):]
    verdicts = {label: judge_images(ctx, images, classes, real)
                for label, images in per_run.items()}
    np.savez(ctx.workdir / NPZ_NAME, images=per_run["regularised"],
             classes=np.array([names[c] for c in classes]))

    tick = time.perf_counter()
    evolution = {step: images[:k] for step, images in rendering.snapshots.items()}
    evolution_confidence = {step: _probabilities(handle, images)[np.arange(k), classes]
                            for step, images in evolution.items()}
    class_rows, label_top = _rows(ctx, verdicts, classes, options.top_k, real)
    comparison = {label: _fractions(v) for label, v in verdicts.items()}
    channels, top_images = _channel_rows(ctx, picks)
    percentiles = real.tv_percentiles()
    note = None if layers else no_channels_reason(handle.logits_model)
    data = FeaturevizData(
        facts={"comparison": comparison, "steps": steps, "objective": options.objective,
               "channels_note": note, "param": options.param, "judge_size": real.judge_size,
               "judge_accuracy": real.judge_accuracy, "real_tv": percentiles, "npz": NPZ_NAME},
        class_rows=class_rows, class_names=[names[c] for c in classes], per_run=per_run,
        verdicts=verdicts, compare=compare, evolution=evolution,
        evolution_confidence=evolution_confidence, real_tv=real.total_variation,
        channel_rows=channels, top_images=top_images, natural_bound=percentiles["p95"],
        channel_images=channel_images if picks else None, label_top_images=label_top)
    timings["snapshots"] = time.perf_counter() - tick
    summary = _summary(class_rows, comparison, percentiles, real, options, steps, channels)
    summary.update(channels_note=note, seconds=timings)
    return _result(ctx, summary, class_rows, real, data)


def _result(ctx: Context, summary: dict, rows: list[dict], real, data) -> SectionResult:
    """The section's result: a multi-label model's summary and checks per label too."""
    seen = sum(row.get("top_judge_probability", 0.0) >= JUDGE_SAYS_LABEL for row in rows)
    note = (f" (it sees the label on the real images with the label's highest logit for "
            f"{seen} of {len(rows)} labels)" if ctx.handle.multilabel else "")
    checks = _checks(ctx, summary["comparison"]["regularised"], len(rows), note)
    if ctx.handle.multilabel:
        summary, checks = _label_summary(summary, rows, real), checks + _label_checks(ctx, rows)
    return SectionResult(name=NAME, title=TITLE, intro=LABEL_INTRO if ctx.handle.multilabel
                         else INTRO, summary={NAME: summary}, data=data, checks=checks)


def make_recipe(options: Options, steps: int, real, seed: int) -> Recipe:
    return Recipe(param=options.param, valid=options.valid, decay_power=options.decay_power,
                  decorrelate=options.decorrelate, steps=steps,
                  learning_rate=options.learning_rate,
                  l2_center=real.mean_image if options.l2_center == "mean" else 0.0,
                  jitter=options.jitter, scale=options.scale, rotate=options.rotate,
                  blur_every=options.blur_every, blur_sigma=options.blur_sigma,
                  snapshots=tuple(options.snapshots), seed=seed)


def _rows(ctx: Context, verdicts: dict, classes: list[int], top_k: int, real):
    """The table's rows, one per class (or label, with its top images; else None)."""
    main, plain = verdicts["regularised"], verdicts.get("unregularised")
    if ctx.handle.multilabel:
        return _label_rows(ctx, main, plain, classes, top_k, real)
    return _class_rows(main, plain, classes, ctx.dataset.class_names), None


def _class_rows(main: dict, plain: dict | None, classes: list[int], names: list[str]):
    """One row per visualised class: the model's and the judge's verdicts, and the
    unregularised image's beside them when it was made."""
    return [{
        "name": names[c],
        "confidence": float(main["confidence"][i]), "predicted": names[main["predicted"][i]],
        "model_agrees": bool(main["model_agrees"][i]),
        "judge": _name(names, main["judge"][i]), "judge_agrees": bool(main["judge_agrees"][i]),
        "total_variation": float(main["total_variation"][i]),
        "tv_rank": float(main["tv_rank"][i]), "natural": bool(main["natural"][i]),
        **({"plain": _plain_row(plain, i, names)} if plain is not None else {}),
    } for i, c in enumerate(classes)]


def _summary(class_rows, comparison, percentiles, real, options: Options, steps: int,
             channels) -> dict:
    return {
        "classes": {row["name"]: {key: row[key] for key in (
            "confidence", "predicted", "model_agrees", "judge", "judge_agrees",
            "total_variation", "tv_rank", "natural")} for row in class_rows},
        **comparison["regularised"],
        "comparison": comparison,
        "natural_statistics": {
            "measure": "total variation: mean absolute difference between neighbouring pixels "
                       "(down plus right)",
            "real_total_variation": percentiles,
            "natural_if_at_most": percentiles["p95"]},
        "judge": {"model": f"logistic regression on {real.judge_size}x{real.judge_size} "
                           "thumbnails of the dataset, never shown the audited model",
                  "held_out_accuracy": real.judge_accuracy},
        "settings": {"objective": options.objective, "param": options.param, "init": options.init,
                     "steps": steps, "l2": options.l2, "tv": options.tv},
        "channels": {layer: [{key: ch[key] for key in ("channel", "mean_activation",
                                                       "top_positions")}
                             for ch in channels if ch["layer"] == layer]
                     for layer in dict.fromkeys(ch["layer"] for ch in channels)},
        "npz": NPZ_NAME,
    }


INTRO = ("Each class's image is the input that maximises the model's score for it, regularised "
         "to look natural: if you recognise the class, the model has learnt something like it. "
         "The model's own confidence proves little (noise can score 100%), so an independent "
         "judge, a simple classifier trained on the dataset's pixels alone, says whether the "
         "class is visible, and total variation (how much neighbouring pixels differ) says "
         "whether the image is as smooth as real ones. Hidden channels are shown next to the "
         "dataset images that excite them most.")


LABEL_INTRO = ("Each label's image is the input that maximises the model's logit for that label "
               "alone (the labels are independent sigmoids, so others may rise with it), "
               "regularised to look natural, and shown beside the real images with the "
               "highest logit for the label: if you see what they share, the model has learnt "
               "something like it. The model's own sigmoid proves little (noise can raise it), "
               "so an independent judge per label, a balanced logistic regression on the "
               "dataset's pixels alone, says whether the label is visible, and total variation "
               "says whether the image is as smooth as real ones.")


def _label_rows(ctx: Context, main: dict, plain: dict | None, labels: list[int],
                top_k: int, real) -> tuple[list[dict], np.ndarray]:
    """One row per visualised label: its sigmoid against its threshold, the labels the image
    raises, the judge's probability of the label; and the ``top_k`` real images with the
    label's highest logit (from the prediction pass), which the image should resemble, with
    the judge's mean probability of the label on them: its reference (a judge that does not
    see the label even there says little when it does not see it in the image)."""
    names, logits = ctx.dataset.class_names, ctx.predictions.logits
    top = np.argsort(-logits[:, labels], axis=0, kind="stable")[:top_k].T  # (labels, k)
    images = ctx.dataset.images(top.ravel()).reshape(*top.shape, *ctx.handle.input_shape)
    on_top = real.judge_label_probabilities(images.reshape(-1, *images.shape[2:])).reshape(
        *top.shape, -1)
    rows = []
    for i, c in enumerate(labels):
        raised = [names[k] for k in np.flatnonzero(main["raised"][i])]
        rows.append({
            "name": names[c], "confidence": float(main["confidence"][i]),
            "threshold": float(main["threshold"][i]), "model_agrees": bool(main["model_agrees"][i]),
            "raised": raised, "predicted": ", ".join(raised) or "no label",
            "judge_probability": float(main["judge"][i]),
            "judge": f"{names[c]} p {float(main['judge'][i]):.2f}",
            "judge_agrees": bool(main["judge_agrees"][i]),
            "top_judge_probability": float(on_top[i, :, c].mean()),
            "total_variation": float(main["total_variation"][i]),
            "tv_rank": float(main["tv_rank"][i]), "natural": bool(main["natural"][i]),
            "top_positions": [int(p) for p in top[i]],
            "top_logits": [float(logits[p, c]) for p in top[i]],
            **({"plain": {"confidence": float(plain["confidence"][i]),
                          "judge": f"{names[c]} p {float(plain['judge'][i]):.2f}",
                          "judge_agrees": bool(plain["judge_agrees"][i]),
                          "total_variation": float(plain["total_variation"][i]),
                          "natural": bool(plain["natural"][i])}} if plain is not None else {}),
        })
    return rows, images


LABEL_KEYS = ("confidence", "threshold", "model_agrees", "raised", "judge_probability",
              "judge_agrees", "top_judge_probability", "total_variation", "tv_rank", "natural",
              "top_positions")


def _label_summary(summary: dict, rows: list[dict], real) -> dict:
    """The multi-label summary: ``labels`` (per label) in place of ``classes``, and the judge
    said as the per-label judge it is."""
    summary = {k: v for k, v in summary.items() if k != "classes"}
    summary.update(
        multilabel=True,
        labels={row["name"]: {key: row[key] for key in LABEL_KEYS} for row in rows},
        judge={"model": f"one logistic regression per label (balanced class weights) on "
                        f"{real.judge_size}x{real.judge_size} thumbnails of the dataset, never "
                        "shown the audited model; it sees the label at probability "
                        f"{JUDGE_SAYS_LABEL} or more",
               "held_out_accuracy": real.judge_accuracy,
               "accuracy": "balanced accuracy per label on held-out images, averaged"})
    return summary


def _label_checks(ctx: Context, rows: list[dict]) -> list:
    """Per label: its visualisation raises its own sigmoid to the label's threshold."""
    spec = ctx.config.checks
    return [LABEL_RAISED.judge(
        row["confidence"], checks=spec, name=row["name"], section=NAME,
        bounds={"warn_below": row["threshold"]},
        message=f"the visualisation of label '{row['name']}' raises its sigmoid to "
                f"{row['confidence']:.2f} (threshold {row['threshold']:.2f}); it also raises: "
                f"{', '.join(r for r in row['raised'] if r != row['name']) or 'no other label'}")
        for row in rows]


def _name(names: list[str], index) -> str:
    index = int(index)
    return names[index] if 0 <= index < len(names) else str(index)


def _plain_row(verdict: dict, i: int, names: list[str]) -> dict:
    return {"confidence": float(verdict["confidence"][i]),
            "judge": _name(names, verdict["judge"][i]),
            "judge_agrees": bool(verdict["judge_agrees"][i]),
            "total_variation": float(verdict["total_variation"][i]),
            "natural": bool(verdict["natural"][i])}


def _label_text(dataset, position) -> str:
    """A dataset image's class, or a multi-label image's label set ("a|b", "no label")."""
    label = dataset.labels[position]
    if np.ndim(label) == 0:
        return dataset.class_names[int(label)]
    return "|".join(dataset.class_names[k] for k in np.flatnonzero(label)) or "no label"


def _channel_rows(ctx: Context, picks) -> tuple[list[dict], np.ndarray | None]:
    """A row per chosen channel, and the dataset images that excite each most."""
    if not picks:
        return [], None
    positions = np.stack([examples.top_positions[channel] for _, channel, examples in picks])
    images = ctx.dataset.images(positions.ravel()).reshape(*positions.shape,
                                                           *ctx.handle.input_shape)
    rows = []
    for i, (layer, channel, examples) in enumerate(picks):
        rows.append({
            "layer": layer, "channel": int(channel),
            "mean_activation": float(examples.mean_activation[channel]),
            "top_positions": [int(p) for p in positions[i]],
            "top_values": [float(v) for v in examples.top_values[channel]],
            "top_labels": [_label_text(ctx.dataset, p) for p in positions[i]],
        })
    return rows, images


def _checks(ctx: Context, fractions: dict, count: int, judge_note: str = "") -> list:
    def baseline(key):
        return ((ctx.baseline or {}).get(NAME) or {}).get(key)

    spec, labels = ctx.config.checks, ctx.handle.multilabel
    recognised = (f"{fractions['recognisable']:.0%} of {count} label visualisations raise "
                  "their own label's sigmoid to its threshold" if labels else
                  f"the model assigns {fractions['recognisable']:.0%} of {count} class "
                  "visualisations to their class")
    return [
        RECOGNISABLE.judge(fractions["recognisable"], checks=spec, section=NAME,
                           message=recognised, baseline=baseline("recognisable")),
        JUDGE_AGREEMENT.judge(fractions["judge_agreement"], checks=spec, section=NAME,
                              message=f"an independent judge{' per label' if labels else ''} "
                                      f"recognises {fractions['judge_agreement']:.0%} of the "
                                      f"{'label' if labels else 'class'} visualisations"
                                      + judge_note,
                              baseline=baseline("judge_agreement")),
        NATURAL.judge(fractions["natural"], checks=spec, section=NAME,
                      message=f"{fractions['natural']:.0%} of the class visualisations have "
                              "the total variation of real images",
                      baseline=baseline("natural")),
    ]
