"""Atomic writes and schema-checked reads of the run directory's files.

A write goes to a temporary name in the destination folder, is fsynced, then renamed over the
target, so a killed run never leaves a half-written table that looks whole. A read checks the
file against its declared schema and names the file, row and column of the first violation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from negmine.errors import BadInputError

# Types a reader accepts in place of the declared one (cast on read, checked).
_COMPATIBLE = {
    pa.string(): (pa.large_string(), pa.string_view() if hasattr(pa, "string_view") else pa.string()),
    pa.int32(): (pa.int8(), pa.int16(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()),
    pa.float32(): (pa.float16(), pa.float64()),
}


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_table(table: pa.Table, path: str | os.PathLike, schema: pa.Schema) -> Path:
    """Cast ``table`` to ``schema`` and write it atomically as Parquet (deterministic bytes)."""
    table = table.select(schema.names).cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 20)
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)


def read_table(path: str | os.PathLike, schema: pa.Schema, what: str | None = None) -> pa.Table:
    """Read a Parquet table and check it against ``schema``.

    Extra columns are dropped; missing columns, incompatible types and nulls in non-nullable
    columns raise :class:`BadInputError` naming the file, the column and (for nulls) the row.
    """
    path = Path(path)
    what = what or "table"
    if not path.exists():
        raise BadInputError(path, f"{what} file does not exist")
    try:
        file_schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(path, f"not a readable Parquet file ({exc})") from None
    for field in schema:
        if field.name not in file_schema.names:
            raise BadInputError(
                path,
                f"missing column; {what} needs columns {schema.names}, file has {file_schema.names}",
                field=field.name,
            )
        found = file_schema.field(field.name).type
        all_null = found == pa.null() and field.nullable
        if found != field.type and not all_null and found not in _COMPATIBLE.get(field.type, ()):
            raise BadInputError(path, f"expected type {field.type}, found {found}", field=field.name)
    table = pq.read_table(path, columns=schema.names)
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            raise BadInputError(path, f"null value in non-nullable column (row {row})", field=field.name)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInputError(path, f"values do not fit the declared schema ({exc})") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
