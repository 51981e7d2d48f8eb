"""Clever Hans: does the model score well for the wrong reason, and could this audit tell?

Two halves. The injection test plants known shortcuts in fine-tuned copies of the model and
checks that they are learned (without saliency) and visible (with it): a positive control for
every saliency figure in the report. Discovery looks for unknown shortcuts in the model as it
is: spectral relevance analysis per class, image properties that predict the label on their
own, and the model's penultimate features in two dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.checks.check import Check, evaluate
from auditor.errors import ConfigError, ModelError
from auditor.sections.base import Context, SectionResult

NAME = "clever_hans"
CHECKS = ("clever_hans.injection", "clever_hans.injection.*", "clever_hans.flagged_classes",
          "clever_hans.flagged_properties")
TITLE = "Clever Hans: shortcuts"
# Not gradient x input by default: it puts mass on bright pixels whatever the model learned, so
# a bright planted patch draws it even in the control copy (a false alarm, not a detection).
PREFERRED_METHODS = ("gradient", "gradcam")
EXAMPLES = 3  # examples shown per injected shortcut
MEMBERS = 4  # members shown per discovered cluster


@dataclass
class Options:
    methods: list[str] | None = None  # default: those registered among PREFERRED_METHODS
    shortcuts: list[str] = field(default_factory=lambda: ["patch", "watermark"])
    control: bool = True
    target_class: str | None = None  # default: the class with the most audit images
    shortcut_options: dict = field(default_factory=dict)  # {shortcut: {option: value}}
    steps: int = 300  # fine-tuning steps per copy (bounded: the demo audit has 3 minutes)
    batch_size: int = 32
    learning_rate: float = 1e-3
    relabel: float = 0.2  # share of other classes given the shortcut and the target label
    max_train: int = 1000  # images for fine-tuning (from train_data, or split from data)
    max_eval: int = 500
    explain: int = 48  # held-out images explained per method for detection
    flip_threshold: float = 0.5  # learned when the flip rate or the accuracy gap reaches
    gap_threshold: float = 0.2
    detect_ratio: float = 3.0  # detected when relevance mass / mask area reaches this ...
    control_margin: float = 1.5  # ... and this many times the control copy's ratio
    visible_change: float = 0.2  # mask pixels changed less than this are hidden, not counted
    discovery: bool = True
    discovery_method: str | None = None  # default: the first of ``methods``
    max_per_class: int = 150
    max_discovery: int = 3000  # images explained for discovery, over all classes
    grid: int = 16  # maps are pooled to grid x grid cells before clustering
    k_max: int = 5  # most clusters per class the eigengap may choose
    discovery_threshold: float = 0.15  # flagged when shift x compactness reaches this
    show_classes: int = 10
    pps_threshold: float = 0.5  # a property is flagged at this predictive power score...
    auc_threshold: float = 0.99  # ...or when it separates one class with this ROC AUC
    max_embedding: int = 500  # images in the penultimate-feature t-SNE

    def __post_init__(self):
        from auditor.methods.shortcuts.patterns import INJECTORS

        resolve_methods(self)
        for name in self.shortcuts:
            if name not in INJECTORS:
                raise ConfigError(f"'clever_hans.shortcuts' names unknown shortcut '{name}'; "
                                  f"choose from: {', '.join(INJECTORS)}")


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


def per_class_sample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Positions of at most ``limit`` images of each class, sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


# ---------------------------------------------------------------- discovery on the audited model

TILE = 40  # pixels per thumbnail in the discovery mosaics
LEVELS = 16  # grey levels per channel in the mosaics: smooth maps compress 2.5x smaller


def heat_tile(heat: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """An RGB thumbnail of a relevance map on the sequential colormap, over a faded image."""
    import cv2
    import matplotlib

    from auditor.report.figures import SEQUENTIAL

    heat = cv2.resize(np.asarray(heat, np.float32), (TILE, TILE), interpolation=cv2.INTER_LINEAR)
    peak = heat.max()
    rgb = matplotlib.colormaps[SEQUENTIAL](heat / peak if peak > 0 else heat)[..., :3]
    if image is None:
        return rgb.astype(np.float32)
    grey = cv2.resize(np.clip(image, 0, 1).mean(axis=-1), (TILE, TILE),
                      interpolation=cv2.INTER_AREA)[..., None]
    return (0.45 * grey + 0.55 * rgb).astype(np.float32)


def mosaic(rows: list[list[np.ndarray]], columns: int, gap: int = 3) -> np.ndarray:
    """Tiles laid out in rows on a white background (one image instead of many axes)."""
    out = np.ones((len(rows) * (TILE + gap), columns * (TILE + gap), 3), np.float32)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            out[r * (TILE + gap):r * (TILE + gap) + TILE,
                c * (TILE + gap):c * (TILE + gap) + TILE] = tile
    return np.round(out * (LEVELS - 1)) / (LEVELS - 1)


def class_figure(found, maps: np.ndarray, images: np.ndarray, index_of: dict, seed: int) -> str:
    """One class: per cluster (one row) its mean map and a few members with their maps; beside
    it, when there are clusters to tell apart, the t-SNE of the class's maps by cluster."""
    import matplotlib.pyplot as plt

    from auditor.methods.shortcuts.discovery import embed_2d
    from auditor.report.figures import figure_uri

    rows = []
    for c in range(found.k):
        members = found.positions[found.clusters == c][:MEMBERS]
        rows.append([heat_tile(found.means[c])] + [
            heat_tile(maps[index_of[p]], images[index_of[p]]) for p in members])
    height = 0.75 + 0.62 * max(found.k, 2)
    if found.k > 1:
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.2, height),
                                          gridspec_kw={"width_ratios": [MEMBERS + 1, 3.2]})
    else:
        fig, left = plt.subplots(figsize=(4.3, height))
    left.imshow(mosaic(rows, MEMBERS + 1), interpolation="nearest")
    left.set_xticks([TILE / 2], ["cluster mean"], fontsize=7)
    left.xaxis.tick_top()
    left.set_yticks([(TILE + 3) * c + TILE / 2 for c in range(found.k)],
                    [f"{c}: {int((found.clusters == c).sum())}"
                     + (" *" if found.flagged and c == found.suspect else "")
                     for c in range(found.k)], fontsize=7)
    left.tick_params(length=0)
    for side in left.spines.values():
        side.set_visible(False)
    if found.k > 1:
        points = embed_2d(np.stack([maps[index_of[p]] for p in found.positions]), seed)
        for c in range(found.k):
            at = found.clusters == c
            right.scatter(points[at, 0], points[at, 1], s=8, label=f"cluster {c}")
        right.set_xticks([])
        right.set_yticks([])
        right.set_title("t-SNE of the class's maps", fontsize=8)
        right.legend(fontsize=6, loc="best")
    fig.tight_layout()
    return figure_uri(fig)


