"""Failures as one line for the report, their tracebacks in the run folder's ``audit.log``.

People attach reports to reviews: a report holds no traceback and no file path of the machine
that ran it. A section or method that fails says what failed in one line (the root cause's own
message, unwrapped from autograph's "in user code:" frames and TensorFlow's "Graph execution
error" node stacks); the full traceback goes to ``audit.log`` in the run folder, which the run's
marker lists like every file the run wrote.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

LOG_FILE = "audit.log"
MAX_CHARS = 400  # a reason longer than this is cut: it is a summary, the log has the rest
# Lines of a wrapped TensorFlow message that are frames or framing, never the cause.
_FRAMING = ("in user code:", "Traceback (most recent call last)", "Graph execution error",
            "Detected at node", "defined at (most recent call last)", "[[", "During handling",
            "The above exception")
_OP_SUFFIX = re.compile(r"\s*(\[\[\{\{node [^}]*\}\}\]\]|\[Op:[^\]]*\]|\[\[.*?\]\])")
_TYPE_PREFIX = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Warning)): ")
_OURS = ("AuditorError", "ConfigError", "ModelError", "DataError")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.@+-]+){2,}\.py")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Keras prints its cause in bold
# Keras's framing of an error raised in a layer's call: the layer, then the cause, then the
# arguments it received (their shapes are no cause).
_KERAS_CALL = re.compile(r"Exception encountered when calling (\S+?)\.?$")
_KERAS_ARGUMENTS = ("Arguments received by", "•")


def one_line(exc: BaseException) -> str:
    """The failure's cause in one line: the last line of its message that is neither a frame
    nor framing, with file paths and op names cut, prefixed by the exception's type (the audit's
    own errors are written for the reader and keep no type)."""
    cause = _last_cause(str(exc))
    cause = _PATH.sub("<file>", _OP_SUFFIX.sub("", cause)).strip()
    named = _TYPE_PREFIX.match(cause)
    if named and named.group(1).split(".")[-1] in _OURS:
        cause = cause[named.end():]
    elif not named and not _is_ours(exc):
        cause = f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__
    return cause if len(cause) <= MAX_CHARS else cause[:MAX_CHARS - 1] + "…"


def _last_cause(text: str) -> str:
    """The last line of ``text`` that is not a traceback frame, its code, or framing; with
    the layer whose call raised it when Keras names one."""
    cause, after_frame, called = "", False, None
    for line in _ANSI.sub("", text).splitlines():
        stripped = line.strip()
        keras_call = _KERAS_CALL.search(stripped)
        if keras_call or stripped.startswith(_KERAS_ARGUMENTS):
            called = keras_call.group(1) if keras_call else called
            continue
        if stripped.startswith("File "):
            after_frame = True  # the next indented line is the frame's code
            continue
        if after_frame and line.startswith(" ") and not _TYPE_PREFIX.match(stripped):
            after_frame = False
            continue
        after_frame = False
        if stripped and not stripped.startswith(_FRAMING):
            cause = stripped
    return f"{cause} (in {called})" if called and cause else cause


def _is_ours(exc: BaseException) -> bool:
    """The audit's own errors are written for the reader: their type adds nothing."""
    from auditor.errors import AuditorError

    return isinstance(exc, AuditorError)


def log_failure(folder: Path | None, where: str, exc: BaseException) -> str:
    """Append ``exc``'s full traceback to the run folder's audit.log under ``where`` (a
    section, a view, a method) and return its one line for the report."""
    line = one_line(exc)
    if folder is not None:
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        with open(Path(folder) / LOG_FILE, "a", encoding="utf-8") as log:
            log.write(f"== {where}: {line}\n{detail}\n")
    return line
