"""The one optimisation loop: objective, parameterisation and transforms composed (after Lucid).

All images of a request are optimised together: every image carries its own target in the
objective's per-image arrays, so ten classes cost one forward and backward pass per step, not
ten. The loop goes through the audit's one batched path (``auditor.predict.batched.chunked``):
the images are cut into blocks that fit the memory budget, and each block is split across the
strategy's replicas, every replica running all the steps on its share. Images never interact
(the loss is a sum of per-image scores, Adam is elementwise and the model runs in inference
mode), so a share gets the images it would get in the whole batch.

The steps are one compiled loop per model, objective form and set of image forms (``Form``:
parameterisation, transforms, learning rate, blur), kept on the model handle, so a later request
of the same form traces nothing. Images of several forms (the section's regularised images and
its unregularised ones) are optimised in one loop, each row through its own form: one trace.
It is called for about a second of steps at a time (``auditor.predict.calls``), and a signal
noted in between stops the render there: a Python signal handler cannot run inside a compiled
call.
The random transforms draw from the Philox stream of ``tf.random.Generator.from_seed(seed)``
exactly as one generator over the whole batch did before the loop was split: every draw is the
whole batch's, of which a share keeps its own rows. So the images do not depend on the split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from auditor.errors import AuditorError
from auditor.inputs.layers import activations_and_logits
from auditor.methods.featureviz.transforms import Transform, compose, gaussian_blur
from auditor.predict.batched import chunked, rows_per_pass
from auditor.predict.calls import in_calls

DEFAULT_SNAPSHOTS = (0, 16, 64, 256, 1024)
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults
PHILOX = 1  # tf.random.Algorithm.PHILOX, the algorithm of Generator.from_seed
# A stateful Philox draw advances the generator's counter by 256 per value drawn (measured on
# TensorFlow 2.21: uniform([n]) moves the counter by 256 n), which SplitRandom replays.
COUNTER_STEP = 256


@dataclass
class Rendering:
    """Optimised images in display space, with snapshots of how they got there."""

    images: np.ndarray  # (N, H, W, C) in [0, 1]
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)  # step -> images, last too
    steps: int = 0
    seconds: float = 0.0
    chunks: list[tuple[int, float]] = field(default_factory=list)  # (steps, seconds) per call;
    # the first call of a new form also traces the step function

    def seconds_per_step(self) -> float:
        """Steady-state time per step: the chunks after the first (which may pay the tracing)."""
        later = self.chunks[1:] or self.chunks
        return sum(s for _, s in later) / max(sum(n for n, _ in later), 1)


class SplitRandom:
    """``uniform`` of one ``tf.random.Generator`` over the whole batch, seen from one share.

    ``stream`` is the generator's state (counter low, counter high, key) when the render began;
    ``draw`` counts the draws made since. Each call draws the whole batch's ``total`` values at
    that point of the stream and keeps the share's ``rows``.
    """

    def __init__(self, stream, draw, rows, total):
        self.stream, self.draw, self.rows, self.total = stream, draw, rows, total

    def uniform(self, shape, minval=0.0, maxval=1.0):
        import tensorflow as tf

        low = self.stream[0] + self.draw * self.total * COUNTER_STEP
        counter = tf.bitcast(tf.stack([low, self.stream[1]]), tf.uint64)
        key = tf.bitcast(self.stream[2:], tf.uint64)
        values = tf.raw_ops.StatelessRandomUniformV2(
            shape=tf.reshape(self.total, [1]), key=key, counter=counter, alg=PHILOX,
            dtype=tf.float32)
        self.draw += 1
        return tf.gather(values, self.rows) * (maxval - minval) + minval


class _CountDraws:
    """A stand-in generator that counts how many draws a transform makes per call."""

    def __init__(self):
        self.draws = 0

    def uniform(self, shape, minval=0.0, maxval=1.0):
        import tensorflow as tf

        self.draws += 1
        return tf.fill(shape, (minval + maxval) / 2)


def adam(values, m, v, gradient, iteration, learning_rate):
    """One step of Adam (Kingma and Ba 2015) as Keras computes it, on plain tensors."""
    import tensorflow as tf

    t = tf.cast(iteration, tf.float32)
    alpha = learning_rate * tf.sqrt(1 - tf.pow(BETA_2, t)) / (1 - tf.pow(BETA_1, t))
    m = m + (gradient - m) * (1 - BETA_1)
    v = v + (tf.square(gradient) - v) * (1 - BETA_2)
    return values - m * alpha / (tf.sqrt(v) + EPSILON), m, v


@dataclass(frozen=True)
class Form:
    """How one group of a render's images is optimised: its parameterisation, its random
    transforms (composed), Adam's learning rate, and a blur of the images every ``blur_every``
    steps (0: never). The images of several forms are optimised in one compiled loop, each
    row through its own form; the Adam step and the model's pass are the same for all."""

    param: object
    transforms: Transform
    learning_rate: float = 0.05
    blur_every: int = 0
    blur_sigma: float = 0.5

    @property
    def key(self) -> tuple:
        return (self.param.key, self.transforms.key, int(self.blur_every),
                float(self.blur_sigma))

    @property
    def size(self) -> int:
        """Parameter values per image."""
        return int(np.prod(self.param.value_shape))


