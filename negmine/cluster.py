"""Stage — cluster queries: k-means on query embeddings, for topic-aware batch composition.

TAS-Balanced (Hofstätter et al., SIGIR 2021) composes each training batch from one query cluster
("topic-aware sampling"); the clusters come from k-means over the queries' embeddings. We use
``faiss.Kmeans`` (Lloyd's algorithm from random initial centroids, ``nredo`` restarts) with a fixed ``seed``, so the same
embeddings give the same clusters. ``n_clusters`` defaults to round(√|Q|), capped at 2000 (the
paper used 2000 clusters for the ~400k MS MARCO training queries).

Output: the ``clusters`` table, one row per query: its cluster and the squared L2 distance
‖E(q) − c‖² to that cluster's centroid.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa

from negmine.errors import StageError
from negmine.schemas import CLUSTERS

MAX_CLUSTERS = 2000


def default_n_clusters(n_queries: int) -> int:
    """round(√n_queries), at least 1 and at most 2000."""
    return max(1, min(MAX_CLUSTERS, round(math.sqrt(n_queries))))


def cluster_queries(
    query_ids: list[str], embeddings: np.ndarray, n_clusters: int | None = None, seed: int = 42, niter: int = 20, nredo: int = 5
) -> pa.Table:
    """k-means of ``embeddings`` (row i = ``query_ids[i]``) into ``n_clusters``; returns the clusters table.

    ``nredo`` restarts keep the run with the lowest k-means objective (fewer bad local optima).
    """
    import faiss

    if len(query_ids) != len(embeddings):
        raise StageError(f"{len(query_ids)} query ids but {len(embeddings)} embeddings")
    if not query_ids:
        return CLUSTERS.empty_table()
    k = default_n_clusters(len(query_ids)) if n_clusters is None else n_clusters
    if not 1 <= k <= len(query_ids):
        raise StageError(f"n_clusters must lie in [1, {len(query_ids)}] (the number of queries), got {k}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    kmeans = faiss.Kmeans(
        x.shape[1], k, niter=niter, nredo=nredo, seed=seed, verbose=False, min_points_per_centroid=1, max_points_per_centroid=1 << 30
    )
    kmeans.train(x)
    distance, assignment = kmeans.index.search(x, 1)
    return pa.table(
        {
            "query_id": query_ids,
            "cluster_id": pa.array(assignment[:, 0], pa.int32()),
            "distance": pa.array(distance[:, 0], pa.float32()),
        },
        schema=CLUSTERS,
    )


def cluster_summary(clusters: pa.Table) -> dict:
    """How many clusters, and the spread of their sizes."""
    sizes = sorted(Counter(clusters.column("cluster_id").to_pylist()).values())
    if not sizes:
        return {"queries": 0, "clusters": 0}
    return {
        "queries": clusters.num_rows,
        "clusters": len(sizes),
        "size_min": sizes[0],
        "size_median": sizes[len(sizes) // 2],
        "size_max": sizes[-1],
        "singletons": sum(s == 1 for s in sizes),
        "mean_distance": round(float(np.mean(clusters.column("distance").to_numpy())), 4),
    }
