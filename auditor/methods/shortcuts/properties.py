"""The property check: does a simple image property move the model's output beyond the label?

A property that tells the label is often just the class's natural look (a 0 is wide, so its
border is bright), so a statistic of the data alone (Deepchecks' property-label correlation,
ppscore's predictive power, a per-class AUC) cannot tell a shortcut from a look; they are kept
as a description of the data. Two steps ask about the model instead:

1. **Screen.** Within each true class (so the label explains none of it), the Spearman
   correlation between the property and the model's centred log probability of every other
   class, averaged over the true classes by size. Under the null (the property does not move
   the output beyond the label) the property's values are exchangeable within a true class, so
   the bound is the (1 - ``FALSE_ALARM``) quantile of the largest |rho| over all properties and
   classes when the values are permuted within each true class: a family-wise false-alarm rate.
   A class's look passes this screen too (wide digits score higher as a 4 whatever their label),
   so passing it makes a candidate, not a finding.
2. **Intervention.** Every property here is linear in the pixels, with a template image that
   changes it by one unit: a constant field for brightness, a centred coordinate for a ramp, a
   band or corner indicator, a channel shift that keeps the grey level for a colour cast. The
   suspect class's images are split in two on the property (Otsu); the suspect side's
   difference is put onto other classes' images and taken from the members
   (``property_interventions``). The flip rate onto the class beyond its control (paired
   bootstrap 95% interval) is the effect, confirmed at ``FLIP_BOUND`` (``LOCAL_FLIP_BOUND`` for a
   band or corner).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.methods.shortcuts.discovery import Sample
from auditor.methods.shortcuts.intervention import (
    EXAMPLES,
    FLIP_BOUND,
    Effect,
    bootstrap_mean,
    paired_excess,
    two_sample_excess,
    wilson,
)

BORDER = 0.125  # share of the side that counts as a border band or a corner
FALSE_ALARM = 0.01  # family-wise, over every property and class, of the screen
PERMUTATIONS = 200  # the screen's null: within-class permutations of each property
MIN_PER_CLASS = 8  # classes with fewer images add nothing to the within-class correlation
MIN_SIDE = 4  # a split side smaller than this is noise, not a group
MAX_CANDIDATES = 20  # interventions per model at most
MAX_OTHERS = 200  # other classes' images each intervention moves the property on (and control)
# Confirmation bounds on the lower 95% end of the flip-rate excess, by the rule the cluster
# interventions' bounds follow (intervention.py): twice the largest value over the (property,
# class) pairs with nothing planted, rounded up to 0.05, measured on models other than the demo
# (docs/clever_hans.md: the wider GAP CNN of bench/clever_hans.py, its clean and planted copies,
# and two smaller clean GAP CNNs). A global property's chance maximum was 0.09 (a GAP CNN at 85%
# accuracy, brightness onto 0): FLIP_BOUND, 0.20, stands. A band or corner reached 0.165 (the
# top band onto 5: brightening it draws a 5's top bar), hence 0.35.
LOCAL_FLIP_BOUND = 0.35


def property_fields(height: int, width: int, channels: int) -> dict[str, tuple]:
    """Per property, (weights, template, local): the property of an image x is
    sum(weights * x), adding ``delta * template`` changes it by ``delta`` (both (H, W, C)
    float32), and ``local`` says whether the template covers only part of the image."""
    x = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None].repeat(width, 1)
    band = max(1, round(BORDER * min(height, width)))
    planes = {"brightness": np.ones((height, width), np.float32),
              "ramp left to right": x, "ramp top to bottom": y,
              "ramp upper left to lower right": (x + y) / 2,
              "ramp lower left to upper right": (x - y) / 2}
    for name, cut in (("top", np.s_[:band, :]), ("bottom", np.s_[-band:, :]),
                      ("left", np.s_[:, :band]), ("right", np.s_[:, -band:])):
        planes[f"{name} band"] = _mask(height, width, cut)
    for rows, vertical in ((np.s_[:band], "upper"), (np.s_[-band:], "lower")):
        for cols, horizontal in ((np.s_[:band], "left"), (np.s_[-band:], "right")):
            planes[f"{vertical} {horizontal} corner"] = _mask(height, width, (rows, cols))
    fields = {}
    for name, plane in planes.items():  # on the grey level: the same plane in every channel
        template = np.repeat(plane[..., None], channels, axis=-1)
        weights = template / float((template * template).sum())
        fields[name] = (weights, template, name.endswith(("band", "corner")))
    if channels == 3:
        for k, colour in enumerate(("red", "green", "blue")):  # channel k minus the grey level
            shift = np.full(3, -0.5, np.float32)
            shift[k] = 1.0
            weights = np.zeros((height, width, 3), np.float32)
            weights[..., k] = 1.0 / (height * width)
            weights -= 1.0 / (3 * height * width)
            fields[f"{colour} cast"] = (weights, np.broadcast_to(
                shift, (height, width, 3)).astype(np.float32), False)
    return fields


def _mask(height: int, width: int, cut) -> np.ndarray:
    mask = np.zeros((height, width), np.float32)
    mask[cut] = 1.0
    return mask


def image_properties(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image values of every property of display-space images (N, H, W, C)."""
    x = np.asarray(images, np.float32)
    flat = x.reshape(len(x), -1)
    return {name: flat @ weights.reshape(-1)
            for name, (weights, _, _) in property_fields(*x.shape[1:]).items()}