def feature_figure(features: np.ndarray, labels: np.ndarray, wrong: np.ndarray,
                   class_names: list[str], seed: int) -> str:
    """Penultimate features in 2-D (t-SNE), coloured by true class, mistakes as black crosses."""
    import matplotlib.pyplot as plt

    from auditor.methods.shortcuts.discovery import embed_2d
    from auditor.report.figures import figure_uri

    points = embed_2d(features, seed)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c in np.unique(labels):
        at = labels == c
        ax.scatter(points[at, 0], points[at, 1], s=7, color=cmap(c % cmap.N),
                   label=class_names[c] if len(class_names) <= 20 else None)
    ax.scatter(points[wrong, 0], points[wrong, 1], s=26, marker="x", color="black",
               linewidths=0.9, label="mistake")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return figure_uri(fig)


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


def run_injections(ctx: Context, options: Options, methods: list[str], target: int,
                   settings: dict[str, dict]):
    from auditor.methods.shortcuts.injection import (
        FineTuner,
        InjectionSettings,
        run_control,
        run_injection,
    )
    from auditor.methods.shortcuts.patterns import inject

    split, source = injection_split(ctx, options)
    tuning = InjectionSettings(
        steps=options.steps, batch_size=options.batch_size, learning_rate=options.learning_rate,
        relabel=options.relabel, flip_threshold=options.flip_threshold,
        gap_threshold=options.gap_threshold, detect_ratio=options.detect_ratio,
        visible_change=options.visible_change, explain=options.explain,
        control_margin=options.control_margin, discovery_threshold=options.discovery_threshold,
        grid=options.grid, seed=ctx.config.seed)
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
        "verdict": result.verdict, "seconds": round(result.seconds, 2),
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


