"""The reliability card: per attribution method, measurements of whether to believe its maps on
this model, each with a pass/warn/fail bound from the literature.

    randomisation     rank correlation with the original maps once every layer is re-drawn
                      (Adebayo et al. 2018): a map that survives shows the input, not the model
    input_invariance  relative change of the maps on a copy whose first layer absorbs a constant
                      input shift (Kindermans et al. 2019): the model is the same function, so a
                      reliable map is the same
    faithfulness      insertion minus deletion area above a random order's (Petsiuk et al. 2018)
    shortcut_mass     relevance mass ratio on a planted shortcut the model learned, and
    control_mass      the same on the control copy that never saw it: a false alarm (Adebayo et
                      al. 2022), both from the Clever Hans injection when it ran

A method whose maps are all zero, constant or non-finite on a share of the images cannot be
measured: its columns are ``skipped`` with the reason ("not measurable: maps all zero on 4 of 4
images"), never pass, and never ``error``, which is for a crash: a result that cannot be
measured is neither a pass nor an accusation. ``trusted`` means no column fails or errors and
randomisation and faithfulness pass, so such a method is not trusted.

A card made below its floors (a named budget that cannot hold its samples on this model:
predict/plan.py ``below_floor``) shows its values but judges none: each measured cell is
``skipped`` with the reason "not measured: ...", so no method is trusted, and what rests on
the card says it was not measured (``unjudged``), never a pass, nor an accusation of the method.
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError

# Adebayo et al. 2018 (Sanity Checks for Saliency Maps, cascading randomisation figures): the
# methods they find insensitive to the weights (guided backprop, guided Grad-CAM) keep a
# Spearman rank correlation of roughly 0.7 and more with the original maps after full
# randomisation; the sensitive ones (gradient, Grad-CAM) fall to about 0.4 and below. A method
# above 0.7 fails; between 0.5 and 0.7 it warns.
RANDOMISATION_BOUNDS = {"warn_above": 0.5, "fail_above": 0.7}
# Kindermans et al. 2019 (The (Un)reliability of Saliency Methods): input invariance asks for the
# same map, so any change beyond float noise (1e-5 here) is a failure of the axiom; 1% warns,
# 10% (a visible change) fails.
INVARIANCE_BOUNDS = {"warn_above": 0.01, "fail_above": 0.1}
# Petsiuk et al. 2018 (RISE; Samek et al. 2017 likewise): a map must beat a random ranking;
# at or below it warns, clearly below it (5% of the probability range) fails.
FAITHFULNESS_BOUNDS = {"warn_below": 0.0, "fail_below": -0.05}
# Relevance mass inside the shortcut's mask relative to the mask's area (1 = uniform). The
# Clever Hans section calls a shortcut detected at 3 (its ``detect_ratio``); below 1.5 a method
# is blind to a shortcut the model provably uses.
SHORTCUT_BOUNDS = {"warn_below": 3.0, "fail_below": 1.5}
# On the control copy the same mass is a false alarm (Adebayo et al. 2022): at the detection
# ratio it fails, halfway there it warns.
CONTROL_BOUNDS = {"warn_above": 1.5, "fail_above": 3.0}
BOUNDS = {"randomisation": RANDOMISATION_BOUNDS, "input_invariance": INVARIANCE_BOUNDS,
          "faithfulness": FAITHFULNESS_BOUNDS, "shortcut_mass": SHORTCUT_BOUNDS,
          "control_mass": CONTROL_BOUNDS}
COLUMNS = tuple(BOUNDS)
DEGENERATE_SHARE = 0.25  # a quarter of the images unmeasurable makes a mean over them moot
RANDOMISED = "on the randomised model"  # how sanity.py ends a reason about the random copy
INPUT_SHIFT = -1.0  # Kindermans et al.'s shift: MNIST's [0, 1] moved to [-1, 0]
NOT_MEASURED = "not measured"  # how a cell's reason starts when the card did not measure it
DECIDING = ("randomisation", "faithfulness")  # the columns a trusted method must pass


def degenerate_reason(maps: np.ndarray) -> str | None:
    """Why maps cannot be measured (non-finite, all zero or constant on at least a quarter of
    the images), or None."""
    maps = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    if not len(maps):
        return "no maps"
    finite = np.isfinite(maps).all(axis=1)
    safe = np.where(np.isfinite(maps), maps, 0.0)
    zero = finite & (np.abs(safe).max(axis=1) == 0)
    spread = safe.max(axis=1) - safe.min(axis=1)
    constant = finite & ~zero & (spread <= 1e-7 * np.abs(safe).max(axis=1))
    for name, bad in (("non-finite", ~finite), ("all zero", zero), ("constant", constant)):
        if bad.mean() >= DEGENERATE_SHARE:
            return f"maps {name} on {int(bad.sum())} of {len(maps)} images"
    return None


def relative_change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of |a - b|_1 / |a|_1."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    norm = np.abs(a).sum(axis=1)
    return float(np.mean(np.abs(a - b).sum(axis=1) / np.where(norm > 0, norm, 1.0)))


def shifted_copy(handle, shift: float = INPUT_SHIFT):
    """A handle on a copy of the model that takes display images shifted by ``shift`` and
    computes the same logits: every linear layer reading the input absorbs the shift through
    its bias, with explicit padding by the shifted background where it padded with zeros
    (``shifted.py``). Raises AuditorError when no bias can absorb it."""
    import dataclasses

    from auditor.methods.attribution.sanity import randomisable_copy
    from auditor.methods.attribution.shifted import shifted_model

    # the working copy at the model's weights: the new model's graph runs through its layers,
    # not the user's, and is copied once more (shifted.py) so that it owns its layers
    copy = randomisable_copy(handle)
    delta = shift * np.asarray(handle.transform.scale, np.float32)
    model = shifted_model(copy.logits_model, tuple(handle.input_shape),
                          np.broadcast_to(delta, handle.input_shape[-1:]))
    return dataclasses.replace(copy, model=model, logits_model=model, compiled={},
                               display_shift=handle.display_shift + shift)


def input_invariance(handle, x, targets, methods: list[str], *, method_options: dict,
                     score: str = "logit", shift: float = INPUT_SHIFT, eager=()):
    """Per method, the relative change of its maps on the shifted copy; and why the test could
    not run (or None). The copy must reproduce the logits, else nothing is measured. The
    copy's passes named in ``eager`` run eagerly (inputs/traces.py: too few calls to repay a
    trace of their own, which the copy, not the model's twin, would need)."""
    from auditor.inputs.traces import run_eagerly
    from auditor.methods.attribution.registry import shared_gradient

    try:
        copy = shifted_copy(handle, shift)
    except AuditorError as exc:
        return {}, str(exc)
    run_eagerly(copy, eager)
    moved = (x + np.float32(shift)).astype(np.float32)
    same = np.abs(copy.logits(moved).numpy() - handle.logits(x).numpy()).max()
    scale = np.abs(handle.logits(x).numpy()).max() + 1e-12
    if same > 1e-3 * scale:
        return {}, (f"a shifted copy of the model does not reproduce its logits (largest "
                    f"difference {same:.2g} against logits up to {scale:.2g})")
    changes = {}
    on_model, on_copy = (shared_gradient(handle, x, targets, score),
                         shared_gradient(copy, moved, targets, score))
    for method in methods:
        options = method_options.get(method, {})
        try:
            changes[method] = relative_change(on_model(method, options),
                                              on_copy(method, options))
        except AuditorError:
            continue
    return changes, None


