"""The shortcut search on one model: candidates from every signal, each put to the intervention.

Per class, SpRAy on saliency maps and the same clustering on penultimate features each pick
the class's most suspicious group, and flag the class when that group's score passes the bound
calibrated against the model's other classes (``discovery.py``). Every suspect group, flagged
or not, is then put to the intervention (``intervention.py``: remove its difference, paste it
onto other classes), which costs forward passes only. The third signal is the property check
(``properties.py``): image properties (brightness, colour cast, lightness ramps, border bands,
corners) that move a class's score beyond the label, each split and moved by intervention. It
finds what the maps and features blur: a ramp or a cast whose maps differ evenly over the
image, and whose clusters mix marked and unmarked images. A class is flagged when a signal flags
it or its intervention confirms a shortcut (the stronger evidence: a watermark across the
image or a colour cast need not make a group's maps or features outstanding), and it is a
finding only when confirmed; a flag the intervention does not confirm is listed apart as an
unconfirmed hypothesis.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from auditor.methods.shortcuts.discovery import (
    ClassDiscovery,
    Sample,
    SpraySettings,
    discover,
    discover_features,
)
from auditor.methods.shortcuts.intervention import Effect, confirm, probabilities
from auditor.methods.shortcuts.properties import (
    PropertyFinding,
    PropertySettings,
    property_search,
)
from auditor.predict.batched import forward


@dataclass
class Finding:
    """One class: what each signal found, and what the intervention measured."""

    label: int
    name: str
    maps: ClassDiscovery | None
    features: ClassDiscovery | None
    properties: list[PropertyFinding] = field(default_factory=list)  # screened for the class
    effect: Effect | None = None  # measured for a candidate only
    signal: str | None = None  # the signal whose group was confirmed (or tried)
    intervened: bool = True  # False: the search's class limit left it out of the interventions

    @property
    def discovered(self) -> bool:
        """A signal's score passed its calibrated bound."""
        return any(d is not None and d.flagged for d in (self.maps, self.features))

    @property
    def candidate(self) -> bool:
        """Flagged: discovered by a signal, or confirmed by the intervention."""
        return self.discovered or self.confirmed

    @property
    def confirmed(self) -> bool:
        return self.effect is not None and self.effect.confirmed

    @property
    def suspect(self) -> ClassDiscovery | None:
        """The discovery whose group the effect was measured on (None for a property)."""
        return {"maps": self.maps, "features": self.features}.get(self.signal or "")

    @property
    def property(self) -> PropertyFinding | None:
        """The property whose intervention is the class's effect, if one is."""
        return next((p for p in self.properties if p.effect is self.effect), None)

    def summary(self) -> dict:
        maps = self.maps.summary() if self.maps is not None else {}
        out = {**maps, "flagged": self.candidate, "confirmed": self.confirmed,
               "discovered": self.discovered, "signal": self.signal}
        if self.features is not None:
            out["features"] = {k: v for k, v in self.features.summary().items()
                               if k in ("score", "bound", "flagged", "clusters", "sizes",
                                        "separation")}
        if self.properties:
            best = self.property or self.properties[0]
            out["property"] = {k: v for k, v in best.summary().items() if k != "effect"}
        if self.effect is not None:
            out["effect"] = self.effect.summary()
            out["members"] = int(self.effect.members)
        return out


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs: the attribution ``method`` whose maps are clustered, pooled to
    ``grid`` x ``grid`` cells, into at most ``k_max`` groups per class; each intervention pastes
    onto at most ``max_others`` images of other classes. The interventions are the search's
    cost: with ``most_classes``, only that many classes are put to them (``focus`` first, see
    ``intervened``); the others keep their signals and no effect."""

    method: str = "gradient"
    grid: int = 16
    k_max: int = 5
    max_others: int = 200
    most_classes: int | None = None  # None: every class
    focus: int | None = None
    seed: int = 0


def search(handle, sample: Sample,
           settings: SearchSettings = SearchSettings()) -> tuple[list[Finding], np.ndarray]:
    """Every class of the sample: candidates by maps, by features and by image properties,
    each confirmed or not by interventions. The findings in label order, and the pooled maps
    in the order of ``sample.images``."""
    images, labels, positions, seed = sample.images, sample.labels, sample.positions, settings.seed
    by_maps, pooled = discover(handle, sample, SpraySettings(settings.method, settings.grid,
                                                             settings.k_max, seed))
    by_features = ([None] * len(by_maps) if sample.features is None else
                   discover_features(sample.features, labels, positions, sample.class_names,
                                     k_max=settings.k_max, seed=seed))
    chosen = intervened(by_maps, by_features, settings.focus, settings.most_classes, seed)

    def logits_fn(batch):  # the audit's path: memory-budgeted blocks, the handle's strategy
        return forward(handle, batch)

    # once: every intervention's "before"
    probs = probabilities(logits_fn, images) if sample.probs is None else sample.probs
    known = dataclasses.replace(sample, probs=probs)
    properties = (property_search(logits_fn, known, PropertySettings(
        seed, settings.max_others, None if chosen is None else frozenset(chosen)))
                  if sample.properties is None else sample.properties)
    findings = []
    for on_maps, on_features in zip(by_maps, by_features, strict=True):
        screened = [p for p in properties[1] if p.label == on_maps.label]
        intervened_on = chosen is None or on_maps.label in chosen
        suspects = [d for d in (on_maps, on_features)
                    if d is not None and d.suspect is not None and intervened_on]
        effect, signal = strongest(logits_fn, known, settings, suspects, screened)
        findings.append(Finding(on_maps.label, on_maps.name, on_maps, on_features, screened,
                                effect, signal, intervened_on))
    return findings, pooled


def strongest(logits_fn, sample: Sample, settings: SearchSettings, suspects: list,
              screened: list[PropertyFinding]) -> tuple[Effect | None, str | None]:
    """The strongest effect on one class, and the signal it came from: each suspect group's
    intervention (run here) and each screened property's (measured by property_search)."""
    index_of = {int(p): i for i, p in enumerate(sample.positions)}
    best, signal = None, None
    memo: dict = {}  # the class's effects: its two suspects may share an intervention
    for discovery in suspects:
        members = np.array([index_of[int(p)] for p in discovery.members])
        effect = confirm(logits_fn, discovery.label, sample.images, sample.labels, members,
                         discovery.region, settings.grid, settings.seed,
                         max_others=settings.max_others, probs=sample.probs, memo=memo)
        if best is None or effect.strength > best.strength:
            best, signal = effect, discovery.signal
    for candidate in screened:
        if best is None or candidate.effect.strength > best.strength:
            best, signal = candidate.effect, "properties"
    return best, signal


