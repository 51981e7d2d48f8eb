"""What an audit's fixed costs are made of: the functions TensorFlow traces and the model copies,
per part of the audit (a step, a section, the input-range probe, the plan), with the seconds
they took, beside each part's time.

    PYTHONPATH=.:tests python bench/traces.py demo [--sections attribution clever_hans]
    PYTHONPATH=.:tests python bench/traces.py MobileNetV3Small --size 48 --images 200

``demo`` is the demo CNN on the digits test split; a family name builds it with
``weights=None`` (tests/architectures.py, 10 classes) and audits RGB digit composites, as
bench/zoo.py does, but in this process under ``--budget quick`` (tests/tracecount.py counts).
``--out`` keeps the run folder (its summary.json compares runs before and after a change).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tracecount import counting  # noqa: E402


def data_for(model: str, size: int, images: int, work: Path) -> tuple[str, str]:
    """(model, data) sources of the audit."""
    if model == "demo":
        from auditor.inputs.demo import demo_model_path

        return str(demo_model_path(seed=0)), "sklearn:digits:test"
    from architectures import application
    from rgb_composites import composites

    built = application(model, size=size, classes=10)
    size = int(built.inputs[0].shape[1])
    x, y = composites("test", seed=0, size=size)
    np.savez(work / "data.npz", x=(x[:images] * 255).astype(np.uint8), y=y[:images])
    built.save(work / f"{model}.keras")
    return str(work / f"{model}.keras"), f"npz:{work / 'data.npz'}"


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--sections", nargs="*", default=None)
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    with tempfile.TemporaryDirectory(prefix="auditor-traces-") as scratch:
        model, data = data_for(args.model, args.size, args.images, Path(scratch))
        out = Path(args.out) if args.out else Path(scratch) / "run"
        flags = {"sections": args.sections} if args.sections else {}
        config = make_config(model=model, data=data, budget=args.budget, out=str(out),
                             format=["json"], max_samples=args.images, seed=0, **flags)
        started = cpu()
        with counting() as counts:
            done = run_audit(config)
        print(f"{args.model}: {cpu() - started:.0f} CPU-s, exit {done.exit_code}")
        timings = done.summary["timings"]
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        for part in sorted(set(counts.traces) | set(counts.copies)):
            print(f"  {part:45s} traces {counts.traces[part]:3d}  copies "
                  f"{counts.copies[part]:2d}  {counts.seconds[part]:6.1f} s")
        for (part, name), n in sorted(counts.functions.items()):
            print(f"    {part:45s} {name:50s} {n:3d} "
                  f"{counts.function_seconds[part, name]:6.1f} s")


if __name__ == "__main__":
    main()
