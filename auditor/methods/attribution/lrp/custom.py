"""Custom layers LRP walks into: their own ``call`` runs with every sub-layer it reads swapped
for that sub-layer's LRP counterpart.

That is right only for a layer whose ``call`` does nothing else than call its sub-layers and
sum, concatenate, slice, reshape or tile their outputs and its own constants (a sum passes
relevance by contribution through its gradient, as ``layers.Add`` does, and a constant added
absorbs its share, as a bias does). So the layers are listed by class, each read for that:

    keras-hub ViTPatchingAndEmbedding   the patch convolution (the conv rule; z-box on the
                                        pixels), a class token concatenated and a position
                                        embedding added: constants, their share absorbed
    keras-hub ViTEncoder                dropout, the blocks, a final LayerNormalization
    keras-hub ViTEncoderBlock           LayerNormalization, MultiHeadAttention, two residual sums
    keras-hub MLP (ViT's)               Dense (GELU), dropout, Dense

An ``Embedding`` read inside them looks up constant positions (``position_ids``): it is a
constant. Any other custom layer stays an error naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

WALKED = {  # module: class names, read as the module's docstring says
    "keras_hub.src.models.vit.vit_layers": ("ViTPatchingAndEmbedding", "ViTEncoder",
                                            "ViTEncoderBlock", "MLP"),
}


def is_walked(layer) -> bool:
    """Whether LRP walks into the layer's own ``call`` (a class listed in ``WALKED``)."""
    return type(layer).__name__ in WALKED.get(type(layer).__module__, ())


def is_constant_lookup(layer) -> bool:
    """An ``Embedding`` inside a walked layer: a table read at constant positions."""
    import keras

    return isinstance(layer, keras.layers.Embedding)


@contextlib.contextmanager
def swapped(layer, counterpart: Callable) -> Iterator[None]:
    """While open, every attribute of ``layer`` holding a sub-layer (or a list of them) holds
    ``counterpart(sublayer)`` instead; set past Keras's tracking and restored after."""
    import keras

    def is_layer(value):
        return isinstance(value, keras.layers.Layer)

    originals = {}
    for name, value in list(vars(layer).items()):
        if is_layer(value):
            originals[name] = value
            object.__setattr__(layer, name, counterpart(value))
        elif isinstance(value, list | tuple) and value and all(map(is_layer, value)):
            originals[name] = value
            object.__setattr__(layer, name, [counterpart(v) for v in value])
    try:
        yield
    finally:
        for name, value in originals.items():
            object.__setattr__(layer, name, value)
