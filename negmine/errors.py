"""Errors that negmine raises on purpose, each with the exit code the CLI maps it to.

Exit codes (documented in the README):
    0  success
    1  a stage failed (StageError, or an unexpected exception)
    2  bad input: a file, row or field the user can fix (BadInputError)
    3  the run directory is locked by another negmine, or a stage was interrupted (RunLockedError)
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


class RunLockedError(NegmineError):
    """Another negmine holds the run directory."""

    exit_code = 3
