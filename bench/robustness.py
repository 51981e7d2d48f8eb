"""Counterfactuals and attacks on the demo model: batched against one image at a time, and the
two sections' time against their budget (well under 40 s together), measured in one run.

    PYTHONPATH=. python bench/robustness.py
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

SECTION_BUDGET = 40.0


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    from auditor.configure import make_config
    from auditor.inputs.datasets import load_dataset
    from auditor.inputs.models import load_model
    from auditor.methods.attacks import pgd
    from auditor.methods.counterfactual import counterfactuals
    from auditor.pipeline import run_section
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context

    handle = load_model("demo")
    config = make_config(model="demo", data="sklearn:digits:test")
    dataset = load_dataset(config.data, handle.input_shape, handle.num_classes)
    predictions = predict(handle, dataset)
    x = dataset.images(np.arange(dataset.n))
    wrong = np.flatnonzero(~predictions.correct)
    mistakes, truth = x[wrong], predictions.labels[wrong]
    sample, labels = x[:32], predictions.labels[:32]

    counterfactuals(handle, mistakes[:1], truth[:1], steps=2)  # trace once
    pgd(handle, sample[:1], labels[:1], 8 / 255)
    batched = seconds(lambda: counterfactuals(handle, mistakes, truth))
    single = seconds(lambda: [counterfactuals(handle, mistakes[i:i + 1], truth[i:i + 1])
                              for i in range(len(wrong))])
    print(f"counterfactuals, {len(wrong)} mistakes: one batch {batched:.2f} s, one at a time "
          f"{single:.2f} s, ratio {single / batched:.1f}x")
    batched = seconds(lambda: pgd(handle, sample, labels, 8 / 255))
    single = seconds(lambda: [pgd(handle, sample[i:i + 1], labels[i:i + 1], 8 / 255)
                              for i in range(len(sample))])
    print(f"PGD (10 steps), {len(sample)} images: one batch {batched:.2f} s, one at a time "
          f"{single:.2f} s, ratio {single / batched:.1f}x")

    fresh = load_model("demo")  # nothing traced yet, as in an audit
    ctx = Context(config, fresh, dataset, predictions, workdir=os.getcwd())
    times = {name: run_section(name, ctx).seconds for name in ("counterfactuals", "robustness")}
    total = sum(times.values())
    print("sections: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + f"; together {total:.1f} s = {total / SECTION_BUDGET:.2f} of the {SECTION_BUDGET:.0f}"
          " s budget")


if __name__ == "__main__":
    main()
