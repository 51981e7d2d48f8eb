"""Audits in CI: exit codes from thresholds, baselines in every output, compare, index, watch.

Runs go through the command line (click's runner in-process, and ``python -m auditor`` in a real
subprocess where the exit code itself is the point), on the performance section and 100 images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

from auditor.cli import cli

FAST = ["--data", "sklearn:digits:test", "--sections", "performance", "--max-samples", "100",
        "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


def invoke(*args, expect: int | None = None):
    """Run the CLI in-process; errors other than the exit itself propagate."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def python_m_auditor(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CI": "true"}
    return subprocess.run([sys.executable, "-m", "auditor", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, digits_model_path):
    """Three checkpoints of the demo CNN, each worse than the one before: the trained weights,
    then growing noise on every weight, saved with increasing modification times."""
    import keras

    folder = tmp_path_factory.mktemp("checkpoints")
    model = keras.models.load_model(digits_model_path)
    weights = model.get_weights()
    rng = np.random.default_rng(0)
    paths = []
    start = time.time_ns() - 10**10
    for i, scale in enumerate((0.0, 0.1, 0.6)):
        model.set_weights([w + scale * w.std() * rng.standard_normal(w.shape).astype(w.dtype)
                           for w in weights])
        path = folder / f"epoch-{i}.keras"
        model.save(path)
        os.utime(path, ns=(start + i * 10**9, start + i * 10**9))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, checkpoints):
    """The good checkpoint, audited with no spec and no baseline."""
    out = tmp_path_factory.mktemp("runs") / "first"
    result = invoke("audit", "--model", checkpoints[0], "--out", out, *FAST)
    return out, result


@pytest.fixture(scope="module")
def worse_run(first_run, checkpoints):
    """The worst checkpoint, audited against the first run as its baseline."""
    out = first_run[0].parent / "worse"
    result = invoke("audit", "--model", checkpoints[2], "--out", out, "--baseline", first_run[0],
                    *FAST)
    return out, result


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- checks and exit codes ----------------------------------------------------------------

def test_without_thresholds_only_the_health_checks_gate(first_run):
    """With no bounds in the spec and no baseline, accuracy and recall say nothing; the checks
    that the predictions mean anything (chance level, collapse, class order, input range) have
    default bounds and gate the run."""
    out, result = first_run
    assert result.exit_code == 0, result.output
    assert "verdict: pass" in result.output and "nothing was gated" not in result.output
    summary = summary_of(out)
    assert summary["verdict"] == "pass" and summary["gated"] is True
    checks = {c["id"]: c for c in summary["checks"]}
    # (class_order needs 20 images per class; 100 images of 10 classes are too few)
    assert set(checks) == {"accuracy", "per_class_recall", "kappa", "prediction_spread",
                           "prediction_share", "logit_spread", "model.input_range"}
    assert all("not gated" in checks[i]["message"] for i in ("accuracy", "per_class_recall"))
    assert all(checks[i]["gated"] and checks[i]["status"] == "pass"
               for i in ("kappa", "prediction_spread", "prediction_share", "logit_spread",
                         "model.input_range"))
    assert "baseline" not in summary


def test_a_broken_threshold_exits_1_and_one_that_holds_exits_0(tmp_path, first_run,
                                                                checkpoints):
    accuracy = summary_of(first_run[0])["metrics"]["accuracy"]
    broken = write_spec(tmp_path / "broken.toml",
                        f"[checks.accuracy]\nfail_below = {accuracy + 0.001}\n")
    result = invoke("audit", broken, "--model", checkpoints[0], "--out", tmp_path / "broken",
                    *FAST, expect=1)
    check = next(c for c in summary_of(tmp_path / "broken")["checks"] if c["id"] == "accuracy")
    assert check["status"] == "fail"
    assert "verdict: fail" in result.output

    holds = write_spec(tmp_path / "holds.toml",
                       f"[checks.accuracy]\nfail_below = {accuracy - 0.05}\n")
    invoke("audit", holds, "--model", checkpoints[0], "--out", tmp_path / "holds",
           "--baseline", first_run[0], *FAST, expect=0)
    summary = summary_of(tmp_path / "holds")
    assert summary["gated"] is True and summary["verdict"] == "pass"
    assert summary["baseline"]["examples"]["became_wrong"]["count"] == 0


