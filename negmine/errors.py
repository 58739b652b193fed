"""Errors that negmine raises on purpose, each with the exit code the CLI maps it to.

Exit codes (docs/exit-codes.md):
    0  success
    1  a stage failed (StageError, or an unexpected exception), or an output could not be
       written (OutputError: disk full, file too large, read-only or not a directory; the
       message names the path, and no half-written table is left behind)
    2  bad input: a file, row or field the user can fix (BadInputError)
    3  the run directory is locked by another negmine (RunLockedError), or the run was
       interrupted (Ctrl-C); rerun the same command to resume
"""

from __future__ import annotations


class NegmineError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class StageError(NegmineError):
    """A stage could not finish (a missing dependency, a model that would not load, ...)."""

    exit_code = 1


class BadInputError(NegmineError):
    """Input the user can fix. The message names the file, the line/row and the field."""

    exit_code = 2

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):  # pickles intact, so a Ray task's bad input reaches the driver as itself
        return type(self), (self.path, self.reason, self.line, self.field)


class RunLockedError(NegmineError):
    """Another negmine holds the run directory."""

    exit_code = 3


class OutputError(NegmineError):
    """An output could not be written (ENOSPC, EFBIG, EROFS, EACCES, ENOTDIR ...); names the path."""

    exit_code = 1

    def __init__(self, path, exc: OSError):
        self.path = str(path)
        self.errno = exc.errno
        import os

        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        super().__init__(f"{self.path}: cannot write ({reason}); nothing was half-written, fix the cause and rerun")


def check_choice(option: str, value, valid) -> None:
    """A user's choice among ``valid`` values (a strategy, a source, a precision, a format ...): anything
    else is bad input naming the option and the valid values."""
    if value not in valid:
        raise BadInputError(option, f"unknown value {value!r}; choose from {sorted(valid)}")


def check_at_least(option: str, value, minimum: int = 1) -> None:
    """A count the user gives (k, a number of negatives ...): below ``minimum`` it is bad input naming the option."""
    if value is None or isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadInputError(option, f"must be a whole number >= {minimum}, got {value!r}")
