"""Stage runners: read a run's tables, call one library function, write its outputs, record the manifest.

These are what the CLI commands and ``negmine mine`` call. Each runner skips its work when the
manifest says config and inputs are unchanged and the outputs are intact (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from negmine.errors import OutputError
from negmine.io import LazyTable, atomic_path, read_table, release_unused_memory, write_table
from negmine.names import check_name
from negmine.run import Run, measure
from negmine.schemas import CANDIDATES, CLUSTERS, CORPUS, NEGATIVES, POSITIVE_SCORES, QRELS, QUERIES

SOURCES = ("bm25", "dense", "hybrid")  # hybrid: the bm25 and dense pools fused (hybrid_stage)
# --engine of dense and rescore: in this process, or on a Ray cluster (negmine.engine_ray). Both write
# identical bytes (tests/test_engine_ray.py), so the engine is left out of the stages' configs: a run made
# by one engine is up to date for the other, and switching engines never recomputes anything.
ENGINES = ("local", "ray")
EMBED_CHUNK = 1024  # documents per encode call (the unit of work an engine hands out)
QUERY_BATCH = 4096  # queries per encode call and search


def check_engine(engine: str) -> None:
    from negmine.errors import StageError

    if engine not in ENGINES:
        raise StageError(f"unknown engine {engine!r}; choose from {sorted(ENGINES)}")


def check_precision(precision: str, engine: str) -> str:
    """The encoder precision a stage runs in: an unknown one fails before any work; so does float16
    without a GPU here, on the local engine (Ray actors load the model on their own devices and check it
    there). "auto" is resolved on this machine (negmine.dense.resolve_precision), for either engine: the
    stage's cache key and stats name the precision the encoder ran in."""
    from negmine.dense import check_precision as check, resolve_precision

    check(precision, "cuda" if engine == "ray" else None)
    return resolve_precision(precision) if precision == "auto" else precision


def _ran_on(engine: str) -> dict:
    """Recorded in a stage's stats (not its config) when another engine than the local one made the outputs."""
    return {} if engine == "local" else {"engine": engine}


def _unless_default(**values: tuple) -> dict:
    """``{name: value}`` of the (value, default) pairs whose value is not the default. Options added after
    runs were recorded go into a config only when set, so those runs' manifests stay up to date."""
    return {name: value for name, (value, default) in values.items() if value != default}


@dataclass
class StageResult:
    stage: str
    skipped: bool
    entry: dict = field(default_factory=dict)


def _run_stage(run: Run, stage: str, config: dict, inputs: list[Path], outputs: list[Path], compute: Callable[[], dict], force: bool = False) -> StageResult:
    if not force and run.is_fresh(stage, config, inputs):
        return StageResult(stage, True, run.manifest["stages"][stage])
    with measure() as m:
        try:
            stats = compute()
        finally:
            release_unused_memory()  # what the stage freed, before the next one starts
    return StageResult(stage, False, run.record(stage, config, inputs, outputs, m, stats))


