"""Layer-wise Relevance Propagation (Bach et al. 2015) for Keras 3 models.

The score of the target class (minus the contrast class) is redistributed layer by layer onto
the pixels, each layer by a rule (``rules.py``) applied through the gradient trick, in one
modified forward and one backward pass per batch (``graph.py`` walks the model; ``canonize.py``
folds BatchNormalization). Relevance is computed for the model-space input and, since the input
transform and element-wise layers pass relevance on unchanged, shown per display pixel.

    lrp_epsilon     LRP-epsilon everywhere (epsilon = 0 is LRP-0 = gradient x input on ReLU nets)
    lrp_gamma       LRP-gamma everywhere
    lrp_alpha_beta  LRP-alpha-beta everywhere (alpha 1, beta 0: LRP-alpha1beta0 / z+)
    lrp             the recommended composite (Montavon et al. 2019; Zennit's EpsilonGammaBox):
                    epsilon for dense layers, gamma for convolutions, z-box at the first layer
"""

from __future__ import annotations

import numpy as np

from auditor.errors import AuditorError
from auditor.methods.attribution.lrp.graph import Walk
from auditor.methods.attribution.lrp.rules import AlphaBeta, Composite, Epsilon, Gamma
from auditor.methods.attribution.registry import pick_scores, register, signature

# A trace of the composite's relevance pass against one of the input gradient (the unit the
# compute plan measures on the model), the first call less a later one on 2 images, each on a
# fresh handle: 1.49 on ResNet50, 2.61 on MobileNetV2, 0.69 on EfficientNetB0 at 48 px under a
# load of 5.5 to 7 (bench/trace_ratio.py, 6 December 2026; the gradient's own trace varied 2
# to 3 times between its two timings there); the median. The one-rule passes measured 0.80,
# 0.92 and 0.87 on the same models: they count one trace, as the input gradient's.
COMPOSITE_TRACE = 1.5
INPUT_RULES = ("zbox", "rule")
INPUT_RULE_HELP = "first layer: 'zbox' (inputs bounded by the image range) or 'rule' (its own)"
STABILISERS = ("relative", "absolute")
STABILISER_HELP = ("'relative': each stabiliser times the RMS of the layer's pre-activations, "
                   "per image (maps independent of the logits' scale); 'absolute': as in Zennit")


def relevance(handle, x, targets, contrast, score: str, composite: Composite,
              key: tuple) -> np.ndarray:
    """LRP maps of a batch under ``composite``, compiled once per model and composite (for
    the model and its working copy together: inputs/traces.py)."""
    from auditor.inputs.traces import compiled

    if score != "logit":
        raise AuditorError(f"LRP redistributes the logit; it cannot explain score '{score}' "
                           "(use score = 'logit')")
    if handle.output == "log-probabilities":
        raise AuditorError("LRP needs logits; this model ends in log-probabilities")
    fn = compiled(handle, key, lambda origin: _relevance_fn(origin, composite),
                  signature(handle), autograph=False)
    return fn(x, targets, contrast).numpy()


def _relevance_fn(handle, composite: Composite):
    import tensorflow as tf

    transform = handle.transform
    shift = handle.display_shift  # a shifted copy's images move, and their bounds with them
    bounds = transform.to_model(tf.stack([tf.zeros(handle.input_shape) + shift,
                                          tf.ones(handle.input_shape) + shift]))
    low = tf.reduce_min(bounds, axis=0, keepdims=True)
    high = tf.reduce_max(bounds, axis=0, keepdims=True)
    nonneg_input = bool((low.numpy() >= 0).all())  # e.g. pixels in [0, 1] or [0, 255]

    def maps(images, target, other):
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(images)
            x = transform.to_model(images)
            walk = Walk(composite, tape)
            walk.start(x, low, high, nonneg=nonneg_input)
            logits = walk.run(handle.logits_model, x)
            walk.check(logits)
            total = tf.reduce_sum(pick_scores(logits, target, other, "logit"))
        first = [t for f in walk.first for t in (f.a, f.low, f.high)]
        grads = tape.gradient(total, [x, *first], unconnected_gradients="zero")
        result = x * grads[0]
        for i, f in enumerate(walk.first):
            ga, gl, gh = grads[1 + 3 * i: 4 + 3 * i]
            at_layer = f.a * ga + f.low * gl + f.high * gh
            result += tape.gradient(f.shadow, x, output_gradients=at_layer)
        del tape
        return result[..., ::-1] if transform.reverse_channels else result

    return maps


def _relative(stabiliser: str) -> bool:
    if stabiliser not in STABILISERS:
        raise AuditorError(f"unknown LRP stabiliser '{stabiliser}'; use "
                           f"{' or '.join(STABILISERS)}")
    return stabiliser == "relative"


