"""``negmine sql``: every Parquet table of a run as a DuckDB view named after its file.

A view ``negatives`` unions all ``negatives_<strategy>`` tables (by column name), so one query
can compare strategies.
"""

from __future__ import annotations

from pathlib import Path

from negmine.errors import BadInputError

FORMATS = ("table", "csv", "json")


def connect(run_dir: str | Path):
    import duckdb

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInputError(run_dir, "run directory does not exist")
    con = duckdb.connect()
    names = []
    for path in sorted(run_dir.glob("*.parquet")):
        name = path.stem
        literal = str(path).replace("'", "''")
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet(\'{literal}\')')
        names.append(name)
    negatives = [n for n in names if n.startswith("negatives_")]
    if negatives and "negatives" not in names:
        union = " UNION ALL BY NAME ".join(f'SELECT * FROM "{n}"' for n in negatives)
        con.execute(f"CREATE VIEW negatives AS {union}")
    return con


def query(run_dir: str | Path, sql: str):
    """Run ``sql`` against the run's views; returns (column names, rows)."""
    import duckdb

    con = connect(run_dir)
    try:
        cursor = con.execute(sql)
    except duckdb.Error as exc:
        raise BadInputError("<sql>", str(exc).splitlines()[0], field="query") from None
    columns = [d[0] for d in cursor.description] if cursor.description else []
    return columns, cursor.fetchall()


def query_arrow(run_dir: str | Path, sql: str):
    """Run ``sql`` against the run's views; returns an Arrow table."""
    import duckdb

    con = connect(run_dir)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        raise BadInputError("<sql>", str(exc).splitlines()[0], field="query") from None
