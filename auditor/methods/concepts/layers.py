"""Which layers to factorise: chosen from the graph, or named by the user and checked.

Neuron groups need a grid of positions: the groups are found per position and shown where
they sit. By default two layers are taken, as Olah et al. (2018) compare a middle and a late
layer of GoogLeNet: the end of the middle stage (parts on a finer grid: strokes, textures) and
the last layer with a spatial map that no branch goes around (the most abstract parts the model
still locates; ``inputs.layers.trunk_layers``: a branch reads only part of them). A vision
transformer has no spatial map: its patch tokens are the grid (class and register tokens set
aside, as for Grad-CAM, ``attribution/tokens.py``), at the last layer of the graph whose patch
tokens reach the logits (``tokens.tapped_token_layer``).
"""

from __future__ import annotations

import contextlib

from auditor.errors import ConfigError, ModelError
from auditor.inputs.layers import (
    find_layer,
    is_inner,
    last_conv_layer,
    layer_chain,
    output_shape,
    stage_ends,
    walk,
)


def is_spatial(shape) -> bool:
    return shape is not None and len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1


def image_shape(model) -> tuple:
    return tuple(model.inputs[0].shape[1:])


def token_grid_of(shape, model) -> tuple | None:
    """(leading tokens, rows, columns) of a (N, T, D) output whose tokens tile the model's
    image grid, else None."""
    from auditor.methods.attribution.tokens import token_grid

    if shape is None or len(shape) != 3 or not shape[1]:
        return None
    return token_grid(shape[1], image_shape(model))


def default_layers(model) -> list[tuple[str, str]]:
    """(layer path, why it was chosen): the middle stage's end and the last spatial layer; in
    a vision transformer (MultiHeadAttention, or keras-hub's Swin with no spatial layer) its
    grid of patch tokens; ModelError (one line) for a model with neither."""
    if _has_attention(model):  # a ViT (or a hybrid): its tokens, not its patch convolution
        with contextlib.suppress(ModelError):  # tokens on no grid: its spatial layers, if any
            return [_token_layer(model)]
    try:
        last = last_conv_layer(model)
    except ModelError:
        return [_token_layer(model)]
    ends = [name for name in stage_ends(model) if name != last]
    chosen = []
    if ends:
        middle = ends[len(ends) // 2]
        size = output_shape(find_layer(model, middle))[1:3]
        chosen.append((middle, f"the end of a middle stage ({size[0]}x{size[1]} grid) of "
                               f"{len(ends) + 1} resolutions: parts on a finer grid"))
    size = output_shape(find_layer(model, last))[1:3]
    chosen.append((last, f"the last layer with a spatial map ({size[0]}x{size[1]} grid) that no "
                         "branch goes around: the most abstract parts the model still locates"))
    return chosen


def _token_layer(model) -> tuple[str, str]:
    from auditor.methods.attribution.tokens import own_attention, tapped_token_layer

    found = None
    if own_attention(model) or _has_attention(model):
        found = tapped_token_layer(model, image_shape(model))
    if found is None:
        raise ModelError(no_spatial_layer(model))
    leading, rows, columns = token_grid_of(output_shape(find_layer(model, found)), model)
    aside = f", {leading} class or register token(s) set aside" if leading else ""
    where = ("inside the layer that holds its blocks" if is_inner(layer_chain(model, found))
             else "the last such layer of its graph")
    return found, (f"a vision transformer's patch tokens on their {rows}x{columns} grid{aside}: "
                   f"the tokens its last attention reads, {where}")


def _has_attention(model) -> bool:
    from auditor.methods.attribution.tokens import attention_layers

    return bool(attention_layers(model))


def no_spatial_layer(model) -> str:
    """Why a model without a spatial layer has no neuron groups, and what applies instead: a
    SavedModel hides its layers (its .keras file does not); a transformer whose tokens tile
    no grid of the image in a layer of its graph has no positions to find groups at."""
    import keras

    from auditor.methods.attribution.tokens import attention_layers, own_attention

    why = f"model '{model.name}' has no layer with a spatial (N, H, W, C) output"
    if any(isinstance(layer, keras.layers.TFSMLayer) for _, layer in walk(model)):
        return (f"{why} that can be read: a SavedModel's layers are hidden; audit the model's "
                ".keras file for neuron groups")
    rollout = bool(attention_layers(model))
    if rollout or own_attention(model):
        return (f"{why} and no layer of its graph whose tokens tile the image's grid before its "
                "last attention: neuron groups need positions on a grid, so no "
                "'concepts.layers' setting applies to it" + (
                    "; attribution's 'rollout' and 'gradient_rollout' explain its tokens"
                    if rollout else ""))
    return (f"{why}: neuron groups are parts on a convolutional layer's grid; 'concepts.layers' "
            "names one, and this model has none")


def check_layers(model, names, option: str = "concepts.layers") -> list[tuple[str, str]]:
    """The named layers with why (named in the spec), each checked to exist and be spatial
    (or a transformer's grid of tokens); a bad name is a ConfigError listing the layers to
    choose from."""
    def on_grid(shape):
        return is_spatial(shape) or token_grid_of(shape, model) is not None

    spatial = [path for path, layer in walk(model) if on_grid(output_shape(layer))
               and not getattr(layer, "layers", None)]
    chosen = []
    for name in names:
        try:
            layer = find_layer(model, name)
        except ModelError:
            raise ConfigError(f"'{option}' names layer '{name}', which model '{model.name}' does "
                              f"not have; spatial layers: {_listed(spatial)}") from None
        shape = output_shape(layer)
        if not on_grid(shape):
            raise ConfigError(f"'{option}' names layer '{name}', whose output {shape} is not a "
                              "spatial map (N, H, W, C) nor a grid of patch tokens; spatial "
                              f"layers: {_listed(spatial)}")
        chosen.append((name, "named in the spec"))
    return chosen


def resolve_layers(model, names=None) -> list[tuple[str, str]]:
    """The named layers (checked), or the default two when none are named."""
    return check_layers(model, names) if names else default_layers(model)


def _listed(names: list[str]) -> str:
    return ", ".join(names[-12:]) + (f" ({len(names)} in all)" if len(names) > 12 else "") \
        if names else "none"
