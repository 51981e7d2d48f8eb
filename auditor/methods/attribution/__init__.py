"""Saliency methods behind one call: ``attribute(handle, x, targets, method, **options)``.

Each method lives in its own module and registers itself by name; ``describe_methods()`` lists
them with their options (``auditor methods``). ``attribute_layer`` explains a hidden layer.
"""

from auditor.methods.attribution import (  # noqa: F401  (each module registers its methods)
    gradcam,
    gradient,
    gradient_rollout,
    gradient_shap,
    gradient_x_input,
    integrated_gradients,
    lrp,
    noise_tunnel,
    occlusion,
    rise,
    rollout,
)
from auditor.methods.attribution.integrated_gradients import completeness_error
from auditor.methods.attribution.layer import attribute_layer
from auditor.methods.attribution.registry import METHODS, attribute, describe_methods, register

__all__ = ["METHODS", "attribute", "attribute_layer", "completeness_error", "describe_methods",
           "register"]
