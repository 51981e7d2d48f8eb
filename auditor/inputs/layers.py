"""Find layers by name (also inside nested models) and tap their activations.

Grad-CAM, layer attribution and feature visualisation all need a hidden layer's activation of a
display-space image, often together with the logits, and often for a layer that lives inside a
nested backbone (a keras.applications model inside a Sequential). This module hides how.

    find_layer(model, "out_relu")           # a layer, searched depth-first through nested models
    last_conv_layer(model)                  # the last layer with a spatial output, on the trunk
    last_rectified_layer(model)             # the same, a rectifier's output (Grad-CAM++), or None
    stage_ends(model)                       # the last layer at each spatial resolution
    trunk_layers(model)                     # ids of the layers no branch goes around, and joins
    conv_layers(model)                      # (name, channels) of every convolutional layer
    activation_model(handle, name)(x)       # display-space images -> that layer's activation
    activation_and_logits(handle, name)(x)  # -> (activation, logits), one differentiable pass
    activations_and_logits(handle, names)(x)  # -> ([activation per name], logits), one pass
    final_layer_input(handle)(x)            # -> the input of the final layer (or None)

Names may be plain (``"conv3"``, the first match depth-first) or a path through nested models
(``"mobilenetv2_1.00_224/out_relu"``), going on inside a custom layer to one of its own layers
(``"vit_backbone/vit_encoder/transformer_block_2/ln_1"``: keras-hub's ViT keeps its blocks in
one encoder layer, which no graph reaches; such a layer is read, or offset, by its ``call``
edited while the pass runs). The taps share the model's weights, so they follow any
change to them (the sanity check relies on that). Tapping a layer inside a nested model of a
*functional* outer model rebuilds the outer graph with the same layers; that adds call nodes to
them, so read shapes with ``output_shape(layer)`` rather than ``layer.output``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from auditor.errors import ModelError

CONV_LAYER_TYPES = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D",
                    "DepthwiseGroupedConv2D",  # inputs/depthwise.py: a Conv2D run depthwise
                    "Conv2DTranspose")


def is_model(layer) -> bool:
    """Whether a layer is itself a model with sub-layers (a nested backbone)."""
    return bool(getattr(layer, "layers", None)) and hasattr(layer, "inputs")


def walk(model, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Every layer in forward order as (path, layer), descending into nested models.

    A nested model is listed itself, then its layers (``"outer/inner"`` paths).
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        yield path, layer
        if is_model(layer):
            yield from walk(layer, prefix=f"{path}/")


def layer_chain(model, name: str) -> list:
    """The layers from the top model down to the one named ``name``: [outer, ..., target].
    A path may go on inside a custom layer to one of its own sub-layers (``inner_chain``)."""
    for path, _ in walk(model):
        if path == name or path.rsplit("/", 1)[-1] == name:
            chain, current = [], model
            for part in path.split("/"):
                current = next(la for la in current.layers if la.name == part)
                chain.append(current)
            return chain
    chain = inner_chain(model, name)
    if chain is not None:
        return chain
    names = [path for path, _ in walk(model)]
    shown = ", ".join(names[-12:])
    raise ModelError(f"model '{model.name}' has no layer named '{name}'; its last layers are: "
                     f"{shown} ({len(names)} in all, nested ones as 'outer/inner')")


def sub_layers(layer) -> list:
    """A layer's own sub-layers, one level down (a model's layers; a custom layer's, in the
    order it made them: keras-hub's ViT encoder, its blocks then its norm)."""
    if is_model(layer):
        return list(layer.layers)
    return list(layer._flatten_layers(include_self=False, recursive=False))


def inner_chain(model, path: str) -> list | None:
    """The chain of a full ``path`` that goes inside a custom layer (keras-hub's ViT keeps
    its blocks in one encoder layer: ``vit_backbone/vit_encoder/transformer_block_2/ln_1``),
    or None. The first custom layer on the way runs once on one image of zeros, so that the
    layers inside it have an output shape to read (``output_shape``)."""
    chain, current = [], model
    for part in path.split("/"):
        found = [layer for layer in sub_layers(current) if layer.name == part]
        if not found:
            return None
        if chain and not is_model(current) and all(map(is_model, chain[:-1])):
            _note_shapes(current)
        current = found[0]
        chain.append(current)
    return chain if is_inner(chain) else None


INNER_SHAPE = "_auditor_output_shape"  # a layer inside a custom layer: its output's shape
NOTED = "_auditor_shapes_noted"  # a custom layer whose layers' shapes were noted


