"""Vision transformers as token grids: which tokens are patches, and the attention weights.

A ViT's hidden layers hold (N, T, D) tokens: ``k`` leading tokens (a class token, DeiT's
distillation token, DINOv2's registers) and a grid of patch tokens in row-major order. The grid
is found from the image's shape: the smallest ``k`` for which ``T - k`` tokens tile a grid of
the image's aspect ratio. Grad-CAM reshapes the patch tokens to that grid and sets the leading
ones aside; attention rollout reads the attention weights of every ``MultiHeadAttention`` layer,
recorded while the model is traced (Keras computes them only when asked, so each call is asked
for them, through its own ``return_attention_scores``, during that trace alone).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import numpy as np

from auditor.errors import AuditorError

MAX_LEADING = 8  # class, distillation and register tokens: DINOv2 with registers has 5

SCORES = "return_attention_scores"  # MultiHeadAttention.call's own switch for its weights


def gives_scores(layer) -> bool:
    """Whether the attention layer's ``call`` has MultiHeadAttention's switch for its weights
    (a subclass overriding ``call`` may drop it)."""
    return SCORES in inspect.signature(type(layer).call).parameters


def asking_for_scores(layer, args, kwargs) -> tuple[tuple, dict, bool]:
    """A MultiHeadAttention call's arguments with its weights asked for (its own ``SCORES``
    switch on), and whether the caller had asked for them itself: what the caller is given
    back, the output alone or with the weights (rollout's recording, LRP's constant weights)."""
    bound = inspect.signature(type(layer).call).bind(layer, *args, **kwargs)
    asked = bool(bound.arguments.get(SCORES, False))
    bound.arguments[SCORES] = True
    return bound.args[1:], bound.kwargs, asked


def token_grid(tokens: int, image_shape: tuple) -> tuple[int, int, int] | None:
    """(leading tokens k, grid rows, grid columns) of ``tokens`` tokens over an image of
    ``image_shape`` (H, W, ...), or None when no grid of the image's aspect ratio fits."""
    height, width = image_shape[0], image_shape[1]
    for leading in range(0, min(MAX_LEADING, tokens - 1) + 1):
        patches = tokens - leading
        for rows in range(1, patches + 1):
            if patches % rows:
                continue
            columns = patches // rows
            if rows * width == columns * height and rows <= height:
                return leading, rows, columns
    return None


def as_grid(values: np.ndarray, image_shape: tuple, layer: str) -> np.ndarray:
    """(N, T, D) token values as (N, rows, columns, D) patch values, leading tokens set aside."""
    grid = token_grid(values.shape[1], image_shape)
    if grid is None:
        raise AuditorError(f"layer '{layer}' holds {values.shape[1]} tokens, which tile no grid of "
                           f"the image's {image_shape[0]} x {image_shape[1]} shape after up to "
                           f"{MAX_LEADING} class or register tokens")
    leading, rows, columns = grid
    return values[:, leading:].reshape(len(values), rows, columns, values.shape[-1])


def attention_layers(model) -> list:
    """Every MultiHeadAttention layer of the model in call order, also inside custom layers
    (keras-hub's ViT encoder blocks) and nested models."""
    import keras

    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.MultiHeadAttention)]


def own_attention(model) -> list:
    """One layer of each class of a transformer's own attention (not keras'
    MultiHeadAttention, found by name): keras-hub's MiT, Swin, MobileNetV5 and DINOv3 attend in
    theirs, which give rollout no weights (``required_attention`` says so)."""
    found = {}
    for layer in model._flatten_layers(recursive=True):
        name = type(layer).__name__
        if "attention" in name.lower() and name != "MultiHeadAttention":
            found.setdefault(name, layer)
    return [found[name] for name in sorted(found)]


# Own attention of a hierarchical transformer, whose stages merge tokens into coarser grids:
# rollout, defined over one token sequence (Abnar & Zuidema 2020), is not defined there at all.
HIERARCHICAL = {("keras_hub.src.models.mit.mit_layers", "SegFormerMultiheadAttention"),
                ("keras_hub.src.models.swin_transformer.swin_transformer_layers",
                 "WindowAttention")}


