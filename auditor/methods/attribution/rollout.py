"""Attention rollout (Abnar & Zuidema 2020): how much each patch token flows into the output.

Every attention layer's weights, averaged over heads and mixed half and half with the identity
(the residual connection), are multiplied from the first layer up; the class token's row (or,
without one, every token's row averaged) is mapped back to the patch grid (``tokens.py``). It
reads attention only, so it is the same for every class: explaining one class minus another
gives an empty map. A model without attention layers gets a one-line reason.
"""

from __future__ import annotations

from auditor.methods.attribution.registry import register
from auditor.methods.attribution.tokens import token_relevance


@register("rollout", "Attention rollout (vision transformers): attention averaged over heads, "
                     "mixed with the residual and multiplied over layers; the same for every "
                     "class.", signed=False, forward_only=True, needs_attention=True,
          compiled="rollout")
def rollout(handle, x, targets, contrast, score, budget):
    return token_relevance(handle, x, targets, contrast, score, gradients=False)