def test_fail_on_warn_turns_a_warning_into_exit_1(tmp_path, first_run, checkpoints):
    accuracy = summary_of(first_run[0])["metrics"]["accuracy"]
    spec = write_spec(tmp_path / "warn.toml",
                      f"[checks.accuracy]\nwarn_below = {accuracy + 0.001}\n")
    invoke("audit", spec, "--model", checkpoints[0], "--out", tmp_path / "lenient", *FAST,
           expect=0)
    assert summary_of(tmp_path / "lenient")["verdict"] == "warn"

    strict = python_m_auditor("audit", spec, "--model", checkpoints[0], "--out",
                              tmp_path / "strict", "--fail-on", "warn", *FAST, cwd=tmp_path)
    assert strict.returncode == 1, strict.stderr
    assert strict.stdout.strip() == str(tmp_path / "strict" / "report.html")
    suite = ET.parse(tmp_path / "strict" / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1"
    assert suite.find("testcase[@name='accuracy']/failure").get("type") == "warn"


def test_a_section_that_crashes_is_an_error_check_that_fails_the_run(tmp_path, monkeypatch,
                                                                    checkpoints):
    from auditor.sections import contrastive

    def broken_maps(*args, **kwargs):  # fault injection: a bug inside a section
        raise RuntimeError("saliency went wrong")

    monkeypatch.setattr(contrastive, "contrastive_maps", broken_maps)
    args = [a if a != "performance" else "performance,contrastive" for a in FAST]
    invoke("audit", "--model", checkpoints[0], "--out", tmp_path / "run", *args, expect=1)
    checks = {c["id"]: c for c in summary_of(tmp_path / "run")["checks"]}
    assert checks["contrastive.run"]["status"] == "error"
    assert "saliency went wrong" in checks["contrastive.run"]["message"]
    assert checks["accuracy"]["status"] == "pass"
    suite = ET.parse(tmp_path / "run" / "junit.xml").getroot().find("testsuite")
    assert suite.get("errors") == "1"
    assert "This section could not run" in (tmp_path / "run" / "report.html").read_text()


# --- baselines ----------------------------------------------------------------------------

def test_baseline_deltas_appear_in_json_markdown_and_html(first_run, worse_run):
    (first, _), (worse, result) = first_run, worse_run
    assert result.exit_code == 1, result.output  # default: accuracy may drop at most 1 point
    old, new = summary_of(first), summary_of(worse)
    block = new["baseline"]
    assert block["path"] == str((first / "summary.json").resolve())
    assert block["created"] == old["created"] and block["same_data"] is True
    assert block["model"]["sha256"] == old["model"]["sha256"] != new["model"]["sha256"]
    accuracy = block["metrics"]["metrics.accuracy"]
    assert accuracy["baseline"] == old["metrics"]["accuracy"]
    assert accuracy["change"] == pytest.approx(new["metrics"]["accuracy"]
                                               - old["metrics"]["accuracy"])
    checks = {c["id"]: c for c in new["checks"]}
    assert checks["accuracy"]["status"] == "fail"
    assert checks["accuracy"]["baseline"] == old["metrics"]["accuracy"]
    assert checks["accuracy"]["baseline_status"] == "pass"

    # the examples that became wrong, recomputed from the two runs' saved predictions
    before, after = np.load(first / "predictions.npz"), np.load(worse / "predictions.npz")
    became_wrong = np.flatnonzero((before["preds"] == before["labels"])
                                  & (after["preds"] != after["labels"]))
    listed = block["examples"]["became_wrong"]
    assert listed["count"] == len(became_wrong) > 0
    assert [e["index"] for e in listed["examples"]] == became_wrong[:100].tolist()
    assert block["classes"]["worse"], "some class must have lost recall"

    markdown = (worse / "summary.md").read_text()
    assert "### Changes since the baseline" in markdown
    assert f"{old['metrics']['accuracy']:.2%}" in markdown
    assert f"{100 * accuracy['change']:+.2f} pts" in markdown
    assert f"**{len(became_wrong)}** examples became wrong" in markdown
    assert len(markdown) < 60_000

    html = (worse / "report.html").read_text()
    assert 'id="baseline"' in html and f"{100 * accuracy['change']:+.2f} pts" in html
    became_right = block["examples"]["became_right"]["count"]
    thumbnails = min(len(became_wrong), 12) + min(became_right, 12)
    assert html.count("baseline predicted") == thumbnails


def test_junit_parses_and_has_one_test_case_per_check(worse_run):
    out, _ = worse_run
    summary = summary_of(out)
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == len(summary["checks"])
    assert [c.get("name") for c in cases] == [c["id"] for c in summary["checks"]]
    failed = sum(c["status"] == "fail" for c in summary["checks"])
    assert int(suite.get("failures")) == len(suite.findall("testcase/failure")) == failed >= 1
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["verdict"] == "fail" and properties["baseline"].endswith("summary.json")


def test_compare_writes_a_comparison_page_and_exits_1_on_a_regression(tmp_path, first_run,
                                                                      worse_run):
    (first, _), (worse, _) = first_run, worse_run
    result = invoke("compare", first, worse, expect=1)
    page = worse / "comparison.html"
    assert result.stdout.strip() == str(page)
    assert "verdict: fail" in result.output and "became wrong" in result.output
    html = page.read_text()
    assert "Regression checks, re-evaluated" in html and "Became wrong" in html

    invoke("compare", first / "summary.json", first, "--out", tmp_path / "same.html", expect=0)
    assert (tmp_path / "same.html").is_file()

    # a run without its predictions.npz: figures still compared, examples not
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "summary.json").write_text((worse / "summary.json").read_text())
    invoke("compare", first, bare, expect=1)
    assert "has no predictions.npz" in (bare / "comparison.html").read_text()