def _note_shapes(layer) -> None:
    """``layer`` run once on one image of zeros shaped as its first call's inputs, every layer
    inside it noting the shape of its output (one tensor) on itself, ``INNER_SHAPE``: a layer
    called inside another's ``call`` is in no graph, and has no shape Keras kept."""
    import keras

    if not layer._inbound_nodes or getattr(layer, NOTED, False):
        return
    inside = list(layer._flatten_layers(include_self=False, recursive=True))
    node = layer._inbound_nodes[0]
    args, kwargs = keras.tree.map_structure(
        lambda t: (keras.ops.zeros((1, *t.shape[1:]), t.dtype)
                   if isinstance(t, keras.KerasTensor) else t),
        (node.arguments.args, node.arguments.kwargs))

    def note(sub, y, *_):
        tensors = [t for t in keras.tree.flatten(y) if hasattr(t, "shape")]
        if not hasattr(sub, INNER_SHAPE):
            shape = (None, *tensors[0].shape[1:]) if len(tensors) == 1 else None
            object.__setattr__(sub, INNER_SHAPE, shape)
        return y

    with edited_calls(inside, note):
        layer(*args, **kwargs)
    object.__setattr__(layer, NOTED, True)


def is_inner(chain: list) -> bool:
    """Whether a chain reaches inside a custom layer (not only through nested models)."""
    return any(not is_model(layer) for layer in chain[:-1])


def find_layer(model, name: str):
    """The layer named ``name`` (or ``"outer/inner"`` path), also inside nested models."""
    return layer_chain(model, name)[-1]


def output_shape(layer) -> tuple | None:
    """The shape of a layer's output, batch dimension included, or None if unknown or if the
    layer has several outputs (keras-hub's HGNetV2 encoder returns a list of stage outputs, its
    backbone a dict: no one map to tap)."""
    import keras

    try:
        output = layer.output
    except (AttributeError, ValueError):
        nodes = getattr(layer, "_inbound_nodes", None)
        output = nodes[0].output_tensors if nodes else None
    outputs = keras.tree.flatten(output) if output is not None else []
    if not outputs:  # inside a custom layer: the shape noted when its path was found
        return getattr(layer, INNER_SHAPE, None)
    return tuple(outputs[0].shape) if len(outputs) == 1 else None


def is_shift(layer) -> bool:
    """Whether the layer pads or crops: its map is its input's, shifted or cut, no stage's."""
    import keras

    L = keras.layers
    return isinstance(layer, (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D,
                              L.Cropping2D, L.Cropping3D))


def trunk_layers(model) -> set[int]:
    """Ids of the layers on each functional graph's trunk (nested ones too): a layer nothing
    computed before it goes around (every later layer reads it or what comes after it), or one
    that joins several tensors (a cell's concatenation, a residual sum). A layer on one branch
    only is off the trunk: a map there explains the logit through that branch alone. In a model
    without a graph to read (subclassed, Sequential), every layer counts."""
    trunk: set[int] = set()
    for graph in (model, *(layer for _, layer in walk(model) if is_model(layer))):
        nodes = getattr(graph, "_nodes", None)
        if not is_graph_model(graph) or nodes is None:
            trunk.update(id(layer) for layer in graph.layers)
            continue
        operations = list(graph.operations)
        index = {id(op): i for i, op in enumerate(operations)}
        last_use, joins = list(range(len(operations))), set()
        for i, op in enumerate(operations):
            for k, node in enumerate(op._inbound_nodes):
                if f"{id(op)}_ib-{k}" not in nodes:  # keras's node key: a node of this graph
                    continue
                joins.update([i] if len(node.input_tensors) > 1 else [])
                for parent in node.parent_nodes:
                    j = index.get(id(parent.operation), i)
                    last_use[j] = max(last_use[j], i)
        reach = -1
        for i, op in enumerate(operations):
            if reach <= i or i in joins:
                trunk.add(id(op))
            reach = max(reach, last_use[i])
    return trunk


def _spatial_layers(model) -> Iterator[tuple[str, tuple, bool]]:
    """(path, (H, W), on the trunk) of every layer whose output is a spatial map (N, H, W, C)
    with H, W > 1, in forward order; padding and cropping passed over."""
    trunk = trunk_layers(model)
    for path, layer in walk(model):
        if is_model(layer) or is_shift(layer):
            continue
        shape = output_shape(layer)
        if shape is not None and len(shape) == 4 and (shape[1] or 2) > 1 and (shape[2] or 2) > 1:
            yield path, shape[1:3], id(layer) in trunk