def moved(images: np.ndarray, template: np.ndarray, delta) -> np.ndarray:
    """The images with ``delta`` (one value, or one per image) times the template added, kept
    in [0, 1]: the property moved by ``delta`` and nothing the template does not touch."""
    delta = np.broadcast_to(np.asarray(delta, np.float32), (len(images),))
    return np.clip(images + delta[:, None, None, None] * template[None], 0, 1).astype(
        np.float32)


def predictive_power(values: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """ppscore's classification score of one property for the labels, in [0, 1]."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.tree import DecisionTreeClassifier

    counts = np.bincount(labels)
    folds = int(min(4, counts[counts > 0].min()))
    if folds < 2 or len(np.unique(labels)) < 2:
        return 0.0
    tree = DecisionTreeClassifier(max_depth=4, min_samples_leaf=5, random_state=seed)
    predicted = cross_val_predict(tree, values.reshape(-1, 1), labels,
                                  cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    score = f1_score(labels, predicted, average="weighted")
    naive_common = f1_score(labels, np.full_like(labels, np.argmax(counts)), average="weighted",
                            zero_division=0)
    naive_random = f1_score(labels, np.random.default_rng(seed).permutation(labels),
                            average="weighted")
    naive = max(naive_common, naive_random)
    return float(max(0.0, (score - naive) / (1 - naive))) if naive < 1 else 0.0


def class_separation(values: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """Per class, how well the property alone separates it from the rest: max(AUC, 1 - AUC)."""
    from scipy.stats import rankdata

    ranks = rankdata(values)
    separation = np.full(classes, 0.5)
    for c in range(classes):
        inside = labels == c
        n_in, n_out = int(inside.sum()), int((~inside).sum())
        if n_in and n_out:
            auc = (ranks[inside].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out)
            separation[c] = max(auc, 1 - auc)
    return separation


def _standard_ranks(values: np.ndarray) -> np.ndarray:
    """Column-wise ranks of (n, k) values, standardised (a constant column stays 0)."""
    from scipy.stats import rankdata

    ranks = rankdata(values, axis=0)
    spread = ranks.std(axis=0)
    return (ranks - ranks.mean(axis=0)) / np.where(spread > 0, spread, 1)


def output_dependence(values: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                      permutations: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(P, C) Spearman correlations of P properties (``values``, (N, P)) with C class scores,
    within each true class other than the scored one, averaged by class size; and the largest
    |rho| under each of ``permutations`` within-class shuffles of the property values."""
    rng = np.random.default_rng(seed)
    classes = scores.shape[1]
    total = np.zeros((values.shape[1], classes))
    weight = np.zeros(classes)
    null = np.zeros((permutations, values.shape[1], classes))
    for k in np.unique(labels):
        inside = np.flatnonzero(labels == k)
        if len(inside) < MIN_PER_CLASS:
            continue
        ranks, outputs = _standard_ranks(values[inside]), _standard_ranks(scores[inside])
        others = (np.arange(classes) != k).astype(float)
        total += len(inside) * (ranks.T @ outputs / len(inside)) * others
        weight += len(inside) * others
        for b in range(permutations):
            shuffled = ranks[rng.permutation(len(inside))]
            null[b] += len(inside) * (shuffled.T @ outputs / len(inside)) * others
    safe = np.maximum(weight, 1)
    rho = np.where(weight > 0, total / safe, 0.0)
    return rho, np.abs(null / safe).max(axis=(1, 2)) if permutations else np.zeros(0)


def otsu_split(values: np.ndarray) -> np.ndarray:
    """The two-group split of one property's values with the largest between-group variance:
    True for the upper group."""
    order = np.sort(values)
    best, cut = -1.0, order[len(order) // 2]
    for i in range(MIN_SIDE, len(order) - MIN_SIDE + 1):
        low, high = order[:i], order[i:]
        between = len(low) * len(high) * (high.mean() - low.mean()) ** 2
        if between > best:
            best, cut = between, (order[i - 1] + order[i]) / 2
    return values > cut


@dataclass
class PropertyFinding:
    """One (property, class) pair the screen passed, and what its intervention measured."""

    property: str
    label: int
    name: str
    rho: float
    bound: float
    members: np.ndarray  # sample rows of the class's images on the suspect side of the split
    class_size: int
    effect: Effect | None = None

    @property
    def confirmed(self) -> bool:
        return self.effect is not None and self.effect.confirmed

    def summary(self) -> dict:
        out = {"property": self.property, "class": self.name, "rho": round(self.rho, 4),
               "rho_bound": round(self.bound, 4), "confirmed": self.confirmed,
               "members": int(len(self.members)), "class_images": self.class_size}
        if self.effect is not None:
            out["effect"] = self.effect.summary()
        return out


def screen(images: np.ndarray, labels: np.ndarray, log_probs: np.ndarray,
           class_names: list[str], seed: int = 0):
    """The properties, their (P, C) within-class correlations with the centred log
    probabilities, and the permutation bound on |rho| at the stated false-alarm rate."""
    properties = image_properties(images)
    values = np.stack(list(properties.values()), axis=1)
    scores = log_probs - log_probs.mean(axis=1, keepdims=True)
    rho, null = output_dependence(values, labels, scores, PERMUTATIONS, seed)
    # no class large enough to correlate within: every rho is 0, and nothing reaches 1
    bound = float(np.quantile(null, 1 - FALSE_ALARM)) if null.any() else 1.0
    return properties, rho, bound


def property_interventions(values: np.ndarray, template: np.ndarray, local: bool,
                           marked: float, typical: float):
    """(remove, paste, control paste) on (images, their values). A global property (brightness,
    a cast, a ramp) is *moved* by the difference between the suspect side and the rest of the
    class: a tint adds the same cast to every image whatever its own level, and no stroke is
    drawn, so the control is the image unchanged. A local one (a band, a corner) is *set* to the
    suspect side's value, beside the control set to the rest's: moving a band's brightness draws
    a bar, which is the class's own stroke for some classes (the top bar of a 5)."""
    difference = marked - typical
    if not local:
        return (lambda x, v: moved(x, template, -difference),
                lambda x, v: moved(x, template, difference), lambda x, v: x)
    return (lambda x, v: moved(x, template, typical - v),
            lambda x, v: moved(x, template, marked - v),
            lambda x, v: moved(x, template, typical - v))


def measure_property(logits_fn, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                     finding: PropertyFinding, values: np.ndarray, side: np.ndarray,
                     seed: int = 0, max_others: int = MAX_OTHERS) -> Effect:
    """Put the suspect side's property onto other classes' images (beside its control) and take
    it from the members: the flip rate onto the class beyond the control confirms."""
    from auditor.methods.shortcuts.intervention import probabilities

    label = finding.label
    _, template, local = property_fields(*images.shape[1:])[finding.property]
    own = np.flatnonzero(labels == label)
    members, rest = own[side], own[~side]
    # medians: a split that takes in a few unmarked images must not dilute the marked value
    marked, typical = float(np.median(values[members])), float(np.median(values[rest]))
    remove, paste, control = property_interventions(values, template, local, marked, typical)
    rng = np.random.default_rng(seed)
    others = rng.permutation(np.flatnonzero((labels != label) & (probs.argmax(1) != label)))
    others = others[:max_others]
    parts = [remove(images[i], values[i]) for i in (members, rest)]
    parts += [f(images[others], values[others]) for f in (paste, control)]
    cuts = np.cumsum([len(p) for p in parts])[:-1]
    after = np.split(probabilities(logits_fn, np.concatenate(parts)), cuts)
    drops = probs[members, label] - after[0][:, label]
    rest_drops = probs[rest, label] - after[1][:, label] if local else np.zeros(1)
    flipped, flipped_control = (after[2].argmax(1) == label), (after[3].argmax(1) == label)
    excess = paired_excess(flipped.astype(float), flipped_control.astype(float), seed)
    examples = {"member": images[members][:EXAMPLES], "removed": parts[0][:EXAMPLES],
                "member_p": (probs[members][:EXAMPLES, label], after[0][:EXAMPLES, label]),
                "other": images[others][:EXAMPLES], "pasted": parts[2][:EXAMPLES],
                "other_p": (probs[others][:EXAMPLES, label], after[2][:EXAMPLES, label])}
    trials = len(others)
    return Effect(examples=examples, region=finding.property, local=local,
                  flip_rate=float(flipped.mean()) if trials else 0.0,
                  flip_interval=wilson(int(flipped.sum()), trials),
                  flip_control=float(flipped_control.mean()) if trials else 0.0,
                  flip_excess=excess, pasted=trials,
                  score_drop=float(drops.mean()), drop_interval=bootstrap_mean(drops, seed),
                  drop_control=float(rest_drops.mean()),
                  drop_excess=two_sample_excess(drops, rest_drops, seed), members=len(members),
                  confirmed=bool(excess[1] >= (LOCAL_FLIP_BOUND if local else FLIP_BOUND)))


def forward_passes(images: int, classes: int, max_others: int = MAX_OTHERS) -> int:
    """Forward passes of the property search at most, for the compute plan: per candidate,
    the class's images and twice the other classes' images (none when the classes are too
    small to split)."""
    own = images // max(classes, 1)
    if own < 2 * MIN_SIDE:
        return 0
    return MAX_CANDIDATES * (own + 2 * min(max_others, images))


@dataclass(frozen=True)
class PropertySettings:
    """How the property check runs: each intervention pastes onto at most ``max_others``
    other-class images; only ``classes`` are put to it (None: every class)."""

    seed: int = 0
    max_others: int = MAX_OTHERS
    classes: frozenset[int] | None = None


def property_search(logits_fn, sample: Sample, settings: PropertySettings = PropertySettings()):
    """Screen every (property, class) of the sample's images (``sample.probs``: the model's
    on them), then put the strongest candidates (at most ``MAX_CANDIDATES``, largest |rho|
    first; of ``settings.classes`` only, when given) to the intervention. Returns the table
    rows (one per property, for the report), the candidates with their effects, and the
    screen's bound."""
    images, labels, probs, class_names = sample.images, sample.labels, sample.probs, \
        sample.class_names
    seed, max_others, classes = settings.seed, settings.max_others, settings.classes
    log_probs = np.log(np.maximum(probs, 1e-12))
    properties, rho, bound = screen(images, labels, log_probs, class_names, seed)
    names = list(properties)
    passed = [(abs(rho[p, c]), p, c) for p in range(len(names)) for c in range(rho.shape[1])
              if abs(rho[p, c]) >= bound and (labels == c).sum() >= 2 * MIN_SIDE
              and (classes is None or c in classes)]
    candidates = []
    for _, p, c in sorted(passed, reverse=True)[:MAX_CANDIDATES]:
        values = properties[names[p]]
        own = values[labels == c]
        side = otsu_split(own) if rho[p, c] > 0 else ~otsu_split(own)
        if MIN_SIDE <= side.sum() <= len(own) - MIN_SIDE:
            finding = PropertyFinding(names[p], c, class_names[c], float(rho[p, c]), bound,
                                      np.flatnonzero(labels == c)[side], len(own))
            finding.effect = measure_property(logits_fn, images, labels, probs, finding, values,
                                              side, seed, max_others)
            candidates.append(finding)
    return table_rows(properties, labels, rho, bound, candidates, class_names, seed), \
        candidates, bound


def table_rows(properties: dict, labels: np.ndarray, rho: np.ndarray, bound: float,
               candidates: list[PropertyFinding], class_names: list[str],
               seed: int = 0) -> list[dict]:
    """One row per property: PPS and best class AUC (the data), the class whose score it moves
    most on other classes' images and that correlation, and whether an intervention confirmed
    it for some class (flagged)."""
    rows = []
    for p, (name, values) in enumerate(properties.items()):
        separation = class_separation(values, labels, len(class_names))
        moved, best = int(np.argmax(np.abs(rho[p]))), int(np.argmax(separation))
        mine = [f for f in candidates if f.property == name]
        confirmed = [f.name for f in mine if f.confirmed]
        rows.append({"property": name, "pps": round(predictive_power(values, labels, seed), 4),
                     "class": class_names[best], "auc": round(float(separation[best]), 4),
                     "output_class": class_names[moved], "output_rho": round(
                         float(rho[p, moved]), 4), "screened": bool(abs(rho[p, moved]) >= bound),
                     "confirmed_classes": confirmed, "flagged": bool(confirmed)})
    return sorted(rows, key=lambda r: (not r["flagged"], -abs(r["output_rho"]), -r["pps"]))
