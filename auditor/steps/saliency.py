"""The saliency of the mistakes as a step: the maps several sections show of the same images
(the most confident mistakes explained for their predicted and their true class: contrastive
maps, the counterfactuals' contrastive gradient, the attribution section's examples) are made
once, before the sections, and read by each.

A section declares ``"saliency"`` in its ``STEPS`` and says which maps it will read with
``saliency_requests(inputs, options, shared) -> tuple[Request, ...]`` (``shared`` holds the
steps made before this one, such as the card a section takes its method from). Each map
(method, score, options, image, target and, for a difference of scores, the contrast class)
is made once. A section asking for a map the step did not make gets it made for itself alone
(``SaliencyMaps.maps``): triage's mistakes, chosen by its own verdicts, take the step's maps
of those it shares and make the rest.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field

import numpy as np

NAME = "saliency"
TITLE = "the saliency of the mistakes"
HOOK = "saliency_requests"  # what a section that declares this step defines


@dataclass(frozen=True)
class Request:
    """Maps of ``method`` for the audit images at ``positions``, one target class each;
    ``contrast`` (one class per image) explains the target's score minus the contrast's."""

    method: str
    positions: tuple[int, ...]
    targets: tuple[int, ...]
    contrast: tuple[int, ...] | None = None
    score: str = "logit"
    options: types.MappingProxyType = field(
        default_factory=lambda: types.MappingProxyType({}))
    paired: bool = False  # the map of the difference of scores even for a linear method

    @classmethod
    def of(cls, method, positions, targets, contrast=None, score="logit", options=None,
           paired=False):
        def ints(values):
            return tuple(int(v) for v in np.asarray(values).reshape(-1))

        return cls(method, ints(positions), ints(targets),
                   None if contrast is None else ints(contrast), score,
                   types.MappingProxyType(dict(options or {})), paired)


@dataclass(frozen=True)
class SaliencyMaps:
    """The maps the step made, read-only: per (method, score, options) group, a map per
    (position, target) or (position, target, contrast); ``failed``: why a group's method
    could not run on this model (read as the error the section would have met)."""

    made: types.MappingProxyType = field(default_factory=lambda: types.MappingProxyType({}))
    failed: types.MappingProxyType = field(default_factory=lambda: types.MappingProxyType({}))

    def __len__(self) -> int:
        """How many maps were made."""
        return sum(len(maps) for maps in self.made.values())

    def maps(self, inputs, method: str, positions, targets, *, contrast=None, images=None,
             score: str = "logit", options: dict | None = None,
             paired: bool = False) -> np.ndarray:
        """Maps of ``method`` for the audit images at ``positions`` (``images``: theirs, when
        the caller has them), one target each: the step's where it made them, the others made
        now for the caller alone. For a method linear in the score, target minus
        ``contrast`` is the difference of the two targets' maps, unless ``paired`` (the map
        of the difference, one backward pass)."""
        group = _group(method, score, options)
        if group in self.failed:
            raise RuntimeError(self.failed[group])
        known = self.made.get(group, {})
        keys = _keys(method, positions, targets, contrast, paired)
        made = _make(inputs, method, score, options, [k for k in keys if k not in known],
                     positions, images)
        shape = tuple(inputs.handle.input_shape)
        rows = [known[k] if k in known else made[k] for k in keys]
        stacked = np.stack(rows) if rows else np.zeros((0, *shape), np.float32)
        if contrast is None or paired or not _linear(method):
            return stacked
        n = len(np.asarray(positions).reshape(-1))
        return stacked[:n] - stacked[n:]


def make(inputs, options, shared, sections: dict) -> SaliencyMaps:
    """Every map the ``sections`` ({name: module}) ask for, each made once."""
    from auditor.steps.shared import read_only

    wanted: dict[tuple, tuple[dict, list]] = {}
    for name, module in sections.items():
        for request in getattr(module, HOOK)(inputs, options[name], shared):
            group = _group(request.method, request.score, dict(request.options))
            _, keys = wanted.setdefault(group, (dict(request.options), []))
            keys += [k for k in _keys(request.method, request.positions, request.targets,
                                      request.contrast, request.paired) if k not in keys]
    made, failed = {}, {}
    for group, (given, keys) in wanted.items():
        method, score, _ = group
        try:
            made[group] = _make(inputs, method, score, given, keys)
        except Exception as exc:  # noqa: BLE001 - the section that reads it fails with it
            failed[group] = f"{method}: {type(exc).__name__}: {exc}"
    return SaliencyMaps(read_only(made), types.MappingProxyType(failed))


def _group(method: str, score: str, options: dict | None) -> tuple:
    return (method, score, json.dumps(dict(options or {}), sort_keys=True, default=str))


def _linear(method: str) -> bool:
    from auditor.methods.attribution import METHODS

    return METHODS[method].linear


def _keys(method, positions, targets, contrast, paired=False) -> list[tuple]:
    """Where each map is kept: (position, target), with the contrast class when the map
    explains target minus contrast by a method not linear in the score (or ``paired``); a
    linear method's difference is two maps, the targets' then the contrasts'."""
    positions = [int(p) for p in np.asarray(positions).reshape(-1)]
    targets = [int(t) for t in np.asarray(targets).reshape(-1)]
    if contrast is None:
        return list(zip(positions, targets, strict=True))
    contrast = [int(c) for c in np.asarray(contrast).reshape(-1)]
    if _linear(method) and not paired:
        return list(zip(positions, targets, strict=True)) + list(zip(positions, contrast,
                                                                      strict=True))
    return list(zip(positions, targets, contrast, strict=True))


def _make(inputs, method, score, options, keys, positions=None, images=None) -> dict:
    """Maps of ``keys``: one call for the plain targets, one for the pairs. ``images`` are
    those of ``positions`` when the caller has them (else read from the dataset)."""
    from auditor.methods.attribution import attribute

    made = {}
    given = ({} if images is None else
             {int(p): i for i, p in enumerate(np.asarray(positions).reshape(-1))})
    for paired in (False, True):
        chosen = list(dict.fromkeys(k for k in keys if (len(k) == 3) == paired))
        if not chosen:
            continue
        at = np.array([k[0] for k in chosen])
        x = (np.asarray(images)[[given[p] for p in at.tolist()]] if images is not None
             else inputs.dataset.images(at))
        maps = attribute(inputs.handle, x, np.array([k[1] for k in chosen]), method,
                         score=score, contrast=np.array([k[2] for k in chosen]) if paired
                         else None, **dict(options or {}))
        made.update(zip(chosen, maps, strict=True))
    return made
