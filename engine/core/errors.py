"""One error hierarchy for the whole engine.

Every message names the file or value at fault and, where there is a choice, lists the
allowed options, so the CLI can print ``str(err)`` and the desktop can show it verbatim.
"""

from __future__ import annotations


class LoupeError(Exception):
    """Base class: anything Loupe reports to a user as a plain message."""


class DatasetError(LoupeError):
    """The image folder, a label rule or a split cannot be used as asked."""


class ConfigError(LoupeError):
    """A setting (CLI option, project file, training config) has an invalid value."""


class ModelFileError(LoupeError):
    """A model bundle or weights file is missing, malformed or unsafe."""


class WeightsError(LoupeError):
    """Pretrained weights could not be found, imported or downloaded."""


class TrainingError(LoupeError):
    """Training stopped for a reason the user can act on (advice is in the message)."""


class WriteError(LoupeError, OSError):
    """A file Loupe writes could not be written: above all a full disk (the message names
    the file and the space it needs). Also an OSError, so code that tolerates a failed
    write of a cache file (``except OSError``) keeps doing so."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None):
        OSError.__init__(self, errno, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CancelledError(LoupeError):
    """Raised inside long operations when their cancel token is set."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)


def describe_error(exc: BaseException) -> str:
    """The one line a person is shown for ``exc`` (the CLI prints it, the desktop's dialog
    shows it): a Loupe error verbatim (it names the file or value), an OSError as
    ``FILE: reason``, anything else with its type, so an unexpected error is recognisable.
    """
    if isinstance(exc, LoupeError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
