"""Clever Hans: does the model score well for the wrong reason, and could this audit tell?

Two halves. The injection test plants known shortcuts in fine-tuned copies of the model and
checks that they are learned (without saliency) and visible (with it): a positive control for
every saliency figure in the report. Discovery looks for unknown shortcuts in the model as it
is: spectral relevance analysis per class on its maps and on its penultimate features, each
suspect group proved or not by intervention (methods/shortcuts/search.py), image properties
that move the model's output beyond the label, and the features in two dimensions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from auditor.checks.check import Check
from auditor.checks.declared import EXPLANATION, Declared
from auditor.errors import ConfigError, ModelError
from auditor.methods.attribution.trust import TRUST_BOUNDS, trust_check
from auditor.methods.shortcuts.injection import InjectionSettings
from auditor.methods.shortcuts.search import Sample
from auditor.predict.plan import Drop, Facts, Passes
from auditor.sections.base import Context, KeyFigure, SectionResult, at_least

NAME = "clever_hans"
# Whether the section could see a shortcut: a planted shortcut's visibility to the methods,
# and whether it was planted at all, are about the instruments (the card's shortcut columns).
INJECTION = Declared("clever_hans.injection", EXPLANATION, what="the injection test ran")
PLANTED = Declared("clever_hans.injection.*", EXPLANATION,
                   what="a planted shortcut seen by the methods (control: nothing seen)")
# The findings about the model itself.
FLAGGED_CLASSES = Declared("clever_hans.flagged_classes", figure="flagged_classes",
                           what="classes confirmed to rely on a shortcut",
                           bounds={"warn_above": 0})
FLAGGED_PROPERTIES = Declared("clever_hans.flagged_properties", figure="flagged_classes",
                              what="image properties confirmed to raise a class's score",
                              bounds={"warn_above": 0})
# No silent blessing: discovery and visibility are only as good as their methods.
METHODS_TRUSTED = Declared("clever_hans.methods_trusted", bounds=TRUST_BOUNDS,
                           what="the shortcut findings rest on trusted methods")
CHECKS = (INJECTION, PLANTED, FLAGGED_CLASSES, FLAGGED_PROPERTIES, METHODS_TRUSTED)
STEPS = ("features",)  # the search's second signal and the embedding (steps/features.py)
TITLE = "Clever Hans: shortcuts"
MULTI_LABEL = True  # the injection test and the discovery search per label (run_multilabel)
# Not gradient x input by default: it puts mass on bright pixels whatever the model learned, so
# a bright planted patch draws it even in the control copy (a false alarm, not a detection).
PREFERRED_METHODS = ("gradient", "gradcam")
# Discovery on a multi-label model when neither the spec nor a reliability card chooses its
# method. Its maps are its only signal (a label set has no per-class features or properties to
# search), so the method must see a local mark itself. Measured (bench/multilabel.py, models
# other than the tests'): a corner patch tied to one label was found and confirmed by gradient
# x input's maps on both architectures, by the gradient's and Grad-CAM's on one each; with the
# flips alone confirming a label (label_discovery.py), none of the three confirmed anything in
# 14 label searches with nothing planted. Its bias towards bright pixels, the reason it is not
# an injection test default above, makes candidates, which the intervention then judges.
LABEL_DISCOVERY_METHOD = "gradient_x_input"


def flagged_classes(summary: dict) -> list[str] | None:
    """The classes discovery flagged; None when the run has no discovery."""
    block = (summary.get(NAME) or {}).get("discovery")
    return None if block is None else list(block["flagged_classes"])


def _suspects(summary: dict) -> int | None:
    flagged = flagged_classes(summary)
    return None if flagged is None else len(flagged)


def _suspects_detail(summary: dict) -> str:
    flagged = flagged_classes(summary)
    if not flagged:
        return "no class flagged for a shortcut"
    return "classes flagged: " + ", ".join(flagged[:6]) + (" …" if len(flagged) > 6 else "")


KEY_FIGURES = (KeyFigure(
    "flagged_classes", "Clever Hans", "Clever Hans suspects", NAME, _suspects,
    text=lambda summary, count: str(count) if count else "none", detail=_suspects_detail,
    status=lambda summary, status: "warn" if _suspects(summary) and status == "info" else status,
    rank=30),)


@dataclass
class Options:
    methods: list[str] | None = None  # default: those of PREFERRED_METHODS the model takes
    shortcuts: list[str] = field(default_factory=lambda: ["patch", "watermark"])
    control: bool = True
    target_class: str | None = None  # default: the class with the most audit images
    shortcut_options: dict = field(default_factory=dict)  # {shortcut: {option: value}}
    # The injection test's settings: their defaults and meaning are InjectionSettings'.
    steps: int = InjectionSettings.steps  # fine-tuning steps per copy
    batch_size: int = InjectionSettings.batch_size
    learning_rate: float = InjectionSettings.learning_rate
    relabel: float = InjectionSettings.relabel
    explain: int = InjectionSettings.explain
    flip_threshold: float = InjectionSettings.flip_threshold
    gap_threshold: float = InjectionSettings.gap_threshold
    detect_ratio: float = InjectionSettings.detect_ratio
    control_margin: float = InjectionSettings.control_margin
    visible_change: float = InjectionSettings.visible_change
    max_train: int = 1000  # images for fine-tuning (from train_data, or split from data)
    max_eval: int = 500
    discovery: bool = True
    # default: the card's best trusted, else methods[0] (a multi-label model's, unless
    # methods is set: LABEL_DISCOVERY_METHOD)
    discovery_method: str | None = None
    # The most passes one discovery map may cost when the method comes from the card (None:
    # any); the plan writes out its default and may lower it (PLANNED).
    discovery_map_cost: int | None = None
    max_per_class: int = 150
    max_discovery: int = 3000  # images explained for discovery, over all classes
    grid: int = InjectionSettings.grid  # maps are pooled to grid x grid cells to cluster
    max_others: int = InjectionSettings.max_others  # images an intervention pastes onto
    copy_classes: int | None = InjectionSettings.copy_classes  # None: every class
    k_max: int = 5  # most clusters per class the eigengap may choose
    show_classes: int = 10
    max_embedding: int = 500  # images in the penultimate-feature t-SNE

    def __post_init__(self):
        from auditor.methods.shortcuts.patterns import INJECTORS

        resolve_methods(self)
        at_least(NAME, self, 1, "discovery_map_cost", "copy_classes")
        for name in self.shortcuts:
            if name not in INJECTORS:
                raise ConfigError(f"'clever_hans.shortcuts' names unknown shortcut '{name}'; "
                                  f"choose from: {', '.join(INJECTORS)}")


# The compute plan (auditor.predict.plan) may lower these, never below the floor: 25
# fine-tuning steps of 32 images show 800 poisoned-or-clean images to each copy (a copy that
# does not learn in that time is reported "not learned", which says nothing either way); 200
# images to fine-tune on and 200 to measure on; 16 images explained per method (8 of the target
# class); 100 images for discovery over all classes; each intervention pasted onto 25 images
# of other classes (the flip-rate excess is then known to about +-0.2, its bootstrap 95%
# interval: a shortcut with an excess of 0.45 or more still passes FLIP_BOUND, 0.2, at the
# interval's lower end; a weaker one is listed as an unconfirmed candidate, never a false
# finding, because a wider interval only lowers the lower end).
# The search on each copy puts at least 3 classes to the intervention: the target (the planted
# shortcut's recall) and two others, the flagged ones first (where a false flag would be), so
# that a copy's false flags are still looked for, among fewer classes (the summary says which).
# Discovery's maps, when their method comes from the reliability card, may cost as little as
# 1 pass each: the fallback's (methods[0], gradient by default), which runs whatever the allowance.
PLANNED = {"steps": 25, "max_train": 200, "max_eval": 200, "explain": 16, "max_discovery": 100,
           "max_others": 25, "copy_classes": 3, "discovery_map_cost": 1}
# The shares of their bounds that the searches' interventions run, counted in the model's graph
# over the whole section at the plan's floors (each copy's search and the audited model's):
# the suspect groups' interventions (search_forward) 0.76 on the CIFAR-size CNN of
# bench/audit.py (300 images) and 0.78 on the digits CNN (1,000 images); the property
# interventions (properties.forward_passes, at most MAX_CANDIDATES per search) 0.31 and 0.40:
# a search puts 6 to 8 screened properties to the test, not 20.
SEARCH_SHARE = 0.75
# Given up when a named budget cannot hold the section at the floors (predict/plan.py): the
# planted shortcuts beyond the first (each a fine-tuned copy measured and searched), then the
# search on the audited model, then the control copy (fine-tuned and measured like a planted
# one: without it a method's mass on the shortcut is judged by the detection ratio alone, not
# against its false alarm on a copy that never saw the shortcut), then the injection test
# itself (its copies' training step, a trace of its own, and their fine-tuning: the property
# check stays).
DROPS = (Drop("shortcuts", lambda options: options.shortcuts[:1],
              "the planted shortcuts beyond the first"),
         Drop("discovery", False, "the shortcut search on the audited model"),
         Drop("control", False, "the control copy (the methods' false alarms)"),
         Drop("shortcuts", [], "the planted-shortcut injection test"))
# Lowered below their floors, down to these, when a named budget cannot hold the floors on
# this model (predict/plan.py ``_thinned``; every check then says it was not measured, so a
# property or class flagged on so few images is shown, never a finding): 30 images for the
# search and the property check (three per class of ten), 10 images per intervention.
THIN = {"max_discovery": 30, "max_others": 10}
PROPERTY_SHARE = 0.35


def passes(options: Options, facts: Facts) -> Passes:
    """Each copy's fine-tuning steps; per planted shortcut and per control probe, the
    re-prediction of the held-out images clean and with the shortcut, the maps of the explained
    images, and the whole shortcut search on the copy (the logits and features of its sample in
    one pass, their maps, the interventions); and the search on the audited model (its maps,
    interventions and the property check's interventions; its logits and features are the
    prediction pass's); with the concepts section, the copies' neuron groups."""
    from auditor.methods.attribution.registry import attribution_rows
    from auditor.methods.shortcuts.properties import forward_passes

    if facts.multilabel:
        return label_passes(options, facts)
    methods, discovery = resolve_methods(options)
    copies = len(options.shortcuts) + options.control
    if facts.train_images is not None:
        train = min(options.max_train, facts.train_images)
        held = min(options.max_eval, facts.images)
    else:
        train = min(options.max_train + options.max_eval, facts.images) // 2
        held = train
    measures = len(options.shortcuts) * (1 + options.control) if copies else 0
    per_class = search_per_class(options, facts.classes)
    own = held / facts.classes
    copy_sample = int(own + (facts.classes - 1) * min(per_class, own))
    explained = attribution_rows(methods, options.explain, facts.input_shape)
    searched = attribution_rows(methods[:1], copy_sample, facts.input_shape)
    sampled = min(per_class * facts.classes, facts.images)
    found = discovery_rows(options, facts, discovery, sampled) if options.discovery else (0, 0)
    copy_classes = min(options.copy_classes or facts.classes, facts.classes)
    tuning = Passes(forward=train if copies else 0,
                    train=copies * options.steps * options.batch_size,
                    traces=traced(options, facts), copies=int(copies > 0 and not card(facts)),
                    train_traces=int(copies > 0))
    # each copy's predictions on the held-out images with each shortcut, and clean (the
    # control's once for all its probes), a call each; and the copies' interventions, a call each
    predictions = measures + len(options.shortcuts) + options.control
    measuring = Passes(
        forward=measures * (copy_sample + explained[0] + searched[0]),
        called=predictions * held + measures * expected_interventions(
            copy_sample, facts.classes, options.max_others, copy_classes),
        calls=predictions + measures * intervention_calls(copy_sample, facts.classes,
                                                          copy_classes),
        backward=measures * (explained[1] + searched[1]))
    audited = Passes(forward=found[0], backward=found[1],
                     # the property check runs with discovery off too
                     called=PROPERTY_SHARE * forward_passes(sampled, facts.classes,
                                                            options.max_others)
                     + (SEARCH_SHARE * search_forward(sampled, facts.classes, options.max_others)
                        if options.discovery else 0),
                     calls=intervention_calls(sampled, facts.classes,
                                              discovery=options.discovery))
    # with the concepts section: each measured copy's neuron groups, fitted on the explained
    # images with and without the shortcut, and attributed to every class on the marked ones
    groups = Passes(forward=measures * 2 * options.explain,
                    backward=measures * options.explain * facts.classes) \
        if "concepts" in facts.sections else Passes()
    return tuning + measuring + audited + groups


def label_passes(options: Options, facts: Facts) -> Passes:
    """A multi-label model's (``run_multilabel``): per planted shortcut, a control copy and a
    poisoned copy fine-tuned on half the sample (after one pass for its sigmoid targets), each
    copy's maps of the explained images, and the poisoned copy's decisions on the other half,
    clean and marked; no shortcut search on the copies. Discovery: every (image, label) pair of
    each label's sample explained in one batched pass, and the interventions on each label's
    suspect group (three regions, each on the group, the label's other images and at most
    ``max_others`` images without it; SEARCH_SHARE of that bound). The traces are the
    single-label declaration's (``traced``): a bound."""
    from auditor.methods.attribution.registry import attribution_rows

    methods, discovery = resolve_methods(options)
    shortcuts = len(options.shortcuts)
    sample = min(options.max_train + options.max_eval, facts.images)
    fit, held = sample // 2, sample - sample // 2
    explained = attribution_rows(methods, min(options.explain, held), facts.input_shape)
    injection = Passes(forward=shortcuts * (fit + 2 * held + 2 * explained[0]),
                       backward=shortcuts * 2 * explained[1],
                       train=shortcuts * 2 * options.steps * options.batch_size,
                       traces=traced(options, facts),
                       copies=int(shortcuts > 0 and not card(facts)),
                       train_traces=int(shortcuts > 0))
    if not options.discovery:
        return injection
    per_label = search_per_class(options, facts.classes)
    pairs = min(per_label * facts.classes, facts.images * facts.classes)
    rows = discovery_rows(options, facts, discovery, pairs)
    own = min(per_label, facts.images)
    return injection + Passes(
        forward=rows[0] + SEARCH_SHARE * facts.classes * 3 * (own + options.max_others),
        backward=rows[1])


def card(facts: Facts) -> bool:
    """Whether the run makes the reliability card, which makes the working copy first."""
    from auditor.steps.card import makes_card

    return makes_card(facts)


def traced(options: Options, facts: Facts) -> int:
    """The functions the section traces besides the copies' training step (traced once for all of
    them on the audit's working copy, inputs/copies.py, and counted apart as
    ``Passes.train_traces``): with the concepts section two for the neuron groups (their activations
    and gradients at the copy's layer: a bound, shared with the concepts section's when it taps the
    same layers; not held to a count by tests/test_traces.py). The copy calls the model's own traces
    (inputs/traces.py) of its re-predictions (the logits the plan's timing traced), of the search's
    logits and features (the prediction pass's) and of the attribution passes, so the methods'
    passes, on the copies and the discovery's on the audited model (its fallback's; the card's own
    choice is traced), are traced once for both, and only those the reliability card did not trace
    already. A working copy that is not the model's twin (``Facts.twin_copy``) traces its own: its
    logits, the search's logits and features, and its methods' passes."""
    from auditor.methods.attribution.registry import compiled_passes
    from auditor.steps.card import DEFAULT_METHODS

    methods, fallback = resolve_methods(options)
    carded = (() if not card(facts) else
              DEFAULT_METHODS if facts.card_methods is None else facts.card_methods)
    copies = bool(len(options.shortcuts) + options.control)
    explained = ((compiled_passes(methods, "logit") if copies else set())
                 | (compiled_passes([fallback], "logit") if options.discovery else set()))
    own = 2 * ("concepts" in facts.sections) if copies else 0
    if copies and not facts.twin_copy:
        own += 2 + len(compiled_passes(methods, "logit", fresh=True))
    return own + len(explained - compiled_passes(carded, facts.card_score))


def discovery_rows(options: Options, facts: Facts, fallback: str, images: int) -> tuple:
    """(forward, backward) rows of discovery's maps: by the spec's method, else as the dearest
    method the card may choose within ``discovery_map_cost`` would (the fallback included)."""
    from auditor.methods.attribution.registry import attribution_rows
    from auditor.steps.card import affordable

    methods = ([fallback] if options.discovery_method is not None
               else affordable(facts, options.discovery_map_cost, fallback))
    return max((attribution_rows([m], images, facts.input_shape) for m in methods),
               key=lambda rows: Passes(forward=rows[0], backward=rows[1]).total)


def resolve(options: Options, facts: Facts) -> Options:
    """The options with the defaults the plan needs written out: ``copy_classes`` (every
    class), and ``discovery_map_cost`` when the card chooses discovery's method (what the
    dearest method it may choose costs per map here, so that unplanned its best is used)."""
    from auditor.steps.card import card_map_cost

    if options.copy_classes is None:
        options = dataclasses.replace(options, copy_classes=facts.classes)
    if (options.discovery and options.discovery_method is None
            and options.discovery_map_cost is None):
        options = dataclasses.replace(options, discovery_map_cost=card_map_cost(
            facts, resolve_methods(options)[1]))
    return options


def search_forward(images: int, classes: int, max_others: int,
                   searched: int | None = None) -> int:
    """Forward rows of the interventions of one shortcut search (methods/shortcuts/search.py) on
    ``images`` images of ``classes`` classes, at most: per class put to the intervention
    (``searched``, every class by default), those on its two suspect groups
    (intervention.confirm): five in a region (the maps' region, for the maps' group; the
    region the pixels suggest and the background, for each group), each on the class's images
    with the difference removed and the others with it pasted and their controls, and two on
    the whole image (the members, the others pasted)."""
    from auditor.methods.shortcuts.discovery import MIN_CLUSTER

    own = images / max(classes, 1)
    if own < 2 * MIN_CLUSTER:  # too few to split into groups: no suspect, no intervention
        return 0
    others = min(max_others, images - own)
    searched = classes if searched is None else min(searched, classes)
    return int(searched * (5 * (own + 2 * others) + 2 * (own + others)))


def intervention_calls(images: int, classes: int, searched: int | None = None,
                       discovery: bool = True) -> float:
    """The forward calls of a search's expected interventions (``expected_interventions``'
    rows, at the same shares): one call per intervention (intervention.intervened, properties.
    measure_property), seven per class put to the groups' (``search_forward``) and one per
    property tested (at most MAX_CANDIDATES)."""
    from auditor.methods.shortcuts.discovery import MIN_CLUSTER
    from auditor.methods.shortcuts.properties import MAX_CANDIDATES, MIN_SIDE

    own = images / max(classes, 1)
    searched = classes if searched is None else min(searched, classes)
    groups = 7 * searched if discovery and own >= 2 * MIN_CLUSTER else 0
    tested = MAX_CANDIDATES if images // max(classes, 1) >= 2 * MIN_SIDE else 0
    return SEARCH_SHARE * groups + PROPERTY_SHARE * tested


def expected_interventions(images: int, classes: int, max_others: int,
                           searched: int | None = None) -> float:
    """What a search's interventions are expected to run: SEARCH_SHARE of the groups' bound
    and PROPERTY_SHARE of the property check's."""
    from auditor.methods.shortcuts.properties import forward_passes

    return (SEARCH_SHARE * search_forward(images, classes, max_others, searched)
            + PROPERTY_SHARE * forward_passes(images, classes, max_others))


@dataclass(frozen=True)
class Injected:
    """The injection test's result: per run (the planted shortcuts, then the control) its
    summary entry and its InjectionResult, the fine-tuning facts and the checks; or why it was
    skipped."""

    entries: list[dict] = field(default_factory=list)
    results: list = field(default_factory=list)  # InjectionResult, in the order of entries
    fine_tuning: dict | None = None
    skipped: str | None = None
    checks: list[Check] = field(default_factory=list)

    def summary(self) -> dict:
        return {"injection": self.entries, **({} if self.fine_tuning is None
                                              else {"fine_tuning": self.fine_tuning})}


@dataclass(frozen=True)
class PropertyCheck:
    """The property check's result: its summary block, ``property_search``'s result (its table
    the report shows; its candidates, the shortcut search's third signal) and its check."""

    summary: dict
    found: tuple  # (table, candidates, bound)
    check: Check

    @property
    def table(self) -> list[dict]:
        return self.found[0]


@dataclass(frozen=True)
class Searched:
    """The shortcut search's result: its summary block, the findings the report shows (and how
    many it leaves out), the sentence of each confirmed one, the maps and images they are drawn
    from (``index_of``: sample position -> row), each shown group's maps in 2-D, and its check."""

    summary: dict
    shown: list  # search.Finding
    hidden: int
    sentences: dict  # class name -> the finding, in words
    maps: np.ndarray
    images: np.ndarray
    index_of: dict
    cluster_points: dict  # label -> t-SNE of its maps (k > 1)
    check: Check


@dataclass(frozen=True)
class Embedding:
    """The penultimate features of a per-class sample in 2-D (None without features), their
    labels, which of them the model gets wrong, and the sample's size."""

    points: np.ndarray | None
    labels: np.ndarray | None
    wrong: np.ndarray | None
    count: int


@dataclass(frozen=True)
class Discovered:
    """Discovery's result: the property check, the shortcut search (None when off) and the
    features in 2-D."""

    properties: PropertyCheck
    search: Searched | None
    embedding: Embedding

    def summary(self) -> dict:
        discovery = (self.search.summary if self.search is not None
                     else {"flagged_classes": [], "per_class": {}, "unconfirmed": []})
        return {"discovery": discovery, "properties": self.properties.summary}

    def checks(self) -> list[Check]:
        return [self.properties.check] + ([self.search.check] if self.search else [])


@dataclass(frozen=True)
class CleverHansData:
    """What the figures are drawn from: the parts' results as they returned them."""

    methods: list[str]
    class_names: list[str]
    target: str
    flip_threshold: float
    detect_ratio: float
    injected: Injected
    discovered: Discovered


def resolve_methods(options: Options) -> tuple[list[str], str]:
    """The attribution methods of the injection test, and the one discovery uses."""
    from auditor.methods.attribution import METHODS

    methods = ([m for m in PREFERRED_METHODS if m in METHODS] if options.methods is None
               else list(options.methods))
    if not methods:
        raise ConfigError("'clever_hans.methods' is empty; name at least one attribution method")
    discovery = options.discovery_method or methods[0]
    for key, name in [("methods", m) for m in methods] + [("discovery_method", discovery)]:
        if name not in METHODS:
            raise ConfigError(f"'clever_hans.{key}' names unknown method '{name}'; choose from: "
                              f"{', '.join(sorted(METHODS))}")
    return methods, discovery


def resolve_target(options: Options, labels: np.ndarray, class_names: list[str]) -> int:
    """The named class, or the one with the most audit images."""
    if options.target_class is None:
        return int(np.argmax(np.bincount(labels, minlength=len(class_names))))
    if options.target_class not in class_names:
        raise ConfigError(f"'clever_hans.target_class' is '{options.target_class}', which is not "
                          f"a class; choose one of: {', '.join(class_names[:20])}"
                          f"{' ...' if len(class_names) > 20 else ''}")
    return class_names.index(options.target_class)


def shortcut_settings(options: Options, shape: tuple[int, int, int]) -> dict[str, dict]:
    """Each shortcut's spec options, checked now on a blank image so that a typo fails fast."""
    from auditor.methods.shortcuts.patterns import inject

    unknown = set(options.shortcut_options) - set(options.shortcuts)
    if unknown:
        raise ConfigError(f"'clever_hans.shortcut_options' sets '{sorted(unknown)[0]}', which is "
                          f"not in clever_hans.shortcuts ({', '.join(options.shortcuts)})")
    settings = {}
    for name in options.shortcuts:
        given = options.shortcut_options.get(name, {})
        if not isinstance(given, dict):
            raise ConfigError(f"'clever_hans.shortcut_options.{name}' must be a table of "
                              f"options, got {given!r}")
        fraction = given.get("fraction")
        if fraction is not None and not (isinstance(fraction, (int, float))
                                         and 0 <= fraction <= 1):
            raise ConfigError(f"'clever_hans.shortcut_options.{name}.fraction' must be between "
                              f"0 and 1, got {fraction!r}")
        inject(name, np.zeros((1, *shape), np.float32),
               **{k: v for k, v in given.items() if k != "fraction"})
        settings[name] = dict(given)
    return settings


def load_sample(dataset, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stratified sample of at most ``limit`` images: (positions, images, labels)."""
    from auditor.inputs.datasets import sample_indices

    positions = sample_indices(dataset.labels, limit, seed)
    return positions, dataset.images(positions), dataset.labels[positions]


def search_per_class(options: Options, classes: int) -> int:
    """Images of each class the shortcut search explains: the audited model's, and each copy's
    (whose target class is searched whole)."""
    return min(options.max_per_class, max(10, options.max_discovery // max(classes, 1)))


# ------------------------------------------------------------------------- the injection test

def injection_split(ctx: Context, options: Options):
    from auditor.methods.shortcuts.injection import make_split

    seed = ctx.config.seed
    if ctx.train_dataset is not None:
        _, train_x, train_y = load_sample(ctx.train_dataset, options.max_train, seed)
        _, eval_x, eval_y = load_sample(ctx.dataset, options.max_eval, seed)
        return make_split(ctx.handle, eval_x, eval_y, seed, train_x, train_y), "train_data"
    _, images, labels = load_sample(ctx.dataset, options.max_train + options.max_eval, seed)
    return make_split(ctx.handle, images, labels, seed), "half of the audit data"


def concept_groups(ctx: Context) -> int:
    """When the concepts section runs too, the planted copies are audited by its method (its
    number of groups, from its typed options: sections never import each other); else 0, also
    when the model has no layer to find groups in (neither a spatial map nor a grid of tokens:
    the concepts section says so itself, and the injection test runs without them)."""
    from auditor.errors import ModelError
    from auditor.methods.concepts.layers import default_layers

    concepts = ctx.config.options.get("concepts")
    runs = ctx.config.sections is None or "concepts" in ctx.config.sections
    if not runs or concepts is None:
        return 0
    try:
        default_layers(ctx.handle.logits_model)
    except ModelError:
        return 0
    return concepts.groups


def run_injections(ctx: Context, options: Options, methods: list[str], target: int,
                   settings: dict[str, dict]):
    from auditor.methods.shortcuts.injection import FineTuner, run_control, run_injection
    from auditor.methods.shortcuts.patterns import inject

    split, source = injection_split(ctx, options)
    tuning = InjectionSettings(
        seed=ctx.config.seed,
        search_per_class=search_per_class(options, len(ctx.dataset.class_names)),
        concept_groups=concept_groups(ctx),
        **{f.name: getattr(options, f.name) for f in dataclasses.fields(InjectionSettings)
           if f.name not in ("seed", "search_per_class", "concept_groups")})
    tuner = FineTuner(ctx.handle, options.learning_rate)
    control = None
    if options.control:  # first: each shortcut's detection is judged against it
        blank = np.zeros((1, *ctx.handle.input_shape), np.float32)
        probes = {name: opts for name, opts in settings.items()
                  if inject(name, blank, **{k: v for k, v in opts.items()
                                           if k != "fraction"})[1] is not None}
        control = run_control(tuner, split, target, probes or {"patch": {}}, methods, tuning)
    results = [run_injection(tuner, split, target, name, opts, methods, tuning, control)
               for name, opts in settings.items()]
    results += [control] if control else []
    facts = {"source": source, "train_images": len(split.train_labels),
             "eval_images": len(split.eval_labels), "steps": options.steps,
             "batch_size": options.batch_size, "learning_rate": options.learning_rate,
             "relabel": options.relabel}
    return results, facts


def discovery_effect(found) -> dict | None:
    """The measured effect of the shortcut search's best intervention on the target class."""
    if found is None or found.target is None or found.target.effect is None:
        return None
    return found.target.effect.summary()


def injection_summary(result, class_names: list[str], settings: dict[str, dict]) -> dict:
    from auditor.methods.shortcuts.injection import CONTROL, DEFAULT_FRACTION

    entry = {
        "shortcut": result.shortcut, "target_class": class_names[result.target],
        "learned": bool(result.learned), "flip_rate": round(result.flip_rate, 4),
        "accuracy_gap": round(result.accuracy_gap, 4),
        "relevance_mass_ratio": {m: round(d.mass_ratio, 4) for m, d in result.detection.items()},
        "detected": bool(result.detected),
        "rank_accuracy": {m: round(d.rank_accuracy, 4) for m, d in result.detection.items()},
        "pointing_game": {m: round(d.pointing_game, 4) for m, d in result.detection.items()},
        "visible_to": result.seen, "clean_accuracy": round(result.clean_accuracy, 4),
        "control_mass_ratio": {m: round(r, 4) for m, r in result.control_ratio.items()},
        "discovery_flagged": bool(result.discovery.flagged) if result.discovery else None,
        "discovery_score": round(result.discovery.score, 4) if result.discovery else None,
        "discovery_effect": discovery_effect(result.discovery),
        "discovery_false_flags": result.discovery.false_flags if result.discovery else [],
        "discovery_searched_classes": ([class_names[c] for c in result.discovery.searched]
                                       if result.discovery else []),
        "verdict": result.verdict, "seconds": round(result.seconds, 2),
        "concept_group": None if result.concept is None else {
            **result.concept, "votes_for": class_names[result.concept["votes_for"]]},
    }
    if result.shortcut == CONTROL:
        entry["probes"] = {name: {"flip_rate": round(p["flip_rate"], 4),
                                  "relevance_mass_ratio": {m: round(r, 4) for m, r in
                                                           p["relevance_mass_ratio"].items()},
                                  "discovery_flagged": p["discovery_flagged"]}
                           for name, p in result.probes.items()}
    else:
        entry["options"] = {"fraction": DEFAULT_FRACTION.get(result.shortcut, 1.0),
                            **settings.get(result.shortcut, {})}
    return entry


# ------------------------------------------------------------------------------- the section

def run(ctx: Context, options: Options) -> SectionResult:
    if ctx.predictions.multilabel:
        return run_multilabel(ctx, options)
    names = ctx.dataset.class_names
    methods, discovery_method = resolve_methods(options)
    if options.methods is None:
        methods = applicable(ctx.handle, methods)
    discovery_method, choice = trusted_method(ctx, options, discovery_method)
    target = resolve_target(options, ctx.dataset.labels, names)
    settings = shortcut_settings(options, ctx.handle.input_shape)
    injected = injection_part(ctx, options, methods, target, settings)
    discovered = discovery_part(ctx, options, discovery_method)
    summary = {"target_class": names[target], "methods": methods, **injected.summary(),
               **discovered.summary()}
    data = CleverHansData(methods, names, names[target], options.flip_threshold,
                          options.detect_ratio, injected, discovered)
    checks = [*injected.checks, *discovered.checks(), methods_trusted(ctx, methods, summary)]
    return SectionResult(
        name=NAME, title=TITLE,
        intro="Injection test: known shortcuts are planted in fine-tuned copies of the model, "
              "measured for reliance (flip rate, without saliency) and for visibility (how much "
              "of each method's |relevance| falls inside the shortcut's mask, relative to its "
              "area; 1 is chance). Discovery: per class, the model's saliency maps and penultimate "
              "features are clustered and image properties screened (brightness, colour casts, "
              "lightness ramps, borders, corners); each class's most suspicious group is "
              "removed from its members and pasted onto other classes' images, and only a class "
              "whose intervention measurably moves the model is reported as relying on a "
              "shortcut. "
              "Maps show |relevance|, brighter is more.",
        summary={NAME: summary}, data=data, checks=checks, method_choice=choice)


def applicable(handle, methods: list[str]) -> list[str]:
    """The default methods the model takes: Grad-CAM left out of a model with no layer it can
    explain (a model with neither a spatial layer nor a grid of tokens), rather than the whole
    injection test skipped for it; the gradient applies to every model."""
    from auditor.methods.attribution.layer import method_layers

    layers = method_layers(handle, methods, {})
    return [m for m in methods if m not in layers or layers[m]["layer"] is not None]


def methods_trusted(ctx: Context, methods: list[str], summary: dict) -> Check:
    """Whether the card trusts the methods the visibility of the planted shortcuts and the
    shortcut discovery were read with."""
    from auditor.steps.card import card_of

    rests_on = {"the planted shortcuts' visibility": methods if summary["injection"] else [],
                "the shortcut discovery": [(summary.get("discovery") or {}).get("method")]}
    return trust_check(METHODS_TRUSTED, card_of(ctx.steps.card), rests_on, checks=ctx.config.checks,
                       section=NAME)


def injection_part(ctx: Context, options: Options, methods: list[str], target: int,
                   settings: dict[str, dict]) -> Injected:
    """The planted shortcuts and the control."""
    if not (settings or options.control):
        return Injected()
    try:
        results, facts = run_injections(ctx, options, methods, target, settings)
    except ModelError as exc:  # e.g. a SavedModel: discovery still runs on the model itself
        return Injected(skipped=str(exc), checks=[INJECTION.outcome(
            "skipped", None, checks=ctx.config.checks, message=f"injection test skipped: {exc}",
            section=NAME)])
    names = ctx.dataset.class_names
    return Injected([injection_summary(r, names, settings) for r in results], results, facts,
                    checks=injection_checks(ctx, results, options))


def trusted_method(ctx: Context, options: Options, configured: str):
    """The attribution method discovery clusters: the one the spec names, else the reliability
    card's best trusted method (``configured`` when the card trusts none or the audit makes no
    card); and the card's choice (steps.card.MethodChoice) when the card was asked."""
    from auditor.steps.card import choose

    if options.discovery_method is not None or not options.discovery:
        return configured, None
    return choose(ctx.steps.card, ctx.handle.input_shape, fallback=configured,
                  max_cost=options.discovery_map_cost)


def discovery_part(ctx: Context, options: Options, method: str) -> Discovered:
    """The property check, the shortcut search per class and the feature embedding."""
    from auditor.methods.shortcuts.discovery import embed_2d
    from auditor.methods.shortcuts.search import per_class_sample
    from auditor.predict.predictions import softmax

    names, seed = ctx.dataset.class_names, ctx.config.seed
    positions = per_class_sample(ctx.dataset.labels, search_per_class(options, len(names)), seed)
    features = ctx.steps.features.values
    sample = Sample(ctx.dataset.images(positions), ctx.dataset.labels[positions], positions,
                    names, features=None if features is None else features[positions],
                    probs=softmax(np.asarray(ctx.predictions.logits[positions])))
    properties = property_part(ctx, options, sample)
    searched = (search_part(ctx, options, method,
                            dataclasses.replace(sample, properties=properties.found))
                if options.discovery else None)
    shown = per_class_sample(ctx.dataset.labels, max(1, options.max_embedding // len(names)),
                             seed)
    embedding = (Embedding(None, None, None, len(shown)) if features is None else Embedding(
        embed_2d(features[shown], seed), ctx.dataset.labels[shown],
        ~ctx.predictions.correct[shown], len(shown)))
    return Discovered(properties, searched, embedding)


def search_part(ctx: Context, options: Options, method: str, sample: Sample) -> Searched:
    """Candidates from maps, features and properties, each confirmed or not by intervention."""
    from auditor.methods.shortcuts.discovery import FALSE_ALARM, embed_2d
    from auditor.methods.shortcuts.intervention import DROP_BOUND, FLIP_BOUND
    from auditor.methods.shortcuts.search import SearchSettings, search

    seed = ctx.config.seed
    findings, maps = search(ctx.handle, sample, SearchSettings(
        method, grid=options.grid, k_max=options.k_max, max_others=options.max_others,
        seed=seed))
    confirmed = [f for f in findings if f.confirmed]
    unconfirmed = [f.name for f in findings if f.candidate and not f.confirmed]
    sentences = [finding_sentence(f, sample.class_names) for f in confirmed]
    summary = {
        "method": method, "false_alarm": FALSE_ALARM, "flip_bound": FLIP_BOUND,
        "drop_bound": DROP_BOUND, "flagged_classes": [f.name for f in confirmed],
        "unconfirmed": unconfirmed, "findings": sentences,
        "per_class": {f.name: f.summary() for f in findings}}
    order = sorted(findings, key=lambda f: (not f.confirmed, not f.candidate,
                                            -(f.maps.score / f.maps.bound if f.maps else 0)))
    shown = order[:options.show_classes]
    index_of = {int(p): i for i, p in enumerate(sample.positions)}
    cluster_points = {
        f.label: embed_2d(np.stack([maps[index_of[p]] for p in f.maps.positions]), seed)
        for f in shown if f.maps is not None and f.maps.k > 1}
    check = FLAGGED_CLASSES.judge(
        len(confirmed), checks=ctx.config.checks, section=NAME,
        message=(f"the shortcut search confirms {len(confirmed)} class(es) by intervention"
                 + (f": {', '.join(summary['flagged_classes'][:10])}" if confirmed else "")
                 + (f"; {len(unconfirmed)} unconfirmed candidate(s)" if unconfirmed else "")))
    return Searched(summary, shown, max(0, len(findings) - options.show_classes),
                    {f.name: text for f, text in zip(confirmed, sentences, strict=True)}, maps,
                    sample.images, index_of, cluster_points, check)


def finding_sentence(finding, class_names: list[str]) -> str:
    """'class 7 relies on a mark in the lower right corner in 27 of 70 images; pasting it onto
    other classes' images makes 86% of them a 7 (95% CI 80-90%)'."""
    effect, suspect, prop = finding.effect, finding.suspect, finding.property
    if prop is not None:
        where, found, of = f"its {prop.property}", "the property check", prop.class_size
        pasted = (f"moving the {prop.property} of other classes' images as much" if not
                  effect.local else f"setting the {prop.property} of other classes' images so")
        control = ("when left unchanged" if not effect.local
                   else "with the rest of the class's value there instead")
    else:
        where = {"whole image": "a change over the whole image (a colour or lightness shift)",
                 "background": "its background (what is behind the object)",
                 "changed pixels": "a pattern of pixels"}.get(effect.region,
                                                             f"a mark in the {effect.region}")
        found, of = f"its {suspect.signal}", len(suspect.positions)
        pasted = "pasting it onto other classes' images"
        control = "with the class's own look there instead"
    low, high = effect.flip_interval
    return (f"class {finding.name} relies on {where} in {effect.members} of {of} images "
            f"(found by {found}); {pasted} makes {effect.flip_rate:.0%} of them a "
            f"{finding.name} (95% CI {low:.0%}-{high:.0%}; {effect.flip_control:.0%} "
            f"{control}), and removing it lowers the class's probability by "
            f"{effect.score_drop:.2f} on average")


def property_part(ctx: Context, options: Options, sample: Sample) -> PropertyCheck:
    """Image properties that move a class's score beyond the label, each put to the
    intervention; the result is the shortcut search's third signal."""
    from auditor.methods.shortcuts import properties as check
    from auditor.predict.batched import forward

    def logits_fn(batch):
        return forward(ctx.handle, batch)

    found = check.property_search(logits_fn, sample, check.PropertySettings(
        ctx.config.seed, options.max_others))
    table, candidates, bound = found
    confirmed = [f for f in candidates if f.confirmed]
    summary = {
        "flagged": sorted({f.property for f in confirmed}), "false_alarm": check.FALSE_ALARM,
        "rho_bound": round(bound, 4), "flip_bound": check.FLIP_BOUND,
        "local_flip_bound": check.LOCAL_FLIP_BOUND,
        "confirmed": [f.summary() for f in confirmed],
        "unconfirmed": [{k: v for k, v in f.summary().items() if k != "effect"}
                        for f in candidates if not f.confirmed], "table": table}
    named = [f"{f.property} -> class {f.name}" for f in confirmed]
    return PropertyCheck(summary, found, FLAGGED_PROPERTIES.judge(
        len(confirmed), checks=ctx.config.checks, section=NAME,
        message=(f"{len(confirmed)} image propert{'y' if len(confirmed) == 1 else 'ies'} "
                 "confirmed by intervention to raise a class's score beyond its label"
                 + (f": {', '.join(named[:6])}" if named else "")
                 + f" ({len(candidates) - len(confirmed)} screened candidate(s) unconfirmed)")))


def injection_checks(ctx: Context, results, options: Options) -> list[Check]:
    """Per planted shortcut: warn when learned but invisible; the control warns on a false
    alarm; a shortcut the copy did not learn says nothing either way (skipped)."""
    from auditor.methods.shortcuts.injection import CONTROL

    spec, checks = ctx.config.checks, []
    for r in results:
        name = "control" if r.shortcut == CONTROL else r.shortcut
        best = max((d.mass_ratio for d in r.detection.values()), default=None)
        if r.shortcut == CONTROL:
            checks.append(PLANTED.judge(best, checks=spec, name=name, message=r.verdict,
                                        section=NAME,
                                        bounds={"warn_above": options.detect_ratio}))
        elif not r.learned:
            checks.append(PLANTED.outcome("skipped", round(r.flip_rate, 4), checks=spec,
                                          name=name, section=NAME,
                                          message=f"shortcut '{r.shortcut}': {r.verdict}"))
        elif r.detection:
            checks.append(PLANTED.judge(best, checks=spec, name=name, section=NAME,
                                        message=f"shortcut '{r.shortcut}': {r.verdict} "
                                                "(best mass ratio)",
                                        bounds={"warn_below": options.detect_ratio}))
        else:
            checks.append(PLANTED.judge(float(r.discovery.flagged), checks=spec, name=name,
                                        message=f"shortcut '{r.shortcut}': {r.verdict} (1 when "
                                                "the search confirms it on the target class)",
                                        section=NAME, bounds={"warn_below": 1.0}))
    return checks


# What does not apply to a multi-label model, in one line each (the summary's ``skipped``).
NO_LABEL_MASK = ("has no mask, so its visibility could only be read by the discovery search on "
                 "the fine-tuned copy, which the per-label injection test does not run")
NO_LABEL_FEATURES = ("the search per label clusters each label's maps only: the penultimate "
                     "features and the image-property screen are a class's, with one class "
                     "per image")


def resolve_label(options: Options, labels: np.ndarray, names: list[str]) -> int:
    """The named label, or the one the most audit images carry."""
    if options.target_class is None:
        return int(labels.sum(axis=0).argmax())
    if options.target_class not in names:
        raise ConfigError(f"'clever_hans.target_class' is '{options.target_class}', which is not "
                          f"a label; choose one of: {', '.join(names[:20])}")
    return names.index(options.target_class)


def label_injection_entry(r, names: list[str]) -> dict:
    """One planted shortcut in the contract's shape, read per label: the target class is the
    label, the accuracy gap the label's recall with the shortcut minus without."""
    return {"shortcut": r.shortcut, "target_class": names[r.label], "learned": r.learned,
            "flip_rate": round(r.flip_rate, 4), "accuracy_gap": round(r.recall_gap, 4),
            "relevance_mass_ratio": {m: round(d.mass_ratio, 4) for m, d in r.detection.items()},
            "control_mass_ratio": {m: round(v, 4) for m, v in r.control_ratio.items()},
            "visible_to": r.seen, "detected": r.detected, "seconds": round(r.seconds, 2)}


def label_check(r, names: list[str], options: Options, spec: dict) -> Check:
    """As for one class: a shortcut the copy did not learn says nothing (skipped); a learned one
    warns when no method's map sits on it."""
    name, label = r.shortcut, names[r.label]
    if not r.learned:
        return PLANTED.outcome("skipped", round(r.flip_rate, 4), checks=spec, name=name,
                               section=NAME, message=f"shortcut '{name}' tied to label "
                               f"'{label}': not learned by the copy (flip rate "
                               f"{r.flip_rate:.0%}), which says nothing either way")
    best = max((d.mass_ratio for d in r.detection.values()), default=None)
    seen = ", ".join(r.seen) or "no method"
    return PLANTED.judge(best, checks=spec, name=name, section=NAME,
                         bounds={"warn_below": options.detect_ratio},
                         message=f"shortcut '{name}' tied to label '{label}': learned (flip "
                                 f"rate {r.flip_rate:.0%}), seen by {seen} (best mass ratio)")


def label_injection_part(ctx: Context, options: Options, methods: list[str], label: int,
                         skipped: dict[str, str]) -> tuple[list, list[Check]]:
    """The planted-shortcut control per label: each masked shortcut tied to ``label`` in a
    fine-tuned copy; the mask-less ones are added to ``skipped``."""
    from auditor.methods.shortcuts.label_injection import run_label_injection
    from auditor.methods.shortcuts.patterns import inject

    names, shape = ctx.dataset.class_names, ctx.handle.input_shape
    settings = shortcut_settings(options, shape)
    tuning = InjectionSettings(seed=ctx.config.seed, **{
        f.name: getattr(options, f.name) for f in dataclasses.fields(InjectionSettings)
        if f.name in ("steps", "batch_size", "learning_rate", "relabel", "explain",
                      "flip_threshold", "gap_threshold", "detect_ratio", "control_margin",
                      "visible_change")})
    blank = np.zeros((1, *shape), np.float32)
    masked = {}
    for name, given in settings.items():
        opts = {k: v for k, v in given.items() if k != "fraction"}
        if inject(name, blank, **opts)[1] is None:
            skipped[name] = f"shortcut '{name}' {NO_LABEL_MASK}"
        else:
            masked[name] = opts
    _, images, labels = load_sample(ctx.dataset, options.max_train + options.max_eval,
                                    ctx.config.seed)
    spec = ctx.config.checks
    try:
        results = [run_label_injection(ctx.handle, images, labels, label, name, opts, methods,
                                       tuning) for name, opts in masked.items()]
        return results, [label_check(r, names, options, spec) for r in results]
    except ModelError as exc:  # a model that cannot be copied, a method it cannot take
        skipped["injection"] = str(exc)
        return [], [INJECTION.outcome("skipped", None, checks=spec, section=NAME,
                                      message=f"injection test skipped: {exc}")]


@dataclass(frozen=True)
class LabelSearch:
    """Discovery per label: the findings (search.Finding, one per label with images), the
    sample's images and the (image, label) pairs' pooled maps, each shown label's maps in 2-D
    (k > 1), and the summary block."""

    findings: list
    images: np.ndarray
    positions: np.ndarray  # the images' dataset positions, sorted
    pairs: object  # label_discovery.LabelMaps
    cluster_points: dict
    summary: dict


def label_discovery_part(ctx: Context, options: Options, method: str) -> LabelSearch:
    """SpRAy per label on the maps of each label's logit on the images carrying it, each
    suspect group put to the label's intervention (methods/shortcuts/label_discovery.py)."""
    from auditor.methods.shortcuts.discovery import FALSE_ALARM, SpraySettings, embed_2d
    from auditor.methods.shortcuts.intervention import FLIP_BOUND
    from auditor.methods.shortcuts.label_discovery import (
        LABEL_DROP_BOUND,
        confirm_label,
        discover_labels,
        label_sample,
    )
    from auditor.methods.shortcuts.search import Finding
    from auditor.predict.batched import forward
    from auditor.predict.predictions import sigmoid

    names, seed, p = ctx.dataset.class_names, ctx.config.seed, ctx.predictions
    positions = label_sample(ctx.dataset.labels, search_per_class(options, len(names)), seed)
    images, labels = ctx.dataset.images(positions), ctx.dataset.labels[positions]
    found, pairs = discover_labels(ctx.handle, images, labels, positions, names, SpraySettings(
        method, options.grid, options.k_max, seed))
    scores = sigmoid(np.asarray(p.logits)[positions])
    findings = [Finding(d.label, d.name, d, None, effect=None if d.suspect is None else
                        confirm_label(lambda x: forward(ctx.handle, x), d,
                                      float(p.thresholds[d.label]), images, labels, positions,
                                      scores, options.grid, seed, options.max_others),
                        signal="maps" if d.suspect is not None else None) for d in found]
    confirmed = [f for f in findings if f.confirmed]
    points = {f.label: embed_2d(pairs.pooled[pairs.label == f.label], seed)
              for f in findings[:options.show_classes] if f.maps.k > 1}
    summary = {"method": method, "per_label": True, "false_alarm": FALSE_ALARM,
               "flip_bound": FLIP_BOUND, "drop_bound": LABEL_DROP_BOUND,
               "flagged_classes": [f.name for f in confirmed],
               "unconfirmed": [f.name for f in findings if f.candidate and not f.confirmed],
               "findings": [label_sentence(f) for f in confirmed],
               "per_class": {f.name: f.summary() for f in findings}}
    return LabelSearch(findings, images, positions, pairs, points, summary)


def label_sentence(finding) -> str:
    """'label big relies on a mark in the lower right corner in 12 of 40 of its images;
    pasting it onto images without the label gives it to 80% of them (...)'."""
    effect = finding.effect
    where = {"whole image": "a change over the whole image (a colour or lightness shift)",
             "changed pixels": "a pattern of pixels"}.get(effect.region,
                                                         f"a mark in the {effect.region}")
    low, high = effect.flip_interval
    return (f"label {finding.name} relies on {where} in {effect.members} of "
            f"{len(finding.maps.positions)} of its images (found by its maps); pasting it onto "
            f"images without the label gives it to {effect.flip_rate:.0%} of them (95% CI "
            f"{low:.0%}-{high:.0%}; {effect.flip_control:.0%} with the label's own look there "
            f"instead), and removing it lowers the label's sigmoid by {effect.score_drop:.2f} "
            "on average")


def run_multilabel(ctx: Context, options: Options) -> SectionResult:
    """The planted-shortcut control per label (``label_injection_part``) and the discovery
    search per label (``label_discovery_part``)."""
    names, spec = ctx.dataset.class_names, ctx.config.checks
    methods, method = resolve_methods(options)
    if options.discovery_method is None and options.methods is None:
        method = LABEL_DISCOVERY_METHOD
    method, choice = trusted_method(ctx, options, method)  # the card's, when one is made
    label = resolve_label(options, ctx.dataset.labels, names)
    skipped = {"features and properties": NO_LABEL_FEATURES}
    results, checks = label_injection_part(ctx, options, methods, label, skipped)
    search = label_discovery_part(ctx, options, method) if options.discovery else None
    summary = {"target_class": names[label], "methods": methods, "multilabel": True,
               "injection": [label_injection_entry(r, names) for r in results],
               "skipped": skipped}
    if search is not None:
        flagged = search.summary["flagged_classes"]
        summary["discovery"] = search.summary
        checks.append(FLAGGED_CLASSES.judge(
            len(flagged), checks=spec, section=NAME,
            message=f"the search per label confirms {len(flagged)} label(s) by intervention"
                    + (f": {', '.join(flagged[:10])}" if flagged else "")))
    checks.append(methods_trusted(ctx, methods, summary))
    return SectionResult(
        name=NAME, title=TITLE,
        intro=f"Injection test per label: each shortcut with a mask is planted in a fine-tuned "
              f"copy of the model, tied to the label '{names[label]}' (pasted on half of the "
              "images carrying it and on a share of the others, whose target for it becomes "
              "1), measured for reliance (the flip rate: images not carrying the label that "
              "are given it once the shortcut is pasted) and for visibility (how much of each "
              "method's |relevance| for that label's logit falls inside the shortcut's mask, "
              "relative to its area; 1 is chance; a control copy fine-tuned without the "
              "shortcut gives each method's chance level). Discovery per label: the maps of "
              "each label's logit on the images carrying it are clustered, each label's most "
              "suspicious group scored against the other labels, then removed from its members "
              "and pasted onto images without the label, beside a control that pastes the "
              "label's own look; a label relies on a shortcut only when the pasted group gives "
              "it measurably more often than the control. Maps show |relevance|.",
        summary={NAME: summary}, checks=checks, method_choice=choice,
        data=LabelHansData(names[label], summary["injection"], skipped, search))


@dataclass
class LabelHansData:
    """A multi-label model's Clever Hans tables: the planted shortcuts, the search per label
    (None when off) and what was skipped."""

    label: str
    injection: list[dict]
    skipped: dict[str, str]
    search: LabelSearch | None = None
