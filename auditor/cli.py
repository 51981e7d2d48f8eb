"""The command line: a thin click layer that parses, builds an AuditConfig and calls run.py.

Exit codes: 0 all checks pass, 1 a check failed, 2 bad input or usage (one line on stderr, no
traceback).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import shutil
import signal
import sys
from pathlib import Path

import click

from auditor import __version__
from auditor.config.spec import FORMATS, SEED_MAX, STRATEGIES
from auditor.errors import AuditorError, Interrupted


def _quiet_tensorflow(start_devices: bool = True) -> None:
    """Import TensorFlow and start its devices with stderr muted: its C++ start-up chatter would
    bury the one line a user needs. Errors raised by the import itself still surface as
    exceptions. A multiworker run must not start them: its strategy configures the collective
    ops, which TensorFlow allows only before the runtime starts."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow as tf

            if start_devices:  # device start-up logs too (cuInit without a GPU)
                tf.config.list_logical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    # Python-side warnings (such as retracing notes when watch audits many checkpoints in one
    # process) are for TensorFlow developers, not for the reader of an audit log.
    tf.get_logger().setLevel("ERROR")


def _sections(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _budget(value: str | None) -> str | int | None:
    """A number of passes as an int; names are checked with the rest of the config."""
    return int(value) if value is not None and value.strip().isdigit() else value


def _report(outcome) -> None:
    summary = outcome.summary
    checks = [c for c in summary["checks"] if c.get("in_verdict", True)]
    apart = [c for c in summary["checks"] if not c.get("in_verdict", True)]
    broken = sum(c["status"] in ("fail", "error", "warn") for c in apart)
    unmeasured = sum(c["status"] == "skipped" for c in apart)
    _say(f"verdict: {summary['verdict']} "
         f"({sum(c['status'] == 'fail' for c in checks)} failed, "
         f"{sum(c['status'] == 'warn' for c in checks)} warnings, "
         f"{len(checks)} checks"
         f"{'' if summary.get('gated') else '; nothing was gated'})"
         + (f"; explanation reliability, not part of the verdict: {broken} of "
            f"{len(apart)} checks did not pass"
            + (f", {unmeasured} not measurable" if unmeasured else "") if apart else ""),
         err=True)
    if outcome.written:
        _say(str(outcome.page))
    else:  # a multiworker run's other worker: its path would name a folder it did not write
        _say(f"this worker's share is done; the chief writes '{outcome.out}'", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def cli() -> None:
    """Audit a trained Keras image classifier: errors, saliency, Clever Hans, robustness."""


AUDIT_OPTIONS = (
    click.option("--data", help="sklearn:digits[:SPLIT], npz:PATH, tfds:NAME[:SPLIT], or a folder "
                                "with one sub-folder of images per class."),
    click.option("--sections", help="Comma-separated sections to run (default: all)."),
    click.option("--max-samples", type=int, help="Audit a stratified sample of N images."),
    click.option("--baseline", help="An earlier run's folder or summary.json to compare with."),
    click.option("--fail-on", type=click.Choice(["warn", "fail"]), help="Exit 1 on warnings too."),
    click.option("--seed", type=click.IntRange(0, SEED_MAX),
                 help="Seed for sampling, initialisation and noise (0 to 2**32 - 1)."),
    click.option("--batch-size", type=int, help="Images per batch (default 64)."),
    click.option("--input-range", help="What the model expects: auto (default: probed on the "
                                       "data), 0-1, 0-255, -1-1, caffe, torch, or a "
                                       "keras.applications name such as mobilenet_v2."),
    click.option("--output", help="The classifier output of a multi-output model, by name."),
    click.option("--data-range", type=click.Choice(["auto", "0-1", "0-255"]),
                 help="Value range of npz pixel data."),
    click.option("--strict-data", is_flag=True, default=None,
                 help="Stop with an error on an unreadable image instead of skipping and "
                      "listing it."),
    click.option("--train-data", help="Separate data for fine-tuning copies of the model."),
    click.option("--compare-model", help="A second model whose saliency is compared."),
    click.option("--strategy", type=click.Choice(STRATEGIES),
                 help="tf.distribute strategy for batched steps: default (one device), "
                      "mirrored (all local GPUs or logical CPUs), multiworker (the machines "
                      "in TF_CONFIG)."),
    click.option("--budget", callback=lambda _, __, value: _budget(value),
                 help="Compute plan: quick, standard (default), thorough, or a number of model "
                      "passes; explicit section options in the spec always win."),
    click.option("--format", help=f"Comma list of outputs: {','.join(FORMATS)} (default all; "
                                  "summary.json is always written; without html no figure is "
                                  "drawn)."),
    click.option("--unsafe-load", is_flag=True, default=None,
                 help="Allow models with Lambda layers or custom objects (runs their code)."),
    click.option("--mlflow", is_flag=True, default=None,
                 help="Log the run to MLflow (MLFLOW_TRACKING_URI, or --mlflow-uri): params, "
                      "check values and key figures, verdict and status tags, the run folder "
                      "as artifacts. Needs the [mlflow] extra."),
    click.option("--mlflow-uri", help="The MLflow tracking URI (implies --mlflow)."),
    click.option("--tensorboard", metavar="LOGDIR",
                 help="Write the run's key figures, check values, panels and verdict to a "
                      "TensorBoard log folder."),
    click.option("--no-progress", is_flag=True,
                 help="No progress bars (the one log line per section stays)."),
    click.option("--quiet", is_flag=True, default=None,
                 help="No progress bars and no log lines: only the result."),
)


def audit_options(command):
    """The options an audit takes, shared by ``audit`` and ``watch``."""
    for option in reversed(AUDIT_OPTIONS):
        command = option(command)
    return command


def _flags(no_progress: bool, flags: dict) -> dict:
    flags["sections"] = _sections(flags["sections"])
    if no_progress:
        flags["progress"] = False
    return flags


@cli.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="A .keras or .h5 file, a SavedModel folder, or 'demo'.")
@click.option("--out", help="Output folder (default: reports/<model>-<timestamp>/).")
@audit_options
def audit(spec, no_progress, **flags) -> None:
    """Audit a model on a labelled dataset and write the report folder."""
    from auditor.config.spec import read_spec
    from auditor.configure import make_config
    from auditor.pipeline import input_paths, run_audit
    from auditor.runs.staging import check_out

    config = make_config(read_spec(spec) if spec else None, **_flags(no_progress, flags))
    if config.out:  # a --out it cannot write (no room, a name too long) fails at once too
        check_out(Path(config.out), input_paths(config))
    # only once the spec is known good: a typo fails before the import
    _quiet_tensorflow(start_devices=config.strategy != "multiworker")
    outcome = run_audit(config)
    _report(outcome)
    sys.exit(outcome.exit_code)


@cli.command()
@click.option("--out", help="Output folder (default: reports/<model>-<timestamp>/).")
@click.option("--no-progress", is_flag=True,
              help="No progress bars (the one log line per section stays).")
@click.option("--quiet", is_flag=True, default=None,
              help="No progress bars and no log lines: only the result.")
def demo(out, no_progress, quiet) -> None:
    """Train (once, cached) a small CNN on scikit-learn's digits and audit it."""
    from auditor.config.spec import read_spec
    from auditor.configure import make_config
    from auditor.inputs.demo import demo_spec_path
    from auditor.pipeline import run_audit


    config = make_config(read_spec(demo_spec_path()), out=out, quiet=quiet,
                         progress=False if no_progress else None)
    outcome = run_audit(config)
    _report(outcome)
    sys.exit(outcome.exit_code)


@cli.command()
@click.argument("old", type=click.Path(exists=True))
@click.argument("new", type=click.Path(exists=True))
@click.option("--out", help="The page to write: a .html file or a folder (default: "
                            "comparison.html beside NEW's summary.json).")
@click.option("--fail-on", type=click.Choice(["warn", "fail"]), default="fail",
              help="Exit 1 on regression warnings too.")
def compare(old, new, out, fail_on) -> None:
    """Compare two runs (folders or summary.json files): NEW against OLD as its baseline.

    Writes comparison.html, prints what changed, and exits 1 when NEW regressed (the baseline
    checks of NEW's spec fail), else 0.
    """
    from auditor.runs.compare import compare as compare_runs
    from auditor.runs.compare import text_verdict

    result = compare_runs(old, new, out)
    _say(text_verdict(result), err=True)
    _say(str(result.out))
    sys.exit(result.exit_code(fail_on))


@cli.command()
@click.argument("reports_dir", default="reports", required=False,
                type=click.Path(file_okay=False))
@click.option("--out", help="The page to write (default: REPORTS_DIR/index.html).")
def index(reports_dir, out) -> None:
    """Write index.html over every run in REPORTS_DIR: verdicts, key figures and trends."""
    from auditor.runs.history import write_index

    path, count = write_index(reports_dir, out)
    _say(f"{count} runs", err=True)
    _say(str(path))


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--out", help="Reports root: one folder per checkpoint, and index.html "
                            "(default: the spec's 'out', else reports/).")
