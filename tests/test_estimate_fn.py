"""estimate-fn: intervals against their formulas, estimates on hand-made tables, the stage end to end."""

import csv
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from negmine.errors import BadInputError
from negmine.estimate_fn import (
    audit_estimate,
    bootstrap_interval,
    label_estimate,
    rank_bucket,
    read_audit_labels,
    score_ratio,
    teacher_estimate,
    wilson_interval,
)
from negmine.io import write_table
from negmine.rundir import Run
from negmine.schemas import CORPUS, NEGATIVES, QRELS, QUERIES, SCORED_CANDIDATES, SCORED_POSITIVES
from negmine.runners.estimate_fn import estimate_fn_stage


def test_wilson_interval_is_the_formula():
    k, n, z = 3, 20, 1.959963984540054
    p = 3 / 20
    low = (p + z**2 / 40 - z * math.sqrt(p * (1 - p) / 20 + z**2 / 1600)) / (1 + z**2 / 20)
    high = (p + z**2 / 40 + z * math.sqrt(p * (1 - p) / 20 + z**2 / 1600)) / (1 + z**2 / 20)
    assert wilson_interval(k, n) == pytest.approx((low, high), rel=1e-12)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(z**2 / 10 / (1 + z**2 / 10), rel=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bootstrap_resamples_queries_and_takes_percentiles():
    k, n = np.array([0, 1, 3, 2]), np.array([5, 5, 4, 6])
    rng = np.random.default_rng(7)
    rates = []
    for _ in range(200):
        idx = rng.integers(0, 4, size=4)
        rates.append(k[idx].sum() / n[idx].sum())
    assert bootstrap_interval(k, n, n_boot=200, seed=7) == pytest.approx((np.percentile(rates, 2.5), np.percentile(rates, 97.5)))
    assert bootstrap_interval(np.array([1, 2]), np.array([4, 8]), seed=1) == pytest.approx((0.25, 0.25))  # equal rates: no spread


@pytest.mark.parametrize("rank, bucket", [(1, "1-10"), (10, "1-10"), (11, "11-30"), (30, "11-30"), (31, "31-100"), (100, "31-100"), (101, ">100/random"), (None, ">100/random")])
def test_rank_buckets(rank, bucket):
    assert rank_bucket(rank) == bucket


def _negatives(strategy="s", rows=None):
    rows = rows or [  # (query, pos, neg, source_rank, retriever score, positive's retriever score)
        ("q1", "p1", "a", 1, 0.8, 0.9), ("q1", "p1", "b", 12, 0.6, 0.9), ("q1", "p1", "c", 40, 0.3, 0.9),
        ("q2", "p2", "a", 2, 0.5, 0.5), ("q2", "p2", "d", None, None, 0.5),
    ]
    n = len(rows)
    return pa.table(
        {"query_id": [r[0] for r in rows], "pos_id": [r[1] for r in rows], "neg_id": [r[2] for r in rows], "neg_rank": list(range(1, n + 1)),
         "strategy": [strategy] * n, "retriever_score": [r[4] for r in rows], "pos_retriever_score": [r[5] for r in rows],
         "ce_score": [None] * n, "pos_ce_score": [None] * n, "source_rank": [r[3] for r in rows], "cluster_id": [None] * n,
         **({"stage": [None] * n} if "stage" in NEGATIVES.names else {})},
        schema=NEGATIVES,
    )


def _scored():
    cand = [("q1", "a", 1, 2.0, 0.9), ("q1", "b", 12, 0.5, 0.6), ("q1", "c", 40, -3.0, 0.05), ("q2", "a", 2, 1.0, 0.7)]
    scored = pa.table({"query_id": [c[0] for c in cand], "doc_id": [c[1] for c in cand], "source": ["dense"] * 4, "rank": [c[2] for c in cand],
                       "score": [0.0] * 4, "ce_score": [c[3] for c in cand], "ce_prob": [c[4] for c in cand]}, schema=SCORED_CANDIDATES)
    pos = pa.table({"query_id": ["q1", "q2"], "doc_id": ["p1", "p2"], "source": ["dense"] * 2, "rank": [None, None], "score": [0.0, 0.0],
                    "ce_score": [1.0, 2.0], "ce_prob": [0.7, 0.8]}, schema=SCORED_POSITIVES)
    return scored, pos


def test_teacher_estimate_counts_negatives_scored_above_their_positive():
    rows, unscored = teacher_estimate(_negatives(), *_scored(), n_boot=100)
    by_bucket = {r["bucket"]: r for r in rows}
    assert unscored == 1  # d was drawn off the candidates: no teacher score
    assert (by_bucket["all"]["negatives"], by_bucket["all"]["false_negatives"]) == (4, 1)  # only q1/a: 2.0 > 1.0
    assert (by_bucket["1-10"]["negatives"], by_bucket["1-10"]["false_negatives"]) == (2, 1)
    assert by_bucket["11-30"]["false_negatives"] == 0 and by_bucket[">100/random"]["negatives"] == 0
    assert by_bucket["all"]["rate"] == 0.25
    assert by_bucket["all"]["ci_low"] <= 0.25 <= by_bucket["all"]["ci_high"]
    rows, _ = teacher_estimate(_negatives(), *_scored(), threshold=0.65, n_boot=100)
    assert {r["bucket"]: r["false_negatives"] for r in rows}["all"] == 2  # probs .9 and .7 exceed .65


def test_the_teacher_estimate_uses_the_teacher_it_is_told(tmp_path):
    from negmine.teachers import described, parse_teachers, scored_schema

    scored, pos = _scored()
    teachers = described(parse_teachers(["cross-encoder:/a", "low=cross-encoder:/b"]), ["cross-encoder"] * 2, ["/a", "/b"])
    # the second teacher scores every candidate below its positive: no false negative
    low = [table.append_column("ce_score_low", pa.array([-9.0] * table.num_rows, pa.float32())).append_column(
        "ce_prob_low", pa.array([0.0] * table.num_rows, pa.float32())).cast(scored_schema(base, teachers))
        for table, base in ((scored, SCORED_CANDIDATES), (pos.set_column(5, "ce_score", pa.array([1.0, 2.0], pa.float32())), SCORED_POSITIVES))]
    low[1] = low[1].set_column(low[1].schema.get_field_index("ce_score_low"), "ce_score_low", pa.array([5.0, 5.0], pa.float32()))
    run = Run.open(tmp_path / "run")
    write_table(_negatives("topk"), run.file("negatives_topk.parquet"), NEGATIVES)
    write_table(low[0], run.file("scored_candidates_dense.parquet"), low[0].schema)
    write_table(low[1], run.file("scored_positives_dense.parquet"), low[1].schema)
    write_table(pa.table({"query_id": ["q1", "q2"], "doc_id": ["p1", "p2"], "relevance": [1, 1]}, schema=QRELS), run.file("qrels.parquet"), QRELS)
    first = estimate_fn_stage(run, n_boot=50).entry["stats"]
    assert first["strategies"]["topk"]["teacher"]["false_negatives"] == 1 and first["teacher_name"] == "t1"  # as with that teacher alone
    second = estimate_fn_stage(run, teacher_name="low", n_boot=50).entry["stats"]
    assert second["strategies"]["topk"]["teacher"]["false_negatives"] == 0 and second["teacher_name"] == "low"
    with pytest.raises(BadInputError, match=r"unknown teacher 'big'; the run's teachers are \['t1', 'low'\]"):
        estimate_fn_stage(run, teacher_name="big", n_boot=50)


def test_label_estimate_and_judged_queries():
    mined = pa.table({"query_id": ["q1", "q2"], "doc_id": ["p1", "p2"], "relevance": [1, 1]}, schema=QRELS)
    full = pa.table({"query_id": ["q1", "q2", "q2", "q9"], "doc_id": ["p1", "p2", "d", "a"], "relevance": [1, 1, 2, 1]}, schema=QRELS)
    rows, judged = label_estimate(_negatives(), full, mined, n_boot=100)
    by_bucket = {r["bucket"]: r for r in rows}
    assert (by_bucket["all"]["false_negatives"], by_bucket["all"]["negatives"]) == (1, 5)
    assert by_bucket[">100/random"]["false_negatives"] == 1
    assert judged == 1  # q2 has an extra judgement (d); q9 was not mined
    assert label_estimate(_negatives(), mined, mined)[1] == 0  # disjoint/no extra judgements: the rate can only be 0


def test_audit_estimate_uses_wilson(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("query_id,neg_id,label\nq1,a,1\nq1,b,0\nq1,c,0\nq2,a,\nzz,a,1\n")
    labels = read_audit_labels(path)
    assert labels == {("q1", "a"): 1, ("q1", "b"): 0, ("q1", "c"): 0, ("zz", "a"): 1}
    overall = audit_estimate(_negatives(), labels)[0]
    assert (overall["negatives"], overall["false_negatives"]) == (3, 1)  # zz/a is not one of these negatives
    assert (overall["ci_low"], overall["ci_high"]) == wilson_interval(1, 3)
    path.write_text("query_id,neg_id,label\nq1,a,yes\n")
    with pytest.raises(BadInputError, match=r"labels.csv, line 2, field 'label': label must be 0 or 1, found 'yes'"):
        read_audit_labels(path)


def test_score_ratio():
    assert score_ratio(_negatives()) == pytest.approx(np.mean([0.8 / 0.9, 0.6 / 0.9, 0.3 / 0.9, 1.0]))


def test_stage_reports_every_strategy_and_writes_an_audit(tmp_path):
    run = Run.open(tmp_path / "run")
    write_table(_negatives("topk"), run.file("negatives_topk.parquet"), NEGATIVES)
    write_table(_negatives("simans", [("q1", "p1", "c", 40, 0.3, 0.9)]), run.file("negatives_simans.parquet"), NEGATIVES)
    scored, pos = _scored()
    write_table(scored, run.file("scored_candidates_dense.parquet"), SCORED_CANDIDATES)
    write_table(pos, run.file("scored_positives_dense.parquet"), SCORED_POSITIVES)
    write_table(pa.table({"query_id": ["q1", "q2"], "doc_id": ["p1", "p2"], "relevance": [1, 1]}, schema=QRELS), run.file("qrels.parquet"), QRELS)
    docs = ["a", "b", "c", "d", "p1", "p2"]
    write_table(pa.table({"doc_id": docs, "title": [None] * 6, "text": [f"text {d}" for d in docs]}, schema=CORPUS), run.file("corpus.parquet"), CORPUS)
    write_table(pa.table({"query_id": ["q1", "q2"], "text": ["query one", "query two"]}, schema=QUERIES), run.file("queries.parquet"), QUERIES)
    full = tmp_path / "full.tsv"
    full.write_text("query-id\tcorpus-id\tscore\nq1\tp1\t1\nq2\tp2\t1\nq2\td\t1\n")
    result = estimate_fn_stage(run, qrels_full=full, audit=2, n_boot=50)
    summary = result.entry["stats"]["strategies"]
    assert summary["topk"]["teacher"]["false_negatives"] == 1 and summary["topk"]["labels"]["false_negatives"] == 1
    assert summary["simans"]["teacher"]["rate"] == 0.0 and summary["simans"]["negatives"] == 1
    report = pq.read_table(run.file("fn_report.parquet"))
    assert set(report.column("method").to_pylist()) == {"teacher", "labels"}
    assert json.loads(run.file("fn_report.json").read_text())["strategies"]["topk"]["judged_queries"] == 1
    with open(run.file("fn_audit.csv"), newline="") as fh:
        audit = list(csv.DictReader(fh))
    assert [a["strategy"] for a in audit] == ["simans", "topk", "topk"]  # N per strategy, at most what it has
    assert audit[0]["query_text"] == "query one" and audit[0]["neg_text"] == "text c" and "label" in audit[0]
    assert pq.read_table(run.file("fn_audit.parquet")).num_rows == 3
    assert estimate_fn_stage(run, qrels_full=full, audit=2, n_boot=50).skipped