def example_figure(result, methods: list[str]) -> str | None:
    """Rows of examples: clean, with the shortcut, its mask, and |relevance| per method."""
    import matplotlib.pyplot as plt

    from auditor.report.figures import SEQUENTIAL, figure_uri, show_image

    shown = result.examples
    if not shown or not len(shown.get("poisoned", [])):
        return None
    count = min(EXAMPLES, len(shown["poisoned"]))
    # half the explained images are of the target class: show one of those and the others
    rows = sorted({0, len(shown["poisoned"]) // 2, len(shown["poisoned"]) - 1})[:count]
    masks = shown["masks"]
    columns = 2 + (masks is not None) + len(methods)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns, 1.1 * len(rows) + 0.2),
                             squeeze=False)
    fig.subplots_adjust(wspace=0.06, hspace=0.06)
    for r, i in enumerate(rows):
        show_image(axes[r, 0], shown["clean"][i])
        show_image(axes[r, 1], shown["poisoned"][i])
        col = 2
        if masks is not None:
            axes[r, col].imshow(masks[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, col].set_axis_off()
            col += 1
        for method in methods:
            heat = np.abs(shown["maps"][method][i]).sum(axis=-1)
            axes[r, col].imshow(heat, cmap=SEQUENTIAL, interpolation="nearest")
            if masks is not None:
                axes[r, col].contour(masks[i], levels=[0.5], colors="cyan", linewidths=0.6)
            axes[r, col].set_axis_off()
            col += 1
    titles = ["clean", "with shortcut"] + (["mask"] if masks is not None else []) + [
        f"|{m}|" for m in methods]
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title, fontsize=7)
    return figure_uri(fig)


def overview_figure(results, methods: list[str], options: Options) -> str:
    """Flip rate per run, and mass ratio per run and method, against their thresholds."""
    import matplotlib.pyplot as plt

    from auditor.report.figures import figure_uri

    names = [r.shortcut for r in results]
    x = np.arange(len(results))
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 2.6))
    left.bar(x, [r.flip_rate for r in results], color="#888")
    left.axhline(options.flip_threshold, ls="--", lw=0.8, color="black")
    left.set_xticks(x, names, fontsize=7)
    left.set_ylim(0, 1)
    left.set_title("reliance: flip rate (dashed: learned)", fontsize=8)
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        values = [r.detection[method].mass_ratio if method in r.detection else 0 for r in results]
        right.bar(x + (j - (len(methods) - 1) / 2) * width, values, width, label=method)
    right.axhline(options.detect_ratio, ls="--", lw=0.8, color="black")
    right.axhline(1.0, ls=":", lw=0.8, color="grey")
    right.set_xticks(x, names, fontsize=7)
    right.set_title("detection: mass in mask / mask area (dashed: detected)", fontsize=8)
    right.legend(fontsize=6)
    fig.tight_layout()
    return figure_uri(fig)


# ------------------------------------------------------------------------------- the section

def run(ctx: Context, options: Options) -> SectionResult:
    names = ctx.dataset.class_names
    methods, discovery_method = resolve_methods(options)
    target = resolve_target(options, ctx.dataset.labels, names)
    settings = shortcut_settings(options, ctx.handle.input_shape)
    summary: dict = {"target_class": names[target], "methods": methods}
    view: dict = {"methods": methods, "target": names[target]}
    checks: list[Check] = []
    injection_part(ctx, options, methods, target, settings, summary, view, checks)
    discovery_part(ctx, options, discovery_method, summary, view, checks)
    return SectionResult(
        name=NAME, title=TITLE,
        intro="Injection test: known shortcuts are planted in fine-tuned copies of the model, "
              "measured for reliance (flip rate, without saliency) and for visibility (how much "
              "of each method's |relevance| falls inside the shortcut's mask, relative to its "
              "area; 1 is chance). Discovery: per class, the model's saliency maps are clustered "
              "spectrally; a class is flagged when one cluster puts its relevance on a compact "
              "region the rest of the class ignores. Maps show |relevance|, brighter is more.",
        summary={NAME: summary}, view=view, checks=checks)


def injection_part(ctx: Context, options: Options, methods: list[str], target: int,
                   settings: dict[str, dict], summary: dict, view: dict,
                   checks: list[Check]) -> None:
    """The planted shortcuts and the control, into the summary, the view and the checks."""
    summary["injection"] = []
    try:
        results, facts = (run_injections(ctx, options, methods, target, settings)
                          if settings or options.control else ([], {}))
    except ModelError as exc:  # e.g. a SavedModel: discovery still runs on the model itself
        view["injection_skipped"] = str(exc)
        checks.append(Check("clever_hans.injection", "skipped", None, {}, None,
                            f"injection test skipped: {exc}", NAME))
        return
    if not results:
        return
    names = ctx.dataset.class_names
    summary["injection"] = [injection_summary(r, names, settings) for r in results]
    summary["fine_tuning"] = facts
    view["injection"] = [{**entry, "figure": example_figure(r, methods)}
                         for entry, r in zip(summary["injection"], results, strict=True)]
    view["overview"] = overview_figure(results, methods, options)
    view["fine_tuning"] = facts
    checks += injection_checks(ctx, results, options)