@click.option("--once", is_flag=True, help="Look once and exit (for cron); else keep polling.")
@click.option("--interval", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds between looks when polling.")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds a checkpoint's size must stay the same before it is read.")
@click.option("--spec", "spec_option", type=click.Path(dir_okay=False),
              help="The audit spec, as an option (same as the SPEC argument).")
@audit_options
def watch(folder, spec, spec_option, out, once, interval, settle, no_progress, **flags) -> None:
    """Audit each new .keras/.h5 checkpoint in FOLDER against the previous one, and update
    the index. Exits with the worst exit code of the audits it ran (0 if none)."""
    from pathlib import Path

    from auditor.config.spec import read_spec
    from auditor.configure import make_config
    from auditor.runs.watch import watch as watch_folder

    if spec and spec_option and spec != spec_option:
        raise click.UsageError(f"two specs given ('{spec}' and --spec '{spec_option}'); "
                               "give one")
    spec = spec or spec_option
    parsed = read_spec(spec) if spec else {}
    root = Path(out or parsed.get("out") or "reports")
    flags = _flags(no_progress, flags)
    make_config(parsed, **{**flags, "model": "checked-per-checkpoint"})  # fail early on bad input
    _quiet_tensorflow()

    def configure(**per_checkpoint):
        return make_config(parsed, **{**flags, **per_checkpoint})

    code = watch_folder(Path(folder), root, configure, once=once, interval=interval,
                        settle=settle, say=lambda line: _say(line, err=True))
    _say(str(root / "index.html"))
    sys.exit(code)


