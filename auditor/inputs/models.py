"""Load a Keras classifier into a ModelHandle: a logits function over display-space images.

Everything downstream (prediction, attribution, input optimisation) works on images in display
space, float32 in [0, 1], shape (N, H, W, C). The handle maps them to what the model expects
(its value range or keras.applications preprocessing) and returns logits: a final softmax is
stripped on a copy, so that saliency is never flattened by a saturated softmax.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from auditor.errors import ModelError

DEMO_MODEL = "demo"
# A model a Python caller holds in memory, with no file: ``memory:NAME`` names it in a run (the
# Keras callback's audited epochs, ``memory:epoch-0004``), as ``memory:NAME`` names in-memory data.
MEMORY_MODEL = "memory:"
# How a handle's logits were obtained from the model's outputs.
OUTPUTS = ("logits", "softmax stripped", "log-probabilities", "binary logit", "relu outputs",
           "sigmoid stripped")
# What the outputs mean: one class per image (softmax or logits over the classes), or one
# independent yes/no per label (several sigmoid units: a multi-label head).
SINGLE_LABEL, MULTI_LABEL = "single-label", "multi-label"

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
NO_HINT = "no hint in the model"
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
    logits_model: object  # the model, or a copy: its final softmax stripped, its depthwise
    # grouped convolutions run depthwise (inputs/depthwise.py)
    path: str
    name: str
    sha256: str
    input_shape: tuple[int, int, int]
    num_classes: int
    transform: InputTransform
    output: str  # how the logits were obtained: one of OUTPUTS
    compiled: dict = field(default_factory=dict, repr=False)  # tf.functions traced per model
    distribution: object = None  # distribute.Distribution for batched steps; None: one device
    input_range_hint: tuple[str, str] = ("0-1", NO_HINT)  # (range, why)
    input_range_source: str = "hint"  # "hint" (not probed), "probe", "flag" or "model" (its
    # own keras-hub preprocessor states it)
    input_range_probe: list[dict] | None = None  # [{range, accuracy, ...}] when probed
    input_range_probe_samples: int | None = None  # images the probe ran on
    display_shift: float = 0.0  # display images span [s, 1 + s] (a shifted copy's, #15)
    task: str = SINGLE_LABEL  # MULTI_LABEL: num_classes independent sigmoid labels
    whole: object = None  # the model as read, when ``model`` is one output's sub-model
    other_transforms: dict = field(default_factory=dict, repr=False, init=False)  # set_transform

    @property
    def multilabel(self) -> bool:
        return self.task == MULTI_LABEL

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

    @property
    def logits_fn(self):
        """``logits`` compiled once per model and input transform; the prediction pass and
        sections share it, and so does a copy that is the model's twin (inputs/traces.py: the
        Clever Hans copies' re-predictions call the model's trace with their weights). Its
        signature takes any number of images, so that a batch of another size (the last, a
        section's) does not trace it again (seconds to tens of seconds on a large model). It is
        the first columns of the one forward pass (``forward_pass``), whose penultimate
        features cost a copy of a row, not a second trace of the model."""
        fn, width = self.forward_pass
        if not width:
            return fn
        classes = self.num_classes
        return lambda images: fn(images)[:, :classes]

    @property
    def forward_pass(self):
        """(fn, feature width): ``fn`` maps any number of display-space images to their logits
        and, after them in the same row, their flattened penultimate features (the input of
        the final layer), in one pass of one model with two outputs, compiled once per model
        and transform through inputs/traces.py; width 0 and the plain logits when the model
        cannot be split before its final layer (a subclassed model, a SavedModel wrapper)."""
        import tensorflow as tf

        from auditor.inputs.traces import compiled

        if "feature width" not in self.compiled:
            self.compiled["feature width"] = _split(self.logits_model)[1]
        width = self.compiled["feature width"]
        # one name, "logits", whether or not the features come with them (inputs/traces.py)
        key, make = (("logits", "and features"), _logits_and_features) if width else (
            ("logits", "alone"), _logits)
        # straight-line Python: autograph only slows the trace
        fn = compiled(self, key, make, [tf.TensorSpec((None, *self.input_shape), tf.float32)],
                      autograph=False)
        return fn, width

    def set_transform(self, transform: InputTransform) -> None:
        """Map display space to the model's input with ``transform`` from now on. Compiled
        functions hold the transform as constants: those of the previous one are set aside
        (``other_transforms``) and those of this one, when it was used before, taken back; a
        transform that only renames the map (the probe's '0-255' for a 'convnext' hint) keeps
        them, with nothing traced again."""
        if transform == self.transform:
            return
        if (transform.scale, transform.offset, transform.reverse_channels) == (
                self.transform.scale, self.transform.offset, self.transform.reverse_channels):
            self.transform = transform  # another name for the same map: the same constants
            return
        self.other_transforms[self.transform] = self.compiled
        self.compiled = self.other_transforms.pop(transform, {})
        self.transform = transform

    def assign_weights(self, weights: list, path: str | None = None,
                       sha256: str | None = None) -> None:
        """The weights of a model of this architecture (``keras.Model.get_weights()`` of the
        model the handle's file was saved from) into the handle's model and its logits copy,
        in place: the compiled functions read the variables, so they stay valid. A binary
        head's one unit z becomes its two logits (-z/2, z/2), as ``binary_logits`` made them.
        ``path`` and ``sha256``: what the weights are (a file saved with them and its hash, or
        ``memory:NAME`` and ``weights_sha256``), so that ``reused`` hashes no file again."""
        if path is not None:
            self.path, self.name, self.sha256 = str(path), model_name(str(path)), sha256
        (self.whole or self.model).set_weights(weights)
        mine = {id(variable) for variable in self.model.weights}
        if all(id(variable) in mine for variable in self.logits_model.weights):
            return  # the logits model is cut from the model: its variables are the model's
        for old, new in zip(self.model.weights, self.logits_model.weights, strict=True):
            value = np.asarray(old)
            if tuple(new.shape) != value.shape:  # only the binary head's unit changes shape
                value = np.concatenate([-value / 2, value / 2], axis=-1)
            new.assign(value)

    def describe(self) -> dict:
        """The ``model`` block of summary.json."""
        return {
            "path": self.path, "name": self.name, "sha256": self.sha256, "params": self.params,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "input_range": self.transform.name, "output": self.output, "task": self.task,
            "input_range_source": self.input_range_source,
            "input_range_hint": {"range": self.input_range_hint[0],
                                 "reason": self.input_range_hint[1],
                                 "overridden": self.hint_overridden},
            "input_range_probe": self.input_range_probe,
            "input_range_probe_samples": self.input_range_probe_samples,
        }

    @property
    def hint_overridden(self) -> bool:
        """Whether the model hinted at a range (a layer, a name) and the probe chose another."""
        if self.input_range_source != "probe" or self.input_range_hint[1] == NO_HINT:
            return False
        chosen = [row for row in self.input_range_probe or []
                  if row["range"] == self.transform.name]
        return not (chosen and chosen[0]["hint"])


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


def weights_sha256(architecture: str, weights: list) -> str:
    """Content hash of a model held in memory: its ``architecture`` (the model's JSON config)
    and every weight's dtype, shape and bytes, in order. Two models with the same
    architecture and weights hash alike; it is not the hash of a file saved from them."""
    digest = hashlib.sha256(architecture.encode())
    for weight in weights:
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype.str}{weight.shape}".encode())
        digest.update(weight.data)
    return digest.hexdigest()


def load_model(path: str, input_range: str = "auto", unsafe_load: bool = False,
               output: str | None = None) -> ModelHandle:
    """Load a .keras / .h5 file or a SavedModel folder ('demo' trains or reuses the demo CNN).

    ``input_range='auto'`` starts from the model's own hint (a Rescaling layer, a
    keras.applications name); the audit then probes the candidates on data
    (``auditor.predict.input_range``). ``output`` names one output of a multi-output model.
    """
    from auditor.inputs.depthwise import run_depthwise

    if path == DEMO_MODEL:
        from auditor.inputs.demo import demo_model_path

        path = str(demo_model_path())
    read = _read_model(path, unsafe_load)
    model = select_output(read, path, output)
    shape = _image_input_shape(model, path)
    _check_output_shape(model, path)
    task = MULTI_LABEL if is_multi_label(model) else SINGLE_LABEL
    logits_model, how = (sigmoid_head(model, shape) if task == MULTI_LABEL
                         else logits_head(model, shape))
    logits_model = run_depthwise(logits_model, shape)
    num_classes = int(logits_model.outputs[0].shape[-1])
    transform, source, hint = range_as_loaded(model, input_range, shape[-1])
    return ModelHandle(model=model, logits_model=logits_model, path=str(path),
                       name=model_name(path), sha256=file_sha256(path), input_shape=shape,
                       num_classes=num_classes, transform=transform, output=how,
                       input_range_hint=hint, input_range_source=source, task=task,
                       whole=read if read is not model else None)


def model_name(path: str) -> str:
    """What a run calls the model: its file's stem, its SavedModel folder's name, or the NAME
    of a model held in memory (``memory:NAME``)."""
    if path.startswith(MEMORY_MODEL):
        return path[len(MEMORY_MODEL):]
    return Path(path.rstrip("/")).stem if not Path(path).is_dir() else Path(path).name


def range_as_loaded(model, input_range: str, channels: int):
    """The handle's input transform, where it came from and the model's hint, before any
    probe: ``input_range`` when given (``flag``), the model's own keras-hub preprocessor
    (``model``), else the hint, which the audit's probe starts from."""
    hint = input_range_hint(model)
    own = preprocessor_transform(model, channels)
    source = "flag" if input_range != "auto" else "model" if own else "hint"
    transform = (own if source == "model" else
                 input_transform(hint[0] if input_range == "auto" else input_range, channels))
    if own is not None:
        hint = (own.name, preprocessor_reason(model))
    return transform, source, hint


def reused(handle: ModelHandle, path: str, input_range: str = "auto",
           sha256: str | None = None) -> ModelHandle:
    """``handle``, as ``load_model(path, input_range)`` would give it, for a file saved with
    the weights the handle holds (``assign_weights``) from a model of the same architecture:
    the Keras callback's one audit copy, audited at every epoch. Its compiled functions, and
    the time and FLOPs of a pass (``predict/plan.py``), are kept: the next audit traces
    nothing. The input range starts again from what loading gives (the probe, when it runs,
    sets it as on a fresh load, its compiled pass kept too). A handle that already names
    ``path`` (``assign_weights`` with its path and hash) keeps its hash: nothing is hashed
    again, and a model held in memory has no file to hash."""
    transform, source, hint = range_as_loaded(handle.model, input_range,
                                              handle.input_shape[-1])
    if sha256 is not None or str(path) != handle.path:
        handle.path, handle.name = str(path), model_name(str(path))
        handle.sha256 = sha256 or file_sha256(path)
    handle.set_transform(transform)
    handle.input_range_source, handle.input_range_hint = source, hint
    handle.input_range_probe = handle.input_range_probe_samples = None
    return handle


PREPROCESSOR = "keras-hub preprocessor"


def _image_converter(model):
    """The image converter of a keras-hub task's own preprocessor (an ``ImageClassifier``
    saved with its preprocessor), or None."""
    preprocessor = getattr(model, "preprocessor", None)
    return getattr(preprocessor, "image_converter", None) if preprocessor is not None else None


def preprocessor_transform(model, channels: int) -> InputTransform | None:
    """The input transform a keras-hub task states itself: its image converter maps pixel values
    in [0, 255] to ``pixels * scale + offset`` (per channel or one number, either may be None).
    Display space is [0, 1], so the transform is ``display * 255 * scale + offset``. The
    converter's resizing is not needed: the audit resizes images to the model's input."""
    converter = _image_converter(model)
    if converter is None:
        return None

    def per_channel(value, default: float) -> tuple[float, ...]:
        values = np.ravel(np.asarray(default if value is None else value, np.float64))
        return tuple(float(v) for v in np.broadcast_to(values, (channels,)))

    scale = per_channel(getattr(converter, "scale", None), 1.0)
    offset = per_channel(getattr(converter, "offset", None), 0.0)
    return InputTransform(PREPROCESSOR, tuple(255.0 * s for s in scale), offset)


def preprocessor_reason(model) -> str:
    converter = _image_converter(model)
    return (f"the model's own keras-hub preprocessor ({type(converter).__name__}: scale "
            f"{getattr(converter, 'scale', None)}, offset {getattr(converter, 'offset', None)}, "
            "applied to pixels in 0-255)")


def select_output(model, path: str, output: str | None):
    """The model itself, or the sub-model that ends at the output named ``output``; a model
    with several outputs and no choice is an error that names them."""
    import keras

    outputs = list(getattr(model, "outputs", None) or [])
    names = output_names(model)
    if output is None:
        if len(outputs) > 1:
            raise ModelError(f"model '{path}' has {len(outputs)} outputs ({', '.join(names)}); "
                             "choose the classifier's with --output NAME (spec key 'output')")
        return model
    if output not in names:
        raise ModelError(f"model '{path}' has no output '{output}'; its outputs are: "
                         f"{', '.join(names) or 'none that can be named'}")
    if len(outputs) == 1:
        return model
    return keras.Model(model.inputs[0], outputs[names.index(output)], name=model.name)


def output_names(model) -> list[str]:
    """The names of a model's outputs: the layers that produce them."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) == len(getattr(model, "outputs", None) or []):
        return [str(n) for n in names]
    return [t._keras_history.operation.name if hasattr(t, "_keras_history") else f"output_{i}"
            for i, t in enumerate(model.outputs)]


def _read_model(path: str, unsafe_load: bool):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    # keras-hub Swin's blocks pass their shifted-window attention bias to WindowAttention as
    # ``mask=``, the keyword Keras 3 reserves for masking, so Keras warns on every eager call
    # that a mask is lost; the bias does reach the layer's call (keras-hub 0.32; measured)
    warnings.filterwarnings("ignore", r"Layer '.*' \(of type WindowAttention\) was passed an "
                            "input with a mask attached", UserWarning)

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
        raise ModelError(f"cannot read model '{path}': {_first_line(message)}") from None
    except (OSError, TypeError, KeyError, zipfile.BadZipFile) as exc:
        _refuse_unknown_classes(p)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"cannot read model '{path}' ({first}); is it a Keras model "
                         "file?") from None


def _first_line(message: str) -> str:
    """A Keras load error's first line, with the line it announces when it ends in a colon
    ("...could not be loaded. Example error message for object <Conv2D name=top_conv>:" is
    followed by what went wrong with that layer)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["unknown error"]
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


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


# Packages whose classes Keras itself imports by module when loading in safe mode: installed
# libraries, not code in the file (keras.saving's own allowlist).
KNOWN_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp")


def _known_class(keras, name: str, module: str | None, registered: str) -> bool:
    """Keras's own classes (by module, or by name in a Keras 2 config), classes of the installed
    Keras libraries (keras-hub...) and registered ones."""
    import importlib

    if name == "__lambda__" or keras.saving.get_registered_object(registered) is not None:
        return True  # __lambda__: the function of a Lambda layer, which safe mode refuses
    if module is not None:
        if module.split(".")[0] not in KNOWN_PACKAGES:
            return False
        try:  # the import keras.saving itself does in safe mode for these packages
            return isinstance(getattr(importlib.import_module(module), name, None), type)
        except ImportError:
            return False
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


def _check_output_shape(model, path: str) -> None:
    outputs = model.outputs
    if len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        raise ModelError(f"model '{path}' must have one output of shape (batch, classes), got "
                         f"{[tuple(o.shape) for o in outputs]}")


def is_multi_label(model) -> bool:
    """Several sigmoid outputs are a multi-label head: one independent yes/no per label (a
    Dense(K, activation="sigmoid"), or a separate sigmoid Activation layer). One sigmoid unit is
    a binary classifier, which the audit reads as two classes."""
    return (int(model.outputs[0].shape[-1]) > 1
            and _activation_name(_final_layer(model)) == "sigmoid")


def _final_layer(model):
    """The layer that produces the output, looking inside nested models."""
    layer = model.layers[-1]
    while hasattr(layer, "layers") and layer.layers:
        layer = layer.layers[-1]
    return layer


def _activation_name(layer) -> str | None:
    """'softmax', 'sigmoid', 'relu', 'linear'... for a layer that applies one, else None."""
    import keras

    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def logits_head(model, shape):
    """A model whose outputs are one logit per class, and how it was obtained (OUTPUTS).

    A final softmax is stripped (a separate Softmax or Activation layer is cut off, a Dense's
    activation switched off on a copy); a single sigmoid or linear unit becomes two classes; a
    ReLU head is kept as it is (its outputs are the scores the model ranks classes by).
    """
    import keras

    last = _final_layer(model)
    separate = (last is model.layers[-1] and _activation_name(last) in ("softmax", "sigmoid")
                and isinstance(last, (keras.layers.Softmax, keras.layers.Activation)))
    if separate:  # cut the activation layer off: the model then ends at its input
        head = keras.Model(model.inputs[0], last.input, name=model.name)
        if int(model.outputs[0].shape[-1]) == 1:
            return _verified(model, binary_logits(head, shape), shape, "binary logit")
        return _verified(model, head, shape, "softmax stripped")
    if int(model.outputs[0].shape[-1]) == 1:
        return _verified(model, binary_logits(model, shape), shape, "binary logit")
    activation = _activation_name(last)
    if activation == "softmax":
        return strip_softmax(model, shape)
    if activation == "relu":
        return model, "relu outputs"
    return model, ("log-probabilities" if _outputs_probabilities(model, shape) else "logits")


def _verified(model, logits_model, shape, how: str):
    """``logits_model`` when its softmax reproduces the model's outputs (sigmoid for one unit),
    else the model itself read as probabilities."""
    import keras

    probe = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    expected = np.asarray(model(probe, training=False))
    got = np.asarray(keras.ops.softmax(logits_model(probe, training=False)))
    if expected.shape[-1] == 1:
        sigmoid = _activation_name(_final_layer(model)) == "sigmoid"
        expected = np.asarray(keras.ops.sigmoid(expected)) if not sigmoid else expected
        got = got[:, 1:]
    if np.allclose(expected, got, atol=1e-4):
        return logits_model, how
    if expected.shape[-1] == 1:
        raise ModelError("the model's single output unit could not be read as a binary logit; "
                         "save the model with a final Dense(1) or Dense(2) layer")
    return model, "log-probabilities"


def binary_logits(model, shape):
    """A copy whose one output unit z becomes two logits (-z/2, z/2): their softmax is exactly
    sigmoid(z), and the score difference between the classes is z, the unit's own logit."""
    import keras

    last = _final_layer(model)
    if not isinstance(last, keras.layers.Dense) or _activation_name(last) not in (
            "sigmoid", "linear"):
        raise ModelError(f"model '{model.name}' has one output unit, but its last layer is "
                         f"{type(last).__name__} with activation {_activation_name(last)}; a "
                         "binary classifier needs a final Dense(1) with sigmoid or no activation")

    def clone(layer):
        config = layer.get_config()
        if layer is last:
            return keras.layers.Dense.from_config({**config, "units": 2, "activation": "linear"})
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    halves = {id(last.kernel): lambda w: np.concatenate([-w / 2, w / 2], axis=-1)}
    if last.use_bias:
        halves[id(last.bias)] = lambda b: np.concatenate([-b / 2, b / 2])
    for old, new in zip(model.weights, copy.weights, strict=True):
        new.assign(halves.get(id(old), lambda w: w)(np.asarray(old)))
    return copy


def strip_softmax(model, shape):
    """A copy of the model whose final softmax activation is switched off, checked numerically.

    Returns (logits_model, how): 'softmax stripped' for the copy, 'log-probabilities' when it
    cannot be removed (the handle then takes the log, which keeps differences between classes
    exact).
    """
    import keras

    from auditor.inputs.copies import copy_model

    try:
        copy = copy_model(model)
        copy_last = _final_layer(copy)
        if isinstance(copy_last, keras.layers.Softmax):
            raise ValueError("a Softmax layer cannot be switched off in place")
        copy_last.activation = keras.activations.linear
    except (ValueError, TypeError, NotImplementedError, ModelError):
        return model, "log-probabilities"
    return _verified(model, copy, shape, "softmax stripped")


def sigmoid_head(model, shape):
    """A multi-label head's logits: the model cut before a separate sigmoid Activation layer, or
    a copy whose final Dense has its sigmoid switched off; checked numerically (the sigmoid of
    the logits must give the model's outputs). (logits_model, 'sigmoid stripped')."""
    import keras

    from auditor.inputs.copies import copy_model

    last = _final_layer(model)
    if last is model.layers[-1] and isinstance(last, keras.layers.Activation):
        head = keras.Model(model.inputs[0], last.input, name=model.name)
    else:
        try:
            head = copy_model(model)
            _final_layer(head).activation = keras.activations.linear
        except (ValueError, TypeError, NotImplementedError, ModelError) as exc:
            raise ModelError(f"the sigmoid of multi-label model '{model.name}' cannot be "
                             f"switched off on a copy ({exc}); save the model with a separate "
                             "Activation('sigmoid') layer after its last Dense") from None
    probe = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    expected = np.asarray(model(probe, training=False))
    got = np.asarray(keras.ops.sigmoid(head(probe, training=False)))
    if not np.allclose(expected, got, atol=1e-4):
        raise ModelError(f"the logits of multi-label model '{model.name}' could not be read "
                         "under its sigmoid; save the model with a final Dense(K) and a separate "
                         "Activation('sigmoid') layer")
    return head, "sigmoid stripped"


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


def input_range_hint(model) -> tuple[str, str]:
    """The input range the model itself suggests, and why: 0-255 when it rescales its own
    input; a keras.applications backbone's own mode when one is recognised by name (at the top
    or as the first nested model); else 0-1. A prior for the probe, not an answer."""
    import keras

    first_layers = [layer for layer in model.layers[:3]
                    if not isinstance(layer, keras.layers.InputLayer)]
    for layer in first_layers:
        if isinstance(layer, keras.layers.Rescaling):
            return "0-255", f"a leading Rescaling layer ('{layer.name}')"
    for candidate in [model, *first_layers]:
        name = candidate.name.lower()
        for prefix, application in _APPLICATION_PREFIXES.items():
            if name.startswith(prefix):
                return application, f"the keras.applications name '{candidate.name}'"
    return "0-1", NO_HINT


def _split(model):
    """(a model of the logits and the penultimate features, their width), or (None, 0) when
    the model cannot be split before its final layer."""
    import keras

    try:
        penultimate = model.layers[-1].input
        if any(penultimate is given for given in model.inputs):
            raise ValueError("no hidden layer before the final one")
        both = keras.Model(model.inputs, [model.outputs[0], penultimate])
        return both, int(np.prod(penultimate.shape[1:]))
    except (AttributeError, ValueError, TypeError, IndexError):
        return None, 0


def _logits(handle):
    def logits(images):
        return handle.logits(images)

    return logits


def _logits_and_features(handle):
    import tensorflow as tf

    both = _split(handle.logits_model)[0]

    def logits_and_features(x):
        out, hidden = both(handle.transform.to_model(x), training=False)
        if handle.output == "log-probabilities":
            out = tf.math.log(tf.clip_by_value(out, 1e-12, 1.0))
        return tf.concat([out, tf.reshape(hidden, [tf.shape(hidden)[0], -1])], axis=1)

    return logits_and_features
