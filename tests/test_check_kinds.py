"""Each check declared once with its kind: model checks decide the verdict, explanation checks
only where the spec gates them; every [checks.ID] table is validated against the declarations."""

from __future__ import annotations

import pytest

from auditor.checks.check import Check, exit_code, verdict
from auditor.configure import make_config
from auditor.errors import ConfigError


def test_a_spec_may_set_the_reliability_cards_bounds():
    """They were read but refused by the config: the card's columns are declared now."""
    from auditor.checks.declared import spec_bounds
    from auditor.sections.attribution import CARD_COLUMN

    config = make_config({"checks": {"attribution.reliability.randomisation": {
        "warn_above": 0.4}}}, model="demo")
    column = CARD_COLUMN.check_id("randomisation")
    assert spec_bounds(config.checks, column) == {"warn_above": 0.4}


@pytest.mark.parametrize("table, words", [
    ({"attribution.sanity.gradient": {"gate": "yes"}}, "must be true or false"),
    ({"attribution.reliability.faithfulness": {"gate": True}}, "not checks of the verdict"),
    ({"attribution.sanity.gradient": {"gated": True}}, "unknown key"),
    ({"attribution.sanity": {"gate": True}}, "unknown check"),
])
def test_a_bad_gate_is_refused_before_any_work(table, words):
    with pytest.raises(ConfigError, match=words):
        make_config({"checks": table}, model="demo")


def test_explanation_checks_stay_out_of_the_verdict_unless_gated():
    from auditor.sections.attribution import SANITY
    from auditor.sections.performance import ACCURACY

    def judged(spec):
        return [SANITY.judge(0.9, checks=spec, name="occlusion", message="m",
                             section="attribution"),
                ACCURACY.judge(0.97, checks=spec, message="m", section="performance")]

    checks = judged({})
    assert [(c.status, c.kind, c.in_verdict) for c in checks] == [
        ("fail", "explanation", False), ("pass", "model", True)]
    assert verdict(checks) == "pass" and exit_code(checks, "fail") == 0
    every = make_config({"checks": {"attribution.sanity.*": {"gate": True}}}, model="demo")
    assert verdict(judged(every.checks)) == "fail" and exit_code(judged(every.checks), "fail") == 1
    one = {"attribution.sanity.occlusion": {"gate": True, "fail_above": 0.95}}
    assert judged(one)[0].status == "warn" and judged(one)[0].in_verdict  # its own bounds win
    assert not judged({"accuracy": {"gate": False, "fail_below": 0.99}})[1].in_verdict


def test_every_declared_check_has_a_kind_and_each_id_is_declared_once():
    from auditor.checks.declared import KINDS
    from auditor.sections import declared_checks

    declared = declared_checks()
    assert all(d.kind in KINDS for d in declared)
    ids = [d.id for d in declared]
    assert len(ids) == len(set(ids))


def test_a_run_check_without_a_section_is_a_model_check():
    from auditor.sections import stamp_run_checks

    check = Check("data.skipped", "warn", 3, {"warn_above": 0}, None, "3 skipped", "", True)
    (stamped,) = stamp_run_checks([check], {"data.skipped": {"gate": False}})
    assert (stamped.kind, stamped.in_verdict) == ("model", False)


def test_a_healthy_model_trained_elsewhere_passes_its_verdict(rgb_model_path, tmp_path):
    """Not the demo and not what the bounds were tuned on: an RGB CNN on photo composites.
    Its model checks pass, so the run exits 0, while the card's explanation checks are listed
    apart, outside the verdict, whatever they say."""
    import numpy as np
    from conftest import SMALL_SECTIONS
    from rgb_composites import composites

    from auditor.pipeline import run_audit

    x, y = composites("test", seed=1)
    np.savez(tmp_path / "test.npz", x=x, y=y)
    # The demo report's small card (conftest.SMALL_SECTIONS): what its explanation checks say
    # is not judged here, and the one model check it feeds (attribution.trusted) only warns.
    outcome = run_audit(make_config(
        model=str(rgb_model_path), data=f"npz:{tmp_path / 'test.npz'}", max_samples=200,
        sections=["performance", "triage", "attribution", "robustness"], budget="quick",
        attribution=SMALL_SECTIONS["attribution"], out=str(tmp_path / "run"), progress=False,
        format=["json"]))
    checks = outcome.summary["checks"]
    model = [c for c in checks if c["in_verdict"]]
    explanation = [c for c in checks if c["kind"] == "explanation"]
    assert outcome.exit_code == 0, [c["message"] for c in model if c["status"] != "pass"]
    assert not [c for c in model if c["status"] in ("fail", "error")]
    assert any(c["id"].startswith("attribution.sanity.") for c in explanation)
    assert not any(c["in_verdict"] for c in explanation)
