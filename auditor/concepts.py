"""Public alias of the Python API: ``from auditor.concepts import neuron_groups``. The method
lives in ``auditor.methods.concepts``."""

from auditor.methods.concepts.neuron_groups import NeuronGroups, neuron_groups

__all__ = ["NeuronGroups", "neuron_groups"]
