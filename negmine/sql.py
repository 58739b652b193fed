"""``negmine sql``: every Parquet table of a run as a DuckDB view named after its file.

A view ``negatives`` unions all ``negatives_<strategy>`` tables (by column name), so one query
can compare strategies.

By default a query is confined to the run: it may read the run directory's files and nothing else,
and only statements that read (SELECT, with DESCRIBE, SHOW, SUMMARIZE and EXPLAIN) are run. COPY,
INSTALL, LOAD, ATTACH, SET, CREATE and every other statement are refused, and so is any file
outside the run directory. DuckDB's own settings enforce the file limits (``enable_external_access``
off, ``allowed_directories`` the run directory, extensions neither installed nor loaded
automatically) and ``lock_configuration`` keeps a statement from lifting them. A refused statement
raises :class:`~negmine.errors.BadInputError` (exit 2). ``allow_external=True`` (``negmine sql
--allow-external``) runs any statement with the process's own access.

Each table file is opened once, when the query starts, and every scan of the query reads that open
file: a table replaced while the query runs is seen as it was when the query started, whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from negmine.errors import BadInputError

FORMATS = ("table", "csv", "json")
_FD_DIR = "/proc/self/fd"  # an open file's stable name, where the platform has one
_HINT = "negmine sql only reads the run directory's tables and files; --allow-external lifts this"


def _read_only_types():
    import duckdb

    return {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _check_statements(sql: str) -> None:
    """Refuse any statement that does more than read."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadInputError("<sql>", str(exc).splitlines()[0], field="query") from None
    allowed = _read_only_types()
    for statement in statements:
        if statement.type not in allowed:
            text = " ".join(statement.query.split())
            shown = text if len(text) <= 80 else text[:80] + "…"
            kind = statement.type.name.removesuffix("_STATEMENT")
            raise BadInputError("<sql>", f"refused {shown!r} (a {kind} statement): {_HINT}", field="query")


@contextlib.contextmanager
def session(run_dir: str | Path, allow_external: bool = False) -> Iterator[tuple]:
    """(a DuckDB connection with a view per table of ``run_dir``, confined unless ``allow_external``;
    {view: (the open file it reads, the table's path)})."""
    import duckdb

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInputError(run_dir, "run directory does not exist")
    root = str(run_dir.resolve())
    fds: dict[str, int] = {}
    spill = tempfile.mkdtemp(prefix="negmine-sql-")  # DuckDB's temporary files, private to this query
    con = None
    try:
        tables = {}
        for path in sorted(run_dir.glob("*.parquet")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # removed since it was listed
                continue
            name = f"{_FD_DIR}/{fd}" if os.path.isdir(_FD_DIR) else str(path.resolve())
            fds[name] = fd
            tables[path.stem] = (name, str(path))
        config = {"temp_directory": spill}
        if not allow_external:
            config |= {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        con = duckdb.connect(config=config)
        if not allow_external:
            con.execute("SET allowed_directories = ?", [[root + os.sep]])
            con.execute("SET allowed_paths = ?", [[name for name, _ in tables.values()]])
            con.execute("SET enable_external_access = false")
        for view, (name, _) in tables.items():
            con.execute(f'CREATE VIEW "{view}" AS SELECT * FROM read_parquet({_quote(name)})')
        negatives = [n for n in tables if n.startswith("negatives_")]
        if negatives and "negatives" not in tables:
            union = " UNION ALL BY NAME ".join(f'SELECT * FROM "{n}"' for n in negatives)
            con.execute(f"CREATE VIEW negatives AS {union}")
        if not allow_external:
            con.execute("SET lock_configuration = true")
        yield con, tables
    except duckdb.Error as exc:
        raise BadInputError(run_dir, _message(exc, tables)) from None
    finally:
        if con is not None:
            con.close()
        for fd in fds.values():
            os.close(fd)
        shutil.rmtree(spill, ignore_errors=True)


def _message(exc: Exception, tables: dict) -> str:
    """DuckDB's message, naming each table file by its path rather than the open file it was read from."""
    message = str(exc).splitlines()[0]
    for name, path in sorted(tables.values(), key=lambda t: -len(t[0])):
        message = message.replace(name, path)
    return message


def query(run_dir: str | Path, sql: str, allow_external: bool = False):
    """Run ``sql`` against the run's views; returns (column names, rows).

    Confined to reading the run's files unless ``allow_external`` (see the module's docstring); a
    refused statement or file raises :class:`BadInputError` naming it and ``--allow-external``.
    """
    import duckdb

    if not allow_external:
        _check_statements(sql)
    with session(run_dir, allow_external) as (con, tables):
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            return columns, cursor.fetchall()
        except duckdb.PermissionException as exc:
            raise BadInputError("<sql>", f"refused: {_message(exc, tables)}; {_HINT}", field="query") from None
        except duckdb.Error as exc:
            raise BadInputError("<sql>", _message(exc, tables), field="query") from None


def query_arrow(run_dir: str | Path, sql: str, allow_external: bool = False):
    """Run ``sql`` against the run's views, confined as :func:`query` is; returns an Arrow table."""
    import duckdb

    if not allow_external:
        _check_statements(sql)
    with session(run_dir, allow_external) as (con, tables):
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise BadInputError("<sql>", f"refused: {_message(exc, tables)}; {_HINT}", field="query") from None
        except duckdb.Error as exc:
            raise BadInputError("<sql>", _message(exc, tables), field="query") from None
