"""Run a Keras 3 functional graph with every layer replaced by its LRP counterpart.

Linear layers (Dense, Conv, DepthwiseConv, SeparableConv) take the composite's rule, with a
following BatchNormalization folded in; element-wise activations and unfolded affine layers
(ReLU, ReLU6, Rescaling, BatchNormalization) pass relevance on unchanged (Zennit's ``Pass``);
pooling, Add, Concatenate (and Inception-ResNet's scaled residual sum) and shape layers keep
their gradient, which already splits relevance by contribution (max pooling: to the winner).
Nested models are walked recursively, and the custom layers listed in ``custom.py``
(keras-hub's blocks) through their own ``call``, MobileNetV5's CondConv block through its
mixed kernel (``condconv.py``). Any other layer is an error naming it: a map
through a layer the rules do not cover would be wrong silently.

The walk also follows the tensors that are still "the input" (reached from it through
element-wise and shape layers only): the first linear layer that reads one gets the z-box rule,
with bounds that are the images 0 and 1 sent through the same layers, and its relevance is
mapped back to the pixels through the shape layers alone (``shadow``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.errors import AuditorError
from auditor.inputs.layers import is_model
from auditor.methods.attribution.lrp.canonize import (
    activation_plan,
    fold_plan,
    has_activation,
    is_linear_layer,
    is_rectifier,
    linear_steps,
)
from auditor.methods.attribution.lrp.condconv import cond_conv, is_cond_conv
from auditor.methods.attribution.lrp.constant import (
    attention,
    gated_product,
    is_gate_activation,
    layer_norm,
    rms_norm,
)
from auditor.methods.attribution.lrp.custom import (
    is_constant_lookup,
    is_rms_norm,
    is_walked,
    own_call,
    swapped,
)
from auditor.methods.attribution.lrp.rules import Composite, ZBox, linear_output


def _layer_groups():
    import keras

    L = keras.layers
    shape = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D,
             L.Cropping3D, L.Reshape, L.Flatten, L.Permute, L.Dropout, L.SpatialDropout1D,
             L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise, L.GaussianDropout,
             L.AlphaDropout, L.ActivityRegularization, L.Identity, *_convnext_layers()[1:])
    gradient = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
                L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
                L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
                L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.Add, L.Subtract, L.Average,
                L.Maximum, L.Minimum, L.Concatenate, L.UpSampling1D, L.UpSampling2D,
                *_convnext_layers()[2:], *_mean(), *_applications_sums())
    elementwise = (L.ReLU, L.LeakyReLU, L.ELU, L.Activation, L.Rescaling, L.Normalization,
                   L.BatchNormalization, *_convnext_layers()[:1])
    return shape, gradient, elementwise


def _convnext_layers() -> tuple:
    """keras.applications ConvNeXt's own layers, not exported by Keras (found by module):
    ``LayerScale`` multiplies each channel by a weight (element-wise, so relevance passes as
    through a Rescaling), ``StochasticDepth`` is the identity at inference, and its residual
    ``inputs + x`` is the operation ``ops.add`` (a sum, passed like ``layers.Add``); a slice
    ``x[:, 0]`` (keras-hub's class-token head, the operation ``GetItem``) keeps its gradient."""
    try:
        from keras.src.applications.convnext import LayerScale, StochasticDepth
        from keras.src.ops.numpy import Add, GetItem
    except ImportError:  # another Keras layout: the layers stay unknown, LRP says so
        return ()
    return LayerScale, StochasticDepth, Add, GetItem


def _mean() -> tuple:
    """The operation ``ops.mean`` (keras-hub Swin's head pools its tokens with it): linear,
    its gradient splits relevance by contribution as average pooling's does."""
    try:
        from keras.src.ops.numpy import Mean
    except ImportError:
        return ()
    return (Mean,)


def _applications_sums() -> tuple:
    """keras.applications' other unexported layer: Inception-ResNet's ``CustomScaleLayer``,
    the residual ``x + scale * r``, a weighted sum whose gradient splits relevance by
    contribution as ``layers.Add`` does."""
    try:
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    except ImportError:  # another Keras layout: the layer stays unknown, LRP says so
        return ()
    return (CustomScaleLayer,)


NONNEGATIVE_ACTIVATIONS = ("relu", "relu6", "sigmoid", "hard_sigmoid", "softplus", "exponential")


def _nonnegative_output(op) -> bool:
    """Whether the layer's output is >= 0 whatever its input (a ReLU, a sigmoid)."""
    import keras

    if isinstance(op, keras.layers.ReLU):
        return not op.negative_slope and op.threshold >= 0
    return getattr(getattr(op, "activation", None), "__name__", "") in NONNEGATIVE_ACTIVATIONS


def passed(x, y):
    """``y`` in the forward pass; backward, the gradient times ``y / x``, so that relevance
    ``x * grad`` reaching ``x`` equals that at ``y`` (computed in the backward pass only)."""
    import tensorflow as tf

    @tf.custom_gradient
    def route(value):
        return tf.identity(y), lambda c: c * tf.math.divide_no_nan(y, value)

    return route(x)


def _is_plain_relu(op) -> bool:
    """A ReLU's gradient already passes relevance on unchanged: no need for ``passed``."""
    import keras

    if isinstance(op, keras.layers.ReLU):
        return (op.max_value is None and not op.negative_slope and not op.threshold)
    return getattr(getattr(op, "activation", None), "__name__", "") == "relu"


@dataclass
class InputLevel:
    """A tensor that is still the input: its shape-only image of the input, and its bounds."""

    shadow: object
    low: object
    high: object


@dataclass
class FirstLayer:
    """What the z-box layer read: its input, bounds (all watched) and the input's shadow."""

    a: object
    low: object
    high: object
    shadow: object


@dataclass
class Walk:
    composite: Composite
    tape: object
    level: dict = field(default_factory=dict)  # id(tensor) -> (tensor, InputLevel)
    first: list = field(default_factory=list)
    nonneg: dict = field(default_factory=dict)  # id(tensor) -> tensor, for tensors known >= 0
    gates: dict = field(default_factory=dict)  # id(tensor) -> tensor, a sigmoid's output
    opaque: dict = field(default_factory=dict)  # id(tensor) -> (tensor, why LRP cannot pass it)
    inside: int = 0  # how many walked custom layers the walk is in (their gates are constant)

    def start(self, x, low, high, nonneg: bool = False):
        self.level[id(x)] = (x, InputLevel(x, low, high))
        if nonneg:
            self.nonneg[id(x)] = x

    def _is_nonneg(self, *tensors) -> bool:
        import tensorflow as tf

        flat = tf.nest.flatten(tensors)
        return bool(flat) and all(self.nonneg.get(id(t)) is t for t in flat)

    def _keep_nonneg(self, y, known: bool):
        if known:
            self.nonneg[id(y)] = y
        return y

    def run(self, model, x):
        """The model's output on ``x`` through the LRP layers."""
        graph = model._functional if hasattr(model, "_functional") else model
        if graph is None or not hasattr(graph, "_run_through_graph"):
            raise AuditorError(f"LRP needs a functional or built Sequential model; "
                               f"'{model.name}' is neither")
        if len(graph.inputs) != 1:
            raise AuditorError(f"LRP supports models with one input; '{model.name}' has "
                               f"{len(graph.inputs)}")
        folds = fold_plan(graph)
        fused = activation_plan(graph, folds)
        skipped = {id(op) for op in (*folds.values(), *fused.values())}
        out = graph._run_through_graph(
            [x], operation_fn=lambda op: self.guarded(op, folds, fused, skipped))
        return out[0] if isinstance(out, list | tuple) and len(out) == 1 else out

    def check(self, output) -> None:
        """The error of the layer LRP cannot pass, if relevance would flow through one
        (anywhere but into a gate, which takes none)."""
        reason = self._opaque_in([output])
        if reason is not None:
            raise AuditorError(reason)

    def _opaque_in(self, args) -> str | None:
        """Why relevance cannot flow back through one of ``args``, or None."""
        import tensorflow as tf

        for t in tf.nest.flatten(args):
            entry = self.opaque.get(id(t))
            if entry is not None and entry[0] is t:
                return entry[1]
        return None

    def guarded(self, op, folds, fused, skipped):
        """The op's LRP counterpart; an op LRP cannot pass, or one reading such an op's output,
        runs as it is with its output marked (``check`` decides whether that matters)."""
        import keras

        try:
            lrp, reason = self.wrap(op, folds, fused, skipped), None
        except AuditorError as exc:
            lrp, reason = None, str(exc)

        def call(*args, **kwargs):
            upstream = self._opaque_in(args)
            if lrp is not None and (upstream is None or isinstance(op, keras.layers.Multiply)):
                return lrp(*args, **kwargs)
            return self._opaque_out(op(*args, **kwargs), upstream or reason)

        return call

    def _opaque_out(self, y, reason: str):
        """``y`` (a tensor, or a layer's tuple of them, as keras-hub's DeiT encoder returns)
        with no gradient, each tensor marked opaque for ``reason``."""
        import tensorflow as tf

        y = tf.nest.map_structure(tf.stop_gradient, y)
        for tensor in tf.nest.flatten(y):
            self.opaque[id(tensor)] = (tensor, reason)
        return y

    def wrap(self, op, folds, fused, skipped):
        import keras

        shape, gradient, elementwise = _layer_groups()
        if isinstance(op, keras.layers.Multiply):
            return lambda *args, **kwargs: self.multiply(op, args[0])
        if isinstance(op, keras.layers.LayerNormalization):
            return lambda x, *args, **kwargs: layer_norm(op, x)
        if is_rms_norm(op):
            return lambda x, *args, **kwargs: rms_norm(op, x)
        if isinstance(op, keras.layers.MultiHeadAttention):
            return lambda *args, **kwargs: attention(op, *args, **kwargs)
        if is_model(op):
            return lambda x, *args, **kwargs: self.run(op, x)
        if is_cond_conv(op):
            return lambda x, *args, **kwargs: cond_conv(self, op, x)
        if is_walked(op):
            return lambda *args, **kwargs: self.walk_into(op, args, kwargs)
        if is_constant_lookup(op):
            return op
        if id(op) in skipped:  # folded into, or applied by, the linear layer before it
            return lambda x, *args, **kwargs: x
        if is_linear_layer(op):
            activation = op if is_rectifier(op) else fused.get(id(op))
            return lambda x, *args, **kwargs: self.linear(op, x, folds.get(id(op)), activation)
        if isinstance(op, elementwise):
            self._check_activation(op)
            return lambda x, *args, **kwargs: self.elementwise(op, x)
        if isinstance(op, shape + gradient):
            return lambda *args, **kwargs: self.plain(op, isinstance(op, shape), args, kwargs)
        raise AuditorError(f"LRP cannot propagate relevance through layer '{op.name}' "
                           f"({type(op).__name__}); use a gradient-based method for this model")

    def walk_into(self, op, args, kwargs):
        """A listed custom layer (``custom.py``): its own ``call`` with its sub-layers swapped
        for their LRP counterparts and its gates held constant; opaque if any sub-layer was."""
        import inspect

        accepted = inspect.signature(op.call).parameters
        before = len(self.opaque)
        self.inside += 1
        try:
            with swapped(op, lambda sub: self.guarded(sub, {}, {}, set())):
                y = own_call(op)(*args, **{k: v for k, v in kwargs.items() if k in accepted})
        finally:
            self.inside -= 1
        if len(self.opaque) > before:
            y = self._opaque_out(y, list(self.opaque.values())[-1][1])
        return y

    @staticmethod
    def _check_activation(op) -> None:
        name = getattr(getattr(op, "activation", None), "__name__", "")
        if name in ("softmax", "log_softmax"):
            raise AuditorError(f"LRP cannot propagate relevance through the {name} of layer "
                               f"'{op.name}' inside the model")

    def _at_input(self, x):
        entry = self.level.get(id(x))
        return entry[1] if entry is not None and entry[0] is x else None

    def _mark(self, y, level: InputLevel) -> None:
        self.level[id(y)] = (y, level)

    def _known(self, table, t) -> bool:
        return table.get(id(t)) is t

    def multiply(self, op, operands):
        """A gated product (``constant.py``): relevance to the signal, none to the gates."""
        def is_gate(t):
            return self._known(self.gates, t) or self._opaque_in([t]) is not None

        reasons = [self._opaque_in([t]) for t in operands]
        if all(reasons):  # no signal LRP can pass: the product is as opaque as its operands
            import tensorflow as tf

            y = tf.stop_gradient(op(operands))
            self.opaque[id(y)] = (y, reasons[0])
            return y
        return self._keep_nonneg(gated_product(op, list(operands), is_gate),
                                 self._is_nonneg(operands))

    def _keep_gate(self, y, op):
        """A gate's output, noted; inside a walked layer held constant (``custom.py``)."""
        if is_gate_activation(op):
            if self.inside:
                import tensorflow as tf

                y = tf.stop_gradient(y)
            self.gates[id(y)] = y
        return y

    def elementwise(self, op, x):
        import tensorflow as tf

        y = op(x)
        y = y if _is_plain_relu(op) else passed(x, y)
        level = self._at_input(x)
        if level is not None:  # marked on the tensor the next layer reads
            lo, hi = op(level.low), op(level.high)
            self._mark(y, InputLevel(level.shadow, tf.minimum(lo, hi), tf.maximum(lo, hi)))
        return self._keep_gate(self._keep_nonneg(y, _nonnegative_output(op)), op)

    def plain(self, op, is_shape: bool, args, kwargs):
        import keras

        y = op(*args, **kwargs)
        level = self._at_input(args[0]) if len(args) == 1 and is_shape else None
        if level is not None:
            self._mark(y, InputLevel(op(level.shadow), op(level.low), op(level.high)))
        signed = isinstance(op, keras.layers.Subtract | keras.layers.Minimum)
        return self._keep_nonneg(y, not signed and self._is_nonneg(args))

    def linear(self, layer, x, bn, rectifier=None, steps=None):
        """The layer's rule (z-box at the first layer), with a ReLU/ReLU6 ``rectifier`` after
        it (its own activation or the next layer) applied inside the rule's ratio; ``steps``
        instead of the layer's own linear steps (CondConv's mixed kernel, ``condconv.py``)."""
        steps = linear_steps(layer, bn) if steps is None else steps
        level = self._at_input(x)
        a, nonneg, scaled = x, self._is_nonneg(x), self.composite.relative
        for i, step in enumerate(steps):
            if i == 0 and level is not None and self.composite.first == "zbox":
                rule, a = self._zbox(a, level, step.mixes_channels)
            else:
                rule = self.composite.dense if step.kind == "dense" else self.composite.conv
            last = i == len(steps) - 1
            z, zm, eps = rule(step.apply, a, step.kernel, step.bias, nonneg and i == 0,
                              last and rectifier is not None)
            if last and rectifier is not None:
                activate = rectifier.activation if rectifier is layer else rectifier
                return self._keep_nonneg(linear_output(z, zm, eps, activate(z), scaled), True)
            a = linear_output(z, zm, eps, scaled=scaled)
        if has_activation(layer):
            y = layer.activation(a)
            a = y if _is_plain_relu(layer) else passed(a, y)
        return self._keep_gate(self._keep_nonneg(a, _nonnegative_output(layer)), layer)

    def _zbox(self, x, level: InputLevel, stacked: bool):
        import tensorflow as tf

        a = tf.identity(tf.stop_gradient(x))
        low = tf.broadcast_to(level.low, tf.shape(a))
        high = tf.broadcast_to(level.high, tf.shape(a))
        for tensor in (a, low, high):
            self.tape.watch(tensor)
        self.first.append(FirstLayer(a, low, high, level.shadow))
        return ZBox(low, high, stacked), a
