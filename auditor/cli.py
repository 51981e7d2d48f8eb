"""The command line: a thin click layer that parses, builds an AuditConfig and calls run.py.

Exit codes: 0 all checks pass, 1 a check failed, 2 bad input or usage (one line on stderr, no
traceback).
"""

from __future__ import annotations

import os
import sys

import click

from auditor import __version__
from auditor.errors import AuditorError

DEMO_SPEC = {"model": "demo", "data": "sklearn:digits:test"}


def _quiet_tensorflow() -> None:
    """Import TensorFlow with stderr muted: its C++ start-up chatter would bury the one line a
    user needs. Errors raised by the import itself still surface as exceptions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _sections(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [name.strip() for name in value.split(",") if name.strip()]


def _report(outcome) -> None:
    summary = outcome.summary
    click.echo(f"verdict: {summary['verdict']} "
               f"({sum(c['status'] == 'fail' for c in summary['checks'])} failed, "
               f"{sum(c['status'] == 'warn' for c in summary['checks'])} warnings, "
               f"{len(summary['checks'])} checks)", err=True)
    click.echo(str(outcome.out / "report.html"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def cli() -> None:
    """Audit a trained Keras image classifier: errors, saliency, Clever Hans, robustness."""


@cli.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False))
@click.option("--model", help="A .keras or .h5 file, a SavedModel folder, or 'demo'.")
@click.option("--data", help="sklearn:digits[:SPLIT], npz:PATH, tfds:NAME[:SPLIT], or a folder "
                             "with one sub-folder of images per class.")
@click.option("--out", help="Output folder (default: reports/<model>-<timestamp>/).")
@click.option("--sections", help="Comma-separated sections to run (default: all).")
@click.option("--max-samples", type=int, help="Audit a stratified sample of N images.")
@click.option("--baseline", help="An earlier run's folder or summary.json to compare with.")
@click.option("--fail-on", type=click.Choice(["warn", "fail"]), help="Exit 1 on warnings too.")
@click.option("--seed", type=int, help="Seed for sampling, initialisation and noise.")
@click.option("--batch-size", type=int, help="Images per batch (default 64).")
@click.option("--input-range", help="What the model expects: 0-1, 0-255, -1-1, or a "
                                    "keras.applications name such as mobilenet_v2.")
@click.option("--data-range", type=click.Choice(["auto", "0-1", "0-255"]),
              help="Value range of npz pixel data.")
@click.option("--train-data", help="Separate data for fine-tuning copies of the model.")
@click.option("--compare-model", help="A second model whose saliency is compared.")
@click.option("--unsafe-load", is_flag=True, default=None,
              help="Allow models with Lambda layers or custom objects (runs their code).")
@click.option("--no-progress", is_flag=True, help="No progress output.")
def audit(spec, no_progress, **flags) -> None:
    """Audit a model on a labelled dataset and write the report folder."""
    from auditor.config import make_config, read_spec
    from auditor.run import run_audit

    flags["sections"] = _sections(flags["sections"])
    if no_progress:
        flags["progress"] = False
    config = make_config(read_spec(spec) if spec else None, **flags)
    outcome = run_audit(config)
    _report(outcome)
    sys.exit(outcome.exit_code)


@cli.command()
@click.option("--out", help="Output folder (default: reports/<model>-<timestamp>/).")
@click.option("--no-progress", is_flag=True, help="No progress output.")
def demo(out, no_progress) -> None:
    """Train (once, cached) a small CNN on scikit-learn's digits and audit it."""
    from auditor.config import make_config
    from auditor.run import run_audit

    config = make_config(DEMO_SPEC, out=out, progress=False if no_progress else None)
    outcome = run_audit(config)
    _report(outcome)
    sys.exit(outcome.exit_code)


@cli.command()
def methods() -> None:
    """List the attribution methods, their options with defaults, and the scores."""
    from auditor.attribution import describe_methods

    click.echo(describe_methods())


def main() -> None:
    """Entry point: usage and input errors become one line on stderr and exit code 2."""
    try:
        if len(sys.argv) > 1 and sys.argv[1] in ("audit", "demo", "watch", "compare", "methods"):
            _quiet_tensorflow()
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        hint = f" (see 'auditor {exc.ctx.info_name} --help')" if exc.ctx else ""
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except AuditorError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
