"""Neuron groups: a layer's activations factorised into K non-negative directions (NMF), and
each group's attribution to a class (Olah et al., "The Building Blocks of Interpretability",
2018).

At every position p of an image the activation a_p (C channels) is approximated by
sum_k W_pk d_k, with W >= 0 (where group k sits: its map) and d_k >= 0 (what it is: its
direction). The groups are fitted once, on a sample, by scikit-learn's NMF, and applied to any
image with the fitted components held fixed.

The attribution is the paper's linear approximation: with g_p the gradient of the class score
with respect to the layer's activation at p, group k contributes sum_p W_pk (d_k . g_p), and
the whole layer sum_p a_p . g_p (gradient x activation at that layer). What the groups do not
reconstruct is the residual, sum_p (a_p - sum_k W_pk d_k) . g_p, so that the groups and the
residual add up to the whole exactly.

A vision transformer's layer holds (N, T, C) tokens: its patch tokens are put on their grid
(``on_grid``; class and register tokens set aside, as for Grad-CAM), and a removal's offset
goes back to the tokens with none on the tokens set aside (``as_tokens``). Their gradient x
activation is left out of the layer's whole (the residual is the patch tokens').

Layers whose activations can be negative (no ReLU before them) are made non-negative by a
stated transform: the positive and negative parts become separate channels, [max(a, 0),
max(-a, 0)], so a group's direction in the layer's own space is d+ - d- (Olah et al. factorise
post-ReLU layers, where this never happens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from auditor.errors import ConfigError

AS_IS = "none: the activations are non-negative"
SPLIT = "positive and negative parts as separate channels, [max(a, 0), max(-a, 0)]"
# Positions the factorisation is fitted on at most (drawn at random from the sample's images):
# scikit-learn's coordinate descent on 20,000 rows of 1,280 channels (MobileNetV2's last
# layer) takes a few seconds; more positions of the same images add little.
FIT_ROWS = 20_000
DEFAULT_GROUPS = 6  # Olah et al.'s choice
BLOCK = 64  # images per block of the apply pass: activations kept at once stay small


@dataclass
class Factors:
    """The fitted groups of one layer."""

    layer: str
    components: np.ndarray  # (K, C') in the transformed space
    signed: bool  # the positive/negative split was applied
    error: float  # relative reconstruction error ||A - WD|| / ||A|| on the fitted positions
    nmf: object = field(repr=False, default=None)  # sklearn.decomposition.NMF, fitted

    @property
    def directions(self) -> np.ndarray:
        """(K, C): each group's direction in the layer's own activation space."""
        if not self.signed:
            return self.components
        half = self.components.shape[1] // 2
        return self.components[:, :half] - self.components[:, half:]

    @property
    def explained(self) -> float:
        """Share of the activations' sum of squares the groups reconstruct (1 - error^2)."""
        return float(1.0 - self.error ** 2)

    @property
    def transform_text(self) -> str:
        return SPLIT if self.signed else AS_IS

    def coefficients(self, activations: np.ndarray) -> np.ndarray:
        """(n, h, w, K): each group's weight at each position, the components held fixed."""
        n, h, w, c = activations.shape
        rows = nonnegative(activations.reshape(-1, c), self.signed)
        weights = self.nmf.transform(rows.astype(np.float64))
        return weights.reshape(n, h, w, -1).astype(np.float32)


def nonnegative(rows: np.ndarray, signed: bool) -> np.ndarray:
    return np.concatenate([np.maximum(rows, 0), np.maximum(-rows, 0)], axis=1) if signed \
        else np.maximum(rows, 0)


def check_groups(groups: int, option: str = "groups") -> None:
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 2:
        raise ConfigError(f"'{option}' must be an integer of at least 2 (one group explains "
                          f"nothing apart), got {groups!r}")


def fit_factors(layer: str, activations: np.ndarray, groups: int, seed: int = 0,
                signed: bool | None = None, max_rows: int = FIT_ROWS) -> Factors:
    """NMF of (n, h, w, C) activations into ``groups`` groups, on at most ``max_rows``
    positions drawn with ``seed``; groups ordered by their total weight, largest first."""
    from sklearn.decomposition import NMF

    check_groups(groups)
    rows = activations.reshape(-1, activations.shape[-1])
    if signed is None:
        signed = bool((rows < 0).any())
    rng = np.random.default_rng(seed)
    if len(rows) > max_rows:
        rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
    data = nonnegative(rows, signed).astype(np.float64)
    nmf = NMF(n_components=groups, init="nndsvda", random_state=seed, max_iter=500, tol=1e-4)
    weights = nmf.fit_transform(data)
    order = np.argsort(-weights.sum(axis=0), kind="stable")
    nmf.components_ = nmf.components_[order]
    weights = weights[:, order]
    norm = float(np.linalg.norm(data)) or 1.0
    error = float(np.linalg.norm(data - weights @ nmf.components_)) / norm
    return Factors(layer, nmf.components_.astype(np.float32), signed, error, nmf)