def test_compare_of_a_folder_without_a_run_is_a_one_line_error(tmp_path, first_run):
    result = python_m_auditor("compare", first_run[0], tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "has no summary.json" in result.stderr


# --- history: index and watch -------------------------------------------------------------

def test_watch_once_audits_each_new_checkpoint_against_the_previous_one(tmp_path, checkpoints):
    reports = tmp_path / "reports"
    args = ("watch", checkpoints[0].parent, "--once", "--out", reports, "--settle", "0.1", *FAST)
    invoke(*args, expect=1)  # the last checkpoint regressed
    ledger = json.loads((reports / "watch.json").read_text())["checkpoints"]
    assert [Path(e["file"]).name for e in ledger] == [p.name for p in checkpoints]
    folders = [reports / e["folder"] for e in ledger]
    assert all((f / "report.html").is_file() for f in folders)
    baselines = [summary_of(f).get("baseline", {}).get("path") for f in folders]
    assert baselines == [None, str(folders[0] / "summary.json"),
                         str(folders[1] / "summary.json")]

    index = (reports / "index.html").read_text()
    links = [f'href="{f.name}/report.html"' for f in reversed(folders)]  # newest first
    positions = [index.index(link) for link in links]
    assert positions == sorted(positions)
    assert 'alt="Trend of accuracy over the runs"' in index

    second = invoke(*args, expect=0)
    assert "nothing new" in second.output
    assert json.loads((reports / "watch.json").read_text())["checkpoints"] == ledger
    assert sorted(p.name for p in reports.iterdir() if p.is_dir()) == sorted(
        f.name for f in folders)


def test_a_checkpoint_still_being_written_is_not_read(tmp_path):
    from auditor.runs.watch import settled

    done = tmp_path / "done.keras"
    done.write_bytes(b"x" * 1000)
    growing = tmp_path / "growing.h5"
    growing.write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    stop = threading.Event()

    def write_slowly():
        with open(growing, "ab") as handle:
            while not stop.is_set():
                handle.write(b"x" * 100)
                handle.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        ready, busy = settled(tmp_path, settle=0.3)
    finally:
        stop.set()
        writer.join()
    assert ready == [done] and busy == [growing]


def test_index_lists_runs_newest_first_with_trends_from_their_summaries(tmp_path, first_run):
    from auditor.runs.history import write_index

    summary = summary_of(first_run[0])
    for day, (accuracy, flagged, robust) in enumerate([(0.95, [], [0.9, 0.5]),
                                                        (0.97, ["3"], [0.92, 0.61]),
                                                        (0.96, ["3", "8"], [0.9, 0.4])]):
        run = tmp_path / f"run-{day}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({
            **summary, "created": f"2026-01-0{day + 1}T12:00:00+00:00",
            "metrics": {**summary["metrics"], "accuracy": accuracy},
            "clever_hans": {"discovery": {"flagged_classes": flagged, "per_class": {}}},
            "robustness": {"attack": "pgd", "epsilons": [0.01, 0.03], "accuracy": robust,
                           "targeted_success": [0.1, 0.3], "check_epsilon": 0.03}}))
    (tmp_path / "not-a-run").mkdir()
    path, count = write_index(tmp_path)
    html = path.read_text()
    assert count == 3 and path == tmp_path / "index.html"
    assert html.index("run-2/summary.json") < html.index("run-1/") < html.index("run-0/")
    for label in ("accuracy", "Clever Hans suspects", "robust accuracy (checked epsilon)"):
        assert f'alt="Trend of {label} over the runs"' in html
    assert "40.00%" in html  # robust accuracy of run-2 at its checked epsilon


