"""Query clustering: k-means recovers separated topics, is seeded, and names bad n_clusters."""

import math

import numpy as np
import pytest

from negmine.cluster import cluster_queries, cluster_summary, default_n_clusters
from negmine.errors import StageError


def _blobs():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 3
    x = np.concatenate([rng.normal(0, 0.05, (20, 8)) + c for c in centres]).astype(np.float32)
    return [f"q{i}" for i in range(60)], x


def test_kmeans_recovers_three_topics_and_distances_are_to_the_centroid():
    ids, x = _blobs()
    clusters = cluster_queries(ids, x, n_clusters=3, seed=1)
    labels = clusters.column("cluster_id").to_pylist()
    assert [len(set(labels[i : i + 20])) for i in (0, 20, 40)] == [1, 1, 1] and len(set(labels)) == 3
    centroid = x[:20].mean(axis=0)
    assert clusters.column("distance")[0].as_py() == pytest.approx(float(np.sum((x[0] - centroid) ** 2)), rel=1e-3)
    assert cluster_summary(clusters) | {"mean_distance": None} == {
        "queries": 60, "clusters": 3, "size_min": 20, "size_median": 20, "size_max": 20, "singletons": 0, "mean_distance": None,
    }


def test_same_seed_same_table():
    ids, x = _blobs()
    assert cluster_queries(ids, x, 5, seed=3).equals(cluster_queries(ids, x, 5, seed=3))


def test_default_n_clusters_is_sqrt_capped_at_2000():
    assert default_n_clusters(60) == round(math.sqrt(60)) == 8
    assert default_n_clusters(1) == 1
    assert default_n_clusters(10_000_000) == 2000
    ids, x = _blobs()
    assert cluster_summary(cluster_queries(ids, x))["clusters"] <= 8


def test_bad_n_clusters_names_the_range():
    ids, x = _blobs()
    with pytest.raises(StageError, match=r"n_clusters must lie in \[1, 60\] \(the number of queries\), got 61"):
        cluster_queries(ids, x, n_clusters=61)
