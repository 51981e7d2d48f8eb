"""Causal confirmation of a shortcut candidate: take it away, and paste it elsewhere.

A discovered group is a hypothesis. Lapuschkin et al. (2019) proved the horse tag by removing it
(the horse score fell) and pasting it onto a car (it became a horse). Here both steps are
automated for any candidate: the suspect group's difference from the rest of its class, in a
region the data suggested, is

- removed from the members: inside the region, pixels are filled with the class's typical
  values (the mean image of the rest of the class); for a whole-image difference (a colour
  cast, a lightness ramp) the members' colour statistics are mapped back onto the rest's;
  behind the object (a fixed background), each member keeps its object and gets the class's
  typical background;
- pasted onto images of other classes: inside the region, the members' mean image; for a
  whole-image difference, the forward colour mapping; behind the object, their objects
  composited onto the members' typical (per-pixel median) background.

The effect sizes are the drop of the suspect class's probability on the members (mean, with a
bootstrap interval) and the flip rate of other-class images onto the suspect class (with a
Wilson interval), each beside its control: the same region pasted with (or, for the drop, the
rest of the class filled with) the rest of the class's own mean image. Pasting a class's
typical strokes makes any digit look like it; only the effect beyond that control is the
group's. A candidate is confirmed when the lower end of the flip rate's excess over its control
(paired bootstrap) reaches its bound, or, for a local region, the drop's excess does; otherwise
it stays an unconfirmed hypothesis, not a shortcut. A whole-image drop does not confirm:
mapping a group's colour statistics onto the rest's changes a class's natural look too (thick
strokes made thin), and the class score falls with it for any group, shortcut or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.predict.predictions import softmax

# Confirmation bounds, measured on a model other than the one tested (docs/clever_hans.md: a
# wider CNN with global average pooling, seed 1, and its fine-tuned copies, `python
# bench/clever_hans.py --discovery --model other --verbose`), over the class searches with
# nothing planted in the class. Clustering gradient maps (64 searches, before the background
# intervention): lower 95% ends of the flip-rate excess at most 0.08, of the local drop excess
# at most 0.17. Clustering the reliability card's method there (gradcam; 73 searches, 8 copies,
# with the background intervention): at most 0.06 and 0.24. Rule: twice the largest chance
# maximum over the methods measured, rounded up to 0.05. The planted shortcuts found reached
# flip-excess lower ends of 0.25 to 0.94; none is confirmed by the drop alone.
FLIP_BOUND = 0.20  # confirmed when the flip-rate excess's lower end reaches this ...
DROP_BOUND = 0.50  # ... or, in a local region, the score-drop excess's lower end
Z95 = 1.959964
EXAMPLES = 4  # images kept per side of an intervention for the report
SMOOTH = 0.25  # whole-image differences keep spatial structure coarser than this share
BACKGROUND = "background"  # the region behind the object, found per image (object_mask)


@dataclass
class Effect:
    """The measured effect of one intervention, raw and beyond its control: the same region
    pasted (or filled) with the rest of the class's own mean image, so that pasting a class's
    natural strokes, which would make any digit look like it, is not credited to the group."""

    region: str  # where it acted: a region name, or "whole image"
    local: bool
    flip_rate: float
    flip_interval: tuple[float, float]  # Wilson
    flip_control: float  # the flip rate when the rest's mean is pasted instead
    flip_excess: tuple[float, float, float]  # flip rate minus control: value, bootstrap interval
    pasted: int  # other-class images pasted onto (not already predicted as the class)
    score_drop: float
    drop_interval: tuple[float, float]  # bootstrap
    drop_control: float  # the drop of the rest's images under the same fill
    drop_excess: tuple[float, float, float]
    members: int
    confirmed: bool
    examples: dict = field(default_factory=dict, repr=False)  # a few images for the report
    rows: np.ndarray | None = field(default=None, repr=False)  # the members' rows in images

    @property
    def strength(self) -> tuple[bool, float]:
        """For choosing among interventions: confirmed first, then the larger lower bound."""
        return self.confirmed, max(self.flip_excess[1], self.drop_excess[1] if self.local
                                   else -1.0)

    def summary(self) -> dict:
        def part(value, interval, control, excess, images):
            return {"value": round(value, 4), "interval": [round(v, 4) for v in interval],
                    "control": round(control, 4), "excess": round(excess[0], 4),
                    "excess_interval": [round(excess[1], 4), round(excess[2], 4)],
                    "images": images}

        return {"region": self.region, "confirmed": self.confirmed,
                "flip_rate": part(self.flip_rate, self.flip_interval, self.flip_control,
                                  self.flip_excess, self.pasted),
                "score_drop": part(self.score_drop, self.drop_interval, self.drop_control,
                                   self.drop_excess, self.members)}


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_mean(values: np.ndarray, seed: int = 0,
                   resamples: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of a mean."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


class ColourMap:
    """A per-channel affine map of one group's colour statistics onto another's, plus the
    smooth remainder of their mean images (a lightness ramp survives, a digit's shape not)."""

    def __init__(self, source: np.ndarray, target: np.ndarray):
        axes = (0, 1, 2)
        self.mu_s, self.mu_t = source.mean(axis=axes), target.mean(axis=axes)
        self.sd_s = np.maximum(source.std(axis=axes), 1e-3)
        self.sd_t = np.maximum(target.std(axis=axes), 1e-3)
        self.residual = smooth(target.mean(0) - self._affine(source.mean(0)))

    def _affine(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mu_s) / self.sd_s * self.sd_t + self.mu_t

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self._affine(x) + self.residual, 0, 1).astype(np.float32)

    def backward(self, x: np.ndarray) -> np.ndarray:
        y = x - self.residual
        return np.clip((y - self.mu_t) / self.sd_t * self.sd_s + self.mu_s, 0, 1).astype(
            np.float32)


