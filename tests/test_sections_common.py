"""One test for every registered section (as Xplique's test_common.py runs every method): it
emits only the checks it declares, with their declared kind; every summary key it writes is in
the schema; its view builds; and its options are validated before any work."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from auditor.sections import RUN_CHECKS, SECTION_NAMES, section_module

SCHEMA_KEYS = set(json.loads(
    (__import__("auditor.report.summary", fromlist=["SCHEMA_FILE"]).SCHEMA_FILE).read_text()
)["properties"])


@pytest.fixture(scope="module")
def audited(tmp_path_factory, digits_model_path):
    """Every section on 60 digits under the quick budget, and each section's result as the
    pipeline drew it (views included)."""
    from conftest import SMALL_SECTIONS

    import auditor.pipeline as pipeline
    from auditor.configure import make_config

    kept = {}
    draw = pipeline.draw_views

    def keep(results, dataset, folder=None, timings=None):
        drawn = draw(results, dataset, folder, timings)
        kept.update({r.name: r for r in drawn})
        return drawn

    spec = {"model": str(digits_model_path), "data": "sklearn:digits:test", "budget": "quick",
            **{name: options for name, options in SMALL_SECTIONS.items()
               if name in SECTION_NAMES}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "draw_views", keep)
        outcome = pipeline.run_audit(make_config(
            spec, out=str(tmp_path_factory.mktemp("common") / "run"), max_samples=60,
            progress=False))
    return outcome, kept


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_a_section_emits_only_the_checks_it_declares_with_their_kind(audited, name):
    from auditor.checks.declared import declaration_of

    _, results = audited
    result = results[name]
    assert result.error is None, result.error
    declared = (*section_module(name).CHECKS, *RUN_CHECKS)
    for check in result.checks:
        declaration = declaration_of(check.id, declared)
        assert declaration is not None and declaration.listed, check.id
        assert check.kind == declaration.kind, check.id
        assert check.section == name, check.id


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_every_summary_key_a_section_writes_is_in_the_schema(audited, name):
    outcome, results = audited
    assert set(results[name].summary) <= SCHEMA_KEYS
    assert all(key in outcome.summary for key in results[name].summary)


@pytest.mark.parametrize("name", SECTION_NAMES)
def test_a_section_s_view_builds_and_its_result_is_frozen(audited, name):
    _, results = audited
    result = results[name]
    assert isinstance(result.view, dict) and result.view
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.summary = {}
    assert writable_parts(result.summary, "summary") == []
    assert writable_parts(result.data, "data") == []


IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, np.generic, range)


def writable_parts(value, path: str) -> list[str]:
    """Where in ``value`` something could still be changed: a dict, a list, a set, a writeable
    array, a dataclass whose attributes can be set, or any other object with attributes."""
    from types import MappingProxyType

    if isinstance(value, IMMUTABLE):
        return []
    if isinstance(value, np.ndarray):
        inside = [] if value.dtype != object else [
            p for i, v in enumerate(value.flat) for p in writable_parts(v, f"{path}[{i}]")]
        return ([path] if value.flags.writeable else []) + inside
    if isinstance(value, MappingProxyType):
        return [p for k, v in value.items() for p in writable_parts(v, f"{path}[{k!r}]")]
    if isinstance(value, tuple | frozenset):
        return [p for i, v in enumerate(value) for p in writable_parts(v, f"{path}[{i}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        sealed = type(value).__dataclass_params__.frozen or "_sealed_from" in vars(type(value))
        inside = [p for k, v in vars(value).items() for p in writable_parts(v, f"{path}.{k}")]
        return ([] if sealed else [f"{path} ({type(value).__name__})"]) + inside
    return [f"{path} ({type(value).__name__})"]


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
