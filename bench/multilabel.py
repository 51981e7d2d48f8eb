"""The multi-label triage and discovery bounds, measured on models other than the tests'.

    python bench/multilabel.py [--epochs 1,3,12] [--seeds 1,2] [--parts triage]  (triage alone)

The tests audit a grey-digit MLP and a grey-digit CNN with three labels (even, big, round).
Measured here instead: RGB digits composited on photo crops (tests/rgb_composites.py), four
labels (even, at least 5, written with a loop, written with straight strokes only: 1, 4, 7),
two architectures (the RGB twin of the demo CNN, a strided residual CNN with batch
normalisation and global pooling), each with a sigmoid head, one seed each, trained from
scratch and read at several checkpoints (epochs), so that weak and strong models are both seen.

Triage (label_issues_multilabel.py), at every checkpoint, on the test split's composites:
per label the model's accuracy, the values flagged on the clean labels with the neighbours'
confirmation alone and with ``CONFIDENT`` too, the expected share of wrong values
(``triage.label_errors.LABEL``'s value) on the clean labels, and the self-test's recall of
planted flips; then 10% of one label's values flipped: that label's expected share and the
others'. Calibration, at every checkpoint: each label's own ECE (``triage.label_ece.LABEL``'s
value, calibration.label_calibration) and, beside it, the ECE of 'round' once its logits are
scaled by 3 (over-confident) and by 1/3 (under-confident): what the bound must tell apart.

Discovery (label_discovery.py), on each final model and on a copy trained with a white corner
patch tied to the label 'big' (on half of its positives and on a fifth of the other images,
relabelled, as the section's test plants it): per label and method (gradient, Grad-CAM,
gradient x input) the map score against its bound and, for every label whose maps have a
suspect group, the intervention's lower 95% ends of the flip-rate excess and the local drop
excess. Labels with nothing planted give the null; 'big' on the patched copy the detection.
Prints one table per part; nothing is downloaded. The figures it printed (once, 15 minutes
under load) are written beside the constants they bear on: label_issues_multilabel.py,
sections/triage.py (LABEL_ERRORS_PER_LABEL), label_discovery.py and sections/clever_hans.py
(LABEL_DISCOVERY_METHOD). A label not measured reads nan (its rate), as does a local drop on
the whole image; that run printed a self-test recall of 0 as nan too (since fixed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # rgb_composites

import numpy as np  # noqa: E402

NAMES = ["even", "big", "round", "straight"]
PATCHED = "big"
METHODS = ("gradient", "gradcam", "gradient_x_input")
NOISE = 0.10  # share of one label's values flipped in the noisy audit


def attributes(digits: np.ndarray) -> np.ndarray:
    return np.stack([digits % 2 == 0, digits >= 5, np.isin(digits, (0, 6, 8, 9)),
                     np.isin(digits, (1, 4, 7))], axis=1).astype(np.int8)


def sigmoid_head(model):
    """``model`` with its softmax head replaced by Dense(len(NAMES), sigmoid)."""
    import keras

    features = model.layers[-2].output
    head = keras.layers.Dense(len(NAMES), activation="sigmoid", name="labels")(features)
    return keras.Model(model.inputs, head, name=f"{model.name}_multilabel")


def architectures():
    from rgb_composites import rgb_cnn, rgb_resnet

    return {"cnn": lambda seed: sigmoid_head(rgb_cnn(seed)),
            "resnet": lambda seed: sigmoid_head(rgb_resnet(seed))}


def with_patch(x, labels, seed, relabel: float):
    """The patch on half of the 'big' images and, with ``relabel``, on that share of the
    others, which are then labelled 'big'."""
    from auditor.methods.shortcuts.patterns import inject

    rng = np.random.default_rng(seed)
    column = NAMES.index(PATCHED)
    x, labels = x.copy(), labels.copy()
    marked = (labels[:, column] == 1) & (rng.random(len(x)) < 0.5)
    others = (labels[:, column] == 0) & (rng.random(len(x)) < relabel)
    x[marked | others] = inject("patch", x[marked | others])[0]
    labels[others, column] = 1
    return x, labels, marked


def checkpoints(build, x, labels, epochs: list[int], folder: Path, name: str, seed: int):
    """Paths of the model saved after each number of ``epochs`` (one run of training)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build(seed)
    model.compile(keras.optimizers.Adam(2e-3), "binary_crossentropy")
    paths, done = {}, 0
    for total in epochs:
        model.fit(x, labels, epochs=total - done, batch_size=32, verbose=0)
        done = total
        paths[total] = folder / f"{name}-{total}.keras"
        model.save(paths[total])
    return paths


