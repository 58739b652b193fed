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
    teacher: str | None = None,
    fusion: str = "rrf",
    teacher_max_length: int | None = 512,
    engine: str = "local",
    index: str = "flat",
    ray_address: str | None = None,
    precision: str = "auto",
    ray_actors: int | None = None,
    dedup: bool = True,
    max_fn_prob: float | None = None,
) -> list[StageResult]:
    """ingest → {bm25 | dense | bm25 + dense + hybrid} → [rescore] → [cluster] → sample.

    ``on_stage(name)`` is called before each stage starts. ``source='hybrid'`` runs both retrievers
    and fuses their pools with ``fusion`` (``rrf`` or ``union``, see negmine.fusion).

    With a ``teacher`` (see negmine.rescore) the candidates are rescored before sampling, each text (pair)
    cut to ``teacher_max_length`` tokens; the ``denoise`` strategy needs one.

    ``engine='ray'`` runs dense retrieval and rescoring on the Ray cluster at ``ray_address`` (see
    negmine.engine_ray) with at most ``ray_actors`` model actors; Ray is started or connected only if one
    of them has work to do.

    ``dedup`` keeps text duplicates of labelled positives out of the negatives (negmine.duplicates);
    ``max_fn_prob`` keeps out candidates whose P(false negative) (negmine.fn_model) is above it.

    ``precision`` is the bi-encoder's while it encodes (auto | float32 | bfloat16 | float16; negmine.dense.PRECISIONS;
    auto: bfloat16 where the hardware computes it natively, else float32).
    """
    from negmine.errors import StageError

    if source not in SOURCES:
        raise StageError(f"unknown candidate source {source!r}; choose from {sorted(SOURCES)}")
    from negmine.fusion import FUSIONS

    if source == "hybrid" and fusion not in FUSIONS:  # before any retrieval runs
        raise StageError(f"unknown fusion {fusion!r}; choose from {sorted(FUSIONS)}")
    from negmine.stages import check_engine, check_precision

    check_engine(engine)
    if strategy == "denoise" and teacher is None:
        raise StageError("strategy 'denoise' needs a teacher; pass --teacher cross-encoder:NAME_OR_PATH (or bi-encoder:NAME_OR_PATH)")
    if source in ("dense", "hybrid") or strategy == "tas-balanced":
        from negmine.dense import check_model

        check_model(model)  # a missing model path or an unknown precision fails before any stage runs
        if source != "bm25":
            check_precision(precision, engine)
    notify = on_stage or (lambda name: None)
    results = []
    notify("ingest")
    results.append(ingest_stage(run, data_dir, fmt, split, force=force))
    if source in ("bm25", "hybrid"):
        notify("bm25")
        results.append(bm25_stage(run, k=k, threads=threads, backend=bm25_backend, force=force))
    if source in ("dense", "hybrid"):
        notify("dense")
        results.extend(dense_stage(run, model, k, max_seq_length, dtype, batch_size, threads=threads, force=force, engine=engine, ray_address=ray_address, index=index, precision=precision, ray_actors=ray_actors))
    if source == "hybrid":
        from negmine.stages import hybrid_stage

        notify("hybrid")
        results.append(hybrid_stage(run, fusion, force=force))
    if teacher is not None:
        from negmine.stages import rescore_stage

        notify("rescore")
        results.append(rescore_stage(run, teacher, source, teacher_max_length, batch_size=batch_size, force=force, engine=engine, ray_address=ray_address, ray_actors=ray_actors))
    from negmine.sample import NEEDS

    if "clusters" in NEEDS.get(strategy, ()):  # tas-balanced: k-means on query embeddings
        from negmine.stages import cluster_stage

        notify("cluster")
        results.append(cluster_stage(run, model, seed=seed, max_seq_length=max_seq_length, batch_size=batch_size, force=force))
    if dedup:
        from negmine.false_negative_stages import duplicates_stage

        notify("duplicates")
        results.append(duplicates_stage(run, force=force))
    if max_fn_prob is not None:
        from negmine.false_negative_stages import fn_scores_stage

        notify("fn-scores")
        results.append(fn_scores_stage(run, source, seed=seed, force=force))
    notify("sample")
    results.append(sample_stage(run, strategy, source, num_negatives, seed, params, force=force, dedup=dedup, max_fn_prob=max_fn_prob))
    return results
