"""Checks on the model's weights themselves, whatever its outputs look like.

A NaN or infinite weight is a broken model even when the outputs look fine: on a CPU, a ReLU
turns a NaN activation into 0 (``max(NaN, 0)`` is 0 in its kernel), so one NaN weight in a
convolution can pass every output check while that unit is dead, and the same file gives other
results on other hardware.
"""

from __future__ import annotations

import numpy as np

from auditor.checks.check import Check

LAYERS_NAMED = 3  # layers named in the message; the count covers all


def weight_checks(handle) -> list[Check]:
    """``model.weights``: fails when any weight of the model is NaN or infinite, naming the
    layers that hold them (absent when every weight is finite)."""
    bad: dict[str, int] = {}
    for variable in handle.model.weights:
        values = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        if not np.issubdtype(values.dtype, np.floating):
            continue
        count = int(values.size - np.count_nonzero(np.isfinite(values)))
        if count:
            path = str(getattr(variable, "path", None) or variable.name)
            layer = path.rsplit("/", 1)[0] if "/" in path else path
            bad[layer] = bad.get(layer, 0) + count
    total = sum(bad.values())
    if not total:  # like data.skipped, the check is there only when it has something to say
        return []
    named = ", ".join(f"'{layer}' ({count})" for layer, count in list(bad.items())[:LAYERS_NAMED])
    more = f" and {len(bad) - LAYERS_NAMED} more layers" if len(bad) > LAYERS_NAMED else ""
    return [Check("model.weights", "fail", total, {"fail_above": 0}, None,
                  f"{total} weight(s) of the model are NaN or infinite, in {named}{more}: the "
                  "model is broken whatever its outputs show (a ReLU hides a NaN as 0 on CPU); "
                  "retrain or restore a checkpoint from before the weights diverged", "",
                  gated=True)]
