"""A newcomer adds a check, an attribution method or a section by touching one place each
(docs/design.md says where): a check is one ``Declared`` in its section's ``CHECKS``, a method one
decorated function, a section one module named in the registry. Everything else (the spec's
validation, the verdict's kind, the headline's words, the CLI's lists, the compute plan, the
reliability card, the smoothing wrappers, the sections that name a method, summary.json and the
report) follows from that one place, through the public paths."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from auditor.checks.declared import Declared
from auditor.configure import make_config
from auditor.errors import ConfigError


def _toy_words(summary: dict, check: dict) -> str:
    return "The toy figure is above its bound."


# The one place a check is added: its section's CHECKS tuple.
TOY_CHECK = Declared("performance.toy_share", what="a toy share", bounds={"warn_above": 0.5},
                     finding=_toy_words, finding_rank=1)


def test_a_check_declared_in_one_place_is_validated_judged_and_worded(monkeypatch):
    from auditor.report.headline import first_finding
    from auditor.sections import check_patterns, is_known_check, performance

    table = {"checks": {"performance.toy_share": {"warn_above": 0.2}}}
    with pytest.raises(ConfigError, match="performance.toy_share"):
        make_config(table, model="demo")  # not declared: the spec's table is refused
    monkeypatch.setattr(performance, "CHECKS", (*performance.CHECKS, TOY_CHECK))
    config = make_config(table, model="demo")  # declared: the same table is taken
    assert is_known_check("performance.toy_share", check_patterns())
    check = TOY_CHECK.judge(0.3, checks=config.checks, message="30% toy", section="performance")
    assert check.status == "warn" and check.kind == "model" and check.in_verdict  # spec's bound
    default = TOY_CHECK.judge(0.3, checks={}, message="30% toy", section="performance")
    assert default.status == "pass"  # the declared bound
    assert first_finding({"checks": [check.to_dict()]}) == _toy_words({}, {})


@pytest.fixture
def toy_method():
    """The one place a method is added: a function under ``@register``, with its facts."""
    from auditor.methods.attribution import METHODS, register
    from auditor.methods.attribution.gradient import input_gradients

    @register("toy_centre", "The gradient, weighted towards the image's centre (test only).",
              linear=True)
    def toy_centre(handle, x, targets, contrast, score, budget):
        height, width = x.shape[1:3]
        rows = 1 - np.abs(np.linspace(-1, 1, height))[:, None]
        columns = 1 - np.abs(np.linspace(-1, 1, width))[None, :]
        return input_gradients(handle, x, targets, contrast, score) * (rows * columns)[
            None, :, :, None]

    try:
        yield "toy_centre"
    finally:
        METHODS.pop("toy_centre")


def test_a_method_registered_in_one_place_is_listed_planned_carded_and_used(
        toy_method, digits_handle, tmp_path):
    from auditor.attribution import attribute
    from auditor.cli import cli
    from auditor.inputs.datasets import load_dataset
    from auditor.methods.attribution.registry import attribution_rows
    from auditor.pipeline import context_for, run_section
    from auditor.predict.predictions import predict
    from auditor.sections.base import Context

    listed = CliRunner().invoke(cli, ["methods"])
    assert listed.exit_code == 0 and toy_method in listed.output  # `auditor methods`
    assert attribution_rows([toy_method], 4, (32, 32, 1)) == (0, 4)  # the plan's cost
    spec = {"attribution": {"methods": ["gradient", toy_method], "examples": 2,
                            "sanity_samples": 2, "sanity_stages": 2, "faithfulness_samples": 4,
                            "faithfulness_steps": 4, "compare_layers": 0},
            "contrastive": {"method": f"smoothgrad:{toy_method}", "examples": 2}}
    config = make_config(spec, model="demo", data="sklearn:digits:test", max_samples=60)
    dataset = load_dataset(config.data, digits_handle.input_shape, 10, max_samples=60)
    x = dataset.images([0, 1])
    maps = attribute(digits_handle, x, [0, 1], toy_method)  # the Python API
    assert maps.shape == x.shape and np.abs(maps).sum() > 0
    ctx = context_for(Context(config=config, handle=digits_handle, dataset=dataset,
                              predictions=predict(digits_handle, dataset), workdir=tmp_path),
                      ["attribution", "contrastive"])
    shown = run_section("attribution", ctx)
    assert shown.error is None, shown.error
    block = shown.summary["attribution"]
    assert toy_method in block["methods"] and toy_method in block["reliability"]  # the card
    assert toy_method in block["sanity"] and toy_method in block["faithfulness"]
    contrastive = run_section("contrastive", ctx)  # the noise tunnel over it, by name
    assert contrastive.error is None, contrastive.error
    assert contrastive.summary["contrastive"]["method"] == f"smoothgrad:{toy_method}"


def _toy_section():
    """The one place a section is added: its module (here built in the test rather than written
    as auditor/sections/toy.py), with NAME, TITLE, Options, CHECKS, run and its cost."""
    import types
    from dataclasses import dataclass

    from auditor.predict.plan import Passes
    from auditor.sections.base import SectionResult, at_least

    toy = types.ModuleType("auditor.sections.toy")
    toy.NAME, toy.TITLE = "toy", "A toy section"

    @dataclass
    class Options:
        images: int = 10  # how many audit images it looks at

        def __post_init__(self):
            at_least("toy", self, 1, "images")

    share = Declared("toy.share", what="share of confident answers", bounds={"warn_below": 0.0})

    def run(ctx, options):
        confident = float((ctx.predictions.confidence[:options.images] > 0.5).mean())
        return SectionResult(
            name="toy", title=toy.TITLE, intro="The share of confident answers.",
            summary={"toy": {"confident_share": confident, "images": options.images,
                             "classes": list(ctx.dataset.class_names[:2])}},
            checks=[share.judge(confident, checks=ctx.config.checks, section="toy",
                                message=f"{confident:.0%} confident")])

    toy.Options, toy.CHECKS, toy.run = Options, (share,), run
    toy.passes = lambda options, facts: Passes(forward=min(options.images, facts.images))
    return toy


@pytest.fixture
def toy_section(monkeypatch):
    """The section's module where the package would find it, and its name in the registry
    (``sections.ORDER`` for a module file: ``SECTION_NAMES`` is what it lists)."""
    import sys

    import auditor.sections as sections

    monkeypatch.setitem(sys.modules, "auditor.sections.toy", _toy_section())
    monkeypatch.setattr(sections, "SECTION_NAMES", (*sections.SECTION_NAMES, "toy"))
    return "toy"


def test_a_section_added_in_one_place_is_configured_planned_run_written_and_shown(
        toy_section, digits_model_path, tmp_path):
    """Its options are typed and validated with the others', the CLI's --sections takes it, the
    plan sizes it, it runs, summary.json holds its keys and its check, and the report shows
    it (its figures as a table while it has no view and partial of its own)."""
    import json

    from conftest import summary_errors

    from auditor.cli import cli

    with pytest.raises(ConfigError, match="'toy.images' must be at least 1"):
        make_config({"toy": {"images": 0}}, model="demo")
    refused = CliRunner().invoke(cli, ["audit", "--model", "demo", "--sections", "nope"])
    assert isinstance(refused.exception, ConfigError)  # main() makes it one line, exit code 2
    assert "toy" in str(refused.exception)  # listed among the choices
    out = tmp_path / "run"
    ran = CliRunner().invoke(cli, [
        "audit", "--model", str(digits_model_path), "--data", "sklearn:digits:test",
        "--max-samples", "30", "--sections", "performance,toy", "--budget", "quick",
        "--out", str(out), "--quiet"])
    assert ran.exit_code in (0, 1), ran.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["toy"]["images"] == 10 and 0 <= summary["toy"]["confident_share"] <= 1
    assert summary["plan"]["estimates"]["toy"] >= 0  # the plan counted its passes
    assert any(c["id"] == "toy.share" for c in summary["checks"])
    # The schema accepts a section's keys it does not list (additionalProperties); listing
    # them in it and in docs/summary.md is the contract's documentation, which
    # tests/test_sections_common.py demands of every section in the package (docs/design.md).
    assert summary_errors(summary) == []
    page = (out / "report.html").read_text()
    assert 'id="toy"' in page and "A toy section" in page and "toy.confident_share" in page
