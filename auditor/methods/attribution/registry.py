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
from auditor.failures import one_line
from auditor.predict.batched import (  # noqa: F401  (re-exported: the methods size chunks by them)
    Budget,
    blocks,
    budget_for,
    chunk_size,
    row_bytes,
)
from auditor.predict.distribute import run_batch

SCORES = ("logit", "softmax", "log_softmax")


@dataclass(frozen=True)
class Planned:
    """How the compute plan may change one of a method's options: scale it down, never below
    ``floor``; or, for an option whose cost falls as it grows (occlusion's patch), raise it,
    never above ``most(input_shape)``. ``written(value, input_shape)`` is the value a default
    stands for (occlusion's patch 0 as the side it is), so that the plan can scale it."""

    floor: int = 1
    most: Callable[[tuple], int] | None = None
    written: Callable[[object, tuple], int] | None = None


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
    needs_attention: bool = False  # reads attention layers (a model without any: error)
    # its layer must be rectified: by default the last rectified one on the trunk where there is
    # one (inputs/layers.py ``last_rectified_layer``), else Grad-CAM's, where it says why not
    needs_rectified: bool = False
    planned: dict[str, Planned] = field(default_factory=dict)  # options the plan may change
    # The compiled pass it runs, traced once per model and score: methods naming the same one
    # share its trace (the compute plan counts traces by it). None: the input gradient, the
    # layer gradient of a method that needs a layer, the model's logits for a forward-only
    # method (the score picked from them outside the pass: ``run_scores``).
    compiled: str | None = None
    # What one trace of its compiled pass costs, in traces of the input gradient (the time
    # the plan measures, predict/plan.py): 1 unless measured otherwise (bench/trace_ratio.py).
    trace_cost: float = 1.0
    # Its maps as a function of the input gradient and the images alone, f(gradients, x):
    # methods declaring one, at their default options, explaining the same images share one
    # gradient pass (``shared_gradient``: the card runs them side by side at every stage).
    from_gradient: Callable | None = None

    def __post_init__(self):
        if self.compiled is None:
            self.compiled = ("layer_gradients" if self.needs_layer else
                             LOGITS if self.forward_only else "input_gradients")

    def rows_per_sample(self, options: dict, shape: tuple) -> int:
        return int(self.cost(options, shape) if callable(self.cost) else self.cost)


WRAP = ":"  # joins a wrapper and the method it wraps: "smoothgrad:integrated_gradients"


class Registry(dict):
    """The methods by name. Its items are the registered methods (what ``auditor methods`` lists
    and the tests iterate); a wrapper over any of them, named ``WRAPPER:METHOD``, is built on
    lookup from the wrapper and that method's facts, so the spec's validation, the compute plan
    and every section take it with no list to edit."""

    def __missing__(self, name: str) -> Method:
        wrapper, joined, base = name.partition(WRAP) if isinstance(name, str) else ("", "", "")
        if not joined or wrapper not in WRAPPERS or base not in self:
            raise KeyError(name)
        return WRAPPERS[wrapper](self[base], name)

    def __contains__(self, name) -> bool:
        try:
            self[name]
        except KeyError:
            return False
        return True


METHODS: Registry = Registry()
# wrapper name: f(wrapped Method, full name) -> Method (the noise tunnel's modes)
WRAPPERS: dict[str, Callable[[Method, str], Method]] = {}


def register(name: str, description: str, options: dict[str, tuple[object, str]] | None = None,
             **facts):
    """Decorator that adds a method to the registry under ``name``; ``facts`` are Method's
    other fields (cost, forward_only, per_sample, signed, linear, needs_layer, complete,
    needs_attention, needs_rectified, planned, compiled, trace_cost, from_gradient)."""

    def add(fn: Callable) -> Callable:
        METHODS[name] = Method(name, description, fn, options or {}, **facts)
        return fn

    return add


LOGITS = "logits"  # the model's logits pass (ModelHandle.logits_fn), the same for every score
# The passes the plan's timing traces on the model before any section runs (predict/plan.py
# ``measure_timing``: the logits and the input gradient of the logit), which every section and
# the model's working copy then call: no section traces them again.
TIMED = frozenset({(LOGITS, None), ("input_gradients", "logit")})


def compiled_passes(methods, score: str, fresh: bool = False) -> set[tuple[str, str | None]]:
    """The compiled passes ``methods`` run when explaining ``score``, each traced once per
    model: what the compute plan counts as their traces; those the plan's timing traced
    (``TIMED``) left out unless ``fresh`` (a handle that traces every pass anew: the shifted
    copy, a working copy that is not the model's twin)."""
    passes = {(METHODS[m].compiled, None if METHODS[m].compiled == LOGITS else score)
              for m in methods if m in METHODS}
    return passes if fresh else passes - TIMED


def trace_excess(methods, score: str) -> float:
    """What tracing the compiled passes of ``methods`` costs beyond one input-gradient trace
    each (``Method.trace_cost`` less one, once per pass): ``Passes.trace_extra``."""
    costs: dict[tuple[str, str], float] = {}
    for m in methods:
        if m in METHODS:
            key = (METHODS[m].compiled, score)
            costs[key] = max(costs.get(key, 1.0), METHODS[m].trace_cost)
    return sum(cost - 1 for cost in costs.values())


def that_apply(methods, attention: bool | None) -> list[str]:
    """``methods`` less those that read attention layers (the rollouts) when the model has
    none (``attention`` False): they say so in one line and run no pass, so the compute plan
    counts neither their rows nor their traces. None: not known, every method counted."""
    return [m for m in methods
            if attention is not False or m not in METHODS or not METHODS[m].needs_attention]


