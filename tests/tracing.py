"""The functions TensorFlow traces while a block of code runs: what a section's cost model
declares as ``Passes.traces`` is held to this count (a trace of a model costs seconds to tens
of seconds on a large one, more than the passes of a small audit)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def traced() -> Iterator[list[tuple[str, bool]]]:
    """Collects (name, nested) for every concrete function TensorFlow makes inside the block:
    each new trace of a ``tf.function``, ``nested`` when it was traced inside another's trace
    (it is then part of that trace's cost). TensorFlow calls its concrete-function callbacks
    once per trace, whatever made the function."""
    from tensorflow.python.eager.polymorphic_function import transform
    from tensorflow.python.framework import ops

    seen: list[tuple[str, bool]] = []

    def record(concrete) -> None:
        seen.append((concrete.name.decode() if isinstance(concrete.name, bytes)
                     else str(concrete.name), ops.inside_function()))

    transform.CONCRETE_FUNCTION_CALLBACKS.append(record)
    try:
        yield seen
    finally:
        transform.CONCRETE_FUNCTION_CALLBACKS.remove(record)


def outermost(seen: list[tuple[str, bool]]) -> list[str]:
    """The traces not made inside another trace: the ones each cost a trace of their own."""
    return [name for name, nested in seen if not nested]
