"""``make_config`` with the registry of this package's sections: the one callers use (the CLI,
the Python API, tests). ``auditor.config`` itself knows no section; the registry is passed in."""

from __future__ import annotations

from typing import Any

from auditor.config.spec import AuditConfig
from auditor.config.spec import make_config as _make_config


def make_config(spec: dict[str, Any] | None = None, **flags: Any) -> AuditConfig:
    """A validated AuditConfig from a parsed spec and flags (flags win; None: not given)."""
    from auditor.sections import registry

    return _make_config(spec, registry(), **flags)
