"""Folders that ship with the package: inside an installed wheel they live in ``auditor/``;
in a source checkout they stand beside it at the top of the repository."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """``templates`` or ``audits``, wherever this copy of auditor keeps them."""
    installed = PACKAGE / name
    return installed if installed.is_dir() else PACKAGE.parent / name
