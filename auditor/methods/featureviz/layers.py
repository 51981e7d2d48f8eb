"""Why a model shows no hidden channels, in one line, and which option would show some.

Feature visualisation shows the channels of the last convolutional layer of the model's graph by
default. A vision transformer may have none there: keras-hub's ViT keeps its patch convolution
inside a custom layer (``ViTPatchingAndEmbedding``), which the audit cannot tap. Any layer of
the graph with a channel axis can be named instead (a transformer's tokens: each channel's
mean over the tokens).
"""

from __future__ import annotations


def no_channels_reason(model) -> str:
    """The one-line reason the model's graph has no convolutional layer to show, naming a
    convolution hidden in a custom layer and the last graph layer with channels."""
    import keras

    from auditor.inputs.layers import is_model, output_shape, walk

    hidden, last = None, None
    for path, layer in walk(model):
        if is_model(layer):
            continue
        inner = [sub for sub in layer._flatten_layers(include_self=False, recursive=True)
                 if isinstance(sub, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)]
        if inner and hidden is None:
            hidden = (f" (its convolution '{inner[0].name}' is inside the custom layer "
                      f"'{path}', which cannot be tapped)")
        shape = output_shape(layer)
        if shape is not None and len(shape) in (3, 4) and (shape[-1] or 0) > 1:
            last = path
    advice = (f"name a layer with channels in 'featureviz.layers', e.g. '{last}'" if last
              else "the model has no layer with channels to name in 'featureviz.layers'")
    return (f"no hidden channels shown: no convolutional layer in the model's graph"
            f"{hidden or ''}; {advice}")
