"""The penultimate features as a step: every audit image's input to the model's final layer,
read once per run for the sections that declare ``"features"`` in their ``STEPS`` (triage's
neighbours and detectors, the shortcut search's second signal and embedding).

They come with the prediction pass itself (``predict.predictions``: one pass of one model with
two outputs); a model that pass could not split is tried once more through its final layer's
input (``penultimate_features``). None when the model cannot be split there at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAME = "features"
TITLE = "the penultimate features"


@dataclass(frozen=True)
class Features:
    """(N, D) read-only features of the audit images in dataset order, or None when the model
    cannot be split before its final layer."""

    values: np.ndarray | None


def make(inputs, options, shared, sections) -> Features:
    """The run's features (``inputs``: sections.base.RunInputs)."""
    from auditor.predict.predictions import penultimate_features
    from auditor.steps.shared import read_only

    made = getattr(inputs.predictions, "features", None)
    if made is None:
        made = penultimate_features(inputs.handle, inputs.dataset, inputs.config.batch_size)
    return Features(None if made is None else read_only(np.asarray(made)))