def smooth(image: np.ndarray) -> np.ndarray:
    """A Gaussian blur with sigma SMOOTH x the shorter side, per channel."""
    from scipy.ndimage import gaussian_filter

    sigma = SMOOTH * min(image.shape[:2])
    return np.stack([gaussian_filter(image[..., c], sigma, mode="nearest")
                     for c in range(image.shape[-1])], axis=-1).astype(np.float32)


def typical_background(images: np.ndarray, objects: np.ndarray | None = None) -> np.ndarray:
    """(H, W, C): per pixel, the median of the images where that pixel is background (not in
    ``patterns.object_mask``, or ``objects`` when the images' masks are known); the images'
    overall median background colour where none is. The median, not the mean: a suspect group
    that is two thirds marked still gives the whole photo back, and a rest that is one third
    marked still gives the class's own background."""
    from auditor.methods.shortcuts.patterns import object_mask

    objects = object_mask(images) if objects is None else objects
    behind = np.where(objects[..., None], np.nan, images)
    if np.isnan(behind).all():
        return np.zeros(images.shape[1:], np.float32)
    overall = np.nanmedian(behind.reshape(-1, images.shape[-1]), axis=0)
    typical = median_of_known(behind)  # NaN where the pixel is object in every image
    return np.where(np.isnan(typical), overall, typical).astype(np.float32)


