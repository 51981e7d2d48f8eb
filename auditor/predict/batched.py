"""The one chunked, memory-budgeted, distributed path for the audit's forward and backward passes.

Every heavy loop of the audit (prediction, attribution, attacks, counterfactuals, the fine-tuned
copies of the Clever Hans test, re-prediction of attacked images) hands its arrays to ``chunked``:
the rows are cut into as few near-equal blocks as the memory budget allows, and each block is
split across the strategy's replicas by ``run_batch``. So ``--strategy mirrored`` and a GPU speed
up the whole audit, and no caller can run a 224 px model on an unbounded batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from auditor.predict.distribute import collective_errors, run_batch

# Bytes of activations one pass may keep alive, counted as every layer's output (row_bytes).
# Measured on MobileNetV2 at 224 px (87 MB counted per row): with 2 GB, a backward pass of 22
# rows raised the resident memory by 1.1 GB and a forward pass of 66 rows by 0.93 GB, a peak
# that every section's heavy loop reaches; 1 GB halves it at no cost in speed on a CPU (the
# per-image time of MobileNetV2 is flat from 8 rows up, bench/pipeline.py). Small models hit
# MAX_ROWS first and are not affected.
DEFAULT_MEMORY_BUDGET = 1_000_000_000
MAX_ROWS = 256  # larger batches buy no speed on CPU
MAX_FORWARD_ROWS = 1024
FORWARD_FACTOR = 3  # a forward-only pass keeps roughly a third of what a backward pass keeps


@dataclass(frozen=True)
class Budget:
    """Rows one compiled pass may take: with a backward pass, and forward only."""

    backward: int
    forward: int


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


def rows_per_pass(handle, *, backward: bool, copies: int = 1) -> int:
    """Images per block when each image costs ``copies`` rows (e.g. the tensors an optimiser
    keeps per image), with or without a backward pass."""
    budget = budget_for(handle)
    return max(1, (budget.backward if backward else budget.forward) // max(1, copies))


def chunked(handle, fn: Callable, *arrays: np.ndarray, rows: int) -> np.ndarray:
    """``fn(*arrays)`` a block of at most ``rows`` at a time, each block split across the
    replicas; the results are concatenated in order. ``fn`` takes and returns arrays batched on
    axis 0; anything else it needs (step counts, weights) it closes over."""
    parts = [run_batch(handle, fn, *(a[part] for a in arrays))
             for part in blocks(len(arrays[0]), rows)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def forward(handle, x: np.ndarray) -> np.ndarray:
    """Logits (N, classes) of display-space images through the handle's compiled function."""
    x = np.asarray(x, dtype=np.float32)
    if not len(x):
        return np.zeros((0, handle.num_classes), np.float32)
    return chunked(handle, handle.logits_fn, x, rows=rows_per_pass(handle, backward=False))


def predict_classes(handle, x: np.ndarray) -> np.ndarray:
    """The predicted class of each image."""
    return forward(handle, x).argmax(axis=1) if len(x) else np.zeros(0, int)


def compiled_update(handle, update: Callable) -> Callable:
    """``step(*arrays)``: one compiled training step that splits the batch (axis 0 of every
    array) into one contiguous share per replica of the handle's strategy and calls
    ``update(*shares, total=rows in the whole batch)`` on each; an optimiser's
    ``apply_gradients`` inside ``update`` sums the replicas' gradients. The whole
    ``strategy.run`` is compiled, because a synchronisation point (the gradient all-reduce)
    cannot sit inside a nested tf.function."""
    import tensorflow as tf

    distribution = getattr(handle, "distribution", None)
    strategy = distribution.strategy if distribution is not None else tf.distribute.get_strategy()

    def share(*arrays):
        context = tf.distribute.get_replica_context()
        replica = int(tf.get_static_value(context.replica_id_in_sync_group))
        edges = np.linspace(0, arrays[0].shape[0], context.num_replicas_in_sync + 1)
        part = slice(*edges.round().astype(int)[replica:replica + 2])
        update(*(a[part] for a in arrays), total=arrays[0].shape[0])

    @tf.function(autograph=False)  # straight-line Python: autograph would only slow the trace
    def step(*arrays):
        strategy.run(share, args=arrays)

    def guarded(*arrays):
        with collective_errors(distribution):
            return step(*arrays)

    return guarded
