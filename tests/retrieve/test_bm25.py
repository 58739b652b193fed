"""The pyserini backend streams the corpus into Lucene, bounds the indexer's buffer, and runs Anserini's
classes without pyserini's Python wrappers (whose imports bring torch, transformers and faiss)."""

import subprocess
import sys

from negmine.retrieve import bm25
from negmine.ingest import read_beir
from negmine.io import LazyTable, write_table
from negmine.schemas import CORPUS
from tests.conftest import ROOT, SAMPLE


def _bm25(corpus, queries, qrels, index_dir):
    timings = {}
    candidates, positives = bm25.bm25_candidates(corpus, queries, qrels, index_dir, k=20, threads=2, timings=timings)
    return candidates, positives, timings


def test_lazy_corpus_in_small_batches_and_segments_gives_the_same_candidates(tmp_path, monkeypatch):
    data = read_beir(SAMPLE)
    whole = _bm25(data.corpus, data.queries, data.qrels, tmp_path / "whole")
    segments = len(list((tmp_path / "whole").glob("*.si")))  # one per indexing thread: 300 documents fit the buffer

    write_table(data.corpus, tmp_path / "corpus.parquet", CORPUS)
    monkeypatch.setattr(bm25, "INDEX_BATCH", 7)  # 43 batches, the last one short
    monkeypatch.setattr(bm25, "INDEX_BUFFER_MB", 0.05)  # a segment every few documents
    lazy = _bm25(LazyTable(tmp_path / "corpus.parquet", CORPUS, "corpus"), data.queries, data.qrels, tmp_path / "lazy")
    # the buffer took effect (Anserini's writer still has the field negmine sets it through) …
    assert len(list((tmp_path / "lazy").glob("*.si"))) > segments
    # … and the candidates and positive scores are the same: Lucene's statistics span segments
    assert lazy[0].equals(whole[0]) and lazy[1].equals(whole[1])
    assert whole[0].num_rows > 0 and whole[2]["queries_per_s"] > 0


def test_bounding_the_buffer_reports_a_missing_field_instead_of_failing():
    from jnius import autoclass

    bm25._anserini("io.anserini.index.SimpleIndexer")
    assert bm25._bound_ram_buffer(autoclass("java.util.ArrayList")(), 64.0) is False


def test_bm25s_backend_reads_a_lazy_corpus_whole(tmp_path):
    data = read_beir(SAMPLE)
    write_table(data.corpus, tmp_path / "corpus.parquet", CORPUS)
    lazy = LazyTable(tmp_path / "corpus.parquet", CORPUS, "corpus")
    got = bm25.bm25_candidates(lazy, data.queries, data.qrels, backend="bm25s", k=20)
    want = bm25.bm25_candidates(data.corpus, data.queries, data.qrels, backend="bm25s", k=20)
    assert got[0].equals(want[0]) and got[1].equals(want[1])


def test_pyserini_backend_leaves_the_dense_stack_unimported(tmp_path):
    # pyserini's search and index packages import its dense retrievers: torch, transformers, faiss
    # (530 MB resident before the first document); negmine's BM25 stage must not pay for them
    code = f"""
import sys
from negmine.retrieve.bm25 import bm25_candidates
from negmine.ingest import read_beir
data = read_beir({str(SAMPLE)!r})
candidates, _ = bm25_candidates(data.corpus, data.queries, data.qrels, {str(tmp_path / 'index')!r}, k=10)
assert candidates.num_rows > 0
heavy = sorted(m for m in ("torch", "transformers", "faiss", "pyserini.search", "pyserini.index") if m in sys.modules)
print("heavy:", heavy)
from jnius import autoclass
beans = autoclass("java.lang.management.ManagementFactory").getGarbageCollectorMXBeans()
print("collectors:", sorted(beans.get(i).getName() for i in range(beans.size())))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "heavy: []" in done.stdout, done.stdout
    assert "collectors: ['Copy', 'MarkSweepCompact']" in done.stdout, done.stdout  # the serial collector


def test_jvm_options_choose_the_serial_collector_unless_told_otherwise():
    from negmine.retrieve.java import jvm_options

    vector = "--add-modules=jdk.incubator.vector"
    assert jvm_options(["-Djava.class.path=x", vector], False) == ["-Djava.class.path=x", "-XX:+UseSerialGC"]
    assert jvm_options(["-Xmx2g"], True) == ["-Xmx2g", vector, "-XX:+UseSerialGC"]
    assert jvm_options(["-XX:+UseG1GC"], False) == ["-XX:+UseG1GC"]
    assert jvm_options([], False, tool_options="-Xmx1g -XX:+UseParallelGC") == []