@contextlib.contextmanager
def stdout_to_stderr():
    """Send what native code (the JVM's logger) prints on fd 1 to stderr, keeping stdout for results."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def table_path(run: Run, name: str) -> Path:
    return run.file(f"{name}.parquet")


def ingest_stage(run: Run, data_dir: str | Path, fmt: str = "auto", split: str = "train", force: bool = False) -> StageResult:
    from negmine import ingest as ingest_mod

    fmt_resolved = ingest_mod.detect_format(data_dir) if fmt == "auto" else fmt
    inputs = ingest_mod.source_files(data_dir, fmt_resolved, split)
    outputs = [table_path(run, n) for n in ("corpus", "queries", "qrels")]
    config = {"format": fmt_resolved, "split": split}

    def compute():
        # the corpus goes to a temporary file as it is read (never held whole), renamed once all is valid;
        # a killed ingest leaves it to clean_temporaries (".corpus.parquet.*.tmp")
        spool = outputs[0].parent / f".{outputs[0].name}.ingest.tmp"
        try:
            try:
                dataset = ingest_mod.ingest(data_dir, fmt_resolved, split, corpus_file=spool)
            except OutputError as exc:  # the temporary file is ours: the output it stands for is corpus.parquet
                if exc.path != str(spool):
                    raise
                raise OutputError(outputs[0], OSError(exc.errno, os.strerror(exc.errno))) from None
            with atomic_path(outputs[0]) as tmp:
                os.replace(spool, tmp)
        finally:
            spool.unlink(missing_ok=True)
        write_table(dataset.queries, outputs[1], QUERIES)
        write_table(dataset.qrels, outputs[2], QRELS)
        return dataset.stats

    return _run_stage(run, "ingest", config, inputs, outputs, compute, force)


def _inputs(run: Run, *names: str) -> list[Path]:
    return [table_path(run, n) for n in names]


def bm25_stage(run: Run, k: int = 100, k1: float = 0.9, b: float = 0.4, threads: int = 1, backend: str = "pyserini", force: bool = False) -> StageResult:
    from negmine.bm25 import bm25_candidates

    inputs = _inputs(run, "corpus", "queries", "qrels")
    outputs = _inputs(run, "candidates_bm25", "positive_scores_bm25")
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
        return {**_retrieval_stats(candidates, positives), **timings, "threads": threads}

    return _run_stage(run, "bm25", config, inputs, outputs, compute, force)


def _retrieval_stats(candidates, positives) -> dict:
    import pyarrow.compute as pc

    found = positives.num_rows - positives.column("rank").null_count
    return {
        "candidates": candidates.num_rows,
        "queries": len(pc.unique(candidates.column("query_id"))),
        "positives": positives.num_rows,
        "positives_retrieved": found,
        "recall": round(found / positives.num_rows, 4) if positives.num_rows else 0.0,
    }


def _model_id(model: str) -> str:
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def _embed_config(model: str, max_seq_length, dtype: str, batch_size: int, chunk_size: int, precision: str = "float32") -> dict:
    from negmine.dense import CPU_BATCH_TOKENS

    config = {"model": _model_id(model), "max_seq_length": max_seq_length, "dtype": dtype, "batch_size": batch_size, "cpu_batch_tokens": CPU_BATCH_TOKENS}
    # chunks decide which texts share a padded batch; precision changes the floats
    return config | _unless_default(chunk_size=(chunk_size, EMBED_CHUNK), precision=(precision, "float32"))


def _encoder(engine: str, model: str, max_seq_length, ray_address: str | None = None, precision: str = "float32", ray_actors: int | None = None):
    """The bi-encoder: loaded here (local), or a pool of Ray actors that load it when first used (ray)."""
    if engine == "ray":
        from negmine.engine_ray import encoder_pool

        return encoder_pool(model, max_seq_length, ray_address, max_actors=ray_actors, precision=precision)
    from negmine.dense import load_model

    return load_model(model, max_seq_length, precision=precision)


def _actors(pool) -> dict:
    """How many Ray actors a pool (negmine.engine_ray.ModelPool) started, for a stage's stats."""
    return {"actors": pool.started} if pool.started else {}


def _encoder_kind(engine: str, encoder) -> dict:
    if engine == "ray":  # the actors load their own
        return _actors(encoder)
    from negmine.dense import encoder_kind

    return {"encoder": encoder_kind(encoder)}


def _embed_parts_dir(output: Path, config: dict, inputs: list[Path]) -> Path:
    """Where an unfinished encode keeps its chunks: named after the config and the corpus's hash, so a
    changed model, setting or corpus starts afresh; parts of other keys are removed."""
    from negmine.run import hash_paths

    key = hashlib.sha256(json.dumps([config, sorted(hash_paths(inputs).values())], sort_keys=True).encode()).hexdigest()[:16]
    parts = output.parent / f".{output.stem}.parts-{key}"
    for stale in output.parent.glob(f".{output.stem}.parts-*"):
        if stale != parts:
            shutil.rmtree(stale, ignore_errors=True)
    return parts


