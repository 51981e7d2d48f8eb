"""The audit's configuration: a TOML spec and CLI flags merged into one validated AuditConfig.

Parameters carry the same names in the spec, the CLI (with dashes) and the Python API. Section
options live in a table named after the section (``[contrastive]``); check thresholds in
``[checks.ID]``. A bad value raises a ConfigError that names the key.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from auditor.errors import ConfigError
from auditor.options import build_dataclass

FAIL_ON = ("warn", "fail")
# Outputs a run may write. summary.json is the run's record (baselines, compare, index and
# watch read it), so it is written whatever the list says; without html no figure is drawn.
FORMATS = ("html", "json", "md", "junit")
STRATEGIES = ("default", "mirrored", "multiworker")
SEED_MAX = 2**32 - 1  # numpy's and Keras's seeds are unsigned 32-bit integers


@dataclass
class AuditConfig:
    """Everything one audit run needs to know; paths are kept as the user gave them."""

    model: str | None = None
    data: str = "sklearn:digits"
    out: str | None = None
    sections: list[str] | None = None
    max_samples: int | None = None
    seed: int = 0
    baseline: str | None = None
    fail_on: str = "fail"
    progress: bool = True  # bars on a terminal
    quiet: bool = False  # no log lines either (one per section, for CI logs)
    unsafe_load: bool = False
    input_range: str = "auto"
    output: str | None = None  # the classifier's output of a multi-output model
    data_range: str = "auto"
    strict_data: bool = False  # an unreadable image stops the audit instead of being skipped
    class_names: list[str] | None = None
    # A multi-label model's decision threshold on each sigmoid: one number for every label, or
    # one per label (in output order); None: 0.5. Refused for a single-label model.
    threshold: float | list[float] | None = None
    batch_size: int = 64
    train_data: str | None = None
    compare_model: str | None = None
    strategy: str = "default"
    budget: str | int = "standard"  # the compute plan: quick, standard, thorough or N passes
    format: list[str] | str = field(default_factory=lambda: list(FORMATS))  # or "json,md"
    mlflow: bool = False  # log the run to MLflow (auditor/trackers/mlflow_log.py)
    mlflow_uri: str | None = None  # the tracking URI; default MLflow's own (MLFLOW_TRACKING_URI)
    tensorboard: str | None = None  # a TensorBoard log folder to write the run's summaries to
    tracker_step: int | None = None  # the step trackers log at (epoch, checkpoint); default 0
    section_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # as given
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every section's Options, typed once here (its spec table over its defaults): the plan
    # lowers some settings of a copy, and the sections run with that (Context.options).
    options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec, as summary.json records it (the tables as given)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name != "options"}


@dataclass(frozen=True)
class Registry:
    """What a config is validated against, passed in by its caller (``auditor.sections
    .registry()``), so that the config knows no section: each section's Options class, in
    report order, and every check a run can emit (``checks.declared.Declared``)."""

    options: dict[str, type]
    checks: tuple


def read_spec(path: str | Path) -> dict[str, Any]:
    """Parse a TOML spec file; relative paths inside it are resolved against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"spec file '{path}' does not exist; pass the path of a .toml audit spec")
    try:
        spec = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"spec file '{path}' is not valid TOML: {exc}") from None
    for key in ("model", "compare_model", "baseline", "out", "data", "train_data"):
        value = spec.get(key)
        if isinstance(value, str):
            spec[key] = _resolve_source(value, path.parent)
    return spec


def _resolve_source(source: str, base: Path) -> str:
    """A path (or ``npz:PATH``) relative to the spec's folder; schemes and 'demo' stay as given."""
    scheme, sep, rest = source.partition(":")
    if scheme == "npz" and rest and not Path(rest).is_absolute():
        return f"npz:{(base / rest).resolve()}"
    if not sep and source != "demo" and not Path(source).is_absolute():
        return str((base / source).resolve())
    return source


def flatten_checks(checks: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted check IDs from nested TOML tables: ``[checks.robustness.accuracy]`` parses as
    ``{"robustness": {"accuracy": {...}}}`` and means the check ``robustness.accuracy``."""
    flat: dict[str, dict[str, Any]] = {}
    for key, value in checks.items():
        bounds = {k: v for k, v in value.items() if not isinstance(v, dict)}
        if bounds:
            flat[prefix + key] = bounds
        flat.update(flatten_checks({k: v for k, v in value.items() if isinstance(v, dict)},
                                   f"{prefix}{key}."))
    return flat


def make_config(spec: dict[str, Any] | None, registry: Registry, **flags: Any) -> AuditConfig:
    """Merge a parsed spec and CLI flags (flags win; None means 'not given'), validate every
    key against ``registry`` and type each section's options once."""
    known = tuple(registry.options)  # the sections, in report order
    merged = dict(spec or {})
    merged.update({k: v for k, v in flags.items() if v is not None})
    top_fields = {f.name for f in dataclasses.fields(AuditConfig)} - {"section_options", "checks",
                                                                 "options"}
    section_tables = {}
    for name in known:
        if name in merged:
            table = merged.pop(name)
            if not isinstance(table, dict):
                raise ConfigError(f"'{name}' must be a table of section options, got {table!r}")
            section_tables[name] = table
    checks = merged.pop("checks", {})
    if not isinstance(checks, dict) or not all(isinstance(v, dict) for v in checks.values()):
        raise ConfigError("'checks' must be a table of tables: [checks.accuracy] fail_below = 0.9")
    unknown = set(merged) - top_fields
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"unknown key '{key}'; expected one of: "
            f"{', '.join(sorted(top_fields | set(known) | {'checks'}))}"
        )
    config = build_dataclass(AuditConfig, merged, "")
    config.format = _formats(config.format)
    config.checks = flatten_checks(checks)
    _validate_checks(config.checks, registry.checks)
    config.options = {name: build_dataclass(cls, section_tables.get(name, {}), f"{name}.")
                      for name, cls in registry.options.items()}
    config.section_options = section_tables
    _validate(config, known)
    return config


