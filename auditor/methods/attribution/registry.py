"""The attribution registry and ``attribute``: every method behind one batched call.

A method is a function ``(handle, x, targets, contrast, score, budget, **options) -> maps`` for
one chunk of samples. ``attribute`` validates, sizes chunks so that one chunk's work fits the
memory budget, and concatenates. ``budget`` tells a method how many rows (images, noisy copies,
path steps, occluded copies) one compiled pass may take, so methods that replicate samples run
their copies in as few, as large passes as memory allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from auditor.errors import AuditorError
from auditor.predict.distribute import run_batch

SCORES = ("logit", "softmax", "log_softmax")
# Bytes of activations one pass may keep alive. Measured on MobileNetV2 at 224 px: a backward
# pass keeps about a third of the summed layer outputs, so counting all of them is conservative.
DEFAULT_MEMORY_BUDGET = 2_000_000_000
MAX_ROWS = 256  # larger batches buy no speed on CPU
MAX_FORWARD_ROWS = 1024
FORWARD_FACTOR = 3  # a forward-only pass keeps roughly a third of what a backward pass keeps


@dataclass(frozen=True)
class Budget:
    """Rows one compiled pass may take: with a backward pass, and forward only."""

    backward: int
    forward: int


@dataclass
class Method:
    """A registered method and the facts the report and the tests go by: a new method is shown
    and tested by what it declares here, with no list to edit elsewhere."""

    name: str
    description: str
    fn: Callable
    options: dict[str, tuple[object, str]] = field(default_factory=dict)  # name: (default, help)
    cost: int | Callable[[dict, tuple], int] = 1  # rows per sample, or f(options, x_shape)
    forward_only: bool = False  # rows are forward passes (occlusion), not forward-backward
    per_sample: tuple[str, ...] = ()  # options that may hold one value per sample (chunked too)
    signed: bool = True  # maps carry a sign (shown diverging); else importance from zero
    linear: bool = False  # linear in the score: explaining target - contrast is the difference
    needs_layer: bool = False  # works on a convolutional layer (a model without one: error)
    complete: bool = False  # maps sum to score(x) - score(zeros) (Sundararajan et al.)

    def rows_per_sample(self, options: dict, shape: tuple) -> int:
        return int(self.cost(options, shape) if callable(self.cost) else self.cost)


METHODS: dict[str, Method] = {}


def register(name: str, description: str, options: dict[str, tuple[object, str]] | None = None,
             **facts):
    """Decorator that adds a method to the registry under ``name``; ``facts`` are Method's
    other fields (cost, forward_only, per_sample, signed, linear, needs_layer, complete)."""

    def add(fn: Callable) -> Callable:
        METHODS[name] = Method(name, description, fn, options or {}, **facts)
        return fn

    return add


def pick_scores(logits, targets, contrast, score: str):
    """Per-sample score of the target class, minus the contrast class where it is >= 0."""
    import tensorflow as tf

    if score == "softmax":
        values = tf.nn.softmax(logits)
    elif score == "log_softmax":
        values = tf.nn.log_softmax(logits)
    else:
        values = logits
    picked = tf.gather(values, targets, batch_dims=1)
    other = tf.gather(values, tf.maximum(contrast, 0), batch_dims=1)
    return picked - other * tf.cast(contrast >= 0, values.dtype)


def check_score(score: str) -> None:
    if score not in SCORES:
        raise AuditorError(f"unknown score '{score}'; use one of: {', '.join(SCORES)}")


def score_function(handle, score: str):
    """Per-sample scalar scores of the target class, minus the contrast class where given."""
    check_score(score)

    def scores(x, targets, contrast):
        return pick_scores(handle.logits(x), targets, contrast, score)

    return scores


def signature(handle):
    """The input signature every compiled method shares: images, targets, contrast classes."""
    import tensorflow as tf

    return (tf.TensorSpec((None, *handle.input_shape), tf.float32),
            tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None,), tf.int32))


def compiled_scores(handle, score: str):
    """Scores without gradients, compiled once per model and score: for forward-only methods."""
    import tensorflow as tf

    key = ("scores", score)
    if key not in handle.compiled:
        scores = score_function(handle, score)
        handle.compiled[key] = tf.function(scores, input_signature=signature(handle))
    return handle.compiled[key]


def run_scores(handle, x, targets, contrast, score: str, rows: int) -> np.ndarray:
    """Forward-only scores of many rows, ``rows`` at a time."""
    fn = compiled_scores(handle, score)
    return np.concatenate([fn(x[i:i + rows], targets[i:i + rows], contrast[i:i + rows]).numpy()
                           for i in range(0, len(x), rows)]) if len(x) else np.zeros(0, np.float32)


def row_bytes(handle) -> int:
    """Bytes of activations one image keeps alive in a forward-backward pass (an upper bound)."""
    from auditor.inputs.layers import activation_floats

    if "row_bytes" not in handle.compiled:
        floats = activation_floats(handle.logits_model) + int(np.prod(handle.input_shape))
        handle.compiled["row_bytes"] = 4 * floats
    return handle.compiled["row_bytes"]


def chunk_size(x_shape: tuple[int, ...], cost: int, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Samples per chunk from the input shape alone (about 64x the input in activations), for
    callers without a handle; ``budget_for(handle)`` measures the model instead."""
    per_sample = int(np.prod(x_shape[1:])) * 64 * max(cost, 1)
    return int(max(1, min(256, budget // (4 * per_sample))))


def budget_for(handle, memory_budget: int | None = None) -> Budget:
    """Rows per pass so that one pass's activations fit ``memory_budget`` bytes."""
    rows = (memory_budget or DEFAULT_MEMORY_BUDGET) // row_bytes(handle)
    return Budget(backward=int(np.clip(rows, 1, MAX_ROWS)),
                  forward=int(np.clip(rows * FORWARD_FACTOR, 1, MAX_FORWARD_ROWS)))


def blocks(count: int, most: int) -> list[slice]:
    """``count`` items in as few near-equal blocks of at most ``most`` as possible (so that a
    last, nearly empty pass does not cost a whole pass's overhead)."""
    parts = -(-count // max(1, most))
    edges = np.linspace(0, count, parts + 1).round().astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def prepare(handle, x, targets, contrast, score: str):
    """Validated float32 images, int32 targets and contrast classes (-1 where none)."""
    check_score(score)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(handle.input_shape):
        raise AuditorError(f"attribute got images of shape {x.shape}; the model takes "
                           f"(N, {', '.join(map(str, handle.input_shape))})")
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets) != len(x):
        raise AuditorError(f"attribute got {len(x)} images but {len(targets)} targets; give one "
                           "target class per image")
    contrast = (np.full_like(targets, -1) if contrast is None
                else np.asarray(contrast, dtype=np.int64).reshape(-1))
    if len(contrast) != len(x):
        raise AuditorError(f"attribute got {len(x)} images but {len(contrast)} contrast classes; "
                           "give one per image (-1 for none)")
    for name, classes in (("target", targets), ("contrast", contrast[contrast >= 0])):
        if classes.size and (classes.min() < 0 or classes.max() >= handle.num_classes):
            raise AuditorError(f"{name} classes must lie in 0..{handle.num_classes - 1}, got "
                               f"{int(classes.min())}..{int(classes.max())}")
    return x, targets.astype(np.int32), contrast.astype(np.int32)


def method_entry(method: str, options: dict) -> Method:
    if method not in METHODS:
        raise AuditorError(f"unknown attribution method '{method}'; choose from: "
                           f"{', '.join(sorted(METHODS))} (see 'auditor methods')")
    entry = METHODS[method]
    unknown = set(options) - set(entry.options)
    if unknown:
        raise AuditorError(f"method '{method}' has no option '{sorted(unknown)[0]}'; it takes: "
                           f"{', '.join(entry.options) or 'no options'}")
    return entry


def attribute(handle, x, targets, method: str = "gradient", *, contrast=None,
              score: str = "logit", batch_size: int | None = None,
              memory_budget: int | None = None, **options) -> np.ndarray:
    """Attribution maps with the shape of ``x``, one target class per sample.

    ``contrast`` (optional, one class per sample, -1 for none) explains target minus contrast in
    the same pass. ``score`` is 'logit' (default), 'softmax' or 'log_softmax'. ``batch_size``
    fixes the images per chunk; by default chunks fill ``memory_budget`` bytes of activations.
    """
    entry = method_entry(method, options)
    x, targets, contrast = prepare(handle, x, targets, contrast, score)
    merged = {k: v[0] for k, v in entry.options.items()} | options
    budget = budget_for(handle, memory_budget)
    rows = budget.forward if entry.forward_only else budget.backward
    size = batch_size or max(1, rows // max(1, entry.rows_per_sample(merged, x.shape)))
    split = [k for k, v in merged.items() if k in entry.per_sample and _is_per_sample(v, x)]

    def chunk(images, target, other, *values):  # run on each replica's share of a chunk
        return entry.fn(handle, images, target, other, score, budget,
                        **(merged | dict(zip(split, values, strict=True))))

    maps = []
    for start in range(0, len(x), size):
        part = slice(start, start + size)
        maps.append(run_batch(handle, chunk, x[part], targets[part], contrast[part],
                              *(merged[k][part] for k in split)))
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros_like(x)


def _is_per_sample(value, x: np.ndarray) -> bool:
    return isinstance(value, np.ndarray) and value.shape == x.shape


def describe_methods() -> str:
    """The registered methods with their cost and options (defaults and help): what
    ``auditor methods`` prints."""
    import auditor.methods.attribution  # noqa: F401  (registers every method)

    lines = ["Attribution methods: attribute(handle, x, targets, METHOD, **options) in Python;",
             "[attribution.method_options.METHOD] tables in an audit spec.", ""]
    for name in sorted(METHODS):
        entry = METHODS[name]
        defaults = {k: v[0] for k, v in entry.options.items()}
        cost = entry.rows_per_sample(defaults, (1, 224, 224, 3))
        kind = "forward pass" if entry.forward_only else "forward-backward pass"
        where = " at 224 px" if callable(entry.cost) and entry.forward_only else ""
        lines += [name, f"  {entry.description}",
                  f"  cost: {cost} {kind}{'es' if cost != 1 else ''} per image{where}"]
        for option, (default, text) in entry.options.items():
            lines.append(f"  {f'{option} = {default!r}':<22}{text}")
        lines.append("")
    lines.append(f"Scores (score=): {', '.join(SCORES)}; logit by default, a softmax head is "
                 "stripped. Every method takes contrast= (explain target minus contrast class).")
    return "\n".join(lines)
