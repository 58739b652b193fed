"""The false-negative control in sampling: duplicates of positives and candidates above --max-fn-prob never
become negatives, for every strategy, including corpus draws."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from negmine.duplicates import find_duplicates, normalise
from negmine.sample import STRATEGIES, likely_false_negatives, sample_negatives
from negmine.schemas import CANDIDATES, CLUSTERS, CORPUS, FN_SCORES, POSITIVE_SCORES, QRELS, QUERIES

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau upsilon".split()
PARAMS = {"denoise": {}, "tas-balanced": {}}


def _world(texts: list[str], positives: dict[str, list[int]], seed: int = 0):
    """Corpus d0..dn with ``texts``; every query's candidates are the whole corpus in a seeded order."""
    rng = np.random.default_rng(seed)
    doc_ids = [f"d{i}" for i in range(len(texts))]
    corpus = pa.table({"doc_id": doc_ids, "title": [None] * len(texts), "text": texts}, schema=CORPUS)
    rows = {k: [] for k in ("query_id", "doc_id", "source", "rank", "score")}
    for q in positives:
        order = rng.permutation(len(texts))
        for rank, i in enumerate(order, start=1):
            rows["query_id"].append(q)
            rows["doc_id"].append(doc_ids[i])
            rows["source"].append("dense")
            rows["rank"].append(rank)
            rows["score"].append(float(1 - rank / (len(texts) + 1)))
    candidates = pa.table(rows, schema=CANDIDATES)
    qrels = pa.table({"query_id": [q for q, ps in positives.items() for _ in ps], "doc_id": [doc_ids[i] for ps in positives.values() for i in ps],
                      "relevance": [1] * sum(map(len, positives.values()))}, schema=QRELS)
    pos_scores = pa.table({"query_id": qrels.column("query_id"), "doc_id": qrels.column("doc_id"), "source": ["dense"] * qrels.num_rows,
                           "rank": [None] * qrels.num_rows, "score": [0.9] * qrels.num_rows}, schema=POSITIVE_SCORES)
    queries = pa.table({"query_id": list(positives), "text": [f"query {q}" for q in positives]}, schema=QUERIES)
    clusters = pa.table({"query_id": list(positives), "cluster_id": [0] * len(positives), "distance": [0.0] * len(positives)}, schema=CLUSTERS)
    scored = candidates.append_column("ce_score", pa.array(candidates.column("score").to_numpy() * 0.5, pa.float32())).append_column(
        "ce_prob", pa.array(candidates.column("score").to_numpy() * 0.5, pa.float32()))
    scored_pos = pos_scores.append_column("ce_score", pa.array([0.99] * pos_scores.num_rows, pa.float32())).append_column(
        "ce_prob", pa.array([0.99] * pos_scores.num_rows, pa.float32()))
    return corpus, candidates, qrels, pos_scores, queries, clusters, scored, scored_pos


def _sample_all(world, exclusions, num_negatives=5):
    corpus, candidates, qrels, pos_scores, queries, clusters, scored, scored_pos = world
    for strategy in STRATEGIES:
        negatives, _ = sample_negatives(candidates, pos_scores, qrels, queries, strategy, num_negatives, 7, corpus=corpus, clusters=clusters,
                                        scored_candidates=scored, scored_positives=scored_pos, exclude=exclusions)
        yield strategy, negatives


text = st.lists(st.sampled_from(WORDS), min_size=4, max_size=12).map(" ".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.lists(text, min_size=6, max_size=12, unique=True), copies=st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["upper", "punct", "same"])), min_size=1, max_size=4))
def test_no_negative_is_a_text_duplicate_of_its_positive(base, copies):
    texts = list(base)
    for source, how in copies:  # planted copies of documents, some of them positives
        original = base[source % len(base)]
        texts.append({"upper": original.upper(), "punct": original.replace(" ", ", ") + ".", "same": original}[how])
    positives = {"q1": [0], "q2": [1, 2], "q3": [3]}
    world = _world(texts, positives)
    duplicates, _ = find_duplicates(world[0], world[2])
    exclusions = likely_false_negatives(world[2], duplicates)
    positive_texts = {q: {normalise(texts[i]) for i in ps} for q, ps in positives.items()}
    every_positive = set().union(*positive_texts.values())
    for strategy, negatives in _sample_all(world, exclusions):
        for q, d in zip(negatives.column("query_id").to_pylist(), negatives.column("neg_id").to_pylist()):
            assert normalise(texts[int(d[1:])]) not in positive_texts[q], (strategy, q, d)
            assert normalise(texts[int(d[1:])]) not in every_positive or d in {f"d{i}" for ps in positives.values() for i in ps}, (strategy, q, d)


def test_planted_copies_are_never_sampled_and_are_counted():
    texts = [" ".join(WORDS[i:i + 8]) for i in range(12)] + [" ".join(WORDS[0:8]).upper(), " ".join(WORDS[1:9]) + " !"]
    world = _world(texts, {"q1": [0], "q2": [1]})
    duplicates, _ = find_duplicates(world[0], world[2])
    assert sorted(zip(duplicates.column("doc_id").to_pylist(), duplicates.column("dup_of").to_pylist())) == [("d12", "d0"), ("d13", "d1")]
    exclusions = likely_false_negatives(world[2], duplicates)
    counts = exclusions.count(world[1])
    # each copy is a duplicate of one query's own positive and of the other query's positive
    assert counts == {"duplicate_of_own_positive": 2, "duplicate_of_other_positive": 2, "above_max_fn_prob": 0}
    for strategy, negatives in _sample_all(world, exclusions, num_negatives=12):
        assert not {"d12", "d13"} & set(negatives.column("neg_id").to_pylist()), strategy
    # without the control, the copies are sampled
    _, candidates, qrels, pos_scores, queries, *_ = world
    topk, _ = sample_negatives(candidates, pos_scores, qrels, queries, "topk", 12)
    assert {"d12", "d13"} <= set(topk.column("neg_id").to_pylist())


def test_max_fn_prob_keeps_likely_false_negatives_out():
    texts = [" ".join(WORDS[i:i + 8]) for i in range(12)]
    world = _world(texts, {"q1": [0]})
    corpus, candidates, qrels, pos_scores, queries, *_ = world
    fn_scores = pa.table({"query_id": ["q1"] * 3, "doc_id": ["d3", "d4", "d5"], "source_rank": [1, 2, 3], "fn_prob": [0.9, 0.5, 0.51]}, schema=FN_SCORES)
    exclusions = likely_false_negatives(qrels, None, fn_scores, max_fn_prob=0.5)
    assert exclusions.count(candidates)["above_max_fn_prob"] == 2  # 0.9 and 0.51; 0.5 is not above the cap
    for strategy, negatives in _sample_all(world, exclusions, num_negatives=11):
        assert not {"d3", "d5"} & set(negatives.column("neg_id").to_pylist()), strategy
    topk, _ = sample_negatives(candidates, pos_scores, qrels, queries, "topk", 11, exclude=exclusions)
    assert len(topk) == 9  # 11 documents that are not the positive, 2 kept out


def test_max_fn_prob_out_of_range_is_bad_input(tmp_path):
    from negmine.errors import BadInputError
    from negmine.rundir import Run
    from negmine.runners.sample import sample_stage

    with pytest.raises(BadInputError, match=r"--max-fn-prob, field 'max_fn_prob': must lie in \[0, 1\], got 1.5"):
        sample_stage(Run.open(tmp_path / "run"), "topk", "dense", 3, max_fn_prob=1.5)