def median_of_known(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=0)`` by one sort (NaNs sort last), without its per-pixel
    loop: a few seconds per call on a class of 224 px images otherwise."""
    known = (~np.isnan(values)).sum(axis=0)
    ordered = np.sort(values, axis=0)
    low = np.take_along_axis(ordered, np.maximum(known - 1, 0)[None] // 2, axis=0)[0]
    high = np.take_along_axis(ordered, known[None] // 2, axis=0)[0]
    return np.where(known > 0, (low + high) / 2, np.nan)


def background_interventions(members: np.ndarray, rest: np.ndarray):
    """(remove, paste, control paste) behind the object: each image keeps its own object
    (``patterns.object_mask``) and gets another background. Remove restores the class's
    typical background (the rest's); paste composites other classes' objects onto the members'
    typical background (a fixed photo behind most members comes back whole); the control paste
    onto the rest's."""
    from auditor.methods.shortcuts.patterns import object_mask

    typical, marked = typical_background(rest), typical_background(members)

    def behind(value):
        return lambda x: np.where(object_mask(x)[..., None], x, value[None]).astype(np.float32)

    return behind(typical), behind(marked), behind(typical)


def interventions(members: np.ndarray, rest: np.ndarray, mask):
    """(remove, paste, control paste) functions on image batches for a region mask (H, W) in
    [0, 1], for the whole image when ``mask`` is None, or behind the object when it is
    BACKGROUND. Remove fills the region with the rest's mean (applied to the rest, it is the
    fill's own control); paste puts the members' mean there, the control paste the rest's."""
    if mask is None:
        mapping = ColourMap(rest, members)
        return mapping.backward, mapping.forward, lambda x: x
    if isinstance(mask, str) and mask == BACKGROUND:
        return background_interventions(members, rest)
    weight = mask[None, :, :, None].astype(np.float32)
    typical, marked = rest.mean(0, keepdims=True), members.mean(0, keepdims=True)

    def fill(value):
        return lambda x: (x * (1 - weight) + value * weight).astype(np.float32)

    return fill(typical), fill(marked), fill(typical)


def probabilities(logits_fn, images: np.ndarray) -> np.ndarray:
    """Class probabilities through ``logits_fn``, which takes any number of images: the
    audit's ``forward`` path, which cuts them into blocks that fit the memory budget."""
    if len(images) == 0:
        return np.zeros((0, 0), np.float32)
    return softmax(np.asarray(logits_fn(images)))


def measure_effect(logits_fn, label: int, members: np.ndarray, rest: np.ndarray,
                   others: np.ndarray, clean: tuple, mask: np.ndarray | str | None, region: str,
                   seed: int = 0) -> Effect:
    """Remove the difference from ``members`` and paste it onto ``others`` (images of other
    classes), each beside its control: the suspect class's probability drop and flip rate.
    ``clean``: the model's probabilities on members, rest and others as they are."""
    local, parts, p = intervened(lambda x: probabilities(logits_fn, x), members, rest, others,
                                 mask)
    drops = clean[0][:, label] - p[0][:, label]
    rest_drops = clean[1][:, label] - p[1][:, label] if local else np.zeros(1)
    eligible = clean[2].argmax(axis=1) != label
    flipped = p[2][eligible].argmax(axis=1) == label
    flipped_control = (p[3][eligible].argmax(axis=1) == label if local
                       else np.zeros(int(eligible.sum()), bool))
    shown = np.flatnonzero(eligible)[:EXAMPLES]
    examples = {"member": members[:EXAMPLES], "removed": parts[0][:EXAMPLES],
                "member_p": (clean[0][:EXAMPLES, label], p[0][:EXAMPLES, label]),
                "other": others[shown], "pasted": parts[2][shown],
                "other_p": (clean[2][shown, label], p[2][shown, label])}
    return judged(flipped, flipped_control, drops, rest_drops, examples, region, local,
                  len(members), seed)


def intervened(score_fn, members: np.ndarray, rest: np.ndarray, others: np.ndarray, mask):
    """The interventions and the scores on them, in one pass: (local, images, scores), each a
    list of the members with the difference removed, the rest removed alike (local only, else
    empty), the others with it pasted, and the others' control (local only)."""
    remove, paste, control = interventions(members, rest, mask)
    local = mask is not None
    parts = [remove(members), remove(rest) if local else rest[:0], paste(others)]
    parts += [control(others)] if local else []
    bounds = np.cumsum([0] + [len(p) for p in parts])
    scores = score_fn(np.concatenate(parts))
    return local, parts, [scores[bounds[i]:bounds[i + 1]] for i in range(len(parts))]


def judged(flipped: np.ndarray, flipped_control: np.ndarray, drops: np.ndarray,
           rest_drops: np.ndarray, examples: dict, region: str, local: bool, members: int,
           seed: int, drop_bound: float | None = DROP_BOUND) -> Effect:
    """The effect of one intervention from its outcomes: the flips of the pasted others beside
    their control's, and the score drops of the members beside the rest's; confirmed when
    either excess's lower bound clears its bound (``drop_bound`` None: the flips alone)."""
    trials = len(flipped)
    flip_excess = paired_excess(flipped.astype(float), flipped_control.astype(float), seed)
    drop_excess = two_sample_excess(drops, rest_drops, seed)
    return Effect(examples=examples, region=region, local=local,
                  flip_rate=float(flipped.mean()) if trials else 0.0,
                  flip_interval=wilson(int(flipped.sum()), trials),
                  flip_control=float(flipped_control.mean()) if trials else 0.0,
                  flip_excess=flip_excess, pasted=trials,
                  score_drop=float(drops.mean()) if len(drops) else 0.0,
                  drop_interval=bootstrap_mean(drops, seed),
                  drop_control=float(rest_drops.mean()), drop_excess=drop_excess,
                  members=members,
                  confirmed=bool(flip_excess[1] >= FLIP_BOUND
                                 or (local and drop_bound is not None
                                     and drop_excess[1] >= drop_bound)))


def paired_excess(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float, float]:
    """Mean of a - b over paired outcomes, with its percentile bootstrap 95% interval."""
    if len(a) == 0:
        return 0.0, 0.0, 0.0
    low, high = bootstrap_mean(a - b, seed)
    return float((a - b).mean()), low, high


def two_sample_excess(a: np.ndarray, b: np.ndarray, seed: int,
                      resamples: int = 2000) -> tuple[float, float, float]:
    """mean(a) - mean(b) of two independent samples, with its bootstrap 95% interval."""
    if len(a) == 0 or len(b) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, len(a), (resamples, len(a)))].mean(axis=1)
    mb = b[rng.integers(0, len(b), (resamples, len(b)))].mean(axis=1)
    diff = ma - mb
    return (float(a.mean() - b.mean()), float(np.quantile(diff, 0.025)),
            float(np.quantile(diff, 0.975)))


