"""The errors a user can fix: the CLI prints them as one line and exits with code 2."""

import contextlib


class AuditorError(Exception):
    """Bad input or usage. The message names the problem and the fix, in one line."""


class ConfigError(AuditorError):
    """A spec key or CLI flag has an unknown name or a value of the wrong type."""


class ModelError(AuditorError):
    """The model file is missing, unreadable, unsafe to load, or not a classifier."""


class DataError(AuditorError):
    """The dataset is missing, empty, malformed, or does not fit the model."""


class ClusterError(AuditorError):
    """A worker of a multiworker run can no longer be reached (it died, or its machine did):
    the collective ops of the others abort, and the run ends without keeping anything."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: raised in the main thread, so that the staging folder and the
    temporary files of the run are removed on the way out (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    pending: int | None = None  # the signal received: its exception may have been swallowed
    deferring: int = 0  # > 0 inside ``deferred()``: the signal is noted, raised at its end

    @classmethod
    @contextlib.contextmanager
    def deferred(cls):
        """A few steps that must not be cut in half (a folder created and registered for
        removal): a signal arriving inside is raised when they are done."""
        cls.deferring += 1
        try:
            yield
        finally:
            cls.deferring -= 1
        cls.raise_if_pending()

    @classmethod
    def raise_if_pending(cls) -> None:
        """Raise again for a signal whose exception landed where Python ignores exceptions (a
        weakref callback, a ``__del__``): called between sections and before a run is kept."""
        if cls.pending is not None:
            raise cls(cls.pending)
