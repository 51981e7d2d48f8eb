"""LRP's conservation property as the tests check it: on a bias-free net (every additive
constant zeroed, ``architectures.without_biases``), each image's relevance summed over its
pixels equals the explained logit."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def assert_relevance_sums_to_the_logit(model, folder: Path, methods=("lrp_epsilon", "lrp"),
                                       size: int = 32, input_range: str = "0-1") -> None:
    """Make ``model`` bias-free, save and load it as the audit does, and check each method's
    relevance on three random images against the top logit (LRP-epsilon at 1e-9 is exact)."""
    from architectures import without_biases

    from auditor.inputs.models import load_model
    from auditor.methods.attribution import attribute

    without_biases(model).save(folder / "free.keras")
    handle = load_model(str(folder / "free.keras"), input_range)
    x = np.random.default_rng(3).uniform(0, 1, (3, size, size, 3)).astype(np.float32)
    logits = handle.logits(x).numpy()
    targets = logits.argmax(axis=1)
    for method in methods:
        maps = attribute(handle, x, targets, method, epsilon=1e-9)
        np.testing.assert_allclose(maps.reshape(len(x), -1).sum(axis=1),
                                   logits[np.arange(len(x)), targets], rtol=1e-3, atol=1e-6,
                                   err_msg=method)
