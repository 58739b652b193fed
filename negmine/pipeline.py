"""``negmine mine``: chain the stages a strategy needs, skipping those whose outputs are up to date."""

from __future__ import annotations

from pathlib import Path

from negmine.run import Run
from negmine.stages import SOURCES, StageResult, bm25_stage, dense_stage, ingest_stage, sample_stage


def mine(
    run: Run,
    data_dir: str | Path,
    strategy: str = "simans",
    source: str = "dense",
    fmt: str = "auto",
    split: str = "train",
    model: str = "sentence-transformers/all-MiniLM-L6-v2",
    k: int = 100,
    num_negatives: int = 7,
    seed: int = 42,
    threads: int = 1,
    max_seq_length: int | None = 256,
    dtype: str = "float16",
    batch_size: int = 64,
    bm25_backend: str = "pyserini",
    params: dict | None = None,
    force: bool = False,
    on_stage=None,
) -> list[StageResult]:
    """ingest → {bm25 | dense} → sample. ``on_stage(name)`` is called before each stage starts."""
    from negmine.errors import StageError

    if source not in SOURCES:
        raise StageError(f"unknown candidate source {source!r}; choose from {sorted(SOURCES)}")
    notify = on_stage or (lambda name: None)
    results = []
    notify("ingest")
    results.append(ingest_stage(run, data_dir, fmt, split, force=force))
    if source == "bm25":
        notify("bm25")
        results.append(bm25_stage(run, k=k, threads=threads, backend=bm25_backend, force=force))
    else:
        notify("dense")
        results.extend(dense_stage(run, model, k, max_seq_length, dtype, batch_size, threads=threads, force=force))
    notify("sample")
    results.append(sample_stage(run, strategy, source, num_negatives, seed, params, force=force))
    return results
