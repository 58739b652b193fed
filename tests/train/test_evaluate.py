"""Evaluator: metric values against hand-computed rankings, and the paired comparison."""

import math

import pyarrow as pa
import pytest

from negmine.train.evaluate import compare, evaluate_ranking
from negmine.schemas import QRELS


def qrels(rows):
    return pa.table({"query_id": [r[0] for r in rows], "doc_id": [r[1] for r in rows], "relevance": [r[2] for r in rows]}, schema=QRELS)


def test_metrics_match_hand_computation():
    judged = qrels([("q1", "a", 1), ("q1", "c", 1), ("q2", "x", 2), ("q2", "y", 0)])
    ranking = {
        "q1": {"b": 3.0, "a": 2.0, "d": 1.5, "c": 1.0},  # relevant at ranks 2 and 4
        "q2": {"y": 2.0, "z": 1.0},  # its relevant document is not retrieved
    }
    aggregate, per_query = evaluate_ranking(ranking, judged, ["nDCG@10", "MRR@10", "R@100"])
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert aggregate["nDCG@10"] == pytest.approx((dcg / idcg + 0.0) / 2)
    assert aggregate["RR@10"] == pytest.approx((1 / 2 + 0.0) / 2)
    assert aggregate["R@100"] == pytest.approx((2 / 2 + 0 / 1) / 2)
    q1 = {r["measure"]: r["value"] for r in per_query.to_pylist() if r["query_id"] == "q1"}
    assert q1["RR@10"] == pytest.approx(0.5)


def test_unranked_judged_query_scores_zero():
    aggregate, _ = evaluate_ranking({"q1": {"a": 1.0}}, qrels([("q1", "a", 1), ("q2", "b", 1)]), ["RR@10"])
    assert aggregate["RR@10"] == pytest.approx(0.5)


def test_compare_is_a_paired_t_test():
    from scipy import stats

    def table(values):
        return pa.table({"query_id": [f"q{i}" for i in range(len(values))], "measure": ["nDCG@10"] * len(values), "value": values})

    a, b = [0.1, 0.5, 0.3, 0.7, 0.2], [0.2, 0.55, 0.5, 0.7, 0.4]
    result = compare(table(a), table(b), "nDCG@10")
    assert result["delta"] == pytest.approx(sum(b) / 5 - sum(a) / 5)
    assert result["p_value"] == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert compare(table(a), table(a), "nDCG@10")["p_value"] == 1.0