def _first(input_rule: str) -> str | None:
    if input_rule not in INPUT_RULES:
        raise AuditorError(f"unknown LRP input_rule '{input_rule}'; use "
                           f"{' or '.join(INPUT_RULES)}")
    return "zbox" if input_rule == "zbox" else None


def _rule_option(name, value, low):
    if not value >= low:
        raise AuditorError(f"LRP needs {name} >= {low}, got {value}")


def _one_rule(handle, x, targets, contrast, score, rule, input_rule: str, stabiliser: str,
              key: tuple):
    """Relevance with ``rule`` at every layer (the input rule at the first): one compiled
    function per rule and settings, cached under ``key``, named by the method's compiled pass
    ('lrp_epsilon': inputs/traces.py ``pass_name``, what the plan may run eagerly)."""
    composite = Composite(rule, rule, _first(input_rule), _relative(stabiliser))
    return relevance(handle, x, targets, contrast, score, composite,
                     (f"lrp_{key[0]}", *key, input_rule, stabiliser))


@register("lrp_epsilon", "LRP-epsilon: relevance redistributed in proportion to each input's "
                         "contribution, epsilon absorbing weak or contradictory relevance.",
          options={"epsilon": (0.25, "stabiliser added to every pre-activation, in units of the "
                                     "layer's RMS pre-activation (0 = LRP-0)"),
                   "input_rule": ("rule", INPUT_RULE_HELP),
                   "stabiliser": ("relative", STABILISER_HELP)}, linear=True,
          compiled="lrp_epsilon")
def lrp_epsilon(handle, x, targets, contrast, score, budget, epsilon, input_rule, stabiliser):
    _rule_option("epsilon", epsilon, 0)
    return _one_rule(handle, x, targets, contrast, score, Epsilon(float(epsilon)), input_rule,
                     stabiliser, ("epsilon", epsilon))


@register("lrp_gamma", "LRP-gamma: positive contributions favoured by gamma (stable maps on "
                       "convolutional layers).",
          options={"gamma": (0.25, "weight added to positive parameters"),
                   "input_rule": ("rule", INPUT_RULE_HELP),
                   "stabiliser": ("relative", STABILISER_HELP)}, cost=2, linear=True,
          compiled="lrp_gamma")
def lrp_gamma(handle, x, targets, contrast, score, budget, gamma, input_rule, stabiliser):
    _rule_option("gamma", gamma, 0)
    return _one_rule(handle, x, targets, contrast, score, Gamma(float(gamma)), input_rule,
                     stabiliser, ("gamma", gamma))


@register("lrp_alpha_beta", "LRP-alpha-beta: positive and negative contributions propagated "
                            "apart (alpha 1, beta 0 keeps only the positive evidence).",
          options={"alpha": (1.0, "weight of positive contributions (alpha - beta = 1)"),
                   "beta": (0.0, "weight of negative contributions"),
                   "input_rule": ("rule", INPUT_RULE_HELP),
                   "stabiliser": ("relative", STABILISER_HELP)}, cost=3, linear=True,
          compiled="lrp_alpha_beta")
def lrp_alpha_beta(handle, x, targets, contrast, score, budget, alpha, beta, input_rule,
                   stabiliser):
    _rule_option("beta", beta, 0)
    if abs(alpha - beta - 1) > 1e-6:
        raise AuditorError(f"LRP-alpha-beta needs alpha - beta = 1, got alpha={alpha}, "
                           f"beta={beta}")
    return _one_rule(handle, x, targets, contrast, score, AlphaBeta(float(alpha), float(beta)),
                     input_rule, stabiliser, ("alpha_beta", alpha, beta))


@register("lrp", "LRP composite (Montavon et al. 2019): epsilon for dense layers, gamma for "
                 "convolutions, z-box at the first layer.",
          options={"epsilon": (1e-6, "stabiliser of the dense layers"),
                   "gamma": (0.25, "gamma of the convolutions"),
                   "input_rule": ("zbox", INPUT_RULE_HELP),
                   "stabiliser": ("relative", STABILISER_HELP)}, cost=2, linear=True,
          compiled="lrp", trace_cost=COMPOSITE_TRACE)
def lrp(handle, x, targets, contrast, score, budget, epsilon, gamma, input_rule, stabiliser):
    _rule_option("epsilon", epsilon, 0)
    _rule_option("gamma", gamma, 0)
    composite = Composite(Epsilon(float(epsilon)), Gamma(float(gamma)),
                          _first(input_rule), _relative(stabiliser))
    return relevance(handle, x, targets, contrast, score, composite,
                     ("lrp", "composite", epsilon, gamma, input_rule, stabiliser))