def embed_stage(run: Run, model: str, max_seq_length: int | None = 256, dtype: str = "float16", batch_size: int = 64, loaded=None, progress=None, force: bool = False,
                chunk_size: int = EMBED_CHUNK, engine: str = "local", ray_address: str | None = None, precision: str = "float32",
                ray_actors: int | None = None) -> StageResult:
    """Encode the corpus → embeddings/corpus.npy (``dtype`` on disk; the model runs in ``precision``)."""
    check_engine(engine)
    precision = check_precision(precision, engine)
    if engine == "ray":
        from negmine.engine_ray import embed_corpus
    else:
        from negmine.dense import embed_corpus

    inputs = _inputs(run, "corpus")
    outputs = [run.file("embeddings/corpus.npy")]
    config = _embed_config(model, max_seq_length, dtype, batch_size, chunk_size, precision)

    def compute():
        corpus = LazyTable(inputs[0], CORPUS, "corpus")  # read a chunk at a time as it is encoded
        encoder = loaded if loaded is not None else _encoder(engine, model, max_seq_length, ray_address, precision, ray_actors)
        # encoded chunks are kept until the stage ends: an interrupted encode resumes (on either engine)
        parts_dir, resumed = _embed_parts_dir(outputs[0], config, inputs), {}
        started = time.perf_counter()  # the encode alone: model loading is not part of docs/s
        try:
            emb = embed_corpus(corpus, encoder, outputs[0], dtype, batch_size, chunk_size=chunk_size, progress=progress, parts_dir=parts_dir, resumed=resumed)
        finally:
            if engine == "ray" and loaded is None:
                encoder.close()
        encode_s = time.perf_counter() - started
        encoded = int(emb.shape[0]) - resumed.get("documents", 0)
        return {"documents": int(emb.shape[0]), "dim": int(emb.shape[1]), "dtype": dtype, "precision": precision, "encode_s": round(encode_s, 3),
                "docs_per_s": round(encoded / max(encode_s, 1e-9), 1)} | (
                    {"documents_resumed": resumed["documents"]} if resumed.get("documents") else {}) | _ran_on(engine) | _encoder_kind(engine, encoder)

    return _run_stage(run, "embed", config, inputs, outputs, compute, force)


