"""Regenerate docs/report.png, the README's screenshot: the top of the real demo report.

    python scripts/readme_screenshot.py            # runs `auditor demo`, then the screenshot
    python scripts/readme_screenshot.py --report reports/demo/report.html   # an existing report

The page is opened in headless Chromium (Debian's `chromium`) at 1280 px, its top is saved and
reduced to a 256-colour PNG so that the README stays light. Exits 1 if the demo report is over
the 5 MB budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the headless-browser driver is test tooling

from browser import Chromium, Page  # noqa: E402

BUDGET = 5e6


def demo_report(folder: Path) -> Path:
    """Run the demo audit exactly as `auditor demo` does, into ``folder``."""
    from auditor.config.spec import read_spec
    from auditor.configure import make_config
    from auditor.inputs.demo import demo_spec_path
    from auditor.pipeline import run_audit

    outcome = run_audit(make_config(read_spec(demo_spec_path()), out=str(folder / "demo"),
                                    progress=False))
    return outcome.out / "report.html"


def screenshot(report: Path, out: Path, width: int, height: int) -> None:
    with Chromium() as browser:
        page = Page(browser, width, height)
        page.load(report.resolve().as_uri())
        page.screenshot(out, clip_height=height)
    image = Image.open(out).convert("RGB")
    image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        out, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="an existing report.html (default: run the "
                                                    "demo audit)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=820)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditor-screenshot-") as tmp:
        report = args.report or demo_report(Path(tmp))
        size = report.stat().st_size
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(report, args.out, args.width, args.height)
    print(f"{args.out}: {args.out.stat().st_size / 1e3:.0f} kB, from {report.name} of "
          f"{size / 1e6:.2f} MB")
    if size > BUDGET:
        print(f"the report is over the {BUDGET / 1e6:.0f} MB budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
