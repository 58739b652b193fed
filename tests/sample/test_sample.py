"""Sampling strategies: SimANS weights against the formula, and the invariants of docs/data-contract.md."""

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from negmine.errors import BadInputError, StageError
from negmine.sample import STRATEGIES, sample_negatives, sample_pools, strategy_params
from negmine.sample.pool import QueryPool, attach_teacher_scores, build_pools
from negmine.sample.simans import simans_negatives, simans_weights
from negmine.schemas import CANDIDATES, CLUSTERS, CORPUS, POSITIVE_SCORES, QRELS, QUERIES


def test_simans_weights_follow_the_formula():
    # the raw scale (the paper's form); the default query-z scale is tested in test_simans.py
    scores = np.array([0.9, 0.7, 0.5, 0.2])
    s_pos, a, b = 0.8, 0.5, 0.0
    raw = [math.exp(-0.5 * (0.9 - 0.8) ** 2), math.exp(-0.5 * (0.7 - 0.8) ** 2), math.exp(-0.5 * (0.5 - 0.8) ** 2), math.exp(-0.5 * (0.2 - 0.8) ** 2)]
    expected = np.array(raw) / sum(raw)
    np.testing.assert_allclose(simans_weights(scores, s_pos, a, b, scale="raw"), expected, rtol=1e-12)


def test_simans_offset_b_moves_the_peak():
    scores = np.array([0.5, 0.6, 0.7, 0.8])
    p = simans_weights(scores, 0.8, a=100.0, b=-0.2, scale="raw")
    assert p.argmax() == 1  # peak at s = s+ + b = 0.6
    raw = np.exp(-100.0 * (scores - 0.8 + 0.2) ** 2)
    np.testing.assert_allclose(p, raw / raw.sum(), rtol=1e-12)
    # on the query-z scale b counts pool standard deviations: σ = √0.0125 ≈ 0.112, so b = −1.8 peaks at 0.8 − 0.201 ≈ 0.6
    p = simans_weights(scores, 0.8, a=100.0, b=-1.8)
    assert p.argmax() == 1
    z = (scores - scores.mean()) / scores.std()
    raw = np.exp(-100.0 * (z - (0.8 - scores.mean()) / scores.std() + 1.8) ** 2)
    np.testing.assert_allclose(p, raw / raw.sum(), rtol=1e-12)


def test_simans_laplace_kernel():
    scores = np.array([0.1, 0.4, 1.0])
    raw = np.exp(-2.0 * np.abs(scores - 0.5))
    np.testing.assert_allclose(simans_weights(scores, 0.5, a=2.0, b=0.0, kernel="laplace", scale="raw"), raw / raw.sum(), rtol=1e-12)


@pytest.mark.parametrize("scale", ["query-z", "raw"])
def test_simans_weights_survive_huge_a(scale):
    p = simans_weights(np.array([0.0, 10.0]), 10.0, a=1e6, scale=scale)
    assert p.tolist() == [0.0, 1.0]


def test_simans_sampling_frequencies_match_weights():
    pool = QueryPool("q", [f"d{i}" for i in range(5)], np.arange(1, 6, dtype=np.int32), np.array([0.9, 0.8, 0.6, 0.4, 0.1], np.float32), [("p", 0.8)])
    counts = np.zeros(5)
    rng = np.random.default_rng(0)
    for _ in range(20000):
        counts[simans_negatives(pool, 0, 1, rng, a=5.0)[0]] += 1
    expected = simans_weights(pool.scores, 0.8, a=5.0)
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


@pytest.mark.parametrize("mode, expected", [("mean", 0.6), ("max", 0.8), ("pair", 0.4)])
def test_positive_score_modes(mode, expected):
    from negmine.sample.simans import resolve_positive_score

    pool = QueryPool("q", [], np.zeros(0, np.int32), np.zeros(0, np.float32), [("p1", 0.8), ("p2", 0.4)])
    assert resolve_positive_score(pool, 1, mode, np.random.default_rng(0)) == pytest.approx(expected)


