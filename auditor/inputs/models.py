"""Load a Keras classifier into a ModelHandle: a logits function over display-space images.

Everything downstream (prediction, attribution, input optimisation) works on images in display
space, float32 in [0, 1], shape (N, H, W, C). The handle maps them to what the model expects
(its value range or keras.applications preprocessing) and returns logits: a final softmax is
stripped on a copy, so that saliency is never flattened by a saturated softmax.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from auditor.errors import ModelError

DEMO_MODEL = "demo"

# keras.applications preprocessing modes, named by the application modules that use them.
_APPLICATION_MODES = {
    "mobilenet": "tf", "mobilenet_v2": "tf", "inception_v3": "tf", "xception": "tf",
    "inception_resnet_v2": "tf", "nasnet": "tf", "resnet_v2": "tf",
    "resnet": "caffe", "resnet50": "caffe", "vgg16": "caffe", "vgg19": "caffe",
    "densenet": "torch",
    "efficientnet": "0-255", "efficientnet_v2": "0-255", "convnext": "0-255",
    "mobilenet_v3": "0-255", "regnet": "0-255",
}
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
INPUT_RANGES = ("0-1", "0-255", "-1-1", "tf", "caffe", "torch", *_APPLICATION_MODES)


@dataclass(frozen=True)
class InputTransform:
    """A per-channel affine map from display space [0, 1] to the model's input space.

    ``model = display[..., order] * scale + offset``; ``order`` reverses channels for Caffe
    (BGR) models. Affine maps keep gradients honest: the display-space gradient is the model-space
    gradient times ``scale``.
    """

    name: str
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    reverse_channels: bool = False

    def to_model(self, x):
        import tensorflow as tf

        x = tf.convert_to_tensor(x, tf.float32)
        if self.reverse_channels:
            x = x[..., ::-1]
        return x * tf.constant(self.scale, tf.float32) + tf.constant(self.offset, tf.float32)

    def to_display(self, x):
        import tensorflow as tf

        x = (tf.convert_to_tensor(x, tf.float32) - tf.constant(self.offset, tf.float32)) / (
            tf.constant(self.scale, tf.float32)
        )
        return x[..., ::-1] if self.reverse_channels else x


def input_transform(name: str, channels: int) -> InputTransform:
    """The transform for a value range ('0-1', '0-255', '-1-1') or a keras.applications name."""
    mode = _APPLICATION_MODES.get(name, name)
    ones = (1.0,) * channels
    zeros = (0.0,) * channels
    if mode == "0-1":
        return InputTransform(name, ones, zeros)
    if mode == "0-255":
        return InputTransform(name, (255.0,) * channels, zeros)
    if mode in ("-1-1", "tf"):
        return InputTransform(name, (2.0,) * channels, (-1.0,) * channels)
    if mode in ("torch", "caffe") and channels != 3:
        raise ModelError(f"input_range '{name}' needs RGB inputs, but the model takes {channels} "
                         "channel(s); use '0-1', '0-255' or '-1-1'")
    if mode == "torch":
        return InputTransform(name, tuple(1 / s for s in _TORCH_STD),
                              tuple(-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD, strict=True)))
    if mode == "caffe":
        return InputTransform(name, (255.0,) * 3, tuple(-m for m in _CAFFE_MEAN_BGR),
                              reverse_channels=True)
    raise ModelError(f"unknown input_range '{name}'; use one of: {', '.join(INPUT_RANGES)}")


@dataclass
class ModelHandle:
    """A loaded classifier with the facts the audit needs about it."""

    model: object  # keras.Model as loaded, never modified
    logits_model: object  # a copy whose final softmax is stripped (or the model itself)
    path: str
    name: str
    sha256: str
    input_shape: tuple[int, int, int]
    num_classes: int
    transform: InputTransform
    output: str  # "logits", "softmax stripped" or "log-probabilities"
    compiled: dict = field(default_factory=dict, repr=False)  # tf.functions traced per model
    distribution: object = None  # distribute.Distribution for batched steps; None: one device

    @property
    def params(self) -> int:
        return int(self.model.count_params())

    def logits(self, x, training: bool = False):
        """Logits for display-space images; differentiable, usable inside tf.function."""
        import tensorflow as tf

        out = self.logits_model(self.transform.to_model(x), training=training)
        if self.output == "log-probabilities":
            out = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
        return out

    @functools.cached_property
    def logits_fn(self):
        """``logits`` compiled once per model; the prediction pass and sections share it."""
        import tensorflow as tf

        return tf.function(self.logits, reduce_retracing=True)

    def describe(self) -> dict:
        """The ``model`` block of summary.json."""
        return {
            "path": self.path, "name": self.name, "sha256": self.sha256, "params": self.params,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "input_range": self.transform.name, "output": self.output,
        }


def file_sha256(path: str | Path) -> str:
    """Content hash of a model file, or of every file of a SavedModel folder in order."""
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_model(path: str, input_range: str = "auto", unsafe_load: bool = False) -> ModelHandle:
    """Load a .keras / .h5 file or a SavedModel folder ('demo' trains or reuses the demo CNN)."""
    if path == DEMO_MODEL:
        from auditor.inputs.demo import demo_model_path

        path = str(demo_model_path())
    model = _read_model(path, unsafe_load)
    shape = _image_input_shape(model, path)
    num_classes = _num_classes(model, path)
    logits_model, output = strip_softmax(model, shape)
    transform = input_transform(_guess_input_range(model) if input_range == "auto" else input_range,
                                shape[-1])
    name = Path(path.rstrip("/")).stem if not Path(path).is_dir() else Path(path).name
    return ModelHandle(model=model, logits_model=logits_model, path=str(path), name=name,
                       sha256=file_sha256(path), input_shape=shape, num_classes=num_classes,
                       transform=transform, output=output)


def _read_model(path: str, unsafe_load: bool):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model '{path}' does not exist; pass the path of a .keras or .h5 file "
                         "or a SavedModel folder")
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise ModelError(f"folder '{path}' is not a SavedModel (no saved_model.pb); pass a "
                             ".keras or .h5 file or a SavedModel folder")
        return _load_saved_model(path)
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"model '{path}' has an unknown extension '{p.suffix}'; pass a .keras "
                         "or .h5 file or a SavedModel folder")
    if p.suffix == ".keras" and not zipfile.is_zipfile(p):
        raise ModelError(f"'{path}' is not a Keras model file (not a .keras archive); re-save "
                         "the model with model.save('model.keras')")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not unsafe_load)
    except ValueError as exc:
        message = str(exc)
        if "safe_mode" in message or "Lambda" in message or "lambda" in message:
            raise ModelError(f"model '{path}' contains code (a Lambda layer); loading it runs "
                             "that code, so pass --unsafe-load only if you trust the "
                             "file") from None
        _refuse_unknown_classes(p)
        if "Unknown" in message or "custom" in message.lower():
            raise ModelError(f"model '{path}' uses a custom layer or object that is not "
                             "registered; import the module that defines it and pass "
                             "--unsafe-load, or save the model with built-in layers") from None
        raise ModelError(f"cannot read model '{path}': {message.splitlines()[0]}") from None
    except (OSError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        _refuse_unknown_classes(p)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot read model '{path}' ({first}); is it a Keras model "
                         "file?") from None


def _refuse_unknown_classes(path: Path) -> None:
    """A load that failed on a class Keras cannot find says which class, and what to do."""
    missing = unknown_classes(path)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"model '{path}' uses the custom class '{missing[0]}'{more}, whose code "
                         "is not in the file and not imported; re-save the model with built-in "
                         "layers, or import the module that defines it and call "
                         "auditor.pipeline.run_audit from Python (README, 'Custom layers')")


def unknown_classes(path: Path) -> list[str]:
    """Classes named in a .keras or .h5 model's config that Keras cannot find: neither built in
    nor registered in this process (``keras.saving.register_keras_serializable``)."""
    import json

    import keras

    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
        else:
            import h5py

            with h5py.File(path, "r") as file:
                raw = file.attrs.get("model_config")
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw or "{}")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    missing: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            name, module = node.get("class_name"), node.get("module")
            registered = node.get("registered_name") or name
            if isinstance(name, str) and "config" in node and not _known_class(
                    keras, name, module, registered) and name not in missing:
                missing.append(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return missing


def _known_class(keras, name: str, module: str | None, registered: str) -> bool:
    """Keras's own classes (by module, or by name in a Keras 2 config) and registered ones."""
    if name == "__lambda__" or keras.saving.get_registered_object(registered) is not None:
        return True  # __lambda__: the function of a Lambda layer, which safe mode refuses
    if module is not None:
        return module.split(".")[0] == "keras"
    spaces = (keras, keras.layers, keras.models, keras.initializers, keras.regularizers,
              keras.constraints, keras.activations, keras.optimizers)
    return name == "Functional" or any(hasattr(space, name) for space in spaces)


