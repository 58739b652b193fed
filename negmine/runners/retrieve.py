"""Candidates from bm25, dense (embed + search) or both fused (hybrid): the retrieval part of ``negmine mine``."""

from __future__ import annotations

from negmine.errors import check_at_least, check_choice
from negmine.rundir import Run
from negmine.runners.base import (
    DEFAULT_MODEL,
    SOURCES,
    StageResult,
    check_engine,
    check_precision,
)


def check_retrieve(source: str = "dense", k: int = 100, model: str = DEFAULT_MODEL, fusion: str = "rrf", engine: str = "local",
                   index: str = "flat", precision: str = "auto", query_prompt: str | None = None, corpus_prompt: str | None = None,
                   query_prompt_name: str | None = None, corpus_prompt_name: str | None = None, backend: str = "auto", **_) -> None:
    """Everything :func:`retrieve_stage` would refuse, checked before any stage of a pipeline runs (cheap: no model loaded)."""
    check_choice("--source", source, SOURCES)
    check_at_least("--k", k)
    check_engine(engine)
    if source == "hybrid":
        from negmine.retrieve.fusion import FUSIONS

        check_choice("--fusion", fusion, FUSIONS)
    if source in ("dense", "hybrid"):
        from negmine.retrieve.models import check_model
        from negmine.retrieve.search import INDEXES

        from negmine.retrieve.models import resolve_prompt

        check_model(model)
        check_choice("--index", index, INDEXES)
        from negmine.retrieve.backends import resolve_backend

        resolve_backend(backend, model, check_precision(precision, engine))
        resolve_prompt(model, "query", query_prompt, query_prompt_name)
        resolve_prompt(model, "document", corpus_prompt, corpus_prompt_name)


def retrieve_stage(
    run: Run,
    source: str = "dense",
    k: int = 100,
    model: str = DEFAULT_MODEL,
    max_seq_length: int | None = 256,
    dtype: str = "float16",
    batch_size: int = 64,
    threads: int = 1,
    bm25_backend: str = "pyserini",
    fusion: str = "rrf",
    precision: str = "auto",
    index: str = "flat",
    engine: str = "local",
    ray_address: str | None = None,
    ray_actors: int | None = None,
    query_prompt: str | None = None,
    corpus_prompt: str | None = None,
    query_prompt_name: str | None = None,
    corpus_prompt_name: str | None = None,
    backend: str = "auto",
    force: bool = False,
) -> list[StageResult]:
    """bm25 and/or embed + dense, and for ``source='hybrid'`` the two pools fused with ``fusion``.

    ``precision`` is the bi-encoder's while it encodes (auto: bfloat16 where the hardware computes it
    natively, else float32), ``backend`` the runtime of its transformer (auto: openvino on a CPU where it runs
    the model, else torch; negmine.retrieve.backends); ``engine='ray'`` encodes and searches on a Ray cluster (same bytes).
    Prompts: as negmine.runners.dense.dense_stage (default: the model's own, where it declares them).
    """
    prompts = {"query_prompt": query_prompt, "corpus_prompt": corpus_prompt, "query_prompt_name": query_prompt_name, "corpus_prompt_name": corpus_prompt_name}
    check_retrieve(source, k, model, fusion, engine, index, precision, backend=backend, **prompts)
    from negmine.runners.bm25 import bm25_stage
    from negmine.runners.dense import dense_stage
    from negmine.runners.hybrid import hybrid_stage

    results = []
    if source in ("bm25", "hybrid"):
        results.append(bm25_stage(run, k=k, threads=threads, backend=bm25_backend, force=force))
    if source in ("dense", "hybrid"):
        results.extend(dense_stage(run, model, k, max_seq_length, dtype, batch_size, threads=threads, force=force, engine=engine, ray_address=ray_address,
                                   index=index, precision=precision, ray_actors=ray_actors, backend=backend, **prompts))
    if source == "hybrid":
        results.append(hybrid_stage(run, fusion, force=force))
    return results