def required_attention(model) -> list:
    """The model's attention layers; AuditorError (one line) when it has none, or when one
    cannot be asked for its weights (``recording_attention``)."""
    layers = attention_layers(model)
    silent = sorted({type(layer).__name__ for layer in layers if not gives_scores(layer)})
    if silent:
        raise AuditorError(f"attention rollout cannot read the attention weights of model "
                           f"'{model.name}': its attention ({', '.join(silent)}) overrides "
                           f"MultiHeadAttention's call without its '{SCORES}' switch; 'lrp' and "
                           "'gradcam' explain it instead")
    if layers:
        return layers
    own = own_attention(model)
    if own:
        raise AuditorError(_own_attention_reason(model.name, own))
    raise AuditorError(f"model '{model.name}' has no attention layer "
                       "(keras.layers.MultiHeadAttention); attention rollout explains "
                       "vision transformers only")


def _own_attention_reason(model_name: str, own: list) -> str:
    """Why rollout does not explain a model whose attention is its own class, in one line:
    a hierarchical transformer's (MiT, Swin) is not one token sequence; any other (keras-hub's
    DINOv3, whose DINOV3Attention computes its weights inside ``ops.nn.dot_product_attention``;
    MobileNetV5's) gives no weights through its call, the one way rollout reads them. LRP is
    named where it walks through that class (``lrp/custom.py``), Grad-CAM always."""
    from auditor.methods.attribution.lrp.custom import is_walked

    names = ", ".join(type(layer).__name__ for layer in own)
    lrp = "'lrp' (through its attention, the weights held constant) and " if all(
        map(is_walked, own)) else ""
    verb = "explain" if lrp else "explains"
    if all((type(layer).__module__, type(layer).__name__) in HIERARCHICAL for layer in own):
        return (f"attention rollout is not defined for model '{model_name}': its attention "
                f"({names}) is that of a hierarchical transformer, whose stages merge tokens "
                "into coarser grids, so no token runs through every layer for the attention to "
                "be multiplied over (Abnar & Zuidema 2020 roll out one token sequence); "
                f"{lrp}'gradcam' (on its last token grid) {verb} it instead")
    return (f"attention rollout cannot read the attention weights of model '{model_name}': its "
            f"attention ({names}) is computed in its own layers, whose calls have no "
            f"'{SCORES}' switch to give them, as keras' MultiHeadAttention's has (rollout asks "
            f"each attention call for its weights); {lrp}'gradcam' {verb} it instead")


@contextlib.contextmanager
def recording_attention(model) -> Iterator[list]:
    """While open, every MultiHeadAttention call of ``model`` also appends its attention
    weights (N, heads, T, S) to the yielded list; meant to be open while a pass is traced.

    Each call is asked for its weights with its own ``return_attention_scores`` (an edit of
    the call's arguments, ``layers.edited_calls``, the project's one way to read inside a
    layer during a pass) and gives the caller what it asked for. Every transformer rollout
    explains calls keras' MultiHeadAttention itself: a plain-Keras ViT, keras-hub's ViT and
    DeiT (whose block may ask for the weights itself), DINOv2's wrapper. A subclass whose
    ``call`` has no such switch is refused in one line (``required_attention``)."""
    from auditor.inputs.layers import edited_calls

    layers = required_attention(model)
    recorded: list = []

    def ask(layer, args, kwargs):
        return asking_for_scores(layer, args, kwargs)[:2]

    def record(layer, output, args, kwargs):
        recorded.append(output[1])
        return output if asking_for_scores(layer, args, kwargs)[2] else output[0]

    with edited_calls(layers, record, arguments=ask):
        yield recorded


def patch_relevance(rows: np.ndarray, image_shape: tuple) -> np.ndarray:
    """(N, T) relevance of every token (a row of a rollout) as (N, H, W, C) maps: the leading
    tokens set aside, the patch tokens on their grid, upsampled bilinearly to the image."""
    from auditor.methods.attribution.gradcam import upsample

    grid = as_grid(rows[..., None], image_shape, "attention")[..., 0]
    return upsample(grid.astype(np.float32), (len(rows), *image_shape))


QUERY = ":query"  # a layer path ending so names the tokens an attention layer attends from


def attention_paths(model, prefix: str = "") -> list[tuple[str, object]]:
    """(path, layer) of every MultiHeadAttention layer in call order, with the path through
    nested models and custom layers (keras-hub's ``vit_encoder/transformer_block_2/mha``)."""
    import keras

    found = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.layers.MultiHeadAttention):
            found.append((path, layer))
        else:
            found.extend(attention_paths(layer, f"{path}/"))
    return found


