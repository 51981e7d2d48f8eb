"""Saliency methods behind one call: ``attribute(handle, x, targets, method, **options)``."""

from auditor.attribution import gradient  # noqa: F401  (registers the method)
from auditor.attribution.registry import METHODS, attribute, register

__all__ = ["METHODS", "attribute", "register"]
