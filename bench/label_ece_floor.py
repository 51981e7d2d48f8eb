"""The noise floor of one label's expected calibration error: what a perfectly calibrated label
scores, by the number of images carrying it, against the
triage.label_ece bounds (warn above 0.05), and what an over-confident label scores: where the
check is noise or blind (``MIN_LABEL_SIDE`` in auditor/sections/triage.py,
``noise_floor`` in auditor/methods/triage/calibration.py).

    python bench/label_ece_floor.py [--images 100 200 400 1000] [--draws 300]

A label of ``images`` images, ``side`` of them carrying it: its logits are drawn from two
normal distributions (carried N(+2, 2), not carried N(-5, 1.5): a confident model, chosen by
hand, not fitted to any model), and the truth is then drawn from the sigmoid of each logit, so
the label is calibrated by construction and every ECE it scores is the estimator's noise and
bias at that sample size (Kumar et al. 2019 and Roelofs et al. 2022 show the binned estimator
biased upward on few samples); the same label with its logits times 3 (over-confident, its
truth unchanged) is what the check should flag. Printed: for the calibrated label the median
and 95th percentile over ``draws`` seeds and the share over the warn bound (false alarms); for
the over-confident one its median and the share over the bound (what the check can see).
"""

from __future__ import annotations

import argparse

import numpy as np

from auditor.methods.triage.calibration import label_ece


def label_eces(images: int, side: int, rng) -> tuple[float, float]:
    """(ECE of the calibrated label, ECE of the same label over-confident: logits times 3)."""
    carried = np.zeros(images, bool)
    carried[:side] = True
    logits = np.where(carried, rng.normal(2, 2, images), rng.normal(-5, 1.5, images))
    labels = (rng.random(images) < 1 / (1 + np.exp(-logits))).astype(int)
    return tuple(label_ece(scale * logits[:, None], labels[:, None], np.zeros(1))
                 for scale in (1, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[100, 200, 400, 1000])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--warn", type=float, default=0.05)
    args = parser.parse_args()
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