def test_index_draws_single_and_multi_label_runs_on_trends_of_their_own(tmp_path, first_run):
    """Accuracy means another thing on a multi-label run (whole label sets right): each task
    gets its own trend, and the table says which run is which, through `auditor index`."""
    from auditor.runs.history import find_runs, trend_series
    from auditor.sections import key_figures

    summary = summary_of(first_run[0])
    runs = [("single", 0.95), ("single", 0.96), ("multi", 0.40), ("single", 0.97),
            ("multi", 0.45)]
    for day, (task, accuracy) in enumerate(runs):
        run = tmp_path / f"{task}-{day}"
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({
            **summary, "created": f"2026-01-0{day + 1}T12:00:00+00:00",
            "model": {**summary["model"], "task": f"{task}-label"},
            "metrics": {**summary["metrics"], "accuracy": accuracy}}))
    series = {t["label"]: [value for _, value, _ in t["points"]]
              for t in trend_series(find_runs(tmp_path)[0], key_figures())}
    assert series["accuracy (single-label runs)"] == [0.95, 0.96, 0.97]
    assert series["accuracy (multi-label runs)"] == [0.40, 0.45]
    assert "accuracy" not in series
    invoke("index", tmp_path, expect=0)
    page = (tmp_path / "index.html").read_text()
    for task in ("single", "multi"):
        assert f'alt="Trend of accuracy ({task}-label runs) over the runs"' in page
    assert page.count("<td>multi-label</td>") == 2 and page.count("<td>single-label</td>") == 3


def test_index_of_a_missing_folder_is_a_usage_error(tmp_path):
    result = python_m_auditor("index", tmp_path / "nowhere", cwd=tmp_path)
    assert result.returncode == 2 and "does not exist" in result.stderr


# --- the generic check helpers ------------------------------------------------------------

def test_a_class_newly_flagged_as_a_clever_hans_suspect_fails():
    from auditor.runs.baseline import regression_checks

    def run(flagged):
        return {"clever_hans": {"discovery": {"flagged_classes": flagged}}}

    (check,) = regression_checks(run(["3", "7"]), run(["3"]), {})
    assert check.status == "fail" and "7" in check.message
    assert check.value == ["3", "7"] and check.baseline == ["3"]
    (check,) = regression_checks(run(["3"]), run(["3", "7"]), {})
    assert check.status == "pass" and "no longer: 7" in check.message
    (check,) = regression_checks(run(["3", "7"]), run(["3"]),
                                 {"newly_flagged_classes": {"fail_above": 1}})
    assert check.status == "pass"
    (check,) = regression_checks(run(["3"]), {"metrics": {}}, {})
    assert check.status == "skipped"
    assert regression_checks(run(["3"]), None, {}) == []
    assert regression_checks({"metrics": {}}, run(["3"]), {}) == []
    # a search run below its floors (a named budget on a dear model) flags nothing for sure
    thin = {**run(["3", "7"]), "plan": {"below_floor": {"clever_hans": {
        "max_discovery": {"value": 12, "floor": 100}}}}}
    (check,) = regression_checks(thin, run(["3"]), {})
    assert check.status == "skipped" and "max_discovery 12" in check.message


def test_a_baseline_planned_with_other_settings_warns_naming_them():
    from auditor.runs.baseline import regression_checks

    def run(steps, budget="quick"):
        lowered = {"attribution": {"integrated_gradients.steps": steps}} if steps else {}
        return {"plan": {"budget": budget, **lowered,
                         "instead_of": {name: {"integrated_gradients.steps": 32}
                                        for name in lowered}}}

    (check,) = regression_checks(run(8), run(16), {})
    assert check.id == "baseline.plan" and check.status == "warn"
    assert "attribution.integrated_gradients.steps 8 against the baseline's 16" in check.message
    (check,) = regression_checks(run(None, "thorough"), run(16), {})
    assert "steps default against the baseline's 16" in check.message
    assert regression_checks(run(8), run(8, "standard"), {}) == []  # same settings: nothing
    assert regression_checks(run(8), {"metrics": {}}, {}) == []  # a baseline without a plan


