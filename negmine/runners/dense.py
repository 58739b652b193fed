"""``negmine dense``: encode the corpus (cached, resumable) and search it; the embed and dense stages."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from negmine.io import LazyTable, read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    DEFAULT_MODEL,
    EMBED_CHUNK,
    QUERY_BATCH,
    StageResult,
    actor_stats,
    check_engine,
    check_precision,
    model_id,
    ran_on,
    retrieval_stats,
    run_stage,
    table_paths,
    unless_default,
)
from negmine.schemas import CANDIDATES, CORPUS, POSITIVE_SCORES, QRELS, QUERIES


def _embed_config(model: str, max_seq_length, dtype: str, batch_size: int, chunk_size: int, precision: str = "float32", prompt: str = "",
                  backend: str = "torch") -> dict:
    from negmine.retrieve.encode import CPU_BATCH_TOKENS

    config = {"model": model_id(model), "max_seq_length": max_seq_length, "dtype": dtype, "batch_size": batch_size, "cpu_batch_tokens": CPU_BATCH_TOKENS}
    # chunks decide which texts share a padded batch; precision and backend change the floats
    return config | unless_default(chunk_size=(chunk_size, EMBED_CHUNK), precision=(precision, "float32"), corpus_prompt=(prompt, ""), backend=(backend, "torch"))


def _backend(backend: str, model: str, precision: str) -> str:
    """The encoder backend a stage runs (negmine.retrieve.backends.resolve_backend), decided here for either
    engine: the stage's cache key and stats name it."""
    from negmine.retrieve.backends import resolve_backend

    return resolve_backend(backend, model, precision)


def _encoder(engine: str, model: str, max_seq_length, ray_address: str | None = None, precision: str = "float32", ray_actors: int | None = None,
             backend: str = "torch"):
    """The bi-encoder: loaded here (local), or a pool of Ray actors that load it when first used (ray)."""
    if engine == "ray":
        from negmine.engines.ray import encoder_pool

        return encoder_pool(model, max_seq_length, ray_address, max_actors=ray_actors, precision=precision, backend=backend)
    from negmine.retrieve.models import load_model

    return load_model(model, max_seq_length, precision=precision, backend=backend)


def _encoder_kind(engine: str, encoder) -> dict:
    if engine == "ray":  # the actors load their own
        return actor_stats(encoder) | {"backend": encoder.backend}
    from negmine.retrieve.models import encoder_kind, model_backend

    device = getattr(encoder, "device", None)
    return {"encoder": encoder_kind(encoder), "backend": model_backend(encoder)} | ({"device": str(device)} if device is not None else {})


def _embed_parts_dir(output: Path, config: dict, inputs: list[Path]) -> Path:
    """Where an unfinished encode keeps its chunks: named after the config and the corpus's hash, so a
    changed model, setting or corpus starts afresh; parts of other keys are removed."""
    from negmine.rundir import hash_paths

    key = hashlib.sha256(json.dumps([config, sorted(hash_paths(inputs).values())], sort_keys=True).encode()).hexdigest()[:16]
    parts = output.parent / f".{output.stem}.parts-{key}"
    for stale in output.parent.glob(f".{output.stem}.parts-*"):
        if stale != parts:
            shutil.rmtree(stale, ignore_errors=True)
    return parts


