"""The noise floor of one label's expected calibration error: what a perfectly calibrated label
scores, by the number of images carrying it, against the
triage.label_ece bounds (warn above 0.05), and what an over-confident label scores: where the
check is noise or blind (``MIN_LABEL_SIDE`` in auditor/sections/triage.py,
``noise_floor`` in auditor/methods/triage/calibration.py).

    python bench/label_ece_floor.py [--images 100 200 400 1000] [--draws 300]
    python bench/label_ece_floor.py --alternatives [--images 200 1000] [--draws 40]

A label of ``images`` images, ``side`` of them carrying it: its logits are drawn from two
normal distributions (carried N(+2, 2), not carried N(-5, 1.5): a confident model, chosen by
hand, not fitted to any model), and the truth is then drawn from the sigmoid of each logit, so
the label is calibrated by construction and every ECE it scores is the estimator's noise and
bias at that sample size (Kumar et al. 2019 and Roelofs et al. 2022 show the binned estimator
biased upward on few samples); the same label with its logits times 3 (over-confident, its
truth unchanged) is what the check should flag. Printed: for the calibrated label the median
and 95th percentile over ``draws`` seeds and the share over the warn bound (false alarms); for
the over-confident one its median and the share over the bound (what the check can see).

``--alternatives`` weighs other figures for a rare label against the one the check reads (every
decision of the label, its confidence the probability of the answer given), each under the
check's own noise-floor rule (judged only where the 95th percentile of what a calibrated label
of those predictions scores, ``FLOOR_DRAWS`` redraws of its outcomes, stays under the warn
bound): the class-wise ECE of the label's own probability (Kull et al. 2019, "Beyond
temperature scaling", NeurIPS) over the predictions above 1e-3 (the thresholding of Nixon et
al. 2019, "Measuring calibration in deep learning", CVPR workshops: tiny predictions wash the
rest out), and the ECE of the positive decisions alone (the images given the label). Printed:
the share of draws each flags (over the bound and measurable), calibrated and over-confident.
"""

from __future__ import annotations

import argparse

import numpy as np

from auditor.methods.triage.calibration import FLOOR_QUANTILE, label_ece, reliability


def label_eces(images: int, side: int, rng) -> tuple[float, float]:
    """(ECE of the calibrated label, ECE of the same label over-confident: logits times 3)."""
    carried = np.zeros(images, bool)
    carried[:side] = True
    logits = np.where(carried, rng.normal(2, 2, images), rng.normal(-5, 1.5, images))
    labels = (rng.random(images) < 1 / (1 + np.exp(-logits))).astype(int)
    return tuple(label_ece(scale * logits[:, None], labels[:, None], np.zeros(1))
                 for scale in (1, 3))


def _expit(z):
    return 1 / (1 + np.exp(-z))


def _every_decision(z, truth):
    return label_ece(z[:, None], truth[:, None], np.zeros(1))


def _classwise_thresholded(z, truth, floor=1e-3):
    kept = _expit(z) > floor
    return reliability(_expit(z)[kept], truth[kept] == 1).ece if kept.any() else np.nan


def _positive_decisions(z, truth):
    given = _expit(z) >= 0.5
    return reliability(_expit(z)[given], truth[given] == 1).ece if given.any() else np.nan


ALTERNATIVES = {"every decision (the check's)": _every_decision,
                "class-wise, p > 1e-3": _classwise_thresholded,
                "positive decisions": _positive_decisions}


def flagged(figure, z, truth, rng, warn: float, redraws: int = 100) -> bool:
    """Whether the check would flag this label with ``figure``: over the warn bound, and its
    noise floor (redrawn outcomes of a calibrated label of these probabilities) under it."""
    p = _expit(z)
    floor = np.nanpercentile([figure(z, (rng.random(p.shape) < p).astype(int))
                              for _ in range(redraws)], FLOOR_QUANTILE)
    return bool(figure(z, truth) > warn and floor < warn)


def alternatives(images: int, side: int, draws: int, warn: float) -> None:
    """One line per figure: the share of draws flagged, calibrated and over-confident (x3)."""
    rng = np.random.default_rng(0)
    shares = {name: [] for name in ALTERNATIVES}
    for _ in range(draws):
        carried = np.arange(images) < side
        logits = np.where(carried, rng.normal(2, 2, images), rng.normal(-5, 1.5, images))
        truth = (rng.random(images) < _expit(logits)).astype(int)
        for name, figure in ALTERNATIVES.items():
            shares[name].append([flagged(figure, scale * logits, truth, rng, warn)
                                 for scale in (1, 3)])
    for name, rows in shares.items():
        calibrated, over = np.mean(rows, axis=0)
        print(f"{images:5d} images, {side:3d} carrying it, {name}: calibrated flagged "
              f"{calibrated:.0%}, over-confident (x3) flagged {over:.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 200, 400, 1000])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--warn", type=float, default=0.05)
    parser.add_argument("--alternatives", action="store_true")
    args = parser.parse_args()
    if args.alternatives:
        for images in args.images:
            for side in (10, 30, 100):
                alternatives(images, side, args.draws, args.warn)
        return
    for images in args.images:
        for side in (2, 5, 10, 15, 20, 30, 50, 100, images // 2):
            if side > images // 2:
                continue
            rng = np.random.default_rng(0)
            eces = np.array([label_eces(images, side, rng) for _ in range(args.draws)])
            calibrated, over = eces[:, 0], eces[:, 1]
            print(f"{images:5d} images, {side:3d} carrying it: calibrated median "
                  f"{np.median(calibrated):.3f}, 95th percentile "
                  f"{np.percentile(calibrated, 95):.3f}, flagged "
                  f"{np.mean(calibrated > args.warn):.0%};"
                  f" over-confident (x3) median {np.median(over):.3f}, flagged "
                  f"{np.mean(over > args.warn):.0%}")


if __name__ == "__main__":
    main()
