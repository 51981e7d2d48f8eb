"""``AuditCallback``: audit the model being trained, every N epochs and at the end of training.

Each audited epoch's weights are audited like a checkpoint ``auditor watch`` finds
(``runs/watch.py``): one run folder per epoch under OUT, the same ledger, baselines and
index.html. The model is known by the hash of its weights in memory (``memory:epoch-NNNN``);
with ``checkpoints=True`` it is also saved to ``OUT/checkpoints/<start of fit>/epoch-NNNN.keras``
(and known by that file). The audit runs on its own copy of the model, loaded once from a
saved file when training starts (so nothing it traces joins the training graph) and given each
audited epoch's weights: the run is the one a fresh audit of the epoch's checkpoint gives, but
nothing is traced, timed or loaded again (``run_audit``'s ``handle``). It runs between
save/restore of every
global random state (Python, NumPy, TensorFlow's seeds, Keras's seed generator) that the audit
resets (``load_inputs`` seeds them all): with the same seeds and data, training ends with the
same weights, optimizer state and metrics with or without the callback.

The epoch's ``logs`` get the audit's figures under stable names (``AUDIT_LOGS``), NaN on epochs
that are not audited, so that EarlyStopping, ModelCheckpoint and CSVLogger placed after this
callback can use them.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import math
import numbers
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np

from auditor.errors import ConfigError
from auditor.runs.overhead import GUESS_FIXED_PARTS, GUESS_INDEX_PARTS, GUESS_TIMING_PARTS
from auditor.runs.overhead import requested as requested_sections
from auditor.trackers import key_figures

STOP_ON = {"fail": ("fail",), "warn": ("warn", "fail")}
BASELINES = ("previous", "first")
# The names put into the epoch's logs (see the README): key figures as audit_<name>, then
# counts and the verdict (0 pass, 1 warn, 2 fail).
AUDIT_LOGS = ("audit_accuracy", "audit_micro_f1", "audit_mistakes", "audit_label_errors",
              "audit_ece", "audit_trusted_methods", "audit_flagged_classes",
              "audit_robust_accuracy", "audit_failed_checks", "audit_warned_checks",
              "audit_verdict")


@contextlib.contextmanager
def isolated_random_state() -> Iterator[None]:
    """Every global random state an audit touches, as it was before: Python's and NumPy's
    generators, TensorFlow's global generator and seeds, Keras's seed and seed generator
    (``keras.utils.set_random_seed``, which the audit calls, resets them).

    Python's, NumPy's and TensorFlow's global generator are saved and put back with their public
    APIs. Two states have none, and are read and restored privately, because without them the
    next unseeded draw of the user's code (Keras's shuffling, ``tf.random.uniform()``) would
    differ: Keras's global seed and ``SeedGenerator`` (``keras.utils.set_random_seed`` can only
    reset them, ``keras.random`` draws from the generator's state), and TensorFlow's eager
    global seed with its counter of operation seeds (``tf.random.set_seed`` restarts the
    counter; no API reads it). ``tests/test_keras_callback.py`` proves all of them unchanged.
    """
    import random

    import tensorflow as tf
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    from tensorflow.python.eager import context

    python, numpy = random.getstate(), np.random.get_state()
    tf_generator = tf.random.get_global_generator()
    tf_generator_state = tf_generator.state.numpy()
    keras_seed = global_state.get_global_attribute(GLOBAL_RANDOM_SEED)
    keras_generator = global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)
    keras_state = None if keras_generator is None else keras_generator.state.numpy()
    eager = context.context()
    tf_seed, tf_rng = eager._seed, getattr(eager, "_rng", None)
    tf_rng_state = tf_rng.getstate() if tf_rng is not None else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        tf.random.set_global_generator(tf_generator)
        tf_generator.reset(tf_generator_state)
        global_state.set_global_attribute(GLOBAL_RANDOM_SEED, keras_seed)
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, keras_generator)
        if keras_generator is not None:
            keras_generator.state.assign(keras_state)
        eager._seed, eager._rng = tf_seed, tf_rng
        if tf_rng is not None:
            tf_rng.setstate(tf_rng_state)


class AuditCallback(keras.callbacks.Callback):
    """Audit the model every ``every`` epochs and when training ends, into run folders under
    ``out`` (with ``index.html``); put the audit's figures into the epoch's logs.

    ``data``: a ``--data`` source string, arrays ``(x, y)``, or a ``tf.data.Dataset`` of (image,
    label) pairs or batches. ``spec``: a TOML spec path or a dict of spec keys (any audit
    option). ``stop_on``: ``"fail"`` or ``"warn"`` stops training when the verdict reaches it.
    ``baseline``: each audit is compared with the ``"previous"`` audited epoch (as ``watch``
    does), the ``"first"``, a run folder, or None. ``mlflow``/``tensorboard``: also log each
    audit to an MLflow run (nested in the active one) or a TensorBoard log folder, at the epoch.
    ``overhead``: the callback (its audits and its once-per-fit work) may take this share of
    the training time: each audit gets it of the seconds trained so far, less what the
    callback spent before (``runs/overhead.py``: sections that do not fit are not run, and say
    so); None: the named ``budget`` in full, whatever it costs. ``budget`` is the ceiling
    either way. ``fit_seconds``: the once-per-fit work of the last fit. ``checkpoints``: also
    save each audited epoch's model as a ``.keras`` file (to audit it again later); without,
    the run knows it by the hash of its weights."""

    def __init__(self, data, out, every: int = 1, spec=None, sections=None, budget="quick",
                 stop_on: str | None = None, mlflow: bool = False, tensorboard=None,
                 baseline: str | None = "previous", overhead: float | None = 0.3,
                 checkpoints: bool = False):
        super().__init__()
        from auditor.config.spec import read_spec
        from auditor.configure import make_config

        if not isinstance(every, numbers.Integral) or isinstance(every, bool) or every < 1:
            raise ConfigError(f"'every' must be a whole number of epochs, at least 1, got "
                              f"{every!r}")
        if stop_on not in (None, *STOP_ON):
            raise ConfigError(f"'stop_on' must be 'fail', 'warn' or None, got {stop_on!r}")
        if overhead is not None and (not isinstance(overhead, numbers.Real)
                                     or isinstance(overhead, bool)
                                     or not 0 < overhead < math.inf):
            raise ConfigError(f"'overhead' must be a positive share of the training time (0.3: "
                              f"audits add at most about 30%), or None, got {overhead!r}")
        if not isinstance(checkpoints, bool):
            raise ConfigError(f"'checkpoints' must be True or False, got {checkpoints!r}")
        self.spec = dict(read_spec(spec) if isinstance(spec, (str, Path)) else spec or {})
        # Trackers are logged here, once per epoch into one run, not by each audit.
        mlflow = bool(mlflow or self.spec.pop("mlflow", False) or self.spec.get("mlflow_uri"))
        self.mlflow_uri = self.spec.pop("mlflow_uri", None)
        tensorboard = tensorboard or self.spec.pop("tensorboard", None)
        self.flags = {"sections": sections, "budget": budget, "progress": False,
                      "data": self._source_name(data)}
        make_config(self.spec, **self.flags, model="checked-per-epoch")  # bad keys fail now
        if baseline not in (None, *BASELINES):  # a run folder: read now, not mid-training
            from auditor.runs.baseline import load_run

            load_run(str(baseline))
        if mlflow:
            from auditor.trackers.mlflow_log import require_mlflow

            require_mlflow()
        self.data, self.root, self.every, self.stop_on = data, Path(out), int(every), stop_on
        self.baseline, self.mlflow, self.tensorboard = baseline, mlflow, tensorboard
        self.overhead = None if overhead is None else float(overhead)
        self.checkpoints = checkpoints
        self._architecture = ""  # the model's JSON config, hashed with its weights
        self.audits: list[dict] = []  # {epoch, folder, verdict, exit_code, figures, seconds}
        self._scratch: Path | None = None
        self._arrays = None  # (x, y) of an in-memory source
        self._trackers: dict = {}
        self._sizer = None  # runs.overhead's plan_at and the fixed seconds of an audit
        # The once-per-fit work, in seconds: "setup" (the copy of the model, the data, the
        # first prediction pass), "timing" (the model's passes timed, when an audit needs it),
        # "index" (written when training ends; the account holds it from the start) and
        # "close" (the trackers ended, the scratch folder removed).
        self.fit_seconds: dict[str, float] = {}
        self._handle = None  # the audit's one copy of the model, made when training starts
        self._end_seconds: float | None = None  # the end of its last fit (index, trackers)
        self._runs: dict = {}  # folder -> runs.baseline.Run: what this fit wrote, as baselines
        self._last_audited = self._epoch = None

    @staticmethod
    def _source_name(data) -> str:
        if isinstance(data, (str, Path)):
            return str(data)
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return "memory:arrays"
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            return "memory:tf.data"
        raise ConfigError(f"'data' must be a --data source string, arrays (x, y) or a "
                          f"tf.data.Dataset of (image, label) batches, got {type(data).__name__}")

    def configure(self, **per_checkpoint):
        from auditor.configure import make_config

        return make_config(self.spec, **{**self.flags, **per_checkpoint})

    @contextlib.contextmanager
    def _data(self) -> Iterator[None]:
        """The in-memory source, named while an audit reads it."""
        if self._arrays is None:
            yield
            return
        from auditor.inputs.memory import memory_source

        with memory_source(self.flags["data"].partition(":")[2], *self._arrays):
            yield

    def on_train_begin(self, logs=None) -> None:
        """Check the output root, the model and the data before the first step: bad input
        raises the CLI's one-line error now, not after an epoch."""
        from auditor.runs.watch import open_root

        self._finish("FAILED")  # an earlier fit of this callback that crashed
        started = time.perf_counter()
        open_root(self.root)
        self._started = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        self._folder = self.root / "checkpoints" / self._started
        self._scratch = Path(tempfile.mkdtemp(prefix="auditor-callback-"))
        self._last_audited = self._epoch = None
        self.fit_seconds = {}
        try:
            with isolated_random_state():
                self._arrays = self._hold_data()
                self._take_input_range()
                self._validate()
            self._open_trackers()
        except BaseException:  # fit stops here and never calls on_train_end
            self._finish("FAILED")
            raise
        self._since = time.perf_counter()  # training time is counted from here
        self.fit_seconds["setup"] = self._since - started
        self._trained, self._spent = 0.0, self.fit_seconds["setup"]  # the overhead's account

    def _hold_data(self):
        import tensorflow as tf

        if isinstance(self.data, tf.data.Dataset):
            from auditor.inputs.memory import spill_dataset

            return spill_dataset(self.data, self._scratch)
        if isinstance(self.data, (tuple, list)):
            return np.asarray(self.data[0]), np.asarray(self.data[1])
        return None

    def _take_input_range(self) -> None:
        """Arrays and datasets are what the model is fed in training, so their value range is
        the model's input range: taken as given instead of probed (a probe on a barely trained
        model says little). A spec's ``input_range`` wins."""
        if self._arrays is None or "input_range" in self.spec:
            return
        from auditor.inputs.memory import value_range

        self.flags["input_range"] = value_range(self._arrays[0],
                                                self.spec.get("data_range", "auto"))

    def _validate(self) -> None:
        """Make the audit's one copy of the model, saved and loaded as a checkpoint is (so that
        nothing it traces joins the training graph), and open the data against it; with an
        overhead budget, predict the data once with the copy: the fixed part of an audit
        (predicting; saving the checkpoint with ``checkpoints``), which the first audit's budget
        starts from, and the compiled prediction pass every audit reuses. Each audit gives the
        copy its epoch's weights: its compiled functions are made once per fit. The copy and
        the first pass are what the timing of the model's passes is guessed from
        (``GUESS_TIMING_PARTS``)."""
        from auditor.inputs.datasets import load_dataset
        from auditor.inputs.models import load_model
        from auditor.predict.distribute import make_distribution
        from auditor.predict.predictions import predict

        config = self.configure(model="checked-per-epoch")
        path = self._scratch / "model.keras"
        tick = time.perf_counter()
        self.model.save(path)
        saving = time.perf_counter() - tick
        self._architecture = self.model.to_json()
        tick = time.perf_counter()
        with make_distribution(config.strategy).scope():  # as run_audit loads a model
            handle = load_model(str(path), config.input_range, config.unsafe_load,
                                config.output)
        copying = time.perf_counter() - tick
        with self._data():
            dataset = load_dataset(config.data, handle.input_shape, handle.num_classes,
                                   class_names=config.class_names,
                                   max_samples=config.max_samples, seed=config.seed,
                                   data_range=config.data_range, strict_data=config.strict_data,
                                   multilabel=handle.multilabel)
            if self.overhead is not None:
                tick = time.perf_counter()
                predict(handle, dataset, config.batch_size, threshold=config.threshold)
                predicting = time.perf_counter() - tick
        path.unlink()
        self._handle = handle
        if self.overhead is not None:
            self._sizer = {"config": config, "images": dataset.n, "timed": False,
                           "plan_at": self._planner(config, handle, dataset.n, predicting),
                           "sections": requested_sections(config),
                           "fixed": predicting + (saving if self.checkpoints else 0.0),
                           "timing": GUESS_TIMING_PARTS * (copying + predicting),
                           "drift": 1.0, "extra": {}}

    @staticmethod
    def _planner(config, handle, images: int, predicting: float | None = None):
        """``runs.overhead.planner`` for the copy: with the time of its passes measured
        (``model_timing``, once per handle), or, given the seconds of a prediction pass, with
        every pass costed as that pass's forward per image and nothing for traces or copies:
        less than any section costs, enough to see that none fits without timing anything."""
        from auditor.predict.plan import Facts, Timing, forward_flops, model_timing
        from auditor.runs.overhead import planner

        facts = Facts(images=images, input_shape=handle.input_shape, classes=handle.num_classes,
                      multilabel=handle.multilabel)
        if predicting is not None:
            forward = predicting / max(images, 1)
            return planner(config, facts, None, Timing(forward, forward, 0.0, forward), handle)
        timing = model_timing(handle)  # the audits' plans read the same measure
        return planner(config, facts, forward_flops(handle), timing, handle)

    def _open_trackers(self) -> None:
        if self.mlflow:
            from auditor.trackers.mlflow_log import MlflowRun

            self._trackers["mlflow"] = MlflowRun.start(self.mlflow_uri,
                                                       name=f"audit-{self._started}")
            # Keras has no hook for an exception in fit: a process that ends while training
            # is under way ends the run FAILED, as MLflow's autolog ends its run when fit
            # raises (an exception in an audit ends it at once, below).
            atexit.register(self._trackers["mlflow"].end_if_running, "FAILED")
        if self.tensorboard:
            from auditor.trackers.tensorboard_log import TensorBoardWriter

            self._trackers["tensorboard"] = TensorBoardWriter(self.tensorboard)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        number = self._epoch = epoch + 1
        figures = dict.fromkeys(AUDIT_LOGS, math.nan)
        if number % self.every == 0:
            audit = self._audit(number)
            figures.update({k: v for k, v in audit["figures"].items() if k in AUDIT_LOGS})
            if self.stop_on and audit["verdict"] in STOP_ON[self.stop_on]:
                self.model.stop_training = True
        if logs is not None:
            logs.update(figures)

    def on_train_end(self, logs=None) -> None:
        """Audit the final model unless its epoch was just audited; close the trackers."""
        if self._epoch and self._epoch != self._last_audited:
            self._audit(self._epoch)
        self._finish("FINISHED")

    def _finish(self, status: str) -> None:
        """Write the index (once per fit: it draws every run's trends), end the trackers (the
        MLflow run with ``status``) and remove the scratch folder; their seconds are the
        fit's "index" and "close"."""
        tick = time.perf_counter()
        if self._scratch is not None and self._last_audited is not None:
            from auditor.runs.history import write_index
            from auditor.runs.watch import ledger_lock

            with ledger_lock(self.root):
                write_index(self.root)
            self.fit_seconds["index"] = time.perf_counter() - tick
        closing = time.perf_counter()
        for tracker in self._trackers.values():
            if hasattr(tracker, "end_if_running"):
                atexit.unregister(tracker.end_if_running)
                tracker.end_if_running(status)
            else:
                tracker.close()
        self._trackers = {}
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
            self.fit_seconds["close"] = time.perf_counter() - closing
            self._end_seconds = time.perf_counter() - tick
        self._handle = None

    def _audit(self, epoch: int) -> dict:
        """Audit this epoch's model; an exception ends the trackers (MLflow's run FAILED)
        before it stops training."""
        try:
            return self._audit_epoch(epoch)
        except BaseException:
            self._finish("FAILED")
            raise

    def _audit_epoch(self, epoch: int) -> dict:
        """Give this epoch's weights to the audit's copy and audit that as watch audits a
        checkpoint (sized to the overhead budget), log the trackers."""
        import functools

        from auditor.errors import ModelError
        from auditor.runs.watch import audit_checkpoint

        started, timed = time.perf_counter(), self.fit_seconds.get("timing", 0.0)
        self._trained += started - self._since
        sized = self._size(self._trained, self._spent)
        configure = self.configure if sized is None else functools.partial(
            self.configure, sections=sized.sections, budget=sized.budget)
        path, sha, held = self._hold_weights(epoch)
        baseline = self._baseline()
        with isolated_random_state(), self._data():
            done = audit_checkpoint(path, self.root, configure, sha=sha, baseline=baseline,
                                    say=lambda line: None, facts={"epoch": epoch},
                                    not_run=sized.not_run if sized else None, index=False,
                                    handle=self._handle, held=held,
                                    baseline_run=self._runs.get(baseline))
        if done.folder is None:
            raise ModelError(done.message)
        self._keep_run(done)
        self._last_audited = epoch
        audit = {"epoch": epoch, "folder": done.folder, "verdict": done.summary["verdict"],
                 "exit_code": done.exit_code, "figures": key_figures(done.summary),
                 "not_run": sorted(sized.not_run) if sized else []}
        self.audits.append(audit)
        self._log_trackers(done.folder, done.summary, epoch)
        once = self.fit_seconds.get("timing", 0.0) - timed  # once per fit, not per audit
        audit["seconds"] = time.perf_counter() - started - once
        self._learn(audit["seconds"], done.summary)
        self._since = time.perf_counter()
        self._spent += self._since - started
        return audit

    def _hold_weights(self, epoch: int) -> tuple[Path, str, tuple[int, int] | None]:
        """Give this epoch's weights to the audit's copy; returns what the run calls the model:
        ``memory:epoch-NNNN``, the hash of its architecture and weights, and (their bytes, the
        time they were taken in ns) for the ledger; with ``checkpoints``, the model saved to
        ``checkpoints/<start of fit>/epoch-NNNN.keras``, its file's hash, and None (the file's
        size and time)."""
        from auditor.inputs.models import MEMORY_MODEL, file_sha256, weights_sha256

        weights = self.model.get_weights()
        if self.checkpoints:
            self._folder.mkdir(parents=True, exist_ok=True)
            path = self._folder / f"epoch-{epoch:04d}.keras"
            self.model.save(path)
            sha, held = file_sha256(path), None
        else:
            path = Path(f"{MEMORY_MODEL}epoch-{epoch:04d}")
            sha = weights_sha256(self._architecture, weights)
            held = (sum(int(np.asarray(w).nbytes) for w in weights), time.time_ns())
        self._handle.assign_weights(weights, str(path), sha)
        return path, sha, held

    def _size(self, trained: float, spent: float):
        """The sections and budget of this audit: ``overhead`` times the seconds ``trained``
        in this fit, less the seconds the callback has ``spent`` in it (its audits and its
        once-per-fit work: what one audit overran or left unspent is the next one's) and less
        the index it writes when training ends (held from the start: ``_index_reserve``),
        for the fixed part of an audit as measured last time and the sections (the plan's
        estimate corrected by how far off it was last time, and what it does not count, as
        measured: ``runs.overhead.size_audit``; what a section not run yet in this fit does
        not count is guessed in fixed parts of an audit, ``GUESS_FIXED_PARTS``); None without
        a budget. Until the model's passes are timed (once per fit), a section that runs them
        is costed below what it can cost plus the timing itself, guessed
        (``GUESS_TIMING_PARTS``): they are timed only when such a section fits with its
        timing paid, and the seconds the timing took are charged before the audit is sized."""
        if self._sizer is None:
            return None
        sizer = self._sizer
        available = self.overhead * trained - spent - self._index_reserve()

        def size(available: float):
            from auditor.runs.overhead import size_audit

            return size_audit(sizer["sections"], self.flags["budget"], available,
                              sizer["plan_at"], sizer["fixed"], sizer["drift"], sizer["extra"],
                              guess=GUESS_FIXED_PARTS * sizer["fixed"],
                              at_least=not sizer["timed"],
                              untimed=None if sizer["timed"] else sizer["timing"])

        sized = size(available)
        if sizer["timed"] or sizer["plan_at"](sized.sections,
                                              sized.budget).estimated_seconds() <= 0:
            return sized
        tick = time.perf_counter()
        sizer["plan_at"] = self._planner(sizer["config"], self._handle, sizer["images"])
        sizer["timed"] = True
        self.fit_seconds["timing"] = time.perf_counter() - tick
        return size(available - self.fit_seconds["timing"])  # spent now, in the account

    def _index_reserve(self) -> float:
        """What the account holds for the end of the fit (the index, the trackers' end): its
        seconds when this callback last ended a fit, else ``GUESS_INDEX_PARTS`` fixed parts of
        an audit, as last measured."""
        if self._end_seconds is not None:
            return self._end_seconds
        return GUESS_INDEX_PARTS * self._sizer["fixed"]

    def _learn(self, seconds: float, summary: dict) -> None:
        """As this audit measured them: the fixed part of an audit (all but its sections and
        their figures: saving, loading, predicting, the report, the ledger, the trackers), each
        section's extra (its figures, and its seconds when the plan estimates it at none: its
        work is not in model passes; the most it took in this fit), and the drift of the
        plan's estimate over the sections it estimates."""
        if self._sizer is None:
            return
        plan, timings = summary.get("plan", {}), summary.get("timings", {})
        figures = {name: timings.get(f"figures.{name}", 0.0) for name in timings
                   if name in self._sizer["sections"]}
        self._sizer["fixed"] = max(seconds - plan.get("seconds", 0.0) - sum(figures.values()),
                                   0.0)
        estimates = plan.get("estimates", {})
        for name, drawn in figures.items():
            unplanned = timings[name] if estimates.get(name, 0.0) <= 0 else 0.0
            self._sizer["extra"][name] = max(self._sizer["extra"].get(name, 0.0),
                                             drawn + unplanned)
        planned = [name for name, estimate in estimates.items() if estimate > 0]
        actual = sum(timings.get(name, 0.0) for name in planned)
        if planned and actual > 0:
            self._sizer["drift"] = actual / sum(estimates[name] for name in planned)

    def _keep_run(self, done) -> None:
        """The run just written, as a later audit's baseline reads it (the first and the last
        audited epochs' only): what this fit wrote is not read back and checked again."""
        from auditor.runs.baseline import Run, read_predictions, summary_file

        kept = {str(audit["folder"]) for audit in self.audits[:1]}
        self._runs = {k: v for k, v in self._runs.items() if k in kept}
        self._runs[str(done.folder)] = Run(done.summary, summary_file(done.folder).resolve(),
                                           read_predictions(Path(done.folder)))

    def _baseline(self) -> str | None:
        if self.baseline not in BASELINES:
            return None if self.baseline is None else str(self.baseline)
        if not self.audits:
            return None
        chosen = self.audits[0] if self.baseline == "first" else self.audits[-1]
        return str(chosen["folder"])

    def _log_trackers(self, folder: Path, summary: dict, epoch: int) -> None:
        if "mlflow" in self._trackers:
            self._trackers["mlflow"].log_audit(folder, summary, epoch,
                                               artifact_path=Path(folder).name)
        if "tensorboard" in self._trackers:
            self._trackers["tensorboard"].log_audit(folder, summary, epoch)
