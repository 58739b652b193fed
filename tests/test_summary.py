"""The one-line description of each stage in the summary table."""

from negmine.summary import _describe


def test_hybrid_rescore_cluster_and_estimate_fn_lines():
    hybrid = {"fusion": "rrf", "candidates": 1500, "queries": 10, "recall": 0.75, "candidates_by_source": {"bm25": 500, "bm25+dense": 700, "dense": 300}}
    assert _describe("hybrid", hybrid) == "rrf fusion: 1,500 candidates for 10 queries (bm25 500, bm25+dense 700, dense 300); positives retrieved 75.0%"
    rescore = {"teacher_kind": "cross-encoder", "candidates": 2000, "positives": 12, "candidate_prob_mean": 0.25, "positive_prob_mean": None}
    assert _describe("rescore.dense", rescore) == "cross-encoder teacher scored 2,000 candidates and 12 positives; mean prob 0.250 (candidates), – (positives)"
    cluster = {"queries": 60, "clusters": 8, "size_min": 1, "size_median": 7, "size_max": 15, "singletons": 2, "mean_distance": 0.4}
    assert _describe("cluster", cluster) == "60 queries in 8 clusters (size 1-15, median 7; 2 singletons)"
    fn = {"teacher": True, "strategies": {"topk": {"negatives": 70, "teacher": {"rate": 0.125}}, "random": {"negatives": 70, "labels": {"rate": 0.0}}, "x": {"negatives": 0}}}
    assert _describe("estimate-fn", fn) == "estimated false-negative rate: random 0.0% (labels), topk 12.5% (teacher), x –"