def register_wrapper(name: str, wrap: Callable[[Method, str], Method]) -> None:
    """Make ``name:METHOD`` a method for every METHOD: ``wrap(METHODS[METHOD], full name)``."""
    WRAPPERS[name] = wrap


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


def run_scores(handle, x, targets, contrast, score: str, rows: int) -> np.ndarray:
    """Forward-only scores of many rows, ``rows`` at a time: the model's logits pass, traced
    once for every use (``ModelHandle.logits_fn``; the plan's timing traces it), and the score
    picked from its logits, a few element-wise operations on (rows, classes) run eagerly."""
    import tensorflow as tf

    if not len(x):
        return np.zeros(0, np.float32)
    fn = handle.logits_fn
    return np.concatenate([pick_scores(fn(x[i:i + rows]),
                                       tf.constant(targets[i:i + rows], tf.int32),
                                       tf.constant(contrast[i:i + rows], tf.int32), score).numpy()
                           for i in range(0, len(x), rows)])


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
    try:
        for start in range(0, len(x), size):
            part = slice(start, start + size)
            maps.append(run_batch(handle, chunk, x[part], targets[part], contrast[part],
                                  *(merged[k][part] for k in split)))
    except AuditorError as exc:  # raised inside a traced pass, autograph wrapped it in frames
        raise type(exc)(one_line(exc)) from None
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros_like(x)


def derives_from_gradient(method: str, options: dict | None = None) -> bool:
    """Whether ``method`` with ``options`` is a function of the input gradient alone
    (``Method.from_gradient``, at its default options: it takes none)."""
    return method in METHODS and METHODS[method].from_gradient is not None and not options


def shared_gradient(handle, x, targets, score: str = "logit") -> Callable:
    """``maps(method, options)``: ``attribute(handle, x, targets, method, score=score,
    **options)``, except that the methods derived from the input gradient
    (``derives_from_gradient``: gradient, its absolute value, saliency, gradient x input) share
    one gradient pass of these images, made on the first that asks: the same maps, one pass
    instead of one each."""
    made: list[np.ndarray] = []

    def maps(method: str, options: dict | None = None) -> np.ndarray:
        if not derives_from_gradient(method, options):
            return attribute(handle, x, targets, method, score=score, **(options or {}))
        if not made:
            made.append(attribute(handle, x, targets, "gradient", score=score))
        images = np.asarray(x, dtype=np.float32)
        return np.array(METHODS[method].from_gradient(made[0], images), dtype=np.float32)

    return maps


def with_shared_gradient(methods: list[str], method_options: dict | None = None) -> list[str]:
    """``methods`` as ``shared_gradient`` runs them: those derived from the input gradient
    count as one pass of 'gradient' (what the compute plan counts)."""
    options = method_options or {}
    derived = [m for m in methods if derives_from_gradient(m, options.get(m))]
    return [m for m in methods if m not in derived] + (["gradient"] if derived else [])


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
        planned = [f"{option} up to {fact.most((224, 224, 3))} at 224 px" if fact.most else
                   f"{option} down to {fact.floor}" for option, fact in entry.planned.items()]
        if planned:
            lines.append(f"  the compute plan may set: {', '.join(planned)}")
        lines.append("")
    lines += [f"Wrappers: {', '.join(sorted(WRAPPERS))} apply to any method: name one "
              f"WRAPPER{WRAP}METHOD (e.g. smoothgrad{WRAP}integrated_gradients). It takes the "
              "wrapper's options above and "
              "METHOD's own (one named like a wrapper option as base_NAME) and costs samples "
              "times METHOD's passes.", "",
              f"Scores (score=): {', '.join(SCORES)}; logit by default, a softmax head is "
              "stripped. Every method takes contrast= (explain target minus contrast class)."]
    return "\n".join(lines)


def planned_bounds(methods: list[str], shape: tuple) -> dict:
    """{"METHOD.OPTION": floor, or Coarsest(most)} of every planned option of ``methods`` (known
    ones; the section's validation names the others) for images of ``shape`` (H, W, C): what
    the compute plan may change."""
    from auditor.predict.plan import Coarsest

    return {f"{name}.{option}": Coarsest(fact.most(shape)) if fact.most else fact.floor
            for name in methods if name in METHODS
            for option, fact in METHODS[name].planned.items()}


def planned_written(methods: list[str], method_options: dict, shape: tuple) -> dict:
    """``method_options`` with the value of every planned option of ``methods`` written out:
    the spec's, else the method's default, as ``Planned.written`` resolves it."""
    written = {m: dict(v) for m, v in method_options.items()}
    for name in methods:
        if name not in METHODS or not METHODS[name].planned:
            continue
        entry, given = METHODS[name], written.setdefault(name, {})
        for option, fact in entry.planned.items():
            value = given.get(option, entry.options[option][0])
            given[option] = fact.written(value, shape) if fact.written else value
    return written


def attribution_rows(methods: list[str], images: int, shape: tuple,
                     method_options: dict | None = None) -> tuple[int, int]:
    """(forward rows, forward-backward rows) of explaining ``images`` images of ``shape`` with
    each of ``methods``: what the compute plan counts (unknown methods count nothing; the
    section's own validation names them)."""
    forward = backward = 0
    for name in methods:
        if name not in METHODS:
            continue
        entry = METHODS[name]
        merged = {k: v[0] for k, v in entry.options.items()} | (method_options or {}).get(name, {})
        rows = images * entry.rows_per_sample(merged, (images, *shape))
        forward, backward = (forward + rows, backward) if entry.forward_only else (
            forward, backward + rows)
    return forward, backward
