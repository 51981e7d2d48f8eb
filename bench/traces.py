"""What an audit's fixed costs are made of: the functions TensorFlow traces and the model copies,
per part of the audit (a step, a section, the input-range probe, the plan), with the seconds
they took, beside each part's time and the traces and copies its plan declared.

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

from tracecount import counting, model_traces  # noqa: E402


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
    parser.add_argument("--profile", type=int, default=0,
                        help="print the N functions of auditor/ with the most cumulative time")
    args = parser.parse_args()
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    with tempfile.TemporaryDirectory(prefix="auditor-traces-") as scratch:
        model, data = data_for(args.model, args.size, args.images, Path(scratch))
        out = Path(args.out) if args.out else Path(scratch) / "run"
        flags = {"sections": args.sections} if args.sections else {}
        budget = int(args.budget) if args.budget.isdigit() else args.budget
        config = make_config(model=model, data=data, budget=budget, out=str(out),
                             format=["json"], max_samples=args.images, seed=0, **flags)
        import auditor.pipeline as pipeline

        plans, plan_sections = [], pipeline.plan_sections
        pipeline.plan_sections = lambda *a: plans.append(plan_sections(*a)) or plans[-1]
        started = cpu()
        import cProfile

        profile = cProfile.Profile() if args.profile else None
        with counting() as counts:
            done = profile.runcall(run_audit, config) if profile else run_audit(config)
        print(f"{args.model}: {cpu() - started:.0f} CPU-s, exit {done.exit_code}")
        timings = done.summary["timings"]
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        plan = plans[-1] if plans else None
        declared = plan.passes if plan else {}
        for part in sorted(set(counts.traces) | set(counts.copies)):
            name = Path(part).stem
            planned = (f"  declared {declared[name].traces:3d} / {declared[name].copies:2d}"
                       if name in declared else "")
            print(f"  {part:45s} traces {len(model_traces(counts, part, outermost=True)):3d}  "
                  f"copies {counts.copies[part]:2d}  {counts.seconds[part]:6.1f} s{planned}")
        if profile is not None:
            profiled(profile, args.profile)
        if plan is not None and plan.timing is not None:
            print(f"timing: trace {plan.timing.trace:.2f} s, training trace "
                  f"{plan.timing.train_trace or 0:.2f} s, copy {plan.timing.copy or 0:.2f} s, "
                  f"kernel {plan.timing.kernel or 0:.4f} s, backward "
                  f"{plan.timing.backward * 1e3:.2f} ms/image, row "
                  f"{(plan.timing.row or 0) * 1e3:.3f} ms, call "
                  f"{(plan.timing.call or 0) * 1e3:.2f} ms")
            estimates(plan, timings, counts)
        for (part, name), n in sorted(counts.functions.items()):
            print(f"    {part:45s} {name:50s} {n:3d} "
                  f"{counts.function_seconds[part, name]:6.1f} s")


def profiled(profile, count: int) -> None:
    """The functions of auditor/ (and scikit-learn's and cleanlab's) with the most cumulative
    seconds, with their own seconds: where a section's time off the model goes."""
    import pstats

    stats = pstats.Stats(profile).stats
    rows = sorted(((cum, own, f"{Path(file).name}:{line} {name}")
                   for (file, line, name), (_, _, own, cum, _) in stats.items()
                   if any(k in file for k in ("/auditor/", "/sklearn/", "/cleanlab/"))),
                  reverse=True)
    for cum, own, where in rows[:count]:
        print(f"    {cum:7.1f} s cumulative  {own:6.1f} s own  {where}")


def estimates(plan, timings: dict, counts) -> None:
    """Per step and section: the plan's estimate and the time it took, their ratio, and how
    the estimate splits into traces (declared x the timed trace) and the rest, beside the
    seconds its traces and copies took as counted."""
    for name, passes in plan.passes.items():
        actual = timings.get(name)
        if actual is None:
            continue
        estimate, timing = plan.estimate(name), plan.timing
        traced = timing.seconds(type(passes)(traces=passes.traces, loops=passes.loops,
                                             train_traces=passes.train_traces))
        parts = [p for p in counts.seconds if p.endswith(f"/{name}.py")]
        counted = sum(counts.seconds[p] for p in parts)
        print(f"  {name:16s} estimate {estimate:7.1f} s  actual {actual:7.1f} s  "
              f"ratio {estimate / max(actual, 1e-9):5.2f}  traces charged {traced:6.1f} s  "
              f"rest charged {estimate - traced:6.1f} s  traced+copied {counted:6.1f} s")
        train = timing.train or timing.backward
        looped = timing.seconds(type(passes)(looped=passes.looped, loop_steps=passes.loop_steps))
        called = timing.seconds(type(passes)(called=passes.called, calls=passes.calls))
        print(f"  {'':16s} forward {passes.forward:.0f} rows {passes.forward * timing.forward:.1f}"
              f" s, forward in counted calls {passes.called:.0f} rows in {passes.calls:.0f} "
              f"calls {called:.1f} s, backward {passes.backward:.0f} rows "
              f"{passes.backward * timing.backward:.1f} s"
              f", train {passes.train:.0f} rows {passes.train * train:.1f} s, looped "
              f"{passes.looped:.0f} rows in {passes.loop_steps:.0f} steps {looped:.1f} s, traces "
              f"{passes.traces} (loops {passes.loops}, training steps {passes.train_traces})"
              f", copies {passes.copies} "
              f"{passes.copies * (timing.copy or 0):.1f} s, kernels {passes.kernels:.0f} "
              f"{passes.kernels * (timing.kernel or 0):.1f} s")


if __name__ == "__main__":
    main()
