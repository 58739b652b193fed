"""``negmine bm25``: BM25 candidates and the BM25 score of every labelled positive."""

from __future__ import annotations

from negmine.io import LazyTable, read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    StageResult,
    retrieval_stats,
    run_stage,
    stdout_to_stderr,
    table_paths,
)
from negmine.schemas import CANDIDATES, CORPUS, POSITIVE_SCORES, QRELS, QUERIES


def bm25_stage(run: Run, k: int = 100, k1: float = 0.9, b: float = 0.4, threads: int = 1, backend: str = "pyserini", force: bool = False) -> StageResult:
    from negmine.retrieve.bm25 import bm25_candidates

    inputs = table_paths(run, "corpus", "queries", "qrels")
    outputs = table_paths(run, "candidates_bm25", "positive_scores_bm25")
    config = {"k": k, "k1": k1, "b": b, "backend": backend}  # threads do not change the output

    def compute():
        corpus = LazyTable(inputs[0], CORPUS, "corpus")  # pyserini indexes it a slice at a time
        queries = read_table(inputs[1], QUERIES, "queries")
        qrels = read_table(inputs[2], QRELS, "qrels")
        index_dir = run.file("bm25_index")
        if backend == "pyserini":
            import shutil

            stamp = run.file("bm25_index.corpus_sha256")
            corpus_hash = run.manifest["stages"].get("ingest", {}).get("outputs", {}).get("corpus.parquet")
            if not stamp.exists() or stamp.read_text() != str(corpus_hash):
                shutil.rmtree(index_dir, ignore_errors=True)
        timings: dict = {}
        with stdout_to_stderr():
            candidates, positives = bm25_candidates(corpus, queries, qrels, index_dir, k, k1, b, threads, backend, timings)
        if backend == "pyserini":
            from negmine.io import atomic_path

            with atomic_path(stamp) as tmp:  # a crash leaves the old stamp or the new one, never half of one
                tmp.write_text(str(corpus_hash))
        write_table(candidates, outputs[0], CANDIDATES)
        write_table(positives, outputs[1], POSITIVE_SCORES)
        return {**retrieval_stats(candidates, positives), **timings, "threads": threads}

    return run_stage(run, "bm25", config, inputs, outputs, compute, force)