def image_region(members: np.ndarray, rest: np.ndarray, grid: int, free: bool):
    """The region the pixels suggest. ``free``: where the members' mean image differs from the
    rest's by at least half the largest difference and by more than the members and the rest
    vary there together (a planted mark is the same on every member, on a background the rest
    agrees on; a writing style varies, and so do the rest's strokes: a watermark's letters, a
    frame, a patch are kept, a stroke is not), named after the candidate region that holds
    most of it. Otherwise that candidate region
    itself (a window, a border band, the frame), or None when none holds the difference
    beyond an even spread. Groups found in the features get only the latter: a free mask around
    one group's distinct strokes, pasted onto other digits, makes them look like the class
    (natural look, not a shortcut)."""
    import cv2

    from auditor.methods.shortcuts.discovery import candidate_regions, concentration

    difference = np.abs(members.mean(0) - rest.mean(0)).sum(axis=-1)
    size = min(grid, *difference.shape)
    pooled = cv2.resize(difference, (size, size), interpolation=cv2.INTER_AREA)
    focus, named = concentration(pooled, candidate_regions(size))
    named = named if named is not None and focus >= 0.5 else None
    if not free:
        return named
    spread = members.std(axis=0).sum(axis=-1) + rest.std(axis=0).sum(axis=-1)
    mask = (difference >= 0.5 * difference.max()) & (difference >= spread)
    if difference.max() <= 0 or not mask.any():
        return named
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    return PixelRegion(named.name if named is not None else "changed pixels", mask)


@dataclass
class PixelRegion:
    """A region given directly as a pixel mask."""

    name: str
    mask: np.ndarray  # (H, W) float in [0, 1]

    def pixels(self, height: int, width: int) -> np.ndarray:
        return self.mask


