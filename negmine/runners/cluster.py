"""``negmine cluster``: k-means topics of the queries, for TAS-Balanced."""

from __future__ import annotations

from negmine.io import read_table, write_table
from negmine.rundir import Run
from negmine.runners.base import (
    DEFAULT_MODEL,
    StageResult,
    model_id,
    run_stage,
    table_paths,
    unless_default,
)
from negmine.schemas import CLUSTERS, QUERIES


def cluster_stage(run: Run, model: str = DEFAULT_MODEL, n_clusters: int | None = None, seed: int = 42, max_seq_length: int | None = 256, batch_size: int = 64,
                  query_prompt: str | None = None, query_prompt_name: str | None = None, force: bool = False) -> StageResult:
    """k-means on the queries' embeddings (same bi-encoder and query prompt as the dense stage) → clusters.parquet."""
    from negmine.cluster import cluster_queries, cluster_summary
    from negmine.retrieve.encode import encode
    from negmine.retrieve.models import load_model, resolve_prompt

    prompt = resolve_prompt(model, "query", query_prompt, query_prompt_name)
    inputs = table_paths(run, "queries")
    outputs = table_paths(run, "clusters")
    config = {"model": model_id(model), "n_clusters": n_clusters, "seed": seed, "max_seq_length": max_seq_length} | unless_default(query_prompt=(prompt, ""))

    def compute():
        queries = read_table(inputs[0], QUERIES, "queries")
        embeddings = encode(load_model(model, max_seq_length), queries.column("text").to_pylist(), batch_size, prompt=prompt)
        clusters = cluster_queries(queries.column("query_id").to_pylist(), embeddings, n_clusters, seed)
        write_table(clusters, outputs[0], CLUSTERS)
        return cluster_summary(clusters)

    return run_stage(run, "cluster", config, inputs, outputs, compute, force)
