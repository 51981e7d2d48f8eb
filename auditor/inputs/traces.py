"""Compiled passes traced once for a model and its working copy, which has the same structure.

A trace of a pass costs seconds on a large model (LRP's relevance on MobileNetV3Small: 13 s
under load; DenseNet121's far more), and the reliability card and Clever Hans run the same
passes on the model and on the audit's working copy (inputs/copies.py) with other weights:
randomised, fine-tuned. A pass compiled here takes the weights as arguments: its Python code
runs once, on the first handle that calls it, inside a ``keras.StatelessScope`` that maps each
variable of that handle's logits model (the origin's) to an argument; every handle that shares
the origin's traces calls the same concrete function with its own variables in the same
order. Keras's layers read a variable through its ``value``, which in the scope is the
argument, so the copy's maps are computed with the copy's weights (tests/test_traces.py holds
it to a randomised copy's own maps). A gradient tape inside such a pass watches no variable
(the weights are arguments): a gradient with respect to an activation needs the images
watched.

A copy shares the traces only when it is the origin's twin (``twins``): the same layer classes
in the same order, the same activations, the same variables (count, shapes, dtypes), and no
layer holding state Keras does not see (a SavedModel wrapper's own TensorFlow variables).
Anything else (the shifted copy of the input-invariance test, whose first layer pads with the
shifted background; a keras-hub model whose rebuild came out with another structure) traces
its own passes, as every handle did before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

ORIGIN = "trace origin"  # handle.compiled[ORIGIN]: the handle whose traces this one shares
STATELESS = "stateless"  # origin.compiled[(STATELESS, key)]: the weights-as-arguments function
EAGER = "eager"  # origin.compiled[EAGER]: the passes (by name) run eagerly, not traced


def share_traces(copy, origin) -> bool:
    """Make ``copy`` (a handle) call the passes traced on ``origin`` when they are twins;
    whether it does."""
    if twins(origin.logits_model, copy.logits_model) and _same_use(origin, copy):
        copy.compiled[ORIGIN] = origin.compiled.get(ORIGIN, origin)
        return True
    return False


def origin_of(handle):
    """The handle whose traces ``handle`` calls (itself unless it shares another's): where
    what a pass notes while it traces (a layer's shape) is kept for every handle calling it."""
    return handle.compiled.get(ORIGIN, handle)


def pass_name(key) -> str:
    """The name of a compiled pass's key ('input_gradients' of ('input_gradients', 'logit')):
    what the plan decides to run eagerly (one name covers every layer, score and composite)."""
    return key if isinstance(key, str) else str(key[0])


def run_eagerly(handle, names) -> None:
    """Run the passes named ``names`` eagerly from now on, for ``handle`` and every handle
    sharing its traces (the plan's choice: too few calls to repay a trace); a pass already
    made stays as it is."""
    origin_of(handle).compiled[EAGER] = frozenset(names)


def compiled(handle, key, make: Callable, input_signature: list, **options) -> Callable:
    """``handle.compiled[key]``, made on first use: ``make(origin)`` (a function of the
    signature's tensors that reads the origin handle's model) compiled with ``options``
    (``tf.function``'s) so that it takes the weights as arguments, traced once for the origin
    and every handle that shares its traces, and called with ``handle``'s own variables; or,
    when the plan chose to run this pass eagerly (``run_eagerly``), the same function called
    eagerly with the same weights: no trace, each call dearer."""
    if key not in handle.compiled:
        origin = origin_of(handle)
        variables = list(handle.logits_model.variables)
        if pass_name(key) in origin.compiled.get(EAGER, ()):
            handle.compiled[key] = _eager(origin, key, make, variables, input_signature)
            return handle.compiled[key]
        stateless = origin.compiled.get((STATELESS, key))
        if stateless is None:
            stateless = origin.compiled[(STATELESS, key)] = _stateless(
                origin, make(origin), input_signature, options)

        def call(*args):
            return stateless([v.value for v in variables], *args)

        handle.compiled[key] = call
    return handle.compiled[key]


def _stateless(origin, fn: Callable, input_signature: list, options: dict):
    import keras
    import tensorflow as tf

    variables = list(origin.logits_model.variables)
    weights = [tf.TensorSpec(v.shape, v.dtype) for v in variables]

    def run(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return fn(*args)

    run.__name__ = getattr(fn, "__name__", run.__name__)  # what tests/tracecount.py lists
    tf.get_logger().addFilter(_hide_retracing_warning)
    return tf.function(run, input_signature=[weights, *input_signature], **options)


def _eager(origin, key, make: Callable, variables: list, input_signature: list) -> Callable:
    """The pass ``make(origin)`` run eagerly, its arguments converted as the compiled pass's
    signature converts them, with the weights ``variables`` (the calling handle's) in place of
    the origin's, as the compiled pass takes them."""
    import keras
    import tensorflow as tf

    fn = origin.compiled.get((EAGER, key))
    if fn is None:
        fn = origin.compiled[(EAGER, key)] = make(origin)
    own = list(origin.logits_model.variables)

    def call(*args):
        tensors = [tf.convert_to_tensor(a, spec.dtype)
                   for a, spec in zip(args, input_signature, strict=True)]
        mapping = list(zip(own, [v.value for v in variables], strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return fn(*tensors)

    return call


def _hide_retracing_warning(record: logging.LogRecord) -> bool:
    """TensorFlow counts the traces of every pass compiled here as one function's (they share
    ``run``'s code) and would warn of retracing; each is traced once per model."""
    return "_stateless.<locals>.run" not in record.getMessage()


def _same_use(origin, copy) -> bool:
    """The handle's facts a traced pass reads besides the weights (its input transform, how
    its logits were obtained, a shifted copy's display shift) are the same."""
    return (origin.transform == copy.transform and origin.output == copy.output
            and origin.display_shift == copy.display_shift
            and tuple(origin.input_shape) == tuple(copy.input_shape))


def twins(model, copy) -> bool:
    """Whether ``copy`` computes what ``model`` computes once given its variables in order:
    the same layer classes in the same order with the same configs (names aside) and
    activations, the same variables in order (their own names, 'gamma' or 'moving_mean', whose
    shapes are alike, shapes and dtypes), and no SavedModel wrapper (its TensorFlow variables
    are not Keras's, so no scope maps them)."""
    import keras

    from auditor.inputs.layers import walk

    layers = [layer for _, layer in walk(model)]
    others = [layer for _, layer in walk(copy)]
    if ([type(layer) for layer in layers] != [type(layer) for layer in others]
            or any(isinstance(layer, keras.layers.TFSMLayer) for layer in layers)
            or not all(_same_layer(a, b) for a, b in zip(layers, others, strict=True))):
        return False
    mine, theirs = model.variables, copy.variables
    return len(mine) == len(theirs) and all(
        _unnumbered(a.name) == _unnumbered(b.name) and tuple(a.shape) == tuple(b.shape)
        and a.dtype == b.dtype for a, b in zip(mine, theirs, strict=True))


def _unnumbered(name: str) -> str:
    """A variable's name without the number Keras gives an unnamed one ('variable_36':
    ConvNeXt's LayerScale), which differs from copy to copy."""
    import re

    return re.sub(r"_\d+$", "", name)


def _same_layer(layer, other) -> bool:
    """The same activation and, for a layer that is not a model, the same config but for its
    name (a padding or a stride leaves the variables' shapes as they are)."""
    from auditor.inputs.layers import is_model

    if getattr(layer, "activation", None) is not getattr(other, "activation", None):
        return False
    if is_model(layer):
        return True
    try:
        mine, theirs = layer.get_config(), other.get_config()
    except (NotImplementedError, AttributeError, TypeError, ValueError, KeyError):
        # a layer without a config, or whose get_config breaks (keras-hub's DeiT encoder and
        # Swin blocks inside their backbones): its class and variables say what it is
        return True
    mine.pop("name", None)
    theirs.pop("name", None)
    return mine == theirs