def last_token_layer(model, image_shape: tuple) -> str | None:
    """Grad-CAM's layer in a vision transformer: the tokens the last attention layer attends
    from (the last block's normalised tokens, as pytorch-grad-cam takes ``blocks[-1].norm1``:
    after the last attention, a class-token head sends no gradient to the patch tokens). In the
    graph that is the layer feeding the attention; an attention inside a custom layer
    (keras-hub's ViT and DeiT encoders) is read where neuron groups read it, at the sub-layer
    whose output it attends from (``inner_token_layer``: ``.../transformer_block_2/ln_1``),
    or, when no sub-layer gives it, by its path and ``:query`` (its input recorded during the
    pass). None in a model without attention layers."""
    from auditor.inputs.layers import is_model, output_shape, walk

    attentions = attention_paths(model)
    if not attentions:
        return None
    last, before_attention, holder = None, None, None
    for path, layer in walk(model):
        if path == attentions[-1][0]:
            before_attention = last
        elif holder is None and not is_model(layer) and attentions[-1][0].startswith(path + "/"):
            holder = (path, layer)
        shape = None if is_model(layer) else output_shape(layer)
        if (shape is not None and len(shape) == 3 and shape[1]
                and token_grid(shape[1], image_shape) is not None):
            last = path
    if before_attention:
        return before_attention
    inner = inner_token_layer(model, *holder, image_shape) if holder else None
    return inner or attentions[-1][0] + QUERY


def _holds_attention(layer) -> bool:
    """A layer that attends, or holds a layer that does (keras-hub's encoders and stages)."""
    import keras

    return any(isinstance(sub, keras.layers.MultiHeadAttention)
               or "attention" in type(sub).__name__.lower()
               for sub in layer._flatten_layers(include_self=True, recursive=True))


def tapped_token_layer(model, image_shape: tuple) -> str | None:
    """The last layer of the graph whose tokens tile the image's grid, before the layer that
    holds the last attention: the tokens that attention reads (as pytorch-grad-cam takes a
    ViT's ``blocks[-1].norm1``, a Swin's last stage's input). After the last attention a
    class-token head sends no gradient to the patch tokens, and a mean-pooled head (Swin's,
    whose last stage attends over the whole grid) has mixed them: measured on a Swin trained on
    a planted patch, Grad-CAM at the last stage's input found the patch on 16 of 16 images, at
    the last stage's normalised output on none. keras-hub's ViT keeps its blocks inside one
    encoder layer: there it is the patch embedding. Swin's blocks put their windows back (window
    reverse, the cyclic shift rolled back, Liu et al. 2021) and its patch merging keeps the
    row-major order, so a stage's output is its grid of patches. None when there is none.

    Where one layer of the graph holds every attention (keras-hub's ViT and DeiT encoders),
    the tokens before it have passed no attention at all (measured: neuron groups at keras-hub
    ViT's patch embedding did not find a planted patch), so the path goes inside it, to the
    tokens its last attention reads (``inner_token_layer``)."""
    from auditor.inputs.layers import is_model, output_shape, walk

    holders = [(path, layer) for path, layer in walk(model)
               if not is_model(layer) and _holds_attention(layer)]
    last = None
    for path, layer in walk(model):
        if holders and path == holders[-1][0]:
            inner = (inner_token_layer(model, *holders[0], image_shape)
                     if len(holders) == 1 else None)
            return inner or last
        shape = None if is_model(layer) else output_shape(layer)
        if (shape is not None and len(shape) == 3 and shape[1]
                and token_grid(shape[1], image_shape) is not None):
            last = path
    return last


def inner_token_layer(model, path: str, holder, image_shape: tuple) -> str | None:
    """``PATH/BLOCK/SUB``: inside ``holder`` (the one layer of the graph that holds every
    attention), in its last attending block, the sub-layer made last before the block's
    attention whose output is a grid of tokens: the tokens that attention reads (keras-hub's
    ViT: ``vit_encoder/transformer_block_2/ln_1``, as ``norm1a`` in a plain-Keras ViT and
    pytorch-grad-cam's ``blocks[-1].norm1``). Layers are made in the order they are called
    in keras-hub's blocks; None when no such sub-layer is found."""
    from auditor.inputs.layers import find_layer, output_shape, sub_layers

    attending = [sub for sub in sub_layers(holder) if _holds_attention(sub)]
    if not attending:
        return None
    block = attending[-1]
    inside = sub_layers(block)
    before = next((inside[:i] for i, sub in enumerate(inside) if _holds_attention(sub)), [])
    for sub in reversed(before):
        candidate = f"{path}/{block.name}/{sub.name}"
        shape = output_shape(find_layer(model, candidate))
        if (shape is not None and len(shape) == 3 and shape[1]
                and token_grid(shape[1], image_shape) is not None):
            return candidate
    return None


