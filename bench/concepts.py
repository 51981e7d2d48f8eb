"""The concepts section's time over the attribution section's, measured side by side in one
audit: MobileNetV2 (weights=None, 10 classes) at 224 px on 300 images, default budget.

    PYTHONPATH=. python bench/concepts.py [--images 300] [--budget standard]

Target: at most 2. The model and data are bench/audit.py's (crops of scikit-learn's sample
photos, one short epoch of training); the audit runs in its own process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audit import audit, load, prepare  # noqa: E402  (bench/audit.py)

TARGET = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--budget", default="standard")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        model, data = prepare("mobilenet_v2", args.images, Path(folder))
        print(f"auditing ({load()})", flush=True)
        got = audit(model, data, args.images, args.budget, Path(folder) / "run",
                    sections="performance,attribution,concepts")
    timings = got["timings"]
    ratio = timings["concepts"] / timings["attribution"]
    print(f"\nMobileNetV2 224 px, {args.images} images, budget {args.budget} ({load()}):")
    print(f"  attribution section {timings['attribution']:.0f} s, concepts section "
          f"{timings['concepts']:.0f} s, figures (all sections) {timings.get('figures', 0):.0f} s")
    print(f"  concepts / attribution = {ratio:.2f} (target at most {TARGET:g}): "
          f"{'met' if ratio <= TARGET else 'NOT met'}")
    planned = got["plan"].get("concepts")
    if planned:
        print("  planned concepts: " + ", ".join(
            f"{k} {v} instead of {got['plan']['instead_of']['concepts'][k]}"
            for k, v in planned.items()))


if __name__ == "__main__":
    main()
