"""The one way the audit copies a model: same weights, none of its variables.

The randomised copies of the reliability card, the fine-tuned copies of the Clever Hans
injection test, the shifted copies of the input-invariance test and the softmax-stripped logits
model all start here, so a model that loads can be copied. ``keras.models.clone_model`` with
``recursive=True`` rebuilds every nested Functional model layer by layer, which breaks on
models whose class has its own config (a keras-hub ``ViTBackbone``: its inner
``ViTPatchingAndEmbedding`` writes config keys its constructor refuses). Such a model is rebuilt
the way saving rebuilds it: from its own class's config, with its weights copied after, and
then given what its config does not hold: each layer's name and activation as on the model.

A copy costs seconds on a large model, and every function traced on it (a gradient, LRP's
relevance, a training step: tens of seconds each on DenseNet121) is traced again on the next
copy. So an audit makes one working copy per model (``scratch_copy``) and reuses it: the
reliability card's randomised stages, the base of the shifted copy and every fine-tuned copy of
the Clever Hans test are that one copy with other weights assigned, and the functions traced on
it (cached on its handle) serve them all. The attribution passes and the prediction pass go
further (``inputs/traces.py``): they take the weights as arguments, so the copy calls the
model's own traces with its weights. The user's model is never touched.
"""

from __future__ import annotations

from auditor.errors import ModelError

SCRATCH = "scratch copy"  # where a handle keeps its working copy (in ``handle.compiled``)


def copy_model(model):
    """A copy of ``model`` with its weights and no shared variables; ModelError (one line,
    naming the layer when one is at fault) when Keras cannot rebuild it."""
    try:
        copy = rebuild(model)
        copy.set_weights(model.get_weights())
    except (ModelError, ValueError, TypeError, NotImplementedError, KeyError,
            AttributeError) as exc:
        reason = str(exc) if isinstance(exc, ModelError) else _first_sentence(exc)
        raise ModelError(f"cannot copy model '{model.name}': {reason}") from None
    return copy


def scratch_copy(handle):
    """A handle on the audit's working copy of ``handle``'s logits model, its weights set to
    the model's own now (so a caller that changed them before is undone). The copy is made once
    per handle, under the run's strategy (its weights mirrored on every replica), and kept in
    ``handle.compiled`` with its own compiled functions, which later users find traced; those
    compiled through ``inputs/traces.py`` are the model's own traces, called with the copy's
    weights, when the copy is the model's twin (as a copy made here is, unless a keras-hub
    rebuild changed its structure). A caller may assign any weights to it (randomise,
    fine-tune) and must not hold it across another caller's use: the next ``scratch_copy``
    resets it."""
    import contextlib
    import dataclasses

    from auditor.inputs.traces import share_traces

    scratch = handle.compiled.get(SCRATCH)
    if scratch is None:
        distribution = handle.distribution
        with distribution.scope() if distribution is not None else contextlib.nullcontext():
            copy = copy_model(handle.logits_model)
        scratch = dataclasses.replace(handle, model=copy, logits_model=copy, compiled={})
        share_traces(scratch, handle)
        handle.compiled[SCRATCH] = scratch
    else:
        scratch.logits_model.set_weights(handle.logits_model.get_weights())
    return scratch


def _first_sentence(exc: BaseException) -> str:
    """The cause of a Keras error in a few words: its first line's first sentence."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return first.split(". ")[0].rstrip(".")


def rebuild(layer):
    """A fresh, unbuilt-weights copy of ``layer``: a plain Functional or Sequential model layer
    by layer (nested ones recursively), any other model from its own config (as
    ``keras.saving`` does), any other layer from ``from_config(get_config())``."""
    import keras

    if plain_model(layer):
        return keras.models.clone_model(layer, clone_function=_rebuild_layer)
    if isinstance(layer, keras.Model):
        return _same_names_and_activations(layer, _deserialised(layer))
    return layer.__class__.from_config(layer.get_config())


def _rebuild_layer(layer):
    """clone_model's per-layer function: names the layer when it cannot be rebuilt."""
    try:
        return rebuild(layer)
    except ModelError:
        raise
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise ModelError(f"layer '{layer.name}' ({type(layer).__name__}): "
                         f"{_first_sentence(exc)}") from None


def plain_model(layer) -> bool:
    """Keras's own Functional or Sequential class (a config that lists the layers), not a
    subclass with its own config such as a keras-hub backbone or task."""
    return (type(layer).__name__ in ("Functional", "Sequential")
            and type(layer).__module__.startswith("keras."))


def _same_names_and_activations(model, copy):
    """``copy`` with every layer named and activated as on ``model``, layer for layer: a
    keras-hub backbone whose config leaves out its name (VGG's) is numbered anew on each
    rebuild ('vgg_backbone_6' for 'vgg_backbone_2'), so a layer found by path on the model is
    missing on the copy; and an activation switched on the loaded model (the softmax the logits
    model strips in place) is in a plain layer's config, but not in a keras-hub task's, whose
    config holds its constructor's ``activation``."""
    import keras

    from auditor.inputs.layers import walk

    originals = [layer for _, layer in walk(model)]
    twins = [layer for _, layer in walk(copy)]
    if [type(layer) for layer in originals] != [type(layer) for layer in twins]:
        return copy  # not the same structure: nothing to carry over layer for layer
    for layer, twin in zip(originals, twins, strict=True):
        twin.name = layer.name
        activation = getattr(layer, "activation", None)
        if (callable(activation) and not isinstance(activation, keras.layers.Layer)
                and getattr(twin, "activation", None) is not activation):
            twin.activation = activation
    return copy


def _deserialised(model):
    """``model`` serialised and rebuilt with every class it uses in scope (registered or not):
    the path ``keras.saving.load_model`` takes. The model is already loaded in this process, so
    rebuilding it runs no code that loading did not (safe mode is off for its own lambdas)."""
    import keras

    from auditor.inputs.layers import walk

    layers = [model, *(layer for _, layer in walk(model))]
    classes = {keras.saving.get_registered_name(type(layer)): type(layer) for layer in layers}
    config = keras.saving.serialize_keras_object(model)
    with keras.saving.custom_object_scope(classes):
        return keras.saving.deserialize_keras_object(config, safe_mode=False)