def embed_stage(run: Run, model: str = DEFAULT_MODEL, max_seq_length: int | None = 256, dtype: str = "float16", batch_size: int = 64, loaded=None, progress=None, force: bool = False,
                chunk_size: int = EMBED_CHUNK, engine: str = "local", ray_address: str | None = None, precision: str = "auto",
                ray_actors: int | None = None, corpus_prompt: str | None = None, corpus_prompt_name: str | None = None, backend: str = "auto") -> StageResult:
    """Encode the corpus → embeddings/corpus.npy (``dtype`` on disk; the model runs in ``precision`` on ``backend``).

    ``corpus_prompt`` / ``corpus_prompt_name``: the text put before every document (default: the
    model's own document prompt, where it declares one; negmine.retrieve.models.resolve_prompt).
    ``backend``: torch, openvino or auto (negmine.retrieve.backends)."""
    from negmine.retrieve.models import resolve_prompt

    check_engine(engine)
    precision = check_precision(precision, engine)
    backend = _backend(backend, model, precision)
    prompt = resolve_prompt(model, "document", corpus_prompt, corpus_prompt_name)
    if engine == "ray":
        from negmine.engines.ray import embed_corpus
    else:
        from negmine.retrieve.embed import embed_corpus

    inputs = table_paths(run, "corpus")
    outputs = [run.file("embeddings/corpus.npy")]
    config = _embed_config(model, max_seq_length, dtype, batch_size, chunk_size, precision, prompt, backend)

    def compute():
        corpus = LazyTable(inputs[0], CORPUS, "corpus")  # read a chunk at a time as it is encoded
        encoder = loaded if loaded is not None else _encoder(engine, model, max_seq_length, ray_address, precision, ray_actors, backend)
        # encoded chunks are kept until the stage ends: an interrupted encode resumes (on either engine)
        parts_dir, resumed = _embed_parts_dir(outputs[0], config, inputs), {}
        started = time.perf_counter()  # the encode alone: model loading is not part of docs/s
        try:
            emb = embed_corpus(corpus, encoder, outputs[0], dtype, batch_size, chunk_size=chunk_size, progress=progress, parts_dir=parts_dir, resumed=resumed, prompt=prompt)
        finally:
            if engine == "ray" and loaded is None:
                encoder.close()
        encode_s = time.perf_counter() - started
        encoded = int(emb.shape[0]) - resumed.get("documents", 0)
        return {"documents": int(emb.shape[0]), "dim": int(emb.shape[1]), "dtype": dtype, "precision": precision, **({"corpus_prompt": prompt} if prompt else {}), "encode_s": round(encode_s, 3),
                "docs_per_s": round(encoded / max(encode_s, 1e-9), 1)} | (
                    {"documents_resumed": resumed["documents"]} if resumed.get("documents") else {}) | ran_on(engine) | _encoder_kind(engine, encoder)

    return run_stage(run, "embed", config, inputs, outputs, compute, force)


