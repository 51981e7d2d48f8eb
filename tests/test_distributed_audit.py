"""The whole audit under ``--strategy mirrored`` over two logical CPUs: every section's heavy loop
(prediction, attribution, fine-tuning, feature visualisation, counterfactuals, PGD) hands its
batches to both replicas. A child process (the devices must be set before TensorFlow starts)
records, at the audit's two distributed entry points, which replicas ran a share for whom;
featureviz renders the same images on two replicas as on one; and a batch of one image, fewer than
the replicas, runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    from auditor.configure import make_config
    from auditor.methods.shortcuts import injection
    from auditor.pipeline import run_audit
    from auditor.predict import distribute

    ENTRY = ("auditor.predict.batched", "auditor.predict.distribute", __name__)
    seen = {}

    def site():
        '''"section: module": the section (or the pipeline) and the innermost auditor module
        that asked for the distributed pass.'''
        frame, section, caller = sys._getframe(2), "pipeline", None
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if caller is None and module.startswith("auditor.") and module not in ENTRY:
                caller = module
            if module.startswith("auditor.sections.") and module != "auditor.sections.base":
                section = module.rsplit(".", 1)[1]
                break
            frame = frame.f_back
        return f"{section}: {caller}"

    def note(where):
        replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
        seen.setdefault(where, set()).add(int(replica))

    plain_run = distribute.Distribution.run

    def run(self, fn, *arrays):  # every split batch: prediction, attribution, attacks, ...
        where = site()

        def share(*parts):
            if len(parts[0]):
                note(where)
            return fn(*parts)

        return plain_run(self, share, *arrays)

    plain_update = injection.compiled_update

    def compiled_update(handle, update):  # the fine-tuning steps (traced per replica)
        where = site()

        def counted(*shares, total):
            note(where)
            return update(*shares, total=total)

        return plain_update(handle, counted)

    distribute.Distribution.run = run
    injection.compiled_update = compiled_update

    model, out = sys.argv[1], sys.argv[2]
    spec = {
        "contrastive": {"examples": 2, "method": "gradient"},
        "attribution": {"methods": ["gradient", "integrated_gradients"], "sanity_samples": 4,
                        "sanity_stages": 2, "faithfulness_samples": 8, "faithfulness_steps": 4,
                        "compare_layers": 1, "examples": 2},
        "clever_hans": {"methods": ["gradient"], "shortcuts": ["patch"], "control": False,
                        "steps": 10, "max_train": 200, "max_eval": 100, "discovery": False},
        "featureviz": {"steps": 4, "snapshots": [0, 2], "max_classes": 3, "max_channels": 2,
                       "top_k": 2},
        "counterfactuals": {"mistakes": 4, "steps": 5, "gallery": 1},
        "concepts": {"sample": 40, "icon_steps": 4, "removal_images": 2,
                     "random_directions": 2, "survival_images": 4, "mistakes": 2, "top": 2},
        "robustness": {"samples": 20, "epsilons": [0.0, 0.03], "check_epsilon": 0.03,
                       "steps": 3, "gallery": 1},
    }
    config = make_config(spec, model=model, data="sklearn:digits:test", max_samples=150,
                         out=out + "/run", strategy="mirrored", progress=False)
    run_audit(config)
    json.dump({where: sorted(replicas) for where, replicas in seen.items()},
              open(out + "/seen.json", "w"), indent=1)

    # The split does not change featureviz's images: each share draws the batch's transforms.
    import dataclasses
    import numpy as np
    from auditor.inputs.models import load_model
    from auditor.methods.featureviz.recipes import Recipe, visualise_classes
    mirrored = distribute.make_distribution("mirrored")
    with mirrored.scope():
        handle = load_model(model)
    handle.distribution = mirrored
    recipe = Recipe(steps=16, snapshots=(), l2=30.0, tv=8.0)
    images = [visualise_classes(h, [0, 1, 2, 3, 4], recipe).images
              for h in (handle, load_model(model))]
    open(out + "/featureviz_gap.txt", "w").write(str(float(np.abs(images[0] - images[1]).max())))

    # Fewer images than replicas: the batch runs whole (an empty share would crash oneDNN).
    from auditor.methods.attacks import pgd
    from auditor.methods.attribution import attribute
    one = images[1][:1]
    visualise_classes(handle, [3], dataclasses.replace(recipe, steps=2))
    attribute(handle, one, [3], "integrated_gradients")
    pgd(handle, one, [3], 0.03, steps=2)
""")

# Each section's heavy loop and the module that runs it.
HEAVY = {
    "prediction": "pipeline: auditor.predict.predictions",
    "attribution": "attribution: auditor.methods.attribution.registry",
    "fine-tuning": "clever_hans: auditor.methods.shortcuts.injection",
    "featureviz": "featureviz: auditor.methods.featureviz.render",
    "featureviz top images": "featureviz: auditor.methods.featureviz.top_images",
    "counterfactuals": "counterfactuals: auditor.methods.counterfactual",
    "neuron groups": "concepts: auditor.methods.concepts.groups",
    "group removal": "concepts: auditor.methods.concepts.faithful",
    "PGD": "robustness: auditor.methods.attacks",
}


@pytest.mark.slow
def test_every_heavy_loop_of_a_mirrored_audit_runs_on_both_replicas(tmp_path, digits_model_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CI": "true"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(digits_model_path), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a check failed, still a report
    seen = json.loads((tmp_path / "seen.json").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["distribution"]["replicas"] == 2
    errors = [c["id"] for c in summary["checks"] if c["status"] == "error" and
              c["id"].endswith(".run")]
    assert not errors, errors  # every section ran
    on_both = {loop: seen.get(where) for loop, where in HEAVY.items()}
    assert all(replicas == [0, 1] for replicas in on_both.values()), (on_both, seen)
    assert float((tmp_path / "featureviz_gap.txt").read_text()) <= 1e-5