def _tables(n_queries=3, n_cands=30, positives_per_query=2, positive_in_candidates=True):
    rng = np.random.default_rng(7)
    cand, pos, qrels = [], [], []
    for q in range(n_queries):
        qid = f"q{q}"
        docs = [f"d{i}" for i in rng.permutation(100)[:n_cands]]
        scores = np.sort(rng.random(n_cands))[::-1]
        for rank, (d, s) in enumerate(zip(docs, scores), start=1):
            cand.append((qid, d, "dense", rank, float(s)))
        for p in docs[:positives_per_query] if positive_in_candidates else [f"x{q}{j}" for j in range(positives_per_query)]:
            qrels.append((qid, p, 1))
            pos.append((qid, p, "dense", None, 0.5))
    mk = lambda rows, schema: pa.table({n: [r[i] for r in rows] for i, n in enumerate(schema.names)}, schema=schema)  # noqa: E731
    queries = pa.table({"query_id": [f"q{q}" for q in range(n_queries)], "text": ["t"] * n_queries}, schema=QUERIES)
    return mk(cand, CANDIDATES), mk(pos, POSITIVE_SCORES), mk(qrels, QRELS), queries


def _corpus():
    """Every doc id ``_tables`` can use: d0..d99 and the unretrieved positives x<q><j>."""
    ids = [f"d{i}" for i in range(100)] + [f"x{q}{j}" for q in range(4) for j in range(3)]
    return pa.table({"doc_id": ids, "title": [None] * len(ids), "text": ["t"] * len(ids)}, schema=CORPUS)


def _clusters(n_queries=4):
    ids = [f"q{q}" for q in range(n_queries)]
    return pa.table({"query_id": ids, "cluster_id": [q % 2 for q in range(n_queries)], "distance": [0.0] * n_queries}, schema=CLUSTERS)


def _teacher(candidates, positives):
    """Teacher-score tables as `negmine rescore` writes them: ce_prob = 0.09 · score (< 0.1, so denoise keeps all)."""
    from negmine.schemas import SCORED_CANDIDATES, SCORED_POSITIVES

    def scored(table, schema):
        s = table.column("score").to_numpy()
        return table.append_column("ce_score", pa.array(s, pa.float32())).append_column("ce_prob", pa.array(0.09 * s, pa.float32())).cast(schema)

    return {"scored_candidates": scored(candidates, SCORED_CANDIDATES), "scored_positives": scored(positives, SCORED_POSITIVES)}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_invariants_hold_for_every_strategy(strategy):
    candidates, positives, qrels, queries = _tables()
    negatives, stats = sample_negatives(candidates, positives, qrels, queries, strategy, num_negatives=5, seed=3, corpus=_corpus(), clusters=_clusters(), **_teacher(candidates, positives))
    labelled = {(r["query_id"], r["doc_id"]) for r in qrels.to_pylist()}
    rows = negatives.to_pylist()
    assert rows and all((r["query_id"], r["neg_id"]) not in labelled for r in rows)
    per_pair = {}
    for r in rows:
        per_pair.setdefault((r["query_id"], r["pos_id"]), []).append(r["neg_id"])
    for negs in per_pair.values():
        assert len(negs) <= 5 and len(set(negs)) == len(negs)
    assert [r["neg_rank"] for r in rows[:5]] == [1, 2, 3, 4, 5] or strategy == "range"
    again, _ = sample_negatives(candidates, positives, qrels, queries, strategy, num_negatives=5, seed=3, corpus=_corpus(), clusters=_clusters(), **_teacher(candidates, positives))
    assert again.equals(negatives)


def test_topk_takes_the_best_ranked_non_positives():
    candidates, positives, qrels, queries = _tables(n_queries=1)
    negatives, _ = sample_negatives(candidates, positives, qrels, queries, "topk", num_negatives=3)
    ranks = negatives.column("source_rank").to_pylist()
    assert ranks[:3] == [3, 4, 5]  # ranks 1 and 2 are the positives