def through_forms(forms: Sequence[Form], form_of, values, apply):
    """``apply(form_index, form, its rows' values, its rows' positions)`` for each form on the
    rows that take it, the results put back in row order. ``values`` are (N, D) flat
    parameter values, D the largest form's size: a row's first ``form.size`` values are its
    form's, the rest stay zero (their gradient is zero, so Adam never moves them)."""
    import tensorflow as tf

    if len(forms) == 1:  # one form: no partition to build
        return apply(0, forms[0], values, None)
    positions = tf.dynamic_partition(tf.range(tf.shape(values)[0]), form_of, len(forms))
    parts = tf.dynamic_partition(values, form_of, len(forms))
    return tf.dynamic_stitch(positions, [apply(f, form, part, positions[f]) for f, (form, part)
                                         in enumerate(zip(forms, parts, strict=True))])


def form_images(forms: Sequence[Form], form_of, values):
    """Display-space images of flat parameter ``values``, each row through its own form."""
    import tensorflow as tf

    def images(f, form, part, positions):
        return form.param.images(tf.reshape(part[:, :form.size], (-1, *form.param.value_shape)))

    return through_forms(forms, tf.convert_to_tensor(form_of, tf.int32),
                         tf.convert_to_tensor(values, tf.float32), images)


def flat_values(forms: Sequence[Form], form_of: np.ndarray, starts: Sequence[np.ndarray]):
    """The rows' parameter values, flat and zero-padded to the largest form's size (N, D)."""
    values = np.zeros((len(form_of), max(form.size for form in forms)), np.float32)
    for f, (form, start) in enumerate(zip(forms, starts, strict=True)):
        values[form_of == f, :form.size] = np.asarray(start, np.float32).reshape(len(start), -1)
    return values


def compiled_render(handle, objective, forms: Sequence[Form]):
    """The compiled loop for this objective's form and these forms, traced once per model and
    cached."""
    specs = tuple((a.dtype.str, a.shape[1:]) for a in objective.arrays)
    key = ("featureviz", objective.key, specs, objective.layers,
           tuple(form.key for form in forms))
    if key not in handle.compiled:
        handle.compiled[key] = _compile(handle, objective, tuple(forms))
    return handle.compiled[key]


def _stepper(handle, objective, forms: tuple[Form, ...]):
    """One Adam step of every row through its own form: the step of the compiled loop."""
    import tensorflow as tf

    tapped = activations_and_logits(handle, objective.layers)
    draws = []
    for form in forms:
        counting = _CountDraws()
        form.transforms(tf.fill((1, *handle.input_shape), 0.5), counting)
        draws.append(counting.draws)
    width = max(form.size for form in forms)

    def step(values, m, v, index, form_of, within, streams, totals, arrays, learning_rates):
        def transformed(f, form, part, positions):
            shaped = tf.reshape(part[:, :form.size], (-1, *form.param.value_shape))
            image = form.param.images(shaped)
            own = within if positions is None else tf.gather(within, positions)
            rng = SplitRandom(streams[f], index * draws[f], own, totals[f])
            return tf.stack([image, form.transforms(image, rng)], axis=1)

        def projected(f, form, part, positions):
            shaped = form.param.project(tf.reshape(part[:, :form.size],
                                                   (-1, *form.param.value_shape)))
            if form.blur_every > 0:
                shaped = tf.cond((index + 1) % form.blur_every == 0,
                                 lambda: form.param.values_of(gaussian_blur(
                                     form.param.images(shaped), form.blur_sigma)),
                                 lambda: shaped)
            flat = tf.reshape(shaped, (-1, form.size))
            return tf.pad(flat, [[0, 0], [0, width - form.size]])

        with tf.GradientTape() as tape:
            tape.watch(values)
            both = through_forms(forms, form_of, values, transformed)
            image = both[:, 0]
            activations, logits = tapped(both[:, 1])
            state = {"logits": logits, "image": image,
                     "layers": dict(zip(objective.layers, activations, strict=True))}
            loss = -tf.reduce_sum(objective(state, arrays))
        rates = tf.gather(learning_rates, form_of)[:, None]
        values, m, v = adam(values, m, v, tape.gradient(loss, values), index + 1, rates)
        return through_forms(forms, form_of, values, projected), m, v

    return step


