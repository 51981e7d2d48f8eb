"""Gradient-weighted attention rollout (Chefer et al. 2021, "Transformer interpretability
beyond attention visualization", their generic rule for self-attention).

Each attention layer's weights are multiplied by the gradient of the score with respect to
them, rectified and averaged over heads, and accumulated as ``R <- R + A R`` from the
identity; the class token's row (or every token's row averaged) minus the identity is mapped
back to the patch grid (``tokens.py``). Unlike plain rollout it depends on the class explained.
"""

from __future__ import annotations

from auditor.methods.attribution.registry import register
from auditor.methods.attribution.tokens import token_relevance


@register("gradient_rollout", "Gradient-weighted attention rollout (vision transformers): each "
                              "layer's attention times its gradient, rectified, accumulated "
                              "over layers; class-specific.",
          signed=False, needs_attention=True,
          compiled="gradient_rollout")
def gradient_rollout(handle, x, targets, contrast, score, budget):
    return token_relevance(handle, x, targets, contrast, score, gradients=True)