def last_conv_layer(model) -> str:
    """Path of the last layer on the trunk (``trunk_layers``) whose output is a spatial map
    (N, H, W, C) with H, W > 1; the last such layer at all when none is on the trunk.

    That is Grad-CAM's default (Selvaraju et al.): the final convolutional block's activation,
    e.g. ``conv3`` in the demo CNN or ``.../out_relu`` in MobileNetV2. Padding and cropping are
    passed over: their map is their input's, shifted or cut, and on one branch only (NASNetMobile
    at 32 px ended on the cropped shift of a cell's input, whose Grad-CAM maps were all zero on
    3 of 4 images). So is any layer on one branch: NASNetMobile's next was ``adjust_relu_1_9``,
    read only by the next cell's subsampled skip path (Grad-CAM all zero on 12 of 12 images; on
    the cell's concatenation ``normal_concat_7`` 5 of 12), InceptionV3's a branch of its last
    reduction (``mixed7``, the concatenation it reads, is taken instead).
    """
    found = on_trunk = None
    for path, _, trunk in _spatial_layers(model):
        found, on_trunk = path, path if trunk else on_trunk
    if found is None:
        raise ModelError(f"model '{model.name}' has no layer with a spatial (N, H, W, C) output; "
                         "Grad-CAM and layer attribution need a convolutional model")
    return on_trunk or found


# Activations bounded below at or near zero (ReLU's 0 down to hard-swish's -0.375): the maps
# Grad-CAM++'s alphas are derived for (methods/attribution/gradcam.py).
RECTIFIERS = ("relu", "relu6", "silu", "swish", "gelu", "hard_silu", "hard_swish", "mish",
              "softplus", "sigmoid", "hard_sigmoid")


# Layers whose output keeps their inputs' sign: joins, pooling, padding and cropping.
KEEPS_SIGN = ("Concatenate", "Add", "Maximum", "MaxPooling2D", "AveragePooling2D",
              "ZeroPadding2D", "Cropping2D")


def is_rectified(layer, depth: int = 4) -> bool:
    """Whether the layer's output is a rectifier's by construction: a ReLU layer without a
    negative slope, a layer applying one of ``RECTIFIERS``, or a join or pooling of such
    (InceptionV3's ``mixed7``, a residual sum of ReLUs), looked for ``depth`` layers back."""
    import keras

    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope
    if getattr(getattr(layer, "activation", None), "__name__", None) in RECTIFIERS:
        return True
    nodes = getattr(layer, "_inbound_nodes", None)
    if type(layer).__name__ not in KEEPS_SIGN or not nodes or not depth:
        return False
    parents = nodes[0].parent_nodes
    return bool(parents) and all(is_rectified(p.operation, depth - 1) for p in parents)


def last_rectified_layer(model) -> str | None:
    """Path of the last layer on the trunk at ``last_conv_layer``'s grid whose output is
    rectified (``is_rectified``), or None: DenseNet's ``pool4_relu`` before its linear
    ``pool4_conv``; ResNet50V2's ``conv4_block1_preact_relu`` at 32 px, the stage's first
    pre-activation, which its shortcut convolution reads too (Grad-CAM's ``conv4_block5_out`` is
    a residual sum); none on a trunk of residual sums and layer norms (ConvNeXt)."""
    last = last_conv_layer(model)
    spatial = list(_spatial_layers(model))
    grid = next(grid for path, grid, _ in spatial if path == last)
    found = None
    for path, at, trunk in spatial:
        if trunk and at == grid and is_rectified(find_layer(model, path)):
            found = path
    return found


def stage_ends(model) -> list[str]:
    """Paths of the last layer at each spatial resolution, shallow to deep, on the trunk where
    one is (padding, cropping and branches passed over, as in ``last_conv_layer``: NASNetMobile's
    stages ended on the cropped shift of one branch, which the layers' maps and concepts read).

    These end the network's stages (``conv1``, ``conv2``, ``conv3`` in the demo CNN): a short,
    representative list of layers to compare.
    """
    last_at: dict[tuple, str] = {}
    trunk_at: dict[tuple, str] = {}
    for path, grid, trunk in _spatial_layers(model):
        last_at.pop(grid, None)
        last_at[grid] = path
        if trunk:
            trunk_at[grid] = path
    return [trunk_at.get(grid, path) for grid, path in last_at.items()]


