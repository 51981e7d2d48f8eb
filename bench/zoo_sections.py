"""Every keras.applications family (whole and as a backbone nested under a head) and keras-hub's
image classifiers through every section and every attribution method, at the smallest
settings: per model, what each section could not do, in one line each, and the CPU time.

    PYTHONPATH=.:tests python bench/zoo_sections.py MobileNetV3Small "nested ResNet50" "hub DeiT"

A model is a family name (tests/architectures.py ``FAMILIES``), ``nested <family>``,
``hub <family>`` (``HUB_FAMILIES``: keras-hub's ``<family>ImageClassifier`` over a tiny random
backbone, with its own preprocessor) or ``hub_vit`` (keras-hub's ViT without a preprocessor);
without arguments, all of them (hours on the shared 2-core machine: run one at a time). Each is
built with random weights at its smallest input (keras-hub's at 32 px), 3 classes, saved to
.keras and audited in this process by tests/zoo_audit.py (24 RGB digit composites, a budget of
4 model passes, every attribution method). tests/test_zoo.py runs keras-hub's ViT this way.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from architectures import (  # noqa: E402
    FAMILIES,
    HUB_FAMILIES,
    application,
    hub_classifier,
    hub_vit_classifier,
    nested,
)
from zoo_audit import audit_everything, outcomes  # noqa: E402

MODELS = [*FAMILIES, *(f"nested {family}" for family in FAMILIES), "hub_vit",
          *(f"hub {family}" for family in HUB_FAMILIES)]


def build(name: str):
    if name == "hub_vit":
        return hub_vit_classifier()
    if name.startswith("hub "):
        return hub_classifier(name.removeprefix("hub "))
    if name.startswith("nested "):
        return nested(name.removeprefix("nested "))
    return application(name)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", choices=MODELS, metavar="MODEL")
    parser.add_argument("--keep", metavar="DIR", help="keep each model's run folder (its "
                        "report and audit.log, where tracebacks go) in DIR/<model>")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditor-zoo-sections-") as scratch:
        root = Path(args.keep or scratch)
        for name in args.models or MODELS:
            started, cpu = time.perf_counter(), cpu_seconds()
            try:
                found = outcomes(audit_everything(build(name), root / name.replace(" ", "_")))
            except Exception as exc:  # noqa: BLE001  (the bench reports any failure and goes on)
                print(f"{name}: the audit failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            print(f"{name}: {time.perf_counter() - started:.0f} s wall, "
                  f"{cpu_seconds() - cpu:.0f} s CPU", flush=True)
            for section, lines in found.items():
                for line in lines:
                    print(f"  {section}: {line}", flush=True)


if __name__ == "__main__":
    main()