def test_a_run_that_left_out_work_its_baseline_did_says_so_in_the_comparison(tmp_path,
                                                                             first_run):
    """``plan.dropped`` of either run against the other's: work left out now that the
    baseline ran, and work run now that the baseline left out, each named with its spec key,
    through `auditor compare`; the same drops in both say nothing."""
    import html

    from auditor.runs.baseline import regression_checks

    summary = summary_of(first_run[0])
    assert summary["plan"] and "dropped" not in summary["plan"]
    drops = {"featureviz": [{"setting": "compare", "value": False, "spec_key":
                             "featureviz.compare", "what": "the comparisons"}],
             "attribution": [{"setting": "methods", "value": ["gradient"], "what": what,
                              "spec_key": "attribution.methods"}
                             for what in ("LRP on the card", "occlusion on the card")]}
    runs = {}
    for name, dropped in (("full", {}), ("lean", drops)):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        plan = {**summary["plan"], **({"dropped": dropped} if dropped else {})}
        (runs[name] / "summary.json").write_text(json.dumps({**summary, "plan": plan}))
    result = invoke("compare", runs["full"], runs["lean"], "--out", tmp_path / "c.html")
    page = html.unescape((tmp_path / "c.html").read_text())
    for what, key in (("the comparisons", "featureviz.compare"),
                      ("LRP on the card", "attribution.methods"),
                      ("occlusion on the card", "attribution.methods")):
        assert f"left out {what} ('{key}'" in page and "which the baseline ran" in page
    assert "baseline.plan" in page and result.exit_code == 0  # a warning: --fail-on warn fails
    (back,) = regression_checks(summary_of(runs["full"]), summary_of(runs["lean"]), {})
    assert back.status == "warn" and "ran the comparisons, which the baseline left out (" \
        "'featureviz.compare' False)" in back.message
    assert regression_checks(summary_of(runs["lean"]), summary_of(runs["lean"]), {}) == []


def test_per_class_recall_names_every_class_that_dropped():
    from auditor.checks.check import evaluate_each

    check = evaluate_each("per_class_recall", {"cat": 0.7, "dog": 0.96, "owl": 0.8},
                          what="recall", section="performance",
                          defaults={"warn_drop": 0.05, "fail_drop": 0.15},
                          baselines={"cat": 0.9, "dog": 0.95, "owl": 0.88})
    assert check.status == "fail" and check.value == 0.7 and check.baseline == 0.9
    assert "'cat'" in check.message and "'owl'" in check.message and "'dog'" not in check.message
    assert check.to_dict()["change"] == pytest.approx(-0.2)
    ungated = evaluate_each("per_class_recall", {"cat": 0.7}, what="recall",
                            section="performance", defaults={"warn_drop": 0.05})
    assert ungated.status == "pass" and not ungated.gated


def test_markdown_stays_under_the_pr_comment_limit(worse_run):
    from auditor.report.summary import render_markdown

    summary = summary_of(worse_run[0])
    check = summary["checks"][0]
    summary["checks"] = [{**check, "id": f"check_{i}", "message": "m" * 300}
                         for i in range(2000)]
    markdown = render_markdown(summary)
    assert len(markdown) < 60_000 and "more checks in summary.json" in markdown


def test_watch_takes_its_spec_as_an_argument_or_with_spec(tmp_path):
    from auditor.errors import ConfigError

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    spec = tmp_path / "typo.toml"
    spec.write_text('modle = "x"\n')
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        invoke("watch", folder, "--spec", spec, "--once", "--out", tmp_path / "reports")
    other = tmp_path / "other.toml"
    other.write_text("seed = 1\n")
    clash = invoke("watch", folder, spec, "--spec", other, "--once", expect=2)
    assert "two specs given" in clash.output
    quiet = invoke("watch", folder, "--spec", other, "--once", "--out", tmp_path / "reports",
                   expect=0)
    assert "nothing new" in quiet.output