def activation_floats(model) -> int:
    """Floats of all layer outputs for one sample: what a backward pass keeps alive."""
    total = 0
    for _, layer in walk(model):
        shape = None if is_model(layer) else output_shape(layer)
        if shape:
            total += int(np.prod([d or 1 for d in shape[1:]]))
    return total


def conv_layers(model) -> list[tuple[str, int]]:
    """(name, channels) of every convolutional layer, nested models included, in order.

    Names are plain layer names (what feature visualisation shows), not ``outer/inner`` paths.
    """
    return [(layer.name, int(output_shape(layer)[-1])) for _, layer in walk(model)
            if type(layer).__name__ in CONV_LAYER_TYPES]


def is_graph_model(model) -> bool:
    """Whether a model has a functional graph that can be tapped (not a subclassed model).

    Keras 3 has no public test for a functional model: ``keras.Model(inputs, outputs)`` builds a
    private ``Functional`` subclass. Its graph runner is the one mark subclassed models lack.
    """
    return hasattr(model, "_run_through_graph") and bool(getattr(model, "inputs", None))


def tap(model, chains: list[list], with_output: bool = True) -> Callable:
    """A callable ``f(x, training=False)`` giving ([activation per chain], output), or the
    activations only, in one pass.

    Each chain is ``layer_chain(model, name)``. Sequential models are run layer by layer; a
    functional model with every target at its top level becomes a model over its own graph; one
    with a target inside a nested model is rebuilt with that nested model tapped.
    """
    import keras

    if any(is_inner(chain) for chain in chains):
        return _recording_run(model, [chain[-1] for chain in chains], with_output)
    heads, by_head = {}, {}  # per top-level layer: [(chain index, the chain below it)]
    for index, chain in enumerate(chains):
        heads[id(chain[0])] = chain[0]
        by_head.setdefault(id(chain[0]), []).append((index, chain[1:]))
    inner = {key: tap(heads[key], deeper, with_output=True) for key, entries in by_head.items()
             if (deeper := [rest for _, rest in entries if rest])}

    def through(layer, args, kwargs, found: dict):
        """Call one layer, adding any activations it yields to ``found`` (first call wins)."""
        entries = by_head.get(id(layer))
        if not entries:
            return layer(*args, **kwargs)
        if id(layer) in inner:
            activations, out = inner[id(layer)](*args, **kwargs)
            deeper = iter(activations)
            for index, rest in entries:
                if rest:
                    found.setdefault(index, next(deeper))
        else:
            out = layer(*args, **kwargs)
        for index, rest in entries:
            if not rest:
                found.setdefault(index, out)
        return out

    def ordered(found: dict) -> list:
        return [found[index] for index in range(len(chains))]

    if isinstance(model, keras.Sequential):
        return _sequential_run(model, len(chains), through, ordered, with_output)
    if not is_graph_model(model):
        raise ModelError(f"layer '{chains[0][0].name}' is inside '{model.name}', a subclassed "
                         "model whose graph cannot be tapped; use a functional or Sequential model")
    if not inner:
        inputs, activations = model.input, [chain[0].output for chain in chains]
        output = model.output
    else:
        found: dict = {}  # inputs in the model's own structure: a backbone made as
        # keras.Model(base.inputs, ...) takes a list of one (nested ConvNeXtTiny crashed here)
        inputs = keras.tree.map_structure(
            lambda t: keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype), model.input)
        rebuilt = keras.models.clone_model(
            model, input_tensors=inputs, clone_function=lambda layer: layer,
            call_function=lambda layer, *args, **kwargs: through(layer, args, kwargs, found))
        activations, output = ordered(found), rebuilt.output
    return _graph_run(keras.Model(inputs, activations + [output] if with_output
                                  else activations), with_output)


def _recording_run(model, targets: list, with_output: bool) -> Callable:
    """tap() of layers inside custom layers, which no graph reaches: the model runs as it is,
    each target's ``call`` recording its output while the pass runs (first call wins)."""
    def run(x, training=False, **_):
        found: dict = {}

        def record(layer, y, *_):
            found.setdefault(id(layer), y)
            return y

        with edited_calls({id(t): t for t in targets}.values(), record):
            out = model(x, training=training)
        activations = [found[id(t)] for t in targets]
        return (activations, out) if with_output else activations

    return run


