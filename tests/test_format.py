"""--format: the outputs a run writes; without html no figure is drawn at all."""

from __future__ import annotations

import pytest

from auditor.errors import ConfigError
from auditor.runs.staging import MARKER

# Every section, each as small as it goes: the point is which code runs, not what it finds.
TINY = {
    "attribution": {"methods": ["gradient", "gradcam"], "examples": 2, "sanity_samples": 2,
                    "sanity_stages": 2, "faithfulness_samples": 4, "faithfulness_steps": 4,
                    "compare_layers": 1},
    "clever_hans": {"steps": 10, "explain": 8, "max_train": 120, "max_eval": 60,
                    "max_discovery": 100, "max_embedding": 40, "shortcuts": ["patch"]},
    "featureviz": {"max_classes": 2, "steps": 4, "snapshots": [0, 4], "compare": False,
                   "max_channels": 2, "top_k": 2},
    "counterfactuals": {"mistakes": 3, "steps": 10, "gallery": 2},
    "concepts": {"sample": 30, "icon_steps": 4, "removal_images": 2, "random_directions": 2,
                 "survival_images": 4, "mistakes": 2, "top": 2},
    "robustness": {"samples": 20, "epsilons": [0.0, 8 / 255], "steps": 2, "gallery": 2},
}


@pytest.fixture
def drawing_counted(monkeypatch):
    """Counts every matplotlib figure made and every image Pillow encodes, and makes the
    report layer's views fail if anything calls them."""
    import matplotlib.figure
    from PIL import Image

    import auditor.report.views as views

    drawn = {"figures": 0, "images": 0}
    make_figure, save_image = matplotlib.figure.Figure.__init__, Image.Image.save

    def counted_figure(self, *args, **kwargs):
        drawn["figures"] += 1
        make_figure(self, *args, **kwargs)

    def counted_save(self, *args, **kwargs):
        drawn["images"] += 1
        return save_image(self, *args, **kwargs)

    def no_views(result, dataset):
        raise AssertionError(f"the view of '{result.name}' was built without html")

    monkeypatch.setattr(matplotlib.figure.Figure, "__init__", counted_figure)
    monkeypatch.setattr(Image.Image, "save", counted_save)
    monkeypatch.setattr(views, "build_view", no_views)
    return drawn


def test_without_html_no_section_draws_a_figure(tmp_path, digits_model_path, drawing_counted):
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    out = tmp_path / "run"
    config = make_config({"model": str(digits_model_path), "data": "sklearn:digits:test",
                          **TINY}, out=str(out), max_samples=100, progress=False,
                         format="json,md,junit")
    outcome = run_audit(config)
    errors = [c for c in outcome.summary["checks"] if c["status"] == "error"]
    assert not errors, errors
    assert set(outcome.summary["timings"]) >= set(TINY) | {"performance", "contrastive"}
    assert drawing_counted == {"figures": 0, "images": 0}
    assert sorted(p.name for p in out.iterdir()) == sorted([
        MARKER, "class_visualization.npz", "junit.xml", "predictions.npz", "summary.json",
        "summary.md"])
    assert "figures" not in outcome.summary["timings"]
    assert outcome.page == out / "summary.json"


def test_format_json_on_the_command_line_writes_no_page(tmp_path, digits_model_path):
    """The flag as click parses it (in process: test_cli_audit runs the real command)."""
    from click.testing import CliRunner

    from auditor.cli import cli

    out = tmp_path / "json-only"
    done = CliRunner().invoke(cli, [
        "audit", "--model", str(digits_model_path), "--data", "sklearn:digits:test",
        "--max-samples", "60", "--out", str(out), "--sections", "performance",
        "--format", "json", "--no-progress"])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(out / "summary.json")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "predictions.npz",
                                                            "summary.json"])


def test_format_takes_a_list_or_a_comma_string_and_names_a_bad_one():
    from auditor.config.spec import FORMATS
    from auditor.configure import make_config

    assert make_config(model="demo").format == list(FORMATS)
    assert make_config({"format": ["md", "json"]}, model="demo").format == ["md", "json"]
    assert make_config(model="demo", format="html, junit").format == ["html", "junit"]
    with pytest.raises(ConfigError, match="'format' must be a comma list of html"):
        make_config(model="demo", format="json,pdf")
    with pytest.raises(ConfigError, match="'format'"):
        make_config(model="demo", format="")