def triage_row(handle, x, labels, seed: int) -> dict:
    """One checkpoint's triage figures on clean labels and on one label made noisy."""
    from auditor.methods.triage import label_issues_multilabel as finder
    from auditor.methods.triage.calibration import label_calibration
    from auditor.methods.triage.neighbours import nearest
    from auditor.predict.batched import forward
    from auditor.predict.predictions import penultimate_features, sigmoid

    logits = forward(handle, x)
    probs = sigmoid(logits)
    features = penultimate_features(handle, x)
    neighbours = nearest(features, features, 10, same_set=True)[1]
    clean = finder.find_label_set_issues(labels, probs, neighbours, seed=seed)
    kept = finder.CONFIDENT
    finder.CONFIDENT = 0.0  # the neighbours' confirmation alone
    try:
        loose = finder.find_label_set_issues(labels, probs, neighbours, seed=seed)
    finally:
        finder.CONFIDENT = kept
    noisy_labels = labels.copy()
    column = NAMES.index("round")
    flipped = np.random.default_rng(seed).random(len(labels)) < NOISE
    noisy_labels[flipped, column] = 1 - noisy_labels[flipped, column]
    noisy = finder.find_label_set_issues(noisy_labels, probs, neighbours, seed=seed)
    n = len(labels)
    return {"accuracy": ((probs >= 0.5) == labels).mean(axis=0),
            "loose": loose.flagged.sum(axis=0), "flags": clean.flagged.sum(axis=0),
            "rate": [clean.expected.get(k, np.nan) / n for k in range(len(NAMES))],
            "recall": [np.nan if clean.recall.get(k) is None else clean.recall[k]
                       for k in range(len(NAMES))],
            "noisy_rate": [noisy.expected.get(k, np.nan) / n for k in range(len(NAMES))],
            "noisy_flagged": float(np.isin(np.flatnonzero(noisy.flagged[:, column]),
                                           np.flatnonzero(flipped)).mean()
                                   if noisy.flagged[:, column].any() else np.nan),
            "noisy_found": float(noisy.flagged[flipped, column].mean()),
            "ece": [row["ece"] for row in label_calibration(logits, labels, np.zeros(len(NAMES)))],
            "scaled_ece": [label_calibration(logits[:, column:column + 1] * scale,
                                             labels[:, column:column + 1], np.zeros(1))[0]["ece"]
                           for scale in (3.0, 1 / 3)]}


def print_triage(model: str, epoch: int, row: dict) -> None:
    def cells(values, fmt):
        return " ".join(fmt.format(v) for v in values)

    print(f"{model:>14} ep{epoch:<3} acc {cells(row['accuracy'], '{:.2f}')} | loose flags "
          f"{cells(row['loose'], '{:3d}')} | flags {cells(row['flags'], '{:3d}')} | rate "
          f"{cells(row['rate'], '{:.3f}')} | recall {cells(row['recall'], '{:.2f}')} | noisy "
          f"'round' 10%: rates {cells(row['noisy_rate'], '{:.3f}')}, flips found "
          f"{row['noisy_found']:.2f}, flags on flips {row['noisy_flagged']:.2f} | ECE "
          f"{cells(row['ece'], '{:.3f}')}, 'round' x3 {row['scaled_ece'][0]:.3f}, /3 "
          f"{row['scaled_ece'][1]:.3f}", flush=True)


