"""Public alias kept by the Python API contract (docs/design.md): ``from auditor.models import
load_model``. The code lives in ``auditor.inputs.models``."""

from auditor.inputs.models import ModelHandle, load_model

__all__ = ["ModelHandle", "load_model"]