def dense_stage(run: Run, model: str = DEFAULT_MODEL, k: int = 100, max_seq_length: int | None = 256, dtype: str = "float16", batch_size: int = 64, threads: int | None = None, progress=None, force: bool = False,
                chunk_size: int = EMBED_CHUNK, query_batch: int = QUERY_BATCH, engine: str = "local", ray_address: str | None = None, shard_size: int | None = None,
                index: str = "flat", nprobe: int = 16, ef_search: int = 128, precision: str = "auto", ray_actors: int | None = None,
                query_prompt: str | None = None, corpus_prompt: str | None = None, query_prompt_name: str | None = None,
                corpus_prompt_name: str | None = None, backend: str = "auto") -> list[StageResult]:
    """Embed the corpus (cached) and search; returns the embed and dense stage results.

    Prompts: ``query_prompt`` / ``query_prompt_name`` before every query, ``corpus_prompt`` /
    ``corpus_prompt_name`` before every document; by default the model's own prompts for queries and
    documents where it declares them, as sentence-transformers' ``encode_query`` / ``encode_document``
    (negmine.retrieve.models.resolve_prompt). Each is part of its stage's cache key.

    ``precision`` is the encoder's (negmine.retrieve.device.PRECISIONS): float32, or bfloat16 (faster on CPUs
    that compute it in hardware, AVX512-BF16/AMX; bench/encode_efficiency.py measures it), float16 on a GPU; corpus and queries are encoded alike.
    ``backend`` runs the encoder's transformer: torch, openvino (faster on CPUs, same embeddings within
    rounding) or auto (openvino where it runs the model, negmine.retrieve.backends); part of both stages' keys.

    ``index`` ``ivf`` or ``hnsw`` searches approximately (negmine.retrieve.search.build_index; ``nprobe`` and
    ``ef_search`` trade recall for speed) and the stage reports its recall against exact search.

    ``engine='ray'`` encodes and searches on the Ray cluster at ``ray_address`` (default ``RAY_ADDRESS``,
    else a local one); same outputs. Exact search on either engine runs over faiss shards of
    ``shard_size`` corpus rows (default negmine.retrieve.search.SHARD_SIZE), merged: same outputs for any size.
    ``ray_actors`` caps the encoder actors (default: one per GPU, else one per CPU of the cluster).
    """
    import numpy as np

    check_engine(engine)
    from negmine.errors import BadInputError
    from negmine.retrieve.search import INDEXES

    precision = check_precision(precision, engine)
    backend = _backend(backend, model, precision)
    from negmine.retrieve.models import resolve_prompt

    prompt = resolve_prompt(model, "query", query_prompt, query_prompt_name)
    document_prompt = resolve_prompt(model, "document", corpus_prompt, corpus_prompt_name)
    if index not in INDEXES:
        raise BadInputError("--index", f"unknown value {index!r}; choose from {sorted(INDEXES)}")
    if engine == "ray" and index != "flat":
        raise BadInputError("--index", f"{index} runs on the local engine; the ray engine searches exact (flat) shards")
    if engine == "ray":
        from negmine.engines.ray import dense_candidates
    else:
        from negmine.retrieve.search import dense_candidates

    holder = {}

    def model_once():
        if "model" not in holder:
            holder["model"] = _encoder(engine, model, max_seq_length, ray_address, precision, ray_actors, backend)
        return holder["model"]

    inputs_embed = table_paths(run, "corpus")
    embed_config = _embed_config(model, max_seq_length, dtype, batch_size, chunk_size, precision, document_prompt, backend)
    try:
        embed_loaded = None if (not force and run.is_fresh("embed", embed_config, inputs_embed)) else model_once()
        embed = embed_stage(run, model, max_seq_length, dtype, batch_size, loaded=embed_loaded, progress=progress, force=force, chunk_size=chunk_size, engine=engine, ray_address=ray_address, precision=precision, ray_actors=ray_actors,
                            corpus_prompt=document_prompt, backend=backend)
        inputs = table_paths(run, "corpus", "queries", "qrels") + [run.file("embeddings/corpus.npy")]
        outputs = table_paths(run, "candidates_dense", "positive_scores_dense")
        index_params = {"nprobe": nprobe} if index == "ivf" else {"ef_search": ef_search} if index == "hnsw" else {}
        config = {"model": model_id(model), "k": k, "max_seq_length": max_seq_length, "batch_size": batch_size, "cpu_batch_tokens": embed_config["cpu_batch_tokens"]} | unless_default(query_batch=(query_batch, QUERY_BATCH), index=(index, "flat"), precision=(precision, "float32"), query_prompt=(prompt, ""), backend=(backend, "torch")) | index_params

        def compute():
            import pyarrow as pa

            corpus = read_table(inputs[0], pa.schema([CORPUS.field("doc_id")]), "corpus")  # the ids: texts are the embed stage's
            queries = read_table(inputs[1], QUERIES, "queries")
            qrels = read_table(inputs[2], QRELS, "qrels")
            emb = np.load(inputs[3], mmap_mode="r")
            index_stats: dict = {}
            extra = {"index": index, "index_params": index_params, "stats": index_stats} if engine == "local" else {}
            if shard_size is not None:
                extra["shard_size"] = shard_size
            candidates, positives = dense_candidates(corpus, queries, qrels, emb, model_once(), k, batch_size, query_batch, threads=threads, prompt=prompt, **extra)
            write_table(candidates, outputs[0], CANDIDATES)
            write_table(positives, outputs[1], POSITIVE_SCORES)
            return retrieval_stats(candidates, positives) | ({"query_prompt": prompt} if prompt else {}) | {"backend": backend} | ran_on(engine) | index_stats

        return [embed, run_stage(run, "dense", config, inputs, outputs, compute, force)]
    finally:
        if engine == "ray" and "model" in holder:
            holder["model"].close()