def _load_saved_model(path: str):
    """A SavedModel exported from Keras: wrapped in a TFSMLayer so it behaves as a model."""
    import keras

    try:
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    except (ValueError, OSError) as exc:
        raise ModelError(f"cannot read SavedModel '{path}': {str(exc).splitlines()[0]}") from None
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    inputs = keras.Input(shape=tuple(spec.shape[1:]), dtype="float32")
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ModelError(f"SavedModel '{path}' has {len(outputs)} outputs; the audit needs a "
                             "classifier with one output")
        (outputs,) = outputs.values()
    return keras.Model(inputs, outputs, name=Path(path).name)


def _image_input_shape(model, path: str) -> tuple[int, int, int]:
    inputs = model.inputs if getattr(model, "inputs", None) else None
    if not inputs or len(inputs) != 1:
        raise ModelError(f"model '{path}' must take one image input, it takes "
                         f"{len(inputs) if inputs else 'no defined'} inputs")
    shape = tuple(inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ModelError(f"model '{path}' takes inputs of shape {shape}; the audit needs a fixed "
                         "image shape (height, width, channels)")
    return tuple(int(d) for d in shape)


def _num_classes(model, path: str) -> int:
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        raise ModelError(f"model '{path}' must have one output of shape (batch, classes), got "
                         f"{[tuple(o.shape) for o in outputs]}")
    classes = int(outputs[0].shape[-1])
    if classes < 2:
        raise ModelError(f"model '{path}' has {classes} output; the audit needs a classifier "
                         "with one logit or probability per class")
    return classes


def _final_layer(model):
    """The layer that produces the output, looking inside nested models."""
    layer = model.layers[-1]
    while hasattr(layer, "layers") and layer.layers:
        layer = layer.layers[-1]
    return layer


def strip_softmax(model, shape):
    """A copy of the model whose final softmax is removed, checked numerically.

    Returns (logits_model, how): 'logits' when the model has no final softmax, 'softmax
    stripped' for a copy without it, 'log-probabilities' when it cannot be removed (the handle
    then takes the log, which keeps differences between classes exact).
    """
    import keras

    last = _final_layer(model)
    activation = getattr(last, "activation", None)
    is_softmax = isinstance(last, keras.layers.Softmax) or (
        activation is not None and getattr(activation, "__name__", "") == "softmax"
    )
    if not is_softmax:
        return model, ("log-probabilities" if _outputs_probabilities(model, shape) else "logits")
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        copy_last = _final_layer(copy)
        if isinstance(copy_last, keras.layers.Softmax):
            raise ValueError("a Softmax layer cannot be switched off in place")
        copy_last.activation = keras.activations.linear
    except (ValueError, TypeError, NotImplementedError):
        return model, "log-probabilities"
    probe = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    expected = np.asarray(model(probe, training=False))
    got = np.asarray(keras.ops.softmax(copy(probe, training=False)))
    if not np.allclose(expected, got, atol=1e-4):
        return model, "log-probabilities"
    return copy, "softmax stripped"


# Name prefixes that keras.applications gives its models, and their preprocessing.
_APPLICATION_PREFIXES = {
    "mobilenetv2": "mobilenet_v2", "mobilenetv3": "mobilenet_v3", "mobilenet": "mobilenet",
    "resnet50v2": "resnet_v2", "resnet101v2": "resnet_v2", "resnet152v2": "resnet_v2",
    "resnet": "resnet", "vgg": "vgg16", "densenet": "densenet", "efficientnet": "efficientnet",
    "inception_v3": "inception_v3", "inception_resnet_v2": "inception_resnet_v2",
    "xception": "xception", "nasnet": "nasnet", "convnext": "convnext", "regnet": "regnet",
}


def _outputs_probabilities(model, shape) -> bool:
    """Whether outputs on random inputs are rows of probabilities (a softmax we cannot see, as
    inside a SavedModel)."""
    probe = np.random.default_rng(1).uniform(0, 1, (4, *shape)).astype("float32")
    out = np.asarray(model(probe, training=False))
    return bool((out >= 0).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-4))


def _guess_input_range(model) -> str:
    """0-255 when the model rescales its own input; a keras.applications backbone's own mode
    when one is recognised by name (at the top or as the first nested model); else 0-1."""
    import keras

    first_layers = [layer for layer in model.layers[:3]
                    if not isinstance(layer, keras.layers.InputLayer)]
    for layer in first_layers:
        if isinstance(layer, keras.layers.Rescaling):
            return "0-255"
    for candidate in [model, *first_layers]:
        name = candidate.name.lower()
        for prefix, application in _APPLICATION_PREFIXES.items():
            if name.startswith(prefix):
                return application
    return "0-1"