@cli.command()
def methods() -> None:
    """List the attribution methods, their options with defaults, and the scores."""
    from auditor.methods.attribution import describe_methods

    _say(describe_methods())


def _stop_on_signals() -> dict:
    """SIGINT and SIGTERM (what CI runners and ``timeout`` send) raise Interrupted, so that the
    run cleans up on the way out: its staging folder, and TensorFlow's autograph temporary
    files (removed by TensorFlow's own exit handlers, which a killed process never runs)."""

    def stop(signum, frame):
        for name in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut cleanup short
            signal.signal(name, signal.SIG_IGN)
        Interrupted.pending = signum
        if not Interrupted.deferring:  # else raised as soon as the deferred steps are done
            raise Interrupted(signum)

    return {name: signal.signal(name, stop) for name in (signal.SIGINT, signal.SIGTERM)}


def _hide_swallowed_interruptions(previous_hook):
    """An Interrupted raised inside a weakref callback or a __del__ is swallowed by Python, which
    prints its traceback; it is re-raised from ``Interrupted.pending``, so say nothing of it."""

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, Interrupted):
            previous_hook(unraisable)

    return hook


def _exit_interrupted(signum: int) -> None:
    """Say so in one line and end the process at once, skipping the interpreter's teardown.

    The signal lands mid-computation, with TensorFlow's and tf.data's native threads still at
    work; tearing the interpreter down under them can abort in glibc (``free(): invalid next
    size (fast)``, exit -6 instead of 130). What that teardown does that a user would miss is
    done first: the atexit handlers (TensorFlow's autograph temporary files, logging's last
    flush, ``weakref.finalize`` cleanups) and the flush of stdout and stderr. Non-daemon
    threads are not waited for: no thread of a run is worth waiting for once it is stopped.
    """
    from auditor.runs import leftovers

    for folder in leftovers.held():  # what the unwinding did not reach (see runs/leftovers.py)
        leftovers.release(folder)
        shutil.rmtree(folder, ignore_errors=True)
    _say(f"error: interrupted by {signal.Signals(signum).name}; the run in progress was "
         "removed, nothing half-written is left", err=True)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream
            stream.flush()
    os._exit(128 + signum)