def _compile(handle, objective, forms: tuple[Form, ...]):
    import tensorflow as tf

    step = _stepper(handle, objective, forms)
    width = max(form.size for form in forms)
    scalar = tf.TensorSpec([], tf.int64)
    rows = tf.TensorSpec([None], tf.int32)
    per_form = len(forms)
    arrays_spec = [tf.TensorSpec([None, *a.shape[1:]], tf.as_dtype(a.dtype))
                   for a in objective.arrays]

    # No autograph: the loop is written with tf.while_loop and tf.cond, and Keras 3 traces its
    # own steps unconverted too (its trainer's do_not_convert). Converting the model's Python
    # cost a third of the trace: the first call of MobileNetV3Small's loop (48 px, a trace and
    # a step) took 29 to 33 s with autograph and 21 to 24 s without, at a load of 9 to 11.
    @tf.function(autograph=False,
                 input_signature=[scalar, scalar, tf.TensorSpec([per_form], tf.float32),
                                  tf.TensorSpec([per_form, 3], tf.int64),
                                  tf.TensorSpec([per_form], tf.int64),
                                  tf.TensorSpec([None, 3, width], tf.float32), rows, rows,
                                  *arrays_spec])
    def run(first, count, learning_rates, streams, totals, state, form_of, within, *arrays):
        def body(index, values, m, v):
            return (index + 1, *step(values, m, v, index, form_of, within, streams, totals,
                                     arrays, learning_rates))

        _, values, m, v = tf.while_loop(lambda index, *_: index < first + count, body,
                                        (first, state[:, 0], state[:, 1], state[:, 2]))
        return tf.stack([values, m, v], axis=1)

    return run


@dataclass(frozen=True)
class Loop:
    """The loop's own settings: Adam's ``steps`` and ``learning_rate``, the steps whose images
    are kept (``snapshots``), and the ``seed`` of the transforms' draws. ``blur_every`` > 0
    blurs the images themselves (by ``blur_sigma``) every that many steps (Yosinski et al.
    2015), which slowly erases detail that no step keeps renewing."""

    steps: int = 256
    learning_rate: float = 0.05
    snapshots: Sequence[int] = DEFAULT_SNAPSHOTS
    blur_every: int = 0
    blur_sigma: float = 0.5
    seed: int = 0


def render(handle, objective, param, transforms: Sequence = (), *, start=None,
           count: int | None = None, loop: Loop = Loop()) -> Rendering:
    """Maximise ``objective`` over ``count`` images (or from the parameter values ``start``)
    with Adam, as ``loop`` says."""
    values = (np.zeros((count, *param.value_shape), np.float32) if start is None
              else np.asarray(start, np.float32))
    form = Form(param, compose(transforms), loop.learning_rate, int(loop.blur_every),
                float(loop.blur_sigma))
    return render_forms(handle, objective, [(form, values)], loop)


def render_forms(handle, objective, groups: Sequence[tuple[Form, np.ndarray]],
                 loop: Loop = Loop()) -> Rendering:
    """Maximise ``objective`` over the images of every group, each ``(form, start values)``,
    in one compiled loop: the rows of the groups in order, each through its own form, for
    ``loop``'s steps (its learning rate and blur are the forms'). The random transforms of
    group g draw from ``tf.random.Generator.from_seed(loop.seed + g)`` over its own rows, so a
    group's images are those it gets rendered alone."""
    import tensorflow as tf

    started = time.perf_counter()
    forms = [form for form, _ in groups]
    sizes = [len(values) for _, values in groups]
    form_of = np.repeat(np.arange(len(groups), dtype=np.int32), sizes)
    within = np.concatenate([np.arange(n, dtype=np.int32) for n in sizes])
    n = len(form_of)
    if any(len(a) != n for a in objective.arrays):
        raise AuditorError(f"the objective holds {[len(a) for a in objective.arrays]} rows per "
                           f"array for {n} images; give one row per image")
    run = compiled_render(handle, objective, forms)
    values = flat_values(forms, form_of, [values for _, values in groups])
    state = np.stack([values, np.zeros_like(values), np.zeros_like(values)], axis=1)
    streams = np.stack([tf.random.Generator.from_seed(loop.seed + g).state.numpy()
                        for g in range(len(groups))])
    rates = np.array([form.learning_rate for form in forms], np.float32)
    block = rows_per_pass(handle, backward=True)
    steps = loop.steps
    stops = sorted({s for s in loop.snapshots if 0 <= s <= steps} | {steps})

    def call(state, first, count):
        share = _steps(run, first, count, rates, streams, np.array(sizes, np.int64))
        return chunked(handle, share, state, form_of, within, *objective.arrays, rows=block)

    def images(state):
        return form_images(forms, form_of, state[:, 0]).numpy()

    kept, done, chunks = {}, 0, []
    for stop in stops:
        if n:
            state = in_calls(state, done, stop, call, chunks)
        done = max(done, stop)
        if stop in loop.snapshots or stop == steps:
            kept[stop] = images(state)
    return Rendering(images=images(state), snapshots=kept, steps=steps,
                     seconds=time.perf_counter() - started, chunks=chunks)


def _steps(run, first: int, count: int, rates: np.ndarray, streams: np.ndarray,
           totals: np.ndarray):
    """Steps ``first`` to ``first + count`` of one block's share: what ``chunked`` calls."""
    def share(state, form_of, within, *arrays):
        return run(np.int64(first), np.int64(count), rates, streams, totals, state, form_of,
                   within, *arrays)

    return share
