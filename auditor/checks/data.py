"""Checks on the audited data itself: files that were skipped, and whether the class each
folder was taken to hold agrees with what the model sees in it."""

from __future__ import annotations

import numpy as np

from auditor.checks.check import Check

# A folder is suspect when more than half of its images are predicted as one other class: a
# majority vote, the plain rule for "the model calls this folder something else". Not tuned
# on any model; a model whose recall on a class is below one half for one confusion warns too,
# which is a finding worth reading either way.
MAPPING_MAJORITY = 0.5


def data_checks(dataset, predictions) -> list[Check]:
    """``data.skipped`` when files were left out; ``data.class_mapping`` for folder sources."""
    checks = []
    if dataset.skipped:
        first = dataset.skipped[0]
        checks.append(Check(
            "data.skipped", "warn", len(dataset.skipped), {"warn_above": 0}, None,
            f"{len(dataset.skipped)} file(s) could not be read and were left out of the audit "
            f"(first: {first['path']}: {first['reason']}); see data.skipped", "", gated=True))
    if dataset.class_mapping:
        checks.append(mapping_check(dataset, predictions))
    return checks


def mapping_check(dataset, predictions) -> Check:
    """The largest share of one folder's images that the model puts in one other class."""
    mapping = dataset.class_mapping
    worst, worst_folder, worst_class = 0.0, None, None
    preds = predictions.preds
    for folder, label in mapping["folders"].items():
        mine = preds[dataset.labels == label]
        if mine.size == 0:
            continue
        counts = np.bincount(mine, minlength=len(dataset.class_names))
        counts[label] = 0
        other = int(counts.argmax())
        share = counts[other] / mine.size
        if share > worst:
            worst, worst_folder, worst_class = float(share), folder, other
    how = {"name": "by name (the folders are the class names)",
           "index": "by index (the folders are class numbers)",
           "position": "by sorted position (Keras's convention)"}[mapping["by"]]
    status = "warn" if worst > MAPPING_MAJORITY else "pass"
    message = f"folders mapped to classes {how}"
    if status == "warn":
        message += (f"; but the model predicts {worst:.0%} of folder '{worst_folder}' as class "
                    f"'{dataset.class_names[worst_class]}': check that the folders are the "
                    "classes they are taken to be")
    return Check("data.class_mapping", status, worst, {"warn_above": MAPPING_MAJORITY}, None,
                 message, "", gated=True)