def intervened(by_maps: list[ClassDiscovery], by_features: list, focus: int | None,
               most: int | None, seed: int = 0) -> set[int] | None:
    """The classes put to the intervention when at most ``most`` may be (None: every class):
    ``focus`` first, then the classes a signal flagged, highest score over bound first (where
    a confirmed shortcut, or a false flag, is likeliest), then a seeded sample of the rest."""
    if most is None or most >= len(by_maps):
        return None
    ratio = {d.label: 0.0 for d in by_maps}
    for d in [*by_maps, *by_features]:
        if d is not None and d.flagged:
            ratio[d.label] = max(ratio[d.label], d.score / max(d.bound, 1e-12))
    flagged = sorted((label for label, r in ratio.items() if r > 0), key=lambda c: -ratio[c])
    rest = np.random.default_rng(seed).permutation(
        [label for label, r in ratio.items() if r == 0]).tolist()
    order = ([] if focus is None else [focus]) + flagged + rest
    return set(list(dict.fromkeys(order))[:max(1, most)])


def per_class_sample(labels: np.ndarray, limit: int, seed: int,
                     whole: int | None = None) -> np.ndarray:
    """Positions of at most ``limit`` images of each class (every image of class ``whole``),
    sorted."""
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:None if c == whole else limit]
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)
