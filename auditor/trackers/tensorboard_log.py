"""An audit in TensorBoard, beside the training curves: scalars (the key figures and every
check's value), images (the contrastive panels of the worst mistakes, as the report drew them,
and the class visualisations from the run's arrays) and the verdict as text, at one step (the
epoch from the Keras callback, the checkpoint from ``watch``).

Scalars are under ``audit/`` (``audit/accuracy``) and ``checks/`` (``checks/kappa``); images
under ``audit/contrastive/N`` and ``audit/class_visualization``; the text is ``audit/verdict``.
"""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import numpy as np

from auditor.trackers import check_values, key_figures

PANELS = 8  # contrastive panels shown per audit: the report's first, its most confident mistakes
CLASS_VISUALIZATION = "class_visualization.npz"  # written by the featureviz section
_PANEL = re.compile(r'<figure class="panel">\s*<img src="data:image/png;base64,([^"]+)"')


def report_panels(folder: Path, section: str, limit: int = PANELS) -> list[bytes]:
    """The PNG panels of one section of the run's report.html, in the report's order (none
    when the run wrote no page or did not run the section)."""
    page = Path(folder) / "report.html"
    if not page.is_file():
        return []
    text = page.read_text(encoding="utf-8")
    start = text.find(f'<section id="{section}"')
    if start < 0:
        return []
    end = text.find("</section>", start)
    return [base64.b64decode(data) for data in _PANEL.findall(text, start, end)[:limit]]


def class_visualization(folder: Path) -> tuple[np.ndarray, list[str]] | None:
    """The class visualisations of the run as one sheet (a montage from auditor.report), and
    the classes in its order; None when the run has none."""
    path = Path(folder) / CLASS_VISUALIZATION
    if not path.is_file():
        return None
    from auditor.report.figures import montage

    with np.load(path, allow_pickle=False) as arrays:
        images, classes = arrays["images"], [str(c) for c in arrays["classes"]]
    if len(images) == 0:
        return None
    rows = [list(images[i:i + 10]) for i in range(0, len(images), 10)]
    return montage(rows, gap_x=2), classes


def verdict_text(folder: Path, summary: dict) -> str:
    """The verdict, the checks that decided it and where the report is, as Markdown."""
    checks = [c for c in summary.get("checks", []) if c["status"] in ("fail", "error", "warn")]
    lines = [f"**{summary.get('verdict', '?').upper()}**: {len(summary.get('checks', []))} "
             f"checks, {sum(c['status'] in ('fail', 'error') for c in checks)} failed, "
             f"{sum(c['status'] == 'warn' for c in checks)} warned", ""]
    lines += [f"- {c['status']}: `{c['id']}` {c.get('message', '')}" for c in checks[:20]]
    page = Path(folder) / "report.html"
    lines += ["", f"Report: `{(page if page.is_file() else Path(folder) / 'summary.json')}`"]
    return "\n".join(lines)


class TensorBoardWriter:
    """Audits written into one TensorBoard log folder (a tf.summary file writer)."""

    def __init__(self, logdir: str | Path):
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(str(logdir))

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.writer.close()

    def log_audit(self, folder: Path, summary: dict, step: int) -> None:
        import tensorflow as tf

        with self.writer.as_default(step=int(step)):
            for name, value in key_figures(summary).items():
                if math.isfinite(value):
                    tf.summary.scalar(f"audit/{name.removeprefix('audit_')}", value)
            for name, value in check_values(summary).items():
                tf.summary.scalar(f"checks/{name}", value)
            tf.summary.text("audit/verdict", verdict_text(folder, summary))
            for index, png in enumerate(report_panels(folder, "contrastive")):
                tf.summary.image(f"audit/contrastive/{index}", tf.io.decode_png(png)[None],
                                 description="a confident mistake: saliency for the predicted "
                                             "class, the true class, and their difference")
            sheet = class_visualization(folder)
            if sheet is not None:
                tf.summary.image("audit/class_visualization", sheet[0][None],
                                 description="classes in order: " + ", ".join(sheet[1]))
        self.writer.flush()