def test_range_stays_in_the_window_and_counts_short_pools():
    candidates, positives, qrels, queries = _tables(n_queries=2, n_cands=30)
    negatives, stats = sample_negatives(candidates, positives, qrels, queries, "range", num_negatives=25, range_min=10, range_max=30)
    ranks = negatives.column("source_rank").to_pylist()
    assert min(ranks) >= 10 and max(ranks) <= 30
    assert stats["pairs_short_of_num_negatives"] == 4  # 21 candidates in ranks 10..30 < 25


def test_seed_changes_sample_and_order_of_queries_does_not():
    candidates, positives, qrels, queries = _tables(n_queries=4)
    a, _ = sample_negatives(candidates, positives, qrels, queries, "simans", 5, seed=1, a=5.0)
    b, _ = sample_negatives(candidates, positives, qrels, queries, "simans", 5, seed=2, a=5.0)
    assert not a.equals(b)
    reversed_queries = queries.take(list(range(queries.num_rows))[::-1])
    c, _ = sample_negatives(candidates, positives, qrels, reversed_queries, "simans", 5, seed=1, a=5.0)
    key = lambda t: sorted(map(tuple, (r.values() for r in t.to_pylist())))  # noqa: E731
    assert key(a) == key(c)


def test_unknown_strategy_and_parameter_errors_name_the_choices():
    with pytest.raises(BadInputError, match=r"--strategy: unknown value 'nope'; choose from \['curriculum', 'denoise', 'positive-aware', 'random', 'range', 'simans', 'star', 'tas-balanced', 'topk'\]"):
        strategy_params("nope")
    with pytest.raises(StageError, match=r"strategy 'topk' has no parameter\(s\) \['a'\]; it takes \[\]"):
        sample_pools([], "topk", a=1.0)


@settings(max_examples=60, deadline=None)
@given(
    n_cands=st.integers(0, 40),
    n_pos=st.integers(1, 3),
    num_negatives=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    strategy=st.sampled_from(sorted(STRATEGIES)),
    positive_in_candidates=st.booleans(),
)
def test_invariants_property(n_cands, n_pos, num_negatives, seed, strategy, positive_in_candidates):
    candidates, positives, qrels, queries = _tables(2, n_cands, n_pos, positive_in_candidates)
    corpus = _corpus()
    pools = build_pools(candidates, positives, qrels, queries, corpus, _clusters())
    attach_teacher_scores(pools, *_teacher(candidates, positives).values())
    negatives, stats = sample_pools(pools, strategy, num_negatives, seed)
    labelled = {(r["query_id"], r["doc_id"]) for r in qrels.to_pylist()}
    seen = set()
    counts = {}
    for r in negatives.to_pylist():
        assert (r["query_id"], r["neg_id"]) not in labelled
        assert (r["query_id"], r["pos_id"], r["neg_id"]) not in seen
        seen.add((r["query_id"], r["pos_id"], r["neg_id"]))
        counts[(r["query_id"], r["pos_id"])] = counts.get((r["query_id"], r["pos_id"]), 0) + 1
        assert r["cluster_id"] == int(r["query_id"][1:]) % 2  # from _clusters()
        assert (r["stage"] is not None) == (strategy == "curriculum")
    assert all(c <= num_negatives for c in counts.values())
    # what each strategy can fill up to: its pool, the corpus, or the candidates under 0.95 · s+ (= 0.5)
    pool_size = {p.query_id: len(p) for p in pools}
    corpus_size = {p.query_id: corpus.num_rows - len(p.positives) for p in pools}
    safe_size = {p.query_id: int(np.sum(p.scores < 0.95 * 0.5)) for p in pools}
    fill = {"random": corpus_size, "star": corpus_size, "positive-aware": safe_size}.get(strategy, pool_size)
    if strategy != "range":
        for (qid, _), c in counts.items():
            assert c == min(num_negatives, fill[qid])
        assert stats["pairs"] == sum(len(p.positives) for p in pools)
