"""End to end through the CLI, as a user runs it: files, sections, summary.json, reproducibility."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from auditor.config.spec import read_spec
from auditor.configure import make_config
from auditor.pipeline import REPORT_FILES, run_audit
from auditor.runs.staging import MARKER

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = "performance,contrastive"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, digits_model_path, digits_npz):
    """One real `python -m auditor audit` process on the digits model and an npz of its data."""
    out = tmp_path_factory.mktemp("runs") / "digits-run"
    done = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", "--model", str(digits_model_path),
         "--data", f"npz:{digits_npz}", "--out", str(out), "--sections", SECTIONS,
         "--seed", "0"],
        capture_output=True, text=True, timeout=300)
    return done, out


def test_audit_exits_0_and_prints_the_report_path(cli_run):
    done, out = cli_run
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "report.html")
    assert sorted(p.name for p in out.iterdir()) == sorted([*REPORT_FILES, MARKER])


def test_report_contains_the_sections_and_no_external_urls(cli_run):
    _, out = cli_run
    html = (out / "report.html").read_text()
    for section in SECTIONS.split(","):
        assert f'<section id="{section}"' in html
    assert "Most confident mistakes" in html and "Confusion matrix" in html
    urls = re.findall(r'(?:src|href)="([^"#][^"]*)"', html) + re.findall(r"url\(([^)]*)\)", html)
    assert urls and all(u.startswith("data:image/png;base64,") for u in urls), set(urls) - {
        u for u in urls if u.startswith("data:")}
    assert html.count("<img") == html.count('alt="')


def test_summary_json_has_the_contract_keys_and_true_accuracy(cli_run, digits_handle, digits_npz):
    _, out = cli_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "auditor.summary/1"
    for key in ("tool", "created", "config", "model", "data", "metrics", "misclassifications",
                "checks", "timings"):
        assert key in summary
    assert set(summary["model"]) >= {"path", "name", "sha256", "params", "input_shape",
                                     "num_classes"}
    assert summary["data"]["class_names"] == [str(i) for i in range(10)]
    data = np.load(digits_npz)
    x = data["x"].astype("float32")[..., None] / 255.0
    preds = digits_handle.model.predict(x, verbose=0).argmax(axis=1)
    assert summary["metrics"]["accuracy"] == pytest.approx(accuracy_score(data["y"], preds))
    assert summary["misclassifications"]["count"] == int((preds != data["y"]).sum())
    recall_3 = (preds[data["y"] == 3] == 3).mean()
    assert summary["metrics"]["per_class"]["3"]["recall"] == pytest.approx(recall_3)
    top = summary["misclassifications"]["top_confusions"][0]
    assert top["count"] == max(int(((data["y"] == int(t["true"])) & (preds == int(t["pred"])))
                                   .sum()) for t in summary["misclassifications"]["top_confusions"])
    confidences = [e["confidence"] for e in summary["misclassifications"]["examples"]]
    assert confidences == sorted(confidences, reverse=True)
    assert {"performance", "contrastive", "total"} <= set(summary["timings"])


def test_contrastive_difference_is_predicted_minus_true(digits_handle, digits_test):
    from auditor.methods.attribution import attribute
    from auditor.sections.contrastive import contrastive_maps

    x, y = digits_test
    preds = np.asarray(digits_handle.logits(x[:40])).argmax(axis=1)
    for_pred, for_true, diff, how = contrastive_maps(digits_handle, x[:40], preds, y[:40])
    assert how == "map for predicted minus map for true"
    np.testing.assert_allclose(diff, for_pred - for_true, atol=1e-6)
    one_pass = attribute(digits_handle, x[:40], preds, contrast=y[:40])
    np.testing.assert_allclose(one_pass, diff, atol=1e-4)
    np.testing.assert_allclose(for_pred[7:8], attribute(digits_handle, x[7:8], preds[7:8]),
                               atol=1e-5)


def test_same_seed_gives_the_same_figures(tmp_path, digits_model_path):
    def figures(out: Path, seed: int) -> dict:
        config = make_config(model=str(digits_model_path), data="sklearn:digits:test",
                             max_samples=200, seed=seed, out=str(out), sections=SECTIONS.split(","),
                             progress=False, format=["json"])  # the figures of summary.json
        summary = run_audit(config).summary
        plan = {k: v for k, v in summary.get("plan", {}).items()  # its times are measured
                if k not in ("estimated_seconds", "seconds", "estimates", "timing",
                             "budget_passes")}  # the passes a measured wait allows
        return {**{k: v for k, v in summary.items() if k not in ("created", "timings", "config")},
                "plan": plan}

    first, second = figures(tmp_path / "a", 7), figures(tmp_path / "b", 7)
    assert first == second
    assert figures(tmp_path / "c", 8)["misclassifications"] != first["misclassifications"]


def test_the_demo_spec_alone_runs_the_demo_audit(tmp_path, digits_model_path):
    spec = read_spec(ROOT / "audits" / "digits.toml")
    config = make_config(spec, out=str(tmp_path / "demo"), sections=["performance"],
                         max_samples=150)
    from auditor.inputs.demo import demo_spec_path

    assert demo_spec_path() == ROOT / "audits" / "digits.toml"  # `auditor demo` runs this spec
    outcome = run_audit(config)
    assert outcome.exit_code == 0
    assert outcome.summary["model"]["name"] == digits_model_path.stem
    assert outcome.summary["data"]["n"] == 150


def test_smoothed_contrastive_maps_are_labelled_as_smoothed(tmp_path, digits_model_path):
    config = make_config({"contrastive": {"smooth_sigma": 1.5, "examples": 2}},
                         model=str(digits_model_path), data="sklearn:digits:test",
                         max_samples=150, sections=["contrastive"], out=str(tmp_path / "run"),
                         progress=False)
    html = (run_audit(config).out / "report.html").read_text()
    assert "Maps are smoothed for display (Gaussian, sigma 1.5 px)." in html
