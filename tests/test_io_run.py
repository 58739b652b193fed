"""io and run directory: atomic writes, schema-checked reads, manifest freshness, the lock."""

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negmine.errors import BadInputError, RunLockedError
from negmine.io import LazyTable, atomic_path, read_table, write_table
from negmine.rundir import Run, measure
from negmine.schemas import CORPUS, QRELS


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "qrels.parquet"
    write_table(pa.table({"query_id": ["q"], "doc_id": ["d"], "relevance": [1]}), target, QRELS)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a table")
            raise RuntimeError("killed")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["qrels.parquet"]


def test_write_is_byte_identical(tmp_path):
    table = pa.table({"query_id": ["q", "r"], "doc_id": ["d", "e"], "relevance": [1, 0]})
    write_table(table, tmp_path / "a.parquet", QRELS)
    write_table(table, tmp_path / "b.parquet", QRELS)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_read_checks_types_and_nulls(tmp_path):
    path = tmp_path / "qrels.parquet"
    pq.write_table(pa.table({"query_id": ["q"], "doc_id": ["d"], "relevance": ["high"]}), path)
    with pytest.raises(BadInputError) as info:
        read_table(path, QRELS, "qrels")
    assert str(info.value) == f"{path}, field 'relevance': expected type int32, found string"
    pq.write_table(pa.table({"query_id": ["q", None], "doc_id": ["d", "e"], "relevance": [1, 1]}), path)
    with pytest.raises(BadInputError) as info:
        read_table(path, QRELS, "qrels")
    assert str(info.value) == f"{path}, field 'query_id': null value in non-nullable column (row 1)"
    path.write_bytes(b"not parquet")
    with pytest.raises(BadInputError, match="not a readable Parquet file"):
        read_table(path, QRELS, "qrels")



def test_a_lazy_table_gives_the_tables_slices_whatever_its_row_groups(tmp_path):
    path = tmp_path / "corpus.parquet"
    table = pa.table({"doc_id": [f"d{i}" for i in range(50)], "title": [None if i % 3 else f"t{i}" for i in range(50)],
                      "text": [f"text {i}" for i in range(50)], "extra": list(range(50))})
    pq.write_table(table, path, row_group_size=7)  # slices cross row groups
    whole = read_table(path, CORPUS, "corpus")
    lazy = LazyTable(path, CORPUS, "corpus")
    assert len(lazy) == lazy.num_rows == 50
    for size in (1, 5, 7, 16, 50, 100):
        got = list(lazy.slices(size))
        assert [t.num_rows for t in got] == [min(size, 50 - s) for s in range(0, 50, size)]
        assert all(t.schema == CORPUS for t in got)
        assert pa.concat_tables(got).equals(whole)
        assert [t.equals(whole.slice(s, size)) for t, s in zip(got, range(0, 50, size))] == [True] * len(got)
    assert list(LazyTable(path, CORPUS).slices(8))[0].num_rows == 8  # read again from the start


def test_a_lazy_table_checks_what_read_table_checks(tmp_path):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"doc_id": ["a"], "text": [1]}), path)
    with pytest.raises(BadInputError, match="field 'title': missing column"):
        LazyTable(path, CORPUS, "corpus")
    pq.write_table(pa.table({"doc_id": ["a"], "title": ["t"], "text": [1]}), path)
    with pytest.raises(BadInputError, match="field 'text': expected type string, found int64"):
        LazyTable(path, CORPUS, "corpus")
    # a null is found when its slice is read, named by its row in the file
    pq.write_table(pa.table({"doc_id": [f"d{i}" if i != 23 else None for i in range(30)], "title": [None] * 30, "text": ["x"] * 30}), path, row_group_size=10)
    lazy = LazyTable(path, CORPUS, "corpus")
    slices = lazy.slices(8)
    assert [next(slices).num_rows for _ in range(2)] == [8, 8]
    with pytest.raises(BadInputError) as info:
        next(slices)
    assert str(info.value) == f"{path}, field 'doc_id': null value in non-nullable column (row 23)"
    with pytest.raises(BadInputError, match="corpus file does not exist"):
        LazyTable(tmp_path / "missing.parquet", CORPUS, "corpus")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInputError, match="not a readable Parquet file"):
        LazyTable(tmp_path / "bad.parquet", CORPUS, "corpus")

def test_stage_is_fresh_until_config_input_or_output_changes(tmp_path):
    run = Run.open(tmp_path / "run")
    src = tmp_path / "input.txt"
    src.write_text("a")
    out = run.file("out.bin")
    out.write_text("x")
    with measure() as m:
        pass
    run.record("stage", {"k": 1}, [src], [out], m, {"rows": 1})
    reopened = Run.open(tmp_path / "run")
    assert reopened.is_fresh("stage", {"k": 1}, [src])
    assert not reopened.is_fresh("stage", {"k": 2}, [src])
    out.write_text("tampered")
    assert not reopened.is_fresh("stage", {"k": 1}, [src])
    out.write_text("x")
    src.write_text("b")
    assert not reopened.is_fresh("stage", {"k": 1}, [src])


def test_second_writer_is_refused(tmp_path):
    run = Run.open(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunLockedError, match="run directory is in use by another negmine"):
            with Run.open(tmp_path / "run").lock():
                pass
    with run.lock():  # released
        pass


def test_older_schema_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 0, "stages": {}}))
    with pytest.raises(BadInputError) as info:
        Run.open(tmp_path)
    assert "run directory has schema version 0, this negmine writes version 1" in str(info.value)
    assert info.value.field == "schema_version"


_READ_RSS = r"""
import ctypes, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
import negmine.io as io
from negmine.schemas import CORPUS

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))

if sys.argv[2] == "off":
    io.release_unused_memory = lambda: None
rng = np.random.default_rng(0)
words = np.array(["alpha", "beta", "gamma", "delta", "protein", "cell", "gene", "study"])
texts = [" ".join(words[rng.integers(0, 8, 60)]) for _ in range(200_000)]
table = pa.table({"doc_id": [str(i) for i in range(len(texts))], "title": [None] * len(texts), "text": texts}, schema=CORPUS)
pq.write_table(table, sys.argv[1])
size = table.nbytes / 2**20
del table, texts
pa.default_memory_pool().release_unused()
ctypes.CDLL("libc.so.6").malloc_trim(0)
before = rss_mb()
kept = io.read_table(sys.argv[1], CORPUS, "corpus")
print((rss_mb() - before) / size)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status; glibc")
def test_reading_a_table_leaves_about_the_table_resident(tmp_path):
    """Arrow's allocator keeps the buffers a Parquet read decoded through unless told to give them back:
    read_table does, so a 70 MB corpus costs about its own size, not three times it."""
    growth = {}
    for mode in ("on", "off"):
        out = subprocess.run([sys.executable, "-c", _READ_RSS, str(tmp_path / "corpus.parquet"), mode], capture_output=True, text=True, check=True)
        growth[mode] = float(out.stdout.strip())
    assert growth["on"] < 2.0 < growth["off"], growth
