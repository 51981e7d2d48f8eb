"""tf.distribute for the audit's batched steps: one strategy per run, carried by the model handle.

``default`` runs on TensorFlow's default device. ``mirrored`` replicates the model over the local
devices (every GPU, else every logical CPU) with ``MirroredStrategy``; ``multiworker`` over the
machines that the standard ``TF_CONFIG`` lists, with ``MultiWorkerMirroredStrategy``. Sections
never see the strategy: prediction and attribution hand each batch to ``run_batch``, which splits
it across the replicas with ``strategy.run`` and puts the results back in order with
``strategy.gather``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator

import numpy as np

from auditor.errors import ClusterError, ConfigError


class Distribution:
    """A tf.distribute strategy and the one operation the audit asks of it: a split batch."""

    def __init__(self, name: str, strategy):
        import tensorflow as tf

        self.name = name
        self.strategy = strategy
        # One compiled all-gather per run: eager gathers build a new graph on every call.
        self._gather = tf.function(lambda values: strategy.gather(values, axis=0),
                                   reduce_retracing=True)
        tf.get_logger().addFilter(_hide_eager_warning)

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the report (every process computes everything)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.task_type:
            return True
        jobs = resolver.cluster_spec().as_dict()
        return resolver.task_type == "chief" or (
            resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in jobs)

    def scope(self):
        """Variables created in this scope (the loaded model's) are mirrored on every replica."""
        return self.strategy.scope()

    def describe(self) -> dict:
        """The ``distribution`` block of summary.json."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        jobs = resolver.cluster_spec().as_dict() if resolver is not None else {}
        workers = sum(len(tasks) for job, tasks in jobs.items() if job in ("chief", "worker"))
        devices = (local_devices()[:1] if self.name == "default"
                   else list(self.strategy.extended.worker_devices))
        return {"strategy": self.name, "replicas": self.replicas, "workers": max(workers, 1),
                "devices": devices}

    def run(self, fn: Callable, *arrays: np.ndarray) -> np.ndarray:
        """``fn(*arrays)``, with the batch (axis 0) split into one contiguous share per replica.

        ``fn`` takes and returns arrays batched on axis 0, numpy or tensors. Each replica runs it
        on its share, on its own device, in a ``strategy.run`` call; the shares' results are
        gathered back into batch order across devices and workers. A batch of fewer rows than
        replicas is not split.
        """
        if self.name == "default" or len(arrays[0]) < self.replicas:
            # A batch smaller than the replicas runs whole: a replica left with no rows would
            # run the model on an empty batch, which oneDNN's convolutions refuse.
            return np.asarray(fn(*arrays))
        import tensorflow as tf

        bounds = np.linspace(0, len(arrays[0]), self.replicas + 1).round().astype(int)

        def share():
            replica = int(tf.distribute.get_replica_context().replica_id_in_sync_group)
            start, stop = bounds[replica], bounds[replica + 1]
            return tf.convert_to_tensor(fn(*(a[start:stop] for a in arrays)))

        with collective_errors(self):
            return self._gather(self.strategy.run(share)).numpy()


@contextlib.contextmanager
def collective_errors(distribution: Distribution | None) -> Iterator[None]:
    """A multiworker step whose peer is gone fails in TensorFlow's collective ops (gRPC
    'Connection refused', an aborted all-gather); that is one line for the user, the same on
    every surviving worker, and the run is removed like any failed run."""
    if distribution is None or distribution.name != "multiworker":
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError) as exc:
        detail = re.sub(r"\{\{[^}]*\}\}\s*", "", exc.message).splitlines()[0][:160]
        raise ClusterError(f"a worker of the multiworker run can no longer be reached "
                           f"({detail}); nothing was kept: restart every worker in TF_CONFIG"
                           ) from None


def _hide_eager_warning(record: logging.LogRecord) -> bool:
    """strategy.run is called eagerly on purpose (attribution methods return numpy); its cost
    is one thread hand-off per batch, and TensorFlow would warn about it on every call."""
    return "eagerly has significant overhead" not in record.getMessage()


def run_batch(handle, fn: Callable, *arrays: np.ndarray) -> np.ndarray:
    """``fn(*arrays)`` under the handle's strategy (a plain call when it has none)."""
    distribution = getattr(handle, "distribution", None)
    if distribution is None:
        return np.asarray(fn(*arrays))
    return distribution.run(fn, *arrays)


def local_devices() -> list[str]:
    """The devices a mirrored run replicates over: every GPU, else every logical CPU."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


_MADE: dict[object, Distribution] = {}


def make_distribution(name: str) -> Distribution:
    """The process's strategy of that name, created on first use.

    Call it before any other TensorFlow work: the multiworker strategy must be set up before the
    runtime starts. Strategies are made once per process and reused by later audits, because
    two strategies over the same devices would reuse each other's collective-op keys.
    ``default`` is the strategy in scope at the call (an audit inside a user's
    ``strategy.scope()``, such as the Keras callback's during ``fit``, runs under it), each
    wrapped once.
    """
    key: object = name
    if name == "default":
        import tensorflow as tf

        key = (name, tf.distribute.get_strategy())
    if key not in _MADE:
        _MADE[key] = _create(name)
    return _MADE[key]


def _create(name: str) -> Distribution:
    import tensorflow as tf

    if name == "default":
        return Distribution(name, tf.distribute.get_strategy())
    if name == "mirrored":
        return Distribution(name, tf.distribute.MirroredStrategy(local_devices()))
    if name == "multiworker":
        _check_tf_config(os.environ.get("TF_CONFIG"))
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ConfigError(f"cannot start the multiworker strategy ({exc}); check TF_CONFIG "
                              "(see docs/scale.md)") from None
        return Distribution(name, strategy)
    raise ConfigError(f"'strategy' must be one of default, mirrored, multiworker, got {name!r}")


def _check_tf_config(text: str | None) -> None:
    """TF_CONFIG, when set, must be JSON with a cluster and this process's task in it."""
    if not text:
        return  # a single-worker run: fine, and useful to try the strategy locally
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        tasks = cluster[task["type"]]
        tasks[int(task["index"])]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError, ValueError):
        raise ConfigError("TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host1:port\", "
                          "\"host2:port\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}} with "
                          "this process's task in the cluster; see docs/scale.md") from None