def query_and_logits(handle, name: str):
    """A callable images -> (the query tokens of the attention layer ``name`` (``PATH:query``),
    logits), one differentiable pass: the layer's ``call`` edited while the pass runs
    (``layers.edited_calls``, as a layer inside a custom layer is read) records its first
    input, positional or ``query=`` (meant to be traced once inside a ``tf.function``)."""
    from auditor.inputs.layers import edited_calls

    path = name.removesuffix(QUERY)
    found = dict(attention_paths(handle.logits_model))
    if path not in found:
        raise AuditorError(f"model '{handle.logits_model.name}' has no attention layer '{path}'; "
                           f"its attention layers are: {', '.join(found) or 'none'}")

    def forward(images):
        recorded = []

        def record(layer, y, args, kwargs):
            recorded.append(args[0] if args else kwargs["query"])
            return y

        with edited_calls([found[path]], record):
            logits = handle.logits(images)
        return recorded[-1], logits

    return forward


def rollout(attentions, grads=None):
    """(N, T, T) rollout over layers. Without ``grads``: Abnar & Zuidema (2020), each layer's
    head-averaged attention mixed half and half with the identity (the residual), multiplied
    from the first layer up. With ``grads`` (d score / d attention): Chefer et al. (2021),
    each layer's head average of the positive part of gradient x attention added on,
    ``R <- R + A R`` from the identity; the identity is taken off again, so a score with no
    gradient (a class minus itself) gives an empty map."""
    import tensorflow as tf

    tokens = tf.shape(attentions[0])[-1]
    eye = tf.eye(tokens, batch_shape=tf.shape(attentions[0])[:1])
    result = eye
    for index, attention in enumerate(attentions):
        if grads is None:
            mixed = 0.5 * tf.reduce_mean(attention, axis=1) + 0.5 * eye
            result = tf.matmul(mixed, result)
        else:
            weighted = tf.reduce_mean(tf.nn.relu(grads[index] * attention), axis=1)
            result = result + tf.matmul(weighted, result)
    return result if grads is None else result - eye


def _token_rows(handle, gradients: bool, score: str):
    """The compiled pass: per image, the rollout's relevance of every token (N, T). Attention
    is recorded while the pass traces, so a retrace records it again."""
    import tensorflow as tf

    from auditor.methods.attribution.registry import pick_scores

    model = handle.logits_model

    def rows(images, target, other):
        with recording_attention(model) as recorded, tf.GradientTape() as tape:
            tape.watch(images)  # the weights are arguments (inputs/traces.py), not watched
            total = tf.reduce_sum(pick_scores(handle.logits(images), target, other, score))
        grads = tape.gradient(total, recorded) if gradients else None
        result = rollout(recorded, grads)
        grid = token_grid(int(recorded[0].shape[-1]), handle.input_shape)
        # with a class token its row says what it gathered; else every token's row, averaged
        return result[:, 0, :] if grid and grid[0] else tf.reduce_mean(result, axis=1)

    return rows


def token_relevance(handle, x, targets, contrast, score: str, gradients: bool) -> np.ndarray:
    """Rollout maps (N, H, W, C) of a chunk: attention rollout, or with ``gradients`` the
    gradient-weighted rollout of the target's score (minus the contrast's)."""
    from auditor.inputs.traces import compiled
    from auditor.methods.attribution.registry import signature

    required_attention(handle.logits_model)
    # named by the method's compiled pass (inputs/traces.py ``pass_name``)
    fn = compiled(handle, ("gradient_rollout" if gradients else "rollout", score),
                  lambda origin: _token_rows(origin, gradients, score), signature(handle),
                  autograph=False)
    rows = fn(x, targets, contrast).numpy()
    if not gradients:  # the same map for every class: a class minus another explains nothing
        rows = np.where((np.asarray(contrast) >= 0)[:, None], 0.0, rows)
    return patch_relevance(rows, handle.input_shape)
