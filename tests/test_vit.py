"""Vision transformers explained as transformers: Grad-CAM on the token grid, attention rollout
and gradient-weighted rollout, on two tiny ViTs trained in seconds with a planted patch: one in
plain Keras layers (mean-pooled tokens), and keras-hub's own ViTImageClassifier (class-token
pooled, its attention inside custom layers: Grad-CAM reads the tokens its last attention reads
inside them, during the pass).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from architectures import hub_vit_classifier, plain_vit
from conservation import assert_relevance_sums_to_the_logit

from auditor.errors import AuditorError
from auditor.inputs.models import load_model
from auditor.methods.attribution import METHODS, attribute
from auditor.methods.attribution.layer import resolve_layer
from auditor.methods.attribution.tokens import token_grid

ATTENTION_METHODS = sorted(m for m in METHODS if METHODS[m].needs_attention)
SIZE, PATCH = 32, 8


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise images; class 1 holds a bright patch on one cell of the 4 x 4 token grid, class 0
    none. Returns images, labels and the patch's cell (-1 without one)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.5, (n, SIZE, SIZE, 3)).astype(np.float32)
    y = rng.integers(0, 2, n)
    cells = np.where(y == 1, rng.integers(0, 16, n), -1)
    for image, cell in zip(x, cells, strict=True):
        if cell >= 0:
            row, column = divmod(int(cell), SIZE // PATCH)
            image[row * PATCH:(row + 1) * PATCH, column * PATCH:(column + 1) * PATCH] = 1.0
    return x, y, cells


BUILDERS = {"plain": plain_vit, "hub": hub_vit_classifier}
# (learning rate, epochs): the class-token ViT stayed at chance for 10 epochs at 3e-3 and
# learned in its fourth epoch at 1e-3 (measured); two more epochs for margin
TRAINING = {"plain": (3e-3, 6), "hub": (1e-3, 6 + 2)}
# Grad-CAM's and neuron groups' layer: the tokens the last attention reads, the graph layer
# feeding it, or (keras-hub's ViT keeps its blocks inside one encoder layer) inside it, the last
# block's first LayerNorm (pytorch-grad-cam's norm1), read during the pass
CAM_LAYERS = CONCEPT_LAYERS = {"plain": "norm1a",
                               "hub": "vit_backbone/vit_encoder/transformer_block_2/ln_1"}


@pytest.fixture(scope="module", params=list(BUILDERS))
def vit(request, tmp_path_factory):
    """A ViT (2 blocks, 16 patch tokens), trained a few seconds until it tells the two classes
    apart; returns the handle, planted test images, their patch cells and the ViT's kind."""
    import keras

    model = BUILDERS[request.param](classes=2)
    rate, epochs = TRAINING[request.param]
    model.compile(optimizer=keras.optimizers.Adam(rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y, _ = planted(1024, 0)
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    path = tmp_path_factory.mktemp("vit") / "vit.keras"
    model.save(path)
    handle = load_model(str(path), "0-1")
    test_x, test_y, cells = planted(64, 1)
    assert (handle.logits(test_x).numpy().argmax(1) == test_y).mean() > 0.9
    return handle, test_x[test_y == 1][:16], cells[test_y == 1][:16], request.param


def test_token_grid_sets_class_and_register_tokens_aside():
    assert token_grid(16, (32, 32, 3)) == (0, 4, 4)
    assert token_grid(197, (224, 224, 3)) == (1, 14, 14)
    assert token_grid(261, (224, 224, 3)) == (5, 16, 16)  # class + 4 registers
    assert token_grid(51, (40, 80, 3)) == (1, 5, 10)
    assert token_grid(2, (32, 96, 3)) is None  # no 1 x 3 grid in 2 tokens or 1


def patch_cells(maps: np.ndarray) -> np.ndarray:
    """(N, H, W, C) maps as each image's mean per cell of the 4 x 4 patch grid, (N, 16)."""
    n = len(maps)
    return maps[..., 0].reshape(n, 4, PATCH, 4, PATCH).mean(axis=(2, 4)).reshape(n, 16)


@pytest.mark.parametrize("method", ["gradcam", "gradient_rollout", "rollout", "lrp"])
def test_maps_land_on_the_planted_patch_tokens(vit, method):
    """LRP passes attention, and in keras-hub's ViT its patch embedding and encoder layers."""
    handle, x, cells, kind = vit
    assert resolve_layer(handle, None) == CAM_LAYERS[kind]
    per_cell = patch_cells(np.abs(attribute(handle, x, np.ones(len(x), int), method)))
    if method == "gradcam" and kind == "hub":
        # Grad-CAM's map on the class-token ViT is measured (it was empty at the encoder's
        # output) but points away from the patch: a channel's gradient averaged over tokens
        # says what brightening every token would do, and a patch that stands out from the
        # rest loses by that (Chefer et al. 2021 found Grad-CAM among the weakest on ViTs).
        # The rollouts and LRP do land there; the reliability card is what tells them apart.
        assert per_cell.max() > 0 and (per_cell.argmin(axis=1) == cells).mean() >= 0.8
        return
    assert (per_cell.argmax(axis=1) == cells).mean() >= 0.8, method


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_attention_methods_keep_the_registry_promises(vit, method):
    """Batched equals one at a time, empty for a class minus itself, never negative."""
    handle, x, _, _ = vit
    targets = np.array([0, 1, 1, 0, 1])
    maps = attribute(handle, x[:5], targets, method)
    assert maps.shape == x[:5].shape and maps.dtype == np.float32 and maps.min() >= 0
    single = attribute(handle, x[3:4], targets[3:4], method)
    np.testing.assert_allclose(single[0], maps[3], atol=1e-5 * (np.abs(maps).max() + 1e-12))
    empty = attribute(handle, x[:3], targets[:3], method, contrast=targets[:3])
    assert np.abs(empty).max() < 1e-6


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_a_model_without_attention_gets_one_line(digits_handle, method):
    x = np.zeros((1, *digits_handle.input_shape), np.float32)
    with pytest.raises(AuditorError, match="no attention layer") as info:
        attribute(digits_handle, x, np.array([0]), method)
    assert "\n" not in str(info.value)


def test_the_report_names_grad_cams_token_layer(vit):
    from auditor.methods.attribution.layer import method_layers

    handle, _, _, kind = vit
    assert method_layers(handle, ["gradient", "gradcam"], {}) == {
        "gradcam": {"layer": CAM_LAYERS[kind], "kind": "tokens"}}


def test_the_last_attentions_query_read_during_the_pass_is_grad_cams_default_layer(vit):
    """``PATH:query`` (the attention's first input, recorded as its call runs) and the default
    layer (the tokens the last attention reads, read in the graph or inside keras-hub's
    encoder as neuron groups read them) are the same tokens, so Grad-CAM gives the same maps."""
    from auditor.methods.attribution.tokens import attention_paths

    handle, x, _, _ = vit
    query = attention_paths(handle.logits_model)[-1][0] + ":query"
    targets = np.ones(4, int)
    np.testing.assert_allclose(attribute(handle, x[:4], targets, "gradcam", layer=query),
                               attribute(handle, x[:4], targets, "gradcam"), rtol=1e-4,
                               atol=1e-6)


def test_an_attention_whose_tokens_no_sub_layer_gives_is_read_at_its_query(tmp_path):
    """A custom block normalising with ops (no sub-layer before its attention): Grad-CAM's
    layer is the attention's query, given by keyword, recorded during the pass."""
    import keras

    from auditor.methods.attribution.tokens import last_token_layer, query_and_logits

    @keras.saving.register_keras_serializable(package="auditor_tests")
    class OpsNormBlock(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mha = keras.layers.MultiHeadAttention(2, 8, name="mha")

        def build(self, shape):
            self.mha.build(shape, shape)

        def call(self, tokens):
            mean = keras.ops.mean(tokens, axis=-1, keepdims=True)
            normed = (tokens - mean) / keras.ops.std(tokens, axis=-1, keepdims=True)
            return tokens + self.mha(query=normed, value=normed)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    tokens = keras.layers.Reshape((16, 16), name="tokens")(
        keras.layers.Conv2D(16, PATCH, strides=PATCH)(inputs))
    pooled = keras.layers.GlobalAveragePooling1D()(OpsNormBlock(name="block")(tokens))
    keras.Model(inputs, keras.layers.Dense(2)(pooled)).save(tmp_path / "m.keras")
    handle = load_model(str(tmp_path / "m.keras"), "0-1", unsafe_load=True)
    model = handle.logits_model
    assert last_token_layer(model, handle.input_shape) == "block/mha:query"
    x = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    query, logits = query_and_logits(handle, "block/mha:query")(x)
    before = keras.Model(model.input, model.get_layer("tokens").output)(x).numpy()
    normed = (before - before.mean(-1, keepdims=True)) / before.std(-1, keepdims=True)
    np.testing.assert_allclose(query.numpy(), normed, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), handle.logits(x).numpy(), atol=1e-5)
    assert attribute(handle, x, np.array([0, 1]), "gradcam").shape == x.shape


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_lrp_through_attention_conserves_relevance(tmp_path, kind):
    """Attention weights held constant (Ali et al. 2022) and layer norms' normalisers too; in
    keras-hub's ViT also through its patch embedding and encoder layers. On a bias-free ViT
    (keras-hub's class token and position table zeroed too: additive constants, as biases;
    the plain ViT's position table is a constant of its graph, so it is left out) relevance
    sums to the logit."""
    model = plain_vit(positions=False) if kind == "plain" else hub_vit_classifier()
    assert_relevance_sums_to_the_logit(model, tmp_path, size=SIZE)


def cell_masks(cells: np.ndarray) -> np.ndarray:
    """(N, H, W) masks of each image's planted patch cell."""
    masks = np.zeros((len(cells), SIZE, SIZE), bool)
    for mask, cell in zip(masks, cells, strict=True):
        row, column = divmod(int(cell), SIZE // PATCH)
        mask[row * PATCH:(row + 1) * PATCH, column * PATCH:(column + 1) * PATCH] = True
    return masks


def test_a_planted_patch_is_a_neuron_group_on_its_tokens_voting_for_its_class(vit):
    """Neuron groups on the patch tokens put on their grid (class token set aside), as the
    CNN's test in tests/test_concepts.py: fitted on the planted images and as many without the
    patch, a group sits on the patch's tokens and votes for its class."""
    from auditor.methods.concepts.layers import default_layers
    from auditor.methods.concepts.shortcut import ON_MASK, planted_group

    handle, x, cells, kind = vit
    assert [name for name, _ in default_layers(handle.logits_model)] == [CONCEPT_LAYERS[kind]]
    others, labels, _ = planted(64, 3)
    found = planted_group(handle, x, cell_masks(cells), 1, unmarked=others[labels == 0][:16])
    # keras-hub's ViT: read inside its encoder, as the plain ViT's ``norm1a``. Measured there:
    # the group nearest the patch sat on it at 9.3 to 9.7 times its share of the image and
    # voted for class 1 (+0.27), for 4, 6 and 8 groups. At its patch embedding (the one layer
    # of its graph before the encoder, where groups were read before) it sat at 2.6 times and
    # voted for class 0; at the first block's output (the residual stream, before the last
    # block's LayerNorm) at 9.9 times but with a first-order vote of -0.01 for class 1.
    assert found.layer == CONCEPT_LAYERS[kind]
    assert found.found and found.mass_ratio >= ON_MASK and found.votes_for == 1, found


@pytest.mark.slow  # 115 s under load: Swin's build, a few seconds' training, three traces
def test_grad_cam_and_lrp_on_swin_land_on_the_planted_patch(tmp_path):
    """keras-hub's Swin (windowed attention in its own layers, patch merging between stages)
    trained on the planted patch: Grad-CAM on the grid of tokens its last stage reads (its
    first stage's output, named as tokens) and LRP through its blocks land on the patch, and a
    neuron group on that grid sits on the patch and votes for its class (measured: 10 times the
    patch's share of the image; the traced shape there lost its sizes, the layer's own is
    used)."""
    import keras
    from architectures import hub_classifier

    from auditor.methods.attribution.layer import method_layers

    model = hub_classifier("SwinTransformer", classes=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x, y, _ = planted(1024, 0)
    model.fit(x * 255, y, batch_size=64, epochs=3, verbose=0)  # learned in its second (measured)
    model.save(tmp_path / "swin.keras")
    handle = load_model(str(tmp_path / "swin.keras"))
    assert method_layers(handle, ["gradcam"], {}) == {
        "gradcam": {"layer": "swin_transformer_backbone/stage_0", "kind": "tokens"}}
    test_x, test_y, cells = planted(64, 1)
    marked, cells = test_x[test_y == 1][:16], cells[test_y == 1][:16]
    for method in ("gradcam", "lrp"):
        per_cell = patch_cells(np.abs(attribute(handle, marked, np.ones(len(marked), int),
                                                method)))
        assert (per_cell.argmax(axis=1) == cells).mean() >= 0.8, method
    from auditor.methods.concepts.shortcut import planted_group

    others = test_x[test_y == 0][:16]  # neuron groups at the same grid of tokens
    found = planted_group(handle, marked, cell_masks(cells), 1, unmarked=others)
    assert found.layer == "swin_transformer_backbone/stage_0" and found.found, found


def featureviz_on(tmp_path, model, layers: list[str]) -> dict:
    """The featureviz section alone at its smallest settings on ``model``: its summary part."""
    from auditor.configure import make_config
    from auditor.pipeline import run_audit

    tmp_path.mkdir(exist_ok=True)
    model.save(tmp_path / "vit.keras")
    x, y, _ = planted(24, 2)
    np.savez(tmp_path / "vit.npz", x=x, y=y)
    config = make_config(model=str(tmp_path / "vit.keras"), data=f"npz:{tmp_path / 'vit.npz'}",
                         sections=["featureviz"], out=str(tmp_path / "out"), progress=False,
                         featureviz={"steps": 2, "max_channels": 1, "top_k": 1, "init": "image",
                                     "compare": False, "layers": layers})
    summary = run_audit(config).summary
    assert "featureviz.run" not in {c["id"] for c in summary["checks"]}
    return summary["featureviz"]


@pytest.mark.slow  # about 15 CPU-s: a whole featureviz section
def test_featureviz_on_keras_hubs_vit_says_why_no_channel_and_which_layer_shows_some(tmp_path):
    """keras-hub's patch convolution is inside a custom layer: the class images are made, the
    hidden channels are not, in one line naming the layer to ask for."""
    summary = featureviz_on(tmp_path, hub_vit_classifier(classes=2), [])
    note = summary["channels_note"]
    assert summary["channels"] == {} and "\n" not in note
    assert "'vit_backbone/vit_patching_and_embedding'" in note
    assert "'vit_backbone/vit_encoder'" in note


@pytest.mark.slow  # about 15 s: the same audit, asked for the layer the note names
def test_featureviz_shows_the_channels_of_the_token_layer_the_note_names(tmp_path):
    named = featureviz_on(tmp_path, hub_vit_classifier(classes=2), ["vit_backbone/vit_encoder"])
    assert named["channels_note"] is None and list(named["channels"]) == [
        "vit_backbone/vit_encoder"]


@pytest.mark.slow  # about 15 s: the plain ViT's patch convolution is in the graph
def test_featureviz_on_a_plain_vit_shows_its_patch_convolutions_channels(tmp_path):
    summary = featureviz_on(tmp_path, plain_vit(classes=2), [])
    assert summary["channels_note"] is None and list(summary["channels"]) == ["patches"]


@contextlib.contextmanager
def attention_by_patch(model):
    """The attention recording rollout used before ``edited_calls`` (until this test's commit):
    each MultiHeadAttention's private ``_compute_attention`` replaced by one that always
    computes the weights and records them. The reference the edited call must equal."""
    from auditor.methods.attribution.tokens import required_attention

    layers, recorded = required_attention(model), []

    def recorder(layer):
        original = type(layer)._compute_attention

        def compute(query, key, value, attention_mask=None, training=None,
                    return_attention_scores=False, **kwargs):
            output, scores = original(layer, query, key, value, attention_mask, training, True,
                                      **kwargs)
            recorded.append(scores)
            return output, scores

        return compute

    for layer in layers:
        layer._compute_attention = recorder(layer)
    try:
        yield recorded
    finally:
        for layer in layers:
            del layer._compute_attention


def rollouts(model, x, recording) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, rollout, gradient rollout of the first class's logit) with ``recording``."""
    import tensorflow as tf

    from auditor.methods.attribution.tokens import rollout

    images = tf.constant(x)
    with recording(model) as recorded, tf.GradientTape() as tape:
        tape.watch(images)
        logits = model(images, training=False)
        total = tf.reduce_sum(logits[:, 0])
    grads = tape.gradient(total, recorded)
    return (logits.numpy(), rollout(recorded).numpy(), rollout(recorded, grads).numpy())


@pytest.mark.parametrize("kind", ["plain", "hub", "DeiT"])
def test_rollout_reads_attention_through_the_edited_call_as_the_patch_did(kind):
    """Rollout asks each attention call for its weights (``return_attention_scores`` through
    ``layers.edited_calls``) instead of replacing a private method: on a plain-Keras ViT,
    keras-hub's ViT and DeiT (whose block passes the switch itself) the logits, rollout and
    gradient-weighted rollout are those of the patch, bit for bit, and the model's own calls
    are left as they were."""
    from architectures import hub_classifier

    from auditor.methods.attribution.tokens import recording_attention

    model = hub_classifier("DeiT", classes=2) if kind == "DeiT" else BUILDERS[kind](classes=2)
    x = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    reference = rollouts(model, x, attention_by_patch)
    edited = rollouts(model, x, recording_attention)
    for got, expected in zip(edited, reference, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert edited[2].max() > 0  # the gradient reached the recorded weights
    assert all("call" not in vars(layer) for layer in model._flatten_layers(recursive=True))


def test_an_attention_that_cannot_be_asked_for_its_weights_gets_one_line():
    """A MultiHeadAttention subclass whose ``call`` drops the ``return_attention_scores``
    switch: rollout cannot read its weights through the call, and says so in one line."""
    import keras

    from auditor.methods.attribution.tokens import required_attention

    class Silent(keras.layers.MultiHeadAttention):
        def call(self, query, value, key=None, training=None):
            return super().call(query, value, key, training=training)

    inputs = keras.Input((16, 8))
    model = keras.Model(inputs, Silent(2, 4)(inputs, inputs))
    with pytest.raises(AuditorError, match=r"cannot read .* \(Silent\) .*'lrp'") as info:
        required_attention(model)
    assert "\n" not in str(info.value)


def attention_by_private_call(layer, query, value, key=None, attention_mask=None, **_):
    """LRP's attention before ``edited_calls`` (until this test's commit): the weights from
    MultiHeadAttention's private ``_compute_attention``, held constant and mixed with the
    values by hand. The reference the public call must equal."""
    import tensorflow as tf

    key = value if key is None else key
    q, k = layer._query_dense(query), layer._key_dense(key)
    v = layer._value_dense(value)
    _, weights = layer._compute_attention(q, k, v, attention_mask, False, True)
    mixed = tf.einsum(layer._combine_equation, tf.stop_gradient(weights), v)
    return layer._output_dense(mixed)


@pytest.mark.parametrize("kind", ["plain", "hub"])
def test_lrp_holds_attention_through_the_public_call_as_the_private_one_did(tmp_path, kind,
                                                                            monkeypatch):
    """LRP holds the attention weights constant by running each MultiHeadAttention's own call
    with its queries and keys constant (``layers.edited_calls``), no longer through the
    private ``_compute_attention``: on a plain-Keras ViT (the attention a node of the graph)
    and keras-hub's ViT (inside the encoder LRP walks) its maps are those of the private call,
    bit for bit, and the model's calls are left as they were."""
    import auditor.methods.attribution.lrp.graph as graph

    model = BUILDERS[kind](classes=2)
    model.save(tmp_path / "vit.keras")
    x = np.random.default_rng(0).uniform(0, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    targets = np.array([0, 1, 0])
    edited = attribute(load_model(str(tmp_path / "vit.keras"), "0-1"), x, targets, "lrp")
    monkeypatch.setattr(graph, "attention", attention_by_private_call)
    reference = attribute(load_model(str(tmp_path / "vit.keras"), "0-1"), x, targets, "lrp")
    np.testing.assert_array_equal(edited, reference)
    assert np.abs(edited).max() > 0
    assert all("call" not in vars(layer) for layer in model._flatten_layers(recursive=True))


def test_lrp_through_a_gated_attention_holds_its_gate_and_conserves_relevance(tmp_path):
    """Keras' gated MultiHeadAttention (``use_gate=True``: its output times a sigmoid of the
    query) runs its own call, the gate held constant as every gate is (``constant.py``):
    relevance sums to the logit (the private call LRP used before left the gate out, and
    failed this)."""
    import keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    tokens = L.Reshape((16, 8))(L.Conv2D(8, 4, strides=4)(inputs))
    mixed = L.Add()([tokens, L.MultiHeadAttention(2, 4, use_gate=True)(tokens, tokens)])
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling1D()(mixed)))
    assert_relevance_sums_to_the_logit(model, tmp_path, size=16)
