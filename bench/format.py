"""How much of the demo audit's time ``--format json`` saves: the same audit with every output
(figures drawn, report.html written) and with summary.json only, side by side.

    PYTHONPATH=. python bench/format.py [--repeats 1] [--max-samples N]

Each run is ``auditor audit audits/digits.toml`` in its own fresh process (the demo model is
trained once, before the first timed run, into a temporary cache); the two formats alternate so
that other jobs on the machine weigh on both alike. It prints each run's wall-clock and CPU
seconds, the time the figures took inside the full run (``timings.figures``), and the ratio of
the json run's time to the full run's. Nothing is downloaded. Run by hand: two demo audits per
repeat, a few minutes each on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMATS = {"all": "html,json,md,junit", "json": "json"}


def run(kind: str, out: Path, max_samples: int | None, env: dict) -> dict:
    """One audit in a fresh process: its wall and CPU seconds and its summary's timings."""
    command = [sys.executable, "-m", "auditor", "audit", str(REPO / "audits" / "digits.toml"),
               "--out", str(out), "--format", FORMATS[kind], "--no-progress"]
    if max_samples:
        command += ["--max-samples", str(max_samples)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        sys.exit(f"{kind} run failed:\n{done.stderr[-2000:]}")
    timings = json.loads((out / "summary.json").read_text())["timings"]
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime)
            + (after.ru_stime - before.ru_stime), "figures_s": timings.get("figures", 0.0),
            "files": sorted(p.name for p in out.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-samples", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditor-bench-format-") as tmp:
        env = {**os.environ, "AUDITOR_CACHE": str(Path(tmp) / "cache"), "CI": "true",
               "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", "from auditor.inputs.demo import demo_model_path;"
                        " demo_model_path()"], check=True, env=env)  # train once, untimed
        results: dict[str, list[dict]] = {kind: [] for kind in FORMATS}
        for repeat in range(args.repeats):
            for kind in FORMATS:
                results[kind].append(run(kind, Path(tmp) / f"{kind}-{repeat}", args.max_samples,
                                         env))
    for kind, runs in results.items():
        best = min(runs, key=lambda r: r["wall_s"])
        print(f"--format {FORMATS[kind]:<20} wall {best['wall_s']:6.1f} s  cpu "
              f"{best['cpu_s']:6.1f} s  figures {best['figures_s']:5.1f} s  "
              f"files: {', '.join(best['files'])}")
    full, fast = (min(r["wall_s"] for r in results[k]) for k in FORMATS)
    full_cpu, fast_cpu = (min(r["cpu_s"] for r in results[k]) for k in FORMATS)
    print(f"json / all: wall {fast / full:.2f} ({100 * (1 - fast / full):.0f}% saved), "
          f"cpu {fast_cpu / full_cpu:.2f} ({100 * (1 - fast_cpu / full_cpu):.0f}% saved)")


if __name__ == "__main__":
    main()