def dense_stage(run: Run, model: str, k: int = 100, max_seq_length: int | None = 256, dtype: str = "float16", batch_size: int = 64, threads: int | None = None, progress=None, force: bool = False,
                chunk_size: int = EMBED_CHUNK, query_batch: int = QUERY_BATCH, engine: str = "local", ray_address: str | None = None, shard_size: int | None = None,
                index: str = "flat", nprobe: int = 16, ef_search: int = 128, precision: str = "float32", ray_actors: int | None = None) -> list[StageResult]:
    """Embed the corpus (cached) and search; returns the embed and dense stage results.

    ``precision`` is the encoder's (negmine.dense.PRECISIONS): float32, or bfloat16 (about 1.75x faster
    on CPUs with AVX512-BF16/AMX), float16 on a GPU; corpus and queries are encoded alike.

    ``index`` ``ivf`` or ``hnsw`` searches approximately (negmine.dense.build_index; ``nprobe`` and
    ``ef_search`` trade recall for speed) and the stage reports its recall against exact search.

    ``engine='ray'`` encodes and searches on the Ray cluster at ``ray_address`` (default ``RAY_ADDRESS``,
    else a local one); same outputs. Exact search on either engine runs over faiss shards of
    ``shard_size`` corpus rows (default negmine.dense.SHARD_SIZE), merged: same outputs for any size.
    ``ray_actors`` caps the encoder actors (default: one per GPU, else one per CPU of the cluster).
    """
    import numpy as np

    check_engine(engine)
    from negmine.dense import INDEXES
    from negmine.errors import StageError

    precision = check_precision(precision, engine)
    if index not in INDEXES:
        raise StageError(f"unknown index {index!r}; choose from {list(INDEXES)}")
    if engine == "ray" and index != "flat":
        raise StageError(f"--index {index} runs on the local engine; the ray engine searches exact (flat) shards")
    if engine == "ray":
        from negmine.engine_ray import dense_candidates
    else:
        from negmine.dense import dense_candidates

    holder = {}

    def model_once():
        if "model" not in holder:
            holder["model"] = _encoder(engine, model, max_seq_length, ray_address, precision, ray_actors)
        return holder["model"]

    inputs_embed = _inputs(run, "corpus")
    embed_config = _embed_config(model, max_seq_length, dtype, batch_size, chunk_size, precision)
    try:
        embed_loaded = None if (not force and run.is_fresh("embed", embed_config, inputs_embed)) else model_once()
        embed = embed_stage(run, model, max_seq_length, dtype, batch_size, loaded=embed_loaded, progress=progress, force=force, chunk_size=chunk_size, engine=engine, ray_address=ray_address, precision=precision, ray_actors=ray_actors)
        inputs = _inputs(run, "corpus", "queries", "qrels") + [run.file("embeddings/corpus.npy")]
        outputs = _inputs(run, "candidates_dense", "positive_scores_dense")
        index_params = {"nprobe": nprobe} if index == "ivf" else {"ef_search": ef_search} if index == "hnsw" else {}
        config = {"model": _model_id(model), "k": k, "max_seq_length": max_seq_length, "batch_size": batch_size, "cpu_batch_tokens": embed_config["cpu_batch_tokens"]} | _unless_default(query_batch=(query_batch, QUERY_BATCH), index=(index, "flat"), precision=(precision, "float32")) | index_params

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
            candidates, positives = dense_candidates(corpus, queries, qrels, emb, model_once(), k, batch_size, query_batch, threads=threads, **extra)
            write_table(candidates, outputs[0], CANDIDATES)
            write_table(positives, outputs[1], POSITIVE_SCORES)
            return _retrieval_stats(candidates, positives) | _ran_on(engine) | index_stats

        return [embed, _run_stage(run, "dense", config, inputs, outputs, compute, force)]
    finally:
        if engine == "ray" and "model" in holder:
            holder["model"].close()


def hybrid_stage(run: Run, fusion: str = "rrf", k: int = 60, force: bool = False) -> StageResult:
    """Fuse the bm25 and dense pools (negmine.fusion) → candidates_hybrid, positive_scores_hybrid.

    Candidates: every document either retriever returned, ``source`` naming which did, ``score`` the
    RRF score Σ 1/(k + rank) (Cormack et al., SIGIR 2009), ``rank`` the fused order (``rrf``: by RRF
    score; ``union``: by best rank, then RRF). Positives: the same RRF score over the retrievers that
    retrieved the positive, 0 when none did; rank null when it is not in the fused list.
    """
    from negmine.errors import StageError
    from negmine.fusion import FUSIONS, fuse_positive_scores

    if fusion not in FUSIONS:
        raise StageError(f"unknown fusion {fusion!r}; choose from {sorted(FUSIONS)}")
    retrievers = ("bm25", "dense")
    inputs = [p for r in retrievers for p in _inputs(run, f"candidates_{r}", f"positive_scores_{r}")]
    for retriever, path in zip(("bm25", "bm25", "dense", "dense"), inputs):
        if not path.exists():
            raise StageError(f"{path}: missing; the hybrid pool fuses bm25 and dense, run `negmine {retriever} --run {run.path}` first")
    outputs = _inputs(run, "candidates_hybrid", "positive_scores_hybrid")
    config = {"fusion": fusion, "k": k}

    def compute():
        candidates = [read_table(p, CANDIDATES, "candidates") for p in inputs[0::2]]
        positives = [read_table(p, POSITIVE_SCORES, "positive_scores") for p in inputs[1::2]]
        fused = FUSIONS[fusion](candidates, k)
        fused_positives = fuse_positive_scores(positives, fused, k)
        write_table(fused, outputs[0], CANDIDATES)
        write_table(fused_positives, outputs[1], POSITIVE_SCORES)
        sources = fused.column("source").to_pylist()
        return {"fusion": fusion, **_retrieval_stats(fused, fused_positives), "candidates_by_source": {s: sources.count(s) for s in sorted(set(sources))}}

    return _run_stage(run, "hybrid", config, inputs, outputs, compute, force)