def on_grid(values: np.ndarray, image_shape: tuple, layer: str) -> np.ndarray:
    """A layer's values as (n, h, w, C): a spatial map as it is, a transformer's (n, T, C)
    tokens as its patch tokens on their grid (``tokens.as_grid``)."""
    from auditor.methods.attribution.tokens import as_grid

    return as_grid(values, image_shape, layer) if values.ndim == 3 else values


def as_tokens(values: np.ndarray, tokens: int) -> np.ndarray:
    """(n, h, w, C) values on the patch grid as the layer's (n, ``tokens``, C), zero on the
    leading (class, register) tokens: ``on_grid`` undone, for an offset at the layer."""
    n, h, w, c = values.shape
    patches = values.reshape(n, h * w, c)
    return np.concatenate([np.zeros((n, tokens - h * w, c), values.dtype), patches], axis=1)


def images_spec(handle):
    """Any number of the model's display-space images: the signature of the compiled passes
    here, so that each is traced once, whatever the size of a block (traced on the first
    size and again, relaxed, on the next, a pass cost two traces)."""
    import tensorflow as tf

    return tf.TensorSpec([None, *handle.input_shape], tf.float32)


def flat_rows(tensors):
    """Tensors of one row per image, each flattened and joined into one row per image: what
    the one chunked path carries of several outputs (``split_rows`` undoes it)."""
    import tensorflow as tf

    return tf.concat([tf.reshape(t, [tf.shape(t)[0], -1]) for t in tensors], axis=1)


def split_rows(rows: np.ndarray, shapes: list[tuple]) -> list[np.ndarray]:
    """``flat_rows``'s output back into arrays of one row per image, of these shapes each."""
    edges = np.cumsum([int(np.prod(shape)) for shape in shapes])[:-1]
    return [part.reshape(len(rows), *shape)
            for part, shape in zip(np.split(rows, edges, axis=1), shapes, strict=True)]


def traced_shapes(handle, layers, acts) -> list[tuple]:
    """Each activation's shape per image, as traced; where the trace lost a size (keras-hub
    Swin's stages reshape with sizes read at run time), the layer's own output shape."""
    from auditor.inputs.layers import find_layer, output_shape

    shapes = []
    for layer, a in zip(layers, acts, strict=True):
        shape = a.shape[1:]
        if None in shape:
            shape = output_shape(find_layer(handle.logits_model, layer))[1:]
        shapes.append(tuple(int(d) for d in shape))
    return shapes


def layer_gradients(handle, layers: tuple[str, ...]):
    """(fn, shapes): a compiled function (images, targets) -> one row per image of every
    layer's activation and the gradient of the image's target logit with respect to it,
    flattened (``flat_rows``), in one backward pass for all the layers; and the list of the
    activations' shapes, filled when it traces. Traced once for all the layers, for the model
    and every copy that is its twin (inputs/traces.py: the randomised copy of the survival
    test, the Clever Hans copies' groups)."""
    import tensorflow as tf

    from auditor.inputs.layers import activations_and_logits
    from auditor.inputs.traces import compiled, origin_of

    key = ("concepts.gradients", tuple(layers))
    shapes = origin_of(handle).compiled.setdefault((key, "shapes"), [])

    def make(origin):
        tapped = activations_and_logits(origin, layers)

        def both(images, targets):
            # the weights are arguments (inputs/traces.py): the tape records the pass from the
            # watched images
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(images)
                acts, logits = tapped(images)
                score = tf.gather(logits, targets, batch_dims=1)
            grads = tape.gradient(score, acts)
            shapes[:] = traced_shapes(origin, layers, acts)  # static: once
            return flat_rows([t for pair in zip(acts, grads, strict=True) for t in pair])

        return both

    # straight-line code: see featureviz/render.py; traced once for the model and its twins
    fn = compiled(handle, key, make, [images_spec(handle), tf.TensorSpec([None], tf.int32)],
                  autograph=False)
    return fn, shapes


