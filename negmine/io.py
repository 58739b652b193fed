"""Atomic writes and schema-checked reads of the run directory's files.

A write goes to a temporary name in the destination folder, is fsynced, then renamed over the
target, so a killed run never leaves a half-written table that looks whole. A read checks the
file against its declared schema and names the file, row and column of the first violation.

An OS error while writing (disk full, file too large, read-only or missing permission, a path
component that is a file) becomes :class:`~negmine.errors.OutputError` naming the target; the
temporary file is removed first. Temporaries a killed process left behind (``.NAME.*.tmp``) are
removed by :func:`clean_temporaries`, which the run directory's lock calls once it is held.

Test hook: with ``NEGMINE_TEST_PAUSE_AT=NAME[,NAME...]`` (file names such as ``corpus.parquet``),
:func:`atomic_path` stops after the temporary file for that target is complete and fsynced, just
before the rename; it prints ``negmine-test: paused before renaming PATH`` on stderr and waits until
the file named by ``NEGMINE_TEST_RESUME_FILE`` exists (forever when unset). The reliability tests
use it to kill a run at an exact point or to hold the run lock; it does nothing when unset.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from negmine.errors import BadInputError, OutputError

PAUSE_ENV = "NEGMINE_TEST_PAUSE_AT"
RESUME_ENV = "NEGMINE_TEST_RESUME_FILE"
# OS errors that mean "this output cannot be written here"; others propagate unchanged.
_WRITE_ERRNOS = {
    errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
    errno.EEXIST, errno.EISDIR, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC),
}

# Types a reader accepts in place of the declared one (cast on read, checked).
_COMPATIBLE = {
    pa.string(): (pa.large_string(), pa.string_view() if hasattr(pa, "string_view") else pa.string()),
    pa.int32(): (pa.int8(), pa.int16(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32()),
    pa.float32(): (pa.float16(), pa.float64()),
}


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    On any exception the temporary file is removed and ``target`` is left as it was; an OS error
    that means the output cannot be written there is raised as :class:`OutputError`.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(target, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode a plain open() would
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        _test_pause(target)
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise OutputError(target, exc) from None
        raise


@contextlib.contextmanager
def output_errors(target: str | os.PathLike) -> Iterator[None]:
    """An OS error inside that means ``target`` cannot be written (disk full, file too large, read-only,
    permission …) is raised as :class:`OutputError` naming it; other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:
            raise OutputError(target, exc) from None
        raise


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: some filesystems refuse to fsync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _test_pause(target: Path) -> None:
    names = os.environ.get(PAUSE_ENV)
    if not names or target.name not in names.split(","):
        return
    print(f"negmine-test: paused before renaming {target}", file=sys.stderr, flush=True)
    resume = os.environ.get(RESUME_ENV)
    while not (resume and os.path.exists(resume)):
        time.sleep(0.05)