def _column(name: str, method: str, value, reason: str | None, spec: dict | None,
            skipped: str | None = None, unmeasured: str | None = None) -> dict:
    """One cell: ``reason`` says why the maps cannot be measured, ``skipped`` why the test
    could not run on this model (not the method's fault), ``unmeasured`` why its value, shown,
    is not judged (the card ran below its floors); all three are ``skipped``."""
    from auditor.checks.check import evaluate

    if reason:
        return {"value": None, "status": "skipped", "reason": f"not measurable: {reason}"}
    if value is None:
        return {"value": None, "status": "skipped", "reason": skipped or NOT_MEASURED}
    if unmeasured:
        return {"value": float(value), "status": "skipped",
                "reason": f"{NOT_MEASURED}: {unmeasured}"}
    check = evaluate(f"attribution.reliability.{name}", float(value), section="attribution",
                     message=f"{method}: {name}", defaults=BOUNDS[name], spec=spec)
    return {"value": float(value), "status": check.status, "reason": None}


def is_trusted(entry: dict) -> bool:
    """No column fails or errors, and randomisation and faithfulness pass."""
    statuses = {name: entry[name]["status"] for name in COLUMNS}
    return (not {"fail", "error"} & set(statuses.values())
            and all(statuses[name] == "pass" for name in DECIDING))


