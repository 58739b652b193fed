"""Stage 2 — BM25 candidates (Robertson & Zaragoza, 2009), with pyserini/Lucene or bm25s.

    score(q, d) = Σ_t∈q IDF(t) · tf(t,d)·(k1+1) / (tf(t,d) + k1·(1 − b + b·|d|/avgdl))

Defaults k1=0.9, b=0.4 are Anserini's (and BEIR's pyserini baseline). The ``pyserini`` backend
builds a Lucene index in the run directory (Porter stemming, English stopwords) and runs
multi-threaded batch search; Anserini breaks score ties by document id, so the ranking is
deterministic. It calls the Anserini classes in pyserini's jar directly (:func:`_anserini`), reads
the corpus a slice at a time, and bounds Lucene's indexing buffer, so that its memory does not grow
with the corpus's texts. ``bm25s`` (Lù, 2024) is a pure-Python alternative, about five times faster
here, which holds the corpus in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa

from negmine.errors import BadInputError, OutputError, StageError
from negmine.io import LazyTable, read_table, table_slices
from negmine.progress import track
from negmine.retrieve.candidates import (
    candidates_table,
    doc_texts,
    positive_scores_table,
)

BACKENDS = ("pyserini", "bm25s")


INDEX_BATCH = 10_000  # documents handed to the Lucene indexer at a time (the texts held in Python)
INDEX_BUFFER_MB = 64.0  # postings the indexer buffers in the JVM heap before it writes a segment


def build_lucene_index(corpus: "pa.Table | LazyTable", index_dir: Path, threads: int = 1) -> Path:
    """Index ``corpus`` into ``index_dir`` (built beside it under a temporary name, then renamed).

    ``corpus`` may be a :class:`~negmine.io.LazyTable`: it is read and handed over
    ``INDEX_BATCH`` documents at a time, so Python never holds the corpus's texts.
    """
    indexer_class, document = _anserini("io.anserini.index.SimpleIndexer", "io.anserini.collection.JsonCollection$Document")
    index_dir = Path(index_dir)
    tmp = index_dir.with_name(f".{index_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        indexer = indexer_class(str(tmp), False, int(threads))  # what pyserini's LuceneIndexer(tmp, threads=…) builds
        _bound_ram_buffer(indexer, INDEX_BUFFER_MB)
        with track(corpus.num_rows, "docs", "index") as bar:
            for chunk in table_slices(corpus, INDEX_BATCH):
                ids = chunk.column("doc_id").to_pylist()
                indexer.addJsonDocuments([document.fromFields(i, t) for i, t in zip(ids, doc_texts(chunk))])
                bar.advance(chunk.num_rows)
            indexer.close()
        # the indexer logs a write it could not make (disk full, file too large) and carries on: an
        # index without a commit point (segments_N) is incomplete and never replaces the old one
        if not any(tmp.glob("segments_*")):
            raise OutputError(index_dir, _write_failure(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(index_dir, ignore_errors=True)
    tmp.rename(index_dir)
    return index_dir


def _write_failure(folder: Path) -> OSError:
    """Why ``folder`` takes no more data (disk full, file too large, ...), found by writing a MiB there."""
    probe = folder / ".write-probe"
    try:
        with open(probe, "wb") as fh:
            fh.write(bytes(1 << 20))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return OSError(0, "the Lucene indexer could not write the index; its log above says why")


def _anserini(*names: str) -> list:
    """Anserini's Java classes, from the jar that pyserini ships.

    negmine calls the classes that pyserini's LuceneIndexer, LuceneSearcher and LuceneIndexReader wrap
    (the same calls with the same arguments) rather than those wrappers: importing them imports
    pyserini's dense retrievers too (torch, transformers, faiss), whose modules would stay resident in
    the process before the first document is indexed.
    """
    from negmine.retrieve.java import ensure_jvm

    ensure_jvm()
    from jnius import autoclass

    return [autoclass(name) for name in names]


def _bound_ram_buffer(indexer, megabytes: float) -> bool:
    """Let Anserini's ``SimpleIndexer`` buffer at most ``megabytes`` of postings before it writes a segment.

    It sets its Lucene ``IndexWriter`` to 2,048 MB, so the JVM heap grows with the corpus up to that.
    The buffer is a live setting of the writer, which the indexer keeps in a private field; where a
    pyserini release has no such field the default stays (returns False). The index holds the same
    documents and statistics either way, in more segments.
    """
    from jnius import JavaException, autoclass, cast

    try:
        fields = autoclass("org.apache.commons.lang3.reflect.FieldUtils")  # in Anserini's jar
        writer = cast("org.apache.lucene.index.IndexWriter", fields.readField(indexer, "writer", True))
        writer.getConfig().setRAMBufferSizeMB(float(megabytes))
    except JavaException:
        return False
    return True


def _pyserini(corpus, queries, qrels, index_dir, k, k1, b, threads, timings):
    started = time.perf_counter()
    if not (Path(index_dir) / "segments_1").exists() and not any(Path(index_dir).glob("segments_*")):
        build_lucene_index(corpus, Path(index_dir), threads)
    timings["index_s"] = round(time.perf_counter() - started, 3)
    searcher_class, array_list, reader_utils, bm25 = _anserini(
        "io.anserini.search.SimpleSearcher",
        "java.util.ArrayList",
        "io.anserini.index.IndexReaderUtils",
        "org.apache.lucene.search.similarities.BM25Similarity",
    )
    searcher = searcher_class(str(index_dir))
    searcher.set_bm25(float(k1), float(b))
    qids = queries.column("query_id").to_pylist()
    texts = queries.column("text").to_pylist()
    hits = []
    batch = 1000
    started = time.perf_counter()
    try:
        with track(len(qids), "queries", "search") as bar:
            for start in range(0, len(qids), batch):
                batch_texts, batch_ids = array_list(), array_list()
                for text, qid in zip(texts[start : start + batch], qids[start : start + batch]):
                    batch_texts.add(text)
                    batch_ids.add(qid)
                results = searcher.batch_search(batch_texts, batch_ids, int(k), int(threads))
                found = {entry.getKey(): entry.getValue() for entry in results.entrySet().toArray()}
                hits.extend([(h.docid, h.score) for h in found[q]] for q in qids[start : start + batch])
                bar.advance(len(batch_ids))
        _searched(timings, started, len(qids))
    finally:
        searcher.close()
    candidates = candidates_table(qids, hits, "bm25")
    reader = reader_utils.getReader(str(index_dir))
    similarity = bm25(float(k1), float(b))
    query_text = dict(zip(qids, texts))

    def score_missing(pairs):
        # rounded to 4 decimals like the searcher's scores (Anserini's tie-breaking reranker)
        return [round(reader_utils.computeQueryDocumentScoreWithSimilarity(reader, d, query_text[q], similarity), 4) for q, d in pairs]

    try:
        return candidates, positive_scores_table(candidates, qrels, qids, "bm25", score_missing)
    finally:
        reader.close()


def _bm25s(corpus, queries, qrels, k, k1, b, threads, timings):
    import bm25s
    import numpy as np

    if isinstance(corpus, LazyTable):  # bm25s indexes the corpus in memory: read it whole
        corpus = read_table(corpus.path, corpus.schema, "corpus")
    started = time.perf_counter()
    ids = corpus.column("doc_id").to_pylist()
    retriever = bm25s.BM25(k1=k1, b=b)
    with track(len(ids), "docs", "index") as bar:
        retriever.index(bm25s.tokenize(doc_texts(corpus), stopwords="en", show_progress=False), show_progress=False)
        bar.advance(len(ids))
    timings["index_s"] = round(time.perf_counter() - started, 3)
    qids = queries.column("query_id").to_pylist()
    texts = queries.column("text").to_pylist()
    started = time.perf_counter()
    tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
    k_eff = min(k, len(ids))
    with track(len(qids), "queries", "search") as bar:
        docs, scores = retriever.retrieve(tokens, k=k_eff, n_threads=threads, show_progress=False)
        bar.advance(len(qids))
    _searched(timings, started, len(qids))
    hits = []
    for row_docs, row_scores in zip(docs, scores):
        pairs = [(ids[int(i)], float(s)) for i, s in zip(row_docs, row_scores) if s > 0]
        pairs.sort(key=lambda p: (-np.float32(p[1]), p[0]))  # ties by doc id, as Anserini does
        hits.append(pairs)
    candidates = candidates_table(qids, hits, "bm25")
    position = {d: i for i, d in enumerate(ids)}
    row_of = {q: i for i, q in enumerate(qids)}
    token_of = {v: key for key, v in tokens.vocab.items()}

    def score_missing(pairs):
        return [
            float(retriever.get_scores([token_of[t] for t in tokens.ids[row_of[q]]])[position[d]]) for q, d in pairs
        ]

    return candidates, positive_scores_table(candidates, qrels, qids, "bm25", score_missing)


def bm25_candidates(
    corpus: "pa.Table | LazyTable",
    queries: pa.Table,
    qrels: pa.Table,
    index_dir: str | Path | None = None,
    k: int = 100,
    k1: float = 0.9,
    b: float = 0.4,
    threads: int = 1,
    backend: str = "pyserini",
    timings: dict | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Top-``k`` BM25 candidates per query, and the BM25 score of every labelled positive.

    Returns ``(candidates, positive_scores)``. The pyserini backend needs ``index_dir`` (reused
    when it already holds an index of this corpus; the caller decides when to rebuild it).
    ``timings``, when given, receives ``index_s`` (0 when an index was reused), ``search_s`` and
    ``queries_per_s`` of the top-k search.
    """
    timings = {} if timings is None else timings
    if backend not in BACKENDS:
        raise BadInputError("--backend", f"unknown value {backend!r}; choose from {sorted(BACKENDS)}")
    if k < 1:
        raise StageError(f"k must be at least 1, got {k}")
    if backend == "pyserini":
        if index_dir is None:
            raise StageError("the pyserini backend needs an index directory")
        return _pyserini(corpus, queries, qrels, Path(index_dir), k, k1, b, threads, timings)
    return _bm25s(corpus, queries, qrels, k, k1, b, threads, timings)


def _searched(timings: dict, started: float, queries: int) -> None:
    timings["search_s"] = round(time.perf_counter() - started, 3)
    timings["queries_per_s"] = round(queries / max(timings["search_s"], 1e-9), 1)