@contextlib.contextmanager
def edited_calls(layers, edit: Callable, arguments: Callable | None = None) -> Iterator[None]:
    """While open, each layer's ``call`` returns ``edit(layer, its own output, args, kwargs)``,
    given the arguments it was called with: the one way a layer inside a custom layer, which
    no graph reaches, is read (its output, or an input: the tokens an attention attends from,
    ``tokens.query_and_logits``) or changed during a pass (an attention's queries and keys
    held constant, ``lrp/constant.attention``; the instance's attribute over its
    class's method, removed after). ``arguments(layer, args, kwargs) -> (args, kwargs)``, when
    given, edits what the call runs with (a MultiHeadAttention asked for its attention scores,
    ``tokens.recording_attention``); ``edit`` still gets the arguments the caller gave."""
    layers = list(layers)

    def edited(layer):
        original = type(layer).call

        def call(*args, **kwargs):
            given = arguments(layer, args, kwargs) if arguments else (args, kwargs)
            return edit(layer, original(layer, *given[0], **given[1]), args, kwargs)

        return call

    for layer in layers:
        object.__setattr__(layer, "call", edited(layer))
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")


def _sequential_run(model, count: int, through: Callable, ordered: Callable,
                    with_output: bool) -> Callable:
    """tap() of a Sequential model: its layers one by one, stopping early without the output."""
    def run(x, training=False, **_):  # a rebuilt outer graph also passes mask=None
        h, found = x, {}
        for layer in model.layers:
            if not with_output and len(found) == count:
                return ordered(found)
            h = through(layer, (h,), {"training": training}, found)
        return (ordered(found), h) if with_output else ordered(found)

    return run


def _graph_run(tapped, with_output: bool) -> Callable:
    """tap() of a graph model: one model over the activations (and the output)."""
    def run_graph(x, training=False, **kwargs):  # a rebuilt outer graph also passes mask=None
        outputs = tapped(x, training=training, **kwargs)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        return (outputs[:-1], outputs[-1]) if with_output else outputs

    return run_graph


def _display_tap(handle, layer_names: tuple[str, ...], with_output: bool) -> Callable:
    key = ("tap", layer_names, with_output)
    if key not in handle.compiled:
        model = handle.logits_model
        handle.compiled[key] = tap(model, [layer_chain(model, name) for name in layer_names],
                                   with_output)
    return handle.compiled[key]


def activation_model(handle, layer_name: str) -> Callable:
    """A function from display-space images to the named layer's activation (not compiled)."""
    inner = _display_tap(handle, (layer_name,), with_output=False)

    def activation(x, training=False):
        return inner(handle.transform.to_model(x), training=training)[0]

    return activation


def activations_and_logits(handle, layer_names) -> Callable:
    """A function from display-space images to ([activation per name], logits) in one pass.

    Gradients of the logits with respect to an activation are exact even when other paths
    (skip connections) bypass the layer, because the logits are computed from that activation.
    Logits follow ``handle.logits``: when the softmax could not be stripped, its log is taken.
    With no names the model is not tapped at all (so any model works).
    """
    import tensorflow as tf

    names = tuple(dict.fromkeys(layer_names))
    if not names:
        return lambda x, training=False: ([], handle.logits(x, training=training))
    inner = _display_tap(handle, names, with_output=True)

    def activations_logits(x, training=False):
        activations, out = inner(handle.transform.to_model(x), training=training)
        if handle.output == "log-probabilities":
            out = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
        return activations, out

    return activations_logits


def activation_and_logits(handle, layer_name: str) -> Callable:
    """A function from display-space images to (activation, logits): see
    ``activations_and_logits``."""
    both = activations_and_logits(handle, [layer_name])

    def activation_logits(x, training=False):
        (activation,), logits = both(x, training=training)
        return activation, logits

    return activation_logits


def final_layer_input(handle) -> Callable | None:
    """A function from display-space images to the input of the model's final layer (its
    penultimate features), or None when the model cannot be split there: no hidden layer before
    the final one, a subclassed model or a SavedModel wrapper."""
    import keras

    model = handle.logits_model
    try:
        penultimate = model.layers[-1].input
        if any(penultimate is given for given in model.inputs):
            return None
        features = keras.Model(model.inputs, penultimate)
    except (AttributeError, ValueError, TypeError, IndexError):
        return None

    def final_input(x, training=False):
        return features(handle.transform.to_model(x), training=training)

    return final_input
