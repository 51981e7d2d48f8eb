"""Public alias kept by the Python API contract (docs/design.md): ``from auditor.attribution import
attribute``. The methods live in ``auditor.methods.attribution``."""

from auditor.methods.attribution import (
    METHODS,
    attribute,
    attribute_layer,
    completeness_error,
    describe_methods,
    register,
)

__all__ = ["METHODS", "attribute", "attribute_layer", "completeness_error", "describe_methods",
           "register"]
