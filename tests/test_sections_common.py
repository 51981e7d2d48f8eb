"""One test for every registered section (as Xplique's test_common.py runs every method): it
emits only the checks it declares, with their declared kind; every summary key it writes is in
the schema; its view builds; and its options are validated before any work."""

from __future__ import annotations

import dataclasses
import json

import pytest

from auditor.sections import RUN_CHECKS, SECTION_NAMES, section_module

SCHEMA_KEYS = set(json.loads(
    (__import__("auditor.report.summary", fromlist=["SCHEMA_FILE"]).SCHEMA_FILE).read_text()
)["properties"])


@pytest.fixture(scope="module")
def audited(demo_report):
    """Every section of the demo audit (conftest's ``demo_report``: 120 digits, the standard
    budget), and what each section's result was as the pipeline drew it (views included),
    described by tests/section_facts.py."""
    return demo_report, json.loads((demo_report.out.parent / "sections.json").read_text())


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_a_section_emits_only_the_checks_it_declares_with_their_kind(audited, name):
    from auditor.checks.declared import declaration_of

    _, results = audited
    result = results[name]
    assert result["error"] is None, result["error"]
    declared = (*section_module(name).CHECKS, *RUN_CHECKS)
    for check_id, kind, section in result["checks"]:
        declaration = declaration_of(check_id, declared)
        assert declaration is not None and declaration.listed, check_id
        assert kind == declaration.kind, check_id
        assert section == name, check_id


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_every_summary_key_a_section_writes_is_in_the_schema(audited, name):
    outcome, results = audited
    assert set(results[name]["summary_keys"]) <= SCHEMA_KEYS
    assert all(key in outcome.summary for key in results[name]["summary_keys"])


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_a_section_s_view_builds_and_its_result_is_frozen(audited, name):
    """Its view is a non-empty dict; setting its summary raises FrozenInstanceError; nothing in
    its summary or data can be changed (section_facts.writable_parts)."""
    _, results = audited
    result = results[name]
    assert result["view_is_filled_dict"]
    assert result["frozen"]
    assert result["writable"] == []


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_a_section_s_options_are_validated_before_any_work(name):
    """An unknown key and a value of the wrong type fail when the config is made."""
    from auditor.configure import make_config
    from auditor.errors import ConfigError

    options = section_module(name).Options
    assert options() is not None  # the defaults are valid
    with pytest.raises(ConfigError, match=f"unknown key '{name}.no_such_option'"):
        make_config({name: {"no_such_option": 1}}, model="demo")
    first = dataclasses.fields(options)[0].name
    with pytest.raises(ConfigError, match=f"'{name}.{first}'"):
        make_config({name: {first: {"not": "a value"}}}, model="demo")
