"""A reader running while a writer replaces a table sees the old table or the new one, whole: never
a mix of the two, never a torn file. A writer thread replaces a table (negmine.io.write_table,
atomic rename) in a loop, alternating two versions of different sizes, while readers count rows:
io.read_table, io.LazyTable (the streaming reader of the embed and bm25 stages) and negmine.sql."""

import threading
import time

import pyarrow as pa
import pytest

from negmine.io import LazyTable, read_table, write_table

SCHEMA = pa.schema([("query_id", pa.string()), ("n", pa.int64())])
SIZES = (3_000, 40_000)  # rows of the odd and of the even versions
SECONDS = 3.0


def version(v: int) -> pa.Table:
    rows = SIZES[v % 2]
    return pa.table({"query_id": [f"v{v}"] * rows, "n": range(rows)}, schema=SCHEMA)


def expected_rows(tag: str) -> int:
    return SIZES[int(tag[1:]) % 2]


def race(path, read_once, readers: int = 2, seconds: float = SECONDS):
    """Replace ``path`` in a loop while ``readers`` threads call ``read_once()``; each returns a list of
    problems (empty when what it read was one whole version). Returns (reads, writes, problems)."""
    write_table(version(0), path, SCHEMA)
    stop = time.monotonic() + seconds
    problems, counts = [], {"reads": 0, "writes": 0}

    def writer():
        v = 1
        while time.monotonic() < stop:
            write_table(version(v), path, SCHEMA)
            v += 1
            counts["writes"] += 1

    def reader():
        while time.monotonic() < stop:
            try:
                problems.extend(read_once())
            except Exception as exc:  # a torn read surfaces as an error: that is a failure too
                problems.append(repr(exc)[:300])
            counts["reads"] += 1

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts["reads"], counts["writes"], problems


def check_whole(tags, rows):
    tags = set(tags)
    if len(tags) != 1:
        return [f"rows of several versions: {sorted(tags)[:4]}"]
    tag = tags.pop()
    return [] if rows == expected_rows(tag) else [f"{rows} rows of {tag}, which has {expected_rows(tag)}"]


def test_read_table_sees_one_whole_version(tmp_path):
    path = tmp_path / "t.parquet"

    def read_once():
        table = read_table(path, SCHEMA, "t")
        return check_whole(table.column("query_id").unique().to_pylist(), table.num_rows)

    reads, writes, problems = race(path, read_once)
    assert reads > 20 and writes > 20
    assert problems == [], f"{len(problems)} of {reads} reads: {problems[:3]}"


def test_a_lazy_table_streams_the_version_it_counted(tmp_path):
    path = tmp_path / "t.parquet"

    def read_once():
        table = LazyTable(path, SCHEMA, "t")
        counted, tags, streamed = len(table), set(), 0
        for part in table.slices(4096):
            tags.update(part.column("query_id").unique().to_pylist())
            streamed += part.num_rows
        problems = check_whole(tags, streamed)
        return problems + ([f"len() said {counted}, slices gave {streamed}"] if counted != streamed else [])

    reads, writes, problems = race(path, read_once)
    assert reads > 20 and writes > 20
    assert problems == [], f"{len(problems)} of {reads} reads: {problems[:3]}"


@pytest.mark.parametrize("allow_external", [False, True], ids=["confined", "allow-external"])
def test_one_sql_query_sees_one_version_of_each_table(tmp_path, allow_external):
    from negmine.sql import query

    run = tmp_path / "run"
    run.mkdir()
    path = run / "t.parquet"
    options = {"allow_external": True} if allow_external else {}
    statement = "SELECT count(*), min(query_id), max(query_id), (SELECT count(*) FROM t), (SELECT max(n) + 1 FROM t) FROM t"

    def read_once():
        _, [(rows, low, high, again, top)] = query(run, statement, **options)
        problems = check_whole({low, high}, rows)
        return problems + ([f"scans of one query disagree: {rows}, {again}, {top}"] if not rows == again == top else [])

    reads, writes, problems = race(path, read_once, seconds=2 * SECONDS)
    assert reads > 20 and writes > 20
    assert problems == [], f"{len(problems)} of {reads} reads: {problems[:3]}"
