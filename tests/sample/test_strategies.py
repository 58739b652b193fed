"""Strategies of issue 3 on hand-made pools: expected values written as the paper's formula."""

from collections import Counter

import numpy as np
import pytest

from negmine.errors import StageError
from negmine.sample import sample_pools
from negmine.sample.pool import QueryPool
from negmine.sample.positive_aware import positive_aware_negatives
from negmine.sample.curriculum import curriculum_negatives
from negmine.sample.star import star_negatives
from negmine.sample.tas_balanced import margin_bins, tas_balanced_negatives, teacher_scores
from negmine.sample.uniform import random_negatives

CORPUS_IDS = [f"d{i}" for i in range(10)] + ["p1", "p2"]


def pool(scores=(0.9, 0.8, 0.77, 0.7, 0.5), positives=(("p1", 0.8),), corpus_ids=CORPUS_IDS, ranks=None, cluster_id=None):
    n = len(scores)
    return QueryPool(
        "q",
        [f"d{i}" for i in range(n)],
        np.asarray(ranks if ranks is not None else range(1, n + 1), dtype=np.int32),
        np.asarray(scores, dtype=np.float32),
        list(positives),
        corpus_ids=corpus_ids,
        cluster_id=cluster_id,
    )


# random -----------------------------------------------------------------------------------------


def test_random_draws_the_whole_corpus_uniformly_and_never_a_positive():
    p = pool(positives=(("p1", 0.8), ("p2", 0.6)))
    counts = Counter()
    rng = np.random.default_rng(0)
    for _ in range(12000):
        counts[p.neg_id(int(random_negatives(p, 0, 1, rng)[0]))] += 1
    assert set(counts) == {f"d{i}" for i in range(10)}  # 12 corpus docs − 2 positives
    for doc in counts:  # p(d) = 1 / (|C| − |D+|) = 1/10
        assert counts[doc] / 12000 == pytest.approx(1 / (12 - 2), abs=0.015)


def test_random_keeps_candidate_indices_and_exhausts_a_small_corpus():
    p = pool(positives=(("p1", 0.8), ("p2", 0.6)))
    chosen = random_negatives(p, 0, 50, np.random.default_rng(1))
    assert len(chosen) == 10  # only 10 eligible documents
    ids = [p.neg_id(int(i)) for i in chosen]
    assert sorted(ids) == sorted(f"d{i}" for i in range(10))
    for i, doc in zip(chosen, ids):  # d0..d4 are candidates: they keep their candidate index
        assert (i < len(p)) == (doc in p.doc_ids)


def test_random_negatives_off_the_candidates_have_null_score_and_rank():
    p = pool(scores=(0.9, 0.1), positives=(("p1", 0.8),))
    negatives, stats = sample_pools([p], "random", num_negatives=11, seed=5)
    rows = negatives.to_pylist()
    assert stats["negatives"] == 11 and stats["pairs_short_of_num_negatives"] == 0  # 12 − 1 positive
    for r in rows:
        candidate = r["neg_id"] in ("d0", "d1")
        assert (r["source_rank"] is not None) == candidate and (r["retriever_score"] is not None) == candidate
        assert r["stage"] is None and r["strategy"] == "random"
    assert {r["neg_id"]: r["source_rank"] for r in rows if r["source_rank"]} == {"d0": 1, "d1": 2}


def test_random_without_corpus_names_the_fix():
    with pytest.raises(StageError, match=r"query 'q': this strategy draws from the corpus; build the pools with corpus="):
        random_negatives(pool(corpus_ids=None), 0, 3, np.random.default_rng(0))


# positive-aware ---------------------------------------------------------------------------------


def test_positive_aware_topk_percpos_keeps_scores_below_95_percent_of_the_positive():
    p = pool()  # scores 0.9, 0.8, 0.77, 0.7, 0.5; s+ = 0.8
    chosen = positive_aware_negatives(p, 0, 7, np.random.default_rng(0))
    assert [float(p.scores[i]) for i in chosen] == [s for s in p.scores.tolist() if s < 0.95 * 0.8]
    assert chosen.tolist() == [3, 4]  # 0.77 is not < 0.95·0.8 = 0.76