def activations_and_gradients(handle, layers: list[str], images: np.ndarray,
                              targets: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (activations, gradients)}, each (n, h, w, C), for every layer of ``layers`` in
    one pass through the one chunked path."""
    from auditor.predict.batched import chunked, rows_per_pass

    images = np.asarray(images, np.float32)
    targets = np.asarray(targets, np.int32).reshape(-1)
    fn, shapes = layer_gradients(handle, tuple(layers))
    rows = chunked(handle, fn, images, targets, rows=rows_per_pass(handle, backward=True))
    parts = [on_grid(part, handle.input_shape, layers[i // 2]) for i, part in
             enumerate(split_rows(rows, [shape for shape in shapes for _ in range(2)]))]
    return {layer: (parts[2 * i], parts[2 * i + 1]) for i, layer in enumerate(layers)}


def activations(handle, layer: str, images: np.ndarray) -> np.ndarray:
    """(n, h, w, C): the layer's activation alone, forward only, through the chunked path
    (a transformer's patch tokens on their grid)."""
    from auditor.inputs.layers import activation_model
    from auditor.inputs.traces import compiled
    from auditor.predict.batched import chunked, rows_per_pass

    fn = compiled(handle, ("concepts.activations", layer),
                  lambda origin: activation_model(origin, layer), [images_spec(handle)],
                  autograph=False)
    return on_grid(chunked(handle, fn, np.asarray(images, np.float32),
                           rows=rows_per_pass(handle, backward=False)), handle.input_shape, layer)


@dataclass
class Attribution:
    """Per image and group: weights (n, h, w, K), contributions per position (n, h, w, K),
    and the layer's whole gradient x activation (n,)."""

    weights: np.ndarray
    per_position: np.ndarray
    total: np.ndarray

    @property
    def contributions(self) -> np.ndarray:
        return self.per_position.sum(axis=(1, 2))

    @property
    def residual(self) -> np.ndarray:
        return self.total - self.contributions.sum(axis=1)


def attribute_groups(handle, factors: Factors, images: np.ndarray, targets: np.ndarray,
                     block: int = BLOCK) -> Attribution:
    """Each group's contribution to each image's target class, block by block."""
    return attribution_of({factors.layer: factors}, handle, images, targets, block)[
        factors.layer]


def attribution_of(factors: dict[str, Factors], handle, images: np.ndarray,
                   targets: np.ndarray, block: int = BLOCK) -> dict[str, Attribution]:
    """``attribute_groups`` for the groups of several layers ({layer: Factors}), each block's
    activations and gradients at every layer from one pass."""
    parts = {layer: [] for layer in factors}
    for start in range(0, len(images), block):
        both = activations_and_gradients(handle, list(factors), images[start:start + block],
                                         targets[start:start + block])
        for layer, (acts, grads) in both.items():
            parts[layer].append(split_attribution(factors[layer], acts, grads))
    return {layer: _joined(factors[layer], parts[layer]) for layer in factors}


def _joined(factors: Factors, parts: list[Attribution]) -> Attribution:
    if not parts:
        empty = np.zeros((0, 1, 1, len(factors.components)), np.float32)
        return Attribution(empty, empty, np.zeros(0, np.float32))
    return Attribution(*(np.concatenate([getattr(p, k) for p in parts])
                         for k in ("weights", "per_position", "total")))


def split_attribution(factors: Factors, acts: np.ndarray, grads: np.ndarray) -> Attribution:
    """The groups' share of gradient x activation at each position, from one block."""
    weights = factors.coefficients(acts)
    along = np.einsum("nhwc,kc->nhwk", grads.astype(np.float64),
                      factors.directions.astype(np.float64))
    per_position = (weights * along).astype(np.float32)
    total = np.einsum("nhwc,nhwc->n", acts.astype(np.float64), grads.astype(np.float64))
    return Attribution(weights, per_position, total.astype(np.float32))


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w, K) maps resized bilinearly to (n, H, W, K), for display."""
    import tensorflow as tf

    if maps.shape[1:3] == tuple(size):
        return maps.astype(np.float32)
    return tf.image.resize(maps.astype(np.float32), size, method="bilinear").numpy()


def spread(per_position: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, h, w, K) amounts spread evenly over the input pixels of each cell (nearest cell), so
    that every map's sum over pixels is its sum over positions."""
    n, h, w, k = per_position.shape
    rows = np.minimum((np.arange(size[0]) * h) // size[0], h - 1)
    cols = np.minimum((np.arange(size[1]) * w) // size[1], w - 1)
    area = np.outer(np.bincount(rows, minlength=h), np.bincount(cols, minlength=w))
    shared = per_position / np.maximum(area, 1)[None, :, :, None]
    return shared[:, rows][:, :, cols]