RUNS = ("audit", "demo", "watch")  # the commands that run audits, and their temporary files


def _use_scratch() -> None:
    """This process's temporary files go to a claimed scratch folder, removed at exit (those
    of dead runs are removed by the audit, ``runs/leftovers.py``)."""
    import tempfile

    from auditor.runs import leftovers

    if leftovers.SCRATCH.match(Path(tempfile.gettempdir()).name):
        return  # an earlier call in this process (tests run the CLI in-process)
    scratch = leftovers.process_scratch()
    atexit.register(leftovers.remove_scratch, scratch)  # after TensorFlow's own, registered later


def _say(text: str, err: bool = False) -> None:
    """One line out; a reader that has gone (``auditor ... | head -1``) is no error: the
    rest of the output is dropped and the exit code stays what the run decided."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a name's stray bytes
    try:
        click.echo(text, err=err)
    except BrokenPipeError:
        _drop_closed_stream(sys.stderr if err else sys.stdout)
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _drop_closed_stream(sys.stderr if err else sys.stdout)


def _drop_closed_stream(stream) -> None:
    """Point a stream whose reader closed it at /dev/null, so that later writes and the flush
    at exit do not fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def main() -> None:
    """Entry point: usage and input errors become one line on stderr and exit code 2; an
    interruption exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), at
    once (see _exit_interrupted): even a caller that catches SystemExit ends there."""
    previous = _stop_on_signals()
    previous_hook, sys.unraisablehook = sys.unraisablehook, _hide_swallowed_interruptions(
        sys.unraisablehook)
    try:
        if len(sys.argv) > 1 and sys.argv[1] in RUNS:
            _use_scratch()
        if len(sys.argv) > 1 and sys.argv[1] in ("demo", "methods"):
            _quiet_tensorflow()
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _say("error: aborted", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        hint = f" (see 'auditor {exc.ctx.info_name} --help')" if exc.ctx else ""
        _say(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except AuditorError as exc:
        _say(f"error: {exc}", err=True)
        sys.exit(2)
    except Interrupted as exc:
        _exit_interrupted(exc.signum)
    except Exception:
        if Interrupted.pending is None:
            raise
        # The signal's exception, raised where TensorFlow's C++ calls back into Python, can
        # come out as another one (SystemError: bad argument to internal function, from
        # tf.function tracing): it is the interruption all the same.
        _exit_interrupted(Interrupted.pending)
    finally:  # the caller's handlers again (main may run inside another program, or a test)
        Interrupted.pending = None
        sys.unraisablehook = previous_hook
        for name, handler in previous.items():
            signal.signal(name, handler)