def test_positive_aware_margin_and_absolute_cap():
    p = pool(scores=(0.9, 0.74, 0.72, 0.5, 0.3))
    margin_only = positive_aware_negatives(p, 0, 7, np.random.default_rng(0), max_relative=None, margin=0.1)
    assert margin_only.tolist() == [i for i, s in enumerate(p.scores) if s < 0.8 - 0.1]
    capped = positive_aware_negatives(p, 0, 7, np.random.default_rng(0), max_score=0.6)
    assert capped.tolist() == [i for i, s in enumerate(p.scores) if s < 0.95 * 0.8 and s < 0.6]  # both apply
    assert positive_aware_negatives(p, 0, 1, np.random.default_rng(0)).tolist() == [1]  # rank order, at most n


def test_positive_aware_uses_each_pairs_own_positive():
    p = pool(positives=(("p1", 0.8), ("p2", 0.6)))
    assert positive_aware_negatives(p, 1, 7, np.random.default_rng(0)).tolist() == [4]  # only 0.5 < 0.95·0.6


def test_positive_aware_without_positive_score_says_so():
    with pytest.raises(StageError, match=r"no retriever score for positive 'p1'; positive-aware needs s\(q, d\+\)"):
        positive_aware_negatives(pool(positives=(("p1", None),)), 0, 3, np.random.default_rng(0))
    only_cap = positive_aware_negatives(pool(positives=(("p1", None),)), 0, 3, np.random.default_rng(0), max_relative=None, max_score=0.75)
    assert only_cap.tolist() == [3, 4]


# star -------------------------------------------------------------------------------------------


def test_star_mixes_hard_top_k_and_random_corpus_negatives():
    corpus = [f"d{i}" for i in range(200)] + ["p1"]
    p = pool(scores=np.linspace(0.9, 0.1, 20), corpus_ids=corpus)
    for seed in range(20):
        chosen = star_negatives(p, 0, 6, np.random.default_rng(seed), hard_ratio=0.5, top_k=5)
        n_hard = round(0.5 * 6)
        assert all(0 <= i < 5 for i in chosen[:n_hard])  # hard: candidates ranked ≤ top_k
        ids = [p.neg_id(int(i)) for i in chosen]
        assert len(set(ids)) == 6 and "p1" not in ids


def test_star_fills_with_random_when_the_hard_pool_is_short():
    p = pool(scores=(0.9, 0.8), ranks=(1, 300))  # only one candidate within the top-200
    chosen = star_negatives(p, 0, 4, np.random.default_rng(0), hard_ratio=1.0)
    assert chosen[0] == 0 and len(chosen) == 4
    assert star_negatives(p, 0, 4, np.random.default_rng(0), hard_ratio=0.0).tolist() != []
    with pytest.raises(StageError, match=r"star: hard_ratio must lie in \[0, 1\], got 1.5"):
        star_negatives(p, 0, 4, np.random.default_rng(0), hard_ratio=1.5)


# tas-balanced -----------------------------------------------------------------------------------


def test_margin_bins_are_ten_equal_width_bins_over_the_pools_range():
    margins = np.array([0.0, 0.05, 0.1, 0.55, 0.99, 1.0])
    # width (1.0 − 0.0) / 10 = 0.1; bin = ⌊(m − min) / width⌋, the maximum in the last bin
    assert margin_bins(margins).tolist() == [0, 0, 1, 5, 9, 9]
    assert margin_bins(np.array([0.3, 0.3])).tolist() == [0, 0]