def clean_temporaries(root: str | os.PathLike) -> list[str]:
    """Remove the ``.NAME.*.tmp`` files and folders a killed writer left under ``root``.

    Call only while holding the run lock (nobody else can be writing them). Returns what was removed.
    """
    root = Path(root)
    removed = []
    for path in sorted(root.rglob(".*.tmp"), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(str(path.relative_to(root)))
    return removed


# how every table is written (a ParquetWriter streaming batches uses the same options)
PARQUET_OPTIONS = {"compression": "zstd"}


def write_table(table: pa.Table, path: str | os.PathLike, schema: pa.Schema) -> Path:
    """Cast ``table`` to ``schema`` and write it atomically as Parquet (deterministic bytes)."""
    table = table.select(schema.names).cast(schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=1 << 20, **PARQUET_OPTIONS)
    return Path(path)


def write_json(obj, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(path)


def _malloc_trim():
    """glibc's ``malloc_trim(0)``: the free memory at the top of its heaps goes back to the OS (a no-op
    where there is no glibc)."""
    try:
        import ctypes

        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


malloc_trim = _malloc_trim()


def release_unused_memory() -> None:
    """Memory freed but kept by Arrow's allocator (mimalloc/jemalloc) and by glibc goes back to the OS.

    Arrow's allocator keeps, for reuse, the buffers a Parquet read decoded through and what a finished
    stage freed, so the process stays at its high-water mark; once they are released the next stage
    starts from what it holds, not from the previous one's high-water mark.
    """
    pa.default_memory_pool().release_unused()
    malloc_trim()


def _open(path: Path, what: str) -> pa.NativeFile:
    """The file, opened once: everything read of a table comes through this handle, so a writer that
    replaces the file meanwhile (negmine.io writes by renaming a new file over the old) leaves what is
    read whole, the old table to the end."""
    if not path.exists():
        raise BadInputError(path, f"{what} file does not exist")
    try:
        return pa.OSFile(str(path))
    except OSError as exc:
        raise BadInputError(path, f"not a readable Parquet file ({exc})") from None


def _checked_schema(path: Path, source: pa.NativeFile, schema: pa.Schema, what: str) -> None:
    """The file (open as ``source``) is Parquet and has each of ``schema``'s columns in a compatible type."""
    try:
        file_schema = pq.read_schema(source)
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


def _checked_values(table: pa.Table, path: Path, schema: pa.Schema, first_row: int = 0) -> pa.Table:
    """``table`` (rows ``first_row``… of the file) cast to ``schema``, after checking its non-nullable columns."""
    for field in schema:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            row = first_row + pc.index(pc.is_null(column), True).as_py()
            raise BadInputError(path, f"null value in non-nullable column (row {row})", field=field.name)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInputError(path, f"values do not fit the declared schema ({exc})") from None


def read_table(path: str | os.PathLike, schema: pa.Schema, what: str | None = None) -> pa.Table:
    """Read a Parquet table and check it against ``schema``.

    Extra columns are dropped; missing columns, incompatible types and nulls in non-nullable
    columns raise :class:`BadInputError` naming the file, the column and (for nulls) the row.
    """
    path = Path(path)
    with _open(path, what or "table") as source:
        _checked_schema(path, source, schema, what or "table")
        try:
            table = pq.read_table(source, columns=schema.names)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise BadInputError(path, f"not a readable Parquet file ({exc})") from None
    table = _checked_values(table, path, schema)
    release_unused_memory()  # the decoding buffers
    return table


class LazyTable:
    """A Parquet table read a slice at a time: :meth:`slices` yields what ``read_table(...)[i:i + size]``
    holds, checked the same way (a bad row fails when its slice is read, naming its row in the file).

    A stage that streams over a table (the embed stage over the corpus) holds one slice of it, not the
    table: the file is read through a 1 MB buffer, page by page, so even a file of a single row group is
    never decoded whole (bench/scale.py reports the embed stage's peak RSS).
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, what: str | None = None):
        self.path, self.schema = Path(path), schema
        # held open: the rows :meth:`slices` reads are those of the file counted here, even if it is replaced
        self._source = _open(self.path, what or "table")
        _checked_schema(self.path, self._source, schema, what or "table")
        try:
            self.num_rows = pq.ParquetFile(self._source).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise BadInputError(self.path, f"not a readable Parquet file ({exc})") from None

    def __len__(self) -> int:
        return self.num_rows

    def slices(self, size: int) -> Iterator[pa.Table]:
        """Consecutive slices of ``size`` rows (the last one shorter), whatever the file's row groups."""
        if size < 1:
            raise ValueError(f"slice size must be at least 1, got {size}")
        pending: list[pa.RecordBatch] = []
        held = first_row = 0
        try:
            batches = pq.ParquetFile(self._source, buffer_size=1 << 20, pre_buffer=False).iter_batches(batch_size=size, columns=self.schema.names)
            for batch in batches:
                pending.append(batch)
                held += batch.num_rows
                while held >= size:
                    table = pa.Table.from_batches(pending)
                    yield _checked_values(table.slice(0, size).combine_chunks(), self.path, self.schema, first_row)
                    rest = table.slice(size)
                    pending = rest.combine_chunks().to_batches() if rest.num_rows else []
                    held -= size
                    first_row += size
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise BadInputError(self.path, f"not a readable Parquet file ({exc})") from None
        if held:
            yield _checked_values(pa.Table.from_batches(pending).combine_chunks(), self.path, self.schema, first_row)


def table_slices(table: "pa.Table | LazyTable", size: int) -> Iterator[pa.Table]:
    """Consecutive slices of ``size`` rows: zero-copy views of a table, or read one at a time from a
    :class:`LazyTable` (which then holds one slice, not the table)."""
    if isinstance(table, LazyTable):
        return table.slices(size)
    if size < 1:
        raise ValueError(f"slice size must be at least 1, got {size}")
    return (table.slice(start, size) for start in range(0, table.num_rows, size))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