def unjudged(entry: dict) -> str | None:
    """Why the card could not judge a method (``entry``, its row): a deciding column it did
    not measure (its reason "not measured: ..."), while no column fails or errors, nor is
    unmeasurable; None when the card judged it, trusted or not."""
    cells = [entry[name] for name in COLUMNS]
    if any(c["status"] in ("fail", "error") or (c["reason"] or "").startswith("not measurable")
           for c in cells):
        return None
    reasons = [entry[name]["reason"] for name in DECIDING if entry[name]["status"] != "pass"]
    if reasons and all((r or "").startswith(NOT_MEASURED) for r in reasons):
        return reasons[0]
    return None


def build_card(methods: list[str], *, randomisation: dict, sanity_degenerate: dict,
               invariance: dict, invariance_reason: str | None, faithfulness: dict,
               faithfulness_degenerate: dict, thresholds=lambda name: None,
               unmeasured: str | None = None) -> dict:
    """{method: {column: {value, status, reason}, trusted}}; ``thresholds(column)`` gives the
    spec's bounds over the defaults; ``unmeasured`` why no measured cell is judged (the card
    ran below its floors: its values shown, each cell ``skipped``, no method trusted)."""
    card = {}
    for m in methods:
        original = sanity_degenerate.get(m)  # the randomised model's dead maps say nothing
        on_copy = bool(original and original.endswith(RANDOMISED))  # about the original's
        broken = faithfulness_degenerate.get(m) or (original if not on_copy else None)
        card[m] = {  # dead maps, on the model or its random copy: not measured, no error
            "randomisation": _column("randomisation", m, randomisation.get(m), original,
                                     thresholds("randomisation"), unmeasured=unmeasured),
            "input_invariance": _column("input_invariance", m, invariance.get(m), broken,
                                        thresholds("input_invariance"), invariance_reason,
                                        unmeasured),
            "faithfulness": _column("faithfulness", m, faithfulness.get(m),
                                    faithfulness_degenerate.get(m), thresholds("faithfulness"),
                                    unmeasured=unmeasured),
            "shortcut_mass": _column("shortcut_mass", m, None, None, None),
            "control_mass": _column("control_mass", m, None, None, None),
        }
        card[m]["trusted"] = is_trusted(card[m])
    return card


def add_shortcut_columns(card: dict, injection: list[dict], control_name: str,
                         thresholds=lambda name: None) -> None:
    """Fill shortcut_mass (best mass ratio over the shortcuts the model learned) and
    control_mass (on the control copy) from the Clever Hans injection summaries, in place."""
    for m, entry in card.items():
        learned = [i["relevance_mass_ratio"][m] for i in injection
                   if i["shortcut"] != control_name and i.get("learned")
                   and m in i.get("relevance_mass_ratio", {})]
        control = [i["control_mass_ratio"][m] for i in injection
                   if m in i.get("control_mass_ratio", {})]
        if learned:
            entry["shortcut_mass"] = _column("shortcut_mass", m, max(learned), None,
                                             thresholds("shortcut_mass"))
        if control:
            entry["control_mass"] = _column("control_mass", m, max(control), None,
                                            thresholds("control_mass"))
        entry["trusted"] = is_trusted(entry)


def trusted_ranking(card: dict) -> list[str]:
    """The trusted methods, largest faithfulness margin first."""
    trusted = [m for m, e in card.items() if e["trusted"]]
    return sorted(trusted, key=lambda m: card[m]["faithfulness"]["value"], reverse=True)


def best_trusted(card: dict) -> str | None:
    """The trusted method with the largest faithfulness margin, or None."""
    return next(iter(trusted_ranking(card)), None)


def why_untrusted(card: dict, method: str) -> str | None:
    """Why the card does not trust ``method`` (its columns that fail, error or do not pass
    where they must), or None when it does."""
    entry = card.get(method)
    if entry is None:
        return "not on the reliability card"
    if entry["trusted"]:
        return None
    broken = [f"{name} " + (NOT_MEASURED if (entry[name]["reason"] or "").startswith(
                  NOT_MEASURED) else entry[name]["status"]) for name in COLUMNS
              if entry[name]["status"] in ("fail", "error")
              or name in DECIDING and entry[name]["status"] != "pass"]
    return ", ".join(broken) or "not trusted"