def test_tas_balanced_draws_a_bin_uniformly_then_a_candidate_in_it():
    # s+ = 1.0; margins 1 − s: eight candidates in the narrowest-margin bin, one in the widest
    scores = [0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.0]
    p = pool(scores=scores, positives=(("p1", 1.0),))
    rng = np.random.default_rng(0)
    first = Counter(int(tas_balanced_negatives(p, 0, 1, rng)[0]) for _ in range(8000))
    # p(lone candidate) = p(its bin) = 1/2 (two non-empty bins); each of the others 1/2 · 1/8
    assert first[8] / 8000 == pytest.approx(1 / 2, abs=0.02)
    assert first[0] / 8000 == pytest.approx(1 / 2 * 1 / 8, abs=0.015)
    assert sorted(tas_balanced_negatives(p, 0, 20, rng).tolist()) == list(range(9))  # fills the pool


def test_tas_balanced_uses_teacher_scores_when_the_pool_has_them():
    p = pool(scores=[0.95] * 8 + [0.0], positives=(("p1", 1.0),))
    p.ce_scores = np.array([5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 4.0], np.float32)  # teacher: one margin bin of 8 + one of 1
    p.positive_ce = [5.0]
    scores, s_pos = teacher_scores(p, 0)
    assert s_pos == 5.0 and scores.tolist() == p.ce_scores.tolist()
    p.ce_scores[0] = np.nan  # incomplete teacher scores: fall back to the retriever
    assert teacher_scores(p, 0)[1] == 1.0


def test_tas_balanced_writes_the_querys_cluster():
    negatives, _ = sample_pools([pool(cluster_id=17), pool(cluster_id=None)], "tas-balanced", num_negatives=2, seed=1)
    assert negatives.column("cluster_id").to_pylist() == [17, 17, None, None]


# curriculum -------------------------------------------------------------------------------------


def test_curriculum_bands_from_easy_to_hard():
    p = pool(scores=np.linspace(0.9, 0.0, 10))  # ranks 1..10
    indices, stages = curriculum_negatives(p, 0, 7, np.random.default_rng(0), n_stages=3)
    # bands of ranks (array_split of 10 into 3): hard {0..3}, middle {4..6}, easy {7..9}
    # quotas of 7 into 3: 3 to the hardest band, 2 and 2 to the others
    assert stages.tolist() == [1, 1, 2, 2, 3, 3, 3]
    band = {1: range(7, 10), 2: range(4, 7), 3: range(0, 4)}
    assert all(i in band[s] for i, s in zip(indices.tolist(), stages.tolist()))
    assert len(set(indices.tolist())) == 7


def test_curriculum_stage_column_and_short_pools():
    negatives, stats = sample_pools([pool(scores=(0.9, 0.5))], "curriculum", num_negatives=7, seed=0)
    assert negatives.column("stage").to_pylist() == [2, 3]  # 2 candidates in 3 bands: the easiest band is empty
    assert stats["pairs_short_of_num_negatives"] == 1
    topk, _ = sample_pools([pool()], "topk", num_negatives=2, seed=0)
    assert topk.column("stage").null_count == 2


# end to end -------------------------------------------------------------------------------------


def test_mine_tas_balanced_chains_cluster_and_sample_random_reads_the_corpus(tmp_path, model_path):
    import json

    import pyarrow.parquet as pq

    from conftest import SAMPLE, invoke

    run = tmp_path / "tas"
    result = invoke("mine", "--data", SAMPLE, "--out", run, "--strategy", "tas-balanced", "--model", model_path, "--max-seq-length", 64, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["cluster"]["stats"]["clusters"] == round(60**0.5)  # 60 queries
    negatives = pq.read_table(run / "negatives_tas-balanced.parquet")
    cluster_of = {r["query_id"]: r["cluster_id"] for r in pq.read_table(run / "clusters.parquet").to_pylist()}
    assert all(r["cluster_id"] == cluster_of[r["query_id"]] for r in negatives.to_pylist())
    result = invoke("sample", "--run", run, "--strategy", "random", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert "corpus.parquet" in " ".join(manifest["stages"]["sample.random"]["inputs"])
    randoms = pq.read_table(run / "negatives_random.parquet")
    assert randoms.num_rows == 7 * json.loads(result.stdout)["sample.random"]["stats"]["pairs"]
    assert randoms.column("source_rank").null_count > 0  # most corpus draws were not retrieved