def confirm(logits_fn, label: int, images: np.ndarray, labels: np.ndarray,
            members: np.ndarray, region=None, grid: int = 16, seed: int = 0,
            max_others: int = 200, probs: np.ndarray | None = None,
            memo: dict | None = None) -> Effect:
    """The strongest of the interventions on one candidate: in the maps' region (when given,
    for a group found in the maps), in the region the pixels suggest, behind the object (on
    the group regrouped by background, ``background_group``), and on the whole image.
    ``members`` indexes ``images``; ``probs``, the model's probabilities on ``images`` when
    already known, saves their forward pass. ``memo`` keeps the effects measured for the
    class by group and region: a class's two suspects (maps, features) often regroup to the
    same background group, which is then measured once."""
    own = np.flatnonzero(labels == label)
    rng = np.random.default_rng(seed)
    others = rng.permutation(np.flatnonzero(labels != label))[:max_others]
    if probs is None:  # only the class's and the others' images are needed
        needed = np.concatenate([own, others])
        known = probabilities(logits_fn, images[needed])
        probs = np.zeros((len(images), known.shape[1]), np.float32)
        probs[needed] = known

    memo = {} if memo is None else memo

    def measure(group, mask, name):
        key = (name, tuple(np.sort(group)))
        if key in memo:
            return memo[key]
        rest = np.setdiff1d(own, group)
        effect = measure_effect(logits_fn, label, images[group], images[rest], images[others],
                                (probs[group], probs[rest], probs[others]), mask, name, seed)
        effect.rows = group  # the background's are regrouped: these are what was measured
        memo[key] = effect
        return effect

    height, width = images.shape[1:3]
    tried = {}
    pixel_region = image_region(images[members], images[np.setdiff1d(own, members)], grid,
                                free=region is not None)
    for candidate in (region, pixel_region):
        if candidate is not None and candidate.name not in tried:
            tried[candidate.name] = measure(members, candidate.pixels(height, width),
                                            candidate.name)
    tried[BACKGROUND] = measure(background_group(images, own, members, others), BACKGROUND,
                                BACKGROUND)
    tried["whole image"] = measure(members, None, "whole image")
    return max(tried.values(), key=lambda e: e.strength)


def background_group(images: np.ndarray, own: np.ndarray, members: np.ndarray,
                     others: np.ndarray, rounds: int = 2) -> np.ndarray:
    """The suspect group regrouped by background: a background is a property of each image,
    and a group found in maps or features holds only part of the images that share it (the
    rest of the class, holding the others, would then be the control and carry it too). Two
    means on the class's backgrounds started from the group: each image goes to the nearer of
    the group's and the rest's typical background (mean absolute difference over its own
    background pixels). The suspect side is the one whose typical background differs more from
    the other classes' (``others``): a shortcut is what the class has and the others lack. A
    group that holds half the marked images names neither side by its majority."""
    from auditor.methods.shortcuts.patterns import object_mask

    x = images[own]
    objects = object_mask(x)
    behind = (~objects)[..., None].astype(np.float32)
    area = np.maximum(behind.sum(axis=(1, 2, 3)), 1.0)
    inside = np.isin(own, members)
    for _ in range(rounds):
        if inside.sum() < 2 or (~inside).sum() < 2:
            return members
        centres = (typical_background(x[inside], objects[inside]),
                   typical_background(x[~inside], objects[~inside]))
        near, far = ((np.abs(x - c[None]) * behind).sum(axis=(1, 2, 3)) / area
                     for c in centres)
        inside = near < far
    if inside.sum() < 2 or (~inside).sum() < 2:
        return members
    elsewhere = typical_background(images[others])
    distinct = [float(np.abs(typical_background(x[side], objects[side]) - elsewhere).mean())
                for side in (inside, ~inside)]
    return own[inside] if distinct[0] >= distinct[1] else own[~inside]
