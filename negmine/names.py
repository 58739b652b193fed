"""Names that become part of a path inside the run directory: a model name (``RUN/models/NAME``), a
strategy (``negatives_STRATEGY.parquet``), a candidate source (``candidates_SOURCE.parquet``) and any
such name taken from a flag or a recipe file.

A name is 1 to 100 characters of ``A-Z a-z 0-9 . _ -``, does not start with a dot and holds no
``..``: it cannot name a folder separator, a parent folder, an absolute path or a hidden file, so what
is written under it stays inside the run directory.
"""

from __future__ import annotations

import re

from negmine.errors import BadInputError

MAX_LENGTH = 100
_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def check_name(value, option: str) -> str:
    """Return ``value`` when it is a safe name; otherwise raise :class:`BadInputError` naming ``option``
    (the flag or recipe key it came from; exit code 2)."""
    shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else repr(value[:60] + "…")
    rule = f"use 1 to {MAX_LENGTH} of the characters A-Z a-z 0-9 . _ -, not starting with a dot and without '..'"
    if not isinstance(value, str) or not value:
        raise BadInputError(option, f"{shown} is not a safe name: {rule}")
    if len(value) > MAX_LENGTH:
        raise BadInputError(option, f"{shown} is not a safe name: {len(value)} characters, at most {MAX_LENGTH}")
    if not _SAFE.fullmatch(value):
        raise BadInputError(option, f"{shown} is not a safe name: {rule}")
    if value.startswith(".") or ".." in value:
        raise BadInputError(option, f"{shown} is not a safe name: {rule}")
    return value
