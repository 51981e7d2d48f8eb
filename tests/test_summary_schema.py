"""summary.json has one schema: the file shipped in the package describes what runs write."""

from __future__ import annotations

import json

from conftest import summary_errors


def test_the_schema_is_valid_json_schema_and_names_the_contract():
    import jsonschema

    from auditor.report.summary import SCHEMA, SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA and schema["properties"]["schema"]["const"] == SCHEMA
    assert set(schema["required"]) >= {"schema", "tool", "created", "config", "model", "data",
                                       "checks", "timings"}


def test_the_demo_summary_validates_and_breaking_a_contract_key_does_not(demo_report):
    summary = demo_report.summary
    assert summary_errors(summary) == []
    assert summary_errors({**summary, "section_key_nobody_knows": {"x": 1}}) == []
    broken = json.loads(json.dumps(summary))
    broken["metrics"]["accuracy"] = "high"
    broken["checks"][0]["status"] = "fine"
    del broken["robustness"]["check_epsilon"]
    errors = summary_errors(broken)
    assert any("accuracy" in e for e in errors) and any("status" in e for e in errors)
    assert any("check_epsilon" in e for e in errors), errors