def _teacher_id(spec: str) -> str:
    from negmine.rescore import parse_teacher

    kind, name = parse_teacher(spec)
    return f"{kind}:{_model_id(name)}"


RESCORE_CHUNK = 2048  # pairs (cross-encoder) or distinct texts (bi-encoder) per teacher call


def rescore_stage(run: Run, teacher: str, source: str = "dense", max_length: int | None = 512, batch_size: int = 32, progress=None, force: bool = False,
                  chunk_size: int = RESCORE_CHUNK, engine: str = "local", ray_address: str | None = None, ray_actors: int | None = None,
                  precision: str = "float32") -> StageResult:
    """Teacher scores (negmine.rescore) of candidates_<source> and positive_scores_<source>.

    ``precision`` is a bi-encoder teacher's (negmine.dense.PRECISIONS; the local engine only).

    ``engine='ray'`` scores the parts on Ray actors (negmine.engine_ray.RayTeacher); same outputs.
    """
    from negmine.errors import BadInputError, StageError
    from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

    check_engine(engine)
    if source not in SOURCES:
        raise StageError(f"unknown candidate source {source!r}; choose from {sorted(SOURCES)}")
    inputs = _inputs(run, f"candidates_{source}", f"positive_scores_{source}", "corpus", "queries")
    for path in inputs[:2]:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine {source} --run {run.path}` first")
    outputs = _inputs(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    config = {"teacher": _teacher_id(teacher), "source": source, "max_length": max_length}  # batch size does not change the output
    if precision != "float32":
        if engine != "local":
            raise BadInputError("--teacher-precision", f"runs on the local engine; the ray engine's teacher runs in float32, got {precision!r}", field="teacher_precision")
        precision = check_precision(precision, engine)
    config |= _unless_default(chunk_size=(chunk_size, RESCORE_CHUNK), precision=(precision, "float32"))

    def compute():
        import numpy as np

        from negmine.rescore import load_teacher, rescore

        candidates = read_table(inputs[0], CANDIDATES, "candidates")
        positives = read_table(inputs[1], POSITIVE_SCORES, "positive_scores")
        corpus = read_table(inputs[2], CORPUS, "corpus")
        queries = read_table(inputs[3], QUERIES, "queries")
        if engine == "ray":
            from negmine.engine_ray import RayTeacher

            loaded = RayTeacher(teacher, max_length, ray_address, ray_actors)
        else:
            loaded = load_teacher(teacher, max_length, precision=precision)
        try:
            scored, scored_pos = rescore(candidates, positives, corpus, queries, loaded, batch_size, chunk_size, progress=progress)
        finally:
            if engine == "ray":
                loaded.close()
        write_table(scored, outputs[0], SCORED_CANDIDATES)
        write_table(scored_pos, outputs[1], SCORED_POSITIVES)
        probs = scored.column("ce_prob").to_numpy()
        return {
            "teacher_kind": loaded.kind,
            "candidates": scored.num_rows,
            "positives": scored_pos.num_rows,
            "candidate_prob_mean": round(float(probs.mean()), 4) if len(probs) else None,
            "positive_prob_mean": round(float(np.mean(scored_pos.column("ce_prob").to_numpy())), 4) if scored_pos.num_rows else None,
        } | _ran_on(engine) | (_actors(loaded.pool) if engine == "ray" else {})

    return _run_stage(run, f"rescore.{source}", config, inputs, outputs, compute, force)


def cluster_stage(run: Run, model: str, n_clusters: int | None = None, seed: int = 42, max_seq_length: int | None = 256, batch_size: int = 64, force: bool = False) -> StageResult:
    """k-means on the queries' embeddings (same bi-encoder as the dense stage) → clusters.parquet."""
    from negmine.cluster import cluster_queries, cluster_summary
    from negmine.dense import encode, load_model

    inputs = _inputs(run, "queries")
    outputs = _inputs(run, "clusters")
    config = {"model": _model_id(model), "n_clusters": n_clusters, "seed": seed, "max_seq_length": max_seq_length}

    def compute():
        queries = read_table(inputs[0], QUERIES, "queries")
        embeddings = encode(load_model(model, max_seq_length), queries.column("text").to_pylist(), batch_size)
        clusters = cluster_queries(queries.column("query_id").to_pylist(), embeddings, n_clusters, seed)
        write_table(clusters, outputs[0], CLUSTERS)
        return cluster_summary(clusters)

    return _run_stage(run, "cluster", config, inputs, outputs, compute, force)


def sample_stage(run: Run, strategy: str = "simans", source: str = "dense", num_negatives: int = 7, seed: int = 42, params: dict | None = None, force: bool = False,
                 dedup: bool = True, max_fn_prob: float | None = None) -> StageResult:
    """Sample ``strategy``'s negatives from candidates_<source> → negatives_<strategy>.parquet.

    Likely false negatives are kept out of every strategy's pool, as labelled positives are: with
    ``dedup``, documents whose text duplicates a labelled positive (duplicates.parquet, made here when
    missing); with ``max_fn_prob``, candidates whose P(false negative) is above it (fn_scores_<source>,
    made here with the label-free model when missing; see negmine.fn_model).
    """
    from negmine.errors import BadInputError, StageError
    from negmine.sample import NEEDS, likely_false_negatives, sample_negatives, strategy_params

    if max_fn_prob is not None and not 0.0 <= max_fn_prob <= 1.0:
        raise BadInputError("--max-fn-prob", f"must lie in [0, 1], got {max_fn_prob}", field="max_fn_prob")
    if source not in SOURCES:
        raise StageError(f"unknown candidate source {source!r}; choose from {sorted(SOURCES)}")
    params = {**strategy_params(strategy), **(params or {})}
    needs = NEEDS.get(strategy, ())  # corpus (random, star) and/or clusters (tas-balanced)
    inputs = _inputs(run, f"candidates_{source}", f"positive_scores_{source}", "qrels", "queries", *needs)
    for path in inputs[:2]:
        if not path.exists():
            raise StageError(f"{path}: missing; run `negmine {source} --run {run.path}` first")
    if "clusters" in needs and not table_path(run, "clusters").exists():
        raise StageError(f"{table_path(run, 'clusters')}: missing; strategy {strategy!r} needs it, run `negmine cluster --run {run.path}` first")
    outputs = _inputs(run, f"negatives_{strategy}")
    # teacher scores from `negmine rescore`, when present: they fill ce_score / pos_ce_score and feed denoise, simans score='ce'
    scored = _inputs(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    has_teacher = all(p.exists() for p in scored)
    if strategy == "denoise" and not has_teacher:
        raise StageError(f"{scored[0]}: missing; strategy 'denoise' needs teacher scores, run `negmine rescore --run {run.path} --source {source} --teacher ...` first")
    inputs += scored if has_teacher else []
    if strategy == "denoise" and params.get("pseudo_positives"):
        outputs += _inputs(run, f"pseudo_positives_{strategy}")
    filters = []
    if dedup:
        from negmine.false_negative_stages import duplicates_stage

        duplicates_stage(run)
        filters += _inputs(run, "duplicates")
    if max_fn_prob is not None:
        from negmine.false_negative_stages import fn_scores_stage

        if not table_path(run, f"fn_scores_{source}").exists():
            fn_scores_stage(run, source, seed=seed)
        filters += _inputs(run, f"fn_scores_{source}")
    inputs += filters
    config = {"strategy": strategy, "source": source, "num_negatives": num_negatives, "seed": seed, "params": params}
    config |= _unless_default(dedup=(dedup, True), max_fn_prob=(max_fn_prob, None))

    def compute():
        candidates = read_table(inputs[0], CANDIDATES, "candidates")
        positives = read_table(inputs[1], POSITIVE_SCORES, "positive_scores")
        qrels = read_table(inputs[2], QRELS, "qrels")
        queries = read_table(inputs[3], QUERIES, "queries")
        extra = {name: read_table(table_path(run, name), {"corpus": CORPUS, "clusters": CLUSTERS}[name], name) for name in needs}
        if has_teacher:
            from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

            extra["scored_candidates"] = read_table(scored[0], SCORED_CANDIDATES, "scored_candidates")
            extra["scored_positives"] = read_table(scored[1], SCORED_POSITIVES, "scored_positives")
        from negmine.schemas import DUPLICATES, FN_SCORES

        duplicates = read_table(table_path(run, "duplicates"), DUPLICATES, "duplicates") if dedup else None
        fn_scores = read_table(table_path(run, f"fn_scores_{source}"), FN_SCORES, "fn_scores") if max_fn_prob is not None else None
        exclusions = likely_false_negatives(qrels, duplicates, fn_scores, max_fn_prob)
        negatives, stats = sample_negatives(candidates, positives, qrels, queries, strategy, num_negatives, seed, **extra, exclude=exclusions, **params)
        write_table(negatives, outputs[0], NEGATIVES)
        stats["candidates_kept_out"] = exclusions.count(candidates)
        if strategy == "denoise":
            stats.update(_denoise_report(extra["scored_candidates"], qrels, params, outputs[1] if len(outputs) > 1 else None))
        return {**stats, **score_summary(negatives)}

    return _run_stage(run, f"sample.{strategy}", config, inputs, outputs, compute, force)


def _denoise_report(scored_candidates, qrels, params: dict, pseudo_path: Path | None) -> dict:
    """Likely false negatives of the denoise strategy (teacher prob above positive_above in the top window)."""
    from negmine.sample.denoise import likely_false_negatives
    from negmine.schemas import PSEUDO_POSITIVES

    pseudo = likely_false_negatives(scored_candidates, qrels, params["top"], params["positive_above"])
    if pseudo_path is not None:
        write_table(pseudo, pseudo_path, PSEUDO_POSITIVES)
    return {
        "likely_false_negatives": pseudo.num_rows,
        "queries_with_likely_false_negatives": len(set(pseudo.column("query_id").to_pylist())),
    }


def score_summary(negatives) -> dict:
    """Distribution of negative vs positive retriever scores, and the share of negatives above their positive."""
    import numpy as np

    neg = negatives.column("retriever_score").to_numpy(zero_copy_only=False).astype(np.float64)
    pos = negatives.column("pos_retriever_score").to_numpy(zero_copy_only=False).astype(np.float64)
    if len(neg) == 0:
        return {}

    def quantiles(x):
        x = x[~np.isnan(x)]
        if not len(x):
            return None
        return {q: round(float(np.quantile(x, p)), 4) for q, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))} | {"mean": round(float(x.mean()), 4)}

    # negatives drawn off the candidates (random, star) have no retriever score nor source rank
    ranks = negatives.column("source_rank").to_numpy(zero_copy_only=False).astype(np.float64)
    ok = ~np.isnan(pos) & ~np.isnan(neg)
    return {
        "negative_score": quantiles(neg),
        "positive_score": quantiles(pos),
        "share_negative_above_positive": round(float(np.mean(neg[ok] > pos[ok])), 4) if ok.any() else None,
        "mean_source_rank": round(float(np.mean(ranks[~np.isnan(ranks)])), 2) if (~np.isnan(ranks)).any() else None,
    }


def estimate_fn_stage(
    run: Run,
    source: str = "dense",
    threshold: float | None = None,
    qrels_full: str | Path | None = None,
    audit: int = 0,
    audit_labels: str | Path | None = None,
    seed: int = 42,
    n_boot: int = 1000,
    force: bool = False,
) -> StageResult:
    """False-negative estimates (negmine.estimate_fn) for every negatives_*.parquet of the run; writes fn_report.*"""
    from negmine import estimate_fn as fn
    from negmine.errors import StageError
    from negmine.io import write_json
    from negmine.schemas import FN_REPORT, SCORED_CANDIDATES, SCORED_POSITIVES

    check_name(source, "source")
    negatives_paths = sorted(run.path.glob("negatives_*.parquet"))
    if not negatives_paths:
        raise StageError(f"{run.path}: no negatives_*.parquet; run `negmine sample --run {run.path}` first")
    scored = _inputs(run, f"scored_candidates_{source}", f"scored_positives_{source}")
    has_teacher = all(p.exists() for p in scored)
    inputs = negatives_paths + (scored if has_teacher else []) + _inputs(run, "qrels")
    inputs += [Path(p) for p in (qrels_full, audit_labels) if p is not None] + (_inputs(run, "corpus", "queries") if audit else [])
    fn_model_file = run.file(f"fn_model_{source}.json")
    has_model = fn_model_file.exists()  # negmine fn-scores ran: its model estimates each strategy's rate too
    if has_model:
        from negmine.false_negative_stages import _signal_inputs

        inputs += [fn_model_file] + [p for group in _signal_inputs(run, source) for p in group]
    outputs = [run.file("fn_report.parquet"), run.file("fn_report.json")] + ([run.file("fn_audit.csv"), run.file("fn_audit.parquet")] if audit else [])
    config = {"source": source, "threshold": threshold, "qrels_full": str(qrels_full) if qrels_full else None, "audit": audit,
              "audit_labels": str(audit_labels) if audit_labels else None, "seed": seed, "n_boot": n_boot}

    def compute():
        negatives = {p.stem.removeprefix("negatives_"): read_table(p, NEGATIVES, "negatives") for p in negatives_paths}
        qrels = read_table(table_path(run, "qrels"), QRELS, "qrels")
        teacher = (read_table(scored[0], SCORED_CANDIDATES, "scored_candidates"), read_table(scored[1], SCORED_POSITIVES, "scored_positives")) if has_teacher else None
        full = fn.read_qrels_file(qrels_full) if qrels_full is not None else None
        labels = fn.read_audit_labels(audit_labels) if audit_labels is not None else None
        fn_features = None
        if has_model:
            from negmine.false_negative_stages import load_fn_model, signals

            fn_features = (signals(run, source)[0], load_fn_model(run, source))
        rows, summary = [], {}
        for strategy, table in negatives.items():
            entry = {"negatives": table.num_rows, "score_ratio": fn.score_ratio(table)}
            methods = []
            if teacher is not None:
                teacher_rows, entry["teacher_unscored"] = fn.teacher_estimate(table, *teacher, threshold, n_boot, seed)
                methods.append(teacher_rows)
            if full is not None:
                label_rows, entry["judged_queries"] = fn.label_estimate(table, full, qrels, n_boot, seed)
                methods.append(label_rows)
            if labels is not None:
                methods.append(fn.audit_estimate(table, labels))
            if fn_features is not None:
                methods.append(fn.model_estimate(table, *fn_features, n_boot, seed))
            for method_rows in methods:
                rows.extend(method_rows)
                overall = method_rows[0]
                entry[overall["method"]] = {k: overall[k] for k in ("negatives", "false_negatives", "rate", "ci_low", "ci_high")}
            summary[strategy] = entry
        report = fn.report_table(rows)
        write_table(report, outputs[0], FN_REPORT)
        write_json({"strategies": summary, "rows": rows, "config": config}, outputs[1])
        if audit:
            import pyarrow.csv as pacsv

            sample = fn.audit_sample(negatives, read_table(table_path(run, "corpus"), CORPUS, "corpus"), read_table(table_path(run, "queries"), QUERIES, "queries"), audit, seed)
            from negmine.io import atomic_path

            with atomic_path(outputs[2]) as tmp:
                pacsv.write_csv(sample, tmp)
            with atomic_path(outputs[3]) as tmp:
                import pyarrow.parquet as pq

                pq.write_table(sample, tmp)
        return {"teacher": has_teacher, "model": has_model, "strategies": summary}

    return _run_stage(run, "estimate-fn", config, inputs, outputs, compute, force)
