"""Is a group real? Two tests of a group beyond its picture.

Removal (after the ablations of Olah et al. 2018 and the concept deletion of CRAFT, Fel et al.
2023): the group's part of each activation, W_pk d_k, is subtracted at the layer and the rest
of the network run on; the class score must fall more than when a random direction of the same
norm is subtracted with the same weights. The random directions are the group's own direction
with its channels shuffled: same norm, same values, no meaning. Each direction's mean drop over
the images is one draw; the random directions' draws give a 95% prediction interval for the
mean drop of a direction that means nothing (t distribution, R - 1 degrees of freedom), and a
group whose drop is not above it is marked. A meaningless direction lands above it with
probability ERROR_RATE / 2 (the test in tests/test_concepts.py measures it). Comparing the
images' drops one by one would not do: the images share the direction, so their spread says
nothing of how much one random direction differs from another (measured: half of the shuffled
directions passed such a test on the demo CNN).

Randomisation (Adebayo et al. 2018, applied to groups): the same factorisation on a copy of the
model whose every weighted layer is re-drawn. A group whose map is matched by a group of the
random model (rank correlation over the same images' positions at or above the attribution
card's failing bound) shows the input's structure, not what the model learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.inputs.layers import (
    edited_calls,
    is_graph_model,
    is_inner,
    layer_chain,
    output_shape,
)

ERROR_RATE = 0.05  # two-sided 95% interval; a null direction is called real at most 2.5%
RANDOM_DIRECTIONS = 8
# The attribution card's failing bound on rank correlation after full randomisation (Adebayo
# et al. 2018, auditor/methods/attribution/reliability.py), applied to a group's map.
SURVIVES_ABOVE = 0.7


def offset_run(model, chain: list):
    """``f(x, delta, training)``: ``model`` with ``delta`` subtracted from the output of the
    layer at the end of ``chain`` (a layer_chain path), the rest of the network run on; a
    layer inside a custom layer (keras-hub's ViT blocks) by its ``call`` edited for the pass."""
    import keras

    if is_inner(chain):
        def run_inner(x, delta, training=False):
            with edited_calls([chain[-1]], lambda layer, y, *_: y - delta):
                return model(x, training=training)
        return run_inner
    head, rest = chain[0], chain[1:]
    inner = offset_run(head, rest) if rest else None

    def edited(layer, args, kwargs, delta):
        if layer is not head:
            return layer(*args, **kwargs)
        if inner is not None:
            return inner(args[0], delta, kwargs.get("training", False))
        return layer(*args, **kwargs) - delta

    if isinstance(model, keras.Sequential):
        def run(x, delta, training=False):
            h = x
            for layer in model.layers:
                h = edited(layer, (h,), {"training": training}, delta)
            return h
        return run
    if not is_graph_model(model):
        raise ValueError(f"'{model.name}' is a subclassed model; its layers cannot be edited")

    def run_graph(x, delta, training=False):
        # The functional model's own graph runner (what Model.call uses), with the one
        # layer's call edited: no clone, so the edit follows the model's weights.
        def operation(op):
            def call(*args, **kwargs):
                if "training" in getattr(op, "_call_context_args", ()):
                    kwargs["training"] = training
                return edited(op, args, kwargs, delta)
            return call

        outputs = model._run_through_graph(model._standardize_inputs(x), operation_fn=operation)
        return outputs[0] if isinstance(outputs, (list, tuple)) else outputs

    return run_graph


def offset_logits(handle, layer: str):
    """Compiled (images, delta) -> logits, ``delta`` (n, h, w, C) subtracted at ``layer``."""
    import tensorflow as tf

    from auditor.methods.concepts.groups import images_spec

    key = ("concepts.offset", layer)
    if key not in handle.compiled:
        model = handle.logits_model
        chain = layer_chain(model, layer)
        run, shape = offset_run(model, chain), output_shape(chain[-1])
        delta = tf.TensorSpec(None if shape is None else [None, *shape[1:]], tf.float32)

        # no autograph: straight-line code (see featureviz/render.py)
        @tf.function(autograph=False, input_signature=[images_spec(handle), delta])
        def offset(images, delta):
            out = run(handle.transform.to_model(images), delta, training=False)
            if handle.output == "log-probabilities":
                out = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
            return out

        handle.compiled[key] = offset
    return handle.compiled[key]


@dataclass
class Removal:
    """One group's removal test on the images of one class."""

    group: int
    target: int
    images: int
    drop: float  # mean fall of the class logit when the group is removed
    random_drop: float  # ... when a shuffled direction of the same norm is removed (mean)
    low: float  # 95% prediction interval of a meaningless direction's mean drop
    high: float

    @property
    def real(self) -> bool | None:
        return None if not self.images or not np.isfinite(self.high) else self.drop > self.high


def removal_tests(handle, layer: str, directions: np.ndarray, images: np.ndarray,
                  weights: np.ndarray, targets: list[tuple[int, np.ndarray]], seed: int = 0,
                  random: int = RANDOM_DIRECTIONS) -> list[Removal]:
    """For group k, ``targets[k]`` is (its class, the rows of ``images`` and ``weights``, the
    groups' (n, h, w, K) weights at ``layer``, to test it on): the group's removal against
    ``random`` shuffles of its direction (K, C), with the same weights."""
    from auditor.methods.concepts.groups import as_tokens
    from auditor.predict.batched import chunked, rows_per_pass

    rng = np.random.default_rng(seed)
    fn = offset_logits(handle, layer)
    shape = output_shape(layer_chain(handle.logits_model, layer)[-1])
    rows = rows_per_pass(handle, backward=False)
    out = []
    for group, (target, picked) in enumerate(targets):
        x, w = images[picked], weights[picked][..., group:group + 1]
        shuffles = [directions[group][rng.permutation(directions.shape[1])]
                    for _ in range(random)]
        candidates = [np.zeros_like(directions[group]), directions[group], *shuffles]
        deltas = np.concatenate([w * d for d in candidates]).astype(np.float32)
        if shape is not None and len(shape) == 3:  # a transformer's tokens
            deltas = as_tokens(deltas, shape[1])
        logits = chunked(handle, fn, np.tile(x, (len(candidates), 1, 1, 1)), deltas, rows=rows)
        scores = logits[:, target].reshape(len(candidates), len(x))
        drops = (scores[0] - scores[1:]).mean(axis=1)  # per direction, over the images
        out.append(_removal(group, target, len(x), float(drops[0]), drops[1:]))
    return out


def _removal(group: int, target: int, images: int, drop: float,
             random_drops: np.ndarray) -> Removal:
    from scipy import stats

    r = len(random_drops)
    if r < 2 or not images:
        return Removal(group, target, images, drop, float(np.mean(random_drops)) if r else 0.0,
                       float("nan"), float("nan"))
    centre = float(random_drops.mean())
    half = float(stats.t.ppf(1 - ERROR_RATE / 2, r - 1) * random_drops.std(ddof=1)
                 * np.sqrt(1 + 1 / r))
    return Removal(group, target, images, drop, centre, centre - half, centre + half)


def randomised_activations(handle, layers: list[str], images: np.ndarray,
                           seed: int = 0) -> dict[str, np.ndarray]:
    """{layer: (n, h, w, C)} the activations of ``images`` at every layer of ``layers`` on one
    fully randomised copy of the model (every weighted layer re-drawn from its initialiser,
    seeded), in one pass: the pass of every layer's activations and gradients that the model's
    groups were fitted with (``activations_and_gradients``), which the copy, the model's twin,
    calls with its own weights (inputs/traces.py): one copy and no trace for all the layers.
    Its gradients (a backward pass of a few images) are the price of not tracing a forward
    pass of its own, which on a large model costs seconds to tens of seconds."""
    from auditor.methods.attribution.sanity import (
        randomisable_copy,
        reinitialise,
        weighted_layers,
    )
    from auditor.methods.concepts.groups import activations_and_gradients

    copy = randomisable_copy(handle)
    for index, (_, layer) in enumerate(weighted_layers(copy.logits_model)):
        reinitialise(layer, seed + index)
    found = activations_and_gradients(copy, layers, images, np.zeros(len(images), np.int32))
    return {layer: acts for layer, (acts, _) in found.items()}


def randomisation_survival(factors, random_acts: np.ndarray, weights: np.ndarray,
                           seed: int = 0) -> np.ndarray:
    """(K,) for each group, the best rank correlation of its map over some images (weights
    (n, h, w, K)) with any group fitted the same way on the same images' activations at its
    layer on a fully randomised copy of the model (``random_acts``,
    ``randomised_activations``)."""
    from auditor.methods.concepts.groups import fit_factors

    random = fit_factors(factors.layer, random_acts, len(factors.components), seed,
                         factors.signed)
    theirs = random.coefficients(random_acts).reshape(-1, len(factors.components))
    ours = weights.reshape(-1, weights.shape[-1])
    return np.array([max(_spearman(ours[:, k], theirs[:, j]) for j in range(theirs.shape[1]))
                     for k in range(ours.shape[1])])


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