def _validate_checks(checks: dict[str, dict[str, Any]], declared: tuple) -> None:
    """Every ``[checks.ID]`` names a declared check, with known bounds and an optional
    ``gate``: a typo would otherwise be ignored, and the bound the user meant never applied."""
    from auditor.checks.declared import declaration_of, validate_table

    for check_id, table in checks.items():
        declaration = declaration_of(check_id, declared)
        if declaration is None:
            raise ConfigError(f"unknown check '[checks.{check_id}]'; checks are: "
                              f"{', '.join(d.id for d in declared)} (* is a method, shortcut "
                              "or column name)")
        validate_table(check_id, table, declaration)


def _formats(value: list[str] | str) -> list[str]:
    """The output formats as a list, from a list or a comma-separated string."""
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"'format' must be a comma list of {', '.join(FORMATS)}, got "
                          f"{unknown[0] if unknown else value!r}")
    return list(dict.fromkeys(names))


def _validate(config: AuditConfig, known_sections: tuple[str, ...]) -> None:
    if config.sections is not None:
        if not config.sections:
            raise ConfigError(f"no section given (--sections is empty); name at least one of: "
                              f"{', '.join(known_sections)}, or leave it out to run them all")
        for name in config.sections:
            if name not in known_sections:
                raise ConfigError(
                    f"unknown section '{name}'; choose from: {', '.join(known_sections)}"
                )
    if config.fail_on not in FAIL_ON:
        raise ConfigError(f"'fail_on' must be 'warn' or 'fail', got {config.fail_on!r}")
    if config.strategy not in STRATEGIES:
        raise ConfigError(
            f"'strategy' must be one of {', '.join(STRATEGIES)}, got {config.strategy!r}"
        )
    from auditor.inputs.models import INPUT_RANGES

    if config.input_range != "auto" and config.input_range not in INPUT_RANGES:
        raise ConfigError(f"unknown input_range '{config.input_range}'; use auto (probe the "
                          f"data) or one of: {', '.join(INPUT_RANGES)}")
    _validate_budget(config.budget)
    _validate_threshold(config.threshold)
    _validate_trackers(config)
    if config.max_samples is not None and config.max_samples < 1:
        raise ConfigError(f"'max_samples' must be at least 1, got {config.max_samples}")
    if config.batch_size < 1:
        raise ConfigError(f"'batch_size' must be at least 1, got {config.batch_size}")
    if not 0 <= config.seed <= SEED_MAX:
        raise ConfigError(f"'seed' must be from 0 to {SEED_MAX} (2**32 - 1), got {config.seed}")
    if not config.model:
        raise ConfigError("no model given; pass --model PATH (a .keras/.h5 file or SavedModel "
                          "folder) or set 'model' in the spec ('demo' for the digits demo)")


def _validate_threshold(threshold: float | list[float] | None) -> None:
    """Each threshold is a probability strictly between 0 and 1 (at 0 or 1 every label, or
    none, would be predicted); how many there are is checked against the model's outputs."""
    values = [threshold] if isinstance(threshold, (int, float)) else threshold or []
    if isinstance(threshold, list) and not threshold:
        raise ConfigError("'threshold' is an empty list; give one number (0.5) or one per label")
    for value in values:
        if not 0 < value < 1:
            raise ConfigError(f"'threshold' must be between 0 and 1 (exclusive), got {value!r}; "
                              "a label is predicted when its sigmoid is at least the threshold")


def _validate_trackers(config: AuditConfig) -> None:
    """A tracker asked for must be installed: one line naming the extra, before any work."""
    import importlib.util

    if config.mlflow_uri:
        config.mlflow = True
    if config.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("--mlflow needs MLflow, which is not installed; "
                          "pip install 'auditor[mlflow]'")


def _validate_budget(budget: str | int) -> None:
    from auditor.predict.plan import BUDGETS

    if isinstance(budget, str) and budget not in BUDGETS or isinstance(budget, int) and budget < 1:
        raise ConfigError(f"'budget' must be one of {', '.join(BUDGETS)} or a number of model "
                          f"passes (at least 1), got {budget!r}")