def discovery_part(ctx: Context, options: Options, method: str, summary: dict, view: dict,
                   checks: list[Check]) -> None:
    """SpRAy per class, the property table and the feature embedding, on the audited model."""
    from auditor.methods.shortcuts.discovery import discover, penultimate_features
    from auditor.methods.shortcuts.properties import property_table

    names, seed = ctx.dataset.class_names, ctx.config.seed
    per_class = min(options.max_per_class, max(10, options.max_discovery // len(names)))
    positions = per_class_sample(ctx.dataset.labels, per_class, seed)
    images = ctx.dataset.images(positions)
    labels = ctx.dataset.labels[positions]
    summary["discovery"] = {"flagged_classes": [], "per_class": {}}
    if options.discovery:
        found, maps = discover(ctx.handle, images, labels, positions, names, method,
                               grid=options.grid, k_max=options.k_max,
                               threshold=options.discovery_threshold, seed=seed)
        index_of = {int(p): i for i, p in enumerate(positions)}
        flagged = [d.name for d in found if d.flagged]
        summary["discovery"] = {"method": method, "threshold": options.discovery_threshold,
                                "flagged_classes": flagged,
                                "per_class": {d.name: d.summary() for d in
                                              sorted(found, key=lambda d: d.label)}}
        view["discovery"] = [{**d.summary(), "name": d.name,
                              "figure": class_figure(d, maps, images, index_of, seed)}
                             for d in found[:options.show_classes]]
        view["discovery_hidden"] = max(0, len(found) - options.show_classes)
        checks.append(evaluate(
            "clever_hans.flagged_classes", len(flagged),
            message=(f"spectral relevance analysis flags {len(flagged)} class(es)"
                     + (f": {', '.join(flagged[:10])}" if flagged else "")),
            section=NAME, defaults={"warn_above": 0},
            spec=ctx.thresholds("clever_hans.flagged_classes")))

    table = property_table(images, labels, names, pps_threshold=options.pps_threshold,
                           auc_threshold=options.auc_threshold, seed=seed)
    flagged_properties = [row["property"] for row in table if row["flagged"]]
    summary["properties"] = {"flagged": flagged_properties, "table": table}
    view["properties"] = table
    checks.append(evaluate(
        "clever_hans.flagged_properties", len(flagged_properties),
        message=(f"{len(flagged_properties)} image "
                 f"{'property predicts' if len(flagged_properties) == 1 else 'properties predict'}"
                 " the label on their own"
                 + (f": {', '.join(flagged_properties)}" if flagged_properties else "")),
        section=NAME, defaults={"warn_above": 0},
        spec=ctx.thresholds("clever_hans.flagged_properties")))

    shown = per_class_sample(ctx.dataset.labels, max(1, options.max_embedding // len(names)),
                             seed)
    features = penultimate_features(ctx.handle, ctx.dataset.images(shown))
    if features is not None:
        wrong = ~ctx.predictions.correct[shown]
        view["features"] = feature_figure(features, ctx.dataset.labels[shown], wrong, names,
                                          seed)
    view["features_n"] = len(shown)


def injection_checks(ctx: Context, results, options: Options) -> list[Check]:
    """Per planted shortcut: warn when learned but invisible; the control warns on a false
    alarm; a shortcut the copy did not learn says nothing either way (skipped)."""
    from auditor.methods.shortcuts.injection import CONTROL

    checks = []
    for r in results:
        check_id = f"clever_hans.injection.{'control' if r.shortcut == CONTROL else r.shortcut}"
        best = max((d.mass_ratio for d in r.detection.values()), default=None)
        if r.shortcut == CONTROL:
            checks.append(evaluate(check_id, best, message=r.verdict,
                                   section=NAME, defaults={"warn_above": options.detect_ratio},
                                   spec=ctx.thresholds(check_id)))
        elif not r.learned:
            checks.append(Check(check_id, "skipped", round(r.flip_rate, 4), {}, None,
                                f"shortcut '{r.shortcut}': {r.verdict}", NAME))
        elif r.detection:
            checks.append(evaluate(check_id, best, message=f"shortcut '{r.shortcut}': "
                                   f"{r.verdict} (best mass ratio)", section=NAME,
                                   defaults={"warn_below": options.detect_ratio},
                                   spec=ctx.thresholds(check_id)))
        else:
            checks.append(evaluate(check_id, r.discovery.score,
                                   message=f"shortcut '{r.shortcut}': {r.verdict} (discovery "
                                   "score of the target class)", section=NAME,
                                   defaults={"warn_below": options.discovery_threshold},
                                   spec=ctx.thresholds(check_id)))
    return checks