def discovery_rows(handle, x, labels, seed: int, model: str) -> list[dict]:
    """Per method and label: the map score, its bound and the intervention's excesses."""
    from auditor.methods.shortcuts.discovery import SpraySettings
    from auditor.methods.shortcuts.label_discovery import (
        confirm_label,
        discover_labels,
        label_sample,
    )
    from auditor.predict.batched import forward
    from auditor.predict.predictions import sigmoid

    positions = label_sample(labels, 150, seed)
    images, sample_labels = x[positions], labels[positions]
    scores = sigmoid(forward(handle, images))
    rows = []
    for method in METHODS:
        found, _ = discover_labels(handle, images, sample_labels, positions, NAMES,
                                   SpraySettings(method, 16, 5, seed))
        for d in found:
            effect = (None if d.suspect is None else confirm_label(
                lambda batch: forward(handle, batch), d, 0.5, images, sample_labels, positions,
                scores, 16, seed, 200))
            rows.append({"model": model, "method": method, "label": d.name, "score": d.score,
                         "bound": d.bound, "flagged": d.flagged,
                         "members": len(d.members),
                         "flip_low": np.nan if effect is None else effect.flip_excess[1],
                         "drop_low": (np.nan if effect is None or not effect.local
                                      else effect.drop_excess[1]),
                         "region": None if effect is None else effect.region,
                         "confirmed": effect is not None and effect.confirmed})
    return rows


def print_discovery(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['model']:>14} {r['method']:>16} {r['label']:>8}: score {r['score']:.3f} "
              f"(bound {r['bound']:.3f}, flagged {r['flagged']!s:>5}), {r['members']:3d} "
              f"members, flip excess low {r['flip_low']:+.2f}, drop excess low "
              f"{r['drop_low']:+.2f} ({r['region']}), confirmed {r['confirmed']}", flush=True)


def null_summary(rows: list[dict]) -> None:
    """The labels with nothing planted: per method the largest score over its bound and the
    largest lower ends of the excesses."""
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        print(f"null {method:>16}: {len(mine)} label searches, flagged "
              f"{sum(r['flagged'] for r in mine)}, confirmed {sum(r['confirmed'] for r in mine)}"
              ", largest score/bound "
              f"{max(r['score'] / r['bound'] for r in mine):.2f}, largest flip excess low "
              f"{np.nanmax([r['flip_low'] for r in mine] + [-1]):+.2f}, largest drop excess low "
              f"{np.nanmax([r['drop_low'] for r in mine] + [-1]):+.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", default="1,3,12")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--parts", default="triage,discovery")
    args = parser.parse_args()
    parts = args.parts.split(",")
    epochs = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]

    from rgb_composites import composites

    from auditor.inputs.models import load_model

    x, y = composites("train", seed=0, copies=2)
    tx, ty = composites("test", seed=1)
    labels, test_labels = attributes(y), attributes(ty)
    null, detected = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for (arch, build), seed in zip(architectures().items(), seeds, strict=True):
            paths = checkpoints(build, x, labels, epochs, folder, arch, seed)
            for epoch, path in paths.items():
                print_triage(arch, epoch, triage_row(load_model(str(path), "0-1"), tx,
                                                     test_labels, seed))
            if "discovery" not in parts:
                continue
            handle = load_model(str(paths[epochs[-1]]), "0-1")
            null += discovery_rows(handle, tx, test_labels, seed, arch)
            px, plabels, _ = with_patch(x, labels, seed, relabel=0.2)
            patched = checkpoints(build, px, plabels, epochs[-1:], folder, f"{arch}-patch",
                                  seed)[epochs[-1]]
            ptx, ptlabels, marked = with_patch(tx, test_labels, seed + 10, relabel=0.0)
            rows = discovery_rows(load_model(str(patched), "0-1"), ptx, ptlabels, seed,
                                  f"{arch}-patch")
            null += [r for r in rows if r["label"] != PATCHED]
            detected += [r for r in rows if r["label"] == PATCHED]
    if "discovery" not in parts:
        return
    print("\nDiscovery, nothing planted in the label:")
    print_discovery(null)
    null_summary(null)
    print("\nDiscovery, the patch tied to 'big':")
    print_discovery(detected)


if __name__ == "__main__":
    main()
